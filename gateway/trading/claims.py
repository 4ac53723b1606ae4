"""Order intake: validate, prepare (route and check), send, then write each order once.

Intake of a batch (one order is a batch of one), per tenant, under the tenant's intake lock:

1. Validate each order (intake.parse_order); a bad one gets its error and nothing is stored.
2. Idempotency: a ClOrdID the tenant already used answers its FIRST order (`replayed`); the
   same ClOrdID twice in one batch answers the first of them. Between processes: the ClOrdID
   lock of step 5 on PostgreSQL; without it (SQLite) the unique constraint (tenant_id,
   client_order_id) settles a race: the loser's write fails, it answers the winner's order and
   withdraws its own from the venue.
3. Read once per batch: the accounts, their positions, unused locates, open orders (credit
   used), recent orders (throttle, duplicate guard), the tenant's controls (books.py).
4. Per order: route (SMART or the named venue), then compliance on the chosen venue with the
   context assembled from that state (every decision is recorded, pass or deny). Later
   orders of the batch see the earlier ones in the throttle, duplicate guard, credit used and
   locates; positions are as of the batch's start (fills come after, in step 5).
5. Send the passed orders to their connectors (under the venue lock, venues._at_venue), then
   write the batch in one transaction (reports.py, with this batch as its `_Claim`): each
   order row ONCE, in its state after the execution reports its sending caused (no insert and
   then update), its first event and the reports' events, the decisions, locate use,
   executions, positions (also of resting orders of other accounts or tenants it traded with:
   those rows are updated) and the audit records, the batch's rows by COPY on PostgreSQL
   (gateway/bulk.py). On PostgreSQL the batch's ClOrdIDs are locked from before the send to
   the commit (`_clordid_guard`): another process sending one of them waits, then answers
   this order, so a ClOrdID reaches a venue once. A batch is one transaction: a failure
   leaves nothing of it written; its orders are withdrawn from the venues, and the reports
   its sending caused for orders already stored (other clients' resting orders it traded
   with) are applied on their own (reports._apply_unclaimed), so those match the venue.
6. Publish order updates (each order's transitions of the batch, one message) and compliance
   alerts on the bus after commit.

Steps 3 to 6 run under the tenant's intake lock: the next batch's checks read this one's
orders. A venue that never answers (the process died in the call) leaves nothing written
for a built-in venue, which lives in the same process; an order written PENDING without a
venue acknowledgement is rejected by venues.sweep_unsent. Across processes the
credit/throttle state is per process's reading of the database.

`_existing`, `_write_claims` and `_send` are called through the service (`service._send`):
tests replace them on one service to stage a race or a process that dies.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, String, any_, bindparam, text
from sqlalchemy.dialects import postgresql
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from gateway.audit import AuditEntry
from gateway.bulk import bulk_insert
from gateway.compliance.engine import Decision, deny
from gateway.db import ALL_TENANTS, SCOPE_KEY
from gateway.errors import DomainError
from gateway.events import Bus
from gateway.tenancy.models import new_id
from gateway.trading import states
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
    OrderInput,
    ValidOrder,
    differences,
    parse_order,
)
from gateway.trading.models import ComplianceDecisionRow, Order
from gateway.trading.reports import (
    TRANSITIONS,
    _apply_reports,
    _apply_unclaimed,
    _Claim,
    _publish,
)
from gateway.trading.routing import ConnectorEntry, RoutingDecision, SmartOrderRouter
from gateway.trading.states import OrderStatus
from gateway.trading.venues import _scoped_connectors
from plugins.sdk import (
    ExecType,
    ExecutionReport,
    Instrument,
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
    after: dict[str, Any] | None = None  # the row as written, after its execution reports
    event: dict[str, Any] | None = None  # its first order_event row, once claimed
    decision_id: str = ""  # its compliance_decision row's id, once claimed
    record: dict[str, Any] | None = None  # the decision's record, once built


def submit_many(service: OrderService, tenant_id: str, user_id: str | None,
                raws: Sequence[OrderInput]) -> list[SubmitResult]:
    if not raws:
        raise BatchInvalid("send at least one order")
    if len(raws) > MAX_BATCH:
        raise BatchInvalid(f"at most {MAX_BATCH} orders per batch", details={"max": MAX_BATCH})
    now = service.markets.now()
    service.advance(now)
    results = [SubmitResult(str(r.client_order_id)) for r in raws]
    instruments = service.market_data.instruments()
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
    # Prepared, sent and written under the tenant's lock: the next batch's checks read this
    # one's orders (credit, throttle, duplicates) from the database.
    with service._tenant_locks[tenant_id]:
        prepared = _prepare_batch(service, tenant_id, user_id, valid, results, now)
        if prepared:
            _claim_and_send(service, tenant_id, user_id, prepared, results)
    return results


def _prepare_batch(service: OrderService, tenant_id: str, user_id: str | None,
                   valid: dict[int, ValidOrder], results: list[SubmitResult], now: datetime
                   ) -> list[_Prepared]:
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
    batch = _BatchState(_BatchRouter(_scoped_connectors(service)[1]))
    for k, v in fresh.items():
        book = books.get(v.account)
        if book is None:
            results[k].error = AccountNotFound(f"no trading account {v.account!r}")
            continue
        try:
            prepared.append(_prepare(service, k, v, book, controls_for(controls, killed, v.account),
                                     tenant_id, user_id, now, batch))
        except DomainError as exc:
            results[k].error = exc
    return prepared


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
    decision (an amendment changes the row's); None when there is none."""
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


def _taken(conn: Connection, tenant_id: str, cids: Sequence[str]) -> list[str]:
    """Which of `cids` name an order of the tenant. On PostgreSQL one array parameter
    (`= ANY`): an IN list of 500 parameters cost more to build and send than the read."""
    o = ORDERS.c
    if conn.dialect.name == "postgresql":
        wanted = bindparam("cids", type_=postgresql.ARRAY(String))
        return list(conn.execute(select(o.client_order_id).where(
            o.tenant_id == tenant_id, o.client_order_id == any_(wanted)), {"cids": list(cids)})
            .scalars())
    found: list[str] = []
    for start in range(0, len(cids), 500):
        found.extend(conn.execute(select(o.client_order_id).where(
            o.tenant_id == tenant_id, o.client_order_id.in_(cids[start:start + 500]))).scalars())
    return found


def _existing(session: Session, cids: list[str]) -> dict[str, Order]:
    """The tenant's orders by these ClOrdIDs (the session is the tenant's). A batch's ClOrdIDs
    are nearly always new: one narrow Core read (tenant filter explicit: the ORM hook does not
    see Core statements) finds the taken ones, and only those are loaded as Orders."""
    if not cids:
        return {}
    tenant_id = session.info.get(SCOPE_KEY)
    if not isinstance(tenant_id, str) or tenant_id == ALL_TENANTS:
        raise RuntimeError("ClOrdIDs are looked up in a tenant's session")
    taken = _taken(session.connection(), tenant_id, cids)
    rows: dict[str, Order] = {}
    for start in range(0, len(taken), 500):
        chunk = taken[start:start + 500]
        for row in session.exec(select(Order).where(col(Order.client_order_id).in_(chunk))):
            rows[row.client_order_id] = row
    return rows


class _BatchRouter(SmartOrderRouter):
    """The tenant's router for one batch: the connectors reaching a MIC and the known listings
    are read once per batch, not once per order (each `mics()` call takes a venue's lock).
    Quotes are still asked per order: they depend on its side, quantity and price."""

    def __init__(self, router: SmartOrderRouter) -> None:
        super().__init__(router.connectors, router.instruments)
        self._reaching: dict[str, list[ConnectorEntry]] = {}
        self._listings: list[Instrument] | None = None

    def instruments(self) -> list[Instrument]:
        if self._listings is None:
            self._listings = super().instruments()
        return self._listings

    def reaching(self, mic: str) -> list[ConnectorEntry]:
        key = mic.upper()
        found = self._reaching.get(key)
        if found is None:
            found = self._reaching[key] = super().reaching(key)
        return found


@dataclass
class _BatchState:
    """What a batch's orders share while they are prepared: nothing at the venues moves between
    them (orders are sent after the claim), so per batch: the router's venue lists, one market
    state per listing, one listing per SYMBOL.MIC key."""

    router: SmartOrderRouter
    references: dict[str, tuple[MarketState, Decimal | None]] = field(default_factory=dict)
    listings: dict[str, Any] = field(default_factory=dict)


def _prepare(service: OrderService, index: int, v: ValidOrder, book: _AccountBook,
             controls: TenantControls, tenant_id: str, user_id: str | None, now: datetime,
             batch: _BatchState) -> _Prepared:
    order_id = new_id()
    request = OrderRequest(order_id, v.account, v.instrument.symbol, v.requested_mic, v.side,
                           v.ord_type, v.time_in_force, v.quantity, v.limit_price, v.stop_price,
                           v.currency, v.expire_at, now)
    decision_route = batch.router.route(request)
    routed = decision_route.order
    key = f"{routed.symbol}.{routed.mic}"
    if key not in batch.listings:
        batch.listings[key] = _listing(service, key)
    listing = batch.listings[key] or v.instrument
    if key not in batch.references:
        batch.references[key] = _reference(service, key, now)
    market, arrival = batch.references[key]
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


# -- claiming and sending: each order written once, with what the venue made of it ----------

def _claim_and_send(service: OrderService, tenant_id: str, user_id: str | None,
                    prepared: list[_Prepared], results: list[SubmitResult]) -> None:
    """Send the passed orders, then write the batch in one transaction: each order row once,
    in its state after the venue's reports (ACCEPTED, FILLED …; PENDING when no report came;
    DENIED), with its events, decision, locate use, executions, positions and audit records.
    On PostgreSQL the batch's ClOrdIDs are locked first (_clordid_guard), so another process
    sending one of them waits for this commit and then answers this order: a ClOrdID never
    reaches a venue twice."""
    cids = [p.valid.client_order_id for p in prepared]
    with _clordid_guard(service, tenant_id, cids) as taken:
        if taken:  # committed by another process since the pre-check
            prepared = _answer_taken(service, tenant_id, prepared, taken, results)
        if not prepared:
            return
        sendable = [p for p in prepared if p.request is not None]
        reports: list[ExecutionReport] = []

        def call() -> list[ExecutionReport]:
            if sendable:
                reports.extend(service._send(sendable) or ())
            return reports

        try:
            _, changed = service._at_venue(call, claim=_claim_of(service, tenant_id, user_id,
                                                                 prepared))
        except IntegrityError:
            # Without the lock (SQLite, one process; two services in a test) another writer
            # took a ClOrdID first: those orders answer the winner's, are withdrawn from the
            # venue, and the rest of the batch is written.
            try:
                settled = _settle_collision(service, tenant_id, user_id, prepared, reports,
                                            results)
            except Exception:  # its write failed too: the batch is not written
                log.exception("settling a ClOrdID collision failed")
                settled = None
            if settled is None:  # not written: withdrawn, and the stored orders it traded
                _withdraw(service, sendable, "the batch was not written", reports)
                with service._apply_lock:  # with keep their fills (reports._apply_unclaimed)
                    _publish(service.bus, _apply_unclaimed(
                        service, reports, {p.order["id"] for p in prepared}))
                raise
            prepared, changed = settled
        except Exception:
            # Nothing of the batch was written: what the venues took is withdrawn.
            _withdraw(service, sendable, "the batch was not written", reports)
            raise
    rows = {o["id"]: o for o in changed}
    for p in prepared:
        p.after = rows.get(p.order["id"], p.order)
        results[p.index].order = SimpleNamespace(**p.after)
        results[p.index].decision = p.decision
    _publish_alerts(service.bus, tenant_id, prepared)
    _publish(service.bus, changed)


# A namespace of our own for the two-key advisory locks (its key space is apart from the
# one-key form the outbox uses).
CLORDID_LOCK_SPACE = 0x0C10_1D00


@contextmanager
def _clordid_guard(service: OrderService, tenant_id: str, cids: list[str]) -> Iterator[set[str]]:
    """Lock the batch's ClOrdIDs of this tenant on PostgreSQL (transaction advisory locks on a
    connection of their own, taken in key order so two batches never deadlock, held until
    the batch is written) and yield those already taken by a committed order. Elsewhere the
    pre-check and the tenant's lock stand (SQLite serves one process)."""
    engine = service.db.engine
    if engine.dialect.name != "postgresql" or not cids:
        yield set()
        return
    keys = sorted({_lock_key(tenant_id, cid) for cid in cids})
    conn = engine.connect()
    try:
        conn.begin()
        conn.execute(text("SELECT count(pg_advisory_xact_lock(:space, k)) "
                          "FROM unnest(CAST(:keys AS integer[])) AS k"),
                     {"space": CLORDID_LOCK_SPACE, "keys": keys})
        yield set(_taken(conn, tenant_id, cids))
    finally:
        # Closing rolls the lock transaction back, releasing its locks (it wrote nothing).
        # A failure here comes after the batch's own commit or error and must not replace
        # it: a connection that cannot end its transaction is discarded, and its session's
        # locks go with it.
        try:
            conn.close()
        except Exception:
            log.exception("releasing the ClOrdID locks failed; the connection is discarded")
            if not conn.closed:
                conn.invalidate()


def _lock_key(tenant_id: str, cid: str) -> int:
    """The advisory lock's 32-bit key for (tenant, ClOrdID): two ClOrdIDs sharing a key only
    make one batch wait for the other."""
    digest = hashlib.blake2b(f"{tenant_id}\0{cid}".encode(), digest_size=4).digest()
    return int.from_bytes(digest, "big", signed=True)


def _answer_taken(service: OrderService, tenant_id: str, prepared: list[_Prepared],
                  taken: set[str], results: list[SubmitResult]) -> list[_Prepared]:
    """Answer the orders whose ClOrdID another writer took (its order, or CLORDID_CONFLICT);
    the rest of `prepared`."""
    lost = [p for p in prepared if p.valid.client_order_id in taken]
    with service.db.tenant_session(tenant_id) as session:
        winners = service._existing(session, [p.valid.client_order_id for p in lost])
        for p in lost:
            row = winners.get(p.valid.client_order_id)
            if row is not None:
                _answer_existing(session, results[p.index], p.valid, row)
    return [p for p in prepared if p.valid.client_order_id not in taken]


def _settle_collision(service: OrderService, tenant_id: str, user_id: str | None,
                      prepared: list[_Prepared], reports: list[ExecutionReport],
                      results: list[SubmitResult]
                      ) -> tuple[list[_Prepared], list[dict[str, Any]]] | None:
    """After the batch's write met a unique constraint: None when no ClOrdID of it is taken
    (another collision: the caller's error stands), else the orders still to write and what
    writing them changed."""
    with service.db.tenant_session(tenant_id) as session:
        taken = set(service._existing(session, [p.valid.client_order_id for p in prepared]))
    if not taken:
        return None
    lost = {p.order["id"]: p for p in prepared if p.valid.client_order_id in taken}
    keep = _answer_taken(service, tenant_id, prepared, taken, results)
    _withdraw(service, [p for p in lost.values() if p.request is not None],
              "another process took its ClOrdID", reports)
    rest = [r for r in reports if r.client_order_id not in lost]
    if not keep and not rest:
        return [], []
    with service._apply_lock:
        claim = _claim_of(service, tenant_id, user_id, keep) if keep else None
        return keep, _apply_reports(service, rest, claim=claim)


def _withdraw(service: OrderService, prepared: list[_Prepared], why: str,
              reports: Sequence[ExecutionReport]) -> None:
    """Cancel at their venues orders sent but not stored (their answers concern no stored
    order, and are dropped). Fills a venue already made cannot be taken back: logged as
    errors, for an operator to reconcile."""
    connectors = _scoped_connectors(service)[0]
    ids = {p.order["id"] for p in prepared}
    for r in reports:
        if r.exec_type is ExecType.TRADE and r.client_order_id in ids:
            log.error("a fill at the venue of an order not stored: %s", why,
                      extra={"order_id": r.client_order_id, "exec_id": r.exec_id,
                             "last_qty": str(r.last_qty), "last_px": str(r.last_px)})
    for p in prepared:
        try:
            connectors[p.connector].cancel(p.order["id"], p.order["mic"])
        except Exception:
            log.exception("withdrawing an order from its venue failed",
                          extra={"order_id": p.order["id"], "why": why})
        else:
            log.warning("order withdrawn from its venue: %s", why,
                        extra={"order_id": p.order["id"]})


def _claim_of(service: OrderService, tenant_id: str, user_id: str | None,
              prepared: list[_Prepared]) -> _Claim:
    """The batch as reports.py writes it: the order rows (with their first events, which the
    reports' events follow), the order.submitted records, and the rest through
    `service._write_claims` (decisions, locates)."""
    events, audit = [], []
    orders: dict[str, dict[str, Any]] = {}
    for p in prepared:
        row, decision = p.order, p.decision
        event = (states.OrderEvent.COMPLIANCE_PASS if decision.passed
                 else states.OrderEvent.COMPLIANCE_DENY)
        p.event = {"id": new_id(), "tenant_id": tenant_id, "order_id": row["id"], "seq": 1,
                   "event": str(event), "exec_type": None, "status_from": "NEW",
                   "status_to": row["status"], "cum_qty": ZERO, "leaves_qty": row["leaves_qty"],
                   "code": row["reject_code"], "text": row["reject_text"] or "",
                   "at": row["created_at"], "last_qty": None, "last_px": None, "avg_px": ZERO,
                   "exec_id": None}
        events.append(p.event)
        orders[row["id"]] = {**row, TRANSITIONS: [p.event]}
        p.decision_id = new_id()
        # One record per order: the order as compliance left it and its decision (the
        # decision part carries only what the order part and the chain do not).
        audit.append(AuditEntry("order.submitted", row["id"], {
            **_order_payload(row, event),
            "compliance": compliance_payload(_decision_record(p), p.decision_id)}, user_id))

    def write(session: Session, rows: list[dict[str, Any]]) -> None:
        service._write_claims(session, tenant_id, user_id, prepared, rows)

    return _Claim(tenant_id, orders, events, audit, write)


def _decision_record(p: _Prepared) -> dict[str, Any]:
    if p.record is None:
        record = p.decision.record()
        # The record's client_order_id is the id the venue sees (the order's own id).
        record["order_id"] = p.order["id"]
        record["client_order_id"] = p.order["client_order_id"]
        p.record = record
    return p.record


def _write_claims(service: OrderService, session: Session, tenant_id: str, user_id: str | None,
                  prepared: list[_Prepared], orders: list[dict[str, Any]]) -> None:
    """Inside the batch's transaction: its order rows (as the reports left them), then its
    decisions and locate use."""
    bulk_insert(session, ORDERS, orders)
    decisions = []
    for p in prepared:
        row, decision = p.order, p.decision
        decisions.append({"id": p.decision_id, "tenant_id": tenant_id, "order_id": row["id"],
                          "client_order_id": row["client_order_id"], "account": row["account"],
                          "passed": decision.passed, "codes": list(decision.codes),
                          "jurisdictions": list(decision.jurisdictions),
                          "record": _decision_record(p), "elapsed_ns": decision.elapsed_ns,
                          "decided_at": decision.decided_at, "created_at": row["created_at"]})
    bulk_insert(session, DECISIONS, decisions)
    _use_locates(session, prepared)


def _use_locates(session: Session, prepared: list[_Prepared]) -> None:
    for p in prepared:
        if p.request is not None and p.valid.side is Side.SELL_SHORT:
            _take_locates(session, p.order["tenant_id"], p.valid.account,
                          p.decision.context.instrument_key, p.valid.quantity,
                          p.order["created_at"])


def _order_payload(row: dict[str, Any], event: Any) -> dict[str, Any]:
    return {"event": str(event), "client_order_id": row["client_order_id"],
            "account": row["account"], "symbol": row["symbol"], "mic": row["mic"],
            "side": row["side"], "ord_type": row["ord_type"],
            "time_in_force": row["time_in_force"], "quantity": _plain(row["quantity"]),
            "limit_price": _plain(row["limit_price"]), "stop_price": _plain(row["stop_price"]),
            "status": row["status"], "reject_code": row["reject_code"]}


# The decision record's fields the order.submitted payload already states (the order's terms,
# its ids; the chain is the tenant's), and its measurements (timings, elapsed time: the
# compliance_decision row keeps them; they are not facts to attest).
_STATED_BY_ORDER = frozenset({"order_id", "client_order_id", "tenant_id", "account", "symbol",
                              "mic", "side", "quantity", "timings_ns", "elapsed_ns"})


def compliance_payload(record: dict[str, Any], decision_id: str) -> dict[str, Any]:
    """The decision as order.submitted attests it: the decision row's id, then what only the
    decision says (passed, jurisdictions, plugins, denials, price judged, ISIN, the client's
    domicile, when). Everything dropped is equal to a field of the order part."""
    return {"decision_id": decision_id,
            **{k: v for k, v in record.items() if k not in _STATED_BY_ORDER}}


def _publish_alerts(bus: Bus, tenant_id: str, prepared: list[_Prepared]) -> None:
    """After commit: a compliance alert per denied order (its order update goes with the
    batch's, reports._publish)."""
    for p in prepared:
        if not p.decision.passed:
            bus.publish(alerts_topic(tenant_id), {
                "tenant_id": tenant_id, "order_id": p.order["id"], **{
                    k: v for k, v in p.decision.record().items()
                    if k in ("account", "symbol", "mic", "denials", "jurisdictions",
                             "decided_at")},
                "client_order_id": p.order["client_order_id"]})


# -- sending: the venues answer with execution reports, applied in reports.py ----------------

def _send(service: OrderService, prepared: list[_Prepared]) -> list[ExecutionReport]:
    """The orders to their connectors (under the venue lock, from _at_venue): every report
    they cause, also for resting orders they traded with."""
    connectors = _scoped_connectors(service)[0]
    reports: list[ExecutionReport] = []
    for p in prepared:
        assert p.request is not None
        try:
            reports.extend(connectors[p.connector].submit(p.request))
        except Exception:
            log.exception("exchange connector failed to take an order",
                          extra={"connector": p.connector, "order_id": p.order["id"]})
            reports.append(_local_reject(p.request, p.order["mic"]))
    return reports


def _local_reject(request: OrderRequest, mic: str) -> ExecutionReport:
    return ExecutionReport(ExecType.REJECTED, OrdStatus.REJECTED, request.client_order_id, "", ZERO,
                           ZERO, ZERO, ZERO, ZERO, ZERO, "the venue connector failed", "CONNECTOR_FAILED",
                           request.submitted_at, exec_id=new_id(), mic=mic)
