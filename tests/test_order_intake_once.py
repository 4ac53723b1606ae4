"""Order intake writing each order once (issue 14): a batch's order rows are inserted in their
state after the venue's reports (never inserted and then updated), in one transaction that a
failure leaves empty; ClOrdIDs stay unique inside a COPY batch, across batches, across tenants
and across two services racing; the order.submitted audit record carries the decision without
repeating the order. Runs on SQLite and on PostgreSQL (COPY, the ClOrdID lock)."""

from __future__ import annotations

import threading
from decimal import Decimal as D

import pytest
from sqlalchemy import event
from sqlmodel import func, select

from gateway.app import create_app
from gateway.audit.models import AuditRecord
from gateway.markets.clock import ManualClock
from gateway.markets.service import MarketsService
from gateway.trading.claims import _STATED_BY_ORDER, _taken
from gateway.trading.intake import OrderInput
from gateway.trading.models import ComplianceDecisionRow, Order, OrderEvent
from gateway.trading.service import OrderService
from tests.support import GraphQLClient, LiveServer, onboard, unique, with_clock
from tests.test_orders import ACCOUNT, OPEN_NY, SUBMIT_MANY, next_open_minute, order, quote


@pytest.fixture(scope="module")
def venue(runtime):
    """A gateway whose markets and order service run on a ManualClock (as tests/test_orders.py)."""
    clock = ManualClock(OPEN_NY)
    rt = with_clock(runtime, clock)
    with LiveServer(create_app(runtime=rt)) as live:
        yield live, clock, rt


@pytest.fixture
def desk(venue):
    """A fresh tenant with account ACC1 (USD, ample credit), a minute on in a New York session."""
    live, clock, rt = venue
    clock.set(next_open_minute(rt, clock))
    tenant = onboard(rt)
    gql = GraphQLClient(live.url)
    gql.data(ACCOUNT, {"input": {"code": "ACC1", "currency": "USD", "domicile": "US",
                                 "creditLimit": "1000000000", "equity": "500000000"}}, key=tenant.key)
    return gql, tenant, clock, rt, live


def _statements(rt):
    """Every statement the engine runs while the block runs: (text, parameters)."""
    seen: list[tuple[str, object]] = []

    def listener(conn, cursor, statement, parameters, context, executemany):
        seen.append((statement, parameters))

    return seen, listener


def _rows(rt, tenant_id, model, **where):
    with rt.db.tenant_session(tenant_id) as session:
        query = select(model)
        for name, value in where.items():
            query = query.where(getattr(model, name) == value)
        return list(session.exec(query).all())


def test_a_batch_inserts_each_order_once_in_its_final_state(desk):
    gql, tenant, clock, rt, _ = desk
    q = quote(rt, clock)
    below = str((q.bid * D("0.97")).quantize(D("0.01")))
    inputs = [order(unique("fill")), order(unique("fill"), quantity="3"),
              order(unique("rest"), ordType="LIMIT", timeInForce="DAY", limitPrice=below),
              order(unique("deny"), ordType="LIMIT", timeInForce="DAY",
                    limitPrice=str((q.ask * D("1.5")).quantize(D("0.01"))))]
    seen, listener = _statements(rt)
    event.listen(rt.db.engine, "before_cursor_execute", listener)
    try:
        results = gql.data(SUBMIT_MANY, {"inputs": inputs}, key=tenant.key)["submitOrders"]
    finally:
        event.remove(rt.db.engine, "before_cursor_execute", listener)
    statuses = [r["order"]["status"] for r in results]
    assert statuses == ["FILLED", "FILLED", "ACCEPTED", "DENIED"], results
    ids = {r["order"]["id"] for r in results}
    # Orders this batch made are never updated (a resting order of another test it traded
    # with may be); on SQLite the rows go in by INSERT, on PostgreSQL by COPY.
    updated = set()
    for statement, parameters in seen:
        if statement.lstrip().upper().startswith("UPDATE TRADE_ORDER"):
            batch = parameters if isinstance(parameters, list) else [parameters]
            updated |= {p.get("b_id") for p in batch if isinstance(p, dict)}
    assert not updated & ids, updated & ids
    inserts = [s for s, _ in seen if s.lstrip().upper().startswith("INSERT INTO TRADE_ORDER")]
    assert len(inserts) <= 1
    # The stored rows are the answered ones, each with its whole history of events.
    for r in results:
        stored = _rows(rt, tenant.id, Order, id=r["order"]["id"])[0]
        assert (stored.status, stored.version) == (r["order"]["status"], r["order"]["version"])
        assert D(stored.cum_qty) == D(r["order"]["cumQty"])
        events = sorted(_rows(rt, tenant.id, OrderEvent, order_id=stored.id), key=lambda e: e.seq)
        assert [e.seq for e in events] == list(range(1, stored.version + 1))
        assert events[-1].status_to == stored.status
        assert events[0].event in ("COMPLIANCE_PASS", "COMPLIANCE_DENY")
    assert rt.audit.verify(tenant.id).ok


def test_the_submitted_record_carries_the_decision_without_repeating_the_order(desk):
    gql, tenant, clock, rt, _ = desk
    q = quote(rt, clock)
    far = str((q.ask * D("1.5")).quantize(D("0.01")))
    results = gql.data(SUBMIT_MANY, {"inputs": [order(unique("ok")), order(
        unique("collar"), ordType="LIMIT", timeInForce="DAY", limitPrice=far)]},
        key=tenant.key)["submitOrders"]
    for r in results:
        record = rt.audit.records(tenant.id, kind="order.submitted", subject=r["order"]["id"],
                                  first=5).items[0]
        decision = _rows(rt, tenant.id, ComplianceDecisionRow, order_id=r["order"]["id"])[0]
        compliance = record.payload["compliance"]
        assert compliance["decision_id"] == decision.id
        assert not set(compliance) & _STATED_BY_ORDER, set(compliance) & _STATED_BY_ORDER
        # Everything dropped is stated by the order part, equal to the decision's record.
        for name in ("client_order_id", "account", "symbol", "mic", "side", "quantity"):
            assert record.payload[name] == decision.record[name], name
        for name in ("passed", "jurisdictions", "plugins", "denials", "isin", "price",
                     "client_domicile", "decided_at"):
            assert compliance[name] == decision.record[name], name
    assert results[1]["order"]["status"] == "DENIED"
    denied = rt.audit.records(tenant.id, kind="order.submitted",
                              subject=results[1]["order"]["id"], first=5).items[0]
    assert denied.payload["compliance"]["denials"][0]["code"] == "COMPLIANCE_PRICE_COLLAR"
    assert rt.audit.verify(tenant.id).ok


def test_duplicate_client_order_ids_in_one_batch_and_across_batches(desk):
    gql, tenant, _clock, rt, _ = desk
    cid = unique("dup")
    first = gql.data(SUBMIT_MANY, {"inputs": [order(cid), order(unique("x"), quantity="7"),
                                              order(cid)]},
                     key=tenant.key)["submitOrders"]
    assert first[0]["order"]["status"] == "FILLED" and first[1]["order"]["status"] == "FILLED"
    assert first[2]["order"] is None and first[2]["error"]["code"] == "CLORDID_DUPLICATE_IN_BATCH"
    # The next batch: a replay answers the first order; other terms are a conflict.
    again = gql.data(SUBMIT_MANY, {"inputs": [order(cid), order(unique("y"), quantity="9")]},
                     key=tenant.key)["submitOrders"]
    assert again[0]["replayed"] is True and again[0]["order"]["id"] == first[0]["order"]["id"]
    assert again[1]["replayed"] is False and again[1]["order"]["status"] == "FILLED"
    other = gql.data(SUBMIT_MANY, {"inputs": [order(cid, quantity="11")]},
                     key=tenant.key)["submitOrders"]
    assert other[0]["error"]["code"] == "CLORDID_CONFLICT"
    assert len(_rows(rt, tenant.id, Order, client_order_id=cid)) == 1
    assert len(_rows(rt, tenant.id, ComplianceDecisionRow, client_order_id=cid)) == 1


def test_another_tenants_client_order_id_is_not_taken(desk):
    gql, tenant, _clock, rt, _ = desk
    cid = unique("shared")
    mine = gql.data(SUBMIT_MANY, {"inputs": [order(cid)]}, key=tenant.key)["submitOrders"][0]
    other = onboard(rt)
    gql.data(ACCOUNT, {"input": {"code": "ACC1", "currency": "USD", "domicile": "US",
                                 "creditLimit": "1000000000", "equity": "500000000"}}, key=other.key)
    theirs = gql.data(SUBMIT_MANY, {"inputs": [order(cid)]}, key=other.key)["submitOrders"][0]
    assert theirs["replayed"] is False and theirs["order"]["id"] != mine["order"]["id"]
    with rt.db.tenant_session(other.id) as session:
        assert _taken(session.connection(), other.id, [cid]) == [cid]
        assert _taken(session.connection(), other.id, [unique("nobody")]) == []
    with rt.db.tenant_session(tenant.id) as session:
        assert [r.id for r in session.exec(select(Order).where(Order.client_order_id == cid))] \
            == [mine["order"]["id"]]


def test_a_failed_write_leaves_nothing_of_the_batch(desk, monkeypatch):
    _gql, tenant, clock, rt, _ = desk
    limit = str((quote(rt, clock).bid * D("0.97")).quantize(D("0.01")))
    cids = [unique("gone") for _ in range(3)]
    raws = [OrderInput(c, "ACC1", "AAPL", "BUY", str(5 + k), "LIMIT", "DAY", limit_price=limit,
                       mic="XNAS") for k, c in enumerate(cids)]
    head = [r.seq for r in rt.audit.records(tenant.id, first=1).items]
    real = rt.orders._write_claims

    def failing(session, tenant_id, user_id, prepared, orders):
        real(session, tenant_id, user_id, prepared, orders)  # the rows went in, then it fails
        raise RuntimeError("the disk is full")

    monkeypatch.setattr(rt.orders, "_write_claims", failing)
    with pytest.raises(RuntimeError):
        rt.orders.submit_many(tenant.id, None, raws)
    monkeypatch.undo()
    for c in cids:
        assert _rows(rt, tenant.id, Order, client_order_id=c) == []
        assert _rows(rt, tenant.id, ComplianceDecisionRow, client_order_id=c) == []
    assert [r.seq for r in rt.audit.records(tenant.id, first=1).items] == head
    with rt.db.tenant_session(tenant.id) as session:
        assert session.exec(select(func.count()).select_from(AuditRecord).where(
            AuditRecord.kind == "order.submitted")).one() == 0
    # The venue was told to drop what it took; the same ClOrdIDs go in afresh (nothing of
    # the failed batch holds them) and rest again.
    for r in rt.orders.submit_many(tenant.id, None, raws):
        assert r.error is None and not r.replayed and r.order.status == "ACCEPTED"
        rt.orders.cancel(tenant.id, None, r.order.id)
    assert rt.audit.verify(tenant.id).ok


def test_two_services_racing_one_client_order_id_store_one_order(desk):
    """Two OrderServices (two processes' intake locks and venues) on one database, eight
    threads sending one ClOrdID: one order is stored, with one decision, and every answer is
    that order. On PostgreSQL the ClOrdID lock makes the losers wait and answer it before
    their venue sees anything; on SQLite the unique constraint settles it."""
    _gql, tenant, clock, rt, _ = desk
    services = [OrderService(rt.db, rt.bus, rt.markets, rt.market_data, rt.plugins, rt.audit)
                for _ in range(2)]
    for s in services:
        s.markets = MarketsService(rt.markets.directory, clock)
    limit = str((quote(rt, clock).bid * D("0.97")).quantize(D("0.01")))
    raw = OrderInput(unique("race"), "ACC1", "AAPL", "BUY", "5", "LIMIT", "DAY", limit_price=limit,
                     mic="XNAS")
    barrier = threading.Barrier(8)
    answers: list[tuple[str, bool]] = []

    def send(service: OrderService) -> None:
        barrier.wait()
        result = service.submit(tenant.id, None, raw)
        assert result.error is None, result.error
        answers.append((result.order.id, result.replayed))

    threads = [threading.Thread(target=send, args=(services[k % 2],)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(answers) == 8
    assert len({a for a, _ in answers}) == 1 and sum(not r for _, r in answers) == 1
    stored = _rows(rt, tenant.id, Order, client_order_id=raw.client_order_id)
    assert len(stored) == 1 and stored[0].status == "ACCEPTED"
    assert len(_rows(rt, tenant.id, ComplianceDecisionRow, client_order_id=raw.client_order_id)) == 1
    assert rt.audit.verify(tenant.id).ok
