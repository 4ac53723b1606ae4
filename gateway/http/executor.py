"""Where a request's synchronous work runs: off the event loop, on at most `request_threads`
threads at a time.

A GraphQL request authenticates, reads the database and executes synchronously. Run inline it
would stop the event loop (WebSocket pings, other requests) for as long as it takes, and
measured it also served about half as many requests (the loop idles while a request waits on
the database). Spread over anyio's default limiter (40 threads) every concurrent request gets a
thread of its own, and on a GIL they only contend: under 8 concurrent requests a limiter of 4
used 2-5 % less CPU per request than the default one, at the same throughput
(bench/graphql_throughput.py, alternated rounds, SQLite and PostgreSQL). Requests beyond the
limit wait their turn on the event loop, which costs nothing.

anyio's worker threads run the work, so what run_in_threadpool guaranteed still holds: the
caller's context variables (request id, tenant scope, tracing span) are copied into the
thread, and a cancelled caller waits for the work under way to finish rather than abandoning it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import anyio.to_thread
from anyio import CapacityLimiter

T = TypeVar("T")


class RequestExecutor:
    """Runs synchronous request work on at most `threads` threads at a time (per process)."""

    def __init__(self, threads: int) -> None:
        if threads < 1:
            raise ValueError("a request executor needs at least one thread")
        self.threads = threads
        self._limiter: CapacityLimiter | None = None  # made on first use, inside the event loop

    @property
    def limiter(self) -> CapacityLimiter:
        if self._limiter is None:
            self._limiter = CapacityLimiter(self.threads)
        return self._limiter

    async def run(self, fn: Callable[..., T], *args: object) -> T:
        return await anyio.to_thread.run_sync(fn, *args, limiter=self.limiter)
