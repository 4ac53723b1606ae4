"""An installed data source serves the core graph for its tenant only: core `instruments`,
`instrument`, `bars` and `quote` answer its instruments (named by the plugin), a backtest runs
on them, and another tenant sees none of it. The plugin runs in its sandboxed worker."""

from __future__ import annotations

from typing import Any

import pytest

from tests.support import PluginVendor, error_codes, install_plugin, onboard, user_key, wait_for
from tests.test_marketplace_install import NEWS_CONFIG, example_wheel

BARS = ('{ bars(instrument: "AAPL-SENT.XNAS", start: "2026-01-05T00:00:00Z", end: "2026-01-05T06:00:00Z", '
        'interval: "1h") { start open close volume } }')


@pytest.fixture(scope="module")
def installed(runtime: Any, gql: Any) -> dict[str, Any]:
    PluginVendor(runtime, "Sentico").publish(
        *example_wheel("news_sentiment", "acme_news", plugin_id="sentico.sentiment-core"), "COMMUNITY")
    a, b = onboard(runtime), onboard(runtime)
    body = install_plugin(gql, a.key, "sentico.sentiment-core", NEWS_CONFIG)
    assert "errors" not in body, body
    return {"a": a, "b": b}


def test_the_core_graph_serves_an_installed_source_to_its_tenant_only(gql, runtime, installed):
    a, b = installed["a"], installed["b"]
    found = gql.data('{ instruments(search: "SENT", first: 10) { edges { node { key source plugin } } } }',
                     key=a.key)["instruments"]["edges"]
    assert {"key": "AAPL-SENT.XNAS", "source": "acme-news-sentiment", "plugin": "sentico.sentiment-core"} in [
        e["node"] for e in found]
    vod = gql.data('{ instrument(key: "VOD-SENT.XLON") { plugin assetClass } }', key=a.key)["instrument"]
    assert vod == {"plugin": "sentico.sentiment-core", "assetClass": "ALTERNATIVE_DATA"}
    bars = gql.data(BARS, key=a.key)["bars"]
    assert len(bars) == 6 and all(0 <= float(bar["close"]) <= 100 for bar in bars)
    quote = gql.data('{ quote(instrument: "AAPL-SENT.XNAS", at: "2026-01-05T10:00:00Z") { bid ask } }',
                     key=a.key)["quote"]
    assert quote["bid"] == quote["ask"]
    # Built-ins still serve this tenant beside it.
    twin = gql.data('{ instrument(key: "AAPL.XNAS") { plugin } }', key=a.key)["instrument"]
    assert twin["plugin"] == "market-twin"
    # Another tenant: none of it.
    assert gql.data('{ instruments(search: "SENT", first: 10) { edges { node { key } } } }',
                    key=b.key)["instruments"]["edges"] == []
    assert error_codes(gql(BARS, key=b.key)) == ["INSTRUMENT_UNKNOWN"]
    # Use through the core graph is metered for the vendor's statement, for A only.
    usage = runtime.marketplace.meter.usage(a.id, "sentico.sentiment-core")
    assert usage and usage[0].calls > 0 and usage[0].bytes > 0
    assert runtime.marketplace.meter.usage(b.id, "sentico.sentiment-core") == []


def test_a_backtest_runs_on_an_installed_sources_instrument(gql, runtime, installed):
    a = installed["a"]
    _, trader = user_key(runtime, a, "trader")
    _, officer = user_key(runtime, a, "compliance_officer")
    doc = {"name": "Sentiment trend", "universe": {"instruments": ["AAPL-SENT.XNAS"]},
           "signals": [{"name": "fast", "indicator": "sma", "window": 3},
                       {"name": "slow", "indicator": "sma", "window": 8}],
           "entry": {"op": "gt", "left": "fast", "right": "slow"},
           "exit": {"op": "lt", "left": "fast", "right": "slow"},
           "sizing": {"method": "fixed_fraction", "fraction": 0.2}, "risk": {"max_position": 0.3}}
    created = gql.data('mutation($d: JSON!) { createStrategy(input: {document: $d}) { versions { id } } }',
                       {"d": doc}, key=trader)["createStrategy"]
    version = created["versions"][0]["id"]
    gql.data("mutation($v: ID!) { approveStrategyVersion(id: $v) { id } }", {"v": version}, key=officer)
    job = gql.data('mutation($v: ID!) { backtest(strategyVersionId: $v, start: "2024-01-01T00:00:00Z", '
                   'end: "2024-06-01T00:00:00Z") { id } }', {"v": version}, key=trader)["backtest"]
    done = wait_for(lambda: (j := runtime.jobs.get(a.id, job["id"])).status in ("SUCCEEDED", "FAILED") and j,
                    timeout=120)
    assert done.status == "SUCCEEDED", (done.error_code, done.error_message)
    metrics = done.result["metrics"]
    assert metrics["periods"] > 50 and metrics["trades"] > 0  # the plugin's daily bars, traded
    # The same strategy in another tenant cannot see the instrument.
    b = installed["b"]
    b_trader = user_key(runtime, b, "trader")[1]
    refused = gql('mutation($d: JSON!) { createStrategy(input: {document: $d}) { id } }', {"d": doc},
                  key=b_trader)
    assert error_codes(refused)[0] in ("STRATEGY_INVALID", "INSTRUMENT_UNKNOWN"), refused


DISORDERLY = '''
from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

from plugins.sdk import Bar, Instrument, PluginContext, hookimpl


class Backwards:
    name = "backwards"

    def instruments(self):
        return [Instrument("BACK", "XNAS", "USD", "Backwards Inc")]

    def bars(self, instrument, start, end, interval):
        out = []
        t = start
        while t < end:
            out.append(Bar("BACK", "XNAS", t, interval, Decimal(1), Decimal(2), Decimal(1), Decimal(1),
                           Decimal(5)))
            t += timedelta(hours=1)
        return out if interval == "1d" else out[::-1]  # in order only for the conformance kit

    def quote(self, instrument, at):
        return None


@hookimpl
def alphintra_market_data_sources(context: PluginContext) -> list:
    return [Backwards()]
'''


def _source_manifest(plugin_id: str, name: str, vendor: str, entry_point: str) -> dict[str, Any]:
    return {"id": plugin_id, "name": name, "vendor": vendor, "version": "1.0.0", "gateway": ">=0.1,<1.0",
            "category": "data-source", "entry_point": entry_point, "hooks": ["alphintra_market_data_sources"],
            "capabilities": ["marketdata:publish"], "config_schema": {"type": "object"},
            "pricing": {"model": "free"}, "licence": "MIT", "conformance": {"config": {}}}


def test_bars_out_of_order_fail_only_that_source_naming_it(gql, runtime):
    manifest = _source_manifest("back.wards", "Backwards", "Back", "backwards.plugin")
    publisher = PluginVendor(runtime, "Back")
    publisher.publish_code(DISORDERLY, manifest)
    vendor = publisher.tenant
    body = install_plugin(gql, vendor.key, "back.wards")
    assert "errors" not in body, body
    query = ('{ bars(instrument: "BACK.XNAS", start: "2026-01-05T14:00:00Z", end: "2026-01-05T18:00:00Z", '
             'interval: "1h") { start } }')
    answer = gql(query, key=vendor.key)
    assert error_codes(answer) == ["PLUGIN_FAILED"]
    assert answer["errors"][0]["extensions"]["plugin"] == "back.wards"
    assert "ascending" in answer["errors"][0]["message"]
    twin = gql.data('{ bars(instrument: "AAPL.XNAS", start: "2025-03-03T14:30:00Z", '
                    'end: "2025-03-03T16:00:00Z", interval: "15m") { start } }', key=vendor.key)
    assert twin["bars"]


def test_intraday_bars_outside_the_venues_sessions_fail_naming_the_plugin(gql, runtime):
    code = DISORDERLY.replace("return out if interval == \"1d\" else out[::-1]  # in order only for the "
                              "conformance kit", "return out").replace("BACK", "NITE")
    assert code != DISORDERLY and "out[::-1]" not in code
    manifest = _source_manifest("nite.owls", "Night owls", "Nite", "owls.plugin")
    publisher = PluginVendor(runtime, "Nite")
    publisher.publish_code(code, manifest)
    body = install_plugin(gql, publisher.tenant.key, "nite.owls")
    assert "errors" not in body, body
    night = ('{ bars(instrument: "NITE.XNAS", start: "2026-01-05T00:00:00Z", end: "2026-01-05T06:00:00Z", '
             'interval: "1h") { start } }')
    answer = gql(night, key=publisher.tenant.key)
    assert error_codes(answer) == ["PLUGIN_FAILED"]
    assert answer["errors"][0]["extensions"]["plugin"] == "nite.owls"
    assert "outside XNAS's sessions" in answer["errors"][0]["message"]
    day = ('{ bars(instrument: "NITE.XNAS", start: "2026-01-05T14:00:00Z", end: "2026-01-05T18:00:00Z", '
           'interval: "1h") { start } }')  # the 14:00 bar holds the 14:30 open
    assert len(gql.data(day, key=publisher.tenant.key)["bars"]) == 4
    gql.data('mutation { uninstallPlugin(pluginId: "nite.owls") { active } }', key=publisher.tenant.key)


def test_installed_instruments_stream_over_the_tenants_websocket(server, installed):
    import asyncio

    from tests.support import TransportWS

    async def first_quote(key: str) -> dict[str, Any]:
        async with TransportWS(server.ws_url, key) as ws:
            await ws.subscribe("q", 'subscription { quotes(instruments: ["AAPL-SENT.XNAS"], intervalMs: 250) '
                                    '{ symbol mic bid ask } }')
            return await ws.next(op_id="q")

    got = asyncio.run(first_quote(installed["a"].key))
    assert got["payload"]["data"]["quotes"][0]["symbol"] == "AAPL-SENT", got
    refused = asyncio.run(first_quote(installed["b"].key))
    assert refused["type"] == "error" or refused["payload"].get("errors"), refused


def test_a_tenant_switches_a_built_in_off_for_itself_only(gql, runtime, installed):
    a, b = installed["a"], installed["b"]
    plugins = gql.data("{ builtinPlugins { name enabled required } }", key=a.key)["builtinPlugins"]
    listed = {p["name"]: p for p in plugins}
    assert listed["market-twin"]["enabled"] and listed["compliance-us"]["required"]
    switch = ('mutation($n: String!, $e: Boolean!) { setBuiltinPlugin(name: $n, enabled: $e) '
              '{ name enabled } }')
    assert error_codes(gql(switch, {"n": "compliance-us", "e": False}, key=a.key)) == ["BUILTIN_REQUIRED"]
    assert error_codes(gql(switch, {"n": "no-such", "e": False}, key=a.key)) == ["BUILTIN_NOT_FOUND"]
    turned = gql.data(switch, {"n": "market-twin", "e": False}, key=a.key)["setBuiltinPlugin"]
    assert turned["enabled"] is False
    twin = '{ instrument(key: "AAPL.XNAS") { plugin } }'
    try:
        # A now sees only its installed source; B still sees the twin.
        assert error_codes(gql(twin, key=a.key)) == ["INSTRUMENT_UNKNOWN"]
        assert gql.data('{ instrument(key: "AAPL-SENT.XNAS") { key } }', key=a.key)["instrument"]
        assert gql.data(twin, key=b.key)["instrument"]["plugin"] == "market-twin"
    finally:
        gql.data(switch, {"n": "market-twin", "e": True}, key=a.key)
    assert gql.data(twin, key=a.key)["instrument"]["plugin"] == "market-twin"
