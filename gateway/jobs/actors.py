"""The one actor that runs every job, whatever its kind: the Job row says what to do."""

from __future__ import annotations

import logging

import dramatiq
from dramatiq.middleware import CurrentMessage
from dramatiq.middleware.time_limit import TimeLimitExceeded

from gateway.errors import INTERNAL_ERROR, DomainError
from gateway.jobs.kinds import JobKinds
from gateway.jobs.runner import JobCanceled, JobContext, JobFailed, JobRows, JobSuperseded
from gateway.observability.logs import log_context
from gateway.scope import tenant_scope
from gateway.settings import Settings

log = logging.getLogger(__name__)

RUN_JOB = "alphintra.run_job"


class JobExecutor:
    def __init__(self, rows: JobRows, kinds: JobKinds, max_retries: int) -> None:
        self.rows = rows
        self.kinds = kinds
        self.max_retries = max_retries

    def __call__(self, job_id: str, tenant_id: str) -> None:
        with log_context(job_id=job_id, tenant_id=tenant_id):
            self._run(job_id, tenant_id)

    def _run(self, job_id: str, tenant_id: str) -> None:
        claim = self.rows.claim(job_id, tenant_id)
        if claim is None:
            log.info("job is finished or gone; message dropped")
            return
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
            message = CurrentMessage.get_current_message()
            retries = message.options.get("retries", 0) if message is not None else self.max_retries
            if retries < self.max_retries:
                log.exception("job attempt %s failed; it will be retried", claim.attempt)
                self._quietly(self.rows.requeue, claim, f"attempt {claim.attempt} failed; retrying")
                raise
            log.exception("job failed after %s attempts", claim.attempt)
            self._quietly(self.rows.fail, claim, INTERNAL_ERROR,
                          f"internal error; quote job id {job_id} to support")

    @staticmethod
    def _quietly(write: object, *args: object) -> None:
        try:
            write(*args)  # type: ignore[operator]
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
