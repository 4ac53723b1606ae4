"""Observability as operators expect (issue 16): per-operation latency, errors by code and
transport, WebSocket gauges and process metrics on /metrics; one trace per request, under the
caller's `traceparent`."""

from __future__ import annotations

import asyncio

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from prometheus_client.parser import text_string_to_metric_families

from gateway.app import create_app
from gateway.observability.metrics import ANONYMOUS, OPERATION_NAME_MAX, OPERATION_NAMES, OTHER, Metrics
from gateway.runtime import Runtime
from tests.support import GraphQLClient, LiveServer, TransportWS, error_codes, wait_for


def sample(gql: GraphQLClient, name: str, **labels: str) -> float:
    """The value of one sample on /metrics (0 when absent)."""
    text = gql.http.get("/metrics").text
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and s.labels == labels:
                return s.value
    return 0.0


def test_a_named_query_is_timed_under_its_name_and_type(gql, tenant):
    labels = {"operation": "WhoIsAsking", "type": "query", "transport": "http"}
    before = sample(gql, "alphintra_graphql_operation_seconds_count", **labels)
    gql.data("query WhoIsAsking { viewer { authenticatedBy } }", key=tenant.key)
    gql.data("query WhoIsAsking { viewer { authenticatedBy } }", key=tenant.key)
    assert sample(gql, "alphintra_graphql_operation_seconds_count", **labels) == before + 2
    assert sample(gql, "alphintra_graphql_operation_seconds_bucket", le="+Inf", **labels) == before + 2
    assert sample(gql, "alphintra_graphql_operation_seconds_sum", **labels) > 0
    anonymous = {"operation": ANONYMOUS, "type": "mutation", "transport": "http"}
    before = sample(gql, "alphintra_graphql_operation_seconds_count", **anonymous)
    gql.data("mutation { runDiagnostics(input: {steps: 2, stepSeconds: 0}) { id } }", key=tenant.key)
    assert sample(gql, "alphintra_graphql_operation_seconds_count", **anonymous) == before + 1


def test_operation_names_beyond_the_cap_count_as_other(runtime):
    metrics = Metrics(runtime.db)
    for i in range(OPERATION_NAMES):
        assert metrics.operation_label(f"Op{i}") == f"Op{i}"
    assert metrics.operation_label("OneTooMany") == OTHER
    assert metrics.operation_label("Op0") == "Op0"  # names already seen keep their label
    # A name is one token, so no document limit bounds its length: a long one is "other".
    assert Metrics(runtime.db).operation_label("Q" * (OPERATION_NAME_MAX + 1)) == OTHER
    assert Metrics(runtime.db).operation_label("Q" * OPERATION_NAME_MAX) == "Q" * OPERATION_NAME_MAX
    assert metrics.operation_label(None) == metrics.operation_label("") == ANONYMOUS


def test_errors_are_counted_by_code_and_transport(server, gql, tenant):
    http = {"code": "GRAPHQL_VALIDATION_FAILED", "transport": "http"}
    ws = {"code": "JOB_NOT_FOUND", "transport": "ws"}
    before_http = sample(gql, "alphintra_graphql_errors_total", **http)
    before_ws = sample(gql, "alphintra_graphql_errors_total", **ws)
    assert error_codes(gql("{ nope }", key=tenant.key)) == ["GRAPHQL_VALIDATION_FAILED"]

    async def scenario() -> dict:
        async with TransportWS(server.ws_url, tenant.key) as socket:
            await socket.subscribe("1", 'subscription { jobUpdated(id: "nope") { job { id } } }')
            return await socket.next(op_id="1")

    answer = asyncio.run(scenario())
    errors = answer["payload"]["errors"] if answer["type"] == "next" else answer["payload"]
    assert error_codes({"errors": errors}) == ["JOB_NOT_FOUND"]
    assert sample(gql, "alphintra_graphql_errors_total", **http) == before_http + 1
    assert sample(gql, "alphintra_graphql_errors_total", **ws) == before_ws + 1


def test_websocket_connections_and_subscriptions_are_gauged(server, gql, tenant):
    before = sample(gql, "alphintra_websocket_connections")
    active = sample(gql, "alphintra_graphql_subscriptions")
    timed = {"operation": "Who", "type": "query", "transport": "ws"}
    answered = sample(gql, "alphintra_graphql_operation_seconds_count", **timed)

    async def scenario() -> tuple[float, float]:
        async with TransportWS(server.ws_url, tenant.key) as socket:
            connected = sample(gql, "alphintra_websocket_connections")
            await socket.subscribe("q", "query Who { viewer { authenticatedBy } }")
            assert (await socket.next(op_id="q"))["type"] == "next"
            await socket.subscribe("s", "subscription Watch { pluginEvents { sequence } }")
            subscribed = wait_for(lambda: sample(gql, "alphintra_graphql_subscriptions") == active + 1)
            await socket.ws.send('{"id": "s", "type": "complete"}')  # the client ends it
            wait_for(lambda: sample(gql, "alphintra_graphql_subscriptions") == active)
            return connected, subscribed

    connected, subscribed = asyncio.run(scenario())
    assert connected == before + 1 and subscribed
    wait_for(lambda: sample(gql, "alphintra_websocket_connections") == before)  # closed: down again
    assert sample(gql, "alphintra_graphql_operation_seconds_count", **timed) == answered + 1


def test_process_metrics_on_the_scrape(gql):
    text = gql.http.get("/metrics").text
    families = {f.name for f in text_string_to_metric_families(text)}
    assert {"process_resident_memory_bytes", "process_cpu_seconds", "process_open_fds",
            "python_info", "python_gc_collections"} <= families


def finished(exporter: InMemorySpanExporter, trace_id: int | None = None) -> list:
    """The spans exported once the request's server span (the last to end) has ended."""
    spans = [s for s in exporter.get_finished_spans() if trace_id in (None, s.context.trace_id)]
    return spans if any(s.kind == SpanKind.SERVER for s in spans) else []


def test_one_trace_per_request_under_the_callers_traceparent(runtime, tenant):
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    quiet = Runtime(**{**runtime.__dict__, "settings": runtime.settings.with_(embedded_worker="off")})
    app = create_app(runtime=quiet, tracer=provider.get_tracer("test"))
    trace_id, parent_id = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    with LiveServer(app) as live:
        client = GraphQLClient(live.url)
        response = client.post("query Who { viewer { authenticatedBy } }", key=tenant.key,
                               headers={"traceparent": f"00-{trace_id}-{parent_id}-01"})
        followed = wait_for(lambda: finished(exporter, int(trace_id, 16)))
        exporter.clear()
        client.http.get("/healthz")  # probes are not traced
        unparented = client.post("query Who { viewer { authenticatedBy } }", key=tenant.key)
        alone = wait_for(lambda: finished(exporter))
    assert response.status_code == 200 and unparented.status_code == 200
    spans = {s.name: s for s in followed}
    server = next(s for s in followed if s.kind == SpanKind.SERVER)
    assert server.parent is not None and server.parent.span_id == int(parent_id, 16)
    assert server.parent.is_remote
    for name in ("graphql.prepare", "graphql.execute"):
        assert spans[name].parent is not None and spans[name].parent.span_id == server.context.span_id
    assert len(followed) == 3  # the server span and its two children: no send/receive spans
    assert response.headers["traceresponse"] == f"00-{trace_id}-{server.context.span_id:016x}-01"
    # Without a traceparent: a new trace, still one for the whole request.
    assert {s.context.trace_id for s in alone} == {int(unparented.headers["traceresponse"][3:35], 16)}
    roots = [s for s in alone if s.parent is None]
    assert len(alone) == 3 and len(roots) == 1 and roots[0].kind == SpanKind.SERVER


def test_a_websocket_is_one_trace_under_its_handshakes_traceparent(runtime, tenant):
    import json

    import websockets

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    quiet = Runtime(**{**runtime.__dict__, "settings": runtime.settings.with_(embedded_worker="off")})
    app = create_app(runtime=quiet, tracer=provider.get_tracer("test"))
    trace_id, parent_id = "5bf92f3577b34da6a3ce929d0e0e4736", "10f067aa0ba902b7"

    async def session(url: str) -> None:
        async with websockets.connect(url, subprotocols=["graphql-transport-ws"],
                                      additional_headers={"traceparent":
                                                          f"00-{trace_id}-{parent_id}-01"}) as ws:
            await ws.send(json.dumps({"type": "connection_init",
                                      "payload": {"Authorization": f"Bearer {tenant.key}"}}))
            assert json.loads(await ws.recv())["type"] == "connection_ack"
            for op in ("1", "2"):
                await ws.send(json.dumps({"id": op, "type": "subscribe", "payload": {
                    "query": "subscription { complianceAlerts { orderId } }"}}))
            await asyncio.sleep(0.3)

    with LiveServer(app) as live:
        asyncio.run(session(live.ws_url))
        spans = wait_for(lambda: (s := [x for x in exporter.get_finished_spans()
                                        if x.context.trace_id == int(trace_id, 16)])
                         and len(s) >= 3 and s)
    connect = next(s for s in spans if s.name == "graphql.ws.connect")
    assert connect.kind == SpanKind.SERVER and connect.parent.span_id == int(parent_id, 16)
    subscribes = [s for s in spans if s.name == "graphql.subscribe"]
    assert len(subscribes) == 2
    assert {s.parent.span_id for s in subscribes} == {connect.context.span_id}
