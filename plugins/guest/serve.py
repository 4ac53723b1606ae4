"""The worker's loop: read calls from the gateway, answer them (plugins/guest/main.py).

Calls run on a small thread pool (provider calls) or on one asyncio loop (the plugin's
GraphQL, so `async def` resolvers and subscriptions work); the reader thread only reads and
dispatches. Every thread has the tenant's context bound, so `plugins.sdk.current_context()`
answers it anywhere in this process: the process serves one tenant only.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import itertools
import logging
import os
import socket
import sys
import threading
import types
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from plugins import sdk, wire

NAMESPACE = "alphintra_wheels"  # every wheel imports under alphintra_wheels.w<sha256[:20]>
POOL_THREADS = 4

# Per hook: the SDK protocol's methods the gateway may call, and the static attributes it
# reads once (at activation) instead of calling across the socket each time.
PROVIDERS: dict[str, tuple[frozenset[str], tuple[str, ...]]] = {
    "alphintra_market_data_sources": (frozenset({"instruments", "bars", "quote"}), ("name",)),
    "alphintra_fx_rate_providers": (frozenset({"rate", "history", "interest_rate"}), ("name",)),
    "alphintra_portfolio_optimisers": (frozenset({"solve"}), ("name", "kind", "max_assets", "max_qubits")),
    "alphintra_exchange_connectors": (frozenset({"mics", "submit", "cancel", "replace", "quote_for",
                                                 "on_clock", "venues"}), ("name",)),
    "alphintra_compliance_rule_packs": (frozenset({"applies", "check"}), ("jurisdiction", "regulators")),
    "alphintra_llm_providers": (frozenset({"complete_structured"}), ("name", "models", "is_llm")),
    "alphintra_news_sources": (frozenset({"items"}), ("name",)),
    "alphintra_defi_protocols": (frozenset({"pools", "refresh", "quote", "mid_price", "onchain_quote",
                                            "swap_call"}), ("name",)),
}
VALUE_HOOKS = frozenset({"alphintra_white_label", "alphintra_feature_flags", "alphintra_activated",
                         "alphintra_deactivated"})


class PluginValidationError(Exception):
    """The plugin's hook implementations do not match the hookspecs (names or arguments)."""


class CallRefused(Exception):
    """The gateway asked for something this plugin does not offer (never a plugin's fault)."""


@dataclass
class Guest:
    sock: socket.socket
    context: sdk.PluginContext | None = None
    plugin: Any = None
    hooks: frozenset[str] = frozenset()  # implemented AND declared
    providers: dict[str, list[Any]] = field(default_factory=dict)
    graphql: Any = None
    defi: Any = None  # plugins.guest.defi.DefiGuest, made on a DeFi protocol's first call
    write_lock: threading.Lock = field(default_factory=threading.Lock)
    asks: dict[int, Future[Any]] = field(default_factory=dict)
    ask_ids: Any = field(default_factory=lambda: itertools.count(1))
    loop: asyncio.AbstractEventLoop | None = None
    streams: dict[int, Any] = field(default_factory=dict)

    def send(self, message: dict[str, Any]) -> None:
        data = wire.frame(message)
        with self.write_lock:
            self.sock.sendall(data)

    def reply(self, call_id: int, result: Any) -> None:
        try:
            self.send({"i": call_id, "r": result})
        except (TypeError, wire.WireError) as exc:  # the plugin answered something un-sendable
            self.send({"i": call_id, "e": {"type": "WrongShape", "sdk": False,
                                           "message": f"the answer cannot cross the wire: {exc}"}})

    def fail(self, call_id: int, exc: BaseException) -> None:
        self.send({"i": call_id, "e": wire.error_payload(exc)})

    # Calls from the plugin to the gateway (venue facts, egress).
    def ask(self, method: str, args: dict[str, Any], timeout_s: float = 30.0) -> Any:
        ask_id = next(self.ask_ids)
        future: Future[Any] = Future()
        self.asks[ask_id] = future
        try:
            self.send({"w": ask_id, "m": method, "a": args})
            return future.result(timeout=timeout_s)
        finally:
            self.asks.pop(ask_id, None)


class GatewayVenues:
    """`context.venues` inside a worker: each question goes to the gateway's directory."""

    def __init__(self, guest: Guest) -> None:
        self._guest = guest

    def venues(self) -> list[sdk.VenueInfo]:
        return list(self._guest.ask("venues", {"op": "venues"}))

    def venue(self, mic: str) -> sdk.VenueInfo:
        return self._guest.ask("venues", {"op": "venue", "mic": mic})

    def is_open(self, mic: str, at: datetime) -> bool:
        return bool(self._guest.ask("venues", {"op": "is_open", "mic": mic, "at": at}))

    def sessions(self, mic: str, start: datetime, end: datetime) -> list[sdk.SessionWindow]:
        return list(self._guest.ask("venues", {"op": "sessions", "mic": mic, "start": start, "end": end}))

    def lot_size(self, mic: str, price: Decimal) -> Decimal:
        return self._guest.ask("venues", {"op": "lot_size", "mic": mic, "price": price})

    def tick_size(self, mic: str, price: Decimal) -> Decimal:
        return self._guest.ask("venues", {"op": "tick_size", "mic": mic, "price": price})


class _ToGateway(logging.Handler):
    """Plugin log records go to the gateway's log, tagged with the plugin (never to stdout)."""

    def __init__(self, guest: Guest) -> None:
        super().__init__(logging.INFO)
        self._guest = guest

    def emit(self, record: logging.LogRecord) -> None:
        with contextlib.suppress(Exception):  # logging must never break a call
            self._guest.send({"w": 0, "m": "log", "a": {"level": record.levelno,
                                                        "message": record.getMessage()[:2000]}})


def _egress(guest: Guest, request: dict[str, Any]) -> Any:
    try:
        return guest.ask("egress", request, timeout_s=float(request.get("timeout_s", 10.0)) + 5.0)
    except RuntimeError as exc:
        raise sdk.EgressRefused(str(exc)) from None


def _import_plugin(directory: str, sha256: str, entry_point: str) -> Any:
    module_path, _, attribute = entry_point.partition(":")
    root = types.ModuleType(NAMESPACE)
    root.__path__ = []
    sys.modules[NAMESPACE] = root
    package = f"{NAMESPACE}.w{sha256[:20]}"
    holder = types.ModuleType(package)
    holder.__path__ = [directory]
    sys.modules[package] = holder
    sys.dont_write_bytecode = True
    module = importlib.import_module(f"{package}.{module_path}")
    return getattr(module, attribute) if attribute else module


def _implemented(plugin: Any, plugin_id: str) -> list[str]:
    import pluggy

    from plugins import hookspecs

    manager = pluggy.PluginManager(sdk.PROJECT)
    manager.add_hookspecs(hookspecs)
    try:
        manager.register(plugin, name=plugin_id)
        manager.check_pending()
    except pluggy.PluginValidationError as exc:
        raise PluginValidationError(f"a hook implementation does not match plugins/hookspecs.py: {exc}"
                                    ) from None
    return sorted(caller.name for caller in manager.get_hookcallers(plugin) or [])


def _init(guest: Guest, args: dict[str, Any]) -> dict[str, Any]:
    from plugins.guest import confine

    # The event loop's self-pipe is a socketpair, which the seccomp filter refuses afterwards.
    guest.loop = asyncio.new_event_loop()
    layers = confine.apply(confine.Confinement(
        read_paths=tuple(args["read_paths"]), write_paths=tuple(args.get("write_paths") or ()),
        memory_bytes=args.get("memory_bytes"), landlock=bool(args.get("landlock", True)),
        seccomp=bool(args.get("seccomp", True))))
    context = sdk.PluginContext(
        plugin_id=args["plugin_id"], config=dict(args.get("config") or {}),
        venues=GatewayVenues(guest), tenant_id=args.get("tenant_id"), version=args.get("version", ""),
        capabilities=frozenset(args.get("capabilities") or ()),
        logger=logging.getLogger(f"alphintra.plugin.{args['plugin_id']}"))
    context.logger.addHandler(_ToGateway(guest))
    sdk._EGRESS = lambda **request: _egress(guest, request)
    context.logger.propagate = False
    guest.context = context
    sdk.bind_context(context)
    try:
        if args.get("builtin"):  # one of the project's own plugins, run here to test the contract
            module, _, attribute = str(args["entry_point"]).partition(":")
            found = importlib.import_module(module)
            guest.plugin = getattr(found, attribute) if attribute else found
        else:
            guest.plugin = _import_plugin(args["directory"], args["sha256"], args["entry_point"])
    except BaseException as exc:  # SystemExit at import counts as a failed import too
        raise ImportError(f"importing {args['entry_point']} raised {type(exc).__name__}: "
                          f"{str(exc)[:500]}") from None
    implemented = _implemented(guest.plugin, args["plugin_id"])  # PluginValidationError: a bad hook
    declared = set(args.get("hooks") or ())
    guest.hooks = frozenset(h for h in implemented if h in declared)
    return {"implemented": implemented, "layers": layers, "pid": os.getpid()}


def _hook_function(guest: Guest, hook: str) -> Callable[..., Any]:
    if hook not in guest.hooks:
        raise CallRefused(f"{hook} is not implemented and declared by this plugin")
    return getattr(guest.plugin, hook)


def _describe(guest: Guest, hook: str) -> list[dict[str, Any]]:
    providers = _providers(guest, hook)
    attrs = PROVIDERS[hook][1]
    return [{"attrs": {name: getattr(p, name, None) for name in attrs}} for p in providers]


def _providers(guest: Guest, hook: str) -> list[Any]:
    found = guest.providers.get(hook)
    if found is None:
        if hook not in PROVIDERS:
            raise CallRefused(f"{hook} is not a provider hook")
        found = _hook_function(guest, hook)(context=guest.context)
        if not isinstance(found, list):
            raise TypeError(f"{hook} answered a {type(found).__name__}, not a list")
        guest.providers[hook] = found
    return found


def _call(guest: Guest, args: dict[str, Any]) -> Any:
    hook, method = args["hook"], args["method"]
    if method not in PROVIDERS.get(hook, (frozenset(),))[0]:
        raise CallRefused(f"{method} is not a method of {hook}'s protocol")
    providers = _providers(guest, hook)
    n = int(args.get("n", 0))
    if not 0 <= n < len(providers):
        raise CallRefused(f"{hook} has no provider {n}")
    if hook == "alphintra_defi_protocols":  # chain reads through the gateway, states kept here
        if guest.defi is None:
            from plugins.guest.defi import DefiGuest

            guest.defi = DefiGuest(guest.ask)
        return guest.defi.call(providers[n], method, list(args.get("args", ())), args.get("kwargs", {}))
    return getattr(providers[n], method)(*args.get("args", ()), **args.get("kwargs", {}))


def _checks(guest: Guest, args: dict[str, Any]) -> list[dict[str, Any]]:
    """Every rule pack `ns` of this plugin on one order, in one call: each answers its denials
    or what it raised (the gateway denies the order for a pack that raised)."""
    packs = _providers(guest, "alphintra_compliance_rule_packs")
    out: list[dict[str, Any]] = []
    for n in args.get("ns", ()):
        try:
            if not 0 <= int(n) < len(packs):
                raise CallRefused(f"no rule pack {n}")
            out.append({"r": packs[int(n)].check(args["ctx"])})
        except Exception as exc:
            out.append({"e": wire.error_payload(exc)})
    return out


def _value(guest: Guest, hook: str) -> Any:
    if hook not in VALUE_HOOKS:
        raise CallRefused(f"{hook} is not a value hook")
    return _hook_function(guest, hook)(context=guest.context)


def _graphql(guest: Guest) -> Any:
    if guest.graphql is None:
        from plugins.guest.graphql import PluginGraphQL

        answer = _hook_function(guest, "alphintra_schema_extensions")(context=guest.context)
        guest.graphql = PluginGraphQL.of(answer)
    return guest.graphql


def _dispatch(guest: Guest, call_id: int, method: str, args: dict[str, Any]) -> None:
    try:
        if method == "ping":
            result: Any = "pong"
        elif method == "describe":
            result = _describe(guest, args["hook"])
        elif method == "call":
            result = _call(guest, args)
        elif method == "checks":
            result = _checks(guest, args)
        elif method == "value":
            result = _value(guest, args["hook"])
        elif method == "schema":
            result = _graphql(guest).describe()
        else:
            raise CallRefused(f"unknown method {method!r}")
    except BaseException as exc:  # a plugin's SystemExit fails its call, not the worker
        guest.fail(call_id, exc)
        return
    guest.reply(call_id, result)


def _run_graphql(guest: Guest, call_id: int, method: str, args: dict[str, Any]) -> None:
    assert guest.loop is not None
    context = guest.context

    async def run() -> None:
        sdk.bind_context(context)  # type: ignore[arg-type]
        try:
            schema = _graphql(guest)
            if method == "graphql":
                guest.reply(call_id, await schema.execute(args["document"], args.get("variables") or {}))
                return
            async for item in schema.subscribe(args["document"], args.get("variables") or {}):
                guest.send({"i": call_id, "s": item})
            guest.reply(call_id, None)
        except asyncio.CancelledError:
            guest.reply(call_id, None)
        except BaseException as exc:
            guest.fail(call_id, exc)
        finally:
            guest.streams.pop(call_id, None)

    future = asyncio.run_coroutine_threadsafe(run(), guest.loop)
    guest.streams[call_id] = future


def _start_loop(guest: Guest) -> None:
    loop = guest.loop
    assert loop is not None

    def run() -> None:
        asyncio.set_event_loop(loop)
        loop.run_forever()

    threading.Thread(target=run, name="guest-graphql", daemon=True).start()


def _answer_ask(guest: Guest, message: dict[str, Any]) -> None:
    future = guest.asks.get(int(message["w"]))
    if future is None:
        return
    if "e" in message:
        error = message["e"] or {}
        future.set_exception(RuntimeError(str(error.get("message", "the gateway refused"))))
    else:
        future.set_result(message.get("r"))


def serve(fd: int) -> int:
    sock = socket.socket(fileno=fd)
    guest = Guest(sock)
    first = wire.read_frame(sock)
    if first is None or first.get("m") != "init":
        return 2
    try:
        guest.reply(first["i"], _init(guest, first.get("a") or {}))
    except BaseException as exc:
        guest.fail(first["i"], exc)
        return 3
    context = guest.context

    def bind() -> None:
        sdk.bind_context(context)  # type: ignore[arg-type]

    pool = ThreadPoolExecutor(POOL_THREADS, thread_name_prefix="guest", initializer=bind)
    _start_loop(guest)
    while True:
        message = wire.read_frame(sock)
        if message is None:
            return 0
        if "w" in message:
            _answer_ask(guest, message)
            continue
        call_id, method, args = int(message["i"]), str(message.get("m")), message.get("a") or {}
        if method in ("graphql", "subscribe"):
            _run_graphql(guest, call_id, method, args)
        elif method == "cancel":
            stream = guest.streams.get(int(args.get("id", -1)))
            if stream is not None:
                stream.cancel()
        else:
            pool.submit(_dispatch, guest, call_id, method, args)
