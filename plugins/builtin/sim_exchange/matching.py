"""The matching engine of one instrument on one simulated venue.

Continuous trading in price-time priority: an incoming order trades against the best opposite
level first, and within a level against the oldest order first, always at the resting order's
price. What the engine does, and the choices it makes where venues differ:

- LIMIT trades what crosses its limit; the rest rests (DAY, GTC, GTD) or is cancelled (IOC).
  MARKET trades whatever is there and cancels the rest (it never rests).
- FOK is checked before anything executes: if the quantity that would fill (self-trades
  excluded) is short of the whole order, the order is cancelled untouched (FOK_UNFILLED).
- STOP and STOP_LIMIT wait off the book until the last trade price reaches the stop (a buy
  at or above it, a sell at or below it); then a STOP trades as a MARKET order and a
  STOP_LIMIT as a LIMIT order at its limit, with time priority from the trigger. A stop whose
  condition already holds on arrival triggers at once. Triggers cascade: fills caused by a
  triggered stop can trigger others, in arrival order.
- Replace (cancel/replace, FIX 35=G) keeps the order's time priority when only its quantity
  goes down, and loses it (re-enters as if new, and may trade at once) when the price changes
  or the quantity goes up. The new quantity is the total order quantity, fills included, and
  must exceed what has filled (cancel instead).
- Self-trade prevention per account, "cancel resting": when an order would trade against a
  resting order of the same account, the resting order is cancelled (SELF_TRADE_PREVENTED)
  and matching goes on with the next one. Cancelling the older order is what most venues
  default to (e.g. Nasdaq's and Cboe's "cancel oldest"), and it never leaves the incoming
  order's fills depending on an order its owner has just superseded.
- Lot and tick sizes: a price must be a multiple of the tick at that price and a quantity of
  the lot (LOT_SIZE / TICK_SIZE rejections). Which rule applies is the connector's business
  (`Rules`); the engine only asks.
- Fees: maker (resting side) and taker (aggressor) fees in basis points of each fill's
  notional; a negative maker fee is a rebate.

Synthetic liquidity (`refresh`) is a set of orders of no client that the connector replaces
with a fresh ladder whenever the simulated market is read (see connector.py): they trade
like any order, but produce no reports and are never self-trade checked. What clients take
from them is counted (`synthetic_flow`) for the connector to move the venue's price; when the
ladder is bounded by the venue's participation cap, an immediate order that takes all of one
side has its rest cancelled PARTICIPATION_LIMIT (a resting order's rest rests).

Decimal throughout; `avg_px` and fees are rounded half-even to 8 decimal places (the exact
fill prices and quantities are in the reports, so nothing is lost). The engine knows no
sessions and no clock: every call says when it happens, and the connector decides whether
an order may trade now.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal, InvalidOperation
from enum import StrEnum

from plugins.builtin.sim_exchange.book import ZERO, OrderBook
from plugins.sdk import ExecType, ExecutionReport, OrderRequest, OrdStatus, OrdType, Side, TimeInForce

PLACES = Decimal("0.00000001")  # avg_px and fees
BPS = Decimal(10_000)
# Prices and quantities the venue takes: below 10^15 with at most 12 decimal places, so a
# notional is exact within PRECISION digits (the connector runs the engine in a decimal
# context of that precision; the default 28 digits could round a large notional).
MAX_AMOUNT = Decimal("1e15")
MIN_EXPONENT = -12
PRECISION = 60
OUT_OF_RANGE = "is not a Decimal above 0 and below 1e15 with at most 12 decimal places"


class Reason(StrEnum):
    """Stable codes in `ExecutionReport.reject_code`."""

    # The order is refused.
    INVALID_ORDER = "INVALID_ORDER"  # a field missing, of the wrong kind, or inconsistent
    INVALID_QUANTITY = "INVALID_QUANTITY"  # not a finite Decimal above zero
    INVALID_PRICE = "INVALID_PRICE"  # not a finite Decimal above zero
    LOT_SIZE = "LOT_SIZE"
    TICK_SIZE = "TICK_SIZE"
    UNKNOWN_VENUE = "UNKNOWN_VENUE"
    UNKNOWN_SYMBOL = "UNKNOWN_SYMBOL"
    CURRENCY_MISMATCH = "CURRENCY_MISMATCH"
    DUPLICATE_ORDER_ID = "DUPLICATE_ORDER_ID"
    EXPIRE_TIME_INVALID = "EXPIRE_TIME_INVALID"  # GTD without an aware expire_at after submission
    SESSION_CLOSED = "SESSION_CLOSED"  # IOC, FOK or MARKET outside the venue's hours
    SESSION_UNAVAILABLE = "SESSION_UNAVAILABLE"  # the venue directory cannot say (out of range)
    # A cancel or replace is refused (the order stays as it was).
    UNKNOWN_ORDER = "UNKNOWN_ORDER"
    TOO_LATE = "TOO_LATE"  # the order is already filled, cancelled, rejected or expired
    QUANTITY_BELOW_FILLED = "QUANTITY_BELOW_FILLED"
    # The venue itself cancels or expires (part of) an order.
    IOC_REMAINDER = "IOC_REMAINDER"
    FOK_UNFILLED = "FOK_UNFILLED"
    MARKET_NO_LIQUIDITY = "MARKET_NO_LIQUIDITY"  # a market order's unfilled rest
    # A market or IOC order's rest once it took all the venue shows at once (liquidity.py).
    PARTICIPATION_LIMIT = "PARTICIPATION_LIMIT"
    SELF_TRADE_PREVENTED = "SELF_TRADE_PREVENTED"
    DAY_EXPIRED = "DAY_EXPIRED"
    GTD_EXPIRED = "GTD_EXPIRED"
    VENUE_RESTARTED = "VENUE_RESTARTED"  # held before a restart and not taken back (connector.restore)


@dataclass(frozen=True)
class Rules:
    """Tick and lot size at a price, for one instrument on one venue."""

    tick: Callable[[Decimal], Decimal]
    lot: Callable[[Decimal], Decimal]


@dataclass(frozen=True)
class FeeSchedule:
    maker_bps: Decimal  # resting side; negative is a rebate
    taker_bps: Decimal  # aggressor


class Ids:
    """Venue order ids, execution ids and match ids, unique within one connector."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self._orders = itertools.count(1)
        self._execs = itertools.count(1)
        self._matches = itertools.count(1)

    def order(self) -> str:
        return f"{self.prefix}-O{next(self._orders)}"

    def execution(self) -> str:
        return f"{self.prefix}-E{next(self._execs)}"

    def match(self) -> str:
        return f"{self.prefix}-M{next(self._matches)}"


@dataclass(eq=False)
class Order:
    """An order's state inside the engine; also what rests on the book (`book.BookEntry`)."""

    order_id: str  # the client order id (synthetic orders: a private one)
    venue_order_id: str
    account: str
    side: Side
    ord_type: OrdType
    tif: TimeInForce
    quantity: Decimal  # total, fills included
    price: Decimal  # limit price; unused (zero) for orders that trade at market
    stop_price: Decimal | None
    leaves: Decimal
    status: OrdStatus
    request: OrderRequest | None = None
    synthetic: bool = False
    triggered: bool = False
    cum_qty: Decimal = ZERO
    notional: Decimal = ZERO
    fees: Decimal = ZERO
    expire_at: datetime | None = None  # when a DAY or GTD order expires, once known
    is_buy: bool = field(init=False)

    def __post_init__(self) -> None:
        self.is_buy = self.side is Side.BUY

    @property
    def at_market(self) -> bool:
        """Trades at any price: MARKET, or a STOP once triggered."""
        return self.ord_type is OrdType.MARKET or self.ord_type is OrdType.STOP

    @property
    def is_stop(self) -> bool:
        return self.ord_type in (OrdType.STOP, OrdType.STOP_LIMIT)

    @property
    def avg_px(self) -> Decimal:
        return (self.notional / self.cum_qty).quantize(PLACES) if self.cum_qty else ZERO


def _positive(value: object) -> bool:
    """A finite Decimal above zero, below MAX_AMOUNT, with at most 12 decimal places."""
    return (isinstance(value, Decimal) and value.is_finite() and ZERO < value < MAX_AMOUNT
            and int(value.normalize().as_tuple().exponent) >= MIN_EXPONENT)


def on_step(value: Decimal, step: Decimal) -> bool:
    try:
        return step > ZERO and value % step == ZERO
    except InvalidOperation:  # a quotient beyond the context's precision: not a sane multiple
        return False


class MatchingEngine:
    """One instrument's book, stops and orders on one venue."""

    def __init__(self, mic: str, symbol: str, rules: Rules, fees: FeeSchedule, ids: Ids) -> None:
        self.mic = mic
        self.symbol = symbol
        self.rules = rules
        self.fees = fees
        self.ids = ids
        self.book = OrderBook()
        self.orders: dict[str, Order] = {}  # client orders, live and done, by client order id
        self.stops: list[Order] = []  # untriggered stops in trigger priority (arrival) order
        self.last_price: Decimal | None = None
        self.volume = ZERO
        self.refreshed_at: datetime | None = None
        # Signed quantity clients took from (or gave to) synthetic orders, buys positive, since
        # the connector last read it: what moves the venue's price (liquidity.py).
        self.synthetic_flow = ZERO
        # Set when the ladder is bounded by the venue's participation cap: why it is so.
        self.cap_note: str | None = None
        self._synthetic: list[Order] = []
        # The sides (is_buy) the capped ladder put liquidity on at the last refresh: a side
        # empty to begin with is no cap reached (MARKET_NO_LIQUIDITY, not PARTICIPATION_LIMIT).
        self._capped_sides: frozenset[bool] = frozenset()
        self._synthetic_ids = itertools.count(1)

    # -- checks --------------------------------------------------------------------------

    def check(self, r: OrderRequest) -> tuple[Reason, str] | None:
        """Why this venue would refuse `r` whatever the time, or None."""
        try:
            side, ord_type, tif = Side(r.side), OrdType(r.ord_type), TimeInForce(r.time_in_force)
        except ValueError as exc:
            return Reason.INVALID_ORDER, str(exc)
        if not r.client_order_id or not isinstance(r.client_order_id, str):
            return Reason.INVALID_ORDER, "client_order_id is required"
        if not _positive(r.quantity):
            return Reason.INVALID_QUANTITY, f"quantity {r.quantity!r} {OUT_OF_RANGE}"
        needs_limit = ord_type in (OrdType.LIMIT, OrdType.STOP_LIMIT)
        needs_stop = ord_type in (OrdType.STOP, OrdType.STOP_LIMIT)
        for needs, given, what in ((needs_limit, r.limit_price, "limit"), (needs_stop, r.stop_price, "stop")):
            if needs != (given is not None):
                verb = "needs" if needs else "takes no"
                return Reason.INVALID_ORDER, f"a {ord_type} order {verb} {what} price"
        for name, price in (("limit", r.limit_price), ("stop", r.stop_price)):
            if price is None:
                continue
            if not _positive(price):
                return Reason.INVALID_PRICE, f"{name} price {price!r} {OUT_OF_RANGE}"
            tick = self.rules.tick(price)
            if not on_step(price, tick):
                return Reason.TICK_SIZE, f"{name} price {price} is not a multiple of the tick {tick}"
        lot = self.rules.lot(self._reference_price(r.limit_price or r.stop_price, side))
        if not on_step(r.quantity, lot):
            return Reason.LOT_SIZE, f"quantity {r.quantity} is not a multiple of the lot {lot}"
        if tif is TimeInForce.GTD:
            expire = r.expire_at
            if expire is None or expire.tzinfo is None or expire.utcoffset() is None:
                return Reason.EXPIRE_TIME_INVALID, "GTD needs a timezone-aware expire_at"
            if expire <= r.submitted_at:
                return Reason.EXPIRE_TIME_INVALID, "expire_at is not after submission"
        return None

    def _reference_price(self, price: Decimal | None, side: Side) -> Decimal:
        """The price a price-banded lot is read at: the order's own, else the touch it would
        trade against, else the last trade (a market order has no price of its own)."""
        if price is not None:
            return price
        touch = self.book.best_ask() if side is Side.BUY else self.book.best_bid()
        return touch or self.last_price or ZERO

    # -- new orders ------------------------------------------------------------------------

    def _new(self, r: OrderRequest, venue_order_id: str, status: OrdStatus) -> Order:
        order = Order(order_id=r.client_order_id, venue_order_id=venue_order_id, account=r.account,
                      side=Side(r.side), ord_type=OrdType(r.ord_type), tif=TimeInForce(r.time_in_force),
                      quantity=r.quantity, price=r.limit_price or ZERO, stop_price=r.stop_price,
                      leaves=r.quantity, status=status, request=r,
                      expire_at=r.expire_at if TimeInForce(r.time_in_force) is TimeInForce.GTD else None)
        self.orders[order.order_id] = order
        return order

    def accept(self, r: OrderRequest, venue_order_id: str, at: datetime,
               day_end: datetime | None = None) -> list[ExecutionReport]:
        """A checked order, the venue open: acknowledge it and let it trade."""
        order = self._new(r, venue_order_id, OrdStatus.NEW)
        if order.tif is TimeInForce.DAY:
            order.expire_at = day_end
        reports = [self._report(order, ExecType.NEW, at)]
        self._enter(order, at, reports)
        return reports

    def queue(self, r: OrderRequest, venue_order_id: str, at: datetime, opens_at: datetime
              ) -> list[ExecutionReport]:
        """A checked order, the venue closed: held (PENDING_NEW) until `activate`."""
        order = self._new(r, venue_order_id, OrdStatus.PENDING_NEW)
        return [self._report(order, ExecType.PENDING_NEW, at,
                             text=f"venue closed; queued for the open at {opens_at.isoformat()}")]

    def activate(self, client_order_id: str, at: datetime, day_end: datetime | None = None
                 ) -> list[ExecutionReport]:
        order = self.orders[client_order_id]
        if order.status is not OrdStatus.PENDING_NEW:
            return []
        order.status = OrdStatus.NEW
        if order.tif is TimeInForce.DAY:
            order.expire_at = day_end
        reports = [self._report(order, ExecType.NEW, at, text="venue open")]
        self._enter(order, at, reports)
        return reports

    def restore(self, r: OrderRequest, venue_order_id: str, at: datetime, *, cum_qty: Decimal = ZERO,
                notional: Decimal = ZERO, fees: Decimal = ZERO, queued: bool = False,
                day_end: datetime | None = None) -> list[ExecutionReport]:
        """An order this engine held before a restart, back as it was, with no acknowledgement:
        queued (PENDING_NEW, until `activate`), or live with its fills so far (`cum_qty`, their
        `notional` and `fees`). A live order re-enters like an incoming one minus the NEW
        report: it rests at its price (or waits for its stop; a stop-limit with fills had
        triggered) and trades only if it crosses what is already on the book, which orders
        restored in arrival order from a consistent venue never do."""
        status = OrdStatus.PENDING_NEW if queued else (
            OrdStatus.PARTIALLY_FILLED if cum_qty > ZERO else OrdStatus.NEW)
        order = self._new(r, venue_order_id, status)
        order.cum_qty, order.notional, order.fees = cum_qty, notional, fees
        order.leaves = r.quantity - cum_qty
        reports: list[ExecutionReport] = []
        if queued:
            return reports
        if order.tif is TimeInForce.DAY:
            order.expire_at = day_end
        if order.is_stop and cum_qty == ZERO:
            self.stops.append(order)  # arrival order: the caller restores oldest first
            return reports
        order.triggered = order.is_stop
        self._execute(order, at, reports)
        self._fire_stops(at, reports)
        return reports

    def _enter(self, order: Order, at: datetime, reports: list[ExecutionReport]) -> None:
        if order.is_stop and not order.triggered and not self._stop_reached(order):
            self.stops.append(order)
            return
        order.triggered = order.is_stop
        self._execute(order, at, reports)
        self._fire_stops(at, reports)

    def _execute(self, order: Order, at: datetime, reports: list[ExecutionReport]) -> None:
        """Trade `order` as an incoming order; then cancel or rest what is left."""
        if order.tif is TimeInForce.FOK and self._fillable(order) < order.leaves:
            self._finish(order, OrdStatus.CANCELED, ExecType.CANCELED, at, reports,
                         Reason.FOK_UNFILLED, "not enough quantity to fill the whole order at once")
            return
        self._match(order, at, reports)
        if order.leaves == ZERO:
            return
        capped = self._cap_reached(order)
        if capped and (order.at_market or order.tif is TimeInForce.IOC):
            self._finish(order, OrdStatus.CANCELED, ExecType.CANCELED, at, reports,
                         Reason.PARTICIPATION_LIMIT,
                         f"took all the venue shows at once ({self.cap_note}); rest cancelled")
        elif order.at_market:
            self._finish(order, OrdStatus.CANCELED, ExecType.CANCELED, at, reports,
                         Reason.MARKET_NO_LIQUIDITY, "no more liquidity for the market order's rest")
        elif order.tif is TimeInForce.IOC:
            self._finish(order, OrdStatus.CANCELED, ExecType.CANCELED, at, reports,
                         Reason.IOC_REMAINDER, "immediate-or-cancel: rest cancelled")
        else:
            self.book.add(order)

    def _cap_reached(self, order: Order) -> bool:
        """The order's rest is there because it took the whole capped synthetic side (which
        had liquidity at the refresh: an empty side caps nothing)."""
        if self.cap_note is None or (not order.is_buy) not in self._capped_sides:
            return False
        return not any(o.order_id in self.book and o.is_buy != order.is_buy for o in self._synthetic)

    def take_synthetic_flow(self) -> Decimal:
        flow, self.synthetic_flow = self.synthetic_flow, ZERO
        return flow

    def _crosses(self, order: Order, price: Decimal) -> bool:
        if order.at_market:
            return True
        return order.price >= price if order.is_buy else order.price <= price

    def _self_trade(self, order: Order, resting: Order) -> bool:
        return not order.synthetic and not resting.synthetic and order.account == resting.account

    def _fillable(self, order: Order) -> Decimal:
        """What would fill now, up to the order's leaves (self-trades excluded)."""
        total = ZERO
        for level in self.book.opposite(order.is_buy).levels():
            if not self._crosses(order, level.price):
                break
            for resting in level:
                if not self._self_trade(order, resting):  # type: ignore[arg-type]
                    total += resting.leaves
                    if total >= order.leaves:
                        return order.leaves
        return total

    def _match(self, order: Order, at: datetime, reports: list[ExecutionReport]) -> None:
        opposite = self.book.opposite(order.is_buy)
        while order.leaves > ZERO:
            level = opposite.best()
            if level is None or not self._crosses(order, level.price):
                return
            resting: Order = level.head()  # type: ignore[assignment]
            if self._self_trade(order, resting):
                self.book.remove(resting.order_id)
                self._finish(resting, OrdStatus.CANCELED, ExecType.CANCELED, at, reports,
                             Reason.SELF_TRADE_PREVENTED,
                             f"self-trade with {order.order_id} of the same account prevented")
                continue
            quantity = min(order.leaves, resting.leaves)
            price = level.price
            self.book.reduce(resting, quantity)
            order.leaves -= quantity
            if order.synthetic != resting.synthetic:
                client = resting if order.synthetic else order
                self.synthetic_flow += quantity if client.is_buy else -quantity
            self.last_price = price
            self.volume += quantity
            match_id = self.ids.match()
            self._fill(order, quantity, price, at, match_id, "REMOVED", reports)
            self._fill(resting, quantity, price, at, match_id, "ADDED", reports)

    def _fill(self, order: Order, quantity: Decimal, price: Decimal, at: datetime, match_id: str,
              liquidity: str, reports: list[ExecutionReport]) -> None:
        order.cum_qty += quantity
        order.notional += quantity * price
        bps = self.fees.taker_bps if liquidity == "REMOVED" else self.fees.maker_bps
        fee = (quantity * price * bps / BPS).quantize(PLACES)
        order.fees += fee
        order.status = OrdStatus.FILLED if order.cum_qty == order.quantity else OrdStatus.PARTIALLY_FILLED
        if not order.synthetic:
            reports.append(self._report(order, ExecType.TRADE, at, last_qty=quantity, last_px=price,
                                        fee=fee, match_id=match_id, liquidity=liquidity))

    def _stop_reached(self, order: Order) -> bool:
        last, stop = self.last_price, order.stop_price
        if last is None or stop is None:
            return False
        return last >= stop if order.is_buy else last <= stop

    def _fire_stops(self, at: datetime, reports: list[ExecutionReport]) -> None:
        while True:
            fired = next((o for o in self.stops if self._stop_reached(o)), None)
            if fired is None:
                return
            self.stops.remove(fired)
            fired.triggered = True
            self._execute(fired, at, reports)

    # -- cancel, replace, expire -------------------------------------------------------------

    def _take_off(self, order: Order) -> None:
        """Remove a live order from wherever it waits (book or stops)."""
        if order.order_id in self.book:
            self.book.remove(order.order_id)
        elif order in self.stops:
            self.stops.remove(order)

    def cancel(self, client_order_id: str, at: datetime) -> ExecutionReport:
        order = self.orders[client_order_id]
        if order.status.is_terminal:
            return self._refuse(order, at, Reason.TOO_LATE, f"order is {order.status}")
        self._take_off(order)
        reports: list[ExecutionReport] = []
        self._finish(order, OrdStatus.CANCELED, ExecType.CANCELED, at, reports, None, "cancelled on request")
        return reports[0]

    def expire(self, client_order_id: str, at: datetime) -> list[ExecutionReport]:
        order = self.orders[client_order_id]
        if order.status.is_terminal:
            return []
        self._take_off(order)
        reports: list[ExecutionReport] = []
        reason = Reason.GTD_EXPIRED if order.tif is TimeInForce.GTD else Reason.DAY_EXPIRED
        self._finish(order, OrdStatus.EXPIRED, ExecType.EXPIRED, at, reports, reason,
                     "end of the trading day" if reason is Reason.DAY_EXPIRED else "expire time reached")
        return reports

    def replace(self, client_order_id: str, quantity: Decimal, limit_price: Decimal | None,
                at: datetime, *, may_trade: bool) -> list[ExecutionReport]:
        """Change quantity (total) and/or limit price. `may_trade` False (venue closed) refuses
        changes that would re-enter a resting order, since nothing may trade then."""
        order = self.orders[client_order_id]
        problem = self._replace_problem(order, quantity, limit_price)
        if problem is not None:
            return [self._refuse(order, at, *problem)]
        price = order.price if limit_price is None else limit_price
        resting = order.order_id in self.book
        loses_priority = price != order.price or quantity > order.quantity
        if resting and loses_priority and not may_trade:
            return [self._refuse(order, at, Reason.SESSION_CLOSED,
                                 "the venue is closed: only a quantity decrease is accepted now")]
        new_leaves = quantity - order.cum_qty
        reports: list[ExecutionReport] = []
        if resting and not loses_priority:
            cut = order.leaves - new_leaves
            if cut > ZERO:
                self.book.reduce(order, cut)  # in place: time priority kept
            order.quantity = quantity
            reports.append(self._report(order, ExecType.REPLACED, at))
            return reports
        if resting:
            self.book.remove(order.order_id)
        elif order in self.stops and loses_priority:
            self.stops.remove(order)  # back of the stop queue, as a new stop would be
            self.stops.append(order)
        order.quantity, order.price, order.leaves = quantity, price, new_leaves
        reports.append(self._report(order, ExecType.REPLACED, at))
        if resting:
            self._execute(order, at, reports)  # re-enters: may trade now, else rests at the back
            self._fire_stops(at, reports)
        return reports

    def _replace_problem(self, order: Order, quantity: Decimal, limit_price: Decimal | None
                         ) -> tuple[Reason, str] | None:
        if order.status.is_terminal:
            return Reason.TOO_LATE, f"order is {order.status}"
        if not _positive(quantity):
            return Reason.INVALID_QUANTITY, f"quantity {quantity!r} {OUT_OF_RANGE}"
        if limit_price is not None:
            if order.ord_type not in (OrdType.LIMIT, OrdType.STOP_LIMIT):
                return Reason.INVALID_ORDER, f"a {order.ord_type} order has no limit price"
            if not _positive(limit_price):
                return Reason.INVALID_PRICE, f"limit price {limit_price!r} {OUT_OF_RANGE}"
            tick = self.rules.tick(limit_price)
            if not on_step(limit_price, tick):
                return Reason.TICK_SIZE, f"price {limit_price} is not a multiple of the tick {tick}"
        if quantity <= order.cum_qty:
            return Reason.QUANTITY_BELOW_FILLED, f"{order.cum_qty} already filled; cancel instead"
        price = limit_price if limit_price is not None else order.price
        lot = self.rules.lot(self._reference_price(price if price > ZERO else order.stop_price, order.side))
        if not on_step(quantity, lot):
            return Reason.LOT_SIZE, f"quantity {quantity} is not a multiple of the lot {lot}"
        return None

    # -- synthetic liquidity ---------------------------------------------------------------

    def refresh(self, ladder: Sequence[tuple[Side, Decimal, Decimal]], at: datetime,
                cap_note: str | None = None) -> list[ExecutionReport]:
        """Replace the synthetic orders with `ladder` ((side, price, quantity), best first per
        side). New synthetic orders trade against resting client orders they cross, at the
        clients' prices: the market moving through a resting order fills it. Once per instant:
        liquidity taken at an instant stays taken until the market is read again later.
        `cap_note` says the ladder is bounded by the venue's participation cap (and how), so
        an immediate order that takes all of it has its rest cancelled PARTICIPATION_LIMIT."""
        if self.refreshed_at == at:
            return []
        self.refreshed_at = at
        self.cap_note = cap_note
        for order in self._synthetic:
            if order.order_id in self.book:
                self.book.remove(order.order_id)
        self._synthetic = []
        reports: list[ExecutionReport] = []
        for side, price, quantity in ladder:
            order = Order(order_id=f"~liquidity-{next(self._synthetic_ids)}", venue_order_id="",
                          account="", side=side, ord_type=OrdType.LIMIT, tif=TimeInForce.DAY,
                          quantity=quantity, price=price, stop_price=None, leaves=quantity,
                          status=OrdStatus.NEW, synthetic=True)
            self._match(order, at, reports)
            if order.leaves > ZERO:
                self.book.add(order)
                self._synthetic.append(order)
        self._capped_sides = (frozenset(o.is_buy for o in self._synthetic) if cap_note is not None
                              else frozenset())
        self._fire_stops(at, reports)
        return reports

    def preview(self, r: OrderRequest, ladder: Sequence[tuple[Side, Decimal, Decimal]] | None
                ) -> tuple[Decimal, Decimal]:
        """(quantity, notional) that `r` would execute at once, without changing anything.
        With `ladder`, the synthetic orders on the book are read as that ladder instead (the
        market as it would be refreshed at the order's instant). Stops execute nothing now."""
        side = Side(r.side)
        if OrdType(r.ord_type) in (OrdType.STOP, OrdType.STOP_LIMIT):
            return ZERO, ZERO
        is_buy = side is Side.BUY
        probe = Order(order_id="~probe", venue_order_id="", account=r.account, side=side,
                      ord_type=OrdType(r.ord_type), tif=TimeInForce(r.time_in_force),
                      quantity=r.quantity, price=r.limit_price or ZERO, stop_price=None,
                      leaves=r.quantity, status=OrdStatus.NEW)
        offers: list[tuple[Decimal, Decimal]] = []
        taken = ZERO
        for level in self.book.opposite(is_buy).levels():
            if not self._crosses(probe, level.price) or taken >= r.quantity:
                break
            for resting in level:
                order: Order = resting  # type: ignore[assignment]
                if (ladder is not None and order.synthetic) or self._self_trade(probe, order):
                    continue
                offers.append((level.price, order.leaves))
                taken += order.leaves
        for ladder_side, price, quantity in ladder or ():
            if ladder_side is not side and self._crosses(probe, price):
                offers.append((price, quantity))
        offers.sort(key=lambda o: o[0], reverse=not is_buy)
        if TimeInForce(r.time_in_force) is TimeInForce.FOK and sum(q for _, q in offers) < r.quantity:
            return ZERO, ZERO
        left, filled, notional = r.quantity, ZERO, ZERO
        for price, quantity in offers:
            take = min(left, quantity)
            filled, notional, left = filled + take, notional + take * price, left - take
            if left == ZERO:
                break
        return filled, notional

    # -- reports -----------------------------------------------------------------------------

    def live_client_orders(self) -> Iterator[Order]:
        return (o for o in self.orders.values() if not o.status.is_terminal)

    def has_waiting_orders(self) -> bool:
        """Client orders on the book or waiting for a trigger (the market can fill those)."""
        resting_synthetic = sum(1 for o in self._synthetic if o.order_id in self.book)
        return bool(self.stops) or len(self.book) > resting_synthetic

    def _finish(self, order: Order, status: OrdStatus, exec_type: ExecType, at: datetime,
                reports: list[ExecutionReport], reason: Reason | None, text: str) -> None:
        order.status = status
        order.leaves = ZERO
        if not order.synthetic:
            reports.append(self._report(order, exec_type, at, text=text, reason=reason))

    def _refuse(self, order: Order, at: datetime, reason: Reason, text: str) -> ExecutionReport:
        """A refused cancel or replace: the order's own status, unchanged."""
        return self._report(order, ExecType.REJECTED, at, text=text, reason=reason)

    def _report(self, order: Order, exec_type: ExecType, at: datetime, *, last_qty: Decimal = ZERO,
                last_px: Decimal = ZERO, fee: Decimal = ZERO, text: str = "",
                reason: Reason | None = None, match_id: str | None = None,
                liquidity: str | None = None) -> ExecutionReport:
        leaves = ZERO if order.status.is_terminal else order.quantity - order.cum_qty
        return ExecutionReport(
            exec_type=exec_type, ord_status=order.status, client_order_id=order.order_id,
            venue_order_id=order.venue_order_id, last_qty=last_qty, last_px=last_px,
            cum_qty=order.cum_qty, leaves_qty=leaves, avg_px=order.avg_px, fee=fee, text=text,
            reject_code=reason.value if reason is not None else None, at=at,
            exec_id=self.ids.execution(), mic=self.mic, symbol=self.symbol, side=order.side,
            match_id=match_id, liquidity=liquidity)


def rejection(r: OrderRequest, reason: Reason, text: str, at: datetime, ids: Ids) -> ExecutionReport:
    """A new order refused before it reached a book."""
    side = Side(r.side) if r.side in tuple(Side) else None
    return ExecutionReport(
        exec_type=ExecType.REJECTED, ord_status=OrdStatus.REJECTED,
        client_order_id=str(r.client_order_id), venue_order_id="", last_qty=ZERO, last_px=ZERO,
        cum_qty=ZERO, leaves_qty=ZERO, avg_px=ZERO, fee=ZERO, text=text, reject_code=reason.value,
        at=at, exec_id=ids.execution(), mic=str(r.mic), symbol=str(r.symbol), side=side)
