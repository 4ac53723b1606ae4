"""Outage drills on real services: PostgreSQL (a scratch database of the drill's own), a Redis
server the drill owns (so it can kill it and start it again empty), and `alphintra serve` and
`alphintra worker` processes, with a short job lease so a drill takes seconds.

- A worker SIGKILLed mid-job: its job is re-queued within the lease and finished once, by
  another worker.
- A worker paused (SIGSTOP) mid-job: the job is taken over; when the paused worker wakes up,
  its late writes are refused (fencing by the run token), so the job still finishes once.
- Redis killed and restarted empty under load (job submissions and `createUser`): every
  request answers its result (nothing committed is answered as a failure), and every job, the
  ones queued in Redis before it lost its data included, finishes; a `jobUpdated` socket opened
  before the outage resumes and its events carry a new epoch (the numbering restarted).

PostgreSQL: ALPHINTRA_DRILL_POSTGRES (an administrative URL; default the local server as
postgres), where the drill creates and drops its own database.
"""

from __future__ import annotations

import asyncio
import base64
import os
import shutil
import signal
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import redis
from sqlalchemy import create_engine, text
from sqlalchemy.exc import OperationalError
from sqlmodel import col, select

from gateway.auth.principal import Principal
from gateway.cli import migrate_database
from gateway.jobs.models import Job
from gateway.jobs.runner import job_topic
from gateway.runtime import Runtime, build_runtime
from gateway.settings import Settings
from gateway.tenancy.models import User
from tests.support import (
    JWT_SECRET,
    GraphQLClient,
    TenantHandle,
    TransportWS,
    free_port,
    onboard,
    wait_for,
)
from tests.test_multiprocess import EventLog, Proc, await_condition, healthy

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

ADMIN_URL = os.environ.get("ALPHINTRA_DRILL_POSTGRES",
                           "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
LEASE_MS = 3_000  # the drills' job lease (the default is 30 s)
RUN = ("mutation($i: RunDiagnosticsInput) { runDiagnostics(input: $i) { id status } }")
CREATE_USER = "mutation($i: CreateUserInput!) { createUser(input: $i) { id email } }"
SUPERSEDED = "job was claimed again elsewhere"


class OwnRedis:
    """A redis-server on a spare port, without persistence: killed, it comes back empty."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--daemonize", "no"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = redis.Redis.from_url(self.url)
        deadline = time.monotonic() + 10
        try:
            while True:
                try:
                    client.ping()
                    return
                except redis.ConnectionError:
                    if time.monotonic() > deadline or self.proc.poll() is not None:
                        raise
                    time.sleep(0.05)
        finally:
            client.close()

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()  # SIGKILL: no save, no goodbye to clients
            self.proc.wait(10)

    def set(self, key: str, value: str) -> None:
        with redis.Redis.from_url(self.url) as client:
            client.set(key, value)

    def get(self, key: str) -> bytes | None:
        with redis.Redis.from_url(self.url) as client:
            return client.get(key)  # type: ignore[return-value]


@pytest.fixture(scope="module")
def postgres_url() -> Iterator[str]:
    name = f"alphintra_drill_{uuid.uuid4().hex[:10]}"
    admin = create_engine(ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    except OperationalError as exc:
        admin.dispose()
        if os.environ.get("CI"):  # CI never skips a drill
            raise
        pytest.skip(f"the drills need a PostgreSQL server ({ADMIN_URL}): {exc.orig}")
    url = admin.url.set(database=name).render_as_string(hide_password=False)
    migrate_database(Settings(database_url=url))
    yield url
    with admin.connect() as conn:
        conn.execute(text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                          "WHERE datname = :name AND pid <> pg_backend_pid()"), {"name": name})
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
    admin.dispose()


@pytest.fixture(scope="module")
def own_redis() -> Iterator[OwnRedis]:
    if shutil.which("redis-server") is None:
        if os.environ.get("CI"):
            pytest.fail("the drills need redis-server (Debian's redis-server package)")
        pytest.skip("the drills need redis-server (Debian's redis-server package)")
    server = OwnRedis()
    server.start()
    yield server
    server.kill()


@dataclass
class Drill:
    env: dict[str, str]
    settings: Settings
    rt: Runtime
    redis: OwnRedis
    procs: list[Proc] = field(default_factory=list)

    def start(self, name: str, *args: str) -> Proc:
        proc = Proc(name, list(args), self.env)
        self.procs.append(proc)
        return proc

    def job(self, tenant: TenantHandle, job_id: str) -> Job:
        return self.rt.jobs.get(tenant.id, job_id)


@pytest.fixture
def drill(postgres_url: str, own_redis: OwnRedis) -> Iterator[Drill]:
    env = {
        "ALPHINTRA_DATABASE_URL": postgres_url,
        "ALPHINTRA_REDIS_URL": own_redis.url,
        "ALPHINTRA_REDIS_NAMESPACE": f"drill-{uuid.uuid4().hex[:8]}",
        "ALPHINTRA_JWT_SECRET": JWT_SECRET,
        "ALPHINTRA_SECRET_KEY": base64.b64encode(os.urandom(32)).decode(),
        "ALPHINTRA_EMBEDDED_WORKER": "off",
        "ALPHINTRA_DEFI_EMBEDDED": "false",
        "ALPHINTRA_VENUE_URL": "tcp://127.0.0.1:1",  # no orders here: a venue nothing listens on
        "ALPHINTRA_WARM_ON_START": "false",
        "ALPHINTRA_LOG_JSON": "false",
        "ALPHINTRA_OTEL_EXPORTER": "none",
        "ALPHINTRA_JOB_LEASE_MS": str(LEASE_MS),
        "ALPHINTRA_JOB_HEARTBEAT_MS": "500",
        "ALPHINTRA_JOB_REAPER_INTERVAL_MS": "500",
        "ALPHINTRA_JOB_REDELIVER_AFTER_MS": "1000",
        "ALPHINTRA_OUTBOX_POLL_MS": "200",
        "ALPHINTRA_OUTBOX_RETRY_MAX_MS": "1000",
    }
    settings = Settings.from_env(env)
    rt = build_runtime(settings)  # the test's own view of the rows; it delivers nothing itself
    state = Drill(env, settings, rt, own_redis)
    try:
        yield state
    finally:
        for proc in state.procs:
            if proc.alive():
                os.kill(proc.pid, signal.SIGCONT)  # a paused one must be able to stop
            proc.stop()
        rt.close()


def principal(tenant: TenantHandle) -> Principal:
    return Principal(tenant_id=tenant.id, tenant_slug=tenant.slug, user_id=tenant.admin_id,
                     via="api_key", roles=("admin",))


def take_over(drill: Drill, paused: bool) -> None:
    """A job running on worker A; A is killed (or paused). The test process plays the gateway
    (it delivers the outbox and runs the reaper): the job must be re-queued within the lease,
    then finished once by worker B."""
    tenant = onboard(drill.rt)
    drill.rt.start_delivery()
    a = drill.start("worker A", "worker", "--threads", "1")
    job = drill.rt.jobs.start(principal(tenant), "diagnostics", {"steps": 40, "step_seconds": 0.25})
    events = EventLog(drill.redis.url, drill.settings.redis_namespace, job_topic(job.id))
    try:
        running = await_condition(
            lambda: (j := drill.job(tenant, job.id)).status == "RUNNING" and j.progress > 0 and j,
            60, "the job running on worker A", drill.procs)
        assert running.attempts == 1

        os.kill(a.pid, signal.SIGSTOP if paused else signal.SIGKILL)
        stopped = time.monotonic()
        if not paused:
            a.popen.wait(10)
            drill.procs.remove(a)
        requeued = wait_for(lambda: (j := drill.job(tenant, job.id)).status == "QUEUED" and j,
                            timeout=LEASE_MS / 1000 + 10, interval=0.02)
        requeued_after = time.monotonic() - stopped
        # Within the lease (the reaper's interval is inside it), plus our polling.
        assert requeued_after <= LEASE_MS / 1000 + 0.5, requeued_after
        assert requeued.attempts == 1 and requeued.message.startswith("worker lost")

        b = drill.start("worker B", "worker", "--threads", "1")
        watched = [b]
        done = await_condition(lambda: (j := drill.job(tenant, job.id)).status == "SUCCEEDED" and j,
                               60, "the job finished by worker B", watched)
        assert done.attempts == 2 and done.result is not None
        assert done.result["attempt"] == 2 and done.result["worker"]["pid"] == b.pid

        if paused:  # the zombie wakes: its lease is gone and its next write is refused
            os.kill(a.pid, signal.SIGCONT)
            await_condition(lambda: a.count(SUPERSEDED), 15, "worker A refused", drill.procs)
        else:
            time.sleep(1.0)  # room for a wrong second finish
        again = drill.job(tenant, job.id)
        assert (again.status, again.finished_at, again.attempts, again.result) == \
            (done.status, done.finished_at, done.attempts, done.result)
        await_condition(lambda: events.statuses("SUCCEEDED"), 5, "the SUCCEEDED event", watched)
        time.sleep(0.5)
        assert len(events.statuses("SUCCEEDED")) == 1  # finished exactly once
        assert b.stop() == 0, b.output()
    finally:
        events.close()
        drill.rt.stop_delivery()


def test_a_sigkilled_workers_job_is_requeued_within_the_lease_and_done_once(drill):
    take_over(drill, paused=False)


def test_a_paused_workers_late_writes_are_refused(drill):
    take_over(drill, paused=True)


@dataclass
class Answer:
    op: str  # "job" | "user"
    key: str  # the job's idempotency key, or the user's email
    sent: float
    ok: bool
    codes: list[str]


def test_redis_killed_and_restarted_empty_under_load_loses_nothing(drill):
    tenant = onboard(drill.rt)  # before the gateway starts: it loads the policy at start
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    gateway = drill.start("gateway", "serve", "--port", str(port))
    apac = drill.start("worker apac", "worker", "--region", "apac", "--threads", "2")
    await_condition(lambda: healthy(url) and apac.count("worker consuming"), 60,
                    "gateway and worker up", drill.procs)
    gql = GraphQLClient(url)
    try:
        # Five jobs for a region no worker consumes yet: delivered, they wait in Redis.
        queued_before = [gql.data(RUN, {"i": {"steps": 2, "stepSeconds": 0, "region": "americas"}},
                                  key=tenant.key)["runDiagnostics"]["id"] for _ in range(5)]
        await_condition(lambda: drill.rt.outbox.pending("job") == 0, 15,
                        "the five messages delivered", drill.procs)
        queue_key = f"{drill.settings.redis_namespace}:jobs:americas"
        client = redis.Redis.from_url(drill.redis.url)
        assert client.llen(queue_key) == 5  # in Redis, and only there
        watched_job = queued_before[0]
        epoch_before = client.hget(f"{drill.settings.redis_namespace}:seq2:{job_topic(watched_job)}",
                                   "epoch").decode()
        client.close()
        # A subscriber on a socket opened before the outage, kept through it.
        watcher = JobWatcher(f"ws://127.0.0.1:{port}/graphql", tenant.key, watched_job)
        watcher.start()
        await_condition(lambda: watcher.updates, 15, "the subscription's snapshot", drill.procs)

        answers: list[Answer] = []
        stop = threading.Event()

        def load(n: int) -> None:
            http = GraphQLClient(url)
            try:
                i = 0
                while not stop.is_set():
                    i += 1
                    sent = time.monotonic()
                    if i % 2:
                        key = f"drill-{n}-{i}"
                        body = http(RUN, {"i": {"steps": 2, "stepSeconds": 0.05, "region": "apac",
                                                "idempotencyKey": key}}, key=tenant.key)
                        answers.append(Answer("job", key, sent, "errors" not in body,
                                              _codes(body)))
                    else:
                        email = f"drill-{n}-{i}@{tenant.slug}.test"
                        body = http(CREATE_USER, {"i": {"email": email, "roles": ["trader"]}},
                                    key=tenant.key)
                        answers.append(Answer("user", email, sent, "errors" not in body,
                                              _codes(body)))
                    time.sleep(0.02)
            finally:
                http.http.close()

        threads = [threading.Thread(target=load, args=(n,), daemon=True) for n in range(3)]
        for thread in threads:
            thread.start()
        try:
            time.sleep(1.5)
            drill.redis.set("drill:sentinel", "before the outage")
            drill.redis.kill()
            outage = (time.monotonic(), 0.0)
            time.sleep(3.0)
            drill.redis.start()  # empty: every queued message, mark and sequence is gone
            outage = (outage[0], time.monotonic())
            assert drill.redis.get("drill:sentinel") is None
            time.sleep(2.0)
        finally:
            stop.set()
            for thread in threads:
                thread.join(30)

        during = [a for a in answers if outage[0] <= a.sent <= outage[1]]
        assert {a.op for a in during} == {"job", "user"}, "the load did not span the outage"

        # Nothing committed is answered as a failure (here, nothing failed at all), and every
        # answer that says so was committed.
        failures = [a for a in answers if not a.ok]
        assert failures == [], failures[:5]
        with drill.rt.db.tenant_session(tenant.id) as session:
            keys = set(session.exec(select(Job.idempotency_key).where(
                col(Job.idempotency_key).is_not(None))).all())
            emails = set(session.exec(select(User.email)).all())
        assert {a.key for a in answers if a.op == "job"} <= keys
        assert {a.key for a in answers if a.op == "user"} <= emails

        # 0 jobs lost: the five that were only in Redis, and all the load's, finish.
        drill.start("worker americas", "worker", "--region", "americas", "--threads", "2")

        def unfinished() -> list[str]:
            with drill.rt.db.tenant_session(tenant.id) as session:
                return list(session.exec(select(Job.id).where(
                    col(Job.status).in_(["QUEUED", "RUNNING"]))).all())

        await_condition(lambda: not unfinished(), 90, "every job finished", drill.procs)
        print(f"drill: {len(answers)} requests, {len(during)} during the {outage[1] - outage[0]:.1f} s "
              f"outage ({sum(a.op == 'job' for a in during)} jobs, "
              f"{sum(a.op == 'user' for a in during)} users); every job finished "
              f"{time.monotonic() - outage[1]:.1f} s after Redis came back")
        with drill.rt.db.tenant_session(tenant.id) as session:
            statuses = session.exec(select(Job.status)).all()
        assert set(statuses) == {"SUCCEEDED"}
        assert len(statuses) == 5 + sum(a.op == "job" for a in answers)
        assert all(drill.job(tenant, job_id).status == "SUCCEEDED" for job_id in queued_before)
        # The subscription opened before the outage resumed on the same socket and saw its job
        # finish; its events carry the new epoch, so a client can tell the numbering restarted.
        await_condition(lambda: watcher.done.is_set(), 30, "the watched job's last update",
                        drill.procs)
        snapshot, *live = watcher.updates
        assert snapshot["sequence"] is None and snapshot["job"]["status"] == "QUEUED"
        assert live and live[-1]["job"]["status"] == "SUCCEEDED", watcher.updates
        assert {u["epoch"] for u in live} != {epoch_before} and None not in {u["epoch"] for u in live}
        # Events and messages committed during the outage were all delivered in the end.
        await_condition(lambda: drill.rt.outbox.pending() == 0, 30, "the outbox drained",
                        drill.procs)
        assert gateway.alive()
    finally:
        gql.http.close()


class JobWatcher(threading.Thread):
    """`jobUpdated` for one job over graphql-transport-ws, on one socket for its whole life."""

    QUERY = ("subscription($id: ID!) { jobUpdated(id: $id) { sequence epoch job { status } } }")

    def __init__(self, url: str, key: str, job_id: str) -> None:
        super().__init__(daemon=True)
        self.url, self.key, self.job_id = url, key, job_id
        self.updates: list[dict[str, Any]] = []
        self.done = threading.Event()

    def run(self) -> None:
        asyncio.run(self._watch())

    async def _watch(self) -> None:
        async with TransportWS(self.url, self.key) as ws:
            await ws.subscribe("1", self.QUERY, {"id": self.job_id})
            while True:
                message = await ws.next(timeout=120, op_id="1")
                if message["type"] != "next":
                    break
                self.updates.append(message["payload"]["data"]["jobUpdated"])
        self.done.set()


def _codes(body: dict[str, Any]) -> list[str]:
    return [e.get("extensions", {}).get("code") for e in body.get("errors", [])]
