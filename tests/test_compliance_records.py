"""Compliance decision records stored compact (issue 14, gateway/trading/decisions.py): each
record the API answers is the one the decision wrote, key for key and in order, while the row
stores a third of the bytes; rows stored whole are read as they are; rule sets are the
tenant's own; the audit record says the decision once."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal as D

import pytest
from sqlmodel import select

from gateway.audit.models import AuditRecord
from gateway.cli import downgrade_database, migrate_database
from gateway.db import make_engine
from gateway.tenancy.models import Tenant
from gateway.trading.decisions import RULE_NS, RULE_SET, DecisionRecords, rule_set_id
from gateway.trading.models import ComplianceDecisionRow, ComplianceRuleSet, Order
from tests.support import GraphQLClient, onboard
from tests.test_orders import (  # noqa: F401 (venue: the module's fixture)
    ACCOUNT,
    SUBMIT,
    SUBMIT_MANY,
    next_open_minute,
    order,
    quote,
    venue,
)

RECORDS = """query($id: ID) { complianceDecisions(orderId: $id, first: 50) { edges { node {
  orderId clientOrderId passed record } } } }"""
AMEND = ("mutation($id: ID!, $q: String, $p: String) { amendOrder(id: $id, quantity: $q, "
         "limitPrice: $p) { status quantity } }")


@pytest.fixture
def desk(venue):  # noqa: F811
    live, clock, rt = venue
    clock.set(next_open_minute(rt, clock))
    tenant = onboard(rt)
    gql = GraphQLClient(live.url)
    gql.data(ACCOUNT, {"input": {"code": "ACC1", "currency": "USD", "domicile": "US",
                                 "creditLimit": "1000000000", "equity": "500000000"}},
             key=tenant.key)
    return gql, tenant, clock, rt


@pytest.fixture
def written(monkeypatch):
    """Every record as the decision wrote it, before it was compacted (the oracle)."""
    seen: dict[str, list[str]] = {}
    compact = DecisionRecords.compact

    def spy(self, row, record):
        seen.setdefault(row["order_id"], []).append(json.dumps(record))
        return compact(self, row, record)

    monkeypatch.setattr(DecisionRecords, "compact", spy)
    return seen


def _stored(rt, tenant_id, order_id):
    with rt.db.tenant_session(tenant_id) as session:
        return [r.record for r in session.exec(
            select(ComplianceDecisionRow).where(ComplianceDecisionRow.order_id == order_id)
            .order_by(ComplianceDecisionRow.created_at))]


def _answered(gql, tenant, order_id):
    edges = gql.data(RECORDS, {"id": order_id}, key=tenant.key)["complianceDecisions"]["edges"]
    return [json.dumps(e["node"]["record"]) for e in reversed(edges)]  # oldest first


def test_each_record_is_answered_as_the_decision_wrote_it_and_stored_in_fewer_bytes(desk, written):
    gql, tenant, clock, rt = desk
    q = quote(rt, clock)
    below = str((q.bid * D("0.97")).quantize(D("0.01")))
    far = str((q.bid * D("2")).quantize(D("0.01")))
    results = gql.data(SUBMIT_MANY, {"inputs": [
        order(ordType="LIMIT", timeInForce="DAY", limitPrice=below, quantity="40"),
        order(ordType="LIMIT", timeInForce="DAY", limitPrice=far),  # denied: the collar
        order(side="SELL_SHORT"),  # denied: no locate
    ]}, key=tenant.key)["submitOrders"]
    resting, denied, short = (r["order"] for r in results)
    assert resting["status"] == "ACCEPTED" and denied["status"] == short["status"] == "DENIED"
    # An amendment is decided again, with its own record ("amend").
    assert gql.data(AMEND, {"id": resting["id"], "q": "30"}, key=tenant.key)["amendOrder"][
        "quantity"] == "30"
    for o, decisions in ((resting, 2), (denied, 1), (short, 1)):
        assert _answered(gql, tenant, o["id"]) == written[o["id"]], o["id"]
        stored = _stored(rt, tenant.id, o["id"])
        assert len(stored) == decisions
        for record, whole in zip(stored, written[o["id"]], strict=True):
            full = json.loads(whole)
            assert RULE_SET in record and "timings_ns" not in record
            assert not {"tenant_id", "account", "decided_at", "order_id"} & set(record)
            # An amendment's decision names the order by the id the venue knows: kept.
            assert ("client_order_id" in record) == (full["client_order_id"] != o["clientOrderId"])
            assert len(record[RULE_NS]) == len(full["timings_ns"]) > 0
            assert len(json.dumps(record)) < 0.5 * len(whole)
    assert json.loads(written[resting["id"]][1])["amend"] is True
    assert json.loads(written[denied["id"]][0])["denials"][0]["code"] == "COMPLIANCE_PRICE_COLLAR"
    # One rule set per distinct list, the tenant's own.
    with rt.db.tenant_session(tenant.id) as session:
        sets = session.exec(select(ComplianceRuleSet)).all()
    assert {s.id for s in sets} == {r[RULE_SET] for o in (resting, denied, short)
                                    for r in _stored(rt, tenant.id, o["id"])}
    assert all(s.id == rule_set_id(s.rules) for s in sets)


def test_the_order_submitted_record_says_the_decision_once(desk, written):
    gql, tenant, _clock, rt = desk
    o = gql.data(SUBMIT, {"input": order()}, key=tenant.key)["submitOrder"]
    whole = json.loads(written[o["id"]][0])
    with rt.db.tenant_session(tenant.id) as session:
        record = session.exec(select(AuditRecord).where(
            AuditRecord.subject == o["id"], AuditRecord.kind == "order.submitted")).one()
    payload = record.payload
    compliance = payload["compliance"]
    # What the record's chain, subject or the order's own fields already say is not repeated...
    assert not {"tenant_id", "order_id", "timings_ns", "client_order_id", "account", "symbol",
                "mic", "side", "quantity"} & set(compliance)
    # ... and nothing else is lost: the decision comes back from the payload and the record.
    rebuilt = {**{k: payload[k] for k in ("client_order_id", "account", "symbol", "mic", "side",
                                          "quantity")},
               "tenant_id": tenant.id, "order_id": record.subject, **compliance}
    assert rebuilt == {k: v for k, v in whole.items() if k != "timings_ns"}


def test_records_stored_whole_are_read_as_they_are(desk):
    gql, tenant, _clock, rt = desk
    o = gql.data(SUBMIT, {"input": order()}, key=tenant.key)["submitOrder"]
    before = _answered(gql, tenant, o["id"])
    with rt.db.tenant_transaction(tenant.id) as session:
        row = session.exec(select(ComplianceDecisionRow).where(
            ComplianceDecisionRow.order_id == o["id"])).one()
        row.record = json.loads(before[0])  # as rows were stored before compaction
        row.record_compact = False
    assert _answered(gql, tenant, o["id"]) == before


def test_a_record_that_would_not_come_back_exactly_is_stored_whole():
    records = DecisionRecords()
    row = {"client_order_id": "c", "tenant_id": "t", "account": "A", "passed": True,
           "jurisdictions": ["US"], "decided_at": None, "elapsed_ns": 5, "order_id": "o"}
    shuffled = {"account": "A", "client_order_id": "c", "timings_ns": [["US", "r", 1]]}
    assert records.compact(row, shuffled) == (shuffled, None)
    odd = {"client_order_id": "c", "timings_ns": [["US", "r", 1.5]]}  # not nanoseconds
    assert records.compact(row, odd) == (odd, None)
    unnamed = {"client_order_id": "c", "timings_ns": [["US", ["a", "b"], 1]]}  # unhashable too
    assert records.compact(row, unnamed) == (unnamed, None)
    # A key the columns would supply that the record never had: it would come back, so whole.
    lacking = {"client_order_id": "c", "timings_ns": [["US", "r", 1]]}
    stored, rule_set = records.compact(row, lacking)
    assert stored == lacking and rule_set is None


def test_a_tenant_reads_only_its_own_rule_sets(desk, written):
    gql, tenant, _clock, rt = desk
    other = onboard(rt)
    gql.data(ACCOUNT, {"input": {"code": "ACC1", "currency": "USD", "domicile": "US",
                                 "creditLimit": "1000000000", "equity": "500000000"}},
             key=other.key)
    mine = gql.data(SUBMIT, {"input": order()}, key=tenant.key)["submitOrder"]
    theirs = gql.data(SUBMIT, {"input": order()}, key=other.key)["submitOrder"]
    [record] = _stored(rt, tenant.id, mine["id"])
    # The same rules give the same digest, but each tenant holds its own row of them.
    assert _stored(rt, other.id, theirs["id"])[0][RULE_SET] == record[RULE_SET]
    for t in (tenant, other):
        with rt.db.tenant_session(t.id) as session:
            assert len(session.exec(select(ComplianceRuleSet)).all()) == 1
    # A row naming a rule set its own tenant does not hold is an internal error, never the
    # other tenant's rules (a fresh process: nothing cached).
    with rt.db.tenant_transaction(other.id) as session:
        session.delete(session.exec(select(ComplianceRuleSet)).one())
    with rt.db.tenant_session(other.id) as session:
        victim = session.exec(select(ComplianceDecisionRow).where(
            ComplianceDecisionRow.order_id == theirs["id"])).one()
    with pytest.raises(LookupError):
        DecisionRecords().expand(rt.db, [victim])
    assert _answered(gql, tenant, mine["id"]) == written[mine["id"]]


def test_the_downgrade_gives_compact_records_back_whole(tmp_path, settings):
    fresh = settings.with_(database_url=f"sqlite:///{tmp_path / 'fresh.db'}")
    migrate_database(fresh)
    at = datetime(2026, 12, 7, 9, 30, 0, 123456, tzinfo=UTC)
    whole = {"client_order_id": "c-1", "tenant_id": "t-1", "account": "ACC1", "symbol": "AAPL",
             "mic": "XNAS", "isin": "US0378331005", "side": "BUY", "quantity": "10",
             "price": None, "client_domicile": "US", "passed": True, "jurisdictions": ["US"],
             "plugins": ["compliance-us"], "denials": [],
             "timings_ns": [["US", "kill_switch", 1642], ["US", "isin", 992]],
             "decided_at": at.isoformat(), "elapsed_ns": 7100, "order_id": "o-1", "amend": True}
    row = {"id": "d-1", "tenant_id": "t-1", "order_id": None, "client_order_id": "c-1",
           "account": "ACC1", "passed": True, "codes": [], "jurisdictions": ["US"],
           "elapsed_ns": 7100, "decided_at": at, "created_at": at}
    stored, rule_set = DecisionRecords().compact({**row, "order_id": "o-1"}, whole)
    assert rule_set is not None and "order_id" not in stored
    engine = make_engine(fresh.database_url)
    try:
        with engine.begin() as conn:
            conn.execute(Tenant.__table__.insert().values(
                id="t-1", slug="t-1", name="T", base_currency="USD", home_region="americas",
                active=True, trusted_documents_only=False, created_at=at))
            conn.execute(Order.__table__.insert().values(_order_row("o-1", at)))
            conn.execute(ComplianceRuleSet.__table__.insert().values(
                tenant_id="t-1", id=rule_set[0], rules=rule_set[1], created_at=at))
            conn.execute(ComplianceDecisionRow.__table__.insert().values(
                {**row, "order_id": "o-1", "record": stored, "record_compact": True}))
        downgrade_database(fresh, "-1")
        with engine.connect() as conn:
            [record] = conn.execute(select(ComplianceDecisionRow.__table__.c.record)).scalars()
        assert json.dumps(record) == json.dumps(whole)
        migrate_database(fresh)  # and up again: the row, whole now, reads as it is
    finally:
        engine.dispose()



AT = datetime(2026, 12, 7, 9, 30, 0, 123456, tzinfo=UTC)
ROW = {"client_order_id": "c", "tenant_id": "t", "account": "A", "passed": True,
       "jurisdictions": ["US"], "decided_at": AT, "elapsed_ns": 5, "order_id": "o"}


def _record(timings: list, **extra) -> dict:
    return {"client_order_id": "c", "tenant_id": "t", "account": "A", "passed": True,
            "jurisdictions": ["US"], "timings_ns": timings, "decided_at": AT.isoformat(),
            "elapsed_ns": 5, "order_id": "o", **extra}


def test_values_equal_in_python_but_not_as_json_are_kept_apart():
    """True == 1 in Python: neither a rule set's digest nor a column's value may confuse them."""
    records = DecisionRecords()
    stored, _ = records.compact(ROW, _record([["US", "r", 7]]))
    assert "passed" not in stored
    ones, _ = records.compact({**ROW, "passed": 1}, _record([["US", "r", 7]]))
    assert ones["passed"] is True  # the column said 1: the record's True is kept
    named, _ = records.compact(ROW, _record([["US", "1", 7]]))
    assert records.compact(ROW, _record([["US", 1, 7]])) == (_record([["US", 1, 7]]), None)
    assert named[RULE_SET] == rule_set_id([["US", "1"]])


def test_a_record_stored_whole_is_read_whole_whatever_its_keys(desk):
    """Whole or compact is the row's flag, not a guess from the record's keys."""
    gql, tenant, _clock, rt = desk
    o = gql.data(SUBMIT, {"input": order()}, key=tenant.key)["submitOrder"]
    whole = {"client_order_id": "x", "rule_set": "from a plugin", "rule_ns": [1], "amend": True}
    records = DecisionRecords()
    stored, rule_set = records.compact({**ROW, "order_id": o["id"]}, whole)
    assert rule_set is None and stored == whole
    with rt.db.tenant_transaction(tenant.id) as session:
        base = session.exec(select(ComplianceDecisionRow).where(
            ComplianceDecisionRow.order_id == o["id"])).one()
        session.add(ComplianceDecisionRow(
            tenant_id=tenant.id, order_id=o["id"], client_order_id=base.client_order_id,
            account=base.account, passed=base.passed, codes=[], jurisdictions=base.jurisdictions,
            record=stored, record_compact=False, elapsed_ns=base.elapsed_ns,
            decided_at=base.decided_at))
    answered = [json.loads(r) for r in _answered(gql, tenant, o["id"])]
    assert whole in answered and len(answered) == 2


def test_a_full_cache_never_fails_a_page(desk, written):
    """The cache of rule sets is shared by every tenant and bounded: a page whose sets are
    partly cached when the cache fills still expands."""
    gql, tenant, _clock, rt = desk
    o = gql.data(SUBMIT, {"input": order()}, key=tenant.key)["submitOrder"]
    with rt.db.tenant_session(tenant.id) as session:
        cached = session.exec(select(ComplianceDecisionRow).where(
            ComplianceDecisionRow.order_id == o["id"])).one()
    whole = json.loads(written[o["id"]][0])
    whole["timings_ns"] = [*whole["timings_ns"], ["US", "one_more", 11]]
    records = DecisionRecords()
    columns = {"client_order_id": cached.client_order_id, "tenant_id": tenant.id,
               "account": cached.account, "passed": cached.passed,
               "jurisdictions": cached.jurisdictions, "decided_at": cached.decided_at,
               "elapsed_ns": cached.elapsed_ns, "order_id": o["id"]}
    stored, rule_set = records.compact(columns, whole)
    assert rule_set is not None
    with rt.db.tenant_transaction(tenant.id) as session:
        records.store_rule_sets(session, tenant.id, [rule_set])
        session.add(ComplianceDecisionRow(**columns, codes=[], record=stored,
                                          record_compact=True))
    with rt.db.tenant_session(tenant.id) as session:
        new = session.exec(select(ComplianceDecisionRow).where(
            ComplianceDecisionRow.order_id == o["id"],
            ComplianceDecisionRow.id != cached.id)).one()
    records.expand(rt.db, [cached])  # the page's first rule set, now cached
    for n in range(4095):  # other tenants' rule sets this process has read
        records._rules[(f"tenant-{n}", f"{n:032x}")] = []
    assert records.expand(rt.db, [cached, new]) == [json.loads(written[o["id"]][0]), whole]


def _order_row(order_id: str, at: datetime) -> dict:
    return {"id": order_id, "tenant_id": "t-1", "client_order_id": "c-1", "account": "ACC1",
            "symbol": "AAPL", "mic": "XNAS", "requested_mic": "XNAS", "connector": "",
            "side": "BUY", "ord_type": "MARKET", "time_in_force": "IOC", "quantity": D(10),
            "currency": "USD", "status": "FILLED", "cum_qty": D(10), "leaves_qty": D(0),
            "avg_px": D(1), "fees": D(0), "routing": {}, "created_at": at, "updated_at": at,
            "version": 1}
