"""United States: SEC, FINRA and CFTC.

Besides the shared rules (which are also what SEC Rule 15c3-5, the market access rule, asks
of a broker's pre-trade controls: credit and capital thresholds, erroneous-order price and
size checks, restricted securities):
- Regulation SHO Rule 203(b)(1): no short sale without a locate (reasonable grounds to
  believe the security can be borrowed for delivery) for its whole quantity.
- Regulation SHO Rule 200(g): sales marked long or short (the shared marking rule).
- Regulation SHO Rule 201, at US venues: while a security's short-sale circuit breaker is on
  (a 10% fall from the previous close, published by its listing market), a short sale must
  be priced above the national best bid.
- Regulation NMS Rule 612 (no sub-penny quotes at $1.00 or more) is the venue's tick table,
  checked by the shared tick rule.

Simplified: the locate is the quantity the account's locate source granted (no easy-to-borrow
lists, no Rule 203(b)(2) market-maker exception); Rule 201's "short exempt" marking is not
modelled. The registry lists no futures or swap venues, so no CFTC rule (speculative
position limits, 17 CFR Part 150) applies beyond the shared position limit; the pack names
the CFTC so a deployment adding futures adds its rules here.
"""

from __future__ import annotations

from plugins.builtin.compliance import rules
from plugins.sdk import PluginContext, RulePack, RuleSetPack, hookimpl

JURISDICTION = "US"
REGULATORS = ("SEC", "FINRA", "CFTC")
COUNTRIES = frozenset({"US"})


def pack() -> RuleSetPack:
    return RuleSetPack(JURISDICTION, REGULATORS, COUNTRIES, (
        *rules.shared_rules(),
        rules.locate_required("Reg SHO Rule 203(b)(1)"),
        rules.short_sale_price_test("Reg SHO Rule 201", "best_bid", strictly_above=True,
                                    always=False),
    ))


@hookimpl
def alphintra_compliance_rule_packs(context: PluginContext) -> list[RulePack]:
    return [pack()]
