"""The order reads: one order, pages of orders, trades, locates and compliance decisions (each
page with a COUNT of every page under the same filters), an order's executions and events,
an account's positions. Tenant-scoped sessions only; no writes. The selected reads (orders
and trades reading only the columns a query asked for, issue 14) are Core statements on the
engine that carry `tenant_id = :tenant` themselves."""

from __future__ import annotations

import base64
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from types import SimpleNamespace
from typing import Any

from sqlalchemy import Row, Select, Table, and_, bindparam, func, or_
from sqlalchemy import select as core_select
from sqlalchemy.orm.attributes import set_committed_value
from sqlmodel import col, select

from gateway.db import Database
from gateway.errors import InvalidInput
from gateway.pagination import (
    Page,
    check_page_size,
    cursor_instant,
    keyset_page,
    keyset_rows,
    keyset_select,
)
from gateway.trading.common import ORDERS, AccountNotFound, OrderNotFound
from gateway.trading.decisions import DecisionRecords
from gateway.trading.models import (
    AccountPosition,
    ComplianceDecisionRow,
    Execution,
    Locate,
    Order,
    OrderEvent,
    TradingAccount,
)
from gateway.trading.states import OrderStatus
from plugins.sdk import Side


class FilterInvalid(InvalidInput):
    code = "FILTER_INVALID"


class DateRangeInvalid(InvalidInput):
    code = "DATE_RANGE_INVALID"


def _one_or_many(one: str | None, many: Sequence[str] | None, what: str, plural: str
                 ) -> tuple[str, ...] | None:
    """`account`/`accounts`, `status`/`statuses`: one of the two, never both; a list names at
    least one (an empty list would match nothing, which is never what was meant)."""
    if one is not None and many is not None:
        raise FilterInvalid(f"give {what} or {plural}, not both")
    if many is not None:
        if not many:
            raise FilterInvalid(f"{plural} names at least one")
        return tuple(dict.fromkeys(many))
    return None if one is None else (one,)


def _range(since: datetime | None, until: datetime | None) -> None:
    for name, value in (("from", since), ("to", until)):
        if value is not None and value.tzinfo is None:
            raise InvalidInput(f"{name} needs its offset", code="INSTANT_NOT_AWARE")
    if since is not None and until is not None and since > until:
        raise DateRangeInvalid("from is after to", details={"from": since.isoformat(),
                                                            "to": until.isoformat()})


def _known(values: Sequence[str], enum: Any, what: str) -> None:
    # GraphQL's enums check these already; another caller gets the same clear error.
    for value in values:
        if value not in enum.__members__:
            raise FilterInvalid(f"{value!r} is not a {what}")


@dataclass(frozen=True)
class OrderCriteria:
    """What `orders` filters on; every criterion given must match. The range is on the
    submission time (created_at): from inclusive, to exclusive."""

    accounts: tuple[str, ...] | None = None
    statuses: tuple[str, ...] | None = None
    side: str | None = None
    symbol: str | None = None
    mic: str | None = None
    client_order_id: str | None = None
    since: datetime | None = None
    until: datetime | None = None

    @classmethod
    def of(cls, *, account: str | None = None, accounts: Sequence[str] | None = None,
           status: str | None = None, statuses: Sequence[str] | None = None,
           side: str | None = None, symbol: str | None = None, mic: str | None = None,
           client_order_id: str | None = None, since: datetime | None = None,
           until: datetime | None = None) -> OrderCriteria:
        _range(since, until)
        wanted = _one_or_many(status, statuses, "status", "statuses")
        _known(wanted or (), OrderStatus, "status")
        _known((side,) if side else (), Side, "side")
        return cls(_one_or_many(account, accounts, "account", "accounts"), wanted, side, symbol,
                   mic, client_order_id, since, until)

    def clauses(self) -> list[Any]:
        out: list[Any] = []
        for column, value in ((Order.side, self.side), (Order.symbol, self.symbol),
                              (Order.mic, self.mic), (Order.client_order_id, self.client_order_id)):
            if value is not None:
                out.append(column == value)
        if self.accounts is not None:
            out.append(col(Order.account).in_(self.accounts))
        if self.statuses is not None:
            out.append(col(Order.status).in_(self.statuses))
        if self.since is not None:
            out.append(col(Order.created_at) >= self.since)
        if self.until is not None:
            out.append(col(Order.created_at) < self.until)
        return out

    def bound(self) -> tuple[tuple[str, ...], dict[str, Any]]:
        """The criteria given, by name, and their values as bind parameters (`f_<name>`) of
        the statements `_filtered` builds: the same filters as `clauses`."""
        return _bound({"side": self.side, "symbol": self.symbol, "mic": self.mic,
                       "client_order_id": self.client_order_id, "accounts": self.accounts,
                       "statuses": self.statuses, "since": self.since, "until": self.until})


@dataclass(frozen=True)
class TradeCriteria:
    """What `trades` filters on. The range is on the execution time (`at`): from inclusive,
    to exclusive."""

    accounts: tuple[str, ...] | None = None
    order_id: str | None = None
    side: str | None = None
    symbol: str | None = None
    mic: str | None = None
    since: datetime | None = None
    until: datetime | None = None

    @classmethod
    def of(cls, *, account: str | None = None, accounts: Sequence[str] | None = None,
           order_id: str | None = None, side: str | None = None, symbol: str | None = None,
           mic: str | None = None, since: datetime | None = None, until: datetime | None = None
           ) -> TradeCriteria:
        _range(since, until)
        _known((side,) if side else (), Side, "side")
        return cls(_one_or_many(account, accounts, "account", "accounts"), order_id, side, symbol,
                   mic, since, until)

    def clauses(self) -> list[Any]:
        out: list[Any] = []
        for column, value in ((Execution.order_id, self.order_id), (Execution.side, self.side),
                              (Execution.symbol, self.symbol), (Execution.mic, self.mic)):
            if value is not None:
                out.append(column == value)
        if self.accounts is not None:
            out.append(col(Execution.account).in_(self.accounts))
        if self.since is not None:
            out.append(col(Execution.at) >= self.since)
        if self.until is not None:
            out.append(col(Execution.at) < self.until)
        return out

    def bound(self) -> tuple[tuple[str, ...], dict[str, Any]]:
        """As OrderCriteria.bound: the same filters as `clauses`."""
        return _bound({"order_id": self.order_id, "side": self.side, "symbol": self.symbol,
                       "mic": self.mic, "accounts": self.accounts, "since": self.since,
                       "until": self.until})


@dataclass(frozen=True)
class TradePage(Page[Execution]):
    def cursor(self, item: Any) -> str:
        raw = f"{item.created_at.isoformat()}|{item.stream_seq}|{item.id}"
        return base64.urlsafe_b64encode(raw.encode()).decode()


def _decode_trade_cursor(cursor: str) -> tuple[datetime, int, str]:
    try:
        at, position, row_id = base64.urlsafe_b64decode(cursor.encode()).decode().split("|", 2)
        seq = int(position)
        if not -(2 ** 63) <= seq < 2 ** 63:  # stream_seq is a BIGINT: a forged position
            raise ValueError(position)
        return cursor_instant(at), seq, row_id
    except (ValueError, UnicodeDecodeError, OverflowError):
        raise InvalidInput("cursor is not one this API returned", code="CURSOR_INVALID") from None


class OrderQueries:
    def __init__(self, db: Database, max_page_size: int,
                 decision_records: DecisionRecords | None = None) -> None:
        self.db = db
        self.max_page_size = max_page_size
        self.decision_records = decision_records or DecisionRecords()

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

    def list(self, tenant_id: str, criteria: OrderCriteria = OrderCriteria(), *, first: int = 20,
             after: str | None = None) -> Page[Order]:
        """A page of orders, newest first (keyset on (created_at, id): stable under filters)."""
        stmt = select(Order).where(*criteria.clauses())
        return keyset_page(self.db, tenant_id, stmt, Order, first=first, after=after,
                           max_page_size=self.max_page_size)

    def count(self, tenant_id: str, criteria: OrderCriteria = OrderCriteria()) -> int:
        """How many orders the same criteria match, on every page (one COUNT)."""
        return self._count(tenant_id, Order, criteria.clauses())

    def executions(self, tenant_id: str, order_ids: list[str]) -> dict[str, list[Execution]]:
        out: dict[str, list[Execution]] = {k: [] for k in order_ids}
        with self.db.tenant_session(tenant_id) as session:
            # Execution order: the venue's transact time, then the place each fill took in
            # the tenant's order stream (fills of one sweep share a time).
            for e in session.exec(select(Execution).where(col(Execution.order_id).in_(order_ids))
                                  .order_by(col(Execution.at), col(Execution.stream_seq),
                                            col(Execution.id))):
                out[e.order_id].append(e)
        return out

    def events(self, tenant_id: str, order_ids: list[str]) -> dict[str, list[OrderEvent]]:
        out: dict[str, list[OrderEvent]] = {k: [] for k in order_ids}
        with self.db.tenant_session(tenant_id) as session:
            for e in session.exec(select(OrderEvent).where(col(OrderEvent.order_id).in_(order_ids))
                                  .order_by(col(OrderEvent.seq))):
                out[e.order_id].append(e)
        return out

    def trades(self, tenant_id: str, criteria: TradeCriteria = TradeCriteria(), *, first: int = 20,
               after: str | None = None) -> Page[Execution]:
        """A page of fills, newest first: reverse execution order (the transact time, then the
        stream position: fills of one sweep share a time), keyset on (at, position, id)."""
        check_page_size(first, self.max_page_size)
        stmt = select(Execution).where(*criteria.clauses())
        if after is not None:
            at, position, row_id = _decode_trade_cursor(after)
            e = Execution
            stmt = stmt.where(or_(col(e.created_at) < at, and_(col(e.created_at) == at, or_(
                col(e.stream_seq) < position,
                and_(col(e.stream_seq) == position, col(e.id) < row_id)))))
        stmt = stmt.order_by(col(Execution.created_at).desc(), col(Execution.stream_seq).desc(),
                             col(Execution.id).desc()).limit(first + 1)
        with self.db.tenant_session(tenant_id) as session:
            rows = list(session.exec(stmt).all())
        return TradePage(rows[:first], len(rows) > first)

    def count_trades(self, tenant_id: str, criteria: TradeCriteria = TradeCriteria()) -> int:
        return self._count(tenant_id, Execution, criteria.clauses())

    def _count(self, tenant_id: str, model: Any, clauses: list[Any]) -> int:
        # The tenant criteria apply to the entity in FROM; the explicit tenant_id keeps the
        # COUNT on the (tenant_id, created_at) indexes even so.
        stmt = (select(func.count()).select_from(model)
                .where(model.tenant_id == tenant_id, *clauses))
        with self.db.tenant_session(tenant_id) as session:
            return int(session.exec(stmt).one())

    def positions(self, tenant_id: str, account: str) -> list[AccountPosition]:
        with self.db.tenant_session(tenant_id) as session:
            if session.exec(select(TradingAccount).where(TradingAccount.code == account)).first() is None:
                raise AccountNotFound(f"no trading account {account!r}")
            return list(session.exec(select(AccountPosition).where(AccountPosition.account == account)
                                     .order_by(col(AccountPosition.instrument_key))))

    def locates(self, tenant_id: str, *, account: str | None = None,
                instrument_keys: Sequence[str] | None = None, active_at: datetime | None = None,
                first: int = 20, after: str | None = None) -> Page[Locate]:
        """A page of locates, newest first: of one account (unknown: ACCOUNT_NOT_FOUND), of
        one instrument (any of its keys), and with `active_at` only those still usable then
        (remaining > 0, not expired), as intake counts them (books.py)."""
        stmt = select(Locate)
        if account is not None:
            self._account(tenant_id, account)
            stmt = stmt.where(Locate.account == account)
        if instrument_keys is not None:
            stmt = stmt.where(col(Locate.instrument_key).in_(list(instrument_keys)))
        if active_at is not None:
            stmt = stmt.where(col(Locate.remaining) > 0,
                              or_(col(Locate.expires_at).is_(None), col(Locate.expires_at) > active_at))
        return keyset_page(self.db, tenant_id, stmt, Locate, first=first, after=after,
                           max_page_size=self.max_page_size)

    def _account(self, tenant_id: str, account: str) -> None:
        with self.db.tenant_session(tenant_id) as session:
            if session.exec(select(TradingAccount).where(TradingAccount.code == account)).first() is None:
                raise AccountNotFound(f"no trading account {account!r}")

    def decisions(self, tenant_id: str, *, order_id: str | None = None, passed: bool | None = None,
                  first: int = 20, after: str | None = None) -> Page[ComplianceDecisionRow]:
        stmt = select(ComplianceDecisionRow)
        if order_id is not None:
            stmt = stmt.where(ComplianceDecisionRow.order_id == order_id)
        if passed is not None:
            stmt = stmt.where(ComplianceDecisionRow.passed == passed)
        page = keyset_page(self.db, tenant_id, stmt, ComplianceDecisionRow, first=first,
                           after=after, max_page_size=self.max_page_size)
        # Stored compact (decisions.py): each row's record as the decision wrote it, set on the
        # detached rows as loaded, so nothing would ever write it back.
        for row, record in zip(page.items, self.decision_records.expand(self.db, page.items),
                               strict=True):
            set_committed_value(row, "record", record)
        return page


    # -- selected reads (issue 14): only the columns a query asked for, one Core statement ------

    def page_columns(self, tenant_id: str, columns: Sequence[str],
                     criteria: OrderCriteria = OrderCriteria(), *, first: int = 20,
                     after: str | None = None) -> Page[Row[Any]]:
        """`list`, reading only `columns` of each order (and always id and created_at, the
        cursor's): the same rows in the same order under the same cursors."""
        names, params = criteria.bound()
        stmt = _order_page_statement(tuple(columns), names, after is not None)
        return keyset_rows(self.db, stmt, tenant_id, first=first, after=after,
                           max_page_size=self.max_page_size, params=params)

    def get_columns(self, tenant_id: str, order_id: str, columns: Sequence[str]) -> Row[Any]:
        """`get`, reading only `columns` (and id and created_at)."""
        with self.db.engine.connect() as conn:
            row = conn.execute(_order_get_statement(tuple(columns)),
                               {"tenant": tenant_id, "id": order_id}).first()
        if row is None:
            raise OrderNotFound(f"no order {order_id}")
        return row

    def trade_columns(self, tenant_id: str, columns: Sequence[str],
                      criteria: TradeCriteria = TradeCriteria(), *, first: int = 20,
                      after: str | None = None) -> TradePage:
        """`trades`, reading only `columns` of each fill (and always id, created_at and
        stream_seq, the cursor's): the same rows in the same order under the same cursors."""
        check_page_size(first, self.max_page_size)
        names, params = criteria.bound()
        values: dict[str, Any] = {"tenant": tenant_id, "limit": first + 1, **params}
        if after is not None:
            values["after_at"], values["after_seq"], values["after_id"] = \
                _decode_trade_cursor(after)
        stmt = _trade_page_statement(tuple(columns), names, after is not None)
        with self.db.engine.connect() as conn:
            rows = list(conn.execute(stmt, values).all())
        return TradePage(rows[:first], len(rows) > first)  # type: ignore[arg-type]


_EXECUTIONS: Table = Execution.__table__  # type: ignore[attr-defined]


def _bound(values: dict[str, Any]) -> tuple[tuple[str, ...], dict[str, Any]]:
    given = {name: value for name, value in values.items() if value is not None}
    return tuple(given), {f"f_{name}": list(value) if isinstance(value, tuple) else value
                          for name, value in given.items()}


# Filter name -> the column it is on; `accounts`/`statuses` match any of a list; `since`/
# `until` are the range (inclusive, exclusive) on `at_column`.
_LISTS = {"accounts": "account", "statuses": "status"}


def _filtered(stmt: Select[Any], table: Table, names: tuple[str, ...], at_column: str
              ) -> Select[Any]:
    for name in names:
        param = bindparam(f"f_{name}", expanding=name in _LISTS)
        if name in _LISTS:
            stmt = stmt.where(table.c[_LISTS[name]].in_(param))
        elif name == "since":
            stmt = stmt.where(table.c[at_column] >= param)
        elif name == "until":
            stmt = stmt.where(table.c[at_column] < param)
        else:
            stmt = stmt.where(table.c[name] == param)
    return stmt


def _picked(table: Table, always: tuple[str, ...], columns: tuple[str, ...]) -> Select[Any]:
    return core_select(*(table.c[name] for name in dict.fromkeys((*always, *columns))))


# Built once per shape (columns, filters given, first page or not) and bound per call; the
# tenant filter is in the statement itself: a Core statement does not go through the session's
# tenant hook (gateway/db.py).
@lru_cache(maxsize=512)
def _order_page_statement(columns: tuple[str, ...], names: tuple[str, ...], after: bool
                          ) -> Select[Any]:
    stmt = _filtered(_picked(ORDERS, ("id", "created_at"), columns), ORDERS, names, "created_at")
    return keyset_select(stmt, ORDERS, after=after)


@lru_cache(maxsize=512)
def _order_get_statement(columns: tuple[str, ...]) -> Select[Any]:
    return _picked(ORDERS, ("id", "created_at"), columns).where(
        ORDERS.c.id == bindparam("id"), ORDERS.c.tenant_id == bindparam("tenant"))


@lru_cache(maxsize=512)
def _trade_page_statement(columns: tuple[str, ...], names: tuple[str, ...], after: bool
                          ) -> Select[Any]:
    e = _EXECUTIONS
    stmt = _filtered(_picked(e, ("id", "created_at", "stream_seq"), columns), e, names, "at")
    stmt = stmt.where(e.c.tenant_id == bindparam("tenant"))
    if after:
        at, position, row_id = bindparam("after_at"), bindparam("after_seq"), bindparam("after_id")
        stmt = stmt.where(or_(e.c.created_at < at, and_(e.c.created_at == at, or_(
            e.c.stream_seq < position, and_(e.c.stream_seq == position, e.c.id < row_id)))))
    return stmt.order_by(e.c.created_at.desc(), e.c.stream_seq.desc(), e.c.id.desc()) \
        .limit(bindparam("limit"))
