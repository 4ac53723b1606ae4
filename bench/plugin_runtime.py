"""What the plugin sandbox costs: calls into a sandboxed worker against the same plugin code
called in process.

    .venv/bin/python bench/plugin_runtime.py [--n 2000] [--http 400]

Part 1 runs built-in plugins twice, in process (as the gateway runs them) and in a sandboxed
worker through the wire and the proxies (as an installed plugin runs), and prints p50/p99 of
each call and the p50 added: a round trip (`ping`), a data source's `quote`, a compliance rule
pack's `check` (one call per order per pack), an exchange connector's `submit` (one per order).
Targets (issue 12): under 1 ms added per order for a rule pack or a connector.

Part 2 serves a live gateway (SQLite, in-process bus) with a tenant that installed a
one-field plugin, and times the same GraphQL request with and without the plugin's field over
HTTP, interleaved: the p50 difference is what a plugin field adds (target: under 0.5 ms).
"""

from __future__ import annotations

import argparse
import importlib
import json
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal as D
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from gateway.marketplace.sandbox.asks import answerer  # noqa: E402
from gateway.marketplace.sandbox.egress import EgressProxy  # noqa: E402
from gateway.marketplace.sandbox.proxies import describe  # noqa: E402
from gateway.marketplace.sandbox.supervisor import SDK_DIR, Limits, PluginSpec, Sandbox  # noqa: E402
from gateway.markets.directory import CalendarVenueDirectory  # noqa: E402
from marketplace.conformance import compare_hooks  # noqa: E402
from plugins.host import default_context  # noqa: E402
from plugins.sdk import (  # noqa: E402
    AccountState,
    ClientProfile,
    InstrumentFacts,
    MarketState,
    OrderRequest,
    OrdType,
    Side,
    TenantControls,
    TimeInForce,
)

AT = datetime(2025, 3, 4, 15, 0, tzinfo=UTC)


def timings(fn: Callable[[], Any], n: int) -> list[float]:
    for _ in range(min(50, n)):
        fn()
    out = []
    for _ in range(n):
        start = time.perf_counter()
        fn()
        out.append(time.perf_counter() - start)
    return out


def p(values: list[float], q: float) -> float:
    return sorted(values)[min(len(values) - 1, int(q * len(values)))] * 1e3


def row(name: str, local: list[float], remote: list[float]) -> None:
    print(f"{name:34} {p(local, .5):9.3f} {p(local, .99):9.3f} {p(remote, .5):9.3f} {p(remote, .99):9.3f} "
          f"{p(remote, .5) - p(local, .5):9.3f}")


def part1(n: int) -> None:
    venues = CalendarVenueDirectory()
    sandbox = Sandbox(Limits(), answerer(venues, EgressProxy()))
    print(sandbox.describe_layers())

    def pair(module_path: str, hook: str) -> tuple[Any, Any, Any]:
        module = importlib.import_module(module_path)
        _, implemented, _ = compare_hooks(module, module_path, [])
        managed = sandbox.managed(PluginSpec(
            key=f"bench-{uuid.uuid4().hex}", plugin_id=module_path, version="builtin", tenant_id=None,
            directory=SDK_DIR, sha256="0" * 64, entry_point=module_path, hooks=tuple(implemented),
            capabilities=frozenset(), venues=venues, builtin=True))
        local = getattr(module, hook)(context=default_context(module_path, venues=venues))[0]
        return local, describe(managed, hook)[0], managed

    print(f"\n{'call (ms)':34} {'in-proc p50':>9} {'p99':>9} {'sandbox p50':>9} {'p99':>9} {'added p50':>9}")
    local_src, remote_src, managed = pair("plugins.builtin.market_twin", "alphintra_market_data_sources")
    row("round trip (ping)", timings(lambda: None, n), timings(lambda: managed.call("ping"), n))
    aapl = next(i for i in local_src.instruments() if i.key == "AAPL.XNAS")
    row("data source quote()", timings(lambda: local_src.quote(aapl, AT), n),
        timings(lambda: remote_src.quote(aapl, AT), n))

    from gateway.compliance.engine import ComplianceEngine
    from plugins.builtin import BUILTINS
    from plugins.host import PluginHost

    local_pack, remote_pack, _ = pair("plugins.builtin.compliance.us", "alphintra_compliance_rule_packs")
    engine = ComplianceEngine.from_plugins(PluginHost(BUILTINS))
    order = OrderRequest("o-1", "ACC-1", "IBM", "XNYS", Side.BUY, OrdType.LIMIT, TimeInForce.DAY, D(100),
                         D("100.00"), None, "USD", None, AT)
    ctx = engine.context(order, instrument=InstrumentFacts(isin="US4592001014", currency="USD"),
                         client=ClientProfile("ACC-1", "INDIVIDUAL", "US"),
                         account=AccountState("ACC-1", "USD", D(10_000_000), D(10_000_000)),
                         market=MarketState(reference_price=D("100")), controls=TenantControls(tenant_id="t"),
                         now=AT, fx_rate=None)
    row("rule pack check() (per order)", timings(lambda: local_pack.check(ctx), n),
        timings(lambda: remote_pack.check(ctx), n))

    local_conn, remote_conn, _ = pair("plugins.builtin.sim_exchange.plugin", "alphintra_exchange_connectors")
    counter = iter(range(10**9))

    def order(connector: Any) -> Callable[[], None]:
        def run() -> None:  # IOC far from the market: the venue answers at once, nothing rests
            connector.submit(OrderRequest(f"b-{next(counter)}", "ACC-1", "BTC-USD", "ALPX", Side.BUY,
                                          OrdType.LIMIT, TimeInForce.IOC, D("0.01"), D("1000"), None, "USD",
                                          None, AT))
        return run

    row("connector submit() (per order)", timings(order(local_conn), n), timings(order(remote_conn), n))
    sandbox.close()


PLUGIN = '''
import strawberry
from plugins.sdk import PluginContext, SchemaExtension, hookimpl


@strawberry.type
class BenchQuery:
    @strawberry.field
    def bench_echo(self) -> str:
        return "echo"


@hookimpl
def alphintra_schema_extensions(context: PluginContext) -> list[SchemaExtension]:
    return [SchemaExtension(query=BenchQuery)]
'''


def part2(n: int) -> None:
    from gateway.app import create_app
    from gateway.cli import migrate_database
    from gateway.runtime import build_runtime
    from gateway.settings import Settings
    from marketplace.signing import generate_key, sign
    from tests.support import GraphQLClient, LiveServer, make_wheel, onboard

    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(database_url=f"sqlite:///{tmp}/bench.db", warm_on_start=False, log_json=False,
                            rate_limit_key_per_second=0, rate_limit_tenant_per_second=0,
                            secret_key="A" * 43 + "=", jwt_secret="bench", log_level="WARNING")
        migrate_database(settings)
        runtime = build_runtime(settings)
        with LiveServer(create_app(runtime=runtime)) as live:
            gql = GraphQLClient(live.url)
            tenant = onboard(runtime)
            private, public = generate_key()
            runtime.marketplace_publishing.register_vendor_key(tenant.id, tenant.admin_id, public, "Bench")
            manifest = {"id": "bench.echo", "name": "Echo", "vendor": "Bench", "version": "1.0.0",
                        "gateway": ">=0.1,<1.0", "category": "analytics", "entry_point": "bench_echo.plugin",
                        "hooks": ["alphintra_schema_extensions"], "capabilities": ["schema:extend"],
                        "config_schema": {"type": "object"}, "pricing": {"model": "free"}, "licence": "MIT"}
            files = {"bench_echo/__init__.py": b"", "bench_echo/plugin.py": PLUGIN.encode(),
                     "bench_echo/alphintra_manifest.json": json.dumps(manifest).encode()}
            wheel = make_wheel(files, "bench_echo", "1.0.0", manifest["id"], manifest["entry_point"])
            runtime.marketplace_publishing.publish(tenant.id, tenant.admin_id, wheel,
                                                   sign(wheel, manifest, private), "PRIVATE")
            runtime.marketplace.install(tenant.id, None, "bench.echo", "1.0.0", {})
            core, plugin = "{ viewer { tenant { id } } }", "{ viewer { tenant { id } } benchEcho }"
            assert gql.data(plugin, key=tenant.key)["benchEcho"] == "echo"
            without, with_ = [], []
            for i in range(n + 50):
                for query, out in ((core, without), (plugin, with_)):
                    start = time.perf_counter()
                    gql.data(query, key=tenant.key)
                    if i >= 50:
                        out.append(time.perf_counter() - start)
            print(f"\nGraphQL over HTTP, {n} requests each, interleaved:")
            print(f"  without the plugin field p50 {p(without, .5):.3f} ms  p99 {p(without, .99):.3f} ms")
            print(f"  with the plugin field    p50 {p(with_, .5):.3f} ms  p99 {p(with_, .99):.3f} ms")
            paired = statistics.median(b - a for a, b in zip(without, with_, strict=True)) * 1e3
            print(f"  added by the plugin field p50 {p(with_, .5) - p(without, .5):.3f} ms "
                  f"(median of paired differences {paired:.3f} ms)")
        runtime.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--http", type=int, default=400)
    args = parser.parse_args()
    part1(args.n)
    part2(args.http)


if __name__ == "__main__":
    main()
