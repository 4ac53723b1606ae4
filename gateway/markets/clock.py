"""Clocks: what "now" is, and how to wait for a moment.

Everything in markets that needs the time takes a `Clock`, so a test can hold time still and
move it by hand (`ManualClock`) while the real gateway follows the system clock.
"""

from __future__ import annotations

import asyncio
import threading
from datetime import UTC, datetime, timedelta
from typing import Protocol, runtime_checkable

# A real sleep is cut into slices no longer than this, so a jump of the wall clock (NTP, a
# suspended VM) delays an event by at most this much.
MAX_SLEEP_SLICE = 30.0


@runtime_checkable
class Clock(Protocol):
    def now(self) -> datetime:
        """The current instant, timezone-aware UTC."""
        ...

    async def sleep_until(self, at: datetime) -> None:
        """Return once `now() >= at` (at once if it already is)."""
        ...


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)

    async def sleep_until(self, at: datetime) -> None:
        while (remaining := (at - self.now()).total_seconds()) > 0:
            await asyncio.sleep(min(remaining, MAX_SLEEP_SLICE))


class ManualClock:
    """Time that moves only when told to. Thread-safe: a test thread may `advance` it while
    sleepers wait on another thread's event loop."""

    def __init__(self, start: datetime) -> None:
        if start.tzinfo is None:
            raise ValueError("a ManualClock needs a timezone-aware start")
        self._now = start.astimezone(UTC)
        self._lock = threading.Lock()
        self._sleepers: list[tuple[datetime, asyncio.AbstractEventLoop, asyncio.Future[None]]] = []

    def now(self) -> datetime:
        with self._lock:
            return self._now

    @property
    def sleepers(self) -> int:
        """How many coroutines are waiting on this clock (tests wait for one before moving)."""
        with self._lock:
            return sum(1 for _, _, f in self._sleepers if not f.done())

    def set(self, at: datetime) -> None:
        if at.tzinfo is None:
            raise ValueError("a ManualClock moves only to timezone-aware instants")
        with self._lock:
            if at < self._now:
                raise ValueError("a ManualClock does not go backwards")
            self._now = at.astimezone(UTC)
            due = [(loop, f) for when, loop, f in self._sleepers if when <= self._now]
            self._sleepers = [s for s in self._sleepers if s[0] > self._now and not s[2].done()]
        for loop, future in due:
            loop.call_soon_threadsafe(_resolve, future)

    def advance(self, delta: timedelta) -> None:
        self.set(self.now() + delta)

    async def sleep_until(self, at: datetime) -> None:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        with self._lock:
            if at <= self._now:
                return
            self._sleepers.append((at, loop, future))
        try:
            await future
        finally:
            with self._lock:
                self._sleepers = [s for s in self._sleepers if s[2] is not future]


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
