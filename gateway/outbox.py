"""The transactional outbox: work a write triggers is committed with the write, then delivered.

A service adds outbox rows in the session of its domain write, so the row and the work it
stands for (a job's Dramatiq message, an event on the bus) commit or roll back together. A
dispatcher thread delivers committed rows and deletes them, retrying with backoff until the
broker or the bus takes them: a Redis outage delays work, it never loses it, and it never turns
a committed write into an error answer.

Two kinds of row:

- work rows (`add`), delivered by the dispatcher only, woken at once by a local commit and
  otherwise polling (`outbox_poll_ms`); rows are taken `FOR UPDATE SKIP LOCKED` on PostgreSQL,
  so every gateway and worker runs a dispatcher and none delivers a row twice;
- events (`event`), published by the writer right after its commit (so subscribers see them as
  soon as before, in commit order), with the row as the guarantee: a publish that fails leaves
  the row to the dispatcher, which publishes pending events in id order, one process at a time
  (a PostgreSQL advisory lock), after a short grace that keeps it from racing the writer.
  A commit's events, and the dispatcher's due events, go out together (`Bus.publish_many`, one
  round trip on Redis), which stops at the first that fails: it and those after it stay rows.

Delivery is at least once: a process that dies between delivering and deleting delivers again.
Consumers are idempotent (a job message for a job that is not QUEUED is dropped; an event is a
snapshot of current state).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import JSON, BigInteger, Column, Index, Integer, delete, event, func, or_, select
from sqlalchemy import inspect as sa_inspect
from sqlalchemy.orm import Session
from sqlmodel import Field, SQLModel

from gateway.background import SharedThread
from gateway.db import Database, UTCDateTime, on_outermost_commit, utcnow
from gateway.events import Bus, Event, Listener, PublishInterrupted, Subscription

log = logging.getLogger(__name__)

EVENT = "event"
PENDING_KEY = "alphintra.outbox.pending"
HOOKED_KEY = "alphintra.outbox.hooked"
BATCH = 200
# An event row is left to the writer at least this long before a dispatcher may publish it: the
# writer publishes right after commit, and its own dispatcher deletes what it published on its
# next round (at most a poll, or a retry wait, later).
MIN_EVENT_GRACE_S = 2.0
# One process at a time publishes pending events, so a topic's events keep their order.
EVENT_LOCK_KEY = 0x0A1F_0B0C  # pg_try_advisory_xact_lock key; any constant of our own
# After an inline publish fails, the next ones go straight to the outbox for this long instead
# of each request waiting on a bus that is down.
BUS_COOLDOWN_S = 1.0
# A failed row stays at the head of its kind (the dispatcher backs off as a whole, so order is
# kept through an outage) until it has failed this often; then it is postponed on its own.
HEAD_OF_LINE_ATTEMPTS = 20

Handler = Callable[[dict[str, Any]], None]


class OutboxRow(SQLModel, table=True):
    """Work committed with a domain write and not yet delivered (deleted once it is)."""

    __tablename__ = "outbox"
    __table_args__ = (
        Index("ix_outbox_kind_key", "kind", "key"),
        Index("ix_outbox_available_at", "available_at"),
    )

    # BIGINT on PostgreSQL; INTEGER on SQLite, where only that type autoincrements.
    id: int | None = Field(default=None, sa_column=Column(
        BigInteger().with_variant(Integer(), "sqlite"), primary_key=True, autoincrement=True))
    kind: str = Field(max_length=16)  # "event", or a handler's name ("job")
    key: str = Field(max_length=200)  # an event's topic; a job's id
    payload: dict[str, Any] = Field(sa_column=Column(JSON, nullable=False))
    created_at: datetime = Field(default_factory=utcnow,
                                 sa_column=Column(UTCDateTime(), nullable=False))
    available_at: datetime = Field(default_factory=utcnow,
                                   sa_column=Column(UTCDateTime(), nullable=False))
    attempts: int = 0
    last_error: str | None = Field(default=None, max_length=500)


class Outbox:
    """Rows in the caller's session, delivery after commit, and the dispatcher thread."""

    def __init__(self, db: Database, bus: Bus, *, poll_ms: int = 500,
                 retry_max_ms: int = 5_000) -> None:
        self.db = db
        self.bus = bus
        self.poll_s = poll_ms / 1000
        self.retry_max_s = retry_max_ms / 1000
        self.event_grace = timedelta(seconds=max(MIN_EVENT_GRACE_S,
                                                 self.poll_s + self.retry_max_s))
        # Events are published by the batch (deliver_once); the handler stands for the kind.
        self.handlers: dict[str, Handler] = {EVENT: self._publish_event}
        self._wake = threading.Event()
        self._loop = SharedThread("outbox-dispatcher", self._run, wake=self._wake.set)
        self._published: list[int] = []  # event rows published inline, deleted on the next tick
        self._handoff: set[int] = set()  # event rows whose inline publish failed: due at once
        self._published_lock = threading.Lock()
        self._bus_down_until = 0.0
        self._backlog = False  # events wait in the outbox: new ones must not overtake them
        self._failures = 0
        self._postgres = db.engine.dialect.name == "postgresql"

    # Writing rows (inside the caller's transaction).
    def register(self, kind: str, handler: Handler) -> None:
        """`handler(payload)` delivers one row of `kind`, raising if it could not."""
        if kind in self.handlers:
            raise ValueError(f"outbox kind {kind!r} is already registered")
        self.handlers[kind] = handler

    def add(self, session: Session, kind: str, key: str, payload: dict[str, Any], *,
            delay_s: float = 0.0) -> OutboxRow:
        """A row the dispatcher delivers once the session commits (and `delay_s` has passed)."""
        if kind not in self.handlers:
            raise ValueError(f"no outbox handler for {kind!r}")
        now = utcnow()
        row = OutboxRow(kind=kind, key=key[:200], payload=payload, created_at=now,
                        available_at=now + timedelta(seconds=delay_s))
        session.add(row)
        self._pending(session).append((row, False))
        return row

    def event(self, session: Session, topic: str, payload: dict[str, Any]) -> OutboxRow:
        """An event published when the session commits; kept for the dispatcher if that fails."""
        now = utcnow()
        # While earlier events wait in the outbox (the bus failed), new ones queue behind them
        # rather than overtake them: the dispatcher publishes them all, in order, at once.
        inline = not self._inline_paused()
        row = OutboxRow(kind=EVENT, key=topic[:200],
                        payload={"topic": topic, "payload": payload}, created_at=now,
                        available_at=now + self.event_grace if inline else now)
        session.add(row)
        self._pending(session).append((row, inline))
        return row

    def publish(self, topic: str, payload: dict[str, Any]) -> Event | None:
        """For a write already committed: publish now (the event), or keep the event for the
        dispatcher (None). Never raises: the write happened, and a client must not be told
        otherwise."""
        return self.publish_many([(topic, payload)])[0]

    def publish_many(self, items: Sequence[tuple[str, dict[str, Any]]]) -> list[Event | None]:
        """`publish` for several committed events, in one round trip: those the bus did not
        take (the first that failed and all after it) are kept for the dispatcher, in order."""
        published: list[Event] = []
        if items and not self._inline_paused():
            published = self._publish_all(items)
        rest = items[len(published):]
        if rest:
            try:
                with self.db.system_transaction() as session:
                    session.add_all([OutboxRow(kind=EVENT, key=topic[:200],
                                               payload={"topic": topic, "payload": payload})
                                     for topic, payload in rest])
                self._wake.set()
            except Exception:
                log.exception("events could not be published nor kept; they are lost",
                              extra={"topics": sorted({topic for topic, _ in rest})})
        return [*published, *[None] * len(rest)]

    def _publish_all(self, items: Sequence[tuple[str, dict[str, Any]]]) -> list[Event]:
        """The events the bus took: all, or those before the first that failed (the bus is
        then marked down)."""
        try:
            return self.bus.publish_many(items)
        except PublishInterrupted as exc:
            self._bus_failed(items[len(exc.published)][0])
            return exc.published
        except Exception:
            self._bus_failed(items[0][0])
            return []

    def committed_bus(self) -> CommittedBus:
        return CommittedBus(self)

    def _inline_paused(self) -> bool:
        return self._backlog or time.monotonic() < self._bus_down_until

    def _pending(self, session: Session) -> list[tuple[OutboxRow, bool]]:
        if not session.info.get(HOOKED_KEY):
            session.info[HOOKED_KEY] = True
            event.listen(session, "after_commit", on_outermost_commit(self._after_commit))
            event.listen(session, "after_soft_rollback", self._after_rollback)
        return session.info.setdefault(PENDING_KEY, [])

    @staticmethod
    def _after_rollback(session: Session, previous_transaction: Any) -> None:
        if previous_transaction.parent is None:  # the outermost transaction: rows are gone
            session.info.pop(PENDING_KEY, None)

    def _after_commit(self, session: Session) -> None:
        # Rows added in a savepoint that rolled back were never committed: they have no identity.
        rows: list[tuple[OutboxRow, bool]] = [
            (row, inline) for row, inline in session.info.pop(PENDING_KEY, [])
            if sa_inspect(row).has_identity]
        if not rows:
            return
        inline: list[OutboxRow] = []
        held: list[OutboxRow] = []  # inline events after one queued for the dispatcher
        queued = wake = False
        for row, publish in rows:
            if not publish:  # work for the dispatcher, or an event queued behind a backlog
                wake = True
                queued = queued or row.kind == EVENT
            else:  # those after a queued event must not overtake it
                (held if queued else inline).append(row)
        done: list[OutboxRow] = []
        if inline and not self._inline_paused():
            taken = self._publish_all([(r.payload["topic"], r.payload["payload"]) for r in inline])
            done = inline[:len(taken)]
        # Not published: the rows stay, and the dispatcher publishes them (in order, with those
        # behind them) as soon as the bus is back, without waiting out the grace.
        left = [row.id for row in [*inline[len(done):], *held] if row.id is not None]
        if left:
            with self._published_lock:
                self._handoff.update(left)
            wake = True
        published = [row.id for row in done if row.id is not None]
        if published:
            if self.running:
                with self._published_lock:
                    self._published.extend(published)
            else:  # no dispatcher here to tidy up later: delete now
                self._delete_ids(published)
        if wake:
            self._wake.set()

    def _bus_failed(self, topic: str) -> None:
        self._bus_down_until = time.monotonic() + BUS_COOLDOWN_S
        self._backlog = self.running  # with no dispatcher here, rows wait for another process's
        log.warning("publishing an event failed; the outbox will deliver it",
                    extra={"topic": topic}, exc_info=True)

    def _publish_event(self, payload: dict[str, Any]) -> None:
        self.bus.publish(payload["topic"], payload["payload"])

    def _delete_ids(self, ids: list[int]) -> None:
        try:
            with self.db.system_transaction() as session:
                session.execute(delete(OutboxRow).where(OutboxRow.id.in_(ids)))  # type: ignore[union-attr]
        except Exception:  # they are published again after the grace: a duplicate, not a loss
            log.exception("deleting published outbox rows failed")

    # The dispatcher.
    @property
    def running(self) -> bool:
        return self._loop.running

    def start(self) -> None:
        """Start the dispatcher (idempotent per owner; `stop` by each owner)."""
        self._loop.start()

    def stop(self, *, force: bool = False) -> None:
        if self._loop.stop(force=force):
            self._flush_published()

    def wake(self) -> None:
        self._wake.set()

    def _run(self) -> None:
        while not self._loop.stopping.is_set():
            self._wake.clear()  # before the round: a wake during it starts the next one at once
            delay = self.poll_s
            try:
                self._flush_published()
                delivered, failed = self.deliver_once()
                if failed:
                    self._failures += 1
                    delay = self._backoff(self._failures)
                else:
                    self._failures = 0
                    if delivered >= BATCH:
                        delay = 0.0  # more are waiting
                    elif not self._handoff:
                        self._backlog = False  # caught up: writers publish inline again
            except Exception:
                self._failures += 1
                delay = self._backoff(self._failures)
                log.exception("outbox dispatch failed; retrying in %.1f s", delay)
            if delay:
                self._wake.wait(delay)

    def _backoff(self, failures: int) -> float:
        return min(0.1 * 2 ** min(failures, 16), self.retry_max_s)

    def _flush_published(self) -> None:
        with self._published_lock:
            ids, self._published = self._published, []
        if ids:
            self._delete_ids(ids)

    def deliver_once(self, *, now: datetime | None = None) -> tuple[int, int]:
        """Deliver the rows that are due; returns (delivered, failed). One transaction: rows
        are locked while delivered, deleted when delivered, postponed when not."""
        now = now or utcnow()
        delivered: list[int] = []
        failed = 0
        with self._published_lock:
            handoff = list(self._handoff)
        with self.db.system_transaction() as session:
            due = OutboxRow.available_at <= now
            if handoff:
                due = or_(due, OutboxRow.id.in_(handoff))  # type: ignore[union-attr]
            stmt = select(OutboxRow).where(due)
            if self._postgres and not session.execute(
                    select(func.pg_try_advisory_xact_lock(EVENT_LOCK_KEY))).scalar():
                stmt = stmt.where(OutboxRow.kind != EVENT)  # another process publishes events
            stmt = stmt.order_by(OutboxRow.id).limit(BATCH).with_for_update(skip_locked=True)  # type: ignore[arg-type]
            rows = session.execute(stmt).scalars().all()
            # The due events go out together, in id order, up to the first that fails.
            events = [row for row in rows if row.kind == EVENT]
            taken, event_error = self._publish_rows(events)
            blocked: set[str] = set()  # a kind whose delivery failed waits, keeping its order
            for row in rows:
                if row.kind in blocked:
                    continue
                handler = self.handlers.get(row.kind)
                try:
                    if row.kind == EVENT:
                        if event_error is not None and row is events[taken]:
                            raise event_error
                    elif handler is None:
                        raise LookupError(f"no outbox handler for {row.kind!r}")
                    else:
                        handler(row.payload)
                except Exception as exc:
                    failed += 1
                    blocked.add(row.kind)
                    row.attempts += 1
                    row.last_error = f"{type(exc).__name__}: {exc}"[:500]
                    if row.attempts >= HEAD_OF_LINE_ATTEMPTS:
                        # Likely this row, not the broker: let the rows behind it pass.
                        row.available_at = now + timedelta(seconds=self._backoff(row.attempts))
                    session.add(row)
                    log.warning("outbox delivery failed (attempt %s); retrying", row.attempts,
                                extra={"kind": row.kind, "key": row.key}, exc_info=True)
                    continue
                delivered.append(row.id)  # type: ignore[arg-type]
            if delivered:
                session.execute(delete(OutboxRow).where(OutboxRow.id.in_(delivered)))  # type: ignore[union-attr]
        # Handed-off rows stay due at once only while they wait here (failed or blocked);
        # delivered, or taken by another process, they are done.
        waiting = {row.id for row in rows} - set(delivered)
        with self._published_lock:
            self._handoff.difference_update(set(handoff) - waiting)
        return len(delivered), failed

    def _publish_rows(self, rows: Sequence[OutboxRow]) -> tuple[int, Exception | None]:
        """Publish event rows in order: how many the bus took, and why the next one failed."""
        if not rows:
            return 0, None
        items: list[tuple[str, dict[str, Any]]] = []
        malformed: Exception | None = None
        for row in rows:
            try:
                items.append((row.payload["topic"], row.payload["payload"]))
            except (KeyError, TypeError) as exc:  # this row fails; those after it wait
                malformed = exc
                break
        try:
            taken = len(self.bus.publish_many(items))
        except PublishInterrupted as exc:
            return len(exc.published), exc.__cause__ if isinstance(exc.__cause__, Exception) else exc
        except Exception as exc:
            return 0, exc
        return taken, malformed

    def pending(self, kind: str | None = None) -> int:
        """Rows not yet delivered (for health checks and tests)."""
        with self.db.system_session() as session:
            stmt = select(func.count()).select_from(OutboxRow)
            if kind is not None:
                stmt = stmt.where(OutboxRow.kind == kind)
            return int(session.execute(stmt).scalar_one())


class CommittedBus:
    """The bus as a service that publishes what it has just committed sees it: `publish` goes
    through the outbox, so a bus that is down keeps the event (delivered later, in order)
    instead of raising and turning a committed write into an error answer. Subscribing and
    listening are the bus's own."""

    def __init__(self, outbox: Outbox) -> None:
        self._outbox = outbox

    def publish(self, topic: str, payload: dict[str, Any]) -> Event | None:
        return self._outbox.publish(topic, payload)

    def publish_many(self, items: Sequence[tuple[str, dict[str, Any]]]) -> list[Event | None]:
        return self._outbox.publish_many(items)

    async def subscribe(self, topic: str) -> Subscription:
        return await self._outbox.bus.subscribe(topic)

    async def listen(self, topic: str, listener: Listener) -> None:
        await self._outbox.bus.listen(topic, listener)

    async def unlisten(self, topic: str, listener: Listener) -> None:
        await self._outbox.bus.unlisten(topic, listener)

    async def start(self) -> None:
        await self._outbox.bus.start()

    async def stop(self) -> None:
        await self._outbox.bus.stop()

    def ping(self) -> None:
        self._outbox.bus.ping()

    def subscribers(self, topic: str) -> int:
        return self._outbox.bus.subscribers(topic)
