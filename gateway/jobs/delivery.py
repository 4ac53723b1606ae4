"""A job's Dramatiq message goes through the outbox, and a ledger tells when it was lost.

`JobMessages.send` adds the message as an outbox row in the session that writes the job, so a
QUEUED job always has its message committed with it; the outbox dispatcher enqueues it on the
broker and marks it in the ledger.

The ledger lives where the messages live (Redis keys beside the Redis broker's queues; a set
in memory beside the in-memory broker), so it loses its marks exactly when the broker loses its
messages: a Redis restarted empty, or a process restarted with the in-memory broker. A QUEUED
job with neither an outbox row nor a mark has lost its message, and the reaper sends another.
A mark may outlive its message (then Dramatiq itself redelivers a dead worker's message), and a
lost mark with a live message only costs a duplicate, which the runner drops: never a loss.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from typing import Any, Protocol

import dramatiq
import redis
from dramatiq.middleware import Middleware
from sqlalchemy.orm import Session

from gateway.jobs.models import Job
from gateway.outbox import Outbox

log = logging.getLogger(__name__)

RUN_JOB = "alphintra.run_job"
JOB_MESSAGE = "job"  # the outbox kind
MARK_TTL_S = 7 * 24 * 3600  # as long as Dramatiq keeps a dead message


class MessageLedger(Protocol):
    def mark(self, job_id: str) -> None: ...
    def forget(self, job_id: str) -> None: ...
    def missing(self, job_ids: Sequence[str]) -> set[str]:
        """The jobs among these whose message the broker no longer holds."""
        ...


class MemoryLedger:
    """Beside the in-memory broker: forgotten with it when the process ends."""

    def __init__(self) -> None:
        self._marks: set[str] = set()
        self._lock = threading.Lock()

    def mark(self, job_id: str) -> None:
        with self._lock:
            self._marks.add(job_id)

    def forget(self, job_id: str) -> None:
        with self._lock:
            self._marks.discard(job_id)

    def missing(self, job_ids: Sequence[str]) -> set[str]:
        with self._lock:
            return {job_id for job_id in job_ids if job_id not in self._marks}


class RedisLedger:
    """One key per sent message, in the broker's Redis: lost with the queues, or kept with them."""

    def __init__(self, url: str, namespace: str) -> None:
        self._prefix = f"{namespace}:jobs:sent:"
        self._redis = redis.Redis.from_url(url, socket_connect_timeout=2.0, socket_timeout=2.0)

    def mark(self, job_id: str) -> None:
        self._redis.set(self._prefix + job_id, b"1", ex=MARK_TTL_S)

    def forget(self, job_id: str) -> None:
        self._redis.delete(self._prefix + job_id)

    def missing(self, job_ids: Sequence[str]) -> set[str]:
        if not job_ids:
            return set()
        values = self._redis.mget([self._prefix + job_id for job_id in job_ids])
        return {job_id for job_id, value in zip(job_ids, values, strict=True) if value is None}

    def close(self) -> None:
        self._redis.close()


def make_ledger(redis_url: str | None, namespace: str) -> MessageLedger:
    return RedisLedger(redis_url, namespace) if redis_url else MemoryLedger()


class JobMessages:
    """Job messages written to the outbox and delivered from it to the broker."""

    def __init__(self, outbox: Outbox, broker: dramatiq.Broker, ledger: MessageLedger) -> None:
        self.outbox = outbox
        self.broker = broker
        self.ledger = ledger
        outbox.register(JOB_MESSAGE, self.deliver)
        broker.add_middleware(_ForgetDeadMessages(self))

    def send(self, session: Session, job: Job, *, delay_s: float = 0.0) -> None:
        """The job's message, committed with the session (and sent `delay_s` later)."""
        self.outbox.add(session, JOB_MESSAGE, job.id,
                        {"job_id": job.id, "tenant_id": job.tenant_id, "queue": job.region},
                        delay_s=delay_s)

    def deliver(self, payload: dict[str, Any]) -> None:
        """The outbox handler: enqueue, then mark (a mark without a message would hide a loss;
        a message without a mark only risks a duplicate)."""
        message: dramatiq.Message[Any] = dramatiq.Message(
            queue_name=payload["queue"], actor_name=RUN_JOB,
            args=(payload["job_id"], payload["tenant_id"]), kwargs={}, options={})
        self.broker.enqueue(message)
        self.ledger.mark(payload["job_id"])

    def forget(self, job_id: str) -> None:
        """Claimed: the message has done its work. Best effort (a stale mark expires)."""
        try:
            self.ledger.forget(job_id)
        except Exception:
            log.debug("forgetting a delivered job message failed", exc_info=True)


class _ForgetDeadMessages(Middleware):
    """A message Dramatiq gives up on (retries exhausted while the database was away, or too
    old) is dead: unmarked, so the reaper sends the QUEUED job a new one."""

    def __init__(self, messages: JobMessages) -> None:
        self.messages = messages

    def _forget(self, message: dramatiq.Message[Any]) -> None:
        if message.actor_name == RUN_JOB and message.args:
            self.messages.forget(str(message.args[0]))

    def after_nack(self, broker: dramatiq.Broker, message: dramatiq.Message[Any]) -> None:
        self._forget(message)

    def after_skip_message(self, broker: dramatiq.Broker, message: dramatiq.Message[Any]) -> None:
        self._forget(message)
