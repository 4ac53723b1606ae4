"""Conformance kits, one per category: the checks a plugin's answers must pass to be published.

The gateway drives a kit against the plugin running in its sandboxed worker (through proxies
that implement the SDK's protocols, gateway/marketplace/inspection.py), so the plugin neither
runs the checks nor writes the verdict; a vendor runs the same kit locally on a pluggy manager
(`run_kit(manifest, manager, plugin_id)`). Each kit calls the plugin's hooks with a kit
context (`plugin_id`, the manifest's `conformance.config`, its declared capabilities, and
`KitVenues`: a directory in which every venue is open, lots are 1 and ticks 0.01) and checks
the answers' shapes:

- data-source: `alphintra_market_data_sources` gives at least one MarketDataSource; each lists
  instruments (normalised `Instrument`s, unique keys) and answers daily bars for its first
  instrument over 2024-01-08..2024-01-20 in the normalised `Bar` model (Decimals, UTC instants
  in the range and ascending, low <= open/close <= high, volume >= 0, at least one bar), and a
  `quote` that is None or a `Quote` with bid <= ask.
- exchange: `alphintra_exchange_connectors` gives at least one ExchangeConnector with venues;
  on its first venue, at the manifest's `conformance.at` (a time its venue is open), a LIMIT
  DAY buy of `conformance.quantity` (default 1) `conformance.symbol` at
  `conformance.limit_price` is accepted (not REJECTED) and then cancelled (CANCELED).
- white-label: `alphintra_white_label` answers a `Theme` with hex colours and an https logo.
- every category: each other declared hook is called once and must not raise; list-returning
  hooks must answer lists. A schema extension must be a `SchemaExtension` of classes.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pluggy

from plugins.sdk import (
    Bar,
    ExchangeConnector,
    ExecutionReport,
    Instrument,
    MarketDataSource,
    OrderRequest,
    OrdStatus,
    OrdType,
    PluginContext,
    Quote,
    SchemaExtension,
    SessionWindow,
    Side,
    Theme,
    TimeInForce,
    VenueInfo,
)

BARS_START = datetime(2024, 1, 8, tzinfo=UTC)
BARS_END = datetime(2024, 1, 20, tzinfo=UTC)
DEFAULT_AT = datetime(2024, 1, 9, 15, 0, tzinfo=UTC)  # a Tuesday afternoon in Europe
HEX_COLOUR = re.compile(r"^#[0-9a-fA-F]{6}$")
# Hooks whose answer is a list by the contract (plugins/hookspecs.py).
LIST_HOOKS = {"alphintra_market_data_sources", "alphintra_fx_rate_providers",
              "alphintra_portfolio_optimisers", "alphintra_exchange_connectors",
              "alphintra_compliance_rule_packs", "alphintra_llm_providers",
              "alphintra_news_sources", "alphintra_schema_extensions"}


class KitVenues:
    """A VenueDirectory for the kit: every MIC is a 24/7 venue with lot 1 and tick 0.01."""

    def venues(self) -> Sequence[VenueInfo]:
        return []

    def venue(self, mic: str) -> VenueInfo:
        return VenueInfo(mic=mic, name=mic, region="global", country="ZZ", currency="USD",
                         timezone="UTC", always_open=True)

    def is_open(self, mic: str, at: datetime) -> bool:
        return True

    def sessions(self, mic: str, start: datetime, end: datetime) -> Sequence[SessionWindow]:
        return [SessionWindow(mic, start, end)] if end > start else []

    def lot_size(self, mic: str, price: Decimal) -> Decimal:
        return Decimal(1)

    def tick_size(self, mic: str, price: Decimal) -> Decimal:
        return Decimal("0.01")


@dataclass
class KitOutcome:
    failures: list[str] = field(default_factory=list)
    checks: list[str] = field(default_factory=list)


HookCaller = Callable[[str], Any]  # hook name -> what the plugin's implementation answers


def local_caller(manager: pluggy.PluginManager, context: PluginContext) -> HookCaller:
    """Call hooks of a plugin registered on `manager` in this process (a vendor's own tests)."""

    def call(hook: str) -> Any:
        impl = getattr(manager.hook, hook).get_hookimpls()[0]
        available = {"context": context}
        return impl.function(**{name: available.get(name) for name in impl.argnames})

    return call


def kit_context(manifest: Mapping[str, Any], plugin_id: str) -> PluginContext:
    conformance: Mapping[str, Any] = manifest.get("conformance") or {}
    return PluginContext(plugin_id=plugin_id, config=dict(conformance.get("config") or {}),
                         venues=KitVenues(), version=manifest.get("version", ""),
                         capabilities=frozenset(manifest.get("capabilities", ())))


def hook_problems(implemented: Sequence[str], declared: Sequence[str]) -> list[str]:
    """What is wrong between the hooks a plugin implements and those its manifest declares."""
    from plugins import hookspecs

    problems = []
    known = {name for name in dir(hookspecs) if name.startswith("alphintra_")}
    for name in sorted(set(declared) - known):
        problems.append(f"the manifest declares {name}, which is not a hook of the gateway")
    for name in sorted(set(declared) & known - set(implemented)):
        problems.append(f"the manifest declares {name} but the plugin does not implement it")
    for name in sorted(set(implemented) - set(declared)):
        problems.append(f"the plugin implements {name} but the manifest does not declare it")
    return problems


def compare_hooks(plugin: object, plugin_id: str, declared: Sequence[str]
                  ) -> tuple[pluggy.PluginManager, list[str], list[str]]:
    """Register `plugin` against the hookspecs; answer (manager, implemented hooks, problems)."""
    from plugins import hookspecs
    from plugins.sdk import PROJECT

    manager = pluggy.PluginManager(PROJECT)
    manager.add_hookspecs(hookspecs)
    try:
        manager.register(plugin, name=plugin_id)
        manager.check_pending()
    except pluggy.PluginValidationError as exc:
        return manager, [], [f"a hook implementation does not match plugins/hookspecs.py: {exc}"]
    implemented = sorted(caller.name for caller in manager.get_hookcallers(plugin) or [])
    return manager, implemented, hook_problems(implemented, declared)


class _Kit:
    def __init__(self, manifest: Mapping[str, Any], caller: HookCaller, plugin_id: str) -> None:
        self.manifest = manifest
        self.caller = caller
        self.conformance: Mapping[str, Any] = manifest.get("conformance") or {}
        self.outcome = KitOutcome()

    def fail(self, message: str) -> None:
        self.outcome.failures.append(message)

    def call(self, hook: str) -> Any:
        return self.caller(hook)

    def guarded(self, what: str, fn: Any, *args: Any) -> Any:
        try:
            return fn(*args)
        except Exception as exc:
            self.fail(f"{what} raised {type(exc).__name__}: {str(exc)[:300]}")
            return _FAILED


_FAILED = object()


def _decimal_fields(obj: Any, names: Sequence[str]) -> list[str]:
    return [n for n in names if not isinstance(getattr(obj, n), Decimal)]


def _aware_utc(value: Any) -> bool:
    return isinstance(value, datetime) and value.tzinfo is not None and value.utcoffset() == timedelta(0)


def _check_data_sources(kit: _Kit) -> None:
    hook = "alphintra_market_data_sources"
    if hook not in kit.manifest["hooks"]:
        kit.fail(f"a data-source plugin must implement {hook}")
        return
    sources = kit.guarded(hook, kit.call, hook)
    if sources is _FAILED:
        return
    if not isinstance(sources, list) or not sources:
        kit.fail(f"{hook} must answer a non-empty list, got {type(sources).__name__}")
        return
    for source in sources:
        if not isinstance(source, MarketDataSource):
            kit.fail(f"{hook} answered a {type(source).__name__}, not a MarketDataSource")
            continue
        name = getattr(source, "name", "?")
        instruments = kit.guarded(f"{name}.instruments()", source.instruments)
        if instruments is _FAILED:
            continue
        if not isinstance(instruments, list | tuple) or not instruments:
            kit.fail(f"{name}.instruments() must answer a non-empty list")
            continue
        bad = [i for i in instruments if not isinstance(i, Instrument)]
        if bad:
            kit.fail(f"{name}.instruments() answered a {type(bad[0]).__name__}, not an Instrument")
            continue
        keys = [i.key for i in instruments]
        if len(set(keys)) != len(keys):
            kit.fail(f"{name}.instruments() lists a key twice")
        for inst in instruments:
            if not inst.symbol or not re.fullmatch(r"[A-Z0-9]{4}", inst.mic) or \
                    not re.fullmatch(r"[A-Z]{3}", inst.currency):
                kit.fail(f"{name}: instrument {inst!r} needs a symbol, a 4-letter MIC and an "
                         "ISO 4217 currency")
                break
        kit.outcome.checks.append(f"{name}: {len(instruments)} instruments")
        first = instruments[0]
        bars = kit.guarded(f"{name}.bars()", source.bars, first, BARS_START, BARS_END, "1d")
        if bars is not _FAILED:
            _check_bars(kit, name, first, bars)
        quote = kit.guarded(f"{name}.quote()", source.quote, first, DEFAULT_AT)
        if quote is not _FAILED and quote is not None:
            if not isinstance(quote, Quote):
                kit.fail(f"{name}.quote() answered a {type(quote).__name__}, not a Quote or None")
            elif _decimal_fields(quote, ("bid", "ask", "bid_size", "ask_size")):
                kit.fail(f"{name}.quote(): prices and sizes must be Decimals")
            elif quote.bid > quote.ask:
                kit.fail(f"{name}.quote(): bid {quote.bid} above ask {quote.ask}")


def _check_bars(kit: _Kit, name: str, inst: Instrument, bars: Any) -> None:
    if not isinstance(bars, list | tuple):
        kit.fail(f"{name}.bars() must answer a list, got {type(bars).__name__}")
        return
    if not bars:
        kit.fail(f"{name}.bars() answered no daily bars for {inst.key} from {BARS_START:%Y-%m-%d} "
                 f"to {BARS_END:%Y-%m-%d}")
        return
    previous: datetime | None = None
    for bar in bars:
        if not isinstance(bar, Bar):
            kit.fail(f"{name}.bars() answered a {type(bar).__name__}, not a Bar")
            return
        wrong = _decimal_fields(bar, ("open", "high", "low", "close", "volume"))
        if wrong:
            kit.fail(f"{name}.bars(): {', '.join(wrong)} must be Decimals")
            return
        if (bar.symbol, bar.mic) != (inst.symbol, inst.mic) or bar.interval != "1d":
            kit.fail(f"{name}.bars(): a bar of {bar.symbol}.{bar.mic} {bar.interval} answered "
                     f"for {inst.key} 1d")
            return
        if not _aware_utc(bar.start) or not BARS_START <= bar.start < BARS_END:
            kit.fail(f"{name}.bars(): start {bar.start} is not a UTC instant inside the range")
            return
        if previous is not None and bar.start <= previous:
            kit.fail(f"{name}.bars(): bars are not in ascending order")
            return
        if not bar.low <= min(bar.open, bar.close) <= max(bar.open, bar.close) <= bar.high \
                or bar.volume < 0:
            kit.fail(f"{name}.bars(): bar at {bar.start} breaks low <= open, close <= high or "
                     "volume >= 0")
            return
        previous = bar.start
    kit.outcome.checks.append(f"{name}: {len(bars)} daily bars of {inst.key}")


def _last_for(reports: Any, order_id: str) -> ExecutionReport | None:
    mine = [r for r in reports if isinstance(r, ExecutionReport) and r.client_order_id == order_id]
    return mine[-1] if mine else None


def _check_connectors(kit: _Kit) -> None:
    hook = "alphintra_exchange_connectors"
    if hook not in kit.manifest["hooks"]:
        kit.fail(f"an exchange plugin must implement {hook}")
        return
    symbol, price = kit.conformance.get("symbol"), kit.conformance.get("limit_price")
    if not symbol or not price:
        kit.fail("an exchange plugin's manifest must give conformance.symbol and "
                 "conformance.limit_price (a buy price that rests on its venue)")
        return
    at = datetime.fromisoformat(kit.conformance["at"]).astimezone(UTC) \
        if kit.conformance.get("at") else DEFAULT_AT
    connectors = kit.guarded(hook, kit.call, hook)
    if connectors is _FAILED:
        return
    if not isinstance(connectors, list) or not connectors:
        kit.fail(f"{hook} must answer a non-empty list, got {type(connectors).__name__}")
        return
    for n, connector in enumerate(connectors):
        if not isinstance(connector, ExchangeConnector):
            kit.fail(f"{hook} answered a {type(connector).__name__}, not an ExchangeConnector")
            continue
        name = getattr(connector, "name", "?")
        mics = kit.guarded(f"{name}.mics()", connector.mics)
        if mics is _FAILED:
            continue
        if not isinstance(mics, list) or not mics or not all(isinstance(m, str) for m in mics):
            kit.fail(f"{name}.mics() must answer a non-empty list of MICs")
            continue
        if kit.guarded(f"{name}.on_clock()", connector.on_clock, at) is _FAILED:
            continue
        order_id = f"conformance-{n}"
        order = OrderRequest(
            client_order_id=order_id, account="CONFORMANCE", symbol=symbol, mic=mics[0],
            side=Side.BUY, ord_type=OrdType.LIMIT, time_in_force=TimeInForce.DAY,
            quantity=Decimal(kit.conformance.get("quantity", "1")), limit_price=Decimal(price),
            stop_price=None, currency=kit.conformance.get("currency", "USD"), expire_at=None,
            submitted_at=at)
        reports = kit.guarded(f"{name}.submit()", connector.submit, order)
        if reports is _FAILED:
            continue
        if not isinstance(reports, list):
            kit.fail(f"{name}.submit() must answer a list of ExecutionReports")
            continue
        last = _last_for(reports, order_id)
        if last is None:
            kit.fail(f"{name}.submit() answered no ExecutionReport for the order")
            continue
        if last.ord_status in (OrdStatus.REJECTED, OrdStatus.FILLED, OrdStatus.CANCELED,
                               OrdStatus.EXPIRED):
            kit.fail(f"{name} did not accept a resting LIMIT DAY buy of {symbol} on {mics[0]} at "
                     f"{at.isoformat()}: {last.ord_status} {last.reject_code or ''} {last.text}")
            continue
        cancel = kit.guarded(f"{name}.cancel()", connector.cancel, order_id, mics[0])
        if cancel is _FAILED:
            continue
        if not isinstance(cancel, ExecutionReport) or cancel.ord_status != OrdStatus.CANCELED:
            kit.fail(f"{name}.cancel() did not cancel the order: "
                     f"{getattr(cancel, 'ord_status', type(cancel).__name__)}")
            continue
        kit.outcome.checks.append(f"{name}: accepted and cancelled a LIMIT order on {mics[0]}")


def _check_white_label(kit: _Kit) -> None:
    hook = "alphintra_white_label"
    if hook not in kit.manifest["hooks"]:
        kit.fail(f"a white-label plugin must implement {hook}")
        return
    theme = kit.guarded(hook, kit.call, hook)
    if theme is _FAILED:
        return
    if not isinstance(theme, Theme):
        kit.fail(f"{hook} must answer a Theme, got {type(theme).__name__}")
        return
    colours = ("primary_colour", "secondary_colour", "background_colour", "text_colour")
    bad = [c for c in colours if not isinstance(getattr(theme, c), str)
           or not HEX_COLOUR.match(getattr(theme, c))]
    if bad:
        kit.fail(f"theme colours must be #rrggbb: {', '.join(bad)}")
    if not theme.name or not theme.product_name:
        kit.fail("a theme needs a name and a product name")
    if theme.logo_url is not None and not str(theme.logo_url).startswith("https://"):
        kit.fail("a theme's logo_url must be an https URL")
    if not kit.outcome.failures:
        kit.outcome.checks.append(f"theme {theme.name!r} is valid")


def _check_schema_extensions(kit: _Kit, value: Any) -> None:
    if isinstance(value, dict):  # from a worker: its SDL and root fields
        roots = value.get("roots") or {}
        if not isinstance(value.get("sdl"), str) or not any(roots.get(r) for r in roots):
            kit.fail("alphintra_schema_extensions must add at least one root field")
        return
    if not isinstance(value, list):
        return
    for ext in value:
        if not isinstance(ext, SchemaExtension):
            kit.fail(f"alphintra_schema_extensions answered a {type(ext).__name__}, not a "
                     "SchemaExtension")
            continue
        parts = [ext.query, ext.mutation, ext.subscription, *ext.types]
        if not any(parts) or not all(p is None or isinstance(p, type) for p in parts):
            kit.fail("a SchemaExtension must hold strawberry types (classes)")


KITS = {"data-source": _check_data_sources, "exchange": _check_connectors,
        "white-label": _check_white_label}
COVERED_BY_KIT = {"data-source": {"alphintra_market_data_sources"},
                  "exchange": {"alphintra_exchange_connectors"},
                  "white-label": {"alphintra_white_label"}}
# Called by the gateway at install/uninstall time only; calling them here proves nothing.
NOT_CALLED = {"alphintra_activated", "alphintra_deactivated"}


def run_kit(manifest: Mapping[str, Any], manager: pluggy.PluginManager | HookCaller,
            plugin_id: str) -> KitOutcome:
    caller = (local_caller(manager, kit_context(manifest, plugin_id))
              if isinstance(manager, pluggy.PluginManager) else manager)
    kit = _Kit(manifest, caller, plugin_id)
    category = manifest["category"]
    if category in KITS:
        KITS[category](kit)
    done = COVERED_BY_KIT.get(category, set())
    for hook in manifest["hooks"]:
        if hook in done or hook in NOT_CALLED:
            continue
        value = kit.guarded(hook, kit.call, hook)
        if value is _FAILED:
            continue
        if hook in LIST_HOOKS and hook != "alphintra_schema_extensions" and not isinstance(value, list):
            kit.fail(f"{hook} must answer a list, got {type(value).__name__}")
            continue
        if hook == "alphintra_schema_extensions":
            _check_schema_extensions(kit, value)
        kit.outcome.checks.append(f"{hook} answered")
    return kit.outcome
