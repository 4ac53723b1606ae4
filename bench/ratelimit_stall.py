"""Rate limits on a Redis that accepts connections and never answers: what a request waits, and
how long the event loop stops, for the loop path's `RedisBuckets.atake` (redis.asyncio, what a
response-cache hit answered on the event loop awaits) against the blocking `take` (what the
request threads call), the latter called on the loop too to show what a blocking call there
would cost. Alternated per round, in one run.

    .venv/bin/python bench/ratelimit_stall.py [--rounds R]

Prints, per path, the median wait per request and the longest the event loop went without
running a 10 ms ticker (its lag). Needs no Redis: the stalled server is a socket in this process.
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import statistics
import sys
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gateway.http.ratelimit import Bucket, RedisBuckets


def _stalled_server() -> int:
    """A TCP server that accepts and never answers (a Redis stuck, or a black-holed route)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(128)
    held: list[socket.socket] = []

    def accept() -> None:
        while True:
            held.append(listener.accept()[0])

    threading.Thread(target=accept, daemon=True).start()
    return int(listener.getsockname()[1])


async def _measure(call: Callable[[], Awaitable[object]]) -> tuple[float, float]:
    """(seconds the call took, the loop's longest lag meanwhile)."""
    lags: list[float] = []
    done = False

    async def ticker() -> None:
        while not done:
            at = time.perf_counter()
            await asyncio.sleep(0.01)
            lags.append(time.perf_counter() - at - 0.01)

    tick = asyncio.create_task(ticker())
    await asyncio.sleep(0.05)
    started = time.perf_counter()
    await call()
    took = time.perf_counter() - started
    done = True
    await tick
    return took, max(lags, default=0.0)


async def main(rounds: int) -> None:
    buckets = RedisBuckets(f"redis://127.0.0.1:{_stalled_server()}/15", "bench")
    wanted = [Bucket("key:bench", "key", 10.0, 20)]

    async def on_loop_async() -> object:
        return await buckets.atake(wanted)

    async def on_loop_blocking() -> object:
        return buckets.take(wanted)

    async def in_thread() -> object:
        return await asyncio.to_thread(buckets.take, wanted)

    paths = {"atake on the loop (hits, after)": on_loop_async,
             "take in a request thread (before)": in_thread,
             "take called on the loop (never done)": on_loop_blocking}
    results: dict[str, list[tuple[float, float]]] = {name: [] for name in paths}
    for _ in range(rounds):
        for name, call in paths.items():
            results[name].append(await _measure(call))
    print(f"Redis stalled (accepts, never answers); socket timeout 1 s; {rounds} rounds alternated")
    print(f"{'path':40} {'wait s':>8} {'loop lag ms':>12}")
    for name, got in results.items():
        wait = statistics.median(t for t, _ in got)
        lag = statistics.median(lag for _, lag in got)
        print(f"{name:40} {wait:8.2f} {lag * 1000:12.1f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    asyncio.run(main(parser.parse_args().rounds))
