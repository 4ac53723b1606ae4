"""Selected reads (issue 14) of orders (`orders`, `order(id)`), trades and audit records: one
statement reading only the columns a query asked for, answering exactly what the whole-row read
answers (same rows, order, cursors and filters), never another tenant's rows."""

from __future__ import annotations

from datetime import UTC, timedelta
from decimal import Decimal
from typing import Any

import pytest

import schema.audit
import schema.desk
import schema.orders
from gateway.audit import AuditEntry
from gateway.audit.reads import record_columns
from gateway.db import utcnow
from gateway.trading import desk
from gateway.trading.models import AccountPosition, Execution, Order, OrderEvent, TradingAccount
from gateway.trading.queries import OrderCriteria, TradeCriteria
from schema.selected_rows import RowShape
from tests.support import onboard
from tests.test_selected_reads import Recorder, columns_of

STATUSES = ["NEW", "ACCEPTED", "PARTIALLY_FILLED", "FILLED", "CANCELED", "DENIED", "EXPIRED"]
SIDES = ["BUY", "SELL", "SELL_SHORT"]
TYPES = [("LIMIT", "DAY"), ("MARKET", "IOC"), ("STOP_LIMIT", "GTC"), ("STOP", "GTD")]
BASE = utcnow().replace(microsecond=0) - timedelta(hours=2)


def add_orders(runtime: Any, tenant_id: str, *, n: int, prefix: str) -> dict[str, list[str]]:
    """`n` orders of varied shape (several share a created_at: the cursor then orders by id),
    fills for two in three (fills of one sweep share a created_at: then by stream position),
    events for each, and audit records with payloads."""
    orders, fills, stream = [], [], 0
    with runtime.db.tenant_transaction(tenant_id) as session:
        for i in range(n):
            ord_type, tif = TYPES[i % 4]
            status = STATUSES[i % len(STATUSES)]
            order = Order(
                tenant_id=tenant_id, client_order_id=f"{prefix}-{i}", account=f"ACC{i % 3}",
                symbol="AAPL" if i % 2 else "MSFT", isin="US0378331005" if i % 5 == 0 else None,
                mic="XNAS" if i % 4 else "", requested_mic="SMART" if i % 3 else "XNAS",
                connector="sim", side=SIDES[i % 3], ord_type=ord_type, time_in_force=tif,
                quantity=Decimal(f"{100 + i}.500"), limit_price=Decimal("189.2500") if i % 2 else None,
                stop_price=Decimal("180") if ord_type.startswith("STOP") else None,
                currency="USD", expire_at=BASE + timedelta(days=1) if tif == "GTD" else None,
                status=status, cum_qty=Decimal(i % 4 * 10), leaves_qty=Decimal("90.500"),
                avg_px=Decimal("189.10") if i % 4 else Decimal(0), fees=Decimal("-0.0150"),
                venue_order_id=f"v{i}" if i % 2 else None,
                reject_code="COMPLIANCE_MAX_QTY" if status == "DENIED" else None,
                reject_text="too large" if status == "DENIED" else None,
                routing={"venue": "XNAS", "alternatives": [i, "x"]}, created_by=None,
                created_at=BASE + timedelta(seconds=i // 3), updated_at=BASE + timedelta(seconds=i),
                version=1 + i % 3)
            session.add(order)
            session.flush()  # before its events and fills (their foreign key)
            orders.append(order.id)
            for seq in range(1, 1 + i % 3):
                stream += 1
                session.add(OrderEvent(
                    tenant_id=tenant_id, order_id=order.id, seq=seq, event="VENUE_NEW",
                    status_from="NEW", status_to="ACCEPTED", cum_qty=Decimal(0),
                    leaves_qty=Decimal("100.5"), at=BASE + timedelta(seconds=i), stream_seq=stream))
            if i % 3:
                for k in range(1 + i % 2):
                    stream += 1
                    fill = Execution(
                        tenant_id=tenant_id, order_id=order.id, exec_id=f"e{i}-{k}",
                        match_id=f"m{i}" if k else None, account=order.account,
                        symbol=order.symbol, side=order.side, last_qty=Decimal(f"{5 + k}.000"),
                        last_px=Decimal("189.2500"), fee=Decimal("0.0100") if k else Decimal("-0.002"),
                        currency="USD", liquidity=["ADDED", "REMOVED", None][k + i % 2],
                        mic="XNAS", at=BASE + timedelta(seconds=i, milliseconds=k),
                        created_at=BASE + timedelta(seconds=i // 4), stream_seq=stream)
                    session.add(fill)
                    fills.append(fill.id)
        entries = [AuditEntry(kind=f"{prefix}.{'ab'[j % 2]}", subject=orders[j % len(orders)],
                              payload={"j": j, "big": "x" * 200, "d": Decimal("1.50")},
                              actor=None if j % 4 == 0 else f"user-{j}") for j in range(2 * n)]
        runtime.audit.append(session, tenant_id, entries)
        keys = []
        for k, (code, currency) in enumerate((("ACC0", "USD"), ("ACC1", "EUR"), ("ACC2", "GBP"))):
            session.add(TradingAccount(tenant_id=tenant_id, code=code, currency=currency,
                                       domicile="US", name=f"{prefix} {code}"))
            for j, (key, symbol, mic, cur) in enumerate((
                    ("US0378331005", "AAPL", "XNAS", "USD"), ("MSFT.XNAS", "MSFT", "XNAS", "USD"),
                    (f"{prefix.upper()}.XLON", prefix.upper(), "XLON", "GBP"))):
                if (k + j) % 4 == 3:
                    continue
                position = AccountPosition(
                    tenant_id=tenant_id, account=code, instrument_key=key, symbol=symbol, mic=mic,
                    currency=cur, quantity=Decimal(f"{(j - 1) * (10 + k)}.000"),
                    avg_price=Decimal("101.2500"), realized_pnl=Decimal(f"{k - j}.10"),
                    updated_at=BASE + timedelta(minutes=k + j))
                session.add(position)
                keys.append(position.id)
    return {"orders": orders, "fills": fills, "positions": keys}


@pytest.fixture(scope="module")
def data(runtime: Any) -> dict[str, Any]:
    a, b = onboard(runtime), onboard(runtime)
    a_rows = add_orders(runtime, a.id, n=23, prefix="sa")
    b_rows = add_orders(runtime, b.id, n=8, prefix="sb")
    return {"a": a, "b": b, "a_rows": a_rows, "b_rows": b_rows}


def both_paths(gql: Any, runtime: Any, monkeypatch: pytest.MonkeyPatch, query: str,
               variables: dict[str, Any] | None, key: str, *, table: str, unasked: str
               ) -> tuple[dict[str, Any], dict[str, Any]]:
    """The answer of the selected read and of the whole-row read (every RowShape made to
    answer None, which is what a selection it cannot map does), each checked to have taken
    its path: `table.unasked` is a column no GraphQL field reads, so only whole rows list it."""
    with Recorder(runtime.db.engine) as selected:
        new = gql(query, variables, key=key)
    with monkeypatch.context() as m:
        m.setattr(RowShape, "columns", lambda self, fields: None)
        with Recorder(runtime.db.engine) as whole:
            old = gql(query, variables, key=key)
    column = f"{table}.{unasked}"
    reads = selected.touching(table)
    assert reads and not any(column in columns_of(s) for s in reads), selected.statements
    assert any(column in columns_of(s) for s in whole.touching(table)), whole.statements
    return new, old


def foreign(answer: dict[str, Any], data: dict[str, Any]) -> None:
    text = repr(answer)
    assert not any(i in text for ids in data["b_rows"].values() for i in ids)
    assert "sb-" not in text and data["b"].id not in text


ORDER_FIELDS = """id clientOrderId account symbol isin mic requestedMic side ordType timeInForce
    quantity limitPrice stopPrice currency expireAt status fixStatus cumQty leavesQty avgPx fees
    venueOrderId rejectCode rejectText routing createdAt updatedAt version
    instrument { key currency } venue { mic } executions { id lastQty fee }
    events { seq event cumQty }"""

ORDER_QUERIES: list[tuple[str, dict[str, Any] | None]] = [
    ("{ orders(first: 7) { totalCount edges { node { id status } } "
     "pageInfo { hasNextPage endCursor } } }", None),
    (f"{{ orders(first: 50) {{ edges {{ cursor node {{ {ORDER_FIELDS} }} }} }} }}", None),
    ("{ orders(first: 50) { edges { node { id clientOrderId symbol side quantity status "
     "createdAt } } } }", None),
    ("{ orders(first: 30) { edges { node { fixStatus venue { mic name } instrument { key } } } } }",
     None),
    ("""query { orders(first: 12) { ...C } }
        fragment C on OrderConnection { __typename totalCount edges { __typename cursor node {
          ...O ... on Order { fixStatus limitPrice executions { ...E } } ... { avgPx } } } }
        fragment O on Order { id side __typename }
        fragment E on Execution { execId liquidity }""", None),
    ("""{ a: orders(first: 3) { edges { node { x: id y: status } } }
          b: orders(first: 4, filter: {side: SELL}) { edges { node { id q: quantity } } }
          orders(first: 5) { edges { node { id } } edges { node { fixStatus events { seq } } } } }""",
     None),
    ("query($f: OrderFilter) { orders(filter: $f, first: 20) { totalCount "
     "edges { node { id status account createdAt } } pageInfo { hasNextPage } } }",
     {"f": {"statuses": ["FILLED", "CANCELED", "NEW"], "accounts": ["ACC1", "ACC2"]}}),
    ("query($f: OrderFilter) { orders(filter: $f, first: 20) { edges { node { id side } } } }",
     {"f": {"from": (BASE + timedelta(seconds=2)).isoformat(),
            "to": (BASE + timedelta(seconds=6)).isoformat(), "side": "BUY"}}),
    ("query($f: OrderFilter) { orders(filter: $f, first: 20) { edges { node { id mic } } } }",
     {"f": {"symbol": "AAPL", "mic": "XNAS", "status": "ACCEPTED"}}),
    ("query($f: OrderFilter) { orders(filter: $f) { edges { node { id } } } }",
     {"f": {"clientOrderId": "sa-4", "account": "ACC1"}}),
    ("query($x: Boolean!) { orders(first: 9) { edges { node { id routing @include(if: $x) "
     "updatedAt @skip(if: $x) } } } }", {"x": False}),
    ("{ orders(first: 3) { pageInfo { hasNextPage endCursor } totalCount } }", None),
]


@pytest.mark.parametrize("query,variables", ORDER_QUERIES)
def test_orders_selected_answer_what_whole_rows_answer(gql, runtime, data, monkeypatch, query,
                                                       variables):
    new, old = both_paths(gql, runtime, monkeypatch, query, variables, data["a"].key,
                          table="trade_order", unasked="connector")
    assert "errors" not in new, new
    assert new == old
    foreign(new, data)


TRADE_FIELDS = "id orderId execId matchId account symbol side lastQty lastPx fee currency liquidity mic at"
TRADE_QUERIES: list[tuple[str, dict[str, Any] | None]] = [
    (f"{{ trades(first: 50) {{ totalCount edges {{ cursor node {{ {TRADE_FIELDS} }} }} }} }}", None),
    ("{ trades(first: 5) { edges { node { id lastQty } } pageInfo { hasNextPage endCursor } } }",
     None),
    ("""{ t: trades(first: 6, side: BUY) { edges { node { i: id p: lastPx } } }
          trades(first: 4) { ...T } }
        fragment T on ExecutionConnection { edges { node { ... on Execution { fee at } ...F } } }
        fragment F on Execution { __typename symbol }""", None),
    ("query($from: DateTime, $to: DateTime, $accounts: [String!]) { trades(from: $from, to: $to, "
     "accounts: $accounts, first: 30) { totalCount edges { node { id account at } } } }",
     {"from": (BASE + timedelta(seconds=3)).isoformat(),
      "to": (BASE + timedelta(seconds=15)).isoformat(), "accounts": ["ACC0", "ACC2"]}),
    ("query($s: String, $m: String) { trades(symbol: $s, mic: $m, account: \"ACC1\") "
     "{ edges { node { id symbol } } } }", {"s": "AAPL", "m": "XNAS"}),
]


@pytest.mark.parametrize("query,variables", TRADE_QUERIES)
def test_trades_selected_answer_what_whole_rows_answer(gql, runtime, data, monkeypatch, query,
                                                       variables):
    new, old = both_paths(gql, runtime, monkeypatch, query, variables, data["a"].key,
                          table="execution", unasked="tenant_id")
    assert "errors" not in new, new
    assert new == old
    foreign(new, data)


def test_trades_of_one_order(gql, runtime, data, monkeypatch):
    order_id = data["a_rows"]["orders"][5]
    query = "query($o: ID) { trades(orderId: $o) { edges { node { id orderId lastQty } } } }"
    new, old = both_paths(gql, runtime, monkeypatch, query, {"o": order_id}, data["a"].key,
                          table="execution", unasked="tenant_id")
    assert new == old and len(new["data"]["trades"]["edges"]) == 2
    # Another tenant's order: its fills never appear.
    b_order = data["b_rows"]["orders"][5]
    new, old = both_paths(gql, runtime, monkeypatch, query, {"o": b_order}, data["a"].key,
                          table="execution", unasked="tenant_id")
    assert new == old and new["data"]["trades"]["edges"] == []


RECORD_QUERIES: list[tuple[str, dict[str, Any] | None]] = [
    ("{ auditRecords(first: 50) { edges { cursor node { seq at kind subject actor payload "
     "prevHash hash } } pageInfo { hasNextPage endCursor } } }", None),
    ("{ auditRecords(first: 10) { edges { node { seq kind subject } } } }", None),
    ("""query($k: String) { a: auditRecords(kind: $k, first: 5) { ...R }
          auditRecords(first: 3) { edges { node { h: hash ... on AuditTrailRecord { actor } } } } }
        fragment R on AuditRecordConnection { __typename edges { node { ...N at } } }
        fragment N on AuditTrailRecord { seq __typename }""", {"k": "sa.b"}),
    ("query($s: String) { auditRecords(subject: $s) { edges { node { seq kind } } } }", None),
]


@pytest.mark.parametrize("query,variables", RECORD_QUERIES)
def test_audit_records_selected_answer_what_whole_rows_answer(gql, runtime, data, monkeypatch,
                                                              query, variables):
    if variables is None and "$s" in query:
        variables = {"s": data["a_rows"]["orders"][3]}
    new, old = both_paths(gql, runtime, monkeypatch, query, variables, data["a"].key,
                          table="audit_record", unasked="tenant_id")
    assert "errors" not in new, new
    assert new == old
    foreign(new, data)


@pytest.mark.parametrize("field,page_size", [("orders", 4), ("trades", 5), ("auditRecords", 7)])
def test_pages_walked_by_cursor_are_the_same(gql, runtime, data, monkeypatch, field, page_size):
    node = {"orders": "id createdAt", "trades": "id at", "auditRecords": "chain seq kind"}[field]
    table, unasked = {"orders": ("trade_order", "connector"), "trades": ("execution", "tenant_id"),
                      "auditRecords": ("audit_record", "tenant_id")}[field]
    query = (f"query($after: String) {{ {field}(first: {page_size}, after: $after) {{ edges "
             f"{{ cursor node {{ {node} }} }} pageInfo {{ hasNextPage endCursor }} }} }}")
    after, seen = None, []
    while True:
        new, old = both_paths(gql, runtime, monkeypatch, query, {"after": after}, data["a"].key,
                              table=table, unasked=unasked)
        assert new == old
        page = new["data"][field]
        seen += [e["node"].get("id") or (e["node"]["chain"], e["node"]["seq"])
                 for e in page["edges"]]
        if not page["pageInfo"]["hasNextPage"]:
            break
        after = page["pageInfo"]["endCursor"]
    assert len(seen) == len(set(seen))
    if field == "orders":
        assert sorted(seen) == sorted(data["a_rows"]["orders"])
    elif field == "trades":
        assert sorted(seen) == sorted(data["a_rows"]["fills"])
    else:
        assert len(seen) >= 46  # the 46 appended (and what onboarding recorded)


def test_order_by_id_reads_the_selected_columns(gql, runtime, data, monkeypatch):
    query = f"query($id: ID!) {{ order(id: $id) {{ {ORDER_FIELDS} }} }}"
    small = "query($id: ID!) { order(id: $id) { status fixStatus limitPrice venue { mic } } }"
    for order_id in data["a_rows"]["orders"][:6]:
        for q in (query, small):
            new, old = both_paths(gql, runtime, monkeypatch, q, {"id": order_id}, data["a"].key,
                                  table="trade_order", unasked="connector")
            assert new == old and "errors" not in new, new
    new, old = both_paths(gql, runtime, monkeypatch, small, {"id": data["b_rows"]["orders"][0]},
                          data["a"].key, table="trade_order", unasked="connector")
    assert new == old and new["errors"][0]["extensions"]["code"] == "ORDER_NOT_FOUND"


def test_another_tenants_rows_never_appear(gql, runtime, data):
    """Each tenant's pages hold its own rows only, through GraphQL and at the service."""
    for me, other in (("a", "b"), ("b", "a")):
        key = data[me].key
        orders = gql.data("{ orders(first: 100) { totalCount edges { node { id clientOrderId } } } }",
                          key=key)["orders"]
        assert {e["node"]["id"] for e in orders["edges"]} == set(data[f"{me}_rows"]["orders"])
        trades = gql.data("{ trades(first: 100) { edges { node { id } } } }", key=key)["trades"]
        assert {e["node"]["id"] for e in trades["edges"]} == set(data[f"{me}_rows"]["fills"])
        records = gql.data("{ auditRecords(first: 100) { edges { node { subject } } } }",
                           key=key)["auditRecords"]
        subjects = {e["node"]["subject"] for e in records["edges"]}
        assert not subjects & set(data[f"{other}_rows"]["orders"])
    a, b = data["a"].id, data["b"].id
    queries = runtime.orders.queries
    rows = queries.page_columns(a, ("account",), OrderCriteria(), first=100).items
    assert {r.id for r in rows} == set(data["a_rows"]["orders"])
    fills = queries.trade_columns(b, ("order_id",), TradeCriteria(), first=100).items
    assert {r.id for r in fills} == set(data["b_rows"]["fills"])
    assert {r.order_id for r in fills} <= set(data["b_rows"]["orders"])
    page = record_columns(runtime.audit, b, ("subject",), first=100)
    assert {r.subject for r in page.items if r.subject in data["a_rows"]["orders"]} == set()
    with pytest.raises(Exception) as caught:
        queries.get_columns(a, data["b_rows"]["orders"][0], ("status",))
    assert getattr(caught.value, "code", None) == "ORDER_NOT_FOUND"


def test_one_statement_reads_only_the_columns_asked_for(gql, runtime, data):
    key = data["a"].key
    # With ALPHINTRA_EXECUTION=verify (the suite's) each query runs twice: on its compiled plan
    # and on graphql-core. One statement per run.
    runs = 2 if getattr(runtime.settings, "execution", None) == "verify" else 1
    with Recorder(runtime.db.engine) as sql:
        gql.data("{ orders(first: 50) { edges { node { id clientOrderId symbol side quantity "
                 "status createdAt } } } }", key=key)
    assert [columns_of(s) for s in sql.touching("trade_order")] == [{
        "trade_order.id", "trade_order.created_at", "trade_order.client_order_id",
        "trade_order.symbol", "trade_order.side", "trade_order.quantity", "trade_order.status"}] * runs
    # Nothing else read: no fills or events asked for, so their loaders stay idle.
    assert not sql.touching("execution") and not sql.touching("order_event")

    with Recorder(runtime.db.engine) as sql:
        gql.data("{ orders(first: 50) { edges { node { id executions { id } } } } }", key=key)
    assert [columns_of(s) for s in sql.touching("trade_order")] == [
        {"trade_order.id", "trade_order.created_at"}] * runs
    # The fills of the whole page: one statement through the loader, not one per order (the
    # loader keeps them for the request: a second run reads none).
    assert len(sql.touching("execution")) == 1 and not sql.touching("order_event")

    with Recorder(runtime.db.engine) as sql:
        gql.data("{ trades(first: 20) { edges { node { id lastQty } } } }", key=key)
    assert [columns_of(s) for s in sql.touching("execution")] == [
        {"execution.id", "execution.created_at", "execution.stream_seq", "execution.last_qty"}] * runs

    with Recorder(runtime.db.engine) as sql:
        gql.data("{ auditRecords(first: 20) { edges { node { seq kind subject } } } }", key=key)
    reads = sql.touching("audit_record")
    assert [columns_of(s) for s in reads] == [  # at, chain and seq: the cursor's, across lanes
        {"audit_record.at", "audit_record.chain", "audit_record.seq", "audit_record.kind",
         "audit_record.subject"}] * runs
    assert "payload" not in reads[0]


def test_every_field_is_mapped_to_columns(settings):
    from schema.compose import build_schema

    types = build_schema(settings)._schema.type_map  # type: ignore[attr-defined]
    assert set(schema.desk.POSITION_ROWS.fields) < set(types["AccountPosition"].fields) | {
        "__typename"}  # the valued amounts are left out on purpose: they take the valuation
    for name, shape in (("Order", schema.orders.ORDER_ROWS),
                        ("Execution", schema.orders.EXECUTION_ROWS),
                        ("AuditTrailRecord", schema.audit.RECORD_ROWS)):
        # A new field left out of the map still answers (whole-row reads), only slower.
        assert set(types[name].fields) == set(shape.fields) - {"__typename"}, name
    assert schema.orders.ORDER_ROWS.columns({"id": [], "noSuchField": []}) is None
    assert schema.orders.ORDER_ROWS.columns(None) is None


def test_a_filter_instant_is_compared_as_the_whole_row_read_compares_it(runtime, data):
    """The selected statement binds `from`/`to` as the ORM's does (an aware instant, any
    offset): the same orders."""
    a = data["a"].id
    since = (BASE + timedelta(seconds=3)).astimezone(UTC)
    criteria = OrderCriteria.of(since=since, until=since + timedelta(seconds=3))
    selected = runtime.orders.queries.page_columns(a, (), criteria, first=50).items
    whole = runtime.orders.list(a, criteria, first=50).items
    assert [r.id for r in selected] == [o.id for o in whole] and whole


POSITION_FIELDS = """account instrumentKey symbol mic currency accountCurrency quantity avgPrice
    realizedPnl updatedAt __typename"""
POSITION_QUERIES: list[tuple[str, dict[str, Any] | None]] = [
    (f"{{ positions {{ {POSITION_FIELDS} }} }}", None),
    ("""query($a: [String!]) { positions(accounts: $a) { ... on AccountPosition { account
          q: quantity } ...P } } fragment P on AccountPosition { instrumentKey k: instrumentKey }""",
     {"a": ["ACC2", "ACC0"]}),
    ("query($i: String) { positions(account: \"ACC1\", instrument: $i) { symbol avgPrice } }",
     {"i": "AAPL.XNAS"}),
    ("query($i: String) { positions(instrument: $i) { account mic updatedAt } }", {"i": "MSFT"}),
]


@pytest.mark.parametrize("query,variables", POSITION_QUERIES)
def test_positions_selected_answer_what_the_valuation_answers(gql, runtime, data, monkeypatch,
                                                              query, variables):
    new, old = both_paths(gql, runtime, monkeypatch, query, variables, data["a"].key,
                          table="account_position", unasked="created_at")
    assert "errors" not in new, new
    assert new == old and new["data"]["positions"]
    assert "SB" not in repr(new)  # B's own listing SB.XLON


@pytest.mark.parametrize("arguments,code", [
    ("(accounts: [])", "FILTER_INVALID"), ('(accounts: ["ACC1", "NOPE"])', "ACCOUNT_NOT_FOUND"),
    ('(account: "ACC1", accounts: ["ACC2"])', "FILTER_INVALID")])
def test_positions_errors_are_the_valuations(gql, data, monkeypatch, arguments, code):
    query = f"{{ positions{arguments} {{ account quantity }} }}"
    new = gql(query, key=data["a"].key)
    with monkeypatch.context() as m:
        m.setattr(RowShape, "columns", lambda self, fields: None)
        old = gql(query, key=data["a"].key)
    assert new == old and new["errors"][0]["extensions"]["code"] == code


def test_positions_read_only_the_columns_asked_for_and_value_nothing(gql, runtime, data):
    with Recorder(runtime.db.engine) as sql:
        answer = gql.data("{ positions { account quantity } }", key=data["b"].key)["positions"]
    reads = sql.touching("account_position")
    assert reads and all(columns_of(s) == {"account_position.account",
                                           "account_position.instrument_key",
                                           "account_position.quantity"} for s in reads)
    assert not sql.touching("execution")  # no fee sum: nothing valued
    # B's positions only, though A holds the same accounts and listings.
    assert len(answer) == len(data["b_rows"]["positions"])
    assert {p["account"] for p in answer} == {"ACC0", "ACC1", "ACC2"}
    a_rows = desk.holdings(runtime.orders, data["a"].id, ("symbol",))
    assert len(a_rows) == len(data["a_rows"]["positions"])
    assert not any(r["symbol"] == "SB" for r in a_rows)


def test_every_criterion_is_bound_in_the_selected_statements():
    """A criterion added to OrderCriteria or TradeCriteria but not to `bound` would be dropped
    by the selected reads: every field, set, is bound."""
    import dataclasses

    since = BASE.astimezone(UTC)
    orders = OrderCriteria.of(accounts=["A"], statuses=["FILLED"], side="BUY", symbol="X",
                              mic="XNAS", client_order_id="c", since=since, until=since)
    trades = TradeCriteria.of(accounts=["A"], order_id="o", side="BUY", symbol="X", mic="XNAS",
                              since=since, until=since)
    for criteria in (orders, trades):
        names, params = criteria.bound()
        assert set(names) == {f.name for f in dataclasses.fields(criteria)}
        assert all(params[f"f_{name}"] is not None for name in names)
    assert OrderCriteria().bound() == ((), {})
