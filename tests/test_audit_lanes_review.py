"""Probes from the hostile review of the audit chain in lanes (issue 14): each failed on the
first version, for the reason its docstring gives, and passes since its fix (a lane found by
its records and checkpoints too, a head missing reported, a lane replayed in seq order, cursor
chains checked)."""

from __future__ import annotations

import base64
import dataclasses
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import text

from gateway.errors import InvalidInput
from tests.support import error_codes, onboard
from tests.test_audit import append, entries
from tests.test_audit_checkpoints import desk as desk  # a fixture, used by name
from tests.test_audit_checkpoints import filled_order, tampering, verify
from tests.test_audit_checkpoints import venue as venue  # a fixture, used by name
from tests.test_audit_lanes import RECORDS, in_lane_one
from tests.test_audit_lanes import pg as pg  # a fixture, used by name


def test_a_lane_whose_head_row_was_deleted_is_still_verified(runtime, pg):
    """trail.py `verify` -> `chains` -> lanes.heads: the lanes verified are the audit_head rows
    found. Edit a record of lane 1 and delete lane 1's head row (audit_head has no append-only
    trigger): lane 1 is no longer verified at all, and the trail verifies OK."""
    t = onboard(runtime)
    append(runtime, t.id, entries(2, "zero"))
    one = in_lane_one(runtime, t.id, entries(3, "one"))
    lane = one[0].chain
    with tampering(runtime) as conn:
        conn.execute(text("UPDATE audit_record SET payload = :p WHERE chain = :c AND seq = 2"),
                     {"p": '{"i": 1, "qty": "1000000"}', "c": lane})
        conn.execute(text("DELETE FROM audit_head WHERE chain = :c"), {"c": lane})
    result = runtime.audit.verify(t.id)
    assert not result.ok, ("lane 1 edited and its head deleted, yet verified OK", result)


def test_lane_zeros_head_row_deleted_hides_its_records_from_verify(runtime):
    """trail.py `_verify_chain`: with no head row the lane is taken as (0, GENESIS) and only
    records with seq <= 0 are read, so every record of the lane goes unchecked (pre-existing for
    the one chain, but the lanes now make audit_head the only list of what to verify). Both
    dialects: lane 0's record edited, its head deleted -> verified OK with 0 records checked."""
    t = onboard(runtime)
    append(runtime, t.id, entries(3, "zero"))
    with tampering(runtime) as conn:
        conn.execute(text("UPDATE audit_record SET payload = :p WHERE chain = :c AND seq = 2"),
                     {"p": '{"i": 1, "qty": "1000000"}', "c": t.id})
        conn.execute(text("DELETE FROM audit_head WHERE chain = :c"), {"c": t.id})
    result = runtime.audit.verify(t.id)
    assert not result.ok, ("lane 0 edited and its head deleted, yet verified OK", result)


def test_a_lane_deleted_with_its_head_still_fails_its_stored_checkpoint(runtime, pg):
    """trail.py `_verify_checkpoints`: stored checkpoints are read only for
    `chain IN (lanes from audit_head)`. Lane 1 is checkpointed, then its records and its head
    row are deleted: lane 1's signed checkpoint is silently skipped (it names a record the trail
    no longer has: AUDIT_CHECKPOINT_RECORD_MISSING expected) and the trail verifies OK."""
    t = onboard(runtime)
    one = in_lane_one(runtime, t.id, entries(3, "one"))
    lane = one[0].chain
    taken = runtime.audit.create_checkpoints(t.id, secrets=runtime.secrets)
    assert lane in {c.chain for c in taken}
    with tampering(runtime) as conn:
        conn.execute(text("DELETE FROM audit_record WHERE chain = :c"), {"c": lane})
        conn.execute(text("DELETE FROM audit_head WHERE chain = :c"), {"c": lane})
    result = runtime.audit.verify(t.id, secrets=runtime.secrets)
    assert not result.ok, ("lane 1 deleted with its head; its stored checkpoint ignored", result)


def test_the_cross_check_replays_one_lanes_records_in_seq_order(desk, monkeypatch):
    """crosscheck.py `_replay` orders by (at, chain, seq) even within one lane. `at` is not
    monotonic in seq for every lane: lane 0 of a tenant from before 0026 was stamped with each
    writer's own clock (gateway workers, the venue process: several hosts), and SQLite stamps
    with the process clock today. A fill stamped by a writer whose clock is 1 h behind (emulated
    here on the lane lock) is appended after its submission, in seq order, chain intact: replayed
    by `at`, the submission undoes the fill -> a false AUDIT_ORDER_MISMATCH. By seq (the chain's
    own order, as before the change) the rows agree."""
    gql, tenant, rt = desk
    real = rt.audit.lanes.lock
    behind = {"on": False}

    def lock(session: Any, tenant_id: Any) -> Any:
        locked = real(session, tenant_id)
        if behind["on"] and tenant_id == tenant.id:
            return dataclasses.replace(locked, at=locked.at - timedelta(hours=1))
        return locked

    real_append = rt.audit.append

    def append_(session: Any, tenant_id: Any, batch: Any) -> Any:
        behind["on"] = any(e.kind.startswith("order.") and e.kind != "order.submitted"
                           for e in batch)
        try:
            return real_append(session, tenant_id, batch)
        finally:
            behind["on"] = False

    monkeypatch.setattr(rt.audit.lanes, "lock", lock)
    monkeypatch.setattr(rt.audit, "append", append_)
    order = filled_order(gql, tenant)
    monkeypatch.undo()
    lanes = rt.audit.chains(tenant.id)
    assert lanes[0] == tenant.id
    body = verify(gql, tenant.key)
    assert body["ok"] and body["mismatches"] == [], (order["id"], body)


def test_a_cursor_naming_a_chain_with_a_nul_is_cursor_invalid(runtime, gql, tenant):
    """lanes.py `decode_cursor` promises CURSOR_INVALID for values the columns cannot hold, but
    lets a chain with a NUL through: PostgreSQL cannot take NUL in text, so auditRecords and
    auditCheckpoints answer INTERNAL_SERVER_ERROR (a DataError when bound). SQLite takes NUL:
    PostgreSQL only."""
    if runtime.db.engine.dialect.name != "postgresql":
        pytest.skip("PostgreSQL refuses NUL in text; SQLite stores it")
    forged = base64.urlsafe_b64encode(b"2026-01-01T00:00:00+00:00|1|a\x00b").decode()
    with pytest.raises(InvalidInput):
        runtime.audit.records(tenant.id, first=3, after=forged)
    assert error_codes(gql(RECORDS, {"after": forged}, key=tenant.key)) == ["CURSOR_INVALID"]
