"""Orders end to end through GraphQL on the simulated venues, with the markets on a ManualClock:
fills, positions, partial fills, IOC/FOK, DAY expiry by the clock, idempotency (also under 50
concurrent retries), bad input leaving nothing behind, denials, amend and cancel, the routing
record, DataLoaders, roles, subscriptions and tenant isolation of every root field."""

from __future__ import annotations

import asyncio
import threading
from datetime import UTC, datetime, timedelta
from decimal import Decimal as D

import pytest
from sqlalchemy import event
from sqlalchemy.exc import IntegrityError
from sqlmodel import func, select

from gateway.app import create_app
from gateway.errors import DomainError
from gateway.events import publish_each
from gateway.markets.clock import ManualClock
from gateway.markets.service import MarketsService
from gateway.trading.models import (
    AccountPosition,
    ComplianceDecisionRow,
    Execution,
    Locate,
    Order,
    OrderEvent,
)
from gateway.trading.service import OrderService, alerts_topic, orders_topic
from tests.support import (
    GraphQLClient,
    LiveServer,
    TransportWS,
    error_codes,
    onboard,
    subscribed,
    unique,
    user_key,
    with_clock,
)

OPEN_NY = datetime(2025, 3, 12, 14, 0, tzinfo=UTC)  # a Wednesday, New York open since 13:30
ORDER_FIELDS = """id clientOrderId account symbol isin mic requestedMic side ordType timeInForce
  quantity limitPrice stopPrice currency status fixStatus cumQty leavesQty avgPx fees rejectCode
  rejectText routing version"""
SUBMIT = f"""mutation($input: SubmitOrderInput!) {{ submitOrder(input: $input) {{ {ORDER_FIELDS} }} }}"""
SUBMIT_MANY = f"""mutation($inputs: [SubmitOrderInput!]!) {{ submitOrders(inputs: $inputs) {{
  clientOrderId replayed order {{ {ORDER_FIELDS} }} error {{ code message details }} }} }}"""
ACCOUNT = """mutation($input: TradingAccountInput!) { upsertTradingAccount(input: $input) {
  id code currency clientType domicile lei creditLimit equity assessments } }"""
POSITIONS = """query($a: String!) { positions(account: $a) { account instrumentKey symbol mic currency
  quantity avgPrice realizedPnl } }"""
CONTROLS = """mutation($input: ComplianceControlsInput!) { setComplianceControls(input: $input) {
  killSwitch restricted maxOrderValue maxOrderQuantity collarPct throttleMaxOrders duplicateWindowMs } }"""


@pytest.fixture(scope="module")
def venue(runtime):
    """A gateway whose markets and order service run on a ManualClock."""
    clock = ManualClock(OPEN_NY)
    rt = with_clock(runtime, clock)
    with LiveServer(create_app(runtime=rt)) as live:
        yield live, clock, rt


def next_open_minute(rt, clock) -> datetime:
    """An hour on from now while New York is open, else a minute after its next open (the clock
    and the venues' clocks only move forward). An hour: what the last test's orders did to the
    venues' prices has worn off (their impact's half-life is 5 minutes)."""
    at = clock.now() + timedelta(hours=1)
    session = rt.markets.session("XNAS", at)
    if str(session.status) != "OPEN" or session.next_close - at < timedelta(minutes=30):
        at = session.next_open + timedelta(minutes=1)
        if rt.markets.session("XNAS", at).next_close - at < timedelta(minutes=30):
            at = rt.markets.session("XNAS", at).next_open + timedelta(minutes=1)
    return at


@pytest.fixture
def desk(venue):
    """A tenant with a US account and the clock a minute on in a New York session, so every
    test starts from fresh simulated liquidity."""
    live, clock, rt = venue
    clock.set(next_open_minute(rt, clock))
    tenant = onboard(rt)
    gql = GraphQLClient(live.url)
    gql.data(ACCOUNT, {"input": {"code": "ACC1", "currency": "USD", "domicile": "US",
                                 "creditLimit": "1000000000", "equity": "500000000"}}, key=tenant.key)
    return gql, tenant, clock, rt, live


def order(cid: str | None = None, **overrides):
    base = {"clientOrderId": cid or unique("o"), "account": "ACC1", "symbol": "AAPL", "mic": "XNAS",
            "side": "BUY", "quantity": "10", "ordType": "MARKET", "timeInForce": "IOC"}
    base.update(overrides)
    return base


def count(rt, tenant_id, model):
    with rt.db.tenant_session(tenant_id) as session:
        return session.exec(select(func.count()).select_from(model)).one()


def test_market_order_fills_and_moves_the_position(desk):
    gql, tenant, _clock, _rt, _ = desk
    o = gql.data(SUBMIT, {"input": order(quantity="25")}, key=tenant.key)["submitOrder"]
    assert o["status"] == "FILLED", o
    assert o["fixStatus"] == "2" and D(o["cumQty"]) == 25 and D(o["leavesQty"]) == 0
    assert o["mic"] == "XNAS" and o["isin"] == "US0378331005"
    assert o["routing"]["reason"] == "DIRECTED" and o["routing"]["arrival_price"]
    trades = gql.data("query($id: ID!) { trades(orderId: $id) { edges { node { lastQty lastPx fee "
                      "liquidity mic } } } }", {"id": o["id"]}, key=tenant.key)["trades"]["edges"]
    assert sum(D(t["node"]["lastQty"]) for t in trades) == 25
    assert all(t["node"]["liquidity"] == "REMOVED" for t in trades)
    positions = gql.data(POSITIONS, {"a": "ACC1"}, key=tenant.key)["positions"]
    assert [(p["instrumentKey"], D(p["quantity"])) for p in positions] == [("US0378331005", 25)]
    vwap = sum(D(t["node"]["lastQty"]) * D(t["node"]["lastPx"]) for t in trades) / 25
    assert abs(D(positions[0]["avgPrice"]) - vwap) < D("0.0001")
    # Selling it back flattens the position and realises the difference.
    sold = gql.data(SUBMIT, {"input": order(side="SELL", quantity="25")}, key=tenant.key)["submitOrder"]
    assert sold["status"] == "FILLED"
    positions = gql.data(POSITIONS, {"a": "ACC1"}, key=tenant.key)["positions"]
    assert D(positions[0]["quantity"]) == 0
    events = gql.data("query($id: ID!) { order(id: $id) { events { seq event statusFrom statusTo } } }",
                      {"id": o["id"]}, key=tenant.key)["order"]["events"]
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    assert events[0]["event"] == "COMPLIANCE_PASS" and events[1]["event"] == "VENUE_NEW"
    assert events[-1]["statusTo"] == "FILLED"


def quote(rt, clock, key="AAPL.XNAS"):
    return rt.market_data.quote(key, clock.now())


def test_limit_order_fills_partly_rests_and_is_cancelled(desk):
    gql, tenant, clock, rt, _ = desk
    q = quote(rt, clock)
    # At the best ask only the top level can fill; the rest rests on the book.
    want = q.ask_size + 100
    o = gql.data(SUBMIT, {"input": order(ordType="LIMIT", timeInForce="DAY", limitPrice=str(q.ask),
                                         quantity=str(want))}, key=tenant.key)["submitOrder"]
    assert o["status"] == "PARTIALLY_FILLED", o
    assert D(o["cumQty"]) == q.ask_size and D(o["leavesQty"]) == 100
    assert D(o["avgPx"]) == q.ask
    cancelled = gql.data("mutation($id: ID!) { cancelOrder(id: $id) { status cumQty leavesQty } }",
                         {"id": o["id"]}, key=tenant.key)["cancelOrder"]
    assert cancelled == {"status": "CANCELED", "cumQty": str(q.ask_size), "leavesQty": "0"}
    positions = gql.data(POSITIONS, {"a": "ACC1"}, key=tenant.key)["positions"]
    assert D(positions[0]["quantity"]) == q.ask_size
    # A cancelled order cannot be cancelled or amended again.
    body = gql("mutation($id: ID!) { cancelOrder(id: $id) { status } }", {"id": o["id"]}, key=tenant.key)
    assert error_codes(body) == ["ORDER_NOT_CANCELABLE"]
    body = gql("mutation($id: ID!) { amendOrder(id: $id, quantity: \"5\") { status } }", {"id": o["id"]},
               key=tenant.key)
    assert error_codes(body) == ["ORDER_NOT_AMENDABLE"]


def test_ioc_fills_what_it_can_and_fok_all_or_nothing(desk):
    gql, tenant, clock, rt, _ = desk
    q = quote(rt, clock)
    ioc = gql.data(SUBMIT, {"input": order(ordType="LIMIT", timeInForce="IOC", limitPrice=str(q.ask),
                                           quantity=str(q.ask_size + 50))}, key=tenant.key)["submitOrder"]
    assert ioc["status"] == "CANCELED" and D(ioc["cumQty"]) == q.ask_size and ioc["leavesQty"] == "0"
    assert ioc["rejectCode"] == "IOC_REMAINDER" or ioc["rejectCode"]
    q = quote(rt, clock)
    # Far more than the whole ladder holds (beyond the venue's participation cap): nothing at
    # all executes.
    fok = gql.data(SUBMIT, {"input": order(timeInForce="FOK", quantity=str(q.ask_size * 100))},
                   key=tenant.key)["submitOrder"]
    assert fok["status"] == "CANCELED" and fok["cumQty"] == "0", (fok["rejectCode"], fok["rejectText"])
    trades = gql.data("query($id: ID!) { trades(orderId: $id) { edges { node { id } } } }",
                      {"id": fok["id"]}, key=tenant.key)["trades"]["edges"]
    assert trades == []
    small = gql.data(SUBMIT, {"input": order(timeInForce="FOK", quantity="1")}, key=tenant.key)["submitOrder"]
    assert small["status"] == "FILLED"


def test_day_order_expires_at_the_close_by_the_clock(desk):
    gql, tenant, clock, rt, _ = desk
    q = quote(rt, clock)
    below = (q.bid * D("0.95")).quantize(D("0.01"))
    o = gql.data(SUBMIT, {"input": order(ordType="LIMIT", timeInForce="DAY", limitPrice=str(below))},
                 key=tenant.key)["submitOrder"]
    assert o["status"] == "ACCEPTED"
    close = rt.markets.session("XNAS", clock.now()).next_close
    clock.set(close + timedelta(seconds=30))
    rt.orders.advance()  # what the app's venue clock does every second
    after = gql.data("query($id: ID!) { order(id: $id) { status leavesQty events { event } } }",
                     {"id": o["id"]}, key=tenant.key)["order"]
    assert after["status"] == "EXPIRED" and after["leavesQty"] == "0"
    assert after["events"][-1]["event"] == "EXPIRED"


def test_outside_hours_day_orders_queue_for_the_open_and_ioc_is_rejected(desk):
    gql, tenant, clock, rt, _ = desk
    opens = rt.markets.session("XNAS", clock.now()).next_open
    clock.set(opens + timedelta(days=1) - timedelta(minutes=90))  # before the next open
    opens = rt.markets.session("XNAS", clock.now()).next_open
    q = quote(rt, clock)
    above = (q.ask * D("1.05")).quantize(D("0.01"))
    queued = gql.data(SUBMIT, {"input": order(ordType="LIMIT", timeInForce="DAY", limitPrice=str(above))},
                      key=tenant.key)["submitOrder"]
    assert queued["status"] == "PENDING"
    # An IOC market order cannot wait: no venue takes it, and nothing is stored.
    body = gql(SUBMIT, {"input": order("closed-ioc")}, key=tenant.key)
    assert error_codes(body) == ["VENUE_CLOSED"]
    assert body["errors"][0]["extensions"]["alternatives"][0]["status"] == "SESSION_CLOSED"
    clock.set(opens + timedelta(minutes=1))
    rt.orders.advance()
    filled = gql.data("query($id: ID!) { order(id: $id) { status cumQty } }", {"id": queued["id"]},
                      key=tenant.key)["order"]
    assert filled == {"status": "FILLED", "cumQty": "10"}


def test_a_retried_client_order_id_returns_the_first_order(desk):
    gql, tenant, *_ = desk
    first = gql.data(SUBMIT, {"input": order("same-id")}, key=tenant.key)["submitOrder"]
    again = gql.data(SUBMIT, {"input": order("same-id")}, key=tenant.key)["submitOrder"]
    assert again["id"] == first["id"] and again["quantity"] == "10"
    # Other terms under the same ClOrdID are not a retry (tests/test_order_intake_truth.py).
    assert error_codes(gql(SUBMIT, {"input": order("same-id", quantity="99")}, key=tenant.key)) == [
        "CLORDID_CONFLICT"]
    batch = gql.data(SUBMIT_MANY, {"inputs": [order("same-id"), order("fresh"), order("fresh")]},
                     key=tenant.key)["submitOrders"]
    assert [r["replayed"] for r in batch] == [True, False, False]
    assert batch[0]["order"]["id"] == first["id"] and batch[1]["order"]["id"]
    assert batch[2]["order"] is None and batch[2]["error"]["code"] == "CLORDID_DUPLICATE_IN_BATCH"


def test_fifty_concurrent_retries_of_one_client_order_id_make_one_order(desk):
    _gql, tenant, clock, rt, live = desk
    barrier = threading.Barrier(50)
    answers: list[object] = []

    def send() -> None:
        client = GraphQLClient(live.url)
        barrier.wait()
        body = client(SUBMIT, {"input": order("race", ordType="LIMIT", timeInForce="DAY",
                                              limitPrice=str((quote(rt, clock).bid * D("0.97"))
                                                             .quantize(D("0.01"))))}, key=tenant.key)
        answers.append(body["data"]["submitOrder"]["id"] if body.get("data") else body)

    threads = [threading.Thread(target=send) for _ in range(50)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(answers) == 50 and len({str(a) for a in answers}) == 1, [a for a in answers
                                                                       if isinstance(a, dict)]
    with rt.db.tenant_session(tenant.id) as session:
        rows = session.exec(select(Order).where(Order.client_order_id == "race")).all()
        assert len(rows) == 1
        decisions = session.exec(select(func.count()).select_from(ComplianceDecisionRow)
                                 .where(ComplianceDecisionRow.client_order_id == "race")).one()
        assert decisions == 1


@pytest.mark.parametrize(("overrides", "code"), [
    ({"quantity": "0"}, "QUANTITY_INVALID"),
    ({"quantity": "-5"}, "QUANTITY_INVALID"),
    ({"quantity": "NaN"}, "QUANTITY_INVALID"),
    ({"quantity": "Infinity"}, "QUANTITY_INVALID"),
    ({"quantity": "ten"}, "QUANTITY_INVALID"),
    ({"quantity": "1234567890123.456"}, "QUANTITY_INVALID"),  # more than 15 significant digits
    ({"quantity": "1.00000000001"}, "QUANTITY_INVALID"),  # more than 10 decimal places
    ({"ordType": "LIMIT", "timeInForce": "DAY", "limitPrice": "170.001"}, "PRICE_OFF_TICK"),
    ({"ordType": "LIMIT", "timeInForce": "DAY"}, "PRICE_REQUIRED"),
    ({"ordType": "LIMIT", "timeInForce": "DAY", "limitPrice": "-1"}, "PRICE_INVALID"),
    ({"symbol": "NOPE"}, "INSTRUMENT_UNKNOWN"),
    ({"symbol": "AAPL", "mic": "XLON"}, "INSTRUMENT_UNKNOWN"),
    ({"symbol": "US0378331004", "mic": "SMART"}, "ISIN_INVALID"),
    ({"isin": "US0378331004"}, "ISIN_INVALID"),
    ({"isin": "US5949181045"}, "ISIN_MISMATCH"),
    ({"account": "NO-SUCH-ACCOUNT"}, "ACCOUNT_NOT_FOUND"),
    ({"currency": "EUR"}, "CURRENCY_MISMATCH"),
    ({"timeInForce": "GTD"}, "EXPIRE_AT_INVALID"),
    ({"clientOrderId": ""}, "CLIENT_ORDER_ID_INVALID"),
])
def test_bad_input_is_refused_with_a_code_and_leaves_nothing(desk, overrides, code):
    gql, tenant, _clock, rt, _ = desk
    before = [count(rt, tenant.id, m) for m in (Order, Execution, AccountPosition, OrderEvent,
                                                 ComplianceDecisionRow)]
    body = gql(SUBMIT, {"input": order(**overrides)}, key=tenant.key)
    assert error_codes(body) == [code], body
    batch = gql.data(SUBMIT_MANY, {"inputs": [order(**overrides)]}, key=tenant.key)["submitOrders"]
    assert batch[0]["error"]["code"] == code and batch[0]["order"] is None
    after = [count(rt, tenant.id, m) for m in (Order, Execution, AccountPosition, OrderEvent,
                                                ComplianceDecisionRow)]
    assert after == before


def test_a_batch_answers_per_order(desk):
    gql, tenant, *_ = desk
    results = gql.data(SUBMIT_MANY, {"inputs": [order("b1"), order("b2", quantity="0"),
                                                order("b3", symbol="NOPE"), order("b4", quantity="3")]},
                       key=tenant.key)["submitOrders"]
    assert [r["clientOrderId"] for r in results] == ["b1", "b2", "b3", "b4"]
    assert [r["order"]["status"] if r["order"] else r["error"]["code"] for r in results] == \
        ["FILLED", "QUANTITY_INVALID", "INSTRUMENT_UNKNOWN", "FILLED"]
    body = gql(SUBMIT_MANY, {"inputs": []}, key=tenant.key)
    assert error_codes(body) == ["BATCH_INVALID"]


def test_compliance_denials_are_orders_with_a_code_and_recorded(desk):
    gql, tenant, clock, rt, _ = desk
    q = quote(rt, clock)
    far = (q.ask * D("1.5")).quantize(D("0.01"))
    o = gql.data(SUBMIT, {"input": order(ordType="LIMIT", timeInForce="DAY", limitPrice=str(far))},
                 key=tenant.key)["submitOrder"]
    assert o["status"] == "DENIED" and o["rejectCode"] == "COMPLIANCE_PRICE_COLLAR"
    assert o["fixStatus"] == "8" and o["cumQty"] == "0" and o["leavesQty"] == "0"
    decisions = gql.data("query($id: ID!) { complianceDecisions(orderId: $id) { edges { node { passed "
                         "codes jurisdictions record } } } }", {"id": o["id"]},
                         key=tenant.key)["complianceDecisions"]["edges"]
    node = decisions[0]["node"]
    assert node["passed"] is False and node["codes"] == ["COMPLIANCE_PRICE_COLLAR"]
    assert node["jurisdictions"] == ["US"]
    denial = node["record"]["denials"][0]
    assert denial["limit"] == "10" and D(denial["value"]) > 10
    # Passing decisions are recorded too.
    ok = gql.data(SUBMIT, {"input": order()}, key=tenant.key)["submitOrder"]
    passed = gql.data("query($id: ID!) { complianceDecisions(orderId: $id) { edges { node { passed } } } }",
                      {"id": ok["id"]}, key=tenant.key)["complianceDecisions"]["edges"]
    assert passed == [{"node": {"passed": True}}]
    assert count(rt, tenant.id, Execution) > 0
    with rt.db.tenant_session(tenant.id) as session:
        assert session.exec(select(func.count()).select_from(Execution)
                            .where(Execution.order_id == o["id"])).one() == 0
    records = rt.audit.records(tenant.id, subject=o["id"], first=10).items
    assert [r.kind for r in records] == ["order.submitted"]
    assert records[0].payload["compliance"]["denials"][0]["code"] == "COMPLIANCE_PRICE_COLLAR"
    assert records[0].payload["status"] == "DENIED"
    filled_records = rt.audit.records(tenant.id, subject=ok["id"], first=10).items
    assert [r.kind for r in reversed(filled_records)][:2] == ["order.submitted", "order.venue_new"]
    assert filled_records[0].kind == "order.fill" and rt.audit.verify(tenant.id).ok


def test_short_sale_needs_a_locate_which_it_uses_up(desk):
    gql, tenant, *_ = desk
    short = order(side="SELL_SHORT", quantity="20")
    denied = gql.data(SUBMIT, {"input": short}, key=tenant.key)["submitOrder"]
    assert denied["status"] == "DENIED" and denied["rejectCode"] == "COMPLIANCE_SHORT_LOCATE_REQUIRED"
    naked_sell = gql.data(SUBMIT, {"input": order(side="SELL", quantity="20")}, key=tenant.key)["submitOrder"]
    assert naked_sell["rejectCode"] == "COMPLIANCE_SHORT_SALE_NOT_FLAGGED"
    loc = gql.data("mutation($i: LocateInput!) { recordLocate(input: $i) { instrumentKey quantity "
                   "remaining } }", {"i": {"account": "ACC1", "instrument": "AAPL.XNAS", "quantity": "30"}},
                   key=tenant.key)["recordLocate"]
    assert loc == {"instrumentKey": "US0378331005", "quantity": "30", "remaining": "30"}
    sold = gql.data(SUBMIT, {"input": order(side="SELL_SHORT", quantity="20")}, key=tenant.key)["submitOrder"]
    assert sold["status"] == "FILLED"
    positions = gql.data(POSITIONS, {"a": "ACC1"}, key=tenant.key)["positions"]
    assert D(positions[0]["quantity"]) == -20
    # 10 located shares are left: 15 more are denied.
    again = gql.data(SUBMIT, {"input": order(side="SELL_SHORT", quantity="15")},
                     key=tenant.key)["submitOrder"]
    assert again["rejectCode"] == "COMPLIANCE_SHORT_LOCATE_REQUIRED"
    _, _, _, rt, _ = desk
    with rt.db.tenant_session(tenant.id) as session:
        assert session.exec(select(Locate)).one().remaining == 10


def test_controls_kill_switch_restricted_list_and_limits(desk):
    gql, tenant, *_ = desk
    officer = user_key(desk[3], tenant, "compliance_officer")[1]
    trader = user_key(desk[3], tenant, "trader")[1]
    assert error_codes(gql(CONTROLS, {"input": {"killSwitch": True}}, key=trader)) == ["FORBIDDEN"]
    set_ = gql.data(CONTROLS, {"input": {"killSwitch": True}}, key=officer)["setComplianceControls"]
    assert set_["killSwitch"] is True and set_["collarPct"] == "10"
    assert gql.data(SUBMIT, {"input": order()}, key=trader)["submitOrder"]["rejectCode"] == \
        "COMPLIANCE_KILL_SWITCH"
    gql.data(CONTROLS, {"input": {"killSwitch": False, "restricted": ["US0378331005"],
                                  "maxOrderQuantity": "5"}}, key=officer)
    o = gql.data(SUBMIT, {"input": order()}, key=trader)["submitOrder"]
    assert o["status"] == "DENIED"
    codes = gql.data("query($id: ID!) { complianceDecisions(orderId: $id) { edges { node { codes } } } }",
                     {"id": o["id"]}, key=officer)["complianceDecisions"]["edges"][0]["node"]["codes"]
    assert codes == ["COMPLIANCE_RESTRICTED_INSTRUMENT", "COMPLIANCE_MAX_ORDER_QUANTITY"]
    assert error_codes(gql(CONTROLS, {"input": {"maxOrderValue": "-1"}}, key=officer)) == ["AMOUNT_INVALID"]
    changes = desk[3].audit.records(tenant.id, kind="compliance.controls_changed", first=10).items
    assert len(changes) == 2 and changes[0].payload["after"]["max_order_quantity"] == "5"


def test_accounts_validate_the_lei_and_mifid_requires_it(desk):
    gql, tenant, *_ = desk
    bad = gql(ACCOUNT, {"input": {"code": "EU1", "currency": "EUR", "domicile": "FR",
                                  "clientType": "LEGAL_ENTITY", "lei": "529900T8BM49AURSDO56"}},
              key=tenant.key)
    assert error_codes(bad) == ["LEI_INVALID"]
    gql.data(ACCOUNT, {"input": {"code": "EU1", "currency": "EUR", "domicile": "FR",
                                 "clientType": "LEGAL_ENTITY", "creditLimit": "1000000",
                                 "equity": "1000000"}}, key=tenant.key)
    o = gql.data(SUBMIT, {"input": order(account="EU1", symbol="SAP", mic="XETR", ordType="MARKET",
                                         timeInForce="DAY")}, key=tenant.key)["submitOrder"]
    assert o["status"] == "DENIED" and o["rejectCode"] == "COMPLIANCE_LEI_MISSING"
    good = gql.data(ACCOUNT, {"input": {"code": "EU1", "currency": "EUR", "domicile": "FR",
                                        "clientType": "LEGAL_ENTITY", "lei": "529900T8BM49AURSDO55",
                                        "creditLimit": "1000000", "equity": "1000000"}},
                    key=tenant.key)["upsertTradingAccount"]
    assert good["lei"] == "529900T8BM49AURSDO55"
    accounts = gql.data("{ tradingAccounts { code } }", key=tenant.key)["tradingAccounts"]
    assert [a["code"] for a in accounts] == ["ACC1", "EU1"]


def test_us_odd_lots_agree_between_compliance_and_the_venue(desk):
    gql, tenant, *_ = desk
    # JPM on XNYS: the registry's round lot is 100, but US venues take odd lots; so do both
    # compliance and the simulated venue.
    o = gql.data(SUBMIT, {"input": order(symbol="JPM", mic="XNYS", quantity="7")},
                 key=tenant.key)["submitOrder"]
    assert o["status"] == "FILLED", o
    # Toyota trades in lots of 100: 50 is refused (the venue will not take it, so no route).
    body = gql(SUBMIT, {"input": order(symbol="7203", mic="XTKS", quantity="50", timeInForce="DAY")},
               key=tenant.key)
    assert error_codes(body) == ["ORDER_LOT_SIZE"]
    assert body["errors"][0]["extensions"]["alternatives"][0]["status"] == "LOT_SIZE"


def test_smart_routing_by_isin_records_the_alternatives(desk):
    gql, tenant, *_ = desk
    o = gql.data(SUBMIT, {"input": order(symbol="US0378331005", mic="SMART")}, key=tenant.key)["submitOrder"]
    assert o["requestedMic"] == "SMART" and o["status"] == "FILLED"
    routing = o["routing"]
    assert routing["reason"] == "BEST_PRICE_AFTER_FEES"
    # Every listing of the ISIN was asked; the one with the best price after fees was chosen.
    alternatives = routing["alternatives"]
    assert {a["mic"] for a in alternatives} == {"XNAS", "BATS", "ARCX", "IEXG"}
    assert alternatives[0]["status"] == "CHOSEN" and alternatives[0]["mic"] == o["mic"]
    assert D(alternatives[0]["score"]) == min(D(a["score"]) for a in alternatives)
    assert routing["arrival_price"] and routing["expected_price"]


def test_amend_reduces_a_resting_order_and_is_checked_again(desk):
    gql, tenant, clock, rt, _ = desk
    q = quote(rt, clock)
    below = (q.bid * D("0.96")).quantize(D("0.01"))
    o = gql.data(SUBMIT, {"input": order(ordType="LIMIT", timeInForce="GTC", limitPrice=str(below),
                                         quantity="40")}, key=tenant.key)["submitOrder"]
    assert o["status"] == "ACCEPTED"
    amend = ("mutation($id: ID!, $q: String, $p: String) { amendOrder(id: $id, quantity: $q, "
             "limitPrice: $p) { status quantity leavesQty limitPrice version } }")
    cut = gql.data(amend, {"id": o["id"], "q": "30"}, key=tenant.key)["amendOrder"]
    assert cut["status"] == "ACCEPTED" and cut["quantity"] == "30" and cut["leavesQty"] == "30"
    far = str((q.bid * D("2")).quantize(D("0.01")))
    body = gql(amend, {"id": o["id"], "p": far}, key=tenant.key)
    assert error_codes(body) == ["COMPLIANCE_PRICE_COLLAR"]
    assert error_codes(gql(amend, {"id": o["id"], "q": "0"}, key=tenant.key)) == ["QUANTITY_INVALID"]
    assert error_codes(gql(amend, {"id": o["id"], "p": "1.001"}, key=tenant.key)) == ["PRICE_OFF_TICK"]
    unchanged = gql.data("query($id: ID!) { order(id: $id) { quantity limitPrice status } }", {"id": o["id"]},
                         key=tenant.key)["order"]
    assert unchanged == {"quantity": "30", "limitPrice": str(below), "status": "ACCEPTED"}
    filled = gql.data(SUBMIT, {"input": order()}, key=tenant.key)["submitOrder"]
    assert error_codes(gql(amend, {"id": filled["id"], "q": "20"}, key=tenant.key)) == ["ORDER_NOT_AMENDABLE"]
    gql.data("mutation($id: ID!) { cancelOrder(id: $id) { status } }", {"id": o["id"]}, key=tenant.key)


def test_roles(desk):
    gql, tenant, *_ = desk
    rt = desk[3]
    viewer = user_key(rt, tenant, "viewer")[1]
    officer = user_key(rt, tenant, "compliance_officer")[1]
    assert error_codes(gql(SUBMIT, {"input": order()}, key=viewer)) == ["FORBIDDEN"]
    assert error_codes(gql(SUBMIT, {"input": order()}, key=officer)) == ["FORBIDDEN"]
    assert gql.data("{ orders { edges { node { id } } } }", key=viewer)["orders"]["edges"] == []
    assert "complianceControls" in gql.data("{ complianceControls { killSwitch } }", key=officer)
    assert error_codes(gql("{ complianceControls { killSwitch } }", key=viewer)) == ["FORBIDDEN"]


def test_a_page_of_orders_with_instrument_venue_and_fills_costs_constant_queries(desk, single_execution):
    gql, tenant, _clock, rt, _ = desk
    gql.data(CONTROLS, {"input": {"duplicateWindowMs": None}}, key=tenant.key)  # 100 alike orders
    inputs = [order(f"p{i}", quantity="1") for i in range(100)]
    results = gql.data(SUBMIT_MANY, {"inputs": inputs}, key=tenant.key)["submitOrders"]
    assert all(r["order"]["status"] == "FILLED" for r in results), \
        {(r["order"]["status"], r["order"]["rejectCode"]) for r in results}
    query = """query($n: Int!) { orders(first: $n) { edges { node { id instrument { key isin }
      venue { mic } executions { lastQty lastPx } events { event } } } } }"""
    statements: list[str] = []

    def listener(conn, cursor, statement, *args):
        statements.append(statement)

    event.listen(rt.db.engine, "before_cursor_execute", listener)
    try:
        counts = {}
        for n in (10, 100):
            statements.clear()
            page = gql.data(query, {"n": n}, key=tenant.key)["orders"]["edges"]
            assert len(page) == n and all(e["node"]["executions"] for e in page)
            assert all(e["node"]["instrument"]["isin"] == "US0378331005" for e in page)
            counts[n] = len([s for s in statements if "trade_order" in s or "execution" in s
                             or "order_event" in s])
    finally:
        event.remove(rt.db.engine, "before_cursor_execute", listener)
    assert counts[10] == counts[100] <= 3
    # Keyset pages over a filter: every order once, newest first.
    seen, after = [], None
    while True:
        page = gql.data("""query($after: String) { orders(first: 40, after: $after,
            filter: {status: FILLED, account: "ACC1"}) { edges { node { clientOrderId } }
            pageInfo { hasNextPage endCursor } } }""", {"after": after}, key=tenant.key)["orders"]
        seen += [e["node"]["clientOrderId"] for e in page["edges"]]
        if not page["pageInfo"]["hasNextPage"]:
            break
        after = page["pageInfo"]["endCursor"]
    assert sorted(seen) == sorted(f"p{i}" for i in range(100)) and len(seen) == 100
    assert gql.data('{ orders(filter: {status: DENIED}) { edges { node { id } } } }',
                    key=tenant.key)["orders"]["edges"] == []


def test_order_updates_and_compliance_alerts_over_websockets(desk):
    gql, tenant, _clock, _rt, live = desk

    async def scenario():
        async with TransportWS(live.ws_url, tenant.key) as ws:
            await ws.subscribe("u", "subscription { orderUpdates(accounts: [\"ACC1\"]) { order { "
                                    "clientOrderId status } } }")
            await ws.subscribe("a", "subscription { complianceAlerts { clientOrderId denials } }")
            await subscribed(_rt, orders_topic(tenant.id), alerts_topic(tenant.id))
            await asyncio.to_thread(gql.data, SUBMIT, {"input": order("ws-1")}, key=tenant.key)
            await asyncio.to_thread(gql.data, SUBMIT, {"input": order("ws-2", side="SELL_SHORT")},
                                    key=tenant.key)
            updates, alerts = [], []
            while len(alerts) < 1 or "ws-2" not in updates:  # ws-1: one update per transition
                message = await ws.next(timeout=10)
                assert message["type"] == "next", message
                data = message["payload"]["data"]
                if message["id"] == "u":
                    updates.append(data["orderUpdates"]["order"]["clientOrderId"])
                else:
                    alerts.append(data["complianceAlerts"])
            return updates, alerts

    updates, alerts = asyncio.run(scenario())
    assert updates[0] == "ws-1" and "ws-2" in updates, updates
    assert alerts[0]["clientOrderId"] == "ws-2"
    assert alerts[0]["denials"][0]["code"] == "COMPLIANCE_SHORT_LOCATE_REQUIRED"


def test_order_fields_with_another_tenants_ids_find_and_change_nothing(desk):
    """Tenant B's key with tenant A's ids, ClOrdIDs and account codes."""
    gql, a, clock, rt, live = desk
    q = quote(rt, clock)
    resting = gql.data(SUBMIT, {"input": order("a-rest", ordType="LIMIT", timeInForce="GTC",
                                               limitPrice=str((q.bid * D("0.95")).quantize(D("0.01"))))},
                       key=a.key)["submitOrder"]
    filled = gql.data(SUBMIT, {"input": order("a-fill")}, key=a.key)["submitOrder"]
    b = onboard(rt)
    for query in ("query($id: ID!) { order(id: $id) { id } }",
                  "mutation($id: ID!) { cancelOrder(id: $id) { id } }",
                  "mutation($id: ID!) { amendOrder(id: $id, quantity: \"5\") { id } }"):
        assert error_codes(gql(query, {"id": resting["id"]}, key=b.key)) == ["ORDER_NOT_FOUND"]
    assert gql.data("{ orders { edges { node { id } } } }", key=b.key)["orders"]["edges"] == []
    assert gql.data("query($id: ID!) { trades(orderId: $id) { edges { node { id } } } }",
                    {"id": filled["id"]}, key=b.key)["trades"]["edges"] == []
    assert gql.data("{ trades { edges { node { id } } } }", key=b.key)["trades"]["edges"] == []
    assert error_codes(gql(POSITIONS, {"a": "ACC1"}, key=b.key)) == ["ACCOUNT_NOT_FOUND"]
    assert gql.data("{ tradingAccounts { code } }", key=b.key)["tradingAccounts"] == []
    assert gql.data("{ complianceDecisions { edges { node { id } } } }",
                    key=b.key)["complianceDecisions"]["edges"] == []
    assert error_codes(gql("mutation($i: LocateInput!) { recordLocate(input: $i) { id } }",
                           {"i": {"account": "ACC1", "instrument": "AAPL.XNAS", "quantity": "5"}},
                           key=b.key)) == ["ACCOUNT_NOT_FOUND"]
    # B's own account under A's code and A's ClOrdID: a new order of B's, not A's.
    gql.data(ACCOUNT, {"input": {"code": "ACC1", "currency": "USD", "domicile": "US",
                                 "creditLimit": "1000000", "equity": "1000000"}}, key=b.key)
    mine = gql.data(SUBMIT, {"input": order("a-fill")}, key=b.key)["submitOrder"]
    assert mine["id"] != filled["id"]
    gql.data(CONTROLS, {"input": {"killSwitch": True}}, key=b.key)
    controls = gql.data("{ complianceControls { killSwitch } }", key=a.key)["complianceControls"]
    assert controls["killSwitch"] is False
    assert gql.data("query($id: ID!) { order(id: $id) { status } }", {"id": resting["id"]},
                    key=a.key)["order"]["status"] == "ACCEPTED"
    positions = gql.data(POSITIONS, {"a": "ACC1"}, key=b.key)["positions"]
    assert [D(p["quantity"]) for p in positions] == [10]

    async def b_sees_none_of_as_updates():
        async with TransportWS(live.ws_url, b.key) as ws:
            await ws.subscribe("u", "subscription { orderUpdates { order { id } } }")
            await ws.subscribe("a", "subscription { complianceAlerts { clientOrderId } }")
            await subscribed(rt, orders_topic(b.id), alerts_topic(b.id))
            await asyncio.to_thread(gql.data, SUBMIT, {"input": order("a-more")}, key=a.key)
            await asyncio.to_thread(gql.data, SUBMIT, {"input": order("a-deny", side="SELL_SHORT")},
                                    key=a.key)
            with pytest.raises(TimeoutError):
                await ws.next(timeout=1.0)

    asyncio.run(b_sees_none_of_as_updates())
    gql.data("mutation($id: ID!) { cancelOrder(id: $id) { status } }", {"id": resting["id"]}, key=a.key)


def test_duplicate_guard_and_throttle_across_requests(desk):
    gql, tenant, *_ = desk
    first = gql.data(SUBMIT, {"input": order("d1", quantity="3")}, key=tenant.key)["submitOrder"]
    second = gql.data(SUBMIT, {"input": order("d2", quantity="3")}, key=tenant.key)["submitOrder"]
    assert first["status"] == "FILLED"
    assert second["status"] == "DENIED" and second["rejectCode"] == "COMPLIANCE_DUPLICATE_ORDER"
    gql.data(CONTROLS, {"input": {"throttleMaxOrders": 4, "throttleWindowMs": 60000}}, key=tenant.key)
    # Two messages so far in the window; two more pass, the fifth is throttled.
    results = gql.data(SUBMIT_MANY, {"inputs": [order(f"t{i}", quantity=str(i + 11)) for i in range(3)]},
                       key=tenant.key)["submitOrders"]
    assert [r["order"]["rejectCode"] for r in results] == [None, None, "COMPLIANCE_THROTTLE"]


def test_gtd_expires_at_its_time_and_a_stop_waits_for_its_trigger(desk):
    gql, tenant, clock, rt, _ = desk
    q = quote(rt, clock)
    below = str((q.bid * D("0.95")).quantize(D("0.01")))
    expire = (clock.now() + timedelta(minutes=10)).isoformat()
    gtd = gql.data(SUBMIT, {"input": order(ordType="LIMIT", timeInForce="GTD", limitPrice=below,
                                           expireAt=expire)}, key=tenant.key)["submitOrder"]
    assert gtd["status"] == "ACCEPTED"
    stop = gql.data(SUBMIT, {"input": order(ordType="STOP", timeInForce="DAY",
                                            stopPrice=str((q.ask * D("1.05")).quantize(D("0.01"))))},
                    key=tenant.key)["submitOrder"]
    assert stop["status"] == "ACCEPTED" and stop["cumQty"] == "0"  # off the book until triggered
    clock.set(clock.now() + timedelta(minutes=11))
    rt.orders.advance()
    read = "query($id: ID!) { order(id: $id) { status events { event } } }"
    expired = gql.data(read, {"id": gtd["id"]}, key=tenant.key)["order"]
    assert expired["status"] == "EXPIRED" and expired["events"][-1]["event"] == "EXPIRED"
    assert gql.data("mutation($id: ID!) { cancelOrder(id: $id) { status } }", {"id": stop["id"]},
                    key=tenant.key)["cancelOrder"]["status"] == "CANCELED"


def test_two_processes_racing_one_client_order_id_meet_at_the_unique_constraint(desk):
    """Two OrderServices (as two gateway processes would have: their own intake locks and
    venues) on one database: the unique constraint decides, the loser answers the winner."""
    _gql, tenant, clock, rt, _ = desk
    services = [OrderService(rt.db, rt.bus, rt.markets, rt.market_data, rt.plugins, rt.audit)
                for _ in range(2)]
    for s in services:
        s.markets = MarketsService(rt.markets.directory, clock)
    from gateway.trading.intake import OrderInput

    raw = OrderInput("two-procs", "ACC1", "AAPL", "BUY", "5", "LIMIT", "DAY",
                     limit_price=str((quote(rt, clock).bid * D("0.97")).quantize(D("0.01"))), mic="XNAS")
    barrier = threading.Barrier(8)
    answers: list[tuple[str, bool]] = []
    collisions: list[str] = []
    for s in services:
        write = s._write_claims

        def counting(*args, write=write):
            try:
                return write(*args)
            except IntegrityError:
                collisions.append("unique")
                raise

        s._write_claims = counting  # type: ignore[method-assign]

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
    assert len({a for a, _ in answers}) == 1 and sum(not r for _, r in answers) == 1
    # Deterministically: B read before A committed (its pre-check saw nothing), so B's claim
    # meets the constraint and B answers A's order, sending nothing to its venue.
    real = services[1]._existing
    calls: list[int] = []

    def stale(session, cids):
        calls.append(1)
        return {} if len(calls) == 1 else real(session, cids)

    services[1]._existing = stale  # type: ignore[method-assign]
    collisions.clear()
    late = services[1].submit(tenant.id, None, raw)
    assert late.replayed and late.order.id == answers[0][0] and collisions == ["unique", "unique"]
    with rt.db.tenant_session(tenant.id) as session:
        assert len(session.exec(select(Order).where(Order.client_order_id == "two-procs")).all()) == 1
        assert session.exec(select(func.count()).select_from(ComplianceDecisionRow)
                            .where(ComplianceDecisionRow.client_order_id == "two-procs")).one() == 1


def test_an_order_claimed_but_never_sent_is_rejected_by_the_sweep(desk, monkeypatch):
    gql, tenant, clock, rt, _ = desk
    q = quote(rt, clock)
    below = str((q.bid * D("0.95")).quantize(D("0.01")))
    resting = gql.data(SUBMIT, {"input": order(ordType="LIMIT", timeInForce="GTC", limitPrice=below)},
                       key=tenant.key)["submitOrder"]
    monkeypatch.setattr(rt.orders, "_send", lambda prepared: None)  # the process "dies" here
    lost = gql.data(SUBMIT, {"input": order(ordType="LIMIT", timeInForce="GTC", limitPrice=below,
                                            quantity="11")}, key=tenant.key)["submitOrder"]
    monkeypatch.undo()
    assert lost["status"] == "PENDING"
    assert rt.orders.sweep_unsent(at=clock.now() + timedelta(seconds=30)) == 0  # not yet
    assert rt.orders.sweep_unsent(at=clock.now() + timedelta(minutes=2)) == 1
    read = "query($id: ID!) { order(id: $id) { status rejectCode events { event } } }"
    swept = gql.data(read, {"id": lost["id"]}, key=tenant.key)["order"]
    assert swept["status"] == "REJECTED" and swept["rejectCode"] == "ORDER_NOT_SENT"
    assert [e["event"] for e in swept["events"]] == ["COMPLIANCE_PASS", "REJECTED"]
    assert gql.data(read, {"id": resting["id"]}, key=tenant.key)["order"]["status"] == "ACCEPTED"
    gql.data("mutation($id: ID!) { cancelOrder(id: $id) { status } }", {"id": resting["id"]}, key=tenant.key)


def test_a_venue_that_does_not_know_the_order_refuses_the_cancel(desk, monkeypatch):
    """A venue that does not know the order (here a restarted gateway whose simulated venue was
    not given its orders back: the restore, tests/test_order_recovery.py, switched off) refuses
    the cancel with its code and the order is left as it was."""
    gql, tenant, clock, rt, _ = desk
    from gateway.trading import recovery

    monkeypatch.setattr(recovery, "restore_builtins", lambda *args, **kwargs: 0)
    q = quote(rt, clock)
    resting = gql.data(SUBMIT, {"input": order(ordType="LIMIT", timeInForce="GTC",
                                               limitPrice=str((q.bid * D("0.95")).quantize(D("0.01"))))},
                       key=tenant.key)["submitOrder"]
    restarted = OrderService(rt.db, rt.bus, rt.markets, rt.market_data, rt.plugins, rt.audit)
    with pytest.raises(DomainError) as refused:
        restarted.cancel(tenant.id, None, resting["id"])
    assert refused.value.code == "ORDER_VENUE_REFUSED"
    assert refused.value.details == {"venueCode": "UNKNOWN_ORDER"}
    with pytest.raises(DomainError) as amend:
        restarted.amend(tenant.id, None, resting["id"], quantity="5")
    assert amend.value.code == "ORDER_VENUE_REFUSED"
    after = gql.data("query($id: ID!) { order(id: $id) { status quantity version } }", {"id": resting["id"]},
                     key=tenant.key)["order"]
    assert after == {"status": "ACCEPTED", "quantity": "10", "version": resting["version"]}  # unchanged
    gql.data("mutation($id: ID!) { cancelOrder(id: $id) { status } }", {"id": resting["id"]}, key=tenant.key)


# Regressions: locates, amend against its own reservation, roles, controls, claims publishing.
LOCATE = "mutation($i: LocateInput!) { recordLocate(input: $i) { id remaining expiresAt } }"
AMEND = ("mutation($id: ID!, $q: String, $p: String) { amendOrder(id: $id, quantity: $q, "
         "limitPrice: $p) { status quantity leavesQty limitPrice } }")


def _remaining(rt, tenant_id) -> D:
    with rt.db.tenant_session(tenant_id) as session:
        return sum((loc.remaining for loc in session.exec(select(Locate))), D(0))


def test_an_expired_locate_covers_no_short_sale(desk):
    gql, tenant, clock, rt, _ = desk
    past = (clock.now() - timedelta(days=1)).isoformat()
    gql.data(LOCATE, {"i": {"account": "ACC1", "instrument": "AAPL.XNAS", "quantity": "20",
                            "expiresAt": past}}, key=tenant.key)
    gql.data(LOCATE, {"i": {"account": "ACC1", "instrument": "AAPL.XNAS", "quantity": "20"}},
             key=tenant.key)
    first = gql.data(SUBMIT, {"input": order(side="SELL_SHORT", quantity="20")}, key=tenant.key)
    assert first["submitOrder"]["status"] == "FILLED", first
    # The valid locate was used up, not the expired one: 20 located, 20 short, no more.
    second = gql.data(SUBMIT, {"input": order(side="SELL_SHORT", quantity="19")},
                      key=tenant.key)["submitOrder"]
    assert second["status"] == "DENIED" and second["rejectCode"] == "COMPLIANCE_SHORT_LOCATE_REQUIRED"
    with rt.db.tenant_session(tenant.id) as session:
        rows = {loc.expires_at is None: loc.remaining for loc in session.exec(select(Locate))}
    assert rows == {True: D(0), False: D(20)}


def test_amend_down_is_not_checked_against_its_own_credit(desk):
    gql, tenant, clock, rt, _ = desk
    q = quote(rt, clock)
    below = (q.bid * D("0.96")).quantize(D("0.01"))
    limit = str((below * 50).quantize(D("1")) + 1)  # room for 50, not for 40 counted twice
    gql.data(ACCOUNT, {"input": {"code": "ACC1", "currency": "USD", "domicile": "US",
                                 "creditLimit": limit, "equity": "500000000"}}, key=tenant.key)
    o = gql.data(SUBMIT, {"input": order(ordType="LIMIT", timeInForce="GTC", limitPrice=str(below),
                                         quantity="40")}, key=tenant.key)["submitOrder"]
    assert o["status"] == "ACCEPTED", o
    cut = gql.data(AMEND, {"id": o["id"], "q": "30"}, key=tenant.key)["amendOrder"]
    assert cut["quantity"] == "30" and cut["leavesQty"] == "30"
    # Still checked against everything else: 60 would need more than the limit.
    assert error_codes(gql(AMEND, {"id": o["id"], "q": "60"}, key=tenant.key)) == ["COMPLIANCE_CREDIT_LIMIT"]
    gql.data("mutation($id: ID!) { cancelOrder(id: $id) { status } }", {"id": o["id"]}, key=tenant.key)


def test_amend_of_a_short_sale_counts_its_own_locate_once_and_uses_more_when_larger(desk):
    gql, tenant, clock, rt, _ = desk
    gql.data(LOCATE, {"i": {"account": "ACC1", "instrument": "AAPL.XNAS", "quantity": "30"}},
             key=tenant.key)
    above = (quote(rt, clock).ask * D("1.03")).quantize(D("0.01"))
    o = gql.data(SUBMIT, {"input": order(side="SELL_SHORT", ordType="LIMIT", timeInForce="GTC",
                                         limitPrice=str(above), quantity="20")},
                 key=tenant.key)["submitOrder"]
    assert o["status"] == "ACCEPTED", o
    assert _remaining(rt, tenant.id) == 10
    assert gql.data(AMEND, {"id": o["id"], "q": "10"}, key=tenant.key)["amendOrder"]["quantity"] == "10"
    # Back up to 20: its own 10 plus the 10 still located (what it used at first stays used);
    # the increase uses those 10, so another short sale cannot.
    assert gql.data(AMEND, {"id": o["id"], "q": "20"}, key=tenant.key)["amendOrder"]["quantity"] == "20"
    assert _remaining(rt, tenant.id) == 0
    assert error_codes(gql(AMEND, {"id": o["id"], "q": "21"}, key=tenant.key)) == \
        ["COMPLIANCE_SHORT_LOCATE_REQUIRED"]
    gql.data("mutation($id: ID!) { cancelOrder(id: $id) { status } }", {"id": o["id"]}, key=tenant.key)


def test_amend_checks_the_venues_fractional_lot_as_submit_does(desk):
    gql, tenant, clock, rt, _ = desk
    key = next(i.key for i in rt.market_data.instruments() if i.mic == "ALPX")
    below = (quote(rt, clock, key).bid * D("0.97")).quantize(D("0.01"))
    o = gql.data(SUBMIT, {"input": order(symbol=key.split(".")[0], mic="ALPX", ordType="LIMIT",
                                         timeInForce="GTC", limitPrice=str(below), quantity="0.5")},
                 key=tenant.key)["submitOrder"]
    assert o["status"] == "ACCEPTED", o
    cut = gql.data(AMEND, {"id": o["id"], "q": "0.4"}, key=tenant.key)["amendOrder"]
    assert D(cut["quantity"]) == D("0.4")
    gql.data("mutation($id: ID!) { cancelOrder(id: $id) { status } }", {"id": o["id"]}, key=tenant.key)


def test_amend_in_another_currency_than_the_account_uses_the_fx_rate(desk):
    gql, tenant, clock, rt, _ = desk
    gql.data(ACCOUNT, {"input": {"code": "EUR1", "currency": "EUR", "domicile": "DE",
                                 "creditLimit": "1000000000", "equity": "500000000"}}, key=tenant.key)
    below = (quote(rt, clock).bid * D("0.96")).quantize(D("0.01"))
    o = gql.data(SUBMIT, {"input": order(account="EUR1", ordType="LIMIT", timeInForce="GTC",
                                         limitPrice=str(below), quantity="40")},
                 key=tenant.key)["submitOrder"]
    assert o["status"] == "ACCEPTED", o
    assert gql.data(AMEND, {"id": o["id"], "q": "30"}, key=tenant.key)["amendOrder"]["quantity"] == "30"
    gql.data("mutation($id: ID!) { cancelOrder(id: $id) { status } }", {"id": o["id"]}, key=tenant.key)


def test_amended_price_commits_with_the_replace_and_its_request_record(desk):
    gql, tenant, clock, rt, _ = desk
    below = (quote(rt, clock).bid * D("0.96")).quantize(D("0.01"))
    o = gql.data(SUBMIT, {"input": order(ordType="LIMIT", timeInForce="GTC", limitPrice=str(below),
                                         quantity="40")}, key=tenant.key)["submitOrder"]
    lower = str(below - D("0.01"))
    moved = gql.data(AMEND, {"id": o["id"], "p": lower}, key=tenant.key)["amendOrder"]
    assert moved["limitPrice"] == lower
    from gateway.audit import AuditRecord

    with rt.db.tenant_session(tenant.id) as session:
        rows = session.exec(select(AuditRecord).where(AuditRecord.subject == o["id"],
                                                      AuditRecord.kind.in_(  # type: ignore[attr-defined]
                                                          ["order.amend_requested", "order.replaced"]))
                            .order_by(AuditRecord.seq)).all()
    # One append (one transaction): the request's record, then the REPLACED one, same instant.
    assert [r.kind for r in rows] == ["order.amend_requested", "order.replaced"]
    assert rows[1].seq == rows[0].seq + 1 and rows[0].at == rows[1].at
    assert rows[0].payload["limit_price"] == lower
    gql.data("mutation($id: ID!) { cancelOrder(id: $id) { status } }", {"id": o["id"]}, key=tenant.key)


def test_only_compliance_changes_accounts_and_locates(desk):
    gql, tenant, _clock, rt, _ = desk
    trader = user_key(rt, tenant, "trader")[1]
    officer = user_key(rt, tenant, "compliance_officer")[1]
    raise_limit = {"input": {"code": "ACC1", "currency": "USD", "domicile": "US",
                             "creditLimit": "99999999999", "equity": "1"}}
    assert error_codes(gql(ACCOUNT, raise_limit, key=trader)) == ["FORBIDDEN"]
    locate = {"i": {"account": "ACC1", "instrument": "AAPL.XNAS", "quantity": "1000"}}
    assert error_codes(gql(LOCATE, locate, key=trader)) == ["FORBIDDEN"]
    accounts = gql.data("{ tradingAccounts { creditLimit } }", key=trader)["tradingAccounts"]
    assert [a["creditLimit"] for a in accounts] == ["1000000000"]  # nothing changed
    assert _remaining(rt, tenant.id) == 0
    assert gql.data(ACCOUNT, raise_limit, key=officer)["upsertTradingAccount"]["creditLimit"] == "99999999999"
    assert gql.data(LOCATE, locate, key=officer)["recordLocate"]["remaining"] == "1000"


def test_collar_by_mic_must_be_an_object(desk):
    gql, tenant, *_ = desk
    assert error_codes(gql(CONTROLS, {"input": {"collarPctByMic": ["XNAS"]}}, key=tenant.key)) == \
        ["CONTROLS_INVALID"]


def test_a_batch_claimed_one_by_one_after_a_collision_still_publishes(desk, monkeypatch):
    """The batch claim meets the unique constraint (another process took one ClOrdID): the
    orders claimed one at a time afterwards are published like any other claim."""
    _gql, tenant, clock, rt, _ = desk
    from gateway.trading.intake import OrderInput

    limit = str((quote(rt, clock).bid * D("0.97")).quantize(D("0.01")))
    taken = rt.orders.submit(tenant.id, None, OrderInput(unique("taken"), "ACC1", "AAPL", "BUY", "5",
                                                         "LIMIT", "DAY", limit_price=limit, mic="XNAS"))
    real = rt.orders._existing
    calls: list[int] = []

    def stale(session, cids):  # the pre-check read before the other process committed
        calls.append(1)
        return {} if len(calls) == 1 else real(session, cids)

    published: list[tuple[str, dict]] = []
    publish = rt.bus.publish

    def recording(topic, payload):
        published.append((topic, payload))
        return publish(topic, payload)

    monkeypatch.setattr(rt.orders, "_existing", stale)
    monkeypatch.setattr(rt.bus, "publish", recording)
    # A batch's events too, one by one through `recording` (Redis sends them in one call).
    monkeypatch.setattr(rt.bus, "publish_many", lambda items: publish_each(rt.bus, items))
    # A short sale without a locate: denied, so its claim is its only publication.
    fresh = OrderInput(unique("fresh"), "ACC1", "AAPL", "SELL_SHORT", "5", "MARKET", "IOC", mic="XNAS")
    again = OrderInput(taken.client_order_id, "ACC1", "AAPL", "BUY", "5", "LIMIT", "DAY",
                       limit_price=limit, mic="XNAS")
    results = rt.orders.submit_many(tenant.id, None, [again, fresh])
    assert results[0].replayed and results[0].order.id == taken.order.id
    denied = results[1].order
    assert not results[1].replayed and denied.status == "DENIED"
    assert any(t == orders_topic(tenant.id) and {k: p[k] for k in ("tenant_id", "id", "account",
                                                                    "status")}
               == {"tenant_id": tenant.id, "id": denied.id, "account": "ACC1", "status": "DENIED"}
               and [x["event"] for x in p["transitions"]] == ["COMPLIANCE_DENY"]
               for t, p in published)
    assert any(t == alerts_topic(tenant.id) and p["order_id"] == denied.id for t, p in published)
    assert not any(p.get("id") == taken.order.id for _, p in published)
    rt.orders.cancel(tenant.id, None, taken.order.id)


def test_reports_colliding_with_another_writer_are_applied_again(desk, monkeypatch, caplog):
    """Another writer (the stuck-order sweep, another process) moves an order between the
    moment its reports are read and written: the event numbers collide, nothing is half-written,
    and the reports are applied again on top of what the other writer committed."""
    import gateway.trading.service as service
    from gateway.trading import stream

    gql, tenant, clock, rt, _ = desk
    if rt.settings.is_sqlite:
        pytest.skip("SQLite serialises writers: another commit cannot land between read and write")
    limit = str((quote(rt, clock).bid * D("0.97")).quantize(D("0.01")))
    resting = gql.data(SUBMIT, {"input": order(ordType="LIMIT", timeInForce="DAY", limitPrice=limit)},
                       key=tenant.key)["submitOrder"]
    assert resting["status"] == "ACCEPTED"
    original = service.OrderService._positions_for
    raced: list[str] = []

    def other_writer_between_read_and_write(session, orders):
        orders = list(orders)
        if not raced and any(o["id"] == resting["id"] for o in orders):
            raced.append("done")
            with rt.db.system_transaction() as other:  # commits after this read, before its writes
                row = other.get(Order, resting["id"])
                row.version += 1
                other.add(OrderEvent(tenant_id=row.tenant_id, order_id=row.id, seq=row.version,
                                     event="NOTE", exec_type="NOTE", status_from=row.status,
                                     status_to=row.status, cum_qty=row.cum_qty,
                                     leaves_qty=row.leaves_qty, text="another writer", at=row.updated_at,
                                     stream_seq=stream.take(other, row.tenant_id, 1)))
        return original(session, orders)

    monkeypatch.setattr(service.OrderService, "_positions_for",
                        staticmethod(other_writer_between_read_and_write))
    cancelled = gql.data("mutation($id: ID!) { cancelOrder(id: $id) { status } }", {"id": resting["id"]},
                         key=tenant.key)["cancelOrder"]
    assert raced and cancelled["status"] == "CANCELED"
    assert "collided with another writer" in caplog.text
    with rt.db.tenant_session(tenant.id) as session:
        seqs = [e.seq for e in session.exec(select(OrderEvent).where(OrderEvent.order_id == resting["id"])
                                            .order_by(OrderEvent.seq))]
    assert seqs == list(range(1, len(seqs) + 1)) and len(seqs) >= 3


def test_the_venue_clock_sweeps_with_the_configured_age() -> None:
    import asyncio

    from gateway.trading.clock import SWEEP_EVERY, run_venue_clock

    class Orders:
        def __init__(self) -> None:
            self.ages: list[timedelta] = []
            self.rounds = 0

        def recover(self) -> None:
            pass

        def advance(self) -> None:
            self.rounds += 1

        def sweep_unsent(self, older_than: timedelta) -> int:
            self.ages.append(older_than)
            return 0

    async def tick(orders: Orders) -> None:
        task = asyncio.create_task(run_venue_clock(orders, interval=0.001,  # type: ignore[arg-type]
                                                   unsent_after=timedelta(minutes=7)))
        while orders.rounds < 2 * SWEEP_EVERY:
            await asyncio.sleep(0.005)
        task.cancel()

    orders = Orders()
    asyncio.run(tick(orders))
    assert orders.ages and set(orders.ages) == {timedelta(minutes=7)}
