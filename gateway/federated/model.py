"""Logistic regression in numpy: the model every participant trains.

Weights travel as a list of ndarrays `[w (d,), b (1,)]`, the shape Flower's ArrayRecord and
legacy Parameters carry. The objective is the mean log loss plus (l2/2)·‖w‖² (the bias is not
penalised), the same for local SGD, for Newton and for evaluation, so the federated, local-only
and centralised models are fitted to the same problem.

Two ways to fit:
- `fit`: E epochs of mini-batch SGD from the current weights (what a participant does in a
  federated round; deterministic given the generator).
- `fit_newton`: Newton's method to the optimum (the local-only baseline). The centralised
  baseline runs the same Newton iteration with the gradient and Hessian summed over
  participants (`grad_hess` gives a participant's sums), which is exactly Newton on the pooled
  data without pooling it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

DEFAULT_L2 = 1e-3
MAX_NEWTON_STEP = 10.0  # a guard for the first steps on (nearly) separable data


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * z))  # stable for large |z|


def _log_loss(z: np.ndarray, y: np.ndarray) -> np.ndarray:
    # log(1 + e^z) - y·z, computed without overflow
    return np.logaddexp(0.0, z) - y * z


@dataclass
class Evaluation:
    correct: int
    count: int
    loss_sum: float

    @property
    def accuracy(self) -> float:
        return self.correct / self.count if self.count else float("nan")

    @property
    def loss(self) -> float:
        return self.loss_sum / self.count if self.count else float("nan")


class LogisticRegression:
    def __init__(self, n_features: int, *, l2: float = DEFAULT_L2) -> None:
        if n_features < 1:
            raise ValueError("n_features must be positive")
        self.n_features = n_features
        self.l2 = l2
        self.w = np.zeros(n_features)
        self.b = 0.0

    # -- weights ----------------------------------------------------------------------------
    def get_weights(self) -> list[np.ndarray]:
        return [self.w.copy(), np.array([self.b])]

    def set_weights(self, weights: Sequence[np.ndarray]) -> None:
        w, b = weights
        w = np.asarray(w, dtype=np.float64).reshape(-1)
        if w.shape != (self.n_features,):
            raise ValueError(f"expected {self.n_features} weights, got {w.shape[0]}")
        self.w = w.copy()
        self.b = float(np.asarray(b, dtype=np.float64).reshape(-1)[0])

    @property
    def theta(self) -> np.ndarray:
        """Weights then bias, one vector (the Newton iterate)."""
        return np.concatenate([self.w, [self.b]])

    @theta.setter
    def theta(self, value: np.ndarray) -> None:
        self.w, self.b = np.asarray(value[:-1], dtype=np.float64).copy(), float(value[-1])

    # -- prediction and evaluation ----------------------------------------------------------
    def decision(self, x: np.ndarray) -> np.ndarray:
        return x @ self.w + self.b

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        return _sigmoid(self.decision(x))

    def predict(self, x: np.ndarray) -> np.ndarray:
        return (self.decision(x) > 0).astype(np.int64)

    def evaluate(self, x: np.ndarray, y: np.ndarray) -> Evaluation:
        z = self.decision(x)
        return Evaluation(correct=int(np.sum((z > 0) == (y > 0.5))), count=len(y),
                          loss_sum=float(np.sum(_log_loss(z, y))))

    def objective(self, x: np.ndarray, y: np.ndarray) -> float:
        return float(np.mean(_log_loss(self.decision(x), y)) + 0.5 * self.l2 * self.w @ self.w)

    # -- fitting ----------------------------------------------------------------------------
    def fit(self, x: np.ndarray, y: np.ndarray, *, epochs: int, lr: float, batch_size: int,
            rng: np.random.Generator) -> float:
        """Mini-batch SGD for `epochs` epochs; returns the final training objective."""
        n = len(y)
        if n == 0:
            raise ValueError("no training samples")
        for _ in range(epochs):
            order = rng.permutation(n)
            for start in range(0, n, batch_size):
                idx = order[start:start + batch_size]
                xb, yb = x[idx], y[idx]
                residual = self.predict_proba(xb) - yb
                self.w -= lr * (xb.T @ residual / len(idx) + self.l2 * self.w)
                self.b -= lr * float(np.mean(residual))
        return self.objective(x, y)

    def grad_hess(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
        """Sums over the samples (not means) of the log loss's gradient and Hessian in θ =
        (w, b), and the loss sum: what a participant contributes to a pooled Newton step."""
        xa = np.hstack([x, np.ones((len(y), 1))])
        z = xa @ self.theta
        p = _sigmoid(z)
        grad = xa.T @ (p - y)
        hess = (xa * (p * (1 - p))[:, None]).T @ xa
        return grad, hess, float(np.sum(_log_loss(z, y)))

    def newton_step(self, grad_sum: np.ndarray, hess_sum: np.ndarray, count: int) -> float:
        """One Newton step on the regularised mean objective from summed statistics; returns
        the step's length."""
        penalty = np.full(self.n_features + 1, self.l2)
        penalty[-1] = 0.0  # the bias is not penalised
        grad = grad_sum / count + penalty * self.theta
        hess = hess_sum / count + np.diag(penalty) + 1e-10 * np.eye(self.n_features + 1)
        step = np.linalg.solve(hess, grad)
        length = float(np.linalg.norm(step))
        if length > MAX_NEWTON_STEP:
            step *= MAX_NEWTON_STEP / length
        self.theta = self.theta - step
        return length

    def fit_newton(self, x: np.ndarray, y: np.ndarray, *, max_iter: int = 25,
                   tol: float = 1e-8) -> int:
        """Newton's method to the optimum; returns the iterations used."""
        for k in range(1, max_iter + 1):
            grad, hess, _ = self.grad_hess(x, y)
            if self.newton_step(grad, hess, len(y)) < tol:
                return k
        return max_iter
