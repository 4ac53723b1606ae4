"""The built-in Claude provider (`llm-anthropic`).

Config (`context.config`; the gateway fills it from settings): `api_key` (none: the plugin
offers no provider, and the gateway falls back to the offline one), `models` (a list; the
first is the default), `timeout_s`, `max_retries`, `http_client` (optional httpx2.Client).
"""

from __future__ import annotations

from plugins.builtin.llm_anthropic.provider import AnthropicProvider
from plugins.sdk import LLMProvider, PluginContext, hookimpl

__all__ = ["AnthropicProvider", "alphintra_llm_providers"]


@hookimpl
def alphintra_llm_providers(context: PluginContext) -> list[LLMProvider]:
    config = context.config
    api_key = config.get("api_key")
    if not api_key:
        return []
    models = [m for m in config.get("models", ()) if m]
    return [AnthropicProvider(api_key=str(api_key), models=models,
                              timeout_s=float(config.get("timeout_s", 60.0)),
                              max_retries=int(config.get("max_retries", 2)),
                              http_client=config.get("http_client"))]
