"""An installed data source serves the core graph for its tenant only: core `instruments`,
`instrument`, `bars` and `quote` answer its instruments (named by the plugin), a backtest runs
on them, and another tenant sees none of it. The plugin runs in its sandboxed worker."""

from __future__ import annotations

from typing import Any

import pytest

from marketplace.signing import generate_key, sign
from tests.support import error_codes, onboard, user_key, wait_for
from tests.test_marketplace_install import NEWS_CONFIG, example_wheel

BARS = ('{ bars(instrument: "AAPL-SENT.XNAS", start: "2026-01-05T00:00:00Z", end: "2026-01-05T06:00:00Z", '
        'interval: "1h") { start open close volume } }')


@pytest.fixture(scope="module")
def installed(runtime: Any, gql: Any) -> dict[str, Any]:
    vendor = onboard(runtime)
    private_key, public_key = generate_key()
    pub = runtime.marketplace_publishing
    pub.register_vendor_key(vendor.id, vendor.admin_id, public_key, "Acme")
    wheel, manifest = example_wheel("news_sentiment", "acme_news", plugin_id="acme.sentiment-core")
    signature = sign(wheel, manifest, private_key)
    version = pub.publish(vendor.id, vendor.admin_id, wheel, signature, "COMMUNITY").version
    pub.review(None, version.id, "IN_REVIEW")
    pub.review(None, version.id, "APPROVED")
    a, b = onboard(runtime), onboard(runtime)
    body = gql('mutation($i: InstallPluginInput!) { installPlugin(input: $i) { version } }',
               {"i": {"pluginId": "acme.sentiment-core", "version": "1.0.0", "config": NEWS_CONFIG}},
               key=a.key)
    assert "errors" not in body, body
    return {"a": a, "b": b}


def test_the_core_graph_serves_an_installed_source_to_its_tenant_only(gql, installed):
    a, b = installed["a"], installed["b"]
    found = gql.data('{ instruments(search: "SENT", first: 10) { edges { node { key source plugin } } } }',
                     key=a.key)["instruments"]["edges"]
    assert {"key": "AAPL-SENT.XNAS", "source": "acme-news-sentiment", "plugin": "acme.sentiment-core"} in [
        e["node"] for e in found]
    vod = gql.data('{ instrument(key: "VOD-SENT.XLON") { plugin assetClass } }', key=a.key)["instrument"]
    assert vod == {"plugin": "acme.sentiment-core", "assetClass": "ALTERNATIVE_DATA"}
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
