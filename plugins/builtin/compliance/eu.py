"""European Union (the EEA, where MiFID II applies): ESMA and the national authorities.

The MiFID II / MiFIR and Short Selling Regulation rules in `mifid.py`, on the shared rules.
The pack applies to venues in, and clients domiciled in, the EEA: the 27 member states with
Iceland, Liechtenstein and Norway.
"""

from __future__ import annotations

from plugins.builtin.compliance.mifid import mifid_pack
from plugins.sdk import PluginContext, RulePack, RuleSetPack, hookimpl

JURISDICTION = "EU"
# ESMA, and the national competent authorities of the registry's EU venues.
REGULATORS = ("ESMA", "AMF", "AFM", "BaFin", "CONSOB")
COUNTRIES = frozenset({
    "AT", "BE", "BG", "HR", "CY", "CZ", "DK", "EE", "FI", "FR", "DE", "GR", "HU", "IE", "IT",
    "LV", "LT", "LU", "MT", "NL", "PL", "PT", "RO", "SK", "SI", "ES", "SE",  # EU 27
    "IS", "LI", "NO",  # EEA
})


def pack() -> RuleSetPack:
    return mifid_pack(JURISDICTION, REGULATORS, COUNTRIES, "MiFIR")


@hookimpl
def alphintra_compliance_rule_packs(context: PluginContext) -> list[RulePack]:
    return [pack()]
