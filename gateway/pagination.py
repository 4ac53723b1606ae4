"""Opaque keyset cursors: (created_at, id) of the last row seen, newest first."""

from __future__ import annotations

import base64
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Generic, TypeVar

from sqlalchemy import Row, Select, Table, and_, bindparam, or_
from sqlmodel import col

from gateway.db import Database
from gateway.errors import InvalidInput

T = TypeVar("T")


def encode_cursor(created_at: datetime, row_id: str) -> str:
    return base64.urlsafe_b64encode(f"{created_at.isoformat()}|{row_id}".encode()).decode()


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        text = base64.urlsafe_b64decode(cursor.encode()).decode()
        stamp, row_id = text.split("|", 1)
        return cursor_instant(stamp), row_id
    except (ValueError, UnicodeDecodeError, OverflowError):
        raise InvalidInput("cursor is not one this API returned", code="CURSOR_INVALID") from None


def cursor_instant(text: str) -> datetime:
    """A cursor's instant, in UTC. Every stamp a cursor is made of is aware (UTCDateTime): a
    naive one, or one outside the years 1-9999 in UTC, was forged, and would otherwise fail
    only when bound, as an internal error (ValueError, OverflowError)."""
    at = datetime.fromisoformat(text)
    if at.tzinfo is None:
        raise ValueError("a cursor's instant has an offset")
    return at.astimezone(UTC)


def check_page_size(first: int, maximum: int) -> None:
    if first < 1 or first > maximum:
        raise InvalidInput(f"first must be between 1 and {maximum}", code="PAGE_SIZE_INVALID")


def after_clause(model: Any, cursor: str) -> Any:
    created_at, row_id = decode_cursor(cursor)
    return or_(model.created_at < created_at,
               and_(model.created_at == created_at, model.id < row_id))


@dataclass(frozen=True)
class Page(Generic[T]):
    items: list[T]
    has_next: bool

    def cursor(self, item: Any) -> str:
        return encode_cursor(item.created_at, item.id)


def keyset_page(db: Database, tenant_id: str | None, stmt: Any, model: Any, *, first: int,
                after: str | None, max_page_size: int) -> Page[Any]:
    """One page of `stmt` (a select of `model`, filters already applied), newest first, read in
    the tenant's scope, or across tenants with `tenant_id` None (platform rows and views for
    platform administrators); one extra row tells whether another page follows."""
    check_page_size(first, max_page_size)
    if after is not None:
        stmt = stmt.where(after_clause(model, after))
    stmt = stmt.order_by(col(model.created_at).desc(), col(model.id).desc()).limit(first + 1)
    with db.tenant_session(tenant_id) if tenant_id is not None else db.system_session() as session:
        rows = list(session.exec(stmt).all())
    return Page(rows[:first], len(rows) > first)


def keyset_select(stmt: Select[Any], table: Table, *, after: bool) -> Select[Any]:
    """`stmt` over `table` (its columns picked, filters and joins applied; created_at and id,
    the cursor's, among the columns) as one page newest first, built once per shape and run by
    `keyset_rows`. Bind parameters: `tenant`, `limit`, and with `after` the cursor's
    `after_created_at` and `after_id`. The tenant filter on `table` is added here, explicitly:
    Core statements do not go through the session's tenant hook (gateway/db.py), so a table
    joined in needs its own, in the join's condition, on the same `tenant` parameter."""
    stmt = stmt.where(table.c.tenant_id == bindparam("tenant"))
    if after:
        at, row_id = bindparam("after_created_at"), bindparam("after_id")
        stmt = stmt.where(or_(table.c.created_at < at,
                              and_(table.c.created_at == at, table.c.id < row_id)))
    return stmt.order_by(table.c.created_at.desc(), table.c.id.desc()).limit(bindparam("limit"))


def keyset_rows(db: Database, stmt: Select[Any], tenant_id: str, *, first: int,
                after: str | None, max_page_size: int,
                params: dict[str, Any] | None = None) -> Page[Row[Any]]:
    """One page, as rows, of a `keyset_select` statement (built with `after` set exactly when
    `after` is given here) for one tenant; `params` binds the statement's own filters."""
    check_page_size(first, max_page_size)
    values = {"tenant": tenant_id, "limit": first + 1, **(params or {})}
    if after is not None:
        values["after_created_at"], values["after_id"] = decode_cursor(after)
    with db.engine.connect() as conn:
        rows = list(conn.execute(stmt, values).all())
    return Page(rows[:first], len(rows) > first)
