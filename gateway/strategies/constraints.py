"""Risk constraints a synthesised (or revised) strategy must respect.

The caller of `synthesizeStrategy` may bound the strategy's risk: `max_position` (largest share
of equity in one instrument), `stop_loss` and `max_drawdown` (fractions). A document respects
them when:
- `risk.max_position` is at most `max_position`, and so is every sizing fraction it states
  (`sizing.fraction`, `sizing.max_fraction`): a sizing above the limit is a looser rule even
  though the simulator caps it;
- `risk.stop_loss` / `risk.max_drawdown` is present and at most the constraint when one is
  asked for (a missing stop is the loosest stop of all).

`constraint_violations` lists each breach as {"path": JSON pointer, "message"}, the same shape
as the DSL parser's errors, so the synthesis loop feeds them back to the model unchanged.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from gateway.strategies.dsl import Strategy

RISK_CONSTRAINTS: tuple[str, ...] = ("max_position", "stop_loss", "max_drawdown")
_TOLERANCE = 1e-12  # a value equal to the limit, up to float noise, respects it


def _looser(value: float, limit: float) -> bool:
    return value > limit + _TOLERANCE


def constraint_violations(strategy: Strategy, constraints: Mapping[str, Any] | None) -> list[dict[str, str]]:
    if not constraints:
        return []
    out: list[dict[str, str]] = []
    risk, sizing = strategy.risk, strategy.document.get("sizing", {})
    cap = constraints.get("max_position")
    if cap is not None:
        cap = float(cap)
        if _looser(risk.max_position, cap):
            out.append(
                {
                    "path": "/risk/max_position",
                    "message": f"{risk.max_position:g} is looser than the constraint max_position <= {cap:g}",
                }
            )
        for key in ("fraction", "max_fraction"):
            value = sizing.get(key)
            if value is not None and _looser(float(value), cap):
                out.append(
                    {
                        "path": f"/sizing/{key}",
                        "message": f"{float(value):g} sizes above the constraint max_position <= {cap:g}",
                    }
                )
    for key, value in (("stop_loss", risk.stop_loss), ("max_drawdown", risk.max_drawdown)):
        limit = constraints.get(key)
        if limit is None:
            continue
        limit = float(limit)
        if value is None:
            out.append({"path": f"/risk/{key}", "message": f"required by the constraint {key} <= {limit:g}"})
        elif _looser(value, limit):
            out.append(
                {
                    "path": f"/risk/{key}",
                    "message": f"{value:g} is looser than the constraint {key} <= {limit:g}",
                }
            )
    return out
