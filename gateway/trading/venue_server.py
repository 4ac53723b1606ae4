"""`alphintra venue serve`: the built-in simulated venues as their own process, one set of books
for every gateway process (issue 14; the chain process, gateway/defi/chain_server.py, did the
same for the EVM).

The process builds the gateway's runtime from the same environment (database, bus, plugins,
settings) and an order service of its own holding the built-in exchange connectors in memory.
It is the single writer of their reports:

- At start it builds the connectors, which restores the open orders the database holds at them
  (gateway/trading/recovery.py); a restart of this process restores them again, once.
- Its clock tells them the time every second (`advance`: expiries, queued orders at the open,
  fills of resting orders as the market moves) and now and then sweeps orders claimed but never
  sent, as a gateway's venue clock does.
- Gateway processes (ALPHINTRA_VENUE_URL, venue_client.py) call it over TCP
  (venue_link.py: frames of plugins/wire.py, both ends proving they hold the secret key). A
  call that changes orders (`submit`, `cancel`, `replace`, `cancel_many`) runs the whole venue
  step here, the same functions a gateway runs in process (claims.send_requests,
  amendments.cancel_at_venue / replace_at_venue, mass_cancel.cancel_round): the connector
  call, its reports applied under this process's venue and apply locks, the events published
  through its outbox; then it answers what the caller needs to answer its client. A caller that
  dies after sending loses nothing: the call runs to its end here. `describe`, `quote_for`
  and `quote_many` (a batch's quotes for the router, in one call) only read.

Tenants' installed (marketplace) connectors are not here: they stay with each gateway process.
Compliance is not here either: a call is trusted once its peer proved the key, which is why the
port is loopback by default and the handshake is required.
"""

from __future__ import annotations

import contextlib
import gc
import inspect
import logging
import signal
import socket
import socketserver
import threading
from collections.abc import Callable
from dataclasses import asdict
from datetime import datetime, timedelta
from decimal import Decimal
from types import SimpleNamespace
from typing import Any

from gateway.audit import AuditEntry
from gateway.errors import DomainError, InvalidInput, NotFound, ServiceUnavailable
from gateway.settings import Settings
from gateway.tenancy.ids import uuid4_text
from gateway.trading import amendments, claims, mass_cancel, venues
from gateway.trading.common import OrderNotFound
from gateway.trading.models import Order
from gateway.trading.reports import TRANSITIONS, _Amendment
from gateway.trading.service import OrderService
from gateway.trading.venue_link import (
    HANDSHAKE_TIMEOUT_S,
    MAX_QUOTES,
    QUOTE_FAILED,
    HandshakeFailed,
    Link,
    PeerLeft,
    link_key,
    server_handshake,
)
from plugins.sdk import OrderRequest, OrdType, Side, TimeInForce
from plugins.wire import WireError

log = logging.getLogger(__name__)

DEFAULT_PORT = 7710
CLOCK_SECONDS = 1.0
SWEEP_EVERY = 30  # clock rounds between looks for orders claimed but never sent
# Connections not yet past the handshake (each a thread for up to HANDSHAKE_TIMEOUT_S): more
# are closed at once, so strangers cannot pile up threads (sshd's MaxStartups, in short).
MAX_PENDING_HANDSHAKES = 32
DRAIN_TIMEOUT_S = 30.0  # a stop waits this long for calls running (a batch of 1,000 takes seconds)


class CallInvalid(InvalidInput):
    code = "VENUE_CALL_INVALID"


class ConnectorUnknown(NotFound):
    code = "CONNECTOR_UNKNOWN"


class Stopping(ServiceUnavailable):
    """A call that arrived once the process had begun to stop: not run (nothing done)."""

    code = "VENUE_STOPPING"


def _check(condition: bool, what: str) -> None:
    if not condition:
        raise CallInvalid(f"invalid call: {what}")


def _text(value: Any, what: str) -> str:
    _check(isinstance(value, str) and 0 < len(value) <= 200, f"{what} must be a short string")
    return value


def _optional(value: Any, kind: type | tuple[type, ...], what: str) -> Any:
    _check(value is None or isinstance(value, kind), f"{what} of the wrong type")
    return value


def _request(value: Any) -> OrderRequest:
    """An OrderRequest whose fields have their types (the wire builds it field by field and
    checks none): a wrong one is refused here, not inside the venue step once it acted."""
    _check(isinstance(value, OrderRequest), "an OrderRequest")
    for name in ("client_order_id", "account", "symbol", "mic", "currency"):
        _check(isinstance(getattr(value, name), str) and len(getattr(value, name)) <= 200,
               f"the order's {name} a short string")
    _check(isinstance(value.side, Side) and isinstance(value.ord_type, OrdType)
           and isinstance(value.time_in_force, TimeInForce), "the order's side, type and time in force")
    _check(isinstance(value.quantity, Decimal) and value.quantity.is_finite() and value.quantity > 0,
           "the order's quantity a decimal above zero")
    for name in ("limit_price", "stop_price"):
        price = _optional(getattr(value, name), Decimal, f"the order's {name}")
        _check(price is None or price.is_finite(), f"the order's {name} finite")
    _optional(value.expire_at, datetime, "the order's expire_at")
    _check(isinstance(value.submitted_at, datetime), "the order's submitted_at a datetime")
    return value


def _wire_row(row: dict[str, Any]) -> dict[str, Any]:
    """A changed order row as it crosses: its columns (the transitions were published here)."""
    return {k: v for k, v in row.items() if k != TRANSITIONS}


class VenueService:
    """The calls, on an order service whose built-in connectors are in this process."""

    def __init__(self, orders: OrderService) -> None:
        if orders.venue is not None:
            raise ValueError("the venue process holds its connectors itself (no ALPHINTRA_VENUE_URL)")
        self.orders = orders
        methods: dict[str, Callable[..., Any]] = {
            "describe": self.describe, "quote_for": self.quote_for, "quote_many": self.quote_many,
            "submit": self.submit, "cancel": self.cancel, "replace": self.replace,
            "cancel_many": self.cancel_many}
        self._methods = {name: (method, inspect.signature(method)) for name, method in methods.items()}

    def start(self) -> list[str]:
        """Build the connectors now (restoring the open orders at them); their names."""
        return sorted(venues.built_in_connectors(self.orders))

    def dispatch(self, method: Any, args: Any) -> Any:
        found = self._methods.get(method) if isinstance(method, str) else None
        _check(found is not None, f"no method {method!r}")
        _check(isinstance(args, list), "arguments must be an array")
        handler, signature = found  # type: ignore[misc]
        # The arity checked before the call: a TypeError from inside it (after the venue
        # acted) must not read as VENUE_CALL_INVALID, which callers take for "nothing done".
        try:
            signature.bind(*args)
        except TypeError as exc:
            raise CallInvalid(f"invalid call of {method}: {exc}") from None
        return handler(*args)

    def _connector(self, name: Any) -> Any:
        connector = venues.built_in_connectors(self.orders).get(_text(name, "connector"))
        if connector is None:
            raise ConnectorUnknown(f"no connector {name!r} in the venue process")
        return connector

    # -- reads --------------------------------------------------------------------------------

    def describe(self) -> list[list[Any]]:
        router = venues.built_in_router(self.orders)
        return [[e.plugin, e.name, list(e.connector.mics())] for e in router.connectors]

    def quote_for(self, name: Any, order: Any) -> Any:
        request = _request(order)
        return self._connector(name).quote_for(request)

    def quote_many(self, name: Any, orders: Any) -> list[Any]:
        _check(isinstance(orders, list) and 0 < len(orders) <= MAX_QUOTES,
               f"1 to {MAX_QUOTES} orders")
        requests = [_request(order) for order in orders]
        connector = self._connector(name)
        return [self._quote(connector, request) for request in requests]

    @staticmethod
    def _quote(connector: Any, request: OrderRequest) -> Any:
        """One order's quote; a quote that fails fails that order alone (QUOTE_FAILED), as
        its own quote_for call would."""
        try:
            return connector.quote_for(request)
        except Exception:
            log.exception("a venue failed to quote", extra={"order_id": request.client_order_id})
            return QUOTE_FAILED

    # -- changes: the venue step runs here ----------------------------------------------------

    def submit(self, items: Any) -> list[dict[str, Any]]:
        _check(isinstance(items, list) and 0 < len(items) <= 1000, "1 to 1000 orders")
        pairs: list[tuple[str, OrderRequest]] = []
        for item in items:
            _check(isinstance(item, list) and len(item) == 2, "each order a [connector, OrderRequest]")
            pairs.append((item[0], _request(item[1])))
        for name, _ in pairs:  # the requests checked first: this builds the connectors
            self._connector(name)
        self.orders.advance()  # as intake does: the venues at now before the orders
        changed = claims.send_requests(self.orders, venues.built_in_connectors(self.orders), pairs)
        # The caller's orders only: the resting orders they traded with (other tenants', other
        # gateways') were applied and published here, and are none of the caller's business.
        sent = {request.client_order_id for _, request in pairs}
        return [_wire_row(o) for o in changed if o["id"] in sent]

    def cancel(self, name: Any, order_id: Any, mic: Any) -> Any:
        order_id, mic = _text(order_id, "order id"), _text(mic, "mic")
        connector = self._connector(name)
        self.orders.advance()
        return amendments.cancel_at_venue(self.orders, connector, order_id, mic)

    def replace(self, name: Any, tenant_id: Any, order_id: Any, mic: Any, quantity: Any,
                limit_price: Any, request: Any) -> dict[str, Any]:
        _check(isinstance(quantity, Decimal) and quantity > 0, "a quantity above zero")
        _check(limit_price is None or isinstance(limit_price, Decimal), "a decimal limit price")
        _check(isinstance(request, dict) and isinstance(request.get("payload"), dict),
               "the amend request")
        _optional(request.get("limit_price"), Decimal, "the amend request's limit_price")
        _optional(request.get("actor"), str, "the amend request's actor")
        _optional(request.get("locate_key"), str, "the amend request's locate_key")
        _optional(request.get("at"), datetime, "the amend request's at")
        amendment = _Amendment(
            _text(order_id, "order id"), request.get("limit_price"),
            AuditEntry(_text(request.get("kind"), "kind"), _text(request.get("subject"), "subject"),
                       request["payload"], request.get("actor")),
            locate_key=request.get("locate_key"), at=request.get("at"))
        tenant_id, mic = _text(tenant_id, "tenant"), _text(mic, "mic")
        connector = self._connector(name)
        # The request's record and price are written for `tenant_id`: only for its own order.
        with self.orders.db.system_session() as session:
            order = session.get(Order, amendment.order_id)
            if order is None or (order.tenant_id, order.connector, order.mic) != (tenant_id, name, mic):
                raise OrderNotFound(f"no order {amendment.order_id} of that tenant at {name} {mic}")
        self.orders.advance()
        refused = amendments.replace_at_venue(self.orders, connector, tenant_id, amendment.order_id,
                                              mic, quantity, limit_price, amendment)
        return {"refused": refused, "refused_flag": amendment.refused,
                "written": amendment.written}

    def cancel_many(self, rows: Any, reason: Any) -> dict[str, Any]:
        _check(isinstance(rows, list) and len(rows) <= 10_000, "rows")
        orders = []
        for row in rows:
            _check(isinstance(row, dict) and set(row) == set(mass_cancel.ROW_FIELDS)
                   and all(isinstance(v, str) for k, v in row.items() if k != "venue_order_id")
                   and isinstance(row["venue_order_id"], str | None),
                   "each row the order's fields, strings")
            orders.append(SimpleNamespace(**row))
        self.orders.advance()
        outcomes, changed = mass_cancel.cancel_round(
            self.orders, venues.built_in_connectors(self.orders), orders, _text(reason, "reason"))
        asked = {o.id for o in orders}
        return {"outcomes": {k: asdict(v) for k, v in outcomes.items() if k in asked},
                "changed": [_wire_row(o) for o in changed if o["id"] in asked]}

    # -- the clock ----------------------------------------------------------------------------

    def tick(self, rounds: int, unsent_after: timedelta) -> None:
        self.orders.advance()
        if rounds % SWEEP_EVERY == 0:
            self.orders.sweep_unsent(unsent_after)


def error_payload(exc: BaseException, reference: str = "") -> dict[str, Any]:
    """A domain error as it is (its message is for clients); anything else only as the
    reference its log line carries: an internal error's text (a statement, another tenant's
    row) must not reach a gateway's client."""
    if isinstance(exc, DomainError):
        return {"type": type(exc).__name__, "message": exc.message[:2000], "code": exc.code,
                "details": exc.details, "http_status": exc.http_status}
    return {"type": "internal", "reference": reference}


def answer(service: VenueService, message: dict[str, Any]) -> dict[str, Any]:
    call_id = message.get("i")
    try:
        return {"i": call_id, "r": service.dispatch(message.get("m"), message.get("a"))}
    except DomainError as exc:
        return {"i": call_id, "e": error_payload(exc)}
    except Exception as exc:
        reference = uuid4_text()
        log.exception("a venue call failed", extra={"method": str(message.get("m"))[:50],
                                                    "reference": reference})
        return {"i": call_id, "e": error_payload(exc, reference)}


def _send(link: Link, reply: dict[str, Any]) -> None:
    try:
        link.send(reply)
    except (TypeError, WireError) as exc:  # details that do not cross: the error without them
        error = reply.get("e") or {"type": type(exc).__name__, "message": str(exc)}
        link.send({"i": reply.get("i"), "e": {k: v for k, v in error.items() if k != "details"}})


class _Handler(socketserver.BaseRequestHandler):
    server: VenueTCPServer

    def handle(self) -> None:
        sock: socket.socket = self.request
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            # A gateway host that vanished without a FIN: its idle connection (and thread) goes.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
            sock.settimeout(HANDSHAKE_TIMEOUT_S)
            link = server_handshake(sock, self.server.key)
            sock.settimeout(None)  # a gateway keeps its connection between calls
        except PeerLeft:
            return  # a port probe (a health check)
        except (OSError, ValueError, WireError, HandshakeFailed) as exc:  # whatever a stranger sent
            log.warning("a venue client failed the handshake; dropped",
                        extra={"peer": str(self.client_address[0]), "error": str(exc)[:200]})
            return
        finally:
            self.server.handshake_over()
        if not self.server.connected(sock):
            return  # stopping
        try:
            self._calls(sock, link)
        finally:
            self.server.call_over(sock, closed=True)

    def _calls(self, sock: socket.socket, link: Link) -> None:
        while True:
            try:
                message = link.read()
            except (OSError, ValueError, WireError) as exc:  # msgpack's errors are ValueErrors
                if not self.server.stopping:
                    log.warning("a venue client sent what does not decode or is not sealed; "
                                "dropped", extra={"peer": str(self.client_address[0]),
                                                  "error": str(exc)[:200]})
                return
            if message is None:
                return
            began = self.server.call_begins(sock)
            try:
                if began:
                    reply = answer(self.server.venue, message)
                else:
                    reply = {"i": message.get("i"), "e": error_payload(Stopping(
                        "the venue process is stopping: nothing was done; retry shortly"))}
                try:
                    _send(link, reply)
                except OSError:
                    return  # the caller went away: the call ran to its end anyway
            finally:
                if began:  # over once answered: a stop waits for the answer to leave too
                    self.server.call_over(sock)
            if self.server.stopping:
                return  # answered; the caller's next call finds the connection closed


class VenueTCPServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], venue: VenueService, key: bytes, *,
                 bind_and_activate: bool = True) -> None:
        self.venue = venue
        self.key = key
        self._pending = 0
        self._pending_lock = threading.Lock()
        self.stopping = False
        self._links: dict[socket.socket, bool] = {}  # each connection: a call running on it
        self._links_changed = threading.Condition()
        super().__init__(address, _Handler, bind_and_activate=bind_and_activate)

    def verify_request(self, request: Any, client_address: Any) -> bool:
        """Room for one more handshake; else the connection is closed at once."""
        with self._pending_lock:
            if self._pending >= MAX_PENDING_HANDSHAKES:
                log.warning("too many venue clients in the handshake; one dropped",
                            extra={"peer": str(client_address[0])})
                return False
            self._pending += 1
            return True

    def handshake_over(self) -> None:
        with self._pending_lock:
            self._pending -= 1

    # -- calls in flight, and stopping without cutting one off ---------------------------------

    def connected(self, sock: socket.socket) -> bool:
        with self._links_changed:
            if not self.stopping:
                self._links[sock] = False
            return not self.stopping

    def call_begins(self, sock: socket.socket) -> bool:
        with self._links_changed:
            if self.stopping:
                return False
            self._links[sock] = True
            return True

    def call_over(self, sock: socket.socket, *, closed: bool = False) -> None:
        with self._links_changed:
            if closed:
                self._links.pop(sock, None)
            elif sock in self._links:
                self._links[sock] = False
            self._links_changed.notify_all()

    def drain(self, timeout_s: float = DRAIN_TIMEOUT_S) -> bool:
        """Stop taking connections and calls: a call running is answered first (a submit's
        venue step runs to its end, as it would for a caller that left); a call arriving from
        now on is answered VENUE_STOPPING and not run; idle connections are closed. True when
        no call is left running (else after `timeout_s`)."""
        self.shutdown()  # the accept loop (serve_forever, in another thread)
        self.socket.close()  # a new connection is refused now, not left waiting in the backlog
        with self._links_changed:
            self.stopping = True
            for sock, busy in self._links.items():
                if not busy:  # its handler waits for a frame: it reads the end now
                    with contextlib.suppress(OSError):
                        sock.shutdown(socket.SHUT_RD)
            return self._links_changed.wait_for(lambda: not any(self._links.values()), timeout_s)


def _clock(venue: VenueService, stop: threading.Event, unsent_after: timedelta) -> None:
    rounds = 0
    while not stop.wait(CLOCK_SECONDS):
        rounds += 1
        try:
            venue.tick(rounds, unsent_after)
        except Exception:  # keep ticking: one bad round must not stop expiries for good
            log.exception("venue clock round failed")


def venue_orders(runtime: Any) -> OrderService:
    """An order service of the venue process's own on the runtime's parts: the built-ins only
    (tenants' installed connectors stay with the gateway processes)."""
    return OrderService(runtime.db, runtime.outbox.committed_bus(), runtime.markets,
                        runtime.market_data, runtime.plugins, runtime.audit,
                        max_page_size=runtime.settings.max_page_size,
                        market_state=runtime.market_state)


class BooksHeld(DomainError):
    code = "VENUE_BOOKS_HELD"


# One venue process per database: a second one (another host or port) would be a second set
# of books, restoring and trading the same orders.
_BOOKS_LOCK = 0x616C7076656E7565  # pg_advisory_lock's key: "alpvenue"


def hold_the_books(db: Any) -> Callable[[], None] | None:
    """On PostgreSQL, take the books' advisory lock on a connection of its own, held for the
    process's life; what lets it go (None elsewhere). BooksHeld when another venue process
    holds it. Behind a pooler in transaction mode a session lock does not hold: connect the
    venue process to PostgreSQL directly."""
    if db.engine.dialect.name != "postgresql":
        return None  # SQLite: one host's deployment, no shared venue to guard
    connection = db.engine.connect()

    def release() -> None:
        # The session ends with its connection (never back to the pool still holding the lock).
        connection.invalidate()
        connection.close()

    try:
        held = connection.exec_driver_sql(f"SELECT pg_try_advisory_lock({_BOOKS_LOCK})").scalar()
        connection.commit()
    except BaseException:
        release()
        raise
    if not held:
        release()
        raise BooksHeld("another venue process holds this database's books "
                        "(`alphintra venue serve` runs once per database)")
    return release


def serve(host: str, port: int, settings: Settings, announce: Callable[[str], None]) -> None:
    """Build, restore, serve until SIGTERM/SIGINT, close."""
    from gateway.runtime import YOUNG_COLLECTION_EVERY, build_runtime

    runtime = build_runtime(settings.with_(venue_url=None))
    stop = threading.Event()
    clock: threading.Thread | None = None
    delivering = False
    release_books: Callable[[], None] | None = None
    # Matching and applying reports allocate as a serving app does (gateway/app.py).
    gc.set_threshold(YOUNG_COLLECTION_EVERY, *gc.get_threshold()[1:])
    try:
        release_books = hold_the_books(runtime.db)  # before anything touches an order
        venue = VenueService(venue_orders(runtime))
        # The port bound first: a second venue process (the port taken) must fail before
        # restoring, which would write restore records and cancel orders the running one
        # holds. Listening only once restored: a connection (a health check) succeeds when
        # the process is ready.
        server = VenueTCPServer((host, port), venue, link_key(runtime.secrets), bind_and_activate=False)
        try:
            server.server_bind()
            names = venue.start()
            server.server_activate()
        except BaseException:
            server.server_close()
            raise
        runtime.outbox.start()  # events a failed publish left in the outbox
        delivering = True
        clock = threading.Thread(target=_clock, name="venue-clock", daemon=True, args=(
            venue, stop, timedelta(milliseconds=settings.orders_unsent_after_ms)))
        clock.start()
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.set())
        serving = threading.Thread(target=server.serve_forever, name="venue-server", daemon=True)
        serving.start()
        announce(f"venue process serving {', '.join(names)} on tcp://{host}:{server.server_address[1]}")
        stop.wait()
        if not server.drain():
            log.warning("venue calls still running after %s s; stopping anyway", DRAIN_TIMEOUT_S)
        server.server_close()
    finally:
        stop.set()
        if clock is not None:
            clock.join(timeout=5)
        if delivering:
            runtime.outbox.stop()
        if release_books is not None:
            release_books()
        runtime.close()
