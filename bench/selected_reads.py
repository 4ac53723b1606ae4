"""What selected reads save on the jobs page (issue 14, "reads that select what was asked").

    .venv/bin/python bench/selected_reads.py [--database-url URL] [--calls N] [--rounds R]

Without --database-url it uses a SQLite file in a temporary directory (PostgreSQL: give a
scratch database of your own; the bench migrates it and onboards a tenant of its own, which
stays). 60 jobs created by the tenant's admin, and the bench query of the issue:

    { jobs(first: 50) { edges { node { id kind status progress createdAt createdBy { email } } } } }

In one run, on one database, the two paths alternated round by round (the machine is shared:
the alternation keeps both under the same load):

- `read`: the resolver's database work and objects alone: whole rows (`JobService.list`, the
  creators' query, `Job.from_row`/`User.from_row`: the path before) against the selected read
  (`JobService.page_columns` with the creator joined, and the row-backed Job objects);
- `execute`: the whole query executed in process on graphql-core with the gateway's schema
  and a real request context (permission check included), the whole-row path forced by making
  `JobRead.of` answer None (what any selection it cannot map does), against the selected path.

Prints ms per page (median of rounds) and the whole/selected ratios; checks first that both
paths answer the same data.
"""

from __future__ import annotations

import argparse
import base64
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from graphql import ExecutionResult, execute, parse
from strawberry.execution.is_awaitable import optimized_is_awaitable

from gateway.cli import migrate_database
from gateway.db import utcnow
from gateway.http.context import RequestContext
from gateway.jobs.models import Job, JobStatus
from gateway.runtime import Runtime, build_runtime
from gateway.scope import tenant_scope
from gateway.settings import Settings
from schema import jobs as job_schema
from schema.common import Connection
from schema.compose import build_schema
from schema.tenancy import User

QUERY = ("{ jobs(first: 50) { edges { node { id kind status progress createdAt "
         "createdBy { email } } } } }")
JOB_ROWS = 60


def per_call_ms(fn: Callable[[], object], calls: int) -> float:
    started = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - started) / calls * 1e3


@contextmanager
def scratch_runtime(database_url: str | None) -> Iterator[tuple[Runtime, Settings, str]]:
    """A migrated runtime on `database_url`, or on a SQLite file in a temporary directory; its
    settings and URL (bench/selected_reads_trading.py uses it too)."""
    with tempfile.TemporaryDirectory() as tmp:
        url = database_url or f"sqlite:///{tmp}/bench.db"
        settings = Settings(database_url=url, embedded_worker="off", warm_on_start=False,
                            log_json=False, secret_key=base64.b64encode(os.urandom(32)).decode())
        migrate_database(settings)
        rt = build_runtime(settings)
        try:
            yield rt, settings, url
        finally:
            rt.close()


@contextmanager
def whole_rows() -> Iterator[None]:
    """The path before selected reads: every selection reads whole rows."""
    original = job_schema.JobRead.__dict__["of"]
    job_schema.JobRead.of = classmethod(lambda cls, fields: None)  # type: ignore[method-assign,assignment]
    try:
        yield
    finally:
        job_schema.JobRead.of = original  # type: ignore[method-assign]


def seed(rt: Runtime) -> tuple[str, str]:
    slug = f"bench-{uuid.uuid4().hex[:8]}"
    tenant, admin, (_, key) = rt.tenancy.onboard(slug, "Bench", f"admin@{slug}.test")
    start, statuses = utcnow() - timedelta(hours=1), list(JobStatus)
    with rt.db.tenant_transaction(tenant.id) as session:
        for i in range(JOB_ROWS):
            at = start + timedelta(seconds=i)
            session.add(Job(
                tenant_id=tenant.id, kind="diagnostics", status=statuses[i % len(statuses)].value,
                region="americas", progress=(i % 11) / 10, message=f"step {i % 5} of 5",
                params={"steps": 5, "step_seconds": 0.2, "fail_at_step": None},
                created_by=admin.id, attempts=1, created_at=at, updated_at=at,
                lease_expires_at=utcnow() + timedelta(days=1)))
    return tenant.id, key


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url")
    parser.add_argument("--calls", type=int, default=300, help="pages per round and path")
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()

    with scratch_runtime(args.database_url) as (rt, settings, url):
        samples = run(rt, settings, args.calls, args.rounds)

    backend = url.split(":", 1)[0]
    print(f"selected reads bench: {backend}, {JOB_ROWS} jobs, page of 50, {args.rounds} rounds "
          f"of {args.calls} pages per path, alternated; Python {sys.version.split()[0]}")
    print(f"  query: {QUERY}")
    median = {name: statistics.median(values) for name, values in samples.items()}
    for name, value in median.items():
        print(f"  {name:<28} {value:8.3f} ms/page")
    for level in ("read", "execute"):
        whole, selected = median[f"{level}, whole rows"], median[f"{level}, selected"]
        print(f"  {level + ': whole rows / selected':<28} {whole / selected:8.2f}x  "
              f"(saves {whole - selected:.3f} ms/page)")


def run(rt: Runtime, settings: Settings, calls: int, rounds: int) -> dict[str, list[float]]:
    tenant_id, key = seed(rt)
    principal = rt.authenticator.authenticate(key)
    gql = build_schema(settings)._schema
    document = parse(QUERY)

    def execute_page() -> ExecutionResult:
        context = RequestContext(runtime=rt, request_id="bench", principal=principal)
        with tenant_scope(tenant_id):
            result = execute(gql, document, context_value=context,
                             is_awaitable=optimized_is_awaitable)
        assert not result.errors, result.errors
        return result

    def read_whole() -> Connection[Any]:
        page = rt.jobs.list(tenant_id, first=50)
        users = rt.tenancy.users_by_id(tenant_id, list({j.created_by for j in page.items}))
        connection = Connection.of(page, job_schema.Job.from_row)
        for edge, row in zip(connection.edges, page.items, strict=True):
            user = users.get(row.created_by or "")
            edge.node.creator_joined, edge.node.creator = True, User.from_row(user) if user else None
        return connection

    read = job_schema.JobRead(("kind", "status", "progress", "created_at"), ("email",))

    def read_selected() -> Connection[Any]:
        page = rt.jobs.page_columns(tenant_id, read.columns, creator_columns=read.creator_columns,
                                    first=50)
        return Connection.of(page, read.builder(tenant_id))

    selected_data = execute_page().data
    with whole_rows():
        whole_data = execute_page().data
    assert selected_data == whole_data and len(whole_data["jobs"]["edges"]) == 50  # type: ignore[index]

    def in_whole(fn: Callable[[], object]) -> Callable[[], object]:
        def wrapped() -> object:
            with whole_rows():
                return fn()
        return wrapped

    paths: dict[str, Callable[[], object]] = {
        "read, whole rows": read_whole, "read, selected": read_selected,
        "execute, whole rows": in_whole(execute_page), "execute, selected": execute_page,
    }
    for fn in paths.values():  # warm-up
        per_call_ms(fn, max(1, calls // 5))
    samples: dict[str, list[float]] = {name: [] for name in paths}
    names = list(paths)
    for i in range(rounds):
        for name in names if i % 2 == 0 else names[::-1]:
            samples[name].append(per_call_ms(paths[name], calls))
    return samples


if __name__ == "__main__":
    main()
