"""The protocol a worker follows on a Job row.

- `claim` moves QUEUED (or RUNNING, on redelivery after a worker died) to RUNNING with a fresh
  run token. A terminal job cannot be claimed, so a redelivered message is a no-op.
- Every later write is conditional on that token. When a message is redelivered while an old
  worker still runs, the newer claim wins and the old worker's next write finds no row and
  stops: a job finishes exactly once.
- A cancel request is seen at the next progress report.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func
from sqlmodel import select, update

from gateway.db import Database, utcnow
from gateway.events import Bus
from gateway.jobs.models import Job, JobStatus

log = logging.getLogger(__name__)


def job_topic(job_id: str) -> str:
    return f"job.{job_id}"


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
    """Conditional writes on Job rows, each followed by an event on the job's topic."""

    def __init__(self, db: Database, bus: Bus) -> None:
        self.db = db
        self.bus = bus

    def _publish(self, job: Job) -> None:
        try:
            self.bus.publish(job_topic(job.id), snapshot(job))
        except Exception:  # the row is the truth; a lost event shows as a sequence gap
            log.exception("publishing job event failed", extra={"job_id": job.id})

    def claim(self, job_id: str, tenant_id: str) -> Claim | None:
        token = str(uuid.uuid4())
        now = utcnow()
        with self.db.tenant_transaction(tenant_id) as session:
            result = session.exec(
                update(Job)
                .where(Job.id == job_id,
                       Job.status.in_([JobStatus.QUEUED.value, JobStatus.RUNNING.value]))
                .values(status=JobStatus.RUNNING.value, run_token=token,
                        attempts=Job.attempts + 1, started_at=func.coalesce(Job.started_at, now),
                        updated_at=now)
            )
            if result.rowcount != 1:
                return None
            job = session.exec(select(Job).where(Job.id == job_id)).one()
        self._publish(job)
        return Claim(job.id, job.tenant_id, token, job.attempts, job.kind, dict(job.params))

    def _write(self, claim: Claim, *, require_running: bool = True, **values: Any) -> Job:
        values["updated_at"] = utcnow()
        with self.db.tenant_transaction(claim.tenant_id) as session:
            stmt = update(Job).where(Job.id == claim.job_id, Job.run_token == claim.token)
            if require_running:
                stmt = stmt.where(Job.status == JobStatus.RUNNING.value)
            if session.exec(stmt.values(**values)).rowcount != 1:
                raise JobSuperseded(claim.job_id)
            job = session.exec(select(Job).where(Job.id == claim.job_id)).one()
        self._publish(job)
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

    def requeue(self, claim: Claim, message: str) -> Job:
        return self._write(claim, status=JobStatus.QUEUED.value, message=message[:500])


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
