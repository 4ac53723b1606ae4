"""The Dramatiq broker: in memory inside the gateway process (the embedded default), or Redis
shared with `alphintra worker` processes. One queue per region, so work runs near its market."""

from __future__ import annotations

import dramatiq
from dramatiq.brokers.redis import RedisBroker
from dramatiq.brokers.stub import StubBroker
from dramatiq.middleware import (
    AgeLimit,
    Callbacks,
    CurrentMessage,
    Pipelines,
    Retries,
    ShutdownNotifications,
    TimeLimit,
)

from gateway.settings import Settings


def build_broker(settings: Settings) -> dramatiq.Broker:
    # Explicit middleware: dramatiq's defaults would add a Prometheus exporter of its own.
    middleware = [
        AgeLimit(),
        TimeLimit(time_limit=settings.job_time_limit_ms),
        ShutdownNotifications(),
        Callbacks(),
        Pipelines(),
        Retries(
            max_retries=settings.job_max_retries,
            min_backoff=settings.job_min_backoff_ms,
            max_backoff=settings.job_max_backoff_ms,
        ),
        CurrentMessage(),
    ]
    broker: dramatiq.Broker
    if settings.redis_url:
        broker = RedisBroker(
            url=settings.redis_url,
            namespace=f"{settings.redis_namespace}:jobs",
            middleware=middleware,
            heartbeat_timeout=settings.redis_heartbeat_timeout_ms,
            maintenance_chance=settings.redis_maintenance_chance,
        )
    else:
        broker = StubBroker(middleware=middleware)
    for region in settings.regions:
        broker.declare_queue(region)
    return broker


def start_worker(
    broker: dramatiq.Broker, regions: list[str] | tuple[str, ...], threads: int
) -> dramatiq.Worker:
    worker = dramatiq.Worker(broker, queues=set(regions), worker_threads=threads)
    worker.start()
    return worker
