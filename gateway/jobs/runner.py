"""The protocol a worker follows on a Job row.

- `claim` moves QUEUED to RUNNING with a fresh run token and a lease. Only a QUEUED job can be
  claimed, so a duplicate or redelivered message is a no-op: a job whose worker died is put
  back to QUEUED by the reaper (gateway/jobs/upkeep.py) once its lease has expired.
- Every later write is conditional on that token (fencing). A worker that lost its lease (it
  was paused, or cut off, and the job was re-queued and claimed again) finds no row for its
  token on its next write and stops: its late progress or result is refused, and a job
  finishes exactly once.
- Each write commits the job's event (its snapshot) through the outbox with it, and a requeue
  commits the next message with it: nothing the row promises is lost between the two.
- A cancel request is seen at the next progress report.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import func, text
from sqlalchemy.orm import Session
from sqlmodel import select, update

from gateway.db import Database, utcnow
from gateway.jobs.delivery import JobMessages
from gateway.jobs.models import Job, JobStatus
from gateway.outbox import Outbox

log = logging.getLogger(__name__)


def job_topic(job_id: str) -> str:
    return f"job.{job_id}"


def tenant_jobs_topic(tenant_id: str) -> str:
    """Every job change of a tenant, in one small event (whoever follows all of a tenant's
    jobs, as the response cache does, cannot listen to each `job.<id>`)."""
    return f"jobs.{tenant_id}"


def snapshot(job: Job) -> dict[str, Any]:
    def iso(value: Any) -> str | None:
        return value.isoformat() if value is not None else None

    return {
        "id": job.id, "tenant_id": job.tenant_id, "kind": job.kind, "status": job.status,
        "region": job.region, "progress": job.progress, "message": job.message,
        "params": job.params, "result": job.result, "error_code": job.error_code,
        "error_message": job.error_message, "attempts": job.attempts,
        "idempotency_key": job.idempotency_key, "created_by": job.created_by,
        "cancel_requested": job.cancel_requested,
        "created_at": iso(job.created_at), "started_at": iso(job.started_at),
        "finished_at": iso(job.finished_at), "updated_at": iso(job.updated_at),
    }


class JobSuperseded(Exception):
    """Another claim owns the job now (or it was finished): stop without touching it."""


class JobCanceled(Exception):
    """The tenant asked to cancel; raised out of `JobContext.progress`."""


class JobFailed(Exception):
    """A failure the job kind understands: the job ends FAILED with this code, no retry."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass
class Claim:
    job_id: str
    tenant_id: str
    token: str
    attempt: int
    kind: str
    params: dict[str, Any]


class JobRows:
    """Conditional writes on Job rows, each committed with the job's event (outbox)."""

    def __init__(self, db: Database, outbox: Outbox, messages: JobMessages, *,
                 lease_s: float = 28.0) -> None:
        self.db = db
        self.outbox = outbox
        self.bus = outbox.bus
        self.messages = messages
        self.lease = timedelta(seconds=lease_s)
        # A worker frozen inside one of these transactions (SIGSTOP, a VM pause) would hold the
        # job's row lock, and the reaper skips locked rows: PostgreSQL ends such a session
        # after half the lease, so the job is still re-queued within it.
        self._idle_limit_ms = max(int(lease_s * 500), 100)

    def _fenced(self, session: Session) -> None:
        """Bound this transaction's idle time (PostgreSQL; SQLite has no row locks to hold)."""
        if session.get_bind().dialect.name == "postgresql":
            session.execute(text(f"SET LOCAL idle_in_transaction_session_timeout = {self._idle_limit_ms}"))

    def event(self, session: Session, job: Job) -> None:
        """The job's snapshot on its topic, and the tenant-level signal, committed with the
        session's write (both through the outbox: neither is lost)."""
        self.outbox.event(session, job_topic(job.id), snapshot(job))
        self.outbox.event(session, tenant_jobs_topic(job.tenant_id),
                          {"tenant_id": job.tenant_id, "id": job.id, "status": job.status})

    def claim(self, job_id: str, tenant_id: str) -> Claim | None:
        token = str(uuid.uuid4())
        now = utcnow()
        with self.db.tenant_transaction(tenant_id) as session:
            self._fenced(session)
            result = session.exec(
                update(Job)
                .where(Job.id == job_id, Job.status == JobStatus.QUEUED.value)
                .values(status=JobStatus.RUNNING.value, run_token=token,
                        attempts=Job.attempts + 1, started_at=func.coalesce(Job.started_at, now),
                        lease_expires_at=now + self.lease, updated_at=now)
            )
            if result.rowcount != 1:
                return None
            job = session.exec(select(Job).where(Job.id == job_id)).one()
            self.event(session, job)
        self.messages.forget(job_id)
        return Claim(job.id, job.tenant_id, token, job.attempts, job.kind, dict(job.params))

    def _write(self, claim: Claim, *, require_running: bool = True, **values: Any) -> Job:
        now = utcnow()
        values["updated_at"] = now
        if values.get("status", JobStatus.RUNNING.value) == JobStatus.RUNNING.value:
            values["lease_expires_at"] = now + self.lease  # a sign of life renews the lease
        else:
            values["lease_expires_at"] = None
        with self.db.tenant_transaction(claim.tenant_id) as session:
            self._fenced(session)
            stmt = update(Job).where(Job.id == claim.job_id, Job.run_token == claim.token)
            if require_running:
                stmt = stmt.where(Job.status == JobStatus.RUNNING.value)
            if session.exec(stmt.values(**values)).rowcount != 1:
                raise JobSuperseded(claim.job_id)
            job = session.exec(select(Job).where(Job.id == claim.job_id)).one()
            self.event(session, job)
        return job

    def progress(self, claim: Claim, fraction: float, message: str) -> bool:
        """Record progress; returns whether a cancel has been requested."""
        job = self._write(claim, progress=max(0.0, min(1.0, fraction)), message=message[:500])
        return job.cancel_requested

    def succeed(self, claim: Claim, result: dict[str, Any]) -> Job:
        return self._write(claim, status=JobStatus.SUCCEEDED.value, progress=1.0,
                           message="done", result=result, finished_at=utcnow())

    def fail(self, claim: Claim, code: str, message: str) -> Job:
        return self._write(claim, status=JobStatus.FAILED.value, error_code=code,
                           error_message=message[:1000], finished_at=utcnow())

    def cancel(self, claim: Claim) -> Job:
        return self._write(claim, status=JobStatus.CANCELED.value, message="canceled",
                           finished_at=utcnow())

    def requeue(self, claim: Claim, message: str, *, delay_s: float = 0.0) -> Job:
        """Back to QUEUED, its next message committed with it (sent after `delay_s`); the
        run's token is void from here on."""
        now = utcnow()
        with self.db.tenant_transaction(claim.tenant_id) as session:
            self._fenced(session)
            stmt = update(Job).where(Job.id == claim.job_id, Job.run_token == claim.token,
                                     Job.status == JobStatus.RUNNING.value)
            if session.exec(stmt.values(status=JobStatus.QUEUED.value, run_token=None,
                                        lease_expires_at=None, message=message[:500],
                                        updated_at=now)).rowcount != 1:
                raise JobSuperseded(claim.job_id)
            job = session.exec(select(Job).where(Job.id == claim.job_id)).one()
            self.messages.send(session, job, delay_s=delay_s)
            self.event(session, job)
        return job

    def renew(self, claims: list[Claim]) -> list[Claim]:
        """Extend these runs' leases (one transaction); returns the claims that are lost."""
        if not claims:
            return []
        now = utcnow()
        lost = []
        with self.db.system_transaction() as session:
            self._fenced(session)
            for claim in claims:
                stmt = update(Job).where(Job.id == claim.job_id, Job.run_token == claim.token,
                                         Job.status == JobStatus.RUNNING.value)
                if session.exec(stmt.values(lease_expires_at=now + self.lease)).rowcount != 1:
                    lost.append(claim)
        return lost


class JobContext:
    """What a running job kind gets: its job's identity, progress reporting, and scoped data."""

    def __init__(self, rows: JobRows, claim: Claim) -> None:
        self._rows = rows
        self.claim = claim
        self.job_id = claim.job_id
        self.tenant_id = claim.tenant_id
        self.attempt = claim.attempt
        self.db = rows.db
        self.bus = rows.bus

    def progress(self, fraction: float, message: str = "") -> None:
        if self._rows.progress(self.claim, fraction, message):
            raise JobCanceled(self.job_id)

    def session(self) -> Any:
        """A session scoped to the job's tenant: a job never sees another tenant's rows."""
        return self.db.tenant_session(self.tenant_id)
