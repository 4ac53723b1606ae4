"""Keeping jobs moving when workers or the broker fail: leases and the reaper.

- `LeaseKeeper` (in every process that runs jobs) renews, every `job_heartbeat_ms`, the lease
  of each job the process is running. A process that dies, hangs or is cut off from the
  database stops renewing.
- `JobReaper` (in every gateway and worker; concurrent reapers are safe, rows are taken
  `FOR UPDATE SKIP LOCKED` and every change is conditional) runs every
  `job_reaper_interval_ms`:
  - a RUNNING job whose lease expired goes back to QUEUED with a new message (through the
    outbox), or ends FAILED `JOB_WORKER_LOST` once it has used up its attempts. The lease a
    worker writes is `job_lease_ms - job_reaper_interval_ms`, so a dead worker's job is
    re-queued within `job_lease_ms` of its last heartbeat;
  - a QUEUED job whose message is lost (no outbox row and no mark in the ledger: see
    gateway/jobs/delivery.py), queued for at least `job_redeliver_after_ms`, is sent again.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import and_, exists, or_
from sqlmodel import select

from gateway.background import SharedThread
from gateway.db import Database, utcnow
from gateway.jobs.delivery import JOB_MESSAGE, JobMessages
from gateway.jobs.models import Job, JobStatus
from gateway.jobs.runner import Claim, JobRows
from gateway.outbox import OutboxRow

log = logging.getLogger(__name__)

BATCH = 200
WORKER_LOST = "JOB_WORKER_LOST"


class LeaseKeeper:
    """Renews the leases of the runs this process holds, from one daemon thread."""

    def __init__(self, rows: JobRows, heartbeat_s: float) -> None:
        self.rows = rows
        self.heartbeat_s = heartbeat_s
        self._held: dict[str, Claim] = {}
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def hold(self, claim: Claim) -> None:
        with self._lock:
            self._held[claim.token] = claim
            if self._thread is None or not self._thread.is_alive():
                self._stopping.clear()
                self._thread = threading.Thread(target=self._run, name="job-leases", daemon=True)
                self._thread.start()

    def release(self, claim: Claim) -> None:
        with self._lock:
            self._held.pop(claim.token, None)

    def held(self) -> list[Claim]:
        with self._lock:
            return list(self._held.values())

    def renew_once(self) -> list[Claim]:
        """Renew every held lease now; returns (and stops renewing) the ones that were lost."""
        lost = self.rows.renew(self.held())
        for claim in lost:
            # Re-queued elsewhere: the run finds out at its next write and stops.
            log.warning("job lease lost; another claim owns the job now",
                        extra={"job_id": claim.job_id})
            self.release(claim)
        return lost

    def _run(self) -> None:
        while not self._stopping.wait(self.heartbeat_s):
            try:
                self.renew_once()
            except Exception:  # the database is away: the lease runs on, renewed next time
                log.exception("renewing job leases failed")

    def stop(self) -> None:
        self._stopping.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(timeout=5)


@dataclass(frozen=True)
class Reaped:
    requeued: int  # RUNNING jobs of dead workers, back to QUEUED
    failed: int  # ... or FAILED, their attempts used up
    redelivered: int  # QUEUED jobs whose message was lost, sent again


class JobReaper:
    def __init__(self, db: Database, rows: JobRows, messages: JobMessages, *,
                 interval_s: float, redeliver_after_s: float, max_attempts: int) -> None:
        self.db = db
        self.rows = rows
        self.messages = messages
        self.interval_s = interval_s
        self.redeliver_after = timedelta(seconds=redeliver_after_s)
        self.max_attempts = max_attempts
        self._queued_cursor: tuple[datetime, str] | None = None  # where the last round stopped
        self._loop = SharedThread("job-reaper", self._run)

    def reap(self, *, now: datetime | None = None, queued_age_s: float | None = None) -> Reaped:
        now = now or utcnow()
        requeued, failed = self._expired_leases(now)
        age = self.redeliver_after if queued_age_s is None else timedelta(seconds=queued_age_s)
        redelivered = self._lost_messages(now, age)
        if requeued or failed or redelivered:
            log.info("job reaper: %s re-queued, %s failed (worker lost), %s messages re-sent",
                     requeued, failed, redelivered)
        return Reaped(requeued, failed, redelivered)

    def _expired_leases(self, now: datetime) -> tuple[int, int]:
        # Rows written before leases existed have none: their last update stands in.
        expired = or_(Job.lease_expires_at < now,  # type: ignore[operator]
                      and_(Job.lease_expires_at.is_(None),  # type: ignore[union-attr]
                           Job.updated_at < now - self.rows.lease))
        requeued = failed = 0
        with self.db.system_transaction() as session:
            jobs = session.exec(
                select(Job).where(Job.status == JobStatus.RUNNING.value, expired)
                .order_by(Job.lease_expires_at).limit(BATCH)  # type: ignore[arg-type]
                .with_for_update(skip_locked=True)).all()
            for job in jobs:
                job.run_token = None  # the dead (or paused) run's writes are refused from now on
                job.lease_expires_at = None
                job.updated_at = now
                if job.cancel_requested:  # its caller gave up on it: not run again
                    job.status = JobStatus.CANCELED.value
                    job.message = f"canceled; its worker stopped during attempt {job.attempts}"
                    job.finished_at = now
                    failed += 1
                elif job.attempts >= self.max_attempts:
                    job.status = JobStatus.FAILED.value
                    job.error_code = WORKER_LOST
                    job.error_message = (f"the job's worker stopped during attempt {job.attempts}"
                                         "; no attempts left")
                    job.finished_at = now
                    failed += 1
                else:
                    job.status = JobStatus.QUEUED.value
                    job.message = f"worker lost during attempt {job.attempts}; re-queued"
                    self.messages.send(session, job)
                    requeued += 1
                session.add(job)
                self.rows.event(session, job)
        return requeued, failed

    def _lost_messages(self, now: datetime, age: timedelta) -> int:
        pending = exists().where(OutboxRow.kind == JOB_MESSAGE, OutboxRow.key == Job.id)
        stmt = select(Job).where(Job.status == JobStatus.QUEUED.value,
                                 Job.updated_at <= now - age, ~pending)
        if self._queued_cursor is not None:
            # A long backlog is checked a batch a round: a restore from an older snapshot loses
            # the newest messages, behind older ones that are still there.
            at, job_id = self._queued_cursor
            stmt = stmt.where(or_(Job.updated_at > at,  # type: ignore[operator]
                                  and_(Job.updated_at == at, Job.id > job_id)))
        with self.db.system_transaction() as session:
            jobs = session.exec(
                stmt.order_by(Job.updated_at, Job.id).limit(BATCH)  # type: ignore[arg-type]
                .with_for_update(skip_locked=True, of=Job)).all()  # type: ignore[arg-type]
            self._queued_cursor = ((jobs[-1].updated_at, jobs[-1].id) if len(jobs) == BATCH
                                   else None)
            if not jobs:
                return 0
            lost = self.messages.ledger.missing([job.id for job in jobs])
            for job in jobs:
                if job.id in lost:
                    self.messages.send(session, job)
        return len(lost)

    # The thread.
    def start(self) -> None:
        self._loop.start()

    def stop(self, *, force: bool = False) -> None:
        self._loop.stop(force=force)

    def _run(self) -> None:
        while not self._loop.stopping.wait(self.interval_s):
            try:
                self.reap()
            except Exception:  # the database or the ledger's Redis is away: next time
                log.warning("job reaper round failed", exc_info=True)
