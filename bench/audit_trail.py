"""Audit trail: append and verify throughput.

    .venv/bin/python bench/audit_trail.py [--database-url URL] [--records N] [--batch B]
                                          [--threads T]

Against a fresh SQLite file by default (or the database given: it must be migrated, e.g. a
scratch PostgreSQL database after `alphintra migrate`), with one tenant:

1. appends N order-event-like records (a dozen payload fields with Decimals and instants) in
   batches of B, each batch its own transaction as order intake does: records/s and the p50
   and p99 of one batch's append (lock the head, hash, one executemany);
2. the same with T threads appending to the one chain at once (they take turns on its head);
3. `verify` of the whole chain: records/s.

It ends by itself (about 10 s with the defaults).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
import uuid
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

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


def append_batches(trail: AuditTrail, db: Database, tenant_id: str, batches: int, size: int
                   ) -> list[float]:
    times = []
    for _ in range(batches):
        batch = entries(size)
        t0 = time.perf_counter()
        with db.tenant_transaction(tenant_id) as session:
            trail.append(session, tenant_id, batch)
        times.append(time.perf_counter() - t0)
    return times


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--database-url", default=None)
    parser.add_argument("--records", type=int, default=20_000)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--threads", type=int, default=4)
    args = parser.parse_args()
    url = args.database_url
    if url is None:
        url = f"sqlite:///{tempfile.mkdtemp()}/audit-bench.db"
        migrate_database(Settings(database_url=url))
    db = Database(url)
    trail = AuditTrail(db)
    tenant = Tenant(slug=f"bench-{uuid.uuid4().hex[:8]}", name="bench")
    with db.system_transaction() as session:
        session.add(tenant)
    batches = max(1, args.records // args.batch)
    print(f"database: {db.engine.dialect.name}; {batches} batches of {args.batch}")

    times = append_batches(trail, db, tenant.id, batches, args.batch)
    total = sum(times)
    p99 = statistics.quantiles(times, n=100)[98] if len(times) > 1 else times[0]
    print(f"append, 1 thread : {batches * args.batch / total:,.0f} records/s; per batch "
          f"p50 {statistics.median(times) * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms")

    per_thread = max(1, batches // args.threads)
    t0 = time.perf_counter()
    workers = [threading.Thread(target=append_batches, args=(trail, db, tenant.id, per_thread, args.batch))
               for _ in range(args.threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    elapsed = time.perf_counter() - t0
    print(f"append, {args.threads} threads: {per_thread * args.threads * args.batch / elapsed:,.0f} "
          "records/s (one chain: they take turns on its head)")

    t0 = time.perf_counter()
    result = trail.verify(tenant.id)
    elapsed = time.perf_counter() - t0
    assert result.ok, result
    print(f"verify           : {result.checked / elapsed:,.0f} records/s ({result.checked:,} records)")
    db.dispose()


if __name__ == "__main__":
    main()
