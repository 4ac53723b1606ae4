"""LLM providers: the built-in anthropic provider through the real SDK (recorded responses on
httpx2's MockTransport, so the SDK's request building, retries and parsing all run), the error
mapping, the offline provider, and the provider registry's choices."""

from __future__ import annotations

import time

import pytest

from gateway.strategies.dsl import STRATEGY_SCHEMA, parse_strategy
from gateway.strategies.llm import LLMFailed, LLMProviders
from plugins.builtin import llm_anthropic
from plugins.builtin.llm_anthropic import AnthropicProvider
from plugins.builtin.llm_offline import OfflineProvider
from plugins.host import PluginHost, default_context
from plugins.sdk import LLMRateLimited, LLMTimeout, LLMTurn, LLMUnavailable, ToolSpec
from tests.recordings.replay import Replay, load

TOOL = ToolSpec("propose_strategy", "Propose a strategy in the DSL.", STRATEGY_SCHEMA)
MODELS = ("claude-sonnet-4-6", "claude-haiku-4-5")


def provider(replay: Replay, retries: int = 0) -> AnthropicProvider:
    return AnthropicProvider(api_key="sk-ant-test", models=MODELS, timeout_s=5, max_retries=retries,
                             http_client=replay.client())


def ask(p: AnthropicProvider, messages: list[LLMTurn] | None = None, model: str = MODELS[0]):
    return p.complete_structured(model=model, system="You design strategies.",
                                 messages=messages or [LLMTurn("user", "A calm trend strategy.")],
                                 tool=TOOL, max_tokens=2048, facts={})


def test_good_answer_goes_through_the_sdk_with_a_forced_tool_call():
    replay = Replay(["synth_good"])
    answer = ask(provider(replay))
    assert answer.provider == "anthropic" and answer.is_llm
    assert answer.model == "claude-sonnet-4-6" and answer.stop_reason == "tool_use"
    assert answer.response_id == load("synth_good")["body"]["id"]
    assert answer.tool_use_id == "toolu_01Ab3CdEfGh4JkLmNo5PqRs"
    assert (answer.usage.input_tokens, answer.usage.output_tokens) == (2841, 412)
    parse_strategy(dict(answer.tool_input))  # the recorded input is a valid strategy

    [request] = replay.requests
    assert request["method"] == "POST" and request["url"] == "https://api.anthropic.com/v1/messages"
    headers = request["headers"]
    assert "sk-ant-test" in (headers.get("x-api-key", "") + headers.get("authorization", ""))
    assert headers["anthropic-version"] and headers["user-agent"].startswith("Anthropic/Python")
    body = request["body"]
    assert body["model"] == "claude-sonnet-4-6" and body["max_tokens"] == 2048
    assert body["system"] == "You design strategies."
    assert body["tool_choice"] == {"type": "tool", "name": "propose_strategy"}
    assert body["tools"] == [{"name": "propose_strategy", "description": TOOL.description,
                              "input_schema": STRATEGY_SCHEMA}]
    assert body["messages"] == [{"role": "user", "content": "A calm trend strategy."}]


def test_a_repair_turn_is_sent_as_tool_use_and_error_tool_result():
    replay = Replay(["synth_repaired"])
    ask(provider(replay), [
        LLMTurn("user", "A calm trend strategy."),
        LLMTurn("assistant", tool_input={"name": "x"}, tool_use_id="toolu_prev"),
        LLMTurn("user", "/signals: required", tool_use_id="toolu_prev", is_error=True)])
    messages = replay.bodies[0]["messages"]
    assert messages[1] == {"role": "assistant", "content": [
        {"type": "tool_use", "id": "toolu_prev", "name": "propose_strategy", "input": {"name": "x"}}]}
    assert messages[2] == {"role": "user", "content": [
        {"type": "tool_result", "tool_use_id": "toolu_prev", "is_error": True,
         "content": "/signals: required"}]}


@pytest.mark.parametrize("recording, text", [
    ("synth_refusal", "manipulate the closing auction"),
    ("synth_text_decline", "guarantees returns"),
])
def test_refusals_come_back_as_refusal_text(recording, text):
    answer = ask(provider(Replay([recording])))
    assert answer.tool_input is None and text in answer.refusal


def test_timeout_after_the_sdks_retries_is_llm_timeout():
    replay = Replay(["timeout", "timeout"])
    started = time.monotonic()
    with pytest.raises(LLMTimeout) as caught:
        ask(provider(replay, retries=1))
    assert caught.value.code == "LLM_TIMEOUT"
    assert len(replay.requests) == 2  # the first try and the SDK's one retry
    assert replay.requests[1]["headers"]["x-stainless-retry-count"] == "1"
    assert time.monotonic() - started < 10


def test_rate_limit_is_llm_rate_limited_with_retry_after():
    replay = Replay(["rate_limited"])
    with pytest.raises(LLMRateLimited) as caught:
        ask(provider(replay))
    assert caught.value.code == "LLM_RATE_LIMITED" and caught.value.retry_after_s == 7.0


def test_rate_limit_then_success_is_retried_by_the_sdk():
    replay = Replay(["rate_limited", "synth_good"])
    # the recorded retry-after is 7 s; a short one keeps the test fast
    original = replay.handler

    def faster(request):
        response = original(request)
        if response.status_code == 429:
            del response.headers["retry-after"]
            response.headers["retry-after-ms"] = "20"
        return response

    replay.handler = faster  # type: ignore[method-assign]
    answer = ask(provider(replay, retries=1))
    assert answer.tool_input is not None and len(replay.requests) == 2


def test_overloaded_is_llm_unavailable():
    with pytest.raises(LLMUnavailable):
        ask(provider(Replay(["overloaded"])))


def test_unconfigured_model_is_refused_before_any_request():
    replay = Replay([])
    with pytest.raises(LLMUnavailable):
        ask(provider(replay), model="claude-opus-4-7")
    assert replay.requests == []


def test_plugin_offers_nothing_without_a_key():
    assert llm_anthropic.alphintra_llm_providers(context=default_context("llm-anthropic")) == []
    [p] = llm_anthropic.alphintra_llm_providers(context=default_context(
        "llm-anthropic", config={"api_key": "k", "models": list(MODELS)}))
    assert p.models == MODELS


def test_registry_falls_back_to_offline_without_a_key_and_maps_errors():
    from plugins.builtin import BUILTINS

    host = PluginHost(BUILTINS)
    registry = LLMProviders(host, {"llm-anthropic": {"api_key": None, "models": list(MODELS)}})
    choice = registry.for_synthesis()
    assert (choice.provider, choice.model, choice.is_llm) == ("offline", "offline-v1", False)
    assert [(c.provider, c.model) for c in registry.for_news()] == [("offline", "offline-v1")]

    replay = Replay(["synth_refusal", "rate_limited"])
    registry.configure("llm-anthropic", api_key="sk-ant-test", max_retries=0, http_client=replay.client())
    choice = registry.for_synthesis()
    assert (choice.provider, choice.model, choice.is_llm) == ("anthropic", "claude-sonnet-4-6", True)
    assert [c.model for c in registry.for_news()] == list(MODELS)
    with pytest.raises(LLMFailed) as refused:
        registry.ask(choice, system="s", messages=[LLMTurn("user", "x")], tool=TOOL, max_tokens=10, facts={})
    assert refused.value.code == "LLM_REFUSED" and "closing auction" in refused.value.details["refusal"]
    with pytest.raises(LLMFailed) as limited:
        registry.ask(choice, system="s", messages=[LLMTurn("user", "x")], tool=TOOL, max_tokens=10, facts={})
    assert limited.value.code == "LLM_RATE_LIMITED" and limited.value.details["retryAfterSeconds"] == 7.0


def test_offline_provider_labels_itself_and_builds_valid_strategies():
    answer = OfflineProvider().complete_structured(
        model="offline-v1", system="", messages=[], tool=TOOL, max_tokens=100,
        facts={"task": "strategy.synthesize", "objective": "momentum with news sentiment",
               "constraints": {"max_position": 0.1}, "universe": ["AAPL.XNAS"],
               "regime": {"trend": "up", "volatility": "calm"}})
    assert (answer.provider, answer.is_llm) == ("offline", False)
    strategy = parse_strategy(dict(answer.tool_input))
    assert "news_sentiment" in {s.indicator for s in strategy.signals}
    assert strategy.risk.max_position == 0.1
    assert "not by a language model" in strategy.description
