"""Which jurisdictions an order falls under: the gateway's regulatory map.

An order is under its venue's jurisdiction and under its client's:

- The venue's: the jurisdiction of the venue's country, and of any regulator the registry
  names for it (a venue supervised from elsewhere brings that jurisdiction too). A country
  outside the perimeter below is its own jurisdiction, named by its ISO 3166 code ("CA" for
  Toronto): an order there needs a pack for it. The built-in `compliance-venue-markets`
  plugin covers XTSE, XMEX, XSHG and XNSE (CA, MX, CN, IN) for orders at those venues; without
  it such orders are denied (COMPLIANCE_NO_RULE_PACK). The
  platform's own 24/7 venue (region "global", country "XX") adds no jurisdiction.
- The client's: the jurisdiction of the domicile, when it is inside the perimeter. A client
  domiciled elsewhere is governed here by the venue's rules; whether its firm may serve that
  client at all is onboarding's question, not a per-order one.

The perimeter is where the platform claims to operate: US (SEC, FINRA, CFTC), EU (the EEA:
ESMA and the national authorities), UK (FCA), JP (JFSA), HK (SFC), SG (MAS), AU (ASIC).

Examples: a US client on XLON → UK (venue) + US (client). A French client on XETR → EU. A
Singapore client on XHKG → HK + SG. A Canadian client on XNYS → US. A US client on ALPX → US.
A Swiss client on ALPX → none: no pack would run, and the order is denied.

Every required jurisdiction must be covered by a pack that applies, or the order is denied:
a missing or broken pack never narrows what an order is checked against. Packs may also
apply beyond this map (a tenant's house rules, `applies` answering True everywhere); they run
too, and must pass too.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from types import MappingProxyType

EEA = frozenset({
    "AT", "BE", "BG", "HR", "CY", "CZ", "DK", "EE", "FI", "FR", "DE", "GR", "HU", "IE", "IT",
    "LV", "LT", "LU", "MT", "NL", "PL", "PT", "RO", "SK", "SI", "ES", "SE", "IS", "LI", "NO",
})

PERIMETER: Mapping[str, frozenset[str]] = MappingProxyType({
    "US": frozenset({"US"}),
    "EU": EEA,
    "UK": frozenset({"GB"}),
    "JP": frozenset({"JP"}),
    "HK": frozenset({"HK"}),
    "SG": frozenset({"SG"}),
    "AU": frozenset({"AU"}),
})

COUNTRY_JURISDICTION: Mapping[str, str] = MappingProxyType(
    {country: code for code, countries in PERIMETER.items() for country in countries})

REGULATOR_JURISDICTION: Mapping[str, str] = MappingProxyType({
    "SEC": "US", "FINRA": "US", "CFTC": "US",
    "ESMA": "EU", "AMF": "EU", "AFM": "EU", "BaFin": "EU", "CONSOB": "EU",
    "FCA": "UK", "JFSA": "JP", "SFC": "HK", "MAS": "SG", "ASIC": "AU",
})

NO_COUNTRY = "XX"  # ISO 3166's user-assigned code, the registry's country of its global venue
GLOBAL_REGION = "global"


def venue_jurisdictions(country: str, region: str, regulators: Iterable[str]) -> frozenset[str]:
    found = {REGULATOR_JURISDICTION[r] for r in regulators if r in REGULATOR_JURISDICTION}
    if region != GLOBAL_REGION and country != NO_COUNTRY:
        found.add(COUNTRY_JURISDICTION.get(country, country))
    return frozenset(found)


def client_jurisdictions(domicile: str) -> frozenset[str]:
    code = COUNTRY_JURISDICTION.get(domicile)
    return frozenset() if code is None else frozenset({code})


def required_jurisdictions(country: str, region: str, regulators: Iterable[str],
                           domicile: str) -> frozenset[str]:
    return venue_jurisdictions(country, region, regulators) | client_jurisdictions(domicile)
