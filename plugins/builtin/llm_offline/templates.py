"""Strategy templates the offline provider picks by market regime. Not a language model.

Choice (first that applies):
- the objective names a style: "mean reversion"/"revert"/"oversold" → mean reversion;
  "momentum"/"trend"/"breakout" → trend following; "volatility"/"risk parity" → volatility
  targeted momentum;
- otherwise the regime decides: a volatile market → volatility-targeted momentum; a market with
  a clear trend (up or down) → trend following; a sideways market → mean reversion.
Modifiers: "news"/"sentiment" in the objective adds a news-sentiment filter to the entry;
"short" (and not "long only") trades the short side; "conservative"/"low risk" halves the
position sizes. Constraints (`max_position`, `stop_loss`, `max_drawdown`) clamp the template's
values: each risk limit and sizing fraction becomes the smaller of the two.

Revisions (`revise`, for the improvement loop) walk a fixed list of changes (slower or faster
windows, tighter or looser stops, smaller sizes), one per trial, so a run is reproducible;
the revised document is clamped to the constraints again, so no change loosens them.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any

STYLES = ("trend", "mean_reversion", "volatility_momentum")


def choose_style(objective: str, regime: Mapping[str, Any]) -> tuple[str, str]:
    text = objective.lower()
    if any(w in text for w in ("mean reversion", "mean-reversion", "revert", "oversold")):
        return "mean_reversion", "the objective asks for mean reversion"
    if any(w in text for w in ("momentum", "trend", "breakout")):
        return "trend", "the objective asks for trend following"
    if any(w in text for w in ("volatility", "risk parity")):
        return "volatility_momentum", "the objective asks for volatility control"
    volatility, trend = regime.get("volatility"), regime.get("trend")
    if volatility == "volatile":
        return "volatility_momentum", "the market is volatile"
    if trend in ("up", "down"):
        return "trend", f"the market trends {trend}"
    return "mean_reversion", "the market moves sideways"


def build(objective: str, constraints: Mapping[str, Any], universe: Sequence[str],
          regime: Mapping[str, Any]) -> tuple[dict[str, Any], str]:
    """A DSL document and the reason for its choice."""
    style, reason = choose_style(objective, regime)
    text = objective.lower()
    news = "news" in text or "sentiment" in text
    short = "short" in text and "long only" not in text and "long-only" not in text
    scale = 0.5 if ("conservative" in text or "low risk" in text) else 1.0
    if style == "trend":
        signals = [{"name": "fast", "indicator": "sma", "input": "close", "window": 20},
                   {"name": "slow", "indicator": "sma", "input": "close", "window": 50}]
        entry: dict[str, Any] = {"op": "cross_under" if short else "cross_over",
                                 "left": "fast", "right": "slow"}
        exit_: dict[str, Any] = {"op": "cross_over" if short else "cross_under",
                                 "left": "fast", "right": "slow"}
        sizing: dict[str, Any] = {"method": "fixed_fraction", "fraction": round(0.2 * scale, 4)}
        name = "Regime trend following (offline template)"
    elif style == "mean_reversion":
        signals = [{"name": "rsi14", "indicator": "rsi", "input": "close", "window": 14},
                   {"name": "z20", "indicator": "zscore", "input": "close", "window": 20}]
        entry = ({"op": "and", "args": [{"op": "gt", "left": "rsi14", "right": 70},
                                        {"op": "gt", "left": "z20", "right": 1.5}]} if short else
                 {"op": "and", "args": [{"op": "lt", "left": "rsi14", "right": 30},
                                        {"op": "lt", "left": "z20", "right": -1.5}]})
        exit_ = ({"op": "lt", "left": "rsi14", "right": 50} if short else
                 {"op": "gt", "left": "rsi14", "right": 50})
        sizing = {"method": "fixed_fraction", "fraction": round(0.15 * scale, 4)}
        name = "Regime mean reversion (offline template)"
    else:
        signals = [{"name": "mom60", "indicator": "momentum", "input": "close", "window": 60},
                   {"name": "vol20", "indicator": "volatility", "input": "close", "window": 20}]
        entry = {"op": "lt" if short else "gt", "left": "mom60", "right": 0}
        exit_ = {"op": "ge" if short else "le", "left": "mom60", "right": 0}
        sizing = {"method": "volatility_target", "target_volatility": round(0.15 * scale, 4),
                  "window": 20, "max_fraction": round(0.3 * scale, 4)}
        name = "Regime volatility-targeted momentum (offline template)"
    if news:
        signals.append({"name": "mood", "indicator": "news_sentiment", "max_age_hours": 72})
        mood = {"op": "le" if short else "ge", "left": "mood", "right": 0}
        entry = {"op": "and", "args": [entry, mood]}
    risk: dict[str, Any] = {"max_position": round(min(0.25, 0.25 * scale * 2), 4),
                            "stop_loss": 0.08, "max_drawdown": 0.25}
    doc = {"dsl_version": 1, "name": name,
           "description": f"Built offline from a template, not by a language model: {reason}. "
                          f"Objective: {objective[:500]}",
           "interval": "1d", "side": "short" if short else "long",
           "universe": {"instruments": list(universe)},
           "signals": signals, "entry": entry, "exit": exit_, "sizing": sizing, "risk": risk}
    clamp(doc, constraints)
    return doc, f"template {style}: {reason}"


def clamp(doc: dict[str, Any], constraints: Mapping[str, Any]) -> None:
    """Tighten the document's risk limits and sizing fractions to the constraints (in place);
    a limit the template lacks takes the constraint's value."""
    risk, sizing = doc["risk"], doc["sizing"]
    for key in ("max_position", "stop_loss", "max_drawdown"):
        limit = constraints.get(key)
        if limit is not None:
            risk[key] = min(float(risk[key]), float(limit)) if key in risk else float(limit)
    for key in ("fraction", "max_fraction"):
        if key in sizing:
            sizing[key] = min(sizing[key], risk["max_position"])


def _scale_windows(doc: dict[str, Any], factor: float) -> None:
    for signal in doc.get("signals", []):
        if "window" in signal:
            signal["window"] = max(2, min(500, round(signal["window"] * factor)))


REVISIONS: tuple[tuple[str, Any], ...] = (
    ("slower windows (x1.5)", lambda d: _scale_windows(d, 1.5)),
    ("faster windows (x0.7)", lambda d: _scale_windows(d, 0.7)),
    ("tighter stop loss (5%)", lambda d: d["risk"].__setitem__("stop_loss", 0.05)),
    ("looser stop loss (12%)", lambda d: d["risk"].__setitem__("stop_loss", 0.12)),
    ("half position sizes", lambda d: _halve(d)),
    ("much slower windows (x2)", lambda d: _scale_windows(d, 2.0)),
)


def _halve(doc: dict[str, Any]) -> None:
    sizing = doc["sizing"]
    for key in ("fraction", "target_volatility", "max_fraction"):
        if key in sizing:
            sizing[key] = round(sizing[key] / 2, 6)


def revise(document: Mapping[str, Any], trial: int,
           constraints: Mapping[str, Any] | None = None) -> tuple[dict[str, Any], str]:
    label, change = REVISIONS[trial % len(REVISIONS)]
    doc = copy.deepcopy(dict(document))
    change(doc)
    if constraints:
        clamp(doc, constraints)
    return doc, f"offline revision {trial + 1}: {label}"
