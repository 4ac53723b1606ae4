"""Order intake through GraphQL into PostgreSQL: orders per second and the compliance check's
time per order.

    ALPHINTRA_DATABASE_URL=postgresql+psycopg://postgres@127.0.0.1:5432/bench_orders \\
        .venv/bin/python bench/order_intake.py [--orders 50000] [--batch 500] [--clients 3]

What it does (it ends by itself; a few minutes for the default 50,000 orders):

1. Migrates the database ALPHINTRA_DATABASE_URL names (PostgreSQL; refused otherwise, and
   never the shared `test` database) and creates a scratch tenant with an admin key and a
   US-domiciled trading account (ample credit, the duplicate guard off so generated orders
   that happen to repeat are not denied).
2. Starts the real gateway (`uvicorn _servers:gateway_app`) as a subprocess on that database.
3. Sends the orders as `submitOrders` batches from `--clients` threads: BTC-USD on ALPX, the
   platform's 24/7 venue (so the run works at any hour), buys: half marketable IOC orders that fill
   against the simulated book, half passive DAY limit orders that rest, prices within 3 % of
   the quote and on tick. Every order goes through validation, idempotency, routing, the US
   rule pack, the venue's matching engine and the database (orders, events, decisions,
   executions, positions, audit records).
4. Prints orders/s over the whole run (first request to last answer), the gateway process's
   CPU time per order over that time (the steadier figure when other work shares the cores),
   the per-order outcome counts, the audit records per order and the stored bytes of the
   order.submitted payload and of the compliance record, and p50/p99 of the compliance check
   per order, read back from the recorded decisions (`compliance_decision.elapsed_ns`: the
   engine's own time for the whole decision).

`--redis-url redis://127.0.0.1:6379/<a database of your own>` runs the gateway with Redis (its
bus and broker), as every scaled-out deployment does, and so with the shared venue process
(`alphintra venue serve`, started here on a spare port): every order's venue step is one call to
it. `--workers N` serves `alphintra serve --workers N` (needs `--redis-url`). The gateway's CPU is
then all its workers', and the venue process's is printed beside it.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import random
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter
from decimal import Decimal
from pathlib import Path

import httpx
from sqlalchemy import text

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from _procs import cpu_seconds, descendants, tree_cpu_seconds  # noqa: E402 (bench/)

from gateway.cli import migrate_database  # noqa: E402
from gateway.runtime import build_runtime  # noqa: E402
from gateway.settings import Settings  # noqa: E402

SUBMIT = """mutation($inputs: [SubmitOrderInput!]!) { submitOrders(inputs: $inputs) {
  clientOrderId error { code } order { id status } } }"""


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_gateway(env: dict[str, str], port: int, workers: int) -> subprocess.Popen[bytes]:
    if workers == 1:
        command = [sys.executable, "-m", "uvicorn", "_servers:gateway_app", "--factory",
                   "--app-dir", "bench", "--host", "127.0.0.1", "--port", str(port),
                   "--log-level", "warning", "--no-access-log"]
    else:  # spawned workers, each building its app from the environment
        command = [sys.executable, "-m", "gateway", "serve", "--host", "127.0.0.1",
                   "--port", str(port), "--workers", str(workers)]
    proc = subprocess.Popen(command, cwd=ROOT, env=env)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.2)
    proc.kill()
    raise SystemExit("the gateway did not start")


def start_venue(env: dict[str, str], port: int) -> subprocess.Popen[bytes]:
    import socket

    proc = subprocess.Popen([sys.executable, "-m", "gateway", "venue", "serve", "--host",
                             "127.0.0.1", "--port", str(port)], cwd=ROOT, env=env)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return proc
        except OSError:
            if proc.poll() is not None:
                raise SystemExit("the venue process exited") from None
            time.sleep(0.2)
    proc.kill()
    raise SystemExit("the venue process did not start")


def orders(n: int, mid: Decimal, seed: int) -> list[dict[str, str]]:
    rng = random.Random(seed)
    out = []
    for k in range(n):
        side = "BUY"  # a sale would need a position or a locate first
        qty = Decimal(rng.randint(1, 400)) / 10_000  # 0.0001 to 0.04 BTC
        if k % 2 == 0:  # marketable: crosses the spread
            price = mid * (Decimal("1.01") if side == "BUY" else Decimal("0.99"))
            tif = "IOC"
        else:  # passive: rests below the market
            price = mid * (Decimal(1) - Decimal(rng.randint(5, 300)) / 10_000)
            tif = "DAY"
        out.append({"clientOrderId": f"bench-{seed}-{k}", "account": "BENCH", "symbol": "BTC-USD",
                    "mic": "ALPX", "side": side, "ordType": "LIMIT", "timeInForce": tif,
                    "quantity": str(qty), "limitPrice": str(price.quantize(Decimal("0.01")))})
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--orders", type=int, default=50_000)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--clients", type=int, default=3)
    parser.add_argument("--redis-url", help="the gateway's bus and broker on this Redis, and the "
                        "shared venue process")
    parser.add_argument("--workers", type=int, default=1,
                        help="gateway worker processes (`alphintra serve --workers N`)")
    args = parser.parse_args()
    if args.workers > 1 and not args.redis_url:
        raise SystemExit("--workers N needs --redis-url (workers share state through Redis)")
    url = os.environ.get("ALPHINTRA_DATABASE_URL", "")
    if not url.startswith("postgresql") or url.rstrip("/").endswith("/test"):
        raise SystemExit("set ALPHINTRA_DATABASE_URL to a PostgreSQL database of your own "
                         "(createdb bench_orders), never the shared `test` database")
    # the scratch database's own key, for this process and the gateway it starts
    os.environ.setdefault("ALPHINTRA_SECRET_KEY", base64.b64encode(os.urandom(32)).decode())
    if args.redis_url:  # for this process and the gateway it starts
        os.environ["ALPHINTRA_REDIS_URL"] = args.redis_url
        os.environ["ALPHINTRA_REDIS_NAMESPACE"] = f"bench-intake-{int(time.time())}"
    settings = Settings.from_env().with_(warm_on_start=False, embedded_worker="off",
                                          rate_limit_key_per_second=0, rate_limit_tenant_per_second=0)
    migrate_database(settings)
    runtime = build_runtime(settings)
    slug = f"bench-{int(time.time())}"
    tenant, admin, (_, key) = runtime.tenancy.onboard(slug, "Order intake bench", f"admin@{slug}.test")
    runtime.orders.upsert_account(tenant.id, admin.id, code="BENCH", currency="USD", domicile="US",
                                  credit_limit="1000000000000", equity="1000000000000")
    runtime.orders.set_controls(tenant.id, admin.id, {"duplicate_window_ms": None})
    quote = runtime.market_data.quote("BTC-USD.ALPX", runtime.markets.now())
    assert quote is not None
    mid = (quote.bid + quote.ask) / 2
    runtime.close()

    env = {**os.environ, "ALPHINTRA_WARM_ON_START": "false", "ALPHINTRA_EMBEDDED_WORKER": "off",
           "ALPHINTRA_LOG_JSON": "false"}
    venue: subprocess.Popen[bytes] | None = None
    if args.redis_url:
        venue_port = free_port()
        venue = start_venue(env, venue_port)
        env["ALPHINTRA_VENUE_URL"] = f"tcp://127.0.0.1:{venue_port}"
        env["ALPHINTRA_DEFI_EMBEDDED"] = "false"  # `serve` beside Redis wants the chain shared
    port = free_port()
    try:
        proc = start_gateway(env, port, args.workers)
    except BaseException:
        if venue is not None:
            venue.terminate()
        raise
    all_orders = orders(args.orders, mid, seed=int(time.time()))
    batches = [all_orders[i:i + args.batch] for i in range(0, len(all_orders), args.batch)]
    outcomes: Counter[str] = Counter()
    lock = threading.Lock()
    cursor = iter(range(len(batches)))
    latencies: list[float] = []

    def client() -> None:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=300) as http:
            while True:
                with lock:
                    k = next(cursor, None)
                if k is None:
                    return
                began = time.perf_counter()
                response = http.post("/graphql", headers={"authorization": f"Bearer {key}",
                                                          "content-type": "application/json"},
                                     content=json.dumps({"query": SUBMIT,
                                                         "variables": {"inputs": batches[k]}}))
                took = time.perf_counter() - began
                body = response.json()
                if "errors" in body:
                    raise SystemExit(f"batch failed: {body['errors'][:1]}")
                counts = Counter(r["order"]["status"] if r["order"] else r["error"]["code"]
                                 for r in body["data"]["submitOrders"])
                with lock:
                    outcomes.update(counts)
                    latencies.append(took)

    try:
        # A first batch warms the gateway (plugins, calendars, caches); it is not counted.
        warm = orders(args.batch, mid, seed=1)
        for order in warm:
            order["clientOrderId"] = "warm-" + order["clientOrderId"]
        httpx.post(f"http://127.0.0.1:{port}/graphql", timeout=300,
                   headers={"authorization": f"Bearer {key}", "content-type": "application/json"},
                   content=json.dumps({"query": SUBMIT, "variables": {"inputs": warm}}))
        # `serve --workers N` has spawned its workers by now (it answered /healthz).
        gateway_pids = descendants(proc.pid)
        began, cpu_began = time.perf_counter(), tree_cpu_seconds(gateway_pids) or 0.0
        venue_began = (cpu_seconds(venue.pid) or 0.0) if venue is not None else 0.0
        threads = [threading.Thread(target=client) for _ in range(args.clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        elapsed = time.perf_counter() - began
        gateway_cpu = (tree_cpu_seconds(gateway_pids) or 0.0) - cpu_began
        venue_cpu = (cpu_seconds(venue.pid) or 0.0) - venue_began if venue is not None else None
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        if venue is not None:
            venue.terminate()
            try:
                venue.wait(timeout=30)
            except subprocess.TimeoutExpired:  # never left holding the database's books
                venue.kill()
                venue.wait()

    runtime = build_runtime(settings)
    with runtime.db.engine.connect() as conn:
        rows = conn.execute(text(
            "SELECT d.elapsed_ns FROM compliance_decision d WHERE d.tenant_id = :t "
            "AND d.client_order_id LIKE 'bench-%'"), {"t": tenant.id}).scalars().all()
        counts = conn.execute(text(
            "SELECT (SELECT count(*) FROM trade_order WHERE tenant_id = :t), "
            "(SELECT count(*) FROM execution WHERE tenant_id = :t), "
            "(SELECT count(*) FROM order_event WHERE tenant_id = :t)"), {"t": tenant.id}).one()
        # What each order costs in stored records: audit records and their payload bytes,
        # and the compliance decision's.
        sizes = conn.execute(text(
            "SELECT (SELECT count(*) FROM audit_record WHERE tenant_id = :t), "
            "(SELECT coalesce(avg(pg_column_size(payload)), 0) FROM audit_record "
            " WHERE tenant_id = :t AND kind = 'order.submitted'), "
            "(SELECT coalesce(avg(pg_column_size(record)), 0) FROM compliance_decision "
            " WHERE tenant_id = :t)"), {"t": tenant.id}).one()
    runtime.close()
    micros = sorted(ns / 1000 for ns in rows)

    def pct(p: float) -> float:
        return micros[min(len(micros) - 1, int(p * len(micros)))]

    done = sum(outcomes.values())
    print(f"orders: {done} in {elapsed:.1f} s from {args.clients} clients, batches of {args.batch}")
    print(f"throughput: {done / elapsed:,.0f} orders/s "
          f"(batch p50 {statistics.median(latencies) * 1000:.0f} ms)")
    workers = f", {args.workers} workers" if args.workers > 1 else ""
    print(f"gateway CPU: {gateway_cpu / done * 1e6:.0f} µs per order "
          f"({gateway_cpu / elapsed:.2f} of a core over the run{workers})")
    if venue_cpu is not None:
        print(f"venue process CPU: {venue_cpu / done * 1e6:.0f} µs per order "
              f"({venue_cpu / elapsed:.2f} of a core)")
    print("outcomes: " + ", ".join(f"{k} {v}" for k, v in sorted(outcomes.items())))
    print(f"rows: {counts[0]} orders, {counts[1]} executions, {counts[2]} order events (warm-up included)")
    print(f"records: {sizes[0] / max(counts[0], 1):.2f} audit records per order, order.submitted "
          f"payload {float(sizes[1]):.0f} B, compliance record {float(sizes[2]):.0f} B (stored)")
    print(f"compliance check per order: p50 {statistics.median(micros):.1f} µs, p99 {pct(0.99):.1f} µs "
          f"({len(micros)} decisions)")


if __name__ == "__main__":
    main()
