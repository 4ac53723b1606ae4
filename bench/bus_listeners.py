"""What apps served and stopped on one runtime leave on its bus (the long-session flake).

    .venv/bin/python bench/bus_listeners.py [--database-url URL] [--redis-url URL] [--apps K]
                                            [--tenants T] [--rounds R]

A runtime outlives the apps served on it (the test suite serves dozens on one runtime; the
bus allows several owners). Each app's lifespan registers bus listeners: the policy reload,
its sockets' revocations, the marketplace's. One run, on one database, alternating:

- `leaked`: K apps served and stopped with their listeners left behind (the behaviour before
  the fix: `Listeners.close` not run);
- `removed`: K apps served and stopped as they are now.

After each, the number of `policy.changed` listeners on the bus and the time one such event
takes to dispatch (median of R dispatches, run on the caller's thread as the Redis reader runs
them on its loop), with a policy of T onboarded tenants. Without --database-url a SQLite file
in a temporary directory; PostgreSQL and Redis: scratch ones of your own (Redis: a DB number
of yours; keys are namespaced).
"""

from __future__ import annotations

import argparse
import base64
import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gateway import events
from gateway.app import create_app
from gateway.auth.policy import POLICY_TOPIC
from gateway.cli import migrate_database
from gateway.db import utcnow
from gateway.events import Event
from gateway.runtime import Runtime, build_runtime
from gateway.settings import Settings
from tests.support import LiveServer


def serve_and_stop(runtime: Runtime, apps: int) -> None:
    for _ in range(apps):
        with LiveServer(create_app(runtime=runtime)):
            pass


def dispatch_ms(runtime: Runtime, rounds: int) -> tuple[int, float]:
    fanout = runtime.bus._fanout  # type: ignore[attr-defined]  # either bus's local delivery
    event = Event(POLICY_TOPIC, 0, {"at": utcnow().isoformat()}, utcnow().isoformat())
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        fanout.deliver(event)
        times.append((time.perf_counter() - started) * 1e3)
    return fanout.count(POLICY_TOPIC), statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url")
    parser.add_argument("--redis-url", default=os.environ.get("ALPHINTRA_REDIS_URL"),
                        help="without it, no policy reload listens (one process needs none)")
    parser.add_argument("--apps", type=int, default=20, help="apps served and stopped per round")
    parser.add_argument("--tenants", type=int, default=300, help="tenants in the policy")
    parser.add_argument("--rounds", type=int, default=5, help="dispatches measured per mode")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        url = args.database_url or f"sqlite:///{tmp}/bench.db"
        settings = Settings(database_url=url, redis_url=args.redis_url,
                            redis_namespace=f"alphintra-bench-{uuid.uuid4().hex[:8]}",
                            embedded_worker="off", warm_on_start=False, log_json=False,
                            secret_key=base64.b64encode(os.urandom(32)).decode())
        migrate_database(settings)
        runtime = build_runtime(settings)
        suffix = uuid.uuid4().hex[:6]
        for i in range(args.tenants):
            slug = f"bench-{suffix}-{i}"
            runtime.tenancy.onboard(slug, f"Bench {i}", f"admin@{slug}.test")
        close = events.Listeners.close
        results: dict[str, tuple[int, float]] = {}
        try:
            with LiveServer(create_app(runtime=runtime)):  # the long-lived app holding the bus
                fanout = runtime.bus._fanout  # type: ignore[attr-defined]
                for mode in ("leaked", "removed", "leaked", "removed"):
                    saved = {t: list(ls) for t, ls in fanout._listeners.items()}
                    if mode == "leaked":
                        async def keep(self: events.Listeners) -> None:
                            self._closed = True  # as before the fix: nothing unregistered
                        events.Listeners.close = keep  # type: ignore[method-assign]
                    try:
                        serve_and_stop(runtime, args.apps)
                    finally:
                        events.Listeners.close = close  # type: ignore[method-assign]
                    count, ms = dispatch_ms(runtime, args.rounds)
                    print(f"{mode:8} after {args.apps} apps: {count:3} policy.changed listeners, "
                          f"{ms:8.1f} ms per event", flush=True)
                    previous = results.get(mode)
                    results[mode] = (count, ms if previous is None else min(previous[1], ms))
                    with fanout._lock:  # back to the long-lived app's own, for the next round
                        fanout._listeners.clear()
                        fanout._listeners.update(saved)
        finally:
            runtime.close()
        (leaked_n, leaked_ms), (removed_n, removed_ms) = results["leaked"], results["removed"]
        print(f"policy.changed dispatch: leaked {leaked_ms:.1f} ms ({leaked_n} listeners), removed "
              f"{removed_ms:.1f} ms ({removed_n} listeners): {leaked_ms / removed_ms:.1f}x")


if __name__ == "__main__":
    main()
