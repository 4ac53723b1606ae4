"""What selected reads save on the orders page, the audit page and positions (issue 14, "reads
that select what was asked"); bench/selected_reads.py does the same for the jobs page.

    .venv/bin/python bench/selected_reads_trading.py [--database-url URL] [--calls N] [--rounds R]

Without --database-url it uses a SQLite file in a temporary directory (PostgreSQL: give a
scratch database of your own; the bench migrates it and onboards a tenant of its own, which
stays). 60 orders (with routing decisions as the router writes them) and 60 audit records
(payloads shaped as `order.submitted`'s, about 1 KB), 30 positions (3 accounts, 10 listed
instruments), and three queries:

    { orders(first: 50) { edges { node { id clientOrderId symbol side quantity status createdAt } } } }
    { auditRecords(first: 50) { edges { node { seq at kind subject } } } }
    { positions { account instrumentKey quantity avgPrice } }

In one run, on one database, the two paths alternated round by round (the machine is shared:
the alternation keeps both under the same load), for each page:

- `read`: the resolver's database work and objects alone: whole rows (`OrderService.list` and
  `Order.of`; `AuditTrail.records` and `AuditTrailRecord.of`; the valuation, `desk.valuate`,
  and `AccountPositionType.of`: the path before) against the selected read
  (`OrderQueries.page_columns`, `gateway.audit.reads.record_columns`, `desk.holdings`, and the
  row-backed objects);
- `execute`: the whole query executed in process on graphql-core with the gateway's schema
  and a real request context (permission check included), the whole-row path forced by making
  `RowShape.columns` answer None (what any selection it cannot map does), against the selected
  path.

Prints ms per page (median of rounds) and the whole/selected ratios; checks first that both
paths answer the same data.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from graphql import ExecutionResult, execute, parse
from selected_reads import per_call_ms, scratch_runtime  # the jobs bench's (bench/ is on the path)
from strawberry.execution.is_awaitable import optimized_is_awaitable

from gateway.audit import AuditEntry
from gateway.audit.reads import record_columns
from gateway.db import utcnow
from gateway.http.context import RequestContext
from gateway.runtime import Runtime
from gateway.scope import tenant_scope
from gateway.settings import Settings
from gateway.trading import desk
from gateway.trading.models import AccountPosition, Order, TradingAccount
from gateway.trading.queries import OrderCriteria
from schema import audit as audit_schema
from schema import desk as desk_schema
from schema import orders as order_schema
from schema.common import Connection
from schema.compose import build_schema
from schema.selected_rows import RowShape

QUERIES = {
    "orders": ("{ orders(first: 50) { edges { node { id clientOrderId symbol side quantity "
               "status createdAt } } } }"),
    "audit": "{ auditRecords(first: 50) { edges { node { seq at kind subject } } } }",
    "positions": "{ positions { account instrumentKey quantity avgPrice } }",
}
ROWS = 60


@contextmanager
def whole_rows() -> Iterator[None]:
    """The path before selected reads: every selection reads whole rows."""
    original = RowShape.__dict__["columns"]
    RowShape.columns = lambda self, fields: None  # type: ignore[method-assign,assignment,misc]
    try:
        yield
    finally:
        RowShape.columns = original  # type: ignore[method-assign]


def seed(rt: Runtime) -> tuple[str, str]:
    slug = f"bench-{uuid.uuid4().hex[:8]}"
    tenant, admin, (_, key) = rt.tenancy.onboard(slug, f"Bench {slug}", f"admin@{slug}.test")
    start = utcnow() - timedelta(hours=1)
    entries = []
    with rt.db.tenant_transaction(tenant.id) as session:
        for i in range(ROWS):
            at = start + timedelta(seconds=i)
            order = Order(
                tenant_id=tenant.id, client_order_id=f"bench-{i}", account="ACC1",
                symbol="AAPL", mic="XNAS", requested_mic="SMART", connector="sim_exchange",
                side="BUY" if i % 2 else "SELL", ord_type="LIMIT", time_in_force="DAY",
                quantity=Decimal(100 + i), limit_price=Decimal("189.25"), currency="USD",
                status="FILLED", cum_qty=Decimal(100 + i), leaves_qty=Decimal(0),
                avg_px=Decimal("189.2412"), fees=Decimal("0.95"), venue_order_id=f"XNAS-{i}",
                routing={"venue": "XNAS", "reason": "best expected cost", "arrival_price": "189.24",
                         "expected_price": "189.2431", "expected_fee": "0.0030",
                         "alternatives": [{"mic": m, "price": "189.25", "fee": "0.0030",
                                           "depth": "1200", "cost": "189.2530"}
                                          for m in ("XNAS", "ARCX", "BATS", "EDGX")]},
                created_by=admin.id, created_at=at, updated_at=at)
            session.add(order)
            entries.append(AuditEntry("order.submitted", order.id, {
                "event": "COMPLIANCE_PASS", "client_order_id": order.client_order_id,
                "account": "ACC1", "symbol": "AAPL", "mic": "XNAS", "side": order.side,
                "ord_type": "LIMIT", "time_in_force": "DAY", "quantity": str(order.quantity),
                "limit_price": "189.25", "stop_price": None, "status": "ACCEPTED",
                "reject_code": None,
                "compliance": {"decision": str(uuid.uuid4()), "passed": True, "codes": [],
                               "jurisdictions": ["US-SEC", "US-FINRA"], "elapsed_ns": 41_000 + i,
                               "rules": [{"rule": r, "passed": True, "detail": "within limit"}
                                         for r in ("max_order_value", "max_order_quantity",
                                                   "price_collar", "restricted_list",
                                                   "short_sale", "credit", "throttle")]}},
                admin.id))
        rt.audit.append(session, tenant.id, entries)
        # Ten instruments, one listing each (a position is keyed by ISIN, else SYMBOL.MIC).
        listed = list({i.isin or i.key: i for i in rt.market_data.instruments()}.values())[:10]
        for k, (code, currency) in enumerate((("ACC1", "USD"), ("ACC2", "EUR"), ("ACC3", "GBP"))):
            session.add(TradingAccount(tenant_id=tenant.id, code=code, currency=currency,
                                       domicile="US"))
            for j, listing in enumerate(listed):
                session.add(AccountPosition(
                    tenant_id=tenant.id, account=code, instrument_key=listing.isin or listing.key,
                    symbol=listing.symbol, mic=listing.mic, currency=listing.currency,
                    quantity=Decimal(10 * (j + k + 1)), avg_price=Decimal("101.25"),
                    realized_pnl=Decimal("12.5")))
    return tenant.id, key


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url")
    parser.add_argument("--calls", type=int, default=300, help="pages per round and path")
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()

    with scratch_runtime(args.database_url) as (rt, settings, url):
        samples = run(rt, settings, args.calls, args.rounds)

    backend = url.split(":", 1)[0]
    print(f"selected reads bench (orders, audit, positions): {backend}, {ROWS} rows each, page of 50, "
          f"{args.rounds} rounds of {args.calls} pages per path, alternated; "
          f"Python {sys.version.split()[0]}")
    median = {name: statistics.median(values) for name, values in samples.items()}
    for page, query in QUERIES.items():
        print(f"  {page}: {query}")
        for level in ("read", "execute"):
            for path in ("whole rows", "selected"):
                name = f"{page} {level}, {path}"
                print(f"    {level + ', ' + path:<30} {median[name]:8.3f} ms/page")
        for level in ("read", "execute"):
            whole, selected = median[f"{page} {level}, whole rows"], median[f"{page} {level}, selected"]
            print(f"    {level + ': whole rows / selected':<30} {whole / selected:8.2f}x  "
                  f"(saves {whole - selected:.3f} ms/page)")


def run(rt: Runtime, settings: Settings, calls: int, rounds: int) -> dict[str, list[float]]:
    tenant_id, key = seed(rt)
    principal = rt.authenticator.authenticate(key)
    gql = build_schema(settings)._schema

    def executor(query: str) -> Callable[[], ExecutionResult]:
        document = parse(query)

        def execute_page() -> ExecutionResult:
            context = RequestContext(runtime=rt, request_id="bench", principal=principal)
            with tenant_scope(tenant_id):
                result = execute(gql, document, context_value=context,
                                 is_awaitable=optimized_is_awaitable)
            assert not result.errors, result.errors
            return result

        return execute_page

    def in_whole(fn: Callable[[], object]) -> Callable[[], object]:
        def wrapped() -> object:
            with whole_rows():
                return fn()
        return wrapped

    order_columns = ("client_order_id", "symbol", "side", "quantity", "status", "created_at")
    build_order = order_schema.ORDER_ROWS.builder(order_schema.ORDER_ROWS.always + order_columns)
    record_cols = ("at", "kind", "subject")
    build_record = audit_schema.RECORD_ROWS.builder(audit_schema.RECORD_ROWS.always + record_cols)
    criteria = OrderCriteria()

    def orders_whole() -> Connection[Any]:
        return Connection.of(rt.orders.list(tenant_id, criteria, first=50), order_schema.Order.of)

    def orders_selected() -> Connection[Any]:
        return Connection.of(rt.orders.queries.page_columns(tenant_id, order_columns, criteria,
                                                            first=50), build_order)

    def audit_whole() -> object:
        return audit_schema.AuditRecordConnection.of(rt.audit.records(tenant_id, first=50))

    def audit_selected() -> object:
        page = record_columns(rt.audit, tenant_id, record_cols, first=50)
        return audit_schema.AuditRecordConnection.of(page, build_record)

    position_cols = ("quantity", "avg_price")
    build_position = desk_schema.POSITION_ROWS.values_builder(
        ("account", "instrument_key", *position_cols))

    def positions_whole() -> object:
        return [desk_schema.AccountPositionType.of(v)
                for v in rt.orders.valuate(tenant_id).positions]

    def positions_selected() -> object:
        return [build_position(v) for v in desk.holdings(rt.orders, tenant_id, position_cols)]

    paths: dict[str, Callable[[], object]] = {}
    for page, (whole, selected) in {"orders": (orders_whole, orders_selected),
                                    "audit": (audit_whole, audit_selected),
                                    "positions": (positions_whole, positions_selected)}.items():
        execute_page = executor(QUERIES[page])
        selected_data = execute_page().data
        with whole_rows():
            whole_data = execute_page().data
        assert selected_data == whole_data, page
        answer = next(iter(whole_data.values()))  # type: ignore[union-attr]
        assert len(answer if page == "positions" else answer["edges"]) == (  # type: ignore[index]
            30 if page == "positions" else 50)
        paths.update({f"{page} read, whole rows": whole, f"{page} read, selected": selected,
                      f"{page} execute, whole rows": in_whole(execute_page),
                      f"{page} execute, selected": execute_page})

    for fn in paths.values():  # warm-up
        per_call_ms(fn, max(1, calls // 5))
    samples: dict[str, list[float]] = {name: [] for name in paths}
    names = list(paths)
    for i in range(rounds):
        for name in names if i % 2 == 0 else names[::-1]:
            samples[name].append(per_call_ms(paths[name], calls))
    return samples


if __name__ == "__main__":
    main()
