"""Classical subset selectors: exact enumeration, and simulated annealing for large universes.

Both minimise `OptimisationProblem.objective` over `OptimisationProblem.feasible` subsets
directly (no penalty), so their answers need no checking against a penalty bound.
"""

from __future__ import annotations

import itertools
import math
import time

import numpy as np

from plugins.builtin.optimisers.qubo import quadratic_form
from plugins.sdk import (
    NoFeasiblePortfolio,
    OptimisationAnswer,
    OptimisationProblem,
    OptimiserRefused,
    OptimiserTimedOut,
)


def equal_weights(x: np.ndarray) -> tuple[float, ...]:
    k = float(x.sum())
    return tuple(float(v) / k for v in x)


class ExactEnumeration:
    """Every subset of `budget` assets, C(n, k) of them, scored in vectorised chunks.

    Subsets come from itertools.combinations in lexicographic order, `chunk` at a time, as
    rows of a 0/1 matrix X, so f is one matrix product per chunk, ((X Sigma) * X) summed by
    row. At n = 25, k = 12 that is 5.2 million subsets. It also reports the worst feasible
    objective and the number of feasible subsets (`details`), which approximation ratios need.
    """

    kind = "classical"
    max_qubits = None

    def __init__(self, name: str = "classical-exact", max_assets: int = 25, chunk: int = 32_768) -> None:
        self.name = name
        self.max_assets = max_assets
        self.chunk = chunk

    def solve(self, problem: OptimisationProblem, deadline_s: float) -> OptimisationAnswer:
        started = time.perf_counter()
        n, k = problem.n, problem.budget
        if n > self.max_assets:
            raise OptimiserRefused(f"{self.name} enumerates at most {self.max_assets} assets; "
                                   f"the problem has {n}")
        combos = itertools.combinations(range(n), k)
        best_f, worst_f, best_x, feasible, seen = math.inf, -math.inf, None, 0, 0
        while True:
            flat = np.fromiter(itertools.chain.from_iterable(itertools.islice(combos, self.chunk)),
                               dtype=np.intp)
            if flat.size == 0:
                break
            idx = flat.reshape(-1, k)
            x = np.zeros((len(idx), n))
            x[np.arange(len(idx))[:, None], idx] = 1.0
            seen += len(idx)
            ok = problem.feasible(x)
            if ok.any():
                f = problem.objective(x[ok])
                feasible += int(ok.sum())
                low = int(np.argmin(f))
                if f[low] < best_f:
                    best_f, best_x = float(f[low]), x[ok][low].copy()
                worst_f = max(worst_f, float(f.max()))
            if time.perf_counter() - started > deadline_s:
                raise OptimiserTimedOut(f"{self.name} scored {seen} of {math.comb(n, k)} subsets "
                                        f"in {deadline_s:g} s")
        if best_x is None:
            raise NoFeasiblePortfolio(f"none of the {seen} subsets of {k} assets satisfies the "
                                      "sector caps and weight bounds")
        return OptimisationAnswer(
            optimiser=self.name, selected=problem.bits(best_x), weights=equal_weights(best_x),
            objective=best_f, feasible=True, runtime_s=time.perf_counter() - started,
            iterations=seen,
            details={"worst_feasible_objective": worst_f, "feasible_subsets": feasible,
                     "subsets": seen})


class SimulatedAnnealing:
    """Simulated annealing on k-subsets with swap moves, so the budget always holds.

    A move swaps one chosen asset for an unchosen one; its change in f is O(1) from the local
    fields g = A x that each chain keeps: Delta f = 2(g_j - g_i) + A_ii + A_jj - 2 A_ij + b_j - b_i.
    Many independent chains run as rows of numpy arrays, so one step costs a few vector
    operations whatever the number of chains. Sector caps and weight bounds enter the annealed
    energy as rho·violation (rho as large as the budget penalty's bound), which steers chains
    back to feasible subsets; the answer is the best *feasible* state any chain visited, then
    polished by steepest-descent swaps that stay feasible. The temperature falls geometrically
    from the typical |Delta f| of random moves to a thousandth of it.
    """

    kind = "classical"
    max_qubits = None

    def __init__(self, name: str = "classical-sa", max_assets: int = 5_000, chains: int = 32,
                 sweeps: int = 100) -> None:
        self.name = name
        self.max_assets = max_assets
        self.chains = chains
        self.sweeps = sweeps

    def solve(self, problem: OptimisationProblem, deadline_s: float) -> OptimisationAnswer:
        started = time.perf_counter()
        n, k = problem.n, problem.budget
        if n > self.max_assets:
            raise OptimiserRefused(f"{self.name} takes at most {self.max_assets} assets")
        rng = np.random.default_rng(problem.seed)
        a, b = quadratic_form(problem)
        constrained = bool(problem.sector_of) or bool(np.any(problem.min_weight > 0)) or \
            bool(np.any(problem.max_weight < 1))
        if k == n:
            x = np.ones(n)
            if not problem.feasible(x):
                raise NoFeasiblePortfolio("holding every asset breaks the sector caps or bounds")
            return self._answer(problem, x, started, 0, (), 0)

        chains = int(problem.options.get("chains", self.chains))
        sweeps = int(problem.options.get("sweeps", self.sweeps))
        steps = max(1, sweeps * n)
        rows = np.arange(chains)
        order = np.argsort(rng.random((chains, n)), axis=1)
        ones, zeros = order[:, :k].copy(), order[:, k:].copy()  # chosen / unchosen indices
        x = np.zeros((chains, n))
        x[rows[:, None], ones] = 1.0
        g = x @ a
        f = ((x @ a) * x).sum(axis=1) + x @ b
        rho = _penalty_scale(problem, a, b)
        viol = problem.violation(x) if constrained else np.zeros(chains)
        best_f = np.where(viol <= 1e-9, f, np.inf)
        best_x = x.copy()

        def proposal() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
            pi, pj = rng.integers(k, size=chains), rng.integers(n - k, size=chains)
            i, j = ones[rows, pi], zeros[rows, pj]
            delta = 2.0 * (g[rows, j] - g[rows, i]) + a[i, i] + a[j, j] - 2.0 * a[i, j] + b[j] - b[i]
            return pi, pj, i, j, delta

        t0 = float(np.mean(np.abs(proposal()[4]))) or 1e-9
        cooling = (1e-3) ** (1.0 / steps)
        temperature, done = t0, 0
        for step in range(steps):
            pi, pj, i, j, delta = proposal()
            if constrained:
                moved = x.copy()
                moved[rows, i], moved[rows, j] = 0.0, 1.0
                new_viol = problem.violation(moved)
                energy_delta = delta + rho * (new_viol - viol)
            else:
                new_viol, energy_delta = viol, delta
            accept = (energy_delta <= 0) | (rng.random(chains) < np.exp(
                -np.maximum(energy_delta, 0.0) / temperature))
            if accept.any():
                r, ia, ja = rows[accept], i[accept], j[accept]
                x[r, ia], x[r, ja] = 0.0, 1.0
                ones[r, pi[accept]], zeros[r, pj[accept]] = ja, ia
                g[r] += a[ja] - a[ia]
                f[r] += delta[accept]
                viol = np.where(accept, new_viol, viol)
                better = accept & (viol <= 1e-9) & (f < best_f)
                best_f[better], best_x[better] = f[better], x[better]
            temperature *= cooling
            done = step + 1
            if step % 256 == 0 and time.perf_counter() - started > deadline_s:
                break
        notes: tuple[str, ...] = ()
        if done < steps:
            notes = (f"stopped at the deadline after {done} of {steps} steps",)
        if not np.isfinite(best_f).any():
            raise NoFeasiblePortfolio(f"{self.name} visited no subset that satisfies the sector "
                                      "caps and weight bounds")
        polished = _polish(problem, best_x[int(np.argmin(best_f))], a, b)
        return self._answer(problem, polished, started, done * chains, notes, chains)

    def _answer(self, problem: OptimisationProblem, x: np.ndarray, started: float, iterations: int,
                notes: tuple[str, ...], chains: int) -> OptimisationAnswer:
        return OptimisationAnswer(
            optimiser=self.name, selected=problem.bits(x), weights=equal_weights(x),
            objective=float(problem.objective(x)), feasible=bool(problem.feasible(x)),
            runtime_s=time.perf_counter() - started, iterations=iterations, notes=notes,
            details={"chains": chains})


def _penalty_scale(problem: OptimisationProblem, a: np.ndarray, b: np.ndarray) -> float:
    """The spread of f over all subsets (upper bound of the positive parts minus the lower
    bound), so one unit of violation outweighs any gain in f."""
    upper = np.triu(2.0 * a, k=1)
    high = float(np.maximum(np.diag(a) + b, 0.0).sum() + np.maximum(upper, 0.0).sum())
    low = float(np.minimum(np.diag(a) + b, 0.0).sum() + np.minimum(upper, 0.0).sum())
    return max(high - low, 1e-12)


def _polish(problem: OptimisationProblem, x: np.ndarray, a: np.ndarray, b: np.ndarray,
            max_rounds: int = 1_000) -> np.ndarray:
    """Steepest-descent swaps (all k(n-k) at once) while one improves f and stays feasible."""
    x = x.copy()
    for _ in range(max_rounds):
        ones, zeros = np.flatnonzero(x > 0.5), np.flatnonzero(x < 0.5)
        if not len(zeros):
            break
        g = a @ x
        delta = (2.0 * (g[None, zeros] - g[ones, None]) + np.diag(a)[ones, None]
                 + np.diag(a)[None, zeros] - 2.0 * a[np.ix_(ones, zeros)]
                 + b[None, zeros] - b[ones, None])
        for flat in np.argsort(delta, axis=None):
            oi, zi = np.unravel_index(flat, delta.shape)
            if delta[oi, zi] >= -1e-15:
                return x
            trial = x.copy()
            trial[ones[oi]], trial[zeros[zi]] = 0.0, 1.0
            if problem.feasible(trial):
                x = trial
                break
        else:
            return x
    return x

