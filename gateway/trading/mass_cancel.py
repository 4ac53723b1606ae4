"""Mass cancel and kill switches.

`cancel_orders(service, tenant, user, CancelFilter(...))` cancels the tenant's open orders
(PENDING, ACCEPTED, PARTIALLY_FILLED) that match every criterion given (account, symbol, MIC,
side), or all of them with `all`: one read of the orders, one venue round (every cancel sent
under one hold of the venue lock) and one application of the venues' reports (one
transaction: statuses, events, an `order.canceled` audit record per order), then one
`order.mass_cancel_requested` audit record for the request (the filter, the reason and each
order's outcome). A cancel the venue confirms carries the request's reason (MASS_CANCEL,
KILL_SWITCH) as the order's rejectCode when the venue gives none.

Outcomes per order: CANCELED; REFUSED (the venue's code, e.g. TOO_LATE: it filled first);
NOT_SENT (claimed by intake but not at its venue yet: such an order is looked at again, for up
to about a second, until its venue has it, and failing that is left to the stuck-order sweep,
which rejects it, ORDER_NOT_SENT); FAILED (its connector is gone or raised).

Kill switches (`kill`, `set_kill_switch`): the tenant's (compliance controls' `kill_switch`)
and an account's (controls.py) block new orders through compliance (COMPLIANCE_KILL_SWITCH,
amendments too) and, when switched on, cancel every open order in their scope (reason
KILL_SWITCH). Switching on first waits for the tenant's intake lock, so a batch checked before
the switch has claimed its orders and is cancelled with the rest. Switching on or off is
audited (`compliance.controls_changed` for the tenant's, `compliance.kill_switch_changed` for
an account's), as is the cancel.

Cancel-on-disconnect (`cancel_on_disconnect`): a WebSocket session that opted in (its
`connection_init` payload says `"cancelOnDisconnect": true`, gateway/http/websocket.py) has,
when it closes for any reason, every open order its user submitted cancelled the same way
(reason CANCEL_ON_DISCONNECT, the filter's `created_by` the user), audited as above with the
user as actor. The scope is the user, not the socket: orders the user sent over HTTP while the
socket was open count, as do those of the user's other sessions.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field, replace
from typing import Any

from sqlalchemy import select

from gateway.audit import AuditEntry
from gateway.db import utcnow
from gateway.errors import DomainError, InvalidInput, NotFound
from gateway.scope import tenant_scope
from gateway.trading import states
from gateway.trading.controls import (
    controls_of,
    killed_accounts,
    load_row,
    with_account_switch,
)
from gateway.trading.models import ComplianceControlsRow, Order, TradingAccount
from gateway.trading.venue_client import is_remote
from plugins.sdk import ExecType, ExecutionReport, Side

log = logging.getLogger(__name__)
ORDERS = Order.__table__  # type: ignore[attr-defined]
OPEN_STATUSES = [str(s) for s in states.OPEN]
MASS_CANCEL = "MASS_CANCEL"
KILL_SWITCH = "KILL_SWITCH"
CANCEL_ON_DISCONNECT = "CANCEL_ON_DISCONNECT"
# An order claimed but not at its venue yet is looked at again this many times, this far apart.
NOT_SENT_ROUNDS = 10
NOT_SENT_WAIT = 0.1


class CancelFilterEmpty(InvalidInput):
    code = "CANCEL_FILTER_EMPTY"


@dataclass(frozen=True)
class CancelFilter:
    account: str | None = None
    symbol: str | None = None
    mic: str | None = None
    side: str | None = None
    all: bool = False
    created_by: str | None = None  # a user's orders (cancel-on-disconnect; not in the API)

    def check(self) -> CancelFilter:
        """Blank criteria are absent; with none, `all` must say so (no accidental cancel-all)."""
        def clean(value: str | None, upper: bool = False) -> str | None:
            value = (value or "").strip()
            return (value.upper() if upper else value) or None

        f = CancelFilter(clean(self.account), clean(self.symbol), clean(self.mic, True),
                         clean(self.side, True), bool(self.all), clean(self.created_by))
        if f.side is not None and f.side not in tuple(s.value for s in Side):
            raise InvalidInput(f"side {self.side!r} is not one of {[s.value for s in Side]}",
                               code="SIDE_INVALID")
        if not f.all and not (f.account or f.symbol or f.mic or f.side or f.created_by):
            raise CancelFilterEmpty("name an account, symbol, MIC or side, or set all to cancel "
                                    "every open order")
        return f

    def payload(self) -> dict[str, Any]:
        out = {"account": self.account, "symbol": self.symbol, "mic": self.mic, "side": self.side,
               "all": self.all}
        if self.created_by is not None:
            out["created_by"] = self.created_by
        return out


@dataclass
class CancelOutcome:
    order_id: str
    client_order_id: str
    account: str
    symbol: str
    mic: str
    side: str
    outcome: str  # CANCELED | REFUSED | NOT_SENT | FAILED
    status: str  # the order's status after the request
    code: str | None = None
    text: str = ""


@dataclass
class MassCancelResult:
    reason: str
    filter: CancelFilter
    outcomes: list[CancelOutcome] = field(default_factory=list)

    def count(self, outcome: str) -> int:
        return sum(1 for o in self.outcomes if o.outcome == outcome)

    @property
    def matched(self) -> int:
        return len(self.outcomes)


@dataclass
class KillSwitchResult:
    on: bool
    account: str | None
    cancel: MassCancelResult | None  # when switched on


def _open_orders(service: Any, tenant_id: str, f: CancelFilter) -> list[Any]:
    t = ORDERS.c
    stmt = select(t.id, t.client_order_id, t.account, t.symbol, t.mic, t.side, t.status,
                  t.connector, t.venue_order_id).where(t.tenant_id == tenant_id,
                                                       t.status.in_(OPEN_STATUSES))
    for column, value in ((t.account, f.account), (t.symbol, f.symbol), (t.mic, f.mic),
                          (t.side, f.side), (t.created_by, f.created_by)):
        if value is not None:
            stmt = stmt.where(column == value)
    with service.db.tenant_session(tenant_id) as session:
        return list(session.execute(stmt.order_by(t.created_at, t.id)).all())


def cancel_orders(service: Any, tenant_id: str, user_id: str | None, flt: CancelFilter, *,
                  reason: str = MASS_CANCEL) -> MassCancelResult:
    """Cancel the tenant's open orders matching `flt` (module docstring)."""
    flt = flt.check()
    with tenant_scope(tenant_id):  # its installed connectors too, whoever calls
        return _cancel(service, tenant_id, user_id, flt, reason)


def _venue_round(connectors: dict[str, Any], rows: list[Any], reason: str,
                 outcomes: dict[str, CancelOutcome]) -> list[ExecutionReport]:
    """Every cancel of one round (the caller holds the venue lock); the reports to apply."""
    reports: list[ExecutionReport] = []
    for row in rows:
        def outcome(kind: str, code: str | None, text: str = "", row: Any = row) -> None:
            outcomes[row.id] = CancelOutcome(row.id, row.client_order_id, row.account, row.symbol,
                                             row.mic, row.side, kind, row.status, code, text[:500])
        connector = connectors.get(row.connector)
        if connector is None:
            outcome("FAILED", "CONNECTOR_GONE", "the order's venue connector is gone")
            continue
        try:
            report = connector.cancel(row.id, row.mic)
        except Exception as exc:
            log.warning("exchange connector failed to cancel an order",
                        extra={"connector": row.connector, "order_id": row.id}, exc_info=True)
            outcome("FAILED", getattr(exc, "code", "CONNECTOR_FAILED"), str(exc))
            continue
        if report.exec_type is ExecType.REJECTED:  # a refused cancel (FIX 35=9): order unchanged
            unsent = row.venue_order_id is None and report.reject_code == "UNKNOWN_ORDER"
            outcome("NOT_SENT" if unsent else "REFUSED", report.reject_code, report.text)
            continue
        if report.exec_type is ExecType.CANCELED and not report.reject_code:
            report = replace(report, reject_code=reason, text=report.text or f"cancelled: {reason}")
        outcome("CANCELED", report.reject_code, report.text)
        reports.append(report)
    return reports


REMOTE_CHUNK = 2000  # orders per call to the venue process (its limit: 10,000)
ROW_FIELDS = ("id", "client_order_id", "account", "symbol", "mic", "side", "status", "connector",
              "venue_order_id")


def cancel_round(service: Any, connectors: dict[str, Any], rows: list[Any], reason: str
                 ) -> tuple[dict[str, CancelOutcome], list[dict[str, Any]]]:
    """One venue round and its reports applied, then published (the venue process's side of
    `_remote_round`): the outcomes and the changed rows."""
    outcomes: dict[str, CancelOutcome] = {}
    _, changed = service._at_venue(lambda: _venue_round(connectors, rows, reason, outcomes))
    service._publish(changed)
    return outcomes, changed


def _remote_round(service: Any, rows: list[Any], reason: str
                  ) -> tuple[dict[str, CancelOutcome], list[dict[str, Any]]]:
    """The cancels of orders at the venue process's connectors, sent there in one call. Not
    reached, or its answer lost: each FAILED (VENUE_UNAVAILABLE), as a connector that raises."""
    outcomes: dict[str, CancelOutcome] = {}
    changed: list[dict[str, Any]] = []
    for start in range(0, len(rows), REMOTE_CHUNK):
        chunk = rows[start:start + REMOTE_CHUNK]
        try:
            found, after = service.venue.cancel_many(
                [{k: getattr(r, k) for k in ROW_FIELDS} for r in chunk], reason)
        except DomainError as exc:  # VENUE_UNAVAILABLE, or what it raised (the database)
            log.warning("the venue process failed to cancel orders",
                        extra={"orders": len(chunk), "code": exc.code})
            outcomes.update((r.id, CancelOutcome(r.id, r.client_order_id, r.account, r.symbol,
                                                 r.mic, r.side, "FAILED", r.status, exc.code,
                                                 str(exc)[:500])) for r in chunk)
            continue
        outcomes.update((k, CancelOutcome(**v)) for k, v in found.items())
        changed.extend(after)
    return outcomes, changed


def _cancel(service: Any, tenant_id: str, user_id: str | None, flt: CancelFilter,
            reason: str) -> MassCancelResult:
    service.advance()
    connectors = service._scoped_connectors()[0]
    final: dict[str, CancelOutcome] = {}
    waiting: dict[str, CancelOutcome] = {}  # NOT_SENT so far
    for _ in range(NOT_SENT_ROUNDS):
        rows = [r for r in _open_orders(service, tenant_id, flt) if r.id not in final]
        if not rows:
            break
        # The venue process's connectors cancel, apply and publish there (venue_client.py).
        remote = [r for r in rows if is_remote(connectors.get(r.connector))]
        here = [r for r in rows if not is_remote(connectors.get(r.connector))]
        outcomes: dict[str, CancelOutcome] = {}
        changed: list[dict[str, Any]] = []
        after: dict[str, dict[str, Any]] = {}
        if here:
            _, changed = service._at_venue(
                lambda rows=here, outcomes=outcomes: _venue_round(connectors, rows, reason, outcomes))
            after.update((o["id"], o) for o in changed)
        if remote:
            found, rows_after = _remote_round(service, remote, reason)
            outcomes.update(found)
            after.update((o["id"], o) for o in rows_after)
        for order_id, o in outcomes.items():
            if order_id in after:
                o.status = after[order_id]["status"]
            if o.outcome == "CANCELED" and o.status != str(states.OrderStatus.CANCELED):
                o.outcome = "REFUSED"  # the state machine did not take it (logged there)
            if o.outcome == "NOT_SENT":
                waiting[order_id] = o
            else:
                final[order_id] = o
                waiting.pop(order_id, None)
        service._publish(changed)
        if not any(o.outcome == "NOT_SENT" for o in outcomes.values()):
            break
        time.sleep(NOT_SENT_WAIT)  # their intake is sending them right now: look again
    if waiting:
        left = {k: v for k, v in waiting.items() if k not in final}
        t = ORDERS.c
        with service.db.tenant_session(tenant_id) as session:
            for order_id, status in session.execute(select(t.id, t.status).where(t.id.in_(list(left)))):
                left[order_id].status = status
        final.update(left)
    result = MassCancelResult(reason, flt, list(final.values()))
    with service.db.tenant_transaction(tenant_id) as session:
        service.audit.append(session, tenant_id, [AuditEntry(
            "order.mass_cancel_requested", tenant_id,
            {"reason": reason, "filter": flt.payload(), "matched": result.matched,
             "canceled": result.count("CANCELED"), "refused": result.count("REFUSED"),
             "not_sent": result.count("NOT_SENT"), "failed": result.count("FAILED"),
             "orders": [{"order_id": o.order_id, "client_order_id": o.client_order_id,
                         "outcome": o.outcome, "code": o.code} for o in result.outcomes]},
            user_id)])
    return result


def kill(service: Any, tenant_id: str, user_id: str | None, account: str | None = None
         ) -> MassCancelResult:
    """Cancel every open order of the tenant (or of `account`) because a kill switch went on.
    The tenant's intake lock is taken and let go first: a batch already past its checks has
    claimed its orders by then, and is cancelled with the rest."""
    with service._tenant_locks[tenant_id]:
        pass
    return cancel_orders(service, tenant_id, user_id,
                         CancelFilter(account=account, all=account is None), reason=KILL_SWITCH)


def cancel_on_disconnect(service: Any, tenant_id: str, user_id: str) -> MassCancelResult:
    """A session that asked for it went away: cancel every open order `user_id` submitted."""
    return cancel_orders(service, tenant_id, user_id, CancelFilter(created_by=user_id),
                         reason=CANCEL_ON_DISCONNECT)


def set_kill_switch(service: Any, tenant_id: str, user_id: str | None, *, on: bool,
                    account: str | None = None) -> KillSwitchResult:
    """The tenant's kill switch (no `account`) or an account's: on blocks new orders and
    cancels every open one in scope; off lets orders in again. Audited."""
    account = (account or "").strip() or None
    if account is None:
        service.set_controls(tenant_id, user_id, {"kill_switch": on}, cancel_open=False)
    else:
        with service.db.tenant_transaction(tenant_id) as session:
            found = session.execute(select(TradingAccount.id).where(TradingAccount.code == account))
            if found.first() is None:
                raise NotFound(f"no trading account {account!r}", code="ACCOUNT_NOT_FOUND")
            row = load_row(session, tenant_id)
            if row is None:
                from gateway.trading.service import DEFAULT_DUPLICATE_MS

                row = ComplianceControlsRow(tenant_id=tenant_id, duplicate_window_ms=DEFAULT_DUPLICATE_MS)
            was = account in killed_accounts(row)
            with_account_switch(row, account, on)
            row.updated_by, row.updated_at = user_id, utcnow()
            row.version = (row.version or 0) + 1
            session.add(row)
            session.flush()
            service.audit.append(session, tenant_id, [AuditEntry(
                "compliance.kill_switch_changed", tenant_id,
                {"account": account, "before": was, "after": on}, user_id)])
    return KillSwitchResult(on, account, kill(service, tenant_id, user_id, account) if on else None)


def killed(service: Any, tenant_id: str) -> list[str]:
    """The tenant's accounts whose own kill switch is on."""
    with service.db.tenant_session(tenant_id) as session:
        return sorted(killed_accounts(load_row(session, tenant_id)))


def tenant_switch(service: Any, tenant_id: str) -> bool:
    with service.db.tenant_session(tenant_id) as session:
        return controls_of(load_row(session, tenant_id), tenant_id).kill_switch
