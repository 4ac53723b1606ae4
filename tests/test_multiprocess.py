"""Gateway and worker as separate processes on one Redis and one database: events published by
one process reach subscribers on another, and a job whose worker is killed mid-run is redelivered
to another worker and finishes exactly once."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import httpx
import pytest
import redis

from gateway.auth.principal import Principal
from gateway.events import Event, RedisBus
from gateway.jobs.runner import job_topic
from gateway.runtime import build_runtime
from tests.support import GraphQLClient, TransportWS, free_port, onboard, spawn, wait_for

pytestmark = [pytest.mark.redis, pytest.mark.slow, pytest.mark.timeout(90)]

SUBSCRIBE_JOB = "subscription($id: ID!){ jobUpdated(id:$id){ sequence job { id status } } }"
RUN_DIAGNOSTICS = "mutation { runDiagnostics(input:{steps:3}) { id status } }"
CANCEL_JOB = "mutation($id: ID!){ cancelJob(id:$id) { id status } }"
DROPPED = "job is finished or gone; message dropped"
NO_VENUE = "tcp://127.0.0.1:1"  # a privileged port: no test process listens there


def fresh_namespace() -> str:
    return f"alphintra-mp-{uuid.uuid4().hex[:8]}"


def gateway_env(settings, namespace: str, **extra: str) -> dict[str, str]:
    env = {
        "ALPHINTRA_DATABASE_URL": settings.database_url,
        "ALPHINTRA_REDIS_URL": settings.redis_url,
        "ALPHINTRA_REDIS_NAMESPACE": namespace,
        "ALPHINTRA_JWT_SECRET": settings.jwt_secret,
        "ALPHINTRA_SECRET_KEY": settings.secret_key,  # required with PostgreSQL or Redis
        "ALPHINTRA_JOB_MIN_BACKOFF_MS": str(settings.job_min_backoff_ms),
        "ALPHINTRA_JOB_MAX_BACKOFF_MS": str(settings.job_max_backoff_ms),
        "ALPHINTRA_LOG_JSON": "false",
        "ALPHINTRA_OTEL_EXPORTER": "none",
        # Beside Redis an in-process chain is refused; these processes use no DeFi
        # (tests/test_chain_server.py runs them on `alphintra chain serve`).
        "ALPHINTRA_DEFI_EMBEDDED": "false",
        # Beside Redis in-process venues are refused too; these processes place no orders: an
        # address nothing listens on (tests/test_venue_process.py runs `alphintra venue serve`).
        "ALPHINTRA_VENUE_URL": NO_VENUE,
    }
    env.update({f"ALPHINTRA_{k.upper()}": v for k, v in extra.items()})
    return env


class Proc:
    """`python -m gateway …` with its output drained in a thread (a full pipe would stall it)."""

    def __init__(self, name: str, args: list[str], env: dict[str, str],
                 popen: subprocess.Popen[bytes] | None = None) -> None:
        self.name = name
        self.popen = popen or spawn(args, env)  # `popen`: another program, started by the caller
        self.lines: list[str] = []
        self._drain = threading.Thread(target=self._read, daemon=True)
        self._drain.start()

    def _read(self) -> None:
        assert self.popen.stdout is not None
        for raw in self.popen.stdout:
            self.lines.append(raw.decode(errors="replace").rstrip())

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def output(self) -> str:
        return f"--- {self.name} (pid {self.pid}, rc {self.popen.poll()}) ---\n" + \
            "\n".join(self.lines[-60:])

    def count(self, text: str) -> int:
        return sum(text in line for line in list(self.lines))

    def stop(self, timeout: float = 15) -> int | None:
        """SIGTERM, then SIGKILL if it has not exited in `timeout` seconds."""
        if self.alive():
            self.popen.terminate()
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(5)
        self._drain.join(5)
        return self.popen.returncode


def await_condition(predicate: Callable[[], Any], timeout: float, what: str,
                    procs: list[Proc]) -> Any:
    """wait_for, failing early if a process died, with the processes' output on failure."""
    def check() -> Any:
        for proc in procs:
            if not proc.alive():
                raise AssertionError(f"{proc.name} exited while waiting for {what}")
        return predicate()

    try:
        return wait_for(check, timeout=timeout)
    except AssertionError as exc:
        outputs = "\n".join(p.output() for p in procs)
        raise AssertionError(f"{what}: {exc}\n{outputs}") from None


def healthy(base_url: str) -> bool:
    try:
        return httpx.get(f"{base_url}/healthz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def drop_namespace(redis_url: str, namespace: str) -> None:
    client = redis.Redis.from_url(redis_url)
    try:
        keys = list(client.scan_iter(match=f"{namespace}:*", count=500))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


class EventLog:
    """Every event on one topic, received by a RedisBus running its own loop in a thread."""

    def __init__(self, redis_url: str, namespace: str, topic: str) -> None:
        self.events: list[Event] = []
        self.bus = RedisBus(redis_url, namespace)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        asyncio.run_coroutine_threadsafe(
            self.bus.listen(topic, self.events.append), self.loop).result(10)

    def statuses(self, status: str) -> list[Event]:
        return [e for e in list(self.events) if e.payload.get("status") == status]

    def close(self) -> None:
        try:
            asyncio.run_coroutine_threadsafe(self.bus.stop(), self.loop).result(10)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10)
            self.loop.close()


def test_event_published_by_one_process_reaches_subscriber_on_another(own_database):
    settings = own_database  # no other gateway's outbox dispatcher delivers this test's job
    namespace = fresh_namespace()
    env = gateway_env(settings, namespace, embedded_worker="off")
    port_a, port_b = free_port(), free_port()
    # Onboard first: the grants reach the gateways as policy they load at start.
    setup = build_runtime(settings.with_(embedded_worker="off"))
    try:
        tenant = onboard(setup)
    finally:
        setup.close()
    url_a, url_b = f"http://127.0.0.1:{port_a}", f"http://127.0.0.1:{port_b}"
    gql_b = GraphQLClient(url_b)
    procs: list[Proc] = []
    try:
        a = Proc("gateway A", ["serve", "--port", str(port_a)], env)
        procs.append(a)
        b = Proc("gateway B", ["serve", "--port", str(port_b)], env)
        procs.append(b)
        await_condition(lambda: healthy(url_a) and healthy(url_b), 30, "both gateways healthy",
                        procs)

        started = gql_b.data(RUN_DIAGNOSTICS, key=tenant.key)["runDiagnostics"]
        assert started["status"] == "QUEUED"
        job_id = started["id"]

        async def follow_on_a() -> dict[str, Any]:
            async with TransportWS(f"ws://127.0.0.1:{port_a}/graphql", tenant.key) as ws:
                assert ws.ack is not None and ws.ack["type"] == "connection_ack", ws.ack
                await ws.subscribe("1", SUBSCRIBE_JOB, {"id": job_id})
                first = await ws.next(10)
                assert first["type"] == "next", first
                snapshot = first["payload"]["data"]["jobUpdated"]
                assert snapshot["sequence"] is None
                assert snapshot["job"] == {"id": job_id, "status": "QUEUED"}

                canceled = await asyncio.to_thread(gql_b.data, CANCEL_JOB, {"id": job_id},
                                                   key=tenant.key)
                assert canceled["cancelJob"]["status"] == "CANCELED"

                update = await ws.next(10)
                assert update["type"] == "next", update
                done = await ws.next(10)
                assert done == {"id": "1", "type": "complete"}, done
                return update["payload"]["data"]["jobUpdated"]

        update = asyncio.run(asyncio.wait_for(follow_on_a(), 30))
        assert update["job"] == {"id": job_id, "status": "CANCELED"}
        assert isinstance(update["sequence"], int) and update["sequence"] > 0
    finally:
        gql_b.http.close()
        for proc in procs:
            proc.stop()
        drop_namespace(settings.redis_url, namespace)


@pytest.fixture
def own_database(settings, tmp_path):
    """`settings` on a database of this test's own: the outbox is one table per database, and
    the suite's gateway in this process (another Redis namespace) would otherwise deliver this
    test's job messages to its own embedded worker."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    from gateway.cli import migrate_database

    url = make_url(settings.database_url)
    if url.get_backend_name() != "postgresql":
        own = settings.with_(database_url=f"sqlite:///{tmp_path / 'multiprocess.db'}")
        migrate_database(own)
        yield own
        return
    name = f"mp_{uuid.uuid4().hex[:12]}"
    admin = create_engine(url.set(database="postgres"), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        own = settings.with_(database_url=url.set(database=name).render_as_string(hide_password=False))
        migrate_database(own)
        yield own
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        admin.dispose()


def test_job_of_killed_worker_is_redelivered_and_finishes_once(own_database):
    settings = own_database
    namespace = fresh_namespace()
    fast = {"redis_heartbeat_timeout_ms": 2000, "redis_maintenance_chance": 1_000_000,
            "job_lease_ms": 3000, "job_heartbeat_ms": 500, "job_reaper_interval_ms": 500}
    rt = build_runtime(settings.with_(redis_namespace=namespace, embedded_worker="off", **fast))
    env = gateway_env(settings, namespace, embedded_worker="off",
                      **{k: str(v) for k, v in fast.items()})
    procs: list[Proc] = []
    events: EventLog | None = None
    try:
        tenant = onboard(rt)
        principal = Principal(tenant_id=tenant.id, tenant_slug=tenant.slug,
                              user_id=tenant.admin_id, via="api_key", roles=("admin",))
        job = rt.jobs.start(principal, "diagnostics", {"steps": 20, "step_seconds": 0.25})
        assert job.status == "QUEUED"
        events = EventLog(settings.redis_url, namespace, job_topic(job.id))

        def current() -> Any:
            return rt.jobs.get(tenant.id, job.id)

        worker1 = Proc("worker 1", ["worker", "--threads", "1"], env)
        procs.append(worker1)
        running = await_condition(
            lambda: (j := current()).status == "RUNNING" and j.progress > 0 and j, 20,
            "job running on worker 1", procs)
        assert running.attempts == 1
        os.kill(worker1.pid, signal.SIGKILL)
        worker1.popen.wait(10)
        procs.remove(worker1)
        assert current().status == "RUNNING"  # nobody finishes it for the dead worker

        worker2 = Proc("worker 2", ["worker", "--threads", "1"], env)
        procs.append(worker2)
        done = await_condition(lambda: (j := current()).status == "SUCCEEDED" and j, 45,
                               "job finished by worker 2", procs)
        assert done.attempts == 2
        assert done.result is not None
        assert done.result["attempt"] == 2
        assert done.result["worker"]["pid"] == worker2.pid
        await_condition(lambda: events.statuses("SUCCEEDED"), 5, "SUCCEEDED event", procs)

        # The same message again: the job is finished, so the worker drops it untouched.
        # (Dramatiq may already have redelivered the dead worker's own message: dropped too.)
        dropped = worker2.count(DROPPED)
        message = rt.jobs.actor.message(job.id, tenant.id).copy(queue_name=job.region)
        rt.broker.enqueue(message)
        await_condition(lambda: worker2.count(DROPPED) == dropped + 1, 10,
                        "duplicate message dropped", procs)
        time.sleep(0.5)  # room for any (wrong) event the duplicate might cause
        again = current()
        assert (again.status, again.finished_at, again.attempts, again.result) == \
            (done.status, done.finished_at, done.attempts, done.result)
        assert len(events.statuses("SUCCEEDED")) == 1

        # We heard every event on the topic after the first (QUEUED, published before we
        # listened), so "one SUCCEEDED event heard" is "one published".
        sequences = [e.sequence for e in events.events]
        assert sequences == list(range(2, sequences[-1] + 1)), sequences
        client = redis.Redis.from_url(settings.redis_url)
        try:
            assert int(client.hget(f"{namespace}:seq2:{job_topic(job.id)}", "seq")) == sequences[-1]
        finally:
            client.close()

        assert worker2.stop() == 0, worker2.output()
    finally:
        for proc in procs:
            proc.stop()
        if events is not None:
            events.close()
        rt.close()
        drop_namespace(settings.redis_url, namespace)
