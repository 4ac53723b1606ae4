"""Health, readiness, metrics, logs and traces."""

import json
import logging

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from gateway.app import create_app
from gateway.db import Database
from gateway.observability.logs import ContextFilter, log_context
from gateway.runtime import Runtime
from tests.support import GraphQLClient, LiveServer


def test_health_and_readiness(gql):
    assert gql.http.get("/healthz").json() == {"status": "ok"}
    ready = gql.http.get("/readyz")
    assert ready.status_code == 200
    assert ready.json() == {"status": "ready",
                            "checks": {"database": "ok", "bus": "ok", "broker": "ok"}}


def test_readiness_fails_when_the_database_is_unreachable(runtime):
    down = Database("postgresql+psycopg://postgres@127.0.0.1:1/nowhere?connect_timeout=2")
    broken = Runtime(**{**runtime.__dict__, "db": down,
                        "settings": runtime.settings.with_(embedded_worker="off")})
    with LiveServer(create_app(runtime=broken)) as live:
        ready = GraphQLClient(live.url).http.get("/readyz")
        health = GraphQLClient(live.url).http.get("/healthz")
    assert ready.status_code == 503
    assert ready.json()["checks"]["database"].startswith("unavailable")
    assert health.status_code == 200  # the process is up; it is just not ready


def test_metrics_in_prometheus_format(gql, tenant):
    gql.post("{ viewer { authenticatedBy } }", key=tenant.key)
    gql.post("{ nope }", key=tenant.key)
    gql.data("mutation { runDiagnostics(input: {steps: 2, stepSeconds: 0}) { id } }", key=tenant.key)
    text = gql.http.get("/metrics").text
    assert 'alphintra_http_requests_total{method="POST",route="/graphql",status="200"}' in text
    assert 'alphintra_http_request_seconds_bucket{le="0.005",route="/graphql"}' in text
    assert 'alphintra_graphql_errors_total{code="GRAPHQL_VALIDATION_FAILED",transport="http"}' in text
    assert 'alphintra_graphql_operations_total{type="mutation"}' in text
    for status in ("QUEUED", "RUNNING", "SUCCEEDED", "FAILED", "CANCELED"):
        assert f'alphintra_jobs{{status="{status}"}}' in text


def test_json_logs_carry_request_id_and_tenant():
    from io import StringIO

    from pythonjsonlogger.json import JsonFormatter

    stream = StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(ContextFilter())
    handler.setFormatter(JsonFormatter("%(levelname)s %(name)s %(message)s"))
    logger = logging.getLogger("test.json")
    logger.addHandler(handler)
    try:
        with log_context(request_id="r-123", tenant_id="t-1"):
            logger.warning("hello")
    finally:
        logger.removeHandler(handler)
    line = json.loads(stream.getvalue())
    assert line == {"levelname": "WARNING", "name": "test.json", "message": "hello",
                    "request_id": "r-123", "tenant_id": "t-1"}


def test_access_log_has_the_request_id(gql, tenant, caplog):
    caplog.set_level(logging.INFO, logger="gateway.access")
    gql.post("{ viewer { authenticatedBy } }", key=tenant.key, headers={"x-request-id": "log-me-12345"})
    records = [r for r in caplog.records if r.name == "gateway.access"]
    assert any(r.request_id == "log-me-12345" and r.status == 200 for r in records)


def test_tracing_spans_when_switched_on(runtime, tenant):
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    quiet = Runtime(**{**runtime.__dict__, "settings": runtime.settings.with_(embedded_worker="off")})
    app = create_app(runtime=quiet, tracer=provider.get_tracer("test"))
    with LiveServer(app) as live:
        GraphQLClient(live.url).post("query Who { viewer { authenticatedBy } }", key=tenant.key)
    spans = {s.name: s for s in exporter.get_finished_spans()}
    assert {"graphql.prepare", "graphql.execute"} <= set(spans)
    assert spans["graphql.execute"].attributes["graphql.operation.name"] == "Who"
    assert spans["graphql.execute"].attributes["graphql.operation.type"] == "query"
