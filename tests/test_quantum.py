"""Portfolio optimisation: the QUBO against brute force, every backend against the exact
optimum, fallbacks, bad input, and the job end to end through GraphQL on the live server.

QAOA thresholds were measured with the fixed seeds used here (6 assets, budget 3, 20 feasible
subsets, so uniform sampling puts 0.05 on the optimum): qiskit p=2 put 0.13 on the optimum,
with CVaR 0.09; pennylane's XY mixer 0.37, with every sample feasible and an expected ratio of
a sample of 0.79. The best of 4096 samples is the optimum in all of them, which says little
at this size: the assertions that matter compare with uniform sampling.
"""

from __future__ import annotations

import itertools
import math
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from gateway.marketdata import MarketDataService
from gateway.markets.service import MarketsService
from gateway.quantum import PortfolioOptimisationService
from gateway.quantum.errors import CovarianceSingular, OptimisationFailed, PortfolioInfeasible
from gateway.quantum.estimation import check_covariance
from plugins.builtin import BUILTINS
from plugins.builtin.optimisers.classical import ExactEnumeration, SimulatedAnnealing
from plugins.builtin.optimisers.meanvariance import MeanVariance, mean_variance
from plugins.builtin.optimisers.qubo import bits_of, build_qubo, quadratic_form, size_lower_bounds, to_ising
from plugins.host import PluginHost
from plugins.sdk import (
    NoFeasiblePortfolio,
    OptimisationAnswer,
    OptimisationProblem,
    SectorCap,
    hookimpl,
)
from tests.support import error_codes, wait_for

SIX = ("AAPL.XNAS", "MSFT.XNAS", "JPM.XNYS", "SHEL.XLON", "SAP.XETR", "BHP.XASX")


def random_problem(n: int, seed: int, k: int | None = None, **kwargs: object) -> OptimisationProblem:
    rng = np.random.default_rng(seed)
    factors = rng.normal(size=(n, n + 4)) * rng.uniform(0.1, 0.4)
    sigma = factors @ factors.T / (n + 4)
    mu = rng.normal(0.08, 0.12, size=n)
    kwargs.setdefault("risk_aversion", 1.0)
    return OptimisationProblem(tuple(f"A{i}" for i in range(n)), mu, sigma,
                               k if k is not None else n // 2, seed=seed, **kwargs)  # type: ignore[arg-type]


def brute_force(problem: OptimisationProblem) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every x in {0,1}^n: (x, f(x), feasible)."""
    x = bits_of(np.arange(2**problem.n), problem.n)
    return x, problem.objective(x), problem.feasible(x)


def service(**configs: dict) -> PortfolioOptimisationService:
    return PortfolioOptimisationService(PluginHost(BUILTINS), SimpleNamespace(now=None),  # type: ignore[arg-type]
                                        configs=configs)


# -- the formulation --------------------------------------------------------------------------

def test_penalty_never_lets_an_infeasible_answer_win():
    """Over many random problems (returns of both signs, risk aversion from 0, budgets from 1
    to n, near-singular covariances), every budget-infeasible x has a higher QUBO energy than
    the best feasible one, and the QUBO's minimiser is a feasible optimum."""
    for seed in range(300):
        rng = np.random.default_rng(seed)
        n = int(rng.integers(2, 10))
        k = int(rng.integers(1, n + 1))
        rank = int(rng.integers(1, n + 2))
        factors = rng.normal(size=(n, rank)) * rng.uniform(0.01, 1.0)
        problem = OptimisationProblem(
            tuple(map(str, range(n))), rng.normal(0, rng.uniform(0.01, 0.5), size=n),
            factors @ factors.T, k, risk_aversion=float(rng.choice([0.0, rng.uniform(0, 10)])))
        qubo = build_qubo(problem)
        x, f, _ = brute_force(problem)
        energy = qubo.energy(x)
        budget_ok = x.sum(axis=1) == k
        best_feasible = f[budget_ok].min()
        assert np.allclose(energy[budget_ok], f[budget_ok], atol=1e-12)  # no penalty when feasible
        if (~budget_ok).any():
            assert energy[~budget_ok].min() > best_feasible, seed
        assert budget_ok[int(np.argmin(energy))]
        assert np.isclose(energy.min(), best_feasible, atol=1e-12)
        ising = to_ising(qubo)
        assert np.allclose(ising.energy(1.0 - 2.0 * x), energy, atol=1e-9)


def test_size_lower_bounds_bound_every_subset_of_that_size():
    for seed in range(50):
        problem = random_problem(int(np.random.default_rng(seed).integers(2, 10)), seed)
        a, b = quadratic_form(problem)
        bounds = size_lower_bounds(a, b)
        x, f, _ = brute_force(problem)
        sizes = x.sum(axis=1).astype(int)
        for m in range(problem.n + 1):
            assert bounds[m] <= f[sizes == m].min() + 1e-12


def test_feasibility_matches_its_definition():
    problem = OptimisationProblem(
        ("a", "b", "c", "d"), [0.1, 0.2, 0.3, 0.4], np.eye(4) * 0.04, 2,
        min_weight=[0.0, 0.0, 0.6, 0.0], max_weight=[0.3, 1.0, 1.0, 0.6],
        sector_of={"a": "s", "b": "s", "c": "t"},
        sector_caps={"s": SectorCap(max_assets=1), "t": SectorCap(max_weight=0.5)})
    cases = {
        "1100": False,  # two in sector s
        "1001": False,  # a at most 0.3 and d at most 0.6: cannot reach 1
        "0101": True,
        "0011": False,  # c needs 0.6 but sector t is capped at 0.5
        "1110": False,  # budget
    }
    for bits, expected in cases.items():
        assert problem.feasible(problem.unbits(bits)) is expected, bits
        assert (problem.violation(problem.unbits(bits)) == 0) is expected


# -- classical backends -----------------------------------------------------------------------

def constrained_problem(seed: int) -> OptimisationProblem:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(4, 12))
    k = int(rng.integers(1, n))
    sectors = {f"A{i}": f"s{i % 3}" for i in range(n) if i % 4 != 3}
    caps = {"s0": SectorCap(max_assets=max(1, k // 2)), "s1": SectorCap(max_weight=0.4)}
    return random_problem(n, seed, k, risk_aversion=float(rng.uniform(0.1, 3.0)), sector_of=sectors,
                          sector_caps=caps, max_weight=np.full(n, 0.5))


def test_exact_enumeration_matches_brute_force():
    exact = ExactEnumeration()
    checked = 0
    for seed in range(80):
        problem = constrained_problem(seed)
        _, f, ok = brute_force(problem)
        if not ok.any():
            with pytest.raises(NoFeasiblePortfolio):
                exact.solve(problem, 10)
            continue
        answer = exact.solve(problem, 10)
        assert answer.objective == f[ok].min()
        assert answer.details["worst_feasible_objective"] == f[ok].max()
        assert answer.details["feasible_subsets"] == int(ok.sum())
        assert problem.feasible(problem.unbits(answer.selected))
        checked += 1
    assert checked > 40


@pytest.mark.slow  # 2-5 s, depending on the shared machine's load
def test_simulated_annealing_finds_the_optimum_on_small_problems():
    annealing = SimulatedAnnealing()
    for seed in range(25):
        problem = constrained_problem(seed)
        _, f, ok = brute_force(problem)
        if not ok.any():
            continue
        answer = annealing.solve(problem, 10)
        assert answer.feasible and answer.selected.count("1") == problem.budget
        assert math.isclose(answer.objective, f[ok].min(), abs_tol=1e-12), seed


def test_simulated_annealing_on_a_large_universe():
    problem = random_problem(150, 3, 15, options={"sweeps": 40})
    started = time.perf_counter()
    answer = SimulatedAnnealing().solve(problem, 20)
    assert time.perf_counter() - started < 10
    assert answer.feasible and answer.selected.count("1") == 15
    rng = np.random.default_rng(0)
    random_subsets = np.zeros((2000, 150))
    for row in random_subsets:
        row[rng.choice(150, 15, replace=False)] = 1.0
    assert answer.objective < problem.objective(random_subsets).min()


def test_mean_variance_respects_bounds_and_sector_caps():
    rng = np.random.default_rng(5)
    for seed in range(10):
        problem = random_problem(8, seed, 8, min_weight=np.full(8, 0.02), max_weight=np.full(8, 0.3),
                                 sector_of={"A0": "x", "A1": "x", "A2": "x", "A3": "y"},
                                 sector_caps={"x": SectorCap(max_weight=0.35),
                                              "y": SectorCap(max_weight=0.1)})
        result = mean_variance(problem)
        w = result.weights
        assert math.isclose(w.sum(), 1.0, abs_tol=1e-8)
        assert np.all(w >= 0.02 - 1e-9) and np.all(w <= 0.3 + 1e-9)
        assert w[:3].sum() <= 0.35 + 1e-8 and w[3] <= 0.1 + 1e-8
        # No feasible point drawn at random does better (the QP is convex: SLSQP is optimal).
        draws = rng.dirichlet(np.ones(8), size=20_000)
        ok = (np.all(draws >= 0.02, axis=1) & np.all(draws <= 0.3, axis=1)
              & (draws[:, :3].sum(axis=1) <= 0.35) & (draws[:, 3] <= 0.1))
        values = problem.risk_aversion * np.einsum("ij,jk,ik->i", draws[ok], problem.sigma, draws[ok]) \
            - draws[ok] @ problem.mu
        assert result.objective <= values.min() + 1e-9


def test_mean_variance_on_a_subset_and_when_nothing_is_feasible():
    problem = random_problem(6, 1, 3)
    weights = mean_variance(problem, [0, 2, 4]).weights
    assert math.isclose(weights.sum(), 1.0, abs_tol=1e-8) and np.all(weights[[1, 3, 5]] == 0)
    tight = random_problem(4, 1, 4, max_weight=np.full(4, 0.2))
    with pytest.raises(NoFeasiblePortfolio):
        mean_variance(tight)
    answer = MeanVariance().solve(random_problem(8, 2, 3), 10)
    assert answer.feasible and answer.selected.count("1") == 3


# -- quantum backends -------------------------------------------------------------------------

def quantum_run(result: dict, name: str) -> dict:
    return next(r for r in result["runs"] if r["optimiser"] == name)


def test_qiskit_qaoa_against_the_exact_optimum():
    result = service().optimise(random_problem(6, 1, options={"layers": 2, "maxiter": 60}),
                                "qiskit-qaoa", 30)
    run = quantum_run(result, "qiskit-qaoa")
    assert result["backend"] == {"requested": "qiskit-qaoa", "answered_by": "qiskit-qaoa",
                                 "fallback": False, "reason": None}
    assert run["status"] == "answered" and run["qubits"] == 6 and run["depth"] > 0
    assert run["approximation_ratio"] >= 0.8
    assert run["probability_of_optimum"] > run["uniform_probability_of_optimum"] == 1 / 20
    assert "No quantum advantage is claimed" in result["quantum_advantage"]


def test_qiskit_qaoa_with_cvar():
    result = service().optimise(random_problem(6, 0, options={"layers": 2, "maxiter": 60,
                                                              "cvar_alpha": 0.2}), "qiskit-qaoa", 30)
    run = quantum_run(result, "qiskit-qaoa")
    assert run["status"] == "answered" and "CVaR alpha=0.2" in run["notes"][0]
    assert run["approximation_ratio"] >= 0.8
    assert run["probability_of_optimum"] > run["uniform_probability_of_optimum"]


@pytest.mark.slow  # 2-5 s, depending on the shared machine's load
def test_pennylane_xy_mixer_keeps_the_budget_in_every_sample():
    result = service().optimise(random_problem(6, 1, options={"layers": 2, "maxiter": 20}),
                                "pennylane-xy-qaoa", 30)
    run = quantum_run(result, "pennylane-xy-qaoa")
    assert run["status"] == "answered"
    assert run["probability_feasible"] == pytest.approx(1.0, abs=1e-9)  # no penalty needed
    assert run["approximation_ratio"] >= 0.8
    assert run["expected_ratio_of_feasible_sample"] >= 0.75
    assert run["probability_of_optimum"] > 2 * run["uniform_probability_of_optimum"]


def test_dicke_state_is_uniform_over_subsets_of_the_budget():
    import pennylane as qml

    from plugins.builtin.optimisers.pennylane_qaoa import dicke_state

    for n, k in ((3, 1), (4, 2), (5, 3), (6, 2)):
        @qml.qnode(qml.device("default.qubit", wires=n))
        def state(n: int = n, k: int = k) -> object:
            dicke_state(qml, n, k)
            return qml.state()

        expected = np.zeros(2**n)
        for subset in itertools.combinations(range(n), k):
            expected[sum(1 << (n - 1 - i) for i in subset)] = 1.0
        assert np.allclose(state(), expected / np.linalg.norm(expected), atol=1e-9), (n, k)


# -- fallbacks --------------------------------------------------------------------------------

class Scripted:
    """An optimiser plugin that misbehaves on purpose."""

    kind = "quantum"
    max_assets = max_qubits = 20

    def __init__(self, name: str, behaviour: str) -> None:
        self.name, self.behaviour = name, behaviour

    def solve(self, problem: OptimisationProblem, deadline_s: float) -> OptimisationAnswer:
        if self.behaviour == "raise":
            raise RuntimeError("simulator segfault /secret/path")
        if self.behaviour == "slow":
            time.sleep(deadline_s * 1.5)
        bits = "1" * problem.n if self.behaviour == "infeasible" else \
            "1" * problem.budget + "0" * (problem.n - problem.budget)
        return OptimisationAnswer(self.name, bits, (), 0.0, True, 0.0)


class BrokenPlugin:
    @hookimpl
    def alphintra_portfolio_optimisers(self, context: object) -> list:
        return [Scripted("broken-raises", "raise"), Scripted("broken-slow", "slow"),
                Scripted("broken-infeasible", "infeasible")]


@pytest.mark.parametrize(("backend", "status", "reason"), [
    ("broken-raises", "failed", "raised RuntimeError"),
    ("broken-slow", "timed_out", "past its 1 s deadline"),
    ("broken-infeasible", "infeasible_answer", "breaks the budget"),
])
def test_a_failing_backend_falls_back_to_the_exact_answer(backend, status, reason):
    host = PluginHost([*BUILTINS, ("broken", BrokenPlugin())])  # a fresh host, not the runtime's
    svc = PortfolioOptimisationService(host, SimpleNamespace(now=None))  # type: ignore[arg-type]
    problem = random_problem(8, 4)
    result = svc.optimise(problem, backend, 1.0)
    assert result["backend"]["answered_by"] == "classical-exact" and result["backend"]["fallback"]
    assert status.replace("_", " ") in result["backend"]["reason"] and reason in result["backend"]["reason"]
    assert "secret" not in str(result)  # the exception text stays in the log
    failed = quantum_run(result, backend)
    assert failed["status"] == status and failed["bitstring"] is None
    assert result["approximation_ratio"] == 1.0
    assert math.isclose(sum(result["weights"].values()), 1.0, abs_tol=1e-8)


def test_qubit_cap_exceeded_falls_back_without_running_the_circuit():
    svc = service(**{"optimisers": {"qiskit-qaoa": {"max_qubits": 6}}})
    result = svc.optimise(random_problem(8, 2), "qiskit-qaoa", 30)
    run = quantum_run(result, "qiskit-qaoa")
    assert run["status"] == "refused" and run["runtime_s"] == 0 and "needs 8 qubits" in run["reason"]
    assert result["backend"]["answered_by"] == "classical-exact"


def test_beyond_the_exact_cap_annealing_answers_and_no_ratio_is_claimed():
    result = service().optimise(random_problem(30, 6, 5, options={"sweeps": 60}), "qiskit-qaoa", 30)
    assert [r["status"] for r in result["runs"]] == ["refused", "answered"]
    assert result["backend"]["answered_by"] == "classical-sa"
    assert result["approximation_ratio"] is None and result["exact_objective"] is None


def test_infeasible_constraints_and_singular_covariance():
    problem = random_problem(6, 1, 3, sector_of={f"A{i}": "all" for i in range(6)},
                             sector_caps={"all": SectorCap(max_assets=2)})
    with pytest.raises(PortfolioInfeasible) as refused:
        service().optimise(problem, "qiskit-qaoa", 30)
    assert refused.value.code == "PORTFOLIO_INFEASIBLE"

    factors = np.random.default_rng(0).normal(size=(5, 2))
    with pytest.raises(CovarianceSingular) as singular:
        check_covariance(factors @ factors.T)
    assert singular.value.code == "COVARIANCE_SINGULAR" and "shrinkage" in singular.value.message
    with pytest.raises(CovarianceSingular):
        check_covariance(np.array([[1.0, 2.0], [2.0, 1.0]]))  # indefinite
    shrunk = check_covariance(factors @ factors.T, shrinkage=0.1)
    assert shrunk.min_eigenvalue > 0 and shrunk.raw_min_eigenvalue < 1e-12
    with pytest.raises(OptimisationFailed):
        PortfolioOptimisationService(PluginHost([("broken", BrokenPlugin())]),  # no classical at all
                                     SimpleNamespace(now=None)).optimise(  # type: ignore[arg-type]
            random_problem(4, 1), "broken-raises", 1.0)


def test_singular_covariance_from_bars_is_refused_unless_shrunk(tmp_path: Path):
    """Two instruments whose closes move as one: the estimate is singular."""
    (tmp_path / "instruments.csv").write_text(
        "symbol,mic,currency,name,isin,asset_class,lot_size,tick_size\n"
        "AAA,XTSE,CAD,A,,EQUITY,1,0.01\nBBB,XTSE,CAD,B,,EQUITY,1,0.01\n")
    rows = ["symbol,mic,start,interval,open,high,low,close,volume,session"]
    day, price, rng = np.datetime64("2024-01-01"), 100.0, np.random.default_rng(1)
    for _ in range(90):
        day += 1
        if (day.astype("datetime64[D]").view("int64") - 4) % 7 < 5:  # weekdays
            price *= 1 + rng.normal(0, 0.01)
            for symbol, scale in (("AAA", 1), ("BBB", 2)):
                p = f"{price * scale:.6f}"
                rows.append(f"{symbol},XTSE,{day}T14:30:00Z,1d,{p},{p},{p},{p},1000,REGULAR")
    (tmp_path / "bars.csv").write_text("\n".join(rows) + "\n")
    markets = MarketsService()
    host = PluginHost(BUILTINS)
    data = MarketDataService(host, markets.directory, configs={"file-source": {"path": str(tmp_path)}})
    svc = PortfolioOptimisationService(host, data)
    request = {"instruments": ["AAA.XTSE", "BBB.XTSE"], "budget": 1, "lookback_days": 90,
               "as_of": "2024-04-01T00:00:00Z"}
    with pytest.raises(CovarianceSingular):
        svc.run(svc.validate(request), lambda f, m: None)
    done = svc.run(svc.validate({**request, "shrinkage": 0.05}), lambda f, m: None)
    assert done["covariance"]["shrinkage"] == 0.05 and len(done["selected"]) == 1


# -- through GraphQL --------------------------------------------------------------------------

START = """mutation($i: OptimizePortfolioInput!) { optimizePortfolio(input: $i) {
  id kind status error { code } } }"""
GET = "query($id: ID!) { job(id: $id) { status progress result error { code message } } }"


def test_bad_input_is_refused_with_codes_and_persists_nothing(gql, runtime, tenant):
    from sqlmodel import func, select

    from gateway.jobs.models import Job

    def count() -> int:
        with runtime.db.tenant_session(tenant.id) as s:
            return s.exec(select(func.count()).select_from(Job)).one()

    before = count()
    base = {"instruments": list(SIX[:4]), "budget": 2}
    cases = [
        ({"budget": 0}, "BUDGET_INVALID"),
        ({"budget": 5}, "ASSETS_FEWER_THAN_BUDGET"),
        ({"backend": "dwave-annealer"}, "BACKEND_UNKNOWN"),
        ({"instruments": ["NOPE.XNAS", "AAPL.XNAS"]}, "INSTRUMENT_UNKNOWN"),
        ({"instruments": ["AAPL.XNAS", "aapl.xnas"]}, "INSTRUMENTS_INVALID"),
        ({"instruments": []}, "INSTRUMENTS_INVALID"),
        ({"cvarAlpha": 0}, "CVAR_ALPHA_INVALID"),
        ({"bounds": [{"instrument": "BTC-USD.ALPX", "max": 0.5}]}, "BOUNDS_INVALID"),
        ({"bounds": [{"instrument": "AAPL.XNAS", "min": 0.6, "max": 0.5}]}, "BOUNDS_INVALID"),
        ({"sectorCaps": [{"sector": "a", "instruments": ["AAPL.XNAS"], "maxAssets": 1},
                         {"sector": "b", "instruments": ["AAPL.XNAS"], "maxAssets": 1}]},
         "SECTOR_CAPS_INVALID"),
        ({"lookbackDays": 5}, "JOB_PARAMS_INVALID"),
        ({"asOf": "2024-01-01T00:00:00"}, "INSTANT_NOT_AWARE"),
    ]
    for change, code in cases:
        assert error_codes(gql(START, {"i": {**base, **change}}, key=tenant.key)) == [code], change
    assert count() == before


@pytest.mark.slow  # 2-5 s, depending on the shared machine's load
def test_optimisation_job_end_to_end(gql, runtime, tenant):
    listed = gql.data("{ portfolioOptimisers { name kind maxAssets maxQubits plugin } }",
                      key=tenant.key)["portfolioOptimisers"]
    assert {o["name"]: o["kind"] for o in listed} == {
        "classical-exact": "classical", "classical-sa": "classical", "classical-mv": "classical",
        "qiskit-qaoa": "quantum", "pennylane-xy-qaoa": "quantum"}
    job = gql.data(START, {"i": {
        "instruments": list(SIX), "budget": 3, "backend": "qiskit-qaoa", "layers": 1,
        "lookbackDays": 120, "asOf": "2025-01-02T00:00:00Z", "seed": 11, "riskFreeRate": 0.02,
        "bounds": [{"instrument": "AAPL.XNAS", "min": 0.1, "max": 0.5}],
        "sectorCaps": [{"sector": "us-tech", "instruments": ["AAPL.XNAS", "MSFT.XNAS"],
                        "maxAssets": 1}]}}, key=tenant.key)["optimizePortfolio"]
    assert job["kind"] == "portfolio.optimize" and job["status"] == "QUEUED"
    wait_for(lambda: runtime.jobs.get(tenant.id, job["id"]).finished_at, timeout=60)
    done = gql.data(GET, {"id": job["id"]}, key=tenant.key)["job"]
    assert done["status"] == "SUCCEEDED", done["error"]
    result = done["result"]
    assert result["backend"]["requested"] == "qiskit-qaoa"
    assert [r["role"] for r in result["runs"]] == ["reference", "requested"]
    assert len(result["selected"]) == 3
    assert not {"AAPL.XNAS", "MSFT.XNAS"} <= set(result["selected"])  # the sector cap
    weights = result["weights"]
    assert math.isclose(sum(weights.values()), 1.0, abs_tol=1e-8)
    if "AAPL.XNAS" in weights:
        assert 0.1 - 1e-9 <= weights["AAPL.XNAS"] <= 0.5 + 1e-9
    assert 0 <= result["approximation_ratio"] <= 1 and result["exact_objective"] is not None
    quantum = quantum_run(result, "qiskit-qaoa")
    assert quantum["qubits"] == 6 and quantum["depth"] > 0 and quantum["runtime_s"] > 0
    assert 0 <= result["probability_of_optimum"] <= 1
    assert result["risk_free_rate"] == 0.02
    assert result["sharpe"] == pytest.approx((result["expected_return"] - 0.02) / result["volatility"])
    assert result["data"]["returns"] >= 20 and result["as_of"].startswith("2025-01-02")
    assert "No quantum advantage is claimed" in result["quantum_advantage"]


def test_insufficient_history_fails_the_job_with_a_code(gql, runtime, tenant):
    """The file source's sample covers early 2024 only; a 2025 lookback has no bars for it."""
    job = gql.data(START, {"i": {"instruments": ["RY.XTSE", "AAPL.XNAS"], "budget": 1,
                                 "lookbackDays": 60, "asOf": "2025-06-02T00:00:00Z"}},
                   key=tenant.key)["optimizePortfolio"]
    done = wait_for(lambda: (j := runtime.jobs.get(tenant.id, job["id"])).finished_at and j, timeout=30)
    assert done.status == "FAILED" and done.error_code == "HISTORY_INSUFFICIENT"


# -- issue 17: every chosen instrument is held ---------------------------------------------------

README_FOUR = ["AAPL.XNAS", "MSFT.XNAS", "JPM.XNYS", "SHEL.XLON"]


def _optimised(gql, runtime, tenant, **extra: object) -> dict:
    job = gql.data(START, {"i": {"instruments": README_FOUR, "budget": 2,
                                 "asOf": "2026-12-06T00:00:00Z", **extra}},
                   key=tenant.key)["optimizePortfolio"]
    wait_for(lambda: runtime.jobs.get(tenant.id, job["id"]).finished_at, timeout=60)
    done = gql.data(GET, {"id": job["id"]}, key=tenant.key)["job"]
    assert done["status"] == "SUCCEEDED", done["error"]
    return done["result"]


def test_budget_two_holds_both_chosen_instruments(gql, runtime, tenant):
    """The README's call: MSFT and SHEL are chosen; mean-variance alone put 100 % in SHEL."""
    result = _optimised(gql, runtime, tenant)
    assert sorted(result["selected"]) == ["MSFT.XNAS", "SHEL.XLON"]
    weights = result["weights"]
    assert set(weights) == set(result["selected"])  # nothing outside the chosen subset
    assert math.isclose(sum(weights.values()), 1.0, abs_tol=1e-8)
    assert result["min_holding_share"] == 0.5 and result["holding_floors"] == {
        "MSFT.XNAS": 0.25, "SHEL.XLON": 0.25}
    assert all(w >= 0.25 - 1e-9 for w in weights.values()), weights
    assert result["objective"] <= result["selection_objective"] + 1e-12  # no worse than equal weights
    # without the floor (minHoldingShare 0) the old corner solution comes back
    corner = _optimised(gql, runtime, tenant, minHoldingShare=0.0)["weights"]
    assert min(corner.values()) < 1e-6


def test_holding_floors_respect_bounds_and_sector_caps():
    from dataclasses import replace

    from gateway.quantum.holdings import holding_floors

    problem = random_problem(3, 5, 3, min_weight=[0.6, 0.0, 0.0], max_weight=[1.0, 0.05, 1.0],
                             sector_of={"A1": "s", "A2": "s"}, sector_caps={"s": SectorCap(max_weight=0.3)})
    floors = holding_floors(problem, 0.5)  # 1/6 each, A0 at its min 0.6, A1 at its max 0.05
    assert np.allclose(floors, [0.6, 0.05, 1 / 6])
    capped = holding_floors(replace(problem, sector_caps={"s": SectorCap(max_weight=0.1)}), 0.5)
    assert np.allclose(capped, [0.6, 0.05 * 0.1 / (0.05 + 1 / 6), 1 / 6 * 0.1 / (0.05 + 1 / 6)])
    tight = holding_floors(replace(problem, min_weight=[0.9, 0.0, 0.0]), 1.0)  # 0.9 + 0.05 + 1/3 > 1
    assert math.isclose(tight.sum(), 1.0) and tight[0] == 0.9
    assert np.allclose(holding_floors(problem, 0.0), [0.6, 0.0, 0.0])
    weights = mean_variance(replace(problem, min_weight=floors)).weights
    assert np.all(weights >= floors - 1e-9) and math.isclose(weights.sum(), 1.0, abs_tol=1e-8)
    assert weights[1] + weights[2] <= 0.3 + 1e-8 and weights[1] <= 0.05 + 1e-9


def test_every_chosen_asset_gets_weight_over_random_problems():
    svc = service()
    for seed in range(8):
        result = svc.optimise(random_problem(6, seed, 3), "classical-exact", 30)
        assert len(result["weights"]) == 3
        assert all(w >= 0.5 / 3 - 1e-9 for w in result["weights"].values()), (seed, result["weights"])
