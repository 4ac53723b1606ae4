"""A query over graphql-transport-ws: on the HTTP pipeline (compiled plan, `execute_operation`)
against strawberry's execution as before, in one run (issue 14, "One GraphQL pipeline").

    .venv/bin/python bench/ws_query.py [--requests N] [--rounds R] [--database-url URL]

One gateway (uvicorn in a thread of this process, one worker, a scratch SQLite database unless
--database-url) and one socket sending the issue's query (`jobs(first: 50)` with each job's
creator, bench/_servers.py's QUERY) one after the other: `subscribe`, wait for `complete`.
Rounds alternate the two paths on the same socket (`SubscriptionEndpoint.single_on_pipeline`
True/False, which the handler reads per message) so drift and the other load on the machine
fall on both. Checks that both paths answer the same `data`. Prints each path's median
latency per query and queries/s (medians of the rounds) and the ratio pipeline/strawberry.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import uvicorn
import websockets
from _servers import QUERY
from graphql_throughput import drop_tenant, seed, settings_env

from gateway.app import create_app
from gateway.cli import migrate_database
from gateway.http.websocket import SubscriptionEndpoint
from gateway.runtime import build_runtime
from gateway.settings import Settings

PATHS = ("pipeline", "strawberry")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=300, help="queries per round and path")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--database-url", default=None)
    return parser.parse_args(argv)


def subscriptions_of(app: Any) -> SubscriptionEndpoint:
    for route in app.routes:
        if isinstance(getattr(route, "app", None), SubscriptionEndpoint):
            return route.app
    raise RuntimeError("no WebSocket route")


async def answer(ws: Any, op_id: str) -> dict[str, Any]:
    """`op_id`'s `next` payload, after its `complete` arrived."""
    await ws.send(json.dumps({"id": op_id, "type": "subscribe",
                              "payload": {"query": QUERY, "operationName": "Page"}}))
    payload: dict[str, Any] | None = None
    while True:
        message = json.loads(await ws.recv())
        if message.get("id") != op_id:
            continue
        if message["type"] == "next":
            payload = message["payload"]
        elif message["type"] == "complete" and payload is not None:
            return payload
        else:
            raise RuntimeError(f"unexpected answer: {message}")


async def measure(url: str, key: str, endpoint: SubscriptionEndpoint, requests: int,
                  rounds: int) -> dict[str, list[list[float]]]:
    times: dict[str, list[list[float]]] = {p: [] for p in PATHS}
    async with websockets.connect(url, subprotocols=["graphql-transport-ws"]) as ws:
        await ws.send(json.dumps({"type": "connection_init",
                                  "payload": {"Authorization": f"Bearer {key}"}}))
        await ws.recv()
        answers = {}
        for path in PATHS:  # warm-up, and the check that both answer the same data
            endpoint.single_on_pipeline = path == "pipeline"
            for i in range(20):
                answers[path] = await answer(ws, f"w-{path}-{i}")
        if answers["pipeline"]["data"] != answers["strawberry"]["data"] or \
                "errors" in answers["pipeline"]:
            raise RuntimeError("the two paths answer differently")
        n = 0
        for r in range(rounds):
            for path in PATHS if r % 2 == 0 else PATHS[::-1]:
                endpoint.single_on_pipeline = path == "pipeline"
                taken = []
                for _ in range(requests):
                    n += 1
                    started = time.perf_counter()
                    await answer(ws, str(n))
                    taken.append(time.perf_counter() - started)
                times[path].append(taken)
    endpoint.single_on_pipeline = True
    return times


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory() as scratch:
        url = args.database_url or f"sqlite:///{Path(scratch) / 'bench.db'}"
        os.environ.update(settings_env(url))  # rate limits off, as in graphql_throughput.py
        settings = Settings.from_env().with_(embedded_worker="off")
        migrate_database(settings)
        runtime = build_runtime(settings)
        seeded = seed(runtime)
        app = create_app(runtime=runtime)
        server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning",
                                               ws="websockets-sansio", lifespan="on"))
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        while not server.started:
            time.sleep(0.02)
        port = server.servers[0].sockets[0].getsockname()[1]
        try:
            times = asyncio.run(measure(f"ws://127.0.0.1:{port}/graphql", seeded.key,
                                        subscriptions_of(app), args.requests, args.rounds))
        finally:
            server.should_exit = True
            thread.join(timeout=20)
            if args.database_url:  # a scratch SQLite file goes with its directory
                drop_tenant(runtime, seeded.tenant_id)
            runtime.close()
    print(f"{args.rounds} rounds x {args.requests} sequential queries per path, one socket "
          f"({settings.execution} execution)")
    medians = {}
    for path in PATHS:
        per_round = [statistics.median(t) for t in times[path]]
        rates = [len(t) / sum(t) for t in times[path]]
        medians[path] = (statistics.median(per_round), statistics.median(rates))
        p99 = statistics.median(sorted(t)[int(len(t) * 0.99) - 1] for t in times[path])
        print(f"{path:>10}: median {medians[path][0] * 1e3:.2f} ms, p99 {p99 * 1e3:.2f} ms, "
              f"{medians[path][1]:.0f} queries/s")
    print(f"pipeline/strawberry queries/s: {medians['pipeline'][1] / medians['strawberry'][1]:.2f}x; "
          f"latency {medians['pipeline'][0] / medians['strawberry'][0]:.2f}x")


if __name__ == "__main__":
    main()
