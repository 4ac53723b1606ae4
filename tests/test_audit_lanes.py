"""The audit chain sharded into lanes (issue 14): one tenant's writers append at once, each to
a lane of its own; every lane is verified, checkpointed and paged; the cross-check replays the
lanes in (at, chain, seq) order; no tenant reaches another's lanes; migration 0026.

Lanes are PostgreSQL's (several writers at once): the tests that need them skip on SQLite, where
the trail keeps one lane (tested here too)."""

from __future__ import annotations

import base64
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, inspect, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DataError
from sqlmodel import col, select

from gateway.audit import AuditEntry, AuditRecord, AuditTrail
from gateway.audit.lanes import MAX_LANES, decode_cursor, encode_cursor, heads, lane_number
from gateway.cli import downgrade_database, migrate_database
from gateway.errors import InvalidInput, NotFound
from gateway.runtime import Runtime
from gateway.settings import Settings, SettingsError
from gateway.tenancy.models import Tenant
from schema.selected_rows import RowShape
from tests.support import error_codes, onboard, unique
from tests.test_audit import append, entries, lane_rows
from tests.test_audit_checkpoints import desk as desk  # a fixture, used by name
from tests.test_audit_checkpoints import filled_order, tampering, verify
from tests.test_audit_checkpoints import venue as venue  # a fixture, used by name
from tests.test_cli import run

LANE_VERIFY = ("query($cps: [AuditCheckpointInput!]) { verifyAuditTrail(checkpoints: $cps) { ok "
               "checked firstBadSeq chain chains code problem checkpointsChecked "
               "checkpoint { code seq chain supplied problem } mismatches { code } } }")
CHECKPOINT_FIELDS = "chain tenantId seq headHash at count publicKey signature"
CREATE_ONE = f"mutation($c: String) {{ createAuditCheckpoint(chain: $c) {{ {CHECKPOINT_FIELDS} }} }}"
CREATE_ALL = f"mutation {{ createAuditCheckpoints {{ {CHECKPOINT_FIELDS} }} }}"
CHECKPOINTS = (f"query($after: String) {{ auditCheckpoints(first: 3, after: $after) {{ edges {{ "
               f"cursor node {{ {CHECKPOINT_FIELDS} }} }} pageInfo {{ hasNextPage endCursor }} }} }}")
RECORDS = ("query($after: String) { auditRecords(first: 3, after: $after) { edges { cursor node { "
           "chain seq at kind subject } } pageInfo { hasNextPage endCursor } } }")


@pytest.fixture
def pg(runtime: Runtime) -> None:
    if runtime.db.engine.dialect.name != "postgresql":
        pytest.skip("lanes are PostgreSQL's: on SQLite, whose writers take turns, one lane")
    assert runtime.audit.lanes.count >= 2  # ALPHINTRA_AUDIT_LANES: 4 by default


@contextmanager
def lane_zero_held(runtime: Runtime, tenant_id: str) -> Iterator[None]:
    """Another transaction holds the tenant's lane 0 until the block ends (then rolls back)."""
    with runtime.db.tenant_session(tenant_id) as side:
        side.begin()
        assert runtime.audit.lanes.lock(side, tenant_id).chain == tenant_id
        try:
            yield
        finally:
            side.rollback()


def in_lane_one(runtime: Runtime, tenant_id: str, batch: list[AuditEntry]) -> list[Any]:
    with lane_zero_held(runtime, tenant_id):
        written = append_with(runtime.audit, runtime, tenant_id, batch)
    assert {r.chain for r in written} == {f"{tenant_id}/1"}
    return written


# Appending.
def test_two_transactions_of_one_tenant_append_at_once(runtime, pg):
    """The first transaction stays open (a thread holds it) while the second appends: the
    second does not wait for the first's commit, and each lands in a lane of its own."""
    t = onboard(runtime)
    appended, release = threading.Event(), threading.Event()
    first: list[Any] = []
    second: list[Any] = []

    def hold() -> None:
        with runtime.db.tenant_transaction(t.id) as session:
            first.extend(runtime.audit.append(session, t.id, entries(3, "first")))
            appended.set()
            release.wait(10)

    def other() -> None:
        second.extend(append(runtime, t.id, entries(2, "second")))

    holder = threading.Thread(target=hold)
    holder.start()
    assert appended.wait(10)
    worker = threading.Thread(target=other)
    worker.start()
    worker.join(5)
    try:
        assert not worker.is_alive(), "the second transaction waited for the first's commit"
        assert holder.is_alive() and first[0].chain != second[0].chain
    finally:
        release.set()
        holder.join(10)
        worker.join(10)
    assert {r.chain for r in first} == {t.id} and {r.chain for r in second} == {f"{t.id}/1"}
    lanes = lane_rows(runtime, t.id)
    assert set(lanes) == {t.id, f"{t.id}/1"}
    for chain, rows in lanes.items():
        assert [r.seq for r in rows] == list(range(1, len(rows) + 1)), chain
    assert [r.subject for r in lanes[f"{t.id}/1"]] == ["second-0", "second-1"]
    result = runtime.audit.verify(t.id)
    assert result.ok and result.chains == runtime.audit.lanes.count
    assert result.checked == sum(len(rows) for rows in lanes.values())
    assert [lane.chain for lane in result.lanes][:2] == [t.id, f"{t.id}/1"]


def test_one_transactions_appends_stay_in_the_lane_it_holds(runtime, pg):
    """Lane 0 busy, a transaction appends to lane 1; lane 0 freed meanwhile, its next append
    still goes to lane 1 (a transaction's records together, one lane locked, not two)."""
    t = onboard(runtime)
    with runtime.db.tenant_transaction(t.id) as session:
        no_long_wait(session)
        with lane_zero_held(runtime, t.id):
            one = runtime.audit.append(session, t.id, entries(2, "a"))
        two = runtime.audit.append(session, t.id, entries(2, "b"))
    assert {r.chain for r in one + two} == {f"{t.id}/1"}
    assert [r.seq for r in one + two] == [1, 2, 3, 4]
    assert append(runtime, t.id, entries(1, "c"))[0].chain == t.id  # uncontended: lane 0


def test_with_every_lane_busy_an_append_waits_for_lane_zero(runtime, pg):
    t = onboard(runtime)
    trail = AuditTrail(runtime.db, lanes=2)
    done: list[Any] = []
    with runtime.db.tenant_session(t.id) as zero, runtime.db.tenant_session(t.id) as one:
        zero.begin()
        one.begin()
        assert trail.lanes.lock(zero, t.id).chain == t.id
        assert trail.lanes.lock(one, t.id).chain == f"{t.id}/1"

        def third() -> None:
            with runtime.db.tenant_transaction(t.id) as session:
                done.extend(trail.append(session, t.id, entries(1, "third")))

        waiting = threading.Thread(target=third)
        waiting.start()
        waiting.join(0.5)
        assert waiting.is_alive() and not done  # both lanes held: it waits
        zero.rollback()
        waiting.join(10)
        one.rollback()
    assert [r.chain for r in done] == [t.id]


def test_a_tenant_from_before_the_lanes_gets_them_on_its_first_contention(runtime, pg):
    """Only lane 0's head exists (as for every tenant before migration 0026): the first append
    that finds it busy waits for it and makes the other heads; the next one takes lane 1."""
    tenant_id = _tenant(runtime, f"legacy-{uuid.uuid4().hex[:8]}")
    with runtime.db.tenant_transaction(tenant_id) as session:
        AuditTrail(runtime.db, lanes=1).append(session, tenant_id, entries(2, "before"))
    assert runtime.audit.chains(tenant_id) == [tenant_id]
    trail = AuditTrail(runtime.db, lanes=3)
    done: list[Any] = []
    with runtime.db.tenant_session(tenant_id) as side:
        side.begin()
        assert trail.lanes.lock(side, tenant_id).chain == tenant_id
        waiting = threading.Thread(target=lambda: done.extend(append_with(trail, runtime,
                                                                            tenant_id)))
        waiting.start()
        waiting.join(0.5)
        assert waiting.is_alive()  # no other lane yet: it waits for lane 0
        side.rollback()
        waiting.join(10)
    assert [r.chain for r in done] == [tenant_id]
    assert runtime.audit.chains(tenant_id) == [tenant_id, f"{tenant_id}/1", f"{tenant_id}/2"]
    with runtime.db.tenant_session(tenant_id) as side:
        side.begin()
        trail.lanes.lock(side, tenant_id)
        assert append_with(trail, runtime, tenant_id)[0].chain == f"{tenant_id}/1"
        side.rollback()
    assert runtime.audit.verify(tenant_id).ok


def test_a_record_is_stamped_with_the_databases_clock_read_under_the_lock(runtime, pg,
                                                                          monkeypatch):
    """`at` is PostgreSQL's clock, not the appending process's; an appender that waited for a
    lane reads it after the holder committed, so a lane's records are in time order."""
    monkeypatch.setattr("gateway.audit.lanes.utcnow", lambda: datetime(2000, 1, 1, tzinfo=UTC))
    t = onboard(runtime)
    with runtime.db.engine.connect() as conn:
        database_now = conn.execute(text("SELECT clock_timestamp()")).scalar_one()
    stamped = append(runtime, t.id, entries(1))[0].at
    assert abs(stamped - database_now) < timedelta(seconds=5)

    trail = AuditTrail(runtime.db, lanes=1)  # one lane: the second appender must wait
    appended, first, second = threading.Event(), [], []

    def hold() -> None:
        with runtime.db.tenant_transaction(t.id) as session:
            first.extend(trail.append(session, t.id, entries(1, "first")))
            appended.set()
            time.sleep(0.5)

    holder = threading.Thread(target=hold)
    holder.start()
    assert appended.wait(10)
    second.extend(append_with(trail, runtime, t.id))
    holder.join(10)
    assert second[0].chain == first[0].chain == t.id
    assert second[0].at - first[0].at >= timedelta(seconds=0.4)


def append_with(trail: AuditTrail, runtime: Runtime, tenant_id: str,
                batch: list[AuditEntry] | None = None) -> list[Any]:
    with runtime.db.tenant_transaction(tenant_id) as session:
        no_long_wait(session)
        return trail.append(session, tenant_id, batch or entries(1, "second"))


def no_long_wait(session: Any) -> None:
    """An append that waits for a lane it should not fails within 5 s, never hangs the test."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SET LOCAL lock_timeout = '5s'"))


def test_sqlite_keeps_one_lane(runtime):
    if runtime.db.engine.dialect.name != "sqlite":
        pytest.skip("SQLite's rule")
    t = onboard(runtime)
    trail = AuditTrail(runtime.db, lanes=4)

    def appender() -> None:
        for _ in range(3):
            append_with(trail, runtime, t.id)

    threads = [threading.Thread(target=appender) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert list(lane_rows(runtime, t.id)) == [t.id]
    result = runtime.audit.verify(t.id)
    assert result.ok and result.chains == 1 and [lane.chain for lane in result.lanes] == [t.id]


# Verifying.
def test_a_record_edited_or_deleted_in_lane_one_is_found_with_its_chain_and_seq(runtime, gql, pg):
    edited, deleted = onboard(runtime), onboard(runtime)
    for t in (edited, deleted):
        append(runtime, t.id, entries(2, "zero"))
        in_lane_one(runtime, t.id, entries(4, "one"))
        body = gql.data(LANE_VERIFY, key=t.key)["verifyAuditTrail"]
        assert body["ok"] and body["chain"] is None and body["chains"] == runtime.audit.lanes.count
    with tampering(runtime) as conn:
        conn.execute(text("UPDATE audit_record SET payload = :p WHERE chain = :c AND seq = 2"),
                     {"p": '{"i": 1, "qty": "1000000"}', "c": f"{edited.id}/1"})
        conn.execute(text("DELETE FROM audit_record WHERE chain = :c AND seq = 3"),
                     {"c": f"{deleted.id}/1"})
    body = gql.data(LANE_VERIFY, key=edited.key)["verifyAuditTrail"]
    assert (body["ok"], body["code"], body["chain"], body["firstBadSeq"]) == (
        False, "AUDIT_CHAIN_BROKEN", f"{edited.id}/1", 2), body
    assert "altered" in body["problem"]
    lane_zero = len(lane_rows(runtime, edited.id)[edited.id])
    assert body["checked"] == lane_zero + 1  # lane 0 whole, lane 1 up to its bad record
    result = runtime.audit.verify(deleted.id)
    assert (result.ok, result.chain, result.first_bad_seq) == (False, f"{deleted.id}/1", 3)
    assert "missing" in result.problem
    assert [(lane.chain, lane.ok) for lane in result.lanes][:2] == [(deleted.id, True),
                                                                  (f"{deleted.id}/1", False)]


def test_a_window_checks_every_lane(runtime, pg):
    t = onboard(runtime)
    start = datetime.now(UTC) - timedelta(seconds=1)
    append(runtime, t.id, entries(2, "zero"))
    one = in_lane_one(runtime, t.id, entries(3, "one"))
    end = datetime.now(UTC) + timedelta(seconds=5)
    assert runtime.audit.verify(t.id, start, end).ok
    with tampering(runtime) as conn:  # the window's last record in lane 1: the head knows
        conn.execute(text("DELETE FROM audit_record WHERE chain = :c AND seq = :s"),
                     {"c": one[-1].chain, "s": one[-1].seq})
    window = runtime.audit.verify(t.id, start, end)
    assert (window.ok, window.chain, window.first_bad_seq) == (False, one[-1].chain, one[-1].seq)


# Checkpoints.
def test_every_lane_is_checkpointed_and_a_tampered_lane_one_checkpoint_is_found(runtime, gql, pg):
    t = onboard(runtime)
    in_lane_one(runtime, t.id, entries(3, "one"))
    taken = gql.data(CREATE_ALL, key=t.key)["createAuditCheckpoints"]
    assert [(c["chain"], c["seq"]) for c in taken] == [(t.id, taken[0]["seq"]), (f"{t.id}/1", 3)]
    assert all(c["tenantId"] == t.id for c in taken)
    again = gql.data(CREATE_ONE, {"c": f"{t.id}/1"}, key=t.key)["createAuditCheckpoint"]
    assert again == taken[1]  # nothing appended since: the same checkpoint
    assert gql.data(CREATE_ONE, key=t.key)["createAuditCheckpoint"] == taken[0]  # lane 0 default
    empty = gql(CREATE_ONE, {"c": f"{t.id}/{runtime.audit.lanes.count - 1}"}, key=t.key)
    assert error_codes(empty) == ["AUDIT_CHAIN_EMPTY"]

    listed, after = [], None
    while True:
        page = gql.data(CHECKPOINTS, {"after": after}, key=t.key)["auditCheckpoints"]
        listed += [e["node"] for e in page["edges"]]
        if not page["pageInfo"]["hasNextPage"]:
            break
        after = page["pageInfo"]["endCursor"]
    assert sorted(listed, key=lambda c: (c["chain"], c["seq"])) == taken
    assert listed == sorted(listed, key=lambda c: (c["at"], c["chain"], c["seq"]), reverse=True)
    body = gql.data(LANE_VERIFY, {"cps": listed}, key=t.key)["verifyAuditTrail"]
    assert body["ok"] and body["checkpointsChecked"] == 2, body

    with tampering(runtime, ("audit_checkpoint",)) as conn:
        conn.execute(text("UPDATE audit_checkpoint SET head_hash = :h WHERE chain = :c"),
                     {"h": "f" * 64, "c": f"{t.id}/1"})
    body = gql.data(LANE_VERIFY, key=t.key)["verifyAuditTrail"]
    assert body["code"] == "AUDIT_CHECKPOINT_SIGNATURE_INVALID", body
    assert (body["checkpoint"]["chain"], body["checkpoint"]["seq"]) == (f"{t.id}/1", 3)
    assert not body["checkpoint"]["supplied"] and body["firstBadSeq"] is None
    # The auditor's exported copy takes precedence over the stored one at that chain and seq.
    assert gql.data(LANE_VERIFY, {"cps": listed}, key=t.key)["verifyAuditTrail"]["ok"]


def test_a_lane_written_only_under_contention_is_checkpointed_with_the_lane_due(runtime, pg):
    """Lane 1 never crosses a multiple of checkpoint_every by itself here: it is signed when
    lane 0's checkpoint falls due, at its head as it is then."""
    t = onboard(runtime)
    trail = AuditTrail(runtime.db, secrets=runtime.secrets, checkpoint_every=50, lanes=4)
    with lane_zero_held(runtime, t.id):
        one = append_with(trail, runtime, t.id, entries(3, "one"))
    assert {r.chain for r in one} == {f"{t.id}/1"}
    trail.checkpointer.drain()
    with runtime.db.tenant_session(t.id) as session:
        assert trail._stored(session, f"{t.id}/1") == []  # 3 records: none due in lane 1
    zero = append_with(trail, runtime, t.id, entries(50, "zero"))  # lane 0 crosses 50
    assert {r.chain for r in zero} == {t.id}
    trail.checkpointer.drain()
    with runtime.db.tenant_session(t.id) as session:
        assert [(c.seq, c.head_hash) for c in trail._stored(session, f"{t.id}/1")] == [
            (3, one[-1].hash)]
        assert [c.seq for c in trail._stored(session, t.id)] == [zero[-1].seq]
    assert trail.verify(t.id).checkpoints_checked == 2


def test_the_checkpoint_of_another_tenants_lane_is_foreign(runtime, gql, pg):
    a, b = onboard(runtime), onboard(runtime)
    in_lane_one(runtime, a.id, entries(2, "secret"))
    theirs = gql.data(CREATE_ONE, {"c": f"{a.id}/1"}, key=a.key)["createAuditCheckpoint"]
    body = gql.data(LANE_VERIFY, {"cps": [theirs]}, key=b.key)["verifyAuditTrail"]
    assert body["code"] == "AUDIT_CHECKPOINT_FOREIGN" and body["checkpoint"]["supplied"], body
    assert body["checkpoint"]["chain"] is None and a.id not in body["checkpoint"]["problem"]
    # Relabelled as B's lane 1: the signature covers the chain and the tenant.
    relabelled = {**theirs, "chain": f"{b.id}/1", "tenantId": b.id}
    body = gql.data(LANE_VERIFY, {"cps": [relabelled]}, key=b.key)["verifyAuditTrail"]
    assert body["code"] == "AUDIT_CHECKPOINT_SIGNATURE_INVALID"


def test_create_audit_checkpoint_refuses_a_chain_not_the_tenants(runtime, gql):
    a, b = onboard(runtime), onboard(runtime)
    for chain in (a.id, f"{a.id}/1", "platform", f"{b.id}/99", f"{b.id}x", ""):
        body = gql(CREATE_ONE, {"c": chain}, key=b.key)
        assert error_codes(body) == ["AUDIT_CHAIN_UNKNOWN"], (chain, body)
        assert a.id not in str(body)
    with pytest.raises(NotFound) as refused:
        runtime.audit.create_checkpoint(b.id, chain=a.id)
    assert refused.value.code == "AUDIT_CHAIN_UNKNOWN"
    own = gql.data(CREATE_ONE, {"c": b.id}, key=b.key)["createAuditCheckpoint"]
    assert own["chain"] == b.id
    every = gql.data(CREATE_ALL, key=b.key)["createAuditCheckpoints"]
    assert every == [own]  # only lane 0 has records


# Reading.
def test_audit_records_page_across_lanes_in_at_chain_seq_order(runtime, gql, pg, monkeypatch):
    t = onboard(runtime)
    for round_ in range(3):
        append(runtime, t.id, entries(2, f"zero{round_}"))
        in_lane_one(runtime, t.id, entries(2, f"one{round_}"))
    with runtime.db.tenant_session(t.id) as session:
        rows = session.exec(select(AuditRecord).where(AuditRecord.tenant_id == t.id)).all()
    expected = [(r.chain, r.seq) for r in sorted(rows, key=lambda r: (r.at, r.chain, r.seq),
                                                 reverse=True)]
    assert {chain for chain, _ in expected} == {t.id, f"{t.id}/1"}

    def walk() -> list[tuple[str, int]]:
        seen, after = [], None
        while True:
            page = gql.data(RECORDS, {"after": after}, key=t.key)["auditRecords"]
            assert len(page["edges"]) <= 3
            seen += [(e["node"]["chain"], e["node"]["seq"]) for e in page["edges"]]
            if not page["pageInfo"]["hasNextPage"]:
                return seen
            after = page["pageInfo"]["endCursor"]

    selected = walk()
    assert selected == expected and len(set(selected)) == len(rows)
    with monkeypatch.context() as m:  # the whole-row read: the same pages
        m.setattr(RowShape, "columns", lambda self, fields: None)
        assert walk() == expected
    page = runtime.audit.records(t.id, first=3)
    at, chain, seq = decode_cursor(page.cursor(page.items[-1]))
    assert (chain, seq) == expected[2] and at == page.items[-1].at


def test_cursors_are_opaque_and_checked(runtime, gql, tenant):
    at = datetime(2026, 1, 2, 3, 4, 5, 6, tzinfo=UTC)
    assert decode_cursor(encode_cursor(at, "c/1", 7)) == (at, "c/1", 7)
    for forged in ("seq:5", "x|1|c", "2026-01-01T00:00:00+00:00|x|c",
                   "2026-01-01T00:00:00+00:00|1|", "2026-01-01T00:00:00+00:00|1|" + "c" * 41,
                   "2026-01-01T00:00:00|1|c", "2026-01-01T00:00:00+00:00|2147483648|c"):
        cursor = base64.urlsafe_b64encode(forged.encode()).decode()
        with pytest.raises(InvalidInput) as bad:
            decode_cursor(cursor)
        assert bad.value.code == "CURSOR_INVALID", forged
        assert error_codes(gql(RECORDS, {"after": cursor}, key=tenant.key)) == ["CURSOR_INVALID"]
        assert error_codes(gql(CHECKPOINTS, {"after": cursor}, key=tenant.key)) == [
            "CURSOR_INVALID"]


def test_the_cross_check_replays_an_orders_records_across_lanes(desk, monkeypatch):
    """The order's submission is recorded in lane 1 (lane 0 held meanwhile), its fill in lane 0
    (then free): replayed by (at, chain, seq), the records agree with the rows (by chain and
    seq, the fill would come first and the submission would undo it)."""
    gql, tenant, rt = desk
    if rt.db.engine.dialect.name != "postgresql":
        pytest.skip("lanes are PostgreSQL's")
    real = rt.audit.append

    def submission_in_lane_one(session: Any, tenant_id: Any, batch: Any) -> Any:
        if tenant_id == tenant.id and any(e.kind == "order.submitted" for e in batch):
            with lane_zero_held(rt, tenant.id):
                return real(session, tenant_id, batch)
        return real(session, tenant_id, batch)

    monkeypatch.setattr(rt.audit, "append", submission_in_lane_one)
    order = filled_order(gql, tenant)
    monkeypatch.undo()
    with rt.db.tenant_session(tenant.id) as session:
        records = session.exec(select(AuditRecord).where(
            AuditRecord.tenant_id == tenant.id, AuditRecord.subject == order["id"])
            .order_by(col(AuditRecord.at))).all()
    lanes = {r.kind: r.chain for r in records}
    assert lanes.get("order.submitted") == f"{tenant.id}/1", lanes
    assert lanes.get("order.fill") == tenant.id, lanes
    body = verify(gql, tenant.key)
    assert body["ok"] and body["mismatches"] == [] and body["crossChecked"] >= 2, body
    with rt.db.engine.begin() as conn:  # the fill's row altered: found through lane 0's record
        conn.execute(text("UPDATE execution SET last_px = last_px + 1 WHERE order_id = :o"),
                     {"o": order["id"]})
    body = verify(gql, tenant.key)
    assert {m["code"] for m in body["mismatches"]} == {"AUDIT_EXECUTION_MISMATCH"}, body


# Isolation: a lane's name is no proof of whose it is.
def _tenant(runtime: Runtime, tenant_id: str) -> str:
    with runtime.db.system_transaction() as session:
        session.add(Tenant(id=tenant_id, slug=unique(), name=tenant_id))
    return tenant_id


def test_a_tenant_never_reaches_lanes_named_like_its_own(runtime, pg):
    """Tenant ids are UUIDs, but not relied on: tenant "p" and tenant "p/1" (named as p's lane
    1), and "p_q" beside "pxq" (a LIKE wildcard): each appends, reads and verifies its own only."""
    base = f"p{uuid.uuid4().hex[:8]}"
    p, p1 = _tenant(runtime, base), _tenant(runtime, f"{base}/1")
    wild, plain = _tenant(runtime, f"{base}_q"), _tenant(runtime, f"{base}xq")
    for tenant_id in (p1, plain, wild):
        append(runtime, tenant_id, entries(2, tenant_id))
        with lane_zero_held(runtime, tenant_id):  # each has lanes of its own
            append_with(runtime.audit, runtime, tenant_id, entries(1, tenant_id))
    append(runtime, p, entries(2, "p"))
    with lane_zero_held(runtime, p):
        written = append_with(runtime.audit, runtime, p, entries(1, "p"))
    assert written[0].chain == f"{p}/2"  # "p/1" is another tenant's chain: never written
    assert runtime.audit.chains(p) == [p, *(f"{p}/{k}" for k in range(2, runtime.audit.lanes.count))]
    assert f"{p1}" not in runtime.audit.chains(p) and runtime.audit.chains(p1)[0] == p1
    assert not any(c.startswith(plain) for c in runtime.audit.chains(wild))
    for tenant_id in (p, p1, wild, plain):
        result = runtime.audit.verify(tenant_id)
        assert result.ok and result.checked == 3, (tenant_id, result)
        subjects = {r.subject.rsplit("-", 1)[0] for r in runtime.audit.records(tenant_id,
                                                                               first=50).items}
        assert subjects == {"p" if tenant_id == p else tenant_id}
    with pytest.raises(NotFound):
        runtime.audit.create_checkpoint(p, chain=p1, secrets=runtime.secrets)
    with runtime.db.tenant_session(p) as session:
        assert [h.chain for h in heads(session, p)][:2] == [p, f"{p}/2"]


def test_lane_names():
    tenant = str(uuid.uuid4())
    assert lane_number(tenant, tenant) == 0 and lane_number(tenant, f"{tenant}/15") == 15
    for other in (f"{tenant}/0", f"{tenant}/01", f"{tenant}/x", f"{tenant}/1/2", f"{tenant}x/1",
                  f"{tenant}/", "platform", f"{tenant}/\uff11"):  # a fullwidth one
        assert lane_number(tenant, other) is None, other
    assert lane_number(None, "platform") == 0 and lane_number(None, "platform/1") is None
    assert len(f"{tenant}/{MAX_LANES - 1}") <= 40  # fits the widened chain columns


# Settings and the CLI.
def test_the_lanes_setting():
    assert Settings().audit_lanes == 4
    assert Settings.from_env({"ALPHINTRA_AUDIT_LANES": "16"}).audit_lanes == 16
    for bad, said in (("0", "must be 1 to 16"), ("17", "must be 1 to 16"),
                      ("four", "expected an integer")):
        with pytest.raises(SettingsError) as refused:
            Settings.from_env({"ALPHINTRA_AUDIT_LANES": bad})
        assert "ALPHINTRA_AUDIT_LANES" in str(refused.value) and said in str(refused.value)
    with pytest.raises(ValueError):
        AuditTrail(None, lanes=MAX_LANES + 1)  # type: ignore[arg-type]


def test_cli_verifies_and_exports_every_lane(migrated, runtime, gql, pg):
    t = onboard(runtime)
    in_lane_one(runtime, t.id, entries(3, "one"))
    gql.data(CREATE_ALL, key=t.key)
    good = run(migrated, "audit", "verify", "--tenant", t.slug)
    assert good.returncode == 0, good.stderr
    assert f"in {runtime.audit.lanes.count} lanes" in good.stdout
    assert f"lane {t.id}: OK" in good.stdout and f"lane {t.id}/1: OK, 3 records" in good.stdout
    exported = run(migrated, "audit", "export-checkpoints", "--tenant", t.slug, "--out", "-",
                   env={"ALPHINTRA_SECRET_KEY": migrated.secret_key})
    assert exported.returncode == 0, exported.stderr
    assert f"chain {t.id}/1: 1 checkpoints, the last at record 3" in exported.stderr
    with tampering(runtime) as conn:
        conn.execute(text("UPDATE audit_record SET actor = 'mallory' WHERE chain = :c AND seq = 2"),
                     {"c": f"{t.id}/1"})
    broken = run(migrated, "audit", "verify", "--tenant", t.slug)
    assert broken.returncode == 1
    assert f"BROKEN at record 2 of chain {t.id}/1" in broken.stdout, broken.stdout
    assert f"lane {t.id}/1: BROKEN at record 2" in broken.stdout


# Migration 0026.
@contextmanager
def scratch_database(settings: Settings, tmp_path: Path) -> Iterator[Settings]:
    """A database of its own for migrating down and up: a fresh SQLite file, or a new database
    on the suite's PostgreSQL server."""
    url = make_url(settings.database_url)
    if url.get_backend_name() == "sqlite":
        yield settings.with_(database_url=f"sqlite:///{tmp_path / 'lanes.db'}")
        return
    name = f"alphintra_lanes_{uuid.uuid4().hex[:10]}"
    admin = create_engine(url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield settings.with_(database_url=url.set(database=name).render_as_string(hide_password=False))
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def test_migration_0026_widens_the_chains_and_goes_down_again(migrated, tmp_path):
    with scratch_database(migrated, tmp_path) as own:
        migrate_database(own, "0025")
        engine = create_engine(own.database_url)
        tenant = str(uuid.uuid4())
        lane = f"{tenant}/1"
        head = text("INSERT INTO audit_head (chain, last_seq, last_hash) VALUES (:c, 0, :h)")
        try:
            with engine.begin() as conn:
                conn.execute(head, {"c": tenant, "h": "0" * 64})
            if engine.dialect.name == "postgresql":  # VARCHAR(36) there: no room for a lane
                with pytest.raises(DataError), engine.begin() as conn:
                    conn.execute(head, {"c": lane, "h": "0" * 64})
            migrate_database(own, "0026")
            assert _shape(engine) == (40, {"ix_audit_record_chain_at", "ix_audit_record_tenant_at",
                                           "ix_audit_record_tenant_kind_at"})
            with engine.begin() as conn:
                assert conn.execute(text("SELECT chain FROM audit_head")).scalars().all() == [tenant]
                conn.execute(head, {"c": lane, "h": "0" * 64})
            with pytest.raises(RuntimeError) as refused:  # a lane's name would not fit
                downgrade_database(own, "0025")
            assert "stay on 0026" in str(refused.value)
            assert _shape(engine)[0] == 40
            with engine.begin() as conn:
                conn.execute(text("DELETE FROM audit_head WHERE chain = :c"), {"c": lane})
            downgrade_database(own, "0025")
            assert _shape(engine) == (36, {"ix_audit_record_chain_at", "ix_audit_record_tenant_id",
                                           "ix_audit_record_chain_kind_seq"})
            migrate_database(own, "0026")
            assert _shape(engine)[0] == 40
            with engine.connect() as conn:
                assert conn.execute(text("SELECT chain FROM audit_head")).scalars().all() == [tenant]
        finally:
            engine.dispose()


def _shape(engine: Any) -> tuple[int, set[str]]:
    """The chain columns' one length (all three tables agree) and audit_record's indexes; the
    append-only triggers checked present on the way (a SQLite rebuild would drop them)."""
    found = inspect(engine)
    lengths = {next(c["type"].length for c in found.get_columns(table) if c["name"] == "chain")
               for table in ("audit_record", "audit_head", "audit_checkpoint")}
    assert len(lengths) == 1, lengths
    with engine.connect() as conn:
        for table in ("audit_record", "audit_checkpoint"):
            if engine.dialect.name == "sqlite":
                names = conn.execute(text("SELECT name FROM sqlite_master WHERE type = 'trigger' "
                                          "AND tbl_name = :t"), {"t": table}).scalars().all()
            else:
                names = conn.execute(text("SELECT tgname FROM pg_trigger WHERE tgrelid = "
                                          "CAST(:t AS regclass) AND NOT tgisinternal"),
                                     {"t": table}).scalars().all()
            assert len(names) == 2 and all(n.startswith(f"{table}_no_") for n in names), names
    return lengths.pop(), {i["name"] for i in found.get_indexes("audit_record")}
