"""The order reads: one order, pages of orders, trades and compliance decisions, an order's
executions and events, an account's positions. Tenant-scoped sessions only; no writes."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from sqlmodel import col, select

from gateway.db import Database
from gateway.pagination import Page, keyset_page
from gateway.trading.common import ORDERS, AccountNotFound, OrderNotFound
from gateway.trading.models import (
    AccountPosition,
    ComplianceDecisionRow,
    Execution,
    Order,
    OrderEvent,
    TradingAccount,
)


class OrderQueries:
    def __init__(self, db: Database, max_page_size: int) -> None:
        self.db = db
        self.max_page_size = max_page_size

    def get(self, tenant_id: str, order_id: str) -> Order:
        with self.db.tenant_session(tenant_id) as session:
            row = session.get(Order, order_id)
            # session.get skips the tenant criteria for an identity-map hit: check explicitly.
            if row is None or row.tenant_id != tenant_id:
                raise OrderNotFound(f"no order {order_id}")
            return row

    def views(self, tenant_id: str, ids: list[str]) -> dict[str, Any]:
        """Orders as plain attribute views (a Core read: no ORM object per row)."""
        with self.db.tenant_session(tenant_id) as session:
            return {row.id: SimpleNamespace(**row._mapping) for row in session.execute(
                select(ORDERS).where(ORDERS.c.id.in_(ids), ORDERS.c.tenant_id == tenant_id))}

    def orders_by_ids(self, tenant_id: str, ids: list[str]) -> dict[str, Order]:
        with self.db.tenant_session(tenant_id) as session:
            return {o.id: o for o in session.exec(select(Order).where(col(Order.id).in_(ids)))}

    def list(self, tenant_id: str, *, account: str | None = None, status: str | None = None,
             symbol: str | None = None, mic: str | None = None, client_order_id: str | None = None,
             first: int = 20, after: str | None = None) -> Page[Order]:
        stmt = select(Order)
        for column, value in ((Order.account, account), (Order.status, status),
                              (Order.symbol, symbol), (Order.mic, mic),
                              (Order.client_order_id, client_order_id)):
            if value is not None:
                stmt = stmt.where(column == value)
        return keyset_page(self.db, tenant_id, stmt, Order, first=first, after=after,
                           max_page_size=self.max_page_size)

    def executions(self, tenant_id: str, order_ids: list[str]) -> dict[str, list[Execution]]:
        out: dict[str, list[Execution]] = {k: [] for k in order_ids}
        with self.db.tenant_session(tenant_id) as session:
            for e in session.exec(select(Execution).where(col(Execution.order_id).in_(order_ids))
                                  .order_by(col(Execution.at), col(Execution.id))):
                out[e.order_id].append(e)
        return out

    def events(self, tenant_id: str, order_ids: list[str]) -> dict[str, list[OrderEvent]]:
        out: dict[str, list[OrderEvent]] = {k: [] for k in order_ids}
        with self.db.tenant_session(tenant_id) as session:
            for e in session.exec(select(OrderEvent).where(col(OrderEvent.order_id).in_(order_ids))
                                  .order_by(col(OrderEvent.seq))):
                out[e.order_id].append(e)
        return out

    def trades(self, tenant_id: str, *, account: str | None = None, order_id: str | None = None,
               symbol: str | None = None, first: int = 20, after: str | None = None) -> Page[Execution]:
        stmt = select(Execution)
        for column, value in ((Execution.account, account), (Execution.order_id, order_id),
                              (Execution.symbol, symbol)):
            if value is not None:
                stmt = stmt.where(column == value)
        return keyset_page(self.db, tenant_id, stmt, Execution, first=first, after=after,
                           max_page_size=self.max_page_size)

    def positions(self, tenant_id: str, account: str) -> list[AccountPosition]:
        with self.db.tenant_session(tenant_id) as session:
            if session.exec(select(TradingAccount).where(TradingAccount.code == account)).first() is None:
                raise AccountNotFound(f"no trading account {account!r}")
            return list(session.exec(select(AccountPosition).where(AccountPosition.account == account)
                                     .order_by(col(AccountPosition.instrument_key))))

    def decisions(self, tenant_id: str, *, order_id: str | None = None, passed: bool | None = None,
                  first: int = 20, after: str | None = None) -> Page[ComplianceDecisionRow]:
        stmt = select(ComplianceDecisionRow)
        if order_id is not None:
            stmt = stmt.where(ComplianceDecisionRow.order_id == order_id)
        if passed is not None:
            stmt = stmt.where(ComplianceDecisionRow.passed == passed)
        return keyset_page(self.db, tenant_id, stmt, ComplianceDecisionRow, first=first, after=after,
                           max_page_size=self.max_page_size)

