"""Order intake: validate, prepare (route and check), claim, send.

Intake of a batch (one order is a batch of one), per tenant, under the tenant's intake lock:

1. Validate each order (intake.parse_order); a bad one gets its error and nothing is stored.
2. Idempotency: a ClOrdID the tenant already used answers its FIRST order (`replayed`); the
   same ClOrdID twice in one batch answers the first of them. The unique constraint
   (tenant_id, client_order_id) settles races between processes: the loser's insert fails and
   it answers the winner's order.
3. Read once per batch: the accounts, their positions, unused locates, open orders (credit
   used), recent orders (throttle, duplicate guard), the tenant's controls (books.py).
4. Per order: route (SMART or the named venue), then compliance on the chosen venue with the
   context assembled from that state (every decision is recorded, pass or deny). Later
   orders of the batch see the earlier ones in the throttle, duplicate guard, credit used and
   locates; positions are as of the batch's start (fills come after, in step 6).
5. Claim: one transaction inserts the batch's orders (PENDING or DENIED), their first events,
   the decisions, locate use and the audit records (bulk inserts, no ORM flush per row).
6. Send the passed orders to their connectors and apply every execution report they cause
   (also to resting orders of other accounts or tenants they traded with) in a second
   transaction (venues._at_venue, reports.py): state changes through states.apply only,
   fills, positions, events, audit.
7. Publish order updates and compliance alerts on the bus after commit.

Not covered: an order claimed (step 5) whose process dies before step 6 stays PENDING (until
venues.sweep_unsent rejects it); across processes the credit/throttle state is per process's
reading of the database.

`_existing`, `_write_claims` and `_send` are called through the service (`service._send`):
tests replace them on one service to stage a race or a process that dies.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from gateway.audit import AuditEntry
from gateway.bulk import bulk_insert
from gateway.compliance.engine import Decision, deny
from gateway.errors import DomainError
from gateway.events import Bus
from gateway.tenancy.models import new_id
from gateway.trading import states, stream
from gateway.trading.books import (
    _AccountBook,
    _books,
    _credit_unknown,
    _fx_and_lot,
    _listing,
    _reference,
    _take_locates,
)
from gateway.trading.common import (
    DECISIONS,
    EVENTS,
    MAX_BATCH,
    ORDERS,
    ZERO,
    AccountNotFound,
    BatchInvalid,
    SubmitResult,
    _plain,
    alerts_topic,
)
from gateway.trading.controls import controls_for, controls_of, killed_accounts, load_row
from gateway.trading.intake import (
    ClOrdIdConflict,
    ClOrdIdRepeated,
    InstrumentIndex,
    OrderInput,
    ValidOrder,
    differences,
    parse_order,
)
from gateway.trading.models import ComplianceDecisionRow, Order
from gateway.trading.reports import _publish, order_message
from gateway.trading.routing import RoutingDecision
from gateway.trading.states import OrderStatus
from gateway.trading.venue_client import REFUSED_UNSENT, VenueUnavailable, is_remote
from gateway.trading.venues import _at_venue, _scoped_connectors
from plugins.sdk import (
    ExecType,
    ExecutionReport,
    InstrumentFacts,
    MarketState,
    OrderRequest,
    OrdStatus,
    Side,
    TenantControls,
    order_fingerprint,
)

if TYPE_CHECKING:
    from gateway.trading.service import OrderService

log = logging.getLogger(__name__)


@dataclass
class _Prepared:
    index: int
    valid: ValidOrder
    order: dict[str, Any]  # the trade_order row
    decision: Decision
    request: OrderRequest | None  # None when denied
    connector: str
    after: dict[str, Any] | None = None  # the row once its execution reports are applied
    event: dict[str, Any] | None = None  # its first order_event row, once claimed


def submit_many(service: OrderService, tenant_id: str, user_id: str | None,
                raws: Sequence[OrderInput]) -> list[SubmitResult]:
    if not raws:
        raise BatchInvalid("send at least one order")
    if len(raws) > MAX_BATCH:
        raise BatchInvalid(f"at most {MAX_BATCH} orders per batch", details={"max": MAX_BATCH})
    now = service.markets.now()
    service.advance(now)
    results = [SubmitResult(str(r.client_order_id)) for r in raws]
    instruments = InstrumentIndex(service.market_data.instruments())
    valid: dict[int, ValidOrder] = {}
    first_index: dict[str, int] = {}
    for k, raw in enumerate(raws):
        cid = raw.client_order_id.strip() if isinstance(raw.client_order_id, str) else None
        if cid:
            if cid in first_index:  # a batch names each order once
                results[k].error = ClOrdIdRepeated(
                    f"clientOrderId {cid!r} is already item {first_index[cid]} of this batch",
                    details={"index": first_index[cid], "clientOrderId": cid})
                continue
            first_index[cid] = k
        try:
            valid[k] = parse_order(raw, instruments, now)
        except DomainError as exc:
            results[k].error = exc
    with service._tenant_locks[tenant_id]:
        prepared, claimed = _prepare_and_claim(service, tenant_id, user_id, valid, results, now)
    if claimed:
        service._send(prepared)
        # Answer each sent order as it stands after its execution reports: the row their
        # application just wrote (every sent order has one, its acknowledgement at least),
        # else read back.
        fresh: dict[str, Any] = {p.order["id"]: SimpleNamespace(**p.after)
                                 for p in prepared if p.after is not None}
        unseen = [p.order["id"] for p in prepared if p.after is None]
        if unseen:
            fresh.update(service._views(tenant_id, unseen))
        for result in results:
            if result.order is not None and result.order.id in fresh:
                result.order = fresh[result.order.id]
    return results


def _prepare_and_claim(service: OrderService, tenant_id: str, user_id: str | None,
                       valid: dict[int, ValidOrder], results: list[SubmitResult], now: datetime
                       ) -> tuple[list[_Prepared], bool]:
    # submit_many answered repeats inside the batch: one order per ClOrdID here.
    first_of = {v.client_order_id: k for k, v in valid.items()}
    fresh = dict(valid)
    with service.db.tenant_session(tenant_id) as session:
        existing = service._existing(session, list(first_of))
        for cid, k in first_of.items():
            if cid in existing:
                _answer_existing(session, results[k], fresh[k], existing[cid])
                del fresh[k]
        row = load_row(session, tenant_id)
        controls, killed = controls_of(row, tenant_id), killed_accounts(row)
        books = _books(service, session, tenant_id, {v.account for v in fresh.values()}, controls, now)
    prepared: list[_Prepared] = []
    references: dict[str, tuple[MarketState, Decimal | None]] = {}  # one quote per instrument
    requests = {k: _order_request(v, now) for k, v in fresh.items() if v.account in books}
    routes: dict[int, RoutingDecision | DomainError] = {}
    try:
        if requests:  # a batch of replays asks no venue
            router = _scoped_connectors(service)[1]
            routes = dict(zip(requests, router.route_many(list(requests.values())), strict=True))
    except DomainError as exc:  # no connectors to route over (the venue process unreachable)
        routes = dict.fromkeys(requests, exc)
    for k, v in fresh.items():
        book = books.get(v.account)
        if book is None:
            results[k].error = AccountNotFound(f"no trading account {v.account!r}")
            continue
        route = routes[k]
        if isinstance(route, DomainError):
            results[k].error = route
            continue
        try:
            prepared.append(_prepare(service, k, v, requests[k], route, book,
                                     controls_for(controls, killed, v.account), tenant_id, user_id,
                                     now, references))
        except DomainError as exc:
            results[k].error = exc
    _claim(service, tenant_id, user_id, prepared, results)
    sent = [p for p in prepared if results[p.index].order is not None
            and not results[p.index].replayed and p.request is not None]
    return sent, bool(sent)


def _answer_existing(session: Session | None, result: SubmitResult, v: ValidOrder, row: Any) -> None:
    """A ClOrdID already taken: the same order again is a replay (the first order,
    `replayed`); other terms are CLORDID_CONFLICT naming the order and the terms."""
    changed = differences(v, row)
    if session is not None and {"quantity", "limitPrice"} & set(changed):
        original = _original_terms(session, row)
        if original is not None:
            changed = differences(v, row, original)
    if changed:
        result.error = ClOrdIdConflict(
            f"clientOrderId {v.client_order_id!r} already names order {row.id}, with another "
            f"{', '.join(changed)}", details={"orderId": row.id, "fields": changed})
        return
    result.order, result.replayed = row, True


def _original_terms(session: Session, row: Any) -> tuple[Decimal, Decimal | None] | None:
    """(quantity, limit price) as the order was submitted, from its first compliance
    decision (an amendment changes the row's); None when there is none. Reads the stored
    records: "amend", "quantity" and "price" are never left out of them (decisions.py)."""
    records = session.exec(select(ComplianceDecisionRow.record)
                           .where(ComplianceDecisionRow.order_id == row.id)
                           .order_by(col(ComplianceDecisionRow.created_at))).all()
    first = next((r for r in records if not r.get("amend")), None)
    if first is None or first.get("quantity") is None:
        return None
    limit = None
    if row.limit_price is not None and first.get("price") is not None:
        limit = Decimal(first["price"])
    return Decimal(first["quantity"]), limit


def _existing(session: Session, cids: list[str]) -> dict[str, Order]:
    """The tenant's orders by these ClOrdIDs (the session is the tenant's)."""
    found: dict[str, Order] = {}
    for start in range(0, len(cids), 500):
        chunk = cids[start:start + 500]
        for row in session.exec(select(Order).where(col(Order.client_order_id).in_(chunk))):
            found[row.client_order_id] = row
    return found


def _order_request(v: ValidOrder, now: datetime) -> OrderRequest:
    """The order as the router and the venue see it, under its new id."""
    return OrderRequest(new_id(), v.account, v.instrument.symbol, v.requested_mic, v.side,
                        v.ord_type, v.time_in_force, v.quantity, v.limit_price, v.stop_price,
                        v.currency, v.expire_at, now)


def _prepare(service: OrderService, index: int, v: ValidOrder, request: OrderRequest,
             decision_route: RoutingDecision, book: _AccountBook, controls: TenantControls,
             tenant_id: str, user_id: str | None, now: datetime,
             references: dict[str, tuple[MarketState, Decimal | None]]) -> _Prepared:
    order_id = request.client_order_id
    routed = decision_route.order
    key = f"{routed.symbol}.{routed.mic}"
    listing = _listing(service, key) or v.instrument
    if key not in references:
        references[key] = _reference(service, key, now)
    market, arrival = references[key]
    fx, lot = _fx_and_lot(service, listing, book, routed, arrival, now)
    ctx = service.engine.context(
        routed, instrument=InstrumentFacts(listing.isin, listing.currency, listing.asset_class),
        client=book.client(), account=book.state(str(v.time_in_force)), market=market,
        controls=controls, now=now, fx_rate=fx, tick_size=listing.tick_size, lot_size=lot)
    decision = service.engine.check(ctx)
    if book.unvalued and v.side is not Side.SELL:
        decision = deny(decision, _credit_unknown(book))
    status = states.apply(OrderStatus.NEW, states.OrderEvent.COMPLIANCE_PASS if decision.passed
                          else states.OrderEvent.COMPLIANCE_DENY)
    first = decision.denials[0] if decision.denials else None
    row = {
        "id": order_id, "tenant_id": tenant_id, "client_order_id": v.client_order_id,
        "account": v.account, "symbol": routed.symbol, "isin": listing.isin, "mic": routed.mic,
        "requested_mic": v.requested_mic, "connector": decision_route.connector,
        "side": str(v.side), "ord_type": str(v.ord_type), "time_in_force": str(v.time_in_force),
        "quantity": v.quantity, "limit_price": v.limit_price, "stop_price": v.stop_price,
        "currency": v.currency, "expire_at": v.expire_at, "status": str(status),
        "cum_qty": ZERO, "leaves_qty": v.quantity if decision.passed else ZERO, "avg_px": ZERO,
        "fees": ZERO, "venue_order_id": None,
        "reject_code": first.code if first else None,
        "reject_text": first.message[:500] if first else None,
        "routing": _routing_record(decision_route, arrival),
        "created_by": user_id, "created_at": now, "updated_at": now, "version": 1,
    }
    if decision.passed:
        book.recent.append(now)
        book.fingerprints.setdefault(str(v.time_in_force), {})[order_fingerprint(routed)] = now
        if v.side is not Side.SELL and ctx.value is not None:
            book.credit_used += ctx.value
        if v.side is Side.SELL_SHORT:
            left = book.locates.get(ctx.instrument_key, ZERO)
            book.locates[ctx.instrument_key] = max(left - v.quantity, ZERO)
    else:
        book.recent.append(now)  # a denied message still counts for the throttle
    return _Prepared(index, v, row, decision, routed if decision.passed else None,
                     decision_route.connector)


def _routing_record(d: RoutingDecision, arrival: Decimal | None) -> dict[str, Any]:
    return {
        "connector": d.connector, "plugin": d.plugin, "mic": d.mic, "reason": d.reason,
        "expected_price": _plain(d.expected_price), "fee_bps": _plain(d.fee_bps),
        "expected_fee": _plain(d.expected_fee), "score": _plain(d.score),
        "arrival_price": _plain(arrival), "decided_at": d.decided_at.isoformat(),
        "alternatives": [{"connector": a.connector, "mic": a.mic, "symbol": a.symbol,
                          "expected_price": _plain(a.expected_price),
                          "available_qty": _plain(a.available_qty), "fee_bps": _plain(a.fee_bps),
                          "score": _plain(a.score), "status": a.status}
                         for a in d.alternatives],
    }


# -- claiming: the batch's rows in one transaction -------------------------------------------

def _claim(service: OrderService, tenant_id: str, user_id: str | None, prepared: list[_Prepared],
           results: list[SubmitResult]) -> None:
    if not prepared:
        return
    try:
        with service.db.tenant_transaction(tenant_id) as session:
            service._write_claims(session, tenant_id, user_id, prepared)
    except IntegrityError:
        # Another process claimed one of these ClOrdIDs: one order at a time, each in its
        # own transaction, so only the losers answer the winner's order.
        lost: set[int] = set()
        for p in prepared:
            try:
                with service.db.tenant_transaction(tenant_id) as session:
                    service._write_claims(session, tenant_id, user_id, [p])
            except IntegrityError:
                with service.db.tenant_session(tenant_id) as session:
                    winner = service._existing(session, [p.valid.client_order_id])
                row = winner.get(p.valid.client_order_id)
                if row is not None:  # the winner's order, or CLORDID_CONFLICT
                    _answer_existing(None, results[p.index], p.valid, row)
                lost.add(p.index)
                p.request = None
                continue
            results[p.index].order = SimpleNamespace(**p.order)
            results[p.index].decision = p.decision
        _publish_claims(service.bus, tenant_id, [p for p in prepared if p.index not in lost])
        return
    for p in prepared:
        results[p.index].order = SimpleNamespace(**p.order)
        results[p.index].decision = p.decision
    _publish_claims(service.bus, tenant_id, prepared)


def _write_claims(service: OrderService, session: Session, tenant_id: str, user_id: str | None,
                  prepared: list[_Prepared]) -> None:
    orders, events, decisions, audit = [], [], [], []
    rule_sets = []
    for p in prepared:
        row, decision = p.order, p.decision
        orders.append(row)
        event = (states.OrderEvent.COMPLIANCE_PASS if decision.passed
                 else states.OrderEvent.COMPLIANCE_DENY)
        p.event = {"id": new_id(), "tenant_id": tenant_id, "order_id": row["id"], "seq": 1,
                   "event": str(event), "exec_type": None, "status_from": "NEW",
                   "status_to": row["status"], "cum_qty": ZERO, "leaves_qty": row["leaves_qty"],
                   "code": row["reject_code"], "text": row["reject_text"] or "",
                   "at": row["created_at"], "last_qty": None, "last_px": None, "avg_px": ZERO,
                   "exec_id": None}
        events.append(p.event)
        record = decision.record()
        # The record's client_order_id is the id the venue sees (the order's own id).
        record["order_id"] = row["id"]
        record["client_order_id"] = row["client_order_id"]
        stored = {"id": new_id(), "tenant_id": tenant_id, "order_id": row["id"],
                  "client_order_id": row["client_order_id"], "account": row["account"],
                  "passed": decision.passed, "codes": list(decision.codes),
                  "jurisdictions": list(decision.jurisdictions), "record": record,
                  "elapsed_ns": decision.elapsed_ns, "decided_at": decision.decided_at,
                  "created_at": row["created_at"]}
        stored["record"], rule_set = service.decision_records.compact(stored, record)
        stored["record_compact"] = rule_set is not None
        decisions.append(stored)
        rule_sets.append(rule_set)
        # One record per order: the order and its decision (per-rule timings stay in the
        # compliance_decision row; they are measurements, not facts to attest).
        payload = _order_payload(row, event)
        audit.append(AuditEntry("order.submitted", row["id"], {
            **payload, "compliance": _decision_payload(record, payload)}, user_id))
    bulk_insert(session, ORDERS, orders)
    service.decision_records.store_rule_sets(session, tenant_id, rule_sets)
    bulk_insert(session, DECISIONS, decisions)
    _use_locates(session, prepared)
    # The lock order of every writer (stream.py): row writes, the audit lane, then the stream
    # head, so that the tenant's writers take turns only on numbering the events.
    service.audit.append(session, tenant_id, audit)
    stream.number(session, events)
    bulk_insert(session, EVENTS, events)


def _use_locates(session: Session, prepared: list[_Prepared]) -> None:
    for p in prepared:
        if p.request is not None and p.valid.side is Side.SELL_SHORT:
            _take_locates(session, p.order["tenant_id"], p.valid.account,
                          p.decision.context.instrument_key, p.valid.quantity,
                          p.order["created_at"])


# Said by the audit record itself: its chain is the tenant's, its subject the order's id.
_SAID_BY_THE_RECORD = frozenset({"tenant_id", "order_id", "timings_ns"})


def _decision_payload(record: dict[str, Any], order: dict[str, Any]) -> dict[str, Any]:
    """The decision as `order.submitted` holds it: without what the record already says (its
    tenant, its subject, the order's own fields where the decision saw the same value) and
    without the per-rule timings."""
    return {k: v for k, v in record.items()
            if k not in _SAID_BY_THE_RECORD and not (k in order and order[k] == v)}


def _order_payload(row: dict[str, Any], event: Any) -> dict[str, Any]:
    return {"event": str(event), "client_order_id": row["client_order_id"],
            "account": row["account"], "symbol": row["symbol"], "mic": row["mic"],
            "side": row["side"], "ord_type": row["ord_type"],
            "time_in_force": row["time_in_force"], "quantity": _plain(row["quantity"]),
            "limit_price": _plain(row["limit_price"]), "stop_price": _plain(row["stop_price"]),
            "status": row["status"], "reject_code": row["reject_code"]}


def _publish_claims(bus: Bus, tenant_id: str, prepared: list[_Prepared]) -> None:
    """Each order's message, after its compliance alert if it was denied, in one round trip."""
    messages: list[tuple[str, dict[str, Any]]] = []
    for p in prepared:
        if not p.decision.passed:
            messages.append((alerts_topic(tenant_id), {
                "tenant_id": tenant_id, "order_id": p.order["id"], **{
                    k: v for k, v in p.decision.record().items()
                    if k in ("account", "symbol", "mic", "denials", "jurisdictions",
                             "decided_at")},
                "client_order_id": p.order["client_order_id"]}))
        messages.append(order_message(p.order, [p.event] if p.event is not None else []))
    if messages:
        bus.publish_many(messages)


# -- sending: the venues answer with execution reports, applied in reports.py ----------------

def _send(service: OrderService, prepared: list[_Prepared]) -> None:
    connectors = _scoped_connectors(service)[0]
    # The venue process's connectors apply their reports there (venue_client.py).
    remote = [p for p in prepared if is_remote(connectors.get(p.connector))]
    here = [p for p in prepared if not is_remote(connectors.get(p.connector))]
    rows: dict[str, dict[str, Any]] = {}
    if here:
        assert all(p.request is not None for p in here)
        changed = send_requests(service, connectors,
                                [(p.connector, p.request) for p in here])  # type: ignore[misc]
        rows.update((o["id"], o) for o in changed)
    if remote:
        rows.update(_send_remote(service, remote))
    for p in prepared:
        p.after = rows.get(p.order["id"])
        if p.after is not None:  # applying reads no routing: the claim's, which it never changes
            p.after.setdefault("routing", p.order["routing"])


def send_requests(service: OrderService, connectors: Mapping[str, Any],
                  items: Sequence[tuple[str, OrderRequest]]) -> list[dict[str, Any]]:
    """Send each (connector name, request) and apply every report they cause, then publish;
    the changed rows. A connector that raises (or is missing) rejects its order locally
    (CONNECTOR_FAILED)."""
    def submit() -> list[ExecutionReport]:
        reports: list[ExecutionReport] = []
        for name, request in items:
            try:
                reports.extend(connectors[name].submit(request))
            except Exception:
                log.exception("exchange connector failed to take an order",
                              extra={"connector": name, "order_id": request.client_order_id})
                reports.append(_local_reject(request, request.mic))
        return reports

    _, changed = _at_venue(service, submit)
    _publish(service.bus, changed)
    return changed


def _send_remote(service: OrderService, prepared: list[_Prepared]) -> dict[str, dict[str, Any]]:
    """Orders for the venue process: it sends, applies and publishes; the rows it answers.
    Unreached (nothing sent): rejected here as a failed connector is. Sent but the answer
    lost: nothing written here (the venue process may have applied them); read back."""
    venue = service.venue
    assert venue is not None
    try:
        changed = venue.submit([(p.connector, p.request) for p in prepared])  # type: ignore[misc]
    except DomainError as exc:
        unsent = exc.code in REFUSED_UNSENT or (isinstance(exc, VenueUnavailable) and not exc.sent)
        log.warning("the venue process failed to take orders", extra={
            "orders": len(prepared), "unsent": unsent, "code": exc.code, "error": str(exc)})
        if not unsent:
            if isinstance(exc, VenueUnavailable):
                return {}
            raise  # what it raised applying them (the database): as in process
        reports = [_local_reject(p.request, p.order["mic"]) for p in prepared if p.request]
        _, changed = _at_venue(service, lambda: reports)
        _publish(service.bus, changed)
    return {o["id"]: o for o in changed}


def _local_reject(request: OrderRequest, mic: str) -> ExecutionReport:
    return ExecutionReport(ExecType.REJECTED, OrdStatus.REJECTED, request.client_order_id, "", ZERO,
                           ZERO, ZERO, ZERO, ZERO, ZERO, "the venue connector failed", "CONNECTOR_FAILED",
                           request.submitted_at, exec_id=new_id(), mic=mic)
