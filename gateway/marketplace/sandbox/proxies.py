"""Gateway-side objects that implement the SDK's provider protocols by calling a sandboxed
worker: what the gateway holds of an installed plugin's providers. Static attributes (a
source's name, an optimiser's kind and limits, an LLM's models) are read once at activation;
each method is one call with the plugin's deadline. Answers are checked for the SDK shape the
protocol promises before any service sees them (PLUGIN_FAILED naming the plugin otherwise).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal
from fractions import Fraction
from typing import Any

from gateway.marketplace.errors import PluginCallFailed, PoolStateGone
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
    """Pools are listed and refreshed in the worker, which reads the chain through the gateway
    (read-only JSON-RPC, plugins/guest/defi.py); a pool's state stays in the worker and its
    `state` here is the worker's handle for it. Pools and swap calls are checked before the
    pool book or a signer sees them: a swap must call the pool it was quoted on."""

    hook = "alphintra_defi_protocols"
    name: str = ""

    def __init__(self, managed: ManagedPlugin, n: int, attrs: dict[str, Any]) -> None:
        super().__init__(managed, n, attrs)
        self._renewed: dict[str, sdk.DefiPool] = {}  # a gone state's handle -> the pool listed again
        self._listed_on: dict[str, dict[str, Any]] = {}  # pool address -> the chain it was listed on

    @staticmethod
    def _chain(chain: sdk.DefiChainView) -> dict[str, Any]:
        return {"chain_id": chain.chain_id, "name": chain.name,
                "directory": {str(k): [str(a) for a in v] for k, v in chain.directory.items()}}

    def _pool(self, value: Any, what: str) -> sdk.DefiPool:
        pool = self._expect(value, sdk.DefiPool, what)
        tokens = pool.tokens if isinstance(pool.tokens, tuple) else ()
        problem = None
        if not _is_address(pool.address):
            problem = "a pool address is not an address"
        elif len(tokens) < 2 or not all(_is_address(t) for t in tokens) or \
                len({t.lower() for t in tokens}) != len(tokens):
            problem = "a pool trades two or more distinct token addresses"
        elif not isinstance(pool.fee, Fraction) or not 0 <= pool.fee < 1:
            problem = "a pool's fee is a Fraction in [0, 1)"
        elif not isinstance(pool.gas_per_swap, int) or not 0 < pool.gas_per_swap <= MAX_GAS:
            problem = f"a pool's gas_per_swap is an integer up to {MAX_GAS}"
        elif not isinstance(pool.state, str) or not isinstance(pool.block, int):
            problem = "a pool's state did not come back as the worker's handle"
        if problem is not None:
            raise PluginCallFailed(self.plugin_id, f"{what}: {problem}")
        return pool

    def pools(self, chain: sdk.DefiChainView) -> list[sdk.DefiPool]:
        described = self._chain(chain)
        answer = self._call("pools", described)
        if not isinstance(answer, list):
            raise PluginCallFailed(self.plugin_id, "pools() must answer a list of DefiPool")
        pools = [self._pool(p, "pools()") for p in answer]
        for pool in pools:
            self._listed_on[pool.address.lower()] = described
        return pools

    def refresh(self, chain: sdk.DefiChainView, pool: sdk.DefiPool) -> sdk.DefiPool:
        fresh = self._pool(self._on_pool("refresh", pool, chain=chain), "refresh()")
        if fresh.address.lower() != pool.address.lower() or fresh.tokens != pool.tokens:
            raise PluginCallFailed(self.plugin_id, "refresh() answered another pool")
        return fresh

    def quote(self, pool: sdk.DefiPool, token_in: str, token_out: str, amount_in: int) -> int:
        out = self._expect(self._on_pool("quote", pool, token_in, token_out, amount_in), int, "quote()")
        if isinstance(out, bool) or out < 0:
            raise PluginCallFailed(self.plugin_id, "quote() must answer a non-negative integer")
        return out

    def mid_price(self, pool: sdk.DefiPool, token_in: str, token_out: str) -> Any:
        price = self._on_pool("mid_price", pool, token_in, token_out)
        if isinstance(price, bool) or not isinstance(price, int | Fraction) or price < 0:
            raise PluginCallFailed(self.plugin_id, "mid_price() must answer a Fraction")
        return Fraction(price)

    def onchain_quote(self, chain: sdk.DefiChainView, pool: sdk.DefiPool, token_in: str, token_out: str,
                      amount_in: int) -> int:
        out = self._expect(self._on_pool("onchain_quote", pool, token_in, token_out, amount_in,
                                         chain=chain), int, "onchain_quote()")
        return max(0, out)

    def swap_call(self, chain: sdk.DefiChainView, pool: sdk.DefiPool, token_in: str, token_out: str,
                  amount_in: int, min_out: int, recipient: str, deadline: int) -> sdk.DefiCall:
        call = self._expect(self._on_pool("swap_call", pool, token_in, token_out, amount_in, min_out,
                                          recipient, deadline, chain=chain), sdk.DefiCall, "swap_call()")
        # The tenant's key signs this: it may only call, and only approve, the quoted pool.
        if not isinstance(call.to, str) or call.to.lower() != pool.address.lower():
            raise PluginCallFailed(self.plugin_id, "swap_call() must call the pool it was quoted on")
        if call.spender is not None and str(call.spender).lower() != pool.address.lower():
            raise PluginCallFailed(self.plugin_id, "swap_call() may only approve the pool itself")
        if not isinstance(call.data, str) or not isinstance(call.value, int) or call.value != 0:
            raise PluginCallFailed(self.plugin_id, "swap_call() answers hex data and no value")
        return call

    # A worker that stopped (idle, restarted) no longer holds the states its handles name: the
    # pool is listed again on the chain it came from and the call retried once.
    def _on_pool(self, method: str, pool: sdk.DefiPool, *args: Any,
                 chain: sdk.DefiChainView | None = None) -> Any:
        renewed = self._renewed
        pool = renewed.get(pool.state, pool)
        lead = [self._chain(chain)] if chain is not None else []
        try:
            return self._call(method, *lead, pool, *args)
        except PoolStateGone:
            fresh = self._relisted(pool, chain)
            if len(renewed) > MAX_RENEWED:
                renewed.clear()
            renewed[pool.state] = fresh
            return self._call(method, *lead, fresh, *args)

    def _relisted(self, pool: sdk.DefiPool, chain: sdk.DefiChainView | None) -> sdk.DefiPool:
        described = self._chain(chain) if chain is not None else self._listed_on.get(pool.address.lower())
        if described is None:
            raise PluginCallFailed(self.plugin_id, f"pool {pool.address} is not listed any more")
        answer = self._call("pools", described)
        for listed in answer if isinstance(answer, list) else ():
            if isinstance(listed, sdk.DefiPool) and str(listed.address).lower() == pool.address.lower():
                return self._pool(listed, "pools()")
        raise PluginCallFailed(self.plugin_id, f"pool {pool.address} is not listed any more")


MAX_RENEWED = 4096
MAX_GAS = 10_000_000
_ADDRESS = re.compile(r"0x[0-9a-fA-F]{40}")


def _is_address(value: Any) -> bool:
    return isinstance(value, str) and _ADDRESS.fullmatch(value) is not None


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
