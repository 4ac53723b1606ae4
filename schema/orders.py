"""Orders, trading accounts and pre-trade compliance controls (the `orders`, `trades`,
`positions`, `positionSummary` and `locates` reads are schema/desk.py's).

Quantities and prices are Decimals: the `Decimal` scalar (a string on the wire) out, strings in
("100", "189.25"). Permissions (casbin objects): "order" read for orders, trades, positions and
accounts, write for submitting, amending and cancelling; "compliance" read for controls and
decisions, write to change the controls, accounts (credit limit, equity, assessments) and locates
(a trader must not raise their own limits). A denied order is
data, not an error: it comes back with status DENIED and its `rejectCode`; what is wrong
with the request itself (bad quantity, unknown instrument, off-tick price...) is an error with a
code, and nothing is stored.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import AsyncGenerator, Mapping
from datetime import datetime
from decimal import Decimal
from typing import Any

import strawberry
from starlette.concurrency import run_in_threadpool
from strawberry.scalars import JSON
from strawberry.schema.config import StrawberryConfig
from strawberry.types import Info
from strawberry.types.arguments import InputContext

from gateway.errors import DomainError
from gateway.http.context import RequestContext
from gateway.trading import mass_cancel, models, stream
from gateway.trading.intake import OrderInput
from gateway.trading.service import OrderService, SubmitResult, alerts_topic, orders_topic
from gateway.trading.states import OrderStatus as Status
from plugins.sdk import TenantControls
from schema.common import DEFAULT_PAGE, Connection, ctx, epoch_field
from schema.marketdata import Instrument
from schema.markets import Venue
from schema.selected_rows import RowShape
from schema.selection import node_fields


def _svc(info: Info, obj: str, act: str) -> tuple[RequestContext, OrderService]:
    c = ctx(info)
    c.require(obj, act)
    return c, c.runtime.orders


def _plain(value: Decimal | None) -> Decimal | None:
    if value is None:
        return None
    normal = value.normalize()
    return normal.quantize(Decimal(1)) if normal.as_tuple().exponent > 0 else normal  # type: ignore[operator]


@strawberry.enum
class OrderSide(enum.Enum):
    BUY = "BUY"
    SELL = "SELL"
    SELL_SHORT = "SELL_SHORT"


@strawberry.enum
class OrderType(enum.Enum):
    MARKET = "MARKET"
    LIMIT = "LIMIT"
    STOP = "STOP"
    STOP_LIMIT = "STOP_LIMIT"


@strawberry.enum
class TimeInForce(enum.Enum):
    DAY = "DAY"
    GTC = "GTC"
    IOC = "IOC"
    FOK = "FOK"
    GTD = "GTD"


# The schema's own enum (decorating the gateway's would change a gateway class from here).
OrderStatus = strawberry.enum(
    enum.Enum("OrderStatus", {s.value: s.value for s in Status}),  # type: ignore[misc]
    description="NEW → PENDING → ACCEPTED → PARTIALLY_FILLED → FILLED; CANCELED, REJECTED "
                "(venue), DENIED (compliance), EXPIRED.")


@strawberry.enum
class ClientType(enum.Enum):
    INDIVIDUAL = "INDIVIDUAL"
    LEGAL_ENTITY = "LEGAL_ENTITY"


@strawberry.type(description="One fill.")
class Execution:
    id: strawberry.ID
    order_id: strawberry.ID
    exec_id: str
    match_id: str | None
    account: str
    symbol: str
    side: OrderSide
    last_qty: Decimal
    last_px: Decimal
    fee: Decimal = strawberry.field(description="Negative: a rebate.")
    currency: str
    liquidity: str | None = strawberry.field(description="ADDED (maker) or REMOVED (taker).")
    mic: str
    at: datetime

    @classmethod
    def of(cls, e: models.Execution) -> Execution:
        return cls(id=strawberry.ID(e.id), order_id=strawberry.ID(e.order_id), exec_id=e.exec_id,
                   match_id=e.match_id, account=e.account, symbol=e.symbol, side=OrderSide(e.side),
                   last_qty=_plain(e.last_qty), last_px=_plain(e.last_px), fee=_plain(e.fee),  # type: ignore[arg-type]
                   currency=e.currency, liquidity=e.liquidity, mic=e.mic, at=e.at)


@strawberry.type(description="A change of an order's state.")
class OrderEventEntry:
    seq: int
    event: str
    exec_type: str | None
    status_from: str
    status_to: str
    cum_qty: Decimal
    leaves_qty: Decimal
    code: str | None
    text: str
    at: datetime
    last_qty: Decimal | None = strawberry.field(description="A fill's quantity (null otherwise, "
                                                             "and on events before the drop copy).")
    last_px: Decimal | None = strawberry.field(description="A fill's price.")
    avg_px: Decimal | None
    exec_id: str | None = strawberry.field(description="The venue report's ExecID; a fill's is "
                                                       "its execution's.")
    cursor: str = strawberry.field(description="Its place in the tenant's order stream "
                                               "(orderEvents, orderUpdates(after)).")

    @classmethod
    def of(cls, e: models.OrderEvent) -> OrderEventEntry:
        return cls(seq=e.seq, event=e.event, exec_type=e.exec_type, status_from=e.status_from,
                   status_to=e.status_to, cum_qty=_plain(e.cum_qty), leaves_qty=_plain(e.leaves_qty),  # type: ignore[arg-type]
                   code=e.code, text=e.text, at=e.at, last_qty=_plain(e.last_qty),
                   last_px=_plain(e.last_px), avg_px=_plain(e.avg_px), exec_id=e.exec_id,
                   cursor=str(e.stream_seq))


@strawberry.type(description="One transition of one order, as a drop copy reports it: every "
                             "transition in order, `seq` 1, 2, 3 … per order, `cursor` across the "
                             "tenant's orders.")
class OrderTransition:
    order_id: strawberry.ID
    client_order_id: str
    account: str
    seq: int = strawberry.field(description="Per order: 1, 2, 3 … with no gap.")
    cursor: str = strawberry.field(description="Its place in the tenant's order stream, in commit "
                                               "order with no gap: give it to orderEvents(after) or "
                                               "orderUpdates(after) to go on from here.")
    event: str = strawberry.field(description="COMPLIANCE_PASS, COMPLIANCE_DENY, VENUE_PENDING, "
                                              "VENUE_NEW, PARTIAL_FILL, FILL, REPLACED, CANCELED, "
                                              "EXPIRED, REJECTED.")
    exec_type: str | None = strawberry.field(description="FIX ExecType (150): NEW, TRADE, "
                                                         "CANCELED, …; null for the gateway's own "
                                                         "step (compliance).")
    status_from: OrderStatus  # type: ignore[valid-type]
    status_to: OrderStatus  # type: ignore[valid-type]
    last_qty: Decimal | None = strawberry.field(description="A fill's quantity (LastQty, 32).")
    last_px: Decimal | None = strawberry.field(description="A fill's price (LastPx, 31).")
    cum_qty: Decimal
    leaves_qty: Decimal
    avg_px: Decimal | None
    exec_id: str | None = strawberry.field(description="ExecID (17); a fill's is its execution's "
                                                       "execId.")
    code: str | None = strawberry.field(description="Why it was denied, rejected, cancelled or "
                                                    "expired.")
    text: str
    at: datetime = strawberry.field(description="The venue's transact time (the gateway's for "
                                                "compliance).")

    @classmethod
    def of(cls, t: stream.Transition) -> OrderTransition:
        return cls(order_id=strawberry.ID(t.order_id), client_order_id=t.client_order_id,
                   account=t.account, seq=t.seq, cursor=t.cursor, event=t.event,
                   exec_type=t.exec_type, status_from=OrderStatus(t.status_from),
                   status_to=OrderStatus(t.status_to), last_qty=_plain(t.last_qty),
                   last_px=_plain(t.last_px), cum_qty=_plain(t.cum_qty),  # type: ignore[arg-type]
                   leaves_qty=_plain(t.leaves_qty), avg_px=_plain(t.avg_px),  # type: ignore[arg-type]
                   exec_id=t.exec_id, code=t.code, text=t.text, at=t.at)


@strawberry.type
class Order:
    id: strawberry.ID
    client_order_id: str
    account: str
    symbol: str
    isin: str | None
    mic: str = strawberry.field(description="The venue chosen.")
    requested_mic: str = strawberry.field(description="A MIC, or SMART.")
    side: OrderSide
    ord_type: OrderType
    time_in_force: TimeInForce
    quantity: Decimal
    limit_price: Decimal | None
    stop_price: Decimal | None
    currency: str
    expire_at: datetime | None
    status: OrderStatus  # type: ignore[valid-type]
    fix_status: str = strawberry.field(description="FIX OrdStatus (39).")
    cum_qty: Decimal
    leaves_qty: Decimal
    avg_px: Decimal
    fees: Decimal
    venue_order_id: str | None
    reject_code: str | None = strawberry.field(
        description="Why it was denied (COMPLIANCE_…), rejected, cancelled or expired by the venue.")
    reject_text: str | None
    routing: JSON = strawberry.field(description="The router's decision: venue, reason, expected "
                                                 "price and fee, arrival price, every alternative.")
    created_at: datetime
    updated_at: datetime
    version: int

    @strawberry.field
    def instrument(self, info: Info) -> Instrument | None:
        c = ctx(info)
        data = c.runtime.market_data
        key = f"{self.symbol}.{self.mic}"

        def load(keys: list[str]) -> dict[str, Instrument]:
            out = {}
            for k in keys:
                try:
                    i = data.instrument(k)
                except DomainError:
                    continue
                entry = data.source_of(k)
                out[k] = Instrument.of(i, entry.name, entry.plugin)
            return out

        return c.loader("orders.instrument", load).load(key)

    @strawberry.field
    def venue(self, info: Info) -> Venue | None:
        c = ctx(info)
        markets = c.runtime.markets

        def load(mics: list[str]) -> dict[str, Venue]:
            out = {}
            for m in mics:
                try:
                    out[m] = Venue.of(markets.venue(m))
                except DomainError:
                    continue
            return out

        return c.loader("orders.venue", load).load(self.mic) if self.mic else None

    @strawberry.field(description="Fills, oldest first.")
    def executions(self, info: Info) -> list[Execution]:
        c, svc = _svc(info, "order", "read")
        rows = c.loader("orders.executions", lambda ids: svc.executions(c.tenant_id, ids)).load(str(self.id))
        return [Execution.of(r) for r in rows or []]

    @strawberry.field(description="Every state change, in order.")
    def events(self, info: Info) -> list[OrderEventEntry]:
        c, svc = _svc(info, "order", "read")
        rows = c.loader("orders.events", lambda ids: svc.events(c.tenant_id, ids)).load(str(self.id))
        return [OrderEventEntry.of(r) for r in rows or []]

    @classmethod
    def of(cls, o: models.Order) -> Order:
        return cls(id=strawberry.ID(o.id), client_order_id=o.client_order_id, account=o.account,
                   symbol=o.symbol, isin=o.isin, mic=o.mic, requested_mic=o.requested_mic,
                   side=OrderSide(o.side), ord_type=OrderType(o.ord_type),
                   time_in_force=TimeInForce(o.time_in_force), quantity=_plain(o.quantity),  # type: ignore[arg-type]
                   limit_price=_plain(o.limit_price), stop_price=_plain(o.stop_price),
                   currency=o.currency, expire_at=o.expire_at, status=OrderStatus(o.status),
                   fix_status=Status(o.status).fix, cum_qty=_plain(o.cum_qty),  # type: ignore[arg-type]
                   leaves_qty=_plain(o.leaves_qty), avg_px=_plain(o.avg_px), fees=_plain(o.fees),  # type: ignore[arg-type]
                   venue_order_id=o.venue_order_id, reject_code=o.reject_code,
                   reject_text=o.reject_text, routing=o.routing, created_at=o.created_at,
                   updated_at=o.updated_at, version=o.version)


def _page_orders(c: RequestContext, svc: OrderService, ids: list[str], *,
                 executions: bool = True, events: bool = True) -> None:
    # A selected read primes only the loaders its selection will use.
    if executions:
        c.loader("orders.executions", lambda keys: svc.executions(c.tenant_id, keys)).want(ids)
    if events:
        c.loader("orders.events", lambda keys: svc.events(c.tenant_id, keys)).want(ids)


# Selected reads (issue 14; schema/selected_rows.py): the columns each field of Order and of
# Execution reads, and how a column becomes the attribute `Order.of`/`Execution.of` set.
_ORDER_DECIMALS = ("quantity", "limit_price", "stop_price", "cum_qty", "leaves_qty", "avg_px",
                   "fees")
ORDER_ROWS: RowShape[Order] = RowShape(
    Order,
    fields={
        "__typename": (), "id": ("id",), "clientOrderId": ("client_order_id",),
        "account": ("account",), "symbol": ("symbol",), "isin": ("isin",), "mic": ("mic",),
        "requestedMic": ("requested_mic",), "side": ("side",), "ordType": ("ord_type",),
        "timeInForce": ("time_in_force",), "quantity": ("quantity",),
        "limitPrice": ("limit_price",), "stopPrice": ("stop_price",), "currency": ("currency",),
        "expireAt": ("expire_at",), "status": ("status",), "fixStatus": ("status",),
        "cumQty": ("cum_qty",), "leavesQty": ("leaves_qty",), "avgPx": ("avg_px",),
        "fees": ("fees",), "venueOrderId": ("venue_order_id",), "rejectCode": ("reject_code",),
        "rejectText": ("reject_text",), "routing": ("routing",), "createdAt": ("created_at",),
        "updatedAt": ("updated_at",), "version": ("version",),
        # Resolved fields: the attributes their resolvers read off the order.
        "instrument": ("symbol", "mic"), "venue": ("mic",), "executions": ("id",),
        "events": ("id",),
    },
    always=("id", "created_at"),
    convert={"side": OrderSide, "ord_type": OrderType, "time_in_force": TimeInForce,
             "status": OrderStatus, **dict.fromkeys(_ORDER_DECIMALS, _plain)},
    derived={"fix_status": ("status", lambda v: Status(v["status"].value).fix)},
)
EXECUTION_ROWS: RowShape[Execution] = RowShape(
    Execution,
    fields={
        "__typename": (), "id": ("id",), "orderId": ("order_id",), "execId": ("exec_id",),
        "matchId": ("match_id",), "account": ("account",), "symbol": ("symbol",),
        "side": ("side",), "lastQty": ("last_qty",), "lastPx": ("last_px",), "fee": ("fee",),
        "currency": ("currency",), "liquidity": ("liquidity",), "mic": ("mic",), "at": ("at",),
    },
    always=("id", "created_at", "stream_seq"),
    convert={"side": OrderSide, **dict.fromkeys(("last_qty", "last_px", "fee"), _plain)},
)


@strawberry.type
class OrderError:
    code: str
    message: str
    details: JSON

    @classmethod
    def of(cls, e: DomainError) -> OrderError:
        return cls(code=e.code, message=e.message, details=e.details)


@strawberry.type(description="One order of a batch: the order (new, or the first one under its "
                             "clientOrderId when `replayed`), or why it was refused.")
class OrderResult:
    client_order_id: str
    order: Order | None
    error: OrderError | None
    replayed: bool

    @classmethod
    def of(cls, r: SubmitResult) -> OrderResult:
        return cls(client_order_id=r.client_order_id, order=Order.of(r.order) if r.order else None,
                   error=OrderError.of(r.error) if r.error else None, replayed=r.replayed)


@strawberry.type
class TradingAccount:
    id: strawberry.ID
    code: str
    name: str
    currency: str
    client_type: ClientType
    domicile: str
    lei: str | None
    credit_limit: Decimal
    equity: Decimal
    assessments: list[str]
    updated_at: datetime

    @classmethod
    def of(cls, a: models.TradingAccount) -> TradingAccount:
        return cls(id=strawberry.ID(a.id), code=a.code, name=a.name, currency=a.currency,
                   client_type=ClientType(a.client_type), domicile=a.domicile, lei=a.lei,
                   credit_limit=_plain(a.credit_limit), equity=_plain(a.equity),  # type: ignore[arg-type]
                   assessments=list(a.assessments), updated_at=a.updated_at)


@strawberry.type
class ComplianceControls:
    kill_switch: bool
    restricted: list[str] = strawberry.field(description="ISINs or SYMBOL.MIC keys.")
    max_order_value: Decimal | None
    max_order_quantity: Decimal | None
    collar_pct: Decimal
    collar_pct_by_mic: JSON
    max_position: Decimal | None
    max_concentration_pct: Decimal | None
    throttle_max_orders: int | None
    throttle_window_ms: int
    duplicate_window_ms: int | None
    kill_switch_accounts: list[str] = strawberry.field(
        default_factory=list, description="Accounts whose own kill switch is on (setKillSwitch).")

    @classmethod
    def of(cls, t: TenantControls, killed: list[str] | None = None) -> ComplianceControls:
        return cls(kill_switch=t.kill_switch, restricted=sorted(t.restricted),
                   kill_switch_accounts=list(killed or []),
                   max_order_value=_plain(t.max_order_value),
                   max_order_quantity=_plain(t.max_order_quantity),
                   collar_pct=_plain(t.collar_pct),  # type: ignore[arg-type]
                   collar_pct_by_mic={k: format(v, "f") for k, v in t.collar_pct_by_mic.items()},
                   max_position=_plain(t.max_position),
                   max_concentration_pct=_plain(t.max_concentration_pct),
                   throttle_max_orders=t.throttle_max_orders,
                   throttle_window_ms=int(t.throttle_window.total_seconds() * 1000),
                   duplicate_window_ms=None if t.duplicate_window is None
                   else int(t.duplicate_window.total_seconds() * 1000))


@strawberry.type(description="One order of a mass cancel.")
class CancelOrderOutcome:
    order_id: strawberry.ID
    client_order_id: str
    account: str
    symbol: str
    mic: str
    side: OrderSide
    outcome: str = strawberry.field(description="CANCELED; REFUSED by the venue (code: why, e.g. "
                                                "TOO_LATE); NOT_SENT (claimed, not at its venue: "
                                                "the stuck-order sweep rejects it); FAILED (its "
                                                "connector is gone or failed).")
    status: OrderStatus  # type: ignore[valid-type]
    code: str | None
    text: str

    @classmethod
    def of(cls, o: mass_cancel.CancelOutcome) -> CancelOrderOutcome:
        return cls(order_id=strawberry.ID(o.order_id), client_order_id=o.client_order_id,
                   account=o.account, symbol=o.symbol, mic=o.mic, side=OrderSide(o.side),
                   outcome=o.outcome, status=OrderStatus(o.status), code=o.code, text=o.text)


@strawberry.type(description="What a mass cancel did: counts, and an outcome per order matched.")
class MassCancelResult:
    reason: str = strawberry.field(description="MASS_CANCEL, or KILL_SWITCH.")
    matched: int
    canceled: int
    refused: int
    not_sent: int
    failed: int
    results: list[CancelOrderOutcome]

    @classmethod
    def of(cls, r: mass_cancel.MassCancelResult) -> MassCancelResult:
        return cls(reason=r.reason, matched=r.matched, canceled=r.count("CANCELED"),
                   refused=r.count("REFUSED"), not_sent=r.count("NOT_SENT"), failed=r.count("FAILED"),
                   results=[CancelOrderOutcome.of(o) for o in r.outcomes])


@strawberry.type
class KillSwitchResult:
    on: bool
    account: str | None = strawberry.field(description="None: the tenant's own kill switch.")
    cancel: MassCancelResult | None = strawberry.field(
        description="The open orders cancelled when it went on.")


@strawberry.type
class Locate:
    id: strawberry.ID
    account: str
    instrument_key: str
    quantity: Decimal
    remaining: Decimal
    source: str
    expires_at: datetime | None
    created_at: datetime

    @classmethod
    def of(cls, row: models.Locate) -> Locate:
        return cls(id=strawberry.ID(row.id), account=row.account, instrument_key=row.instrument_key,
                   quantity=_plain(row.quantity), remaining=_plain(row.remaining),  # type: ignore[arg-type]
                   source=row.source, expires_at=row.expires_at, created_at=row.created_at)


@strawberry.type(description="A pre-trade compliance decision, pass or deny.")
class ComplianceDecision:
    id: strawberry.ID
    order_id: strawberry.ID | None
    client_order_id: str
    account: str
    passed: bool
    codes: list[str]
    jurisdictions: list[str]
    record: JSON = strawberry.field(description="Everything decided on: denials with their limit "
                                                "and value, plugins, per-rule timings.")
    elapsed_ns: int
    decided_at: datetime
    created_at: datetime

    @classmethod
    def of(cls, d: models.ComplianceDecisionRow) -> ComplianceDecision:
        return cls(id=strawberry.ID(d.id), order_id=strawberry.ID(d.order_id) if d.order_id else None,
                   client_order_id=d.client_order_id, account=d.account, passed=d.passed,
                   codes=list(d.codes), jurisdictions=list(d.jurisdictions), record=d.record,
                   elapsed_ns=d.elapsed_ns, decided_at=d.decided_at, created_at=d.created_at)


@strawberry.type(description="One transition of one order (orderUpdates).")
class OrderUpdate:
    sequence: int | None = strawberry.field(description="The bus message's number (an order's "
                                                        "transitions of one moment share it); null "
                                                        "when read from the store (a replay, a gap).")
    transition: OrderTransition
    epoch: str | None = epoch_field()

    @strawberry.field(description="The order as of this transition: its status, quantities, "
                                  "average price, version and updatedAt are the transition's; its "
                                  "other terms as they are now.")
    async def order(self, info: Info) -> Order:
        c, svc = _svc(info, "order", "read")
        row = await run_in_threadpool(svc.get, c.tenant_id, str(self.transition.order_id))
        t = self.transition
        return dataclasses.replace(
            Order.of(row), status=t.status_to, fix_status=Status(t.status_to.value).fix,
            cum_qty=t.cum_qty, leaves_qty=t.leaves_qty,
            avg_px=t.avg_px if t.avg_px is not None else _plain(row.avg_px), version=t.seq,
            updated_at=t.at)

    @classmethod
    def of(cls, t: stream.Transition, sequence: int | None, epoch: str | None = None) -> OrderUpdate:
        return cls(sequence=sequence, transition=OrderTransition.of(t), epoch=epoch)


@strawberry.type
class ComplianceAlert:
    sequence: int
    order_id: strawberry.ID
    client_order_id: str
    account: str
    symbol: str
    mic: str
    denials: JSON
    jurisdictions: list[str]
    decided_at: str
    epoch: str | None = epoch_field()


@strawberry.input
class SubmitOrderInput:
    client_order_id: str = strawberry.field(description="Your ClOrdID: unique in your tenant, the "
                                                        "idempotency key of the submission.")
    account: str
    symbol: str = strawberry.field(description="A symbol, a SYMBOL.MIC key or an ISIN.")
    side: OrderSide
    quantity: str
    ord_type: OrderType = OrderType.LIMIT
    time_in_force: TimeInForce = TimeInForce.DAY
    limit_price: str | None = None
    stop_price: str | None = None
    mic: str = strawberry.field(default="SMART", description="A venue MIC, or SMART to route.")
    currency: str | None = None
    expire_at: datetime | None = strawberry.field(default=None, description="GTD only.")
    isin: str | None = strawberry.field(default=None, description="Checked against the instrument.")

    def parse(self) -> OrderInput:
        return OrderInput(self.client_order_id, self.account, self.symbol, self.side.value,
                          self.quantity, self.ord_type.value, self.time_in_force.value,
                          self.limit_price, self.stop_price, self.mic, self.currency, self.expire_at,
                          self.isin)


def _submit_input_from(cls: type, value: Mapping[str, Any], context: InputContext) -> Any:
    """Builds a SubmitOrderInput straight from the input value graphql-core has already
    coerced (enums, strings, datetimes, defaults filled in): strawberry's generic conversion
    re-walks every field's type per object, a third of a batch's CPU at 500 orders."""
    return cls(**{python: value[name] for name, python in _SUBMIT_NAMES if name in value})


# (GraphQL name, Python name) of SubmitOrderInput's fields under the default config every
# schema here is built with (a missing required field would fail loudly in the constructor).
_SUBMIT_NAMES = tuple((StrawberryConfig().name_converter.from_field(f), f.python_name)
                      for f in SubmitOrderInput.__strawberry_definition__.fields)  # type: ignore[attr-defined]
SubmitOrderInput.__strawberry_definition__.from_input = _submit_input_from  # type: ignore[attr-defined]


@strawberry.input(description="Every criterion given must match; with none, `all: true` cancels "
                             "every open order of the tenant.")
class CancelOrdersFilter:
    account: str | None = None
    symbol: str | None = None
    mic: str | None = None
    side: OrderSide | None = None
    all: bool = False

    def parse(self) -> mass_cancel.CancelFilter:
        return mass_cancel.CancelFilter(self.account, self.symbol, self.mic,
                                        self.side.value if self.side else None, self.all)


@strawberry.input
class TradingAccountInput:
    code: str
    currency: str
    domicile: str = strawberry.field(description="ISO 3166-1 alpha-2.")
    client_type: ClientType = ClientType.INDIVIDUAL
    lei: str | None = strawberry.field(default=None, description="ISO 17442; checked.")
    name: str = ""
    credit_limit: str = "0"
    equity: str = "0"
    assessments: list[str] = strawberry.field(default_factory=list)


@strawberry.input(description="Only the fields given change.")
class ComplianceControlsInput:
    kill_switch: bool | None = strawberry.UNSET
    restricted: list[str] | None = strawberry.UNSET
    max_order_value: str | None = strawberry.UNSET
    max_order_quantity: str | None = strawberry.UNSET
    collar_pct: str | None = strawberry.UNSET
    collar_pct_by_mic: JSON | None = strawberry.UNSET
    max_position: str | None = strawberry.UNSET
    max_concentration_pct: str | None = strawberry.UNSET
    throttle_max_orders: int | None = strawberry.UNSET
    throttle_window_ms: int | None = strawberry.UNSET
    duplicate_window_ms: int | None = strawberry.UNSET

    def changes(self) -> dict[str, Any]:
        return {name: value for name, value in vars(self).items() if value is not strawberry.UNSET}


@strawberry.input
class LocateInput:
    account: str
    instrument: str = strawberry.field(description="SYMBOL.MIC or ISIN.")
    quantity: str
    source: str = ""
    expires_at: datetime | None = None


def _error_or_order(result: SubmitResult) -> Order:
    if result.error is not None:
        raise result.error
    assert result.order is not None
    return Order.of(result.order)


@strawberry.type
class Query:
    @strawberry.field
    def order(self, info: Info, id: strawberry.ID) -> Order:
        c, svc = _svc(info, "order", "read")
        columns = ORDER_ROWS.columns(node_fields(info, "Order"))
        if columns is None:
            return Order.of(svc.get(c.tenant_id, str(id)))
        return ORDER_ROWS.builder(columns)(svc.queries.get_columns(c.tenant_id, str(id), columns))

    @strawberry.field(description="The tenant's order transitions in the order they happened "
                                  "(oldest first), after `after` (an edge's or a transition's "
                                  "cursor; from the start without one), for the accounts named "
                                  "(all when none): a drop copy's catch-up.")
    def order_events(self, info: Info, after: str | None = None, first: int = DEFAULT_PAGE,
                     accounts: list[str] | None = None) -> Connection[OrderTransition]:
        c, svc = _svc(info, "order", "read")
        page = stream.page(svc.db, c.tenant_id, after=after, first=first,
                           max_page_size=svc.max_page_size, accounts=accounts)
        return Connection.of(page, OrderTransition.of)

    @strawberry.field
    def trading_accounts(self, info: Info) -> list[TradingAccount]:
        c, svc = _svc(info, "order", "read")
        return [TradingAccount.of(a) for a in svc.accounts(c.tenant_id)]

    @strawberry.field
    def compliance_controls(self, info: Info) -> ComplianceControls:
        c, svc = _svc(info, "compliance", "read")
        return ComplianceControls.of(svc.controls(c.tenant_id), mass_cancel.killed(svc, c.tenant_id))

    @strawberry.field(description="Newest first.")
    def compliance_decisions(self, info: Info, order_id: strawberry.ID | None = None,
                             passed: bool | None = None, first: int = DEFAULT_PAGE,
                             after: str | None = None) -> Connection[ComplianceDecision]:
        c, svc = _svc(info, "compliance", "read")
        page = svc.decisions(c.tenant_id, order_id=str(order_id) if order_id else None,
                             passed=passed, first=first, after=after)
        return Connection.of(page, ComplianceDecision.of)


@strawberry.type
class Mutation:
    @strawberry.mutation(description="Submit one order. A retry under the same clientOrderId "
                                     "answers the first order. A compliance denial is an order "
                                     "with status DENIED and its rejectCode.")
    def submit_order(self, info: Info, input: SubmitOrderInput) -> Order:
        c, svc = _svc(info, "order", "write")
        return _error_or_order(svc.submit(c.tenant_id, c.me.user_id, input.parse()))

    @strawberry.mutation(description="Submit up to 1,000 orders; each is stored whole or not at "
                                     "all, with a result per order in the order given.")
    def submit_orders(self, info: Info, inputs: list[SubmitOrderInput]) -> list[OrderResult]:
        c, svc = _svc(info, "order", "write")
        results = svc.submit_many(c.tenant_id, c.me.user_id, [i.parse() for i in inputs])
        return [OrderResult.of(r) for r in results]

    @strawberry.mutation(description="Change the total quantity and/or the limit price; checked by "
                                     "compliance again, then by the venue.")
    def amend_order(self, info: Info, id: strawberry.ID, quantity: str | None = None,
                    limit_price: str | None = None) -> Order:
        c, svc = _svc(info, "order", "write")
        return Order.of(svc.amend(c.tenant_id, c.me.user_id, str(id), quantity=quantity,
                                  limit_price=limit_price))

    @strawberry.mutation
    def cancel_order(self, info: Info, id: strawberry.ID) -> Order:
        c, svc = _svc(info, "order", "write")
        return Order.of(svc.cancel(c.tenant_id, c.me.user_id, str(id)))

    @strawberry.mutation(description="Cancel every open order matching the filter at once (one "
                                      "venue round); audited, with an outcome per order.")
    def cancel_orders(self, info: Info, filter: CancelOrdersFilter) -> MassCancelResult:
        c, svc = _svc(info, "order", "write")
        return MassCancelResult.of(mass_cancel.cancel_orders(svc, c.tenant_id, c.me.user_id,
                                                             filter.parse()))

    @strawberry.mutation(description="The tenant's kill switch, or an account's: on blocks new "
                                     "orders (COMPLIANCE_KILL_SWITCH) and cancels every open order "
                                     "in its scope; off lets orders in again. Audited.")
    def set_kill_switch(self, info: Info, on: bool, account: str | None = None) -> KillSwitchResult:
        c, svc = _svc(info, "compliance", "write")
        r = mass_cancel.set_kill_switch(svc, c.tenant_id, c.me.user_id, on=on, account=account)
        return KillSwitchResult(on=r.on, account=r.account,
                                cancel=MassCancelResult.of(r.cancel) if r.cancel else None)

    @strawberry.mutation(description="Create or change an account (by code).")
    def upsert_trading_account(self, info: Info, input: TradingAccountInput) -> TradingAccount:
        c, svc = _svc(info, "compliance", "write")
        return TradingAccount.of(svc.upsert_account(
            c.tenant_id, c.me.user_id, code=input.code, currency=input.currency,
            domicile=input.domicile, client_type=input.client_type.value, lei=input.lei,
            name=input.name, credit_limit=input.credit_limit, equity=input.equity,
            assessments=input.assessments))

    @strawberry.mutation(description="Change the tenant's controls; audited with before and after. "
                                     "Switching killSwitch on also cancels every open order.")
    def set_compliance_controls(self, info: Info, input: ComplianceControlsInput) -> ComplianceControls:
        c, svc = _svc(info, "compliance", "write")
        controls = svc.set_controls(c.tenant_id, c.me.user_id, input.changes())
        return ComplianceControls.of(controls, mass_cancel.killed(svc, c.tenant_id))

    @strawberry.mutation(description="Record shares located or borrowed for short sales.")
    def record_locate(self, info: Info, input: LocateInput) -> Locate:
        c, svc = _svc(info, "compliance", "write")
        return Locate.of(svc.record_locate(c.tenant_id, c.me.user_id, account=input.account,
                                           instrument=input.instrument, quantity=input.quantity,
                                           source=input.source, expires_at=input.expires_at))


@strawberry.type
class Subscription:
    @strawberry.subscription(description="Every transition of the tenant's orders, for the "
                                         "accounts named (all when none), one update each, in the "
                                         "order they happened (the stream's: gateway/trading/"
                                         "stream.py) with nothing missed or repeated. With `after` "
                                         "(a transition's cursor; \"0\": the start) the stored "
                                         "transitions after it come first: a drop copy that "
                                         "reconnects with its last cursor misses nothing.")
    async def order_updates(self, info: Info, accounts: list[str] | None = None,
                            after: str | None = None) -> AsyncGenerator[OrderUpdate, None]:
        c, svc = _svc(info, "order", "read")
        tenant_id = c.tenant_id
        subscription = await c.runtime.bus.subscribe(orders_topic(tenant_id))
        try:
            # Subscribed first, then the head read: what commits after it comes on the bus.
            start, end = await run_in_threadpool(stream.checked, svc.db, tenant_id, after)
            follower = stream.Follower(svc.db, tenant_id, end if start is None else start, accounts)
            while follower.position < end:
                for t in await run_in_threadpool(follower.catch_up, end):
                    yield OrderUpdate.of(t, None)
            async for event in subscription:
                payload = event.payload
                if payload.get("tenant_id") != tenant_id:
                    continue
                transitions = [stream.from_wire(w) for w in payload.get("transitions") or ()]
                ready = follower.in_order(transitions) if transitions else None
                if ready is not None:
                    for t in ready:
                        yield OrderUpdate.of(t, event.sequence, event.epoch)
                    continue
                # A gap, or a message without transitions: the store has everything up to here.
                until = (max(t.position for t in transitions) if transitions
                         else await run_in_threadpool(stream.head, svc.db, tenant_id))
                while follower.position < until:
                    for t in await run_in_threadpool(follower.catch_up, until):
                        yield OrderUpdate.of(t, None)
        finally:
            await subscription.close()

    @strawberry.subscription(description="Each compliance denial in the tenant, as it happens.")
    async def compliance_alerts(self, info: Info) -> AsyncGenerator[ComplianceAlert, None]:
        c = ctx(info)
        c.require("compliance", "read")
        tenant_id = c.tenant_id
        subscription = await c.runtime.bus.subscribe(alerts_topic(tenant_id))
        try:
            async for event in subscription:
                p = event.payload
                if p.get("tenant_id") != tenant_id:
                    continue
                yield ComplianceAlert(sequence=event.sequence, order_id=strawberry.ID(p["order_id"]),
                                      client_order_id=p["client_order_id"], account=p["account"],
                                      symbol=p["symbol"], mic=p["mic"], denials=p["denials"],
                                      jurisdictions=p["jurisdictions"], decided_at=p["decided_at"],
                                      epoch=event.epoch)
        finally:
            await subscription.close()
