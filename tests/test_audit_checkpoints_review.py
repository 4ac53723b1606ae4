"""Review probes of the checkpoint shortcut (segments of what this process appended): what a
held segment may and may not make a checkpoint accept, when one is held, and that `plain` keeps
the hashes of records already stored."""

from __future__ import annotations

import enum
import gc
import logging
import threading
import uuid
from datetime import UTC, date, datetime
from decimal import Decimal as D
from typing import Any

import pytest
from sqlalchemy import text

from gateway.audit import AuditEntry, AuditTrail
from gateway.audit.chain import canonical, plain
from gateway.audit.checkpointer import Due
from gateway.errors import Conflict
from tests.support import onboard
from tests.test_audit_checkpoints import tampering


def _head(runtime, tenant_id: str) -> int:
    with runtime.db.engine.connect() as conn:
        return conn.execute(text("SELECT last_seq FROM audit_head WHERE chain = :c"),
                            {"c": tenant_id}).scalar_one()


def _entries(n: int) -> list[AuditEntry]:
    return [AuditEntry("test.event", f"e-{i}") for i in range(n)]


def test_a_segment_of_a_transaction_rolled_back_after_a_savepoint_is_not_held(runtime):
    """Releasing a savepoint fires the session's after_commit: the segment of an append made
    before it must wait for the outer transaction, which here rolls back. Held, it named records
    that never were, and every later checkpoint of the chain was refused as 'rewritten'."""
    tenant = onboard(runtime)
    start = _head(runtime, tenant.id)
    trail = AuditTrail(runtime.db, secrets=runtime.secrets, checkpoint_every=10_000)
    with runtime.db.tenant_session(tenant.id) as session:
        session.begin()
        trail.append(session, tenant.id, _entries(3))
        with session.begin_nested():  # some other work in a savepoint, released
            pass
        session.rollback()
    with runtime.db.tenant_transaction(tenant.id) as session:  # the real records at those seqs
        trail.append(session, tenant.id, _entries(4))
    taken = trail.create_checkpoint(tenant.id)
    assert taken.seq == start + 4


def test_a_due_noted_before_a_savepoint_waits_for_the_outer_commit(runtime):
    """The checkpoint an append made due is queued when the transaction commits, not when a
    savepoint inside it is released (its records are not yet visible to the checkpointer)."""
    tenant = onboard(runtime)
    start = _head(runtime, tenant.id)
    trail = AuditTrail(runtime.db, secrets=runtime.secrets, checkpoint_every=1)
    with runtime.db.tenant_session(tenant.id) as session:
        session.begin()
        trail.append(session, tenant.id, _entries(2))
        with session.begin_nested():
            pass
        assert trail.checkpointer._queue.unfinished_tasks == 0
        session.commit()
    trail.checkpointer.drain()
    with runtime.db.engine.connect() as conn:
        seqs = conn.execute(text("SELECT seq FROM audit_checkpoint WHERE chain = :c"),
                            {"c": tenant.id}).scalars().all()
    assert seqs == [start + 2]


def test_a_segment_of_a_session_closed_without_commit_is_not_held_on_its_reuse(runtime):
    """Session.close() rolls back without after_rollback: what the closed transaction noted
    must not ride along into the session's next transaction."""
    tenant = onboard(runtime)
    start = _head(runtime, tenant.id)
    trail = AuditTrail(runtime.db, secrets=runtime.secrets, checkpoint_every=10_000)
    session = runtime.db.tenant_session(tenant.id)
    session.begin()
    trail.append(session, tenant.id, _entries(3))
    session.close()  # rolled back, no after_rollback
    with session.begin():
        session.execute(text("SELECT 1"))
    session.close()
    with runtime.db.tenant_transaction(tenant.id) as session:
        trail.append(session, tenant.id, _entries(3))
    assert trail.create_checkpoint(tenant.id).seq == start + 3


def test_a_record_deleted_inside_a_held_segment_is_refused(runtime):
    tenant = onboard(runtime)
    start = _head(runtime, tenant.id)
    trail = AuditTrail(runtime.db, secrets=runtime.secrets, checkpoint_every=10_000)
    with runtime.db.tenant_transaction(tenant.id) as session:
        trail.append(session, tenant.id, _entries(5))
    with tampering(runtime, ("audit_record",)) as conn:
        deleted = conn.execute(text("DELETE FROM audit_record WHERE chain = :c AND seq = :s"),
                               {"c": tenant.id, "s": start + 3}).rowcount
    assert deleted == 1
    with pytest.raises(Conflict) as refused:
        trail.create_checkpoint(tenant.id)
    assert refused.value.code == "AUDIT_CHAIN_BROKEN"


class _Side(str, enum.Enum):  # noqa: UP042 - the mixin: str() gives "_Side.BUY"
    BUY = "BUY"


class _Mode(enum.StrEnum):
    FAST = "fast"


class _Level(enum.IntEnum):
    HIGH = 2


class _Tag(str):
    pass


class _Count(int):
    pass


def _plain_before(value: Any) -> Any:
    """`plain` as it was before the fast path (the form stored records were hashed in)."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, dict):
        return {str(k): _plain_before(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        items = [_plain_before(v) for v in value]
        return sorted(items, key=canonical) if isinstance(value, set | frozenset) else items
    return plain(value)  # leaves: Decimals, instants, enums, ids (unchanged by the change)


@pytest.mark.parametrize("payload", [
    {"side": _Side.BUY, _Side.BUY: 1, "level": _Level.HIGH, _Level.HIGH: "x"},
    {"tag": _Tag("t"), _Tag("k"): _Count(3), "n": _Count(7), "b": True, True: False, 2: None,
     _Mode.FAST: _Mode.FAST},
    {"nested": {"a": [1, "b", None, True, _Side.BUY, D("1E+1")], "s": {"x", "y", _Tag("z")}},
     "t": (1, 2), "f": frozenset({3, 1}), "d": date(2025, 1, 2),
     "at": datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC), "id": uuid.UUID(int=5), None: 1.5},
])
def test_plain_keeps_the_stored_form(payload):
    assert canonical(plain(payload)) == canonical(_plain_before(payload))


def test_checkpointers_of_closed_trails_are_not_kept_by_the_session_class(runtime):
    """Each trail listens on its sessions' class. Trails built on a long-lived Database (the
    suite's runtime) must not pile up there: once a trail is gone, its listeners go too."""
    tenant = onboard(runtime)
    def listeners() -> int:
        with runtime.db.tenant_session(tenant.id) as session:
            return len(session.dispatch.after_commit)

    before = listeners()
    for _ in range(5):
        trail = AuditTrail(runtime.db, secrets=runtime.secrets, checkpoint_every=10_000)
        with runtime.db.tenant_transaction(tenant.id) as session:
            trail.append(session, tenant.id, _entries(1))
        trail.checkpointer.drain()
        del trail, session
    gc.collect()
    assert listeners() <= before + 1


def test_segments_up_to_any_checkpoint_are_let_go(runtime):
    """A checkpoint taken on demand, or found already taken (by another process) when one fell
    due, covers the segments before it: held on, they would fill MAX_SEGMENTS for good and turn
    the shortcut off for every chain."""
    tenant = onboard(runtime)
    start = _head(runtime, tenant.id)
    trail = AuditTrail(runtime.db, secrets=runtime.secrets, checkpoint_every=start + 4)
    other = AuditTrail(runtime.db, secrets=runtime.secrets, checkpoint_every=10_000)
    with runtime.db.tenant_transaction(tenant.id) as session:
        trail.append(session, tenant.id, _entries(2))
    trail.create_checkpoint(tenant.id)
    assert trail.checkpointer._held == 0
    with runtime.db.tenant_transaction(tenant.id) as session:
        trail.append(session, tenant.id, _entries(1))
    other.create_checkpoint(tenant.id)  # another process's, at start + 3
    trail.checkpointer._take(Due(tenant.id, tenant.id, start + 3, ""))
    assert trail.checkpointer._held == 0


def test_stored_hashes_shifted_across_covered_records_are_refused(runtime):
    """The segment's digest is over its hashes run together: a character moved from one
    stored hash to the next (links adjusted) keeps that run, so it must not pass as the hashes
    this process computed. (PostgreSQL's VARCHAR(64) refuses the longer hash; SQLite does not.)"""
    tenant = onboard(runtime)
    start = _head(runtime, tenant.id)
    trail = AuditTrail(runtime.db, secrets=runtime.secrets, checkpoint_every=10_000)
    with runtime.db.tenant_transaction(tenant.id) as session:
        trail.append(session, tenant.id, _entries(3))
    if runtime.db.engine.dialect.name != "sqlite":
        pytest.skip("the column's length refuses a 65-character hash")
    with runtime.db.engine.connect() as conn:
        first, second = conn.execute(text(
            "SELECT hash FROM audit_record WHERE chain = :c AND seq IN (:a, :b) ORDER BY seq"),
            {"c": tenant.id, "a": start + 1, "b": start + 2}).scalars().all()
    longer, shorter = first + second[0], second[1:]
    with tampering(runtime, ("audit_record",)) as conn:
        for seq, values in ((start + 1, {"h": longer, "p": None}),
                            (start + 2, {"h": shorter, "p": longer}),
                            (start + 3, {"h": None, "p": shorter})):
            conn.execute(text("UPDATE audit_record SET hash = COALESCE(:h, hash), "
                              "prev_hash = COALESCE(:p, prev_hash) WHERE chain = :c AND seq = :s"),
                         {**values, "c": tenant.id, "s": seq})
    with pytest.raises(Conflict) as refused:
        trail.create_checkpoint(tenant.id)
    assert refused.value.details == {"chain": tenant.id, "firstBadSeq": start + 1}


def test_concurrent_appenders_and_another_process_leave_every_checkpoint_true(runtime, caplog):
    """Threads appending to one chain through this trail, interleaved with another process's
    appends (a trail whose segments this one never sees): every checkpoint that falls due is
    taken, none is refused, and the chain and all its checkpoints verify."""
    tenant = onboard(runtime)
    trail = AuditTrail(runtime.db, secrets=runtime.secrets, checkpoint_every=7)
    other = AuditTrail(runtime.db)
    failures: list[BaseException] = []

    def appender(which: AuditTrail, batches: int) -> None:
        try:
            for i in range(batches):
                with runtime.db.tenant_transaction(tenant.id) as session:
                    which.append(session, tenant.id, _entries(1 + i % 3))
        except BaseException as exc:  # reported below
            failures.append(exc)

    threads = [threading.Thread(target=appender, args=(trail, 12)) for _ in range(3)]
    threads.append(threading.Thread(target=appender, args=(other, 12)))
    with caplog.at_level(logging.ERROR, logger="gateway.audit"):
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        trail.checkpointer.drain()
    assert failures == []
    assert [r.message for r in caplog.records if "not checkpointed" in r.message] == []
    with runtime.db.engine.connect() as conn:
        taken = conn.execute(text("SELECT count(*) FROM audit_checkpoint WHERE chain = :c"),
                             {"c": tenant.id}).scalar_one()
    assert taken >= 5
    result = runtime.audit.verify(tenant.id)
    assert result.ok and result.checkpoints_checked == taken
