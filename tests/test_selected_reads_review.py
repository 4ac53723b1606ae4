"""Hostile cases for the selected reads of orders, trades, audit records and positions
(issue 14, a review's probes kept as tests): instants with any offset, another tenant's
cursors, the cursor at the end, page sizes out of range, filter values shaped like SQL, many
(columns, filters, cursor) shapes through the statement caches in random order, and filter
combinations with their counts; each answered exactly as the whole-row read answers it."""

from __future__ import annotations

import base64
import itertools
import random
from datetime import timedelta, timezone
from typing import Any

import pytest

from gateway.trading.queries import OrderCriteria, TradeCriteria
from schema.selected_rows import RowShape
from tests.support import onboard, user_key
from tests.test_selected_reads_trading import BASE, add_orders, both_paths, foreign

ORDERS_AT = ("query($f: OrderFilter) { orders(filter: $f, first: 50) { totalCount "
             "edges { node { id createdAt } } } }")


@pytest.fixture(scope="module")
def data(runtime: Any) -> dict[str, Any]:
    """Two tenants of their own, shaped as tests/test_selected_reads_trading.py's."""
    a, b = onboard(runtime), onboard(runtime)
    return {"a": a, "b": b, "a_rows": add_orders(runtime, a.id, n=23, prefix="sa"),
            "b_rows": add_orders(runtime, b.id, n=8, prefix="sb")}


def offset(dt: Any, hours: float) -> str:
    """`dt` written with another offset (the same instant)."""
    return dt.astimezone(timezone(timedelta(hours=hours))).isoformat()


def test_filters_with_offsets(gql, runtime, data, monkeypatch):
    """`from`/`to` with a non-UTC offset bind as the ORM binds them (UTC), on either database:
    a string comparison on SQLite would pick other rows."""
    key = data["a"].key
    for h in (5.5, -8, 0):
        v = {"f": {"from": offset(BASE + timedelta(seconds=2), h),
                   "to": offset(BASE + timedelta(seconds=6), h)}}
        new, old = both_paths(gql, runtime, monkeypatch, ORDERS_AT, v, key, table="trade_order",
                              unasked="connector")
        assert "errors" not in new, new
        assert new == old and new["data"]["orders"]["edges"], (h, new)
        q = ("query($from: DateTime, $to: DateTime) { trades(from: $from, to: $to, first: 50) "
             "{ totalCount edges { node { id at } } } }")
        v2 = {"from": offset(BASE + timedelta(seconds=3), h), "to": offset(BASE + timedelta(seconds=15), h)}
        new, old = both_paths(gql, runtime, monkeypatch, q, v2, key, table="execution", unasked="tenant_id")
        assert new == old and new["data"]["trades"]["edges"], (h, new)


def test_foreign_cursors_and_the_last_cursor(gql, runtime, data, monkeypatch):
    """Another tenant's cursor only positions the page (never shows its rows); the last row's
    cursor answers an empty page with no next page and no end cursor."""
    a, b = data["a"].key, data["b"].key
    for field, node, table, unasked in (("orders", "id", "trade_order", "connector"),
                                        ("trades", "id", "execution", "tenant_id"),
                                        ("auditRecords", "seq subject", "audit_record", "tenant_id")):
        q = (f"query($after: String) {{ {field}(first: 3, after: $after) {{ edges {{ cursor "
             f"node {{ {node} }} }} pageInfo {{ hasNextPage endCursor }} }} }}")
        b_page = gql.data(q, {"after": None}, key=b)[field]
        cursor = b_page["pageInfo"]["endCursor"]
        new, old = both_paths(gql, runtime, monkeypatch, q, {"after": cursor}, a, table=table,
                              unasked=unasked)
        assert new == old, field
        foreign(new, data)
        # the end: cursor of the last row
        after = None
        while True:
            page = gql.data(q, {"after": after}, key=a)[field]
            if not page["pageInfo"]["hasNextPage"]:
                break
            after = page["pageInfo"]["endCursor"]
        last = page["edges"][-1]["cursor"]
        new, old = both_paths(gql, runtime, monkeypatch, q, {"after": last}, a, table=table, unasked=unasked)
        assert new == old and new["data"][field]["edges"] == [], new
        assert new["data"][field]["pageInfo"] == {"hasNextPage": False, "endCursor": None}


@pytest.mark.parametrize("first", [0, -1, 10_000])
def test_page_sizes_out_of_range_are_the_whole_row_errors(gql, data, monkeypatch, first):
    for q in (f"{{ orders(first: {first}) {{ edges {{ node {{ id }} }} }} }}",
              f"{{ trades(first: {first}) {{ edges {{ node {{ id }} }} }} }}",
              f"{{ auditRecords(first: {first}) {{ edges {{ node {{ seq }} }} }} }}"):
        new = gql(q, key=data["a"].key)
        with monkeypatch.context() as m:
            m.setattr(RowShape, "columns", lambda self, fields: None)
            old = gql(q, key=data["a"].key)
        assert new == old and new["errors"], new


def test_filter_values_shaped_like_sql_are_values(gql, runtime, data, monkeypatch):
    key = data["a"].key
    evil = ["AAPL' OR '1'='1", "%", "' ; drop table trade_order; --", "AAPL\x00"]
    for s in evil:
        q = "query($f: OrderFilter) { orders(filter: $f) { totalCount edges { node { id } } } }"
        r = gql(q, {"f": {"symbol": s}}, key=key)
        if "errors" in r:
            continue
        assert r["data"]["orders"]["edges"] == [] and r["data"]["orders"]["totalCount"] == 0
    r = gql("query($id: ID!) { order(id: $id) { id } }", {"id": "' OR 1=1 --"}, key=key)
    assert r["errors"][0]["extensions"]["code"] == "ORDER_NOT_FOUND"


def test_random_criteria_and_columns_service_level(runtime, data):
    """The cached statements (one per columns, filters given, first page or not) in random
    order, each page and the next compared to the ORM read: a statement reused for another
    shape would answer other rows or columns."""
    a = data["a"].id
    q = runtime.orders.queries
    rnd = random.Random(7)
    cols = ["status", "account", "symbol", "side", "quantity", "mic", "routing", "expire_at"]
    options: dict[str, list[Any]] = {
        "accounts": [None, ("ACC0",), ("ACC1", "ACC2")],
        "statuses": [None, ("FILLED",), ("NEW", "DENIED", "EXPIRED")],
        "side": [None, "BUY", "SELL_SHORT"], "symbol": [None, "AAPL"], "mic": [None, "XNAS", ""],
        "client_order_id": [None, "sa-4"],
        "since": [None, BASE + timedelta(seconds=1)], "until": [None, BASE + timedelta(seconds=5)],
    }
    for _ in range(300):
        kw = {k: rnd.choice(v) for k, v in options.items()}
        crit = OrderCriteria(**kw)
        columns = tuple(rnd.sample(cols, rnd.randint(0, 4)))
        first = rnd.randint(1, 8)
        whole = q.list(a, crit, first=first)
        sel = q.page_columns(a, columns, crit, first=first)
        assert [r.id for r in sel.items] == [o.id for o in whole.items], kw
        assert sel.has_next == whole.has_next
        for r, o in zip(sel.items, whole.items, strict=True):
            for c in columns:
                assert getattr(r, c) == getattr(o, c), (c, kw)
        if whole.items and whole.has_next:
            cur = whole.cursor(whole.items[-1])
            w2 = q.list(a, crit, first=first, after=cur)
            s2 = q.page_columns(a, columns, crit, first=first, after=cur)
            assert [r.id for r in s2.items] == [o.id for o in w2.items]
    topts: dict[str, list[Any]] = {
        "accounts": [None, ("ACC0",), ("ACC1", "ACC2")], "order_id": [None, data["a_rows"]["orders"][5]],
        "side": [None, "BUY"], "symbol": [None, "AAPL"], "mic": [None, "XNAS"],
        "since": [None, BASE + timedelta(seconds=3)], "until": [None, BASE + timedelta(seconds=12)],
    }
    tcols = ["order_id", "account", "last_qty", "at", "liquidity", "match_id"]
    for _ in range(200):
        kw = {k: rnd.choice(v) for k, v in topts.items()}
        crit = TradeCriteria(**kw)
        columns = tuple(rnd.sample(tcols, rnd.randint(0, 3)))
        first = rnd.randint(1, 6)
        whole = q.trades(a, crit, first=first)
        sel = q.trade_columns(a, columns, crit, first=first)
        assert [r.id for r in sel.items] == [o.id for o in whole.items], kw
        assert sel.has_next == whole.has_next
        if whole.items and whole.has_next:
            cur = whole.cursor(whole.items[-1])
            assert [r.id for r in q.trade_columns(a, columns, crit, first=first, after=cur).items] == \
                [o.id for o in q.trades(a, crit, first=first, after=cur).items]


def test_filter_combinations_with_counts_and_next_pages(gql, runtime, data, monkeypatch):
    key = data["a"].key
    q = ("query($f: OrderFilter, $after: String) { orders(filter: $f, first: 4, after: $after) "
         "{ totalCount edges { cursor node { id status fixStatus side account } } "
         "pageInfo { hasNextPage endCursor } } }")
    filters = [{"accounts": ["ACC0", "ACC2"]}, {"statuses": ["DENIED", "FILLED"]}, {"side": "SELL_SHORT"},
               {"mic": ""}, {"symbol": "MSFT"}, {"account": "NOPE"}]
    for n in (1, 2):
        for combo in itertools.combinations(filters, n):
            f: dict[str, Any] = {}
            for part in combo:
                f.update(part)
            if "account" in f and "accounts" in f:
                continue
            new, old = both_paths(gql, runtime, monkeypatch, q, {"f": f, "after": None}, key,
                                  table="trade_order", unasked="connector")
            assert new == old, f
            foreign(new, data)
            end = new["data"]["orders"]["pageInfo"]["endCursor"]
            if end:
                new, old = both_paths(gql, runtime, monkeypatch, q, {"f": f, "after": end}, key,
                                      table="trade_order", unasked="connector")
                assert new == old, f


@pytest.mark.parametrize("arguments,found", [
    ('(instrument: "us0378331005")', True), ('(instrument: " msft ")', True),
    ('(accounts: [" ACC1 "])', True), ('(instrument: "SA.XLON")', True),
    ('(account: "ACC2")', True), ('(instrument: "NOPE")', False)])
def test_positions_instrument_and_account_spellings(gql, runtime, data, monkeypatch, arguments,
                                                    found):
    q = f"{{ positions{arguments} {{ account instrumentKey quantity accountCurrency __typename }} }}"
    new, old = both_paths(gql, runtime, monkeypatch, q, None, data["a"].key,
                          table="account_position", unasked="created_at")
    assert "errors" not in new and new == old
    assert bool(new["data"]["positions"]) is found
    assert "SB" not in repr(new)  # B's own listing


def test_roles_are_checked_on_the_selected_path_as_on_the_whole_row_path(gql, runtime, data,
                                                                         monkeypatch):
    """A vendor may not read orders, trades or positions, a trader may not read the audit trail:
    FORBIDDEN on either path, with no data; a viewer reads what the admin reads."""
    tenant = data["a"]
    _, vendor = user_key(runtime, tenant, "vendor")
    _, trader = user_key(runtime, tenant, "trader")
    _, viewer = user_key(runtime, tenant, "viewer")
    order_id = data["a_rows"]["orders"][0]
    denied = [(vendor, "{ orders { totalCount edges { node { id status } } } }"),
              (vendor, "{ trades { edges { node { id lastQty } } } }"),
              (vendor, "{ positions { account quantity } }"),
              (vendor, f'{{ order(id: "{order_id}") {{ id status }} }}'),
              (trader, "{ auditRecords { edges { node { seq kind } } } }")]
    for key, query in denied:
        new = gql(query, key=key)
        with monkeypatch.context() as m:
            m.setattr(RowShape, "columns", lambda self, fields: None)
            old = gql(query, key=key)
        assert new == old and new["data"] is None, (query, new)
        assert new["errors"][0]["extensions"]["code"] == "FORBIDDEN", new
    query = "{ orders(first: 50) { totalCount edges { node { id status account } } } }"
    as_viewer, _ = both_paths(gql, runtime, monkeypatch, query, None, viewer, table="trade_order",
                              unasked="connector")
    assert as_viewer == gql(query, key=tenant.key)
    assert as_viewer["data"]["orders"]["totalCount"] == len(data["a_rows"]["orders"])


def _cursor(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode()


FORGED = {
    "orders": ["2026-01-01T00:00:00|x",  # no offset: every cursor made here has one
               "0001-01-01T00:00:00+14:00|x"],  # before year 1 in UTC
    "trades": ["2026-01-01T00:00:00|1|x", "0001-01-01T00:00:00+14:00|1|x",
               "2026-01-01T00:00:00+00:00|99999999999999999999|x"],  # past BIGINT
    "auditRecords": ["2026-01-01T00:00:00+00:00|99999999999999999999|c",  # past INTEGER
                     "2026-01-01T00:00:00+00:00|4294967296|c",
                     "2026-01-01T00:00:00|1|c",  # no offset
                     "2026-01-01T00:00:00+00:00|1|" + "c" * 41,  # longer than a chain
                     "seq:5"],  # the cursors before lanes
}


@pytest.mark.parametrize("field,text", [(f, t) for f, texts in FORGED.items() for t in texts])
def test_a_forged_cursor_is_cursor_invalid_on_both_paths(gql, data, monkeypatch, field, text):
    """A cursor no page returned, whose instant or position the database cannot hold, is the
    client's mistake (CURSOR_INVALID), never an internal error from the bound statement."""
    node = "seq" if field == "auditRecords" else "id"
    query = (f"query($after: String) {{ {field}(first: 3, after: $after) "
             f"{{ edges {{ node {{ {node} }} }} }} }}")
    variables = {"after": _cursor(text)}
    new = gql(query, variables, key=data["a"].key)
    with monkeypatch.context() as m:
        m.setattr(RowShape, "columns", lambda self, fields: None)
        old = gql(query, variables, key=data["a"].key)
    assert new == old
    assert [e["extensions"]["code"] for e in new["errors"]] == ["CURSOR_INVALID"], new
