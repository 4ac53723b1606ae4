"""A tenant's installed rule pack joins its orders' pre-trade checks (adding restrictions only,
failing closed when it breaks) and its installed FX provider prices its FX, in the tenant's
scope only. The plugins run in their sandboxed workers."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from tests.support import PluginVendor, error_codes, install_plugin, onboard

PACK_CODE = '''
from __future__ import annotations

from decimal import Decimal

from plugins.sdk import CheckContext, Denial, PluginContext, hookimpl


class DeskLimits:
    jurisdiction = "DESK"
    regulators = ("Acme desk rules",)

    def __init__(self, max_quantity: Decimal, broken: bool) -> None:
        self.max_quantity = max_quantity
        self.broken = broken

    def applies(self, venue_country: str, client_domicile: str) -> bool:
        return True

    def check(self, ctx: CheckContext) -> list[Denial]:
        if self.broken:
            raise RuntimeError("rule store unreachable")
        if ctx.order.quantity > self.max_quantity:
            return [Denial("ACME_DESK_MAX_QTY", "desk-max-qty", "DESK",
                           f"more than {self.max_quantity} per order on this desk",
                           self.max_quantity, ctx.order.quantity)]
        return []


class EurUsd:
    name = "acme-fx"

    def rate(self, base, quote, at):
        from plugins.sdk import FxRate
        if (base, quote) == ("EUR", "USD"):
            return FxRate("EUR", "USD", Decimal("1.2345"), at, "acme-fx")
        return None

    def history(self, base, quote, start, end):
        return []

    def interest_rate(self, currency, at):
        return None


@hookimpl
def alphintra_compliance_rule_packs(context: PluginContext) -> list:
    return [DeskLimits(Decimal(str(context.config.get("max_quantity", "0.02"))),
                       bool(context.config.get("broken")))]


@hookimpl
def alphintra_fx_rate_providers(context: PluginContext) -> list:
    return [EurUsd()]
'''

MANIFEST = {
    "id": "deskco.desk-rules", "name": "Desk rules", "vendor": "Acme", "version": "1.0.0",
    "gateway": ">=0.1,<1.0", "category": "compliance", "entry_point": "acme_desk.plugin",
    "hooks": ["alphintra_compliance_rule_packs", "alphintra_fx_rate_providers"],
    "capabilities": ["compliance:rules", "fx:publish"],
    "config_schema": {"type": "object", "properties": {"max_quantity": {"type": "string"},
                                                       "broken": {"type": "boolean"}}},
    "pricing": {"model": "free"}, "licence": "MIT",
}
SUBMIT = """mutation($input: SubmitOrderInput!) { submitOrder(input: $input) {
  status rejectCode rejectText } }"""
ACCOUNT = """mutation($input: TradingAccountInput!) { upsertTradingAccount(input: $input) { code } }"""


@pytest.fixture(scope="module")
def desks(runtime: Any, gql: Any) -> dict[str, Any]:
    PluginVendor(runtime, "Acme").publish_code(PACK_CODE, MANIFEST, "COMMUNITY")
    a, b = onboard(runtime), onboard(runtime)
    for t in (a, b):
        gql.data(ACCOUNT, {"input": {"code": "DESK-1", "currency": "USD", "domicile": "US",
                                     "creditLimit": "1000000", "equity": "1000000"}}, key=t.key)
    body = install_plugin(gql, a.key, MANIFEST["id"], {"max_quantity": "0.02"})
    assert "errors" not in body, body
    return {"a": a, "b": b}


def _order(gql: Any, key: str, client_id: str, quantity: str) -> dict[str, Any]:
    ask = Decimal(gql.data('{ quote(instrument: "BTC-USD.ALPX") { ask } }', key=key)["quote"]["ask"])
    price = str((ask * Decimal("1.001")).quantize(Decimal("0.01")))
    return gql.data(SUBMIT, {"input": {"clientOrderId": client_id, "account": "DESK-1", "symbol": "BTC-USD",
                                       "mic": "ALPX", "side": "BUY", "quantity": quantity, "ordType": "LIMIT",
                                       "timeInForce": "IOC", "limitPrice": price}}, key=key)["submitOrder"]


def test_an_installed_rule_pack_denies_its_tenants_orders_only(gql, desks):
    a, b = desks["a"], desks["b"]
    denied = _order(gql, a.key, "big-a", "0.05")
    assert denied["status"] == "DENIED" and denied["rejectCode"] == "ACME_DESK_MAX_QTY", denied
    assert _order(gql, a.key, "small-a", "0.01")["status"] in ("FILLED", "PARTIALLY_FILLED", "CANCELED")
    assert _order(gql, b.key, "big-b", "0.05")["status"] != "DENIED"  # B did not install it


def test_a_broken_installed_pack_fails_closed(gql, desks):
    a = desks["a"]
    gql.data('mutation($c: JSON!) { configurePlugin(pluginId: "deskco.desk-rules", config: $c) { id } }',
             {"c": {"max_quantity": "0.02", "broken": True}}, key=a.key)
    try:
        denied = _order(gql, a.key, "small-broken", "0.015")  # not a duplicate of small-a
        assert denied["status"] == "DENIED" and denied["rejectCode"] == "COMPLIANCE_PACK_FAILED", denied
        assert "deskco.desk-rules" in (denied["rejectText"] or "")
    finally:
        gql.data('mutation($c: JSON!) { configurePlugin(pluginId: "deskco.desk-rules", config: $c) { id } }',
                 {"c": {"max_quantity": "0.02"}}, key=a.key)


def test_an_installed_fx_provider_prices_its_tenants_fx(gql, desks):
    query = '{ fxRate(base: "EUR", quote: "USD") { rate source } }'
    a_rate = gql.data(query, key=desks["a"].key)["fxRate"]
    b_rate = gql.data(query, key=desks["b"].key)["fxRate"]
    assert a_rate == {"rate": "1.2345", "source": "acme-fx"}
    assert b_rate["source"] != "acme-fx"


LLM_CODE = '''
from __future__ import annotations

from plugins.sdk import LLMUsage, PluginContext, StructuredAnswer, hookimpl


class AcmeModel:
    name = "acme-llm"
    models = ("acme-strategist-1",)
    is_llm = True

    def complete_structured(self, *, model, system, messages, tool, max_tokens, facts):
        universe = list(facts.get("universe") or ["AAPL.XNAS"])
        document = {
            "name": "Acme momentum", "universe": {"instruments": universe},
            "signals": [{"name": "fast", "indicator": "sma", "window": 5},
                        {"name": "slow", "indicator": "sma", "window": 20}],
            "entry": {"op": "gt", "left": "fast", "right": "slow"},
            "exit": {"op": "lt", "left": "fast", "right": "slow"},
            "sizing": {"method": "fixed_fraction", "fraction": 0.1},
            "risk": {"max_position": 0.15},
        }
        return StructuredAnswer(provider=self.name, model=model, is_llm=True, tool_input=document,
                                refusal=None, stop_reason="tool_use", usage=LLMUsage(10, 20))


@hookimpl
def alphintra_llm_providers(context: PluginContext) -> list:
    return [AcmeModel()]
'''


def test_an_installed_llm_provider_answers_its_tenants_synthesis(gql, runtime):
    from tests.support import user_key, wait_for

    manifest = {**MANIFEST, "id": "acmeai.strategist", "category": "llm", "entry_point": "acme_llm.plugin",
                "hooks": ["alphintra_llm_providers"], "capabilities": ["llm:complete"]}
    publisher = PluginVendor(runtime, "Acme AI")
    publisher.publish_code(LLM_CODE, manifest)
    vendor = publisher.tenant
    body = install_plugin(gql, vendor.key, manifest["id"])
    assert "errors" not in body, body
    providers = gql.data("{ llmProviders { name isLlm } }", key=vendor.key)["llmProviders"]
    assert {"name": "acme-llm", "isLlm": True} in providers
    _, trader = user_key(runtime, vendor, "trader")
    job = gql.data('mutation { synthesizeStrategy(input: {objective: "Trend in US tech", '
                   'universe: ["AAPL.XNAS", "MSFT.XNAS"]}) { id } }', key=trader)["synthesizeStrategy"]
    done = wait_for(lambda: (j := runtime.jobs.get(vendor.id, job["id"])).status in ("SUCCEEDED", "FAILED")
                    and j, timeout=120)
    assert done.status == "SUCCEEDED", (done.error_code, done.error_message)
    assert (done.result["provider"], done.result["is_llm"]) == ("acme-llm", True)
    # Chosen by name; a name that does not serve the tenant is refused before any job exists.
    choose = 'mutation { synthesizeStrategy(input: {objective: "Trend", provider: "acme-llm"}) { id } }'
    named = gql.data(choose, key=trader)["synthesizeStrategy"]
    assert named["id"]
    unknown = gql('mutation { synthesizeStrategy(input: {objective: "Trend", provider: "nobody"}) { id } }',
                  key=trader)
    assert error_codes(unknown) == ["LLM_PROVIDER_UNKNOWN"]
    # Another tenant's synthesis never reaches it.
    other = onboard(runtime)
    names = [p["name"] for p in gql.data("{ llmProviders { name } }", key=other.key)["llmProviders"]]
    assert "acme-llm" not in names
    _, other_trader = user_key(runtime, other, "trader")
    refused = gql(choose, key=other_trader)
    assert error_codes(refused) == ["LLM_PROVIDER_UNKNOWN"]


def test_an_installed_fx_provider_values_its_tenants_exposure(gql, desks):
    exposure = """query($p: ID!) { fxExposure(portfolio: $p) { baseCurrency
      currencies { currency gross spot grossInBase } } }"""
    spots = {}
    for name in ("a", "b"):
        key = desks[name].key
        pid = gql.data("mutation($i: CreatePortfolioInput!) { createPortfolio(input: $i) { id } }",
                       {"i": {"name": f"eur-book-{name}", "baseCurrency": "USD"}},
                       key=key)["createPortfolio"]["id"]
        gql.data("mutation($i: SetCashBalanceInput!) { setCashBalance(input: $i) { amount } }",
                 {"i": {"portfolio": pid, "currency": "EUR", "amount": "1000"}}, key=key)
        found = gql.data(exposure, {"p": pid}, key=key)["fxExposure"]
        eur = next(c for c in found["currencies"] if c["currency"] == "EUR")
        spots[name] = (Decimal(eur["spot"]), Decimal(eur["grossInBase"]))
    assert spots["a"] == (Decimal("1.2345"), Decimal("1234.5"))  # A's installed provider's rate
    assert spots["b"][0] != Decimal("1.2345")
