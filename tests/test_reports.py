"""Regulatory reports end to end: GraphQL starts a job, the embedded worker runs it over the
tenant's orders, fills and hedges, the file is stored and downloaded; invalid reports store
nothing; tenants are isolated."""

from __future__ import annotations

import hashlib
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import httpx
import pytest
from sqlmodel import select

from gateway.audit import AuditRecord
from gateway.fx.models import HedgePosition, Portfolio
from gateway.reports import ReportFile, mifid
from gateway.trading.models import Execution, Order, TradingAccount
from tests.support import error_codes, unique, user_key, wait_for

FIRM = "529900T8BM49AURSDO55"
CLIENT = "5493001KJTIIGC8Y1R12"
DEALER = "213800D1EI4B9WTWWD28"

START = """mutation($kind: RegulatoryReportKind!, $from: DateTime!, $to: DateTime!,
  $format: ReportFormat, $lei: String, $cp: String, $key: String) {
  startRegulatoryReport(kind: $kind, from: $from, to: $to, format: $format, reportingLei: $lei,
    counterpartyLei: $cp, idempotencyKey: $key) { id kind status } }"""
JOB = "query($id: ID!) { job(id: $id) { status result error { code message } } }"
FILES = """query($first: Int, $after: String) { reportFiles(first: $first, after: $after) {
  edges { node { id jobId kind filename mediaType size rows sha256 downloadUrl } }
  pageInfo { hasNextPage endCursor } } }"""


def window():
    now = datetime.now(UTC)
    return (now - timedelta(hours=1)).isoformat(), (now + timedelta(hours=1)).isoformat()


def record_fills(runtime, tenant, *, isin="US0378331005", lei=CLIENT):
    """Two orders of a legal-entity client as the orders domain leaves them: a buy routed by
    the router and fully filled in two fills, a directed short sale partly filled."""
    now = datetime.now(UTC)
    code = unique("acct")
    with runtime.db.tenant_transaction(tenant.id) as session:
        session.add(TradingAccount(code=code, currency="USD", client_type="LEGAL_ENTITY",
                                   domicile="DE", lei=lei))
        buy = Order(client_order_id=unique("c"), account=code, symbol="AAPL", isin=isin, mic="XNAS",
                    requested_mic="SMART", side="BUY", ord_type="LIMIT", time_in_force="DAY",
                    quantity=Decimal(100), limit_price=Decimal(101), currency="USD", status="FILLED",
                    cum_qty=Decimal(100), routing={"reason": "BEST_PRICE_AFTER_FEES",
                                                   "arrival_price": "100"},
                    created_by=tenant.admin_id, created_at=now)
        short = Order(client_order_id=unique("c"), account=code, symbol="AAPL", isin=isin,
                      mic="XNAS", requested_mic="XNAS", side="SELL_SHORT", ord_type="LIMIT",
                      time_in_force="DAY", quantity=Decimal(50), limit_price=Decimal(99),
                      currency="USD", status="PARTIALLY_FILLED", cum_qty=Decimal(20),
                      routing={"reason": "DIRECTED", "arrival_price": "100"},
                      created_by=tenant.admin_id, created_at=now)
        session.add_all([buy, short])
        session.flush()
        fills = [Execution(order_id=buy.id, exec_id="x1", account=code, symbol="AAPL", side="BUY",
                           last_qty=Decimal(60), last_px=Decimal("99.90"), currency="USD", mic="XNAS",
                           at=now + timedelta(milliseconds=40)),
                 Execution(order_id=buy.id, exec_id="x2", account=code, symbol="AAPL", side="BUY",
                           last_qty=Decimal(40), last_px=Decimal("99.80"), currency="USD", mic="XNAS",
                           at=now + timedelta(milliseconds=90)),
                 Execution(order_id=short.id, exec_id="x3", account=code, symbol="AAPL",
                           side="SELL_SHORT", last_qty=Decimal(20), last_px=Decimal("99.50"),
                           currency="USD", mic="XNAS", at=now + timedelta(milliseconds=10))]
        session.add_all(fills)
    return buy, short, fills


def run_report(gql, key, kind, **variables):
    start, end = window()
    job = gql.data(START, {"kind": kind, "from": start, "to": end, **variables}, key=key)
    job_id = job["startRegulatoryReport"]["id"]
    return job_id, wait_for(lambda: _finished(gql, key, job_id), timeout=60)


def _finished(gql, key, job_id):
    job = gql.data(JOB, {"id": job_id}, key=key)["job"]
    return job if job["status"] in {"SUCCEEDED", "FAILED", "CANCELED"} else None


def download(server, key, url):
    return httpx.get(server.url + url, headers={"authorization": f"Bearer {key}"}, timeout=30)


def identify_admin(runtime, tenant):
    """What a tenant admin records with setUserNationalIdentifier before a MiFIR report."""
    runtime.tenancy.set_national_id(tenant.id, tenant.admin_id, identifier="FR19800101JEAN#DUPON",
                                    scheme="CONCAT", branch_country="FR")


def test_mifid_xml_report_end_to_end_with_download(runtime, gql, server, tenant, other_tenant):
    _, _, fills = record_fills(runtime, tenant)
    identify_admin(runtime, tenant)
    job_id, job = run_report(gql, tenant.key, "MIFID_TRANSACTIONS", format="XML", lei=FIRM)
    assert job["status"] == "SUCCEEDED", job
    result = job["result"]
    assert result["rows"] == 3 and result["kind"] == "MIFID_TRANSACTIONS"
    [entry] = result["files"]
    got = download(server, tenant.key, entry["downloadUrl"])
    assert got.status_code == 200 and got.headers["content-type"].startswith("application/xml")
    assert hashlib.sha256(got.content).hexdigest() == entry["sha256"] == got.headers["x-content-sha256"]
    assert mifid.xml_problems(got.content) == []
    text = "".join(got.text.split())  # without the pretty-printing's white space
    assert text.count("<Tx><New>") == 3
    refs = [f.id.replace("-", "").upper() for f in fills]
    assert all(f"<TxId>{r}</TxId><ExctgPty>{FIRM}</ExctgPty>" in text for r in refs)
    assert (f"<Buyr><AcctOwnr><Id><LEI>{CLIENT}</LEI></Id></AcctOwnr></Buyr>"
            "<Sellr><AcctOwnr><Id><MIC>XNAS</MIC></Id></AcctOwnr></Sellr>") in text
    assert "<ShrtSellgInd>SESH</ShrtSellgInd>" in text
    assert tenant.admin_id not in text

    files = gql.data(FILES, {"first": 5}, key=tenant.key)["reportFiles"]["edges"]
    assert files[0]["node"]["id"] == entry["id"] and files[0]["node"]["jobId"] == job_id
    with runtime.db.tenant_session(tenant.id) as session:
        audit = session.exec(select(AuditRecord).where(AuditRecord.tenant_id == tenant.id,
                                                       AuditRecord.kind == "report.generated")).all()
    assert [a.subject for a in audit] == [entry["id"]] and audit[0].payload["sha256"] == entry["sha256"]

    # Another tenant: the id is not found, its own list and report are empty of A's data.
    assert download(server, other_tenant.key, entry["downloadUrl"]).status_code == 404
    assert gql.data(FILES, key=other_tenant.key)["reportFiles"]["edges"] == []
    _, theirs = run_report(gql, other_tenant.key, "MIFID_TRANSACTIONS", format="CSV", lei=FIRM)
    assert theirs["status"] == "SUCCEEDED" and theirs["result"]["rows"] == 0
    csv = download(server, other_tenant.key, theirs["result"]["files"][0]["downloadUrl"])
    assert csv.text.strip().count("\n") == 0  # the header only

    # Who may: a trader lists and downloads, but starts nothing; no key is 401.
    _, trader = user_key(runtime, tenant, "trader")
    assert download(server, trader, entry["downloadUrl"]).status_code == 200
    start, end = window()
    denied = gql(START, {"kind": "BEST_EXECUTION", "from": start, "to": end}, key=trader)
    assert error_codes(denied) == ["FORBIDDEN"]
    _, viewer = user_key(runtime, tenant, "viewer")
    assert download(server, viewer, entry["downloadUrl"]).status_code == 403
    assert httpx.get(server.url + entry["downloadUrl"]).status_code == 401
    assert download(server, tenant.key, "/reports/no-such-id").status_code == 404


def test_an_invalid_report_fails_and_stores_nothing(runtime, gql, tenant):
    record_fills(runtime, tenant, isin="US0378331006")  # check digit wrong
    identify_admin(runtime, tenant)
    job_id, job = run_report(gql, tenant.key, "MIFID_TRANSACTIONS", format="XML", lei=FIRM)
    assert job["status"] == "FAILED" and job["error"]["code"] == "REPORT_INVALID"
    assert "3 problem(s)" in job["error"]["message"]
    assert "ISIN 'US0378331006' fails its check digit" in job["error"]["message"]
    with runtime.db.tenant_session(tenant.id) as session:
        assert session.exec(select(ReportFile).where(ReportFile.job_id == job_id)).all() == []
        assert session.exec(select(AuditRecord).where(AuditRecord.tenant_id == tenant.id,
                                                      AuditRecord.kind == "report.generated")).all() == []


@pytest.mark.parametrize(("variables", "code"), [
    ({"kind": "MIFID_TRANSACTIONS", "lei": "529900T8BM49AURSDO56"}, "LEI_INVALID"),
    ({"kind": "MIFID_TRANSACTIONS"}, "LEI_MISSING"),
    ({"kind": "CFTC_SWAPS", "lei": FIRM}, "LEI_MISSING"),  # its counterpartyLei
    ({"kind": "BEST_EXECUTION", "format": "XML"}, "REPORT_FORMAT_UNSUPPORTED"),
    ({"kind": "BEST_EXECUTION", "swap": True}, "REPORT_PERIOD_INVALID"),
])
def test_bad_requests_are_refused_before_any_job(runtime, gql, tenant, variables, code):
    start, end = window()
    if variables.pop("swap", False):
        start, end = end, start
    before = gql.data("{ jobs(first: 100) { edges { node { id } } } }", key=tenant.key)
    body = gql(START, {"from": start, "to": end, **variables}, key=tenant.key)
    assert error_codes(body) == [code]
    assert gql.data("{ jobs(first: 100) { edges { node { id } } } }", key=tenant.key) == before


def test_best_execution_report(runtime, gql, server, tenant):
    record_fills(runtime, tenant)
    _, job = run_report(gql, tenant.key, "BEST_EXECUTION")
    assert job["status"] == "SUCCEEDED", job
    [venue] = job["result"]["summary"]["venues"]
    # AAPL.XNAS is an equity in market data. Buy: 100 filled at 99.86 against 100 arrival =
    # +14 bps on 100; short sale: 20 at 99.50 against 100 = -50 bps on 20;
    # weighted (1400 - 1000) / 120 = 3.33.
    assert venue == {"venue": "XNAS", "instrumentClass": "EQUITY", "orders": 2, "filled": 1,
                     "partiallyFilled": 1, "unfilled": 0, "quantityOrdered": "150",
                     "quantityFilled": "120", "fillRatio": "0.8", "priceImprovementBps": "3.33",
                     "ordersWithoutArrivalPrice": 0, "medianMsToFirstFill": "25",
                     "meanMsToFirstFill": "25",
                     # All the class's fills; one order from the router, whose record has no
                     # runner-up to measure a gain against.
                     "shareOfQuantity": "1", "smartOrders": 1, "routingGainBps": None}
    got = download(server, tenant.key, job["result"]["files"][0]["downloadUrl"])
    assert got.headers["content-type"].startswith("text/csv")
    assert got.text.split("\r\n")[1] == "XNAS,EQUITY,2,1,1,0,150,120,0.8,3.33,0,25,25,1,1,"


def test_cftc_report_from_hedge_forwards(runtime, gql, server, tenant):
    with runtime.db.tenant_transaction(tenant.id) as session:
        portfolio = Portfolio(name=unique("p"), base_currency="USD")
        session.add(portfolio)
        session.flush()
        session.add(HedgePosition(portfolio_id=portfolio.id, pair="EUR/USD", currency="EUR",
                                  base_currency="USD", notional=Decimal("-500000"),
                                  spot_rate=Decimal("1.08"), forward_rate=Decimal("1.0825"),
                                  tenor_days=30, trade_date=date(2026, 11, 23),
                                  value_date=date(2026, 12, 23), policy="STATIC",
                                  target_ratio=Decimal("0.5")))
    _, job = run_report(gql, tenant.key, "CFTC_SWAPS", lei=FIRM, cp=DEALER)
    assert job["status"] == "SUCCEEDED", job
    text = download(server, tenant.key, job["result"]["files"][0]["downloadUrl"]).text
    row = text.split("\r\n")[1].split(",")
    assert row[0].startswith(FIRM) and len(row[0]) == 52
    assert row[2:13] == [FIRM, DEALER, "SELLER", "FX", "ForeignExchange:Forward", "500000", "EUR",
                         "541250", "USD", "1.0825", "EUR/USD"]
    assert row[14:] == ["2026-11-23", "2026-12-23", "2026-12-23", "PHYS"]


def test_report_files_page(runtime, gql, tenant):
    for _ in range(3):
        assert run_report(gql, tenant.key, "BEST_EXECUTION")[1]["status"] == "SUCCEEDED"
    first = gql.data(FILES, {"first": 2}, key=tenant.key)["reportFiles"]
    assert len(first["edges"]) == 2 and first["pageInfo"]["hasNextPage"]
    rest = gql.data(FILES, {"first": 2, "after": first["pageInfo"]["endCursor"]},
                    key=tenant.key)["reportFiles"]
    assert len(rest["edges"]) == 1 and not rest["pageInfo"]["hasNextPage"]


def test_report_fields_are_tenant_isolated(runtime, gql, server, tenant, other_tenant):
    """startRegulatoryReport and reportFiles with tenant B's key and tenant A's ids and keys:
    A's idempotency key starts B's own job, A's job and files are not found, nothing of A's
    changes."""
    start, end = window()
    variables = {"kind": "BEST_EXECUTION", "from": start, "to": end, "key": "eod-1"}
    a_job = gql.data(START, variables, key=tenant.key)["startRegulatoryReport"]["id"]
    b_job = gql.data(START, variables, key=other_tenant.key)["startRegulatoryReport"]["id"]
    assert a_job != b_job
    assert gql.data(START, variables, key=tenant.key)["startRegulatoryReport"]["id"] == a_job
    done = wait_for(lambda: _finished(gql, tenant.key, a_job), timeout=60)
    wait_for(lambda: _finished(gql, other_tenant.key, b_job), timeout=60)
    assert error_codes(gql(JOB, {"id": a_job}, key=other_tenant.key)) == ["JOB_NOT_FOUND"]
    url = done["result"]["files"][0]["downloadUrl"]
    assert download(server, other_tenant.key, url).status_code == 404
    theirs = gql.data(FILES, {"first": 50}, key=other_tenant.key)["reportFiles"]["edges"]
    assert [e["node"]["jobId"] for e in theirs] == [b_job]
    assert download(server, tenant.key, url).status_code == 200
