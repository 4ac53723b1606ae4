"""United Kingdom: the FCA.

The UK kept MiFID II, MiFIR and the Short Selling Regulation as onshored law (UK MiFIR, the
UK SSR, and the FCA's COBS 10A for appropriateness), so the pack is the MiFID family's
(`mifid.py`) citing the UK's texts, on the shared rules.
"""

from __future__ import annotations

from plugins.builtin.compliance.mifid import mifid_pack
from plugins.sdk import PluginContext, RulePack, RuleSetPack, hookimpl

JURISDICTION = "UK"
REGULATORS = ("FCA",)
COUNTRIES = frozenset({"GB"})


def pack() -> RuleSetPack:
    return mifid_pack(JURISDICTION, REGULATORS, COUNTRIES, "UK MiFIR")


@hookimpl
def alphintra_compliance_rule_packs(context: PluginContext) -> list[RulePack]:
    return [pack()]
