"""Selected reads of the audit trail (issue 14): a page of a tenant's records reading only the
columns a query asked for, in one Core statement, with the same rows, order and cursors as
`AuditTrail.records`. A record's payload is its widest column: a page that does not ask for
it does not read it.

Every lane of the tenant's trail is read (gateway/audit/lanes.py), newest first by (at, chain,
seq), the cursor's three columns always read. The tenant is named explicitly,
`tenant_id = :tenant`: the ORM's tenant hook adds it to `records` but never sees this statement
(Core statements do not go through it, gateway/db.py), and it is what keeps another tenant's
lanes out (a lane's name alone is no proof of whose it is)."""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from typing import Any

from sqlalchemy import Select, Table, bindparam
from sqlalchemy import select as core_select

from gateway.audit.lanes import decode_cursor, past
from gateway.audit.models import AuditRecord
from gateway.audit.trail import AuditPage, AuditTrail
from gateway.pagination import check_page_size

_RECORDS: Table = AuditRecord.__table__  # type: ignore[attr-defined]
CURSOR_COLUMNS = ("at", "chain", "seq")


def record_columns(trail: AuditTrail, tenant_id: str, columns: Sequence[str], *,
                   kind: str | None = None, subject: str | None = None, first: int,
                   after: str | None = None) -> AuditPage:
    """`trail.records`, reading only `columns` of each record (and always at, chain and seq,
    the cursor's)."""
    check_page_size(first, trail.max_page_size)
    values: dict[str, Any] = {"tenant": tenant_id, "kind": kind, "subject": subject,
                              "limit": first + 1}
    if after is not None:
        values["after_at"], values["after_chain"], values["after_seq"] = decode_cursor(after)
    stmt = _statement(tuple(columns), kind is not None, subject is not None, after is not None)
    with trail.db.engine.connect() as conn:
        rows = list(conn.execute(stmt, values).all())
    return AuditPage(rows[:first], len(rows) > first)  # type: ignore[arg-type]


@lru_cache(maxsize=256)
def _statement(columns: tuple[str, ...], kind: bool, subject: bool, after: bool) -> Select[Any]:
    r = _RECORDS
    order = [r.c[name] for name in CURSOR_COLUMNS]
    stmt = core_select(*(r.c[name] for name in dict.fromkeys((*CURSOR_COLUMNS, *columns)))).where(
        r.c.tenant_id == bindparam("tenant"))
    if kind:
        stmt = stmt.where(r.c.kind == bindparam("kind"))
    if subject:
        stmt = stmt.where(r.c.subject == bindparam("subject"))
    if after:
        stmt = stmt.where(past(order, [bindparam(f"after_{c.name}", type_=c.type) for c in order]))
    return stmt.order_by(*(c.desc() for c in order)).limit(bindparam("limit"))
