"""Explained decisions: a surrogate classifier of the strategy's actions, explained by SHAP.

A strategy is a set of rules; a regulator asks "why did it buy here?". We fit a gradient-boosted
classifier (LightGBM, one thread, deterministic) on the features the strategy saw at each
decision (its signals, plus whether it held a position) to predict its action as a position
target (1: in the market after the decision, 0: flat), and explain each decision with SHAP's
TreeExplainer on that model. In the model's raw output (log-odds), SHAP values are additive:
base value + sum of contributions = the model's score for that decision. Every stored record
carries the check: the residual and whether it is within ADDITIVITY_TOLERANCE.

Training and live windows: the model is fitted on the first TRAIN_FRACTION of the decisions
(by time) and never sees the rest; its fidelity (accuracy in reproducing the strategy's
actions) is reported on both, and each feature's drift between the two windows is measured by
the population stability index (deciles of the training window) and the two-sample
Kolmogorov-Smirnov test.

Which decisions are explained: those that sent an order (ENTER, EXIT), the most recent
MAX_EXPLAINED of them; every other decision is in the backtest's counts.
"""

from __future__ import annotations

import hashlib
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from threadpoolctl import ThreadpoolController

from gateway.strategies.backtest import Decision

TRAIN_FRACTION = 0.7
MAX_EXPLAINED = 500
ADDITIVITY_TOLERANCE = 1e-6
POSITION_FEATURE = "in_position"
PARAMS: dict[str, Any] = {
    "objective": "binary",
    "num_threads": 1,
    "deterministic": True,
    "force_row_wise": True,
    "seed": 7,
    "learning_rate": 0.1,
    "num_leaves": 15,
    "min_data_in_leaf": 5,
    "verbose": -1,
}
ROUNDS = 60


def model_version() -> str:
    import lightgbm
    import shap

    return f"lightgbm-{lightgbm.__version__}+shap-{shap.__version__}+explain-1"


def matrix(decisions: Sequence[Decision], names: Sequence[str]) -> np.ndarray:
    rows = [
        [np.nan if d.features.get(n) is None else float(d.features[n]) for n in names]
        + [1.0 if d.in_position else 0.0]
        for d in decisions
    ]
    return np.array(rows, dtype=float).reshape(len(decisions), len(names) + 1)


@dataclass
class Explanation:
    decision: Decision
    features: dict[str, float | None]
    base_value: float
    contributions: dict[str, float]
    prediction: float
    probability: float
    residual: float
    additive: bool
    sentence: str


class DecisionExplainer:
    """A fitted surrogate and its TreeExplainer."""

    def __init__(self, booster: Any, names: Sequence[str]) -> None:
        import shap

        self.booster = booster
        self.names = [*names, POSITION_FEATURE]
        self.feature_names = list(names)
        self.model_text = booster.model_to_string()
        self.model_hash = hashlib.sha256(self.model_text.encode()).hexdigest()
        self.model_version = model_version()
        self.tree = shap.TreeExplainer(booster)
        self.threads = ThreadpoolController()
        expected = np.atleast_1d(self.tree.expected_value)
        self.base_value = float(expected[-1])

    @classmethod
    def fit(cls, decisions: Sequence[Decision], names: Sequence[str]) -> DecisionExplainer:
        import lightgbm

        x, y = matrix(decisions, names), np.array([d.target for d in decisions], dtype=float)
        # Orders are rare next to holds and waits: weigh each (held, target) cell equally so the
        # surrogate learns the transitions it is asked to explain, not only "state persists".
        cells = np.array([2 * int(d.in_position) + d.target for d in decisions])
        counts = np.bincount(cells, minlength=4).astype(float)
        weights = len(cells) / (np.count_nonzero(counts) * counts[cells])
        data = lightgbm.Dataset(
            x,
            label=y,
            weight=weights,
            feature_name=[*names, POSITION_FEATURE],
            free_raw_data=False,
            params={"verbose": -1, "min_data_in_bin": 1},
        )
        booster = lightgbm.train(PARAMS, data, num_boost_round=ROUNDS)
        return cls(booster, names)

    def scores(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(self.booster.predict(x, raw_score=True, num_threads=1), dtype=float)

    def explain(self, decisions: Sequence[Decision]) -> list[Explanation]:
        if not decisions:
            return []
        x = matrix(decisions, self.feature_names)
        # shap asks LightGBM for TreeSHAP values without a thread count, so OpenMP would fan one
        # row out over every core (and stall under load): one thread, in this thread only.
        with warnings.catch_warnings(), self.threads.limit(limits=1, user_api="openmp"):
            warnings.simplefilter("ignore", UserWarning)  # shap notes a LightGBM output change; handled
            values = self.tree.shap_values(x)
        if isinstance(values, list):  # some shap versions answer one array per class
            values = values[-1]
        values = np.asarray(values, dtype=float).reshape(len(decisions), len(self.names))
        raw = self.scores(x)
        out = []
        for i, decision in enumerate(decisions):
            contributions = {name: float(values[i, j]) for j, name in enumerate(self.names)}
            residual = float(raw[i] - (self.base_value + float(np.sum(values[i]))))
            probability = 1.0 / (1.0 + math.exp(-float(raw[i])))
            features: dict[str, float | None] = {
                **decision.features,
                POSITION_FEATURE: 1.0 if decision.in_position else 0.0,
            }
            out.append(
                Explanation(
                    decision,
                    features,
                    self.base_value,
                    contributions,
                    float(raw[i]),
                    probability,
                    residual,
                    abs(residual) <= ADDITIVITY_TOLERANCE,
                    sentence(decision, features, contributions, probability),
                )
            )
        return out

    def fidelity(self, decisions: Sequence[Decision]) -> float | None:
        if not decisions:
            return None
        predicted = self.scores(matrix(decisions, self.feature_names)) > 0
        actual = np.array([d.target == 1 for d in decisions])
        return float(np.mean(predicted == actual))


def _value(v: float | None) -> str:
    if v is None:
        return "not yet available"
    return f"{v:.4g}"


def sentence(
    decision: Decision, features: dict[str, float | None], contributions: dict[str, float], probability: float
) -> str:
    verb = {
        "ENTER": "opened a position",
        "EXIT": "closed its position",
        "HOLD": "kept its position",
        "WAIT": "stayed out of the market",
    }[decision.action]
    agrees = (probability > 0.5) == (decision.target == 1)
    agreement = "which reproduces this decision" if agrees else "which does NOT reproduce this decision"
    top = sorted(contributions.items(), key=lambda kv: -abs(kv[1]))[:3]
    parts = []
    for name, value in top:
        shown = (
            ("held a position" if features.get(name) else "held no position")
            if name == POSITION_FEATURE
            else f"{name} at {_value(features.get(name))}"
        )
        direction = "towards being in the market" if value > 0 else "towards being flat"
        parts.append(f"{shown} pushed {direction} ({value:+.2f})")
    return (
        f"On {decision.at:%Y-%m-%d %H:%M} UTC the strategy {verb} in {decision.instrument} "
        f"(reason: {decision.reason}). The explanation model gives {probability:.0%} for being in "
        f"the market, {agreement}; the largest contributions: " + "; ".join(parts) + "."
    )


# -- drift -------------------------------------------------------------------------------------
def psi(expected: np.ndarray, actual: np.ndarray, bins: int = 10) -> float | None:
    """Population stability index of `actual` against `expected`, on deciles of `expected`."""
    expected, actual = expected[~np.isnan(expected)], actual[~np.isnan(actual)]
    if len(expected) < 2 or len(actual) < 1:
        return None
    edges = np.unique(np.quantile(expected, np.linspace(0, 1, bins + 1)))
    if len(edges) < 2:
        return 0.0 if np.all(actual == expected[0]) else None
    inner = edges[1:-1]
    e = np.bincount(np.searchsorted(inner, expected, side="right"), minlength=len(edges) - 1) / len(expected)
    a = np.bincount(np.searchsorted(inner, actual, side="right"), minlength=len(edges) - 1) / len(actual)
    e, a = np.clip(e, 1e-4, None), np.clip(a, 1e-4, None)
    return float(np.sum((a - e) * np.log(a / e)))


def drift_report(train: Sequence[Decision], live: Sequence[Decision], names: Sequence[str]) -> dict[str, Any]:
    from scipy.stats import ks_2samp

    x_train, x_live = matrix(train, names), matrix(live, names)
    features: dict[str, Any] = {}
    for j, name in enumerate(names):
        a, b = x_train[:, j], x_live[:, j]
        a_ok, b_ok = a[~np.isnan(a)], b[~np.isnan(b)]
        index = psi(a, b)
        ks = ks_2samp(a_ok, b_ok) if len(a_ok) > 1 and len(b_ok) > 1 else None
        status = (
            "unknown"
            if index is None
            else "stable"
            if index < 0.1
            else "moderate"
            if index < 0.25
            else "significant"
        )
        features[name] = {
            "psi": index,
            "ks_statistic": None if ks is None else float(ks.statistic),
            "ks_p_value": None if ks is None else float(ks.pvalue),
            "status": status,
        }
    return {
        "method": "PSI on training deciles; two-sample Kolmogorov-Smirnov",
        "train_decisions": len(train),
        "live_decisions": len(live),
        "features": features,
        "drifted": sorted(n for n, f in features.items() if f["status"] == "significant"),
    }


@dataclass
class ExplainedRun:
    explainer: DecisionExplainer | None
    summary: dict[str, Any]
    drift: dict[str, Any]
    explanations: list[Explanation]


def explain_run(decisions: Sequence[Decision], names: Sequence[str]) -> ExplainedRun:
    """Fit on the training window, report fidelity and drift, explain the order decisions."""
    cut = int(len(decisions) * TRAIN_FRACTION)
    train, live = list(decisions[:cut]), list(decisions[cut:])
    drift = drift_report(train, live, names) if train and live else {"features": {}, "drifted": []}
    notes = []
    if len({d.target for d in train}) < 2:
        if len({d.target for d in decisions}) < 2:
            summary = {
                "status": "SKIPPED",
                "reason": "the strategy never changed its position, so there is no decision to tell apart",
                "decisions": len(decisions),
            }
            return ExplainedRun(None, summary, drift, [])
        train = list(decisions)
        notes.append("the training window holds one action only; fitted on every decision")
    explainer = DecisionExplainer.fit(train, names)
    chosen = [d for d in decisions if d.action in ("ENTER", "EXIT")][-MAX_EXPLAINED:]
    explanations = explainer.explain(chosen)
    summary = {
        "status": "FITTED",
        "model_hash": explainer.model_hash,
        "model_version": explainer.model_version,
        "features": explainer.names,
        "base_value": explainer.base_value,
        "train_decisions": len(train),
        "live_decisions": len(live),
        "fidelity_train": explainer.fidelity(train),
        "fidelity_live": explainer.fidelity(live),
        "fidelity_orders": explainer.fidelity(chosen),
        # A bias check: does the explanation model serve some instruments worse than others?
        "fidelity_live_by_instrument": {
            key: explainer.fidelity([d for d in live if d.instrument == key])
            for key in sorted({d.instrument for d in live})
        },
        "explained": len(explanations),
        "max_abs_residual": max((abs(e.residual) for e in explanations), default=0.0),
        "all_additive": all(e.additive for e in explanations),
        "notes": notes,
    }
    return ExplainedRun(explainer, summary, drift, explanations)
