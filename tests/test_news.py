"""News: the shipped file and its source plugin, `newsItems`, and `analyzeNews` offline (the
lexicon) and with two recorded Claude models that disagree, through GraphQL."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from sqlmodel import select

from gateway.strategies.news import ModelAnalysis, consensus
from gateway.strategies.news_models import NewsAnalysis
from plugins.builtin.llm_offline import lexicon
from plugins.builtin.news_file import SHIPPED, NewsFile
from plugins.builtin.news_file.generate import build
from tests.recordings.replay import Replay
from tests.support import error_codes, user_key

ITEMS = """query($t: [String!], $from: DateTime, $to: DateTime, $text: String, $first: Int!, $after: String) {
  newsItems(tickers: $t, from: $from, to: $to, text: $text, first: $first, after: $after) {
    edges { cursor node { ref id publishedAt headline text tickers source } }
    pageInfo { hasNextPage endCursor } } }"""
ANALYZE = """mutation($input: AnalyzeNewsInput!) { analyzeNews(input: $input) {
  provider isLlm models { provider model isLlm } failures
  items { item { ref headline tickers publishedAt }
          analyses { provider model isLlm sentiment relevance instruments rationale cached }
          consensus { sentiment dispersion confidence relevance models instruments { instrument share } } }
  signals { instrument points { at value } } } }"""

DISAGREE = [  # the recorded models agree on the first two and disagree on the third
    {"headline": "Apple beats estimates as iPhone demand surges", "text": "Revenue beat forecasts.",
     "publishedAt": "2026-03-02T13:05:00Z", "tickers": ["AAPL.XNAS"]},
    {"headline": "Apple faces probe over App Store", "text": "Regulators opened an investigation.",
     "publishedAt": "2026-03-03T13:10:00Z", "tickers": ["AAPL.XNAS"]},
    {"headline": "US stocks rally as inflation cools", "text": "Yields fell; tech rallied.",
     "publishedAt": "2026-03-04T14:00:00Z", "tickers": ["AAPL.XNAS", "MSFT.XNAS"]},
]


@pytest.fixture
def two_models(runtime) -> Iterator:
    providers = runtime.strategy_ai.providers

    def use(names: list[str]) -> Replay:
        replay = Replay(names)
        providers.configure("llm-anthropic", api_key="sk-ant-test", max_retries=0,
                            http_client=replay.client())
        return replay

    yield use
    providers.configure("llm-anthropic", api_key=None, http_client=None)


def test_the_shipped_file_is_what_the_generator_writes(runtime):
    lines = SHIPPED.read_text().splitlines()
    assert len(lines) == 200
    assert [json.loads(line) for line in lines] == build()  # deterministic
    known = {i.key for i in runtime.market_data.instruments()}
    items = NewsFile.read(SHIPPED).items(tickers=None, start=None, end=None, text=None)
    assert len({i.id for i in items}) == 200
    for item in items:
        assert item.published_at.tzinfo is not None and item.published_at.utcoffset().total_seconds() == 0
        assert item.tickers and set(item.tickers) <= known
        assert item.headline and item.text


def test_news_items_filter_and_paginate(gql, tenant):
    key = tenant.key
    page = gql.data(ITEMS, {"t": ["AAPL.XNAS"], "first": 5}, key=key)["newsItems"]
    assert len(page["edges"]) == 5 and page["pageInfo"]["hasNextPage"]
    nodes = [e["node"] for e in page["edges"]]
    assert all("AAPL.XNAS" in n["tickers"] for n in nodes)
    stamps = [n["publishedAt"] for n in nodes]
    assert stamps == sorted(stamps, reverse=True)
    rest = gql.data(ITEMS, {"t": ["AAPL.XNAS"], "first": 200, "after": page["pageInfo"]["endCursor"]},
                    key=key)["newsItems"]
    everything = gql.data(ITEMS, {"t": ["AAPL.XNAS"], "first": 200}, key=key)["newsItems"]["edges"]
    assert [e["node"]["ref"] for e in everything] == [n["ref"] for n in nodes] + [
        e["node"]["ref"] for e in rest["edges"]]
    window = gql.data(ITEMS, {"from": "2025-06-01T00:00:00Z", "to": "2025-07-01T00:00:00Z", "first": 200},
                      key=key)["newsItems"]["edges"]
    assert window and all("2025-06" in e["node"]["publishedAt"][:7] for e in window)
    text = gql.data(ITEMS, {"text": "recall", "first": 200}, key=key)["newsItems"]["edges"]
    assert text and all("recall" in (e["node"]["headline"] + e["node"]["text"]).lower() for e in text)
    assert error_codes(gql(ITEMS, {"first": 5, "after": "bm9wZQ=="}, key=key)) == ["CURSOR_INVALID"]
    assert error_codes(gql(ITEMS, {"first": 0}, key=key)) == ["PAGE_SIZE_INVALID"]
    assert error_codes(gql(ITEMS, {"first": 5, "from": "2025-07-01T00:00:00Z", "to": "2025-06-01T00:00:00Z"},
                           key=key)) == ["RANGE_INVALID"]


def test_news_items_are_the_same_for_every_tenant(gql, tenant, other_tenant):
    query = {"t": ["SAP.XETR"], "first": 50}
    assert gql.data(ITEMS, query, key=tenant.key) == gql.data(ITEMS, query, key=other_tenant.key)


def test_offline_analysis_is_the_lexicon_and_says_so(gql, runtime, tenant):
    _, trader = user_key(runtime, tenant, "trader")
    body = gql.data(ANALYZE, {"input": {"query": {"tickers": ["AAPL.XNAS"], "from": "2025-01-01T00:00:00Z",
                                                  "to": "2025-09-01T00:00:00Z"}}}, key=trader)["analyzeNews"]
    assert body["provider"] == "offline" and body["isLlm"] is False
    assert body["models"] == [{"provider": "offline", "model": "offline-v1", "isLlm": False}]
    assert body["items"]
    for entry in body["items"]:
        [analysis] = entry["analyses"]
        assert analysis["provider"] == "offline" and analysis["isLlm"] is False
        assert "lexicon score" in analysis["rationale"]
        assert "AAPL.XNAS" in analysis["instruments"]
        assert entry["consensus"]["confidence"] == 0.5 and entry["consensus"]["models"] == 1
        headline = entry["item"]["headline"]
        if "beats estimates" in headline or "upgraded" in headline:
            assert analysis["sentiment"] > 0.3
        if "misses forecasts" in headline or "downgraded" in headline or "faces probe" in headline:
            assert analysis["sentiment"] < -0.3
    [signal] = [s for s in body["signals"] if s["instrument"] == "AAPL.XNAS"]
    times = [p["at"] for p in signal["points"]]
    assert times == sorted(times) and len(times) == len(body["items"])
    again = gql.data(ANALYZE, {"input": {"query": {"tickers": ["AAPL.XNAS"], "from": "2025-01-01T00:00:00Z",
                                                   "to": "2025-09-01T00:00:00Z"}}}, key=trader)["analyzeNews"]
    assert all(a["cached"] for e in again["items"] for a in e["analyses"])


def test_two_models_that_disagree_lower_the_confidence(gql, runtime, tenant, two_models):
    replay = two_models(["news_sonnet", "news_haiku"])
    body = gql.data(ANALYZE, {"input": {"items": DISAGREE}}, key=tenant.key)["analyzeNews"]
    assert body["provider"] == "anthropic" and body["isLlm"] is True
    assert [m["model"] for m in body["models"]] == ["claude-sonnet-4-6", "claude-haiku-4-5"]
    assert [r["body"]["model"] for r in replay.requests] == ["claude-sonnet-4-6", "claude-haiku-4-5"]
    for request in replay.bodies:
        assert request["tool_choice"] == {"type": "tool", "name": "analyze_news"}
        assert request["tools"][0]["input_schema"]["properties"]["analyses"]["items"]["required"] == [
            "id", "sentiment", "relevance", "instruments", "rationale"]
        assert "[item-3]" in request["messages"][0]["content"]

    agree_1, agree_2, split = (e["consensus"] for e in body["items"])
    assert agree_1["models"] == 2 and agree_1["confidence"] > 0.95 and agree_1["sentiment"] > 0.7
    assert agree_2["confidence"] > 0.95 and agree_2["sentiment"] < -0.6
    # 0.6 against -0.5: sigma = 0.55, confidence 0.45
    assert split["dispersion"] == pytest.approx(0.55) and split["confidence"] == pytest.approx(0.45)
    assert split["confidence"] < agree_1["confidence"]
    shares = {(s["instrument"], s["share"]) for s in split["instruments"]}
    assert shares == {("AAPL.XNAS", 0.5), ("MSFT.XNAS", 1.0)}

    signals = {s["instrument"]: s["points"] for s in body["signals"]}
    third = datetime(2026, 3, 4, 14, tzinfo=UTC)
    msft = [p for p in signals["MSFT.XNAS"] if datetime.fromisoformat(p["at"]) == third]
    assert msft[0]["value"] == pytest.approx(split["sentiment"] * split["confidence"] * 1.0, abs=1e-6)
    assert len(signals["AAPL.XNAS"]) == 3

    # cached per tenant, item and model: asking again calls nothing
    again = gql.data(ANALYZE, {"input": {"items": DISAGREE}}, key=tenant.key)["analyzeNews"]
    assert len(replay.requests) == 2 and all(a["cached"] for e in again["items"] for a in e["analyses"])
    assert again["items"][2]["consensus"] == body["items"][2]["consensus"]


def test_a_model_that_fails_is_reported_and_the_other_still_counts(gql, tenant, two_models):
    two_models(["news_sonnet", "rate_limited"])
    body = gql.data(ANALYZE, {"input": {"items": DISAGREE}}, key=tenant.key)["analyzeNews"]
    assert body["failures"] == [{"provider": "anthropic", "model": "claude-haiku-4-5",
                                 "code": "LLM_RATE_LIMITED", "message": "claude-haiku-4-5 is rate limited"}]
    assert all(e["consensus"]["models"] == 1 for e in body["items"])


def test_every_model_failing_is_an_error(gql, tenant, two_models):
    two_models(["overloaded", "overloaded"])
    body = gql(ANALYZE, {"input": {"items": DISAGREE[:1]}}, key=tenant.key)
    assert error_codes(body) == ["LLM_UNAVAILABLE"]


@pytest.mark.parametrize("payload, code", [
    ({}, "NEWS_INVALID"),
    ({"items": DISAGREE, "query": {"tickers": ["AAPL.XNAS"]}}, "NEWS_INVALID"),
    ({"items": []}, "NEWS_INVALID"),
    ({"items": [{**DISAGREE[0], "headline": " "}]}, "NEWS_INVALID"),
    ({"items": [DISAGREE[0]] * 51}, "NEWS_TOO_MANY_ITEMS"),
    ({"query": {}}, "NEWS_TOO_MANY_ITEMS"),  # the whole file: 200 items
])
def test_bad_analysis_requests(gql, runtime, tenant, payload, code):
    with runtime.db.tenant_session(tenant.id) as session:
        before = len(session.exec(select(NewsAnalysis)).all())
    assert error_codes(gql(ANALYZE, {"input": payload}, key=tenant.key)) == [code]
    with runtime.db.tenant_session(tenant.id) as session:
        assert len(session.exec(select(NewsAnalysis)).all()) == before


def test_viewer_reads_news_but_may_not_analyse(gql, runtime, tenant):
    _, viewer = user_key(runtime, tenant, "viewer")
    assert gql.data(ITEMS, {"first": 1}, key=viewer)["newsItems"]["edges"]
    assert error_codes(gql(ANALYZE, {"input": {"items": DISAGREE[:1]}}, key=viewer)) == ["FORBIDDEN"]


def test_analyses_are_each_tenants_own(gql, runtime, tenant, other_tenant):
    first = gql.data(ANALYZE, {"input": {"items": DISAGREE[:2]}}, key=tenant.key)["analyzeNews"]
    assert not any(a["cached"] for e in first["items"] for a in e["analyses"])
    theirs = gql.data(ANALYZE, {"input": {"items": DISAGREE[:2]}}, key=other_tenant.key)["analyzeNews"]
    assert not any(a["cached"] for e in theirs["items"] for a in e["analyses"])  # not A's cache
    with runtime.db.tenant_session(other_tenant.id) as session:
        rows = session.exec(select(NewsAnalysis)).all()
    assert len(rows) == 2 and {r.tenant_id for r in rows} == {other_tenant.id}


# -- the scorer and the consensus, by hand --------------------------------------------------

def test_lexicon_scoring_rules():
    raw, words = lexicon.score_text("Apple beat estimates")
    assert raw == 2 and words == [("beat", 2)]
    assert lexicon.score_text("growth was not strong")[0] == 1 - 1  # growth +1, "not strong" -1
    assert lexicon.score_text("shares fell sharply")[0] == -1.5
    assert lexicon.score_text("shares sharply fell")[0] == -1.5 * 1.5
    assert lexicon.normalise(2.0) == pytest.approx(2 / (4 + 15) ** 0.5)
    item = {"id": "x", "headline": "Shell misses forecasts", "text": "Demand for SAP was weak.",
            "tickers": ["SHEL.XLON"]}
    out = lexicon.analyse_item(item, [{"key": "SHEL.XLON", "symbol": "SHEL", "name": "Shell plc"},
                                      {"key": "SAP.XETR", "symbol": "SAP", "name": "SAP SE"}])
    assert out["sentiment"] < 0 and out["relevance"] == 1.0
    assert out["instruments"] == ["SAP.XETR", "SHEL.XLON"]


def _a(sentiment: float, relevance: float = 1.0, instruments: tuple[str, ...] = ("X.XNAS",)) -> ModelAnalysis:
    return ModelAnalysis("p", "m", True, sentiment, relevance, instruments, "", False)


def test_confidence_falls_as_models_disagree():
    confidences = [consensus([_a(0.5), _a(0.5 - d)]).confidence for d in (0.0, 0.2, 0.6, 1.0, 1.5)]
    assert confidences == sorted(confidences, reverse=True) and confidences[0] == 1.0
    assert consensus([_a(1.0), _a(-1.0)]).confidence == 0.0
    assert consensus([_a(0.4)]).confidence == 0.5
    weighted = consensus([_a(1.0, 0.9), _a(-1.0, 0.1)])
    assert weighted.sentiment == pytest.approx(0.8)
    assert consensus([]) is None
