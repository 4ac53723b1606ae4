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
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import event
from sqlalchemy.orm import Session

log = logging.getLogger(__name__)

_PENDING = "audit_checkpoints_due"
_LISTENING = "audit_checkpoints_listening"


@dataclass(frozen=True, slots=True)
class Due:
    tenant_id: str | None
    chain: str
    seq: int
    head_hash: str


class Checkpointer:
    """One daemon thread taking the checkpoints that committed appends made due."""

    def __init__(self, take: Callable[[Due], None]) -> None:
        self._take = take
        self._queue: queue.Queue[Due] = queue.Queue()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def note(self, session: Session, due: Due) -> None:
        """Take `due` once `session` commits; forget it if the session rolls back."""
        if not session.info.get(_LISTENING):  # once per session, whatever its transactions
            session.info[_LISTENING] = True
            event.listen(session, "after_commit", self._committed)
            event.listen(session, "after_rollback", self._rolled_back)
        session.info.setdefault(_PENDING, []).append(due)

    def _committed(self, session: Session) -> None:
        for due in session.info.pop(_PENDING, ()):
            self._queue.put(due)
        self._start()

    @staticmethod
    def _rolled_back(session: Session) -> None:
        session.info.pop(_PENDING, None)

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
