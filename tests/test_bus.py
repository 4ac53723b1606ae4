"""The event bus: per-topic sequence numbers, gap detection, in-process and on Redis."""

import asyncio
import os
import shutil
import threading
import time
import uuid

import pytest

from gateway.app import create_app
from gateway.auth.policy import CREDENTIALS_TOPIC, POLICY_TOPIC
from gateway.events import InProcessBus, Listeners, PublishInterrupted, RedisBus
from gateway.jobs.runner import tenant_jobs_topic
from gateway.marketplace.install import CHANGED_TOPIC, DELISTED_TOPIC
from gateway.runtime import Runtime
from gateway.trading.common import orders_topic
from tests.support import LiveServer, onboard, wait_for


async def collect(sub, n, timeout=5):
    return [await asyncio.wait_for(sub.__anext__(), timeout) for _ in range(n)]


def test_in_process_sequences_per_topic():
    async def scenario():
        bus = InProcessBus()
        a, b = await bus.subscribe("a"), await bus.subscribe("b")
        for i in range(3):
            bus.publish("a", {"i": i})
        bus.publish("b", {"i": 0})
        got_a, got_b = await collect(a, 3), await collect(b, 1)
        await a.close()
        await b.close()
        return got_a, got_b

    got_a, got_b = asyncio.run(scenario())
    assert [e.sequence for e in got_a] == [1, 2, 3]
    assert [e.payload["i"] for e in got_a] == [0, 1, 2]
    assert [e.sequence for e in got_b] == [1]


def test_publishing_from_threads_reaches_async_subscribers():
    async def scenario():
        bus = InProcessBus()
        sub = await bus.subscribe("t")
        await asyncio.gather(*[asyncio.to_thread(bus.publish, "t", {"n": n}) for n in range(20)])
        events = await collect(sub, 20)
        await sub.close()
        return events

    events = asyncio.run(scenario())
    assert sorted(e.sequence for e in events) == list(range(1, 21))
    assert [e.sequence for e in events] == sorted(e.sequence for e in events)


def test_a_slow_subscriber_sees_a_gap_instead_of_blocking_the_publisher(monkeypatch):
    import gateway.events as events_module

    monkeypatch.setattr(events_module, "QUEUE_SIZE", 3)

    async def scenario():
        bus = InProcessBus()
        sub = await bus.subscribe("t")
        for n in range(6):
            bus.publish("t", {"n": n})
        await asyncio.sleep(0.05)
        first = await collect(sub, 3)
        bus.publish("t", {"n": 6})
        later = await collect(sub, 1)
        await sub.close()
        return sub.dropped, first, later

    dropped, first, later = asyncio.run(scenario())
    assert dropped == 3
    assert [e.sequence for e in first] == [1, 2, 3]
    assert later[0].sequence == 7  # 4, 5 and 6 were missed: the jump says so


@pytest.mark.redis
def test_redis_bus_numbers_and_delivers_across_instances():
    url = os.environ["ALPHINTRA_REDIS_URL"]
    namespace = f"alphintra-bus-{uuid.uuid4().hex[:8]}"

    async def scenario():
        publisher, subscriber = RedisBus(url, namespace), RedisBus(url, namespace)
        sub = await subscriber.subscribe("jobs")
        others = await subscriber.subscribe("other")
        sent = [await asyncio.to_thread(publisher.publish, "jobs", {"n": n}) for n in range(5)]
        got = await collect(sub, 5)
        await sub.close()
        await others.close()
        await publisher.stop()
        await subscriber.stop()
        return sent, got, others.dropped

    sent, got, _ = asyncio.run(scenario())
    assert [e.sequence for e in sent] == [1, 2, 3, 4, 5]
    assert [(e.sequence, e.payload) for e in got] == [(e.sequence, e.payload) for e in sent]


@pytest.mark.redis
def test_a_shared_redis_bus_keeps_serving_until_its_last_owner_stops():
    """Two apps on one runtime share its bus: the first to shut down must not cut the other's
    listeners off, and a bus started again listens on the topics it still has."""
    url = os.environ["ALPHINTRA_REDIS_URL"]
    namespace = f"alphintra-bus-{uuid.uuid4().hex[:8]}"

    async def scenario():
        bus, publisher = RedisBus(url, namespace), RedisBus(url, namespace)
        heard: list[int] = []
        await bus.start()  # the first app
        await bus.listen("plugins", lambda event: heard.append(event.payload["n"]))
        await bus.start()  # a second app on the same runtime
        await bus.stop()  # ... shuts down first
        await asyncio.to_thread(publisher.publish, "plugins", {"n": 1})
        await asyncio.to_thread(wait_for, lambda: heard == [1], 5)
        assert bus.subscribers("plugins") == 1
        await bus.stop()  # the last owner: the connection closes
        await bus.start()  # started again: the listener's topic is subscribed again
        await asyncio.to_thread(publisher.publish, "plugins", {"n": 2})
        await asyncio.to_thread(wait_for, lambda: heard == [1, 2], 5)
        await bus.stop()
        await publisher.stop()

    asyncio.run(scenario())


def test_in_process_epoch_names_the_numbering():
    bus, restarted = InProcessBus(), InProcessBus()
    first, second = bus.publish("t", {}), bus.publish("t", {})
    again = restarted.publish("t", {})
    assert first.epoch == second.epoch and first.epoch
    assert (again.sequence, again.epoch != first.epoch) == (1, True)


def test_redis_restarted_empty_starts_a_new_epoch_and_subscribers_resume():
    """Redis loses every counter: numbering restarts at 1 under a new epoch that subscribers see
    (a continuous-looking sequence is not taken for a continuous stream), and a subscription
    made before the outage receives what is published after it without subscribing again."""
    from tests.test_drills_outage import OwnRedis

    if shutil.which("redis-server") is None:
        pytest.skip("needs redis-server (Debian's redis-server package)")
    server = OwnRedis()
    server.start()
    namespace = f"alphintra-bus-{uuid.uuid4().hex[:8]}"

    async def publish_when_up(bus: RedisBus, n: int):
        deadline = asyncio.get_running_loop().time() + 15
        while True:
            try:
                return await asyncio.to_thread(bus.publish, "jobs", {"n": n})
            except Exception:
                if asyncio.get_running_loop().time() > deadline:
                    raise
                await asyncio.sleep(0.1)

    async def scenario():
        publisher, subscriber = RedisBus(server.url, namespace), RedisBus(server.url, namespace)
        sub = await subscriber.subscribe("jobs")
        before = [await publish_when_up(publisher, n) for n in range(3)]
        got_before = await collect(sub, 3)
        server.kill()
        await asyncio.sleep(0.5)
        server.start()  # empty
        # The subscriber reconnects on its own; publish until it hears one.
        after = None
        deadline = asyncio.get_running_loop().time() + 20
        while True:
            after = await publish_when_up(publisher, 99)
            try:
                heard = await asyncio.wait_for(sub.__anext__(), 1.0)
                break
            except TimeoutError:
                assert asyncio.get_running_loop().time() < deadline, "the subscription never resumed"
        await sub.close()
        await publisher.stop()
        await subscriber.stop()
        return before, got_before, after, heard

    try:
        before, got_before, after, heard = asyncio.run(scenario())
    finally:
        server.kill()
    assert [(e.sequence, e.epoch) for e in got_before] == [(e.sequence, e.epoch) for e in before]
    assert [e.sequence for e in before] == [1, 2, 3] and len({e.epoch for e in before}) == 1
    assert after.epoch != before[0].epoch  # the restart is visible
    assert heard.epoch == after.epoch and heard.sequence <= after.sequence
    assert heard.payload == {"n": 99}


def test_redis_restarted_from_a_snapshot_starts_a_new_epoch(tmp_path):
    """A counter restored from a snapshot may be behind what was handed out: any restart of
    the server starts a new epoch, so no (epoch, sequence) is ever reused."""
    import subprocess

    from tests.support import free_port

    if shutil.which("redis-server") is None:
        pytest.skip("needs redis-server (Debian's redis-server package)")
    port = free_port()

    def start() -> subprocess.Popen:
        proc = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1",
                                 "--dir", str(tmp_path), "--appendonly", "no", "--save", ""],
                                stdout=subprocess.DEVNULL)
        wait_for(lambda: _pings(port), 10)
        return proc

    proc = start()
    bus = RedisBus(f"redis://127.0.0.1:{port}/0", f"alphintra-bus-{uuid.uuid4().hex[:8]}")
    try:
        before = [bus.publish("t", {}) for _ in range(3)]
        bus._sync.save()  # the snapshot holds sequence 3
        later = [bus.publish("t", {}) for _ in range(3)]  # 4..6 handed out, then lost
        proc.kill()
        proc.wait(10)
        proc = start()  # from the snapshot
        again = wait_for(lambda: _publish(bus), 10)
    finally:
        bus._sync.close()
        proc.kill()
        proc.wait(10)
    assert [e.sequence for e in before + later] == [1, 2, 3, 4, 5, 6]
    assert again.epoch != before[0].epoch and again.sequence == 1


def _pings(port: int) -> bool:
    import redis

    try:
        return bool(redis.Redis(port=port).ping())
    except redis.ConnectionError:
        return False


def _publish(bus: RedisBus):
    try:
        return bus.publish("t", {})
    except Exception:
        return None


@pytest.mark.redis
def test_a_reader_whose_loop_stopped_is_replaced_by_the_next_subscribe():
    """Two apps share a bus: the one that started the reader (its event loop) is gone while
    the other still holds it. The next subscription must read from a live loop, or no event
    would reach this process again."""
    url = os.environ["ALPHINTRA_REDIS_URL"]
    namespace = f"alphintra-bus-{uuid.uuid4().hex[:8]}"
    bus, publisher = RedisBus(url, namespace), RedisBus(url, namespace)

    async def first_app():
        await bus.start()
        await bus.start()  # a second owner: the first's loop ends without stopping the bus

    asyncio.run(first_app())  # that loop is closed now, with the reader task it ran

    async def second_app():
        sub = await bus.subscribe("orders")
        await asyncio.to_thread(publisher.publish, "orders", {"n": 1})
        got = await collect(sub, 1)
        await sub.close()
        return got

    try:
        assert [e.payload for e in asyncio.run(second_app())] == [{"n": 1}]
    finally:
        publisher._sync.close()


@pytest.mark.parametrize("kind", ["in-process", pytest.param("redis", marks=pytest.mark.redis)])
def test_unlisten_removes_one_registration_and_the_channel_with_the_last(kind):
    namespace = f"alphintra-bus-{uuid.uuid4().hex[:8]}"
    url = os.environ.get("ALPHINTRA_REDIS_URL", "")
    bus = InProcessBus() if kind == "in-process" else RedisBus(url, namespace)
    publisher = bus if kind == "in-process" else RedisBus(url, namespace)
    first: list[int] = []
    second: list[int] = []

    async def scenario():
        await bus.start()
        await bus.listen("plugins", first.append)
        await bus.listen("plugins", second.append)
        await bus.unlisten("plugins", first.append)  # an equal bound method: that registration
        await bus.unlisten("plugins", first.append)  # gone already: nothing else goes
        await asyncio.to_thread(publisher.publish, "plugins", {"n": 1})
        await asyncio.to_thread(wait_for, lambda: len(second) == 1, 5)
        await bus.unlisten("plugins", second.append)
        # the last one: nobody here wants the topic, so the channel goes too
        await asyncio.to_thread(wait_for, lambda: bus.subscribers("plugins") == 0, 5)
        await asyncio.to_thread(publisher.publish, "plugins", {"n": 2})
        await asyncio.sleep(0.3)
        await bus.stop()
        if publisher is not bus:
            await publisher.stop()

    asyncio.run(scenario())
    assert first == []
    assert [e.payload["n"] for e in second] == [1]


@pytest.mark.redis
def test_a_second_loops_subscribe_runs_on_the_readers_loop():
    """Two apps on one runtime serve from two event loops; the pub/sub connection belongs to
    the loop that reads it, so the other app's SUBSCRIBE/UNSUBSCRIBE are run there."""
    url = os.environ["ALPHINTRA_REDIS_URL"]
    namespace = f"alphintra-bus-{uuid.uuid4().hex[:8]}"
    bus, publisher = RedisBus(url, namespace), RedisBus(url, namespace)
    first = asyncio.new_event_loop()
    thread = threading.Thread(target=first.run_forever, daemon=True)
    thread.start()
    ran_on: list[asyncio.AbstractEventLoop] = []
    try:
        asyncio.run_coroutine_threadsafe(bus.start(), first).result(5)  # the first app
        pubsub = bus._pubsub
        for command in ("subscribe", "unsubscribe"):
            original = getattr(pubsub, command)

            async def recording(*channels, _original=original):
                ran_on.append(asyncio.get_running_loop())
                return await _original(*channels)
            setattr(pubsub, command, recording)

        async def second_app():
            await bus.start()
            sub = await bus.subscribe("orders")
            await asyncio.to_thread(publisher.publish, "orders", {"n": 1})
            got = await collect(sub, 1)
            await sub.close()
            await bus.stop()
            return got, asyncio.get_running_loop()

        got, second = asyncio.run(second_app())
        assert [e.payload for e in got] == [{"n": 1}]
        assert len(ran_on) == 2 and all(loop is first for loop in ran_on) and second is not first
        wait_for(lambda: bus.subscribers("orders") == 0, 5)
    finally:
        asyncio.run_coroutine_threadsafe(bus.stop(), first).result(5)
        asyncio.run(publisher.stop())
        first.call_soon_threadsafe(first.stop)
        thread.join(5)
        first.close()


def test_listeners_closed_refuse_late_registrations():
    async def scenario():
        bus = InProcessBus()
        listening = Listeners(bus)
        await listening.listen("t", print)
        await listening.close()
        assert bus.subscribers("t") == 0
        with pytest.raises(RuntimeError):
            await listening.listen("t", print)
        assert bus.subscribers("t") == 0

    asyncio.run(scenario())


def test_an_app_leaves_its_runtimes_bus_as_it_found_it(runtime: Runtime, server: LiveServer):
    """The suite serves many apps on one runtime (one bus). Each app's listeners (the policy
    reload, sockets' revocation, the response cache's) must go with it: before, they piled up
    until every policy.changed ran ~80 reloads on the reader's loop and order updates reached
    their sockets more than 10 s late."""
    tenant = onboard(runtime)
    topics = (POLICY_TOPIC, CREDENTIALS_TOPIC, CHANGED_TOPIC, DELISTED_TOPIC,
              orders_topic(tenant.id), tenant_jobs_topic(tenant.id))
    fanout = runtime.bus._fanout  # type: ignore[attr-defined]  # either bus's local delivery

    def counts() -> dict[str, int]:
        return {topic: fanout.count(topic) for topic in topics}

    before = counts()
    rt = Runtime(**{**runtime.__dict__, "settings": runtime.settings.with_(
        response_cache="on", embedded_worker="off")})
    for _ in range(2):
        app = create_app(runtime=rt)
        with LiveServer(app):
            during = counts()
            assert app.state.graphql.cache.watching(tenant.id)  # follows the tenant's topics
            assert fanout.count(orders_topic(tenant.id)) == before[orders_topic(tenant.id)] + 1
        assert all(during[t] > before[t] for t in (POLICY_TOPIC, CREDENTIALS_TOPIC, CHANGED_TOPIC))
        assert counts() == before
        if isinstance(runtime.bus, RedisBus):  # nobody here wants the tenant's channel now
            wait_for(lambda: runtime.bus.subscribers(orders_topic(tenant.id)) == 0, 5)


@pytest.mark.redis
def test_the_app_left_keeps_hearing_when_the_one_holding_the_reader_stops():
    """Two apps on one bus, each on its own event loop: the first (whose loop reads the pub/sub
    connection) stops and its loop ends. The second, still listening, must keep hearing events
    without a subscribe of its own first (before, it was deaf until its next listen)."""
    url = os.environ["ALPHINTRA_REDIS_URL"]
    namespace = f"alphintra-bus-{uuid.uuid4().hex[:8]}"
    bus, publisher = RedisBus(url, namespace), RedisBus(url, namespace)
    loops = [asyncio.new_event_loop() for _ in range(2)]
    threads = [threading.Thread(target=loop.run_forever, daemon=True) for loop in loops]
    for thread in threads:
        thread.start()
    first, second = loops
    heard: list[int] = []

    def on(loop, coroutine):
        return asyncio.run_coroutine_threadsafe(coroutine, loop).result(15)

    try:
        on(first, bus.start())
        on(second, bus.start())
        on(second, bus.listen("orders", lambda event: heard.append(event.payload["n"])))
        on(first, bus.stop())  # the first app goes, and its loop with it
        first.call_soon_threadsafe(first.stop)
        threads[0].join(5)
        first.close()
        publisher.publish("orders", {"n": 1})
        wait_for(lambda: heard == [1], 5)
    finally:
        if second.is_running():
            on(second, bus.stop())
        asyncio.run(publisher.stop())
        second.call_soon_threadsafe(second.stop)
        threads[1].join(5)
        second.close()


@pytest.mark.redis
def test_a_subscribe_queued_on_a_reader_loop_that_stops_returns_at_once():
    """The (un)subscribe handed to the reader's loop is queued when that loop stops: it never
    runs. The caller must neither wait out the 10 s bound nor fail, and its own loop must keep
    running meanwhile; its topic is subscribed again by the next reader."""
    url = os.environ["ALPHINTRA_REDIS_URL"]
    namespace = f"alphintra-bus-{uuid.uuid4().hex[:8]}"
    bus = RedisBus(url, namespace)
    reader_loop = asyncio.new_event_loop()
    thread = threading.Thread(target=reader_loop.run_forever, daemon=True)
    thread.start()
    try:
        asyncio.run_coroutine_threadsafe(bus.start(), reader_loop).result(5)

        def busy_then_stop() -> None:  # the command lands behind this, then the loop stops
            time.sleep(0.3)
            reader_loop.stop()

        async def second_app() -> tuple[float, int]:
            ticks = 0

            async def tick() -> None:
                nonlocal ticks
                while True:
                    await asyncio.sleep(0.01)
                    ticks += 1

            ticker = asyncio.create_task(tick())
            reader_loop.call_soon_threadsafe(busy_then_stop)
            await asyncio.sleep(0.05)
            started = time.monotonic()
            await bus.listen("orders", print)
            took = time.monotonic() - started
            ticker.cancel()
            return took, ticks

        took, ticks = asyncio.run(second_app())
        assert took < 2, took
        assert ticks >= 10  # this loop ran while it waited
        thread.join(5)
        assert bus._fanout.count("orders") == 1  # still wanted: the next reader subscribes it
    finally:
        if not reader_loop.is_running():  # its reader and connection, closed on their loop
            reader_loop.run_until_complete(bus._close_reading())
        reader_loop.close()
        bus._sync.close()


@pytest.mark.redis
def test_first_subscribes_at_once_open_one_reader(caplog):
    """Two first listens at once on one loop (no reader yet, or its loop gone): before, each
    opened a connection and started a reader; both then read the second connection, failing
    over and over, and the first stayed subscribed, leaked."""
    url = os.environ["ALPHINTRA_REDIS_URL"]
    namespace = f"alphintra-bus-{uuid.uuid4().hex[:8]}"
    bus, publisher = RedisBus(url, namespace), RedisBus(url, namespace)
    heard: list[str] = []

    async def scenario() -> int:
        await asyncio.gather(*(bus.listen(topic, lambda e: heard.append(e.topic))
                               for topic in ("a", "b", "c")))
        readers = sum(t.get_name() == "redis-bus-reader" for t in asyncio.all_tasks())
        for topic in ("a", "b", "c"):
            await asyncio.to_thread(publisher.publish, topic, {})
        await asyncio.to_thread(wait_for, lambda: len(heard) == 3, 5)
        await asyncio.sleep(0.2)
        await bus.stop()
        await publisher.stop()
        return readers

    assert asyncio.run(scenario()) == 1
    assert sorted(heard) == ["a", "b", "c"]
    assert not [r for r in caplog.records if "read failed" in r.getMessage()]
    wait_for(lambda: publisher._sync.pubsub_numsub(f"{namespace}:events:_bus.alive")[0][1] == 0, 5)


def test_an_app_whose_start_up_fails_leaves_the_bus_as_it_found_it(runtime: Runtime, monkeypatch):
    """A start-up that fails after registering listeners (here: restoring plugins) must take
    them and its bus ownership back: the runtime outlives the app."""
    fanout = runtime.bus._fanout  # type: ignore[attr-defined]  # either bus's local delivery
    topics = (POLICY_TOPIC, CREDENTIALS_TOPIC, CHANGED_TOPIC, DELISTED_TOPIC)
    before = {topic: fanout.count(topic) for topic in topics}
    owners = getattr(runtime.bus, "_owners", None)
    rt = Runtime(**{**runtime.__dict__, "settings": runtime.settings.with_(
        response_cache="on", embedded_worker="off")})

    def broken_restore() -> None:
        raise OSError("the plugin store is unreadable")

    monkeypatch.setattr(rt.marketplace, "restore", broken_restore)
    app = create_app(runtime=rt)

    async def start() -> None:
        async with app.router.lifespan_context(app):
            raise AssertionError("started")

    with pytest.raises(OSError, match="unreadable"):
        asyncio.run(start())
    assert {topic: fanout.count(topic) for topic in topics} == before
    assert getattr(runtime.bus, "_owners", None) == owners


# publish_many: several events as that many publish calls would, one round trip on Redis.
ITEMS = [("a", {"n": 1}), ("b", {"n": 2}), ("a", {"n": 3}), ("c", {"n": 4}), ("a", {"n": 5})]


def round_trips(client) -> list[str]:
    """The command batches a redis-py client sends from now on (one per round trip)."""
    sent: list[str] = []
    pool = client.connection_pool
    get = pool.get_connection

    def counted(*args, **kwargs):
        conn = get(*args, **kwargs)
        if not getattr(conn, "counted", False):
            send = conn.send_packed_command

            def send_counted(command, *a, **k):
                first = command[0] if isinstance(command, list) else command
                sent.append(bytes(first).split(b"\r\n")[2].decode())  # its first command's name
                return send(command, *a, **k)

            conn.send_packed_command, conn.counted = send_counted, True
        return conn

    pool.get_connection = counted
    return sent


def publish_many_and_hear(bus, items, sent=None):
    """What `bus.publish_many(items)` returns (or, interrupted, the error), and what a
    listener on every topic hears, in order; `sent` collects the round trips of a Redis bus's
    publishing client meanwhile."""
    async def scenario():
        heard = []
        topics = sorted({t for t, _ in items})
        for topic in topics:
            await bus.listen(topic, heard.append)
        await asyncio.to_thread(wait_for, lambda: all(bus.subscribers(t) for t in topics), 5)
        counted = round_trips(bus._sync) if sent is not None else []
        try:
            published = await asyncio.to_thread(bus.publish_many, items)
        except PublishInterrupted as exc:
            published = exc
        if sent is not None:
            sent.extend(counted)
        done = published.published if isinstance(published, PublishInterrupted) else published
        await asyncio.to_thread(wait_for, lambda: len(heard) >= len(done), 5)
        await asyncio.sleep(0.1)  # nothing more arrives
        await bus.stop()
        return published, heard

    return asyncio.run(scenario())


def test_in_process_publish_many_numbers_and_delivers_as_publish_does():
    one_by_one = InProcessBus()
    expected = [one_by_one.publish(t, p) for t, p in ITEMS]
    published, heard = publish_many_and_hear(InProcessBus(), ITEMS)
    assert [(e.topic, e.sequence, e.payload) for e in published] == \
        [(e.topic, e.sequence, e.payload) for e in expected] == \
        [("a", 1, {"n": 1}), ("b", 1, {"n": 2}), ("a", 2, {"n": 3}), ("c", 1, {"n": 4}),
         ("a", 3, {"n": 5})]
    assert heard == published  # every one, in order
    assert len({e.epoch for e in published}) == 1


def test_in_process_publish_many_stops_at_the_first_failure(monkeypatch):
    bus = InProcessBus()
    real = bus.publish

    def failing(topic, payload):
        if payload["n"] == 3:
            raise ConnectionError("refused")
        return real(topic, payload)

    monkeypatch.setattr(bus, "publish", failing)
    with pytest.raises(PublishInterrupted) as raised:
        bus.publish_many(ITEMS)
    assert [e.payload["n"] for e in raised.value.published] == [1, 2]
    assert isinstance(raised.value.__cause__, ConnectionError)
    assert real("c", {}).sequence == 1  # nothing after the failure was published


@pytest.mark.redis
def test_redis_publish_many_numbers_and_delivers_in_one_round_trip():
    url = os.environ["ALPHINTRA_REDIS_URL"]
    one_by_one = RedisBus(url, f"alphintra-bus-{uuid.uuid4().hex[:8]}")
    expected = [one_by_one.publish(t, p) for t, p in ITEMS]
    one_by_one._sync.close()
    namespace = f"alphintra-bus-{uuid.uuid4().hex[:8]}"
    bus = RedisBus(url, namespace)
    bus.publish("warm", {})  # the script is loaded (a NOSCRIPT costs a round trip, once)
    sent: list[str] = []
    published, heard = publish_many_and_hear(bus, ITEMS, sent)
    assert sent == ["EVALSHA"]  # five events on three topics: one command
    assert [(e.topic, e.sequence, e.payload) for e in published] == \
        [(e.topic, e.sequence, e.payload) for e in expected]
    assert [(e.topic, e.sequence, e.epoch, e.payload) for e in heard] == \
        [(e.topic, e.sequence, e.epoch, e.payload) for e in published]
    assert len({e.epoch for e in published if e.topic == "a"}) == 1

    # A topic's counter lost between two batches: its numbering restarts under a new epoch,
    # the others' continues.
    bus = RedisBus(url, namespace)
    bus._sync.delete(f"{namespace}:seq2:a")
    again = bus.publish_many([("a", {}), ("b", {}), ("a", {})])
    bus._sync.close()
    assert [(e.topic, e.sequence) for e in again] == [("a", 1), ("b", 2), ("a", 2)]
    first_a = next(e for e in published if e.topic == "a")
    assert again[0].epoch == again[2].epoch != first_a.epoch
    assert again[1].epoch == next(e for e in published if e.topic == "b").epoch


@pytest.mark.redis
def test_redis_publish_many_stops_at_the_first_event_that_fails():
    """An event that fails on the server (here: its counter is not a hash) is not overtaken:
    those before it are published and numbered, it and those after it are not."""
    import redis

    url = os.environ["ALPHINTRA_REDIS_URL"]
    namespace = f"alphintra-bus-{uuid.uuid4().hex[:8]}"
    items = [("a", {"n": 1}), ("bad", {"n": 2}), ("a", {"n": 3}), ("b", {"n": 4})]
    bus = RedisBus(url, namespace)
    bus._sync.set(f"{namespace}:seq2:bad", "not a counter")
    error, heard = publish_many_and_hear(bus, items)
    assert isinstance(error, PublishInterrupted)
    assert [e.payload["n"] for e in error.published] == [1] and heard == error.published
    assert isinstance(error.__cause__, redis.ResponseError) and "WRONGTYPE" in str(error.__cause__)
    bus = RedisBus(url, namespace)
    bus._sync.delete(f"{namespace}:seq2:bad")
    later = bus.publish_many(items[1:])
    bus._sync.close()
    assert [(e.topic, e.sequence) for e in later] == [("bad", 1), ("a", 2), ("b", 1)]
