"""What the transactional outbox adds to a job submission, and how soon its message leaves.

    .venv/bin/python bench/outbox.py [--database-url URL] [--redis-url URL] [--jobs N]

Without --database-url it makes (and drops) a scratch PostgreSQL database on the local server
(postgres@127.0.0.1:5432), or falls back to a SQLite file if there is none. Without
--redis-url the bus and the broker are in process; with it, they are that Redis (give a Redis of
your own: the bench writes under a namespace of its own and deletes it).

Per job, interleaved so both see the same machine:

- "direct" is how a job was submitted before the outbox: the Job row committed alone, then the
  Dramatiq message enqueued and the QUEUED event published, in the request;
- "outbox" is `JobService.start` now: the Job row, its message and its event committed in one
  transaction, the event published after commit, the message left to the dispatcher (running,
  as in a gateway).

Prints the p50/p90/p99 of each in ms, the difference at p50 (the outbox's added latency per
job), and the dispatcher's delivery lag (commit to message on the broker) at p50/p90.

Per order (`--orders N`, interleaved the same way): an IOC market order submitted and filled
through `OrderService.submit` on a clock inside New York's session, "direct" publishing its
updates on the bus as orders did before, "outbox" through the outbox's committed bus as now (a
publish that fails is kept and delivered later instead of failing the committed order).
"""

from __future__ import annotations

import argparse
import base64
import os
import statistics
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqlalchemy import create_engine, text
from sqlalchemy.exc import OperationalError
from sqlmodel import select

from gateway.auth.principal import Principal
from gateway.cli import migrate_database
from gateway.jobs.delivery import RUN_JOB
from gateway.jobs.models import Job
from gateway.jobs.runner import job_topic, snapshot
from gateway.runtime import Runtime, build_runtime
from gateway.settings import Settings
from gateway.tenancy.models import Tenant

ADMIN_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
PARAMS = {"steps": 2, "step_seconds": 0.0, "fail_at_step": None}


def direct_start(rt: Runtime, principal: Principal) -> Job:
    """The submission path before the outbox (as JobService.start was), for comparison."""
    import dramatiq

    with rt.db.tenant_session(principal.tenant_id) as session:
        tenant = session.exec(select(Tenant)).one()
        job = Job(kind="diagnostics", params=dict(PARAMS), region=tenant.home_region,
                  created_by=principal.user_id, tenant_id=principal.tenant_id)
        session.add(job)
        session.commit()
    message: dramatiq.Message[Any] = dramatiq.Message(
        queue_name=job.region, actor_name=RUN_JOB, args=(job.id, job.tenant_id), kwargs={},
        options={})
    rt.broker.enqueue(message)
    rt.bus.publish(job_topic(job.id), snapshot(job))
    return job


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def scratch_postgres() -> tuple[str, Any] | None:
    name = f"alphintra_bench_{uuid.uuid4().hex[:8]}"
    admin = create_engine(ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    except OperationalError:
        admin.dispose()
        return None

    def drop() -> None:
        with admin.connect() as conn:
            conn.execute(text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                              "WHERE datname = :n AND pid <> pg_backend_pid()"), {"n": name})
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
        admin.dispose()

    return admin.url.set(database=name).render_as_string(hide_password=False), drop


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--database-url", default=None)
    parser.add_argument("--redis-url", default=None)
    parser.add_argument("--jobs", type=int, default=2000)
    parser.add_argument("--orders", type=int, default=1000)
    args = parser.parse_args()

    drop = None
    url = args.database_url
    if url is None:
        made = scratch_postgres()
        if made is not None:
            url, drop = made
        else:
            url = f"sqlite:///{tempfile.mkdtemp()}/bench.db"
    namespace = f"alphintra-bench-{uuid.uuid4().hex[:8]}"
    settings = Settings(database_url=url, redis_url=args.redis_url, redis_namespace=namespace,
                        embedded_worker="off", warm_on_start=False, log_json=False,
                        secret_key=base64.b64encode(os.urandom(32)).decode())
    migrate_database(settings)
    rt = build_runtime(settings)
    try:
        run(rt, args.jobs, url, args.redis_url)
        run_orders(rt, args.orders)
    finally:
        rt.close()
        if args.redis_url:
            import redis

            client = redis.Redis.from_url(args.redis_url)
            keys = list(client.scan_iter(match=f"{namespace}:*", count=1000))
            if keys:
                client.delete(*keys)
            client.close()
        if drop is not None:
            drop()


def run(rt: Runtime, jobs: int, url: str, redis_url: str | None) -> None:
    tenant, admin, _ = rt.tenancy.onboard(f"bench-{uuid.uuid4().hex[:8]}", "Bench", "a@bench.test")
    principal = Principal(tenant_id=tenant.id, tenant_slug=tenant.slug, user_id=admin.id,
                          via="api_key", roles=("admin",))

    # When each job's message reaches the broker (the dispatcher's side of the outbox).
    enqueued: dict[str, float] = {}
    lock = threading.Lock()
    real_enqueue = rt.broker.enqueue

    def timed_enqueue(message: Any, *a: Any, **k: Any) -> Any:
        result = real_enqueue(message, *a, **k)
        with lock:
            enqueued[message.args[0]] = time.perf_counter()
        return result

    rt.broker.enqueue = timed_enqueue  # type: ignore[method-assign]
    rt.outbox.start()  # as in a gateway: the dispatcher runs beside the requests
    try:
        for _ in range(50):  # warm both paths (connections, statement caches)
            direct_start(rt, principal)
            rt.jobs.start(principal, "diagnostics", dict(PARAMS))
        direct: list[float] = []
        outbox: list[float] = []
        committed: dict[str, float] = {}
        for i in range(jobs):
            for path in ((0, 1) if i % 2 else (1, 0)):
                started = time.perf_counter()
                if path == 0:
                    direct_start(rt, principal)
                    direct.append((time.perf_counter() - started) * 1e3)
                else:
                    job = rt.jobs.start(principal, "diagnostics", dict(PARAMS))
                    done = time.perf_counter()
                    outbox.append((done - started) * 1e3)
                    committed[job.id] = done
            if i % 500 == 499:
                for region in rt.settings.regions:
                    rt.broker.flush(region)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not all(j in enqueued for j in committed):
            time.sleep(0.05)
    finally:
        rt.outbox.stop(force=True)
        rt.broker.enqueue = real_enqueue  # type: ignore[method-assign]
    lag = [(enqueued[j] - t) * 1e3 for j, t in committed.items() if j in enqueued]

    backend = url.split(":", 1)[0]
    print(f"database {backend}, bus and broker {'Redis' if redis_url else 'in process'}, "
          f"{jobs} jobs per path, {os.cpu_count()} CPUs")
    for name, values in (("direct (no outbox)", direct), ("outbox", outbox)):
        print(f"  {name:20} p50 {pct(values, 0.5):6.3f} ms  p90 {pct(values, 0.9):6.3f} ms  "
              f"p99 {pct(values, 0.99):6.3f} ms  mean {statistics.fmean(values):6.3f} ms")
    print(f"  outbox added latency per job at p50: {pct(outbox, 0.5) - pct(direct, 0.5):+.3f} ms "
          "(target: under 1 ms)")
    if lag:
        print(f"  dispatcher delivery lag (commit to broker): p50 {pct(lag, 0.5):.3f} ms, "
              f"p90 {pct(lag, 0.9):.3f} ms, {len(lag)}/{len(committed)} delivered")


def run_orders(rt: Runtime, orders: int) -> None:
    from datetime import UTC, datetime, timedelta

    from gateway.markets.clock import ManualClock
    from gateway.markets.service import MarketsService
    from gateway.trading.intake import OrderInput
    from gateway.trading.service import OrderService

    tenant, admin, _ = rt.tenancy.onboard(f"bench-{uuid.uuid4().hex[:8]}", "Bench", "o@bench.test")
    clock = ManualClock(datetime(2025, 3, 12, 14, 30, tzinfo=UTC))  # New York open
    markets = MarketsService(rt.markets.directory, clock)

    def service(bus: Any) -> OrderService:
        return OrderService(rt.db, bus, markets, rt.market_data, rt.plugins, rt.audit,
                            max_page_size=rt.settings.max_page_size, market_state=rt.market_state)

    paths = {"direct (bus)": service(rt.bus), "outbox": service(rt.outbox.committed_bus())}
    rt.orders.upsert_account(tenant.id, admin.id, code="BENCH", currency="USD", domicile="US",
                             credit_limit="1000000000000", equity="1000000000000")
    times: dict[str, list[float]] = {name: [] for name in paths}

    def submit(svc: OrderService) -> float:
        order = OrderInput(client_order_id=uuid.uuid4().hex, account="BENCH", symbol="AAPL",
                           side="BUY", quantity="1", ord_type="MARKET", time_in_force="IOC",
                           mic="XNAS")
        started = time.perf_counter()
        svc.submit(tenant.id, admin.id, order)
        return (time.perf_counter() - started) * 1e3

    names = list(paths)
    for i in range(50 + orders):
        for name in (names if i % 2 else names[::-1]):
            took = submit(paths[name])
            if i >= 50:  # the first 50 warm both paths
                times[name].append(took)
        if i % 100 == 99:
            clock.advance(timedelta(seconds=60))  # fresh simulated liquidity
    print(f"orders: {orders} per path (IOC market, filled at the simulated venue)")
    for name, values in times.items():
        print(f"  {name:20} p50 {pct(values, 0.5):6.3f} ms  p90 {pct(values, 0.9):6.3f} ms  "
              f"p99 {pct(values, 0.99):6.3f} ms")
    added = pct(times["outbox"], 0.5) - pct(times["direct (bus)"], 0.5)
    print(f"  outbox added latency per order at p50: {added:+.3f} ms (target: under 1 ms)")


if __name__ == "__main__":
    main()
