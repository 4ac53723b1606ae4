"""Audit trail: append and verify throughput.

    .venv/bin/python bench/audit_trail.py [--database-url URL] [--records N] [--batch B]
                                          [--threads T] [--processes] [--lanes L]
                                          [--hold-ms H]

Against a fresh SQLite file by default (or the database given: it must be migrated, e.g. a
scratch PostgreSQL database after `alphintra migrate`), with one tenant:

1. appends N order-event-like records (a dozen payload fields with Decimals and instants) in
   batches of B, each batch its own transaction as order intake does: records/s and the p50
   and p99 of one batch's append (lock the head, hash, one executemany);
2. the same with T threads appending to the one tenant at once: on PostgreSQL over its L lanes
   (gateway/audit/lanes.py: each thread's transaction takes a lane no other holds), on SQLite
   (one lane) taking turns; with `--processes`, T processes instead (each its own
   interpreter and connections, as gateway workers and the venue process are). With H, each
   transaction keeps its lane H ms after appending, before it commits (what a real writer's
   lock is held through: the commit's flush, round trips to a database across a network, a
   batch's other writes);
3. `verify` of the whole trail (every lane): records/s.

It ends by itself (about 10 s with the defaults).
"""

from __future__ import annotations

import argparse
import multiprocessing
import statistics
import sys
import tempfile
import threading
import time
import uuid
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gateway.audit import AuditEntry, AuditTrail
from gateway.cli import migrate_database
from gateway.db import Database
from gateway.settings import Settings
from gateway.tenancy.models import Tenant


def entries(n: int) -> list[AuditEntry]:
    now = datetime.now(UTC)
    return [AuditEntry("order.event", str(uuid.uuid4()), {
        "event": "FILL", "statusFrom": "ACCEPTED", "statusTo": "PARTIALLY_FILLED",
        "clOrdId": f"c-{i}", "account": "ACME-1", "symbol": "AAPL", "mic": "XNAS",
        "lastQty": Decimal("100"), "lastPx": Decimal("187.2500"), "cumQty": Decimal(i),
        "leavesQty": Decimal("900"), "at": now}, actor="user-1") for i in range(n)]


def append_batches(trail: AuditTrail, db: Database, tenant_id: str, batches: int, size: int,
                   hold_s: float = 0.0) -> list[float]:
    times = []
    for _ in range(batches):
        batch = entries(size)
        t0 = time.perf_counter()
        with db.tenant_transaction(tenant_id) as session:
            trail.append(session, tenant_id, batch)
            if hold_s:
                time.sleep(hold_s)  # the lane stays locked until the commit
        times.append(time.perf_counter() - t0)
    return times


def _process(url: str, lanes: int, tenant_id: str, batches: int, size: int, hold_s: float,
             start: Any, out: Any) -> None:
    """One of `--processes`: its own connections and trail, as a gateway worker has."""
    db = Database(url)
    trail = AuditTrail(db, lanes=lanes)
    start.wait()
    out.put(append_batches(trail, db, tenant_id, batches, size, hold_s))
    db.dispose()


def concurrently(url: str, trail: AuditTrail, db: Database, tenant_id: str, writers: int,
                 processes: bool, batches: int, size: int, hold_s: float) -> float:
    """Seconds for `writers` threads (or processes) to append `batches` batches each."""
    if not processes:
        workers = [threading.Thread(target=append_batches,
                                    args=(trail, db, tenant_id, batches, size, hold_s))
                   for _ in range(writers)]
        t0 = time.perf_counter()
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        return time.perf_counter() - t0
    context = multiprocessing.get_context("spawn")  # never fork a process holding connections
    start, out = context.Barrier(writers + 1), context.Queue()
    procs = [context.Process(target=_process, args=(url, trail.lanes.count, tenant_id, batches,
                                                    size, hold_s, start, out))
             for _ in range(writers)]
    for p in procs:
        p.start()
    start.wait()
    t0 = time.perf_counter()
    for _ in procs:
        out.get()
    elapsed = time.perf_counter() - t0
    for p in procs:
        p.join()
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--database-url", default=None)
    parser.add_argument("--records", type=int, default=20_000)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--processes", action="store_true",
                        help="the writers are processes (as gateway workers are), not threads")
    parser.add_argument("--lanes", type=int, default=4, help="ALPHINTRA_AUDIT_LANES (1 to 16)")
    parser.add_argument("--hold-ms", type=float, default=0.0,
                        help="writers: how long each transaction keeps its lane after appending")
    args = parser.parse_args()
    url = args.database_url
    if url is None:
        url = f"sqlite:///{tempfile.mkdtemp()}/audit-bench.db"
        migrate_database(Settings(database_url=url))
    db = Database(url)
    trail = AuditTrail(db, lanes=args.lanes)
    tenant = Tenant(slug=f"bench-{uuid.uuid4().hex[:8]}", name="bench")
    with db.system_transaction() as session:
        session.add(tenant)
    batches = max(1, args.records // args.batch)
    lanes = args.lanes if db.engine.dialect.name == "postgresql" else 1
    print(f"database: {db.engine.dialect.name}; {batches} batches of {args.batch}; {lanes} lanes")

    times = append_batches(trail, db, tenant.id, batches, args.batch)
    total = sum(times)
    p99 = statistics.quantiles(times, n=100)[98] if len(times) > 1 else times[0]
    print(f"append, 1 thread : {batches * args.batch / total:,.0f} records/s; per batch "
          f"p50 {statistics.median(times) * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms")

    per_thread = max(1, batches // args.threads)
    elapsed = concurrently(url, trail, db, tenant.id, args.threads, args.processes, per_thread,
                           args.batch, args.hold_ms / 1000)
    shared = "one lane: they take turns on its head" if lanes == 1 else f"{lanes} lanes"
    held = f", each holding its lane {args.hold_ms:g} ms" if args.hold_ms else ""
    writers = "processes" if args.processes else "threads"
    print(f"append, {args.threads} {writers}: "
          f"{per_thread * args.threads * args.batch / elapsed:,.0f} records/s (one tenant, "
          f"{shared}{held})")

    t0 = time.perf_counter()
    result = trail.verify(tenant.id)
    elapsed = time.perf_counter() - t0
    assert result.ok, result
    print(f"verify           : {result.checked / elapsed:,.0f} records/s ({result.checked:,} records "
          f"in {result.chains} {'lane' if result.chains == 1 else 'lanes'})")
    db.dispose()


if __name__ == "__main__":
    main()
