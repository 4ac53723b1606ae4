"""Australia: the Australian Securities and Investments Commission (ASIC).

On the shared rules:
- Naked short selling is prohibited (Corporations Act s.1020B): a short sale needs a
  presently exercisable and unconditional right to vest the shares, i.e. a borrow first.
- At ASX, a first holding must be a marketable parcel (ASX Operating Rules: at least AUD 500
  of value): a BUY into an instrument the account does not hold must be worth at least that.

Simplified: the parcel is valued at the order's price in the instrument's currency (AUD at
ASX); ASIC's short-position reporting is post-trade and left out.
"""

from __future__ import annotations

from decimal import Decimal

from plugins.builtin.compliance import codes, rules
from plugins.sdk import (
    CheckContext,
    ComplianceRule,
    PluginContext,
    RulePack,
    RuleSetPack,
    Side,
    Violation,
    hookimpl,
)

JURISDICTION = "AU"
REGULATORS = ("ASIC",)
COUNTRIES = frozenset({"AU"})
MARKETABLE_PARCEL = Decimal(500)


def _marketable_parcel(ctx: CheckContext) -> Violation | None:
    order = ctx.order
    price = ctx.price
    if order.side != Side.BUY or ctx.position != 0 or price is None:
        return None
    value = order.quantity * price
    if value < MARKETABLE_PARCEL:
        return Violation(codes.MARKETABLE_PARCEL,
                         f"ASX: a first holding must be a marketable parcel of at least "
                         f"{rules.num(MARKETABLE_PARCEL)} {ctx.instrument.currency}; this one is worth "
                         f"{rules.num(value)}", MARKETABLE_PARCEL, value)
    return None


def pack() -> RuleSetPack:
    return RuleSetPack(JURISDICTION, REGULATORS, COUNTRIES, (
        *rules.shared_rules(),
        rules.locate_required("Corporations Act s.1020B (naked short selling)"),
        ComplianceRule("marketable_parcel", _marketable_parcel, venue_only=True),
    ))


@hookimpl
def alphintra_compliance_rule_packs(context: PluginContext) -> list[RulePack]:
    return [pack()]
