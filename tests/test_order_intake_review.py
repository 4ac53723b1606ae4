"""Review probes of the write-once order intake (issue 14): after the venue call, a write that
fails must leave the database consistent with the venue, also for the resting orders of OTHER
clients the batch traded against; the ClOrdID locks are released on every path."""

from __future__ import annotations

import threading
from decimal import Decimal as D

import pytest
from sqlalchemy import event, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session as OrmSession

from gateway.db import committed_a_write, counting_commits
from gateway.markets.service import MarketsService
from gateway.scope import tenant_scope
from gateway.trading.intake import OrderInput
from gateway.trading.models import Execution, Order
from gateway.trading.service import OrderService
from gateway.trading.venues import built_in_connectors
from tests.support import GraphQLClient, onboard, unique
from tests.test_order_intake_once import _rows, desk, venue  # noqa: F401 (fixtures)
from tests.test_orders import ACCOUNT, quote


def _venue_entry(rt, order_id: str, mic: str = "XNAS", symbol: str = "AAPL"):
    """The order's entry in the simulated venue's book (None: not resting there)."""
    for wrapped in built_in_connectors(rt.orders).values():
        inner = wrapped.inner
        if hasattr(inner, "book") and mic in inner.mics():
            return inner.book(mic, symbol).get(order_id)
    raise AssertionError("no simulated connector for the venue")


def _other_tenant(rt, live):
    other = onboard(rt)
    GraphQLClient(live.url).data(ACCOUNT, {"input": {
        "code": "ACC1", "currency": "USD", "domicile": "US", "creditLimit": "1000000000",
        "equity": "500000000"}}, key=other.key)
    return other


def _resting_bid(rt, clock, tenant_id: str, quantity: str):
    """Another client's BUY resting one tick above the best bid (the new best bid)."""
    q = quote(rt, clock)
    price = q.bid + D("0.01")
    assert price < q.ask
    with tenant_scope(tenant_id):
        [r] = rt.orders.submit_many(tenant_id, None, [OrderInput(
            unique("rest"), "ACC1", "AAPL", "BUY", quantity, "LIMIT", "DAY",
            limit_price=str(price), mic="XNAS")])
    assert r.error is None and r.order.status == "ACCEPTED", r
    return r.order, price


@pytest.mark.parametrize("where", ["write", "commit"])
def test_a_failed_write_leaves_other_clients_resting_orders_as_the_venue_has_them(
        desk, monkeypatch, where):  # noqa: F811
    _gql, tenant, clock, rt, live = desk
    # This tenant holds 10 to sell; another tenant's BUY rests as the best bid.
    with tenant_scope(tenant.id):
        [bought] = rt.orders.submit_many(tenant.id, None, [OrderInput(
            unique("own"), "ACC1", "AAPL", "BUY", "10", "MARKET", "IOC", mic="XNAS")])
    assert bought.order.status == "FILLED"
    other = _other_tenant(rt, live)
    resting, price = _resting_bid(rt, clock, other.id, "10")
    assert _venue_entry(rt, resting.id) is not None
    # This tenant's SELL crosses it, and the batch's write fails after the venue matched:
    # inside the write, or at its commit (the database going away).
    armed = [False]
    real = rt.orders._write_claims

    def write(session, tenant_id, user_id, prepared, orders):
        real(session, tenant_id, user_id, prepared, orders)
        if where == "write":
            raise RuntimeError("the disk is full")
        armed[0] = True

    def refuse(session):
        if armed[0]:
            armed[0] = False
            raise RuntimeError("the database went away at commit")

    monkeypatch.setattr(rt.orders, "_write_claims", write)
    event.listen(OrmSession, "before_commit", refuse)
    try:
        with tenant_scope(tenant.id), counting_commits(), pytest.raises(RuntimeError):
            try:
                rt.orders.submit_many(tenant.id, None, [OrderInput(
                    unique("hit"), "ACC1", "AAPL", "SELL", "10", "LIMIT", "IOC",
                    limit_price=str(price), mic="XNAS")])
            finally:
                # The batch failed: its answer must not say "committed" (the other
                # client's fills were, apart).
                assert not committed_a_write()
    finally:
        event.remove(OrmSession, "before_commit", refuse)
        monkeypatch.undo()
    # The venue filled the other client's order (it is gone from the book); the database
    # must say so too, or the order holds credit and can be cancelled "for" 10 it never has.
    entry = _venue_entry(rt, resting.id)
    at_venue = D(0) if entry is None else entry.leaves
    [stored] = _rows(rt, other.id, Order, id=resting.id)
    assert D(stored.leaves_qty) == at_venue, (stored.status, stored.leaves_qty, at_venue)
    fills = _rows(rt, other.id, Execution, order_id=resting.id)
    assert sum(D(f.last_qty) for f in fills) == D(stored.cum_qty)
    assert rt.audit.verify(other.id).ok


def test_the_clordid_locks_are_released_after_a_failed_write(desk, monkeypatch):  # noqa: F811
    _gql, tenant, clock, rt, _ = desk
    if rt.db.engine.dialect.name != "postgresql":
        pytest.skip("advisory locks are PostgreSQL's")
    real = rt.orders._write_claims

    def failing(session, tenant_id, user_id, prepared, orders):
        real(session, tenant_id, user_id, prepared, orders)
        raise RuntimeError("the disk is full")

    monkeypatch.setattr(rt.orders, "_write_claims", failing)
    limit = str((quote(rt, clock).bid * D("0.97")).quantize(D("0.01")))
    with tenant_scope(tenant.id), pytest.raises(RuntimeError):
        rt.orders.submit_many(tenant.id, None, [OrderInput(
            unique("lock"), "ACC1", "AAPL", "BUY", "5", "LIMIT", "DAY", limit_price=limit,
            mic="XNAS")])
    monkeypatch.undo()
    with rt.db.engine.connect() as conn:
        held = conn.execute(text(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND classid = :space"),
            {"space": 0x0C101D00}).scalar_one()
    assert held == 0


def test_a_written_batch_counts_as_a_committed_write(desk):  # noqa: F811
    """A batch whose rows go in by COPY (PostgreSQL) still counts as the request's write, so
    an error after it (the answer not read back) says COMMITTED_ANSWER_UNAVAILABLE."""
    _gql, tenant, clock, rt, _ = desk
    limit = str((quote(rt, clock).bid * D("0.97")).quantize(D("0.01")))
    raws = [OrderInput(unique("n"), "ACC1", "AAPL", "BUY", str(5 + k), "LIMIT", "DAY",
                       limit_price=limit, mic="XNAS") for k in range(3)]
    with tenant_scope(tenant.id), counting_commits():
        results = rt.orders.submit_many(tenant.id, None, raws)
        assert committed_a_write()
    assert [r.order.status for r in results] == ["ACCEPTED"] * 3
    for r in results:
        rt.orders.cancel(tenant.id, None, r.order.id)


def test_a_collision_whose_settling_fails_leaves_no_order_at_the_venue(desk, monkeypatch):  # noqa: F811
    """SQLite (no ClOrdID lock): a ClOrdID taken after the pre-check makes the write collide;
    writing the rest of the batch then fails too. The rest must not stay at the venue unstored
    (an order nobody can see or cancel that still trades)."""
    _gql, tenant, clock, rt, _ = desk
    if rt.db.engine.dialect.name == "postgresql":
        pytest.skip("on PostgreSQL the ClOrdID lock answers a taken ClOrdID before the venue")
    limit = str((quote(rt, clock).bid * D("0.97")).quantize(D("0.01")))
    taken = unique("taken")
    with tenant_scope(tenant.id):
        [first] = rt.orders.submit_many(tenant.id, None, [OrderInput(
            taken, "ACC1", "AAPL", "BUY", "5", "LIMIT", "DAY", limit_price=limit, mic="XNAS")])
    assert first.order.status == "ACCEPTED"
    real_existing, real_write, real_send = (rt.orders._existing, rt.orders._write_claims,
                                            rt.orders._send)
    calls = {"existing": 0, "write": 0}
    sent: list[str] = []

    def existing(session, cids):
        calls["existing"] += 1
        return {} if calls["existing"] == 1 else real_existing(session, cids)  # a stale pre-check

    def write(session, tenant_id, user_id, prepared, orders):
        calls["write"] += 1
        real_write(session, tenant_id, user_id, prepared, orders)
        if len(prepared) == 1:  # the rest of the batch, once the collision is settled
            raise RuntimeError("the disk is full")

    def send(prepared):
        sent.extend(p.order["id"] for p in prepared)
        return real_send(prepared)

    monkeypatch.setattr(rt.orders, "_existing", existing)
    monkeypatch.setattr(rt.orders, "_write_claims", write)
    monkeypatch.setattr(rt.orders, "_send", send)
    try:
        with tenant_scope(tenant.id), pytest.raises(IntegrityError):
            rt.orders.submit_many(tenant.id, None, [
                OrderInput(taken, "ACC1", "AAPL", "BUY", "7", "LIMIT", "DAY", limit_price=limit,
                           mic="XNAS"),
                OrderInput(unique("kept"), "ACC1", "AAPL", "BUY", "6", "LIMIT", "DAY",
                           limit_price=limit, mic="XNAS")])
    finally:
        monkeypatch.undo()
    assert calls["write"] >= 2 and len(sent) == 2
    for order_id in sent:
        assert _rows(rt, tenant.id, Order, id=order_id) == []
        assert _venue_entry(rt, order_id) is None, order_id
    rt.orders.cancel(tenant.id, None, first.order.id)


def test_two_processes_sending_overlapping_batches_in_opposite_orders(desk):  # noqa: F811
    """Two OrderServices (two processes) send batches naming the same ClOrdIDs in opposite
    orders at once: no deadlock (the locks are taken in key order), each ClOrdID stored once,
    and both answer the same order for it."""
    _gql, tenant, clock, rt, _ = desk
    services = [OrderService(rt.db, rt.bus, rt.markets, rt.market_data, rt.plugins, rt.audit)
                for _ in range(2)]
    for s in services:
        s.markets = MarketsService(rt.markets.directory, clock)
    limit = str((quote(rt, clock).bid * D("0.97")).quantize(D("0.01")))
    for _round in range(3):
        raws = [OrderInput(unique("x"), "ACC1", "AAPL", "BUY", str(5 + k), "LIMIT", "DAY",
                           limit_price=limit, mic="XNAS") for k in range(6)]
        barrier = threading.Barrier(2)
        answers: dict[int, list] = {}

        def send(k: int, batch: list[OrderInput], barrier: threading.Barrier,
                 answers: dict[int, list]) -> None:
            barrier.wait()
            with tenant_scope(tenant.id):
                answers[k] = services[k].submit_many(tenant.id, None, batch)

        threads = [threading.Thread(target=send, args=(0, raws, barrier, answers)),
                   threading.Thread(target=send, args=(1, raws[::-1], barrier, answers))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        assert not any(t.is_alive() for t in threads), "the two batches deadlocked"
        first = {r.client_order_id: r for r in answers[0]}
        for r in answers[1]:
            mine = first[r.client_order_id]
            assert r.error is None and mine.error is None, (r.error, mine.error)
            assert r.order.id == mine.order.id and r.replayed != mine.replayed
        for raw in raws:
            assert len(_rows(rt, tenant.id, Order, client_order_id=raw.client_order_id)) == 1
        for k in (0, 1):  # each order rests at the venue of the process that sent it
            for r in answers[k]:
                if not r.replayed:
                    services[k].cancel(tenant.id, None, r.order.id)
    assert rt.audit.verify(tenant.id).ok


def test_a_committed_batch_is_answered_when_releasing_its_locks_fails(desk):  # noqa: F811
    """PostgreSQL: the ClOrdID locks' connection fails to end its transaction after the batch
    committed. The batch is stored and answered (not an error), and no lock stays held."""
    _gql, tenant, clock, rt, _ = desk
    if rt.db.engine.dialect.name != "postgresql":
        pytest.skip("advisory locks are PostgreSQL's")
    limit = str((quote(rt, clock).bid * D("0.97")).quantize(D("0.01")))
    raw = OrderInput(unique("rel"), "ACC1", "AAPL", "BUY", "5", "LIMIT", "DAY", limit_price=limit,
                     mic="XNAS")
    ends: list[str] = []

    def end(conn, *args):
        ends.append("end")
        if len(ends) == 2:  # the batch's commit first, then the lock connection's end
            raise RuntimeError("the connection dropped")

    real = rt.orders._write_claims

    def arm(session, tenant_id, user_id, prepared, orders):
        real(session, tenant_id, user_id, prepared, orders)
        event.listen(rt.db.engine, "commit", end)
        event.listen(rt.db.engine, "rollback", end)

    rt.orders._write_claims = arm
    try:
        with tenant_scope(tenant.id):
            [result] = rt.orders.submit_many(tenant.id, None, [raw])
    finally:
        del rt.orders._write_claims
        for name in ("commit", "rollback"):
            if event.contains(rt.db.engine, name, end):
                event.remove(rt.db.engine, name, end)
    assert len(ends) >= 2
    assert result.error is None and result.order.status == "ACCEPTED"
    assert [o.id for o in _rows(rt, tenant.id, Order, client_order_id=raw.client_order_id)] \
        == [result.order.id]
    with rt.db.engine.connect() as conn:
        held = conn.execute(text(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND classid = :space"),
            {"space": 0x0C101D00}).scalar_one()
    assert held == 0
    rt.orders.cancel(tenant.id, None, result.order.id)
