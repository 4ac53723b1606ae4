"""Hostile probes of `alphintra venue serve` (issue 14): the wire against strangers, the calls'
checks, and the process's life (a second one started on a taken port). Quick ones run the real
server class on a spare port in this process; the slow ones run real `venue serve` processes
on a SQLite database of their own (see tests/test_venue_process.py)."""

from __future__ import annotations

import base64
import dataclasses
import os
import socket
import struct
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal as D
from typing import Any

import msgpack
import pytest
from sqlalchemy import select

from gateway.secrets import SecretBox
from gateway.trading import venue_link, venue_server
from gateway.trading.routing import ConnectorEntry, RouteUnavailable, RoutingDecision, SmartOrderRouter
from gateway.trading.venue_client import RemoteConnector, RemoteVenue, VenueUnavailable
from gateway.trading.venue_link import HandshakeFailed, client_handshake, link_key
from gateway.trading.venue_server import CallInvalid, VenueService, VenueTCPServer, venue_orders
from plugins import wire
from plugins.sdk import OrderRequest, OrdType, Side, TimeInForce, VenueQuote
from plugins.wire import frame, packb, read_frame


def key() -> bytes:
    return link_key(SecretBox(os.urandom(32)))


class _Echo:
    """A venue service that answers every call with its method name."""

    def dispatch(self, method: Any, args: Any) -> Any:
        return method


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[VenueTCPServer, bytes]]:
    monkeypatch.setattr(venue_link, "HANDSHAKE_TIMEOUT_S", 1.0)
    monkeypatch.setattr(venue_server, "HANDSHAKE_TIMEOUT_S", 1.0)
    shared = key()
    srv = VenueTCPServer(("127.0.0.1", 0), _Echo(), shared)  # type: ignore[arg-type]
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    try:
        yield srv, shared
    finally:
        srv.shutdown()
        srv.server_close()


def _connect(srv: VenueTCPServer) -> socket.socket:
    sock = socket.create_connection(srv.server_address[:2], timeout=5)  # type: ignore[index]
    return sock


def _closed_within(sock: socket.socket, seconds: float) -> bool:
    """The server closed the connection (end of stream or a reset) within `seconds`."""
    sock.settimeout(seconds)
    try:
        while sock.recv(4096):
            pass
    except TimeoutError:
        return False
    except OSError:
        return True
    return True


def test_a_peer_trickling_its_handshake_is_dropped_at_the_deadline(server) -> None:
    """The handshake's timeout bounds the whole handshake, not each read: one byte now and
    then would otherwise hold a server thread for good."""
    srv, _ = server
    with _connect(srv) as sock:
        hello = read_frame(sock)
        assert hello is not None and "nonce" in hello
        sock.sendall(struct.pack(">I", 100))  # a plausible size, then a byte every 0.3 s
        started = time.monotonic()
        dropped = False
        while time.monotonic() - started < 3.0:
            try:
                sock.sendall(b"\x00")
            except OSError:
                dropped = True
                break
            sock.settimeout(0.3)
            try:
                if sock.recv(1) == b"":
                    dropped = True
                    break
            except TimeoutError:
                continue
            except OSError:
                dropped = True
                break
        assert dropped, "a trickling stranger still holds its connection after 3 handshake timeouts"


def test_an_oversized_handshake_frame_is_refused_before_it_is_read(server) -> None:
    srv, _ = server
    with _connect(srv) as sock:
        assert read_frame(sock) is not None
        sock.sendall(struct.pack(">I", 16 << 20))  # 16 MB announced by a stranger
        assert _closed_within(sock, 0.5)  # refused at the header, not read nor waited for


def test_a_handshake_frame_builds_no_object_for_a_stranger(server, monkeypatch) -> None:
    """Before the proof, a frame is plain msgpack: an SDK value inside it is never built."""
    built: list[str] = []
    real = wire._build
    monkeypatch.setattr(wire, "_build", lambda name, values: built.append(name) or real(name, values))
    srv, _ = server
    request = OrderRequest("o-1", "ACC", "X", "ALPX", Side.BUY, OrdType.MARKET, TimeInForce.IOC,
                           D(1), None, None, "USD", None, None)  # type: ignore[arg-type]
    with _connect(srv) as sock:
        assert read_frame(sock) is not None
        sock.sendall(frame({"nonce": request, "proof": b"x" * 32}))
        assert _closed_within(sock, 2)
    assert built == []


def test_strangers_in_the_handshake_are_capped_and_the_key_holder_still_gets_in(
        server, monkeypatch) -> None:
    monkeypatch.setattr(venue_server, "MAX_PENDING_HANDSHAKES", 4)
    srv, shared = server
    strangers = [_connect(srv) for _ in range(4)]
    try:
        for s in strangers:
            assert read_frame(s) is not None  # each in its handshake, saying nothing
        with _connect(srv) as fifth:
            assert _closed_within(fifth, 0.5)  # over the cap: closed at once, no thread
        # Strangers are dropped at the deadline; the slots come back.
        time.sleep(1.3)
        client = RemoteVenue(f"tcp://127.0.0.1:{srv.server_address[1]}", shared)
        try:
            assert client._call("describe", [], changes=False) == "describe"
        finally:
            client.close()
    finally:
        for s in strangers:
            s.close()


def test_a_captured_handshake_replayed_is_refused(server) -> None:
    """The server's nonce is fresh each time: a client's answer recorded once proves nothing
    on another connection; nor does the server's own proof reflected back."""
    srv, shared = server
    recorded: dict[str, Any] = {}
    with _connect(srv) as sock:
        hello = read_frame(sock)
        assert hello is not None
        sock.settimeout(5)
        # the honest client's answer, captured as it went
        client_nonce = os.urandom(32)
        proof = venue_link._proof(shared, b"client", hello["nonce"], client_nonce)
        recorded["answer"] = frame({"nonce": client_nonce, "proof": proof})
        sock.sendall(recorded["answer"])
        server_proof = read_frame(sock)
        assert server_proof is not None
    with _connect(srv) as replay:
        assert read_frame(replay) is not None
        replay.sendall(recorded["answer"])
        assert _closed_within(replay, 2)
    with _connect(srv) as reflect:
        hello2 = read_frame(reflect)
        assert hello2 is not None
        reflect.sendall(frame({"nonce": client_nonce, "proof": server_proof["proof"]}))
        assert _closed_within(reflect, 2)


def test_a_frame_injected_after_a_relayed_handshake_is_not_acted_on(server) -> None:
    """Someone on the path relays an honest handshake (the proofs pass through untouched), then
    writes calls of its own into the stream, replays a call it saw, or reflects the server's
    answer back: each ends the connection, none is answered."""
    srv, shared = server
    for attack in ("inject", "replay", "reflect"):
        with _connect(srv) as sock:
            sock.settimeout(5)
            link = client_handshake(sock, shared)  # the honest ends' handshake, relayed
            if attack == "inject":
                sock.sendall(frame({"i": 1, "m": "cancel_many", "a": [[], "MASS_CANCEL"]}))
            else:
                body = packb({"i": 1, "m": "describe", "a": []})
                sealed = frame({"b": body, "t": link._tag(b"client", 0, body)})  # as link.send
                sock.sendall(sealed)
                answer = read_frame(sock)
                assert answer is not None  # the honest call is answered
                sock.sendall(sealed if attack == "replay" else frame(answer))
            assert _closed_within(sock, 2), attack


def test_a_call_before_the_handshake_is_not_answered(server) -> None:
    srv, _ = server
    with _connect(srv) as sock:
        assert read_frame(sock) is not None
        sock.sendall(frame({"i": 1, "m": "describe", "a": []}))
        sock.settimeout(2)
        assert sock.recv(4096) == b""  # dropped without a word


def test_a_venue_that_takes_the_connection_and_never_speaks_times_out(monkeypatch) -> None:
    monkeypatch.setattr(venue_link, "HANDSHAKE_TIMEOUT_S", 0.5)
    listener = socket.create_server(("127.0.0.1", 0))
    accepted: list[socket.socket] = []

    def accept_and_trickle() -> None:
        conn, _ = listener.accept()
        accepted.append(conn)
        conn.sendall(struct.pack(">I", 60))
        for _ in range(20):  # a byte every 0.2 s: each read is quick, the whole is not
            time.sleep(0.2)
            try:
                conn.sendall(b"\x00")
            except OSError:
                return

    threading.Thread(target=accept_and_trickle, daemon=True).start()
    try:
        with socket.create_connection(listener.getsockname(), timeout=5) as sock:
            started = time.monotonic()
            with pytest.raises(HandshakeFailed):
                client_handshake(sock, key())
            assert time.monotonic() - started < 1.5
    finally:
        listener.close()
        for conn in accepted:
            conn.close()


def test_an_error_after_the_venue_acted_is_not_an_invalid_call(runtime, monkeypatch) -> None:
    """VENUE_CALL_INVALID tells the caller nothing was done (it then rejects the orders
    itself): a TypeError raised inside the venue step must not be answered with it."""
    from gateway.trading import amendments
    from gateway.trading.venue_server import venue_orders

    service = VenueService(venue_orders(runtime))
    monkeypatch.setattr(venue_server.venues, "built_in_connectors", lambda orders: {"sim": object()})
    monkeypatch.setattr(service.orders, "advance", lambda *a: 0)
    acted: list[str] = []

    def cancel_then_fail(orders: Any, connector: Any, order_id: str, mic: str) -> Any:
        acted.append(order_id)
        raise TypeError("a bug after the venue cancelled")

    monkeypatch.setattr(amendments, "cancel_at_venue", cancel_then_fail)
    with pytest.raises(TypeError):
        service.dispatch("cancel", ["sim", "o-1", "ALPX"])
    assert acted == ["o-1"]
    reply = venue_server.answer(service, {"i": 3, "m": "cancel", "a": ["sim", "o-1", "ALPX"]})
    assert reply["e"].get("code") != "VENUE_CALL_INVALID", reply
    with pytest.raises(CallInvalid):  # a wrong arity still is, before anything
        service.dispatch("cancel", ["sim", "o-1"])
    assert acted == ["o-1", "o-1"]


def test_every_argument_is_checked_before_the_venue_acts(runtime, monkeypatch) -> None:
    """The wire builds an OrderRequest field by field without checking a type: a quantity
    sent as text, an amend request's `at` that is no time, a cancel row's id that is a
    number... each is refused (VENUE_CALL_INVALID) before the connector or the database is
    touched, not found out half way through the venue step."""
    from datetime import datetime

    from gateway.trading import amendments, claims, mass_cancel
    from gateway.trading.venue_server import venue_orders

    service = VenueService(venue_orders(runtime))
    monkeypatch.setattr(venue_server.venues, "built_in_connectors", lambda orders: {"sim": object()})
    monkeypatch.setattr(service.orders, "advance", lambda *a: 0)
    acted: list[str] = []
    monkeypatch.setattr(claims, "send_requests", lambda *a: acted.append("submit") or [])
    monkeypatch.setattr(amendments, "replace_at_venue", lambda *a: acted.append("replace"))
    monkeypatch.setattr(mass_cancel, "cancel_round", lambda *a: acted.append("cancel") or ({}, []))
    good = OrderRequest("o-1", "ACC", "X", "ALPX", Side.BUY, OrdType.LIMIT, TimeInForce.DAY,
                        D(1), D(10), None, "USD", None, datetime(2026, 1, 5, 15))
    bad_requests = [dataclasses.replace(good, quantity="1"),  # type: ignore[arg-type]
                    dataclasses.replace(good, quantity=D("NaN")),
                    dataclasses.replace(good, limit_price=10.5),  # type: ignore[arg-type]
                    dataclasses.replace(good, client_order_id=7),  # type: ignore[arg-type]
                    dataclasses.replace(good, submitted_at="now")]  # type: ignore[arg-type]
    for request in bad_requests:
        with pytest.raises(CallInvalid):
            service.dispatch("submit", [[["sim", request]]])
    amend = {"kind": "order.amend_requested", "subject": "o-1", "payload": {}, "actor": None,
             "limit_price": None, "locate_key": None, "at": "yesterday"}
    with pytest.raises(CallInvalid):
        service.dispatch("replace", ["sim", "t", "o-1", "ALPX", D(1), None, amend])
    row = dict.fromkeys(mass_cancel.ROW_FIELDS, "x")
    with pytest.raises(CallInvalid):
        service.dispatch("cancel_many", [[{**row, "id": 7}], "MASS_CANCEL"])
    assert acted == []
    service.dispatch("submit", [[["sim", good]]])  # the well-formed one goes through
    service.dispatch("cancel_many", [[{**row, "venue_order_id": None}], "MASS_CANCEL"])
    assert acted == ["submit", "cancel"]



def test_a_batch_of_quotes_is_checked_whole_before_any_is_asked(runtime, monkeypatch) -> None:
    """`quote_many` (the router's quotes for a batch): every request checked before the
    connector is asked anything, the count bounded, and the answers in the requests' order."""
    from datetime import datetime

    from gateway.trading.venue_link import MAX_QUOTES
    from gateway.trading.venue_server import venue_orders

    asked: list[str] = []

    class Quoting:
        def quote_for(self, request: OrderRequest) -> Any:
            asked.append(request.client_order_id)
            return VenueQuote("ALPX", request.limit_price, D(1), D(2))

    service = VenueService(venue_orders(runtime))
    monkeypatch.setattr(venue_server.venues, "built_in_connectors", lambda orders: {"sim": Quoting()})
    good = OrderRequest("o-1", "ACC", "X", "ALPX", Side.BUY, OrdType.LIMIT, TimeInForce.DAY,
                        D(1), D(10), None, "USD", None, datetime(2026, 1, 5, 15))
    for bad in ([good, dataclasses.replace(good, quantity="1")],  # type: ignore[arg-type]
                [], [good] * (MAX_QUOTES + 1), good):
        with pytest.raises(CallInvalid):
            service.dispatch("quote_many", ["sim", bad])
    assert asked == []
    second = dataclasses.replace(good, client_order_id="o-2", limit_price=D(11))
    quotes = service.dispatch("quote_many", ["sim", [good, second]])
    assert asked == ["o-1", "o-2"] and [q.expected_price for q in quotes] == [D(10), D(11)]

def test_handshake_messages_still_decode_as_plain_values() -> None:
    packed = msgpack.packb({"nonce": b"n" * 32, "proof": b"p" * 32}, use_bin_type=True)
    left, right = socket.socketpair()
    with left, right:
        left.sendall(struct.pack(">I", len(packed)) + packed)
        message = venue_link.read_handshake(right, time.monotonic() + 1)
    assert message == {"nonce": b"n" * 32, "proof": b"p" * 32}


# -- real processes --------------------------------------------------------------------------

def _venue_world(settings: Any, tmp_path: Any, *, redis: bool = False) -> tuple[Any, dict[str, str], Any]:
    """A migrated SQLite database of the test's own and a `venue serve` on it (with the suite's
    Redis and a namespace of its own when `redis`); (the gateways' settings without the venue
    URL, the process environment, the VenueProcess)."""
    from gateway.cli import migrate_database
    from tests.test_venue_process import VenueProcess

    secret = base64.b64encode(os.urandom(32)).decode()
    database = f"sqlite:///{tmp_path / 'venue.db'}"
    namespace = f"alphintra-venue-{os.urandom(4).hex()}"
    own = settings.with_(database_url=database, redis_url=settings.redis_url if redis else None,
                         redis_namespace=namespace, secret_key=secret, embedded_worker="off",
                         warm_on_start=False)
    migrate_database(own)
    env = {"ALPHINTRA_DATABASE_URL": database, "ALPHINTRA_SECRET_KEY": secret,
           "ALPHINTRA_JWT_SECRET": settings.jwt_secret or "", "ALPHINTRA_LOG_JSON": "false",
           "ALPHINTRA_WARM_ON_START": "false", "ALPHINTRA_EMBEDDED_WORKER": "off",
           "ALPHINTRA_OTEL_EXPORTER": "none", "ALPHINTRA_REDIS_NAMESPACE": namespace}
    if redis:
        env["ALPHINTRA_REDIS_URL"] = settings.redis_url
    venue = VenueProcess(env, link_key(SecretBox.from_settings(own)))
    venue.start()
    return own, env, venue


def _funded(rt: Any, account: str = "ACC") -> Any:
    from tests.support import onboard

    tenant = onboard(rt)
    rt.orders.upsert_account(tenant.id, None, code=account, currency="USD", domicile="US",
                             credit_limit="100000000", equity="100000000")
    return tenant

def _resting(rt: Any, tenant: Any) -> tuple[Any, D]:
    """A BTC-USD limit buy resting on ALPX at 5 % below the mid (account ACC): the order, its price."""
    from gateway.trading.intake import OrderInput
    from tests.support import unique
    from tests.test_venue_process import mid_price

    low = (mid_price(rt) * D("0.95")).quantize(D("0.01"))
    placed = rt.orders.submit(tenant.id, None, OrderInput(
        unique("o"), "ACC", "BTC-USD", "BUY", "0.1", ord_type="LIMIT", time_in_force="GTC",
        limit_price=str(low), mic="ALPX"))
    assert placed.error is None and placed.order.status == "ACCEPTED", placed
    return placed.order, low


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_a_second_venue_process_on_a_taken_port_restores_nothing(settings, tmp_path) -> None:
    """An operator starts a second `venue serve` (a rolling deploy, a typo): it cannot bind the
    port, and must fail before restoring, which would write a second restore record and could
    cancel orders the running process holds."""
    from gateway.audit.models import AuditRecord
    from gateway.runtime import build_runtime
    from tests.test_multiprocess import Proc

    own, env, venue = _venue_world(settings, tmp_path)
    rt = build_runtime(own.with_(venue_url=venue.url))
    second: Proc | None = None
    try:
        tenant = _funded(rt)
        order, _ = _resting(rt, tenant)
        second = Proc("venue-2", ["venue", "serve", "--port", str(venue.port)], env)
        second.popen.wait(90)
        assert second.popen.returncode != 0, second.output()
        with rt.db.tenant_session(tenant.id) as session:
            restored = list(session.exec(select(AuditRecord).where(
                AuditRecord.tenant_id == tenant.id,
                AuditRecord.kind == "order.venue_restored")).scalars())
        assert restored == [], [r.payload for r in restored]
        # The running process still holds it: it cancels there.
        assert rt.orders.cancel(tenant.id, None, order.id).status == "CANCELED"
    finally:
        if second is not None:
            second.stop()
        rt.close()
        venue.stop()


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_an_amend_call_for_another_tenant_s_order_is_refused_before_acting(settings, tmp_path) -> None:
    """`replace` writes the request's record and price for the tenant the call names: the venue
    process checks the order is that tenant's (and at that connector and MIC) before it acts."""
    from gateway.audit import AuditEntry
    from gateway.audit.models import AuditRecord
    from gateway.runtime import build_runtime
    from gateway.trading.models import Order
    from gateway.trading.reports import _Amendment
    from tests.support import onboard

    own, _, venue = _venue_world(settings, tmp_path)
    rt = build_runtime(own.with_(venue_url=venue.url))
    try:
        owner, other = _funded(rt), onboard(rt)
        order, low = _resting(rt, owner)
        amendment = _Amendment(order.id, low - 1, AuditEntry(
            "order.amend_requested", order.id, {"quantity": "0.1", "limit_price": str(low - 1)},
            None), locate_key=None, at=rt.markets.now())
        with pytest.raises(Exception) as refused:
            rt.orders.venue.replace(order.connector, other.id, order.id, order.mic, D("0.1"),
                                    low - 1, amendment)
        assert getattr(refused.value, "code", None) == "ORDER_NOT_FOUND", refused.value
        with rt.db.system_session() as session:
            row = session.get(Order, order.id)
            assert row is not None and row.limit_price == low
            foreign = list(session.exec(select(AuditRecord).where(
                AuditRecord.tenant_id == other.id,
                AuditRecord.kind == "order.amend_requested")).scalars())
        assert foreign == []
        # The owner's own amend still works through the same call.
        moved = rt.orders.amend(owner.id, None, order.id, limit_price=str(low - 1))
        assert moved.limit_price == low - 1
    finally:
        rt.close()
        venue.stop()


def test_a_remote_call_that_is_never_answered_times_out(monkeypatch) -> None:
    """A venue process that takes the call and hangs: the request thread gets its answer
    (VENUE_UNAVAILABLE, sent) by the call timeout, not never."""
    shared = key()
    listener = socket.create_server(("127.0.0.1", 0))
    held: list[socket.socket] = []

    def accept() -> None:
        conn, _ = listener.accept()
        held.append(conn)
        venue_link.server_handshake(conn, shared)
        read_frame(conn)  # the call, never answered

    threading.Thread(target=accept, daemon=True).start()
    client = RemoteVenue(f"tcp://127.0.0.1:{listener.getsockname()[1]}", shared, call_timeout_s=0.5)
    try:
        started = time.monotonic()
        with pytest.raises(VenueUnavailable) as lost:
            client.cancel("sim", "o-1", "ALPX")
        assert lost.value.sent and time.monotonic() - started < 3
    finally:
        client.close()
        listener.close()
        for conn in held:
            conn.close()


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_crossing_orders_sent_at_once_through_two_gateways_trade_once(settings, tmp_path) -> None:
    """Two gateway processes' worth of runtimes send a buy and a sell at one price at the same
    moment: one book, one trade, each order filled once, positions both sides."""
    from gateway.runtime import build_runtime
    from gateway.trading.intake import OrderInput
    from gateway.trading.models import AccountPosition, Execution, Order
    from tests.support import unique
    from tests.test_venue_process import mid_price

    own, _, venue = _venue_world(settings, tmp_path)
    a, b = (build_runtime(own.with_(venue_url=venue.url)) for _ in range(2))
    try:
        maker, taker = _funded(a, "MAKER"), _funded(b, "TAKER")
        a.policy.reload()
        b.policy.reload()
        bought = b.orders.submit(taker.id, None, OrderInput(
            unique("o"), "TAKER", "BTC-USD", "BUY", "1", ord_type="MARKET", time_in_force="IOC",
            mic="ALPX"))
        assert bought.order.status == "FILLED", bought
        price = mid_price(a)
        answered: list[dict[str, Any]] = []
        for rt in (a, b):
            real_submit = rt.orders.venue.submit

            def recording(items: Any, real_submit: Any = real_submit) -> list[dict[str, Any]]:
                rows = real_submit(items)
                answered.extend(rows)
                return rows
            rt.orders.venue.submit = recording  # type: ignore[method-assign]
        results: dict[str, Any] = {}
        start = threading.Barrier(2)

        def send(name: str, rt: Any, tenant: Any, side: str) -> None:
            start.wait()
            results[name] = rt.orders.submit(tenant.id, None, OrderInput(
                unique("o"), accounts[tenant.id], "BTC-USD", side, "0.3", ord_type="LIMIT",
                time_in_force="GTC", limit_price=str(price), mic="ALPX"))

        accounts = {maker.id: "MAKER", taker.id: "TAKER"}
        threads = [threading.Thread(target=send, args=("buy", a, maker, "BUY")),
                   threading.Thread(target=send, args=("sell", b, taker, "SELL"))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        buy, sell = results["buy"].order, results["sell"].order
        with a.db.system_session() as session:
            rows = {o: session.get(Order, o)
                    for o in (buy.id, sell.id)}
            fills = {o: list(session.exec(select(Execution).where(Execution.order_id == o)).scalars())
                     for o in (buy.id, sell.id)}
            positions = {t: list(session.exec(select(AccountPosition).where(
                AccountPosition.tenant_id == t, AccountPosition.account == accounts[t])).scalars())
                for t in (maker.id, taker.id)}
        assert {r.status for r in rows.values()} == {"FILLED"}, {o: r.status for o, r in rows.items()}
        assert [len(f) for f in fills.values()] == [1, 1]
        assert fills[buy.id][0].match_id == fills[sell.id][0].match_id
        assert [p.quantity for p in positions[maker.id]] == [D("0.3")]
        assert [p.quantity for p in positions[taker.id]] == [D("0.7")]
        # Each gateway was answered its own order's row, never the other tenant's it met.
        assert sorted(r["id"] for r in answered) == sorted([buy.id, sell.id])
        assert {(r["id"], r["tenant_id"]) for r in answered} == {(buy.id, maker.id), (sell.id, taker.id)}
    finally:
        a.close()
        b.close()
        venue.stop()


@pytest.mark.slow
@pytest.mark.redis
@pytest.mark.timeout(180)
def test_order_updates_the_venue_process_publishes_reach_a_gateway_s_subscribers(settings, tmp_path) -> None:
    """With Redis: the acknowledgement is applied (and published) by the venue process; a
    subscriber of the gateway the order went through sees it."""
    import asyncio

    from gateway.runtime import build_runtime
    from gateway.trading.common import orders_topic
    from gateway.trading.intake import OrderInput
    from tests.support import unique
    from tests.test_venue_process import mid_price

    own, _, venue = _venue_world(settings, tmp_path, redis=True)
    rt = build_runtime(own.with_(venue_url=venue.url))
    try:
        tenant = _funded(rt)
        low = (mid_price(rt) * D("0.95")).quantize(D("0.01"))

        async def scenario() -> list[Any]:
            sub = await rt.bus.subscribe(orders_topic(tenant.id))
            try:
                result = await asyncio.to_thread(rt.orders.submit, tenant.id, None, OrderInput(
                    unique("o"), "ACC", "BTC-USD", "BUY", "0.1", ord_type="LIMIT",
                    time_in_force="GTC", limit_price=str(low), mic="ALPX"))
                assert result.order.status == "ACCEPTED", result
                seen: list[Any] = []
                async with asyncio.timeout(10):
                    while "ACCEPTED" not in [e.payload.get("status") for e in seen]:
                        seen.append(await sub.__anext__())
                return seen
            finally:
                await sub.close()

        seen = asyncio.run(scenario())
        assert [e.payload.get("status") for e in seen][-1] == "ACCEPTED"
    finally:
        rt.close()
        venue.stop()


def test_an_internal_error_reaches_the_gateway_as_a_reference_not_its_text(runtime, monkeypatch,
                                                                             caplog) -> None:
    """An internal error's text (a statement, another tenant's row) stays in the venue
    process's log: the caller gets VENUE_UNAVAILABLE with the reference of that log line."""
    from gateway.trading import amendments
    from gateway.trading.venue_client import _error
    from gateway.trading.venue_server import venue_orders

    service = VenueService(venue_orders(runtime))
    monkeypatch.setattr(venue_server.venues, "built_in_connectors", lambda orders: {"sim": object()})
    monkeypatch.setattr(service.orders, "advance", lambda *a: 0)

    def leak(*_: Any) -> Any:
        raise RuntimeError("duplicate key: tenant other-tenant's order o-9 at 42.17")

    monkeypatch.setattr(amendments, "cancel_at_venue", leak)
    with caplog.at_level("ERROR", logger="gateway.trading.venue_server"):
        reply = venue_server.answer(service, {"i": 4, "m": "cancel", "a": ["sim", "o-1", "ALPX"]})
    assert "other-tenant" not in repr(reply) and "42.17" not in repr(reply)
    reference = reply["e"]["reference"]
    assert [r for r in caplog.records if getattr(r, "reference", None) == reference]
    error = _error(reply["e"])
    assert isinstance(error, VenueUnavailable) and error.code == "VENUE_UNAVAILABLE"
    assert reference in error.message and "other-tenant" not in error.message


def test_a_call_whose_arguments_do_not_pack_keeps_the_connection(server) -> None:
    srv, secret = server
    venue = RemoteVenue(f"tcp://127.0.0.1:{srv.server_address[1]}", secret)
    try:
        assert venue._call("describe", [], changes=False) == "describe"
        assert len(venue._pool) == 1
        with pytest.raises((TypeError, wire.WireError)):
            venue._call("quote_for", ["sim", object()], changes=False)
        assert len(venue._pool) == 1  # given back, not leaked open
        assert venue._call("describe", [], changes=False) == "describe"  # and still usable
        assert len(venue._pool) == 1
    finally:
        venue.close()


def test_one_venue_process_holds_a_databases_books(runtime) -> None:
    """A second `venue serve` on another port or host, same database, would be a second set of
    books restoring and trading the same orders: it is refused before it touches any."""
    from gateway.trading.venue_server import BooksHeld, hold_the_books

    if runtime.db.engine.dialect.name != "postgresql":
        pytest.skip("the books' lock is PostgreSQL's advisory lock")
    release = hold_the_books(runtime.db)
    assert release is not None
    try:
        for _ in range(3):  # whichever pooled connection asks
            with pytest.raises(BooksHeld):
                hold_the_books(runtime.db)
    finally:
        release()
    again = hold_the_books(runtime.db)  # let go with its holder: the next one takes it
    assert again is not None
    again()



def _slow_server() -> tuple[VenueTCPServer, bytes, threading.Event, threading.Event, list[str]]:
    """A venue server whose `submit` waits for `release`; the calls it ran."""
    entered, release = threading.Event(), threading.Event()
    ran: list[str] = []

    class Slow:
        def dispatch(self, method: Any, args: Any) -> Any:
            ran.append(method)
            if method == "submit":
                entered.set()
                release.wait(10)
            return method

    shared = key()
    srv = VenueTCPServer(("127.0.0.1", 0), Slow(), shared)  # type: ignore[arg-type]
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv, shared, entered, release, ran


def test_a_stop_answers_the_call_running_then_closes_every_connection() -> None:
    """SIGTERM (`drain`): a submit half way through its venue step runs to its end and is
    answered (cut off, its orders would wait PENDING for the unsent sweep); idle connections
    are closed, and a new one is refused at once."""
    srv, shared, entered, release, ran = _slow_server()
    url = f"tcp://127.0.0.1:{srv.server_address[1]}"
    busy, idle = RemoteVenue(url, shared), RemoteVenue(url, shared)
    try:
        assert idle._call("describe", [], changes=False) == "describe"  # an open connection
        answers: list[Any] = []
        running = threading.Thread(target=lambda: answers.append(busy._call("submit", [[]])))
        running.start()
        assert entered.wait(5)
        drained: list[bool] = []
        draining = threading.Thread(target=lambda: drained.append(srv.drain(timeout_s=10)))
        draining.start()
        deadline = time.monotonic() + 5
        while not srv.stopping and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.2)
        assert srv.stopping and not drained  # waiting for the submit
        started = time.monotonic()
        with pytest.raises(VenueUnavailable) as closed:  # its connection closed, none accepted
            idle._call("describe", [], changes=False)
        assert closed.value.sent is False and time.monotonic() - started < 2
        release.set()
        running.join(5)
        draining.join(5)
        assert answers == ["submit"] and drained == [True]
        assert ran == ["describe", "submit"]
    finally:
        release.set()
        busy.close()
        idle.close()
        srv.server_close()


def test_a_call_read_as_the_stop_begins_is_answered_venue_stopping_not_run() -> None:
    """A frame already read when the stop began: not run, and answered with a code the
    gateway takes for "nothing done" (its orders rejected at once as a failed connector, not
    left PENDING)."""
    from gateway.trading.venue_client import REFUSED_UNSENT

    srv, shared, _, release, ran = _slow_server()
    client = RemoteVenue(f"tcp://127.0.0.1:{srv.server_address[1]}", shared)
    try:
        assert client._call("describe", [], changes=False) == "describe"
        begins = srv.call_begins

        def stop_begins_now(sock: socket.socket) -> bool:
            if ran == ["describe"]:  # the cancel: read, and the stop begins before it runs
                srv.stopping = True
            return begins(sock)

        srv.call_begins = stop_begins_now  # type: ignore[method-assign]
        with pytest.raises(Exception) as refused:
            client._call("cancel", ["sim", "o-1", "ALPX"])
        assert getattr(refused.value, "code", None) == "VENUE_STOPPING"
        assert "VENUE_STOPPING" in REFUSED_UNSENT
        assert ran == ["describe"]
    finally:
        release.set()
        client.close()
        srv.shutdown()
        srv.server_close()


class _QuotingButOne:
    """A built-in connector whose market data for one symbol is down (its quote raises)."""

    name = "sim"

    def mics(self) -> list[str]:
        return ["ALPX"]

    def quote_for(self, request: OrderRequest) -> Any:
        if request.symbol == "DOWN":
            raise RuntimeError("market data source failed for DOWN")
        if request.symbol == "ODD":
            return {"not": "a VenueQuote"}  # a malformed answer for this one order
        return VenueQuote("ALPX", D("10"), D("100"), D("1"))


def _quote_order(cid: str, symbol: str) -> OrderRequest:
    return OrderRequest(cid, "ACC", symbol, "ALPX", Side.BUY, OrdType.LIMIT, TimeInForce.DAY,
                        D(1), D(10), None, "USD", None, datetime(2026, 1, 5, 15, tzinfo=UTC))


@pytest.mark.parametrize("bad_symbol", ["DOWN", "ODD"])
def test_one_failing_quote_in_a_remote_batch_fails_only_its_own_order(runtime, monkeypatch,
                                                                      bad_symbol) -> None:
    """Found in review: one order's quote that raised (or came back malformed) in the venue
    process failed the connector for the whole batch; it fails that order alone, as its own
    quote_for call did."""
    service = VenueService(venue_orders(runtime))
    monkeypatch.setattr(venue_server.venues, "built_in_connectors", lambda orders: {"sim": _QuotingButOne()})
    shared = link_key(SecretBox(os.urandom(32)))
    srv = VenueTCPServer(("127.0.0.1", 0), service, shared)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    venue = RemoteVenue(f"tcp://127.0.0.1:{srv.server_address[1]}", shared, call_timeout_s=5)
    try:
        router = SmartOrderRouter([ConnectorEntry("sim-exchange",
                                                  RemoteConnector(venue, "sim-exchange", "sim", ["ALPX"]))])
        good, down = _quote_order("o-good", "GOOD"), _quote_order("o-bad", bad_symbol)
        alone = router.route(good)  # one order: routed (as every order was before the commit)
        assert isinstance(alone, RoutingDecision) and alone.connector == "sim"
        decisions = router.route_many([good, down])
        # The failing order is unroutable; the healthy one must be routed as it is alone.
        assert isinstance(decisions[0], RoutingDecision), decisions[0]
        assert decisions[0] == alone
        assert isinstance(decisions[1], RouteUnavailable)
        assert [a["status"] for a in decisions[1].details["alternatives"]] == ["CONNECTOR_FAILED"]
    finally:
        venue.close()
        srv.shutdown()
        srv.server_close()
