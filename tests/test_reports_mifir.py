"""MiFIR transaction reports as regulators read them (issue 17), through GraphQL: the README's
order followed by its report succeeds with the crypto trade listed and left out; a report is
scoped by instrument class, venue and account; the document is ISO 20022 auth.016
(Document/FinInstrmRptgTxRpt/Tx/New) and passes the XSD written from its message definition;
the decision maker is a natural person's national identifier or an algorithm, never a user id,
and a missing one is REPORT_IDENTIFIER_MISSING."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import httpx
from lxml import etree
from sqlmodel import select

from gateway.reports import mifid
from gateway.trading.models import Execution, Order, TradingAccount
from tests.support import error_codes, unique, user_key, wait_for

FIRM = "529900T8BM49AURSDO55"
CLIENT = "5493001KJTIIGC8Y1R12"
APPLE, SAP = "US0378331005", "DE0007164600"
NS = {"a": mifid.NAMESPACE}
CONCAT = "FR19800101JEAN#DUPON"  # French national, born 1 Jan 1980, Jean Dupont

START = """mutation($kind: RegulatoryReportKind!, $from: DateTime!, $to: DateTime!,
  $format: ReportFormat, $lei: String, $scope: ReportScopeInput) {
  startRegulatoryReport(kind: $kind, from: $from, to: $to, format: $format, reportingLei: $lei,
    scope: $scope) { id } }"""
PLAIN = """mutation($kind: RegulatoryReportKind!, $from: DateTime!, $to: DateTime!,
  $format: ReportFormat, $lei: String) {
  startRegulatoryReport(kind: $kind, from: $from, to: $to, format: $format, reportingLei: $lei) {
    id } }"""
JOB = "query($id: ID!) { job(id: $id) { status result error { code message } } }"
SET_ID = """mutation($user: ID!, $id: String, $scheme: PersonIdScheme, $country: String) {
  setUserNationalIdentifier(userId: $user, identifier: $id, scheme: $scheme,
    branchCountry: $country) { id nationalIdentifier { identifier scheme branchCountry } } }"""


def window():
    now = datetime.now(UTC)
    return (now - timedelta(hours=1)).isoformat(), (now + timedelta(hours=1)).isoformat()


def run_report(gql, key, kind="MIFID_TRANSACTIONS", **variables):
    start, end = window()
    body = {"kind": kind, "from": start, "to": end, "lei": FIRM, **variables}
    job_id = gql.data(START if "scope" in body else PLAIN, body, key=key)["startRegulatoryReport"]["id"]

    def finished():
        job = gql.data(JOB, {"id": job_id}, key=key)["job"]
        return job if job["status"] in {"SUCCEEDED", "FAILED", "CANCELED"} else None
    return wait_for(finished, timeout=60)


def download(server, key, job):
    [entry] = job["result"]["files"]
    got = httpx.get(server.url + entry["downloadUrl"], headers={"authorization": f"Bearer {key}"},
                    timeout=30)
    assert got.status_code == 200
    return got.content


def set_identifier(gql, tenant, user_id=None, identifier=CONCAT, scheme="CONCAT", country="FR"):
    return gql(SET_ID, {"user": user_id or tenant.admin_id, "id": identifier, "scheme": scheme,
                        "country": country}, key=tenant.key)


def record(runtime, tenant, *, account, symbol="AAPL", isin=APPLE, mic="XNAS", side="BUY",
           routed=True, client_type="LEGAL_ENTITY", lei=CLIENT, created_by=None, qty="10",
           px="100.5", currency="USD"):
    """One order with one fill, as the order domain leaves them; the account made if new."""
    now = datetime.now(UTC)
    with runtime.db.tenant_transaction(tenant.id) as session:
        if session.exec(select(TradingAccount).where(TradingAccount.code == account)).first() is None:
            session.add(TradingAccount(code=account, currency=currency, client_type=client_type,
                                       domicile="DE", lei=lei if client_type == "LEGAL_ENTITY" else None))
        order = Order(client_order_id=unique("c"), account=account, symbol=symbol, isin=isin,
                      mic=mic, requested_mic="SMART" if routed else mic, side=side,
                      ord_type="MARKET", time_in_force="IOC", quantity=Decimal(qty),
                      currency=currency, status="FILLED", cum_qty=Decimal(qty),
                      routing={"reason": "BEST_PRICE_AFTER_FEES" if routed else "DIRECTED"},
                      created_by=created_by or tenant.admin_id, created_at=now)
        session.add(order)
        session.flush()
        fill = Execution(order_id=order.id, exec_id=unique("x"), account=account, symbol=symbol,
                         side=side, last_qty=Decimal(qty), last_px=Decimal(px), currency=currency,
                         mic=mic, at=now)
        session.add(fill)
        session.flush()
        return fill.id.replace("-", "").upper()


def transactions(document: bytes) -> dict[str, etree._Element]:
    root = etree.fromstring(document)
    return {new.findtext("a:TxId", namespaces=NS): new
            for new in root.findall("a:FinInstrmRptgTxRpt/a:Tx/a:New", NS)}


# Bug 1: the README's order (bitcoin on ALPX) then its MiFID report failed REPORT_INVALID.
def test_readme_order_then_mifid_report_lists_the_crypto_trade_and_succeeds(gql, server, tenant):
    gql.data("""mutation { upsertTradingAccount(input: {code: "DESK-1", currency: "USD",
      domicile: "US", creditLimit: "1000000", equity: "1000000"}) { code } }""", key=tenant.key)
    ask = Decimal(gql.data('{ quote(instrument: "BTC-USD.ALPX") { ask } }', key=tenant.key)
                  ["quote"]["ask"])
    order = gql.data("""mutation($price: String!) { submitOrder(input: {clientOrderId: "readme-1",
      account: "DESK-1", symbol: "BTC-USD", mic: "ALPX", side: BUY, quantity: "0.05",
      ordType: LIMIT, timeInForce: IOC, limitPrice: $price}) { status cumQty } }""",
                     {"price": str((ask * Decimal("1.001")).quantize(Decimal("0.01")))},
                     key=tenant.key)["submitOrder"]
    assert order["status"] in {"FILLED", "PARTIALLY_FILLED"}, order
    for fmt in ("XML", "CSV"):
        job = run_report(gql, tenant.key, format=fmt)
        assert job["status"] == "SUCCEEDED", job
        summary = job["result"]["summary"]
        assert summary["transactions"] == 0 and job["result"]["rows"] == 0
        [excluded] = summary["excluded"]
        assert excluded["instrument"] == "BTC-USD.ALPX" and excluded["reason"] == "CRYPTO_ASSET"
        assert excluded["instrumentClass"] == "CRYPTO" and excluded["transactions"] >= 1
        assert "not a MiFID II financial instrument" in excluded["detail"]
    # XML: auth.016 holds at least one transaction, so there is no document; CSV: the header.
    assert run_report(gql, tenant.key, format="XML")["result"]["files"] == []
    csv = download(server, tenant.key, run_report(gql, tenant.key, format="CSV"))
    assert csv.decode().strip().count("\n") == 0


def test_an_instrument_without_isin_is_listed_not_failed_beside_reported_ones(runtime, gql, server,
                                                                            tenant):
    assert set_identifier(gql, tenant).get("errors") is None
    kept = record(runtime, tenant, account="FUND1")
    record(runtime, tenant, account="FUND1", symbol="PRIV", isin=None, mic="XNYS")
    job = run_report(gql, tenant.key, format="XML")
    assert job["status"] == "SUCCEEDED", job
    assert job["result"]["rows"] == 1
    assert job["result"]["summary"]["excluded"] == [{
        "instrument": "PRIV.XNYS", "instrumentClass": "UNKNOWN", "isin": None, "reason": "NO_ISIN",
        "detail": mifid._WHY["NO_ISIN"], "transactions": 1}]
    assert list(transactions(download(server, tenant.key, job))) == [kept]


# Bug 2: there was no way to scope a report.
def test_scope_by_instrument_class_venue_and_account(runtime, gql, server, tenant, other_tenant):
    assert set_identifier(gql, tenant).get("errors") is None
    apple_a = record(runtime, tenant, account="FUND-A")
    sap_a = record(runtime, tenant, account="FUND-A", symbol="SAP", isin=SAP, mic="XETR",
                   currency="EUR", px="140.2")
    apple_b = record(runtime, tenant, account="FUND-B")
    record(runtime, tenant, account="FUND-B", symbol="BTC-USD", isin=None, mic="ALPX")

    def reported(**scope):
        job = run_report(gql, tenant.key, format="XML", scope=scope)
        assert job["status"] == "SUCCEEDED", job
        return (set(transactions(download(server, tenant.key, job))),
                {e["instrument"] for e in job["result"]["summary"]["excluded"]},
                job["result"]["summary"]["scope"])

    assert reported() [:2] == ({apple_a, sap_a, apple_b}, {"BTC-USD.ALPX"})
    assert reported(venues=["XETR"]) == ({sap_a}, set(), {"venues": ["XETR"]})
    assert reported(accounts=["FUND-B"])[:2] == ({apple_b}, {"BTC-USD.ALPX"})
    assert reported(instrumentClasses=["EQUITY"])[:2] == ({apple_a, sap_a, apple_b}, set())
    assert reported(instrumentClasses=["EQUITY"], venues=["XNAS", "XETR"],
                    accounts=["FUND-A"])[:2] == ({apple_a, sap_a}, set())
    crypto_only = run_report(gql, tenant.key, format="XML", scope={"instrumentClasses": ["CRYPTO"]})
    assert crypto_only["status"] == "SUCCEEDED" and crypto_only["result"]["rows"] == 0
    assert [e["reason"] for e in crypto_only["result"]["summary"]["excluded"]] == ["CRYPTO_ASSET"]

    # Best execution takes the same scope.
    quality = run_report(gql, tenant.key, kind="BEST_EXECUTION", format="CSV", lei=None,
                         scope={"venues": ["XETR"]})
    assert [v["venue"] for v in quality["result"]["summary"]["venues"]] == ["XETR"]

    # Another tenant naming A's account codes gets its own trades only (none here).
    assert set_identifier(gql, other_tenant).get("errors") is None
    theirs_b = record(runtime, other_tenant, account="FUND-B")
    job = run_report(gql, other_tenant.key, format="XML", scope={"accounts": ["FUND-A", "FUND-B"]})
    assert job["status"] == "SUCCEEDED" and job["result"]["rows"] == 1
    assert set(transactions(download(server, other_tenant.key, job))) == {theirs_b}
    empty = run_report(gql, other_tenant.key, format="CSV", scope={"accounts": ["FUND-A"]})
    assert empty["status"] == "SUCCEEDED" and empty["result"]["rows"] == 0


def test_bad_scopes_are_refused_before_any_job(gql, tenant):
    start, end = window()
    for scope, kind, code in (({"venues": ["xnas"]}, "MIFID_TRANSACTIONS", "REPORT_SCOPE_INVALID"),
                              ({"instrumentClasses": ["equity"]}, "BEST_EXECUTION",
                               "REPORT_SCOPE_INVALID"),
                              ({"accounts": ["A" * 65]}, "MIFID_TRANSACTIONS", "REPORT_SCOPE_INVALID"),
                              ({"venues": ["XNAS"]}, "CFTC_SWAPS", "REPORT_SCOPE_UNSUPPORTED")):
        body = gql(START, {"kind": kind, "from": start, "to": end, "lei": FIRM, "scope": scope},
                   key=tenant.key)
        assert error_codes(body) == [code], (scope, body)


# Bug 3: the report was the project's own schema, not ISO 20022 auth.016.
def test_the_report_is_iso_20022_auth_016_and_passes_its_xsd(runtime, gql, server, tenant):
    assert set_identifier(gql, tenant).get("errors") is None
    bought = record(runtime, tenant, account="FUND1", qty="25", px="187.25")
    sold = record(runtime, tenant, account="FUND1", side="SELL_SHORT", routed=False, qty="5",
                  px="188")
    job = run_report(gql, tenant.key, format="XML")
    assert job["status"] == "SUCCEEDED", job
    document = download(server, tenant.key, job)
    assert mifid.xml_problems(document) == []
    root = etree.fromstring(document)
    assert root.tag == "{urn:iso:std:iso:20022:tech:xsd:auth.016.001.01}Document"
    assert [etree.QName(c).localname for c in root] == ["FinInstrmRptgTxRpt"]
    news = transactions(document)
    assert set(news) == {bought, sold}
    new = news[bought]
    assert [etree.QName(c).localname for c in new] == [
        "TxId", "ExctgPty", "InvstmtPtyInd", "SubmitgPty", "Buyr", "Sellr", "OrdrTrnsmssn", "Tx",
        "FinInstrm", "InvstmtDcsnPrsn", "ExctgPrsn", "AddtlAttrbts"]

    def text(element, path):
        return element.findtext(path, namespaces=NS)
    assert (text(new, "a:ExctgPty"), text(new, "a:InvstmtPtyInd"), text(new, "a:SubmitgPty")) == (
        FIRM, "true", FIRM)
    assert text(new, "a:Buyr/a:AcctOwnr/a:Id/a:LEI") == CLIENT
    assert text(new, "a:Sellr/a:AcctOwnr/a:Id/a:MIC") == "XNAS"
    assert text(new, "a:OrdrTrnsmssn/a:TrnsmssnInd") == "false"
    assert text(new, "a:Tx/a:TradgCpcty") == "AOTC" and text(new, "a:Tx/a:Qty/a:Unit") == "25"
    amount = new.find("a:Tx/a:Pric/a:Pric/a:MntryVal/a:Amt", NS)
    assert (amount.text, amount.get("Ccy")) == ("187.25", "USD")
    assert text(new, "a:Tx/a:TradVn") == "XNAS" and text(new, "a:FinInstrm/a:Id") == APPLE
    assert text(new, "a:Tx/a:TradDt").endswith("Z")
    assert text(new, "a:AddtlAttrbts/a:SctiesFincgTxInd") == "false"
    assert new.find("a:AddtlAttrbts/a:ShrtSellgInd", NS) is None
    short = news[sold]
    assert text(short, "a:Sellr/a:AcctOwnr/a:Id/a:LEI") == CLIENT
    assert text(short, "a:AddtlAttrbts/a:ShrtSellgInd") == "SESH"

    # The XSD holds the layout: elements out of order, a bad ISIN or LEI form are errors.
    moved = etree.fromstring(document)
    first = moved.find("a:FinInstrmRptgTxRpt/a:Tx/a:New", NS)
    first.append(first.find("a:TxId", NS))
    assert any("TxId" in p for p in mifid.xml_problems(etree.tostring(moved)))
    assert mifid.xml_problems(document.replace(APPLE.encode(), b"us0378331005"))
    assert mifid.xml_problems(document.replace(f"<ExctgPty>{FIRM}".encode(), b"<ExctgPty>FIRM"))


# Bug 4: the investment decision maker was a user UUID.
def test_decision_maker_is_a_national_identifier_or_an_algorithm_never_a_user_id(
        runtime, gql, server, tenant, other_tenant):
    routed = record(runtime, tenant, account="FUND1")
    directed = record(runtime, tenant, account="FUND1", routed=False)
    # Nothing recorded for the admin yet: a stable error naming the user, no file.
    job = run_report(gql, tenant.key, format="XML")
    assert job["status"] == "FAILED" and job["error"]["code"] == "REPORT_IDENTIFIER_MISSING"
    assert f"admin@{tenant.slug}.test" in job["error"]["message"]
    assert "decided 2 transaction(s)" in job["error"]["message"]

    # Malformed identifiers are refused; another tenant cannot set A's users'; a trader cannot.
    assert error_codes(set_identifier(gql, tenant, identifier="FR19801301JEAN#DUPON")) == [
        "NATIONAL_ID_INVALID"]
    assert error_codes(set_identifier(gql, tenant, identifier="JEAN")) == ["NATIONAL_ID_INVALID"]
    assert error_codes(set_identifier(gql, tenant, country="France")) == ["NATIONAL_ID_INVALID"]
    assert error_codes(gql(SET_ID, {"user": tenant.admin_id, "id": CONCAT, "scheme": "CONCAT",
                                    "country": "FR"}, key=other_tenant.key)) == ["USER_NOT_FOUND"]
    _, trader = user_key(runtime, tenant, "trader")
    assert error_codes(gql(SET_ID, {"user": tenant.admin_id, "id": CONCAT, "scheme": "CONCAT",
                                    "country": "FR"}, key=trader)) == ["FORBIDDEN"]

    recorded = set_identifier(gql, tenant, identifier="fr19800101jean#dupon")
    assert recorded["data"]["setUserNationalIdentifier"]["nationalIdentifier"] == {
        "identifier": CONCAT, "scheme": "CONCAT", "branchCountry": "FR"}
    job = run_report(gql, tenant.key, format="XML")
    assert job["status"] == "SUCCEEDED", job
    document = download(server, tenant.key, job)
    assert mifid.xml_problems(document) == []
    assert tenant.admin_id.encode() not in document
    news = transactions(document)
    for tx in (routed, directed):
        person = news[tx].find("a:InvstmtDcsnPrsn/a:Prsn", NS)
        assert person.findtext("a:CtryOfBrnch", namespaces=NS) == "FR"
        assert person.findtext("a:Othr/a:Id", namespaces=NS) == CONCAT
        assert person.findtext("a:Othr/a:SchmeNm/a:Prtry", namespaces=NS) == "CONCAT"
    assert news[routed].findtext("a:ExctgPrsn/a:Algo", namespaces=NS) == mifid.ROUTER_ID
    assert news[directed].findtext("a:ExctgPrsn/a:Prsn/a:Othr/a:Id", namespaces=NS) == CONCAT

    # A national identity number: the scheme's code; another user's decision: their own.
    other_id, _ = user_key(runtime, tenant, "trader")
    theirs = record(runtime, tenant, account="FUND1", created_by=other_id)
    assert set_identifier(gql, tenant, other_id, "IT RSSMRA80A01H501U".replace(" ", ""), "NIDN",
                          "IT").get("errors") is None
    news = transactions(download(server, tenant.key, run_report(gql, tenant.key, format="XML")))
    assert news[theirs].findtext("a:InvstmtDcsnPrsn/a:Prsn/a:Othr/a:Id", namespaces=NS) == \
        "ITRSSMRA80A01H501U"
    assert news[theirs].findtext("a:InvstmtDcsnPrsn/a:Prsn/a:Othr/a:SchmeNm/a:Cd",
                                 namespaces=NS) == "NIDN"
    assert news[routed].findtext("a:InvstmtDcsnPrsn/a:Prsn/a:Othr/a:Id", namespaces=NS) == CONCAT

    # Cleared: missing again.
    assert gql(SET_ID, {"user": other_id}, key=tenant.key).get("errors") is None
    assert run_report(gql, tenant.key, format="CSV")["error"]["code"] == "REPORT_IDENTIFIER_MISSING"


def test_a_natural_person_client_is_named_and_can_be_scoped_out(runtime, gql, server, tenant):
    assert set_identifier(gql, tenant).get("errors") is None
    fund = record(runtime, tenant, account="FUND1")
    record(runtime, tenant, account="JDOE-1", client_type="INDIVIDUAL")
    job = run_report(gql, tenant.key, format="XML")
    assert job["status"] == "FAILED" and job["error"]["code"] == "REPORT_IDENTIFIER_MISSING"
    assert "account JDOE-1 is a natural person" in job["error"]["message"]
    job = run_report(gql, tenant.key, format="XML", scope={"accounts": ["FUND1"]})
    assert job["status"] == "SUCCEEDED", job
    assert list(transactions(download(server, tenant.key, job))) == [fund]
