"""Strategy synthesis and self-improvement, end to end through GraphQL and the job worker:
the offline path (no API key), and the anthropic path through the real SDK with recorded
responses on httpx2's MockTransport (repair, never-valid, refusal, timeout, rate limit)."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from sqlmodel import select

from gateway.strategies.models import Strategy
from gateway.strategies.news_models import NewsAnalysis
from gateway.strategies.synthesis_models import SynthesisRun
from tests.recordings.replay import Replay
from tests.support import error_codes, user_key, wait_for

AS_OF = "2026-06-01T00:00:00+00:00"
SYNTH = """mutation($input: SynthesizeStrategyInput!) {
    synthesizeStrategy(input: $input) { id status kind } }"""
IMPROVE = """mutation($input: ImproveStrategyInput!) { improveStrategy(input: $input) { id status kind } }"""
JOB = "query($id: ID!) { job(id: $id) { status result error { code message } progress } }"
STRATEGY = """query($id: ID!) { strategy(id: $id) { id name latestVersion versions {
    id version origin originModel originPromptHash originNote document } } }"""


def finished(gql, key: str, job_id: str, timeout: float = 120) -> dict:
    def done():
        job = gql.data(JOB, {"id": job_id}, key=key)["job"]
        if job["status"] not in ("SUCCEEDED", "FAILED", "CANCELED"):
            return None
        error = job.pop("error") or {}
        return {**job, "errorCode": error.get("code"), "errorMessage": error.get("message")}
    return wait_for(done, timeout=timeout, interval=0.2)


def strategy_count(runtime, tenant_id: str) -> int:
    with runtime.db.tenant_session(tenant_id) as session:
        return len(session.exec(select(Strategy)).all())


@pytest.fixture
def recorded(runtime) -> Iterator:
    """Point the anthropic provider at a Replay; back to no key (offline) afterwards."""
    providers = runtime.strategy_ai.providers
    replays: list[Replay] = []

    def use(names: list[str], retries: int = 0) -> Replay:
        replay = Replay(names)
        replays.append(replay)
        providers.configure("llm-anthropic", api_key="sk-ant-test", max_retries=retries,
                            http_client=replay.client())
        return replay

    yield use
    providers.configure("llm-anthropic", api_key=None, http_client=None)
    runtime.strategy_ai.synthesis.max_repairs = runtime.settings.llm_max_repairs


def synth_input(**extra) -> dict:
    return {"objective": "Follow the trend in large US technology stocks, calmly.",
            "universe": ["AAPL.XNAS", "MSFT.XNAS"], "asOf": AS_OF, "backtestDays": 365, **extra}


def test_offline_synthesis_end_to_end(gql, runtime, tenant):
    _, trader = user_key(runtime, tenant, "trader")
    job = gql.data(SYNTH, {"input": synth_input(constraints={"maxPosition": 0.15},
                                                idempotencyKey="synth-1")}, key=trader)["synthesizeStrategy"]
    assert job["kind"] == "strategy.synthesize"
    same = synth_input(constraints={"maxPosition": 0.15}, idempotencyKey="synth-1")
    again = gql.data(SYNTH, {"input": same}, key=trader)["synthesizeStrategy"]
    assert again["id"] == job["id"]  # idempotent
    done = finished(gql, trader, job["id"])
    assert done["status"] == "SUCCEEDED", done
    result = done["result"]
    assert result["provider"] == "offline" and result["is_llm"] is False and result["model"] == "offline-v1"
    assert result["repairs"] == 0 and result["metrics"]["periods"] > 100
    assert "sharpe" in result["metrics"] and "max_drawdown" in result["metrics"]
    assert result["document"]["risk"]["max_position"] == 0.15
    assert result["document"]["universe"] == {"instruments": ["AAPL.XNAS", "MSFT.XNAS"]}
    assert "regime" in result and "trended" in result["regime"]

    strategy = gql.data(STRATEGY, {"id": result["strategy_id"]}, key=trader)["strategy"]
    [version] = strategy["versions"]
    assert version["id"] == result["strategy_version_id"]
    assert version["origin"] == "OFFLINE" and version["originModel"] is None
    assert "not a language model" in version["originNote"]
    assert version["document"] == result["document"]
    with runtime.db.tenant_session(tenant.id) as session:
        run = session.exec(select(SynthesisRun).where(SynthesisRun.job_id == job["id"])).one()
    assert run.kind == "SYNTHESIZE" and run.is_llm is False and run.strategy_version_id == version["id"]


@pytest.mark.parametrize("objective", ["", "   ", "x" * 2001])
def test_bad_objective_is_refused_and_nothing_is_stored(gql, runtime, tenant, objective):
    before = strategy_count(runtime, tenant.id)
    body = gql(SYNTH, {"input": synth_input(objective=objective)}, key=tenant.key)
    assert error_codes(body) == ["OBJECTIVE_INVALID"]
    jobs = gql.data("{ jobs(first: 50) { edges { node { kind } } } }", key=tenant.key)["jobs"]["edges"]
    assert not [j for j in jobs if j["node"]["kind"] == "strategy.synthesize"]
    assert strategy_count(runtime, tenant.id) == before


@pytest.mark.parametrize("extra, code", [
    ({"universe": ["NOPE.XNAS"]}, "INSTRUMENT_UNKNOWN"),
    ({"universe": ["AAPL.XNAS", "AAPL.XNAS"]}, "UNIVERSE_INVALID"),
    ({"constraints": {"maxPosition": 1.5}}, "CONSTRAINTS_INVALID"),
    ({"backtestDays": 10}, "CONSTRAINTS_INVALID"),
])
def test_bad_synthesis_parameters(gql, tenant, extra, code):
    assert error_codes(gql(SYNTH, {"input": synth_input(**extra)}, key=tenant.key)) == [code]


def test_viewer_may_not_synthesize(gql, runtime, tenant):
    _, viewer = user_key(runtime, tenant, "viewer")
    assert error_codes(gql(SYNTH, {"input": synth_input()}, key=viewer)) == ["FORBIDDEN"]


def test_recorded_synthesis_repairs_a_malformed_answer(gql, runtime, tenant, recorded):
    replay = recorded(["synth_malformed", "synth_repaired"])
    job = gql.data(SYNTH, {"input": synth_input()}, key=tenant.key)["synthesizeStrategy"]
    done = finished(gql, tenant.key, job["id"])
    assert done["status"] == "SUCCEEDED", done
    result = done["result"]
    assert (result["provider"], result["is_llm"], result["model"]) == ("anthropic", True, "claude-sonnet-4-6")
    assert result["repairs"] == 1
    assert [a["valid"] for a in result["attempts"]] == [False, True]
    first_errors = {e["path"] for e in result["attempts"][0]["errors"]}
    assert {"/signals/0/indicator", "/sizing"} <= first_errors

    first, second = replay.bodies
    assert first["tool_choice"] == {"type": "tool", "name": "propose_strategy"}
    assert first["tools"][0]["input_schema"]["$id"] == "https://alphintra.dev/schemas/strategy.json"
    assert "AAPL.XNAS, MSFT.XNAS" in first["messages"][0]["content"]
    assert "Market regime (from the data)" in first["messages"][0]["content"]
    # the repair: the bad tool call, then its error result listing the validation errors
    assert second["messages"][1]["content"][0]["type"] == "tool_use"
    assert second["messages"][1]["content"][0]["id"] == "toolu_01Mal4FoRmEdInPuT7xYz9Q"
    feedback = second["messages"][2]["content"][0]
    assert feedback["type"] == "tool_result" and feedback["is_error"] is True
    assert "/signals/0/indicator" in feedback["content"] and "macd" in feedback["content"]

    strategy = gql.data(STRATEGY, {"id": result["strategy_id"]}, key=tenant.key)["strategy"]
    [version] = strategy["versions"]
    assert version["origin"] == "LLM" and version["originModel"] == "claude-sonnet-4-6"
    # the prompt hash is the SHA-256 of the first prompt (system + the user's message)
    assert re.fullmatch(r"[0-9a-f]{64}", version["originPromptHash"])
    assert version["originPromptHash"] == result["prompt_hash"]
    from gateway.strategies.synthesis import SYSTEM, prompt_hash
    from plugins.sdk import LLMTurn
    assert result["prompt_hash"] == prompt_hash(SYSTEM, [LLMTurn("user", first["messages"][0]["content"])])
    assert result["prompt_hash"] != hashlib.sha256(b"").hexdigest()


def test_an_answer_that_never_validates_fails_and_stores_nothing(gql, runtime, tenant, recorded):
    runtime.strategy_ai.synthesis.max_repairs = 1
    replay = recorded(["synth_malformed", "synth_still_malformed"])
    before = strategy_count(runtime, tenant.id)
    job = gql.data(SYNTH, {"input": synth_input()}, key=tenant.key)["synthesizeStrategy"]
    done = finished(gql, tenant.key, job["id"])
    assert done["status"] == "FAILED" and done["errorCode"] == "SYNTHESIS_INVALID"
    assert "2 attempts" in done["errorMessage"] and "/sizing" in done["errorMessage"]
    assert len(replay.requests) == 2  # bounded by llm_max_repairs
    assert strategy_count(runtime, tenant.id) == before
    with runtime.db.tenant_session(tenant.id) as session:
        assert session.exec(select(SynthesisRun).where(SynthesisRun.job_id == job["id"])).first() is None


@pytest.mark.parametrize("names, retries, code", [
    (["synth_refusal"], 0, "LLM_REFUSED"),
    (["synth_text_decline"], 0, "LLM_REFUSED"),
    (["timeout", "timeout"], 1, "LLM_TIMEOUT"),
    (["rate_limited"], 0, "LLM_RATE_LIMITED"),
])
def test_model_failures_fail_the_job_with_their_code(gql, runtime, tenant, recorded, names, retries, code):
    replay = recorded(names, retries)
    before = strategy_count(runtime, tenant.id)
    job = gql.data(SYNTH, {"input": synth_input()}, key=tenant.key)["synthesizeStrategy"]
    done = finished(gql, tenant.key, job["id"])
    assert done["status"] == "FAILED" and done["errorCode"] == code, done
    assert len(replay.requests) == len(names)
    assert strategy_count(runtime, tenant.id) == before


def _a_strategy(gql, key: str) -> str:
    job = gql.data(SYNTH, {"input": synth_input()}, key=key)["synthesizeStrategy"]
    done = finished(gql, key, job["id"])
    assert done["status"] == "SUCCEEDED", done
    return done["result"]["strategy_id"]


def test_offline_improvement_counts_every_trial(gql, runtime, tenant):
    strategy_id = _a_strategy(gql, tenant.key)
    job = gql.data(IMPROVE, {"input": {"strategyId": strategy_id, "trials": 3, "asOf": AS_OF,
                                       "backtestDays": 365}}, key=tenant.key)["improveStrategy"]
    assert job["kind"] == "strategy.improve"
    done = finished(gql, tenant.key, job["id"])
    assert done["status"] == "SUCCEEDED", done
    r = done["result"]
    assert r["provider"] == "offline" and r["is_llm"] is False
    assert len(r["trials"]) == 3 and r["trial_count"] == 4  # the baseline and three revisions
    assert 0.0 <= r["deflated_sharpe_ratio"] <= 1.0 or r["deflated_sharpe_ratio"] is None
    for trial in r["trials"]:
        assert trial["valid"] and "in_sample" in trial and "out_of_sample" in trial
    baseline = r["baseline"]["out_of_sample"]["sharpe"]
    kept = [t for t in r["trials"] if t["kept"]]
    strategy = gql.data(STRATEGY, {"id": strategy_id}, key=tenant.key)["strategy"]
    if kept:  # kept only when the out-of-sample Sharpe beat the incumbent's
        assert kept[0]["out_of_sample"]["sharpe"] > (baseline if baseline is not None else float("-inf"))
        assert r["version"] == 2 and strategy["latestVersion"] == 2
        assert strategy["versions"][1]["origin"] == "OFFLINE"
    else:
        assert r["strategy_version_id"] is None and strategy["latestVersion"] == 1


def test_recorded_improvement_judges_out_of_sample(gql, runtime, tenant, recorded):
    strategy_id = _a_strategy(gql, tenant.key)  # offline first version
    replay = recorded(["improve_revision", "improve_revision_2"])
    job = gql.data(IMPROVE, {"input": {"strategyId": strategy_id, "trials": 2, "asOf": AS_OF,
                                       "backtestDays": 365, "trainFraction": 0.6}},
                   key=tenant.key)["improveStrategy"]
    done = finished(gql, tenant.key, job["id"])
    assert done["status"] == "SUCCEEDED", done
    r = done["result"]
    assert r["is_llm"] is True and r["trial_count"] == 3 and len(replay.requests) == 2
    # the model is shown in-sample figures only, never the out-of-sample segment
    prompt = replay.bodies[0]["messages"][0]["content"]
    assert "in-sample backtest" in prompt and r["trials"][0]["out_of_sample"]["end"][:10] not in prompt
    oos = [t["out_of_sample"]["sharpe"] for t in r["trials"]]
    base = r["baseline"]["out_of_sample"]["sharpe"]
    best = max([base, *oos], key=lambda s: float("-inf") if s is None else s)
    assert r["kept"] == (best is not base and best != base)
    if r["kept"]:
        strategy = gql.data(STRATEGY, {"id": strategy_id}, key=tenant.key)["strategy"]
        assert strategy["versions"][-1]["origin"] == "LLM"
        assert strategy["versions"][-1]["originModel"] == "claude-sonnet-4-6"


def test_improving_another_tenants_strategy_is_not_found(gql, runtime, tenant, other_tenant):
    strategy_id = _a_strategy(gql, tenant.key)
    body = gql(IMPROVE, {"input": {"strategyId": strategy_id}}, key=other_tenant.key)
    assert error_codes(body) == ["STRATEGY_NOT_FOUND"]
    jobs = gql.data("{ jobs(first: 50) { edges { node { kind } } } }", key=other_tenant.key)["jobs"]["edges"]
    assert not [j for j in jobs if j["node"]["kind"] == "strategy.improve"]
    assert gql.data(STRATEGY, {"id": strategy_id}, key=tenant.key)["strategy"]["latestVersion"] == 1
    # and the synthesis job itself is invisible to the other tenant
    with runtime.db.tenant_session(tenant.id) as session:
        run = session.exec(select(SynthesisRun).where(SynthesisRun.strategy_id == strategy_id)).one()
    assert error_codes(gql(JOB, {"id": run.job_id}, key=other_tenant.key)) == ["JOB_NOT_FOUND"]
    assert error_codes(gql(STRATEGY, {"id": strategy_id}, key=other_tenant.key)) == ["STRATEGY_NOT_FOUND"]


def test_llm_providers_lists_offline_without_a_key(gql, tenant):
    providers = gql.data("{ llmProviders { name plugin models isLlm } }", key=tenant.key)["llmProviders"]
    assert {"name": "offline", "plugin": "llm-offline", "models": ["offline-v1"], "isLlm": False} in providers
    assert not [p for p in providers if p["name"] == "anthropic"]


def test_llm_providers_lists_claude_models_with_a_key(gql, tenant, recorded):
    recorded([])
    providers = gql.data("{ llmProviders { name models isLlm } }", key=tenant.key)["llmProviders"]
    claude = {"name": "anthropic", "models": ["claude-sonnet-4-6", "claude-haiku-4-5"], "isLlm": True}
    assert claude in providers


def test_as_of_must_be_aware():
    from gateway.errors import InvalidInput
    from gateway.strategies.synthesis import SynthesisService

    service = SynthesisService.__new__(SynthesisService)
    service.now = lambda: datetime(2026, 1, 1, tzinfo=UTC)
    with pytest.raises(InvalidInput) as caught:
        service._as_of("2026-01-01T00:00:00")
    assert caught.value.code == "INSTANT_NOT_AWARE"


def test_the_readme_example_runs_offline(gql, tenant):
    key = tenant.key
    job = gql.data('mutation { synthesizeStrategy(input: {objective: "Follow the trend in US tech, calmly", '
                   'universe: ["AAPL.XNAS", "MSFT.XNAS"], constraints: {maxPosition: 0.2}}) { id status } }',
                   key=key)["synthesizeStrategy"]
    done = finished(gql, key, job["id"])
    assert done["status"] == "SUCCEEDED" and done["result"]["provider"] == "offline", done
    latest = gql.data("{ jobs(first: 1) { edges { node { status progress result } } } }", key=key)
    assert latest["jobs"]["edges"][0]["node"]["result"]["strategy_version_id"]
    news = gql.data('mutation { analyzeNews(input: {query: {tickers: ["AAPL.XNAS"], '
                    'from: "2026-01-01T00:00:00Z"}}) { provider isLlm items { item { headline } '
                    "consensus { sentiment confidence } } signals { instrument points { at value } } } }",
                    key=key)["analyzeNews"]
    assert news["provider"] == "offline" and news["isLlm"] is False and news["items"]
    listed = gql.data("{ llmProviders { name models isLlm } newsItems(first: 3) { edges { node { publishedAt "
                      "headline tickers } } } }", key=key)
    assert len(listed["newsItems"]["edges"]) == 3


def test_a_news_objective_backtests_with_the_news_signal(gql, runtime, tenant):
    job = gql.data(SYNTH, {"input": synth_input(objective="Trend following filtered by news sentiment",
                                                asOf="2026-10-31T00:00:00+00:00")},
                   key=tenant.key)["synthesizeStrategy"]
    done = finished(gql, tenant.key, job["id"])
    assert done["status"] == "SUCCEEDED", done
    signals = done["result"]["document"]["signals"]
    assert any(s["indicator"] == "news_sentiment" for s in signals)
    with runtime.db.tenant_session(tenant.id) as session:
        analysed = session.exec(select(NewsAnalysis)).all()
    assert analysed and {r.provider for r in analysed} == {"offline"}  # the backtest's news series


def _bars(symbol: str, returns: list[float]) -> list:
    from datetime import timedelta
    from decimal import Decimal

    from plugins.sdk import Bar

    price, out = 100.0, []
    start = datetime(2025, 1, 1, tzinfo=UTC)
    for n, r in enumerate([0.0, *returns]):
        price *= 1 + r
        p = Decimal(str(round(price, 6)))
        out.append(Bar(symbol, "XNAS", start + timedelta(days=n), "1d", p, p, p, p, Decimal(1)))
    return out


def test_regime_labels_from_hand_made_bars():
    import numpy as np

    from gateway.strategies.regime import RegimeNoData, describe_bars

    rng = np.random.default_rng(1)
    noise = rng.normal(0, 0.01, 250)
    up = describe_bars({"A.XNAS": _bars("A", list(0.004 + noise)),
                        "B.XNAS": _bars("B", list(0.004 + noise * 0.9))}, 365)
    assert up["trend"] == "up" and up["correlation"] == "high" and up["mean_correlation"] > 0.99
    down = describe_bars({"A.XNAS": _bars("A", list(-0.004 + noise))}, 365)
    assert down["trend"] == "down" and down["correlation"] is None
    calm_then_wild = list(noise[:230]) + list(rng.normal(0, 0.05, 20))
    wild = describe_bars({"A.XNAS": _bars("A", calm_then_wild)}, 365)
    assert wild["volatility"] == "volatile" and up["volatility"] != "volatile"
    independent = describe_bars({"A.XNAS": _bars("A", list(rng.normal(0, 0.01, 250))),
                                 "B.XNAS": _bars("B", list(rng.normal(0, 0.01, 250)))}, 365)
    assert independent["correlation"] == "low"
    assert "trended" in up["summary"] and "volatility" in up["summary"]
    with pytest.raises(RegimeNoData):
        describe_bars({"A.XNAS": _bars("A", [0.01] * 5)}, 365)


TIGHT = {"maxPosition": 0.05, "stopLoss": 0.02, "maxDrawdown": 0.1}


def _respects(document: dict, max_position: float, stop_loss: float,
              max_drawdown: float | None = None) -> None:
    risk, sizing = document["risk"], document["sizing"]
    assert risk["max_position"] <= max_position
    assert risk["stop_loss"] <= stop_loss
    if max_drawdown is not None:
        assert risk["max_drawdown"] <= max_drawdown
    assert all(sizing[k] <= max_position for k in ("fraction", "max_fraction") if k in sizing)


def test_recorded_answer_breaking_the_constraints_is_repaired(gql, runtime, tenant, recorded):
    # synth_good sizes 0.2 with max_position 0.25, a 7% stop and a 20% drawdown limit: all looser
    replay = recorded(["synth_good", "synth_constrained"])
    job = gql.data(SYNTH, {"input": synth_input(constraints=TIGHT)}, key=tenant.key)["synthesizeStrategy"]
    done = finished(gql, tenant.key, job["id"])
    assert done["status"] == "SUCCEEDED", done
    result = done["result"]
    assert result["repairs"] == 1 and [a["valid"] for a in result["attempts"]] == [False, True]
    assert {e["path"] for e in result["attempts"][0]["errors"]} == {
        "/risk/max_position", "/sizing/fraction", "/risk/stop_loss", "/risk/max_drawdown"}
    first, second = replay.bodies
    assert '"max_position": 0.05' in first["messages"][0]["content"]
    feedback = second["messages"][2]["content"][0]
    assert feedback["type"] == "tool_result" and feedback["is_error"] is True
    expected = "/risk/max_position: 0.25 is looser than the constraint max_position <= 0.05"
    assert expected in feedback["content"]
    assert "/risk/stop_loss" in feedback["content"]

    [version] = gql.data(STRATEGY, {"id": result["strategy_id"]}, key=tenant.key)["strategy"]["versions"]
    assert version["document"] == result["document"]
    _respects(version["document"], 0.05, 0.02, 0.1)
    with runtime.db.tenant_session(tenant.id) as session:
        run = session.exec(select(SynthesisRun).where(SynthesisRun.job_id == job["id"])).one()
    assert run.constraints == {"max_position": 0.05, "stop_loss": 0.02, "max_drawdown": 0.1}


def test_an_answer_that_never_respects_the_constraints_fails_and_stores_nothing(
        gql, runtime, tenant, recorded):
    runtime.strategy_ai.synthesis.max_repairs = 1
    replay = recorded(["synth_good", "synth_repaired"])  # both valid DSL, both too loose
    before = strategy_count(runtime, tenant.id)
    job = gql.data(SYNTH, {"input": synth_input(constraints={"maxPosition": 0.05, "stopLoss": 0.02})},
                   key=tenant.key)["synthesizeStrategy"]
    done = finished(gql, tenant.key, job["id"])
    assert done["status"] == "FAILED" and done["errorCode"] == "SYNTHESIS_INVALID", done
    assert "2 attempts" in done["errorMessage"]
    assert "/risk/max_position" in done["errorMessage"] and "/risk/stop_loss" in done["errorMessage"]
    assert len(replay.requests) == 2  # the breach used the same repair budget
    assert strategy_count(runtime, tenant.id) == before
    with runtime.db.tenant_session(tenant.id) as session:
        assert session.exec(select(SynthesisRun).where(SynthesisRun.job_id == job["id"])).first() is None


@pytest.mark.parametrize("objective", ["Follow the trend in US tech, calmly.",
                                       "Control volatility in US tech with momentum."])
def test_offline_templates_are_clamped_to_the_constraints(gql, tenant, objective):
    job = gql.data(SYNTH, {"input": synth_input(objective=objective, constraints=TIGHT)},
                   key=tenant.key)["synthesizeStrategy"]
    done = finished(gql, tenant.key, job["id"])
    assert done["status"] == "SUCCEEDED", done
    result = done["result"]
    assert result["provider"] == "offline" and result["repairs"] == 0  # complied at once
    _respects(result["document"], 0.05, 0.02, 0.1)
    assert result["document"]["risk"] == {"max_position": 0.05, "stop_loss": 0.02, "max_drawdown": 0.1}


def test_offline_template_keeps_its_tighter_values_under_loose_constraints(gql, tenant):
    loose = {"maxPosition": 0.9, "stopLoss": 0.5}
    job = gql.data(SYNTH, {"input": synth_input(constraints=loose)}, key=tenant.key)["synthesizeStrategy"]
    done = finished(gql, tenant.key, job["id"])
    assert done["status"] == "SUCCEEDED", done
    doc = done["result"]["document"]
    assert doc["risk"]["max_position"] == 0.25 and doc["risk"]["stop_loss"] == 0.08  # clamped, not raised


def test_constraint_violations_by_hand():
    from gateway.strategies.constraints import constraint_violations
    from gateway.strategies.dsl import parse_strategy

    doc = {"name": "v", "universe": {"instruments": ["AAPL.XNAS"]},
           "signals": [{"name": "m", "indicator": "momentum", "window": 5}],
           "entry": {"op": "gt", "left": "m", "right": 0},
           "sizing": {"method": "volatility_target", "target_volatility": 0.1, "window": 20,
                      "max_fraction": 0.3},
           "risk": {"max_position": 0.1}}
    strategy = parse_strategy(doc)
    assert constraint_violations(strategy, {}) == []
    assert constraint_violations(strategy, {"max_position": 0.1, "stop_loss": 0.05, "max_drawdown": 0.2}) == [
        {"path": "/sizing/max_fraction", "message": "0.3 sizes above the constraint max_position <= 0.1"},
        {"path": "/risk/stop_loss", "message": "required by the constraint stop_loss <= 0.05"},
        {"path": "/risk/max_drawdown", "message": "required by the constraint max_drawdown <= 0.2"},
    ]
    tight = parse_strategy({**doc, "sizing": {"method": "fixed_fraction", "fraction": 0.1},
                            "risk": {"max_position": 0.1, "stop_loss": 0.05, "max_drawdown": 0.2}})
    assert constraint_violations(tight, {"max_position": 0.1, "stop_loss": 0.05, "max_drawdown": 0.2}) == []
    assert [e["path"] for e in constraint_violations(tight, {"stop_loss": 0.04, "max_drawdown": 0.25})] == [
        "/risk/stop_loss"]


def _constrained_strategy(gql, key: str, constraints: dict) -> str:
    job = gql.data(SYNTH, {"input": synth_input(constraints=constraints)}, key=key)["synthesizeStrategy"]
    done = finished(gql, key, job["id"])
    assert done["status"] == "SUCCEEDED", done
    return done["result"]["strategy_id"]


def test_recorded_revisions_breaking_the_original_constraints_are_rejected_trials(
        gql, runtime, tenant, recorded):
    strategy_id = _constrained_strategy(gql, tenant.key, {"maxPosition": 0.1, "stopLoss": 0.03})  # offline
    runtime.strategy_ai.synthesis.max_repairs = 0
    replay = recorded(["improve_revision", "improve_revision_2"])  # max_position 0.25, stops 5% / 7%
    job = gql.data(IMPROVE, {"input": {"strategyId": strategy_id, "trials": 2, "asOf": AS_OF,
                                       "backtestDays": 365}}, key=tenant.key)["improveStrategy"]
    done = finished(gql, tenant.key, job["id"])
    assert done["status"] == "SUCCEEDED", done
    r = done["result"]
    assert len(replay.requests) == 2 and r["trial_count"] == 3  # rejected, yet counted
    assert r["constraints"] == {"max_position": 0.1, "stop_loss": 0.03}
    assert '"stop_loss": 0.03' in replay.bodies[0]["messages"][0]["content"]
    for trial in r["trials"]:
        assert trial["valid"] is False and trial["kept"] is False
        assert "/risk/max_position" in trial["error"] and "/risk/stop_loss" in trial["error"]
    assert r["kept"] is False and r["strategy_version_id"] is None
    assert gql.data(STRATEGY, {"id": strategy_id}, key=tenant.key)["strategy"]["latestVersion"] == 1


def test_offline_revisions_stay_within_the_original_constraints(gql, tenant):
    strategy_id = _constrained_strategy(gql, tenant.key, {"maxPosition": 0.1, "stopLoss": 0.06})
    # trial 4's revision loosens the stop to 12%: clamped back to the 6% constraint
    job = gql.data(IMPROVE, {"input": {"strategyId": strategy_id, "trials": 4, "asOf": AS_OF,
                                       "backtestDays": 365}}, key=tenant.key)["improveStrategy"]
    done = finished(gql, tenant.key, job["id"])
    assert done["status"] == "SUCCEEDED", done
    trials = done["result"]["trials"]
    assert len(trials) == 4 and all(t["valid"] for t in trials)
    stops = [t["document"]["risk"]["stop_loss"] for t in trials]
    assert stops[2] == 0.05 and stops[3] == 0.06
    for t in trials:
        _respects(t["document"], 0.1, 0.06)
