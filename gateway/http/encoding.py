"""The one JSON encoder for what the gateway writes: HTTP bodies and WebSocket frames.

orjson, writing the bytes of the standard library's
`json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode()`
(Starlette's JSONResponse) about ten times faster. Where orjson refuses a value the standard
library writes (integers beyond 64 bits, dict keys that are not strings, a float or tuple
subclass such as numpy.float64 or a namedtuple) the standard library writes it instead, so
those bytes are the same too. Where the two differ, the value read back is the same:

- floats with 1e-9 <= |x| < 1e-4: `0.00001` for `1e-05`, `1e-7` for `1e-07` (both the shortest
  digits that read back as the same double; every other float is spelled the same);
- NaN and ±Infinity: `null`, where the standard library raised (GraphQL's Float cannot carry
  them; only a JSON scalar's value could), so the answer is still valid JSON;
- UUIDs and enums (never in a body: graphql-core serialises scalars and enums to strings):
  their string or value, where the standard library raised.
datetimes and dataclasses still raise TypeError, as before: a body holds JSON values only.
"""

from __future__ import annotations

import json
from typing import Any

import orjson
from starlette import responses

# datetimes and dataclasses are refused (the fallback raises TypeError) rather than formatted
_OPTIONS = orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS


def dumps(value: Any) -> bytes:
    """`value` as compact UTF-8 JSON (see the module's docstring for the contract)."""
    try:
        return orjson.dumps(value, option=_OPTIONS)
    except orjson.JSONEncodeError:
        # big ints, non-str keys, float/tuple subclasses: written by the standard library, or
        # refused by it (TypeError, ValueError, UnicodeEncodeError for lone surrogates) as before
        return json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode()


class JSONResponse(responses.JSONResponse):
    """Starlette's JSONResponse, its body written by `dumps`."""

    def render(self, content: Any) -> bytes:
        return dumps(content)


_TOO_DEEP = "depth limit exceeded"  # orjson's message for nesting past its 1,024 levels


def loads(data: bytes | str) -> Any:
    """JSON read as `json.loads` reads it (request bodies, GET parameters, WebSocket messages):
    orjson first (6 µs less for a typical request), the standard library for what orjson
    refuses but it accepts (NaN, integers over 64 bits, lone surrogates, UTF-16); except
    nesting over orjson's 1,024 levels, refused (json.JSONDecodeError, a ValueError). py-evm and
    py_ecc raise the recursion limit to 100,000 at import, so `json.loads` on some 50,000 `[`
    (450,000 in a thread) overflows the C stack: the process dies (SIGSEGV) on one request."""
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        if str(exc).startswith(_TOO_DEEP):
            raise
        try:
            return json.loads(data)
        except RecursionError:  # deeper than the recursion limit allows: not JSON to us
            raise json.JSONDecodeError("JSON nested too deep", "", 0) from None
