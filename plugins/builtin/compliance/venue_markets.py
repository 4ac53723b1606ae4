"""Rule packs for the registry's venues outside the platform's client perimeter: Toronto
(XTSE, CIRO), Mexico (XMEX, CNBV), Shanghai (XSHG, CSRC) and the NSE (XNSE, SEBI).

These markets are their own jurisdictions (gateway/compliance/jurisdictions.py names them by
country: CA, MX, CN, IN) because an order to their venues is under their rules. The platform
does not onboard clients domiciled there, so each pack applies to orders at its own venues
only (`VenueRulePack.applies` ignores the client's domicile): a Canadian client on XNYS is
under the US pack alone, as before.

Each pack is the shared rules followed by the market's short-selling regime:
- CA (CIRO UMIR 3.1, 6.2): short sales are marked (the shared marking rule); Canada has no
  pre-borrow or locate requirement, so none is asked.
- MX (Ley del Mercado de Valores, CNBV short-sale rules): a short sale must be covered by a
  securities loan: a locate for its whole quantity.
- CN (CSRC, SSE margin trading and securities lending rules): naked short selling is
  prohibited; shares are borrowed through securities lending first: a locate.
- IN (SEBI circular on short selling, 2007): naked short selling is not permitted and every
  short sale must be delivered on settlement: a locate.

Simplified: Shanghai's ±10 % daily price limit and Mexico's price-variation bands are not
checked here (the collar still applies); eligibility lists of securities that may be sold
short (SSE's and NSE's) are not modelled, so any instrument may be sold short with a locate.
"""

from __future__ import annotations

from plugins.builtin.compliance import rules
from plugins.sdk import PluginContext, RulePack, RuleSetPack, hookimpl


class VenueRulePack(RuleSetPack):
    """A RuleSetPack that judges orders at its own countries' venues only."""

    def applies(self, venue_country: str, client_domicile: str) -> bool:
        return venue_country in self.countries


def ca() -> VenueRulePack:
    return VenueRulePack("CA", ("CIRO",), {"CA"}, rules.shared_rules())


def mx() -> VenueRulePack:
    return VenueRulePack("MX", ("CNBV",), {"MX"}, (
        *rules.shared_rules(), rules.locate_required("CNBV short-sale rules (securities loan)")))


def cn() -> VenueRulePack:
    return VenueRulePack("CN", ("CSRC",), {"CN"}, (
        *rules.shared_rules(), rules.locate_required("CSRC securities lending rules")))


def india() -> VenueRulePack:
    return VenueRulePack("IN", ("SEBI",), {"IN"}, (
        *rules.shared_rules(), rules.locate_required("SEBI short-selling framework (2007)")))


@hookimpl
def alphintra_compliance_rule_packs(context: PluginContext) -> list[RulePack]:
    return [ca(), mx(), cn(), india()]
