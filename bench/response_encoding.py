"""Encoding an answer: the standard library as the gateway used it, against gateway/http/encoding.py
(orjson), on the same data in one run.

    .venv/bin/python bench/response_encoding.py [--repeat N]

The data: the throughput bench's answer shape (bench/_servers.py QUERY: 50 jobs with their
creator, ~10 KB), the same page with non-ASCII messages, and a WebSocket `next` frame of it.
Checks the bytes are identical (frames: the same value; they were ASCII-escaped before), then
prints microseconds per encoding (best of 5 runs of N) and the ratio.
"""

from __future__ import annotations

import argparse
import json
import timeit
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from gateway.http.encoding import dumps


def page(message: str) -> dict[str, Any]:
    start = datetime(2025, 3, 3, 14, 30, tzinfo=UTC)
    statuses = ("QUEUED", "RUNNING", "SUCCEEDED", "FAILED", "CANCELED")
    return {"data": {"jobs": {"edges": [{"node": {
        "id": str(uuid.UUID(int=i)), "kind": "diagnostics", "status": statuses[i % 5],
        "progress": (i % 11) / 10, "message": f"{message} {i % 5}",
        "createdAt": (start + timedelta(seconds=i)).isoformat().replace("+00:00", "Z"),
        "createdBy": {"email": "admin@bench.test"}}} for i in range(50)]}}}


def http_before(value: Any) -> bytes:  # Starlette's JSONResponse and the size cap, before
    return json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode()


def frame_before(value: Any) -> str:  # SubscriptionEndpoint.encode_json, before
    return json.dumps(value, separators=(",", ":"))


def frame_after(value: Any) -> str:
    return dumps(value).decode()


def best_us(fn: Any, value: Any, repeat: int) -> float:
    return min(timeit.repeat(lambda: fn(value), number=repeat, repeat=5)) / repeat * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=2000)
    args = parser.parse_args()
    cases = [
        ("http body, ASCII", page("step"), http_before, dumps),
        ("http body, non-ASCII", page("Schritt — 東京"), http_before, dumps),
        ("ws frame, non-ASCII", {"id": "1", "type": "next", "payload": page("Schritt — 東京")},
         frame_before, frame_after),
    ]
    print(f"{'case':<22} {'bytes':>6} {'before µs':>10} {'after µs':>9} {'ratio':>7}")
    for name, value, before, after in cases:
        old, new = before(value), after(value)
        if isinstance(old, bytes):
            assert old == new, f"{name}: bytes differ"
        else:
            assert json.loads(old) == json.loads(new), f"{name}: values differ"
        size = len(new if isinstance(new, bytes) else new.encode())
        b, a = best_us(before, value, args.repeat), best_us(after, value, args.repeat)
        print(f"{name:<22} {size:>6} {b:>10.1f} {a:>9.1f} {b / a:>6.1f}x")


if __name__ == "__main__":
    main()
