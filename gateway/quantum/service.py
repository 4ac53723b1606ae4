"""Portfolio optimisation: choose `budget` instruments, then their weights.

A `portfolio.optimize` job (`gateway/quantum/job.py`) calls `PortfolioOptimisationService.run`:

1. Estimate mu and Sigma from daily bars (`estimation.py`), check Sigma (COVARIANCE_SINGULAR
   unless shrinkage is asked for) and build a `plugins.sdk.OptimisationProblem`.
2. `optimise`: run the requested backend and, when n is within its cap, the classical exact
   reference (once, when it is the backend itself). The requested backend's answer stands
   unless it refused, raised, exceeded its qubit cap (checked before it is called), passed
   its deadline or answered an infeasible subset; then the classical answer takes over
   (the exact one, else simulated annealing), and the result says which backend answered and
   why. Every answer is checked here: feasibility and the objective are recomputed from the
   bitstring rather than taken from the plugin.
3. Weights: continuous mean-variance (the "classical-mv" plugin) on the chosen subset, which
   honours the bounds and sector weight caps, with every chosen instrument held at least at
   its floor (`holdings.py`: by default half the equal weight, within the constraints);
   optionally on the whole universe too (no floors), to show what the cardinality limit costs.

Approximation ratio, for a minimisation whose optimum may be negative: over the feasible
subsets, r(x) = (f_worst - f(x)) / (f_worst - f_opt), so 1 is optimal, 0 the worst feasible
subset, and the figure does not depend on the objective's sign or offset (r = 1 when every
feasible subset scores the same). It needs the exact enumeration, so it is null beyond its cap.
For a quantum backend the result also gives the probability its final circuit put on the
optimal subsets, the probability of a feasible bitstring, the expected ratio of a feasible
sample, and the same probability under uniform sampling of feasible subsets (1/their number),
the baseline any claim of usefulness has to beat.

No quantum advantage is claimed: the circuits run on classical simulators, and the result
says so next to the measured times.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

import numpy as np

from gateway.jobs.kinds import Params
from gateway.marketdata import MarketDataService
from gateway.markets.errors import InstantNotAware
from gateway.quantum.errors import (
    AssetsFewerThanBudget,
    BackendUnknown,
    BoundsInvalid,
    BudgetInvalid,
    CvarAlphaInvalid,
    InstrumentsInvalid,
    OptimisationFailed,
    OptimisationParamsInvalid,
    PortfolioInfeasible,
    SectorCapsInvalid,
)
from gateway.quantum.estimation import PERIODS_PER_YEAR, check_covariance, estimate_moments
from gateway.quantum.holdings import DEFAULT_MIN_HOLDING_SHARE, holding_floors
from gateway.scope import current_tenant
from plugins.host import PluginFailed, PluginHost, default_context
from plugins.sdk import (
    NoFeasiblePortfolio,
    OptimisationAnswer,
    OptimisationProblem,
    OptimiserRefused,
    OptimiserTimedOut,
    PortfolioOptimiser,
    SectorCap,
)

log = logging.getLogger(__name__)

HOOK = "alphintra_portfolio_optimisers"
REFERENCE = "classical-exact"  # the exact optimum, for ratios and as the first fallback
LARGE_FALLBACK = "classical-sa"  # the fallback beyond the exact enumeration's cap
WEIGHTS = "classical-mv"  # continuous mean-variance for the chosen subset's weights
DEFAULT_BACKEND = REFERENCE
MAX_INSTRUMENTS = 50
# A backend's answer counts as on time up to this much past its deadline (the deadline is
# cooperative: an optimiser checks it between steps, and the last step may overrun).
DEADLINE_GRACE = 1.25
PARAMS = {
    "instruments", "budget", "risk_aversion", "backend", "lookback_days", "as_of", "bounds",
    "sector_caps", "cvar_alpha", "seed", "shrinkage", "risk_free_rate", "deadline_seconds",
    "layers", "shots", "weights_over_universe", "min_holding_share",
}
ADVANTAGE = ("No quantum advantage is claimed: the quantum backends ran on classical "
             "statevector simulators, and the figures above are the measured ones.")
RATIO_DEFINITION = ("(f_worst - f) / (f_worst - f_opt) over feasible subsets, f the "
                    "equal-weight objective: 1 optimal, 0 the worst feasible subset")


@dataclass(frozen=True)
class OptimiserEntry:
    plugin: str
    optimiser: PortfolioOptimiser

    @property
    def name(self) -> str:
        return str(self.optimiser.name)


@dataclass
class Run:
    """One optimiser's attempt, as the result reports it."""

    optimiser: str
    kind: str
    role: str  # requested, reference, fallback
    status: str = "not_run"  # answered, refused, timed_out, failed, infeasible, infeasible_answer
    reason: str | None = None
    answer: OptimisationAnswer | None = None
    x: np.ndarray | None = None
    objective: float | None = None
    runtime_s: float = 0.0
    metrics: dict[str, Any] = field(default_factory=dict)

    @property
    def answered(self) -> bool:
        return self.status == "answered"

    def report(self) -> dict[str, Any]:
        a = self.answer
        out: dict[str, Any] = {
            "optimiser": self.optimiser, "kind": self.kind, "role": self.role,
            "status": self.status, "reason": self.reason, "runtime_s": round(self.runtime_s, 6),
            "objective": self.objective,
            "bitstring": a.selected if a is not None and self.answered else None,
            "iterations": a.iterations if a is not None else None,
            "qubits": a.qubits if a is not None else None,
            "depth": a.depth if a is not None else None,
            "shots": a.shots if a is not None else None,
            "probability_of_answer": a.probability if a is not None else None,
            "notes": list(a.notes) if a is not None else [],
        }
        out.update(self.metrics)
        return out


class PortfolioOptimisationService:
    def __init__(self, plugins: PluginHost, market_data: MarketDataService, *,
                 configs: Mapping[str, Mapping[str, Any]] | None = None,
                 now: Callable[[], datetime] | None = None) -> None:
        self.plugins = plugins
        self.market_data = market_data
        self.configs = dict(configs or {})
        self.now: Callable[[], datetime] = now or market_data.now
        self._lock = threading.Lock()
        self._entries: tuple[OptimiserEntry, ...] | None = None
        self._failures: tuple[PluginFailed, ...] = ()
        self._installed: Callable[[str], Sequence[tuple[str, PortfolioOptimiser]]] | None = None
        self._disabled: Callable[[str], frozenset[str]] | None = None

    # -- optimisers -------------------------------------------------------------------------

    def bind_installed(self, installed: Callable[[str], Sequence[tuple[str, PortfolioOptimiser]]],
                       disabled: Callable[[str], frozenset[str]] | None = None) -> None:
        """A tenant's installed optimisers (sandboxed plugins), selectable by name by that
        tenant after the built-ins (a name a built-in has keeps the built-in), less the built-ins
        it switched off."""
        self._installed = installed
        self._disabled = disabled

    def optimisers(self) -> tuple[OptimiserEntry, ...]:
        builtins = self._builtin_optimisers()
        tenant = current_tenant()
        installed = self._installed(tenant) if tenant is not None and self._installed else ()
        if tenant is not None and self._disabled is not None:
            off = self._disabled(tenant)
            builtins = tuple(e for e in builtins if e.plugin not in off)
        names = {e.name for e in builtins}
        return builtins + tuple(OptimiserEntry(plugin, o) for plugin, o in installed if o.name not in names)

    def _builtin_optimisers(self) -> tuple[OptimiserEntry, ...]:
        """Collected once, on first use (the hook is documented as called once at activation);
        a name offered twice keeps the first (built-ins come first)."""
        with self._lock:
            if self._entries is None:
                contributions, failures = self.plugins.collect(
                    HOOK, lambda name: default_context(name, config=dict(self.configs.get(name, {}))),
                    expect=PortfolioOptimiser)
                entries: dict[str, OptimiserEntry] = {}
                for c in contributions:
                    entry = OptimiserEntry(c.plugin, c.value)
                    if entry.name in entries:
                        log.warning("optimiser %s offered twice; %s's kept", entry.name,
                                    entries[entry.name].plugin)
                        continue
                    entries[entry.name] = entry
                self._entries, self._failures = tuple(entries.values()), tuple(failures)
            return self._entries

    def reload(self) -> None:
        with self._lock:
            self._entries = None

    def optimiser(self, name: str) -> PortfolioOptimiser:
        for entry in self.optimisers():
            if entry.name == name:
                return entry.optimiser
        raise BackendUnknown(f"no optimiser {name!r}",
                             details={"backends": [e.name for e in self.optimisers()]})

    def _maybe(self, name: str) -> PortfolioOptimiser | None:
        return next((e.optimiser for e in self.optimisers() if e.name == name), None)

    # -- requests ---------------------------------------------------------------------------

    def validate(self, params: Params) -> Params:
        """Check a request before it is queued and return it normalised (instrument keys in
        their canonical spelling, defaults filled in), so bad input never reaches a worker."""
        unknown = set(params) - PARAMS
        if unknown:
            raise OptimisationParamsInvalid(f"unknown parameters: {sorted(unknown)}")
        raw = params.get("instruments")
        if not isinstance(raw, list) or not raw or not all(isinstance(k, str) for k in raw):
            raise InstrumentsInvalid("name at least one instrument, as SYMBOL.MIC")
        if len(raw) > MAX_INSTRUMENTS:
            raise InstrumentsInvalid(f"at most {MAX_INSTRUMENTS} instruments per optimisation")
        keys = [self.market_data.instrument(k).key for k in raw]
        if len(set(keys)) != len(keys):
            raise InstrumentsInvalid("an instrument is named twice")
        budget = params.get("budget")
        if not _is_int(budget) or budget < 1:
            raise BudgetInvalid("budget is how many instruments to hold: an integer of at least 1")
        if budget > len(keys):
            raise AssetsFewerThanBudget(f"{len(keys)} instruments named for a budget of {budget}",
                                        details={"instruments": len(keys), "budget": budget})
        backend = params.get("backend", DEFAULT_BACKEND)
        if not isinstance(backend, str):
            raise OptimisationParamsInvalid("backend must be an optimiser's name")
        self.optimiser(backend)
        alpha = params.get("cvar_alpha")
        if alpha is not None and (not _is_number(alpha) or not 0 < alpha <= 1):
            raise CvarAlphaInvalid("cvarAlpha must be in (0, 1]: the share of lowest energies kept")
        out: Params = {
            "instruments": keys, "budget": budget, "backend": backend,
            "risk_aversion": _number(params, "risk_aversion", 1.0, 0.0, 1e4),
            "lookback_days": _integer(params, "lookback_days", 365, 30, 1830),
            "as_of": _instant(params.get("as_of")),
            "bounds": _bounds(params.get("bounds"), keys),
            "sector_caps": _sector_caps(params.get("sector_caps"), keys),
            "cvar_alpha": None if alpha is None else float(alpha),
            "seed": _integer(params, "seed", 7, 0, 2**31 - 1),
            "shrinkage": _number(params, "shrinkage", 0.0, 0.0, 1.0),
            "risk_free_rate": _number(params, "risk_free_rate", 0.0, -0.5, 1.0),
            "deadline_seconds": _number(params, "deadline_seconds", 120.0, 1.0, 600.0),
            "layers": _optional_integer(params, "layers", 1, 10),
            "shots": _optional_integer(params, "shots", 16, 1_000_000),
            "weights_over_universe": bool(params.get("weights_over_universe", False)),
            "min_holding_share": _number(params, "min_holding_share", DEFAULT_MIN_HOLDING_SHARE, 0.0, 1.0),
        }
        return out

    def problem(self, params: Params, mu: np.ndarray, sigma: np.ndarray) -> OptimisationProblem:
        keys = params["instruments"]
        index = {k: i for i, k in enumerate(keys)}
        low, high = np.zeros(len(keys)), np.ones(len(keys))
        for bound in params["bounds"]:
            low[index[bound["instrument"]]], high[index[bound["instrument"]]] = bound["min"], bound["max"]
        sector_of = {k: cap["sector"] for cap in params["sector_caps"] for k in cap["instruments"]}
        caps = {cap["sector"]: SectorCap(cap["max_assets"], cap["max_weight"])
                for cap in params["sector_caps"]}
        options = {k: params[k] for k in ("layers", "shots", "cvar_alpha") if params.get(k) is not None}
        return OptimisationProblem(
            assets=tuple(keys), mu=mu, sigma=sigma, budget=params["budget"],
            risk_aversion=params["risk_aversion"], min_weight=low, max_weight=high,
            sector_of=sector_of, sector_caps=caps, seed=params["seed"], options=options)

    def run(self, params: Params, progress: Callable[[float, str], None]) -> dict[str, Any]:
        """The job: estimate, optimise, weigh, report."""
        keys = params["instruments"]
        as_of = datetime.fromisoformat(params["as_of"]) if params.get("as_of") else \
            self.now().astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
        progress(0.02, f"estimating mu and Sigma from daily bars of {len(keys)} instruments "
                       f"over {params['lookback_days']} days")
        moments = estimate_moments(
            self.market_data, keys, as_of, params["lookback_days"],
            lambda i: progress(0.02 + 0.38 * (i + 1) / len(keys), f"read bars of {keys[i]}"))
        checked = check_covariance(moments.sigma, params["shrinkage"])
        problem = self.problem(params, moments.mu, checked.sigma)
        result = self.optimise(problem, params["backend"], params["deadline_seconds"],
                               lambda f, m: progress(0.4 + 0.58 * f, m),
                               risk_free_rate=params["risk_free_rate"],
                               weights_over_universe=params["weights_over_universe"],
                               min_holding_share=params.get("min_holding_share",
                                                            DEFAULT_MIN_HOLDING_SHARE))
        return {
            "as_of": as_of.isoformat(),
            "data": {
                "source": "daily bars of the named instruments from the market data service",
                "lookback_days": params["lookback_days"], "first_day": moments.first_day.isoformat(),
                "last_day": moments.last_day.isoformat(), "returns": moments.observations,
                "annualisation": round(PERIODS_PER_YEAR, 4),
                "method": "simple returns on a weekday grid, last close carried over holidays; "
                          "each instrument in its own currency; closes at different hours "
                          "treated as simultaneous",
                "coverage": {k: round(v, 4) for k, v in moments.coverage.items()},
                "expected_returns": dict(zip(keys, _floats(moments.mu), strict=True)),
                "volatilities": dict(zip(keys, _floats(np.sqrt(np.diag(checked.sigma))), strict=True)),
            },
            "covariance": {"shrinkage": checked.shrinkage,
                           "min_eigenvalue": checked.min_eigenvalue,
                           "min_eigenvalue_before_shrinkage": checked.raw_min_eigenvalue,
                           "condition_number": checked.condition_number},
            **result,
        }

    # -- the optimisation -------------------------------------------------------------------

    def optimise(self, problem: OptimisationProblem, backend: str, deadline_s: float,
                 progress: Callable[[float, str], None] = lambda f, m: None, *,
                 risk_free_rate: float = 0.0, weights_over_universe: bool = False,
                 min_holding_share: float = DEFAULT_MIN_HOLDING_SHARE) -> dict[str, Any]:
        requested_optimiser = self.optimiser(backend)
        exact = self._maybe(REFERENCE)
        n = problem.n
        runs: list[Run] = []

        reference: Run | None = None
        if exact is not None and n <= exact.max_assets:
            progress(0.0, f"{REFERENCE}: the exact reference over {math.comb(n, problem.budget)} subsets")
            reference = self._attempt(exact, problem, deadline_s,
                                      "requested" if exact is requested_optimiser else "reference")
            runs.append(reference)
            if reference.status == "infeasible":
                raise PortfolioInfeasible(reference.reason or "no feasible subset",
                                          details={"budget": problem.budget})
        if reference is not None and exact is requested_optimiser:
            requested = reference
        else:
            progress(0.2, f"{backend}: solving")
            requested = self._attempt(requested_optimiser, problem, deadline_s, "requested")
            runs.append(requested)

        answering, reason = requested, None
        if not requested.answered:
            reason = f"{backend} {requested.status.replace('_', ' ')}: {requested.reason}"
            if reference is not None and reference.answered:
                answering = reference
            else:
                fallback = self._maybe(LARGE_FALLBACK)
                if fallback is None or fallback is requested_optimiser or n > fallback.max_assets:
                    raise OptimisationFailed(f"{reason}; no classical fallback could answer",
                                             details={"runs": [r.report() for r in runs]})
                progress(0.7, f"{LARGE_FALLBACK}: falling back")
                answering = self._attempt(fallback, problem, deadline_s, "fallback")
                runs.append(answering)
                if not answering.answered:
                    if answering.status == "infeasible":
                        raise PortfolioInfeasible(answering.reason or "no feasible subset found")
                    raise OptimisationFailed(f"{reason}; the fallback {LARGE_FALLBACK} "
                                             f"{answering.status}: {answering.reason}",
                                             details={"runs": [r.report() for r in runs]})

        exact_f = worst_f = None
        if reference is not None and reference.answered and reference.answer is not None:
            exact_f = reference.objective
            worst_f = float(reference.answer.details.get("worst_feasible_objective", math.nan))
            worst_f = worst_f if math.isfinite(worst_f) else None  # JSON (and PostgreSQL) has no NaN
            feasible_count = int(reference.answer.details.get("feasible_subsets", 0)) or None
            for run in runs:
                self._measure(run, problem, exact_f, worst_f, feasible_count)

        progress(0.85, f"{WEIGHTS}: weights of the chosen subset")
        assert answering.x is not None
        chosen = [i for i in range(n) if answering.x[i] > 0.5]
        # Every chosen instrument is held: mean-variance alone may zero all but one of them.
        subset = problem.subset(chosen)
        floors = holding_floors(subset, min_holding_share)
        weights = self._weights(replace(subset, min_weight=floors), deadline_s)
        full = np.zeros(n)
        full[chosen] = weights
        portfolio = _portfolio(problem, full, risk_free_rate)
        selection_objective = answering.objective
        result: dict[str, Any] = {
            "instruments": list(problem.assets),
            "budget": problem.budget,
            "risk_aversion": problem.risk_aversion,
            "backend": {"requested": backend, "answered_by": answering.optimiser,
                        "fallback": answering is not requested, "reason": reason},
            "selected": [problem.assets[i] for i in chosen],
            "bitstring": problem.bits(answering.x),
            "weights": {problem.assets[i]: float(full[i]) for i in chosen},
            "min_holding_share": min_holding_share,
            "holding_floors": {a: float(f) for a, f in zip(subset.assets, floors, strict=True)},
            **portfolio,
            "selection_objective": selection_objective,
            "exact_objective": exact_f,
            "worst_feasible_objective": worst_f,
            "approximation_ratio": _ratio(selection_objective, exact_f, worst_f),
            "approximation_ratio_definition": RATIO_DEFINITION,
            "probability_of_optimum": requested.metrics.get("probability_of_optimum"),
            "runs": [r.report() for r in runs],
        }
        if weights_over_universe:
            progress(0.93, f"{WEIGHTS}: weights over the whole universe")
            universe = np.asarray(self._weights(problem.subset(range(n)), deadline_s))
            result["universe"] = {
                "weights": {a: float(w) for a, w in zip(problem.assets, universe, strict=True)},
                **_portfolio(problem, universe, risk_free_rate),
                "note": "no limit on the number of holdings"}
        result["quantum_advantage"] = _statement(runs, reference)
        return result

    def _attempt(self, optimiser: PortfolioOptimiser, problem: OptimisationProblem, deadline_s: float,
                 role: str) -> Run:
        run = Run(optimiser=str(optimiser.name), kind=str(optimiser.kind), role=role)
        n = problem.n
        if optimiser.max_qubits is not None and n > optimiser.max_qubits:
            run.status = "refused"
            run.reason = f"the problem needs {n} qubits; {run.optimiser} takes at most {optimiser.max_qubits}"
            return run
        if n > optimiser.max_assets:
            run.status = "refused"
            run.reason = f"{n} assets; {run.optimiser} takes at most {optimiser.max_assets}"
            return run
        started = time.perf_counter()
        try:
            answer = optimiser.solve(problem, deadline_s)
        except OptimiserRefused as exc:
            run.status, run.reason = "refused", str(exc)
        except OptimiserTimedOut as exc:
            run.status, run.reason = "timed_out", str(exc)
        except NoFeasiblePortfolio as exc:
            run.status, run.reason = "infeasible", str(exc)
        except Exception as exc:
            # The client hears which optimiser failed, not the exception text (which may carry
            # a plugin's internals); the log has the traceback.
            log.exception("portfolio optimiser failed", extra={"optimiser": run.optimiser})
            run.status, run.reason = "failed", f"raised {type(exc).__name__}"
        else:
            self._check(run, problem, answer, deadline_s, time.perf_counter() - started)
        run.runtime_s = time.perf_counter() - started
        return run

    @staticmethod
    def _check(run: Run, problem: OptimisationProblem, answer: Any, deadline_s: float,
               elapsed: float) -> None:
        if not isinstance(answer, OptimisationAnswer) or not isinstance(answer.selected, str) \
                or len(answer.selected) != problem.n or set(answer.selected) - {"0", "1"}:
            run.status, run.reason = "failed", "answered in the wrong shape"
            return
        run.answer = answer
        if elapsed > deadline_s * DEADLINE_GRACE:
            run.status = "timed_out"
            run.reason = f"answered after {elapsed:.1f} s, past its {deadline_s:g} s deadline"
            return
        x = problem.unbits(answer.selected)
        if not problem.feasible(x):
            run.status = "infeasible_answer"
            run.reason = "its answer breaks the budget, a sector cap or the weight bounds"
            return
        run.status, run.x, run.objective = "answered", x, float(problem.objective(x))

    @staticmethod
    def _measure(run: Run, problem: OptimisationProblem, exact_f: float | None, worst_f: float | None,
                 feasible_count: int | None) -> None:
        """Approximation ratio of the answer; for a circuit's distribution, the probability on
        optimal and on feasible subsets and the expected ratio of a feasible sample."""
        if run.answered and run.objective is not None:
            run.metrics["approximation_ratio"] = _ratio(run.objective, exact_f, worst_f)
        distribution = run.answer.distribution if run.answer is not None else None
        if not distribution or exact_f is None or worst_f is None:
            return
        bits = list(distribution)
        probs = np.fromiter(distribution.values(), dtype=np.float64, count=len(bits))
        x = (np.frombuffer("".join(bits).encode(), dtype=np.uint8).reshape(len(bits), problem.n)
             == ord("1")).astype(np.float64)
        ok = problem.feasible(x)
        f = problem.objective(x)
        tol = 1e-12 * max(1.0, abs(exact_f))
        p_feasible = float(probs[ok].sum())
        ratios = np.array([_ratio(float(v), exact_f, worst_f) or 0.0 for v in f[ok]])
        run.metrics.update({
            "probability_of_optimum": float(probs[ok & (f <= exact_f + tol)].sum()),
            "probability_feasible": p_feasible,
            "expected_ratio_of_feasible_sample": float((probs[ok] * ratios).sum() / p_feasible)
            if p_feasible > 0 else None,
            "uniform_probability_of_optimum": (1.0 / feasible_count) if feasible_count else None,
        })

    def _weights(self, subset: OptimisationProblem, deadline_s: float) -> list[float]:
        optimiser = self._maybe(WEIGHTS)
        if optimiser is None:
            raise OptimisationFailed(f"the {WEIGHTS} optimiser, which sets the weights, is missing")
        try:
            answer = optimiser.solve(subset, deadline_s)
        except NoFeasiblePortfolio as exc:
            raise PortfolioInfeasible(str(exc)) from exc
        except Exception as exc:
            log.exception("mean-variance weights failed")
            raise OptimisationFailed(f"the continuous mean-variance step failed: "
                                     f"{type(exc).__name__}") from exc
        return [float(w) for w in answer.weights]


# -- figures ----------------------------------------------------------------------------------

def _ratio(f: float | None, exact_f: float | None, worst_f: float | None) -> float | None:
    if f is None or exact_f is None or worst_f is None or not math.isfinite(worst_f):
        return None
    span = worst_f - exact_f
    if span <= 1e-15 * max(1.0, abs(exact_f)):
        return 1.0
    return float((worst_f - f) / span)


def _portfolio(problem: OptimisationProblem, w: np.ndarray, risk_free_rate: float) -> dict[str, Any]:
    expected = float(np.asarray(problem.mu) @ w)
    variance = float(w @ np.asarray(problem.sigma) @ w)
    volatility = math.sqrt(max(variance, 0.0))
    return {
        "expected_return": expected, "variance": variance, "volatility": volatility,
        "sharpe": (expected - risk_free_rate) / volatility if volatility > 0 else None,
        "risk_free_rate": risk_free_rate,
        "objective": problem.risk_aversion * variance - expected,
    }


def _statement(runs: list[Run], reference: Run | None) -> str:
    quantum = [r for r in runs if r.kind == "quantum"]
    if not quantum:
        return "No quantum backend was run; no quantum advantage is claimed."
    parts = []
    for r in quantum:
        text = f"{r.optimiser} took {r.runtime_s:.3g} s ({r.status.replace('_', ' ')})"
        p_opt = r.metrics.get("probability_of_optimum")
        uniform = r.metrics.get("uniform_probability_of_optimum")
        if p_opt is not None and uniform is not None:
            text += f", putting {p_opt:.4f} on the optimum against {uniform:.4f} for uniform sampling"
        parts.append(text)
    if reference is not None and reference.answered:
        parts.append(f"{reference.optimiser} took {reference.runtime_s:.3g} s and is exact")
    return ADVANTAGE + " " + "; ".join(parts) + "."


def _floats(values: np.ndarray) -> list[float]:
    return [float(v) for v in values]


# -- parameter checks -------------------------------------------------------------------------

def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _number(params: Params, key: str, default: float, low: float, high: float) -> float:
    value = params.get(key)
    if value is None:
        return default
    if not _is_number(value) or not low <= value <= high:
        raise OptimisationParamsInvalid(f"{key} must be a number from {low:g} to {high:g}",
                                        details={"parameter": key})
    return float(value)


def _integer(params: Params, key: str, default: int, low: int, high: int) -> int:
    value = params.get(key)
    if value is None:
        return default
    if not _is_int(value) or not low <= value <= high:
        raise OptimisationParamsInvalid(f"{key} must be an integer from {low} to {high}",
                                        details={"parameter": key})
    return int(value)


def _optional_integer(params: Params, key: str, low: int, high: int) -> int | None:
    return None if params.get(key) is None else _integer(params, key, 0, low, high)


def _instant(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        at = value
    else:
        try:
            at = datetime.fromisoformat(str(value))
        except ValueError:
            raise OptimisationParamsInvalid("as_of must be an ISO 8601 instant",
                                            details={"parameter": "as_of"}) from None
    if at.tzinfo is None or at.utcoffset() is None:
        raise InstantNotAware("as_of has no time zone; send an offset such as Z")
    return at.astimezone(UTC).isoformat()


def _canonical(key: Any, keys: list[str]) -> str | None:
    if not isinstance(key, str):
        return None
    return next((k for k in keys if k.upper() == key.strip().upper()), None)


def _bounds(raw: Any, keys: list[str]) -> list[dict[str, Any]]:
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise BoundsInvalid("bounds must be a list of {instrument, min, max}")
    out: list[dict[str, Any]] = []
    for item in raw:
        if not isinstance(item, dict) or set(item) - {"instrument", "min", "max"}:
            raise BoundsInvalid("each bound is {instrument, min, max}")
        key = _canonical(item.get("instrument"), keys)
        if key is None:
            raise BoundsInvalid(f"bound for {item.get('instrument')!r}, which is not among the "
                                "instruments", details={"instrument": item.get("instrument")})
        if any(b["instrument"] == key for b in out):
            raise BoundsInvalid(f"two bounds for {key}", details={"instrument": key})
        low, high = item.get("min", 0.0), item.get("max", 1.0)
        low, high = 0.0 if low is None else low, 1.0 if high is None else high
        if not _is_number(low) or not _is_number(high) or not 0 <= low <= high <= 1 or high <= 0:
            raise BoundsInvalid(f"the bound for {key} needs 0 <= min <= max <= 1 and max > 0 (to "
                                "leave an instrument out, do not name it)", details={"instrument": key})
        out.append({"instrument": key, "min": float(low), "max": float(high)})
    return out


def _sector_caps(raw: Any, keys: list[str]) -> list[dict[str, Any]]:
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise SectorCapsInvalid("sectorCaps must be a list")
    out: list[dict[str, Any]] = []
    placed: dict[str, str] = {}
    for item in raw:
        if not isinstance(item, dict) or set(item) - {"sector", "instruments", "max_assets", "max_weight"}:
            raise SectorCapsInvalid("each sector cap is {sector, instruments, maxAssets, maxWeight}")
        sector = item.get("sector")
        if not isinstance(sector, str) or not sector.strip() or any(c["sector"] == sector for c in out):
            raise SectorCapsInvalid("each sector cap needs a sector name of its own")
        members = item.get("instruments")
        if not isinstance(members, list) or not members:
            raise SectorCapsInvalid(f"sector {sector} names no instruments")
        canonical = []
        for member in members:
            key = _canonical(member, keys)
            if key is None:
                raise SectorCapsInvalid(f"sector {sector} names {member!r}, which is not among "
                                             "the instruments", details={"sector": sector})
            if key in placed:
                raise SectorCapsInvalid(f"{key} is in sectors {placed[key]} and {sector}; "
                                             "sectors must not overlap", details={"sector": sector})
            placed[key] = sector
            canonical.append(key)
        max_assets, max_weight = item.get("max_assets"), item.get("max_weight")
        if max_assets is None and max_weight is None:
            raise SectorCapsInvalid(f"sector {sector} sets neither maxAssets nor maxWeight")
        if max_assets is not None and (not _is_int(max_assets) or max_assets < 1):
            raise SectorCapsInvalid(f"maxAssets of sector {sector} must be an integer of at least 1")
        if max_weight is not None and (not _is_number(max_weight) or not 0 < max_weight <= 1):
            raise SectorCapsInvalid(f"maxWeight of sector {sector} must be in (0, 1]")
        out.append({"sector": sector, "instruments": canonical, "max_assets": max_assets,
                     "max_weight": None if max_weight is None else float(max_weight)})
    return out

