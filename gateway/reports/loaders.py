"""Read a tenant's orders, fills and hedges for a period into the builders' plain facts.

Each loader reads in the tenant's own session (a job never sees another tenant's rows, whatever
the scope names) with a constant number of queries, whatever the number of rows.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from decimal import Decimal, InvalidOperation
from typing import Any

from sqlmodel import col, select

from gateway.db import Database
from gateway.fx.models import HedgePosition
from gateway.reports.best_execution import OrderOutcome
from gateway.reports.cftc import FxForward
from gateway.reports.common import EVERYTHING, Period, Scope
from gateway.reports.mifid import ExecutedTrade, Person
from gateway.tenancy.models import User
from gateway.trading.models import Execution, Order, TradingAccount
from gateway.trading.states import OrderStatus

InstrumentClass = Callable[[str, str], str]  # (symbol, mic) -> class


def _decimal(value: Any) -> Decimal | None:
    try:
        return None if value in (None, "") else Decimal(str(value))
    except InvalidOperation:
        return None


def _router_chose(order: Order) -> bool:
    return order.requested_mic in ("", "SMART") and order.routing.get("reason") != "DIRECTED"


def executed_trades(db: Database, tenant_id: str, period: Period,
                    instrument_class: InstrumentClass = lambda symbol, mic: "UNKNOWN",
                    scope: Scope = EVERYTHING) -> list[ExecutedTrade]:
    """The tenant's fills in the period within `scope` (venue: the fill's MIC; account: the
    order's; instrument class from market data), with the order's account and the national
    identifier recorded for the user who submitted it."""
    with db.tenant_session(tenant_id) as session:
        stmt = (select(Execution, Order).join(Order, col(Order.id) == col(Execution.order_id))
                .where(col(Execution.at) >= period.start, col(Execution.at) < period.end))
        if scope.venues:
            stmt = stmt.where(col(Execution.mic).in_(sorted(scope.venues)))
        if scope.accounts:
            stmt = stmt.where(col(Order.account).in_(sorted(scope.accounts)))
        rows = session.exec(stmt.order_by(col(Execution.at), col(Execution.id))).all()
        codes = {order.account for _, order in rows}
        accounts = {a.code: a for a in session.exec(
            select(TradingAccount).where(col(TradingAccount.code).in_(codes))).all()} if codes else {}
        user_ids = {order.created_by for _, order in rows if order.created_by}
        users = {u.id: u for u in session.exec(
            select(User).where(col(User.id).in_(user_ids))).all()} if user_ids else {}
    classes: dict[tuple[str, str], str] = {}
    trades = []
    for fill, order in rows:
        key = (order.symbol, fill.mic)
        if key not in classes:
            classes[key] = instrument_class(*key)
        if not scope.admits_class(classes[key]):
            continue
        account = accounts.get(order.account)
        user = users.get(order.created_by or "")
        decider = Person(user.national_id, user.national_id_scheme, user.branch_country or "") \
            if user is not None and user.national_id and user.national_id_scheme else None
        trades.append(ExecutedTrade(
            execution_id=fill.id, order_id=order.id, account=order.account,
            client_type=account.client_type if account else "INDIVIDUAL",
            client_lei=account.lei if account else None, side=order.side,
            quantity=fill.last_qty, price=fill.last_px, currency=fill.currency, mic=fill.mic,
            isin=order.isin, symbol=order.symbol, executed_at=fill.at,
            decided_by=order.created_by, routed_by_router=_router_chose(order),
            instrument_class=classes[key], decider=decider,
            decider_name=user.email if user is not None else ""))
    return trades


NOT_AT_VENUE = (OrderStatus.DENIED.value, OrderStatus.NEW.value)


def order_outcomes(db: Database, tenant_id: str, period: Period,
                   instrument_class: InstrumentClass, scope: Scope = EVERYTHING
                   ) -> list[OrderOutcome]:
    """Orders submitted in the period that reached a venue, with all their fills, within
    `scope` (venue: the order's). A DENIED order keeps the venue it was routed to but never
    went there; a NEW one was never sent."""
    with db.tenant_session(tenant_id) as session:
        stmt = select(Order).where(col(Order.created_at) >= period.start,
                                   col(Order.created_at) < period.end, Order.mic != "",
                                   col(Order.status).not_in(NOT_AT_VENUE))
        if scope.venues:
            stmt = stmt.where(col(Order.mic).in_(sorted(scope.venues)))
        if scope.accounts:
            stmt = stmt.where(col(Order.account).in_(sorted(scope.accounts)))
        orders = [o for o in session.exec(stmt.order_by(col(Order.created_at), col(Order.id))).all()
                  if scope.admits_class(instrument_class(o.symbol, o.mic))]
        fills: dict[str, list[Execution]] = defaultdict(list)
        if orders:
            for fill in session.exec(select(Execution).where(
                    col(Execution.order_id).in_([o.id for o in orders]))).all():
                fills[fill.order_id].append(fill)
    outcomes = []
    for order in orders:
        own = sorted(fills.get(order.id, []), key=lambda f: f.at)
        filled = sum((f.last_qty for f in own), Decimal(0))
        average = sum((f.last_qty * f.last_px for f in own), Decimal(0)) / filled if filled else None
        outcomes.append(OrderOutcome(
            order_id=order.id, mic=order.mic,
            instrument_class=instrument_class(order.symbol, order.mic), side=order.side,
            quantity=order.quantity, filled_quantity=filled, average_price=average,
            arrival_price=_decimal(order.routing.get("arrival_price")),
            submitted_at=order.created_at, first_fill_at=own[0].at if own else None,
            routing=order.routing if _router_chose(order) else None))
    return outcomes


def fx_forwards(db: Database, tenant_id: str, period: Period) -> list[FxForward]:
    with db.tenant_session(tenant_id) as session:
        rows = session.exec(
            select(HedgePosition).where(col(HedgePosition.created_at) >= period.start,
                                        col(HedgePosition.created_at) < period.end)
            .order_by(col(HedgePosition.created_at), col(HedgePosition.id))).all()
    return [FxForward(position_id=p.id, pair=p.pair, currency=p.currency,
                      base_currency=p.base_currency, notional=p.notional,
                      forward_rate=p.forward_rate, trade_date=p.trade_date, value_date=p.value_date,
                      executed_at=p.created_at) for p in rows]
