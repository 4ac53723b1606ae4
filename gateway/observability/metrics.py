"""Prometheus metrics, in a registry owned by one app (no process-global collectors).

Label cardinality is bounded: an operation's name is a label only for the first
`OPERATION_NAMES` names seen (a client choosing names cannot grow the series without bound);
later names count as `other`, unnamed operations as `anonymous`.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from threading import Lock
from typing import Any

from prometheus_client import (
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import func
from sqlmodel import select

from gateway.db import Database
from gateway.jobs.models import Job, JobStatus


class JobsByStatus(Collector):
    """Read at scrape time from the Job table, so it counts every worker process's jobs."""

    def __init__(self, db: Database) -> None:
        self._db = db

    def collect(self) -> Iterator[Any]:
        family = GaugeMetricFamily("alphintra_jobs", "Jobs by status, all tenants", labels=["status"])
        counts = {s.value: 0 for s in JobStatus}
        with self._db.system_session() as session:
            for status, count in session.exec(select(Job.status, func.count()).group_by(Job.status)):
                counts[status] = count
        for status, count in counts.items():
            family.add_metric([status], count)
        yield family


OPERATION_NAMES = 200  # distinct operation names kept as labels; the rest are "other"
OPERATION_NAME_MAX = 64  # characters; a longer name is labelled "other"
ANONYMOUS = "anonymous"
OTHER = "other"
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


class Metrics:
    def __init__(self, db: Database) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "alphintra_http_requests", "HTTP requests", ["route", "method", "status"],
            registry=self.registry)
        self.latency = Histogram(
            "alphintra_http_request_seconds", "HTTP request latency", ["route"],
            buckets=LATENCY_BUCKETS, registry=self.registry)
        self.errors = Counter(
            "alphintra_graphql_errors", "GraphQL errors sent, by extensions.code and transport",
            ["code", "transport"], registry=self.registry)
        self.operations = Counter(
            "alphintra_graphql_operations", "GraphQL operations", ["type"], registry=self.registry)
        self.operation_latency = Histogram(
            "alphintra_graphql_operation_seconds",
            "GraphQL operation latency, from its start to its first result (a subscription's "
            "first event), by operation name and type", ["operation", "type", "transport"],
            buckets=LATENCY_BUCKETS, registry=self.registry)
        self.ws_connections = Gauge(
            "alphintra_websocket_connections", "Open WebSocket connections", registry=self.registry)
        self.subscriptions = Gauge(
            "alphintra_graphql_subscriptions", "Active GraphQL subscriptions", registry=self.registry)
        self.registry.register(JobsByStatus(db))
        # prometheus_client's process_*, python_info and python_gc_* live in its global registry
        # only; this registry gets the same collectors (they hold no state of their own).
        for collector in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
            self.registry.register(collector)
        self._names: set[str] = set()
        self._names_lock = Lock()

    def operation_label(self, name: str | None) -> str:
        """`name` as a label value, within the cardinality bound."""
        if not name:
            return ANONYMOUS
        if len(name) > OPERATION_NAME_MAX:  # a name is one token: no other limit bounds it
            return OTHER
        if name in self._names:
            return name
        with self._names_lock:
            if len(self._names) < OPERATION_NAMES:
                self._names.add(name)
                return name
        return OTHER

    def observe_operation(self, name: str | None, kind: str, transport: str, seconds: float) -> None:
        self.operation_latency.labels(self.operation_label(name), kind, transport).observe(seconds)

    def count_errors(self, errors: Iterable[Mapping[str, Any]], transport: str) -> None:
        for error in errors:
            extensions = error.get("extensions") if isinstance(error, Mapping) else None
            code = extensions.get("code") if isinstance(extensions, Mapping) else None
            self.errors.labels(code if isinstance(code, str) else "UNKNOWN", transport).inc()
