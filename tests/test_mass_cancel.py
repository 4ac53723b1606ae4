"""Mass cancel and kill switches through GraphQL (issue 17): `cancelOrders(filter)` cancels the
open orders matching account, symbol, venue and side (or all) in one venue round and one
application of the reports, with an outcome per order and one audit record for the request;
switching a kill switch on (the tenant's through setComplianceControls or setKillSwitch, an
account's through setKillSwitch) cancels every open order in its scope and blocks new ones.
A tenant's mass cancel and kill switch never touch another tenant's orders."""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal as D
from typing import Any

import pytest
from sqlmodel import select

from gateway.app import create_app
from gateway.audit.models import AuditRecord
from gateway.markets.clock import ManualClock
from gateway.runtime import Runtime
from tests.support import GraphQLClient, LiveServer, TenantHandle, error_codes, onboard, unique, with_clock

START = datetime(2025, 3, 26, 14, 0, tzinfo=UTC)  # a Wednesday, New York open
SUBMIT_MANY = """mutation($inputs: [SubmitOrderInput!]!) { submitOrders(inputs: $inputs) {
  error { code } order { id status account symbol side rejectCode } } }"""
CANCEL_ORDERS = """mutation($f: CancelOrdersFilter!) { cancelOrders(filter: $f) {
  reason matched canceled refused notSent failed
  results { orderId clientOrderId account symbol mic side outcome status code } } }"""
KILL = """mutation($on: Boolean!, $account: String) { setKillSwitch(on: $on, account: $account) {
  on account cancel { reason matched canceled results { orderId outcome status code } } } }"""
CONTROLS = """mutation($input: ComplianceControlsInput!) { setComplianceControls(input: $input) {
  killSwitch killSwitchAccounts restricted } }"""
ORDERS = """query($status: OrderStatus) { orders(filter: {status: $status}, first: 100) {
  edges { node { id status account symbol side rejectCode } } } }"""
ACCOUNT = """mutation($input: TradingAccountInput!) { upsertTradingAccount(input: $input) { code } }"""
SIZES = itertools.count(1)


@pytest.fixture(scope="module")
def venue(runtime: Runtime) -> Iterator[tuple[GraphQLClient, ManualClock, Runtime]]:
    clock = ManualClock(START)
    rt = with_clock(runtime, clock)
    with LiveServer(create_app(runtime=rt)) as live:
        yield GraphQLClient(live.url), clock, rt


@pytest.fixture
def desk(venue: Any) -> tuple[GraphQLClient, ManualClock, Runtime, TenantHandle]:
    gql, clock, rt = venue
    clock.set(clock.now() + timedelta(minutes=1))
    tenant = onboard(rt)
    for code in ("ACC1", "ACC2"):
        gql.data(ACCOUNT, {"input": {"code": code, "currency": "USD", "domicile": "US",
                                     "creditLimit": "1000000000", "equity": "1000000000"}}, key=tenant.key)
    return gql, clock, rt, tenant


def resting(rt: Runtime, clock: ManualClock, account: str, symbol: str, side: str, n: int
            ) -> list[dict[str, Any]]:
    """`n` orders that rest away from the market (buys below it, sells above)."""
    q = rt.market_data.quote(f"{symbol}.XNAS", clock.now())
    price = (q.bid * D("0.96") if side == "BUY" else q.ask * D("1.04")).quantize(D("0.01"))
    # Each its own size (the clock stands still: the duplicate guard would deny a repeat).
    return [{"clientOrderId": unique("m"), "account": account, "symbol": symbol, "mic": "XNAS",
             "side": side, "quantity": str(next(SIZES)), "ordType": "LIMIT", "timeInForce": "GTC",
             "limitPrice": str(price)} for _ in range(n)]


def place(gql: GraphQLClient, key: str, orders: list[dict[str, Any]]) -> list[dict[str, Any]]:
    placed = [r["order"] for r in gql.data(SUBMIT_MANY, {"inputs": orders}, key=key)["submitOrders"]]
    assert all(o["status"] == "ACCEPTED" for o in placed), placed[:3]
    return placed


def statuses(gql: GraphQLClient, key: str) -> dict[str, str]:
    edges = gql.data(ORDERS, {}, key=key)["orders"]["edges"]
    return {e["node"]["id"]: e["node"]["status"] for e in edges}


def test_cancel_orders_by_filter_answers_each_order_and_audits_once(desk: Any) -> None:
    gql, clock, rt, tenant = desk
    # SELL orders need something to sell: buy a little of each first.
    for symbol in ("AAPL", "MSFT"):
        gql.data(SUBMIT_MANY, {"inputs": [{"clientOrderId": unique("p"), "account": "ACC1",
                                           "symbol": symbol, "mic": "XNAS", "side": "BUY",
                                           "quantity": "50", "ordType": "MARKET",
                                           "timeInForce": "IOC"}]}, key=tenant.key)
    aapl_buys = place(gql, tenant.key, resting(rt, clock, "ACC1", "AAPL", "BUY", 3))
    aapl_sells = place(gql, tenant.key, resting(rt, clock, "ACC1", "AAPL", "SELL", 2))
    msft_buys = place(gql, tenant.key, resting(rt, clock, "ACC1", "MSFT", "BUY", 2))
    other_account = place(gql, tenant.key, resting(rt, clock, "ACC2", "AAPL", "BUY", 2))

    body = gql(CANCEL_ORDERS, {"f": {}}, key=tenant.key)
    assert error_codes(body) == ["CANCEL_FILTER_EMPTY"]  # no accidental cancel-all
    result = gql.data(CANCEL_ORDERS, {"f": {"account": "ACC1", "symbol": "AAPL", "side": "BUY",
                                            "mic": "XNAS"}}, key=tenant.key)["cancelOrders"]
    assert (result["reason"], result["matched"], result["canceled"], result["refused"]) == (
        "MASS_CANCEL", 3, 3, 0)
    assert {r["orderId"] for r in result["results"]} == {o["id"] for o in aapl_buys}
    assert all(r["outcome"] == "CANCELED" and r["status"] == "CANCELED" and r["code"] == "MASS_CANCEL"
               for r in result["results"])
    now = statuses(gql, tenant.key)
    assert all(now[o["id"]] == "ACCEPTED" for o in aapl_sells + msft_buys + other_account)
    # All: everything still open, in one request.
    result = gql.data(CANCEL_ORDERS, {"f": {"all": True}}, key=tenant.key)["cancelOrders"]
    assert result["matched"] == result["canceled"] == 6
    now = statuses(gql, tenant.key)
    assert all(now[o["id"]] == "CANCELED" for o in aapl_buys + aapl_sells + msft_buys + other_account)
    again = gql.data(CANCEL_ORDERS, {"f": {"all": True}}, key=tenant.key)["cancelOrders"]
    assert again["matched"] == 0
    with rt.db.tenant_session(tenant.id) as session:
        requests = session.exec(select(AuditRecord).where(
            AuditRecord.tenant_id == tenant.id, AuditRecord.kind == "order.mass_cancel_requested")
            .order_by(AuditRecord.seq)).all()
        cancelled = session.exec(select(AuditRecord).where(
            AuditRecord.tenant_id == tenant.id, AuditRecord.kind == "order.canceled")).all()
    assert [r.payload["matched"] for r in requests] == [3, 6, 0]
    assert requests[0].payload["filter"] == {"account": "ACC1", "symbol": "AAPL", "mic": "XNAS",
                                             "side": "BUY", "all": False}
    assert requests[0].actor == tenant.admin_id
    assert len(cancelled) == 9 and {r.payload["code"] for r in cancelled} == {"MASS_CANCEL"}


def test_a_thousand_orders_cancel_in_one_request(desk: Any) -> None:
    gql, clock, rt, tenant = desk
    orders = _jpm(rt, clock, 1000)
    for start in (0, 500):
        place(gql, tenant.key, orders[start:start + 500])
    began = time.perf_counter()
    result = gql.data(CANCEL_ORDERS, {"f": {"account": "ACC1"}}, key=tenant.key)["cancelOrders"]
    took = time.perf_counter() - began
    counts = {k: v for k, v in result.items() if k != "results"}
    assert result["matched"] == result["canceled"] == 1000, counts
    print(f"cancelOrders, 1,000 orders: {took:.2f} s")
    assert took < 10, took  # one by one it was about 18 s
    assert gql.data(ORDERS, {"status": "ACCEPTED"}, key=tenant.key)["orders"]["edges"] == []


def _jpm(rt: Runtime, clock: ManualClock, n: int) -> list[dict[str, Any]]:
    """`n` resting buys, each its own (price, quantity): none is another's duplicate."""
    q = rt.market_data.quote("JPM.XNYS", clock.now())
    price = (q.bid * D("0.97")).quantize(D("0.01"))
    return [{"clientOrderId": unique("j"), "account": "ACC1", "symbol": "JPM", "mic": "XNYS",
             "side": "BUY", "quantity": str(k // 250 + 1), "ordType": "LIMIT", "timeInForce": "GTC",
             "limitPrice": str(price - D("0.01") * (k % 250))} for k in range(n)]


def test_tenant_kill_switch_cancels_every_open_order_and_blocks_new_ones(desk: Any) -> None:
    gql, clock, rt, tenant = desk
    placed = place(gql, tenant.key, resting(rt, clock, "ACC1", "AAPL", "BUY", 2)
                   + resting(rt, clock, "ACC2", "MSFT", "BUY", 2))
    controls = gql.data(CONTROLS, {"input": {"killSwitch": True}}, key=tenant.key)["setComplianceControls"]
    assert controls["killSwitch"] is True
    now = statuses(gql, tenant.key)
    assert all(now[o["id"]] == "CANCELED" for o in placed), now
    new = gql.data(SUBMIT_MANY, {"inputs": resting(rt, clock, "ACC1", "AAPL", "BUY", 1)},
                   key=tenant.key)["submitOrders"][0]["order"]
    assert new["status"] == "DENIED" and new["rejectCode"] == "COMPLIANCE_KILL_SWITCH"
    with rt.db.tenant_session(tenant.id) as session:
        kinds = [r.kind for r in session.exec(select(AuditRecord).where(
            AuditRecord.tenant_id == tenant.id, AuditRecord.kind.in_(  # type: ignore[attr-defined]
                ["compliance.controls_changed", "order.mass_cancel_requested"]))
            .order_by(AuditRecord.seq))]
        request = session.exec(select(AuditRecord).where(
            AuditRecord.tenant_id == tenant.id, AuditRecord.kind == "order.mass_cancel_requested")).one()
    assert kinds == ["compliance.controls_changed", "order.mass_cancel_requested"]
    assert request.payload["reason"] == "KILL_SWITCH" and request.payload["canceled"] == 4
    # setKillSwitch: off lets orders in again; on answers what it cancelled.
    assert gql.data(KILL, {"on": False}, key=tenant.key)["setKillSwitch"] == {
        "on": False, "account": None, "cancel": None}
    again = place(gql, tenant.key, resting(rt, clock, "ACC1", "AAPL", "BUY", 2))
    switched = gql.data(KILL, {"on": True}, key=tenant.key)["setKillSwitch"]
    assert switched["cancel"]["reason"] == "KILL_SWITCH"
    assert {r["orderId"] for r in switched["cancel"]["results"]} == {o["id"] for o in again}
    assert {r["code"] for r in switched["cancel"]["results"]} == {"KILL_SWITCH"}
    gql.data(KILL, {"on": False}, key=tenant.key)


def test_account_kill_switch_cancels_and_blocks_that_account_only(desk: Any) -> None:
    gql, clock, rt, tenant = desk
    one = place(gql, tenant.key, resting(rt, clock, "ACC1", "AAPL", "BUY", 2))
    two = place(gql, tenant.key, resting(rt, clock, "ACC2", "AAPL", "BUY", 2))
    switched = gql.data(KILL, {"on": True, "account": "ACC1"}, key=tenant.key)["setKillSwitch"]
    assert switched["on"] is True and switched["account"] == "ACC1"
    assert {r["orderId"] for r in switched["cancel"]["results"]} == {o["id"] for o in one}
    now = statuses(gql, tenant.key)
    assert all(now[o["id"]] == "CANCELED" for o in one)
    assert all(now[o["id"]] == "ACCEPTED" for o in two)
    results = gql.data(SUBMIT_MANY, {"inputs": resting(rt, clock, "ACC1", "AAPL", "BUY", 1)
                                     + resting(rt, clock, "ACC2", "AAPL", "BUY", 1)},
                       key=tenant.key)["submitOrders"]
    assert [(r["order"]["account"], r["order"]["status"], r["order"]["rejectCode"]) for r in results] == [
        ("ACC1", "DENIED", "COMPLIANCE_KILL_SWITCH"), ("ACC2", "ACCEPTED", None)]
    # The switch shows in the controls, survives a change of the restricted list, and is audited.
    controls = gql.data(CONTROLS, {"input": {"restricted": ["US5949181045", "ACCOUNT:ACC2"]}},
                        key=tenant.key)["setComplianceControls"]
    assert controls["killSwitchAccounts"] == ["ACC1"] and controls["restricted"] == ["US5949181045"]
    assert controls["killSwitch"] is False
    body = gql(KILL, {"on": True, "account": "NOPE"}, key=tenant.key)
    assert error_codes(body) == ["ACCOUNT_NOT_FOUND"]
    off = gql.data(KILL, {"on": False, "account": "ACC1"}, key=tenant.key)["setKillSwitch"]
    assert off == {"on": False, "account": "ACC1", "cancel": None}
    assert place(gql, tenant.key, resting(rt, clock, "ACC1", "AAPL", "BUY", 1))
    with rt.db.tenant_session(tenant.id) as session:
        changes = [r.payload for r in session.exec(select(AuditRecord).where(
            AuditRecord.tenant_id == tenant.id, AuditRecord.kind == "compliance.kill_switch_changed")
            .order_by(AuditRecord.seq))]
    assert changes == [{"account": "ACC1", "before": False, "after": True},
                       {"account": "ACC1", "before": True, "after": False}]


def test_a_tenants_mass_cancel_and_kill_switch_never_touch_another_tenant(desk: Any) -> None:
    gql, clock, rt, tenant = desk
    other = onboard(rt)
    gql.data(ACCOUNT, {"input": {"code": "ACC1", "currency": "USD", "domicile": "US",
                                 "creditLimit": "1000000000", "equity": "1000000000"}}, key=other.key)
    mine = place(gql, tenant.key, resting(rt, clock, "ACC1", "AAPL", "BUY", 2))
    theirs = place(gql, other.key, resting(rt, clock, "ACC1", "AAPL", "BUY", 2))
    # The same account code and symbol in the other tenant: its mass cancel takes only its own.
    result = gql.data(CANCEL_ORDERS, {"f": {"account": "ACC1", "symbol": "AAPL"}},
                      key=other.key)["cancelOrders"]
    assert {r["orderId"] for r in result["results"]} == {o["id"] for o in theirs}
    assert all(s == "ACCEPTED" for s in statuses(gql, tenant.key).values())
    gql.data(KILL, {"on": True}, key=other.key)
    gql.data(KILL, {"on": True, "account": "ACC1"}, key=other.key)
    assert all(statuses(gql, tenant.key)[o["id"]] == "ACCEPTED" for o in mine)
    # The other tenant's switches block nothing here.
    assert place(gql, tenant.key, resting(rt, clock, "ACC1", "AAPL", "BUY", 1))
    controls = gql.data("{ complianceControls { killSwitch killSwitchAccounts } }", key=tenant.key)
    assert controls["complianceControls"] == {"killSwitch": False, "killSwitchAccounts": []}
    with rt.db.tenant_session(tenant.id) as session:
        assert session.exec(select(AuditRecord).where(
            AuditRecord.tenant_id == tenant.id,
            AuditRecord.kind == "order.mass_cancel_requested")).all() == []
    gql.data(CANCEL_ORDERS, {"f": {"all": True}}, key=tenant.key)


def test_a_trader_can_mass_cancel_but_not_switch_the_kill_switch(desk: Any) -> None:
    from tests.support import user_key

    gql, clock, rt, tenant = desk
    _, trader = user_key(rt, tenant, "trader")
    place(gql, tenant.key, resting(rt, clock, "ACC1", "AAPL", "BUY", 1))
    assert gql.data(CANCEL_ORDERS, {"f": {"all": True}}, key=trader)["cancelOrders"]["canceled"] == 1
    assert error_codes(gql(KILL, {"on": True}, key=trader)) == ["FORBIDDEN"]
