"""Drop-copy grade order updates through GraphQL over a real WebSocket (issue 17): `orderUpdates`
yields every transition of an order, in order (seq 1, 2, 3 … per order, a cursor across the
tenant's orders), with ExecType, LastQty, LastPx and the execution id of each fill, and its
`order` as of that transition (it used to re-read the current row: FILLED twice); an order's
executions are in execution order; a drop copy that reconnects with its last cursor
(`orderUpdates(after:)`, `orderEvents(after:)`) gets exactly what it missed, and never another
tenant's; a transition the bus loses is read from the store."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from decimal import Decimal as D
from typing import Any

import pytest
from sqlmodel import select

from gateway.app import create_app
from gateway.events import publish_each
from gateway.markets.clock import ManualClock
from gateway.trading.models import OrderEvent
from gateway.trading.service import orders_topic
from tests.support import (
    GraphQLClient,
    LiveServer,
    TransportWS,
    error_codes,
    onboard,
    subscribed,
    unique,
    with_clock,
)

OPEN_NY = datetime(2025, 3, 12, 14, 0, tzinfo=UTC)  # a Wednesday, New York open since 13:30
TRANSITION = """orderId clientOrderId account seq cursor event execType statusFrom statusTo
  lastQty lastPx cumQty leavesQty avgPx execId code text at"""
UPDATES = f"""subscription($after: String, $accounts: [String!]) {{
  orderUpdates(after: $after, accounts: $accounts) {{
    sequence transition {{ {TRANSITION} }} order {{ id status cumQty leavesQty version }} }} }}"""
EVENTS = f"""query($after: String, $first: Int!) {{ orderEvents(after: $after, first: $first) {{
  edges {{ cursor node {{ {TRANSITION} }} }} pageInfo {{ hasNextPage endCursor }} }} }}"""
SUBMIT = """mutation($input: SubmitOrderInput!) { submitOrder(input: $input) {
  id status cumQty leavesQty } }"""
ACCOUNT = """mutation($input: TradingAccountInput!) { upsertTradingAccount(input: $input) { code } }"""
EXECUTIONS = """query($id: ID!) { order(id: $id) {
  executions { execId lastQty lastPx at } events { seq cursor execId lastQty lastPx } } }"""


@pytest.fixture(scope="module")
def venue(runtime):
    clock = ManualClock(OPEN_NY)
    rt = with_clock(runtime, clock)
    with LiveServer(create_app(runtime=rt)) as live:
        yield live, clock, rt


def _open_minute(rt, clock) -> datetime:
    at = clock.now() + timedelta(minutes=1)
    session = rt.markets.session("XNAS", at)
    if str(session.status) != "OPEN" or session.next_close - at < timedelta(minutes=30):
        at = session.next_open + timedelta(minutes=1)
    return at


@pytest.fixture
def desk(venue):
    """A tenant with an account, the clock a minute on (fresh simulated liquidity)."""
    live, clock, rt = venue
    clock.set(_open_minute(rt, clock))
    tenant = onboard(rt)
    gql = GraphQLClient(live.url)
    _account(gql, tenant.key)
    return gql, tenant, clock, rt, live


def _account(gql: GraphQLClient, key: str) -> None:
    gql.data(ACCOUNT, {"input": {"code": "ACC1", "currency": "USD", "domicile": "US",
                                 "creditLimit": "1000000000", "equity": "500000000"}}, key=key)


def order(**overrides: Any) -> dict[str, Any]:
    base = {"clientOrderId": unique("o"), "account": "ACC1", "symbol": "AAPL", "mic": "XNAS",
            "side": "BUY", "quantity": "10", "ordType": "MARKET", "timeInForce": "IOC"}
    base.update(overrides)
    return base


async def collect(ws: TransportWS, op_id: str, done: Any, timeout: float = 10) -> list[dict[str, Any]]:
    """orderUpdates messages until `done(updates)`."""
    updates: list[dict[str, Any]] = []
    while not done(updates):
        message = await ws.next(timeout=timeout, op_id=op_id)
        assert message["type"] == "next", message
        assert "errors" not in message["payload"], message["payload"]
        updates.append(message["payload"]["data"]["orderUpdates"])
    return updates


def ended(order_id: str, status: str) -> Any:
    return lambda updates: any(u["transition"]["orderId"] == order_id
                               and u["transition"]["statusTo"] == status for u in updates)


def _check_stream(updates: list[dict[str, Any]]) -> None:
    """Cursors run on with no gap; each order's seq is 1, 2, 3 …; `order` is as of each."""
    cursors = [int(u["transition"]["cursor"]) for u in updates]
    assert cursors == list(range(cursors[0], cursors[0] + len(cursors))), cursors
    seqs: dict[str, list[int]] = {}
    for u in updates:
        t = u["transition"]
        seqs.setdefault(t["orderId"], []).append(t["seq"])
        assert (u["order"]["status"], u["order"]["cumQty"], u["order"]["leavesQty"],
                u["order"]["version"]) == (t["statusTo"], t["cumQty"], t["leavesQty"], t["seq"])
    for order_seqs in seqs.values():
        assert order_seqs == list(range(order_seqs[0], order_seqs[0] + len(order_seqs)))


def test_a_market_order_that_fills_streams_each_transition_and_lists_fills_in_execution_order(desk):
    gql, tenant, clock, rt, live = desk
    q = rt.market_data.quote("AAPL.XNAS", clock.now())
    quantity = q.ask_size * 3  # more than the best level: several fills at one transact time

    async def scenario() -> tuple[dict[str, Any], list[dict[str, Any]], list[str]]:
        async with TransportWS(live.ws_url, tenant.key) as ws:
            await ws.subscribe("u", UPDATES)
            # An existing client's shape: the order only.
            await ws.subscribe("old", "subscription { orderUpdates { order { id status } } }")
            await subscribed(rt, orders_topic(tenant.id))
            o = await asyncio.to_thread(gql.data, SUBMIT, {"input": order(quantity=str(quantity))},
                                        key=tenant.key)
            o = o["submitOrder"]
            updates: list[dict[str, Any]] = []
            statuses: list[str] = []
            while not ended(o["id"], "FILLED")(updates) or "FILLED" not in statuses:
                message = await ws.next()
                assert message["type"] == "next", message
                update = message["payload"]["data"]["orderUpdates"]
                if message["id"] == "u":
                    updates.append(update)
                else:
                    statuses.append(update["order"]["status"])
            return o, updates, statuses

    o, updates, statuses = asyncio.run(scenario())
    assert o["status"] == "FILLED" and D(o["cumQty"]) == quantity, o
    _check_stream(updates)
    steps = [(u["transition"]["seq"], u["transition"]["event"], u["transition"]["execType"],
              u["transition"]["statusFrom"], u["transition"]["statusTo"]) for u in updates]
    fills = [u["transition"] for u in updates if u["transition"]["execType"] == "TRADE"]
    assert len(fills) >= 2, steps
    assert steps[:2] == [(1, "COMPLIANCE_PASS", None, "NEW", "PENDING"),
                         (2, "VENUE_NEW", "NEW", "PENDING", "ACCEPTED")]
    assert steps[2:-1] == [(k + 3, "PARTIAL_FILL", "TRADE", "ACCEPTED" if k == 0 else "PARTIALLY_FILLED",
                            "PARTIALLY_FILLED") for k in range(len(fills) - 1)]
    assert steps[-1] == (len(steps), "FILL", "TRADE", "PARTIALLY_FILLED", "FILLED")
    # Not FILLED on every update, as when each re-read the order's current row.
    assert [u["order"]["status"] for u in updates] == statuses == \
        ["PENDING", "ACCEPTED"] + ["PARTIALLY_FILLED"] * (len(fills) - 1) + ["FILLED"]
    assert sum(D(f["lastQty"]) for f in fills) == quantity
    cum = D(0)
    for f in fills:
        cum += D(f["lastQty"])
        assert D(f["cumQty"]) == cum and D(f["leavesQty"]) == quantity - cum and D(f["lastPx"]) > 0
    assert all(u["transition"]["lastQty"] is None for u in updates[:2])
    # The order's executions are in execution order: the fills' own, as they streamed.
    found = gql.data(EXECUTIONS, {"id": o["id"]}, key=tenant.key)["order"]
    assert [(e["execId"], e["lastQty"], e["lastPx"]) for e in found["executions"]] == \
        [(f["execId"], f["lastQty"], f["lastPx"]) for f in fills]
    assert [e["cursor"] for e in found["events"]] == [u["transition"]["cursor"] for u in updates]
    # trades: newest first, so the reverse.
    trades = gql.data("query($id: ID!) { trades(orderId: $id, first: 2) { edges { node { execId } } "
                      "pageInfo { endCursor hasNextPage } } }", {"id": o["id"]}, key=tenant.key)["trades"]
    listed = [e["node"]["execId"] for e in trades["edges"]]
    while trades["pageInfo"]["hasNextPage"]:
        trades = gql.data("query($id: ID!, $after: String) { trades(orderId: $id, first: 2, after: $after) "
                          "{ edges { node { execId } } pageInfo { endCursor hasNextPage } } }",
                          {"id": o["id"], "after": trades["pageInfo"]["endCursor"]},
                          key=tenant.key)["trades"]
        listed += [e["node"]["execId"] for e in trades["edges"]]
    assert listed == [f["execId"] for f in reversed(fills)]


def test_a_resting_order_partly_filled_then_cancelled_streams_every_transition(desk):
    gql, tenant, clock, rt, live = desk
    # A symbol no other test here trades: its book is as the quote says.
    q = rt.market_data.quote("MSFT.XNAS", clock.now())
    want = q.ask_size + 100  # at the best ask only that level fills; the rest rests

    async def scenario() -> tuple[dict[str, Any], list[dict[str, Any]]]:
        async with TransportWS(live.ws_url, tenant.key) as ws:
            await ws.subscribe("u", UPDATES, {"accounts": ["ACC1"]})
            await subscribed(rt, orders_topic(tenant.id))
            o = (await asyncio.to_thread(gql.data, SUBMIT, {"input": order(
                symbol="MSFT", ordType="LIMIT", timeInForce="DAY", limitPrice=str(q.ask),
                quantity=str(want))}, key=tenant.key))["submitOrder"]
            assert o["status"] == "PARTIALLY_FILLED", o
            await asyncio.to_thread(gql.data, "mutation($id: ID!) { cancelOrder(id: $id) { id } }",
                                    {"id": o["id"]}, key=tenant.key)
            return o, await collect(ws, "u", ended(o["id"], "CANCELED"))

    o, updates = asyncio.run(scenario())
    _check_stream(updates)
    steps = [(u["transition"]["event"], u["transition"]["execType"], u["transition"]["statusTo"])
             for u in updates]
    assert steps[:2] == [("COMPLIANCE_PASS", None, "PENDING"), ("VENUE_NEW", "NEW", "ACCEPTED")]
    assert steps[-1] == ("CANCELED", "CANCELED", "CANCELED")
    assert steps[2:-1] and all(s == ("PARTIAL_FILL", "TRADE", "PARTIALLY_FILLED") for s in steps[2:-1])
    last = updates[-1]["transition"]
    assert (D(last["cumQty"]), D(last["leavesQty"])) == (q.ask_size, 0)
    assert sum(D(u["transition"]["lastQty"]) for u in updates[2:-1]) == q.ask_size
    with rt.db.tenant_session(tenant.id) as session:
        stored = session.exec(select(OrderEvent).where(OrderEvent.order_id == o["id"])
                              .order_by(OrderEvent.seq)).all()
    assert [(e.seq, e.event, str(e.stream_seq)) for e in stored] == \
        [(u["transition"]["seq"], u["transition"]["event"], u["transition"]["cursor"]) for u in updates]


def test_a_reconnecting_drop_copy_replays_what_it_missed_and_nothing_of_another_tenant(desk):
    gql, a, clock, rt, live = desk
    b = onboard(rt)
    _account(gql, b.key)
    limit = str((rt.market_data.quote("AAPL.XNAS", clock.now()).bid * D("0.95")).quantize(D("0.01")))

    async def first_session() -> list[dict[str, Any]]:
        async with TransportWS(live.ws_url, a.key) as ws:
            await ws.subscribe("u", UPDATES)
            await subscribed(rt, orders_topic(a.id))
            o = (await asyncio.to_thread(gql.data, SUBMIT, {"input": order()}, key=a.key))["submitOrder"]
            return await collect(ws, "u", ended(o["id"], "FILLED"))

    seen = asyncio.run(first_session())
    last = seen[-1]["transition"]["cursor"]
    # While A's drop copy is away: A's orders move, and B trades too.
    missed_orders = [gql.data(SUBMIT, {"input": order(quantity="7")}, key=a.key)["submitOrder"],
                     gql.data(SUBMIT, {"input": order(ordType="LIMIT", timeInForce="DAY",
                                                      limitPrice=limit, quantity="3")},
                              key=a.key)["submitOrder"]]
    b_order = gql.data(SUBMIT, {"input": order(quantity="4")}, key=b.key)["submitOrder"]
    with rt.db.tenant_session(a.id) as session:
        expected = [(e.order_id, e.seq) for e in session.exec(
            select(OrderEvent).where(OrderEvent.stream_seq > int(last)).order_by(OrderEvent.stream_seq))]
    assert {o for o, _ in expected} == {o["id"] for o in missed_orders} and len(expected) >= 5

    async def reconnect() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        async with TransportWS(live.ws_url, a.key) as ws:
            await ws.subscribe("u", UPDATES, {"after": last})
            replayed = await collect(ws, "u", lambda u: len(u) == len(expected))
            await subscribed(rt, orders_topic(a.id))
            # Live again: a cancel after the replay comes once, right after it.
            await asyncio.to_thread(gql.data, "mutation($id: ID!) { cancelOrder(id: $id) { id } }",
                                    {"id": missed_orders[1]["id"]}, key=a.key)
            live_updates = await collect(ws, "u", lambda u: len(u) == 1)
            with pytest.raises(TimeoutError):  # and nothing more (no repeat of the replay)
                await ws.next(timeout=1.0, op_id="u")
            return replayed, live_updates

    replayed, live_updates = asyncio.run(reconnect())
    assert [(u["transition"]["orderId"], u["transition"]["seq"]) for u in replayed] == expected
    assert all(u["sequence"] is None for u in replayed)  # from the store
    _check_stream(seen)
    _check_stream([seen[-1], *replayed, *live_updates])
    assert live_updates[0]["transition"]["event"] == "CANCELED"
    assert live_updates[0]["sequence"] is not None
    # The same catch-up as a query, page by page.
    paged, after = [], last
    while True:
        page = gql.data(EVENTS, {"after": after, "first": 2}, key=a.key)["orderEvents"]
        paged += [e["node"] for e in page["edges"]]
        if not page["pageInfo"]["hasNextPage"]:
            break
        after = page["pageInfo"]["endCursor"]
    cancel = (missed_orders[1]["id"], live_updates[0]["transition"]["seq"])
    assert [(t["orderId"], t["seq"]) for t in paged] == [*expected, cancel]
    assert paged[:len(expected)] == [u["transition"] for u in replayed]

    # B: only B's own transitions, from the start; A's cursor is beyond B's stream.
    b_events = gql.data(EVENTS, {"after": "0", "first": 100}, key=b.key)["orderEvents"]["edges"]
    assert {e["node"]["orderId"] for e in b_events} == {b_order["id"]}
    a_all = gql.data(EVENTS, {"first": 100}, key=a.key)["orderEvents"]["edges"]
    assert b_order["id"] not in {e["node"]["orderId"] for e in a_all}
    body = gql(EVENTS, {"after": a_all[-1]["cursor"], "first": 5}, key=b.key)
    assert int(a_all[-1]["cursor"]) > len(b_events)
    assert error_codes(body) == ["ORDER_CURSOR_INVALID"]
    assert error_codes(gql(EVENTS, {"after": "-1", "first": 5}, key=a.key)) == ["ORDER_CURSOR_INVALID"]
    assert error_codes(gql(EVENTS, {"after": "0", "first": 0}, key=a.key)) == ["PAGE_SIZE_INVALID"]

    async def b_replays_from_the_start() -> tuple[list[dict[str, Any]], dict[str, Any]]:
        async with TransportWS(live.ws_url, b.key) as ws:
            await ws.subscribe("u", UPDATES, {"after": "0"})
            got = await collect(ws, "u", lambda u: len(u) == len(b_events))
            with pytest.raises(TimeoutError):
                await ws.next(timeout=1.0, op_id="u")
            await ws.subscribe("bad", UPDATES, {"after": a_all[-1]["cursor"]})
            return got, await ws.next(op_id="bad")

    got, refused = asyncio.run(b_replays_from_the_start())
    assert {u["transition"]["orderId"] for u in got} == {b_order["id"]}
    errors = refused["payload"] if refused["type"] == "error" else refused["payload"]["errors"]
    assert [e["extensions"]["code"] for e in errors] == ["ORDER_CURSOR_INVALID"], refused


def test_a_transition_the_bus_loses_is_read_from_the_store(desk, monkeypatch):
    gql, tenant, _clock, rt, live = desk
    publish = rt.bus.publish
    dropped: list[dict[str, Any]] = []

    def lossy(topic: str, payload: dict[str, Any]) -> Any:
        # The claim's message (the order's first transition) never arrives.
        if topic == orders_topic(tenant.id) and not dropped:
            dropped.append(payload)
            return None
        return publish(topic, payload)

    async def scenario() -> list[dict[str, Any]]:
        async with TransportWS(live.ws_url, tenant.key) as ws:
            await ws.subscribe("u", UPDATES)
            await subscribed(rt, orders_topic(tenant.id))
            monkeypatch.setattr(rt.bus, "publish", lossy)
            # A batch's events too, one by one through `lossy` (Redis sends them in one call).
            monkeypatch.setattr(rt.bus, "publish_many", lambda items: publish_each(rt.bus, items))
            o = (await asyncio.to_thread(gql.data, SUBMIT, {"input": order()}, key=tenant.key))["submitOrder"]
            return await collect(ws, "u", ended(o["id"], "FILLED"))

    updates = asyncio.run(scenario())
    assert [t["event"] for t in dropped[0]["transitions"]] == ["COMPLIANCE_PASS"]
    _check_stream(updates)
    assert updates[0]["transition"]["event"] == "COMPLIANCE_PASS" and updates[0]["sequence"] is None
    assert updates[-1]["transition"]["statusTo"] == "FILLED"
