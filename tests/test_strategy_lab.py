"""The strategy lab end to end through GraphQL on the market twin: create (bad documents
refused with JSON paths, nothing stored) -> approve (roles, four eyes) -> backtest job
(progress, BACKTEST_NO_DATA) -> explained decisions (SHAP additivity on every stored record)
-> the regulatory report (HTML and PDF); and tenant isolation of every root field."""

from __future__ import annotations

import base64
import copy
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlmodel import func, select

from gateway.jobs.models import Job
from gateway.strategies.backtest import Costs
from gateway.strategies.errors import BacktestNoData
from gateway.strategies.models import Backtest, DecisionExplanation, Strategy, StrategyVersion
from gateway.strategies.service import Origin
from tests.support import TenantHandle, error_codes, onboard, user_key, wait_for

DOC: dict[str, Any] = {
    "name": "Trend with RSI guard",
    "interval": "1d",
    "universe": {"instruments": ["AAPL.XNAS", "SAP.XETR"]},
    "signals": [
        {"name": "fast", "indicator": "sma", "window": 5},
        {"name": "slow", "indicator": "sma", "window": 20},
        {"name": "strength", "indicator": "rsi", "window": 14},
        {"name": "trend", "indicator": "momentum", "window": 10},
    ],
    "entry": {
        "op": "and",
        "args": [
            {"op": "gt", "left": "fast", "right": "slow"},
            {"op": "lt", "left": "strength", "right": 75},
        ],
    },
    "exit": {"op": "lt", "left": "fast", "right": "slow"},
    "sizing": {"method": "fixed_fraction", "fraction": 0.3},
    "risk": {"max_position": 0.4, "stop_loss": 0.1},
}
CREATE = """mutation($doc: JSON!, $name: String, $key: String) {
  createStrategy(input: {document: $doc, name: $name, idempotencyKey: $key}) {
    id name latestVersion versions { id version origin canTrade createdById approvedById documentHash } } }"""
APPROVE = "mutation($id: ID!) { approveStrategyVersion(id: $id) { id canTrade approvedById approvedAt } }"
BACKTEST = """mutation($v: ID!, $start: DateTime!, $end: DateTime!, $instruments: [String!],
                      $costs: BacktestCostsInput) {
  backtest(strategyVersionId: $v, start: $start, end: $end, instruments: $instruments, costs: $costs) {
    id kind status } }"""
EXPLANATION = (
    "id strategyVersionId backtestId instrument at action modelHash modelVersion features "
    "baseValue prediction probability residual additive sentence "
    "contributions { feature value contribution }"
)


@pytest.fixture(scope="module")
def lab(runtime, gql, server) -> dict[str, Any]:
    """Tenant A with a trader-created, officer-approved strategy and one finished backtest."""
    tenant = onboard(runtime)
    trader_id, trader = user_key(runtime, tenant, "trader")
    officer_id, officer = user_key(runtime, tenant, "compliance_officer")
    created = gql.data(CREATE, {"doc": DOC, "key": "lab-1"}, key=trader)["createStrategy"]
    version = created["versions"][0]
    gql.data(APPROVE, {"id": version["id"]}, key=officer)
    job = gql.data(
        BACKTEST,
        {
            "v": version["id"],
            "start": "2023-01-01T00:00:00Z",
            "end": "2023-09-01T00:00:00Z",
            "costs": {"commissionBps": "2", "spreadBps": "3", "slippageBps": "1"},
        },
        key=trader,
    )["backtest"]
    done = wait_for(
        lambda: (j := runtime.jobs.get(tenant.id, job["id"])).status in ("SUCCEEDED", "FAILED") and j,
        timeout=120,
    )
    assert done.status == "SUCCEEDED", (done.error_code, done.error_message)
    return {
        "tenant": tenant,
        "trader": trader,
        "trader_id": trader_id,
        "officer": officer,
        "officer_id": officer_id,
        "strategy": created,
        "version": version,
        "job": done,
        "backtest_id": done.result["backtest_id"],
    }


def counts(runtime, tenant_id: str) -> tuple[int, ...]:
    with runtime.db.tenant_session(tenant_id) as session:
        return tuple(
            session.exec(select(func.count()).select_from(model)).one()
            for model in (Strategy, StrategyVersion, Backtest, DecisionExplanation, Job)
        )


def test_invalid_documents_are_refused_with_paths_and_nothing_is_stored(gql, runtime):
    tenant = onboard(runtime)
    before = counts(runtime, tenant.id)
    bad = copy.deepcopy(DOC)
    bad["signals"][1]["indicator"] = "exec"
    bad["entry"]["args"][1]["left"] = "nothing"
    body = gql(CREATE, {"doc": bad}, key=tenant.key)
    assert error_codes(body) == ["STRATEGY_INVALID"]
    assert [e["path"] for e in body["errors"][0]["extensions"]["errors"]] == ["/signals/1/indicator"]
    bad["signals"][1]["indicator"] = "sma"  # schema-valid now: the reference error shows
    body = gql(CREATE, {"doc": bad}, key=tenant.key)
    assert body["errors"][0]["extensions"]["errors"] == [
        {"path": "/entry/args/1/left", "message": "'nothing' is neither a price field nor a signal"}
    ]
    for doc in ({}, {"name": ""}, "not an object"):
        assert error_codes(gql(CREATE, {"doc": doc}, key=tenant.key)) == ["STRATEGY_INVALID"]
    unknown = {**DOC, "universe": {"instruments": ["NOPE.XNAS"]}}
    body = gql(CREATE, {"doc": unknown}, key=tenant.key)
    assert body["errors"][0]["extensions"]["errors"][0]["path"] == "/universe/instruments/0"
    assert counts(runtime, tenant.id) == before
    # a viewer may read, not create
    _, viewer = user_key(runtime, tenant, "viewer")
    assert error_codes(gql(CREATE, {"doc": DOC}, key=viewer)) == ["FORBIDDEN"]
    assert "$defs" in gql.data("{ strategySchema }", key=viewer)["strategySchema"]


def test_create_is_idempotent_and_versions_need_their_own_approval(gql, runtime, lab):
    again = gql.data(CREATE, {"doc": DOC, "key": "lab-1"}, key=lab["trader"])["createStrategy"]
    assert again["id"] == lab["strategy"]["id"]
    changed = {**DOC, "name": "other"}
    assert error_codes(gql(CREATE, {"doc": changed, "key": "lab-1"}, key=lab["trader"])) == [
        "IDEMPOTENCY_KEY_REUSED"
    ]
    assert lab["version"]["origin"] == "HUMAN" and lab["version"]["canTrade"] is False
    got = gql.data(
        "query($id: ID!) { strategy(id: $id) { versions { id canTrade approvedById } } }",
        {"id": lab["strategy"]["id"]},
        key=lab["trader"],
    )["strategy"]["versions"]
    assert got == [{"id": lab["version"]["id"], "canTrade": True, "approvedById": lab["officer_id"]}]

    # a second version (by the trader) starts unapproved; the trader may not approve it, nor the
    # officer twice; an admin may.
    v2 = gql.data(
        "mutation($s: ID!, $d: JSON!) { createStrategyVersion(strategyId: $s, document: $d) "
        "{ id version canTrade } }",
        {"s": lab["strategy"]["id"], "d": {**DOC, "side": "short"}},
        key=lab["trader"],
    )["createStrategyVersion"]
    assert v2["version"] == 2 and v2["canTrade"] is False
    assert error_codes(gql(APPROVE, {"id": v2["id"]}, key=lab["trader"])) == ["APPROVAL_FORBIDDEN"]
    assert error_codes(gql(APPROVE, {"id": lab["version"]["id"]}, key=lab["officer"])) == [
        "STRATEGY_VERSION_ALREADY_APPROVED"
    ]
    assert gql.data(APPROVE, {"id": v2["id"]}, key=lab["tenant"].key)["approveStrategyVersion"]["canTrade"]

    # four eyes: the creator of a version may not approve it, even as an admin
    own = gql.data(CREATE, {"doc": DOC}, key=lab["tenant"].key)["createStrategy"]["versions"][0]
    assert error_codes(gql(APPROVE, {"id": own["id"]}, key=lab["tenant"].key)) == ["APPROVAL_SELF"]
    row = runtime.strategies.version(lab["tenant"].id, own["id"])
    assert not runtime.strategies.can_trade(row)


def test_the_llm_helpers_api_records_origin_and_joins_a_transaction(runtime, lab):
    tenant_id = lab["tenant"].id
    version = runtime.strategies.create_version(
        tenant_id,
        DOC,
        Origin.llm("claude-test", "ab" * 32, "note"),
        lab["trader_id"],
        strategy_id=lab["strategy"]["id"],
    )
    assert (version.origin, version.origin_model, version.origin_prompt_hash) == (
        "LLM",
        "claude-test",
        "ab" * 32,
    )
    before = counts(runtime, tenant_id)
    with pytest.raises(RuntimeError), runtime.db.tenant_transaction(tenant_id) as session:
        runtime.strategies.create_version(tenant_id, DOC, Origin.offline("template"), None, session=session)
        raise RuntimeError("the caller's transaction fails")
    assert counts(runtime, tenant_id) == before  # rolled back with the caller's transaction


def test_backtest_job_result_and_explanations(gql, runtime, lab):
    trader = lab["trader"]
    result = gql.data(
        "query($id: ID!) { backtestResult(id: $id) { id strategyVersionId jobId metrics "
        "equityCurve { at equity } trades explainer drift decisionCount } }",
        {"id": lab["backtest_id"]},
        key=trader,
    )["backtestResult"]
    assert result["jobId"] == lab["job"].id and result["strategyVersionId"] == lab["version"]["id"]
    metrics = result["metrics"]
    for key in (
        "total_return",
        "annualised_return",
        "volatility",
        "sharpe",
        "sortino",
        "max_drawdown",
        "turnover",
        "hit_rate",
        "exposure",
    ):
        assert key in metrics
    assert metrics["base_currency"] == "USD" and metrics["trades"] == len(result["trades"]) > 0
    # SAP trades in EUR: its fills carry the EUR->USD rate; AAPL's is 1.
    rates = {t["instrument"]: t["fx_rate"] for t in result["trades"]}
    assert rates.get("AAPL.XNAS") == "1" and rates.get("SAP.XETR") not in (None, "1")
    curve = result["equityCurve"]
    assert curve[-1]["equity"] == metrics["final_equity"].rstrip("0").rstrip(".") or float(
        curve[-1]["equity"]
    ) == pytest.approx(float(metrics["final_equity"]))
    assert result["explainer"]["status"] == "FITTED" and result["explainer"]["all_additive"] is True
    assert set(result["drift"]["features"]) == {"fast", "slow", "strength", "trend"}
    assert (
        lab["job"].progress == 1.0 and lab["job"].result["explained"] == result["explainer"]["explained"] > 0
    )

    page = gql.data(
        f"query($v: ID!) {{ decisionExplanations(strategyVersionId: $v, first: 5) {{ "
        f"edges {{ cursor node {{ {EXPLANATION} }} }} pageInfo {{ hasNextPage endCursor }} }} }}",
        {"v": lab["version"]["id"]},
        key=trader,
    )["decisionExplanations"]
    nodes = [e["node"] for e in page["edges"]]
    assert len(nodes) == 5 and page["pageInfo"]["hasNextPage"] is (result["explainer"]["explained"] > 5)
    one = gql.data(
        f"query($id: ID!) {{ explainDecision(id: $id) {{ {EXPLANATION} }} }}",
        {"id": nodes[0]["id"]},
        key=trader,
    )["explainDecision"]
    assert one == nodes[0]
    assert one["action"] in ("ENTER", "EXIT") and one["instrument"] in DOC["universe"]["instruments"]
    assert {c["feature"] for c in one["contributions"]} == {
        "fast",
        "slow",
        "strength",
        "trend",
        "in_position",
    }
    assert one["sentence"].startswith("On ") and "largest contributions" in one["sentence"]

    # SHAP additivity on EVERY stored explanation: base + sum(contributions) = prediction
    with runtime.db.tenant_session(lab["tenant"].id) as session:
        rows = session.exec(
            select(DecisionExplanation).where(DecisionExplanation.backtest_id == lab["backtest_id"])
        ).all()
    assert len(rows) == result["explainer"]["explained"]
    for row in rows:
        total = row.base_value + sum(row.contributions.values())
        assert abs(total - row.prediction) <= 1e-6 and row.additive
        assert abs(row.residual - (row.prediction - total)) <= 1e-9
        assert row.model_hash == result["explainer"]["model_hash"] and len(row.model_hash) == 64

    # The stored surrogate is the one hashed, and reloading it reproduces every stored score.
    import hashlib

    import lightgbm
    import numpy as np

    stored = runtime.strategies.backtest(lab["tenant"].id, lab["backtest_id"]).explainer_model
    assert hashlib.sha256(stored.encode()).hexdigest() == result["explainer"]["model_hash"]
    booster = lightgbm.Booster(model_str=stored)
    names = result["explainer"]["features"]
    x = np.array([[np.nan if r.features[n] is None else r.features[n] for n in names] for r in rows])
    assert np.allclose(booster.predict(x, raw_score=True), [r.prediction for r in rows], atol=1e-9)
    assert "probabilistic_sharpe" in metrics and len(metrics["walk_forward"]) == 4
    assert set(result["explainer"]["fidelity_live_by_instrument"]) == set(DOC["universe"]["instruments"])


def test_backtest_bad_input(gql, runtime, lab):
    trader, v = lab["trader"], lab["version"]["id"]
    before = counts(runtime, lab["tenant"].id)
    weekend = {
        "v": v,
        "start": "2023-01-07T00:00:00Z",
        "end": "2023-01-09T00:00:00Z",
        "instruments": ["AAPL.XNAS"],
    }
    assert error_codes(gql(BACKTEST, weekend, key=trader)) == ["BACKTEST_NO_DATA"]
    backwards = {"v": v, "start": "2023-02-01T00:00:00Z", "end": "2023-01-01T00:00:00Z"}
    assert error_codes(gql(BACKTEST, backwards, key=trader)) == ["BACKTEST_PARAMS_INVALID"]
    bad_costs = {**backwards, "end": "2023-03-01T00:00:00Z", "costs": {"spreadBps": "-1"}}
    assert error_codes(gql(BACKTEST, bad_costs, key=trader)) == ["BACKTEST_PARAMS_INVALID"]
    minutes = gql.data(
        "mutation($s: ID!, $d: JSON!) { createStrategyVersion(strategyId: $s, document: $d) { id } }",
        {"s": lab["strategy"]["id"], "d": {**DOC, "interval": "1m"}},
        key=trader,
    )["createStrategyVersion"]["id"]
    before = counts(runtime, lab["tenant"].id)
    year = {"v": minutes, "start": "2022-01-01T00:00:00Z", "end": "2023-01-01T00:00:00Z"}  # 525,600 minutes
    assert error_codes(gql(BACKTEST, year, key=trader)) == ["BACKTEST_PARAMS_INVALID"]
    unknown = {**bad_costs, "costs": None, "instruments": ["NOPE.XNAS"]}
    assert error_codes(gql(BACKTEST, unknown, key=trader)) == ["INSTRUMENT_UNKNOWN"]
    assert counts(runtime, lab["tenant"].id) == before
    # A range with sessions but no bars fails the job itself, with nothing stored but the Job.
    strategy = runtime.strategies.parse(DOC)
    with pytest.raises(BacktestNoData):
        runtime.strategies.simulate(
            strategy,
            datetime(2023, 1, 2, tzinfo=UTC),
            datetime(2023, 1, 3, tzinfo=UTC),
            base_currency="USD",
            bars={"AAPL.XNAS": [], "SAP.XETR": []},
        )


def test_backtest_job_streams_progress(runtime, lab):
    seen: list[tuple[float, str]] = []
    row = runtime.strategies.run_backtest_job(
        lab["tenant"].id,
        "not-a-job",
        {
            "strategy_version_id": lab["version"]["id"],
            "start": "2023-03-01T00:00:00+00:00",
            "end": "2023-06-01T00:00:00+00:00",
            "instruments": ["AAPL.XNAS"],
            "costs": Costs().to_params(),
        },
        progress=lambda fraction, message: seen.append((fraction, message)),
    )
    fractions = [f for f, _ in seen]
    assert (
        fractions == sorted(fractions)
        and fractions[0] <= 0.3
        and fractions[-1] >= 0.95
        and len(fractions) > 10
    )
    assert any("explaining" in m for _, m in seen) and row.decision_count > 0


def test_strategy_report_html_and_pdf(gql, lab):
    query = (
        "query($id: ID!, $f: StrategyReportFormat!) { strategyReport(strategyId: $id, format: $f) "
        "{ filename contentType base64 } }"
    )
    html = gql.data(query, {"id": lab["strategy"]["id"], "f": "HTML"}, key=lab["officer"])["strategyReport"]
    assert html["contentType"].startswith("text/html") and html["filename"].endswith(".html")
    text = base64.b64decode(html["base64"]).decode()
    assert "Governance trail" in text and lab["officer_id"] in text and lab["trader_id"] in text
    assert lab["version"]["documentHash"] in text and "Sharpe ratio" in text and "additivity" in text
    pdf = gql.data(query, {"id": lab["strategy"]["id"], "f": "PDF"}, key=lab["officer"])["strategyReport"]
    body = base64.b64decode(pdf["base64"])
    assert body.startswith(b"%PDF") and pdf["contentType"] == "application/pdf" and len(body) > 1000


def test_strategy_fields_with_another_tenants_ids_find_and_change_nothing(gql, runtime, lab):
    b: TenantHandle = onboard(runtime)
    a_id = lab["tenant"].id
    ids = {"s": lab["strategy"]["id"], "v": lab["version"]["id"], "bt": lab["backtest_id"]}
    explanation = gql.data(
        "query($v: ID!) { decisionExplanations(strategyVersionId: $v, first: 1) { edges { node { id } } } }",
        {"v": ids["v"]},
        key=lab["trader"],
    )
    e_id = explanation["decisionExplanations"]["edges"][0]["node"]["id"]
    before_a, before_b = counts(runtime, a_id), counts(runtime, b.id)
    with runtime.db.tenant_session(a_id) as session:
        a_versions = [
            (v.id, v.approved_by, v.approved_at) for v in session.exec(select(StrategyVersion)).all()
        ]

    def code(query: str, variables: dict[str, Any]) -> list[str]:
        return error_codes(gql(query, variables, key=b.key))

    assert code("query($id: ID!) { strategy(id: $id) { id } }", {"id": ids["s"]}) == ["STRATEGY_NOT_FOUND"]
    assert code("query($id: ID!) { backtestResult(id: $id) { id } }", {"id": ids["bt"]}) == [
        "BACKTEST_NOT_FOUND"
    ]
    assert code("query($id: ID!) { explainDecision(id: $id) { id } }", {"id": e_id}) == [
        "EXPLANATION_NOT_FOUND"
    ]
    assert code(
        "query($v: ID!) { decisionExplanations(strategyVersionId: $v) { edges { node { id } } } }",
        {"v": ids["v"]},
    ) == ["STRATEGY_VERSION_NOT_FOUND"]
    assert code("query($id: ID!) { strategyReport(strategyId: $id) { base64 } }", {"id": ids["s"]}) == [
        "STRATEGY_NOT_FOUND"
    ]
    assert (
        gql.data("{ strategies(first: 100) { edges { node { id } } } }", key=b.key)["strategies"]["edges"]
        == []
    )
    assert gql.data("{ strategySchema }", key=b.key) == gql.data("{ strategySchema }", key=lab["trader"])
    assert code(APPROVE, {"id": ids["v"]}) == ["STRATEGY_VERSION_NOT_FOUND"]
    assert code(
        "mutation($s: ID!, $d: JSON!) { createStrategyVersion(strategyId: $s, document: $d) { id } }",
        {"s": ids["s"], "d": DOC},
    ) == ["STRATEGY_NOT_FOUND"]
    assert code(
        BACKTEST, {"v": ids["v"], "start": "2023-01-01T00:00:00Z", "end": "2023-02-01T00:00:00Z"}
    ) == ["STRATEGY_VERSION_NOT_FOUND"]
    assert counts(runtime, a_id) == before_a and counts(runtime, b.id) == before_b
    with runtime.db.tenant_session(a_id) as session:
        assert [
            (v.id, v.approved_by, v.approved_at) for v in session.exec(select(StrategyVersion)).all()
        ] == a_versions
    # B's own createStrategy with A's idempotency key makes B's own strategy, not A's
    mine = gql.data(CREATE, {"doc": DOC, "key": "lab-1"}, key=b.key)["createStrategy"]
    assert mine["id"] != ids["s"] and runtime.strategies.strategy(b.id, mine["id"]).tenant_id == b.id


def test_governance_is_in_the_audit_trail(runtime, lab):
    tenant_id, version = lab["tenant"].id, lab["version"]["id"]
    approved = runtime.audit.records(
        tenant_id, kind="strategy.version_approved", subject=version, first=5
    ).items
    assert [(r.actor, r.payload["version"]) for r in approved] == [(lab["officer_id"], 1)]
    created = runtime.audit.records(
        tenant_id, kind="strategy.version_created", subject=version, first=5
    ).items
    assert created[0].actor == lab["trader_id"] and created[0].payload["origin"] == "HUMAN"
    done = runtime.audit.records(
        tenant_id, kind="strategy.backtest_completed", subject=lab["backtest_id"], first=5
    ).items
    assert done and done[0].payload["job_id"] == lab["job"].id
    assert runtime.audit.verify(tenant_id).ok


def test_screens_resolve_against_the_instrument_registry(runtime, gql, lab):
    screen = {**DOC, "universe": {"screen": {"mic": "XNAS", "asset_class": "EQUITY", "limit": 2}}}
    strategy = runtime.strategies.parse(screen)
    assert runtime.strategies.universe(strategy) == ["AAPL.XNAS", "MSFT.XNAS"]
    found = gql.data(
        '{ strategies(first: 50, search: "trend with") { edges { node { id name } } } }', key=lab["trader"]
    )["strategies"]["edges"]
    assert lab["strategy"]["id"] in {e["node"]["id"] for e in found}
    assert all("trend with" in e["node"]["name"].lower() for e in found)
    none = gql.data(
        '{ strategies(first: 50, search: "no such name") { edges { node { id } } } }', key=lab["trader"]
    )
    assert none["strategies"]["edges"] == []


def test_backtest_progress_streams_over_a_websocket(gql, server, lab):
    import asyncio

    from tests.support import TransportWS

    variables = {"v": lab["version"]["id"], "start": "2021-01-01T00:00:00Z", "end": "2023-01-01T00:00:00Z"}
    job = gql.data(BACKTEST, variables, key=lab["trader"])["backtest"]

    async def follow() -> list[dict[str, Any]]:
        updates: list[dict[str, Any]] = []
        async with TransportWS(server.ws_url, lab["trader"]) as ws:
            await ws.subscribe(
                "j",
                "subscription($id: ID!) { jobUpdated(id: $id) { job { status progress message } } }",
                {"id": job["id"]},
            )
            while True:
                message = await ws.next(timeout=120)
                if message["type"] == "complete":
                    return updates
                updates.append(message["payload"]["data"]["jobUpdated"]["job"])

    updates = asyncio.run(follow())
    assert updates[-1]["status"] == "SUCCEEDED" and updates[-1]["progress"] == 1.0
    running = [u for u in updates if u["status"] == "RUNNING" and 0 < u["progress"] < 1]
    assert running, updates
    progress = [u["progress"] for u in running]
    assert progress == sorted(progress)


def test_a_range_with_sessions_but_no_bars_fails_the_job_and_stores_nothing(gql, runtime, lab):
    # The file source's sample holds RY.XTSE bars for early 2024 only: 2022 has Toronto
    # sessions (so the request is accepted) but no bars, and the job fails BACKTEST_NO_DATA.
    tenant_id, trader = lab["tenant"].id, lab["trader"]
    doc = {**DOC, "universe": {"instruments": ["RY.XTSE"]}}
    v = gql.data(
        "mutation($s: ID!, $d: JSON!) { createStrategyVersion(strategyId: $s, document: $d) { id } }",
        {"s": lab["strategy"]["id"], "d": doc},
        key=trader,
    )["createStrategyVersion"]["id"]
    before = counts(runtime, tenant_id)
    job = gql.data(
        BACKTEST, {"v": v, "start": "2022-03-01T00:00:00Z", "end": "2022-06-01T00:00:00Z"}, key=trader
    )["backtest"]
    done = wait_for(
        lambda: (j := runtime.jobs.get(tenant_id, job["id"])).status in ("SUCCEEDED", "FAILED") and j
    )
    assert (done.status, done.error_code) == ("FAILED", "BACKTEST_NO_DATA")
    strategies, versions, backtests, explanations, jobs = counts(runtime, tenant_id)
    assert (strategies, versions, backtests, explanations, jobs) == (*before[:4], before[4] + 1)


def test_backtest_jobs_feed_news_sentiment_from_the_news_analyser(runtime, lab):
    # The shipped news file covers 2025-2026; AAPL.XNAS has items there. The job reads the
    # analyser's series (offline lexicon scorer without a key), so the strategy sees non-zero scores.
    doc = {
        **DOC,
        "universe": {"instruments": ["AAPL.XNAS"]},
        "signals": [
            *DOC["signals"],
            {"name": "mood", "indicator": "news_sentiment", "max_age_hours": 24 * 30},
        ],
    }
    version = runtime.strategies.create_version(
        lab["tenant"].id, doc, Origin.human(), lab["trader_id"], strategy_id=lab["strategy"]["id"]
    )
    params = {
        "strategy_version_id": version.id,
        "start": "2025-01-01T00:00:00+00:00",
        "end": "2026-10-01T00:00:00+00:00",
        "instruments": None,
        "costs": Costs().to_params(),
    }
    row = runtime.strategies.run_backtest_job(lab["tenant"].id, "news-job", params)
    assert set(row.drift["features"]) >= {"mood"} and row.decision_count > 300
    with runtime.db.tenant_session(lab["tenant"].id) as session:
        explained = session.exec(
            select(DecisionExplanation).where(DecisionExplanation.backtest_id == row.id)
        ).all()
    moods = [e.features["mood"] for e in explained]
    assert any(m not in (0, 0.0, None) for m in moods), moods


def test_every_stored_explanation_is_additive(runtime, lab):
    """Runs last in this module: every DecisionExplanation any test stored, in every tenant."""
    with runtime.db.system_session() as session:
        rows = session.exec(select(DecisionExplanation)).all()
    assert rows
    for row in rows:
        assert abs(row.base_value + sum(row.contributions.values()) - row.prediction) <= 1e-6
        assert row.additive and abs(row.residual) <= 1e-6


def test_the_published_schema_is_served_and_validates_a_document(server, gql, tenant):
    import httpx
    import jsonschema

    response = httpx.get(f"{server.url}/schemas/strategy.json", timeout=10)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/schema+json")
    published = response.json()
    assert published == gql.data("{ strategySchema }", key=tenant.key)["strategySchema"]
    jsonschema.validate(DOC, published)  # the document the lab's tests create is valid by it
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"name": ""}, published)
