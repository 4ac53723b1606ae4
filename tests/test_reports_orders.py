"""The reports over orders placed the real way: GraphQL submitOrder on the simulated venues
(markets on a ManualClock, as tests/test_orders.py runs them), then the MiFID and best-execution
reports read what the order domain wrote (fills, routing record, account)."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, timedelta
from decimal import Decimal as D

import pytest

from gateway.app import create_app
from gateway.markets.clock import ManualClock
from gateway.reports import KINDS, mifid
from tests.support import GraphQLClient, LiveServer, onboard, with_clock

OPEN_NY = datetime(2025, 3, 12, 14, 0, tzinfo=UTC)  # a Wednesday, New York open since 13:30
FIRM = "529900T8BM49AURSDO55"
CLIENT = "5493001KJTIIGC8Y1R12"
ACCOUNT = """mutation($input: TradingAccountInput!) { upsertTradingAccount(input: $input) { id } }"""
SUBMIT = """mutation($input: SubmitOrderInput!) { submitOrder(input: $input) {
  id status mic requestedMic side cumQty routing } }"""
TRADES = """query($id: ID!) { trades(orderId: $id) { edges { node { lastQty lastPx } } } }"""


@pytest.fixture(scope="module")
def desk(runtime):
    clock = ManualClock(OPEN_NY + timedelta(hours=2))
    rt = with_clock(runtime, clock)
    with LiveServer(create_app(runtime=rt)) as live:
        tenant = onboard(rt)
        gql = GraphQLClient(live.url)
        gql.data(ACCOUNT, {"input": {"code": "FUND1", "currency": "USD", "domicile": "DE",
                                     "clientType": "LEGAL_ENTITY", "lei": CLIENT,
                                     "creditLimit": "1000000000", "equity": "500000000"}},
                 key=tenant.key)
        yield gql, tenant, rt


def submit(gql, tenant, cid, **fields):
    base = {"clientOrderId": cid, "account": "FUND1", "symbol": "AAPL", "mic": "XNAS",
            "side": "BUY", "quantity": "10", "ordType": "MARKET", "timeInForce": "IOC"}
    return gql.data(SUBMIT, {"input": {**base, **fields}}, key=tenant.key)["submitOrder"]


def test_reports_over_real_orders(desk):
    gql, tenant, rt = desk
    bought = submit(gql, tenant, "r-1", symbol="US0378331005", mic="SMART", quantity="25")
    sold = submit(gql, tenant, "r-2", side="SELL", quantity="10")
    assert bought["status"] == sold["status"] == "FILLED"
    # Denied by the price collar: routed to XNAS, never sent there, so no venue counts it.
    denied = submit(gql, tenant, "r-3", ordType="LIMIT", timeInForce="DAY", limitPrice="1.00")
    assert denied["status"] == "DENIED" and denied["mic"] == "XNAS"
    fills = {o["id"]: [e["node"] for e in gql.data(TRADES, {"id": o["id"]}, key=tenant.key)
                       ["trades"]["edges"]] for o in (bought, sold)}
    # Wide enough for the venues' clock and the wall clock both: the tenant is new.
    params = {"from": "2020-01-01T00:00:00+00:00",
              "to": (datetime.now(UTC) + timedelta(days=1)).isoformat(), "reportingLei": FIRM}

    gql.data("""mutation($user: ID!) { setUserNationalIdentifier(userId: $user,
      identifier: "DE19750315ANNA#SCHMI", scheme: CONCAT, branchCountry: "DE") { id } }""",
             {"user": tenant.admin_id}, key=tenant.key)
    xml = rt.reports.render(tenant.id, KINDS["MIFID_TRANSACTIONS"], {**params, "format": "XML"})
    assert mifid.xml_problems(xml.content) == [] and xml.rows == sum(len(f) for f in fills.values())
    text = "".join(xml.content.decode().split())
    assert text.count(f"<Buyr><AcctOwnr><Id><LEI>{CLIENT}</LEI>") == len(fills[bought["id"]])
    assert text.count(f"<Sellr><AcctOwnr><Id><LEI>{CLIENT}</LEI>") == len(fills[sold["id"]])
    assert text.count("<ShrtSellgInd>SELL</ShrtSellgInd>") == len(fills[sold["id"]])
    assert text.count("<ExctgPrsn><Algo>ALPHINTRA-SOR</Algo></ExctgPrsn>") == len(fills[bought["id"]])
    assert text.count("<InvstmtDcsnPrsn><Prsn><CtryOfBrnch>DE</CtryOfBrnch><Othr>"
                      "<Id>DE19750315ANNA#SCHMI</Id>") == xml.rows
    assert "<FinInstrm><Id>US0378331005</Id></FinInstrm>" in text and "<TradVn>XNAS</TradVn>" in text

    quality = rt.reports.render(tenant.id, KINDS["BEST_EXECUTION"], {**params, "format": "CSV"})
    # The smart-routed buy went to the best of AAPL's venues after fees, the sale to XNAS.
    rows = {r["Venue"]: r for r in csv.DictReader(io.StringIO(quality.content.decode()))}
    assert set(rows) == {bought["mic"], "XNAS"}
    assert {r["InstrumentClass"] for r in rows.values()} == {"EQUITY"}
    assert sum(int(r["Orders"]) for r in rows.values()) == sum(int(r["Filled"]) for r in rows.values()) == 2
    assert {r["FillRatio"] for r in rows.values()} == {"1"}
    assert sum(D(r["ShareOfQuantity"]) for r in rows.values()) == 1
    assert rows[bought["mic"]]["SmartOrders"] == "1" and D(rows[bought["mic"]]["RoutingGainBps"]) >= 0

    def bps(order):  # by hand from the fills and the routing record's arrival price
        qty = sum(D(f["lastQty"]) for f in fills[order["id"]])
        vwap = sum(D(f["lastQty"]) * D(f["lastPx"]) for f in fills[order["id"]]) / qty
        arrival = D(order["routing"]["arrival_price"])
        edge = arrival - vwap if order["side"] == "BUY" else vwap - arrival
        return edge / arrival * 10_000, qty

    for venue, row in rows.items():
        there = [bps(o) for o in (bought, sold) if o["mic"] == venue]
        expected = (sum(b * q for b, q in there) / sum(q for _, q in there)).quantize(D("0.01"))
        assert D(row["PriceImprovementBps"]) == expected

    # What the order domain appended to the trail (order events, compliance decisions) chains.
    trail = rt.audit.verify(tenant.id)
    assert trail.ok and trail.checked > 4
    kinds = {r.kind for r in rt.audit.records(tenant.id, first=100).items}
    assert {"tenant.created", "user.created", "apikey.created"} <= kinds and len(kinds) > 3
