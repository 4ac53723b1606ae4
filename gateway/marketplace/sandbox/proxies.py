"""Gateway-side objects that implement the SDK's provider protocols by calling a sandboxed
worker: what the gateway holds of an installed plugin's providers. Static attributes (a
source's name, an optimiser's kind and limits, an LLM's models) are read once at activation;
each method is one call with the plugin's deadline. Answers are checked for the SDK shape the
protocol promises before any service sees them (PLUGIN_FAILED naming the plugin otherwise).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any

from gateway.marketplace.errors import PluginCallFailed
from gateway.marketplace.sandbox.supervisor import ManagedPlugin
from plugins import sdk, wire


class RemoteProvider:
    hook: str = ""

    def __init__(self, managed: ManagedPlugin, n: int, attrs: dict[str, Any]) -> None:
        self._managed = managed
        self._n = n
        self.plugin_id = managed.plugin_id
        for name, value in attrs.items():
            setattr(self, name, value)

    def _call(self, method: str, *args: Any, timeout_s: float | None = None, **kwargs: Any) -> Any:
        answer = self._managed.call("call", {"hook": self.hook, "n": self._n, "method": method,
                                             "args": list(args), "kwargs": kwargs}, timeout_s=timeout_s)
        # Every answered call of a tenant's provider is billable use, with its answer's bytes.
        self._managed.used(len(wire.packb(answer)))
        return answer

    def _expect(self, value: Any, kind: type | tuple[type, ...], what: str, optional: bool = False) -> Any:
        if (value is None and optional) or isinstance(value, kind):
            return value
        raise PluginCallFailed(self.plugin_id, f"{what} answered a {type(value).__name__}")

    def _expect_list(self, value: Any, kind: type, what: str) -> list[Any]:
        if not isinstance(value, list) or not all(isinstance(v, kind) for v in value):
            raise PluginCallFailed(self.plugin_id, f"{what} must answer a list of {kind.__name__}")
        return value

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.plugin_id}#{self._n} {getattr(self, 'name', '')}>"


class RemoteDataSource(RemoteProvider):
    hook = "alphintra_market_data_sources"
    name: str = ""

    def instruments(self) -> Sequence[sdk.Instrument]:
        return self._expect_list(self._call("instruments"), sdk.Instrument, "instruments()")

    def bars(self, instrument: sdk.Instrument, start: datetime, end: datetime,
             interval: str) -> list[sdk.Bar]:
        return self._expect_list(self._call("bars", instrument, start, end, interval), sdk.Bar, "bars()")

    def quote(self, instrument: sdk.Instrument, at: datetime) -> sdk.Quote | None:
        return self._expect(self._call("quote", instrument, at), sdk.Quote, "quote()", optional=True)


class RemoteFxProvider(RemoteProvider):
    hook = "alphintra_fx_rate_providers"
    name: str = ""

    def rate(self, base: str, quote: str, at: datetime) -> sdk.FxRate | None:
        return self._expect(self._call("rate", base, quote, at), sdk.FxRate, "rate()", optional=True)

    def history(self, base: str, quote: str, start: datetime, end: datetime) -> Sequence[sdk.FxRate]:
        return self._expect_list(self._call("history", base, quote, start, end), sdk.FxRate, "history()")

    def interest_rate(self, currency: str, at: datetime) -> Decimal | None:
        return self._expect(self._call("interest_rate", currency, at), Decimal, "interest_rate()",
                            optional=True)


class RemoteOptimiser(RemoteProvider):
    hook = "alphintra_portfolio_optimisers"
    name: str = ""
    kind: str = "classical"
    max_assets: int = 0
    max_qubits: int | None = None

    def solve(self, problem: sdk.OptimisationProblem, deadline_s: float) -> sdk.OptimisationAnswer:
        # The worker gets the deadline plus a margin to answer OptimiserTimedOut itself.
        answer = self._call("solve", problem, deadline_s, timeout_s=deadline_s + 2.0)
        return self._expect(answer, sdk.OptimisationAnswer, "solve()")


class RemoteConnector(RemoteProvider):
    hook = "alphintra_exchange_connectors"
    name: str = ""

    def mics(self) -> list[str]:
        """Asked once: the router asks it for every order, and a connector's venues are fixed."""
        cached = self.__dict__.get("_mics")
        if cached is not None:
            return list(cached)
        value = self._call("mics")
        if not isinstance(value, list) or not all(isinstance(m, str) for m in value):
            raise PluginCallFailed(self.plugin_id, "mics() must answer a list of MICs")
        self.__dict__["_mics"] = tuple(value)
        return value

    def submit(self, order: sdk.OrderRequest) -> list[sdk.ExecutionReport]:
        return self._expect_list(self._call("submit", order), sdk.ExecutionReport, "submit()")

    def cancel(self, client_order_id: str, mic: str) -> sdk.ExecutionReport:
        return self._expect(self._call("cancel", client_order_id, mic), sdk.ExecutionReport, "cancel()")

    def replace(self, client_order_id: str, mic: str, quantity: Decimal,
                limit_price: Decimal | None) -> list[sdk.ExecutionReport]:
        return self._expect_list(self._call("replace", client_order_id, mic, quantity, limit_price),
                                 sdk.ExecutionReport, "replace()")

    def quote_for(self, order: sdk.OrderRequest) -> sdk.VenueQuote | None:
        return self._expect(self._call("quote_for", order), sdk.VenueQuote, "quote_for()", optional=True)

    def on_clock(self, at: datetime) -> list[sdk.ExecutionReport]:
        return self._expect_list(self._call("on_clock", at), sdk.ExecutionReport, "on_clock()")

    def venues(self) -> list[sdk.VenueDefinition]:
        """The venues it brings (an optional method: none when the plugin has no `venues`)."""
        try:
            return self._expect_list(self._call("venues"), sdk.VenueDefinition, "venues()")
        except PluginCallFailed as exc:
            if "AttributeError" in exc.reason:
                return []
            raise


class RemoteRulePack(RemoteProvider):
    """Fails closed: a pack that cannot answer denies (the compliance engine turns the raise
    into COMPLIANCE_PACK_FAILED naming the plugin). `applies` is pure, so cached per pair."""

    hook = "alphintra_compliance_rule_packs"
    jurisdiction: str = ""
    regulators: tuple[str, ...] = ()

    def __init__(self, managed: ManagedPlugin, n: int, attrs: dict[str, Any]) -> None:
        super().__init__(managed, n, attrs)
        self.regulators = tuple(self.regulators or ())
        self._applies: dict[tuple[str, str], bool] = {}

    def applies(self, venue_country: str, client_domicile: str) -> bool:
        key = (venue_country, client_domicile)
        found = self._applies.get(key)
        if found is None:
            answer = self._call("applies", venue_country, client_domicile)
            found = bool(self._expect(answer, bool, "applies()"))
            self._applies[key] = found
        return found

    def check(self, ctx: sdk.CheckContext) -> list[sdk.Denial]:
        return self._expect_list(self._call("check", ctx), sdk.Denial, "check()")


def check_packs(packs: Sequence[RemoteRulePack], ctx: sdk.CheckContext
                ) -> list[list[sdk.Denial] | Exception]:
    """One order against installed rule packs: one call per plugin whatever its number of packs.
    Each entry is the pack's denials, or the exception that stands for its failure (the
    compliance engine denies the order for it: failing closed)."""
    out: list[list[sdk.Denial] | Exception] = [PluginCallFailed("?", "not asked")] * len(packs)
    groups: dict[int, list[int]] = {}
    for index, pack in enumerate(packs):
        groups.setdefault(id(pack._managed), []).append(index)
    for indexes in groups.values():
        first = packs[indexes[0]]
        try:
            answers = first._managed.call("checks", {"ns": [packs[i]._n for i in indexes], "ctx": ctx})
            if not isinstance(answers, list) or len(answers) != len(indexes):
                raise PluginCallFailed(first.plugin_id, "checks answered the wrong shape")
            first._managed.used()
        except Exception as exc:
            for i in indexes:
                out[i] = exc
            continue
        for i, answer in zip(indexes, answers, strict=True):
            denials = answer.get("r") if isinstance(answer, dict) else None
            if isinstance(denials, list) and all(isinstance(d, sdk.Denial) for d in denials):
                out[i] = denials
            else:
                error = (answer.get("e") or {}) if isinstance(answer, dict) else {}
                kind = error.get("type", "a wrong shape")
                out[i] = PluginCallFailed(packs[i].plugin_id, f"check() raised {kind}")
    return out


class RemoteLLMProvider(RemoteProvider):
    hook = "alphintra_llm_providers"
    name: str = ""
    models: tuple[str, ...] = ()
    is_llm: bool = True

    def complete_structured(self, *, model: str, system: str, messages: Sequence[sdk.LLMTurn],
                            tool: sdk.ToolSpec, max_tokens: int, facts: Any = None) -> sdk.StructuredAnswer:
        answer = self._call("complete_structured", model=model, system=system, messages=list(messages),
                            tool=tool, max_tokens=max_tokens, facts=facts, timeout_s=120.0)
        return self._expect(answer, sdk.StructuredAnswer, "complete_structured()")


class RemoteNewsSource(RemoteProvider):
    hook = "alphintra_news_sources"
    name: str = ""

    def items(self, *, tickers: Sequence[str] | None, start: datetime | None, end: datetime | None,
              text: str | None) -> list[sdk.NewsItem]:
        answer = self._call("items", tickers=list(tickers) if tickers is not None else None,
                            start=start, end=end, text=text)
        return self._expect_list(answer, sdk.NewsItem, "items()")


class RemoteDefiProtocol(RemoteProvider):
    """Off-chain quoting only: pools, refresh and swap_call read and build on a chain through
    web3, which a worker has no way to reach (issue: installed DeFi protocols)."""

    hook = "alphintra_defi_protocols"
    name: str = ""

    def quote(self, pool: sdk.DefiPool, token_in: str, token_out: str, amount_in: int) -> int:
        return self._expect(self._call("quote", pool, token_in, token_out, amount_in), int, "quote()")

    def mid_price(self, pool: sdk.DefiPool, token_in: str, token_out: str) -> Any:
        return self._call("mid_price", pool, token_in, token_out)


PROXIES: dict[str, type[RemoteProvider]] = {cls.hook: cls for cls in (
    RemoteDataSource, RemoteFxProvider, RemoteOptimiser, RemoteConnector, RemoteRulePack,
    RemoteLLMProvider, RemoteNewsSource, RemoteDefiProtocol)}
# The capability a provider hook needs, checked by the gateway before the hook is ever called.
HOOK_CAPABILITIES: dict[str, str] = {
    "alphintra_market_data_sources": "marketdata:publish",
    "alphintra_exchange_connectors": "orders:submit",
    "alphintra_schema_extensions": "schema:extend",
    "alphintra_white_label": "branding:theme",
}


def describe(managed: ManagedPlugin, hook: str) -> list[RemoteProvider]:
    """The hook's providers as proxies (one call to the worker)."""
    answer = managed.call("describe", {"hook": hook})
    if not isinstance(answer, list):
        raise PluginCallFailed(managed.plugin_id, f"{hook} did not answer a list")
    cls = PROXIES[hook]
    return [cls(managed, n, dict(item.get("attrs") or {})) for n, item in enumerate(answer)]
