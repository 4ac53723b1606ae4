"""What routing an order through an installed (sandboxed) exchange connector costs, against a
built-in one in process.

    .venv/bin/python bench/connector_routing.py [--orders 300]

One gateway runtime (a temporary SQLite database, the in-process bus) whose order service runs
on a manual clock set inside Singapore's morning session. A tenant installs the Lion example
(marketplace/examples/lion_exchange: XSES, in its sandboxed worker: venue, listings and
connector) through the real publication and installation path. Then, per order, the whole
intake (`OrderService.submit`: validation, routing, compliance, the connector, fills, the
database, audit) is timed for marketable IOC buys:

- D05 on XSES through the installed connector (routing asks it `quote_for`, then `submit`;
  compliance runs the SG pack; the reference price comes from its sandboxed listings);
- BTC-USD on ALPX through the built-in simulated exchange in process.

The two venues differ (rule packs, books), so the difference is an upper bound on what the
sandbox adds; `bench/plugin_runtime.py` isolates the connector call itself (same code, in
process against sandboxed). Target (issue 13): under 2 ms added per order.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from gateway.cli import migrate_database  # noqa: E402
from gateway.markets.clock import ManualClock  # noqa: E402
from gateway.markets.service import MarketsService  # noqa: E402
from gateway.runtime import bind_orders_view, build_runtime  # noqa: E402
from gateway.scope import tenant_scope  # noqa: E402
from gateway.settings import Settings  # noqa: E402
from gateway.trading.intake import OrderInput  # noqa: E402
from gateway.trading.models import TradingAccount  # noqa: E402
from gateway.trading.service import OrderService  # noqa: E402
from marketplace.signing import generate_key, sign  # noqa: E402

OPEN_SGX = datetime(2025, 3, 11, 2, 0, tzinfo=UTC)  # Tuesday, 10:00 in Singapore


def p(values: list[float], q: float) -> float:
    return sorted(values)[min(len(values) - 1, int(q * len(values)))] * 1e3


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--orders", type=int, default=300)
    args = parser.parse_args()
    from tests.test_marketplace_install import example_wheel

    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(database_url=f"sqlite:///{tmp}/bench.db", warm_on_start=False, log_json=False,
                            rate_limit_key_per_second=0, rate_limit_tenant_per_second=0,
                            secret_key="B" * 43 + "=", jwt_secret="bench", embedded_worker="off",
                            log_level="WARNING")
        migrate_database(settings)
        runtime = build_runtime(settings)
        clock = ManualClock(OPEN_SGX)
        markets = MarketsService(runtime.markets.directory, clock)
        orders = OrderService(runtime.db, runtime.bus, markets, runtime.market_data, runtime.plugins,
                              runtime.audit, max_page_size=settings.max_page_size)
        bind_orders_view(runtime.marketplace, runtime.builtin_plugins, orders)
        from schema.tenant import tenant_composer

        runtime.marketplace.bind_composer(tenant_composer(settings))
        vendor, admin, _ = runtime.tenancy.onboard("lion-vendor", "Lion", "ops@lion.test")
        private, public = generate_key()
        pub = runtime.marketplace_publishing
        pub.register_vendor_key(vendor.id, admin.id, public, "Lion Markets")
        wheel, manifest = example_wheel("lion_exchange", "lion_exchange")
        version = pub.publish(vendor.id, admin.id, wheel, sign(wheel, manifest, private), "COMMUNITY").version
        pub.review(None, version.id, "IN_REVIEW")
        pub.review(None, version.id, "APPROVED")
        tenant, user, _ = runtime.tenancy.onboard("desk", "Desk", "desk@bench.test")
        runtime.marketplace.install(tenant.id, user.id, "lion.sgx-connector", "1.0.0", {})
        with runtime.db.tenant_session(tenant.id) as session:
            for code, currency, domicile in (("SG-1", "SGD", "SG"), ("US-1", "USD", "US")):
                session.add(TradingAccount(tenant_id=tenant.id, code=code, currency=currency,
                                           domicile=domicile, credit_limit=Decimal(10**12),
                                           equity=Decimal(10**12)))
            session.commit()

        ticks = iter(range(1, 10**6))

        def run(symbol: str, mic: str, account: str, quantity: str, price: Decimal) -> list[float]:
            times = []
            for n in range(args.orders + 20):
                clock.set(OPEN_SGX + timedelta(seconds=next(ticks)))
                raw = OrderInput(client_order_id=f"{mic}-{n}", account=account, symbol=symbol, mic=mic,
                                 side="BUY", quantity=quantity, ord_type="LIMIT", time_in_force="IOC",
                                 limit_price=str(price))
                started = time.perf_counter()
                with tenant_scope(tenant.id):
                    result = orders.submit(tenant.id, user.id, raw)
                elapsed = time.perf_counter() - started
                if result.error is not None:
                    raise SystemExit(f"{symbol}.{mic}: {result.error}")
                if n >= 20:
                    times.append(elapsed)
            return times

        with tenant_scope(tenant.id):
            d05 = runtime.market_data.quote("D05.XSES", OPEN_SGX)
            btc = runtime.market_data.quote("BTC-USD.ALPX", OPEN_SGX)
        cent = Decimal("0.01")
        installed = run("D05", "XSES", "SG-1", "100", (d05.ask * Decimal("1.05")).quantize(cent))
        builtin = run("BTC-USD", "ALPX", "US-1", "0.01", (btc.ask * Decimal("1.01")).quantize(cent))
        print(runtime.marketplace.sandbox.describe_layers())
        print(f"{args.orders} marketable IOC orders each, the whole intake per order (ms):")
        for label, times in (("built-in connector (ALPX, in process)", builtin),
                             ("installed connector (XSES, sandboxed)", installed)):
            print(f"  {label:40} p50 {p(times, .5):.3f}  p99 {p(times, .99):.3f}")
        print(f"  added p50 {p(installed, .5) - p(builtin, .5):.3f} ms (target < 2 ms); "
              f"mean {(statistics.mean(installed) - statistics.mean(builtin)) * 1e3:.3f} ms")
        runtime.marketplace.stop()
        runtime.close()


if __name__ == "__main__":
    main()
