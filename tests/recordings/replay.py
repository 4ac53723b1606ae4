"""Serve recorded Messages API responses through the SDK's own HTTP transport.

`Replay(["synth_good", ...])` answers each request with the next recording, in order, and
keeps every request (method, URL, headers, JSON body) for assertions. Its `client()` is an
`httpx2.Client` on `httpx2.MockTransport`: the anthropic SDK builds, sends, retries and parses
exactly as in production; only the socket is replaced. A recording may also be the string
"timeout", which makes the transport raise httpx2.ReadTimeout.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import httpx2

HERE = Path(__file__).resolve().parent


def load(name: str) -> dict[str, Any]:
    return json.loads((HERE / f"{name}.json").read_text())


class Replay:
    def __init__(self, names: list[str]) -> None:
        self.names = list(names)
        self.requests: list[dict[str, Any]] = []
        self._lock = threading.Lock()

    def handler(self, request: httpx2.Request) -> httpx2.Response:
        with self._lock:
            self.requests.append({"method": request.method, "url": str(request.url),
                                  "headers": dict(request.headers),
                                  "body": json.loads(request.content or b"{}")})
            if not self.names:
                raise AssertionError(f"unexpected request {len(self.requests)}: no recording left")
            name = self.names.pop(0)
        if name == "timeout":
            raise httpx2.ReadTimeout("recorded timeout", request=request)
        rec = load(name)
        return httpx2.Response(rec["status"], headers=rec["headers"], json=rec["body"])

    def client(self) -> httpx2.Client:
        return httpx2.Client(transport=httpx2.MockTransport(self.handler))

    @property
    def bodies(self) -> list[dict[str, Any]]:
        return [r["body"] for r in self.requests]
