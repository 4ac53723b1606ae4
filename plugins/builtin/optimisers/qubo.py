"""The subset-selection problem as a QUBO and as an Ising Hamiltonian (pure numpy).

Objective (`OptimisationProblem.objective`): f(x) = x'Ax + b'x with A = (q/k^2)·Sigma and
b = -mu/k, x in {0, 1}^n, i.e. the equal-weight portfolio of the chosen assets per unit of
capital.

Budget as a penalty: E(x) = f(x) + lam·(Sum x - k)^2, which is again a QUBO,
E(x) = x'Qx + c'x + constant with Q = A + lam·11', c = b - 2·lam·k·1, constant = lam·k^2.

Why `penalty_weight` is large enough (no budget-infeasible x has lower energy than the best
budget-feasible one):
- Upper bound on the feasible optimum: any x0 with k ones is budget-feasible, so
  f* <= U = f(x0). We take the best of a few cheap k-subsets improved by greedy swaps, which
  only tightens U.
- Lower bound on f over subsets of size m: f(x) = Sum_{i in S} d_i + Sum_{i<j in S} 2·A_ij with
  d_i = A_ii + b_i, and S has m singletons and m(m-1)/2 pairs, so f(x) >= L_m = (the m
  smallest d_i) + (the m(m-1)/2 smallest of the values 2·A_ij, i<j). Each part is chosen
  independently of the other, so L_m may not be attained, but it is a lower bound.
- An x with m != k ones has E(x) = f(x) + lam·(m-k)^2 >= L_m + lam·(m-k)^2. With
  lam = max over m != k of (U - L_m)/(m-k)^2, plus a margin > 0, every such E(x) > U >= f* =
  E(x*). Strict, whatever the data.
The per-size bound is far tighter than the global one (every term at its own minimum, divided
by 1), which matters for QAOA: a large penalty flattens the objective's part of the energy
landscape. Tests check the claim by brute force over many random problems.

Sector caps and weight bounds are not in the QUBO: they act as a feasibility filter
(`OptimisationProblem.feasible`) on the answers (exact enumeration skips infeasible subsets,
annealing tracks the best feasible state, QAOA returns the best feasible sampled bitstring).
As penalties, inequality constraints need slack qubits (log2 of each cap per sector) and the
weight-bound condition is not quadratic at all, so a filter keeps the circuit at n qubits. The
price: the QUBO's ground state is the best budget-feasible subset, which a sector cap may rule
out; the QAOA then relies on sampling other feasible subsets.

Ising form, with x_i = (1 - z_i)/2 and z_i in {+1, -1} the eigenvalue of Z on qubit i (so
|0> means "not chosen" and |1> "chosen"): E = offset + Sum_i h_i z_i + Sum_{i<j} J_ij z_i z_j.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from plugins.sdk import OptimisationProblem


@dataclass(frozen=True, eq=False)
class Qubo:
    """E(x) = x'Qx + c'x + constant, Q symmetric; `penalty` is the lam it was built with."""

    q: np.ndarray
    c: np.ndarray
    constant: float
    penalty: float

    def energy(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        return ((x @ self.q) * x).sum(axis=-1) + x @ self.c + self.constant


@dataclass(frozen=True, eq=False)
class Ising:
    """E(z) = offset + h'z + Sum_{i<j} J_ij z_i z_j; `j` is strictly upper triangular."""

    h: np.ndarray
    j: np.ndarray
    offset: float

    def energy(self, z: np.ndarray) -> np.ndarray:
        z = np.asarray(z, dtype=np.float64)
        return self.offset + z @ self.h + ((z @ self.j) * z).sum(axis=-1)

    def terms(self) -> list[tuple[str, list[int], float]]:
        """Non-zero terms as (Pauli label, qubits, coefficient), for SparsePauliOp and the like."""
        out = [("Z", [i], float(v)) for i, v in enumerate(self.h) if v != 0.0]
        rows, cols = np.nonzero(self.j)
        out += [("ZZ", [int(a), int(b)], float(self.j[a, b])) for a, b in zip(rows, cols, strict=True)]
        return out


def quadratic_form(problem: OptimisationProblem) -> tuple[np.ndarray, np.ndarray]:
    """(A, b) with f(x) = x'Ax + b'x."""
    k = problem.budget
    return problem.risk_aversion * np.asarray(problem.sigma) / k**2, -np.asarray(problem.mu) / k


def size_lower_bounds(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """L_m <= f(x) for every x with m ones, m = 0..n (module docstring)."""
    n = len(b)
    singles = np.concatenate([[0.0], np.cumsum(np.sort(np.diag(a) + b))])
    pairs = np.sort(2.0 * a[np.triu_indices(n, k=1)])
    pair_sums = np.concatenate([[0.0], np.cumsum(pairs)])
    m = np.arange(n + 1)
    return singles + pair_sums[m * (m - 1) // 2]


def feasible_upper_bound(problem: OptimisationProblem, max_rounds: int = 200) -> float:
    """U >= f* over budget-feasible x: the best of a few cheap k-subsets, improved by greedy
    swaps (any k-subset will do; a better one only tightens the penalty)."""
    a, b = quadratic_form(problem)
    n, k = problem.n, problem.budget
    candidates = np.zeros((3, n))
    for row, order in enumerate((np.argsort(np.diag(a) + b, kind="stable"),
                                 np.argsort(-np.asarray(problem.mu), kind="stable"),
                                 np.arange(n))):
        candidates[row, order[:k]] = 1.0
    x = candidates[int(np.argmin(problem.objective(candidates)))]
    for _ in range(max_rounds):
        ones, zeros = np.flatnonzero(x > 0.5), np.flatnonzero(x < 0.5)
        if not len(zeros):
            break
        g = a @ x
        delta = (2.0 * (g[None, zeros] - g[ones, None]) + np.diag(a)[ones, None]
                 + np.diag(a)[None, zeros] - 2.0 * a[np.ix_(ones, zeros)]
                 + b[None, zeros] - b[ones, None])
        oi, zi = np.unravel_index(int(np.argmin(delta)), delta.shape)
        if delta[oi, zi] >= 0:
            break
        x = x.copy()
        x[ones[oi]], x[zeros[zi]] = 0.0, 1.0
    return float(problem.objective(x))


def penalty_weight(problem: OptimisationProblem, margin: float = 1e-6) -> float:
    """lam = max_{m != k} (U - L_m)/(m - k)^2 + margin: provably large enough (module
    docstring). The margin is relative to the objective's spread, so float rounding of the
    energies cannot create a tie."""
    a, b = quadratic_form(problem)
    k = problem.budget
    bounds = size_lower_bounds(a, b)
    upper = feasible_upper_bound(problem)
    m = np.arange(len(bounds))
    others = m != k
    need = float(np.max((upper - bounds[others]) / (m[others] - k) ** 2)) if others.any() else 0.0
    spread = max(abs(upper - float(bounds.min())), 1e-12)
    return max(need, 0.0) + margin * spread


def build_qubo(problem: OptimisationProblem, penalty: float | None = None) -> Qubo:
    a, b = quadratic_form(problem)
    lam = penalty_weight(problem) if penalty is None else float(penalty)
    k = problem.budget
    ones = np.ones(problem.n)
    return Qubo(q=a + lam * np.outer(ones, ones), c=b - 2.0 * lam * k * ones,
                constant=lam * k**2, penalty=lam)


def objective_qubo(problem: OptimisationProblem) -> Qubo:
    """f alone as a QUBO (no penalty): for mixers that keep the budget themselves."""
    a, b = quadratic_form(problem)
    return Qubo(q=a, c=b, constant=0.0, penalty=0.0)


def to_ising(qubo: Qubo) -> Ising:
    """Substitute x = (1 - z)/2. With Q symmetric and z_i^2 = 1:
    x'Qx = (Sum Q + tr Q)/4 - Sum_i (rowsum_i Q / 2)·z_i + Sum_{i<j} (Q_ij / 2)·z_i z_j,
    c'x = Sum c / 2 - Sum_i (c_i / 2)·z_i."""
    q = qubo.q
    h = -q.sum(axis=1) / 2.0 - qubo.c / 2.0
    j = np.triu(q, k=1) / 2.0
    offset = (q.sum() + np.trace(q)) / 4.0 + qubo.c.sum() / 2.0 + qubo.constant
    return Ising(h=h, j=j, offset=float(offset))


def bits_of(indices: np.ndarray, n: int) -> np.ndarray:
    """Rows of 0/1 floats for basis-state indices whose bit i is asset i (qiskit's integer
    order, where bit i is qubit i)."""
    indices = np.asarray(indices, dtype=np.int64)
    return ((indices[:, None] >> np.arange(n)) & 1).astype(np.float64)


def index_of(bits: str) -> int:
    """The basis-state index of a selection written as `OptimisationProblem.bits`."""
    return sum(1 << i for i, c in enumerate(bits) if c == "1")
