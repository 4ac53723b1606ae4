"""`alphintra venue serve` (issue 14): one process holds the simulated venues' books for every
gateway process. A real `venue serve` subprocess on a spare port, and two gateway runtimes,
each served by its own app, with ALPHINTRA_VENUE_URL pointed at it, on a SQLite database of
this module's own (the suite's shared database holds other tests' orders on manual clocks,
which a real-time venue process would restore and expire) and in-process buses.

- A resting limit order placed through gateway A is filled by a crossing order sent through
  gateway B: both orders, their executions and positions, in the database and through GraphQL.
- A's order is amended and cancelled through B; A's orders mass-cancelled through B.
- The venue process restarted: the open order is restored once, by it alone, and still trades.
- A client without the secret key is refused; a gateway with another key cannot trade.
- The venue process killed: the next submit is answered with a stable code and writes nothing;
  a cancel answers VENUE_UNAVAILABLE and leaves the order as it was.
- `serve` beside Redis without ALPHINTRA_VENUE_URL is refused, naming the fix.
Unit tests of the link (handshake, the calls' checks) are in tests/test_venue_link.py.
"""

from __future__ import annotations

import base64
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal as D
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from gateway.app import create_app
from gateway.audit.models import AuditRecord
from gateway.cli import migrate_database
from gateway.runtime import Runtime, build_runtime
from gateway.secrets import SecretBox
from gateway.settings import Settings
from gateway.trading.intake import OrderInput
from gateway.trading.models import Execution, Order
from gateway.trading.venue_client import RemoteVenue, VenueUnavailable
from gateway.trading.venue_link import link_key
from plugins.sdk import OrderRequest, OrdType, Side, TimeInForce
from tests.support import GraphQLClient, LiveServer, error_codes, free_port, onboard, unique
from tests.test_multiprocess import Proc, await_condition

# A venue process and two gateways on a migrated database: about 11 s to set up.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

ORDER_FIELDS = "id clientOrderId account status cumQty leavesQty avgPx limitPrice quantity rejectCode"
SUBMIT = f"mutation($input: SubmitOrderInput!) {{ submitOrder(input: $input) {{ {ORDER_FIELDS} }} }}"
ORDER = f"query($id: ID!) {{ order(id: $id) {{ {ORDER_FIELDS} }} }}"
CANCEL = f"mutation($id: ID!) {{ cancelOrder(id: $id) {{ {ORDER_FIELDS} }} }}"
AMEND = f"""mutation($id: ID!, $q: String, $p: String) {{ amendOrder(id: $id, quantity: $q,
  limitPrice: $p) {{ {ORDER_FIELDS} }} }}"""
CANCEL_ORDERS = """mutation($f: CancelOrdersFilter!) { cancelOrders(filter: $f) {
  matched canceled failed results { orderId outcome status code } } }"""
SUBMIT_MANY = ("mutation($inputs: [SubmitOrderInput!]!) { submitOrders(inputs: $inputs) { "
               "error { code } order { id status routing } } }")
ACCOUNT = """mutation($input: TradingAccountInput!) { upsertTradingAccount(input: $input) { id } }"""
TRADES = """query($id: ID!) { trades(orderId: $id) { edges { node { lastQty lastPx liquidity mic } } } }"""
POSITIONS = """query($a: String!) { positions(account: $a) { instrumentKey quantity avgPrice } }"""
SYMBOL, MIC, KEY = "BTC-USD", "ALPX", "BTC-USD.ALPX"  # the 24/7 venue: open whatever the hour
TICK = D("0.01")


def run_cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in os.environ.items() if not k.startswith("ALPHINTRA_")}
    full.update(env)
    return subprocess.run([sys.executable, "-m", "gateway", *args], env=full, capture_output=True,
                          text=True, timeout=60)


class VenueProcess:
    """`alphintra venue serve` on a spare port; start, kill, start again."""

    def __init__(self, env: dict[str, str], key: bytes) -> None:
        self.port = free_port()
        self.url = f"tcp://127.0.0.1:{self.port}"
        self.env = env
        self.key = key
        self.proc: Proc | None = None

    def start(self) -> None:
        self.proc = Proc("venue", ["venue", "serve", "--port", str(self.port)], self.env)
        probe = RemoteVenue(self.url, self.key)
        try:
            await_condition(lambda: _answers(probe), 90, "the venue process answering", [self.proc])
        finally:
            probe.close()

    def kill(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.popen.wait(10)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop()


def _answers(probe: RemoteVenue) -> bool:
    try:
        return bool(probe.connectors())
    except VenueUnavailable:
        return False


@dataclass
class Gateway:
    name: str
    runtime: Runtime
    gql: GraphQLClient


@dataclass
class World:
    venue: VenueProcess
    a: Gateway
    b: Gateway
    settings: Settings  # the gateways' (ALPHINTRA_VENUE_URL set)

    def tenant(self) -> tuple[Any, str, str]:
        """A new tenant with an account (USD, ample credit); (handle, its key, the account).
        Accounts are named apart: the venue prevents trades between orders of one account."""
        tenant = onboard(self.a.runtime)
        self.b.runtime.policy.reload()  # what Redis's policy event does for another process
        account = unique("ACC").upper()
        self.a.gql.data(ACCOUNT, {"input": {"code": account, "currency": "USD", "domicile": "US",
                                            "creditLimit": "100000000", "equity": "100000000"}},
                        key=tenant.key)
        return tenant, tenant.key, account


@pytest.fixture(scope="module")
def world(settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    secret = base64.b64encode(os.urandom(32)).decode()
    database = f"sqlite:///{tmp_path_factory.mktemp('venue') / 'venue.db'}"
    own = settings.with_(database_url=database, redis_url=None, secret_key=secret,
                         embedded_worker="off", warm_on_start=False)
    migrate_database(own)
    env = {"ALPHINTRA_DATABASE_URL": database, "ALPHINTRA_SECRET_KEY": secret,
           "ALPHINTRA_JWT_SECRET": settings.jwt_secret or "", "ALPHINTRA_LOG_JSON": "false",
           "ALPHINTRA_WARM_ON_START": "false", "ALPHINTRA_EMBEDDED_WORKER": "off",
           "ALPHINTRA_OTEL_EXPORTER": "none"}
    venue = VenueProcess(env, link_key(SecretBox.from_settings(own)))
    venue.start()
    gateway_settings = own.with_(venue_url=venue.url)
    runtimes = [build_runtime(gateway_settings), build_runtime(gateway_settings)]
    servers = [LiveServer(create_app(runtime=rt)) for rt in runtimes]
    try:
        for server in servers:
            server.__enter__()
        a, b = (Gateway(name, rt, GraphQLClient(server.url))
                for name, rt, server in zip("AB", runtimes, servers, strict=True))
        yield World(venue, a, b, gateway_settings)
    finally:
        for server in servers:
            if hasattr(server, "url"):
                server.__exit__(None, None, None)
        for rt in runtimes:
            rt.close()
        venue.stop()


def mid_price(rt: Runtime) -> D:
    """A price inside the venue's spread now, as the venue process quotes it (its books carry
    the impact of earlier orders, which the market data does not): a buy there rests as the
    best bid."""
    connector = next(iter(rt.orders.connectors().values()))

    def touch(side: Side) -> D:
        quote = connector.quote_for(OrderRequest(
            unique("q"), "ACC", SYMBOL, MIC, side, OrdType.MARKET, TimeInForce.IOC, D("0.001"),
            None, None, "USD", None, rt.markets.now()))
        assert quote is not None and quote.expected_price is not None, quote
        return quote.expected_price

    bid, ask = touch(Side.SELL), touch(Side.BUY)
    assert ask - bid >= 4 * TICK, (bid, ask)
    return ((bid + ask) / 2).quantize(TICK)


def order_input(account: str, side: str, quantity: str, price: D | None, tif: str = "GTC",
                cid: str | None = None) -> dict[str, Any]:
    base = {"clientOrderId": cid or unique("o"), "account": account, "symbol": SYMBOL, "mic": MIC,
            "side": side, "quantity": quantity, "timeInForce": tif}
    if price is None:
        base.update(ordType="MARKET", timeInForce="IOC")
    else:
        base.update(ordType="LIMIT", limitPrice=str(price))
    return base


def row(rt: Runtime, order_id: str) -> Order:
    with rt.db.system_session() as session:
        found = session.get(Order, order_id)
        assert found is not None
        return found


def executions(rt: Runtime, order_id: str) -> list[Execution]:
    with rt.db.system_session() as session:
        return list(session.exec(select(Execution).where(Execution.order_id == order_id)).scalars())


def test_a_resting_order_through_one_gateway_is_filled_by_an_order_through_the_other(world):
    a, b = world.a, world.b
    _, maker_key, maker = world.tenant()
    _, taker_key, taker = world.tenant()
    # The taker holds some to sell (bought at the market, through B).
    bought = b.gql.data(SUBMIT, {"input": order_input(taker, "BUY", "2", None)},
                        key=taker_key)["submitOrder"]
    assert bought["status"] == "FILLED", bought
    price = mid_price(a.runtime)
    resting = a.gql.data(SUBMIT, {"input": order_input(maker, "BUY", "0.5", price)},
                         key=maker_key)["submitOrder"]
    assert resting["status"] == "ACCEPTED", str(resting)
    crossing = b.gql.data(SUBMIT, {"input": order_input(taker, "SELL", "0.5", price, tif="IOC")},
                          key=taker_key)["submitOrder"]
    # One book: B's sell met A's buy, the best bid, at its price.
    assert crossing["status"] == "FILLED", crossing
    assert D(crossing["cumQty"]) == D("0.5") and D(crossing["avgPx"]) == price
    for gateway in (a, b):  # either process reads the same, from the database the venue wrote
        seen = gateway.gql.data(ORDER, {"id": resting["id"]}, key=maker_key)["order"]
        assert seen["status"] == "FILLED" and D(seen["cumQty"]) == D("0.5"), seen
        assert D(seen["avgPx"]) == price and D(seen["leavesQty"]) == 0
    maker_trades = a.gql.data(TRADES, {"id": resting["id"]}, key=maker_key)["trades"]["edges"]
    taker_trades = b.gql.data(TRADES, {"id": crossing["id"]}, key=taker_key)["trades"]["edges"]
    assert [(D(t["node"]["lastQty"]), D(t["node"]["lastPx"]), t["node"]["liquidity"])
            for t in maker_trades] == [(D("0.5"), price, "ADDED")]
    assert [(D(t["node"]["lastQty"]), D(t["node"]["lastPx"]), t["node"]["liquidity"])
            for t in taker_trades] == [(D("0.5"), price, "REMOVED")]
    made, taken = executions(a.runtime, resting["id"]), executions(a.runtime, crossing["id"])
    assert len(made) == 1 and len(taken) == 1 and made[0].match_id == taken[0].match_id
    assert row(a.runtime, resting["id"]).status == "FILLED"
    assert row(a.runtime, crossing["id"]).status == "FILLED"
    maker_positions = b.gql.data(POSITIONS, {"a": maker}, key=maker_key)["positions"]
    assert [(p["instrumentKey"], D(p["quantity"]), D(p["avgPrice"])) for p in maker_positions] == \
        [(KEY, D("0.5"), price)]
    taker_positions = a.gql.data(POSITIONS, {"a": taker}, key=taker_key)["positions"]
    assert [(p["instrumentKey"], D(p["quantity"])) for p in taker_positions] == [(KEY, D("1.5"))]



def test_a_batch_asks_the_venue_process_for_its_quotes_in_one_call(world, monkeypatch):
    """The router's quotes for a whole batch cross as one call, not one per order (which held
    the tenant's intake lock for a round trip an order)."""
    _, key, account = world.tenant()
    below = (mid_price(world.a.runtime) * D("0.9")).quantize(TICK)  # rests, far from the touch
    venue = world.a.runtime.orders.venue
    calls: list[str] = []
    real = venue._call
    monkeypatch.setattr(venue, "_call", lambda method, args, **kw: calls.append(method)
                        or real(method, args, **kw))
    inputs = [order_input(account, "BUY", "0.1", below - k * TICK, tif="DAY") for k in range(3)]
    answered = world.a.gql.data(SUBMIT_MANY, {"inputs": inputs}, key=key)["submitOrders"]
    assert [(r["error"], r["order"]["status"]) for r in answered] == [(None, "ACCEPTED")] * 3
    assert calls == ["quote_many", "submit"]
    for r in answered:  # the routing record each order keeps, from the batch's quotes
        routing = row(world.a.runtime, r["order"]["id"]).routing
        assert routing["connector"] == "sim-exchange" and routing["mic"] == MIC, routing
        assert r["order"]["routing"] == routing  # answered too (the venue process sends none)

def test_orders_placed_through_one_gateway_are_amended_and_cancelled_through_the_other(world):
    a, b = world.a, world.b
    _, key, account = world.tenant()
    low = (mid_price(a.runtime) * D("0.95")).quantize(TICK)
    placed = a.gql.data(SUBMIT, {"input": order_input(account, "BUY", "0.3", low)},
                        key=key)["submitOrder"]
    assert placed["status"] == "ACCEPTED", placed
    amended = b.gql.data(AMEND, {"id": placed["id"], "q": "0.4", "p": str(low - 1)},
                         key=key)["amendOrder"]
    assert amended["status"] == "ACCEPTED", amended
    assert D(amended["quantity"]) == D("0.4") and D(amended["limitPrice"]) == low - 1
    cancelled = b.gql.data(CANCEL, {"id": placed["id"]}, key=key)["cancelOrder"]
    assert cancelled["status"] == "CANCELED" and D(cancelled["leavesQty"]) == 0, cancelled
    assert a.gql.data(ORDER, {"id": placed["id"]}, key=key)["order"]["status"] == "CANCELED"
    # Many at once: placed through A, cancelled in one call through B.
    more = [a.gql.data(SUBMIT, {"input": order_input(account, "BUY", "0.1", low - k)},
                       key=key)["submitOrder"] for k in range(3)]
    assert {o["status"] for o in more} == {"ACCEPTED"}
    result = b.gql.data(CANCEL_ORDERS, {"f": {"all": True}}, key=key)["cancelOrders"]
    assert (result["matched"], result["canceled"], result["failed"]) == (3, 3, 0), result
    assert {(r["orderId"], r["outcome"], r["status"]) for r in result["results"]} == \
        {(o["id"], "CANCELED", "CANCELED") for o in more}
    assert {row(a.runtime, o["id"]).reject_code for o in more} == {"MASS_CANCEL"}


def test_a_restarted_venue_process_restores_the_open_order_once_and_it_still_trades(world):
    a, b = world.a, world.b
    tenant, maker_key, maker = world.tenant()
    _, taker_key, taker = world.tenant()
    assert b.gql.data(SUBMIT, {"input": order_input(taker, "BUY", "1", None)},
                      key=taker_key)["submitOrder"]["status"] == "FILLED"
    low = (mid_price(a.runtime) * D("0.95")).quantize(TICK)
    resting = a.gql.data(SUBMIT, {"input": order_input(maker, "BUY", "0.25", low)},
                         key=maker_key)["submitOrder"]
    assert resting["status"] == "ACCEPTED", str(resting)
    world.venue.stop()
    world.venue.start()
    # Restored by the venue process alone: one record of it, naming the order once (neither
    # gateway restores the built-ins, each would otherwise have put it in a book of its own).
    with a.runtime.db.tenant_session(tenant.id) as session:
        records = list(session.exec(select(AuditRecord).where(
            AuditRecord.tenant_id == tenant.id, AuditRecord.kind == "order.venue_restored")).scalars())
    assert len(records) == 1, [r.payload for r in records]
    assert records[0].payload["restored"] == [resting["id"]] and records[0].payload["canceled"] == []
    # It is on the venue's book: re-priced into the spread through B, then crossed through B.
    price = mid_price(b.runtime)
    moved = b.gql.data(AMEND, {"id": resting["id"], "p": str(price)}, key=maker_key)["amendOrder"]
    assert moved["status"] == "ACCEPTED", moved
    crossing = b.gql.data(SUBMIT, {"input": order_input(taker, "SELL", "0.25", price, tif="IOC")},
                          key=taker_key)["submitOrder"]
    assert crossing["status"] == "FILLED" and D(crossing["avgPx"]) == price, crossing
    filled = a.gql.data(ORDER, {"id": resting["id"]}, key=maker_key)["order"]
    assert filled["status"] == "FILLED" and D(filled["cumQty"]) == D("0.25"), filled
    assert len(executions(a.runtime, resting["id"])) == 1


def test_a_client_without_the_secret_key_is_refused(world):
    stranger = RemoteVenue(world.venue.url, link_key(SecretBox(os.urandom(32))))
    try:
        with pytest.raises(VenueUnavailable) as refused:
            stranger.connectors()
        assert not refused.value.sent and refused.value.code == "VENUE_UNAVAILABLE"
    finally:
        stranger.close()
    # A gateway on another secret key cannot trade through it: nothing reaches the venue.
    other = build_runtime(world.settings.with_(secret_key=base64.b64encode(os.urandom(32)).decode()))
    try:
        tenant = onboard(other)
        other.orders.upsert_account(tenant.id, None, code="ACC", currency="USD", domicile="US",
                                    credit_limit="100000000", equity="100000000")
        cid = unique("o")
        result = other.orders.submit(tenant.id, None, OrderInput(
            cid, "ACC", SYMBOL, "BUY", "1", ord_type="MARKET", time_in_force="IOC", mic=MIC))
        assert isinstance(result.error, VenueUnavailable) and result.order is None, result
        with other.db.system_session() as session:
            assert session.exec(select(Order).where(Order.client_order_id == cid)).first() is None
    finally:
        other.close()
    # Bytes that are not a handshake: dropped, the process keeps serving.
    with socket.create_connection(("127.0.0.1", world.venue.port), timeout=5) as raw:
        raw.sendall(b"\x00\x00\x00\x05hello")
        raw.settimeout(5)
        while raw.recv(4096):
            pass  # the server's hello, then the end of the stream
    assert _answers(RemoteVenue(world.venue.url, world.venue.key))


def test_a_killed_venue_process_answers_a_stable_code_and_writes_nothing(world):
    a = world.a
    _, key, account = world.tenant()
    low = (mid_price(a.runtime) * D("0.95")).quantize(TICK)
    resting = a.gql.data(SUBMIT, {"input": order_input(account, "BUY", "0.2", low)},
                         key=key)["submitOrder"]
    assert resting["status"] == "ACCEPTED", str(resting)
    world.venue.kill()
    try:
        cid = unique("dead")
        body = a.gql(SUBMIT, {"input": order_input(account, "BUY", "0.1", low, cid=cid)}, key=key)
        # As for a connector that fails to quote: no venue would take it (alternatives say why).
        assert error_codes(body) == ["ROUTE_UNAVAILABLE"], body
        alternatives = body["errors"][0]["extensions"]["alternatives"]
        assert {x["status"] for x in alternatives} == {"CONNECTOR_FAILED"}
        with a.runtime.db.system_session() as session:
            assert session.exec(select(Order).where(Order.client_order_id == cid)).first() is None
        body = a.gql(CANCEL, {"id": resting["id"]}, key=key)
        assert error_codes(body) == ["VENUE_UNAVAILABLE"], body
        assert row(a.runtime, resting["id"]).status == "ACCEPTED"
    finally:
        world.venue.start()
    # Back: the order was restored and cancels.
    assert world.b.gql.data(CANCEL, {"id": resting["id"]}, key=key)["cancelOrder"]["status"] == "CANCELED"


def test_serve_beside_redis_without_a_venue_url_is_refused(tmp_path: Path) -> None:
    env = {"ALPHINTRA_REDIS_URL": "redis://127.0.0.1:1/0",  # refused before connecting
           "ALPHINTRA_SECRET_KEY": "A" * 43 + "=", "ALPHINTRA_LOG_JSON": "false",
           "ALPHINTRA_DEFI_EMBEDDED": "false",
           "ALPHINTRA_DATABASE_URL": f"sqlite:///{tmp_path / 'x.db'}"}
    done = run_cli("serve", "--port", str(free_port()), env=env)
    assert done.returncode == 2, done.stderr
    line = done.stderr.strip()
    assert "\n" not in line and "alphintra venue serve" in line and "ALPHINTRA_VENUE_URL" in line
    assert not (tmp_path / "x.db").exists()  # refused before anything was made
    settings = Settings(redis_url="redis://x")
    assert settings.venue_problem() is not None
    assert settings.with_(venue_url="tcp://127.0.0.1:7710").venue_problem() is None
    assert Settings().venue_problem() is None  # `make run`: no Redis, the venues in process
    bad = run_cli("config", env={"ALPHINTRA_VENUE_URL": "http://127.0.0.1:7710"})
    assert bad.returncode == 2 and "ALPHINTRA_VENUE_URL" in bad.stderr
