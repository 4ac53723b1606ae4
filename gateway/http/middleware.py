"""One pure-ASGI middleware for every request: request id, body size limit, metrics, access log.
(Pure ASGI rather than BaseHTTPMiddleware: it sits on the hot path.)"""

from __future__ import annotations

import logging
import re
import time
from typing import Any

from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.errors import REQUEST_TOO_LARGE
from gateway.http.encoding import JSONResponse
from gateway.http.errors import error_body
from gateway.http.graphql import new_request_id
from gateway.observability.logs import log_context
from gateway.observability.metrics import Metrics
from gateway.observability.tracing import traceresponse
from gateway.settings import Settings

log = logging.getLogger("gateway.access")
REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{8,128}$")
KNOWN_ROUTES = {"/graphql", "/healthz", "/readyz", "/metrics", "/"}


class BodyTooLarge(Exception):
    pass


class RequestMiddleware:
    def __init__(self, app: ASGIApp, *, metrics: Metrics, max_body_bytes: int) -> None:
        self.app = app
        self.metrics = metrics
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        supplied = headers.get(b"x-request-id", b"").decode("latin-1")
        request_id = supplied if REQUEST_ID.match(supplied) else new_request_id()
        scope.setdefault("state", {})["request_id"] = request_id
        # The server span (gateway/observability/tracing.py), when tracing is on: its trace id
        # goes in the logs and, as `traceresponse`, to the caller.
        trace = traceresponse()
        ids = {"request_id": request_id, **({"trace_id": trace[3:35]} if trace else {})}
        if scope["type"] == "websocket":
            with log_context(**ids):
                await self.app(scope, receive, send)
            return

        route = scope["path"] if scope["path"] in KNOWN_ROUTES else "other"
        started = time.perf_counter()
        status = {"code": 500, "sent": False}

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"], status["sent"] = message["status"], True
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (b"x-request-id", request_id.encode())]
                if trace is not None:
                    message["headers"].append((b"traceresponse", trace.encode()))
            await send(message)

        length = headers.get(b"content-length")
        too_large = length is not None and length.isdigit() and int(length) > self.max_body_bytes
        received = 0

        async def receive_limited() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body_bytes:
                    raise BodyTooLarge
            return message

        with log_context(**ids):
            try:
                if too_large:
                    raise BodyTooLarge
                await self.app(scope, receive_limited, send_wrapper)
            except BodyTooLarge:
                if status["sent"]:
                    raise
                response = JSONResponse(
                    error_body(REQUEST_TOO_LARGE, f"request body over {self.max_body_bytes} bytes"),
                    status_code=413)
                await response(scope, receive, send_wrapper)
            finally:
                elapsed = time.perf_counter() - started
                method = scope["method"]
                self.metrics.requests.labels(route, method, str(status["code"])).inc()
                self.metrics.latency.labels(route).observe(elapsed)
                log.info("request", extra=_access(scope, status["code"], elapsed, request_id))


def _access(scope: Scope, status: int, elapsed: float, request_id: str) -> dict[str, Any]:
    return {"method": scope["method"], "path": scope["path"], "status": status,
            "duration_ms": round(elapsed * 1000, 2), "request_id": request_id}


def cors_middleware(settings: Settings) -> list[Middleware]:
    """Starlette's CORS middleware for the allowed origins (`cors_origins`), outermost so a
    preflight is answered before anything else; none configured: no cross-origin access."""
    origins = [o.rstrip("/") for o in settings.cors_origins]
    if not origins:
        return []
    if "*" in origins:
        level = logging.WARNING if settings.environment == "production" else logging.INFO
        log.log(level, "CORS allows every origin (ALPHINTRA_CORS_ORIGINS=*): any web page may call "
                "the API with credentials its user pastes or stores; list the origins instead")
    return [Middleware(CORSMiddleware, allow_origins=["*"] if "*" in origins else origins,
                       allow_methods=["GET", "POST"],
                       allow_headers=["authorization", "content-type", "accept", "x-request-id",
                                      "traceparent", "tracestate"],
                       expose_headers=["x-request-id", "retry-after", "traceresponse"], max_age=600)]
