"""The link between gateway processes and `alphintra venue serve`: the address, the handshake
and the calls, over TCP in plugins/wire.py frames (msgpack, allow-listed SDK types, never
pickle).

Handshake, both ways (each side proves it holds the deployment's secret key before anything
else crosses): the server sends `{"hello": VERSION, "nonce": 32 bytes}`; the client answers
`{"nonce": 32 bytes of its own, "proof": HMAC(key, "client" | server nonce | client nonce)}`;
the server checks it (`hmac.compare_digest`), then answers `{"proof": HMAC(key, "server" |
server nonce | client nonce)}`, which the client checks. The key is derived from the secret key
(`link_key`), never the secret key itself. A peer that fails is dropped without a word.
Before the proof, a peer is a stranger: its frame is at most HANDSHAKE_MAX_FRAME bytes, read
within HANDSHAKE_TIMEOUT_S in all (not per read: a peer trickling bytes is dropped at the
deadline) and decoded as plain msgpack (no extension type: nothing is built for a stranger).

Calls: `{"i": id, "m": method, "a": args}` answered `{"i": id, "r": result}` or `{"i": id,
"e": {"type", "message", "code"}}`. Rows of the order table travel as maps of plain values.

After the handshake every frame is sealed (`Link`): `{"b": the message packed, "t": HMAC(session
key, direction | sequence number | b)}`, the session key HMAC(key, "session" | both nonces).
So the handshake authenticates the stream, not only its start: a frame injected into the
connection by someone on the path (who relayed the handshake), replayed, reordered or reflected
back ends the connection, and nothing in a frame is decoded (SDK types built) before its tag
is checked.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import socket
import struct
import time
from typing import Any
from urllib.parse import urlsplit

import msgpack

from gateway.secrets import SecretBox
from plugins.wire import WireError, frame, packb, read_frame, unpackb

VERSION = 2  # 2: frames sealed after the handshake
NONCE_BYTES = 32
HANDSHAKE_TIMEOUT_S = 5.0  # the whole handshake, not each read
HANDSHAKE_MAX_FRAME = 512  # a handshake message is about 100 bytes
MAX_QUOTES = 2_000  # orders in one quote_many call (a batch of 1,000 asks one or two)
QUOTE_FAILED = {"failed": True}  # in a quote_many answer: that order's quote raised
_CONTEXT = b"alphintra venue link v1"


class HandshakeFailed(Exception):
    """The peer did not prove it holds the secret key (or spoke something else)."""


class PeerLeft(HandshakeFailed):
    """The peer closed before answering (a port probe, a health check)."""


def parse_url(url: str) -> tuple[str, int]:
    """`tcp://host:port` -> (host, port); ValueError when it is not that."""
    parts = urlsplit(url.strip())
    if parts.scheme != "tcp" or not parts.hostname or parts.port is None or parts.path not in ("", "/"):
        raise ValueError(f"{url!r} is not tcp://host:port")
    return parts.hostname, parts.port


def link_key(secrets: SecretBox) -> bytes:
    """The key both sides prove they hold: derived from the secret key, for this link only."""
    return secrets.derive(_CONTEXT)


def _proof(key: bytes, role: bytes, server_nonce: bytes, client_nonce: bytes) -> bytes:
    return hmac.new(key, role + b"|" + server_nonce + b"|" + client_nonce, hashlib.sha256).digest()


def _bytes_field(message: dict[str, Any] | None, name: str, size: int) -> bytes:
    value = message.get(name) if isinstance(message, dict) else None
    if not isinstance(value, bytes) or len(value) != size:
        raise HandshakeFailed(f"the peer's {name} is missing or malformed")
    return value


def _read_exactly(sock: socket.socket, n: int, deadline: float) -> bytes | None:
    chunks = bytearray()
    while len(chunks) < n:
        left = deadline - time.monotonic()
        if left <= 0:
            raise HandshakeFailed("the handshake took too long")
        sock.settimeout(left)
        try:
            chunk = sock.recv(n - len(chunks))
        except TimeoutError:
            raise HandshakeFailed("the handshake took too long") from None
        if not chunk:
            return None
        chunks += chunk
    return bytes(chunks)


def read_handshake(sock: socket.socket, deadline: float) -> dict[str, Any] | None:
    """One handshake message by `deadline` (time.monotonic()), or None at end of stream."""
    header = _read_exactly(sock, 4, deadline)
    if header is None:
        return None
    (size,) = struct.unpack(">I", header)
    if size > HANDSHAKE_MAX_FRAME:
        raise HandshakeFailed(f"a handshake frame of {size} bytes")
    body = _read_exactly(sock, size, deadline)
    if body is None:
        return None
    try:
        message = msgpack.unpackb(body, raw=False, strict_map_key=True, use_list=True,
                                  timestamp=0, max_ext_len=0)
    except (ValueError, TypeError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError) as exc:
        raise HandshakeFailed(f"a handshake frame that does not decode ({exc})") from None
    if not isinstance(message, dict):
        raise HandshakeFailed("a handshake frame is not a map")
    return message


class Link:
    """One authenticated connection: frames sealed with the session key, numbered per
    direction (see the module's docstring)."""

    def __init__(self, sock: socket.socket, session: bytes, role: bytes) -> None:
        self.sock = sock
        self._key = session
        self._out, self._in = (b"client", b"server") if role == b"client" else (b"server", b"client")
        self._sent = 0
        self._read = 0

    def _tag(self, direction: bytes, number: int, body: bytes) -> bytes:
        return hmac.new(self._key, direction + number.to_bytes(8, "big") + body, hashlib.sha256).digest()

    def send(self, message: dict[str, Any]) -> None:
        """TypeError/WireError (nothing sent) when the message does not pack; OSError."""
        body = packb(message)
        data = frame({"b": body, "t": self._tag(self._out, self._sent, body)})
        self._sent += 1
        self.sock.sendall(data)

    def read(self) -> dict[str, Any] | None:
        """The next message, None at end of stream; WireError for a frame not sealed by the
        peer in its turn (or that does not decode)."""
        sealed = read_frame(self.sock)
        if sealed is None:
            return None
        body, tag = sealed.get("b"), sealed.get("t")
        if not isinstance(body, bytes) or not isinstance(tag, bytes) \
                or not hmac.compare_digest(tag, self._tag(self._in, self._read, body)):
            raise WireError("a frame not sealed by the peer (injected, replayed or reordered)")
        self._read += 1
        message = unpackb(body)
        if not isinstance(message, dict):
            raise WireError("a frame is not a map")
        return message

    def close(self) -> None:
        self.sock.close()


def _session(key: bytes, server_nonce: bytes, client_nonce: bytes) -> bytes:
    return _proof(key, b"session", server_nonce, client_nonce)


def server_handshake(sock: socket.socket, key: bytes) -> Link:
    """The server's side; HandshakeFailed (or OSError/WireError) when the client fails."""
    deadline = time.monotonic() + HANDSHAKE_TIMEOUT_S
    server_nonce = os.urandom(NONCE_BYTES)
    sock.settimeout(HANDSHAKE_TIMEOUT_S)
    sock.sendall(frame({"hello": VERSION, "nonce": server_nonce}))
    answer = read_handshake(sock, deadline)
    if answer is None:
        raise PeerLeft("the peer closed before answering")
    client_nonce = _bytes_field(answer, "nonce", NONCE_BYTES)
    proof = _bytes_field(answer, "proof", hashlib.sha256().digest_size)
    if not hmac.compare_digest(proof, _proof(key, b"client", server_nonce, client_nonce)):
        raise HandshakeFailed("the client's proof is wrong")
    sock.sendall(frame({"proof": _proof(key, b"server", server_nonce, client_nonce)}))
    return Link(sock, _session(key, server_nonce, client_nonce), b"server")


def client_handshake(sock: socket.socket, key: bytes) -> Link:
    """The client's side; HandshakeFailed when the server fails (or drops us: a wrong key)."""
    deadline = time.monotonic() + HANDSHAKE_TIMEOUT_S
    hello = read_handshake(sock, deadline)
    if not isinstance(hello, dict) or hello.get("hello") != VERSION:
        raise HandshakeFailed("the peer is not a venue process of this version")
    server_nonce = _bytes_field(hello, "nonce", NONCE_BYTES)
    client_nonce = os.urandom(NONCE_BYTES)
    sock.settimeout(max(deadline - time.monotonic(), 0.001))
    sock.sendall(frame({"nonce": client_nonce,
                        "proof": _proof(key, b"client", server_nonce, client_nonce)}))
    answer = read_handshake(sock, deadline)
    if answer is None:
        raise HandshakeFailed("the venue process refused this process's proof (another secret key?)")
    proof = _bytes_field(answer, "proof", hashlib.sha256().digest_size)
    if not hmac.compare_digest(proof, _proof(key, b"server", server_nonce, client_nonce)):
        raise HandshakeFailed("the venue process's proof is wrong (another secret key?)")
    return Link(sock, _session(key, server_nonce, client_nonce), b"client")


__all__ = ["HANDSHAKE_MAX_FRAME", "HANDSHAKE_TIMEOUT_S", "VERSION", "HandshakeFailed", "Link", "PeerLeft",
           "WireError", "client_handshake", "link_key", "parse_url", "read_handshake", "server_handshake"]
