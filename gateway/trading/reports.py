"""Execution reports applied: the state machine (states.apply only), fills, positions, events
and audit records, in one transaction across every tenant the reports concern; then the order
updates published on the bus. Every venue call (intake, amend, cancel, the clock, the sweep,
recovery) ends here, under the service's apply lock (venues._at_venue)."""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, select

from gateway.audit import AuditEntry
from gateway.bulk import bulk_insert
from gateway.events import Bus
from gateway.tenancy.models import new_id
from gateway.trading import states, stream
from gateway.trading.books import _take_locates
from gateway.trading.common import (
    _POSITION_UPDATED,
    _UPDATED,
    EVENTS,
    EXECUTIONS,
    ORDER_UPDATE,
    ORDERS,
    POSITION_UPDATE,
    POSITIONS,
    ZERO,
    _plain,
    orders_topic,
)
from gateway.trading.states import OrderStatus
from plugins.sdk import ExecType, ExecutionReport, Side

if TYPE_CHECKING:
    from gateway.trading.service import OrderService

log = logging.getLogger(__name__)
# The key of a changed order's applied event rows (published after commit).
TRANSITIONS = "_transitions"
# An order as applying reads it: every column but the router's record, a kilobyte of JSON that
# nothing here reads or writes (a submit's answer takes it from its claim: claims._send).
_APPLIED = [c for c in ORDERS.c if c.name != "routing"]


@dataclass
class _Amendment:
    """An amend request travelling with the replace's reports (see _apply_reports)."""

    order_id: str
    limit_price: Decimal | None
    entry: AuditEntry  # order.amend_requested
    locate_key: str | None = None  # a short sale's instrument: a larger order uses more locates
    at: datetime | None = None
    refused: bool = False
    written: bool = False


def _apply_reports(service: OrderService, reports: Sequence[ExecutionReport],
                   amendment: _Amendment | None = None) -> list[dict[str, Any]]:
    try:
        return _apply_reports_once(service, reports, amendment)
    except IntegrityError:
        # Another writer changed one of these orders between this read and its write (the
        # stuck-order sweep, another process): an event number or a new position collided.
        # Nothing was written; read again and apply what is still legal from there.
        log.warning("execution reports collided with another writer; applying them again",
                    extra={"reports": len(reports)})
        if amendment is not None:
            amendment.written = False
        return _apply_reports_once(service, reports, amendment)


def _apply_reports_once(service: OrderService, reports: Sequence[ExecutionReport],
                        amendment: _Amendment | None = None) -> list[dict[str, Any]]:
    """Apply reports in order, in one transaction across every tenant they concern. Rows
    are read and written with Core statements (executemany), not ORM objects per row. An
    `amendment` (the request whose replace caused them) is written with its REPLACED
    report: the new limit price and its audit record commit with the new quantity."""
    ids = list(dict.fromkeys(r.client_order_id for r in reports))
    if not ids:
        return []
    table = ORDERS
    with service.db.system_transaction() as session:
        orders: dict[str, dict[str, Any]] = {}
        for start in range(0, len(ids), 500):
            for row in session.execute(select(*_APPLIED).where(table.c.id.in_(ids[start:start + 500]))):
                orders[row.id] = dict(row._mapping)
        if not orders:
            return []
        # Through the service: a test puts another writer between this read and the writes.
        positions = service._positions_for(session, orders.values())
        executions, events = [], []
        fills: list[tuple[dict[str, Any], dict[str, Any]]] = []  # (execution, its event)
        audit: dict[str, list[AuditEntry]] = defaultdict(list)
        changed: dict[str, dict[str, Any]] = {}
        for report in reports:
            order = orders.get(report.client_order_id)
            if order is None:
                continue  # not one of the gateway's orders (a tool's, a test's)
            event = states.event_of(report)
            if event is None:
                continue  # a refused cancel/replace: the caller answers it
            before = order["status"]
            try:
                after = states.apply(OrderStatus(before), event)
            except states.IllegalTransition:
                log.error("execution report out of order ignored",
                          extra={"order_id": order["id"], "status": before, "event": str(event)})
                continue
            order["status"] = str(after)
            more = report.leaves_qty - order["leaves_qty"]
            order["cum_qty"], order["leaves_qty"] = report.cum_qty, report.leaves_qty
            order["avg_px"] = report.avg_px
            if event is states.OrderEvent.REPLACED:
                order["quantity"] = report.cum_qty + report.leaves_qty
                if amendment is not None and amendment.order_id == order["id"] \
                        and not amendment.refused and not amendment.written:
                    if amendment.limit_price is not None:
                        order["limit_price"] = amendment.limit_price
                    if amendment.locate_key is not None and more > 0:
                        _take_locates(session, order["tenant_id"], order["account"],
                                      amendment.locate_key, more, amendment.at or report.at)
                    audit[order["tenant_id"]].append(amendment.entry)
                    amendment.written = True
            if report.venue_order_id:
                order["venue_order_id"] = report.venue_order_id
            if event in (states.OrderEvent.REJECTED, states.OrderEvent.CANCELED,
                         states.OrderEvent.EXPIRED) and report.reject_code:
                order["reject_code"], order["reject_text"] = report.reject_code, report.text[:500]
            order["version"] += 1
            order["updated_at"] = report.at
            tenant_id = order["tenant_id"]
            trade = report.exec_type is ExecType.TRADE
            exec_id = report.exec_id or (new_id() if trade else None)
            events.append({"id": new_id(), "tenant_id": tenant_id, "order_id": order["id"],
                           "seq": order["version"], "event": str(event),
                           "exec_type": str(report.exec_type), "status_from": before,
                           "status_to": order["status"], "cum_qty": report.cum_qty,
                           "leaves_qty": report.leaves_qty, "code": report.reject_code,
                           "text": (report.text or "")[:500], "at": report.at,
                           "last_qty": report.last_qty if trade else None,
                           "last_px": report.last_px if trade else None,
                           "avg_px": report.avg_px, "exec_id": exec_id})
            # Published after commit (_publish), in the order applied.
            order.setdefault(TRANSITIONS, []).append(events[-1])
            if trade:
                order["fees"] += report.fee
                executions.append({
                    "id": new_id(), "tenant_id": tenant_id, "order_id": order["id"],
                    "exec_id": exec_id, "match_id": report.match_id,
                    "account": order["account"], "symbol": order["symbol"], "side": order["side"],
                    "last_qty": report.last_qty, "last_px": report.last_px, "fee": report.fee,
                    "currency": order["currency"], "liquidity": report.liquidity,
                    "mic": report.mic or order["mic"], "at": report.at, "created_at": report.at})
                fills.append((executions[-1], events[-1]))
                _move_position(positions, order, report)
            audit[tenant_id].append(AuditEntry(
                f"order.{str(event).lower()}", order["id"],
                {"client_order_id": order["client_order_id"], "exec_type": str(report.exec_type),
                 "exec_id": report.exec_id, "status_from": before, "status_to": order["status"],
                 "last_qty": _plain(report.last_qty), "last_px": _plain(report.last_px),
                 "cum_qty": _plain(report.cum_qty), "leaves_qty": _plain(report.leaves_qty),
                 "fee": _plain(report.fee), "code": report.reject_code}))
            changed[order["id"]] = order
        if changed:
            session.execute(ORDER_UPDATE, [{"b_" + k: o[k] for k in _UPDATED} for o in changed.values()])
        _write_positions(session, positions)
        # The lock order of every writer (stream.py): row writes, the audit lanes (tenants in
        # one order, so two transactions never wait on each other's), then the stream heads.
        for tenant_id, entries in sorted(audit.items()):
            service.audit.append(session, tenant_id, entries)
        # A fill's stream position is its place in execution order.
        stream.number(session, events)
        for execution, fill in fills:
            execution["stream_seq"] = fill["stream_seq"]
        if executions:
            bulk_insert(session, EXECUTIONS, executions)
        if events:
            bulk_insert(session, EVENTS, events)
    return list(changed.values())


def _positions_for(session: Session, orders: Iterable[dict[str, Any]]
                   ) -> dict[tuple[str, str, str], dict[str, Any]]:
    wanted = {(o["tenant_id"], o["account"]) for o in orders}
    accounts = {a for _, a in wanted}
    found: dict[tuple[str, str, str], dict[str, Any]] = {}
    for row in session.execute(select(POSITIONS).where(POSITIONS.c.account.in_(accounts))):
        if (row.tenant_id, row.account) in wanted:
            found[(row.tenant_id, row.account, row.instrument_key)] = {**row._mapping, "_state": "old"}
    return found


def _write_positions(session: Session, positions: dict[tuple[str, str, str], dict[str, Any]]) -> None:
    new = [{k: v for k, v in p.items() if k != "_state"} for p in positions.values()
           if p["_state"] == "new"]
    moved = [{"b_" + k: p[k] for k in _POSITION_UPDATED} for p in positions.values()
             if p["_state"] == "moved"]
    if new:
        bulk_insert(session, POSITIONS, new)
    if moved:
        session.execute(POSITION_UPDATE, moved)


def _move_position(positions: dict[tuple[str, str, str], dict[str, Any]], order: dict[str, Any],
                   report: ExecutionReport) -> None:
    key = order["isin"] or f"{order['symbol']}.{order['mic']}"
    row = positions.get((order["tenant_id"], order["account"], key))
    if row is None:
        row = {"id": new_id(), "tenant_id": order["tenant_id"], "account": order["account"],
               "instrument_key": key, "symbol": order["symbol"], "mic": order["mic"],
               "currency": order["currency"], "quantity": ZERO, "avg_price": ZERO,
               "realized_pnl": ZERO, "created_at": report.at, "updated_at": report.at,
               "_state": "new"}
        positions[(order["tenant_id"], order["account"], key)] = row
    elif row["_state"] == "old":
        row["_state"] = "moved"
    signed = report.last_qty if order["side"] == str(Side.BUY) else -report.last_qty
    held, average = row["quantity"], row["avg_price"]
    after = held + signed
    if held == 0 or (held > 0) == (signed > 0):
        # Opening or adding: the average price moves.
        row["avg_price"] = (abs(held) * average + report.last_qty * report.last_px) / abs(after)
    else:
        closed = min(abs(signed), abs(held))
        direction = 1 if held > 0 else -1
        row["realized_pnl"] += closed * (report.last_px - average) * direction
        if after == 0:
            row["avg_price"] = ZERO
        elif (after > 0) != (held > 0):  # flipped: the rest opens at this price
            row["avg_price"] = report.last_px
    row["quantity"] = after
    row["symbol"], row["mic"] = order["symbol"], report.mic or order["mic"]
    row["updated_at"] = report.at


def _publish(bus: Bus, changed: Sequence[dict[str, Any]]) -> None:
    """After commit: one message per changed order on its tenant's orders topic, carrying the
    order's transitions of that transaction (stream.wire), in stream order; all in one
    `publish_many` (one round trip on Redis)."""
    def first(o: dict[str, Any]) -> int:
        return min((e["stream_seq"] for e in o.get(TRANSITIONS, ())), default=0)

    messages = [order_message(o, o.get(TRANSITIONS, ())) for o in sorted(changed, key=first)]
    if messages:
        bus.publish_many(messages)


def order_message(order: dict[str, Any], events: Sequence[dict[str, Any]]
                  ) -> tuple[str, dict[str, Any]]:
    """An order's message on its tenant's orders topic: (topic, payload)."""
    return orders_topic(order["tenant_id"]), {
        "tenant_id": order["tenant_id"], "id": order["id"], "account": order["account"],
        "status": order["status"], "transitions": [stream.wire(e, order) for e in events]}
