"""Language-model providers from plugins (`alphintra_llm_providers`), and the one way the
gateway calls them.

`LLMProviders` collects the providers once, on first use, giving each plugin its config
(`configs[plugin]`; the runtime fills "llm-anthropic" from settings). Choice:
- synthesis uses the first provider that is a language model, with its default model; with
  none (no API key), the first provider that is not (the built-in offline one);
- news analysis uses every model of every language-model provider; with none, the offline one.

`ask` calls a provider and turns what went wrong into domain errors with stable codes:
LLM_TIMEOUT, LLM_RATE_LIMITED (details.retryAfterSeconds), LLM_UNAVAILABLE (also for a
provider that raised something else, which is logged), and LLM_REFUSED for an answer that
declines (its text in details.refusal).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from gateway.errors import DomainError, InvalidInput
from gateway.scope import current_tenant
from plugins.host import PluginFailed, PluginHost, default_context
from plugins.sdk import LLMError, LLMProvider, LLMTurn, StructuredAnswer, ToolSpec

log = logging.getLogger(__name__)
HOOK = "alphintra_llm_providers"
ANTHROPIC_PLUGIN = "llm-anthropic"


class LLMFailed(DomainError):
    code = "LLM_UNAVAILABLE"
    http_status = 503


@dataclass(frozen=True)
class ProviderEntry:
    plugin: str
    provider: LLMProvider

    @property
    def name(self) -> str:
        return str(self.provider.name)

    @property
    def is_llm(self) -> bool:
        return bool(self.provider.is_llm)


@dataclass(frozen=True)
class ModelChoice:
    entry: ProviderEntry
    model: str

    @property
    def provider(self) -> str:
        return self.entry.name

    @property
    def is_llm(self) -> bool:
        return self.entry.is_llm


class LLMProviders:
    def __init__(self, plugins: PluginHost, configs: Mapping[str, Mapping[str, Any]] | None = None) -> None:
        self.plugins = plugins
        self._configs = {k: dict(v) for k, v in (configs or {}).items()}
        self._lock = threading.Lock()
        self._loaded: tuple[tuple[ProviderEntry, ...], tuple[PluginFailed, ...]] | None = None
        self._installed: Callable[[str], Sequence[tuple[str, LLMProvider]]] | None = None
        self._disabled: Callable[[str], frozenset[str]] | None = None

    def bind_installed(self, installed: Callable[[str], Sequence[tuple[str, LLMProvider]]],
                       disabled: Callable[[str], frozenset[str]] | None = None) -> None:
        """A tenant's installed LLM providers (sandboxed plugins) come first for that tenant:
        it installed them to be used; the built-ins remain behind them, less those it switched off."""
        self._installed = installed
        self._disabled = disabled

    def configure(self, plugin: str, **config: Any) -> None:
        """Change one plugin's config (e.g. a test's http_client); providers are collected again."""
        with self._lock:
            self._configs[plugin] = {**self._configs.get(plugin, {}), **config}
            self._loaded = None

    def _load(self) -> tuple[tuple[ProviderEntry, ...], tuple[PluginFailed, ...]]:
        with self._lock:
            if self._loaded is None:
                contributions, failures = self.plugins.collect(
                    HOOK,
                    lambda name: default_context(name, config=self._configs.get(name, {})),
                    expect=LLMProvider,
                )
                entries: list[ProviderEntry] = []
                seen: set[str] = set()
                for c in contributions:
                    if c.value.name in seen:  # first collected wins; built-ins come first
                        log.warning("LLM provider %s offered twice; %s's ignored", c.value.name, c.plugin)
                        continue
                    seen.add(c.value.name)
                    entries.append(ProviderEntry(c.plugin, c.value))
                self._loaded = (tuple(entries), tuple(failures))
            return self._loaded

    def entries(self) -> tuple[ProviderEntry, ...]:
        builtins = self._load()[0]
        tenant = current_tenant()
        installed = self._installed(tenant) if tenant is not None and self._installed else ()
        if tenant is not None and self._disabled is not None:
            off = self._disabled(tenant)
            builtins = tuple(e for e in builtins if e.plugin not in off)
        if not installed:
            return builtins
        names = {e.provider.name for e in builtins}
        own = tuple(ProviderEntry(plugin, p) for plugin, p in installed if p.name not in names)
        return own + builtins

    def failures(self) -> tuple[PluginFailed, ...]:
        return self._load()[1]

    def choose(self, name: str) -> ProviderEntry:
        """The tenant's provider named `name` (a built-in's or one it installed)."""
        found = next((e for e in self.entries() if e.provider.name == name), None)
        if found is None or not found.provider.models:
            raise InvalidInput(f"no language-model provider {name!r} serves this tenant",
                               code="LLM_PROVIDER_UNKNOWN",
                               details={"providers": [e.provider.name for e in self.entries()]})
        return found

    def for_synthesis(self, name: str | None = None) -> ModelChoice:
        if name:
            chosen = self.choose(name)
            return ModelChoice(chosen, chosen.provider.models[0])
        entries = self.entries()
        llms = [e for e in entries if e.is_llm and e.provider.models]
        chosen = llms[0] if llms else next((e for e in entries if not e.is_llm and e.provider.models), None)
        if chosen is None:
            raise LLMFailed("no language-model provider and no offline provider is installed")
        return ModelChoice(chosen, chosen.provider.models[0])

    def for_news(self) -> list[ModelChoice]:
        entries = self.entries()
        llms = [ModelChoice(e, m) for e in entries if e.is_llm for m in e.provider.models]
        if llms:
            return llms
        offline = [
            ModelChoice(e, e.provider.models[0]) for e in entries if not e.is_llm and e.provider.models
        ]
        if not offline:
            raise LLMFailed("no language-model provider and no offline provider is installed")
        return offline[:1]

    @staticmethod
    def ask(
        choice: ModelChoice,
        *,
        system: str,
        messages: Sequence[LLMTurn],
        tool: ToolSpec,
        max_tokens: int,
        facts: Mapping[str, Any],
    ) -> StructuredAnswer:
        try:
            answer = choice.entry.provider.complete_structured(
                model=choice.model,
                system=system,
                messages=list(messages),
                tool=tool,
                max_tokens=max_tokens,
                facts=facts,
            )
        except LLMError as exc:
            details: dict[str, Any] = {"provider": choice.provider, "model": choice.model}
            if exc.retry_after_s is not None:
                details["retryAfterSeconds"] = exc.retry_after_s
            raise LLMFailed(exc.message, code=exc.code, details=details) from exc
        except Exception as exc:
            log.exception("LLM provider failed", extra={"plugin": choice.entry.plugin})
            raise LLMFailed(
                f"provider {choice.provider} failed",
                code="LLM_UNAVAILABLE",
                details={"provider": choice.provider, "model": choice.model},
            ) from exc
        if not isinstance(answer, StructuredAnswer):
            raise LLMFailed(
                f"provider {choice.provider} answered a {type(answer).__name__}",
                details={"provider": choice.provider, "model": choice.model},
            )
        if answer.refusal is not None or answer.tool_input is None:
            raise LLMFailed(
                f"{choice.model} declined: {(answer.refusal or 'no answer')[:300]}",
                code="LLM_REFUSED",
                details={
                    "provider": choice.provider,
                    "model": answer.model,
                    "refusal": (answer.refusal or "")[:2000],
                },
            )
        return answer
