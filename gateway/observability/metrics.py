"""Prometheus metrics, in a registry owned by one app (no process-global collectors).

Label cardinality is bounded: an operation's name is a label only for the first
`OPERATION_NAMES` names seen (a client choosing names cannot grow the series without bound);
later names count as `other`, unnamed operations as `anonymous`.

Several worker processes (`alphintra serve --workers N`): `serve` sets PROMETHEUS_MULTIPROC_DIR
before they start, prometheus_client then keeps every value in a file per process there, and
/metrics (whichever worker answers) sums every worker's files. The process_* and python_*
collectors are left out then: they would describe only the worker that answered the scrape.
"""

from __future__ import annotations

import glob
import os
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
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead
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


# prometheus_client's own switch to multi-process mode, read when it is imported: Metrics reads
# the same variable so that its exposition agrees with where the values are kept.
MULTIPROC_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, someone else's
        return True
    try:  # a worker that died stays a zombie until uvicorn reaps it: dead already (Linux)
        with open(f"/proc/{pid}/stat", "rb") as stat:
            return stat.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except (OSError, IndexError):
        return True


class Workers(Collector):
    """Every worker process's values, summed from the multi-process directory. The live gauges
    of a worker that died (and was replaced) are dropped first, so its open connections stop
    counting; its counters and histograms stay, as totals must."""

    def __init__(self, path: str) -> None:
        self._path = path
        self._files = MultiProcessCollector(None, path)

    def collect(self) -> Iterator[Any]:
        for file in glob.glob(os.path.join(self._path, "gauge_live*_*.db")):
            pid = os.path.basename(file).rsplit("_", 1)[-1].removesuffix(".db")
            if pid.isdigit() and not _alive(int(pid)):
                mark_process_dead(int(pid), self._path)
        yield from self._files.collect()


OPERATION_NAMES = 200  # distinct operation names kept as labels; the rest are "other"
OPERATION_NAME_MAX = 64  # characters; a longer name is labelled "other"
ANONYMOUS = "anonymous"
OTHER = "other"
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


class Metrics:
    def __init__(self, db: Database) -> None:
        self.registry = CollectorRegistry()
        multiproc_dir = os.environ.get(MULTIPROC_DIR_ENV)
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
        # livesum: across workers the open ones of the live processes (ignored in one process)
        self.ws_connections = Gauge(
            "alphintra_websocket_connections", "Open WebSocket connections",
            multiprocess_mode="livesum", registry=self.registry)
        self.subscriptions = Gauge(
            "alphintra_graphql_subscriptions", "Active GraphQL subscriptions",
            multiprocess_mode="livesum", registry=self.registry)
        jobs = JobsByStatus(db)
        self.registry.register(jobs)
        # What /metrics exposes: this registry, or with several workers every worker's files
        # and the jobs (read at scrape time, already the whole database's).
        self.scraped = self.registry
        if multiproc_dir:
            self.scraped = CollectorRegistry()
            self.scraped.register(Workers(multiproc_dir))
            self.scraped.register(jobs)
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
