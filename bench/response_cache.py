"""Response-cache hits against the same query uncached and a raw Starlette route, in one run
(issue 14's target: hits >= 0.5x the raw route).

    .venv/bin/python bench/response_cache.py [--duration S] [--rounds R] [--warmup S]
        [--concurrency C] [--database-url URL]

The issue's query (`jobs(first: 50)` with each job's creator, a 10.5 KB answer) served by:
- `gateway`: the gateway with ALPHINTRA_RESPONSE_CACHE=off (every request executes);
- `gateway-cache`: the same with ALPHINTRA_RESPONSE_CACHE=on: after the first request every
  answer is a hit, answered on the event loop (authentication from the credential cache with
  its HMAC, rate limiting off as in graphql_throughput.py, the key and the lookup per request);
- `gateway-cache-thread`: the same, its hits sent through a request thread as before the loop
  path (`hits_on_loop = False`): the before of that change, in the same run;
- `raw`: a Starlette route answering the same JSON encoded once (bench/_servers.py).
Each in its own uvicorn process, one worker. Setup, servers and the wrk load loop are
bench/graphql_throughput.py's (same seeding, same check that every server answers the same
data, every answer under load 200 and full-size). Prints req/s, p50/p99 and server CPU per
request (medians of the rounds) and the ratios hit/raw (target >= 0.5), threaded hit/raw and
hit/uncached.
"""

from __future__ import annotations

import argparse
import json
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from _servers import bench_data
from graphql_throughput import (
    Round,
    Server,
    _interrupt,
    drop_tenant,
    request_body,
    request_headers,
    seed,
    settings_env,
    uvicorn_server,
    verify,
    wrk_round,
)

from gateway.cli import migrate_database
from gateway.runtime import build_runtime
from gateway.settings import Settings

TARGET = 0.5  # hits / raw route


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=5, help="seconds per round and target")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=3, help="seconds of warm-up per target")
    parser.add_argument("--concurrency", type=int, default=8, help="keep-alive connections")
    parser.add_argument("--wrk-threads", type=int, default=1)
    parser.add_argument("--database-url", default=None)
    return parser.parse_args(argv)


def check_hits(server: Server, key: str) -> None:
    """The cached server answers from its cache after the first request."""
    states = [httpx.post(f"{server.url}/graphql", content=request_body(), headers=request_headers(key),
                         timeout=30).headers.get("x-alphintra-cache") for _ in range(2)]
    if states != ["MISS", "HIT"] and states != ["HIT", "HIT"]:
        raise RuntimeError(f"{server.name} is not answering from its cache: {states}")


def median(rounds: list[Round], attribute: str) -> float | None:
    values = [getattr(r, attribute) for r in rounds if getattr(r, attribute) is not None]
    return statistics.median(values) if values else None


def report(results: dict[str, list[Round]]) -> None:
    print(f"\n{'target':<15}{'req/s':>10}{'p50 ms':>9}{'p99 ms':>9}{'CPU ms/req':>12}")
    rps: dict[str, float] = {}
    for name, rounds in results.items():
        rps[name] = statistics.median(r.rps for r in rounds)
        cpu = [r.server_cpu / r.requests for r in rounds if r.server_cpu is not None and r.requests]
        print(f"{name:<15}{rps[name]:>10.0f}{median(rounds, 'p50') * 1000:>9.2f}"  # type: ignore[operator]
              f"{median(rounds, 'p99') * 1000:>9.2f}"  # type: ignore[operator]
              f"{(statistics.median(cpu) * 1000 if cpu else float('nan')):>12.3f}")
    hit_raw = rps["gateway-cache"] / rps["raw"]
    print(f"\nhits / raw route:  {hit_raw:.2f}x  (target >= {TARGET}x: "
          f"{'met' if hit_raw >= TARGET else 'not met'})")
    print(f"threaded hits / raw route: {rps['gateway-cache-thread'] / rps['raw']:.2f}x  (before the "
          "event-loop path)")
    print(f"hits / threaded hits: {rps['gateway-cache'] / rps['gateway-cache-thread']:.2f}x")
    print(f"hits / uncached:   {rps['gateway-cache'] / rps['gateway']:.1f}x")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _interrupt)
    began = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="alphintra-bench-") as tmp:
        database_url = args.database_url or f"sqlite:///{Path(tmp) / 'bench.db'}"
        data_file = Path(tmp) / "page.json"
        env = {**settings_env(database_url), "BENCH_DATA_FILE": str(data_file)}
        settings = Settings.from_env(env)
        migrate_database(settings)
        runtime = build_runtime(settings)
        seeded = None
        servers = {
            "gateway": uvicorn_server("gateway", "gateway_app", 1,
                                      {**env, "ALPHINTRA_RESPONSE_CACHE": "off"}, Path(tmp)),
            "gateway-cache": uvicorn_server("gateway-cache", "gateway_app", 1,
                                            {**env, "ALPHINTRA_RESPONSE_CACHE": "on"}, Path(tmp)),
            "gateway-cache-thread": uvicorn_server(
                "gateway-cache-thread", "threaded_hits_gateway_app", 1,
                {**env, "ALPHINTRA_RESPONSE_CACHE": "on"}, Path(tmp)),
            "raw": uvicorn_server("raw", "raw_app", 1, env, Path(tmp)),
        }
        try:
            seeded = seed(runtime)
            data_file.write_text(json.dumps(bench_data(runtime, seeded.key)))
            for server in servers.values():
                server.start()
            for server in servers.values():
                server.wait_ready()
            sizes = verify(servers, seeded.key)
            for name in ("gateway-cache", "gateway-cache-thread"):
                check_hits(servers[name], seeded.key)
            print(f"verified: identical data; bytes {sizes}; the cached server answers HIT",
                  flush=True)
            results: dict[str, list[Round]] = {name: [] for name in servers}
            for name, server in servers.items():
                wrk_round(server, seeded.key, args.warmup, args, sizes[name])
            names = list(servers)
            for i in range(args.rounds):
                line = []
                for name in names if i % 2 == 0 else names[::-1]:
                    result = wrk_round(servers[name], seeded.key, args.duration, args, sizes[name])
                    results[name].append(result)
                    line.append(f"{name} {result.rps:.0f}")
                print(f"  round {i + 1}/{args.rounds} (req/s): " + ", ".join(line), flush=True)
            report(results)
        except (httpx.HTTPError, RuntimeError, subprocess.SubprocessError) as exc:
            print(f"\nbenchmark failed: {type(exc).__name__}: {exc}", file=sys.stderr)
            for server in servers.values():
                print(f"{server.name} log tail:\n{server.log_tail()}", file=sys.stderr)
            return 1
        finally:
            for server in servers.values():
                server.stop()
            if seeded is not None and args.database_url:
                drop_tenant(runtime, seeded.tenant_id)
            runtime.close()
    print(f"done in {time.monotonic() - began:.0f}s")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("\ninterrupted: servers stopped, temporary files removed", file=sys.stderr)
        sys.exit(130)
