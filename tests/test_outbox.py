"""The outbox, leases and the reaper on a gateway of their own (a fresh SQLite database, no
dispatcher thread unless a test starts one): writes commit with their work, a bus or broker that
is down never turns a committed write into an error answer, lost messages are sent again, a
dead worker's job is re-queued and a zombie's late writes are refused. The same protocol under
real outages (PostgreSQL, a Redis killed, workers killed) is drilled in test_drills_outage.py."""

from __future__ import annotations

import queue
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import dramatiq
import pytest
from sqlmodel import col, select, update

from gateway.app import create_app
from gateway.auth.principal import Principal
from gateway.cli import migrate_database
from gateway.db import utcnow
from gateway.events import Event, publish_each
from gateway.jobs.delivery import RUN_JOB, MemoryLedger
from gateway.jobs.kinds import JobKind
from gateway.jobs.models import Job
from gateway.jobs.runner import JobSuperseded, job_topic
from gateway.jobs.upkeep import WORKER_LOST, LeaseKeeper
from gateway.outbox import EVENT, OutboxRow
from gateway.runtime import Runtime, build_runtime
from gateway.settings import Settings
from gateway.tenancy.models import User
from tests.support import GraphQLClient, LiveServer, TenantHandle, onboard, unique, wait_for, with_clock

RUN = "mutation($i: RunDiagnosticsInput) { runDiagnostics(input: $i) { id status } }"
CREATE_USER = "mutation($i: CreateUserInput!) { createUser(input: $i) { id email } }"


class SwitchableBus:
    """The real bus, recording what it publishes, that can be switched off like a dead Redis."""

    def __init__(self, bus: Any) -> None:
        self.bus = bus
        self.down = False
        self.refuse: Callable[[dict[str, Any]], bool] = lambda payload: False  # one event fails
        self.published: list[tuple[str, dict[str, Any]]] = []
        self.topics: list[list[str]] = []  # the topics of each publish_many

    def publish(self, topic: str, payload: dict[str, Any]) -> Event:
        if self.down or self.refuse(payload):
            raise ConnectionError("bus is down")
        event = self.bus.publish(topic, payload)
        self.published.append((topic, payload))
        return event

    def publish_many(self, items: list[tuple[str, dict[str, Any]]]) -> list[Event]:
        self.topics.append([topic for topic, _ in items])
        return publish_each(self, items)

    def batches(self, topic: str) -> list[int]:
        """The size of each publish_many that carried `topic` (other tests' events aside)."""
        return [len(topics) for topics in self.topics if topic in topics]

    def on(self, topic: str) -> list[dict[str, Any]]:
        return [payload for t, payload in self.published if t == topic]

    def __getattr__(self, name: str) -> Any:
        return getattr(self.bus, name)


@pytest.fixture(scope="module")
def rt(settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Runtime]:
    own = settings.with_(database_url=f"sqlite:///{tmp_path_factory.mktemp('outbox') / 'o.db'}",
                         redis_url=None, embedded_worker="off")
    migrate_database(own)
    runtime = build_runtime(own)
    yield runtime
    runtime.close()


@pytest.fixture
def bus(rt: Runtime) -> Iterator[SwitchableBus]:
    real = rt.outbox.bus
    switchable = SwitchableBus(real)
    rt.outbox.bus = switchable  # type: ignore[assignment]
    rt.outbox._bus_down_until = 0.0  # no cooldown left over from another test
    rt.outbox._backlog = False
    yield switchable
    rt.outbox.bus = real


@pytest.fixture
def broker_down(rt: Runtime, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    def refuse(*args: Any, **kwargs: Any) -> None:
        raise ConnectionError("broker is down")

    monkeypatch.setattr(rt.broker, "enqueue", refuse)
    yield


@pytest.fixture
def tenant(rt: Runtime) -> TenantHandle:
    return onboard(rt)


@pytest.fixture(autouse=True)
def clean_slate(rt: Runtime) -> Iterator[None]:
    """Each test counts what the reaper does: no unfinished job or message is left over."""
    yield
    drain(rt)
    for name in rt.settings.regions:
        rt.broker.flush(name)
    with rt.db.system_transaction() as session:
        session.exec(update(Job).where(col(Job.status).in_(["QUEUED", "RUNNING"]))
                     .values(status="CANCELED", run_token=None, lease_expires_at=None))


def drain(rt: Runtime) -> None:
    """Deliver everything pending, as the dispatcher will (ignoring the writers' grace)."""
    rt.outbox.deliver_once(now=utcnow() + timedelta(minutes=10))


def principal(tenant: TenantHandle) -> Principal:
    return Principal(tenant_id=tenant.id, tenant_slug=tenant.slug, user_id=tenant.admin_id,
                     via="api_key", roles=("admin",))


def pending(rt: Runtime, kind: str, key: str) -> list[OutboxRow]:
    with rt.db.system_session() as session:
        return list(session.exec(select(OutboxRow).where(OutboxRow.kind == kind,
                                                         OutboxRow.key == key)).all())


def queued_messages(rt: Runtime, region: str) -> list[dramatiq.Message[Any]]:
    found = []
    q = rt.broker.queues[region]
    while True:
        try:
            found.append(dramatiq.Message.decode(q.get_nowait()))
        except queue.Empty:
            break
    for raw in found:  # put them back: looking is not consuming
        q.put(raw.encode())
    return found


def job_row(rt: Runtime, tenant: TenantHandle, job_id: str) -> Job:
    return rt.jobs.get(tenant.id, job_id)


def later(seconds: float) -> Any:
    return utcnow() + timedelta(seconds=seconds)


# Events.
def test_an_event_is_published_after_commit_and_leaves_no_row(rt, bus, tenant):
    topic = f"outbox-test.{unique()}"
    with rt.db.tenant_transaction(tenant.id) as session:
        rt.outbox.event(session, topic, {"n": 1})
        assert bus.on(topic) == []  # not before the commit
    assert bus.on(topic) == [{"n": 1}]
    assert pending(rt, EVENT, topic) == []  # no dispatcher here: deleted at once

    with pytest.raises(RuntimeError), rt.db.tenant_transaction(tenant.id) as session:
        rt.outbox.event(session, topic, {"n": 2})
        raise RuntimeError("the write fails")
    assert bus.on(topic) == [{"n": 1}]  # rolled back: never published
    assert pending(rt, EVENT, topic) == []


def test_an_event_written_before_a_savepoint_waits_for_the_outermost_commit(rt, bus, tenant):
    topic = f"outbox-test.{unique()}"
    with pytest.raises(RuntimeError), rt.db.tenant_transaction(tenant.id) as session:
        rt.outbox.event(session, topic, {"n": 1})
        with session.begin_nested():  # released: SQLAlchemy fires after_commit for it
            rt.outbox.event(session, topic, {"n": 2})
        assert bus.on(topic) == []
        raise RuntimeError("the write fails after the savepoint")
    assert bus.on(topic) == []  # rolled back: neither was published
    assert pending(rt, EVENT, topic) == []

    with rt.db.tenant_transaction(tenant.id) as session:
        rt.outbox.event(session, topic, {"n": 3})
        with session.begin_nested():
            rt.outbox.event(session, topic, {"n": 4})
        with pytest.raises(RuntimeError), session.begin_nested():
            rt.outbox.event(session, topic, {"n": 5})
            raise RuntimeError("this savepoint rolls back")
        assert bus.on(topic) == []
    assert bus.on(topic) == [{"n": 3}, {"n": 4}]  # not 5: its savepoint rolled back
    assert pending(rt, EVENT, topic) == []


def test_events_the_bus_refused_are_kept_and_delivered_in_order(rt, bus, tenant):
    topic = f"outbox-test.{unique()}"
    bus.down = True
    for n in range(1, 4):
        with rt.db.tenant_transaction(tenant.id) as session:  # no error reaches the writer
            rt.outbox.event(session, topic, {"n": n})
    assert bus.on(topic) == []
    assert len(pending(rt, EVENT, topic)) == 3

    assert rt.outbox.deliver_once(now=later(60)) == (0, 1)  # still down: kept, in order
    assert len(pending(rt, EVENT, topic)) == 3
    bus.down = False
    delivered, failed = rt.outbox.deliver_once(now=later(60))
    assert (delivered, failed) == (3, 0)
    assert bus.on(topic) == [{"n": 1}, {"n": 2}, {"n": 3}]
    assert pending(rt, EVENT, topic) == []


def test_publish_after_commit_never_raises_and_keeps_the_event(rt, bus):
    topic = f"outbox-test.{unique()}"
    bus.down = True
    rt.outbox.publish(topic, {"at": "now"})  # a committed write's event: no exception
    assert len(pending(rt, EVENT, topic)) == 1
    bus.down = False
    drain(rt)
    assert bus.on(topic) == [{"at": "now"}]
    assert pending(rt, EVENT, topic) == []


def test_a_commits_events_go_out_together_and_those_after_a_failure_wait_in_order(rt, bus, tenant):
    topic = f"outbox-test.{unique()}"
    bus.refuse = lambda payload: payload["n"] == 2
    with rt.db.tenant_transaction(tenant.id) as session:
        for n in range(1, 5):
            rt.outbox.event(session, topic, {"n": n})
    assert bus.batches(topic) == [4]  # one publish_many for the commit's events
    assert bus.on(topic) == [{"n": 1}]  # the second failed: it and those after it wait
    assert [r.payload["payload"]["n"] for r in pending(rt, EVENT, topic)] == [2, 3, 4]
    with rt.db.tenant_transaction(tenant.id) as session:  # the bus is down: queued behind them
        rt.outbox.event(session, topic, {"n": 5})
    assert bus.batches(topic) == [4]

    bus.refuse = lambda payload: payload["n"] == 3
    assert rt.outbox.deliver_once() == (1, 1)  # due at once: no grace for failed rows
    assert bus.batches(topic) == [4, 4]  # the dispatcher's due events together, up to the failure
    assert {r.payload["payload"]["n"]: r.attempts for r in pending(rt, EVENT, topic)} == \
        {3: 1, 4: 0, 5: 0}  # 4 and 5 were not tried: they never overtake 3
    bus.refuse = lambda payload: False
    assert rt.outbox.deliver_once() == (3, 0)
    assert [p["n"] for p in bus.on(topic)] == [1, 2, 3, 4, 5]
    assert pending(rt, EVENT, topic) == []


def test_committed_events_published_together_keep_those_the_bus_did_not_take(rt, bus):
    topic = f"outbox-test.{unique()}"
    bus.refuse = lambda payload: payload["n"] == 2
    published = rt.outbox.committed_bus().publish_many([(topic, {"n": n}) for n in range(1, 4)])
    assert [e.payload if e is not None else None for e in published] == [{"n": 1}, None, None]
    assert bus.batches(topic) == [3]
    assert [r.payload["payload"]["n"] for r in pending(rt, EVENT, topic)] == [2, 3]
    bus.refuse = lambda payload: False
    drain(rt)
    assert [p["n"] for p in bus.on(topic)] == [1, 2, 3]


@pytest.mark.redis
def test_on_redis_a_commits_events_take_one_round_trip_and_a_failed_one_is_not_overtaken(
        rt, tenant):
    """The real bus: the events of a commit, and the dispatcher's due events, are one command
    each; an event that fails on the server leaves it and those after it to the dispatcher,
    which publishes them in order."""
    import asyncio
    import os

    from gateway.events import RedisBus
    from tests.test_bus import round_trips

    namespace = f"alphintra-outbox-{unique()}"
    redis_bus = RedisBus(os.environ["ALPHINTRA_REDIS_URL"], namespace)
    good, bad = f"outbox-test.{unique()}", f"outbox-test.{unique()}"
    redis_bus._sync.set(f"{namespace}:seq2:{bad}", "not a counter")  # its publish fails
    items = [(good, {"n": 1}), (bad, {"n": 2}), (good, {"n": 3}), (bad, {"n": 4})]
    real, rt.outbox.bus = rt.outbox.bus, redis_bus
    rt.outbox._bus_down_until, rt.outbox._backlog = 0.0, False  # no cooldown left over

    def commit() -> None:
        with rt.db.tenant_transaction(tenant.id) as session:
            for topic, payload in items:
                rt.outbox.event(session, topic, payload)

    async def scenario() -> tuple[list[str], list[int], list[int], list[str], list[Event]]:
        heard: list[Event] = []
        for topic in (good, bad):
            await redis_bus.listen(topic, heard.append)
        await asyncio.to_thread(wait_for, lambda: redis_bus.subscribers(bad), 5)
        redis_bus.publish(good, {"n": 0})  # the script is loaded
        sent = round_trips(redis_bus._sync)
        await asyncio.to_thread(commit)
        after_commit = list(sent)
        await asyncio.to_thread(wait_for, lambda: len(heard) == 2, 5)
        await asyncio.sleep(0.1)
        left = [r.payload["payload"]["n"] for r in pending(rt, EVENT, good) + pending(rt, EVENT, bad)]
        redis_bus._sync.delete(f"{namespace}:seq2:{bad}")
        sent.clear()
        delivered = await asyncio.to_thread(rt.outbox.deliver_once)  # handed off: due at once
        await asyncio.to_thread(wait_for, lambda: len(heard) == 5, 5)
        await redis_bus.stop()
        return after_commit, left, list(delivered), sent, heard

    try:
        after_commit, left, delivered, dispatched, heard = asyncio.run(scenario())
    finally:
        rt.outbox.bus = real
        rt.outbox._bus_down_until, rt.outbox._backlog = 0.0, False
    assert after_commit == ["EVALSHA"]  # the commit's four events: one command
    assert sorted(left) == [2, 3, 4]
    # (another test's row may fall due meanwhile: at least these three, none failed)
    assert delivered[0] >= 3 and delivered[1] == 0 and dispatched == ["EVALSHA"]
    assert pending(rt, EVENT, good) == pending(rt, EVENT, bad) == []
    assert [e.payload["n"] for e in heard] == [0, 1, 2, 3, 4]
    assert [(e.topic == good, e.sequence) for e in heard] == \
        [(True, 1), (True, 2), (False, 1), (True, 3), (False, 2)]


# Jobs: the request path.
def test_jobs_and_users_committed_while_broker_and_bus_are_down_answer_success(
        rt, bus, broker_down, tenant):
    bus.down = True
    with LiveServer(create_app(runtime=rt)) as live:
        gql = GraphQLClient(live.url)
        try:
            body = gql(RUN, {"i": {"steps": 2, "stepSeconds": 0}}, key=tenant.key)
            email = f"{unique('u')}@{tenant.slug}.test"
            created = gql(CREATE_USER, {"i": {"email": email, "roles": ["trader"]}}, key=tenant.key)
        finally:
            gql.http.close()
    assert "errors" not in body, body
    assert "errors" not in created, created
    job = body["data"]["runDiagnostics"]
    assert job["status"] == "QUEUED"
    assert job_row(rt, tenant, job["id"]).status == "QUEUED"
    with rt.db.tenant_session(tenant.id) as session:
        assert session.exec(select(User).where(User.email == email)).one().id == \
            created["data"]["createUser"]["id"]
    assert len(pending(rt, "job", job["id"])) == 1  # its message waits in the outbox
    assert pending(rt, EVENT, job_topic(job["id"]))  # and so does its QUEUED event


def test_orders_committed_while_the_bus_is_down_answer_success_and_their_events_follow(rt, bus, tenant):
    """Orders, compliance alerts: every service that publishes after its commit goes through the
    outbox, so a bus that is down never turns a committed order into an error answer."""
    from gateway.markets.clock import ManualClock
    from gateway.trading.common import alerts_topic, orders_topic

    clocked = with_clock(rt, ManualClock(datetime(2025, 3, 12, 14, 30, tzinfo=UTC)))
    bus.down = True
    with LiveServer(create_app(runtime=clocked)) as live:
        gql = GraphQLClient(live.url)
        try:
            gql.data("""mutation($i: TradingAccountInput!) { upsertTradingAccount(input: $i) { code } }""",
                     {"i": {"code": "ACC1", "currency": "USD", "domicile": "US",
                            "creditLimit": "1000000", "equity": "1000000"}}, key=tenant.key)
            submit = """mutation($i: SubmitOrderInput!) { submitOrder(input: $i) { id status } }"""
            order = {"clientOrderId": unique("o"), "account": "ACC1", "symbol": "AAPL",
                     "mic": "XNAS", "side": "BUY", "ordType": "MARKET", "timeInForce": "IOC",
                     "quantity": "10"}
            filled = gql(submit, {"i": order}, key=tenant.key)
            denied = gql(submit, {"i": {**order, "clientOrderId": unique("o"),
                                        "quantity": "100000000"}}, key=tenant.key)
        finally:
            gql.http.close()
    assert "errors" not in filled and "errors" not in denied, (filled, denied)
    assert filled["data"]["submitOrder"]["status"] == "FILLED"
    assert denied["data"]["submitOrder"]["status"] == "DENIED"
    kept = pending(rt, EVENT, orders_topic(tenant.id))
    assert kept and pending(rt, EVENT, alerts_topic(tenant.id))  # nothing lost, nothing sent yet
    assert bus.on(orders_topic(tenant.id)) == []
    bus.down = False
    drain(rt)
    delivered = bus.on(orders_topic(tenant.id))
    positions = [t["position"] for p in delivered for t in p["transitions"]]
    assert positions == sorted(positions) and len(delivered) == len(kept)  # in commit order
    assert pending(rt, EVENT, orders_topic(tenant.id)) == []


def test_a_job_message_is_delivered_once_the_broker_is_back(rt, bus, tenant, monkeypatch):
    real_enqueue = rt.broker.enqueue
    monkeypatch.setattr(rt.broker, "enqueue", lambda *a, **k: (_ for _ in ()).throw(
        ConnectionError("broker is down")))
    job = rt.jobs.start(principal(tenant), "diagnostics", {"steps": 2, "step_seconds": 0})
    assert rt.outbox.deliver_once() == (0, 1)
    assert len(pending(rt, "job", job.id)) == 1
    assert pending(rt, "job", job.id)[0].attempts == 1

    monkeypatch.setattr(rt.broker, "enqueue", real_enqueue)
    drain(rt)
    assert pending(rt, "job", job.id) == []
    messages = [m for m in queued_messages(rt, job.region) if m.args[0] == job.id]
    assert len(messages) == 1 and messages[0].actor_name == RUN_JOB
    assert rt.jobs.messages.ledger.missing([job.id]) == set()  # marked as sent

    rt.broker.get_actor(RUN_JOB)(*messages[0].args)  # the worker's side
    done = job_row(rt, tenant, job.id)
    assert (done.status, done.attempts) == ("SUCCEEDED", 1)
    assert rt.jobs.messages.ledger.missing([job.id]) == {job.id}  # claimed: forgotten


def test_the_dispatcher_thread_delivers_a_committed_job_at_once(rt, bus, tenant):
    rt.outbox.start()
    try:
        job = rt.jobs.start(principal(tenant), "diagnostics", {"steps": 2, "step_seconds": 0})
        # woken by the commit, not by its poll: well within one poll interval
        wait_for(lambda: any(m.args[0] == job.id for m in queued_messages(rt, job.region)),
                 timeout=rt.settings.outbox_poll_ms / 1000)
        wait_for(lambda: not pending(rt, "job", job.id), timeout=2)
        assert bus.on(job_topic(job.id))  # its QUEUED event
    finally:
        rt.outbox.stop(force=True)


def test_the_dispatcher_catches_up_in_order_when_the_bus_returns(rt, bus, tenant):
    topic = f"outbox-test.{unique()}"
    rt.outbox.start()
    try:
        bus.down = True
        for n in range(1, 5):
            with rt.db.tenant_transaction(tenant.id) as session:
                rt.outbox.event(session, topic, {"n": n})
        time.sleep(0.5)  # the dispatcher tries, fails and backs off
        assert bus.on(topic) == [] and len(pending(rt, EVENT, topic)) == 4
        bus.down = False
        wait_for(lambda: len(bus.on(topic)) == 4,
                 timeout=rt.settings.outbox_retry_max_ms / 1000 + 3)
        with rt.db.tenant_transaction(tenant.id) as session:  # caught up: inline again
            rt.outbox.event(session, topic, {"n": 5})
        wait_for(lambda: len(bus.on(topic)) == 5, timeout=5)
        assert [payload["n"] for payload in bus.on(topic)] == [1, 2, 3, 4, 5]
        wait_for(lambda: not pending(rt, EVENT, topic), timeout=5)
    finally:
        rt.outbox.stop(force=True)


# Jobs: lost messages and dead workers.
def test_a_queued_job_whose_message_was_lost_is_sent_again(rt, bus, tenant):
    job = rt.jobs.start(principal(tenant), "diagnostics", {"steps": 2, "step_seconds": 0})
    drain(rt)
    age = rt.settings.job_redeliver_after_ms / 1000 + 1
    assert rt.job_reaper.reap(now=later(age)).redelivered == 0  # its message is where it was

    # The broker restarts empty: its messages and the ledger's marks go together.
    rt.broker.flush(job.region)
    ledger, rt.jobs.messages.ledger = rt.jobs.messages.ledger, MemoryLedger()
    try:
        assert rt.job_reaper.reap(now=later(1)).redelivered == 0  # too young to call lost
        assert rt.job_reaper.reap(now=later(age)).redelivered >= 1
        assert len(pending(rt, "job", job.id)) == 1
        assert rt.job_reaper.reap(now=later(age)).redelivered == 0  # its new message waits
        drain(rt)
        assert [m.args[0] for m in queued_messages(rt, job.region)].count(job.id) == 1
    finally:
        rt.jobs.messages.ledger = ledger


def test_a_long_backlog_is_checked_for_lost_messages_a_batch_a_round(rt, bus, tenant,
                                                                       monkeypatch):
    monkeypatch.setattr("gateway.jobs.upkeep.BATCH", 2)
    ids = []
    for _ in range(5):
        ids.append(rt.jobs.start(principal(tenant), "diagnostics", {"steps": 2}).id)
        drain(rt)
    for region in rt.settings.regions:
        rt.broker.flush(region)
    # As after a restore from an older snapshot: the oldest messages kept, the newest lost.
    ledger, rt.jobs.messages.ledger = rt.jobs.messages.ledger, MemoryLedger()
    try:
        for job_id in ids[:2]:
            rt.jobs.messages.ledger.mark(job_id)
        age = later(rt.settings.job_redeliver_after_ms / 1000 + 1)
        rounds = [rt.job_reaper.reap(now=age).redelivered for _ in range(3)]
        assert rounds == [0, 2, 1]  # past the intact oldest two, to the lost ones behind them
        assert all(pending(rt, "job", job_id) for job_id in ids[2:])
        assert not any(pending(rt, "job", job_id) for job_id in ids[:2])
    finally:
        rt.jobs.messages.ledger = ledger


def test_a_dead_workers_job_is_requeued_and_its_late_writes_are_refused(rt, bus, tenant):
    job = rt.jobs.start(principal(tenant), "diagnostics", {"steps": 2, "step_seconds": 0})
    drain(rt)
    rows = rt.jobs.rows
    first = rows.claim(job.id, tenant.id)
    assert first is not None
    running = job_row(rt, tenant, job.id)
    assert running.status == "RUNNING" and running.lease_expires_at is not None
    assert rows.claim(job.id, tenant.id) is None  # a duplicate message: dropped

    assert rt.job_reaper.reap(now=later(1)).requeued == 0  # the lease runs
    lease_s = rt.settings.job_lease_ms / 1000
    assert rt.job_reaper.reap(now=later(lease_s)).requeued == 1  # within job_lease_ms
    requeued = job_row(rt, tenant, job.id)
    assert (requeued.status, requeued.run_token, requeued.attempts) == ("QUEUED", None, 1)
    assert len(pending(rt, "job", job.id)) == 1  # its new message, committed with it

    # The first worker was only paused: everything it writes now is refused.
    with pytest.raises(JobSuperseded):
        rows.progress(first, 0.5, "late")
    with pytest.raises(JobSuperseded):
        rows.succeed(first, {"by": "zombie"})
    assert rows.renew([first]) == [first]  # its heartbeat learns it lost the lease

    second = rows.claim(job.id, tenant.id)
    assert second is not None and second.attempt == 2
    rows.succeed(second, {"by": "second"})
    with pytest.raises(JobSuperseded):
        rows.succeed(first, {"by": "zombie"})
    done = job_row(rt, tenant, job.id)
    assert (done.status, done.result, done.attempts) == ("SUCCEEDED", {"by": "second"}, 2)
    assert rows.claim(job.id, tenant.id) is None


def test_a_heartbeat_keeps_a_live_run_and_a_job_that_kills_workers_fails(rt, bus, tenant):
    job = rt.jobs.start(principal(tenant), "diagnostics", {"steps": 2, "step_seconds": 0})
    drain(rt)
    rows = rt.jobs.rows
    keeper = LeaseKeeper(rows, heartbeat_s=3600)  # renewed by hand here
    claim = rows.claim(job.id, tenant.id)
    assert claim is not None
    keeper.hold(claim)
    try:
        before = job_row(rt, tenant, job.id).lease_expires_at
        assert keeper.renew_once() == []
        assert job_row(rt, tenant, job.id).lease_expires_at > before
    finally:
        keeper.release(claim)
        keeper.stop()

    max_attempts = rt.settings.job_max_retries + 1
    lease_s = rt.settings.job_lease_ms / 1000
    for attempt in range(1, max_attempts + 1):  # every worker that takes it dies
        if attempt > 1:
            claim = rows.claim(job.id, tenant.id)
            assert claim is not None and claim.attempt == attempt
        reaped = rt.job_reaper.reap(now=later(lease_s * attempt))
        assert (reaped.requeued, reaped.failed) == ((1, 0) if attempt < max_attempts else (0, 1))
    done = job_row(rt, tenant, job.id)
    assert (done.status, done.error_code, done.attempts) == ("FAILED", WORKER_LOST, max_attempts)
    assert done.finished_at is not None


def test_a_retry_is_a_delayed_message_in_the_outbox(rt, bus, tenant):
    calls: list[int] = []

    def flaky(ctx: Any, params: dict[str, Any]) -> dict[str, Any]:
        calls.append(ctx.attempt)
        if ctx.attempt == 1:
            raise RuntimeError("a bug that goes away")
        return {"attempt": ctx.attempt}

    if "test-outbox-flaky" not in rt.job_kinds.names():
        rt.job_kinds.register(JobKind("test-outbox-flaky", "fails once", flaky))
    job = rt.jobs.start(principal(tenant), "test-outbox-flaky", {})
    drain(rt)
    actor = rt.broker.get_actor(RUN_JOB)
    actor(job.id, tenant.id)  # attempt 1 fails: back to QUEUED with a delayed message
    row = job_row(rt, tenant, job.id)
    assert (row.status, row.attempts) == ("QUEUED", 1)
    [retry] = pending(rt, "job", job.id)
    backoff = rt.settings.job_min_backoff_ms / 1000
    assert retry.available_at >= row.updated_at + timedelta(seconds=backoff) - timedelta(seconds=0.01)
    assert rt.outbox.deliver_once(now=row.updated_at) == (0, 0)  # not before its backoff
    assert rt.job_reaper.reap(now=later(3600)).redelivered == 0  # waiting is not lost
    drain(rt)
    actor(job.id, tenant.id)
    done = job_row(rt, tenant, job.id)
    assert (done.status, done.result, calls) == ("SUCCEEDED", {"attempt": 2}, [1, 2])


def test_lease_settings_are_checked():
    with pytest.raises(ValueError, match="job_lease_ms"):
        Settings.from_env({}, job_lease_ms=5_000, job_heartbeat_ms=3_000)
    with pytest.raises(ValueError, match="positive"):
        Settings.from_env({}, outbox_poll_ms=0)
    settings = Settings.from_env({"ALPHINTRA_JOB_LEASE_MS": "3000",
                                  "ALPHINTRA_JOB_HEARTBEAT_MS": "500",
                                  "ALPHINTRA_JOB_REAPER_INTERVAL_MS": "500"})
    assert settings.job_lease_written_s == 2.5  # expired, it waits at most one reaper round
    assert Settings().job_lease_ms == 30_000


def test_a_job_canceled_while_its_worker_died_is_not_run_again(rt, bus, tenant):
    job = rt.jobs.start(principal(tenant), "diagnostics", {"steps": 2, "step_seconds": 0})
    drain(rt)
    claim = rt.jobs.rows.claim(job.id, tenant.id)
    assert claim is not None
    rt.jobs.cancel(tenant.id, job.id)  # asked while it runs; then its worker dies
    lease_s = rt.settings.job_lease_ms / 1000
    reaped = rt.job_reaper.reap(now=later(lease_s))
    assert (reaped.requeued, reaped.failed) == (0, 1)
    done = job_row(rt, tenant, job.id)
    assert (done.status, done.run_token) == ("CANCELED", None) and done.finished_at is not None
    assert pending(rt, "job", job.id) == []  # no new message: nothing runs it again
