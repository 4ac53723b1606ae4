"""The event bus behind subscriptions.

`publish` is synchronous and thread-safe, so resolvers, services and Dramatiq actors running in
threads can all call it. Each topic numbers its events 1, 2, 3 … within an epoch; a subscriber
that sees a jump knows it missed something (a slow subscriber's queue overflowing drops events
rather than stalling the publisher) and can re-read the state it follows.

The epoch names the numbering: it changes whenever the numbers could restart: a new process
for the in-process bus; on Redis, a topic counter lost (a restart without persistence, a
flush, its expiry) or possibly stale (any server restart, even from a snapshot, or a failover).
A subscriber that sees a new epoch knows it may have missed events even if the sequence looks
continuous, and catches up from stored state (every subscription starts from stored state;
`orderUpdates(after:)` replays the stored stream).

Two implementations: `InProcessBus` for one process, `RedisBus` across processes (epoch,
sequence and PUBLISH in one Lua script, so numbers and delivery order agree).

`publish_many` publishes several events as that many `publish` calls would (the same numbers,
the same delivery order), on Redis in one round trip; it stops at the first event that fails,
so none overtakes it, and says which were published (`PublishInterrupted`).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import inspect
import json
import logging
import secrets
import threading
import weakref
from collections import defaultdict
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import redis
import redis.asyncio as aredis

from gateway.db import utcnow

log = logging.getLogger(__name__)

QUEUE_SIZE = 1000
_REMOTE_LOOP_TIMEOUT_S = 10.0  # a (un)subscribe handed to the reader's loop, at most
Listener = Callable[["Event"], None]


def new_epoch() -> str:
    return secrets.token_hex(8)


class PublishInterrupted(Exception):
    """`publish_many` stopped at a failed event (the cause): `published` are those before it,
    in order; neither it nor any after it was published."""

    def __init__(self, published: list[Event]) -> None:
        super().__init__(f"publishing stopped after {len(published)} events")
        self.published = published


@dataclass(frozen=True)
class Event:
    topic: str
    sequence: int
    payload: dict[str, Any]
    published_at: str
    epoch: str = ""

    def to_json(self) -> str:
        return json.dumps(
            {"topic": self.topic, "epoch": self.epoch, "sequence": self.sequence,
             "payload": self.payload, "published_at": self.published_at},
            separators=(",", ":"),
        )

    @classmethod
    def from_json(cls, raw: str | bytes) -> Event:
        data = json.loads(raw)
        return cls(data["topic"], int(data["sequence"]), data["payload"], data["published_at"],
                   str(data.get("epoch", "")))


class Subscription:
    """One subscriber's queue on one topic; iterate it, then `close()` it."""

    def __init__(self, fanout: _Fanout, topic: str) -> None:
        self.topic = topic
        self.dropped = 0
        self._fanout = fanout
        self._loop = asyncio.get_running_loop()
        self._queue: asyncio.Queue[Event] = asyncio.Queue(QUEUE_SIZE)

    def _offer(self, event: Event) -> None:
        try:
            self._queue.put_nowait(event)
        except asyncio.QueueFull:
            self.dropped += 1

    def deliver_threadsafe(self, event: Event) -> None:
        with contextlib.suppress(RuntimeError):  # the subscriber's loop has closed
            self._loop.call_soon_threadsafe(self._offer, event)

    def __aiter__(self) -> AsyncIterator[Event]:
        return self

    async def __anext__(self) -> Event:
        return await self._queue.get()

    async def close(self) -> None:
        await self._fanout.remove(self)


class _Fanout:
    """Local delivery to subscriptions and listeners of this process."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._subs: dict[str, set[Subscription]] = defaultdict(set)
        self._listeners: dict[str, list[Listener]] = defaultdict(list)
        self.on_first: Callable[[str], Any] | None = None
        self.on_last: Callable[[str], Any] | None = None

    def deliver(self, event: Event) -> None:
        with self._lock:
            subs = list(self._subs.get(event.topic, ()))
            listeners = list(self._listeners.get(event.topic, ()))
        for sub in subs:
            sub.deliver_threadsafe(event)
        for listener in listeners:
            try:
                listener(event)
            except Exception:
                log.exception("event listener failed", extra={"topic": event.topic})

    def count(self, topic: str) -> int:
        with self._lock:
            return len(self._subs.get(topic, ())) + len(self._listeners.get(topic, ()))

    def topics(self) -> set[str]:
        with self._lock:
            return {t for t, s in self._subs.items() if s} | set(self._listeners)

    def add(self, sub: Subscription) -> bool:
        with self._lock:
            first = not self._subs[sub.topic] and sub.topic not in self._listeners
            self._subs[sub.topic].add(sub)
            return first

    async def remove(self, sub: Subscription) -> None:
        with self._lock:
            subs = self._subs.get(sub.topic)
            if subs is None or sub not in subs:
                return
            subs.discard(sub)
            last = not subs and sub.topic not in self._listeners
            if not subs:
                del self._subs[sub.topic]
        if last and self.on_last is not None:
            await self.on_last(sub.topic)

    def listen(self, topic: str, listener: Listener) -> bool:
        with self._lock:
            first = not self._subs.get(topic) and topic not in self._listeners
            self._listeners[topic].append(listener)
            return first

    def unlisten(self, topic: str, listener: Listener) -> bool:
        """Remove one registration of `listener` (by equality: a bound method registered again
        is equal, not identical); True when the topic has nobody local left."""
        with self._lock:
            listeners = self._listeners.get(topic)
            if not listeners or listener not in listeners:
                return False
            listeners.remove(listener)
            if listeners:
                return False
            del self._listeners[topic]
            return not self._subs.get(topic)


class Bus(Protocol):
    def publish(self, topic: str, payload: dict[str, Any]) -> Event: ...
    def publish_many(self, items: Sequence[tuple[str, dict[str, Any]]]) -> list[Event]:
        """The (topic, payload) items published in order, as that many `publish` calls would,
        in one round trip where the bus has round trips. Stops at the first that fails,
        raising PublishInterrupted (those before it published); any other exception: none is
        known to be published."""
        ...
    async def subscribe(self, topic: str) -> Subscription: ...
    async def listen(self, topic: str, listener: Listener) -> None: ...
    async def unlisten(self, topic: str, listener: Listener) -> None:
        """Undo one `listen`: whoever registers a listener for a lifetime shorter than the
        bus's (an app on a runtime that outlives it) removes it when that lifetime ends."""
        ...
    async def start(self) -> None: ...
    async def stop(self) -> None: ...
    def ping(self) -> None: ...
    def subscribers(self, topic: str) -> int:
        """How many subscribers the topic has now (across processes on Redis): lets a publisher
        that must not lose its first event wait for a subscription to be in place."""
        ...


class Listeners:
    """Listeners held for a lifetime shorter than the bus's, removed together when it ends: an
    app's, on a runtime (and so a bus) that outlives it, as the test suite's servers do (and
    the bus allows: several owners). Left behind, they piled up, every event running every
    gone app's listeners (a full policy reload each) on the reader's loop, minutes behind."""

    def __init__(self, bus: Bus) -> None:
        self._bus = bus
        self._held: list[tuple[str, Listener]] = []
        self._closed = False

    async def listen(self, topic: str, listener: Listener) -> None:
        if self._closed:  # a late registration would outlive its owner
            raise RuntimeError("these listeners are closed")
        await self._bus.listen(topic, listener)
        self._held.append((topic, listener))

    async def close(self) -> None:
        self._closed = True
        held, self._held = self._held, []
        for topic, listener in reversed(held):
            try:
                await self._bus.unlisten(topic, listener)
            except Exception:  # the rest are still removed; the bus may be down
                log.exception("could not remove an event listener", extra={"topic": topic})


def publish_each(bus: Bus, items: Sequence[tuple[str, dict[str, Any]]]) -> list[Event]:
    """`publish_many` as one `publish` per item (what a bus without round trips does)."""
    published: list[Event] = []
    for topic, payload in items:
        try:
            published.append(bus.publish(topic, payload))
        except Exception as exc:
            raise PublishInterrupted(published) from exc
    return published


class InProcessBus:
    def __init__(self) -> None:
        self._fanout = _Fanout()
        self._seq: dict[str, int] = defaultdict(int)
        self._seq_lock = threading.Lock()
        self.epoch = new_epoch()  # the numbers live and die with this process

    def publish(self, topic: str, payload: dict[str, Any]) -> Event:
        # Numbering and delivery under one lock, so subscribers see sequence order.
        with self._seq_lock:
            self._seq[topic] += 1
            event = Event(topic, self._seq[topic], payload, utcnow().isoformat(), self.epoch)
            self._fanout.deliver(event)
        return event

    def publish_many(self, items: Sequence[tuple[str, dict[str, Any]]]) -> list[Event]:
        return publish_each(self, items)

    async def subscribe(self, topic: str) -> Subscription:
        sub = Subscription(self._fanout, topic)
        self._fanout.add(sub)
        return sub

    async def listen(self, topic: str, listener: Listener) -> None:
        self._fanout.listen(topic, listener)

    async def unlisten(self, topic: str, listener: Listener) -> None:
        self._fanout.unlisten(topic, listener)

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None

    def ping(self) -> None:
        return None

    def subscribers(self, topic: str) -> int:
        return self._fanout.count(topic)


# The topic's counter is a hash {epoch, seq, run}: when it is missing (Redis lost it, or it
# expired after a week without events) the numbering starts again at 1 under the caller's fresh
# epoch, so a subscriber can tell a restart from a continuous stream. `run` is the Redis
# server's run id: a server restarted from a snapshot (or a replica promoted) may hold an older
# counter that would hand out numbers already used, so a counter from another run starts over
# under a new epoch too.
# One call publishes a batch: KEYS are each event's counter and channel, ARGV each event's
# topic, payload, time and fresh epoch. It stops at the first event that fails (so none
# overtakes it) and returns {published, error, epoch1, seq1, epoch2, seq2, ...}.
_PUBLISH = """
local run = string.match(redis.call('INFO', 'server'), 'run_id:(%w+)')
local function publish(i)
  local counter, channel = KEYS[2 * i - 1], KEYS[2 * i]
  local state = redis.call('HMGET', counter, 'epoch', 'run')
  local epoch = state[1]
  if (not epoch) or state[2] ~= run then
    epoch = ARGV[4 * i]
    redis.call('DEL', counter)
    redis.call('HSET', counter, 'epoch', epoch, 'run', run)
  end
  local seq = redis.call('HINCRBY', counter, 'seq', 1)
  redis.call('EXPIRE', counter, 604800)
  local msg = '{"topic":' .. cjson.encode(ARGV[4 * i - 3]) .. ',"epoch":' .. cjson.encode(epoch) ..
    ',"sequence":' .. seq .. ',"published_at":' .. cjson.encode(ARGV[4 * i - 1]) ..
    ',"payload":' .. ARGV[4 * i - 2] .. '}'
  redis.call('PUBLISH', channel, msg)
  return epoch, seq
end
local out = {0, ''}
for i = 1, #KEYS / 2 do
  local ok, epoch, seq = pcall(publish, i)
  if not ok then
    out[2] = type(epoch) == 'table' and tostring(epoch.err) or tostring(epoch)
    break
  end
  out[1] = i
  out[#out + 1] = epoch
  out[#out + 1] = seq
end
return out
"""
# At most this many events a call: the script holds the server for its whole batch.
SCRIPT_BATCH = 1000


class RedisBus:
    """Redis pub/sub: one subscriber connection per process, fanned out locally."""

    def __init__(self, url: str, namespace: str = "alphintra") -> None:
        self._url = url
        self._ns = namespace
        # Bounded waits: a Redis that hangs fails a publish in seconds (the outbox keeps the
        # event) instead of holding the request that published it.
        self._sync = redis.Redis.from_url(url, socket_connect_timeout=2.0, socket_timeout=2.0)
        self._publish_script = self._sync.register_script(_PUBLISH)
        self._fanout = _Fanout()
        self._fanout.on_last = self._sync_channel
        self._async: aredis.Redis | None = None
        self._pubsub: Any = None
        self._reader: asyncio.Task[None] | None = None
        # Per loop: two first subscribes on one loop would each open a connection and start a
        # reader, both then reading the second connection and the first left subscribed.
        self._start_locks: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = (
            weakref.WeakKeyDictionary())
        self._owners = 0
        self._owner_loops: list[asyncio.AbstractEventLoop] = []  # one entry per `start`

    def _channel(self, topic: str) -> str:
        return f"{self._ns}:events:{topic}"

    def publish(self, topic: str, payload: dict[str, Any]) -> Event:
        published, error = self._run([(topic, payload)])
        if error is not None:
            raise error
        return published[0]

    def publish_many(self, items: Sequence[tuple[str, dict[str, Any]]]) -> list[Event]:
        published: list[Event] = []
        for start in range(0, len(items), SCRIPT_BATCH):
            try:
                done, error = self._run(items[start:start + SCRIPT_BATCH])
            except Exception as exc:  # the call failed as a whole: none of it is known published
                raise PublishInterrupted(published) from exc
            published.extend(done)
            if error is not None:
                raise PublishInterrupted(published) from error
        return published

    def _run(self, items: Sequence[tuple[str, dict[str, Any]]]
             ) -> tuple[list[Event], redis.ResponseError | None]:
        """One script call: the events it published, and the error that stopped it if any."""
        keys: list[str] = []
        args: list[str] = []
        bodies: list[tuple[str, str, str]] = []
        for topic, payload in items:
            now = utcnow().isoformat()
            body = json.dumps(payload, separators=(",", ":"), default=str)
            # `seq2`: the counter became a hash; a new key (and so a new epoch) on upgrade
            # rather than a WRONGTYPE on the old string counters.
            keys += (f"{self._ns}:seq2:{topic}", self._channel(topic))
            args += (topic, body, now, new_epoch())
            bodies.append((topic, body, now))
        if not bodies:
            return [], None
        count, error, *numbers = self._publish_script(keys=keys, args=args)
        published: list[Event] = []
        for i, (topic, body, now) in enumerate(bodies[:int(count)]):
            epoch = numbers[2 * i]
            epoch = epoch.decode() if isinstance(epoch, bytes) else str(epoch)
            published.append(Event(topic, int(numbers[2 * i + 1]), json.loads(body), now, epoch))
        if int(count) < len(bodies):
            message = error.decode() if isinstance(error, bytes) else str(error)
            return published, redis.ResponseError(message or "the event was not published")
        return published, None

    async def start(self) -> None:
        # Several owners may share one bus (an app and a second app on the same runtime): the
        # connection closes when the last of them stops, not under the others' feet.
        self._owners += 1
        self._owner_loops.append(asyncio.get_running_loop())
        await self._ensure_reading()

    def _reading(self) -> bool:
        reader = self._reader
        return reader is not None and not reader.done() and reader.get_loop().is_running()

    async def _ensure_reading(self) -> None:
        if self._reading():
            return
        lock = self._start_locks.setdefault(asyncio.get_running_loop(), asyncio.Lock())
        async with lock:
            if not self._reading():
                await self._start_reading()

    async def _start_reading(self) -> None:
        if self._reader is not None:
            # The loop the reader ran on has stopped (an app that started it is gone while
            # another still serves): its task and connection went with it, so read again from
            # this loop, or no event would reach this process's subscribers any more.
            self._reader, self._pubsub, self._async = None, None, None
        self._async = aredis.Redis.from_url(self._url)
        self._pubsub = self._async.pubsub(ignore_subscribe_messages=True)
        # A pubsub connection needs one channel before it can be read; after a restart, the
        # topics local subscribers and listeners still wait on are subscribed again.
        await self._pubsub.subscribe(self._channel("_bus.alive"),
                                     *(self._channel(t) for t in sorted(self._fanout.topics())))
        self._reader = asyncio.create_task(self._read(), name="redis-bus-reader")

    async def stop(self) -> None:
        self._owners = max(self._owners - 1, 0)
        here = asyncio.get_running_loop()
        with contextlib.suppress(ValueError):
            self._owner_loops.remove(here)
        if self._owners:
            # This owner's loop is about to end, and the reader with it: another owner still
            # listens, so read from its loop now rather than leave it deaf until its next
            # subscribe. Events published during the hand-over (one SUBSCRIBE) are lost, as on
            # a reconnect; reading from both at once would deliver them twice instead.
            heir = next((loop for loop in self._owner_loops
                         if loop is not here and loop.is_running()), None)
            reader = self._reader
            if heir is not None and (reader is None or reader.get_loop() is here
                                     or not self._reading()):  # or its loop already gone
                await self._hand_over(heir)
            return
        await self._close_reading()
        self._sync.close()

    async def _close_reading(self) -> None:
        reader, pubsub, client = self._reader, self._pubsub, self._async
        self._reader, self._pubsub, self._async = None, None, None

        async def close() -> None:  # on the reader's loop: its task and streams belong there
            if reader is not None:
                reader.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await reader
            if pubsub is not None:
                await pubsub.aclose()
            if client is not None:
                await client.aclose()

        loop = reader.get_loop() if reader is not None else asyncio.get_running_loop()
        if loop is asyncio.get_running_loop():
            await close()
        elif loop.is_running():  # the last owner stops from a loop other than the reader's
            await self._await_on(asyncio.run_coroutine_threadsafe(close(), loop), loop)
        # else: started by an owner whose loop has ended without stopping the bus; its task
        # and streams cannot be awaited or closed from here, only dropped.

    async def _hand_over(self, loop: asyncio.AbstractEventLoop) -> None:
        """Stop reading on this loop and start reading on `loop` (another owner's)."""
        await self._close_reading()
        future = asyncio.run_coroutine_threadsafe(self._ensure_reading(), loop)
        try:
            await self._await_on(future, loop)
        except Exception:  # that owner's next subscribe starts a reader (as when its loop dies)
            log.exception("could not hand the redis bus reader over to another event loop")

    @staticmethod
    async def _await_on(future: concurrent.futures.Future[Any],
                        loop: asyncio.AbstractEventLoop) -> None:
        """Wait for a coroutine run on another loop, at most _REMOTE_LOOP_TIMEOUT_S, and no
        longer than that loop runs: a loop that stops with it queued never runs it."""
        waiting = asyncio.wrap_future(future)
        deadline = asyncio.get_running_loop().time() + _REMOTE_LOOP_TIMEOUT_S
        while True:
            done, _ = await asyncio.wait({waiting}, timeout=0.1)
            if done:
                waiting.result()  # its exception, if any
                return
            if not loop.is_running():
                future.cancel()
                return
            if asyncio.get_running_loop().time() >= deadline:
                future.cancel()
                raise TimeoutError("the event loop reading the redis bus did not answer")

    async def _read(self) -> None:
        prefix = f"{self._ns}:events:"
        while True:
            try:
                message = await self._pubsub.get_message(timeout=1.0)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("redis bus read failed; retrying")
                await asyncio.sleep(0.5)
                continue
            if message is None or message.get("type") != "message":
                continue
            channel = message["channel"].decode()
            if not channel.startswith(prefix):
                continue
            try:
                event = Event.from_json(message["data"])
            except (ValueError, KeyError):
                log.warning("malformed event on %s", channel)
                continue
            self._fanout.deliver(event)

    async def subscribe(self, topic: str) -> Subscription:
        await self._ensure_reading()
        sub = Subscription(self._fanout, topic)
        if self._fanout.add(sub):
            await self._sync_channel(topic)
        return sub

    async def listen(self, topic: str, listener: Listener) -> None:
        await self._ensure_reading()
        if self._fanout.listen(topic, listener):
            await self._sync_channel(topic)

    async def unlisten(self, topic: str, listener: Listener) -> None:
        if self._fanout.unlisten(topic, listener):
            await self._sync_channel(topic)

    async def _sync_channel(self, topic: str) -> None:
        """Subscribe the pub/sub connection to the topic's channel if anyone here still wants
        it, else unsubscribe: decided when the command runs, so a subscribe and an unsubscribe
        racing from two loops end as the local state says. Run on the loop that reads the
        connection: its streams belong to that loop, and a second app on the runtime serves
        from a loop of its own (writing from there is not thread-safe, and a reconnect from
        there would bind the connection to the wrong loop)."""

        async def apply() -> None:
            if self._pubsub is None:
                return
            channel = self._channel(topic)
            if self._fanout.count(topic):
                await self._pubsub.subscribe(channel)
            else:
                await self._pubsub.unsubscribe(channel)

        reader = self._reader
        if reader is None:
            if self._pubsub is not None:  # being started, on this loop: as before the reader
                await apply()
            return  # stopped: a start subscribes every topic wanted then
        loop = reader.get_loop()
        if reader.done() or not loop.is_running():
            return  # nobody reads that connection: the next subscribe replaces it (as above)
        if loop is asyncio.get_running_loop():
            await apply()
            return
        command = apply()
        try:
            future = asyncio.run_coroutine_threadsafe(command, loop)
        except RuntimeError:  # that loop has closed: the next subscribe reads from a new one
            command.close()
            return
        # Bounded: a loop that stops with the command queued would never run it; the reader
        # is then replaced at the next subscribe, which subscribes every local topic again.
        try:
            await self._await_on(future, loop)
        finally:
            # Given up on a loop that stopped before starting it: it never will (no warning
            # of a coroutine never awaited when that loop is closed).
            if (future.cancelled() and not loop.is_running()
                    and inspect.getcoroutinestate(command) == inspect.CORO_CREATED):
                command.close()

    def ping(self) -> None:
        self._sync.ping()

    def subscribers(self, topic: str) -> int:
        [(_, count)] = self._sync.pubsub_numsub(self._channel(topic))
        return int(count)


def make_bus(redis_url: str | None, namespace: str = "alphintra") -> Bus:
    return RedisBus(redis_url, namespace) if redis_url else InProcessBus()
