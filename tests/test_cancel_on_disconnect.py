"""Cancel-on-disconnect through a real WebSocket (issue 17): a session that opts in at
`connection_init` (`"cancelOnDisconnect": true`) has, when its socket closes (dropped or closed
cleanly), every open order its user submitted cancelled through the mass cancel, reason
CANCEL_ON_DISCONNECT, audited with the user as actor; other users' orders, other tenants' and
sessions that did not opt in are left alone. The opt-in takes a boolean and the right to cancel."""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal as D
from typing import Any

import pytest
import websockets
from sqlmodel import select

from gateway.app import create_app
from gateway.audit.models import AuditRecord
from gateway.markets.clock import ManualClock
from gateway.runtime import Runtime
from tests.support import (
    GraphQLClient,
    LiveServer,
    TenantHandle,
    onboard,
    unique,
    user_key,
    wait_for,
    with_clock,
)

START = datetime(2025, 3, 26, 14, 0, tzinfo=UTC)  # a Wednesday, New York open
SUBMIT = """mutation($input: SubmitOrderInput!) { submitOrder(input: $input) { id status } }"""
ORDER = """query($id: ID!) { order(id: $id) { status rejectCode } }"""
SIZES = itertools.count(1)
ACCOUNT = """mutation($input: TradingAccountInput!) { upsertTradingAccount(input: $input) { code } }"""


@pytest.fixture(scope="module")
def venue(runtime: Runtime) -> Iterator[tuple[LiveServer, ManualClock, Runtime]]:
    clock = ManualClock(START)
    rt = with_clock(runtime, clock)
    with LiveServer(create_app(runtime=rt)) as live:
        yield live, clock, rt


@pytest.fixture
def desk(venue: Any) -> tuple[GraphQLClient, ManualClock, Runtime, LiveServer, TenantHandle]:
    live, clock, rt = venue
    clock.set(clock.now() + timedelta(minutes=1))
    gql = GraphQLClient(live.url)
    tenant = onboard(rt)
    _account(gql, tenant.key)
    return gql, clock, rt, live, tenant


def _account(gql: GraphQLClient, key: str) -> None:
    gql.data(ACCOUNT, {"input": {"code": "ACC1", "currency": "USD", "domicile": "US",
                                 "creditLimit": "1000000000", "equity": "1000000000"}}, key=key)


def resting(gql: GraphQLClient, rt: Runtime, clock: ManualClock, key: str, n: int) -> list[str]:
    """`n` buy orders resting below the market; their ids."""
    price = (rt.market_data.quote("AAPL.XNAS", clock.now()).bid * D("0.96")).quantize(D("0.01"))
    ids = []
    for _ in range(n):
        o = gql.data(SUBMIT, {"input": {
            "clientOrderId": unique("c"), "account": "ACC1", "symbol": "AAPL", "mic": "XNAS",
            # Each its own size: the clock stands still and the duplicate guard would deny a repeat.
            "side": "BUY", "quantity": str(next(SIZES)), "ordType": "LIMIT", "timeInForce": "GTC",
            "limitPrice": str(price)}}, key=key)["submitOrder"]
        assert o["status"] == "ACCEPTED", o
        ids.append(o["id"])
    return ids


def statuses(gql: GraphQLClient, key: str, ids: list[str]) -> list[tuple[str, str | None]]:
    out = []
    for order_id in ids:
        o = gql.data(ORDER, {"id": order_id}, key=key)["order"]
        out.append((o["status"], o["rejectCode"]))
    return out


async def connect(url: str, key: str, **params: Any) -> tuple[Any, dict[str, Any]]:
    """A graphql-transport-ws socket after connection_init; (socket, first answer)."""
    ws = await websockets.connect(url, subprotocols=["graphql-transport-ws"])
    await ws.send(json.dumps({"type": "connection_init",
                              "payload": {"Authorization": f"Bearer {key}", **params}}))
    return ws, json.loads(await asyncio.wait_for(ws.recv(), 10))


async def refused(url: str, key: str, **params: Any) -> tuple[int, str]:
    """The close code and reason of a connection_init the server refuses."""
    ws = await websockets.connect(url, subprotocols=["graphql-transport-ws"])
    await ws.send(json.dumps({"type": "connection_init",
                              "payload": {"Authorization": f"Bearer {key}", **params}}))
    with pytest.raises(websockets.ConnectionClosed) as closed:
        await asyncio.wait_for(ws.recv(), 10)
    assert closed.value.rcvd is not None
    return closed.value.rcvd.code, closed.value.rcvd.reason


def test_an_opted_in_socket_that_drops_cancels_its_users_open_orders_only(desk: Any) -> None:
    gql, clock, rt, live, tenant = desk
    _, trader_key = user_key(rt, tenant, "trader")
    other = onboard(rt)
    _account(gql, other.key)
    mine = resting(gql, rt, clock, tenant.key, 3)
    colleagues = resting(gql, rt, clock, trader_key, 2)
    others = resting(gql, rt, clock, other.key, 2)

    async def drop() -> dict[str, Any]:
        ws, ack = await connect(live.ws_url, tenant.key, cancelOnDisconnect=True)
        ws.transport.abort()  # the connection is lost: no close frame
        return ack

    ack = asyncio.run(drop())
    assert ack == {"type": "connection_ack",
                   "payload": {"tenant": tenant.slug, "cancelOnDisconnect": True}}
    wait_for(lambda: statuses(gql, tenant.key, mine) == [("CANCELED", "CANCEL_ON_DISCONNECT")] * 3,
             timeout=15)
    assert statuses(gql, trader_key, colleagues) == [("ACCEPTED", None)] * 2
    assert statuses(gql, other.key, others) == [("ACCEPTED", None)] * 2
    with rt.db.tenant_session(tenant.id) as session:
        request = session.exec(select(AuditRecord).where(
            AuditRecord.tenant_id == tenant.id,
            AuditRecord.kind == "order.mass_cancel_requested")).one()
    assert request.actor == tenant.admin_id
    assert request.payload["reason"] == "CANCEL_ON_DISCONNECT"
    assert request.payload["filter"]["created_by"] == tenant.admin_id
    assert sorted(o["order_id"] for o in request.payload["orders"]) == sorted(mine)


def test_a_clean_close_cancels_too_and_a_session_that_did_not_opt_in_cancels_nothing(desk: Any) -> None:
    gql, clock, rt, live, tenant = desk
    _, plain_key = user_key(rt, tenant, "trader")
    _, opted_key = user_key(rt, tenant, "trader")
    kept = resting(gql, rt, clock, plain_key, 2)
    gone = resting(gql, rt, clock, opted_key, 2)

    async def sessions() -> tuple[dict[str, Any], dict[str, Any]]:
        plain, plain_ack = await connect(live.ws_url, plain_key)
        await plain.close()
        opted, opted_ack = await connect(live.ws_url, opted_key, cancelOnDisconnect=True)
        await opted.close()  # graphql-transport-ws has no logout: a clean close counts too
        return plain_ack, opted_ack

    plain_ack, opted_ack = asyncio.run(sessions())
    assert plain_ack["payload"] == {"tenant": tenant.slug}
    assert opted_ack["payload"]["cancelOnDisconnect"] is True
    wait_for(lambda: statuses(gql, opted_key, gone) == [("CANCELED", "CANCEL_ON_DISCONNECT")] * 2,
             timeout=15)
    time.sleep(0.5)  # the plain socket closed before: anything it did is done by now
    assert statuses(gql, plain_key, kept) == [("ACCEPTED", None)] * 2


def test_cancel_on_disconnect_takes_a_boolean_and_the_right_to_cancel(desk: Any) -> None:
    _gql, _clock, rt, live, tenant = desk
    _, viewer_key = user_key(rt, tenant, "viewer")
    assert asyncio.run(refused(live.ws_url, tenant.key, cancelOnDisconnect="yes")) == \
        (4400, "CANCEL_ON_DISCONNECT_INVALID")
    assert asyncio.run(refused(live.ws_url, viewer_key, cancelOnDisconnect=True))[0] == 4403

    async def viewer_without() -> dict[str, Any]:
        ws, ack = await connect(live.ws_url, viewer_key, cancelOnDisconnect=False)
        await ws.close()
        return ack

    assert asyncio.run(viewer_without())["type"] == "connection_ack"
