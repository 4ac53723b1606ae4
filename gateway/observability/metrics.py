"""Prometheus metrics, in a registry owned by one app (no process-global collectors)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
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


class Metrics:
    def __init__(self, db: Database) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "alphintra_http_requests", "HTTP requests", ["route", "method", "status"],
            registry=self.registry)
        self.latency = Histogram(
            "alphintra_http_request_seconds", "HTTP request latency", ["route"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=self.registry)
        self.errors = Counter(
            "alphintra_graphql_errors", "GraphQL errors by code", ["code"], registry=self.registry)
        self.operations = Counter(
            "alphintra_graphql_operations", "GraphQL operations", ["type"], registry=self.registry)
        self.registry.register(JobsByStatus(db))
