"""A gateway process's side of `alphintra venue serve` (ALPHINTRA_VENUE_URL): the built-in
connectors as the venue process holds them.

`RemoteVenue.connectors()` answers one `RemoteConnector` per built-in connector of the venue
process (same plugin, name and MICs), so routing, best execution and every answer read the
same as with the connectors in process. `mics` is answered from what the venue process said at
the first call; `quote_for` is a plain call. Orders are changed only through the calls that
run the whole venue step in the venue process (`submit`, `cancel`, `replace`, `cancel_many`):
the connector call, its reports applied under the venue process's locks and published there;
this process only reads what it answers. The venue process alone applies their reports, so a
lost answer is never applied twice, and one order's reports are applied in venue order.

Failures: `VenueUnavailable` (VENUE_UNAVAILABLE, retryable), `sent` false when nothing reached
the venue process (no connection, a refused handshake), true when the request went and its
answer did not come back (the venue process may have done it; the database says).
"""

from __future__ import annotations

import logging
import select
import socket
import threading
from collections.abc import Sequence
from decimal import Decimal
from itertools import count
from typing import TYPE_CHECKING, Any

from gateway.errors import DomainError, ServiceUnavailable
from gateway.secrets import SecretBox
from gateway.trading.venue_link import (
    HANDSHAKE_TIMEOUT_S,
    MAX_QUOTES,
    QUOTE_FAILED,
    HandshakeFailed,
    Link,
    client_handshake,
    link_key,
    parse_url,
)
from plugins.sdk import ExecutionReport, OrderRequest, VenueQuote
from plugins.wire import WireError

if TYPE_CHECKING:
    from gateway.trading.reports import _Amendment

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 3.0
CALL_TIMEOUT_S = 30.0  # a batch of 1,000 orders matched and applied, with room
POOL_SIZE = 8
# Codes the venue process answers after checking a call, before doing anything.
REFUSED_UNSENT = frozenset({"VENUE_CALL_INVALID", "CONNECTOR_UNKNOWN", "VENUE_STOPPING"})


class VenueUnavailable(ServiceUnavailable):
    """The venue process could not be reached, or its answer was lost."""

    code = "VENUE_UNAVAILABLE"

    def __init__(self, message: str, *, sent: bool) -> None:
        super().__init__(f"the venue process: {message}; retry shortly")
        self.sent = sent


class RemoteConnector:
    """A built-in connector held by the venue process. Only `mics`, `quote_for` and
    `quote_many` are called on it; orders go through `RemoteVenue`'s calls (the venue step runs there)."""

    def __init__(self, venue: RemoteVenue, plugin: str, name: str, mics: Sequence[str]) -> None:
        self.venue = venue
        self.plugin = plugin
        self.name = name
        self.inner = self
        self._mics = list(mics)

    def mics(self) -> list[str]:
        return list(self._mics)

    def quote_for(self, order: OrderRequest) -> VenueQuote | None:
        return self.venue.quote_for(self.name, order)

    def quote_many(self, orders: Sequence[OrderRequest]) -> list[VenueQuote | Exception | None]:
        """The router's quotes for a batch: one call, not one per order."""
        return self.venue.quote_many(self.name, orders)

    def _elsewhere(self, *_: Any) -> Any:
        raise RuntimeError(f"{self.name} runs in the venue process: change orders through RemoteVenue")

    submit = cancel = replace = on_clock = _elsewhere


def is_remote(connector: Any) -> bool:
    return isinstance(connector, RemoteConnector)


class RemoteVenue:
    """Calls to the venue process over a small pool of authenticated connections."""

    def __init__(self, url: str, key: bytes, *, call_timeout_s: float = CALL_TIMEOUT_S) -> None:
        self.url = url
        self._address = parse_url(url)
        self._key = key
        self._timeout = call_timeout_s
        self._pool: list[Link] = []
        self._lock = threading.Lock()
        self._ids = count(1)

    # -- the calls ---------------------------------------------------------------------------

    def connectors(self) -> list[RemoteConnector]:
        described = self._call("describe", [], changes=False)
        if not isinstance(described, list):
            raise VenueUnavailable("its connector list is malformed", sent=True)
        return [RemoteConnector(self, str(plugin), str(name), [str(m) for m in mics])
                for plugin, name, mics in described]

    def quote_for(self, name: str, order: OrderRequest) -> VenueQuote | None:
        quote = self._call("quote_for", [name, order], changes=False)
        if quote is not None and not isinstance(quote, VenueQuote):
            raise VenueUnavailable("its quote is malformed", sent=True)
        return quote

    def quote_many(self, name: str, orders: Sequence[OrderRequest]
                   ) -> list[VenueQuote | Exception | None]:
        """Each order's quote, or the error that stands for it: one order's failure (its quote
        raised there, or is malformed) fails that order alone, a call's failure its orders."""
        quotes: list[VenueQuote | Exception | None] = []
        for start in range(0, len(orders), MAX_QUOTES):
            chunk = orders[start:start + MAX_QUOTES]
            try:
                answer = self._call("quote_many", [name, list(chunk)], changes=False)
                if not isinstance(answer, list) or len(answer) != len(chunk):
                    raise VenueUnavailable("its quotes are malformed", sent=True)
            except DomainError as exc:
                quotes.extend([exc] * len(chunk))
                continue
            quotes.extend(q if q is None or isinstance(q, VenueQuote) else VenueUnavailable(
                "it failed to quote" if q == QUOTE_FAILED else "its quote is malformed", sent=True)
                for q in answer)
        return quotes

    def submit(self, items: Sequence[tuple[str, OrderRequest]]) -> list[dict[str, Any]]:
        """Send, apply and publish there; the changed order rows."""
        return _rows(self._call("submit", [[[name, request] for name, request in items]]))

    def cancel(self, name: str, order_id: str, mic: str) -> ExecutionReport | None:
        """Cancel, apply and publish there; the venue's refusal, if it refused."""
        return _report(self._call("cancel", [name, order_id, mic]))

    def replace(self, name: str, tenant_id: str, order_id: str, mic: str, quantity: Decimal,
                limit_price: Decimal | None, amendment: _Amendment) -> ExecutionReport | None:
        """Replace, apply with the request (its record and price) and publish there; the
        venue's refusal, if it refused."""
        request = {"limit_price": amendment.limit_price, "kind": amendment.entry.kind,
                   "subject": amendment.entry.subject, "payload": amendment.entry.payload,
                   "actor": amendment.entry.actor, "locate_key": amendment.locate_key,
                   "at": amendment.at}
        answer = self._call("replace", [name, tenant_id, order_id, mic, quantity, limit_price,
                                        request])
        if not isinstance(answer, dict):
            raise VenueUnavailable("its answer is malformed", sent=True)
        amendment.refused = bool(answer.get("refused_flag"))
        amendment.written = bool(answer.get("written"))
        return _report(answer.get("refused"))

    def cancel_many(self, rows: Sequence[dict[str, Any]], reason: str
                    ) -> tuple[dict[str, dict[str, Any]], list[dict[str, Any]]]:
        """One mass-cancel round there: each order's outcome (CancelOutcome's fields) and the
        changed rows."""
        answer = self._call("cancel_many", [list(rows), reason])
        if not isinstance(answer, dict) or not isinstance(answer.get("outcomes"), dict):
            raise VenueUnavailable("its answer is malformed", sent=True)
        return answer["outcomes"], _rows(answer.get("changed"))

    def close(self) -> None:
        with self._lock:
            pool, self._pool = self._pool, []
        for link in pool:
            link.close()

    # -- the connection ----------------------------------------------------------------------

    def _call(self, method: str, args: list[Any], *, changes: bool = True) -> Any:
        """One call. A read (`changes` false) is tried once more on a new connection."""
        for attempt in range(1 if changes else 2):
            link = self._take()
            call_id = next(self._ids)
            try:
                link.send({"i": call_id, "m": method, "a": args})
            except OSError as exc:  # not all of it left: the venue process never saw the call
                link.close()
                if attempt or changes:
                    raise VenueUnavailable(f"the call did not go out ({exc})", sent=False) from None
                continue
            except BaseException:  # arguments that do not pack: nothing left, the link unused
                self._give(link)
                raise
            try:
                answer = link.read()
            except (OSError, ValueError, WireError) as exc:  # msgpack's errors are ValueErrors
                answer, lost = None, exc
            else:
                lost = None
            if answer is None or answer.get("i") != call_id:
                link.close()
                if not changes and attempt == 0:
                    continue
                raise VenueUnavailable(f"the answer was lost ({lost or 'connection closed'})",
                                       sent=True) from None
            self._give(link)
            if "e" in answer:
                raise _error(answer["e"])
            return answer.get("r")
        raise AssertionError("unreachable")

    def _take(self) -> Link:
        with self._lock:
            while self._pool:
                link = self._pool.pop()
                if _alive(link.sock):
                    return link
                link.close()  # the venue process closed it (a restart): a new one
        return self._connect()

    def _give(self, link: Link) -> None:
        with self._lock:
            if len(self._pool) < POOL_SIZE:
                self._pool.append(link)
                return
        link.close()

    def _connect(self) -> Link:
        try:
            sock = socket.create_connection(self._address, timeout=CONNECT_TIMEOUT_S)
        except OSError as exc:
            raise VenueUnavailable(f"no connection to {self.url} ({exc})", sent=False) from None
        try:
            sock.settimeout(HANDSHAKE_TIMEOUT_S)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            link = client_handshake(sock, self._key)
            sock.settimeout(self._timeout)
        except (OSError, ValueError, WireError, HandshakeFailed) as exc:
            sock.close()
            log.error("the venue process at %s refused the handshake: %s", self.url, exc)
            raise VenueUnavailable(f"the handshake with {self.url} failed ({exc})",
                                   sent=False) from None
        return link


def _alive(sock: socket.socket) -> bool:
    """Idle and still open: nothing to read (an end of stream would be readable)."""
    try:
        readable, _, _ = select.select([sock], [], [], 0)
    except (OSError, ValueError):
        return False
    return not readable


def _error(payload: Any) -> DomainError:
    """The venue process's error as this process raises it: a domain error keeps its code."""
    if not isinstance(payload, dict):
        return VenueUnavailable("an unreadable error", sent=True)
    message, code = str(payload.get("message", ""))[:2000], payload.get("code")
    if isinstance(code, str) and code:
        error = DomainError(message, code=code, details=payload.get("details") or {})
        status = payload.get("http_status")
        if isinstance(status, int):
            error.http_status = status
        return error
    # An internal error: its text stays in the venue process's log, under this reference.
    reference = str(payload.get("reference", ""))[:64]
    return VenueUnavailable(f"it failed (reference {reference} in its log)", sent=True)


def _rows(value: Any) -> list[dict[str, Any]]:
    if not isinstance(value, list) or not all(isinstance(r, dict) and isinstance(r.get("id"), str)
                                              for r in value):
        raise VenueUnavailable("its rows are malformed", sent=True)
    return value


def _report(value: Any) -> ExecutionReport | None:
    if value is not None and not isinstance(value, ExecutionReport):
        raise VenueUnavailable("its report is malformed", sent=True)
    return value


def remote_venue(url: str | None, secrets: SecretBox) -> RemoteVenue | None:
    """The client for ALPHINTRA_VENUE_URL, or None (the built-in connectors in process)."""
    return RemoteVenue(url, link_key(secrets)) if url else None
