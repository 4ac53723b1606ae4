"""`SimulatedExchange`: an `ExchangeConnector` that is itself the venue, for every MIC of the
venue directory it is given: one matching engine (book) per (MIC, symbol).

Sessions, from `context.venues`:
- Inside a trading window an order is checked and trades at once (matching.py).
- Outside (closed, holiday, lunch break): MARKET, IOC and FOK orders are rejected
  (SESSION_CLOSED); DAY, GTC and GTD orders are acknowledged PENDING_NEW and enter the book at
  the next open (a NEW report then, and whatever they trade). Resting orders stay on the book
  over a lunch break and overnight; nothing trades while the venue is closed, so a replace
  that would re-enter a resting order is refused then (a quantity decrease is accepted).
- DAY orders expire at the end of their trading day: the last close of the windows opening
  on that local date, so the afternoon of a lunch-break venue still counts. On the 24/7 venue
  a trading day ends at the venue's local midnight. GTD orders expire at `expire_at`, open or
  not.
- Time is the connector's own clock: the latest of the `submitted_at` and `on_clock` instants
  it has seen (it never goes back; an order stamped earlier is handled at the clock). Before
  anything else, a call first plays every due activation and expiry in time order.

Liquidity, from a market data source (the market twin): whenever a book is used at a new
instant (a submission, an activation at the open, `on_clock` for books holding client
orders), its synthetic orders are replaced by a ladder around the source's quote at that
instant. Where the source has the instrument's daily history the ladder follows the
square-root law (liquidity.py: depth that a large order walks at the cost the backtester
charges, a participation cap, and the mid displaced by what clients take, recovering with a
half-life); the first level is the quoted bid/ask with the quoted size. Without that history
(a source with quotes only) the ladder is flat: `depth` levels a side, each a tick further out
with one more multiple of the quoted size, and nothing moves the price. Sizes are cut to whole
lots. The ladder posts like incoming orders, so a client
order resting at a price the market has moved through fills, at the client's price. Liquidity
taken at an instant stays taken until the next instant, so repeating an order at one instant
does not find the same liquidity twice. Outside a session the twin quotes zero sizes and the
ladder is empty. A symbol the source does not list is refused (UNKNOWN_SYMBOL); a connector
built without a source trades any symbol, on client orders alone (that is how the tests
exercise the book).

Lot and tick sizes: the instrument's own (`Instrument.lot_size`/`tick_size` from the source)
where the source lists it, since the venue registry's tables are the common case and the
instrument may know better (a TOPIX 100 share ticks finer, a US share trades in odd lots);
otherwise the venue's price-banded rule through `VenueDirectory.lot_size`/`tick_size`. One
exception: `Instrument.lot_size` is a whole number, so on a venue with a fractional lot (the
24/7 venue's 1e-8) the venue's lot applies.

Not modelled: opening and closing auctions (orders queued for the open enter continuous
trading, in arrival order, at the open), hidden and iceberg orders, latency, halts.

Fees: `DEFAULT_FEES`, maker/taker basis points per venue. They are illustrative round figures,
of the order of magnitude of published schedules, not any venue's tariff; configure real ones
through the plugin's `fees` config. The alternative venues take less than their primaries
(their published taker fees are lower or per-share), so a router meets a real trade-off:
cheaper fees on a thinner book.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal, localcontext
from types import MappingProxyType
from typing import Any
from zoneinfo import ZoneInfo

from plugins.builtin.sim_exchange.book import ZERO, OrderBook
from plugins.builtin.sim_exchange.liquidity import (
    DEFAULT_LAW_DEPTH,
    Impact,
    LiquiditySettings,
    Profile,
    displaced,
    estimate,
    law_ladder,
)
from plugins.builtin.sim_exchange.matching import (
    PLACES,
    PRECISION,
    FeeSchedule,
    Ids,
    MatchingEngine,
    Reason,
    Rules,
    rejection,
)
from plugins.sdk import (
    ExecType,
    ExecutionReport,
    Instrument,
    MarketDataSource,
    OrderRequest,
    OrdStatus,
    OrdType,
    Quote,
    Side,
    TimeInForce,
    VenueDirectory,
    VenueQuote,
)

NAME = "sim-exchange"
DEFAULT_DEPTH = 5
# How far ahead the next open is looked for: longer than any run of closed days.
NEXT_OPEN_HORIZON = timedelta(days=30)
# Daily bars read for a liquidity profile: enough calendar days for 21 trading days.
PROFILE_LOOKBACK = timedelta(days=45)


def _fees(maker: str, taker: str) -> FeeSchedule:
    return FeeSchedule(Decimal(maker), Decimal(taker))


# Illustrative maker/taker fees in basis points of notional (see the module docstring).
DEFAULT_FEES: Mapping[str, FeeSchedule] = MappingProxyType({
    "XNYS": _fees("-0.10", "0.30"), "XNAS": _fees("-0.15", "0.30"), "XTSE": _fees("0.00", "0.40"),
    "XMEX": _fees("0.50", "0.50"), "XLON": _fees("0.00", "0.45"), "XPAR": _fees("0.00", "0.40"),
    "XAMS": _fees("0.00", "0.40"), "XETR": _fees("0.00", "0.35"), "XMIL": _fees("0.00", "0.50"),
    "XTKS": _fees("0.00", "0.20"), "XHKG": _fees("0.60", "0.60"), "XSHG": _fees("0.50", "0.50"),
    "XASX": _fees("0.00", "0.30"), "XNSE": _fees("0.30", "0.30"), "ALPX": _fees("2.00", "8.00"),
    # Alternative venues (illustrative too)
    "BATS": _fees("-0.10", "0.15"), "ARCX": _fees("-0.10", "0.20"), "IEXG": _fees("0.05", "0.05"),
    "CHIX": _fees("-0.10", "0.15"), "TRQX": _fees("-0.10", "0.15"), "AQXE": _fees("0.00", "0.14"),
    "CEUX": _fees("-0.10", "0.15"), "AQEU": _fees("0.00", "0.14"), "CHIJ": _fees("0.00", "0.10"),
    "SBIJ": _fees("0.00", "0.08"), "CXAC": _fees("0.00", "0.15"),
})
FALLBACK_FEES = _fees("0.50", "0.50")


@dataclass(frozen=True)
class _Listing:
    instrument: Instrument
    source: MarketDataSource


def ladder(quote: Quote | None, rules: Rules, depth: int) -> list[tuple[Side, Decimal, Decimal]]:
    """The synthetic orders around `quote` (see the module docstring), best first per side."""
    out: list[tuple[Side, Decimal, Decimal]] = []
    if quote is None:
        return out
    for side, top, size in ((Side.BUY, quote.bid, quote.bid_size), (Side.SELL, quote.ask, quote.ask_size)):
        price = top
        for k in range(depth):
            if size <= ZERO or price <= ZERO:
                break
            lot = rules.lot(price)
            quantity = (size * (k + 1) // lot) * lot
            if quantity > ZERO:
                out.append((side, price, quantity))
            price = _step(price, rules, up=side is Side.SELL)
    return out


def _step(price: Decimal, rules: Rules, *, up: bool) -> Decimal:
    """The next price a tick away, on the tick of the band it lands in."""
    nxt = price + rules.tick(price) if up else price - rules.tick(price)
    if nxt <= ZERO:
        return ZERO
    tick = rules.tick(nxt)
    steps = nxt / tick
    whole = steps.to_integral_value(rounding=ROUND_CEILING if up else ROUND_FLOOR)
    return whole * tick


def _aware(at: object) -> bool:
    return isinstance(at, datetime) and at.tzinfo is not None and at.utcoffset() is not None


class SimulatedExchange:
    """The built-in exchange connector (module docstring: sessions, liquidity, rules, fees)."""

    def __init__(self, venues: VenueDirectory, *, sources: Sequence[MarketDataSource] = (),
                 fees: Mapping[str, FeeSchedule] | None = None, mics: Iterable[str] | None = None,
                 depth: int = DEFAULT_DEPTH, name: str = NAME,
                 logger: logging.Logger | None = None, liquidity: LiquiditySettings | None = None,
                 law_depth: int = DEFAULT_LAW_DEPTH) -> None:
        if depth < 0 or law_depth < 0:
            raise ValueError("depth must be zero or more")
        self.name = name
        self.venues = venues
        self.depth = depth
        self.law_depth = law_depth
        self.liquidity = liquidity or LiquiditySettings()
        # Per (MIC, symbol): the law's profile for a UTC day (None: no history), the impact.
        self._profiles: dict[tuple[str, str], tuple[object, Profile | None]] = {}
        self._impacts: dict[tuple[str, str], Impact] = {}
        self.log = logger or logging.getLogger(f"alphintra.plugin.{name}")
        self._mics = [m.upper() for m in mics] if mics is not None else [v.mic for v in venues.venues()]
        self._mic_set = frozenset(self._mics)
        self._fees = {**DEFAULT_FEES, **{k.upper(): v for k, v in (fees or {}).items()}}
        self._listings: dict[tuple[str, str], _Listing] = {}
        for source in sources:
            for instrument in source.instruments():
                key = (instrument.mic.upper(), instrument.symbol)
                if key[0] in self._mic_set:
                    self._listings.setdefault(key, _Listing(instrument, source))
        # With a market behind it the venue lists what the market lists; without, anything.
        self._listed_only = bool(sources)
        self._engines: dict[tuple[str, str], MatchingEngine] = {}
        self._located: dict[str, tuple[str, str] | None] = {}  # client order id -> book; None: rejected
        # Due activations and expiries: (when, seq, kind, mic, symbol, client order id).
        self._events: list[tuple[datetime, int, str, str, str, str]] = []
        self._event_seq = itertools.count()
        self._clock: datetime | None = None
        self._ids = Ids(name)
        # Set by `restore`: ids issued from then on carry it, so a restored order's new fills
        # never repeat an execution id it had before the restart (nor new orders its venue id).
        self._epoch = ""
        # One call at a time (the books are not thread-safe), each in a decimal context precise
        # enough for exact notionals (matching.PRECISION).
        self._lock = threading.RLock()

    # -- the ExchangeConnector protocol -------------------------------------------------------

    def mics(self) -> list[str]:
        return list(self._mics)

    def submit(self, order: OrderRequest) -> list[ExecutionReport]:
        with self._lock, localcontext(prec=PRECISION):
            if not _aware(order.submitted_at):
                return [rejection(order, Reason.INVALID_ORDER, "submitted_at must be timezone-aware",
                                  self._now(), self._ids)]
            reports = self._advance(order.submitted_at)
            reports.extend(self._submit(order, self._now()))
            self._settle(self._now())
            return reports

    def cancel(self, client_order_id: str, mic: str) -> ExecutionReport:
        with self._lock, localcontext(prec=PRECISION):
            at = self._now()
            found = self._find(client_order_id, mic, at)
            if isinstance(found, ExecutionReport):
                return found
            return found.cancel(client_order_id, at)

    def replace(self, client_order_id: str, mic: str, quantity: Decimal,
                limit_price: Decimal | None) -> list[ExecutionReport]:
        with self._lock, localcontext(prec=PRECISION):
            at = self._now()
            found = self._find(client_order_id, mic, at)
            if isinstance(found, ExecutionReport):
                return [found]
            may_trade = self._is_open_or_false(found.mic, at)
            reports = self._refresh(found, at) if may_trade else []
            reports.extend(found.replace(client_order_id, quantity, limit_price, at, may_trade=may_trade))
            self._settle(at)
            return reports

    def quote_for(self, order: OrderRequest) -> VenueQuote | None:
        with self._lock, localcontext(prec=PRECISION):
            mic = str(order.mic or "").upper()
            key = (mic, order.symbol)
            if mic not in self._mic_set or (self._listed_only and key not in self._listings):
                return None
            fee = self._fee(mic).taker_bps

            def refused(reason: Reason) -> VenueQuote:
                return VenueQuote(mic, None, ZERO, fee, reason.value)

            if not _aware(order.submitted_at):
                return refused(Reason.INVALID_ORDER)
            listing = self._listings.get(key)
            if listing is not None and order.currency and order.currency != listing.instrument.currency:
                return refused(Reason.CURRENCY_MISMATCH)
            engine = self._engines.get(key) or self._new_engine(mic, order.symbol)
            problem = engine.check(order)
            if problem is not None:
                return refused(problem[0])
            at = max(order.submitted_at, self._clock or order.submitted_at)
            try:
                is_open = self.venues.is_open(mic, at)
            except Exception:
                self.log.exception("venue directory failed", extra={"mic": mic})
                return refused(Reason.SESSION_UNAVAILABLE)
            if not is_open:
                immediate = OrdType(order.ord_type) is OrdType.MARKET or \
                    TimeInForce(order.time_in_force) in (TimeInForce.IOC, TimeInForce.FOK)
                return VenueQuote(mic, None, ZERO, fee,
                                  Reason.SESSION_CLOSED.value if immediate else None)
            fresh = None
            if listing is not None and engine.refreshed_at != at:
                fresh, _ = self._ladder(listing, engine, at)
            quantity, notional = engine.preview(order, fresh)
            expected = (notional / quantity).quantize(PLACES) if quantity else None
            return VenueQuote(mic, expected, quantity, fee)

    def on_clock(self, at: datetime) -> list[ExecutionReport]:
        with self._lock, localcontext(prec=PRECISION):
            if not _aware(at):
                raise ValueError("on_clock needs a timezone-aware instant")
            reports = self._advance(at)
            now = self._now()
            for (mic, symbol), engine in self._engines.items():
                if (mic, symbol) in self._listings and engine.has_waiting_orders() \
                        and self._is_open_or_false(mic, now):
                    reports.extend(self._refresh(engine, now))
            self._settle(now)
            return reports

    # -- after a restart ------------------------------------------------------------------------

    def restore(self, orders: Iterable[Any], at: datetime) -> list[ExecutionReport]:
        """Orders this venue held before a restart (its books live in memory), back on their
        books. The gateway calls it once, before anything else, with what its database holds
        open here; each item has `request` (the OrderRequest as first sent: total quantity,
        submitted_at), `venue_order_id`, `cum_qty`, `notional` (the fills' quantity x price),
        `fees` and `queued` (acknowledged PENDING_NEW, waiting for an open).

        Oldest first, so time priority is kept among them. A live order goes back to its book
        with what it has left, without a report: it trades when something crosses it (the
        market moving through it, at the next clock call). A queued order waits for the
        first open after its submission again; an open that passed while the gateway was
        down is played at the next clock call, as are expiries that fell due meanwhile (DAY
        at the end of its trading day, GTD at its time), each with its report. An order the
        venue cannot take back (a venue or symbol no longer here, an IOC, FOK or MARKET order,
        which never rests, a rule it no longer meets, no session data) is answered with a
        CANCELED report, VENUE_RESTARTED, saying why. An order already known here is left as
        it is. Not restored: the market between the restart and now (a resting order the
        market crossed and left while the gateway was down does not fill)."""
        with self._lock, localcontext(prec=PRECISION):
            if not _aware(at):
                raise ValueError("restore needs a timezone-aware instant")
            items = sorted(orders, key=lambda o: o.request.submitted_at)
            if items and not self._epoch:
                self._epoch = f"-R{uuid.uuid4().hex[:6]}"
                self._ids = Ids(f"{self.name}{self._epoch}")
            reports: list[ExecutionReport] = []
            for item in items:
                cid = item.request.client_order_id
                if cid in self._located:
                    continue
                try:
                    reports.extend(self._restore_one(item, at))
                except _NotRestored as exc:
                    self._located[cid] = None
                    reports.append(self._restart_cancel(item, str(exc), at))
            return reports

    def _restore_one(self, item: Any, at: datetime) -> list[ExecutionReport]:
        r: OrderRequest = item.request
        mic = str(r.mic or "").upper()
        key = (mic, r.symbol)
        if mic not in self._mic_set:
            raise _NotRestored(f"no venue {r.mic!r} here")
        if self._listed_only and key not in self._listings:
            raise _NotRestored(f"{r.symbol} is no longer listed on {mic}")
        if not _aware(r.submitted_at):
            raise _NotRestored("submitted_at must be timezone-aware")
        if OrdType(r.ord_type) is OrdType.MARKET or \
                TimeInForce(r.time_in_force) in (TimeInForce.IOC, TimeInForce.FOK):
            raise _NotRestored(f"a {r.time_in_force} {r.ord_type} order never rests")
        if item.cum_qty >= r.quantity:
            raise _NotRestored("nothing left to rest")
        engine = self._engine(mic, r.symbol)
        problem = engine.check(r)
        if problem is not None:
            raise _NotRestored(problem[1])
        tif = TimeInForce(r.time_in_force)
        try:
            if item.queued:
                opens_at = self._next_open(mic, r.submitted_at)
                if opens_at is None:
                    raise _NotRestored(f"{mic} has no open in sight")
                day_end = None
            else:
                opens_at = None
                day_end = self._restored_day_end(mic, r.submitted_at) if tif is TimeInForce.DAY else None
        except _NotRestored:
            raise
        except Exception as exc:
            self.log.exception("venue directory failed", extra={"mic": mic})
            raise _NotRestored(f"no session data: {exc}") from None
        self._located[r.client_order_id] = key
        reports = engine.restore(r, item.venue_order_id, at, cum_qty=item.cum_qty,
                                 notional=item.notional, fees=item.fees, queued=item.queued,
                                 day_end=day_end)
        if opens_at is not None:
            self._push(opens_at, "OPEN", key, r.client_order_id)
        self._schedule_expiry(engine, r.client_order_id)
        return reports

    def _restored_day_end(self, mic: str, submitted_at: datetime) -> datetime:
        """The end of the trading day a restored DAY order entered the book in: the day it was
        submitted in when the venue was open then, else the day of the next open (it was
        queued and activated there)."""
        if self.venues.is_open(mic, submitted_at):
            return self._day_end(mic, submitted_at)
        opens_at = self._next_open(mic, submitted_at)
        if opens_at is None:
            raise _NotRestored(f"{mic} has no open in sight")
        return self._day_end(mic, opens_at)

    def _restart_cancel(self, item: Any, why: str, at: datetime) -> ExecutionReport:
        r: OrderRequest = item.request
        cum = item.cum_qty
        avg = (item.notional / cum).quantize(PLACES) if cum else ZERO
        side = Side(r.side) if r.side in tuple(Side) else None
        return ExecutionReport(
            exec_type=ExecType.CANCELED, ord_status=OrdStatus.CANCELED,
            client_order_id=r.client_order_id, venue_order_id=item.venue_order_id or "",
            last_qty=ZERO, last_px=ZERO, cum_qty=cum, leaves_qty=ZERO, avg_px=avg, fee=ZERO,
            text=f"the venue restarted and could not take the order back: {why}"[:500],
            reject_code=Reason.VENUE_RESTARTED.value, at=at, exec_id=self._ids.execution(),
            mic=str(r.mic).upper(), symbol=str(r.symbol), side=side)

    # -- inspection (tests, tools) -------------------------------------------------------------

    def engine(self, mic: str, symbol: str) -> MatchingEngine:
        return self._engine(mic.upper(), symbol)

    def book(self, mic: str, symbol: str) -> OrderBook:
        return self.engine(mic, symbol).book

    def fees(self, mic: str) -> FeeSchedule:
        return self._fee(mic.upper())

    @property
    def clock(self) -> datetime | None:
        return self._clock

    # -- internals ----------------------------------------------------------------------------

    def _now(self) -> datetime:
        return self._clock or datetime.now(UTC)

    def _fee(self, mic: str) -> FeeSchedule:
        return self._fees.get(mic, FALLBACK_FEES)

    def _rules(self, mic: str, symbol: str) -> Rules:
        listing = self._listings.get((mic, symbol))
        venues = self.venues
        if listing is not None:
            tick, whole_lot = listing.instrument.tick_size, Decimal(listing.instrument.lot_size)

            def lot(price: Decimal) -> Decimal:
                # Instrument.lot_size is a whole number, so it cannot say "fractions allowed":
                # where the venue trades fractions, its own lot applies.
                venue_lot = venues.lot_size(mic, price)
                return venue_lot if venue_lot < 1 else whole_lot

            return Rules(tick=lambda _price: tick, lot=lot)
        return Rules(tick=lambda price: venues.tick_size(mic, price),
                     lot=lambda price: venues.lot_size(mic, price))

    def _new_engine(self, mic: str, symbol: str) -> MatchingEngine:
        return MatchingEngine(mic, symbol, self._rules(mic, symbol), self._fee(mic),
                              Ids(f"{mic}-{symbol}{self._epoch}"))

    def _engine(self, mic: str, symbol: str) -> MatchingEngine:
        key = (mic, symbol)
        if key not in self._engines:
            self._engines[key] = self._new_engine(mic, symbol)
        return self._engines[key]

    def _find(self, client_order_id: str, mic: str, at: datetime) -> MatchingEngine | ExecutionReport:
        """The engine holding an order, or the report refusing a cancel/replace of it."""
        located = self._located.get(client_order_id, ("", ""))
        if located is not None and located[0] != str(mic).upper():
            return self._refusal(client_order_id, mic, at, Reason.UNKNOWN_ORDER,
                                 "no such order on this venue", OrdStatus.REJECTED)
        if located is None:
            return self._refusal(client_order_id, mic, at, Reason.TOO_LATE,
                                 "the order was rejected", OrdStatus.REJECTED)
        return self._engines[located]

    def _refusal(self, client_order_id: str, mic: str, at: datetime, reason: Reason, text: str,
                 status: OrdStatus) -> ExecutionReport:
        return ExecutionReport(
            exec_type=ExecType.REJECTED, ord_status=status, client_order_id=client_order_id,
            venue_order_id="", last_qty=ZERO, last_px=ZERO, cum_qty=ZERO, leaves_qty=ZERO,
            avg_px=ZERO, fee=ZERO, text=text, reject_code=reason.value, at=at,
            exec_id=self._ids.execution(), mic=str(mic).upper())

    def _reject(self, order: OrderRequest, reason: Reason, text: str, at: datetime) -> list[ExecutionReport]:
        self._located.setdefault(order.client_order_id, None)
        return [rejection(order, reason, text, at, self._ids)]

    def _submit(self, order: OrderRequest, at: datetime) -> list[ExecutionReport]:
        if order.client_order_id in self._located:
            return [rejection(order, Reason.DUPLICATE_ORDER_ID,
                              "client order id already used on this connector", at, self._ids)]
        mic = str(order.mic or "").upper()
        if mic not in self._mic_set:
            return self._reject(order, Reason.UNKNOWN_VENUE, f"no venue {order.mic!r} here", at)
        key = (mic, order.symbol)
        listing = self._listings.get(key)
        if self._listed_only and listing is None:
            return self._reject(order, Reason.UNKNOWN_SYMBOL, f"{order.symbol} is not listed on {mic}", at)
        if listing is not None and order.currency and order.currency != listing.instrument.currency:
            return self._reject(order, Reason.CURRENCY_MISMATCH,
                                f"{order.symbol} trades in {listing.instrument.currency} on {mic}", at)
        engine = self._engine(mic, order.symbol)
        problem = engine.check(order)
        if problem is not None:
            return self._reject(order, problem[0], problem[1], at)
        ord_type, tif = OrdType(order.ord_type), TimeInForce(order.time_in_force)
        try:
            is_open = self.venues.is_open(mic, at)
            day_end = self._day_end(mic, at) if is_open and tif is TimeInForce.DAY else None
            opens_at = None if is_open else self._next_open(mic, at)
        except Exception as exc:
            self.log.exception("venue directory failed", extra={"mic": mic})
            return self._reject(order, Reason.SESSION_UNAVAILABLE, f"no session data: {exc}", at)
        if is_open:
            reports = self._refresh(engine, at)
            self._located[order.client_order_id] = key
            reports.extend(engine.accept(order, engine.ids.order(), at, day_end))
            self._schedule_expiry(engine, order.client_order_id)
            return reports
        if ord_type is OrdType.MARKET or tif in (TimeInForce.IOC, TimeInForce.FOK):
            return self._reject(order, Reason.SESSION_CLOSED,
                                f"{mic} is closed; {tif} and MARKET orders are not queued", at)
        if opens_at is None:
            return self._reject(order, Reason.SESSION_UNAVAILABLE, f"{mic} has no open in sight", at)
        self._located[order.client_order_id] = key
        reports = engine.queue(order, engine.ids.order(), at, opens_at)
        self._push(opens_at, "OPEN", key, order.client_order_id)
        self._schedule_expiry(engine, order.client_order_id)
        return reports

    def _push(self, when: datetime, kind: str, key: tuple[str, str], client_order_id: str) -> None:
        heapq.heappush(self._events, (when, next(self._event_seq), kind, key[0], key[1], client_order_id))

    def _schedule_expiry(self, engine: MatchingEngine, client_order_id: str) -> None:
        order = engine.orders[client_order_id]
        if order.expire_at is not None and not order.status.is_terminal:
            self._push(order.expire_at, "EXPIRE", (engine.mic, engine.symbol), client_order_id)

    def _advance(self, at: datetime) -> list[ExecutionReport]:
        """Move the clock to `at` (never back), playing due activations and expiries in order."""
        if self._clock is not None and at < self._clock:
            at = self._clock
        reports: list[ExecutionReport] = []
        while self._events and self._events[0][0] <= at:
            when, _, kind, mic, symbol, client_order_id = heapq.heappop(self._events)
            engine = self._engines[(mic, symbol)]
            order = engine.orders[client_order_id]
            if kind == "EXPIRE":
                reports.extend(engine.expire(client_order_id, when))
            elif order.status is OrdStatus.PENDING_NEW:
                day_end = self._day_end(mic, when) if order.tif is TimeInForce.DAY else None
                reports.extend(self._refresh(engine, when))
                reports.extend(engine.activate(client_order_id, when, day_end))
                self._settle(when)
                if order.tif is TimeInForce.DAY:  # a GTD's expiry was scheduled when queued
                    self._schedule_expiry(engine, client_order_id)
        self._clock = at
        return reports

    def _refresh(self, engine: MatchingEngine, at: datetime) -> list[ExecutionReport]:
        listing = self._listings.get((engine.mic, engine.symbol))
        if listing is None or engine.refreshed_at == at:
            return []
        levels, capped = self._ladder(listing, engine, at)
        note = f"at most {self.liquidity.describe_cap()} at one instant" if capped else None
        return engine.refresh(levels, at, cap_note=note)

    def _ladder(self, listing: _Listing, engine: MatchingEngine, at: datetime
                ) -> tuple[list[tuple[Side, Decimal, Decimal]], bool]:
        """The synthetic orders at `at` and whether the participation cap bounds them: the
        law's book around the displaced quote where the instrument has a profile, else the
        flat ladder (module docstring)."""
        quote = listing.source.quote(listing.instrument, at)
        profile = self._profile(engine, listing, at) if quote is not None and quote.ask_size > 0 else None
        if profile is None:
            return ladder(quote, engine.rules, self.depth), False
        impact = self._impacts.get((engine.mic, engine.symbol))
        if impact is not None and quote is not None:
            mid = (quote.bid + quote.ask) / 2
            quote = displaced(quote, impact.now(at, self.liquidity.half_life), engine.rules.tick(mid))
        return law_ladder(quote, engine.rules.tick, engine.rules.lot, self.law_depth, profile,
                          self.liquidity), True

    def _profile(self, engine: MatchingEngine, listing: _Listing, at: datetime) -> Profile | None:
        """The instrument's profile on this venue for the venue's local day of `at`
        (liquidity.py), measured once a local day from the daily bars that start before the
        venue's local midnight (a venue that opens before UTC midnight, XASX or CXAC, must not
        read today's bar, whose volume is the whole day's); None when the source has no daily
        history for it."""
        key = (engine.mic, engine.symbol)
        try:
            zone: ZoneInfo | Any = ZoneInfo(self.venues.venue(engine.mic).timezone)
        except Exception:  # a venue the directory does not know: UTC days
            zone = UTC
        day = at.astimezone(zone).date()
        cached = self._profiles.get(key)
        if cached is not None and cached[0] == day:
            return cached[1]
        profile = None
        start = datetime.combine(day, time(), zone).astimezone(UTC)
        try:
            bars = listing.source.bars(listing.instrument, start - PROFILE_LOOKBACK, start, "1d")
            profile = estimate(list(bars), self._minutes_a_day(engine.mic, start))
        except Exception:
            # A source that cannot answer bars still quotes: the flat ladder serves it.
            self.log.warning("no daily history for %s on %s; flat liquidity", engine.symbol,
                             engine.mic, exc_info=True)
        self._profiles[key] = (day, profile)
        return profile

    def _minutes_a_day(self, mic: str, before: datetime) -> Decimal:
        """Mean trading minutes a day over the week before `before` (1,440 on a 24/7 venue)."""
        if self.venues.venue(mic).always_open:
            return Decimal(1440)
        windows = self.venues.sessions(mic, before - timedelta(days=7), before)
        days = {w.opens_at.date() for w in windows}
        minutes = sum((w.closes_at - w.opens_at).total_seconds() / 60 for w in windows)
        return Decimal(str(round(minutes / len(days)))) if days else Decimal(390)

    def _settle(self, at: datetime) -> None:
        """What clients took from the synthetic books since the last call moves their mids."""
        for key, engine in self._engines.items():
            flow = engine.take_synthetic_flow()
            if not flow:
                continue
            cached = self._profiles.get(key)
            profile = cached[1] if cached is not None else None
            if profile is not None:
                self._impacts[key] = Impact.after(self._impacts.get(key), at, flow, profile,
                                                  self.liquidity)

    def displacement(self, mic: str, symbol: str, at: datetime) -> Decimal:
        """The mid's displacement on a venue at `at`, as a fraction (inspection, tests)."""
        impact = self._impacts.get((mic.upper(), symbol))
        return impact.now(at, self.liquidity.half_life) if impact is not None else ZERO

    def _is_open_or_false(self, mic: str, at: datetime) -> bool:
        try:
            return self.venues.is_open(mic, at)
        except Exception:
            self.log.exception("venue directory failed", extra={"mic": mic})
            return False

    def _next_open(self, mic: str, at: datetime) -> datetime | None:
        for window in self.venues.sessions(mic, at, at + NEXT_OPEN_HORIZON):
            if window.opens_at > at:
                return window.opens_at
        return None

    def _day_end(self, mic: str, at: datetime) -> datetime:
        """When the trading day `at` lies in ends (see the module docstring)."""
        info = self.venues.venue(mic)
        zone = ZoneInfo(info.timezone)
        if info.always_open:
            local = at.astimezone(zone).date() + timedelta(days=1)
            return datetime.combine(local, time(), zone).astimezone(UTC)
        windows = self.venues.sessions(mic, at - timedelta(days=1), at + timedelta(days=2))
        current = next((w for w in windows if w.opens_at <= at < w.closes_at), None)
        if current is None:
            return at
        day = current.opens_at.astimezone(zone).date()
        return max(w.closes_at for w in windows if w.opens_at.astimezone(zone).date() == day)


class _NotRestored(Exception):
    """Why `restore` cannot take an order back."""


def parse_fees(config: Mapping[str, Any]) -> dict[str, FeeSchedule]:
    """`{"XNAS": {"maker_bps": "-0.2", "taker_bps": "0.3"}, …}` (numbers as strings, read
    exactly) into fee schedules."""
    out = {}
    for mic, fees in config.items():
        out[str(mic).upper()] = FeeSchedule(Decimal(str(fees["maker_bps"])), Decimal(str(fees["taker_bps"])))
    return out
