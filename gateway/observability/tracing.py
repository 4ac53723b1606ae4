"""OpenTelemetry tracing, off unless ALPHINTRA_OTEL_EXPORTER says console or otlp. The provider
belongs to the app, not to the process-global API."""

from __future__ import annotations

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter
from opentelemetry.trace import NoOpTracer, Tracer

from gateway.settings import Settings


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
