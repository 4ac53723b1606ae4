"""graphql-core's execution against a compiled plan (gateway/http/plan/), in process (issue 14).

    .venv/bin/python bench/execution_plan.py [--rounds R] [--queries N] [--database-url URL]

The issue's page query, `{ jobs(first: 50) { edges { node { id kind status progress createdAt
createdBy { email } } } } }` (402 fields in the answer), executed two ways:

- `page`: on the real gateway schema with a real request context, in the tenant's scope, as
  `GraphQLEndpoint._run` executes it: resolvers read SQLite (a temporary database migrated and
  seeded with 60 jobs by bench/graphql_throughput.py's `seed`, or --database-url). The plan
  saves only the execution machinery; the page and creators queries cost the same on both.
- `in-memory`: the same query on bench/_servers.py's minimal strawberry schema over the same
  page held in memory (no database): the execution machinery alone.

`--against wrapper` compares the plan with a plan that calls strawberry's resolver wrapper for
every field with a resolver (gateway/http/plan/direct.py off) instead of graphql-core.

Each round runs N queries on graphql-core then N on the plan (the order swapped every other
round, so drift on a shared machine hits both); it prints the median µs per query of each and
the ratio, after checking both answers are the same. Parsing and validation are done once, as
the endpoint's caches do; the plan is compiled once, before the rounds.
"""

from __future__ import annotations

import argparse
import base64
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import strawberry
from _servers import QUERY, BenchJob, BenchQuery, bench_data
from graphql import execute, get_operation_ast, parse, validate
from graphql_throughput import seed
from strawberry.execution.is_awaitable import optimized_is_awaitable

from gateway.app import create_app
from gateway.cli import migrate_database
from gateway.http.context import RequestContext
from gateway.http.plan import compile_plan, plan_difference
from gateway.runtime import build_runtime
from gateway.scope import tenant_scope
from gateway.settings import Settings


def measure(name: str, graphql_core: Callable[[], Any], compiled: Callable[[], Any], rounds: int,
            queries: int, baseline: str = "graphql-core") -> tuple[float, float]:
    first, second = graphql_core(), compiled()
    difference = plan_difference(second, first)
    if difference is not None or first.errors:
        raise SystemExit(f"{name}: the answers differ or fail: {difference or first.errors}")
    for _ in range(max(3, queries // 10)):  # warm both
        graphql_core()
        compiled()
    times: dict[str, list[float]] = {"graphql-core": [], "compiled": []}
    paths = [("graphql-core", graphql_core), ("compiled", compiled)]
    for round_ in range(rounds):
        for label, run in (paths if round_ % 2 == 0 else paths[::-1]):
            started = time.perf_counter()
            for _ in range(queries):
                run()
            times[label].append((time.perf_counter() - started) / queries * 1e6)
    core_us, plan_us = statistics.median(times["graphql-core"]), statistics.median(times["compiled"])
    print(f"{name:10} {baseline} {core_us:9.1f} µs/query   compiled {plan_us:9.1f} µs/query   "
          f"ratio {core_us / plan_us:5.2f}x   saved {core_us - plan_us:8.1f} µs/query")
    return core_us, plan_us


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--queries", type=int, default=50, help="queries per path per round")
    parser.add_argument("--database-url")
    parser.add_argument("--against", choices=("graphql-core", "wrapper"), default="graphql-core",
                        help="the baseline: graphql-core's execute, or the plan calling "
                             "strawberry's resolver wrappers (direct calls off)")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        url = args.database_url or f"sqlite:///{tmp}/bench.db"
        settings = Settings(database_url=url, secret_key=base64.b64encode(os.urandom(32)).decode(),
                            embedded_worker="off", warm_on_start=False, log_json=False, log_level="WARNING")
        migrate_database(settings)
        runtime = build_runtime(settings)
        try:
            app = create_app(runtime=runtime)  # binds what the schema's resolvers need
            seeded = seed(runtime)
            principal = runtime.authenticator.authenticate(seeded.key)
            view = runtime.marketplace.view(principal.tenant_id)
            tenant_schema = view.schema if view is not None else None
            strawberry_schema = app.state.schema
            gql = tenant_schema.gql if tenant_schema is not None else strawberry_schema._schema
            executor_class = (tenant_schema.execution_context_class if tenant_schema is not None
                              else strawberry_schema.execution_context_class)
            document = parse(QUERY)
            assert not validate(gql, document)
            operation = get_operation_ast(document)
            plan = compile_plan(gql, document, operation, executor_class)
            wrapper_plan = compile_plan(gql, document, operation, executor_class, direct=False)
            assert plan is not None and wrapper_plan is not None
            wrapper = args.against == "wrapper"

            def context() -> RequestContext:  # one per request, as the endpoint makes them
                return RequestContext(runtime=runtime, request_id="bench", principal=principal,
                                      plugin_view=view)

            def page_core() -> Any:
                with tenant_scope(principal.tenant_id):
                    if wrapper:
                        return wrapper_plan.execute(context(), None, 20, False, optimized_is_awaitable)
                    return execute(gql, document, context_value=context(), executor_class=executor_class,
                                   is_awaitable=optimized_is_awaitable)

            def page_plan() -> Any:
                with tenant_scope(principal.tenant_id):
                    return plan.execute(context(), None, 20, False, optimized_is_awaitable)

            print(f"the jobs page: {len(page_core().data['jobs']['edges'])} jobs; "
                  f"{args.rounds} rounds of {args.queries} queries per path")
            measure("page", page_core, page_plan, args.rounds, args.queries, args.against)

            data = bench_data(runtime, seeded.key)
            jobs = [BenchJob(id=strawberry.ID(j["id"]), kind=j["kind"], status=j["status"],
                             progress=j["progress"], created_at=j["createdAt"], creator_id=j["createdBy"])
                    for j in data["jobs"]]
            memory_context = {"jobs": jobs, "users": data["users"]}
            memory_schema = strawberry.Schema(query=BenchQuery)
            memory_gql, memory_executor = memory_schema._schema, memory_schema.execution_context_class
            memory_plan = compile_plan(memory_gql, document, operation, memory_executor)
            memory_wrapper = compile_plan(memory_gql, document, operation, memory_executor, direct=False)
            assert memory_plan is not None and memory_wrapper is not None

            def memory_core() -> Any:
                if wrapper:
                    return memory_wrapper.execute(memory_context, None, 20, False, optimized_is_awaitable)
                return execute(memory_gql, document, context_value=memory_context,
                               executor_class=memory_executor, is_awaitable=optimized_is_awaitable)

            def memory_compiled() -> Any:
                return memory_plan.execute(memory_context, None, 20, False, optimized_is_awaitable)

            measure("in-memory", memory_core, memory_compiled, args.rounds, args.queries * 4, args.against)
        finally:
            runtime.close()


if __name__ == "__main__":
    main()
