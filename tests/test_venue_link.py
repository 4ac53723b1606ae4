"""The venue link's own parts (gateway/trading/venue_link.py, venue_client.py, venue_server.py)
without processes: both ends prove the key, a wrong key or a stranger is dropped, an answer that
never comes is told apart from a call that never went, and the venue process checks what it
decodes before it acts."""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import Any

import pytest

from gateway.secrets import SecretBox
from gateway.trading.venue_client import RemoteVenue, VenueUnavailable
from gateway.trading.venue_link import (
    HandshakeFailed,
    Link,
    client_handshake,
    link_key,
    parse_url,
    server_handshake,
)
from gateway.trading.venue_server import CallInvalid, VenueService, answer
from plugins.sdk import VenueQuote
from plugins.wire import WireError


def key() -> bytes:
    return link_key(SecretBox(os.urandom(32)))


def both_ends(server_key: bytes, client_key: bytes) -> tuple[BaseException | None, BaseException | None]:
    """Run the handshake over a socket pair: what each side raised (None: it passed)."""
    left, right = socket.socketpair()
    left.settimeout(5)
    right.settimeout(5)
    failures: list[BaseException | None] = [None, None]

    def server() -> None:
        try:
            server_handshake(left, server_key)
        except BaseException as exc:
            failures[0] = exc
            left.close()  # what the server does: drops the peer

    thread = threading.Thread(target=server)
    thread.start()
    try:
        client_handshake(right, client_key)
    except BaseException as exc:
        failures[1] = exc
    thread.join(5)
    right.close()
    return failures[0], failures[1]


def test_the_same_key_passes_both_ways() -> None:
    shared = key()
    assert both_ends(shared, shared) == (None, None)


def test_another_key_is_refused_by_the_server_and_the_client_is_told() -> None:
    server_failure, client_failure = both_ends(key(), key())
    assert isinstance(server_failure, HandshakeFailed)
    assert isinstance(client_failure, HandshakeFailed)


def test_the_link_key_is_derived_not_the_secret_key() -> None:
    secret = os.urandom(32)
    derived = link_key(SecretBox(secret))
    assert derived != secret and len(derived) == 32
    assert derived == link_key(SecretBox(secret))  # every process of a deployment derives one
    assert derived != link_key(SecretBox(os.urandom(32)))


def test_urls() -> None:
    assert parse_url("tcp://127.0.0.1:7710") == ("127.0.0.1", 7710)
    assert parse_url("tcp://venue:7710/") == ("venue", 7710)
    for bad in ("http://127.0.0.1:7710", "tcp://127.0.0.1", "tcp://:7710", "tcp://h:1/x"):
        with pytest.raises(ValueError):
            parse_url(bad)


@pytest.fixture
def fake_venue() -> Iterator[Callable[[Callable[[Link, dict[str, Any]], bool]], str]]:
    """A listener that passes the handshake with `shared` and hands each call to `behave`
    (which answers it, or returns False to close the connection without answering)."""
    listeners: list[socket.socket] = []

    def start(behave: Callable[[Link, dict[str, Any]], bool], shared: bytes) -> str:
        listener = socket.create_server(("127.0.0.1", 0))
        listeners.append(listener)

        def serve() -> None:
            while True:
                try:
                    conn, _ = listener.accept()
                except OSError:
                    return
                with conn:
                    try:
                        link = server_handshake(conn, shared)  # frames sealed from here
                        while (message := link.read()) is not None:
                            if not behave(link, message):
                                break
                    except (OSError, HandshakeFailed, WireError):
                        continue

        threading.Thread(target=serve, daemon=True).start()
        return f"tcp://127.0.0.1:{listener.getsockname()[1]}"

    yield start  # type: ignore[misc]
    for listener in listeners:
        listener.close()


def test_a_lost_answer_is_told_apart_from_a_call_that_never_went(fake_venue) -> None:
    shared = key()
    calls: list[str] = []

    def hang_up(conn: Link, message: dict[str, Any]) -> bool:
        calls.append(message["m"])
        return False  # took the call, answered nothing

    client = RemoteVenue(fake_venue(hang_up, shared), shared)
    with pytest.raises(VenueUnavailable) as lost:
        client.cancel("sim", "o-1", "ALPX")
    assert lost.value.sent and calls == ["cancel"]  # a change is never sent twice
    # A read is tried again once on a new connection.
    with pytest.raises(VenueUnavailable):
        client.connectors()
    assert calls == ["cancel", "describe", "describe"]
    # Nobody listening: nothing went.
    port_socket = socket.socket()
    port_socket.bind(("127.0.0.1", 0))
    port = port_socket.getsockname()[1]
    port_socket.close()
    with pytest.raises(VenueUnavailable) as unreached:
        RemoteVenue(f"tcp://127.0.0.1:{port}", shared).submit([])
    assert not unreached.value.sent


def test_the_venue_process_s_domain_errors_keep_their_code(fake_venue) -> None:
    shared = key()

    def refuse(conn: Link, message: dict[str, Any]) -> bool:
        conn.send({"i": message["i"], "e": {"type": "ConnectorUnknown", "message": "no",
                                                     "code": "CONNECTOR_UNKNOWN", "http_status": 404}})
        return True

    client = RemoteVenue(fake_venue(refuse, shared), shared)
    with pytest.raises(Exception) as raised:
        client.cancel("nope", "o-1", "ALPX")
    assert getattr(raised.value, "code", None) == "CONNECTOR_UNKNOWN"


def test_the_venue_process_checks_a_call_before_acting(runtime) -> None:
    # Its own order service on the runtime's parts. Every call here is refused before the
    # connectors are built (building them would restore the suite's open orders).
    from gateway.trading.venue_server import venue_orders

    service = VenueService(venue_orders(runtime))
    for method, args in (("nope", []), ("describe", "x"), ("describe", [1, 2, 3]),
                         ("submit", [[]]), ("submit", [[["sim", {"not": "an order"}]]]),
                         ("submit", [[["sim", "o-1", "extra"]]]),
                         ("cancel", ["sim", "", "ALPX"]),
                         ("cancel_many", [[{"id": "o-1"}], "MASS_CANCEL"]),
                         ("replace", ["sim", "t", "o", "ALPX", Decimal(-1), None, {}]),
                         ("replace", ["sim", "t", "o", "ALPX", Decimal(1), 1.5, {}]),
                         ("replace", ["sim", "t", "o", "ALPX", Decimal(1), None, {"payload": 1}])):
        with pytest.raises(CallInvalid):
            service.dispatch(method, args)
    assert service.orders._connectors is None
    reply = answer(service, {"i": 7, "m": "nope", "a": []})
    assert reply["i"] == 7 and reply["e"]["code"] == "VENUE_CALL_INVALID"


def test_a_gateway_with_a_venue_url_does_not_build_the_built_ins(runtime) -> None:
    from gateway.trading.venue_server import venue_orders

    service = venue_orders(runtime)
    service.venue = RemoteVenue("tcp://127.0.0.1:1", key())  # nothing listens there
    service.recover()  # restoring is the venue process's
    assert service._connectors is None
    assert service.advance() == 0  # and so is its clock
    with pytest.raises(VenueUnavailable):
        service.connectors()


def _fake_venue_for_orders(on_submit: Callable[[Link, dict[str, Any]], bool]
                           ) -> Callable[[Link, dict[str, Any]], bool]:
    """A venue process that describes one connector on ALPX and quotes any order (one or a batch), and hands
    `submit` to `on_submit`."""
    def behave(conn: Link, message: dict[str, Any]) -> bool:
        if message["m"] == "describe":
            result: Any = [["fake-exchange", "fake", ["ALPX"]]]
        elif message["m"] == "quote_for":
            result = VenueQuote("ALPX", None, Decimal(0), Decimal(1))
        elif message["m"] == "quote_many":
            result = [VenueQuote("ALPX", None, Decimal(0), Decimal(1))] * len(message["a"][1])
        else:
            return on_submit(conn, message)
        conn.send({"i": message["i"], "r": result})
        return True
    return behave


def _one_order(runtime: Any, venue_url: str, shared: bytes) -> tuple[Any, Any, Any]:
    from gateway.trading.intake import OrderInput
    from gateway.trading.venue_server import venue_orders
    from tests.support import onboard, unique

    service = venue_orders(runtime)
    service.venue = RemoteVenue(venue_url, shared)
    tenant = onboard(runtime)
    service.upsert_account(tenant.id, None, code="ACC", currency="USD", domicile="US",
                           credit_limit="100000000", equity="100000000")
    bid = runtime.market_data.quote("BTC-USD.ALPX", runtime.markets.now()).bid
    result = service.submit(tenant.id, None, OrderInput(
        unique("o"), "ACC", "BTC-USD", "BUY", "1", ord_type="LIMIT", time_in_force="GTC",
        limit_price=str(bid), mic="ALPX"))
    assert result.error is None, result.error
    return service, tenant, result


def test_a_submit_whose_answer_is_lost_is_not_written_by_the_gateway(fake_venue, runtime) -> None:
    """The venue process may have applied it: the gateway writes nothing (it would otherwise
    write a second answer for the same order) and answers the order as the database has it."""
    shared = key()
    submits: list[Any] = []

    def hang_up(conn: Link, message: dict[str, Any]) -> bool:
        submits.append(message["a"])
        return False

    service, tenant, result = _one_order(runtime, fake_venue(_fake_venue_for_orders(hang_up), shared),
                                         shared)
    assert len(submits) == 1  # sent once, never again
    assert result.order.status == "PENDING" and result.order.venue_order_id is None
    events = service.events(tenant.id, [result.order.id])[result.order.id]
    assert [e.event for e in events] == ["COMPLIANCE_PASS"]


def test_a_submit_the_venue_process_refused_unread_is_rejected_as_a_failed_connector(
        fake_venue, runtime) -> None:
    shared = key()

    def refuse(conn: Link, message: dict[str, Any]) -> bool:
        conn.send({"i": message["i"], "e": {"type": "ConnectorUnknown", "message": "no",
                                                     "code": "CONNECTOR_UNKNOWN"}})
        return True

    _, _, result = _one_order(runtime, fake_venue(_fake_venue_for_orders(refuse), shared), shared)
    assert result.order.status == "REJECTED" and result.order.reject_code == "CONNECTOR_FAILED"
