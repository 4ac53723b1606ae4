"""OpenTelemetry tracing, off unless ALPHINTRA_OTEL_EXPORTER says console or otlp. The provider
belongs to the app, not to the process-global API.

One trace per request: the OpenTelemetry ASGI middleware (`tracing_middleware`) opens the HTTP
server span, as a child of the caller's W3C `traceparent` when it sends one, and makes it the
current span, so the GraphQL spans the endpoint opens (`graphql.prepare`, `graphql.execute`, in
the worker thread: the context travels with it) are its children. A WebSocket is one trace
too, under its handshake's `traceparent` (gateway/http/websocket.py): a `graphql.ws.connect`
server span for the authentication and a `graphql.subscribe` child per operation started,
rather than one span for the socket's whole life (hours, exported only at close).
"""

from __future__ import annotations

from typing import Any

from opentelemetry import trace
from opentelemetry.metrics import NoOpMeter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter
from opentelemetry.trace import NoOpTracer, Tracer
from starlette.middleware import Middleware
from starlette.types import ASGIApp, Receive, Scope, Send

from gateway.settings import Settings

# Probes and scrapes: a span each would bury the requests in noise (regexes on the URL).
UNTRACED_PATHS = "/healthz$,/readyz$,/metrics$"


def make_tracer(
    settings: Settings, exporter: SpanExporter | None = None
) -> tuple[Tracer, TracerProvider | None]:
    if exporter is None:
        if settings.otel_exporter == "none":
            return NoOpTracer(), None
        if settings.otel_exporter == "console":
            exporter = ConsoleSpanExporter()
        else:
            try:
                from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
            except ImportError as exc:  # optional: pip install opentelemetry-exporter-otlp
                raise RuntimeError("otlp export needs opentelemetry-exporter-otlp-proto-http") from exc
            exporter = OTLPSpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": settings.service_name}))
    provider.add_span_processor(BatchSpanProcessor(exporter))
    return provider.get_tracer("alphintra.gateway"), provider


class HTTPTracing:
    """The OpenTelemetry ASGI middleware on HTTP requests only, with the app's tracer (not the
    global provider) and without its per-message send/receive spans or its OTel metrics
    (Prometheus has them)."""

    def __init__(self, app: ASGIApp, *, tracer: Tracer) -> None:
        from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware

        self.app = app
        self.traced = OpenTelemetryMiddleware(
            app, tracer=tracer, meter=NoOpMeter("alphintra.gateway"),
            excluded_urls=UNTRACED_PATHS, exclude_spans=["receive", "send"])

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            await self.traced(scope, receive, send)
        else:
            await self.app(scope, receive, send)


def tracing_middleware(tracer: Any) -> list[Middleware]:
    """The server-span middleware for `tracer`; none when tracing is off (no cost per request)."""
    if tracer is None or isinstance(tracer, NoOpTracer):
        return []
    return [Middleware(HTTPTracing, tracer=tracer)]


def traceresponse() -> str | None:
    """The current span as a W3C `traceresponse` header value (the trace id a caller quotes to
    support), or None outside a recorded trace."""
    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        return None
    return f"00-{context.trace_id:032x}-{context.span_id:016x}-{int(context.trace_flags):02x}"
