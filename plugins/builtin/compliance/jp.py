"""Japan: the Financial Services Agency (JFSA), and the Tokyo Stock Exchange's rulebook.

On the shared rules:
- Naked short selling is prohibited (Financial Instruments and Exchange Act Art. 162 and its
  Cabinet Order): a short sale needs the shares borrowed or located first.
- Short-sale price restriction (the same Cabinet Order): once a stock has fallen 10% from its
  base price (the venue publishes the trigger, `MarketState.short_sale_restricted`), a short
  sale may not be priced at or below the last price.
- Daily price limits at TSE: an order priced outside the previous close (`previous_close`;
  the reference price when the gateway has none) plus or minus the limit of its band is
  refused by the exchange, so it is refused here first.

Simplified: the price restriction is applied as "strictly above the last price" (TSE allows
the last price itself after an uptick); orders of 50 trading units or fewer, which are exempt,
are not distinguished. The price-limit table is TSE's for base prices below 2,000,000 yen
(from JPX's published table); above that the rule does not check, and limits TSE has widened
for a stock are not known here.
"""

from __future__ import annotations

from bisect import bisect_right
from decimal import Decimal

from plugins.builtin.compliance import codes, rules
from plugins.sdk import (
    CheckContext,
    ComplianceRule,
    PluginContext,
    RulePack,
    RuleSetPack,
    Violation,
    hookimpl,
)

JURISDICTION = "JP"
REGULATORS = ("JFSA",)
COUNTRIES = frozenset({"JP"})

# Base price "less than" bound → daily limit, yen (JPX, Trading Rules of Domestic Stocks).
_BASE_BOUNDS: tuple[Decimal, ...] = tuple(Decimal(b) for b in (
    100, 200, 500, 700, 1_000, 1_500, 2_000, 3_000, 5_000, 7_000, 10_000, 15_000, 20_000,
    30_000, 50_000, 70_000, 100_000, 150_000, 200_000, 300_000, 500_000, 700_000, 1_000_000,
    1_500_000, 2_000_000))
_LIMITS: tuple[Decimal, ...] = tuple(Decimal(v) for v in (
    30, 50, 80, 100, 150, 300, 400, 500, 700, 1_000, 1_500, 3_000, 4_000, 5_000, 7_000,
    10_000, 15_000, 30_000, 40_000, 50_000, 70_000, 100_000, 150_000, 300_000, 400_000))


def daily_price_limit(base: Decimal) -> Decimal | None:
    """TSE's daily price limit for a base price, or None above the table."""
    index = bisect_right(_BASE_BOUNDS, base)
    return _LIMITS[index] if index < len(_LIMITS) else None


def _daily_limit_check(ctx: CheckContext) -> Violation | None:
    order = ctx.order
    market = ctx.market
    base = market.previous_close if market.previous_close is not None else market.reference_price
    if base is None:
        return None  # REFERENCE_PRICE_MISSING denies the order
    width = daily_price_limit(base)
    if width is None:
        return None
    low, high = base - width, base + width
    for price in (order.limit_price, order.stop_price):
        if price is not None and not low <= price <= high:
            n = rules.num
            return Violation(codes.DAILY_PRICE_LIMIT,
                             f"TSE daily price limit: {n(price)} is outside {n(low)}..{n(high)} "
                             f"(base {n(base)} +/- {n(width)})", f"{n(low)}..{n(high)}", price)
    return None


def pack() -> RuleSetPack:
    return RuleSetPack(JURISDICTION, REGULATORS, COUNTRIES, (
        *rules.shared_rules(),
        rules.locate_required("FIEA Art. 162 (naked short selling)"),
        rules.short_sale_price_test("FIEA short-sale price restriction", "last_price",
                                    strictly_above=True, always=False),
        ComplianceRule("daily_price_limit", _daily_limit_check, venue_only=True),
    ))


@hookimpl
def alphintra_compliance_rule_packs(context: PluginContext) -> list[RulePack]:
    return [pack()]
