"""Claude through the official SDK (`anthropic.Anthropic`, which sends over httpx2).

Structured output is a forced tool call: the request carries one tool whose `input_schema` is
the gateway's schema and `tool_choice {"type": "tool", "name": ...}`, so a compliant answer is
exactly one `tool_use` block. A refusal is `stop_reason "refusal"` or an answer without the
tool call (text declining); either comes back as `StructuredAnswer.refusal`.

SDK errors map to the SDK-level codes of `plugins.sdk`: a timeout (after the SDK's own
retries) is LLMTimeout, HTTP 429 is LLMRateLimited (with the server's retry-after), anything
else the API or the connection raises is LLMUnavailable.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from plugins.sdk import (
    LLMRateLimited,
    LLMTimeout,
    LLMTurn,
    LLMUnavailable,
    LLMUsage,
    StructuredAnswer,
    ToolSpec,
)

if TYPE_CHECKING:
    import httpx2

NAME = "anthropic"


class AnthropicProvider:
    """One client for all configured models; the SDK's client is thread-safe."""

    is_llm = True

    def __init__(self, *, api_key: str, models: Sequence[str], timeout_s: float = 60.0,
                 max_retries: int = 2, http_client: httpx2.Client | None = None,
                 name: str = NAME) -> None:
        if not models:
            raise ValueError("the anthropic provider needs at least one model")
        import anthropic  # about 2 s to import: only when a key is configured

        self.name = name
        self.models = tuple(models)
        # http_client None: the SDK's own default client (production); tests inject a client
        # on httpx2.MockTransport so the SDK's whole request path still runs.
        self._client = anthropic.Anthropic(api_key=api_key, timeout=timeout_s,
                                           max_retries=max_retries, http_client=http_client)

    def complete_structured(self, *, model: str, system: str, messages: Sequence[LLMTurn],
                            tool: ToolSpec, max_tokens: int, facts: Mapping[str, Any]
                            ) -> StructuredAnswer:
        import anthropic

        del facts  # the prompt states them; a language model reads the prompt
        if model not in self.models:
            raise LLMUnavailable(f"model {model} is not configured for {self.name}")
        try:
            message = self._client.messages.create(
                model=model, max_tokens=max_tokens, system=system,
                messages=[_message_param(turn, tool.name) for turn in messages],
                tools=[{"name": tool.name, "description": tool.description,
                        "input_schema": dict(tool.input_schema)}],
                tool_choice={"type": "tool", "name": tool.name},
            )
        except anthropic.APITimeoutError as exc:
            raise LLMTimeout(f"{model} did not answer in time") from exc
        except anthropic.RateLimitError as exc:
            raise LLMRateLimited(f"{model} is rate limited",
                                 retry_after_s=_retry_after(exc.response)) from exc
        except anthropic.APIStatusError as exc:
            raise LLMUnavailable(f"{model} answered HTTP {exc.status_code}") from exc
        except anthropic.APIError as exc:
            raise LLMUnavailable(f"{model} could not be reached: {type(exc).__name__}") from exc
        usage = LLMUsage(input_tokens=message.usage.input_tokens,
                         output_tokens=message.usage.output_tokens)
        calls = [b for b in message.content if b.type == "tool_use" and b.name == tool.name]
        texts = " ".join(b.text for b in message.content if b.type == "text").strip()
        if message.stop_reason == "refusal" or not calls:
            return StructuredAnswer(
                provider=self.name, model=message.model, is_llm=True, tool_input=None,
                refusal=texts or f"the model declined (stop_reason {message.stop_reason})",
                stop_reason=message.stop_reason, usage=usage, response_id=message.id)
        call = calls[0]
        tool_input = call.input if isinstance(call.input, dict) else None
        return StructuredAnswer(provider=self.name, model=message.model, is_llm=True,
                                tool_input=tool_input, refusal=None,
                                stop_reason=message.stop_reason, usage=usage,
                                response_id=message.id, tool_use_id=call.id)


def _message_param(turn: LLMTurn, tool_name: str) -> dict[str, Any]:
    if turn.role == "assistant" and turn.tool_input is not None:
        return {"role": "assistant", "content": [
            {"type": "tool_use", "id": turn.tool_use_id or "toolu_unknown", "name": tool_name,
             "input": dict(turn.tool_input)}]}
    if turn.role == "user" and turn.tool_use_id is not None:
        return {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": turn.tool_use_id, "is_error": turn.is_error,
             "content": turn.text}]}
    return {"role": turn.role, "content": turn.text}


def _retry_after(response: httpx2.Response | None) -> float | None:
    if response is None:
        return None
    for header, scale in (("retry-after-ms", 1000.0), ("retry-after", 1.0)):
        value = response.headers.get(header)
        if value is not None:
            try:
                return float(value) / scale
            except ValueError:
                continue
    return None
