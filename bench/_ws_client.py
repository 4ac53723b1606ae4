"""A lean graphql-transport-ws client for bench/subscription_fanout.py: many WebSockets in one
process, on raw asyncio protocols (no per-message futures or tasks), each receipt timestamped as
its bytes arrive.

Run as a script by bench/subscription_fanout.py (so it imports nothing of the gateway):

    python bench/_ws_client.py <parent host:port> <gateway port> <count> <query>
    (the API key and the parent's authkey in BENCH_API_KEY and BENCH_AUTHKEY, hex)

`run_clients` is the body of one client process: it opens `count` connections, each
`connection_init` with the API key and one `subscribe`, reports to the parent through a pipe,
then records every `next` (its transition's cursor, the time it arrived) until told to stop,
and sends back what each connection received. No compression is offered unless asked: the
bench measures the gateway's fan-out, not zlib in this process.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import resource
import struct
import sys
import time
from dataclasses import dataclass, field
from multiprocessing.connection import Client, Connection
from typing import Any

OP_CONT, OP_TEXT, OP_BIN, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
CONNECTS_IN_FLIGHT = 64  # handshakes at a time per process, so the gateway's backlog holds


def frame(opcode: int, payload: bytes) -> bytes:
    """One masked client frame (RFC 6455 5.3: a client masks every frame)."""
    mask = os.urandom(4)
    n = len(payload)
    if n < 126:
        header = struct.pack("!BB", 0x80 | opcode, 0x80 | n)
    elif n < 1 << 16:
        header = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, n)
    else:
        header = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, n)
    key = int.from_bytes((mask * (n // 4 + 1))[:n], "big")
    masked = (int.from_bytes(payload, "big") ^ key).to_bytes(n, "big") if n else b""
    return header + mask + masked


@dataclass
class Received:
    """What one connection saw: cursor -> (arrival time (time.time()), the bus message's
    sequence or None), and any error."""

    times: dict[int, tuple[float, int | None]] = field(default_factory=dict)
    duplicates: int = 0
    error: str | None = None


class Subscriber(asyncio.Protocol):
    def __init__(self, host: str, path: str, key: str, query: str, ready: asyncio.Future[None],
                 compression: bool) -> None:
        self.host, self.path, self.key, self.query = host, path, key, query
        self.ready, self.compression = ready, compression
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.upgraded = False
        self.fragments = bytearray()
        self.received = Received()

    # transport -------------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  (uvloop's is not a subclass)
        extension = ("Sec-WebSocket-Extensions: permessage-deflate\r\n" if self.compression
                     else "")
        transport.write(
            f"GET {self.path} HTTP/1.1\r\nHost: {self.host}\r\nUpgrade: websocket\r\n"
            "Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
            f"Sec-WebSocket-Key: {base64.b64encode(os.urandom(16)).decode()}\r\n"
            f"Sec-WebSocket-Protocol: graphql-transport-ws\r\n{extension}\r\n".encode())

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(f"connection lost: {exc}" if exc else "connection closed")

    def data_received(self, data: bytes) -> None:
        now = time.time()  # one stamp for every frame in this read: they arrived together
        self.buffer += data
        if not self.upgraded:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(self.buffer[:end]).decode("latin-1")
            del self.buffer[:end + 4]
            if not head.startswith("HTTP/1.1 101"):
                self._fail(f"handshake refused: {head.splitlines()[0]}")
                return
            if "permessage-deflate" in head.lower():
                self._fail("the server chose permessage-deflate, which this client cannot read")
                return
            self.upgraded = True
            self.send({"type": "connection_init",
                       "payload": {"Authorization": f"Bearer {self.key}"}})
        self._frames(now)

    # frames ----------------------------------------------------------------------------------
    def _frames(self, now: float) -> None:
        buf = self.buffer
        while len(buf) >= 2:
            fin, opcode, length = buf[0] & 0x80, buf[0] & 0x0F, buf[1] & 0x7F
            offset = 2
            if length == 126:
                if len(buf) < 4:
                    return
                length, offset = struct.unpack_from("!H", buf, 2)[0], 4
            elif length == 127:
                if len(buf) < 10:
                    return
                length, offset = struct.unpack_from("!Q", buf, 2)[0], 10
            if len(buf) < offset + length:
                return
            payload = bytes(buf[offset:offset + length])
            del buf[:offset + length]
            if opcode in (OP_TEXT, OP_BIN, OP_CONT):
                self.fragments += payload
                if fin:
                    message, self.fragments = bytes(self.fragments), bytearray()
                    self._message(json.loads(message), now)
            elif opcode == OP_PING:
                self._write(frame(OP_PONG, payload))
            elif opcode == OP_CLOSE:
                code = struct.unpack_from("!H", payload)[0] if len(payload) >= 2 else None
                self._fail(f"closed by the server: {code} {payload[2:].decode(errors='replace')}")
                return

    def _message(self, message: dict[str, Any], now: float) -> None:
        kind = message.get("type")
        if kind == "next":
            update = ((message.get("payload") or {}).get("data") or {})["orderUpdates"]
            cursor = int(update["transition"]["cursor"])
            if cursor in self.received.times:
                self.received.duplicates += 1
            else:
                self.received.times[cursor] = (now, update.get("sequence"))
        elif kind == "connection_ack":
            self.send({"id": "1", "type": "subscribe", "payload": {"query": self.query}})
            if not self.ready.done():
                self.ready.set_result(None)
        elif kind == "ping":
            self.send({"type": "pong"})
        elif kind in ("error", "complete"):
            self._fail(f"{kind}: {json.dumps(message)[:300]}")

    def send(self, message: dict[str, Any]) -> None:
        self._write(frame(OP_TEXT, json.dumps(message).encode()))

    def _write(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def _fail(self, reason: str) -> None:
        if self.received.error is None:
            self.received.error = reason
        if not self.ready.done():
            self.ready.set_exception(ConnectionError(reason))
        if self.transport is not None:
            self.transport.close()

    def close(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self._write(frame(OP_CLOSE, struct.pack("!H", 1000)))
            self.transport.close()


async def _connect(host: str, port: int, key: str, query: str, compression: bool,
                   gate: asyncio.Semaphore, timeout: float) -> Subscriber | str:
    loop = asyncio.get_running_loop()
    async with gate:
        ready: asyncio.Future[None] = loop.create_future()
        try:
            _, protocol = await asyncio.wait_for(loop.create_connection(
                lambda: Subscriber(f"{host}:{port}", "/graphql", key, query, ready, compression),
                host, port), timeout)
            await asyncio.wait_for(ready, timeout)
        except (OSError, ConnectionError, TimeoutError) as exc:
            return f"{type(exc).__name__}: {exc}"
        return protocol


async def _serve(pipe: Connection, host: str, port: int, key: str, query: str, count: int,
                 compression: bool, timeout: float) -> None:
    gate = asyncio.Semaphore(CONNECTS_IN_FLIGHT)
    outcomes = await asyncio.gather(*(_connect(host, port, key, query, compression, gate,
                                               timeout) for _ in range(count)))
    subscribers = [o for o in outcomes if isinstance(o, Subscriber)]
    failures = [o for o in outcomes if isinstance(o, str)]
    pipe.send(("ready", len(subscribers), failures[:5], len(failures)))
    loop = asyncio.get_running_loop()
    cpu_before = time.process_time()
    while True:  # answer the parent's polls until it says stop
        command = await loop.run_in_executor(None, pipe.recv)
        if command == "count":
            pipe.send([len(s.received.times) for s in subscribers])
        elif command == "stop":
            break
    cpu = time.process_time() - cpu_before
    pipe.send(("received", [(s.received.times, s.received.duplicates, s.received.error)
                            for s in subscribers], cpu))
    for s in subscribers:
        s.close()
    await asyncio.sleep(0.2)


def run_clients(pipe: Connection, host: str, port: int, key: str, query: str, count: int,
                compression: bool, timeout: float) -> None:
    """One client process (multiprocessing target)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, count + 256)), hard))
    main = _serve(pipe, host, port, key, query, count, compression, timeout)
    try:
        import uvloop
    except ImportError:
        asyncio.run(main)
    else:
        uvloop.run(main)


if __name__ == "__main__":
    parent_host, parent_port = sys.argv[1].rsplit(":", 1)
    with Client((parent_host, int(parent_port)),
                authkey=bytes.fromhex(os.environ["BENCH_AUTHKEY"])) as parent:
        run_clients(parent, "127.0.0.1", int(sys.argv[2]), os.environ["BENCH_API_KEY"],
                    sys.argv[4], int(sys.argv[3]), False, float(os.environ.get(
                        "BENCH_CONNECT_TIMEOUT", "300")))
