"""Where a `jobs(first: 50)` request spends its time, in process (no HTTP, no event loop).

    .venv/bin/python bench/profile_gateway.py [--iterations N] [--profiler pyinstrument|cprofile]

Same database set-up as graphql_throughput.py (temporary SQLite, 60 jobs, one tenant). Times
the gateway's thread-side path, `app.state.graphql.run(params, token, "POST", rid)`, against the
bare route's `jobs_page`, times each domain step on its own, then profiles `run` in a loop.
pyinstrument is not a project dependency: `.venv/bin/pip install pyinstrument`, or use
`--profiler cprofile`.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from _servers import PAGE_SIZE, QUERY, jobs_page
from graphql import execute
from graphql_throughput import seed, settings_env

from gateway.app import create_app
from gateway.cli import migrate_database
from gateway.http.context import RequestContext
from gateway.runtime import build_runtime
from gateway.settings import Settings
from schema.jobs import Job as JobType


def per_call_ms(fn: Callable[[], Any], iterations: int, repeats: int = 5) -> float:
    """Best of `repeats` means (as timeit does): the least disturbed by other processes."""
    for _ in range(min(50, iterations)):
        fn()
    batch = max(20, iterations // repeats)
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        for _ in range(batch):
            fn()
        best = min(best, (time.perf_counter() - started) / batch)
    return best * 1000


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--iterations", type=int, default=500)
    parser.add_argument("--profiler", choices=["pyinstrument", "cprofile"], default=None)
    args = parser.parse_args(argv)
    profiler = args.profiler
    if profiler is None:
        try:
            import pyinstrument  # noqa: F401
            profiler = "pyinstrument"
        except ImportError:
            profiler = "cprofile"

    with tempfile.TemporaryDirectory(prefix="alphintra-profile-") as tmp:
        settings = Settings.from_env(settings_env(f"sqlite:///{Path(tmp) / 'bench.db'}"))
        migrate_database(settings)
        runtime = build_runtime(settings)
        try:
            seeded = seed(runtime)
            app = create_app(settings, runtime=runtime)
            endpoint = app.state.graphql
            params = {"query": QUERY, "operationName": "Page"}
            status, body, _ = endpoint.run(params, seeded.key, "POST", "profile")
            assert status == 200 and "errors" not in body, body
            body.pop("__encoded__", None)  # the body's bytes, made for the size cap
            assert body == jobs_page(runtime, seeded.key), "gateway and bare differ"
            principal = runtime.authenticator.authenticate(seeded.key)
            page = runtime.jobs.list(seeded.tenant_id, first=PAGE_SIZE)
            document = endpoint.prepare(QUERY).document

            def execute_only() -> Any:
                context = RequestContext(runtime=runtime, request_id="profile",
                                         principal=principal)
                return execute(endpoint.gql, document, context_value=context,
                               operation_name="Page", **(
                                   {"executor_class": endpoint.execution_context_class}
                                   if endpoint.execution_context_class else {}))

            n = args.iterations
            steps = {
                "gateway run() (auth + prepare + execute)":
                    lambda: endpoint.run(params, seeded.key, "POST", "profile"),
                "bare jobs_page() (auth + authz + 2 queries + dicts)":
                    lambda: jobs_page(runtime, seeded.key),
                "  authenticator.authenticate(key)":
                    lambda: runtime.authenticator.authenticate(seeded.key),
                "  policy.allowed(job, read)":
                    lambda: runtime.policy.allowed(seeded.admin_id, seeded.tenant_id, "job",
                                                   "read"),
                "  jobs.list(first=50)":
                    lambda: runtime.jobs.list(seeded.tenant_id, first=PAGE_SIZE),
                "  tenancy.users_by_id([admin])":
                    lambda: runtime.tenancy.users_by_id(seeded.tenant_id, [seeded.admin_id]),
                "  50 x schema Job.from_row(row)":
                    lambda: [JobType.from_row(row) for row in page.items],
                "  graphql execute() only (resolvers incl. DB)": execute_only,
            }
            print(f"per call, best of 5 means of {max(20, n // 5)} calls (after 50 warm-up "
                  "calls), one thread:")
            for name, fn in steps.items():
                print(f"  {name:<52} {per_call_ms(fn, n):7.3f} ms")

            print(f"\n{profiler}: {n} x gateway run()\n")
            if profiler == "pyinstrument":
                from pyinstrument import Profiler

                prof = Profiler(interval=0.0005)
                prof.start()
                for _ in range(n):
                    endpoint.run(params, seeded.key, "POST", "profile")
                prof.stop()
                print(prof.output_text(unicode=True, color=False, show_all=False))
            else:
                cprof = cProfile.Profile()
                cprof.enable()
                for _ in range(n):
                    endpoint.run(params, seeded.key, "POST", "profile")
                cprof.disable()
                for order in ("cumulative", "tottime"):
                    out = io.StringIO()
                    pstats.Stats(cprof, stream=out).sort_stats(order).print_stats(30)
                    print(out.getvalue())
        finally:
            runtime.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
