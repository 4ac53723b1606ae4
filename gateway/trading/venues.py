"""The venues: exchange connectors, the lock they are called under, and time.

Connectors are called under one lock (the service's venue lock; `_Serialized` wraps each), and
the reports they answer are applied under it, in the order the venue produced them (so two
threads never apply one order's fills out of order): `_at_venue`. A tenant's installed
connectors (sandboxed marketplace plugins) join the built-ins for its orders, each behind a lock
of its own (`_scoped_connectors`). Time: each intake and `advance()` (a periodic task of the
app, gateway/trading/clock.py) tell the connectors the markets clock's now (`on_clock`) and
apply what that causes: expiries, queued orders at the open, fills of resting orders when the
market moves through them. `sweep_unsent` rejects orders claimed but never sent.

With ALPHINTRA_VENUE_URL the built-ins are `alphintra venue serve`'s (venue_client.py,
venue_server.py): that process restores and clocks them and applies their reports; this one
neither restores nor clocks them, and sweeps its own unsent orders as before.
"""

from __future__ import annotations

import logging
import threading
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from functools import partial
from typing import TYPE_CHECKING, Any

from sqlmodel import select

from gateway.db import Database
from gateway.errors import DomainError
from gateway.scope import current_tenant, tenant_scope
from gateway.tenancy.models import new_id
from gateway.trading import recovery
from gateway.trading.common import EXECUTIONS, ORDERS, UNSENT_AFTER, ZERO
from gateway.trading.reports import _Amendment, _apply_reports, _publish
from gateway.trading.routing import ConnectorEntry, SmartOrderRouter, collect_connectors
from gateway.trading.states import OrderStatus
from gateway.trading.vetting import OrderState, VettedConnector
from plugins.sdk import ExchangeConnector, ExecType, ExecutionReport, OrderRequest, OrdStatus, VenueQuote

if TYPE_CHECKING:
    from gateway.trading.service import OrderService

log = logging.getLogger(__name__)


class _Serialized:
    """A connector whose methods run under the service's venue lock (a connector is called by
    one thread at a time)."""

    def __init__(self, connector: ExchangeConnector, lock: threading.RLock) -> None:
        self.inner = connector
        self.name = connector.name
        self._lock = lock

    def mics(self) -> list[str]:
        with self._lock:
            return self.inner.mics()

    def submit(self, order: OrderRequest) -> list[ExecutionReport]:
        with self._lock:
            return self.inner.submit(order)

    def cancel(self, client_order_id: str, mic: str) -> ExecutionReport:
        with self._lock:
            return self.inner.cancel(client_order_id, mic)

    def replace(self, client_order_id: str, mic: str, quantity: Decimal,
                limit_price: Decimal | None) -> list[ExecutionReport]:
        with self._lock:
            return self.inner.replace(client_order_id, mic, quantity, limit_price)

    def quote_for(self, order: OrderRequest) -> VenueQuote | None:
        with self._lock:
            return self.inner.quote_for(order)

    def on_clock(self, at: datetime) -> list[ExecutionReport]:
        with self._lock:
            return self.inner.on_clock(at)


@dataclass(frozen=True)
class InstalledConnectors:
    """What the marketplace tells the order service of tenants' installed connectors."""

    connectors: Callable[[str], Sequence[tuple[str, ExchangeConnector]]]  # tenant -> (plugin, connector)
    venues: Callable[[str], Mapping[str, tuple[str, Any]]]  # tenant -> MIC -> (plugin, VenueDefinition)
    tenants: Callable[[], Sequence[str]]  # tenants with installed connectors
    disabled: Callable[[str], frozenset[str]] = lambda tenant: frozenset()  # built-ins switched off


def built_in_connectors(service: OrderService) -> dict[str, _Serialized]:
    if service._connectors is None and service.venue is not None:
        _remote_connectors(service)
    if service._connectors is None:
        # The venue lock first (restoring calls the venues): the order every caller takes them in.
        with service._venue_lock, service._setup_lock:
            if service._connectors is None:
                entries, failures = collect_connectors(service.plugins, service.markets.directory,
                                                       service._connector_configs)
                for failure in failures:
                    log.error("exchange connector plugin %s failed to load", failure.plugin)
                wrapped = {e.name: _Serialized(e.connector, service._venue_lock) for e in entries}
                service._router = SmartOrderRouter(
                    [ConnectorEntry(e.plugin, wrapped[e.name]) for e in entries],
                    service.market_data.instruments)
                # After a restart: the venues' open orders back before anyone uses them.
                try:
                    recovery.restore_builtins(service, wrapped, service.markets.now())
                except Exception:
                    log.exception("restoring the built-in venues' open orders failed")
                service._connectors = wrapped
    return service._connectors


def _remote_connectors(service: OrderService) -> None:
    """With ALPHINTRA_VENUE_URL: the venue process's built-in connectors (venue_client.py),
    which it restores and clocks itself. Not reached: VenueUnavailable, and asked again at
    the next use."""
    assert service.venue is not None
    with service._setup_lock:
        if service._connectors is None:
            remote = service.venue.connectors()
            service._router = SmartOrderRouter([ConnectorEntry(c.plugin, c) for c in remote],
                                               service.market_data.instruments)
            service._connectors = {c.name: c for c in remote}  # type: ignore[misc]


def recover(service: OrderService) -> None:
    """At start-up (the venue clock): build the connectors when the database holds orders
    open at a venue, so they are restored (gateway/trading/recovery.py) and trade, expire
    and answer cancels without waiting for a first request. Not with a venue process: it
    restores its own."""
    if service.venue is None and service._connectors is None and recovery.any_open(service.db):
        built_in_connectors(service)


def built_in_router(service: OrderService) -> SmartOrderRouter:
    built_in_connectors(service)
    assert service._router is not None
    return service._router


# A tenant's installed connectors (sandboxed marketplace plugins, orders:submit) join the
# built-ins for that tenant's orders: routing, sending, amending, cancelling and the clock.
def _scoped_connectors(service: OrderService) -> tuple[dict[str, _Serialized], SmartOrderRouter]:
    """The connectors and router for the tenant in scope: the built-ins, plus its installed
    connectors, each behind a lock of its own (a slow plugin holds up only its own venue;
    its deadline bounds the wait)."""
    builtins = built_in_connectors(service)
    tenant = current_tenant()
    source = service._installed_connectors
    installed = source.connectors(tenant) if source is not None and tenant is not None else []
    off = source.disabled(tenant) if source is not None and tenant is not None else frozenset()
    if not installed and not off:
        return builtins, built_in_router(service)
    key = (*(id(c) for _, c in installed), *sorted(off))
    found = service._scoped.get(tenant)  # type: ignore[arg-type]
    if found is not None and found[0] == key:
        return found[1], found[2]
    entries = [e for e in built_in_router(service).connectors if e.plugin not in off]
    merged = {e.name: builtins[e.name] for e in entries}
    for plugin, connector in installed:
        name = str(connector.name)
        if name in merged:
            log.warning("an installed connector's name is taken; left out",
                        extra={"plugin": plugin, "connector": name})
            continue
        vetted = VettedConnector(connector, plugin, tenant,  # type: ignore[arg-type]
                                 partial(_order_states, service.db))
        merged[name] = _Serialized(vetted, threading.RLock())  # type: ignore[arg-type]
        entries.append(ConnectorEntry(plugin, merged[name]))
    router = SmartOrderRouter(entries, service.market_data.instruments)
    service._scoped[tenant] = (key, merged, router)  # type: ignore[index]
    return merged, router


def _order_states(db: Database, tenant_id: str, ids: Sequence[str]) -> dict[str, OrderState]:
    """What an installed connector's reports are vetted against (gateway/trading/vetting.py)."""
    ids = [i for i in ids if isinstance(i, str) and len(i) <= 64][:1000]
    if not ids:
        return {}
    o, e = ORDERS.c, EXECUTIONS.c
    with db.tenant_session(tenant_id) as session:
        rows = session.execute(select(o.id, o.tenant_id, o.connector, o.side, o.quantity, o.limit_price,
                                      o.cum_qty, o.avg_px, o.status)
                               .where(o.tenant_id == tenant_id, o.id.in_(ids))).all()
        fills: dict[str, set[str]] = defaultdict(set)
        for order_id, exec_id in session.execute(select(e.order_id, e.exec_id).where(
                e.tenant_id == tenant_id, e.order_id.in_([r.id for r in rows]))):
            fills[order_id].add(exec_id)
    return {r.id: OrderState(r.id, r.tenant_id, r.connector, r.side, r.quantity, r.limit_price,
                             r.cum_qty, r.avg_px, r.status, frozenset(fills[r.id])) for r in rows}


def advance(service: OrderService, at: datetime | None = None) -> int:
    """Tell every connector the time and apply what it causes; the number of reports."""
    source = service._installed_connectors
    if service._connectors is None and (source is None or not source.tenants()):
        return 0  # no order has been taken yet: nothing at any venue
    when = at or service.markets.now()

    def tick() -> list[ExecutionReport]:
        reports: list[ExecutionReport] = []
        # Built-ins here (the venue process clocks its own); installed connectors (a call
        # across a socket each) hear the time from the venue clock's round below and from
        # each order's own submitted_at.
        for connector in built_in_connectors(service).values() if service.venue is None else ():
            try:
                reports.extend(connector.on_clock(when))
            except Exception:
                log.exception("exchange connector failed on the clock",
                              extra={"connector": connector.name})
        if current_tenant() is None:  # the venue clock: every tenant's installed connectors too
            reports.extend(_installed_clock(service, when))
        return reports

    reports, changed = _at_venue(service, tick)
    _publish(service.bus, changed)
    return len(reports)


def _installed_clock(service: OrderService, when: datetime) -> list[ExecutionReport]:
    source = service._installed_connectors
    reports: list[ExecutionReport] = []
    for tenant in source.tenants() if source is not None else ():
        with tenant_scope(tenant):
            try:  # one tenant's plugins that cannot load never stop the others' clock
                connectors = list(source.connectors(tenant))
            except Exception:
                log.exception("a tenant's installed connectors did not load for the clock",
                              extra={"tenant_id": tenant})
                continue
            for plugin, connector in connectors:
                try:
                    reports.extend(VettedConnector(connector, plugin, tenant,
                                                   partial(_order_states, service.db)).on_clock(when))
                except DomainError as exc:  # PLUGIN_FAILED: its worker says why in the log
                    log.warning("installed exchange connector failed on the clock",
                                extra={"plugin": plugin, "tenant_id": tenant, "code": exc.code})
                except Exception:
                    log.exception("installed exchange connector failed on the clock",
                                  extra={"plugin": plugin, "tenant_id": tenant})
    return reports


def sweep_unsent(service: OrderService, older_than: timedelta = UNSENT_AFTER,
                 at: datetime | None = None) -> int:
    """Reject orders claimed but never acknowledged by a venue (PENDING without a venue
    order id) for longer than `older_than`: their process died between the claim and the
    connector call. A REJECTED report (ORDER_NOT_SENT) goes through the state machine like
    any other; the number rejected."""
    now = at or service.markets.now()
    t = ORDERS.c
    with service.db.system_session() as session:
        stale = session.execute(
            select(t.id, t.mic).where(t.status == str(OrderStatus.PENDING),
                                      t.venue_order_id.is_(None),
                                      t.created_at < now - older_than).limit(1000)).all()
    if not stale:
        return 0
    reports = [ExecutionReport(ExecType.REJECTED, OrdStatus.REJECTED, row.id, "", ZERO, ZERO, ZERO,
                               ZERO, ZERO, ZERO, "claimed but never sent to the venue",
                               "ORDER_NOT_SENT", now, exec_id=new_id(), mic=row.mic)
               for row in stale]
    with service._apply_lock:
        changed = _apply_reports(service, reports)
    _publish(service.bus, changed)
    return len(changed)


def _at_venue(service: OrderService, call: Callable[[], list[ExecutionReport]],
              amendment: _Amendment | None = None
              ) -> tuple[list[ExecutionReport], list[dict[str, Any]]]:
    """Run `call` at the venues (one caller at a time), then apply its reports. The apply
    lock is taken before the venue lock is let go, so reports are applied in the order the
    venues produced them, while the next caller's venue work already runs (a pipeline:
    one request's matching overlaps the previous one's database writes)."""
    service._venue_lock.acquire()
    try:
        reports = call()
        service._apply_lock.acquire()
    finally:
        service._venue_lock.release()
    try:
        changed = _apply_reports(service, reports, amendment) if reports else []
    finally:
        service._apply_lock.release()
    return reports, changed
