"""Orders and executions compared with their audit records (read only).

The order domain appends, in the transaction that changes the rows: `order.submitted` (the
order as claimed: status, quantity, prices, side, account, symbol), `order.<event>` per
execution report (status_to, cum_qty, leaves_qty; for a TRADE also exec_id, last_qty, last_px,
fee), and `order.amend_requested` (the new limit price). Replaying a tenant's records, every
lane's, in (at, chain, seq) order gives what each order row and each execution row must say (an
order's submission and its fills may lie in different lanes: `at` is the database's clock, read
under each lane's lock, so it orders them); `cross_check` compares them on the fields that
matter and reports every disagreement with a stable code:

- AUDIT_ORDER_MISSING: an order row with no `order.submitted` record;
- AUDIT_ORDER_MISMATCH: an order row whose field differs from what its records say;
- AUDIT_ORDER_ROW_MISSING: records of an order that has no row (deleted);
- AUDIT_EXECUTION_MISSING: an execution row with no fill record;
- AUDIT_EXECUTION_MISMATCH: an execution row whose quantity, price or fee differs from its record;
- AUDIT_EXECUTION_ROW_MISSING: a fill record with no execution row (deleted).

Not compared: avg_px (no record holds it), routing, reject texts, timestamps.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from sqlalchemy.orm import Session
from sqlmodel import col, select

from gateway.audit.chain import Mismatch
from gateway.audit.lanes import heads
from gateway.audit.models import AuditRecord
from gateway.trading.models import Execution, Order

ORDER_MISSING = "AUDIT_ORDER_MISSING"
ORDER_MISMATCH = "AUDIT_ORDER_MISMATCH"
ORDER_ROW_MISSING = "AUDIT_ORDER_ROW_MISSING"
EXECUTION_MISSING = "AUDIT_EXECUTION_MISSING"
EXECUTION_MISMATCH = "AUDIT_EXECUTION_MISMATCH"
EXECUTION_ROW_MISSING = "AUDIT_EXECUTION_ROW_MISSING"

MAX_MISMATCHES = 100  # listed; all are counted
CHUNK = 5_000
IN_BATCH = 500
DECIMAL_FIELDS = ("quantity", "cum_qty", "leaves_qty", "limit_price", "stop_price", "fees")
TEXT_FIELDS = ("status", "side", "account", "symbol", "client_order_id")
EXECUTION_FIELDS = ("last_qty", "last_px", "fee")
_STEP = Decimal("1e-10")  # rows hold NUMERIC(28, 10)


@dataclass
class _Expected:
    """An order as its records describe it."""

    submitted_at: datetime | None = None
    fields: dict[str, Any] = field(default_factory=dict)
    fills: dict[str, dict[str, Any]] = field(default_factory=dict)  # exec_id -> its record's values
    anonymous: list[dict[str, Any]] = field(default_factory=list)  # fills recorded without exec_id


@dataclass(frozen=True)
class CrossCheck:
    checked: int
    mismatches: tuple[Mismatch, ...]
    count: int


class _Findings:
    def __init__(self) -> None:
        self.items: list[Mismatch] = []
        self.count = 0

    def add(self, mismatch: Mismatch) -> None:
        self.count += 1
        if len(self.items) < MAX_MISMATCHES:
            self.items.append(mismatch)


def cross_check(session: Session, tenant_id: str, start: datetime | None = None,
                end: datetime | None = None) -> CrossCheck:
    """Compare the tenant's orders created in [start, end) (all by default) and their
    executions with the tenant's records (all of them: an order's records may lie outside the
    window). Run it in one snapshot (the caller's session), or a row committed between the
    reads would show as a difference."""
    expected = _replay(session, tenant_id)
    found = _Findings()
    where = [col(Order.tenant_id) == tenant_id]
    if start is not None:
        where.append(col(Order.created_at) >= start)
    if end is not None:
        where.append(col(Order.created_at) < end)
    rows = session.execute(select(
        Order.id, Order.status, Order.side, Order.account, Order.symbol, Order.client_order_id,
        Order.quantity, Order.cum_qty, Order.leaves_qty, Order.limit_price, Order.stop_price,
        Order.fees).where(*where).order_by(col(Order.created_at), col(Order.id))).all()
    checked = 0
    seen: set[str] = set()
    for row in rows:
        checked += 1
        seen.add(row.id)
        want = expected.get(row.id)
        if want is None or want.submitted_at is None:
            found.add(Mismatch(ORDER_MISSING, row.id, f"order {row.id} has no order.submitted "
                                                      f"audit record"))
            continue
        for name in TEXT_FIELDS + DECIMAL_FIELDS:
            if name not in want.fields:
                continue
            recorded, actual = want.fields[name], getattr(row, name)
            if not _same(name, recorded, actual):
                found.add(Mismatch(ORDER_MISMATCH, row.id,
                                   f"order {row.id}: {name} is {_text(actual)} but its audit "
                                   f"records say {_text(recorded)}", None, name, _text(recorded),
                                   _text(actual)))
    # Records of orders in the window with no row anywhere: the row was deleted.
    gone = [oid for oid, want in expected.items() if oid not in seen and want.submitted_at
            is not None and (start is None or want.submitted_at >= start)
            and (end is None or want.submitted_at < end)]
    existing: set[str] = set()
    for batch in _batches(gone):
        existing.update(session.execute(select(Order.id).where(
            col(Order.tenant_id) == tenant_id, col(Order.id).in_(batch))).scalars())
    for oid in gone:
        if oid not in existing:
            found.add(Mismatch(ORDER_ROW_MISSING, oid, f"order {oid} is in the audit trail but "
                                                       f"has no row (deleted)"))
        else:
            seen.add(oid)  # created just outside the window: its executions are still checked
    checked += _check_executions(session, tenant_id, sorted(seen | (set(gone) - existing)),
                                 expected, found)
    return CrossCheck(checked, tuple(found.items), found.count)


def _check_executions(session: Session, tenant_id: str, order_ids: list[str],
                      expected: dict[str, _Expected], found: _Findings) -> int:
    by_order: dict[str, list[Any]] = {}
    for batch in _batches(order_ids):
        for row in session.execute(select(
                Execution.id, Execution.order_id, Execution.exec_id, Execution.last_qty,
                Execution.last_px, Execution.fee).where(
                col(Execution.tenant_id) == tenant_id, col(Execution.order_id).in_(batch))
                .order_by(col(Execution.at), col(Execution.id))):
            by_order.setdefault(row.order_id, []).append(row)
    checked = 0
    for oid in order_ids:
        want = expected.get(oid) or _Expected()
        fills, anonymous = dict(want.fills), list(want.anonymous)
        for row in by_order.get(oid, []):
            checked += 1
            record = fills.pop(row.exec_id, None)
            if record is None and anonymous:
                record = anonymous.pop(0)
            if record is None:
                found.add(Mismatch(EXECUTION_MISSING, oid, f"execution {row.id} of order {oid} "
                                                           f"has no fill audit record", row.id))
                continue
            for name in EXECUTION_FIELDS:
                recorded, actual = record.get(name), getattr(row, name)
                if not _same(name, recorded, actual):
                    found.add(Mismatch(EXECUTION_MISMATCH, oid,
                                       f"execution {row.id} of order {oid}: {name} is "
                                       f"{_text(actual)} but its audit record says "
                                       f"{_text(recorded)}", row.id, name, _text(recorded),
                                       _text(actual)))
        for exec_id in list(fills) + [None] * len(anonymous):
            found.add(Mismatch(EXECUTION_ROW_MISSING, oid,
                               f"a fill of order {oid} (exec_id {exec_id}) is in the audit trail "
                               f"but has no execution row (deleted)", None, "exec_id", exec_id))
    return checked


def _replay(session: Session, tenant_id: str) -> dict[str, _Expected]:
    """What each order's records say: each lane's records in its seq order (the chain's own
    order, whatever their `at`: records from before lanes carry each writer's clock), the lanes
    merged by `at` (an order's records in different lanes were written by transactions that
    followed each other: each read what the one before committed)."""
    expected: dict[str, _Expected] = {}
    lanes = [_lane(session, tenant_id, head.chain) for head in heads(session, tenant_id)]
    for record in heapq.merge(*lanes, key=lambda r: (r.at, r.chain)):
        _apply(expected.setdefault(record.subject, _Expected()), record)
    return expected


def _lane(session: Session, tenant_id: str, chain: str) -> Iterator[Any]:
    """One lane's order records in seq order, a chunk at a time."""
    after = 0
    while True:
        chunk = session.execute(
            select(AuditRecord.chain, AuditRecord.seq, AuditRecord.at, AuditRecord.kind,
                   AuditRecord.subject, AuditRecord.payload)
            .where(col(AuditRecord.chain) == chain, col(AuditRecord.tenant_id) == tenant_id,
                   col(AuditRecord.kind).startswith("order."), col(AuditRecord.seq) > after)
            .order_by(col(AuditRecord.seq)).limit(CHUNK)).all()
        yield from chunk
        if len(chunk) < CHUNK:
            return
        after = chunk[-1].seq


def _apply(want: _Expected, record: Any) -> None:
    p = record.payload if isinstance(record.payload, dict) else {}
    kind = record.kind
    if kind == "order.submitted":
        want.submitted_at = record.at
        status = p.get("status")
        want.fields.update({name: p.get(name) for name in (
            "status", "side", "account", "symbol", "client_order_id", "quantity", "limit_price",
            "stop_price")})
        want.fields.update({"cum_qty": "0", "fees": "0",
                            "leaves_qty": "0" if status == "DENIED" else p.get("quantity")})
    elif kind == "order.amend_requested":
        if p.get("limit_price") is not None:
            want.fields["limit_price"] = p["limit_price"]
    elif "status_to" in p:  # order.<event>: an execution report applied
        want.fields.update({"status": p["status_to"], "cum_qty": p.get("cum_qty"),
                            "leaves_qty": p.get("leaves_qty")})
        if kind == "order.replaced":
            total = _decimal(p.get("cum_qty")), _decimal(p.get("leaves_qty"))
            if total[0] is not None and total[1] is not None:
                want.fields["quantity"] = str(total[0] + total[1])
        if p.get("exec_type") == "TRADE":
            fee = _decimal(p.get("fee")) or Decimal(0)
            want.fields["fees"] = str((_decimal(want.fields.get("fees")) or Decimal(0)) + fee)
            fill = {name: p.get(name) for name in EXECUTION_FIELDS}
            if p.get("exec_id"):
                want.fills[str(p["exec_id"])] = fill
            else:
                want.anonymous.append(fill)


def _same(name: str, recorded: Any, actual: Any) -> bool:
    if name in DECIMAL_FIELDS or name in EXECUTION_FIELDS:
        a, b = _decimal(recorded), _decimal(actual)
        if a is None or b is None:
            return a is None and b is None
        return a.quantize(_STEP) == b.quantize(_STEP)
    return (None if recorded is None else str(recorded)) == (None if actual is None else str(actual))


def _decimal(value: Any) -> Decimal | None:
    if value is None:
        return None
    try:
        return Decimal(str(value))
    except InvalidOperation:
        return None


def _text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, Decimal):
        return format(value.normalize(), "f") if value else "0"
    return str(value)


def _batches(items: Iterable[str]) -> Iterable[list[str]]:
    batch: list[str] = []
    for item in items:
        batch.append(item)
        if len(batch) == IN_BATCH:
            yield batch
            batch = []
    if batch:
        yield batch
