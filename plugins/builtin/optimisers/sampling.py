"""What the QAOA backends share: deadlines, the angle loop around scipy, and turning a final
circuit's distribution and samples into an `OptimisationAnswer`.

Indices of basis states follow qiskit's integer order: bit i of the index is qubit i, which
is asset i (`qubo.bits_of`). A backend with another order (pennylane: wire 0 is the most
significant bit) converts before calling `answer`.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from plugins.builtin.optimisers.qubo import bits_of
from plugins.sdk import OptimisationAnswer, OptimisationProblem, OptimiserRefused

# The angle loop stops at this share of the deadline, leaving the rest for the final sampling.
OPTIMISE_SHARE = 0.75
# At most this many bitstrings of the final distribution go into an answer (all of them up to
# 16 qubits); the rest of the probability mass is reported as a note.
MAX_DISTRIBUTION = 1 << 16


class StopOptimising(Exception):
    """Raised inside the objective to end scipy's loop at the deadline."""


@dataclass
class AngleSearch:
    """Keeps the best angles any evaluation saw, so a loop stopped at the deadline (or one
    whose last iterate is not its best) still ends on its best point."""

    started: float
    deadline_s: float
    evaluations: int = 0
    best_value: float = np.inf
    best_angles: np.ndarray | None = None
    stopped: bool = False
    history: list[float] = field(default_factory=list)

    def wrap(self, fun: Callable[[np.ndarray], Any]) -> Callable[[np.ndarray], Any]:
        def wrapped(angles: np.ndarray) -> Any:
            if time.perf_counter() - self.started > OPTIMISE_SHARE * self.deadline_s:
                self.stopped = True
                raise StopOptimising
            out = fun(np.asarray(angles, dtype=np.float64))
            value = float(out[0] if isinstance(out, tuple) else out)
            self.evaluations += 1
            self.history.append(value)
            if value < self.best_value:
                self.best_value, self.best_angles = value, np.array(angles, dtype=np.float64)
            return out
        return wrapped

    def run(self, fun: Callable[[np.ndarray], Any], start: np.ndarray, method: str,
            options: Mapping[str, Any], jac: bool = False) -> np.ndarray:
        from scipy.optimize import minimize

        with contextlib.suppress(StopOptimising):  # the deadline: keep the best point so far
            minimize(self.wrap(fun), start, method=method, jac=jac or None, options=dict(options))
        return self.best_angles if self.best_angles is not None else np.asarray(start)


def ramp(layers: int, step: float) -> np.ndarray:
    """Linear-ramp start (as in a discretised adiabatic path): gamma grows and beta shrinks over
    the layers. Returned as [gamma_0..gamma_{p-1}, beta_0..beta_{p-1}]."""
    fractions = (np.arange(layers) + 0.5) / layers
    return np.concatenate([fractions * step, (1.0 - fractions) * step])


def option(problem: OptimisationProblem, key: str, default: Any, kind: type, low: float, high: float) -> Any:
    value = problem.options.get(key, default)
    if value is None:
        return None
    try:
        value = kind(value)
    except (TypeError, ValueError):
        raise OptimiserRefused(f"option {key} must be a {kind.__name__}") from None
    if not low <= value <= high:
        raise OptimiserRefused(f"option {key} must be from {low:g} to {high:g}")
    return value


def cvar(energies: np.ndarray, weights: np.ndarray, alpha: float) -> float:
    """Conditional value at risk: the mean of the lowest alpha share of the (weighted) energies,
    splitting the boundary sample."""
    order = np.argsort(energies, kind="stable")
    e, w = energies[order], weights[order]
    cut = alpha * w.sum()
    before = np.cumsum(w) - w
    take = np.clip(cut - before, 0.0, w)
    return float((take * e).sum() / cut)


def answer(problem: OptimisationProblem, *, optimiser: str, probabilities: np.ndarray,
           counts: Mapping[int, int], started: float, qubits: int, depth: int, shots: int,
           search: AngleSearch, notes: list[str], details: dict[str, Any]) -> OptimisationAnswer:
    """The best feasible sampled bitstring, with what the circuit put on it.

    The choice uses only the samples (what hardware would give); the probabilities are the
    simulator's exact ones, for reporting."""
    n = problem.n
    sampled = np.fromiter(counts.keys(), dtype=np.int64)
    frequency = np.fromiter(counts.values(), dtype=np.float64)
    x = bits_of(sampled, n)
    ok = problem.feasible(x)
    if ok.any():
        f = np.where(ok, problem.objective(x), np.inf)
        chosen = int(np.argmin(f))
    else:
        chosen = int(np.argmax(frequency))
        notes.append(f"no feasible bitstring among {shots} samples")
    keep = np.flatnonzero(probabilities > 1e-12)
    if len(keep) > MAX_DISTRIBUTION:
        keep = keep[np.argsort(probabilities[keep])[-MAX_DISTRIBUTION:]]
        notes.append(f"distribution holds the {MAX_DISTRIBUTION} likeliest bitstrings, "
                     f"{probabilities[keep].sum():.4f} of the mass")
    keys = bits_of(keep, n)
    distribution = {problem.bits(row): float(p) for row, p in zip(keys, probabilities[keep], strict=True)}
    if search.stopped:
        notes.append(f"angle optimisation stopped at the deadline after {search.evaluations} "
                     "evaluations")
    selected = x[chosen]
    k = float(selected.sum()) or 1.0
    return OptimisationAnswer(
        optimiser=optimiser, selected=problem.bits(selected),
        weights=tuple(float(v) / k for v in selected), objective=float(problem.objective(selected)),
        feasible=bool(ok[chosen]), runtime_s=time.perf_counter() - started,
        iterations=search.evaluations, probability=float(probabilities[sampled[chosen]]),
        distribution=distribution, qubits=qubits, depth=depth, shots=shots, notes=tuple(notes),
        details={**details, "best_angle_value": search.best_value,
                 "sampled_feasible_share": float(frequency[ok].sum() / frequency.sum())})
