"""Per-request costs cut around the compiled plan (issue 14): page cursors encoded only when
read, request ids made without a system call on the event loop."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import strawberry
from graphql import execute, parse

from gateway.http.graphql import new_request_id
from gateway.http.plan import compile_plan, plan_difference
from gateway.pagination import Page, encode_cursor
from schema.common import Connection


@dataclass
class Row:
    id: str
    created_at: datetime


class CountingPage(Page[Row]):
    encoded: list[str] = []

    def cursor(self, item: Any) -> str:
        CountingPage.encoded.append(item.id)
        return super().cursor(item)


@strawberry.type
class Thing:
    id: str


def rows(n: int) -> list[Row]:
    start = datetime(2026, 1, 1, tzinfo=UTC)
    return [Row(id=f"r{i}", created_at=start - timedelta(seconds=i)) for i in range(n)]


@strawberry.type
class Query:
    @strawberry.field
    def things(self) -> Connection[Thing]:
        return Connection.of(CountingPage(rows(5), True), lambda row: Thing(id=row.id))


SCHEMA = strawberry.Schema(query=Query)


@pytest.fixture(autouse=True)
def fresh_count() -> None:
    CountingPage.encoded = []


def run_both(query: str) -> Any:
    document = parse(query)
    plan = compile_plan(SCHEMA._schema, document, document.definitions[0], SCHEMA.execution_context_class)
    assert plan is not None
    compiled = plan.execute(None, None, 20, False)
    expected = execute(SCHEMA._schema, document, executor_class=SCHEMA.execution_context_class)
    assert compiled is not None and plan_difference(compiled, expected) is None
    return compiled


def test_a_page_encodes_only_its_end_cursor_until_one_is_read() -> None:
    connection = Connection.of(CountingPage(rows(5), True), lambda row: Thing(id=row.id))
    assert CountingPage.encoded == ["r4"]  # pageInfo.endCursor
    assert connection.page_info.end_cursor == encode_cursor(rows(5)[4].created_at, "r4")
    first = connection.edges[0]
    assert first.cursor == encode_cursor(rows(5)[0].created_at, "r0") and first.node.id == "r0"
    assert first.cursor == first.cursor and CountingPage.encoded == ["r4", "r0"]  # once per edge


def test_queries_read_cursors_only_when_they_ask_for_them() -> None:
    result = run_both("{ things { edges { node { id } } pageInfo { hasNextPage } } }")
    assert result.data["things"]["edges"][2] == {"node": {"id": "r2"}}
    assert CountingPage.encoded == ["r4", "r4"]  # one page each for the plan and graphql-core
    CountingPage.encoded = []
    result = run_both("{ things { edges { cursor node { id } } pageInfo { endCursor } } }")
    edges = result.data["things"]["edges"]
    assert [e["cursor"] for e in edges] == [encode_cursor(r.created_at, r.id) for r in rows(5)]
    assert result.data["things"]["pageInfo"]["endCursor"] == edges[-1]["cursor"]


def test_request_ids_are_made_without_os_urandom(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(n: int) -> bytes:
        raise AssertionError("os.urandom on the request path")

    monkeypatch.setattr(os, "urandom", refuse)
    ids = {new_request_id() for _ in range(2000)}
    assert len(ids) == 2000
    assert all(re.fullmatch(r"[0-9a-f]{32}", i) for i in ids)


def test_request_ids_neither_come_from_nor_move_the_shared_random() -> None:
    import random

    random.seed(7)
    expected = random.getrandbits(128)
    random.seed(7)
    ids = [new_request_id() for _ in range(50)]
    assert random.getrandbits(128) == expected  # the shared generator did not move
    random.seed(7)
    assert f"{random.getrandbits(128):032x}" not in ids


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_does_not_repeat_its_parents_request_ids() -> None:
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its next id, to the parent
        try:
            os.write(write, new_request_id().encode())
        finally:
            os._exit(0)
    os.close(write)
    child = os.read(read, 64).decode()
    os.close(read)
    os.waitpid(pid, 0)
    assert re.fullmatch(r"[0-9a-f]{32}", child)
    assert child != new_request_id()


def test_the_request_hop_copies_context_and_a_cancelled_caller_waits_for_work_under_way() -> None:
    import asyncio
    import contextvars
    import threading
    import time

    from gateway.http.executor import RequestExecutor

    seen: contextvars.ContextVar[str] = contextvars.ContextVar("seen")
    log: list[str] = []

    def slow(name: str) -> str:
        log.append(f"{name} started {seen.get()}")
        time.sleep(0.3)
        log.append(f"{name} finished")
        return threading.current_thread().name

    async def scenario() -> None:
        executor = RequestExecutor(1)
        seen.set("caller's")
        running = asyncio.create_task(executor.run(slow, "a"))
        queued = asyncio.create_task(executor.run(slow, "b"))  # waits for the only thread
        await asyncio.sleep(0.1)
        running.cancel()
        queued.cancel()
        for task in (running, queued):
            with pytest.raises(asyncio.CancelledError):
                await task
        # the running work was waited for; the queued one never started
        assert log == ["a started caller's", "a finished"]
        assert await executor.run(slow, "c") != threading.current_thread().name

    asyncio.run(scenario())


def test_with_tracing_off_a_request_opens_no_span(runtime: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.trace import NoOpTracer

    from gateway.app import create_app
    from tests.support import onboard

    tenant = onboard(runtime)
    endpoint = create_app(runtime=runtime).state.graphql
    assert isinstance(endpoint.tracer, NoOpTracer)  # ALPHINTRA_OTEL_EXPORTER=none

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("a span opened with tracing off")

    monkeypatch.setattr(NoOpTracer, "start_as_current_span", refuse)
    status, body, _ = endpoint.run({"query": "{ viewer { authenticatedBy } }"}, tenant.key, "POST", "r1")
    assert status == 200 and body["data"]["viewer"]["authenticatedBy"], body
    endpoint.tracer = TracerProvider().get_tracer("test")  # tracing on: spans as before
    with endpoint._span("graphql.prepare") as span:
        assert span.is_recording() and span.name == "graphql.prepare"
