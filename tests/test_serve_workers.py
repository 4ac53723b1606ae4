"""`alphintra serve --workers N`: N worker processes spawned by uvicorn behind one port, sharing
events, revocations and metrics through Redis and a multi-process metrics directory; refused
without Redis; one process by default in development."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets
from click.testing import CliRunner
from prometheus_client.multiprocess import MultiProcessCollector
from sqlmodel import select

from gateway.cli import default_workers, main
from gateway.runtime import build_runtime
from gateway.settings import Settings
from gateway.tenancy.models import ApiKey
from tests.support import GraphQLClient, TransportWS, free_port, onboard, user_key
from tests.test_multiprocess import (
    Proc,
    await_condition,
    drop_namespace,
    fresh_namespace,
    gateway_env,
    healthy,
)
from tests.test_multiprocess import own_database as own_database  # a fixture, used by name

SUBSCRIBE_JOB = "subscription($id: ID!){ jobUpdated(id:$id){ sequence job { id status } } }"
RUN_DIAGNOSTICS = "mutation { runDiagnostics(input:{steps:3}) { id status } }"
CANCEL_JOB = "mutation($id: ID!){ cancelJob(id:$id) { id status } }"
REVOKE = "mutation($id: ID!) { revokeApiKey(id: $id) { revokedAt } }"
SOCKETS = 8  # at least: more are opened until both workers hold some
MAX_SOCKETS = 40


# -- the process tree, from /proc (Linux) ------------------------------------------------------

def children(pid: int) -> list[int]:
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(c) for c in (task / "children").read_text().split()]
    return found


def cmdline(pid: int) -> str:
    return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()


def worker_pids(serve_pid: int) -> list[int]:
    """uvicorn's workers: the spawned children (not multiprocessing's resource tracker)."""
    return [c for c in children(serve_pid) if "spawn_main" in cmdline(c)]


def environ_of(pid: int) -> dict[str, str]:
    pairs = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(p.decode().split("=", 1) for p in pairs if b"=" in p)


def established_on(pid: int, port: int) -> int:
    """TCP connections `pid` holds that were accepted on `port`."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            local_port = int(fields[1].rsplit(":", 1)[1], 16)
            if local_port == port and fields[3] == "01" and fields[9] in inodes:  # ESTABLISHED
                count += 1
    return count


def settled_count(pid: int, pids: list[int], port: int, total: int) -> int:
    """established_on(pid), read until every worker's counts add up to `total`: /proc/net/tcp is
    read a page at a time, so a table that changes meanwhile (other tests' connections) can skip
    a line."""
    deadline = time.monotonic() + 5
    while True:
        held = {p: established_on(p, port) for p in pids}
        if sum(held.values()) == total or time.monotonic() > deadline:
            assert sum(held.values()) == total, (held, total)
            return held[pid]
        time.sleep(0.05)


# -- /metrics -----------------------------------------------------------------------------------

def sample(text: str, name: str, **labels: str) -> float:
    """The sum of `name`'s samples whose labels include `labels`."""
    total = 0.0
    for line in text.splitlines():
        match = re.match(r"^([a-zA-Z_:]+)(\{[^}]*\})? (\S+)$", line)
        if not match or match.group(1) != name:
            continue
        have = dict(re.findall(r'(\w+)="([^"]*)"', match.group(2) or ""))
        if all(have.get(k) == v for k, v in labels.items()):
            total += float(match.group(3))
    return total


def scrape(base_url: str) -> str:
    # a connection of its own each time: the scrape lands on either worker
    response = httpx.get(f"{base_url}/metrics", headers={"Connection": "close"}, timeout=10)
    assert response.status_code == 200
    return response.text


def per_worker_requests(directory: str, pid: int, route: str) -> float:
    """What one worker counted, read from its own file in the metrics directory."""
    files = [os.path.join(directory, f"counter_{pid}.db")]
    for metric in MultiProcessCollector.merge(files, accumulate=False):
        if metric.name == "alphintra_http_requests":
            return sum(s.value for s in metric.samples
                       if s.name == "alphintra_http_requests_total" and s.labels["route"] == route)
    return 0.0


# -- fast: the refusal and the defaults ---------------------------------------------------------

@pytest.mark.parametrize("args, env", [(["serve", "--workers", "2"], {}),
                                       (["serve"], {"ALPHINTRA_WORKERS": "3"})])
def test_several_workers_without_redis_are_refused_in_one_line(tmp_path, args, env):
    environ = {k: None for k in os.environ if k.startswith("ALPHINTRA_")}
    environ.update({"ALPHINTRA_DATABASE_URL": f"sqlite:///{tmp_path / 'refused.db'}",
                    "ALPHINTRA_LOG_JSON": "false", **env})
    result = CliRunner().invoke(main, args, env=environ)
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, result.output
    assert "ALPHINTRA_REDIS_URL" in lines[0] and "between worker processes" in lines[0]
    assert not list(tmp_path.glob("refused.db*"))  # refused before anything started


def test_default_workers_one_in_development_one_per_core_in_production_with_redis():
    redis = "redis://127.0.0.1:6379/12"
    assert default_workers(Settings()) == 1
    assert default_workers(Settings(redis_url=redis)) == 1  # development (make run): one
    assert default_workers(Settings(environment="production")) == 1  # no Redis: one
    assert default_workers(Settings(environment="production", redis_url=redis)) == (os.cpu_count() or 1)


@pytest.mark.slow
@pytest.mark.timeout(90)
def test_embedded_default_serves_one_process(tmp_path):
    """`make run`'s serve: no worker processes, no metrics directory, metrics as before."""
    port = free_port()
    env = {"ALPHINTRA_DATABASE_URL": f"sqlite:///{tmp_path / 'one.db'}",
           "ALPHINTRA_SECRET_KEY_FILE": str(tmp_path / "secret.key"),
           "ALPHINTRA_WARM_ON_START": "false", "ALPHINTRA_LOG_JSON": "false",
           "ALPHINTRA_OTEL_EXPORTER": "none"}
    migrate = Proc("migrate", ["migrate"], env)
    assert migrate.popen.wait(60) == 0, migrate.output()
    migrate.stop()
    serve = Proc("serve", ["serve", "--port", str(port)], env)
    try:
        url = f"http://127.0.0.1:{port}"
        await_condition(lambda: healthy(url), 60, "the gateway healthy", [serve])
        assert worker_pids(serve.pid) == []
        assert "PROMETHEUS_MULTIPROC_DIR" not in environ_of(serve.pid)
        assert "process_cpu_seconds_total" in scrape(url)  # the one process's own collectors
    finally:
        serve.stop()


# -- slow: two workers on PostgreSQL and Redis ----------------------------------------------------

def _key_id(runtime: Any, tenant_id: str, key: str) -> str:
    with runtime.db.tenant_session(tenant_id) as session:
        return session.exec(select(ApiKey.id).where(ApiKey.key_id == key.split("_")[1])).one()


async def _open_spread(ws_url: str, key: str, pids: list[int], port: int) -> list[TransportWS]:
    """Open SOCKETS sockets, then more until every worker holds at least one."""
    sockets: list[TransportWS] = []
    while len(sockets) < MAX_SOCKETS:
        ws = TransportWS(ws_url, key)
        await ws.__aenter__()
        assert ws.ack is not None and ws.ack["type"] == "connection_ack", ws.ack
        sockets.append(ws)
        if len(sockets) >= SOCKETS and all(established_on(p, port) for p in pids):
            break
    held = {p: established_on(p, port) for p in pids}
    assert all(held.values()), f"{len(sockets)} sockets, all on one worker: {held}"
    return sockets


async def _close_code(ws: TransportWS, timeout: float) -> tuple[int | None, str]:
    try:
        while True:
            await asyncio.wait_for(ws.ws.recv(), timeout)
    except websockets.ConnectionClosed as closed:
        return (closed.rcvd.code, closed.rcvd.reason) if closed.rcvd else (None, "")


@pytest.mark.redis
@pytest.mark.slow
@pytest.mark.timeout(180)
def test_two_workers_share_subscriptions_revocations_and_metrics(own_database):
    settings = own_database
    namespace = fresh_namespace()
    # No job worker: the job stays QUEUED until the HTTP cancel, whose event every socket gets.
    env = gateway_env(settings, namespace, embedded_worker="off", warm_on_start="false")
    setup = build_runtime(settings.with_(embedded_worker="off"))
    try:
        tenant = onboard(setup)
        _, watcher_key = user_key(setup, tenant, "trader")
        watcher_key_id = _key_id(setup, tenant.id, watcher_key)
    finally:
        setup.close()
    port = free_port()
    url, ws_url = f"http://127.0.0.1:{port}", f"ws://127.0.0.1:{port}/graphql"
    gql = GraphQLClient(url)
    serve = Proc("serve --workers 2", ["serve", "--port", str(port), "--workers", "2"], env)
    try:
        # each worker builds its own app (about as long as one gateway's start, both at once)
        await_condition(lambda: serve.count("Application startup complete") == 2, 90,
                        "two workers up", [serve])
        pids = worker_pids(serve.pid)
        assert len(pids) == 2, pids
        directory = environ_of(pids[0])["PROMETHEUS_MULTIPROC_DIR"]
        assert all(environ_of(p)["PROMETHEUS_MULTIPROC_DIR"] == directory for p in pids)
        assert os.path.isdir(directory) and oct(os.stat(directory).st_mode & 0o777) == "0o700"

        # /metrics sums both workers: N plain requests, each scrape (either worker) shows +N.
        before = sample(scrape(url), "alphintra_http_requests_total", route="/healthz")
        n = 30
        for _ in range(n):  # one connection each, so both workers answer some
            assert httpx.get(f"{url}/healthz", headers={"Connection": "close"}).status_code == 200
        # (a worker counts a request as its answer goes out: wait for the last one's count)
        await_condition(lambda: sample(scrape(url), "alphintra_http_requests_total",
                                       route="/healthz") == before + n, 5, "+N counted", [serve])
        for _ in range(6):
            assert sample(scrape(url), "alphintra_http_requests_total", route="/healthz") \
                == before + n
        per_worker = {p: per_worker_requests(directory, p, "/healthz") for p in pids}
        assert all(per_worker.values()), f"one worker answered every request: {per_worker}"
        assert sum(per_worker.values()) == before + n

        job_id = gql.data(RUN_DIAGNOSTICS, key=tenant.key)["runDiagnostics"]["id"]

        async def scenario() -> tuple[float, float, int]:
            sockets = await _open_spread(ws_url, watcher_key, pids, port)
            try:
                for ws in sockets:
                    await ws.subscribe("1", SUBSCRIBE_JOB, {"id": job_id})
                for ws in sockets:  # the snapshot: each subscription is live on the bus
                    first = await ws.next(10, op_id="1")
                    assert first["payload"]["data"]["jobUpdated"]["job"]["status"] == "QUEUED"
                gauge = sample(await asyncio.to_thread(scrape, url), "alphintra_websocket_connections")
                assert gauge == len(sockets)  # livesum across the workers

                started = time.monotonic()
                canceled = await asyncio.to_thread(gql.data, CANCEL_JOB, {"id": job_id}, key=tenant.key)
                assert canceled["cancelJob"]["status"] == "CANCELED"

                async def canceled_on(ws: TransportWS) -> None:
                    update = await ws.next(5, op_id="1")
                    assert update["payload"]["data"]["jobUpdated"]["job"]["status"] == "CANCELED"
                    assert await ws.next(5, op_id="1") == {"id": "1", "type": "complete"}

                await asyncio.wait_for(asyncio.gather(*(canceled_on(ws) for ws in sockets)), 5)
                cancel_s = time.monotonic() - started

                started = time.monotonic()
                await asyncio.to_thread(gql.data, REVOKE, {"id": watcher_key_id}, key=tenant.key)
                closes = await asyncio.gather(*(_close_code(ws, 5) for ws in sockets))
                revoke_s = time.monotonic() - started
                assert set(closes) == {(4403, "AUTH_KEY_REVOKED")}, closes
                assert revoke_s < 5
                return cancel_s, revoke_s, len(sockets)
            finally:
                for ws in sockets:
                    await ws.ws.close()

        cancel_s, revoke_s, count = asyncio.run(scenario())
        print(f"{count} sockets over 2 workers: cancel reached all in {cancel_s * 1000:.0f} ms, "
              f"revocation closed all in {revoke_s * 1000:.0f} ms")
        # every worker refuses the revoked key (new connections land on either)
        for _ in range(10):
            body = httpx.post(f"{url}/graphql", json={"query": "{ viewer { authenticatedBy } }"},
                              headers={"Authorization": f"Bearer {watcher_key}",
                                       "Connection": "close"}).json()
            assert [e["extensions"]["code"] for e in body["errors"]] == ["AUTH_KEY_REVOKED"]

        # every socket closed: none counted on any worker
        await_condition(lambda: sample(scrape(url), "alphintra_websocket_connections") == 0, 5,
                        "no open sockets counted", [serve])
        # A worker killed outright: its open connections stop counting, its requests do not.
        healthz_total = sample(scrape(url), "alphintra_http_requests_total", route="/healthz")

        async def kill_one() -> None:
            sockets = await _open_spread(ws_url, tenant.key, pids, port)
            try:
                victim = pids[0]
                survivors = len(sockets) - settled_count(victim, pids, port, len(sockets))
                os.kill(victim, signal.SIGKILL)
                await asyncio.to_thread(await_condition, lambda: victim not in worker_pids(serve.pid),
                                        10, "the killed worker gone", [serve])
                text = await asyncio.to_thread(scrape, url)
                assert sample(text, "alphintra_websocket_connections") == survivors, \
                    (victim, survivors, len(sockets), sorted(os.listdir(directory)), worker_pids(serve.pid))
                assert sample(text, "alphintra_http_requests_total", route="/healthz") == healthz_total
            finally:
                for ws in sockets:
                    await ws.ws.close()

        asyncio.run(kill_one())
    finally:
        gql.http.close()
        rc = serve.stop()
        drop_namespace(settings.redis_url, namespace)
    assert rc == 0, serve.output()
    assert not os.path.exists(directory)  # removed at exit
