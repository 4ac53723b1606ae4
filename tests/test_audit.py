"""The hash-chained audit trail: chaining across batches and threads, tamper detection in memory
and in the table, the append-only triggers, permission changes recorded, GraphQL, isolation and
the CLI."""

from __future__ import annotations

import dataclasses
import threading
import time
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlmodel import col, select

from gateway.audit import GENESIS, AuditEntry, AuditHead, AuditRecord, AuditVerification, verify_records
from gateway.audit.chain import hash_of
from gateway.errors import Forbidden, InvalidInput
from tests.support import error_codes, onboard, unique, user_key
from tests.test_cli import run

VERIFY = "query($from: DateTime, $to: DateTime) { verifyAuditTrail(from: $from, to: $to) " \
         "{ ok checked firstBadSeq problem } }"
RECORDS = "query($kind: String, $subject: String, $first: Int, $after: String) { auditRecords(" \
          "kind: $kind, subject: $subject, first: $first, after: $after) { edges { cursor node { " \
          "seq kind subject actor payload hash prevHash } } pageInfo { hasNextPage endCursor } } }"


def entries(n: int, prefix: str = "e") -> list[AuditEntry]:
    return [AuditEntry("order.event", f"{prefix}-{i}", {"qty": Decimal(f"{i}.5"), "i": i},
                       actor="u-1") for i in range(n)]


def chain_rows(runtime, tenant_id):
    with runtime.db.tenant_session(tenant_id) as session:
        return list(session.exec(select(AuditRecord).where(AuditRecord.chain == tenant_id)
                                 .order_by(col(AuditRecord.seq))).all())


@contextmanager
def tampering(runtime):
    """A connection on which to tamper as an attacker with the owner's rights would: the
    append-only triggers are off inside its transaction only, and back on before it commits."""
    with runtime.db.engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(text("ALTER TABLE audit_record DISABLE TRIGGER USER"))
            yield conn
            conn.execute(text("ALTER TABLE audit_record ENABLE TRIGGER USER"))
            return
        if not conn.connection.dbapi_connection.in_transaction:
            conn.exec_driver_sql("BEGIN IMMEDIATE")  # DDL and tampering in one transaction
        ddl = dict(conn.execute(text("SELECT name, sql FROM sqlite_master WHERE type = 'trigger' "
                                     "AND tbl_name = 'audit_record'")).all())
        assert set(ddl) == {"audit_record_no_update", "audit_record_no_delete"}
        for name in ddl:
            conn.execute(text(f"DROP TRIGGER {name}"))
        yield conn
        for sql in ddl.values():
            conn.execute(text(sql))


def append(runtime, tenant_id, batch):
    with runtime.db.tenant_transaction(tenant_id) as session:
        return runtime.audit.append(session, tenant_id, batch)


# The chain itself, in memory.
def test_records_chain_across_batches_and_verify(runtime, tenant):
    first = append(runtime, tenant.id, entries(3, "a"))
    second = append(runtime, tenant.id, entries(4, "b"))
    base = first[0].seq
    assert [r.seq for r in first + second] == list(range(base, base + 7))
    assert second[0].prev_hash == first[-1].hash  # the second batch continues the first
    rows = chain_rows(runtime, tenant.id)
    assert rows[0].seq == 1 and rows[0].prev_hash == GENESIS
    assert rows[-1].payload == {"qty": "3.5", "i": 3}  # Decimals stored as exact strings
    assert all(hash_of(r) == r.hash for r in rows)
    result = runtime.audit.verify(tenant.id)
    assert result.ok and result.checked == len(rows) and result.first_bad_seq is None


def _records(runtime, tenant):
    append(runtime, tenant.id, entries(6))
    return [dataclasses.replace(_plain(r)) for r in chain_rows(runtime, tenant.id)]


@dataclasses.dataclass
class Plain:
    chain: str
    seq: int
    at: datetime
    kind: str
    subject: str
    actor: str | None
    payload: dict
    prev_hash: str
    hash: str


def _plain(r):
    return Plain(r.chain, r.seq, r.at, r.kind, r.subject, r.actor, dict(r.payload), r.prev_hash, r.hash)


def test_verify_records_finds_each_kind_of_tampering_where_it_is(runtime, tenant):
    records = _records(runtime, tenant)  # seq 1 is tenant.created, then 6 entries
    n = len(records)
    assert verify_records(records).ok

    edited = [dataclasses.replace(r) for r in records]
    edited[3].payload = {**edited[3].payload, "qty": "999"}
    result = verify_records(edited)
    assert (result.ok, result.first_bad_seq, result.checked) == (False, 4, 3)
    assert "altered" in result.problem

    deleted = records[:2] + records[3:]
    result = verify_records(deleted)
    assert (result.ok, result.first_bad_seq) == (False, 3) and "missing" in result.problem

    reordered = [*records[:2], records[3], records[2], *records[4:]]
    result = verify_records(reordered)
    assert (result.ok, result.first_bad_seq) == (False, 3) and "out of order" in result.problem

    # Renumbered after a deletion, so no gap shows: the hash covers the seq.
    renumbered = records[:2] + [dataclasses.replace(r, seq=r.seq - 1) for r in records[3:]]
    result = verify_records(renumbered)
    assert (result.ok, result.first_bad_seq) == (False, 3)

    # Rehashed after an edit (an attacker who knows the algorithm): the next link breaks.
    forged = [dataclasses.replace(r) for r in records]
    forged[2].payload = {"forged": True}
    forged[2].hash = hash_of(forged[2])
    result = verify_records(forged)
    assert (result.ok, result.first_bad_seq) == (False, 4) and "prev_hash" in result.problem

    # The tail cut off: only the head knows.
    last = records[-1]
    result = verify_records(records[:-2], head=(last.seq, last.hash))
    assert (result.ok, result.first_bad_seq) == (False, n - 1)


def test_payload_must_be_plain_json(runtime, tenant):
    with pytest.raises(InvalidInput) as bad:
        append(runtime, tenant.id, [AuditEntry("order.event", "x", {"v": float("nan")})])
    assert bad.value.code == "AUDIT_ENTRY_INVALID"
    with pytest.raises(InvalidInput):
        append(runtime, tenant.id, [AuditEntry("Order.Event", "x", {})])
    with pytest.raises(InvalidInput):
        append(runtime, tenant.id, [AuditEntry("order.event", "x", {"when": datetime(2026, 1, 1)})])
    assert runtime.audit.verify(tenant.id).ok


def test_append_rolls_back_with_the_callers_transaction(runtime, tenant):
    before = len(chain_rows(runtime, tenant.id))
    with pytest.raises(RuntimeError), runtime.db.tenant_transaction(tenant.id) as session:
        runtime.audit.append(session, tenant.id, entries(2))
        raise RuntimeError("the change failed")
    assert len(chain_rows(runtime, tenant.id)) == before
    append(runtime, tenant.id, entries(1))
    assert runtime.audit.verify(tenant.id).ok


def test_a_tenant_session_cannot_write_to_another_tenants_chain(runtime, tenant, other_tenant):
    with pytest.raises(Forbidden), runtime.db.tenant_transaction(tenant.id) as session:
        runtime.audit.append(session, other_tenant.id, entries(1))


def lane_rows(runtime, tenant_id):
    """Every lane's records (gateway/audit/lanes.py), by lane: on SQLite only lane 0."""
    with runtime.db.tenant_session(tenant_id) as session:
        rows = session.exec(select(AuditRecord).where(AuditRecord.tenant_id == tenant_id)
                            .order_by(col(AuditRecord.chain), col(AuditRecord.seq))).all()
    lanes: dict[str, list[AuditRecord]] = {}
    for row in rows:
        lanes.setdefault(row.chain, []).append(row)
    return lanes


def test_concurrent_appends_keep_a_gapless_chain(runtime, tenant):
    """Six threads of one tenant: each lane they spread over (PostgreSQL) stays gapless, every
    record is there once, and each lane's head is its last record."""
    start = sum(len(rows) for rows in lane_rows(runtime, tenant.id).values())
    errors: list[BaseException] = []

    def worker(k: int) -> None:
        try:
            for _ in range(5):
                append(runtime, tenant.id, entries(3, f"t{k}"))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    lanes = lane_rows(runtime, tenant.id)
    assert sum(len(rows) for rows in lanes.values()) == start + 6 * 5 * 3
    for chain, rows in lanes.items():
        assert [r.seq for r in rows] == list(range(1, len(rows) + 1)), chain
        for i, r in enumerate(rows):  # one append, one lane: a batch stays together, in order
            if r.subject.startswith("t") and r.subject.endswith("-0"):
                batch = rows[i:i + 3]
                assert [b.subject for b in batch] == [r.subject[:-1] + n for n in "012"], chain
                assert len({b.at for b in batch}) == 1
        with runtime.db.system_session() as session:
            head = session.exec(select(AuditHead).where(AuditHead.chain == chain)).one()
        assert (head.last_seq, head.last_hash) == (rows[-1].seq, rows[-1].hash)
    if runtime.db.engine.dialect.name == "sqlite":
        assert list(lanes) == [tenant.id]
    result = runtime.audit.verify(tenant.id)
    assert result.ok and result.checked == start + 6 * 5 * 3


# The table.
def test_the_table_refuses_update_and_delete(runtime, tenant):
    append(runtime, tenant.id, entries(2))
    for statement in ("UPDATE audit_record SET subject = 'x' WHERE chain = :c",
                      "DELETE FROM audit_record WHERE chain = :c"):
        with pytest.raises(DBAPIError) as refused, runtime.db.engine.begin() as conn:
            conn.execute(text(statement), {"c": tenant.id})
        assert "append-only" in str(refused.value)
    if runtime.db.engine.dialect.name == "postgresql":
        with pytest.raises(DBAPIError), runtime.db.engine.begin() as conn:
            conn.execute(text("TRUNCATE audit_record CASCADE"))
    assert runtime.audit.verify(tenant.id).ok


def test_tampering_in_the_table_is_found_and_located(runtime):
    edited, deleted, reordered, cut = (onboard(runtime) for _ in range(4))
    for t in (edited, deleted, reordered, cut):
        append(runtime, t.id, entries(6))
    with tampering(runtime) as conn:
        conn.execute(text("UPDATE audit_record SET payload = :p WHERE chain = :c AND seq = 5"),
                     {"p": '{"i": 1, "qty": "1000000"}', "c": edited.id})
        conn.execute(text("DELETE FROM audit_record WHERE chain = :c AND seq = 4"), {"c": deleted.id})
        # Swap records 3 and 6, each keeping its own hash.
        for old, new in ((3, -1), (6, 3), (-1, 6)):
            conn.execute(text("UPDATE audit_record SET seq = :n WHERE chain = :c AND seq = :o"),
                         {"n": new, "o": old, "c": reordered.id})
        conn.execute(text("DELETE FROM audit_record WHERE chain = :c AND seq >= 8"), {"c": cut.id})

    result = runtime.audit.verify(edited.id)
    assert (result.ok, result.first_bad_seq, result.checked) == (False, 5, 4)
    result = runtime.audit.verify(deleted.id)
    assert (result.ok, result.first_bad_seq) == (False, 4) and "missing" in result.problem
    result = runtime.audit.verify(reordered.id)
    assert (result.ok, result.first_bad_seq) == (False, 3)
    result = runtime.audit.verify(cut.id)
    assert (result.ok, result.first_bad_seq) == (False, 8)


def test_verify_a_window_links_it_to_the_record_before(runtime):
    t = onboard(runtime)
    append(runtime, t.id, entries(3))
    middle = datetime.now(UTC)
    append(runtime, t.id, entries(3))
    later = datetime.now(UTC) + timedelta(seconds=1)
    window = runtime.audit.verify(t.id, middle, later)
    assert window.ok and window.checked == 3
    with tampering(runtime) as conn:
        last_before = conn.execute(text("SELECT max(seq) FROM audit_record WHERE chain = :c AND "
                                        "seq <= 6"), {"c": t.id}).scalar()
        conn.execute(text("DELETE FROM audit_record WHERE chain = :c AND seq = :s"),
                     {"c": t.id, "s": last_before})
    window = runtime.audit.verify(t.id, middle, later)
    assert not window.ok and window.first_bad_seq == last_before
    with pytest.raises(InvalidInput):
        runtime.audit.verify(t.id, later, middle)
    empty = runtime.audit.verify(onboard(runtime).id, later)  # nothing in the window, nothing cut
    assert empty.ok and empty.checked == 0


def test_verify_a_window_checks_the_record_after_its_end(runtime):
    t = onboard(runtime)
    start = datetime.now(UTC)
    inside = append(runtime, t.id, entries(3))
    time.sleep(0.01)
    end = datetime.now(UTC)
    time.sleep(0.01)
    append(runtime, t.id, entries(3))
    assert runtime.audit.verify(t.id, start, end).ok
    # The window's last record deleted: the rest of the window still chains, but the record
    # after the window no longer links to what the window ends with.
    with tampering(runtime) as conn:
        conn.execute(text("DELETE FROM audit_record WHERE chain = :c AND seq = :s"),
                     {"c": t.id, "s": inside[-1].seq})
    window = runtime.audit.verify(t.id, start, end)
    assert not window.ok and window.first_bad_seq == inside[-1].seq, window


def test_verify_a_window_ending_at_the_chains_end_checks_the_head(runtime):
    t = onboard(runtime)
    start = datetime.now(UTC)
    inside = append(runtime, t.id, entries(3))
    end = datetime.now(UTC) + timedelta(seconds=1)
    assert runtime.audit.verify(t.id, start, end).ok
    with tampering(runtime) as conn:
        conn.execute(text("DELETE FROM audit_record WHERE chain = :c AND seq = :s"),
                     {"c": t.id, "s": inside[-1].seq})
    window = runtime.audit.verify(t.id, start, end)
    assert not window.ok and window.first_bad_seq == inside[-1].seq, window


def test_verify_a_window_rehashes_the_record_before_it(runtime):
    t = onboard(runtime)
    time.sleep(0.01)
    start = datetime.now(UTC)
    inside = append(runtime, t.id, entries(3))
    assert runtime.audit.verify(t.id, start).ok
    # The window's first record edited and moved before the window: it becomes the anchor, and
    # the records after it still link to its (stored) hash.
    first = inside[0].seq
    with tampering(runtime) as conn:
        at = conn.execute(text("SELECT at FROM audit_record WHERE chain = :c AND seq = :s"),
                          {"c": t.id, "s": first - 1}).scalar()
        conn.execute(text("UPDATE audit_record SET at = :a, payload = :p WHERE chain = :c AND seq = :s"),
                     {"a": at, "p": '{"i": 0, "qty": "999999"}', "c": t.id, "s": first})
    window = runtime.audit.verify(t.id, start)
    assert not window.ok and window.first_bad_seq == first, window


def test_a_tenant_session_cannot_write_the_platform_chain(runtime, tenant):
    with pytest.raises(Forbidden) as caught, runtime.db.tenant_transaction(tenant.id) as session:
        runtime.audit.append(session, None, entries(1))
    assert caught.value.code == "TENANT_FORBIDDEN"
    with runtime.db.system_transaction() as session:
        assert runtime.audit.append(session, None, entries(1))[0].tenant_id is None


def test_verify_reads_long_chains_in_chunks(runtime, monkeypatch):
    monkeypatch.setattr("gateway.audit.trail.VERIFY_CHUNK", 4)
    t = onboard(runtime)
    append(runtime, t.id, entries(9))  # seq 1-12
    result = runtime.audit.verify(t.id)
    assert (result.ok, result.checked, result.first_bad_seq, result.chain) == (True, 12, None, None)
    assert result == AuditVerification(True, 12, chains=result.chains, lanes=result.lanes)
    with tampering(runtime) as conn:
        conn.execute(text("UPDATE audit_record SET subject = 'x' WHERE chain = :c AND seq = 10"),
                     {"c": t.id})
    result = runtime.audit.verify(t.id)
    assert (result.ok, result.checked, result.first_bad_seq, result.chain) == (False, 9, 10, t.id)


# What is recorded.
def test_permission_and_configuration_changes_are_recorded(runtime):
    slug = unique()
    tenant = runtime.tenancy.create_tenant(slug, "Recorded")
    user = runtime.tenancy.create_user(tenant.id, f"a@{slug}.test", roles=["trader"], actor="ops")
    # compliance_officer needs a second person: here the platform's own tooling grants it
    runtime.tenancy.grant_role(tenant.id, user.id, "compliance_officer", actor="ops", by_platform=True)
    runtime.tenancy.grant_role(tenant.id, user.id, "compliance_officer",
                               by_platform=True)  # no change, no record
    runtime.tenancy.revoke_role(tenant.id, user.id, "trader", actor="ops")
    key, token = runtime.tenancy.create_api_key(tenant.id, user.id, "ci")
    runtime.tenancy.revoke_api_key(tenant.id, key.id)
    assert runtime.policy.roles(user.id, tenant.id) == ["compliance_officer"]

    rows = chain_rows(runtime, tenant.id)
    assert [(r.kind, r.subject) for r in rows] == [
        ("tenant.created", tenant.id), ("user.created", user.id),
        ("permission.granted", user.id), ("permission.revoked", user.id),
        ("apikey.created", key.id), ("apikey.revoked", key.id)]
    assert rows[1].payload == {"email": f"a@{slug}.test", "roles": ["trader"]}
    assert rows[2].payload == {"role": "compliance_officer"} and rows[2].actor == "ops"
    secret = token.split("_", 2)[2]  # alp_<key id>_<secret>: the secret itself may hold "_"
    assert all(secret not in str(r.payload) and key.secret_hash not in str(r.payload) for r in rows)
    assert runtime.audit.verify(tenant.id).ok

    with runtime.db.system_session() as session:
        platform = session.exec(select(AuditRecord).where(
            AuditRecord.chain == "platform", AuditRecord.subject == tenant.id)).all()
    assert [r.kind for r in platform] == ["tenant.created"] and platform[0].tenant_id is None
    assert runtime.audit.verify(None).ok


def test_a_failed_change_leaves_no_record(runtime, tenant):
    before = len(chain_rows(runtime, tenant.id))
    with pytest.raises(InvalidInput):
        runtime.tenancy.grant_role(tenant.id, tenant.admin_id, "wizard")
    with pytest.raises(Exception):  # noqa: B017 - USER_EXISTS, a Conflict
        runtime.tenancy.create_user(tenant.id, f"admin@{tenant.slug}.test", roles=["viewer"])
    assert len(chain_rows(runtime, tenant.id)) == before


# GraphQL, permissions and isolation.
def test_graphql_verify_and_records(runtime, gql, tenant):
    append(runtime, tenant.id, entries(5, "g"))
    body = gql.data(VERIFY, key=tenant.key)["verifyAuditTrail"]
    assert body["ok"] and body["checked"] >= 8 and body["firstBadSeq"] is None
    page = gql.data(RECORDS, {"kind": "order.event", "first": 3}, key=tenant.key)["auditRecords"]
    assert [e["node"]["subject"] for e in page["edges"]] == ["g-4", "g-3", "g-2"]
    assert page["edges"][0]["node"]["payload"] == {"qty": "4.5", "i": 4}
    assert page["pageInfo"]["hasNextPage"]
    rest = gql.data(RECORDS, {"kind": "order.event", "first": 3, "after": page["pageInfo"]["endCursor"]},
                    key=tenant.key)["auditRecords"]
    assert [e["node"]["subject"] for e in rest["edges"]] == ["g-1", "g-0"]
    assert not rest["pageInfo"]["hasNextPage"]
    one = gql.data(RECORDS, {"subject": "g-2"}, key=tenant.key)["auditRecords"]["edges"]
    assert len(one) == 1
    naive = gql.data(VERIFY, {"from": "2020-01-01T00:00:00"}, key=tenant.key)["verifyAuditTrail"]
    assert naive == body
    backwards = gql(VERIFY, {"from": "2030-01-01T00:00:00Z", "to": "2020-01-01T00:00:00Z"},
                    key=tenant.key)
    assert error_codes(backwards) == ["AUDIT_RANGE_INVALID"]
    bad = gql(RECORDS, {"after": "nonsense"}, key=tenant.key)
    assert error_codes(bad) == ["CURSOR_INVALID"]

    _, compliance = user_key(runtime, tenant, "compliance_officer")
    assert gql.data(VERIFY, key=compliance)["verifyAuditTrail"]["ok"]
    _, trader = user_key(runtime, tenant, "trader")
    assert error_codes(gql(VERIFY, key=trader)) == ["FORBIDDEN"]
    assert error_codes(gql(RECORDS, key=trader)) == ["FORBIDDEN"]


def test_audit_fields_are_tenant_isolated(runtime, gql, tenant, other_tenant):
    """A tenant reads and verifies only its own chain: tenant B's key never sees A's records,
    A's broken chain does not show in B's verification, and a cursor cannot reach across."""
    append(runtime, tenant.id, entries(4, "secret"))
    with tampering(runtime) as conn:
        conn.execute(text("DELETE FROM audit_record WHERE chain = :c AND seq = 2"), {"c": tenant.id})
    assert gql.data(VERIFY, key=tenant.key)["verifyAuditTrail"]["firstBadSeq"] == 2
    other = gql.data(VERIFY, key=other_tenant.key)["verifyAuditTrail"]
    assert other["ok"]
    theirs = gql.data(RECORDS, {"first": 100}, key=other_tenant.key)["auditRecords"]["edges"]
    assert theirs and all(not e["node"]["subject"].startswith("secret") for e in theirs)
    assert all(e["node"]["subject"] != tenant.id for e in theirs)
    mine = gql.data(RECORDS, {"first": 1}, key=tenant.key)["auditRecords"]
    crossed = gql.data(RECORDS, {"first": 100, "after": mine["pageInfo"]["endCursor"],
                                 "subject": "secret-1"}, key=other_tenant.key)["auditRecords"]
    assert crossed["edges"] == []
    with runtime.db.tenant_session(other_tenant.id) as session:  # the filter, not just the query
        assert session.exec(select(AuditRecord).where(AuditRecord.chain == tenant.id)).all() == []
        assert session.exec(select(AuditRecord).where(AuditRecord.chain == "platform")).all() == []


def test_cli_verify(migrated, runtime):
    t = onboard(runtime)
    append(runtime, t.id, entries(3))
    good = run(migrated, "audit", "verify", "--tenant", t.slug)
    assert good.returncode == 0, good.stderr
    assert "OK" in good.stdout
    platform = run(migrated, "audit", "verify", "--platform", "--from", "2020-01-01T00:00:00Z")
    assert platform.returncode == 0 and "OK" in platform.stdout, platform.stdout + platform.stderr
    with tampering(runtime) as conn:
        conn.execute(text("UPDATE audit_record SET actor = 'mallory' WHERE chain = :c AND seq = 3"),
                     {"c": t.id})
    broken = run(migrated, "audit", "verify", "--tenant", t.slug)
    assert broken.returncode == 1
    assert "BROKEN at record 3" in broken.stdout
    usage = run(migrated, "audit", "verify")
    assert usage.returncode == 2
    unknown = run(migrated, "audit", "verify", "--tenant", "no-such-tenant-x")
    assert unknown.returncode == 1 and "TENANT_NOT_FOUND" in unknown.stderr
