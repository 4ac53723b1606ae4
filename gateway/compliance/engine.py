"""The pre-trade compliance engine: which rule packs an order falls under, run them all,
collect every denial, and answer a Decision with everything the audit trail will record.

The check is a pure function of its `CheckContext`: the caller (order intake) assembles the
account, market and tenant state it holds, and nothing here touches a database, the network
or the clock. That is what makes the check take tens of microseconds, and what lets a
recorded decision be replayed.

Fail closed. An order goes out only when every pack that must judge it said yes:
- a pack that raises, or answers something other than a list of Denials, denies the order
  with COMPLIANCE_PACK_FAILED naming its plugin (the other packs still run and their denials
  are kept, so the record is complete). Passing instead would send an order that nobody
  checked against that jurisdiction's rules, which is exactly what the engine exists to
  prevent; a denied order can be sent again once the pack is mended.
- a pack plugin that failed to load leaves a standing COMPLIANCE_PACK_FAILED on every order:
  it may have been the tenant's own house rules, which nothing else stands in for.
- a jurisdiction the order is under (jurisdictions.py) that no running pack covers denies it
  with COMPLIANCE_NO_RULE_PACK; so does an order no pack applies to at all.
- an order that is malformed (no venue, a non-positive or non-finite quantity or price, a
  LIMIT without its price, a float where a Decimal belongs) is COMPLIANCE_ORDER_INVALID and
  no pack sees it: the rules are written for well-formed orders.
"""

from __future__ import annotations

import logging
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from decimal import Decimal
from time import perf_counter_ns
from typing import Any

from gateway.audit.chain import plain_decimal
from gateway.compliance.errors import NO_RULE_PACK, ORDER_INVALID, PACK_FAILED, ComplianceDenied
from gateway.compliance.jurisdictions import required_jurisdictions
from gateway.markets.errors import VenueUnknown
from gateway.markets.venues import VENUES, PriceBandedRule, Venue
from gateway.scope import current_tenant
from plugins.host import PluginFailed, PluginHost, default_context
from plugins.sdk import (
    AccountState,
    CheckContext,
    ClientProfile,
    Denial,
    InstrumentFacts,
    MarketState,
    OrderRequest,
    OrdType,
    PluginContext,
    RulePack,
    Side,
    TenantControls,
    VenueFacts,
)

log = logging.getLogger(__name__)

HOOK = "alphintra_compliance_rule_packs"
ENGINE_RULE = "engine"  # the `rule` of the denials the engine gives itself
# US equities trade in odd lots (the registry's 100-share round lot is a quoting unit there),
# so an order need only be whole shares; elsewhere the registry's lot is the order increment.
ODD_LOT_VENUES = frozenset({"XNYS", "XNAS"})
ONE = Decimal(1)

RuleTiming = tuple[str, str, int]  # (jurisdiction, rule or "*" for a whole pack, nanoseconds)

_SIDES = frozenset(Side)
_ORD_TYPES = frozenset(OrdType)
_NEEDS_LIMIT = frozenset({OrdType.LIMIT, OrdType.STOP_LIMIT})
_NEEDS_STOP = frozenset({OrdType.STOP, OrdType.STOP_LIMIT})
_UNROUTED = frozenset({"", "SMART"})


@dataclass(frozen=True, slots=True)
class LoadedPack:
    plugin: str
    pack: RulePack
    jurisdiction: str
    timed: bool  # offers RuleSetPack.check_timed: timings per rule, not per pack


@dataclass(frozen=True, slots=True)
class Selection:
    """What runs for one (venue country, region, regulators, client domicile)."""

    packs: tuple[LoadedPack, ...]
    jurisdictions: tuple[str, ...]  # required by the map, and claimed by the packs that run
    plugins: tuple[str, ...]
    standing: tuple[Denial, ...]  # denials that hold before any pack runs (fail closed)


@dataclass(frozen=True, slots=True)
class Decision:
    """One order's compliance decision, complete enough to record: whether it passed, every
    denial (code, rule, jurisdiction, limit, value), the jurisdictions it was judged under and
    the plugins that judged it, each rule's time, when, and the context it was judged on."""

    passed: bool
    denials: tuple[Denial, ...]
    jurisdictions: tuple[str, ...]
    plugins: tuple[str, ...]
    timings: tuple[RuleTiming, ...]
    decided_at: datetime
    elapsed_ns: int
    context: CheckContext

    @property
    def codes(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(d.code for d in self.denials))

    def error(self) -> ComplianceDenied:
        """The denial as a domain error, its code the first denial's."""
        if self.passed:
            raise ValueError("a passed decision is not an error")
        first = self.denials[0]
        return ComplianceDenied(first.message, code=first.code,
                                details={"denials": [_denial_record(d) for d in self.denials],
                                         "jurisdictions": list(self.jurisdictions)})

    def record(self) -> dict[str, Any]:
        """Plain values for the audit trail (Decimals as strings, instants in ISO 8601)."""
        ctx = self.context
        order = ctx.order
        return {
            "client_order_id": order.client_order_id,
            "tenant_id": ctx.controls.tenant_id,
            "account": order.account,
            "symbol": order.symbol,
            "mic": order.mic,
            "isin": ctx.instrument.isin,
            "side": str(order.side),
            "quantity": _text(order.quantity),
            "price": None if ctx.price is None else _text(ctx.price),
            "client_domicile": ctx.client.domicile,
            "passed": self.passed,
            "jurisdictions": list(self.jurisdictions),
            "plugins": list(self.plugins),
            "denials": [_denial_record(d) for d in self.denials],
            "timings_ns": [list(t) for t in self.timings],
            "decided_at": self.decided_at.isoformat(),
            "elapsed_ns": self.elapsed_ns,
        }


def _plain(value: object) -> object:
    return plain_decimal(value) if isinstance(value, Decimal) else value


def _text(value: object) -> str:
    return plain_decimal(value) if isinstance(value, Decimal) else str(value)


def deny(decision: Decision, denial: Denial) -> Decision:
    """The decision with one more denial, found by the gateway outside the packs (the credit
    in use could not be valued, say): never passed."""
    return replace(decision, passed=False, denials=(*decision.denials, denial))


def _denial_record(denial: Denial) -> dict[str, Any]:
    return {"code": denial.code, "rule": denial.rule, "jurisdiction": denial.jurisdiction,
            "message": denial.message, "limit": _plain(denial.limit),
            "value": _plain(denial.value)}


def _positive(value: object) -> bool:
    return isinstance(value, Decimal) and value.is_finite() and value > 0


def _order_problem(ctx: CheckContext) -> tuple[str, str, str] | None:
    """(what was required, what came, why) for a malformed order, or None."""
    order = ctx.order
    if order.mic in _UNROUTED:
        return ("a venue MIC", order.mic or "none",
                "compliance judges a routed order: choose the venue first")
    if order.mic != ctx.venue.mic:
        return (ctx.venue.mic, order.mic, "the order's venue is not the context's")
    if order.side not in _SIDES:
        return ("BUY, SELL or SELL_SHORT", str(order.side), "unknown side")
    if order.ord_type not in _ORD_TYPES:
        return ("MARKET, LIMIT, STOP or STOP_LIMIT", str(order.ord_type), "unknown order type")
    if not _positive(order.quantity):
        return ("a positive Decimal", repr(order.quantity), "quantity must be a positive Decimal")
    for name, price, needed in (("limit_price", order.limit_price, _NEEDS_LIMIT),
                                ("stop_price", order.stop_price, _NEEDS_STOP)):
        if price is None:
            if order.ord_type in needed:
                return (f"a {name}", "none", f"a {order.ord_type} order needs a {name}")
        elif not _positive(price):
            return ("a positive Decimal", repr(price), f"{name} must be a positive Decimal")
    reference = ctx.market.reference_price
    if reference is not None and not _positive(reference):
        return ("a positive Decimal", repr(reference), "the reference price must be positive")
    if ctx.fx_rate is not None and not _positive(ctx.fx_rate):
        return ("a positive Decimal", repr(ctx.fx_rate), "the FX rate must be positive")
    domicile = ctx.client.domicile
    if not (isinstance(domicile, str) and len(domicile) == 2 and domicile.isalpha()
            and domicile.isupper()):
        return ("an ISO 3166-1 alpha-2 code", repr(domicile), "the client's domicile")
    if ctx.now.tzinfo is None:
        return ("a timezone-aware instant", ctx.now.isoformat(), "the instant of the check")
    return None


@dataclass(frozen=True, slots=True)
class _Banded:
    """A PriceBandedRule with its bounds kept as a tuple (its `at` rebuilds the list per call)."""

    bounds: tuple[Decimal, ...]
    values: tuple[Decimal, ...]
    upper_inclusive: bool

    @classmethod
    def of(cls, rule: PriceBandedRule) -> _Banded:
        return cls(tuple(b.price for b in rule.bands), tuple(b.value for b in rule.bands),
                   rule.upper_inclusive)

    def at(self, price: Decimal) -> Decimal:
        find = bisect_left if self.upper_inclusive else bisect_right
        return self.values[max(find(self.bounds, price) - 1, 0)]


@dataclass(slots=True)
class _VenueEntry:
    venue: Venue
    tick: _Banded
    lot: _Banded
    odd_lots: bool
    facts: dict[tuple[Decimal, Decimal], VenueFacts] = field(default_factory=dict)

    def facts_at(self, price: Decimal | None, tick: Decimal | None, lot: Decimal | None
                 ) -> VenueFacts:
        if not (isinstance(price, Decimal) and price.is_finite() and price > 0):
            price = None  # a malformed price: any band will do, the order check denies it
        if tick is None:
            tick = self.tick.values[0] if price is None else self.tick.at(price)
        if lot is None:
            lot = (ONE if self.odd_lots else
                   self.lot.values[0] if price is None else self.lot.at(price))
        key = (tick, lot)
        found = self.facts.get(key)
        if found is None:  # a handful per venue: one per band
            venue = self.venue
            found = VenueFacts(venue.mic, venue.region, venue.country, venue.regulators,
                               venue.currency, tick, lot)
            self.facts[key] = found
        return found


class ComplianceEngine:
    """Runs the rule packs on orders. Build it once per plugin set (`from_plugins`); it is
    thread-safe (its caches only ever gain equal entries)."""

    def __init__(self, packs: Iterable[LoadedPack], *, venues: Iterable[Venue] = VENUES,
                 clock: Callable[[], datetime] | None = None,
                 load_failures: Iterable[PluginFailed] = (), rule_timings: bool = True) -> None:
        self.packs = tuple(packs)
        self._installed: Callable[[str], Sequence[tuple[str, Any]]] | None = None
        self._installed_venues: Callable[[str], Mapping[str, tuple[str, Any]]] | None = None
        self._check_all: Callable[[Sequence[Any], CheckContext], list[Any]] = lambda packs, ctx: []
        # A clock read per rule costs about a third of a microsecond each (some 6 µs per
        # order on the bench machine); off, each pack is timed as a whole.
        self.rule_timings = rule_timings
        self.load_failures = tuple(load_failures)
        self._clock = clock or (lambda: datetime.now(UTC))
        self._venues = {v.mic: _VenueEntry(v, _Banded.of(v.tick_size), _Banded.of(v.lot_size),
                                           v.mic in ODD_LOT_VENUES) for v in venues}
        self._selections: dict[tuple[str, str, tuple[str, ...], str], Selection] = {}
        self._standing = tuple(
            Denial(PACK_FAILED, ENGINE_RULE, "*",
                   f"compliance plugin {f.plugin} failed to load; orders are denied until it "
                   f"is mended or removed", "a loaded rule pack", f.plugin)
            for f in self.load_failures)

    @classmethod
    def from_plugins(cls, plugins: PluginHost, *, venues: Iterable[Venue] = VENUES,
                     clock: Callable[[], datetime] | None = None,
                     context_for: Callable[[str], PluginContext] | None = None,
                     rule_timings: bool = True) -> ComplianceEngine:
        contributions, failures = plugins.collect(HOOK, context_for or default_context,
                                                  expect=RulePack)
        loaded: list[LoadedPack] = []
        for contribution in contributions:
            pack = contribution.value
            jurisdiction = getattr(pack, "jurisdiction", None)
            if not isinstance(jurisdiction, str) or not jurisdiction:
                failures.append(PluginFailed(contribution.plugin,
                                             "a rule pack without a jurisdiction code"))
                continue
            loaded.append(LoadedPack(contribution.plugin, pack, jurisdiction,
                                     callable(getattr(pack, "check_timed", None))))
        return cls(loaded, venues=venues, clock=clock, load_failures=failures,
                   rule_timings=rule_timings)

    # -- building a context ---------------------------------------------------------------
    def bind_installed_venues(self, venues: Callable[[str], Mapping[str, tuple[str, Any]]]) -> None:
        """Venues a tenant's installed connectors bring (MIC -> (plugin, VenueDefinition))."""
        self._installed_venues = venues

    def _tenant_venue(self, mic: str, tick_size: Decimal | None, lot_size: Decimal | None
                      ) -> VenueFacts | None:
        tenant = current_tenant()
        if tenant is None or self._installed_venues is None:
            return None
        found = self._installed_venues(tenant).get(mic)
        if found is None:
            return None
        definition = found[1]
        info = definition.info
        return VenueFacts(info.mic, info.region, info.country, tuple(definition.regulators), info.currency,
                          tick_size or definition.tick_size, lot_size or definition.lot_size)

    def venue_facts(self, mic: str, price: Decimal | None, *, tick_size: Decimal | None = None,
                    lot_size: Decimal | None = None) -> VenueFacts:
        """The venue's facts for an order at `price`; `tick_size`/`lot_size` override the
        registry's table where the instrument's own data knows better."""
        entry = self._venues.get(mic)
        if entry is None:
            installed = self._tenant_venue(mic, tick_size, lot_size)
            if installed is not None:
                return installed
            hint = " (route the order to a venue first)" if mic in _UNROUTED else ""
            raise VenueUnknown(f"unknown venue {mic!r}{hint}")
        return entry.facts_at(price, tick_size, lot_size)

    def context(self, order: OrderRequest, *, instrument: InstrumentFacts, client: ClientProfile,
                account: AccountState, market: MarketState, controls: TenantControls,
                now: datetime | None = None, fx_rate: Decimal | None = None,
                tick_size: Decimal | None = None, lot_size: Decimal | None = None
                ) -> CheckContext:
        price = order.limit_price
        if price is None:
            price = order.stop_price if order.stop_price is not None else market.reference_price
        venue = self.venue_facts(order.mic, price, tick_size=tick_size, lot_size=lot_size)
        return CheckContext(order, instrument, venue, client, account, market, controls,
                            self._clock() if now is None else now, fx_rate)

    def evaluate(self, order: OrderRequest, **state: Any) -> Decision:
        """`context(order, **state)` and `check` it."""
        return self.check(self.context(order, **state))

    # -- selecting the packs ----------------------------------------------------------------
    def select(self, venue: VenueFacts, domicile: str) -> Selection:
        key = (venue.country, venue.region, venue.regulators, domicile)
        found = self._selections.get(key)
        if found is None:  # bounded: venues x two-letter domiciles (the order check enforces it)
            found = self._select(*key)
            self._selections[key] = found
        return found

    def _select(self, country: str, region: str, regulators: tuple[str, ...], domicile: str
                ) -> Selection:
        required = required_jurisdictions(country, region, regulators, domicile)
        running: list[LoadedPack] = []
        standing = list(self._standing)
        covered: set[str] = set()
        for loaded in self.packs:
            try:
                applies = loaded.pack.applies(country, domicile)
            except Exception as exc:  # a broken pack: its jurisdiction is denied, not skipped
                log.exception("compliance rule pack failed in applies()",
                              extra={"plugin": loaded.plugin, "jurisdiction": loaded.jurisdiction})
                standing.append(_pack_failed(loaded, exc))
                covered.add(loaded.jurisdiction)
                continue
            if applies:
                running.append(loaded)
                covered.add(loaded.jurisdiction)
        for jurisdiction in sorted(required - covered):
            standing.append(Denial(
                NO_RULE_PACK, ENGINE_RULE, jurisdiction,
                f"the order is under {jurisdiction} (venue country {country}, client domicile "
                f"{domicile}) and no rule pack covers it", f"a rule pack for {jurisdiction}",
                "none"))
        if not running and not required:
            standing.append(Denial(
                NO_RULE_PACK, ENGINE_RULE, "",
                f"no rule pack applies to venue country {country} and client domicile "
                f"{domicile}", "at least one rule pack", "none"))
        # Packs run in jurisdiction order, whatever order the plugins were collected in, so a
        # decision's denials read the same on every replica.
        running.sort(key=lambda p: (p.jurisdiction, p.plugin))
        return Selection(tuple(running), tuple(sorted(required | covered)),
                         tuple(dict.fromkeys(p.plugin for p in running)), tuple(standing))

    # -- a tenant's installed packs -----------------------------------------------------------
    def bind_installed(self, installed: Callable[[str], Sequence[tuple[str, Any]]],
                       check_all: Callable[[Sequence[Any], CheckContext], list[Any]]) -> None:
        """A tenant's installed rule packs (its marketplace plugins, sandboxed) and how to ask
        them all about one order in as few calls as possible. They only add restrictions:
        the platform's packs run as always, and a jurisdiction no built-in pack covers stays
        denied whatever the tenant installed."""
        self._installed = installed
        self._check_all = check_all

    def _tenant_denials(self, ctx: CheckContext) -> list[Denial]:
        tenant = current_tenant()
        installed = self._installed(tenant) if tenant is not None and self._installed else ()
        applying: list[LoadedPack] = []
        denials: list[Denial] = []
        for plugin, pack in installed:
            loaded = LoadedPack(plugin, pack, str(getattr(pack, "jurisdiction", "") or "?"), False)
            try:
                if pack.applies(ctx.venue.country, ctx.client.domicile):
                    applying.append(loaded)
            except Exception as exc:
                denials.append(_pack_failed(loaded, exc))
        if applying:
            answers = self._check_all([p.pack for p in applying], ctx)
            for loaded, answer in zip(applying, answers, strict=True):
                if isinstance(answer, Exception):
                    log.error("installed rule pack failed", extra={"plugin": loaded.plugin})
                    denials.append(_pack_failed(loaded, answer))
                else:
                    denials.extend(answer)
        return denials

    # -- the check --------------------------------------------------------------------------
    def check(self, ctx: CheckContext) -> Decision:
        clock = perf_counter_ns
        start = clock()
        problem = _order_problem(ctx)
        if problem is not None:
            required, value, message = problem
            denial = Denial(ORDER_INVALID, "order", "", message, required, value)
            return Decision(False, (denial,), (), (), (), ctx.now, clock() - start, ctx)
        selection = self.select(ctx.venue, ctx.client.domicile)
        denials = list(selection.standing)
        timings: list[RuleTiming] = []
        per_rule = self.rule_timings
        for loaded in selection.packs:
            try:
                if loaded.timed and per_rule:
                    found = loaded.pack.check_timed(ctx, timings)  # type: ignore[attr-defined]
                else:
                    began = clock()
                    found = loaded.pack.check(ctx)
                    timings.append((loaded.jurisdiction, "*", clock() - began))
                if type(found) is not list or (found and not all(type(d) is Denial
                                                                  for d in found)):
                    raise TypeError(f"check() answered {type(found).__name__}, "
                                    f"not a list of Denial")
            except Exception as exc:
                log.exception("compliance rule pack failed",
                              extra={"plugin": loaded.plugin, "jurisdiction": loaded.jurisdiction})
                denials.append(_pack_failed(loaded, exc))
                continue
            denials.extend(found)
        if self._installed is not None:
            denials.extend(self._tenant_denials(ctx))
        return Decision(not denials, tuple(denials), selection.jurisdictions, selection.plugins,
                        tuple(timings), ctx.now, clock() - start, ctx)


def _pack_failed(loaded: LoadedPack, exc: BaseException) -> Denial:
    # The exception's text stays in the log: it may carry anything, the record only the type.
    return Denial(PACK_FAILED, ENGINE_RULE, loaded.jurisdiction,
                  f"rule pack {loaded.plugin} ({loaded.jurisdiction}) failed; the order is denied "
                  f"because its rules could not be checked", "a pack that answers",
                  f"{loaded.plugin}: {type(exc).__name__}")
