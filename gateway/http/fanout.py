"""Subscriptions that fan out: identical subscriptions share one execution, and each event's
answer is encoded once and sent to every one of them (issue 14).

A group is keyed by everything the answer can depend on: the schema object the operation runs
on (a tenant's installed plugins give it a schema of its own, and an install a new one), the
document text the gate chose, the variables as canonical JSON, the operation's name, the
tenant, and the caller's roles (sorted). No subscription resolver reads the user or the
socket (checked: jobUpdated, orderUpdates, complianceAlerts, pluginEvents, marketSessionEvents,
marketStateEvents, quotes, chartPatterns, defiEvents and plugins' subscriptions read the tenant
and check the caller's rights, which casbin derives from its roles), so the user is not in the
key. A new subscription resolver that reads `c.me.user_id` or the connection must add it here.

A group takes new members only until it has produced its first result; a subscription arriving
after that starts a group of its own (which others may join until ITS first result). So every
subscriber gets its own start: jobUpdated's first snapshot, orderUpdates(after:)'s replay, and
a live-only stream (complianceAlerts) from no later than its own subscribe.

The group runs the operation once, with its first member's context (the tenant's scope), in a
task that lives while the group has members: the last member leaving cancels it. Each `next`
payload is encoded once and spliced into each member's frame with the member's own id; `error`
and `complete` reach every member. Results already executed when the group sends (an order's
transitions are published together) are sent as one batch: each socket gets their frames, in
order, in one write (a send costs 8 µs of system time however many frames it carries). A
result with errors, or a frame over the size cap, is encoded per member by the endpoint as
before (suggestions cut, RESPONSE_TOO_LARGE, error metrics).

Sending: each socket has an `Outlet`. A frame is written at once when the connection has room
(nothing queued, nothing in the transport's buffer); otherwise it waits in
the outlet, in order. A socket whose outlet holds `limit` frames is a slow consumer: it is
closed with SLOW_CONSUMER_CLOSE_CODE rather than slowing the others.

Written at once, on uvicorn's websockets-sansio connection (what `alphintra serve` runs) with
no extension negotiated (per-message compression off, the default), a frame's bytes go
straight to the transport: a server's text frame is unmasked, so header and payload are the
same bytes for every member with the same operation id, built once per event (`text_frame`),
instead of a trip through Starlette's and uvicorn's `send` and the websockets library's
framing per socket (about 20 µs each, most of the time 10,000 subscribers took). Anything else
(compression negotiated, the connection closing, another server) takes `send_text` as before.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Hashable
from typing import Any, Protocol

import orjson
from strawberry.types.execution import ExecutionResult, PreExecutionError
from strawberry.utils.aio import aclosing

from gateway.errors import INTERNAL_ERROR
from gateway.http.encoding import dumps

try:  # the connection state a direct write needs (websockets is what uvicorn's sansio runs on)
    from websockets.protocol import State

    _OPEN: Any = State.OPEN
except ImportError:  # no websockets: no connection is direct (`direct_connection` finds none)
    _OPEN = object()

log = logging.getLogger(__name__)

# graphql-ws's own codes are 4400-4499 client faults it does not reconnect after (4400, 4401,
# 4403, 4406, 4408, 4409, 4429) and 4500; 4413 is none of them, so clients reconnect, as they
# should after falling behind. Not 1008 (policy), which clients treat as final.
SLOW_CONSUMER_CLOSE_CODE = 4413
SLOW_CONSUMER = "SLOW_CONSUMER"
# How often a backed-up outlet looks whether its connection has room again.
_DRAIN_POLL_S = 0.005
# asyncio's default high-water mark, for transports that do not tell theirs (uvloop's).
_HIGH_WATER = 64 * 1024
# A group hands the event loop back every this many members, so one event to 10,000 sockets
# does not hold up every other connection's messages until it is done.
_YIELD_EVERY = 1000

_FIN_TEXT = 0x81  # FIN + opcode 1 (text); a server's frames carry no mask

_END = object()  # the stream ended (in a group's queue of results)

GroupKey = tuple[Hashable, ...]
StreamOpener = Callable[[], Awaitable[AsyncIterator[Any]]]


def group_key(schema: object, query: str, variables: object, operation_name: object,
              tenant_id: str, roles: tuple[str, ...]) -> GroupKey | None:
    """The key of the group a subscription may share, or None when it cannot share (variables
    that are not plain JSON)."""
    try:
        canonical = orjson.dumps(variables or {}, option=orjson.OPT_SORT_KEYS)
    except (TypeError, orjson.JSONEncodeError):
        return None
    return (id(schema), query, canonical, operation_name if isinstance(operation_name, str) else None,
            tenant_id, tuple(sorted(roles)))


class Transport(Protocol):
    """What an outlet reads of a connection's transport (asyncio's, or uvloop's, which is not
    registered as an asyncio.WriteTransport)."""

    def get_write_buffer_size(self) -> int: ...
    def is_closing(self) -> bool: ...
    def abort(self) -> None: ...
    def write(self, data: bytes) -> None: ...


def text_frame(payload: bytes) -> bytes:
    """A complete, unmasked WebSocket text frame (RFC 6455 5.2) carrying `payload` (UTF-8)."""
    n = len(payload)
    if n < 126:
        head = bytes((_FIN_TEXT, n))
    elif n < 1 << 16:
        head = bytes((_FIN_TEXT, 126)) + n.to_bytes(2, "big")
    else:
        head = bytes((_FIN_TEXT, 127)) + n.to_bytes(8, "big")
    return head + payload


def _server_protocol(send: Any, depth: int = 8) -> Any:
    """The server's connection object behind an ASGI `send` (uvicorn's protocol, whose bound
    method Starlette wraps in closures), or None."""
    for _ in range(depth):
        owner = getattr(send, "__self__", None)
        if owner is not None and getattr(owner, "transport", None) is not None:
            return owner
        code, cells = getattr(send, "__code__", None), getattr(send, "__closure__", None)
        if code is None or not cells or "send" not in code.co_freevars:
            return None
        send = cells[code.co_freevars.index("send")].cell_contents
    return None


def transport_of(send: Any, depth: int = 8) -> Transport | None:
    """The connection's transport behind an ASGI `send` (uvicorn's protocol's bound method,
    under the closures Starlette wraps it in), to see how much the peer has not yet read. None
    when there is none to find (another server, a test client): the outlet then relies on the
    server's `send` to wait when the peer does not read."""
    transport = getattr(_server_protocol(send, depth), "transport", None)
    if all(callable(getattr(transport, name, None)) for name in (
            "get_write_buffer_size", "is_closing", "abort", "write")):
        return transport  # type: ignore[no-any-return]
    return None


def direct_connection(send: Any) -> Any:
    """uvicorn's websockets-sansio connection behind `send`, when frames may be written to its
    transport directly (see the module's docstring); None for any other server."""
    protocol = _server_protocol(send)
    conn = getattr(protocol, "conn", None)
    if conn is None or not all(hasattr(protocol, a) for a in (
            "handshake_complete", "close_sent", "initial_response", "writable")) \
            or not hasattr(conn, "extensions") or not hasattr(conn, "state"):
        return None
    return protocol


class Member:
    """One subscribe (a socket's operation id) in a group."""

    __slots__ = ("answered", "finished", "id", "id_bytes", "id_json", "id_wire", "left", "on_final",
                 "on_first", "outlet")

    def __init__(self, operation_id: str, outlet: Outlet, on_first: Callable[[str], None],
                 on_final: Callable[[str], None]) -> None:
        self.id = operation_id
        self.id_json = dumps(operation_id).decode()
        self.id_wire = b'{"id":' + self.id_json.encode()  # a frame's first bytes
        self.id_bytes = len(self.id_json.encode())
        self.outlet = outlet
        self.on_first = on_first  # the operation's first answer (its latency)
        self.on_final = on_final  # before `complete`/`error`: the id may be reused from then on
        self.answered = False
        self.left = False  # cancelled (complete, close): nothing more is sent for it
        self.finished = asyncio.Event()


class Outlet:
    """One socket's fanned-out frames, written in order. A socket that lets `limit` frames pile
    up (the peer not reading, its connection's buffers full) is a slow consumer."""

    def __init__(self, send_text: Callable[[str], Awaitable[None]],
                 transport: Transport | None, limit: int,
                 on_overflow: Callable[[], None], connection: Any = None) -> None:
        self._send_text = send_text
        self._transport = transport
        # uvicorn's websockets-sansio protocol (`direct_connection`): frames' bytes may go
        # straight to the transport while it is open with no extension negotiated
        self._connection = connection if transport is not None else None
        # frames are handed to the transport while it buffers at most its high-water mark (what
        # asyncio's own flow control allows), so a burst of large frames is not taken for a slow peer
        limits = getattr(transport, "get_write_limits", None)  # uvloop's has none
        self._high = limits()[1] if limits is not None else _HIGH_WATER
        self._frames: deque[tuple[Member, str]] = deque()
        self._writer: asyncio.Task[None] | None = None
        self._on_overflow = on_overflow
        self.limit = limit
        self.closed = False

    def _has_room(self) -> bool:
        # An empty buffer: the server's `send` cannot wait for the peer (uvicorn's `websockets`
        # protocol waits while paused, which needs a full buffer), so the group never waits on it.
        transport = self._transport
        return (transport is not None and self._writer is None and not self._frames
                and not transport.is_closing() and not transport.get_write_buffer_size())

    def write(self, member: Member, wire: bytes) -> bool:
        """Write a complete frame's bytes to the transport now, when the connection has room
        and is a plain open websockets-sansio connection (what its `send` would write for this
        frame, without the trip); False: nothing written, `send` the text instead."""
        conn = self._connection
        if conn is None or self.closed or member.left or not self._has_room():
            return False
        ws = conn.conn
        if (ws.extensions or ws.state is not _OPEN or conn.close_sent or not conn.handshake_complete
                or conn.initial_response is not None or not conn.writable.is_set()):
            return False
        try:
            self._transport.write(wire)  # type: ignore[union-attr]  (`_has_room` saw it)
        except Exception:  # the peer is gone: its handler's receive loop ends its operations
            self.closed = True
        return True

    async def send(self, member: Member, frame: str) -> None:
        """Write `frame` now if the connection has room, else queue it behind the others."""
        if self.closed or member.left:
            return
        if not self._has_room():
            self._offer(member, frame)
            return
        try:
            await self._send_text(frame)
        except Exception:  # the peer is gone: its handler's receive loop ends its operations
            self.closed = True

    def _offer(self, member: Member, frame: str) -> None:
        if len(self._frames) >= self.limit:
            self.close()
            self._on_overflow()
            return
        self._frames.append((member, frame))
        if self._writer is None:
            self._writer = asyncio.create_task(self._drain())

    async def _drain(self) -> None:
        transport = self._transport
        try:
            while self._frames and not self.closed:
                if transport is not None:
                    while transport.get_write_buffer_size() > self._high and not transport.is_closing():
                        await asyncio.sleep(_DRAIN_POLL_S)
                    if transport.is_closing():
                        self.closed = True
                        return
                member, frame = self._frames.popleft()
                if not member.left:
                    await self._send_text(frame)
        except Exception:  # the peer is gone
            self.closed = True
        finally:
            self._writer = None

    def close(self) -> None:
        self.closed = True
        self._frames.clear()
        if self._writer is not None:
            self._writer.cancel()

    def abort_later(self, seconds: float) -> None:
        """After a close frame was queued: drop the connection if the peer has still not read
        its backlog `seconds` later (a transport that closes waits for its buffer to empty)."""
        transport = self._transport
        if transport is None:
            return

        def abort() -> None:
            if transport.get_write_buffer_size() > 0:
                transport.abort()

        asyncio.get_running_loop().call_later(seconds, abort)


class Group:
    """One execution shared by its members."""

    def __init__(self, hub: Hub, key: GroupKey, open_stream: StreamOpener,
                 encode_message: Callable[[dict[str, Any]], str], max_bytes: int) -> None:
        self.hub = hub
        self.key = key
        self.members: dict[Member, None] = {}  # insertion-ordered set
        self.joinable = True
        self._open_stream = open_stream
        self._encode_message = encode_message
        self._max_bytes = max_bytes
        self.task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self.task = asyncio.create_task(self._run())

    async def attend(self, member: Member) -> None:
        """The member's operation task: waits while the group serves it; cancelled, it leaves."""
        try:
            await member.finished.wait()
        except asyncio.CancelledError:
            member.left = True  # its frames still queued are not sent
            raise
        finally:
            self.leave(member)

    def leave(self, member: Member) -> None:
        self.members.pop(member, None)
        if not self.members:
            self._close_entry()
            if self.task is not None and not self.task.done():
                self.task.cancel()

    def _close_entry(self) -> None:
        self.joinable = False
        self.hub.close_entry(self)

    async def _pump(self, source: AsyncIterator[Any], results: asyncio.Queue[Any]) -> None:
        """Moves the stream's results to `results` as they come, so `_run` can take every
        result already executed as one batch (an order's transitions arrive together)."""
        try:
            async for result in source:
                self._close_entry()  # latecomers start their own: see the module's docstring
                results.put_nowait(result)
            results.put_nowait(_END)
        except Exception as exc:  # handled in `_run`, as a failure of the stream
            results.put_nowait(exc)

    async def _run(self) -> None:
        try:
            source = await self._open_stream()
            async with aclosing(source):  # type: ignore[type-var]
                results: asyncio.Queue[Any] = asyncio.Queue()
                pump = asyncio.create_task(self._pump(source, results))
                try:
                    if not await self._serve(results):
                        return
                finally:  # the pump leaves the stream before it is closed
                    pump.cancel()
                    await asyncio.gather(pump, return_exceptions=True)
            self._close_entry()  # closed before the last awaits: nobody joins a finished stream
            await self._final(lambda m: f'{{"id":{m.id_json},"type":"complete"}}')
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("shared subscription failed")
            self._close_entry()
            with contextlib.suppress(Exception):
                await self._final_error([{"message": "Internal server error",
                                          "extensions": {"code": INTERNAL_ERROR}}])
        finally:
            self._close_entry()
            self.hub.running.discard(self)
            for member in list(self.members):
                member.finished.set()

    async def _serve(self, results: asyncio.Queue[Any]) -> bool:
        """Sends the stream's results, in batches of what is ready; True when it ended (then
        `complete`), False when it was answered with an `error` already."""
        first = True
        while True:
            batch = [await results.get()]
            # One turn of the loop: results on their way (the other transitions of an order,
            # published together) join this batch, and each socket gets one write for them all.
            await asyncio.sleep(0)
            while not results.empty():
                batch.append(results.get_nowait())
            ready: list[ExecutionResult] = []
            for result in batch:
                if isinstance(result, Exception):
                    await self._next(ready)
                    raise result
                if result is _END:
                    await self._next(ready)
                    return True
                if first and isinstance(result, PreExecutionError):
                    await self._final_error([e.formatted for e in result.errors or ()])
                    return False
                if not isinstance(result, ExecutionResult):  # @defer/@stream: as strawberry
                    await self._next(ready)
                    await self._final_error([{"message": "Incremental delivery is not "
                                              "supported over graphql-transport-ws"}])
                    return False
                first = False
                ready.append(result)
            await self._next(ready)
            # the outlets' writers run before the next batch: a burst of queued events is not
            # mistaken for a slow consumer
            await asyncio.sleep(0)

    async def _next(self, results: list[ExecutionResult]) -> None:
        """`next` frames for `results`, in order, to every member: each result encoded once;
        on a direct connection one write per socket carrying every frame of the batch."""
        if not results:
            return
        encoded: list[tuple[dict[str, Any], str, bytes, int]] = []  # payload, tail, its bytes, size
        for result in results:
            payload: dict[str, Any] = {"data": result.data}
            if result.errors:
                payload["errors"] = [e.formatted for e in result.errors]
            if result.extensions:
                payload["extensions"] = result.extensions
            tail, size, wire_tail = "", 0, b""
            if not result.errors:  # the common case: one encoding for every member
                body = dumps(payload)
                wire_tail = b',"type":"next","payload":' + body + b"}"
                tail = wire_tail.decode()
                size = len(body) + len(',"type":"next","payload":}') + len('{"id":')
            encoded.append((payload, tail, wire_tail, size))
        wires: dict[bytes, bytes] = {}  # the batch's frames' bytes per operation id, built once
        sent = 0
        for member in list(self.members):
            if member.left:
                continue
            if not member.answered:
                member.answered = True
                member.on_first(member.id)
            wire = wires.get(member.id_wire)
            if wire is None:
                wire = wires[member.id_wire] = self._wire(member, encoded)
            if not (wire and member.outlet.write(member, wire)):
                for payload, tail, _, size in encoded:
                    if self._shared(member, tail, size):
                        await member.outlet.send(member, '{"id":' + member.id_json + tail)
                    else:
                        # errors (suggestions cut, counted) or over the cap: as the endpoint sends it
                        await member.outlet.send(member, self._encode_message(
                            {"id": member.id, "type": "next", "payload": payload}))
            sent += 1
            if sent % _YIELD_EVERY == 0:
                await asyncio.sleep(0)

    def _shared(self, member: Member, tail: str, size: int) -> bool:
        """Whether the member's frame is the shared encoding (no errors, under the size cap)."""
        return bool(tail) and not (self._max_bytes and size + member.id_bytes > self._max_bytes)

    def _wire(self, member: Member, encoded: list[tuple[dict[str, Any], str, bytes, int]]) -> bytes:
        """Every frame of the batch for this member's id, as bytes on the wire; empty when one
        of them must be encoded for the member (`send` then takes each in turn)."""
        if not all(self._shared(member, tail, size) for _, tail, _, size in encoded):
            return b""
        return b"".join(text_frame(member.id_wire + wire_tail) for _, _, wire_tail, _ in encoded)

    async def _final_error(self, errors: list[Any]) -> None:
        await self._final(lambda m: self._encode_message(
            {"id": m.id, "type": "error", "payload": errors}))

    async def _final(self, frame_of: Callable[[Member], str]) -> None:
        for member in list(self.members):
            if member.left:
                continue
            member.on_final(member.id)
            if not member.answered:
                member.answered = True
                member.on_first(member.id)
            await member.outlet.send(member, frame_of(member))


class Hub:
    """The groups of one endpoint: those still taking members, by key, and those running."""

    def __init__(self, encode_message: Callable[[dict[str, Any]], str], max_bytes: int) -> None:
        self._open: dict[GroupKey, Group] = {}
        self.running: set[Group] = set()
        self._encode_message = encode_message
        self._max_bytes = max_bytes

    def join(self, key: GroupKey, member: Member, open_stream: StreamOpener) -> Group:
        """The group `member` is now in: the open one with `key`, or a new one, started."""
        group = self._open.get(key)
        if group is None or not group.joinable:
            group = Group(self, key, open_stream, self._encode_message, self._max_bytes)
            self._open[key] = group
            self.running.add(group)
            group.start()
        group.members[member] = None
        return group

    def close_entry(self, group: Group) -> None:
        if self._open.get(group.key) is group:
            del self._open[group.key]
