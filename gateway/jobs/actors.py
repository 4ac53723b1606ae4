"""The one actor that runs every job, whatever its kind: the Job row says what to do.

Retries of a kind's unexpected failures are the runner's, not Dramatiq's: the job goes back
to QUEUED with its next message committed with it (delayed by the backoff) through the outbox,
so a retry survives a broker outage like any other message. Dramatiq's own Retries only see
what escapes here (the database away during a claim): that message is tried again.
"""

from __future__ import annotations

import logging

import dramatiq
from dramatiq.middleware.time_limit import TimeLimitExceeded

from gateway.errors import INTERNAL_ERROR, DomainError
from gateway.jobs.delivery import RUN_JOB
from gateway.jobs.kinds import JobKinds
from gateway.jobs.runner import Claim, JobCanceled, JobContext, JobFailed, JobRows, JobSuperseded
from gateway.jobs.upkeep import LeaseKeeper
from gateway.observability.logs import log_context
from gateway.scope import tenant_scope
from gateway.settings import Settings

log = logging.getLogger(__name__)

__all__ = ["RUN_JOB", "JobExecutor", "declare_run_job"]


class JobExecutor:
    def __init__(self, rows: JobRows, kinds: JobKinds, max_retries: int, *,
                 leases: LeaseKeeper, min_backoff_ms: int = 500,
                 max_backoff_ms: int = 30_000) -> None:
        self.rows = rows
        self.kinds = kinds
        self.max_retries = max_retries
        self.leases = leases
        self.min_backoff_s = min_backoff_ms / 1000
        self.max_backoff_s = max_backoff_ms / 1000

    def __call__(self, job_id: str, tenant_id: str) -> None:
        with log_context(job_id=job_id, tenant_id=tenant_id):
            self._run(job_id, tenant_id)

    def _run(self, job_id: str, tenant_id: str) -> None:
        claim = self.rows.claim(job_id, tenant_id)
        if claim is None:
            log.info("job is finished or gone; message dropped")
            return
        self.leases.hold(claim)
        try:
            self._execute(claim)
        finally:
            self.leases.release(claim)

    def _execute(self, claim: Claim) -> None:
        try:
            kind = self.kinds.get(claim.kind)
            with tenant_scope(claim.tenant_id):
                result = kind.run(JobContext(self.rows, claim), claim.params)
            self.rows.succeed(claim, result)
        except JobSuperseded:
            log.warning("job was claimed again elsewhere; this run stops")
        except JobCanceled:
            self._quietly(self.rows.cancel, claim)
        except (JobFailed, DomainError) as exc:
            self._quietly(self.rows.fail, claim, exc.code, exc.message)
        except TimeLimitExceeded:
            self._quietly(self.rows.fail, claim, "JOB_TIME_LIMIT", "job exceeded its time limit")
        except Exception:
            if claim.attempt <= self.max_retries:
                delay = min(self.min_backoff_s * 2 ** (claim.attempt - 1), self.max_backoff_s)
                log.exception("job attempt %s failed; retrying in %.2f s", claim.attempt, delay)
                self._quietly(self.rows.requeue, claim,
                              f"attempt {claim.attempt} failed; retrying", delay_s=delay)
                return
            log.exception("job failed after %s attempts", claim.attempt)
            self._quietly(self.rows.fail, claim, INTERNAL_ERROR,
                          f"internal error; quote job id {claim.job_id} to support")

    @staticmethod
    def _quietly(write: object, *args: object, **kwargs: object) -> None:
        try:
            write(*args, **kwargs)  # type: ignore[operator]
        except JobSuperseded:
            log.warning("job was claimed again elsewhere; result of this run discarded")


def declare_run_job(broker: dramatiq.Broker, executor: JobExecutor, settings: Settings) -> dramatiq.Actor:
    return dramatiq.Actor(
        executor,
        broker=broker,
        actor_name=RUN_JOB,
        queue_name=settings.default_region,
        priority=0,
        options={"max_retries": settings.job_max_retries},
    )
