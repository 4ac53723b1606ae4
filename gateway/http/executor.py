"""Where a request's synchronous work runs: off the event loop, on at most `request_threads`
threads at a time.

A GraphQL request authenticates, reads the database and executes synchronously. Run inline it
would stop the event loop (WebSocket pings, other requests) for as long as it takes, and
measured it also served about half as many requests (the loop idles while a request waits on
the database). Spread over anyio's default limiter (40 threads) every concurrent request gets a
thread of its own, and on a GIL they only contend: under 8 concurrent requests a limiter of 4
used 2-5 % less CPU per request than the default one, at the same throughput
(bench/graphql_throughput.py, alternated rounds, SQLite and PostgreSQL). Requests beyond the
limit wait their turn in the pool's queue, which costs nothing.

The hop is a `concurrent.futures.ThreadPoolExecutor` of `threads` threads per executor, the
caller's context variables copied into the thread (as run_in_threadpool did: request id,
tenant scope, tracing span). anyio's `to_thread.run_sync` did the same with a capacity limiter
for about twice the event loop's CPU per hop (its cancel scope, limiter and token bookkeeping:
45-62 µs against 22-27 µs a hop, 8 concurrent no-op hops at a time on uvloop). A cancelled caller
still waits for work under way to finish rather than abandoning it (its effects are kept, as
with anyio's default); work that had not started yet is dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from threading import Lock
from typing import TypeVar

T = TypeVar("T")


class RequestExecutor:
    """Runs synchronous request work on at most `threads` threads at a time (per executor)."""

    def __init__(self, threads: int) -> None:
        if threads < 1:
            raise ValueError("a request executor needs at least one thread")
        self.threads = threads
        self._pool: ThreadPoolExecutor | None = None  # threads start on first use
        self._lock = Lock()

    @property
    def pool(self) -> ThreadPoolExecutor:
        if self._pool is None:
            with self._lock:
                if self._pool is None:
                    self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="request")
        return self._pool

    def close(self) -> None:
        """Let the threads go (the app's shutdown: no request is left); a later `run` starts
        new ones."""
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=False)

    async def run(self, fn: Callable[..., T], *args: object) -> T:
        future: Future[T] = self.pool.submit(_in_context, contextvars.copy_context(), fn, args)
        waiter = asyncio.wrap_future(future)
        try:
            # shielded: cancelling the caller must not mark the work's future cancelled
            return await asyncio.shield(waiter)
        except asyncio.CancelledError:
            if not future.cancel():  # under way: let it finish, then be cancelled
                await _finished(waiter)
            raise


def _in_context(context: contextvars.Context, fn: Callable[..., T], args: tuple[object, ...]) -> T:
    try:
        return context.run(fn, *args)
    except StopIteration as exc:
        # An asyncio future refuses a StopIteration (TypeError in the loop's callback): the
        # caller would wait forever, even once cancelled. anyio converted it the same way.
        raise RuntimeError("request work raised StopIteration") from exc


async def _finished(waiter: asyncio.Future[object]) -> None:
    while not waiter.done():
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait({waiter})
    if not waiter.cancelled():
        waiter.exception()  # retrieved: the caller was cancelled, the work's outcome is moot
