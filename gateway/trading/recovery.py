"""After a restart: the built-in venues' open orders, back from the database.

The simulated venues keep their books in the gateway's memory, so a restart empties them while
the database still holds orders ACCEPTED, PARTIALLY_FILLED or PENDING (queued for an open) at
them: cancels and amends would be refused (UNKNOWN_ORDER) and the orders would hold credit for
good. When the order service first builds its connectors (the venue clock does it at start-up
through `OrderService.recover`), before any other call reaches them, `restore_builtins` reads
those orders, per connector, and hands them to each connector's `restore(orders, at)`:

- The simulated exchange puts them back on their books with what they have left (time
  priority among them kept, no report unless something crosses them), re-queues the queued
  ones for their open, and answers a CANCELED report, VENUE_RESTARTED, for any it cannot take
  back (plugins/builtin/sim_exchange/connector.py, `restore`).
- A connector whose `restore` raises gets all its orders cancelled by the gateway the same
  way (VENUE_RESTARTED), so no order is left open at a venue that does not know it.
- A built-in connector without `restore` is taken to keep its own state (a real venue's
  connector): its orders are left as they are.

The reports go through the state machine like any other (one transaction: statuses, events,
`order.canceled` audit records), and each tenant concerned gets one `order.venue_restored`
audit record naming the orders restored and cancelled.

Not here: orders claimed but never sent (PENDING with no venue order id) are the stuck-order
sweep's (`sweep_unsent`: ORDER_NOT_SENT); orders at a tenant's installed (marketplace)
connector are that connector's business (it runs in a sandboxed worker with its own state and
its own lifecycle): the gateway does not restore or cancel them. Restoring assumes one process
owns the simulated venues: the gateway's own without Redis, else `alphintra venue serve`
(venue_server.py), the only process that restores them; a gateway with ALPHINTRA_VENUE_URL
never does (venues.recover).
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import select

from gateway.audit import AuditEntry
from gateway.tenancy.models import new_id
from gateway.trading import states
from gateway.trading.models import Execution, Order
from plugins.sdk import ExecType, ExecutionReport, OrderRequest, OrdStatus, OrdType, Side, TimeInForce

log = logging.getLogger(__name__)

ORDERS = Order.__table__  # type: ignore[attr-defined]
EXECUTIONS = Execution.__table__  # type: ignore[attr-defined]
ZERO = Decimal(0)
VENUE_RESTARTED = "VENUE_RESTARTED"
OPEN_STATUSES = [str(s) for s in states.OPEN]
CHUNK = 500


@dataclass(frozen=True)
class RestoredOrder:
    """An open order as a connector's `restore` receives it."""

    request: OrderRequest  # as first sent: the order's own id, total quantity, submitted_at
    venue_order_id: str
    cum_qty: Decimal
    notional: Decimal  # sum of its fills' last_qty x last_px (exact; avg_px is rounded)
    fees: Decimal
    queued: bool  # acknowledged PENDING_NEW: waiting for the venue's open
    tenant_id: str


def load_open(db: Any, connectors: Iterable[str]) -> dict[str, list[RestoredOrder]]:
    """Open orders the named connectors acknowledged (a venue order id), per connector, oldest
    first, across tenants."""
    names = list(connectors)
    if not names:
        return {}
    t = ORDERS.c
    out: dict[str, list[RestoredOrder]] = defaultdict(list)
    with db.system_session() as session:
        rows = session.execute(
            select(ORDERS).where(t.status.in_(OPEN_STATUSES), t.connector.in_(names),
                                 t.venue_order_id.is_not(None))
            .order_by(t.created_at, t.id)).all()
        filled = [r.id for r in rows if r.cum_qty]
        notional: dict[str, Decimal] = defaultdict(lambda: ZERO)
        e = EXECUTIONS.c
        for start in range(0, len(filled), CHUNK):
            for order_id, qty, px in session.execute(
                    select(e.order_id, e.last_qty, e.last_px)
                    .where(e.order_id.in_(filled[start:start + CHUNK]))):
                notional[order_id] += qty * px
    for r in rows:
        request = OrderRequest(r.id, r.account, r.symbol, r.mic, Side(r.side), OrdType(r.ord_type),
                               TimeInForce(r.time_in_force), r.quantity, r.limit_price, r.stop_price,
                               r.currency, r.expire_at, r.created_at)
        # A fill whose execution row is missing would be lost from the notional: fall back to
        # the order's own average price.
        total = notional.get(r.id, ZERO) if r.cum_qty else ZERO
        if r.cum_qty and total == ZERO:
            total = r.cum_qty * r.avg_px
        out[r.connector].append(RestoredOrder(
            request, r.venue_order_id, r.cum_qty, total, r.fees,
            r.status == str(states.OrderStatus.PENDING), r.tenant_id))
    return dict(out)


def restart_cancel(item: RestoredOrder, why: str, at: datetime) -> ExecutionReport:
    """The gateway's own CANCELED report for an order its venue could not take back."""
    r = item.request
    avg = (item.notional / item.cum_qty).quantize(Decimal("0.00000001")) if item.cum_qty else ZERO
    return ExecutionReport(ExecType.CANCELED, OrdStatus.CANCELED, r.client_order_id,
                           item.venue_order_id, ZERO, ZERO, item.cum_qty, ZERO, avg, ZERO,
                           f"the venue restarted and could not take the order back: {why}"[:500],
                           VENUE_RESTARTED, at, exec_id=new_id(), mic=r.mic, symbol=r.symbol,
                           side=r.side)


def restore_builtins(service: Any, connectors: Mapping[str, Any], at: datetime) -> int:
    """Hand each built-in connector (name -> the service's wrapper, `.inner` the connector) its
    open orders back, apply what that causes and audit it; the number of orders handed back
    (restored or cancelled). Called by the order service before it uses the connectors."""
    found = load_open(service.db, connectors)
    if not found:
        return 0
    handed: dict[str, list[RestoredOrder]] = {}

    def call() -> list[ExecutionReport]:
        reports: list[ExecutionReport] = []
        for name, items in found.items():
            restore: Callable[..., list[ExecutionReport]] | None = getattr(
                connectors[name].inner, "restore", None)
            if restore is None:
                continue  # keeps its own state (a real venue's connector): left alone
            handed[name] = items
            try:
                reports.extend(restore(items, at))
            except Exception as exc:
                log.exception("exchange connector failed to restore its orders; cancelling them",
                              extra={"connector": name, "orders": len(items)})
                reports.extend(restart_cancel(i, f"the connector failed ({type(exc).__name__})", at)
                               for i in items)
        return reports

    reports, changed = service._at_venue(call)
    cancelled = {o["id"] for o in changed
                 if o["status"] == str(states.OrderStatus.CANCELED) and o["reject_code"] == VENUE_RESTARTED}
    by_tenant: dict[str, dict[str, list[str]]] = defaultdict(lambda: {"restored": [], "canceled": []})
    for items in handed.values():
        for item in items:
            oid = item.request.client_order_id
            by_tenant[item.tenant_id]["canceled" if oid in cancelled else "restored"].append(oid)
    for tenant_id, ids in sorted(by_tenant.items()):
        with service.db.tenant_transaction(tenant_id) as session:
            service.audit.append(session, tenant_id, [AuditEntry(
                "order.venue_restored", tenant_id,
                {"at": at.isoformat(), "restored": ids["restored"], "canceled": ids["canceled"],
                 "connectors": sorted(handed)})])
    service._publish(changed)
    total = sum(len(v) for v in handed.values())
    log.info("restored the built-in venues' open orders",
             extra={"orders": total, "canceled": len(cancelled), "reports": len(reports)})
    return total


def any_open(db: Any) -> bool:
    """Whether any order is open at a venue (acknowledged), in any tenant."""
    t = ORDERS.c
    with db.system_session() as session:
        return session.execute(select(t.id).where(t.status.in_(OPEN_STATUSES),
                                                  t.venue_order_id.is_not(None)).limit(1)).first() is not None
