"""GraphQL requests' synchronous work runs on `request_threads` threads at most (gateway/http/
executor.py), off the event loop: a long request leaves health checks and WebSocket pings
answered, and the request's context (its tenant scope, its log context) reaches the thread."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from dataclasses import replace
from typing import Any

import httpx
import pytest
import websockets

from gateway.app import create_app
from gateway.http.executor import RequestExecutor
from gateway.runtime import Runtime
from gateway.settings import Settings, SettingsError
from tests.support import LiveServer, onboard

VIEWER = "{ viewer { authenticatedBy } }"


def _app(runtime: Runtime, **changes: Any) -> Any:
    settings = replace(runtime.settings, **changes)
    return create_app(runtime=Runtime(**{**runtime.__dict__, "settings": settings}))


class Occupancy:
    """Wraps the endpoint's `run` (the whole synchronous request) to count how many run at once,
    each held `hold` seconds longer."""

    def __init__(self, endpoint: Any, hold: float) -> None:
        self.active = self.most = 0
        self.threads: set[str] = set()
        self._lock = threading.Lock()
        self._run, self.hold = endpoint.run, hold
        endpoint.run = self

    def __call__(self, *args: Any) -> Any:
        with self._lock:
            self.active += 1
            self.most = max(self.most, self.active)
            self.threads.add(threading.current_thread().name)
        try:
            time.sleep(self.hold)
            return self._run(*args)
        finally:
            with self._lock:
                self.active -= 1


async def _post_many(url: str, key: str, count: int) -> list[httpx.Response]:
    headers = {"authorization": f"Bearer {key}", "content-type": "application/json"}
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        return await asyncio.gather(*(client.post("/graphql", content=json.dumps({"query": VIEWER}),
                                                  headers=headers) for _ in range(count)))


@pytest.mark.parametrize("threads", [1, 3])
def test_at_most_request_threads_requests_run_at_once(runtime: Runtime, threads: int) -> None:
    tenant = onboard(runtime)
    app = _app(runtime, request_threads=threads)
    occupancy = Occupancy(app.state.graphql, hold=0.15)
    with LiveServer(app) as live:
        responses = asyncio.run(_post_many(live.url, tenant.key, 8))
    assert [r.status_code for r in responses] == [200] * 8
    assert all(r.json()["data"]["viewer"]["authenticatedBy"] for r in responses)
    assert occupancy.most == threads  # anyio's default limiter would have run all 8 at once
    assert threading.current_thread().name not in occupancy.threads


def test_a_long_request_leaves_the_event_loop_answering(runtime: Runtime) -> None:
    """With the only request thread busy for 2 s, /healthz and a WebSocket ping still answer
    at once (executed inline, the request would hold the loop for the whole 2 s)."""
    tenant = onboard(runtime)
    app = _app(runtime, request_threads=1)

    async def scenario(url: str, ws_url: str) -> tuple[float, float, int]:
        async with websockets.connect(ws_url, subprotocols=["graphql-transport-ws"]) as ws:
            await ws.send(json.dumps({"type": "connection_init",
                                      "payload": {"Authorization": f"Bearer {tenant.key}"}}))
            assert json.loads(await asyncio.wait_for(ws.recv(), 10))["type"] == "connection_ack"
            Occupancy(app.state.graphql, hold=2.0)
            slow = asyncio.create_task(_post_many(url, tenant.key, 1))
            await asyncio.sleep(0.3)  # the request is in its thread now
            started = time.perf_counter()
            async with httpx.AsyncClient(base_url=url, timeout=10) as client:
                assert (await client.get("/healthz")).status_code == 200
            health = time.perf_counter() - started
            started = time.perf_counter()
            await ws.send(json.dumps({"type": "ping"}))
            assert json.loads(await asyncio.wait_for(ws.recv(), 10))["type"] == "pong"
            pong = time.perf_counter() - started
            assert not slow.done()  # both answered while the request was still running
            (response,) = await slow
            return health, pong, response.status_code

    with LiveServer(app) as live:
        health, pong, status = asyncio.run(scenario(live.url, live.ws_url))
    assert status == 200
    assert health < 1.0 and pong < 1.0, (health, pong)


def test_the_thread_sees_the_callers_context_variables() -> None:
    import contextvars

    request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id")

    async def scenario() -> tuple[str, str]:
        request_id.set("r-1")
        executor = RequestExecutor(2)
        seen = await executor.run(lambda: (request_id.get(), threading.current_thread().name))
        return seen

    value, thread = asyncio.run(scenario())
    assert value == "r-1" and thread != threading.current_thread().name


def test_request_threads_must_be_positive() -> None:
    with pytest.raises(SettingsError, match="request_threads"):
        Settings.from_env({"ALPHINTRA_REQUEST_THREADS": "0"})
    assert Settings.from_env({"ALPHINTRA_REQUEST_THREADS": "2"}).request_threads == 2
    with pytest.raises(ValueError):
        RequestExecutor(0)


def test_an_apps_request_threads_end_with_it(runtime: Runtime) -> None:
    tenant = onboard(runtime)
    app = _app(runtime, request_threads=3)
    endpoint = app.state.graphql
    used: set[threading.Thread] = set()  # the threads themselves: names repeat across apps
    run = endpoint.run

    def recording(*args: Any) -> Any:
        used.add(threading.current_thread())
        time.sleep(0.05)
        return run(*args)
    endpoint.run = recording
    with LiveServer(app) as live:
        responses = asyncio.run(_post_many(live.url, tenant.key, 6))
        assert [r.status_code for r in responses] == [200] * 6
        assert used and all(t.is_alive() for t in used)  # kept while the app serves

    deadline = time.monotonic() + 5
    while any(t.is_alive() for t in used) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not any(t.is_alive() for t in used)  # the runtime outlives the app; they do not
