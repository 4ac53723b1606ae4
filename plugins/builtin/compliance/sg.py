"""Singapore: the Monetary Authority of Singapore (MAS).

On the shared rules:
- Short sales are marked (Securities and Futures Act, short-sale marking and reporting
  since 2016): the shared marking rule.
- Specified Investment Products (MAS Notice SFA 04-N12): an individual may buy a listed SIP
  (leveraged and inverse products, some ETFs) only after a Customer Knowledge Assessment
  ("SG_CKA" in `ClientProfile.assessments`).

Simplified: Singapore has no pre-trade locate rule (SGX enforces delivery by buy-in), so no
locate is asked; short-position reporting thresholds are post-trade and left out. The venue
registry has no Singapore venue yet, so the pack applies through clients domiciled there.
"""

from __future__ import annotations

from plugins.builtin.compliance import rules
from plugins.sdk import PluginContext, RulePack, RuleSetPack, hookimpl

JURISDICTION = "SG"
REGULATORS = ("MAS",)
COUNTRIES = frozenset({"SG"})


def pack() -> RuleSetPack:
    return RuleSetPack(JURISDICTION, REGULATORS, COUNTRIES, (
        *rules.shared_rules(),
        rules.appropriateness("SG_CKA", "MAS Notice SFA 04-N12 (Specified Investment Products)"),
    ))


@hookimpl
def alphintra_compliance_rule_packs(context: PluginContext) -> list[RulePack]:
    return [pack()]
