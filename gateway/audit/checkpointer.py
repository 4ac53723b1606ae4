"""Checkpoints taken after the appending transaction commits, off the append path.

`AuditTrail.append` only notes on its session that a chain crossed a multiple of
`checkpoint_every`; when that session commits, the (chain, seq, head hash) it wrote is handed to
one background thread, which verifies the records since the chain's last checkpoint and signs a
checkpoint of that head in a transaction of its own. So the appending transaction, and the
chain's head lock with it, never wait for a verification or a signature (they cost intake about
12 % when they were taken inside it). A rollback drops what its session noted.

A process that dies between the commit and the checkpoint loses only that checkpoint: the next
crossing verifies from the previous checkpoint, so the chain stays covered. `drain()` waits for
what is queued (tests, shutdown).

Every committed append also leaves a `Segment` here: the seqs it wrote, the hash before them,
the last one's hash, and SHA-256 over all their hashes. Re-hashing records this process has just
hashed was 15-25 % of the intake's CPU; the checkpoint instead compares the stored hashes with
these (`AuditTrail._checkpoint`) and re-hashes only the records no segment covers (other
processes', or from before a restart). Any disagreement sends the checkpoint back to re-hashing
everything since the last checkpoint, and a segment whose stored hashes changed refuses it even
if that re-hash passes (a rewrite with every hash recomputed). Appends inside a savepoint leave
no segment (one rolled back would name records that never were). At most MAX_SEGMENTS are held
(records past it are re-hashed), and a chain's are dropped once a checkpoint covers them.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from sqlalchemy import event
from sqlalchemy.orm import Session, SessionTransaction

from gateway.db import on_outermost_commit

log = logging.getLogger(__name__)

_NOTED = "audit_checkpoints_noted"  # session.info: {Checkpointer: _Noted}
MAX_SEGMENTS = 100_000  # held for all chains: about 25 MB


@dataclass(frozen=True, slots=True)
class Due:
    tenant_id: str | None
    chain: str
    seq: int
    head_hash: str


@dataclass(frozen=True, slots=True)
class Segment:
    """Records `first_seq`..`last_seq` of one chain as this process appended and committed them:
    `prev_hash` is the hash before the first, `digest` SHA-256 over their hashes in seq order."""

    first_seq: int
    prev_hash: str
    last_seq: int
    last_hash: str
    digest: bytes


@dataclass(slots=True)
class _Noted:
    """What one checkpointer noted on a session, for when its transaction commits."""

    due: list[Due] = field(default_factory=list)
    written: list[tuple[str, Segment]] = field(default_factory=list)


# Listened to once per session class (a sessionmaker makes one of its own), not per session:
# event.listen on each appending session cost about 20 µs. The listeners are these module
# functions, never a checkpointer's method: class-level listeners are never removed, and a bound
# method would keep every trail built on the class alive and called on each of its commits.
# The mark is an attribute of the class itself (its own __dict__, not a subclass's): a set of
# classes would keep every Database's session class alive.
_LISTENING = "_audit_checkpoints_listening"
_listening_lock = threading.Lock()


def _noted(session: Session, checkpointer: Checkpointer) -> _Noted:
    kind = type(session)
    if _LISTENING not in kind.__dict__:
        with _listening_lock:
            if _LISTENING not in kind.__dict__:
                event.listen(kind, "after_commit", on_outermost_commit(_committed))
                event.listen(kind, "after_rollback", _dropped)
                event.listen(kind, "after_transaction_end", _ended)
                setattr(kind, _LISTENING, True)
    by_checkpointer = session.info.setdefault(_NOTED, {})
    noted = by_checkpointer.get(checkpointer)
    if noted is None:
        noted = by_checkpointer[checkpointer] = _Noted()
    return noted


def _committed(session: Session) -> None:
    for checkpointer, noted in session.info.pop(_NOTED, {}).items():
        checkpointer._committed(noted)


def _dropped(session: Session) -> None:
    session.info.pop(_NOTED, None)


def _ended(session: Session, transaction: SessionTransaction) -> None:
    # Session.close() ends a transaction without after_rollback: nothing noted in it may reach
    # the session's next one.
    if transaction.parent is None:
        session.info.pop(_NOTED, None)


class Checkpointer:
    """One daemon thread taking the checkpoints that committed appends made due."""

    def __init__(self, take: Callable[[Due], None]) -> None:
        self._take = take
        self._queue: queue.Queue[Due] = queue.Queue()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._segments: dict[str, list[Segment]] = {}
        self._held = 0

    def note(self, session: Session, due: Due) -> None:
        """Take `due` once `session` commits; forget it if the session rolls back."""
        _noted(session, self).due.append(due)

    def written(self, session: Session, chain: str, segment: Segment) -> None:
        """Hold `segment` of `chain` once `session` commits; forget it if it rolls back."""
        _noted(session, self).written.append((chain, segment))

    def _committed(self, noted: _Noted) -> None:
        if noted.written:
            with self._lock:
                for chain, segment in noted.written:
                    if self._held >= MAX_SEGMENTS:
                        break
                    self._segments.setdefault(chain, []).append(segment)
                    self._held += 1
        if noted.due:
            for one in noted.due:
                self._queue.put(one)
            self._start()

    def segments(self, chain: str, after_seq: int, upto_seq: int) -> list[Segment]:
        """The held segments of `chain` lying wholly in (`after_seq`, `upto_seq`], in seq
        order (one overlapping an earlier one, which committed appends cannot make, is
        skipped)."""
        with self._lock:
            held = [s for s in self._segments.get(chain, ())
                    if after_seq < s.first_seq and s.last_seq <= upto_seq]
        held.sort(key=lambda s: s.first_seq)
        kept: list[Segment] = []
        for segment in held:
            if not kept or segment.first_seq > kept[-1].last_seq:
                kept.append(segment)
        return kept

    def forget(self, chain: str, upto_seq: int) -> None:
        """Drop `chain`'s segments ending at or before `upto_seq` (a checkpoint covers them)."""
        with self._lock:
            held = self._segments.get(chain)
            if held is None:
                return
            kept = [s for s in held if s.last_seq > upto_seq]
            self._held -= len(held) - len(kept)
            if kept:
                self._segments[chain] = kept
            else:
                del self._segments[chain]

    def _start(self) -> None:
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="audit-checkpoints",
                                                daemon=True)
                self._thread.start()

    def _run(self) -> None:
        while True:
            due = self._queue.get()
            try:
                self._take(due)
            except Exception:  # a checkpoint never takes the gateway down; the next one covers
                log.exception("audit chain not checkpointed", extra={"chain": due.chain,
                                                                     "seq": due.seq})
            finally:
                self._queue.task_done()

    def drain(self) -> None:
        """Wait until every checkpoint queued so far is taken (or failed and logged)."""
        self._queue.join()
