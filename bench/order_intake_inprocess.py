"""Order intake in process: `OrderService.submit_many` on batches of 500, no HTTP, one thread,
so the gateway's own CPU per order and the statements per batch show without the GraphQL layer
or a load generator (bench/order_intake.py measures the whole path).

    ALPHINTRA_DATABASE_URL=postgresql+psycopg://postgres@127.0.0.1:5432/<scratch database> \\
        .venv/bin/python bench/order_intake_inprocess.py [--orders 4000] [--profile]

The orders are bench/order_intake.py's (BTC-USD on ALPX, half marketable IOC, half resting DAY),
for a fresh tenant with the duplicate guard off; one batch warms up first. Prints orders/s
(wall), process CPU per order, the statements per order and per batch (COPY is not a statement
the engine sees: it is counted apart from them by psycopg), the statements by kind with their
time, and with `--profile` cProfile's top functions. To compare two trees, run this file of each
tree (`sys.path` starts at the tree the script is in) alternately on the same database. Also
prints p50/p99 of the compliance check (`compliance_decision.elapsed_ns`); `--no-checkpoints`
turns the audit trail's signed checkpoints off, to see what their background verification
costs the intake's thread.

`--redis-url redis://127.0.0.1:6379/<a database of your own>` puts the bus on Redis (RedisBus,
as every scaled-out deployment runs) and alternates the batches between publishing a batch's
events together (`publish_many`: one round trip) and one by one (one round trip each), and
prints CPU per order, orders/s and bus round trips per order of each.
"""

from __future__ import annotations

import argparse
import base64
import cProfile
import os
import pstats
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from order_intake import orders as generated  # noqa: E402
from sqlalchemy import event, text  # noqa: E402

from gateway.cli import migrate_database  # noqa: E402
from gateway.events import publish_each  # noqa: E402
from gateway.runtime import build_runtime  # noqa: E402
from gateway.scope import tenant_scope  # noqa: E402
from gateway.settings import Settings  # noqa: E402
from gateway.trading.intake import OrderInput  # noqa: E402

BATCH = 500


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--orders", type=int, default=4000)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--sort", default="cumulative", choices=("cumulative", "tottime"),
                        help="the profile's order: cumulative, or each function's own time")
    parser.add_argument("--no-checkpoints", action="store_true",
                        help="no signed checkpoints on append (their background verification "
                             "shares the interpreter with the intake)")
    parser.add_argument("--redis-url", help="the bus on this Redis; batches alternate between "
                                            "publish_many and publishing one by one")
    args = parser.parse_args()
    url = os.environ.get("ALPHINTRA_DATABASE_URL", "")
    if url.rstrip("/").endswith("/test"):
        raise SystemExit("use a database of your own, never the shared `test` database")
    os.environ.setdefault("ALPHINTRA_SECRET_KEY", base64.b64encode(os.urandom(32)).decode())
    settings = Settings.from_env().with_(warm_on_start=False, embedded_worker="off")
    if args.redis_url:
        settings = settings.with_(redis_url=args.redis_url,
                                  redis_namespace=f"bench-intake-{int(time.time())}")
    migrate_database(settings)
    runtime = build_runtime(settings)
    if args.no_checkpoints:
        runtime.audit._key = None  # the trail then takes no checkpoint on append
    slug = f"inproc-{int(time.time() * 1000)}"
    tenant, admin, _ = runtime.tenancy.onboard(slug, "In-process intake", f"admin@{slug}.test")
    runtime.orders.upsert_account(tenant.id, admin.id, code="BENCH", currency="USD", domicile="US",
                                  credit_limit="1000000000000", equity="1000000000000")
    runtime.orders.set_controls(tenant.id, admin.id, {"duplicate_window_ms": None})
    quote = runtime.market_data.quote("BTC-USD.ALPX", runtime.markets.now())
    assert quote is not None
    mid = (quote.bid + quote.ask) / 2

    def batches(n: int, seed: int) -> list[list[OrderInput]]:
        made = [OrderInput(o["clientOrderId"], "BENCH", "BTC-USD", "BUY", o["quantity"], "LIMIT",
                           o["timeInForce"], limit_price=o["limitPrice"], mic="ALPX")
                for o in generated(n, mid, seed)]
        return [made[i:i + BATCH] for i in range(0, len(made), BATCH)]

    counts: Counter[str] = Counter()
    spent: Counter[str] = Counter()

    def before(conn: Any, cursor: Any, statement: str, *_: Any) -> None:
        conn.info["bench_began"] = time.perf_counter()

    def after(conn: Any, cursor: Any, statement: str, *_: Any) -> None:
        kind = " ".join(statement.split())[:80]
        counts[kind] += 1
        spent[kind] += time.perf_counter() - conn.info.pop("bench_began", time.perf_counter())

    modes = ("publish_many", "one by one") if args.redis_url else ("",)
    mode = modes[0]
    by_mode: dict[str, list[float]] = {m: [0.0, 0.0, 0.0, 0.0] for m in modes}  # wall, cpu, orders, trips
    if args.redis_url:
        script = runtime.bus._publish_script  # type: ignore[attr-defined]

        def counted(*a: Any, **k: Any) -> Any:  # one script call: one round trip
            by_mode[mode][3] += 1
            return script(*a, **k)

        runtime.bus._publish_script = counted  # type: ignore[attr-defined]

    def publish_one_by_one(on: bool) -> None:
        if on:  # the bench's switch: a batch's events as that many publish calls
            runtime.bus.publish_many = lambda items: publish_each(runtime.bus, items)  # type: ignore[method-assign]
        else:
            vars(runtime.bus).pop("publish_many", None)

    profile = cProfile.Profile()
    with tenant_scope(tenant.id):
        runtime.orders.submit_many(tenant.id, admin.id, batches(BATCH, 1)[0])  # warm-up
        work = batches(args.orders, int(time.time()))
        event.listen(runtime.db.engine, "before_cursor_execute", before)
        event.listen(runtime.db.engine, "after_cursor_execute", after)
        began, cpu = time.perf_counter(), time.process_time()
        if args.profile:
            profile.enable()
        for k, batch in enumerate(work):
            mode = modes[k % len(modes)]
            publish_one_by_one(mode == "one by one")
            batch_began, batch_cpu = time.perf_counter(), time.process_time()
            results = runtime.orders.submit_many(tenant.id, admin.id, batch)
            spent_mode = by_mode[mode]
            spent_mode[0] += time.perf_counter() - batch_began
            spent_mode[1] += time.process_time() - batch_cpu
            spent_mode[2] += len(batch)
            failed = [r.error for r in results if r.error is not None]
            if failed:
                raise SystemExit(f"orders refused: {failed[:2]}")
        publish_one_by_one(False)
        profile.disable()
        wall, cpu = time.perf_counter() - began, time.process_time() - cpu
        event.remove(runtime.db.engine, "before_cursor_execute", before)
        event.remove(runtime.db.engine, "after_cursor_execute", after)
    n = len(work) * BATCH
    total = sum(counts.values())
    print(f"{n} orders in {wall:.2f} s: {n / wall:,.0f} orders/s in process, "
          f"process CPU {cpu / n * 1e6:.0f} µs per order")
    for name, (w, c, k, trips) in by_mode.items() if args.redis_url else ():
        print(f"  {name}: {k:.0f} orders, {k / w:,.0f} orders/s, process CPU {c / k * 1e6:.0f} µs "
              f"per order, {trips / k:.3f} bus round trips per order")
    print(f"statements: {total / n:.3f} per order, {total / len(work):.1f} per batch of {BATCH} "
          "(COPY not counted)")
    for kind, k in counts.most_common(20):
        print(f"  {k:6d}  {spent[kind] / n * 1e6:7.1f} µs/order  {kind}")
    with runtime.db.engine.connect() as conn:
        micros = sorted(ns / 1000 for ns in conn.execute(text(
            "SELECT elapsed_ns FROM compliance_decision WHERE tenant_id = :t "
            "AND client_order_id NOT LIKE 'bench-1-%'"), {"t": tenant.id}).scalars())
    print(f"compliance check per order: p50 {micros[len(micros) // 2]:.1f} µs, "
          f"p99 {micros[int(0.99 * len(micros))]:.1f} µs")
    if args.profile:
        pstats.Stats(profile).sort_stats(args.sort).print_stats(40)
    runtime.close()


if __name__ == "__main__":
    main()
