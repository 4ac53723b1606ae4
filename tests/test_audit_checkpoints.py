"""The audit trail that proves itself (issue 17), through GraphQL: signed checkpoints of a
chain's head (on demand, every N records, exported), a chain rewritten with every hash
recomputed caught against an exported checkpoint, order and execution rows cross-checked with
their audit records, and tenant isolation of all of it."""

from __future__ import annotations

import base64
import json
import threading
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from decimal import Decimal as D

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlmodel import col, select

from gateway.app import create_app
from gateway.audit import AuditEntry, AuditRecord, AuditTrail
from gateway.audit.chain import record_hash
from gateway.audit.checkpoints import Checkpoint, sign
from gateway.audit.lanes import encode_cursor
from gateway.errors import Conflict
from gateway.markets.clock import ManualClock
from gateway.trading.models import Execution, Order
from tests.support import GraphQLClient, LiveServer, error_codes, onboard, unique, user_key, with_clock
from tests.test_cli import run

OPEN_NY = datetime(2025, 3, 12, 14, 0, tzinfo=UTC)  # a Wednesday, New York open since 13:30
FINDING = "checkpoint { code seq headHash supplied problem }"
MISMATCH = "mismatches { code orderId executionId field recorded actual problem }"
VERIFY = ("query($cps: [AuditCheckpointInput!]) { verifyAuditTrail(checkpoints: $cps) { ok checked "
          f"firstBadSeq problem code checkpointsChecked {FINDING} crossChecked {MISMATCH} "
          "mismatchCount } }")
CHECKPOINT_FIELDS = "chain tenantId seq headHash at count publicKey signature"
CREATE = f"mutation {{ createAuditCheckpoint {{ {CHECKPOINT_FIELDS} statement }} }}"
CHECKPOINTS = (f"query($first: Int, $after: String) {{ auditCheckpoints(first: $first, after: $after) "
               f"{{ publicKey edges {{ cursor node {{ {CHECKPOINT_FIELDS} }} }} "
               "pageInfo { hasNextPage endCursor } } }")
SUBMIT = """mutation($input: SubmitOrderInput!) { submitOrder(input: $input) { id status cumQty
  leavesQty avgPx } }"""
ACCOUNT = """mutation($input: TradingAccountInput!) { upsertTradingAccount(input: $input) { id } }"""


# A gateway whose markets run on a ManualClock, so orders fill on the simulated venues.
@pytest.fixture(scope="module")
def venue(runtime):
    clock = ManualClock(OPEN_NY)
    rt = with_clock(runtime, clock)
    with LiveServer(create_app(runtime=rt)) as live:
        yield GraphQLClient(live.url), clock, rt


def _open_minute(rt, clock) -> datetime:
    at = clock.now() + timedelta(minutes=1)
    session = rt.markets.session("XNAS", at)
    if str(session.status) != "OPEN" or session.next_close - at < timedelta(minutes=30):
        at = session.next_open + timedelta(minutes=1)
        if rt.markets.session("XNAS", at).next_close - at < timedelta(minutes=30):
            at = rt.markets.session("XNAS", at).next_open + timedelta(minutes=1)
    return at


@pytest.fixture
def desk(venue):
    """A tenant with a US account, the clock a minute on in a New York session."""
    gql, clock, rt = venue
    clock.set(_open_minute(rt, clock))
    tenant = onboard(rt)
    gql.data(ACCOUNT, {"input": {"code": "ACC1", "currency": "USD", "domicile": "US",
                                 "creditLimit": "1000000000", "equity": "500000000"}}, key=tenant.key)
    return gql, tenant, rt


def filled_order(gql, tenant, quantity="20") -> dict:
    o = gql.data(SUBMIT, {"input": {
        "clientOrderId": unique("o"), "account": "ACC1", "symbol": "AAPL", "mic": "XNAS",
        "side": "BUY", "quantity": quantity, "ordType": "MARKET", "timeInForce": "IOC"}},
        key=tenant.key)["submitOrder"]
    assert o["status"] == "FILLED", o
    return o


def verify(gql, key, checkpoints=None) -> dict:
    return gql.data(VERIFY, {"cps": checkpoints}, key=key)["verifyAuditTrail"]


def exported(gql, key) -> tuple[str, list[dict]]:
    """What an auditor keeps: every checkpoint of the chain, paged, and the public key."""
    found, after = [], None
    while True:
        page = gql.data(CHECKPOINTS, {"first": 2, "after": after}, key=key)["auditCheckpoints"]
        found += [e["node"] for e in page["edges"]]
        if not page["pageInfo"]["hasNextPage"]:
            return page["publicKey"], found
        after = page["pageInfo"]["endCursor"]


@contextmanager
def tampering(runtime, tables=("audit_record", "audit_checkpoint")):
    """A connection on which to tamper as an attacker with the owner's rights would: the
    append-only triggers of `tables` are off inside its transaction only."""
    with runtime.db.engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            for table in tables:
                conn.execute(text(f"ALTER TABLE {table} DISABLE TRIGGER USER"))
            yield conn
            for table in tables:
                conn.execute(text(f"ALTER TABLE {table} ENABLE TRIGGER USER"))
            return
        if not conn.connection.dbapi_connection.in_transaction:
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        ddl = dict(conn.execute(text(
            "SELECT name, sql FROM sqlite_master WHERE type = 'trigger' AND tbl_name IN "
            f"({', '.join(repr(t) for t in tables)})")).all())
        assert len(ddl) == 2 * len(tables)
        for name in ddl:
            conn.execute(text(f"DROP TRIGGER {name}"))
        yield conn
        for sql in ddl.values():
            conn.execute(text(sql))


def rewrite_from(runtime, conn, chain: str, seq: int, change) -> None:
    """Change record `seq`'s payload with `change`, then recompute its hash and every later
    record's prev_hash and hash with the project's own function, and move the head: the chain
    is consistent again, as an attacker who knows the algorithm would leave it."""
    with runtime.db.tenant_session(chain) as session:
        rows = list(session.exec(select(AuditRecord).where(
            AuditRecord.chain == chain, col(AuditRecord.seq) >= seq - 1)
            .order_by(col(AuditRecord.seq))).all())
    prev = rows[0].hash
    for row in rows[1:]:
        payload = dict(row.payload)
        if row.seq == seq:
            payload = change(payload)
        digest = record_hash(row.chain, row.seq, row.at, row.kind, row.subject, row.actor, payload,
                             prev)
        conn.execute(text("UPDATE audit_record SET payload = :p, prev_hash = :ph, hash = :h "
                          "WHERE chain = :c AND seq = :s"),
                     {"p": json.dumps(payload), "ph": prev, "h": digest, "c": chain, "s": row.seq})
        prev = digest
    conn.execute(text("UPDATE audit_head SET last_hash = :h WHERE chain = :c"), {"h": prev, "c": chain})


def fill_records(runtime, tenant_id: str, order_id: str) -> list[AuditRecord]:
    with runtime.db.tenant_session(tenant_id) as session:
        return list(session.exec(select(AuditRecord).where(
            AuditRecord.chain == tenant_id, AuditRecord.subject == order_id,
            col(AuditRecord.kind).in_(["order.fill", "order.partial_fill"]))
            .order_by(col(AuditRecord.seq))).all())


# Checkpoints: taken, signed, read, exported.
def test_create_and_read_signed_checkpoints(runtime, gql, tenant):
    taken = gql.data(CREATE, key=tenant.key)["createAuditCheckpoint"]
    assert taken["chain"] == tenant.id and taken["tenantId"] == tenant.id
    assert taken["seq"] == taken["count"] >= 1
    statement = json.loads(taken["statement"])
    assert statement == {"format": "alphintra-audit-checkpoint/1", "chain": tenant.id,
                         "tenant": tenant.id, "seq": taken["seq"], "head_hash": taken["headHash"],
                         "at": statement["at"], "count": taken["count"]}
    # Anyone holding the public key checks it with any Ed25519 implementation.
    Ed25519PublicKey.from_public_bytes(base64.b64decode(taken["publicKey"])).verify(
        base64.b64decode(taken["signature"]), taken["statement"].encode())
    with runtime.db.tenant_session(tenant.id) as session:
        head = session.exec(select(AuditRecord).where(AuditRecord.chain == tenant.id)
                            .order_by(col(AuditRecord.seq).desc())).first()
    assert (taken["seq"], taken["headHash"]) == (head.seq, head.hash)

    again = gql.data(CREATE, key=tenant.key)["createAuditCheckpoint"]
    assert again == taken  # nothing appended since: the same checkpoint
    runtime.tenancy.create_user(tenant.id, f"{unique('u')}@{tenant.slug}.test", roles=["viewer"])
    later = gql.data(CREATE, key=tenant.key)["createAuditCheckpoint"]
    assert later["seq"] > taken["seq"] and later["publicKey"] == taken["publicKey"]

    public_key, found = exported(gql, tenant.key)
    assert public_key == taken["publicKey"]
    assert [c["seq"] for c in found] == [later["seq"], taken["seq"]]  # newest first
    body = verify(gql, tenant.key)
    assert body["ok"] and body["checkpointsChecked"] == 2 and body["code"] is None
    assert verify(gql, tenant.key, found)["ok"]

    _, officer = user_key(runtime, tenant, "compliance_officer")
    assert len(exported(gql, officer)[1]) == 2  # reads them
    assert error_codes(gql(CREATE, key=officer)) == ["FORBIDDEN"]  # does not take them
    _, trader = user_key(runtime, tenant, "trader")
    assert error_codes(gql(CHECKPOINTS, key=trader)) == ["FORBIDDEN"]


def test_checkpoints_are_taken_every_n_records_after_commit(runtime, gql):
    tenant = onboard(runtime)  # seq 1 (tenant.created) and the admin's records
    trail = AuditTrail(runtime.db, secrets=runtime.secrets, checkpoint_every=5)
    with runtime.db.tenant_session(tenant.id) as session:
        start = len(session.exec(select(AuditRecord).where(AuditRecord.chain == tenant.id)).all())
    for batch in (3, 3, 1, 6):
        with runtime.db.tenant_transaction(tenant.id) as session:
            trail.append(session, tenant.id, [AuditEntry("test.event", f"e-{i}") for i in range(batch)])
    trail.checkpointer.drain()  # taken after each commit, off the append path
    heads, seq = [], start
    for batch in (3, 3, 1, 6):
        if (seq + batch) // 5 > seq // 5:
            heads.append(seq + batch)
        seq += batch
    _, found = exported(gql, tenant.key)
    assert sorted(c["seq"] for c in found) == heads and heads
    body = verify(gql, tenant.key)
    assert body["ok"] and body["checkpointsChecked"] == len(heads)
    # A rollback takes its checkpoint with it.
    with pytest.raises(RuntimeError), runtime.db.tenant_transaction(tenant.id) as session:
        trail.append(session, tenant.id, [AuditEntry("test.event", "x") for _ in range(5)])
        raise RuntimeError("the change failed")
    trail.checkpointer.drain()
    assert len(exported(gql, tenant.key)[1]) == len(heads)


def test_checkpoints_are_signed_off_the_appending_transaction(runtime, monkeypatch):
    """The appender never verifies or signs: its transaction (and the chain's head lock) is
    released first, and the checkpointer's own thread takes the checkpoint."""
    tenant = onboard(runtime)
    trail = AuditTrail(runtime.db, secrets=runtime.secrets, checkpoint_every=2)
    taken_on: list[str] = []
    real = AuditTrail._checkpoint

    def spy(self, session, *args, **kwargs):
        taken_on.append(threading.current_thread().name)
        return real(self, session, *args, **kwargs)

    monkeypatch.setattr(AuditTrail, "_checkpoint", spy)
    with runtime.db.tenant_transaction(tenant.id) as session:
        trail.append(session, tenant.id, [AuditEntry("test.event", f"e-{i}") for i in range(4)])
        assert taken_on == []  # nothing while the change is still open
    trail.checkpointer.drain()
    assert taken_on == ["audit-checkpoints"]


def _appended(runtime, trail, tenant_id: str, n: int) -> None:
    with runtime.db.tenant_transaction(tenant_id) as session:
        trail.append(session, tenant_id, [AuditEntry("test.event", f"e-{i}") for i in range(n)])


def _rehashed(monkeypatch) -> list[tuple[int, int]]:
    """The (after seq, up to seq) ranges checkpoints re-hash from their stored content."""
    ranges: list[tuple[int, int]] = []
    real = AuditTrail._verify_range

    def spy(session, chain, prev_seq, prev_hash, seq, head_hash):
        ranges.append((prev_seq, seq))
        return real(session, chain, prev_seq, prev_hash, seq, head_hash)

    monkeypatch.setattr(AuditTrail, "_verify_range", staticmethod(spy))
    return ranges


def _head(runtime, tenant_id: str) -> int:
    with runtime.db.engine.connect() as conn:
        return conn.execute(text("SELECT last_seq FROM audit_head WHERE chain = :c"),
                            {"c": tenant_id}).scalar_one()


def test_a_checkpoint_rehashes_only_the_records_this_gateway_did_not_append(runtime, gql,
                                                                             monkeypatch):
    """Records this trail appended are checked by their stored hashes against the ones it
    computed; the onboarding's records (another trail's, as another process's would be) are
    re-hashed from their content."""
    tenant = onboard(runtime)
    start = _head(runtime, tenant.id)
    trail = AuditTrail(runtime.db, secrets=runtime.secrets, checkpoint_every=start + 10)
    ranges = _rehashed(monkeypatch)
    for batch in (4, 3, 5):  # crosses start + 10 with the last
        _appended(runtime, trail, tenant.id, batch)
    trail.checkpointer.drain()
    assert ranges == [(0, start)]  # the onboarding's records only
    _, found = exported(gql, tenant.key)
    assert [c["seq"] for c in found] == [start + 12]
    assert verify(gql, tenant.key)["ok"]
    # The next checkpoint starts from this one: nothing of this trail's is re-hashed.
    _appended(runtime, trail, tenant.id, start + 10)
    trail.checkpointer.drain()
    assert ranges == [(0, start)]
    assert len(exported(gql, tenant.key)[1]) == 2 and verify(gql, tenant.key)["ok"]


def test_segments_past_the_cap_are_rehashed(runtime, gql, monkeypatch):
    from gateway.audit import checkpointer

    monkeypatch.setattr(checkpointer, "MAX_SEGMENTS", 1)
    tenant = onboard(runtime)
    start = _head(runtime, tenant.id)
    trail = AuditTrail(runtime.db, secrets=runtime.secrets, checkpoint_every=start + 10)
    ranges = _rehashed(monkeypatch)
    for batch in (4, 3, 5):
        _appended(runtime, trail, tenant.id, batch)
    trail.checkpointer.drain()
    assert ranges == [(0, start), (start + 4, start + 12)]  # only the first batch was held
    assert [c["seq"] for c in exported(gql, tenant.key)[1]] == [start + 12]
    # Taken, the checkpoint lets go of what it covers: room for the next segment.
    _appended(runtime, trail, tenant.id, 2)
    assert trail.checkpointer.segments(tenant.id, start + 12, start + 14) != []


def test_a_record_of_another_process_edited_before_the_checkpoint_is_refused(runtime, gql,
                                                                               monkeypatch):
    tenant = onboard(runtime)
    start = _head(runtime, tenant.id)
    trail = AuditTrail(runtime.db, secrets=runtime.secrets, checkpoint_every=start + 10)
    other = AuditTrail(runtime.db)  # another process: nothing of its appends is known here
    _appended(runtime, trail, tenant.id, 3)
    _appended(runtime, other, tenant.id, 3)
    with tampering(runtime, ("audit_record",)) as conn:  # content only, its hash left as it was
        conn.execute(text("UPDATE audit_record SET subject = 'forged' WHERE chain = :c AND "
                          "seq = :s"), {"c": tenant.id, "s": start + 5})
    ranges = _rehashed(monkeypatch)
    _appended(runtime, trail, tenant.id, 6)
    trail.checkpointer.drain()
    assert (start + 3, start + 6) in ranges and exported(gql, tenant.key)[1] == []
    body = verify(gql, tenant.key)
    assert not body["ok"] and body["firstBadSeq"] == start + 5


def test_records_rewritten_after_this_gateway_appended_them_are_not_checkpointed(runtime, gql):
    """Every hash recomputed and the head moved, between the commit and the checkpoint: the
    chain re-hashes cleanly, but not to the hashes this trail computed, so nothing is signed,
    on append or on demand (the re-hash alone would have signed the rewritten chain)."""
    tenant = onboard(runtime)
    start = _head(runtime, tenant.id)
    trail = AuditTrail(runtime.db, secrets=runtime.secrets, checkpoint_every=start + 10)
    _appended(runtime, trail, tenant.id, 5)
    with tampering(runtime, ("audit_record",)) as conn:
        rewrite_from(runtime, conn, tenant.id, start + 2, lambda p: {**p, "forged": True})
    assert runtime.audit._verify_chain(tenant.id, None, None).ok  # the hash chain alone: fooled
    _appended(runtime, trail, tenant.id, 6)
    trail.checkpointer.drain()
    assert exported(gql, tenant.key)[1] == []
    with pytest.raises(Conflict) as refused:  # nor on demand
        trail.create_checkpoint(tenant.id)
    assert refused.value.code == "AUDIT_CHAIN_BROKEN"
    assert refused.value.details == {"chain": tenant.id, "firstBadSeq": start + 1}
    assert exported(gql, tenant.key)[1] == []


def test_checkpoint_tables_are_append_only(runtime, gql, tenant):
    gql.data(CREATE, key=tenant.key)
    for statement in ("UPDATE audit_checkpoint SET head_hash = 'x' WHERE chain = :c",
                      "DELETE FROM audit_checkpoint WHERE chain = :c",
                      "UPDATE audit_signing_key SET public_key = 'x' WHERE id = :c",
                      "UPDATE audit_signing_key SET created_at = '2000-01-01 00:00:00' WHERE id = :c",
                      "UPDATE audit_signing_key SET id = 'y' WHERE id = :c",
                      "DELETE FROM audit_signing_key WHERE id = :c"):
        chain = "platform" if "signing" in statement else tenant.id
        with pytest.raises(DBAPIError) as refused, runtime.db.engine.begin() as conn:
            conn.execute(text(statement), {"c": chain})
        assert "append-only" in str(refused.value)
    # Only the private key's sealed form may be rewritten (a secret key rotation reseals it).
    with runtime.db.engine.begin() as conn:
        assert conn.execute(text("UPDATE audit_signing_key SET sealed_key = sealed_key "
                                 "WHERE id = 'platform'")).rowcount == 1


# The attack of issue 17.
def test_a_rewrite_with_every_hash_recomputed_is_caught_by_an_exported_checkpoint(runtime, desk):
    """Triggers disabled, a trade's price rewritten in the execution row and in its audit
    record, every later hash recomputed with the project's own record_hash, the head moved:
    the chain and the cross-check both agree again, but not the signed checkpoint."""
    gql, tenant, rt = desk
    order = filled_order(gql, tenant)
    checkpoint = gql.data(CREATE, key=tenant.key)["createAuditCheckpoint"]
    filled_order(gql, tenant, "7")  # records after the checkpoint
    _, kept = exported(gql, tenant.key)  # the auditor's copy, outside the database
    assert verify(gql, tenant.key, kept)["ok"]

    fill = fill_records(rt, tenant.id, order["id"])[0]
    assert fill.seq <= checkpoint["seq"]
    cheaper = str(D(fill.payload["last_px"]) - D("1.5"))
    with tampering(rt) as conn:
        conn.execute(text("UPDATE execution SET last_px = :px WHERE order_id = :o AND exec_id = :e"),
                     {"px": cheaper, "o": order["id"], "e": fill.payload["exec_id"]})
        rewrite_from(rt, conn, tenant.id, fill.seq, lambda p: {**p, "last_px": cheaper})
    assert rt.audit._verify_chain(tenant.id, None, None).ok  # the hash chain alone: fooled

    # The stored checkpoint still disagrees...
    body = verify(gql, tenant.key)
    assert not body["ok"] and body["code"] == "AUDIT_CHECKPOINT_MISMATCH", body
    assert body["checkpoint"]["seq"] == checkpoint["seq"] and not body["checkpoint"]["supplied"]
    assert body["firstBadSeq"] is None and body["mismatches"] == []  # rows and records agree
    # ...and no new checkpoint launders the rewrite.
    assert error_codes(gql(CREATE, key=tenant.key)) == ["AUDIT_CHAIN_BROKEN"]

    # The attacker deletes the stored checkpoints too: only the exported ones can tell now.
    with tampering(rt, ("audit_checkpoint",)) as conn:
        conn.execute(text("DELETE FROM audit_checkpoint WHERE chain = :c"), {"c": tenant.id})
    assert verify(gql, tenant.key)["ok"]  # nothing left in the database to disagree
    body = verify(gql, tenant.key, kept)
    assert not body["ok"] and body["code"] == "AUDIT_CHECKPOINT_MISMATCH", body
    assert body["checkpoint"]["seq"] == checkpoint["seq"] and body["checkpoint"]["supplied"]
    assert body["checkpoint"]["headHash"] == checkpoint["headHash"]
    assert body["checkpointsChecked"] == 0


def test_a_forged_checkpoint_is_refused(runtime, gql, tenant):
    taken = gql.data(CREATE, key=tenant.key)["createAuditCheckpoint"]
    real = {k: taken[k] for k in CHECKPOINT_FIELDS.split()}
    # Another key signs a statement of the chain's true head: not the platform's key.
    mallory = sign(Ed25519PrivateKey.generate(), tenant.id, tenant.id, taken["seq"],
                   taken["headHash"], taken["count"]).exported()
    body = verify(gql, tenant.key, [mallory])
    assert body["code"] == "AUDIT_CHECKPOINT_KEY_UNKNOWN" and body["checkpoint"]["supplied"]
    # The platform's signature over one statement does not cover another.
    moved = {**real, "headHash": "0" * 64}
    assert verify(gql, tenant.key, [moved])["code"] == "AUDIT_CHECKPOINT_SIGNATURE_INVALID"
    # The checkpointed record cut off the end and the head moved back: the chain verifies,
    # the checkpoint names a record it no longer has.
    with tampering(runtime, ("audit_record",)) as conn:
        conn.execute(text("DELETE FROM audit_record WHERE chain = :c AND seq = :s"),
                     {"c": tenant.id, "s": taken["seq"]})
        before = conn.execute(text("SELECT hash FROM audit_record WHERE chain = :c AND seq = :s"),
                              {"c": tenant.id, "s": taken["seq"] - 1}).scalar()
        conn.execute(text("UPDATE audit_head SET last_seq = :s, last_hash = :h WHERE chain = :c"),
                     {"s": taken["seq"] - 1, "h": before, "c": tenant.id})
    assert runtime.audit._verify_chain(tenant.id, None, None).ok
    body = verify(gql, tenant.key, [real])
    assert body["code"] == "AUDIT_CHECKPOINT_RECORD_MISSING" and body["checkpoint"]["supplied"]
    # A forged row stored by someone with the database's rights is judged the same way.
    with tampering(runtime, ("audit_checkpoint",)) as conn:
        conn.execute(text("INSERT INTO audit_checkpoint (tenant_id, chain, seq, head_hash, at, "
                          "count, public_key, signature) VALUES (:t, :c, 1, :h, :at, 1, :k, :s)"),
                     {"t": tenant.id, "c": tenant.id, "h": "f" * 64, "at": datetime.now(UTC),
                      "k": real["publicKey"], "s": real["signature"]})
    body = verify(gql, tenant.key)
    assert body["code"] == "AUDIT_CHECKPOINT_SIGNATURE_INVALID" and body["checkpoint"]["seq"] == 1
    assert not body["checkpoint"]["supplied"]


# Rows against records.
def test_a_trade_altered_without_touching_the_audit_trail_is_caught(desk):
    gql, tenant, rt = desk
    order = filled_order(gql, tenant)
    other = filled_order(gql, tenant, "5")
    body = verify(gql, tenant.key)
    assert body["ok"] and body["crossChecked"] >= 4, body
    with rt.db.tenant_session(tenant.id) as session:
        execution = session.exec(select(Execution).where(Execution.order_id == order["id"])).first()
        gone = session.exec(select(Execution).where(Execution.order_id == other["id"])).first()
    with rt.db.engine.begin() as conn:  # no trigger guards the trade tables: plain SQL
        conn.execute(text("UPDATE execution SET last_px = last_px + 1 WHERE id = :i"),
                     {"i": execution.id})
        conn.execute(text("UPDATE trade_order SET cum_qty = 19, leaves_qty = 1, "
                          "status = 'PARTIALLY_FILLED' WHERE id = :i"), {"i": order["id"]})
        conn.execute(text("DELETE FROM execution WHERE id = :i"), {"i": gone.id})

    body = verify(gql, tenant.key)
    assert not body["ok"] and body["firstBadSeq"] is None  # the chain itself is intact
    found = {(m["code"], m["field"]) for m in body["mismatches"]}
    assert {("AUDIT_EXECUTION_MISMATCH", "last_px"), ("AUDIT_ORDER_MISMATCH", "status"),
            ("AUDIT_ORDER_MISMATCH", "cum_qty"), ("AUDIT_ORDER_MISMATCH", "leaves_qty"),
            ("AUDIT_EXECUTION_ROW_MISSING", "exec_id")} <= found, body
    assert body["code"] == body["mismatches"][0]["code"]
    assert body["mismatchCount"] == len(body["mismatches"])
    price = next(m for m in body["mismatches"] if m["field"] == "last_px")
    assert price["executionId"] == execution.id and price["orderId"] == order["id"]
    assert D(price["actual"]) == D(price["recorded"]) + 1
    status = next(m for m in body["mismatches"] if m["field"] == "status")
    assert (status["recorded"], status["actual"]) == ("FILLED", "PARTIALLY_FILLED")

    # An order row with no record of its submission.
    table = Order.__table__
    with rt.db.engine.begin() as conn:
        row = dict(conn.execute(table.select().where(table.c.id == order["id"])).one()._mapping)
        conn.execute(table.insert().values({**row, "id": unique("forged"),
                                            "client_order_id": unique("forged")}))
    body = verify(gql, tenant.key)
    assert ("AUDIT_ORDER_MISSING", None) in {(m["code"], m["field"]) for m in body["mismatches"]}


def test_every_order_path_cross_checks_clean(desk):
    """Partial fills, resting, amendments (quantity and price), cancels and denials: the rows
    and the records the order domain wrote agree, with nothing reported."""
    gql, tenant, rt = desk
    q = rt.market_data.quote("AAPL.XNAS", rt.markets.now())
    order = {"account": "ACC1", "symbol": "AAPL", "mic": "XNAS", "side": "BUY"}
    partial = gql.data(SUBMIT, {"input": {**order, "clientOrderId": unique("o"), "ordType": "LIMIT",
                                          "timeInForce": "DAY", "limitPrice": str(q.ask),
                                          "quantity": str(q.ask_size + 100)}},
                       key=tenant.key)["submitOrder"]
    assert partial["status"] == "PARTIALLY_FILLED", partial
    below = (q.bid * D("0.96")).quantize(D("0.01"))
    resting = gql.data(SUBMIT, {"input": {**order, "clientOrderId": unique("o"), "ordType": "LIMIT",
                                          "timeInForce": "GTC", "limitPrice": str(below),
                                          "quantity": "40"}}, key=tenant.key)["submitOrder"]
    assert resting["status"] == "ACCEPTED", resting
    amend = ("mutation($id: ID!, $q: String, $p: String) { amendOrder(id: $id, quantity: $q, "
             "limitPrice: $p) { status quantity limitPrice } }")
    gql.data(amend, {"id": resting["id"], "q": "30"}, key=tenant.key)
    lower = str((below * D("0.99")).quantize(D("0.01")))
    assert gql.data(amend, {"id": resting["id"], "p": lower}, key=tenant.key)["amendOrder"][
        "limitPrice"] == lower
    for o in (partial, resting):
        gql.data("mutation($id: ID!) { cancelOrder(id: $id) { status } }", {"id": o["id"]},
                 key=tenant.key)
    denied = gql.data(SUBMIT, {"input": {**order, "clientOrderId": unique("o"), "ordType": "LIMIT",
                                         "timeInForce": "DAY", "quantity": "10",
                                         "limitPrice": str((q.ask * 2).quantize(D("0.01")))}},
                      key=tenant.key)["submitOrder"]
    assert denied["status"] == "DENIED", denied
    filled_order(gql, tenant, "3")
    body = verify(gql, tenant.key)
    assert body["ok"] and body["mismatches"] == [] and body["crossChecked"] >= 6, body


# Isolation.
def test_checkpoints_are_tenant_isolated(runtime, gql, tenant, other_tenant):
    mine = gql.data(CREATE, key=tenant.key)["createAuditCheckpoint"]
    theirs = gql.data(CREATE, key=other_tenant.key)["createAuditCheckpoint"]
    assert theirs["chain"] == other_tenant.id  # a tenant checkpoints its own chain only
    _, seen = exported(gql, other_tenant.key)
    assert [c["chain"] for c in seen] == [other_tenant.id]
    _, mine_seen = exported(gql, tenant.key)
    assert [c["chain"] for c in mine_seen] == [tenant.id]
    real = {k: mine[k] for k in CHECKPOINT_FIELDS.split()}
    # B verifying with A's checkpoint: another chain's, not looked at, nothing said of A's chain.
    body = verify(gql, other_tenant.key, [real])
    assert body["code"] == "AUDIT_CHECKPOINT_FOREIGN" and body["checkpoint"]["supplied"]
    assert tenant.id not in body["checkpoint"]["problem"]
    # Relabelled as B's: the signature covers the chain.
    relabelled = {**real, "chain": other_tenant.id, "tenantId": other_tenant.id}
    assert verify(gql, other_tenant.key, [relabelled])["code"] == "AUDIT_CHECKPOINT_SIGNATURE_INVALID"
    # A cursor naming A's chain does not reach A's checkpoints from B: it only positions B's page.
    forged = encode_cursor(datetime(2100, 1, 1, tzinfo=UTC), tenant.id, mine["seq"] + 1000)
    page = gql.data(CHECKPOINTS, {"first": 5, "after": forged},
                    key=other_tenant.key)["auditCheckpoints"]
    assert [e["node"]["chain"] for e in page["edges"]] == [other_tenant.id]
    with runtime.db.tenant_session(other_tenant.id) as session:  # the filter, not just the query
        from gateway.audit.models import AuditCheckpoint

        assert session.exec(select(AuditCheckpoint).where(
            AuditCheckpoint.chain == tenant.id)).all() == []
    assert error_codes(gql(CHECKPOINTS, {"after": "nonsense"}, key=tenant.key)) == ["CURSOR_INVALID"]


def test_cli_export_checkpoints(migrated, runtime, gql, tmp_path):
    t = onboard(runtime)
    taken = gql.data(CREATE, key=t.key)["createAuditCheckpoint"]
    out = tmp_path / "checkpoints.json"
    env = {"ALPHINTRA_SECRET_KEY": migrated.secret_key}
    done = run(migrated, "audit", "export-checkpoints", "--out", str(out), "--tenant", t.slug, env=env)
    assert done.returncode == 0, done.stderr
    document = json.loads(out.read_text())
    assert document["format"] == "alphintra-audit-checkpoints/1"
    assert document["publicKey"] == taken["publicKey"]
    assert [c["seq"] for c in document["checkpoints"]] == [taken["seq"]]
    assert Checkpoint.parse(document["checkpoints"][0]).signature == taken["signature"]
    body = verify(gql, t.key, document["checkpoints"])  # the file goes straight back in
    assert body["ok"] and body["checkpointsChecked"] == 1
    every = run(migrated, "audit", "export-checkpoints", "--out", "-", env=env)
    assert every.returncode == 0, every.stderr
    assert {(c["chain"], c["seq"]) for c in json.loads(every.stdout)["checkpoints"]} >= {
        (t.id, taken["seq"])}
    usage = run(migrated, "audit", "export-checkpoints", "--out", "-", "--platform", "--tenant",
                t.slug, env=env)
    assert usage.returncode == 2
