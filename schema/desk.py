"""Desk views: `orders` and `trades` with ranges, sides, several statuses and a total count;
positions across accounts with realised and unrealised P&L, fees and net P&L in the
instrument's, the account's and the tenant's base currency (`positions`, `positionSummary`);
`locates`. Permission: "order" read. The valuation is gateway/trading/desk.py's.

An amount that cannot be known (no quote to mark at, no FX rate) is null and its `gaps` say
why (NO_QUOTE, FX_RATE_MISSING); a total with an unknown part is null too.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from decimal import Decimal
from typing import Annotated

import strawberry
from strawberry.types import Info

from gateway.errors import InvalidInput
from gateway.pagination import Page
from gateway.trading import desk
from gateway.trading.queries import OrderCriteria, TradeCriteria
from schema.common import DEFAULT_PAGE, Connection, Edge, PageInfo
from schema.orders import (
    EXECUTION_ROWS,
    ORDER_ROWS,
    Execution,
    Locate,
    Order,
    OrderSide,
    OrderStatus,
    _page_orders,
    _plain,
    _svc,
)
from schema.selected_rows import RowShape
from schema.selection import connection_node_fields, node_fields

# The connections' own field besides edges and pageInfo: it reads no node column.
_COUNTED = frozenset({"totalCount"})

From = Annotated[datetime | None, strawberry.argument(
    name="from", description="From this instant (inclusive, with its offset).")]
To = Annotated[datetime | None, strawberry.argument(
    description="Up to this instant (exclusive); before `from`: DATE_RANGE_INVALID.")]


def _edges(page: Page[object], convert: Callable[[object], object]) -> tuple[list[Edge], PageInfo]:  # type: ignore[type-arg]
    plain = Connection.of(page, convert)
    return plain.edges, plain.page_info


@strawberry.type(name="OrderConnection")
class OrderConnection:
    edges: list[Edge[Order]]
    page_info: PageInfo
    counter: strawberry.Private[Callable[[], int]]

    @strawberry.field(description="How many orders match the filter, on every page (one COUNT, "
                                  "run only when asked for).")
    def total_count(self) -> int:
        return self.counter()


@strawberry.type(name="ExecutionConnection")
class ExecutionConnection:
    edges: list[Edge[Execution]]
    page_info: PageInfo
    counter: strawberry.Private[Callable[[], int]]

    @strawberry.field(description="How many fills match, on every page (one COUNT, run only "
                                  "when asked for).")
    def total_count(self) -> int:
        return self.counter()


@strawberry.input(description="Every criterion given must match. `account` or `accounts`, "
                              "`status` or `statuses`: one of each pair (both: FILTER_INVALID).")
class OrderFilter:
    account: str | None = None
    accounts: list[str] | None = None
    status: OrderStatus | None = None  # type: ignore[valid-type]
    statuses: list[OrderStatus] | None = strawberry.field(  # type: ignore[valid-type]
        default=None, description="Any of these.")
    side: OrderSide | None = None
    symbol: str | None = None
    mic: str | None = None
    client_order_id: str | None = None
    from_: datetime | None = strawberry.field(
        name="from", default=None, description="Submitted at or after (with its offset).")
    to: datetime | None = strawberry.field(
        default=None, description="Submitted before; before `from`: DATE_RANGE_INVALID.")

    def criteria(self) -> OrderCriteria:
        return OrderCriteria.of(
            account=self.account, accounts=self.accounts,
            status=self.status.value if self.status else None,
            statuses=None if self.statuses is None else [s.value for s in self.statuses],
            side=self.side.value if self.side else None, symbol=self.symbol, mic=self.mic,
            client_order_id=self.client_order_id, since=self.from_, until=self.to)


@strawberry.type(description="Why an amount is null: NO_QUOTE (subject: the listing SYMBOL.MIC "
                             "with no quote to mark at) or FX_RATE_MISSING (subject: FROM/TO).")
class ValuationGap:
    code: str
    subject: str


@strawberry.type(description="P&L in one currency. Null where it cannot be known; `gaps` say why.")
class PnlAmounts:
    currency: str
    rate: Decimal | None = strawberry.field(
        description="From the instrument's currency, at the current rate; null in totals.")
    realized_pnl: Decimal | None
    unrealized_pnl: Decimal | None = strawberry.field(description="At the current mid.")
    fees: Decimal | None = strawberry.field(description="Paid on the fills (rebates negative).")
    net_pnl: Decimal | None = strawberry.field(description="Realised + unrealised - fees.")
    market_value: Decimal | None = strawberry.field(description="Quantity times the mid.")
    complete: bool = strawberry.field(description="No gaps: every amount is known.")
    gaps: list[ValuationGap]

    @classmethod
    def of(cls, a: desk.Amounts) -> PnlAmounts:
        return cls(currency=a.currency, rate=_plain(a.rate), realized_pnl=_plain(a.realized),
                   unrealized_pnl=_plain(a.unrealized), fees=_plain(a.fees), net_pnl=_plain(a.net),
                   market_value=_plain(a.market_value), complete=not a.gaps,
                   gaps=[ValuationGap(code=g.code, subject=g.subject) for g in a.gaps])


@strawberry.type(name="AccountPosition", description="What an account holds, from its fills, "
                                                      "valued now.")
class AccountPositionType:
    account: str
    instrument_key: str = strawberry.field(description="ISIN, else SYMBOL.MIC.")
    symbol: str
    mic: str = strawberry.field(description="Of the last fill; the mark is this listing's.")
    currency: str = strawberry.field(description="The instrument's.")
    account_currency: str
    quantity: Decimal = strawberry.field(description="Negative: short.")
    avg_price: Decimal
    mark_price: Decimal | None = strawberry.field(
        description="The current mid; null when flat or with no quote.")
    realized_pnl: Decimal = strawberry.field(description="In the instrument's currency.")
    unrealized_pnl: Decimal | None = strawberry.field(
        description="In the instrument's currency; null with no quote (gap NO_QUOTE).")
    fees: Decimal = strawberry.field(description="In the instrument's currency.")
    net_pnl: Decimal | None = strawberry.field(description="In the instrument's currency.")
    in_instrument_currency: PnlAmounts
    in_account_currency: PnlAmounts
    in_base_currency: PnlAmounts
    updated_at: datetime

    @classmethod
    def of(cls, v: desk.PositionValue) -> AccountPositionType:
        p = v.row
        return cls(account=p.account, instrument_key=p.instrument_key, symbol=p.symbol, mic=p.mic,
                   currency=p.currency, account_currency=v.account_currency,
                   quantity=_plain(p.quantity), avg_price=_plain(p.avg_price),  # type: ignore[arg-type]
                   mark_price=_plain(v.mark), realized_pnl=_plain(p.realized_pnl),  # type: ignore[arg-type]
                   unrealized_pnl=_plain(v.local.unrealized), fees=_plain(v.fees),  # type: ignore[arg-type]
                   net_pnl=_plain(v.local.net), in_instrument_currency=PnlAmounts.of(v.local),
                   in_account_currency=PnlAmounts.of(v.account),
                   in_base_currency=PnlAmounts.of(v.base), updated_at=p.updated_at)


# Selected reads (issue 14): a positions query asking for stored fields only reads just those
# columns (desk.holdings) and values nothing; any valued amount (mark, unrealised or net P&L,
# fees, the amounts in a currency) is not in this map, so it takes the valuation.
POSITION_ROWS: RowShape[AccountPositionType] = RowShape(
    AccountPositionType,
    fields={"__typename": (), "account": ("account",), "instrumentKey": ("instrument_key",),
            "symbol": ("symbol",), "mic": ("mic",), "currency": ("currency",),
            "accountCurrency": (), "quantity": ("quantity",), "avgPrice": ("avg_price",),
            "realizedPnl": ("realized_pnl",), "updatedAt": ("updated_at",)},
    convert=dict.fromkeys(("quantity", "avg_price", "realized_pnl"), _plain),
)


@strawberry.type(description="One account's positions added up.")
class AccountPnl:
    account: str
    in_account_currency: PnlAmounts
    in_base_currency: PnlAmounts


@strawberry.type(description="Positions across accounts, valued at one instant, with totals.")
class PositionSummary:
    at: datetime
    base_currency: str = strawberry.field(description="The tenant's (set at onboarding).")
    positions: list[AccountPositionType]
    accounts: list[AccountPnl]
    total: PnlAmounts = strawberry.field(description="Every account's, in the base currency.")


def _accounts(account: str | None, accounts: list[str] | None) -> list[str] | None:
    if account is not None and accounts is not None:
        raise InvalidInput("give account or accounts, not both", code="FILTER_INVALID")
    return [account] if account is not None else accounts


@strawberry.type
class Query:
    @strawberry.field(description="Newest first.")
    def orders(self, info: Info, filter: OrderFilter | None = None, first: int = DEFAULT_PAGE,
               after: str | None = None) -> OrderConnection:
        c, svc = _svc(info, "order", "read")
        criteria = (filter or OrderFilter()).criteria()
        fields = connection_node_fields(info, "Order", extra=_COUNTED)
        columns = ORDER_ROWS.columns(fields)
        if fields is None or columns is None:
            page = svc.list(c.tenant_id, criteria, first=first, after=after)
            _page_orders(c, svc, [o.id for o in page.items])
            edges, page_info = _edges(page, Order.of)  # type: ignore[arg-type]
        else:
            rows = svc.queries.page_columns(c.tenant_id, columns, criteria, first=first,
                                            after=after)
            _page_orders(c, svc, [row.id for row in rows.items],
                         executions="executions" in fields, events="events" in fields)
            edges, page_info = _edges(rows, ORDER_ROWS.builder(columns))  # type: ignore[arg-type]
        return OrderConnection(edges=edges, page_info=page_info,
                               counter=lambda: svc.count(c.tenant_id, criteria))

    @strawberry.field(description="Fills, newest first; every argument given must match.")
    def trades(self, info: Info, account: str | None = None, accounts: list[str] | None = None,
               order_id: strawberry.ID | None = None, symbol: str | None = None,
               mic: str | None = None, side: OrderSide | None = None, from_: From = None,
               to: To = None, first: int = DEFAULT_PAGE, after: str | None = None
               ) -> ExecutionConnection:
        c, svc = _svc(info, "order", "read")
        criteria = TradeCriteria.of(account=account, accounts=accounts,
                                    order_id=str(order_id) if order_id else None, symbol=symbol,
                                    mic=mic, side=side.value if side else None, since=from_,
                                    until=to)
        columns = EXECUTION_ROWS.columns(connection_node_fields(info, "Execution",
                                                                extra=_COUNTED))
        if columns is None:
            page = svc.trades(c.tenant_id, criteria, first=first, after=after)
            edges, page_info = _edges(page, Execution.of)  # type: ignore[arg-type]
        else:
            rows = svc.queries.trade_columns(c.tenant_id, columns, criteria, first=first,
                                             after=after)
            edges, page_info = _edges(rows, EXECUTION_ROWS.builder(columns))  # type: ignore[arg-type]
        return ExecutionConnection(edges=edges, page_info=page_info,
                                   counter=lambda: svc.count_trades(c.tenant_id, criteria))

    @strawberry.field(description="Positions of the accounts named (`account` or `accounts`; "
                                  "none: every account), by account and instrument, valued now.")
    def positions(self, info: Info, account: str | None = None, accounts: list[str] | None = None,
                  instrument: str | None = None) -> list[AccountPositionType]:
        c, svc = _svc(info, "order", "read")
        columns = POSITION_ROWS.columns(node_fields(info, "AccountPosition"))
        if columns is not None:
            build = POSITION_ROWS.values_builder(columns)
            return [build(values) for values in desk.holdings(
                svc, c.tenant_id, columns, _accounts(account, accounts), instrument)]
        valuation = svc.valuate(c.tenant_id, _accounts(account, accounts), instrument)
        return [AccountPositionType.of(v) for v in valuation.positions]

    @strawberry.field(description="Positions across accounts with totals per account and "
                                  "overall, in the tenant's base currency.")
    def position_summary(self, info: Info, accounts: list[str] | None = None,
                         instrument: str | None = None) -> PositionSummary:
        c, svc = _svc(info, "order", "read")
        v = svc.valuate(c.tenant_id, accounts, instrument)
        return PositionSummary(
            at=v.at, base_currency=v.base_currency,
            positions=[AccountPositionType.of(p) for p in v.positions],
            accounts=[AccountPnl(account=t.account, in_account_currency=PnlAmounts.of(t.in_account),
                                 in_base_currency=PnlAmounts.of(t.in_base)) for t in v.accounts],
            total=PnlAmounts.of(v.total))

    @strawberry.field(description="Shares located for short sales, newest first. `instrument`: "
                                  "SYMBOL.MIC or ISIN; `activeOnly`: those still usable now "
                                  "(remaining, not expired).")
    def locates(self, info: Info, account: str | None = None, instrument: str | None = None,
                active_only: bool = False, first: int = DEFAULT_PAGE, after: str | None = None
                ) -> Connection[Locate]:
        c, svc = _svc(info, "order", "read")
        page = svc.locates(c.tenant_id, account=account, instrument=instrument,
                           active_only=active_only, first=first, after=after)
        return Connection.of(page, Locate.of)
