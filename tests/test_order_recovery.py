"""Orders survive a gateway restart (issue 17): the simulated venues keep their books in memory,
so a second OrderService on the same database (a restarted gateway) must take the open orders
back: cancel and amend work through GraphQL, credit is released, queued orders still reach the
open, an order the venue cannot take back is cancelled (VENUE_RESTARTED) with its audit record,
and orders at an installed connector are left alone. The simulated exchange's `restore` is also
tested on its own (remaining quantity, fills so far, time priority, expiries, fresh ids)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal as D
from types import SimpleNamespace
from typing import Any

from sqlalchemy import update
from sqlmodel import select

from gateway.app import create_app
from gateway.audit.models import AuditRecord
from gateway.markets.clock import ManualClock
from gateway.runtime import Runtime
from gateway.trading.intake import OrderInput
from gateway.trading.models import Execution, Order
from gateway.trading.recovery import RestoredOrder, restore_builtins
from plugins.builtin.sim_exchange.connector import SimulatedExchange
from plugins.sdk import ExecType, OrderRequest, OrdStatus, OrdType, Side, TimeInForce
from tests.support import GraphQLClient, LiveServer, onboard, unique, with_clock

DAY = datetime(2025, 3, 19, tzinfo=UTC)  # a Wednesday; New York trades 13:30-20:00 UTC
OPEN = DAY + timedelta(hours=14, minutes=30)
AFTER_CLOSE = DAY + timedelta(hours=21)
T = datetime(2025, 3, 19, 15, 0, tzinfo=UTC)  # the simulated exchange's own tests
FIELDS = "id clientOrderId status quantity cumQty leavesQty limitPrice rejectCode rejectText"
SUBMIT = f"mutation($input: SubmitOrderInput!) {{ submitOrder(input: $input) {{ {FIELDS} }} }}"
CANCEL = f"mutation($id: ID!) {{ cancelOrder(id: $id) {{ {FIELDS} }} }}"
AMEND = f"mutation($id: ID!, $q: String) {{ amendOrder(id: $id, quantity: $q) {{ {FIELDS} }} }}"
ORDER = f"query($id: ID!) {{ order(id: $id) {{ {FIELDS} events {{ event code }} }} }}"
ACCOUNT = """mutation($input: TradingAccountInput!) { upsertTradingAccount(input: $input) { code } }"""


def restarted(runtime: Runtime, clock: ManualClock) -> Runtime:
    """A runtime with an order service of its own on the shared database: what a gateway
    process that starts afresh has (empty simulated venues)."""
    return with_clock(runtime, clock)


@contextlib.contextmanager
def gateway(runtime: Runtime, clock: ManualClock) -> Iterator[tuple[GraphQLClient, Runtime]]:
    rt = restarted(runtime, clock)
    with LiveServer(create_app(runtime=rt)) as live:
        yield GraphQLClient(live.url), rt


def limit(cid: str, account: str, quantity: Any, price: D, tif: str = "GTC") -> dict[str, Any]:
    return {"clientOrderId": cid, "account": account, "symbol": "MSFT", "mic": "XNAS", "side": "BUY",
            "quantity": str(quantity), "ordType": "LIMIT", "timeInForce": tif, "limitPrice": str(price)}


def submit(gql: GraphQLClient, key: str, order: dict[str, Any]) -> dict[str, Any]:
    return gql.data(SUBMIT, {"input": order}, key=key)["submitOrder"]


def test_open_orders_survive_a_restart(runtime: Runtime) -> None:
    tenant = onboard(runtime)
    clock = ManualClock(OPEN)
    quote = runtime.market_data.quote("MSFT.XNAS", OPEN)
    assert quote is not None and quote.bid > 0
    price = (quote.bid * D("0.97")).quantize(D("0.01"))  # rests: below the market
    ids: dict[str, str] = {}
    with gateway(runtime, clock) as (gql, _rt):
        # Credit for 55 of these shares: the desk's "20,000 limit".
        gql.data(ACCOUNT, {"input": {"code": "DESK", "currency": "USD", "domicile": "US",
                                     "creditLimit": str(price * 55), "equity": "100000000"}},
                 key=tenant.key)
        gql.data(ACCOUNT, {"input": {"code": "BIG", "currency": "USD", "domicile": "US",
                                     "creditLimit": "1000000000", "equity": "1000000000"}},
                 key=tenant.key)
        for name, qty in (("A", 25), ("B", 10), ("X", 5), ("Y", 1)):
            o = submit(gql, tenant.key, limit(unique(name), "DESK", qty, price))
            assert o["status"] == "ACCEPTED", o
            ids[name] = o["id"]
        q = runtime.market_data.quote("MSFT.XNAS", clock.now())
        c = gql.data(SUBMIT, {"input": limit(unique("C"), "BIG", q.ask_size + 7, q.ask)},
                     key=tenant.key)["submitOrder"]
        assert c["status"] == "PARTIALLY_FILLED" and D(c["leavesQty"]) == 7, c
        ids["C"] = c["id"]
        clock.set(AFTER_CLOSE)  # New York closed: DAY orders queue for tomorrow's open
        for name, qty in (("Q1", 5), ("Q2", 4)):
            o = gql.data(SUBMIT, {"input": limit(unique(name), "DESK", qty, price, "DAY")},
                         key=tenant.key)["submitOrder"]
            assert o["status"] == "PENDING", o
            ids[name] = o["id"]
    with runtime.db.tenant_transaction(tenant.id) as session:
        # X: an IOC the gateway died on (it can never rest, so the venue cannot take it back);
        # Y: an order at an installed connector (the gateway leaves those to it).
        session.execute(update(Order).where(Order.id == ids["X"]).values(time_in_force="IOC"))
        session.execute(update(Order).where(Order.id == ids["Y"]).values(connector="tenant-connector"))
        fills_before = {e.exec_id for e in session.exec(select(Execution)
                                                        .where(Execution.order_id == ids["C"]))}

    clock = ManualClock(AFTER_CLOSE + timedelta(minutes=5))
    with gateway(runtime, clock) as (gql, rt):
        def read(name: str) -> dict[str, Any]:
            return gql.data(ORDER, {"id": ids[name]}, key=tenant.key)["order"]

        # Held: A, B, Q1, Q2, Y = 45 of 55 shares' credit; 21 more is over the limit.
        denied = submit(gql, tenant.key, limit(unique("N"), "DESK", 21, price))
        assert denied["status"] == "DENIED" and denied["rejectCode"] == "COMPLIANCE_CREDIT_LIMIT", denied
        # Cancel and amend reach the restored venue (they were ORDER_VENUE_REFUSED UNKNOWN_ORDER).
        body = gql(CANCEL, {"id": ids["A"]}, key=tenant.key)
        assert "errors" not in body, body["errors"]
        assert body["data"]["cancelOrder"]["status"] == "CANCELED"
        amended = gql.data(AMEND, {"id": ids["B"], "q": "8"}, key=tenant.key)["amendOrder"]
        assert amended["status"] == "ACCEPTED" and D(amended["quantity"]) == 8
        assert D(amended["leavesQty"]) == 8
        # What the venue could not take back is cancelled, saying why.
        x = read("X")
        assert x["status"] == "CANCELED" and x["rejectCode"] == "VENUE_RESTARTED", x
        assert "restarted" in x["rejectText"]
        assert read("Y")["status"] == "ACCEPTED"  # an installed connector's: left to it
        queued = gql.data(CANCEL, {"id": ids["Q1"]}, key=tenant.key)["cancelOrder"]
        assert queued["status"] == "CANCELED"
        partial = gql.data(CANCEL, {"id": ids["C"]}, key=tenant.key)["cancelOrder"]
        assert partial["status"] == "CANCELED" and D(partial["cumQty"]) >= D(c["cumQty"])
        # The credit A held is released: the same 21 shares pass now.
        passed = submit(gql, tenant.key, limit(unique("N"), "DESK", 21, price))
        assert passed["status"] == "PENDING", passed  # queued: New York is closed
        # The queued Q2 still reaches tomorrow's open.
        clock.set(DAY + timedelta(days=1, hours=13, minutes=31))
        rt.orders.advance()
        q2 = read("Q2")
        assert q2["status"] in ("ACCEPTED", "PARTIALLY_FILLED", "FILLED"), q2
        assert [e["event"] for e in q2["events"]][:3] == ["COMPLIANCE_PASS", "VENUE_PENDING", "VENUE_NEW"]
        # One audit record says what was restored and what was cancelled; X's cancel has its own.
        with runtime.db.tenant_session(tenant.id) as session:
            records = session.exec(select(AuditRecord).where(
                AuditRecord.tenant_id == tenant.id, AuditRecord.kind == "order.venue_restored")).all()
            assert len(records) == 1
            payload = records[0].payload
            assert set(payload["restored"]) == {ids[k] for k in ("A", "B", "C", "Q1", "Q2")}
            assert payload["canceled"] == [ids["X"]]
            cancel_x = session.exec(select(AuditRecord).where(AuditRecord.tenant_id == tenant.id,
                                                              AuditRecord.kind == "order.canceled",
                                                              AuditRecord.subject == ids["X"])).one()
            assert cancel_x.payload["code"] == "VENUE_RESTARTED"
            fills_after = {e.exec_id for e in session.exec(select(Execution)
                                                           .where(Execution.order_id == ids["C"]))}
        assert fills_before <= fills_after


def test_an_order_the_venue_knows_is_not_restored_twice() -> None:
    venue = _venue()
    item = _restored("o-1", Side.BUY, D("10"), D("100"))
    assert venue.restore([item], T) == []
    assert venue.restore([item], T) == []
    assert venue.book("XNAS", "SIM").get("o-1") is not None
    assert len(venue.book("XNAS", "SIM")) == 1


# -- the simulated exchange's restore on its own (no market twin: books of client orders) ----


class _Venues:
    """Always open, cent ticks, lots of one."""

    def venues(self) -> list[Any]:
        return [type("V", (), {"mic": "XNAS"})()]

    def is_open(self, mic: str, at: datetime) -> bool:
        return True

    def sessions(self, mic: str, start: datetime, end: datetime) -> list[Any]:
        return []

    def venue(self, mic: str) -> Any:
        return type("I", (), {"timezone": "UTC", "always_open": True})()

    def tick_size(self, mic: str, price: D) -> D:
        return D("0.01")

    def lot_size(self, mic: str, price: D) -> D:
        return D(1)


def _venue() -> SimulatedExchange:
    return SimulatedExchange(_Venues())  # type: ignore[arg-type]


def _request(cid: str, side: Side, qty: D, price: D | None, *, account: str = "A",
             ord_type: OrdType = OrdType.LIMIT, tif: TimeInForce = TimeInForce.GTC,
             at: datetime = T - timedelta(hours=1), expire_at: datetime | None = None) -> OrderRequest:
    return OrderRequest(cid, account, "SIM", "XNAS", side, ord_type, tif, qty, price, None, "USD",
                        expire_at, at)


def _restored(cid: str, side: Side, qty: D, price: D, *, cum: D = D(0), **kw: Any) -> RestoredOrder:
    return RestoredOrder(_request(cid, side, qty, price, **kw), f"OLD-{cid}", cum, cum * price, D(0),
                         False, "tenant")


def test_restore_puts_what_is_left_back_in_time_priority() -> None:
    venue = _venue()
    first = _restored("first", Side.BUY, D(10), D(100), cum=D(4), at=T - timedelta(hours=2))
    second = _restored("second", Side.BUY, D(5), D(100), at=T - timedelta(hours=1))
    # Handed over out of order: time priority comes from submission.
    assert venue.restore([second, first], T) == []
    book = venue.book("XNAS", "SIM")
    level = book.bids.best()
    assert level is not None and [o.order_id for o in level] == ["first", "second"]
    assert level.total == D(6) + D(5)
    # An incoming sell trades the oldest first, at its price, with its fills so far counted.
    reports = venue.submit(_request("sell", Side.SELL, D(8), D(100), account="B", at=T))
    trade = next(r for r in reports if r.client_order_id == "first" and r.exec_type is ExecType.TRADE)
    assert trade.last_qty == 6 and trade.cum_qty == 10 and trade.leaves_qty == 0
    assert trade.ord_status is OrdStatus.FILLED and trade.venue_order_id == "OLD-first"
    assert trade.exec_id.startswith("XNAS-SIM-R")  # fresh ids: never one it had before
    assert any(r.client_order_id == "second" and r.last_qty == 2 for r in reports)
    # Cancel and replace know the restored order.
    replaced = venue.replace("second", "XNAS", D(4), None)
    assert replaced[0].exec_type is ExecType.REPLACED and replaced[0].leaves_qty == 2
    cancelled = venue.cancel("second", "XNAS")
    assert cancelled.exec_type is ExecType.CANCELED and cancelled.cum_qty == 2


def test_restore_cancels_what_cannot_rest_and_plays_due_expiries() -> None:
    venue = _venue()
    ioc = _restored("ioc", Side.BUY, D(5), D(100), tif=TimeInForce.IOC)
    off_tick = _restored("tick", Side.BUY, D(5), D("100.001"))
    gtd = _restored("gtd", Side.SELL, D(5), D(120), tif=TimeInForce.GTD,
                    expire_at=T - timedelta(minutes=10))
    reports = venue.restore([ioc, off_tick, gtd], T)
    assert {r.client_order_id: (r.exec_type, r.reject_code) for r in reports} == {
        "ioc": (ExecType.CANCELED, "VENUE_RESTARTED"), "tick": (ExecType.CANCELED, "VENUE_RESTARTED")}
    assert all("restarted" in r.text for r in reports)
    # The GTD's time passed while the gateway was down: it expires at the next clock call.
    expired = venue.on_clock(T)
    assert [(r.client_order_id, r.exec_type) for r in expired] == [("gtd", ExecType.EXPIRED)]
    # A restored book that crosses itself trades (the data was not a consistent venue).
    venue2 = _venue()
    crossed = venue2.restore([_restored("bid", Side.BUY, D(5), D(101), at=T - timedelta(hours=2)),
                              _restored("ask", Side.SELL, D(3), D(100), account="B")], T)
    assert {(r.client_order_id, r.last_qty, r.last_px) for r in crossed if r.exec_type is ExecType.TRADE} == {
        ("bid", D(3), D(101)), ("ask", D(3), D(101))}


def test_a_connector_that_fails_to_restore_has_its_orders_cancelled(runtime: Runtime) -> None:
    """A built-in connector whose restore raises gets every order of its cancelled
    (VENUE_RESTARTED), so none stays open at a venue that does not know it; one without
    `restore` (a real venue's connector, keeping its own state) is left alone."""
    tenant = onboard(runtime)
    clock = ManualClock(OPEN + timedelta(minutes=20))
    quote = runtime.market_data.quote("MSFT.XNAS", clock.now())
    price = (quote.bid * D("0.95")).quantize(D("0.01"))
    rt = restarted(runtime, clock)
    rt.orders.upsert_account(tenant.id, tenant.admin_id, code="F", currency="USD", domicile="US",
                             credit_limit="100000000", equity="100000000")
    placed = []
    for qty in ("3", "4"):
        placed.append(rt.orders.submit(tenant.id, tenant.admin_id, OrderInput(
            unique("f"), "F", "MSFT", "BUY", qty, ord_type="LIMIT", time_in_force="GTC",
            limit_price=str(price), mic="XNAS")).order)
    assert [o.status for o in placed] == ["ACCEPTED", "ACCEPTED"]
    # Only these two orders are at the test's venues (the database is shared with other tests).
    with runtime.db.tenant_transaction(tenant.id) as session:
        session.execute(update(Order).where(Order.id == placed[0].id).values(connector="broken-venue"))
        session.execute(update(Order).where(Order.id == placed[1].id).values(connector="stateful-venue"))

    class Broken:
        def restore(self, orders: Any, at: datetime) -> Any:
            raise RuntimeError("lost its memory")

    again = restarted(runtime, clock).orders
    handed = restore_builtins(again, {"broken-venue": SimpleNamespace(inner=Broken()),
                                      "stateful-venue": SimpleNamespace(inner=object())}, clock.now())
    assert handed == 1
    broken = again.get(tenant.id, placed[0].id)
    assert broken.status == "CANCELED" and broken.reject_code == "VENUE_RESTARTED"
    assert "the connector failed" in (broken.reject_text or "")
    assert again.get(tenant.id, placed[1].id).status == "ACCEPTED"
    with runtime.db.tenant_session(tenant.id) as session:
        record = session.exec(select(AuditRecord).where(AuditRecord.tenant_id == tenant.id,
                                                        AuditRecord.kind == "order.venue_restored")).one()
    assert record.payload["canceled"] == [placed[0].id] and record.payload["restored"] == []
