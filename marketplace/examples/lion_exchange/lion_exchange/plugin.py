"""The connector: a small simulated XSES with its own sessions, lots, ticks and market.

The venue's market is synthetic: each symbol's mid price follows a reproducible walk by minute
(from a hash of symbol and minute), with a one-tick spread. A buy limit at or above the ask (a
sell at or below the bid) fills at once; otherwise it rests and fills when `on_clock` moves
the market through it. Orders outside sessions are refused (VENUE_CLOSED); DAY orders expire
at the close. It imports only `plugins.sdk`.

It also tells the gateway what the gateway cannot know of XSES: the venue itself
(`LionConnector.venues`: name, time zone, currency, sessions, board lot and tick) and its
listings as a market data source (instruments, minute quotes and bars from the same synthetic
market), so a tenant that installs it can route orders there and chart them.
"""

from __future__ import annotations

import hashlib
import itertools
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import ROUND_FLOOR, Decimal

from plugins.sdk import (
    Bar,
    ExecType,
    ExecutionReport,
    Instrument,
    OrderRequest,
    OrdStatus,
    OrdType,
    PluginContext,
    Quote,
    Side,
    TimeInForce,
    VenueDefinition,
    VenueInfo,
    VenueQuote,
    hookimpl,
)

MIC = "XSES"
LOT = Decimal(100)
ZERO = Decimal(0)
# Sessions in UTC (SGT is UTC+8, no daylight saving): 09:00-12:00 and 13:00-17:00 SGT.
WINDOWS = ((time(1, 0), time(4, 0)), (time(5, 0), time(9, 0)))
LISTED = {"D05": Decimal("35.00"), "O39": Decimal("13.00"), "U11": Decimal("28.50"),
          "Z74": Decimal("2.50")}


def tick(price: Decimal) -> Decimal:
    """SGX's price bands: 0.001 below 0.20, 0.005 below 1.00, 0.01 from there."""
    if price < Decimal("0.2"):
        return Decimal("0.001")
    return Decimal("0.005") if price < 1 else Decimal("0.01")


def is_open(at: datetime) -> bool:
    at = at.astimezone(UTC)
    return at.weekday() < 5 and any(lo <= at.time() < hi for lo, hi in WINDOWS)


def day_close(day: date) -> datetime:
    return datetime.combine(day, WINDOWS[-1][1], tzinfo=UTC)


def mid(symbol: str, at: datetime) -> Decimal:
    """A reproducible mid: the listing price moved by up to ±3 % by the minute."""
    minute = at.astimezone(UTC).replace(second=0, microsecond=0)
    digest = hashlib.sha256(f"{symbol}|{minute:%Y-%m-%dT%H:%M}".encode()).digest()
    move = Decimal(int.from_bytes(digest[:2], "big") - 32768) / Decimal(32768) * Decimal("0.03")
    price = LISTED[symbol] * (1 + move)
    step = tick(price)
    return (price / step).to_integral_value(ROUND_FLOOR) * step


@dataclass
class _Order:
    request: OrderRequest
    venue_id: str
    cum: Decimal = ZERO
    notional: Decimal = ZERO
    status: OrdStatus = OrdStatus.NEW

    @property
    def leaves(self) -> Decimal:
        return self.request.quantity - self.cum


class LionConnector:
    def __init__(self, fee_bps: Decimal) -> None:
        self.name = "lion-sgx"
        self.fee_bps = fee_bps
        self._orders: dict[str, _Order] = {}
        self._ids = itertools.count(1)
        self._now = datetime(1970, 1, 1, tzinfo=UTC)

    def mics(self) -> list[str]:
        return [MIC]

    def venues(self) -> list[VenueDefinition]:
        return [VenueDefinition(
            info=VenueInfo(mic=MIC, name="Singapore Exchange (Lion)", region="apac", country="SG",
                           currency="SGD", timezone="Asia/Singapore"),
            lot_size=LOT, tick_size=Decimal("0.01"), sessions=(("09:00", "12:00"), ("13:00", "17:00")),
            regulators=("MAS",))]

    def _report(self, order: _Order, exec_type: ExecType, at: datetime, *, last_qty: Decimal = ZERO,
                last_px: Decimal = ZERO, reject: str | None = None, text: str = "") -> ExecutionReport:
        fee = (last_qty * last_px * self.fee_bps / Decimal(10_000)).quantize(Decimal("0.01"))
        return ExecutionReport(
            exec_type=exec_type, ord_status=order.status, client_order_id=order.request.client_order_id,
            venue_order_id=order.venue_id, last_qty=last_qty, last_px=last_px, cum_qty=order.cum,
            leaves_qty=order.leaves if not order.status.is_terminal else ZERO,
            avg_px=(order.notional / order.cum) if order.cum else ZERO, fee=fee, text=text,
            reject_code=reject, at=at, exec_id=f"{order.venue_id}-{next(self._ids)}", mic=MIC,
            symbol=order.request.symbol, side=order.request.side)

    def _refusal(self, request: OrderRequest) -> str | None:
        if request.mic != MIC or request.symbol not in LISTED:
            return "UNKNOWN_SYMBOL"
        if request.ord_type not in (OrdType.LIMIT, OrdType.MARKET):
            return "ORD_TYPE_UNSUPPORTED"
        if request.time_in_force not in (TimeInForce.DAY, TimeInForce.IOC):
            return "TIME_IN_FORCE_UNSUPPORTED"
        if request.quantity <= 0 or request.quantity % LOT:
            return "LOT_SIZE"
        if request.limit_price is not None and request.limit_price % tick(request.limit_price):
            return "TICK_SIZE"
        if request.ord_type is OrdType.LIMIT and request.limit_price is None:
            return "PRICE_REQUIRED"
        if not is_open(request.submitted_at):
            return "VENUE_CLOSED"
        return None

    def _executable(self, order: _Order, at: datetime) -> Decimal | None:
        price = mid(order.request.symbol, at)
        half = tick(price)
        bid, ask = price - half, price + half
        limit = order.request.limit_price
        if order.request.side is Side.BUY:
            return ask if limit is None or limit >= ask else None
        return bid if limit is None or limit <= bid else None

    def _fill(self, order: _Order, price: Decimal, at: datetime) -> ExecutionReport:
        qty = order.leaves
        order.cum += qty
        order.notional += qty * price
        order.status = OrdStatus.FILLED
        return self._report(order, ExecType.TRADE, at, last_qty=qty, last_px=price)

    def submit(self, order: OrderRequest) -> list[ExecutionReport]:
        self._now = max(self._now, order.submitted_at)
        state = _Order(order, f"XSES-{next(self._ids)}")
        refusal = self._refusal(order)
        if refusal:
            state.status = OrdStatus.REJECTED
            return [self._report(state, ExecType.REJECTED, order.submitted_at, reject=refusal)]
        self._orders[order.client_order_id] = state
        reports = [self._report(state, ExecType.NEW, order.submitted_at)]
        price = self._executable(state, order.submitted_at)
        if price is not None:
            reports.append(self._fill(state, price, order.submitted_at))
        elif order.time_in_force is TimeInForce.IOC or order.ord_type is OrdType.MARKET:
            state.status = OrdStatus.CANCELED
            reports.append(self._report(state, ExecType.CANCELED, order.submitted_at, reject="IOC"))
        return reports

    def cancel(self, client_order_id: str, mic: str) -> ExecutionReport:
        state = self._orders.get(client_order_id)
        if state is None:
            unknown = _Order(OrderRequest(client_order_id, "", "", mic, Side.BUY, OrdType.LIMIT,
                                          TimeInForce.DAY, ZERO, None, None, "SGD", None, self._now),
                             "", status=OrdStatus.REJECTED)
            return self._report(unknown, ExecType.REJECTED, self._now, reject="UNKNOWN_ORDER")
        if state.status.is_terminal:
            return self._report(state, ExecType.REJECTED, self._now, reject="TOO_LATE_TO_CANCEL")
        state.status = OrdStatus.CANCELED
        return self._report(state, ExecType.CANCELED, self._now)

    def replace(self, client_order_id: str, mic: str, quantity: Decimal,
                limit_price: Decimal | None) -> list[ExecutionReport]:
        state = self._orders.get(client_order_id)
        if state is None or state.status.is_terminal:
            return [self.cancel(client_order_id, mic)]
        return [self._report(state, ExecType.REJECTED, self._now, reject="REPLACE_UNSUPPORTED")]

    def quote_for(self, order: OrderRequest) -> VenueQuote | None:
        if order.mic != MIC or order.symbol not in LISTED:
            return None
        refusal = self._refusal(order)
        if refusal and refusal != "VENUE_CLOSED":
            return VenueQuote(MIC, None, ZERO, self.fee_bps, reject_code=refusal)
        price = self._executable(_Order(order, ""), order.submitted_at) if is_open(
            order.submitted_at) else None
        return VenueQuote(MIC, price, order.quantity if price is not None else ZERO, self.fee_bps)

    def on_clock(self, at: datetime) -> list[ExecutionReport]:
        reports = []
        for state in self._orders.values():
            if state.status.is_terminal:
                continue
            if at >= day_close(state.request.submitted_at.astimezone(UTC).date()):
                state.status = OrdStatus.EXPIRED
                reports.append(self._report(state, ExecType.EXPIRED, at, reject="END_OF_DAY"))
            elif is_open(at) and (price := self._executable(state, at)) is not None:
                reports.append(self._fill(state, price, at))
        self._now = max(self._now, at)
        return reports


class LionListings:
    """XSES's listings and their synthetic market, as a market data source."""

    name = "lion-sgx-listings"

    def instruments(self) -> list[Instrument]:
        return [Instrument(symbol=s, mic=MIC, currency="SGD", name=f"{s} (XSES)", lot_size=int(LOT))
                for s in sorted(LISTED)]

    def bars(self, instrument: Instrument, start: datetime, end: datetime, interval: str) -> list[Bar]:
        step = {"1m": 1, "5m": 5, "15m": 15, "1h": 60, "1d": 1440}.get(interval)
        if step is None or instrument.symbol not in LISTED:
            return []
        out = []
        at = start.astimezone(UTC)
        while at < end and len(out) < 10_000:
            minutes = range(0, step, max(1, step // 4))
            prices = [mid(instrument.symbol, at + timedelta(minutes=m)) for m in minutes]
            out.append(Bar(instrument.symbol, MIC, at, interval, prices[0], max(prices), min(prices),
                           prices[-1], Decimal(100 * (1 + len(out) % 7))))
            at += timedelta(minutes=step)
        return out

    def quote(self, instrument: Instrument, at: datetime) -> Quote | None:
        if instrument.symbol not in LISTED:
            return None
        price = mid(instrument.symbol, at)
        step = tick(price)
        return Quote(instrument.symbol, MIC, at, price - step, price + step, LOT * 10, LOT * 10)


@hookimpl
def alphintra_market_data_sources(context: PluginContext) -> list[LionListings]:
    return [LionListings()]


@hookimpl
def alphintra_exchange_connectors(context: PluginContext) -> list[LionConnector]:
    return [LionConnector(Decimal(str(context.config.get("fee_bps", "4"))))]
