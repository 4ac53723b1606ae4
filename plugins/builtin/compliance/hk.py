"""Hong Kong: the Securities and Futures Commission (SFC), and HKEX's short-selling rules.

On the shared rules (HKEX's board lots are the venue's lot size):
- Naked short selling is an offence (Securities and Futures Ordinance s.170): a short sale
  needs a presently exercisable right to vest the shares, i.e. a borrow or locate first.
- Only designated securities may be sold short at HKEX (`MarketState.shortable`).
- The tick rule, permanent at HKEX: a short sale may not be priced below the best current
  ask.

Simplified: the tick rule's exemptions (market makers, some arbitrage) are not modelled; a
market short sale is refused, as it cannot promise its price.
"""

from __future__ import annotations

from plugins.builtin.compliance import rules
from plugins.sdk import PluginContext, RulePack, RuleSetPack, hookimpl

JURISDICTION = "HK"
REGULATORS = ("SFC",)
COUNTRIES = frozenset({"HK"})


def pack() -> RuleSetPack:
    return RuleSetPack(JURISDICTION, REGULATORS, COUNTRIES, (
        *rules.shared_rules(),
        rules.locate_required("SFO s.170 (naked short selling)"),
        rules.short_sale_eligible("HKEX designated securities for short selling"),
        rules.short_sale_price_test("HKEX tick rule", "best_ask", strictly_above=False,
                                    always=True),
    ))


@hookimpl
def alphintra_compliance_rule_packs(context: PluginContext) -> list[RulePack]:
    return [pack()]
