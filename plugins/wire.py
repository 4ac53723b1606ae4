"""The wire between the gateway and a sandboxed plugin worker: frames and values.

A frame is a 4-byte big-endian length and a msgpack map. Values are msgpack's own types plus
extension types for what the SDK's contract carries: integers past 64 bits, Decimal, Fraction, datetime, date,
timedelta, numpy arrays (float64, int64, bool only), and the SDK's dataclasses, by name from an
explicit allow-list and field by field. Nothing is ever unpickled, and decoding builds only
those types, so a plugin cannot make the gateway construct an object of its choosing.

Messages:
- a call: `{"i": id, "m": method, "a": args}` (gateway to worker); a reply `{"i": id, "r":
  result}` or `{"i": id, "e": {"type", "message", "sdk", "code"}}`; a stream answers any number
  of `{"i": id, "s": item}` before its reply.
- a call from the worker (venue facts, egress, a DeFi protocol's chain reads): `{"w": id, "m":
  method, "a": args}`, answered `{"w": id, "r": ...}` or `{"w": id, "e": {...}}`.
"""

from __future__ import annotations

import dataclasses
import enum
import socket
import struct
import typing
from collections.abc import Callable
from datetime import date, datetime, timedelta
from decimal import Decimal, InvalidOperation
from fractions import Fraction
from typing import Any

import msgpack

from plugins import sdk

PLACEHOLDER_FIELD = "_alphintraPlaceholder"  # the Query field of a plugin schema with none of its own
MAX_FRAME = 32 << 20  # a frame larger than this ends the connection
_HEADER = struct.Struct(">I")
_DECIMAL, _DATETIME, _DATE, _ARRAY, _TIMEDELTA, _FRACTION, _BIGINT, _SDK = 1, 2, 3, 4, 5, 6, 7, 10

# The SDK types that may cross the wire (both ways), by name.
SDK_TYPES: dict[str, type] = {cls.__name__: cls for cls in (
    sdk.Instrument, sdk.Bar, sdk.Quote, sdk.Trade, sdk.FxRate, sdk.VenueInfo, sdk.SessionWindow,
    sdk.SectorCap, sdk.OptimisationProblem, sdk.OptimisationAnswer, sdk.OrderRequest,
    sdk.ExecutionReport, sdk.VenueQuote, sdk.ClientProfile, sdk.AccountState, sdk.MarketState,
    sdk.TenantControls, sdk.InstrumentFacts, sdk.VenueFacts, sdk.CheckContext, sdk.Violation,
    sdk.Denial, sdk.ToolSpec, sdk.LLMTurn, sdk.LLMUsage, sdk.StructuredAnswer, sdk.NewsItem,
    sdk.Theme, sdk.SupportLink, sdk.DefiPool, sdk.DefiCall, sdk.VenueDefinition)}
# The SDK exceptions a plugin may raise on purpose; they are raised again on the gateway side.
SDK_ERRORS: dict[str, type[Exception]] = {cls.__name__: cls for cls in (
    sdk.OptimiserRefused, sdk.OptimiserTimedOut, sdk.NoFeasiblePortfolio, sdk.LLMTimeout,
    sdk.LLMRateLimited, sdk.LLMUnavailable, sdk.CapabilityNotDeclared, sdk.EgressRefused)}


class WireError(Exception):
    """A frame or value that does not decode: the peer is broken or hostile."""


# Values.

def _default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return msgpack.ExtType(_DECIMAL, str(value).encode())
    if isinstance(value, datetime):
        return msgpack.ExtType(_DATETIME, value.isoformat().encode())
    if isinstance(value, date):
        return msgpack.ExtType(_DATE, value.isoformat().encode())
    if isinstance(value, int) and not isinstance(value, bool):  # past 64 bits: token base units
        return msgpack.ExtType(_BIGINT, str(value).encode())
    if isinstance(value, Fraction):  # a pool's fee, a price: exact, as integers
        return msgpack.ExtType(_FRACTION, packb([value.numerator, value.denominator]))
    if isinstance(value, timedelta):
        return msgpack.ExtType(_TIMEDELTA, packb([value.days, value.seconds, value.microseconds]))
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, frozenset | set):
        return list(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        name = type(value).__name__
        if SDK_TYPES.get(name) is not type(value):
            raise TypeError(f"{name} is not an SDK type that can cross the wire")
        fields = [getattr(value, f.name) for f in dataclasses.fields(value) if f.init]
        return msgpack.ExtType(_SDK, packb([name, fields]))
    kind = type(value).__module__
    if kind == "numpy":
        import numpy as np

        if isinstance(value, np.ndarray):
            if value.dtype.kind not in "fib":
                raise TypeError(f"arrays of {value.dtype} cannot cross the wire")
            array = np.ascontiguousarray(value, dtype={"f": "<f8", "i": "<i8", "b": "|b1"}[value.dtype.kind])
            return msgpack.ExtType(_ARRAY, packb([array.dtype.str, list(array.shape), array.tobytes()]))
        if isinstance(value, np.generic):
            return value.item()
    raise TypeError(f"a {type(value).__name__} cannot cross the wire")


def _ext(code: int, data: bytes) -> Any:
    try:
        if code == _DECIMAL:
            return Decimal(data.decode())
        if code == _DATETIME:
            return datetime.fromisoformat(data.decode())
        if code == _DATE:
            return date.fromisoformat(data.decode())
        if code == _TIMEDELTA:
            days, seconds, microseconds = unpackb(data)
            return timedelta(days=int(days), seconds=int(seconds), microseconds=int(microseconds))
        if code == _BIGINT:
            return int(data.decode())
        if code == _FRACTION:
            numerator, denominator = unpackb(data)
            if not isinstance(numerator, int) or not isinstance(denominator, int):
                raise TypeError("a fraction of integers")
            return Fraction(numerator, denominator)
        if code == _SDK:
            name, values = unpackb(data)
            return _build(name, values)
        if code == _ARRAY:
            import numpy as np

            dtype, shape, raw = unpackb(data)
            if dtype not in ("<f8", "<i8", "|b1"):
                raise WireError(f"array dtype {dtype!r} refused")
            return np.frombuffer(raw, dtype=dtype).reshape(shape).copy()
    except WireError:
        raise
    except (ValueError, TypeError, InvalidOperation, UnicodeDecodeError, ZeroDivisionError) as exc:
        raise WireError(f"a value of extension type {code} does not decode: {exc}") from None
    raise WireError(f"unknown extension type {code}")


def packb(value: Any) -> bytes:
    return msgpack.packb(value, default=_default, use_bin_type=True, datetime=False)


def _frozen(key: Any) -> Any:
    return tuple(_frozen(k) for k in key) if isinstance(key, list) else key


def _map(pairs: list[tuple[Any, Any]]) -> dict[Any, Any]:
    # a tuple key (an order fingerprint) travels as an array: it comes back a tuple, not a list
    return {_frozen(k): v for k, v in pairs}


def unpackb(data: bytes) -> Any:
    return msgpack.unpackb(data, ext_hook=_ext, raw=False, strict_map_key=False,
                           use_list=True, object_pairs_hook=_map)


# SDK dataclasses: built field by field. Only what the wire itself changes is restored (enums
# arrive as their values, tuples and sets as lists); a float where the contract says Decimal
# stays a float, so the receiver's shape checks see the plugin's mistake.

_COERCERS: dict[type, list[Callable[[Any], Any]]] = {}


def _coercer(hint: Any) -> Callable[[Any], Any]:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        options = [a for a in typing.get_args(hint) if a is not type(None)]
        inner = [_coercer(a) for a in options]

        def union(v: Any) -> Any:
            if v is None:
                return None
            for coerce in inner:
                try:
                    return coerce(v)
                except (ValueError, TypeError):
                    continue
            return v
        return union
    if origin is frozenset:
        return lambda v: frozenset(v) if isinstance(v, list | tuple | set | frozenset) else v
    if origin is tuple:
        args = typing.get_args(hint)
        item = _coercer(args[0]) if args else (lambda v: v)
        return lambda v: tuple(item(x) for x in v) if isinstance(v, list | tuple) else v
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        return lambda v: hint(v) if v is not None else v
    return lambda v: v


def _coercers(cls: type) -> list[Callable[[Any], Any]]:
    coercers = _COERCERS.get(cls)
    if coercers is None:
        # get_type_hints compiles the annotations' strings: done once per type, on first use
        hints = typing.get_type_hints(cls, vars(sdk))
        coercers = [_coercer(hints[f.name]) for f in dataclasses.fields(cls) if f.init]
        _COERCERS[cls] = coercers
    return coercers


def warm() -> None:
    """Read every SDK type's field types now rather than at a first decode (for a process that
    decodes on many threads, and for tests that forbid compiling meanwhile)."""
    for cls in SDK_TYPES.values():
        _coercers(cls)


def _build(name: str, values: list[Any]) -> Any:
    cls = SDK_TYPES.get(name)
    if cls is None:
        raise WireError(f"{name!r} is not an SDK type")
    coercers = _coercers(cls)
    if not isinstance(values, list) or len(values) != len(coercers):
        raise WireError(f"{name} arrived with {len(values) if isinstance(values, list) else '?'} fields")
    return cls(*(coerce(v) for coerce, v in zip(coercers, values, strict=True)))


# Frames.

def frame(message: dict[str, Any]) -> bytes:
    body = packb(message)
    if len(body) > MAX_FRAME:
        raise WireError(f"a frame of {len(body)} bytes is over the {MAX_FRAME} limit")
    return _HEADER.pack(len(body)) + body


def _read_exactly(sock: socket.socket, n: int) -> bytes | None:
    chunks = bytearray()
    while len(chunks) < n:
        chunk = sock.recv(min(n - len(chunks), 1 << 20))
        if not chunk:
            return None
        chunks += chunk
    return bytes(chunks)


def read_frame(sock: socket.socket) -> dict[str, Any] | None:
    """The next message, or None at end of stream."""
    header = _read_exactly(sock, _HEADER.size)
    if header is None:
        return None
    (size,) = _HEADER.unpack(header)
    if size > MAX_FRAME:
        raise WireError(f"a frame of {size} bytes is over the {MAX_FRAME} limit")
    body = _read_exactly(sock, size)
    if body is None:
        return None
    message = unpackb(body)
    if not isinstance(message, dict):
        raise WireError("a frame is not a map")
    return message


def error_payload(exc: BaseException) -> dict[str, Any]:
    """How an exception crosses: its type name, its message, and whether it is an SDK error
    the other side may raise again (DefiQuoteRefused keeps its code)."""
    name = type(exc).__name__
    payload: dict[str, Any] = {"type": name, "message": str(exc)[:2000],
                               "sdk": name in SDK_ERRORS or isinstance(exc, sdk.DefiQuoteRefused)}
    if isinstance(exc, sdk.DefiQuoteRefused):
        payload["code"] = exc.code
    return payload
