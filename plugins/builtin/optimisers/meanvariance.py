"""Continuous mean-variance weights (scipy SLSQP), and a relax-and-round subset selector on it.

`mean_variance(problem, indices)`: minimise q·w'Sigma w - mu'w over the assets at `indices`
subject to Sum w = 1, min_i <= w_i <= max_i, and each sector's Sum w <= its max_weight; the
other assets get weight 0. A convex QP: SLSQP from a feasible start (found by a linear
programme, which also proves infeasibility) with the analytic gradient.

`MeanVariance` ("classical-mv") is the same step used as a backend: with k < n it relaxes
the cardinality (weights over all n), keeps the k assets with the largest weights that the
sector counts allow, and re-solves on them. A heuristic, with no optimality claim for the
subset; with k = n (every asset may be held, weights may still be zero when min is 0) it is
plain mean-variance over the universe. The gateway uses it for the weights of whatever subset
was chosen: `solve(problem.subset(chosen))`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from plugins.sdk import NoFeasiblePortfolio, OptimisationAnswer, OptimisationProblem, OptimiserTimedOut

TOLERANCE = 1e-7


@dataclass(frozen=True)
class Weights:
    weights: np.ndarray  # (n,), zero outside the subset
    objective: float  # q·w'Sigma w - mu'w
    iterations: int
    message: str


def _sector_rows(problem: OptimisationProblem, idx: list[int]) -> list[tuple[np.ndarray, float]]:
    """(indicator over idx, cap) for each sector with a weight cap."""
    rows = []
    for sector, cap in problem.sector_caps.items():
        if cap.max_weight is None:
            continue
        member = np.array([1.0 if problem.sector_of.get(problem.assets[i]) == sector else 0.0
                           for i in idx])
        if member.any():
            rows.append((member, float(cap.max_weight)))
    return rows


def mean_variance(problem: OptimisationProblem, indices: list[int] | None = None) -> Weights:
    from scipy.optimize import linprog, minimize  # scipy only when weights are asked for

    idx = list(range(problem.n)) if indices is None else list(indices)
    mu = np.asarray(problem.mu)[idx]
    sigma = np.asarray(problem.sigma)[np.ix_(idx, idx)]
    q = problem.risk_aversion
    bounds = list(zip(np.asarray(problem.min_weight)[idx], np.asarray(problem.max_weight)[idx],
                      strict=True))
    sectors = _sector_rows(problem, idx)
    m = len(idx)

    # A feasible start, or proof there is none.
    a_ub = np.array([row for row, _ in sectors]) if sectors else None
    b_ub = np.array([cap for _, cap in sectors]) if sectors else None
    lp = linprog(np.zeros(m), A_ub=a_ub, b_ub=b_ub, A_eq=np.ones((1, m)), b_eq=[1.0],
                 bounds=bounds, method="highs")
    if lp.status != 0:
        raise NoFeasiblePortfolio("no weights satisfy the bounds and sector caps: " + lp.message)

    def value(w: np.ndarray) -> float:
        return float(q * w @ sigma @ w - mu @ w)

    def gradient(w: np.ndarray) -> np.ndarray:
        return 2.0 * q * sigma @ w - mu

    constraints = [{"type": "eq", "fun": lambda w: w.sum() - 1.0, "jac": lambda w: np.ones(m)}]
    constraints += [{"type": "ineq", "fun": lambda w, r=row, c=cap: c - r @ w,
                     "jac": lambda w, r=row: -r} for row, cap in sectors]
    result = minimize(value, lp.x, jac=gradient, bounds=bounds, constraints=constraints,
                      method="SLSQP", options={"ftol": 1e-12, "maxiter": 500})
    w = np.clip(result.x, [lo for lo, _ in bounds], [hi for _, hi in bounds])
    if not _satisfies(w, sectors) or value(w) > value(lp.x) + 1e-12:
        # SLSQP rarely stops outside the feasible set or above its start; the LP point is
        # feasible, so it is the honest fallback.
        w, message = lp.x, f"SLSQP did not improve on the feasible start ({result.message})"
    else:
        message = str(result.message)
    full = np.zeros(problem.n)
    full[idx] = w
    return Weights(full, value(w), int(result.nit), message)


def _satisfies(w: np.ndarray, sectors: list[tuple[np.ndarray, float]]) -> bool:
    return abs(w.sum() - 1.0) <= TOLERANCE and all(row @ w <= cap + TOLERANCE for row, cap in sectors)


class MeanVariance:
    kind = "classical"
    max_qubits = None

    def __init__(self, name: str = "classical-mv", max_assets: int = 2_000) -> None:
        self.name = name
        self.max_assets = max_assets

    def solve(self, problem: OptimisationProblem, deadline_s: float) -> OptimisationAnswer:
        started = time.perf_counter()
        n, k = problem.n, problem.budget
        relaxed = mean_variance(problem)
        notes: list[str] = []
        if k == n:
            chosen = list(range(n))
            final = relaxed
        else:
            chosen = self._round(problem, relaxed.weights)
            if time.perf_counter() - started > deadline_s:
                raise OptimiserTimedOut(f"{self.name} passed its deadline")
            final = mean_variance(problem, chosen)
            notes.append("relax-and-round: a heuristic subset, no optimality claim")
        x = np.zeros(n)
        x[chosen] = 1.0
        notes.append(final.message)
        return OptimisationAnswer(
            optimiser=self.name, selected=problem.bits(x),
            weights=tuple(float(v) for v in final.weights), objective=final.objective,
            feasible=bool(problem.feasible(x)), runtime_s=time.perf_counter() - started,
            iterations=relaxed.iterations + (final.iterations if final is not relaxed else 0),
            notes=tuple(notes))

    @staticmethod
    def _round(problem: OptimisationProblem, weights: np.ndarray) -> list[int]:
        """The k largest weights (ties by higher mu) that keep every sector under its count
        cap and leave the subset feasible."""
        order = sorted(range(problem.n), key=lambda i: (-weights[i], -problem.mu[i]))
        chosen: list[int] = []
        counts: dict[str, int] = {}
        for i in order:
            sector = problem.sector_of.get(problem.assets[i])
            cap = problem.sector_caps.get(sector) if sector is not None else None
            if cap is not None and cap.max_assets is not None and counts.get(sector, 0) >= cap.max_assets:
                continue
            chosen.append(i)
            if sector is not None:
                counts[sector] = counts.get(sector, 0) + 1
            if len(chosen) == problem.budget:
                break
        x = np.zeros(problem.n)
        x[chosen] = 1.0
        if len(chosen) < problem.budget or not problem.feasible(x):
            raise NoFeasiblePortfolio("relax-and-round found no feasible subset of the budget")
        return chosen
