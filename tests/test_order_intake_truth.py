"""Order intake that tells the truth (issue 17), through GraphQL on the simulated venues:
credit in the account's currency across currencies (failing closed without a rate), ClOrdID
idempotency that answers replays and refuses conflicts, the duplicate guard with time in
force and without killed orders, plain decimals on the wire and in audit payloads, specific
codes for lot and session problems, ISO 4217 / ISO 3166 checks, and FX holdings that are never
silently replaced."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from decimal import Decimal as D

import pytest

from gateway.app import create_app
from gateway.errors import DomainError
from gateway.markets.clock import ManualClock
from gateway.trading.routing import ConnectorEntry, SmartOrderRouter
from plugins.sdk import OrderRequest, OrdType, Side, TimeInForce, VenueQuote
from tests.support import GraphQLClient, LiveServer, error_codes, onboard, unique, with_clock
from tests.test_orders import (
    ACCOUNT,
    CONTROLS,
    OPEN_NY,
    SUBMIT,
    SUBMIT_MANY,
    next_open_minute,
    order,
    quote,
)

EXPONENT = re.compile(r"\d(?:\.\d+)?E[+-]?\d")  # Decimal's str(): 1E+1, 6.01E+4, 1E-7
DECISIONS = "query($id: ID!) { complianceDecisions(orderId: $id) { edges { node { record } } } }"


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


def _eur_order(rt, clock, quantity: str, cid: str | None = None) -> dict:
    """A passive SAP order on XETR (EUR), 3 % under the bid: it rests, holding credit."""
    q = quote(rt, clock, "SAP.XETR")
    price = (q.bid * D("0.97") / D("0.02")).quantize(D(1)) * D("0.02")
    return order(cid, account="USD1", symbol="SAP", mic="XETR", ordType="LIMIT", timeInForce="GTC",
                 limitPrice=str(price), quantity=quantity)


def _usd_account(gql, tenant, code="USD1", credit="1000000"):
    gql.data(ACCOUNT, {"input": {"code": code, "currency": "USD", "domicile": "US",
                                 "creditLimit": credit, "equity": "100000000"}}, key=tenant.key)


# -- credit across currencies --------------------------------------------------------------------

def test_open_orders_in_another_currency_use_the_accounts_credit(desk):
    gql, tenant, clock, rt, _ = desk
    _usd_account(gql, tenant)
    rate = rt.fx.rate("EUR", "USD", clock.now()).rate
    first = _eur_order(rt, clock, "3000")
    value = D(first["quantity"]) * D(first["limitPrice"]) * rate  # about $380 k each
    assert D(300_000) < value < D(450_000)
    taken = []
    for quantity in ("3000", "3001"):  # not alike: the duplicate guard stays out of it
        o = gql.data(SUBMIT, {"input": _eur_order(rt, clock, quantity)}, key=tenant.key)["submitOrder"]
        assert o["status"] in ("ACCEPTED", "PENDING"), (o["rejectCode"], o["rejectText"])
        taken.append(o)
    # Two resting EUR orders hold about $760 k: a third does not fit in $1 M.
    third = gql.data(SUBMIT, {"input": _eur_order(rt, clock, "3002")}, key=tenant.key)["submitOrder"]
    assert third["status"] == "DENIED" and third["rejectCode"] == "COMPLIANCE_CREDIT_LIMIT", third
    # Nor does a $400 k USD order on top of them.
    q = quote(rt, clock)
    limit = (q.bid * D("0.97")).quantize(D("0.01"))
    usd = gql.data(SUBMIT, {"input": order(account="USD1", ordType="LIMIT", timeInForce="GTC",
                                           limitPrice=str(limit),
                                           quantity=str((D(400_000) / limit).quantize(D(1))))},
                   key=tenant.key)["submitOrder"]
    assert usd["status"] == "DENIED" and usd["rejectCode"] == "COMPLIANCE_CREDIT_LIMIT", usd
    # The denial is measured in dollars: what is left after the EUR orders, converted.
    edges = gql.data(DECISIONS, {"id": usd["id"]}, key=tenant.key)["complianceDecisions"]["edges"]
    available = D(edges[0]["node"]["record"]["denials"][0]["limit"])
    held = sum(D(o["quantity"]) * D(o["limitPrice"]) * rate for o in taken)
    assert abs(available - (D(1_000_000) - held)) < D("0.01")
    for o in taken:
        gql.data("mutation($id: ID!) { cancelOrder(id: $id) { status } }", {"id": o["id"]}, key=tenant.key)


def test_credit_fails_closed_when_an_open_orders_currency_has_no_rate(desk, monkeypatch):
    gql, tenant, clock, rt, _ = desk
    _usd_account(gql, tenant)
    resting = gql.data(SUBMIT, {"input": _eur_order(rt, clock, "100")}, key=tenant.key)["submitOrder"]
    assert resting["status"] in ("ACCEPTED", "PENDING"), resting
    real = rt.orders._fx

    def no_eur(base, quote_, at):
        if "EUR" in (base, quote_):
            raise DomainError("no EUR rate", code="FX_RATE_UNAVAILABLE")
        return real(base, quote_, at)

    monkeypatch.setattr(rt.orders, "_fx", no_eur)
    # A small USD buy: its own value is known, but the credit the EUR order holds is not.
    usd = gql.data(SUBMIT, {"input": order(account="USD1", quantity="1")}, key=tenant.key)["submitOrder"]
    assert usd["status"] == "DENIED" and usd["rejectCode"] == "COMPLIANCE_CREDIT_FX_UNAVAILABLE", usd
    monkeypatch.setattr(rt.orders, "_fx", real)
    gql.data("mutation($id: ID!) { cancelOrder(id: $id) { status } }", {"id": resting["id"]}, key=tenant.key)


# -- idempotency -------------------------------------------------------------------------------

def test_a_replay_answers_the_first_order_and_a_changed_one_is_a_conflict(desk):
    gql, tenant, *_ = desk
    cid = unique("idem")
    first = gql.data(SUBMIT_MANY, {"inputs": [order(cid)]}, key=tenant.key)["submitOrders"][0]
    assert not first["replayed"] and first["order"]["status"] == "FILLED"
    again = gql.data(SUBMIT_MANY, {"inputs": [order(cid)]}, key=tenant.key)["submitOrders"][0]
    assert again["replayed"] and again["order"]["id"] == first["order"]["id"] and again["error"] is None
    changed = gql.data(SUBMIT_MANY, {"inputs": [order(cid, side="SELL", symbol="MSFT", quantity="7")]},
                       key=tenant.key)["submitOrders"][0]
    assert changed["order"] is None and changed["error"]["code"] == "CLORDID_CONFLICT", changed
    assert changed["error"]["details"]["orderId"] == first["order"]["id"]
    assert set(changed["error"]["details"]["fields"]) >= {"side", "symbol", "quantity"}
    # submitOrder says the same, as an error.
    body = gql(SUBMIT, {"input": order(cid, quantity="11")}, key=tenant.key)
    assert error_codes(body) == ["CLORDID_CONFLICT"]
    replay = gql.data(SUBMIT, {"input": order(cid)}, key=tenant.key)["submitOrder"]
    assert replay["id"] == first["order"]["id"]


def test_one_client_order_id_twice_in_a_batch_is_an_error_for_the_repeat(desk):
    gql, tenant, *_ = desk
    cid = unique("twice")
    batch = gql.data(SUBMIT_MANY, {"inputs": [order(cid), order(unique("other"), quantity="2"),
                                              order(cid, quantity="3")]},
                     key=tenant.key)["submitOrders"]
    assert batch[0]["order"]["status"] == "FILLED" and batch[0]["error"] is None
    assert batch[1]["order"]["status"] == "FILLED"
    assert batch[2]["order"] is None and batch[2]["error"]["code"] == "CLORDID_DUPLICATE_IN_BATCH"
    assert batch[2]["error"]["details"]["index"] == 0
    # Even an identical repeat: a batch names each order once.
    cid = unique("same")
    batch = gql.data(SUBMIT_MANY, {"inputs": [order(cid), order(cid)]}, key=tenant.key)["submitOrders"]
    assert batch[0]["error"] is None and batch[1]["error"]["code"] == "CLORDID_DUPLICATE_IN_BATCH"
    orders = gql.data("query($c: String) { orders(filter: {clientOrderId: $c}) { edges { node { id } } } }",
                      {"c": cid}, key=tenant.key)["orders"]["edges"]
    assert len(orders) == 1


# -- the duplicate guard -------------------------------------------------------------------------

def test_the_duplicate_guard_skips_killed_orders_and_tells_time_in_force_apart(desk):
    gql, tenant, clock, rt, _ = desk
    # The guard holds for an order that traded ...
    filled = gql.data(SUBMIT, {"input": order(quantity="3")}, key=tenant.key)["submitOrder"]
    assert filled["status"] == "FILLED"
    copy = gql.data(SUBMIT, {"input": order(quantity="3")}, key=tenant.key)["submitOrder"]
    assert copy["status"] == "DENIED" and copy["rejectCode"] == "COMPLIANCE_DUPLICATE_ORDER"
    q = quote(rt, clock)
    big = str(q.ask_size * 100)  # more than the whole ladder (its participation cap): a FOK is killed
    fok = gql.data(SUBMIT, {"input": order(timeInForce="FOK", quantity=big)}, key=tenant.key)["submitOrder"]
    assert fok["status"] == "CANCELED" and fok["cumQty"] == "0", fok
    # The killed FOK traded nothing: the same FOK again is not a duplicate of it ...
    again = gql.data(SUBMIT, {"input": order(timeInForce="FOK", quantity=big)}, key=tenant.key)["submitOrder"]
    assert again["status"] != "DENIED", again
    # ... nor is an IOC of the same size at the same instant.
    ioc = gql.data(SUBMIT, {"input": order(timeInForce="IOC", quantity=big)}, key=tenant.key)["submitOrder"]
    assert ioc["status"] != "DENIED", ioc
    # A resting DAY order and an IOC alike in all but time in force are different orders.
    below = str((quote(rt, clock).bid * D("0.95")).quantize(D("0.01")))
    day = gql.data(SUBMIT, {"input": order(ordType="LIMIT", timeInForce="DAY", limitPrice=below)},
                   key=tenant.key)["submitOrder"]
    assert day["status"] == "ACCEPTED", day
    twin = gql.data(SUBMIT, {"input": order(ordType="LIMIT", timeInForce="IOC", limitPrice=below)},
                    key=tenant.key)["submitOrder"]
    assert twin["status"] != "DENIED", twin
    # ... and for one still alive.
    repeat = gql.data(SUBMIT, {"input": order(ordType="LIMIT", timeInForce="DAY", limitPrice=below)},
                      key=tenant.key)["submitOrder"]
    assert repeat["status"] == "DENIED" and repeat["rejectCode"] == "COMPLIANCE_DUPLICATE_ORDER"
    gql.data("mutation($id: ID!) { cancelOrder(id: $id) { status } }", {"id": day["id"]}, key=tenant.key)


# -- plain decimals ------------------------------------------------------------------------------

def test_decimals_are_plain_on_the_wire_in_messages_and_in_audit_payloads(desk):
    gql, tenant, clock, rt, _ = desk
    gql.data(CONTROLS, {"input": {"collarPct": "10", "maxOrderQuantity": "50000"}}, key=tenant.key)
    q = quote(rt, clock)
    far = (q.ask * D("1.5")).quantize(D("0.01"))
    body = gql(SUBMIT, {"input": order(ordType="LIMIT", timeInForce="DAY", limitPrice=str(far),
                                       quantity="5e1")}, key=tenant.key)
    o = body["data"]["submitOrder"]
    assert o["status"] == "DENIED" and o["rejectCode"] == "COMPLIANCE_PRICE_COLLAR"
    assert o["quantity"] == "50" and "10%" in o["rejectText"], o["rejectText"]
    decisions = gql.data(DECISIONS, {"id": o["id"]}, key=tenant.key)["complianceDecisions"]["edges"]
    controls = gql.data("{ complianceControls { collarPct maxOrderQuantity } }", key=tenant.key)
    account = gql.data(ACCOUNT, {"input": {"code": "TINY", "currency": "USD", "domicile": "US",
                                           "creditLimit": "0.0000001", "equity": "60100"}},
                       key=tenant.key)["upsertTradingAccount"]
    assert account["creditLimit"] == "0.0000001" and account["equity"] == "60100"
    assert controls["complianceControls"] == {"collarPct": "10", "maxOrderQuantity": "50000"}
    filled = gql.data(SUBMIT, {"input": order(quantity="1E+1")}, key=tenant.key)["submitOrder"]
    assert filled["status"] == "FILLED" and filled["quantity"] == "10"
    wire = json.dumps([body, decisions, controls, account, filled])
    assert not EXPONENT.search(wire), EXPONENT.findall(wire)
    records = [r.payload for kind in ("order.submitted", "compliance.controls_changed",
                                      "trading.account_changed", "order.fill")
               for r in rt.audit.records(tenant.id, kind=kind, first=50).items]
    assert records and not EXPONENT.search(json.dumps(records)), [
        p for p in records if EXPONENT.search(json.dumps(p))][:2]


# -- lot, tick and session ----------------------------------------------------------------------

def test_lot_size_and_closed_venues_have_their_own_codes(desk):
    gql, tenant, *_ = desk
    # Toyota trades in lots of 100 on XTKS, which is also closed at this hour.
    body = gql(SUBMIT, {"input": order(symbol="7203", mic="XTKS", quantity="50", timeInForce="DAY")},
               key=tenant.key)
    assert error_codes(body) == ["ORDER_LOT_SIZE"], body
    assert body["errors"][0]["extensions"]["alternatives"][0]["status"] == "LOT_SIZE"
    body = gql(SUBMIT, {"input": order(symbol="7203", mic="XTKS", quantity="100", timeInForce="IOC")},
               key=tenant.key)
    assert error_codes(body) == ["VENUE_CLOSED"], body
    assert body["errors"][0]["extensions"]["alternatives"][0]["status"] == "SESSION_CLOSED"


class _Refusing:
    def __init__(self, name, mic, code):
        self.name, self._mic, self._code = name, mic, code

    def mics(self):
        return [self._mic]

    def quote_for(self, order):
        return VenueQuote(order.mic, None, D(0), D(1), reject_code=self._code)


def _request(mic="SMART"):
    return OrderRequest("r1", "A", "X", mic, Side.BUY, OrdType.LIMIT, TimeInForce.DAY, D(10), D("1.005"),
                        None, "USD", None, datetime(2025, 3, 12, 14, tzinfo=UTC))


def test_the_router_names_one_shared_reason_and_keeps_route_unavailable_for_mixed_ones():
    ticks = SmartOrderRouter([ConnectorEntry("p", _Refusing("a", "XAAA", "TICK_SIZE")),
                              ConnectorEntry("p", _Refusing("b", "XBBB", "TICK_SIZE"))])
    with pytest.raises(DomainError) as caught:
        ticks.route(_request())
    assert caught.value.code == "ORDER_TICK_SIZE"
    assert [a["status"] for a in caught.value.details["alternatives"]] == ["TICK_SIZE", "TICK_SIZE"]
    mixed = SmartOrderRouter([ConnectorEntry("p", _Refusing("a", "XAAA", "TICK_SIZE")),
                              ConnectorEntry("p", _Refusing("b", "XBBB", "LOT_SIZE"))])
    with pytest.raises(DomainError) as caught:
        mixed.route(_request())
    assert caught.value.code == "ROUTE_UNAVAILABLE"


# -- ISO codes, LEI, FX holdings ---------------------------------------------------------------

def test_accounts_take_iso_currencies_and_countries_only(desk):
    gql, tenant, *_ = desk
    base = {"code": "ISO1", "currency": "USD", "domicile": "US"}
    assert error_codes(gql(ACCOUNT, {"input": {**base, "currency": "XYZ"}}, key=tenant.key)) == [
        "CURRENCY_INVALID"]
    assert error_codes(gql(ACCOUNT, {"input": {**base, "domicile": "QQ"}}, key=tenant.key)) == [
        "DOMICILE_INVALID"]
    ok = gql.data(ACCOUNT, {"input": {**base, "currency": "chf", "domicile": "ch"}},
                  key=tenant.key)["upsertTradingAccount"]
    assert (ok["currency"], ok["domicile"]) == ("CHF", "CH")


def test_a_blank_lei_on_a_legal_entity_is_missing_not_invalid(desk):
    gql, tenant, _clock, rt, _ = desk
    gql.data(ACCOUNT, {"input": {"code": "EU2", "currency": "EUR", "domicile": "FR",
                                 "clientType": "LEGAL_ENTITY", "lei": "   ", "creditLimit": "1000000",
                                 "equity": "1000000"}}, key=tenant.key)
    from gateway.trading.models import TradingAccount

    with rt.db.tenant_transaction(tenant.id) as session:  # a row written before the LEI check
        row = session.exec(__import__("sqlmodel").select(TradingAccount)
                           .where(TradingAccount.code == "EU2")).one()
        row.lei = ""
        session.add(row)
    # A passive limit order: the venue takes it whether Frankfurt is open or not.
    o = gql.data(SUBMIT, {"input": {**_eur_order(rt, _clock, "10"), "account": "EU2"}},
                 key=tenant.key)["submitOrder"]
    assert (o["status"], o["rejectCode"]) == ("DENIED", "COMPLIANCE_LEI_MISSING"), o["rejectText"]


def test_record_position_refuses_a_holding_in_another_currency(desk):
    gql, tenant, *_ = desk
    pid = gql.data('mutation { createPortfolio(input: {name: "iso", baseCurrency: "USD"}) { id } }',
                   key=tenant.key)["createPortfolio"]["id"]
    record = ("mutation($i: RecordPositionInput!) { recordPosition(input: $i) { id currency quantity } }")
    held = {"portfolio": pid, "instrument": "ASML.XAMS", "mic": "XAMS", "currency": "EUR",
            "quantity": "100", "price": "600"}
    first = gql.data(record, {"i": held}, key=tenant.key)["recordPosition"]
    body = gql(record, {"i": {**held, "currency": "USD", "quantity": "5"}}, key=tenant.key)
    assert error_codes(body) == ["POSITION_CURRENCY_MISMATCH"], body
    body = gql(record, {"i": {**held, "currency": "ZZZ"}}, key=tenant.key)
    assert error_codes(body) == ["CURRENCY_INVALID"]
    same = gql.data(record, {"i": {**held, "quantity": "120"}}, key=tenant.key)["recordPosition"]
    assert same["id"] == first["id"] and same["currency"] == "EUR" and same["quantity"] == "120"
