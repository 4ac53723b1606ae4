"""Queries and mutations over graphql-transport-ws run on the HTTP pipeline (issue 14, "One
GraphQL pipeline for HTTP and WebSocket"): `GraphQLEndpoint.execute_operation` prepares,
executes (the compiled plan) and formats for both, so a socket's `next` payload is the HTTP
body byte for byte, and a request error is an `error` message."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
import websockets

from gateway.http import graphql as endpoint_module
from tests.support import LiveServer, TransportWS, error_codes, user_key

VIEWER = "query Viewer { viewer { authenticatedBy } }"
JOB = "query Job($id: ID!) { job(id: $id) { id kind } }"
DIAGNOSTICS = "mutation Diagnostics { runDiagnostics { id kind } }"
JOBS = "query Jobs { jobs(first: 50) { edges { node { id } } } }"


async def _operation(client: TransportWS, op_id: str, query: str,
                     variables: dict[str, Any] | None = None, operation_name: str | None = None
                     ) -> list[str]:
    """The raw frames answering `op_id`, up to its `complete` or `error`."""
    payload: dict[str, Any] = {"query": query, "variables": variables or {}}
    if operation_name is not None:
        payload["operationName"] = operation_name
    await client.ws.send(json.dumps({"id": op_id, "type": "subscribe", "payload": payload}))
    frames: list[str] = []
    while True:
        raw = await asyncio.wait_for(client.ws.recv(), 15)
        message = json.loads(raw)
        if message["type"] == "ping":
            await client.ws.send(json.dumps({"type": "pong"}))
            continue
        if message.get("id") != op_id:
            continue
        frames.append(raw)
        if message["type"] in ("complete", "error"):
            return frames


def _over_socket(server: LiveServer, key: str, *operations: tuple[Any, ...]) -> list[list[str]]:
    """Each operation's frames, one after the other on one socket."""
    async def scenario() -> list[list[str]]:
        async with TransportWS(server.ws_url, key) as client:
            return [await _operation(client, f"op{i}", *op) for i, op in enumerate(operations)]
    return asyncio.run(scenario())


def _same_as_http(frames: list[str], http_text: str) -> dict[str, Any]:
    """A `next` whose payload is the HTTP body's exact bytes, then `complete`."""
    assert [json.loads(f)["type"] for f in frames] == ["next", "complete"], frames
    op_id = json.loads(frames[0])["id"]
    assert frames[0] == f'{{"id":"{op_id}","type":"next","payload":{http_text}}}'
    return json.loads(http_text)


def test_queries_answer_what_http_answers(server, gql, runtime, tenant):
    _, viewer = user_key(runtime, tenant, "viewer")
    cases = [
        (VIEWER, None),
        (JOB, {"id": "no-such-job"}),  # a field error: JOB_NOT_FOUND, data null
    ]
    answers = _over_socket(server, viewer, *cases)
    for (query, variables), frames in zip(cases, answers, strict=True):
        http = gql.post(query, variables, key=viewer)
        assert http.status_code == 200
        _same_as_http(frames, http.text)
    assert error_codes(json.loads(answers[1][0])["payload"]) == ["JOB_NOT_FOUND"]


def test_a_forbidden_mutation_and_one_that_commits(server, gql, runtime, tenant, other_tenant):
    _, viewer = user_key(runtime, tenant, "viewer")
    refused_http = gql.post(DIAGNOSTICS, key=viewer)
    [refused_ws] = _over_socket(server, viewer, (DIAGNOSTICS,))
    body = _same_as_http(refused_ws, refused_http.text)
    assert error_codes(body) == ["FORBIDDEN"]

    [done, listed] = _over_socket(server, tenant.key, (DIAGNOSTICS,), (JOBS,))
    assert [json.loads(f)["type"] for f in done] == ["next", "complete"]
    job = json.loads(done[0])["payload"]["data"]["runDiagnostics"]
    assert job["kind"] == "diagnostics"
    # committed: the tenant sees it, over either transport; another tenant never does
    over_http = gql.data(JOBS, key=tenant.key)["jobs"]["edges"]
    assert job["id"] in {e["node"]["id"] for e in over_http}
    assert job["id"] in {e["node"]["id"] for e in json.loads(listed[0])["payload"]["data"]["jobs"]["edges"]}
    [elsewhere] = _over_socket(server, other_tenant.key, (JOBS,))
    theirs = json.loads(elsewhere[0])["payload"]["data"]["jobs"]["edges"]
    assert job["id"] not in {e["node"]["id"] for e in theirs}
    assert gql.data(JOB, {"id": job["id"]}, key=tenant.key)["job"]["id"] == job["id"]


def test_request_errors_answer_an_error_message_and_the_socket_goes_on(server, gql, tenant):
    cases = [
        (JOB, {"id": {"not": "an id"}}),  # variables that do not coerce
        (VIEWER, None, "Nope"),  # an unknown operation name
        ("{ viewer { nope } }", None),  # invalid
        (VIEWER, None),  # the socket still answers
    ]
    answers = _over_socket(server, tenant.key, *cases)
    for case, frames in zip(cases[:3], answers, strict=False):
        query, variables, *name = case
        http = gql.post(query, variables, key=tenant.key, operation_name=name[0] if name else None,
                        headers={"accept": "application/graphql-response+json"})
        assert http.status_code == 400  # a request error over HTTP …
        [only] = frames  # … is one `error` message carrying the same errors, no `next`
        message = json.loads(only)
        assert message["type"] == "error"
        assert message["payload"] == http.json()["errors"]
    assert error_codes({"errors": json.loads(answers[0][0])["payload"]}) == ["BAD_USER_INPUT"]
    assert error_codes({"errors": json.loads(answers[1][0])["payload"]}) == ["OPERATION_NOT_FOUND"]
    assert json.loads(answers[3][0])["payload"]["data"]["viewer"]["authenticatedBy"]


def test_the_socket_runs_the_compiled_plan(server, gql, runtime, tenant, monkeypatch,
                                           single_execution):
    executed: list[str | None] = []
    compile_plan = endpoint_module.compile_plan

    class Counted:
        def __init__(self, plan: Any, name: str | None) -> None:
            self.plan, self.schema, self.name = plan, plan.schema, name

        def execute(self, *args: Any) -> Any:
            executed.append(self.name)
            return self.plan.execute(*args)

    def counting(gql_schema: Any, document: Any, operation: Any, executor_class: Any) -> Any:
        plan = compile_plan(gql_schema, document, operation, executor_class)
        name = operation.name.value if operation.name else None
        return Counted(plan, name) if plan is not None else None

    if runtime.settings.execution == "graphql-core":
        pytest.skip("ALPHINTRA_EXECUTION=graphql-core compiles no plan")
    monkeypatch.setattr(endpoint_module, "compile_plan", counting)
    # a document no earlier test prepared, so its plan is compiled (and counted) here
    query = "query PlannedOverSocket { viewer { authenticatedBy tenant { slug } } }"
    [frames] = _over_socket(server, tenant.key, (query,))
    assert executed == ["PlannedOverSocket"]
    _same_as_http(frames, gql.post(query, key=tenant.key).text)
    assert executed == ["PlannedOverSocket", "PlannedOverSocket"]  # HTTP ran the same plan


def test_a_duplicate_operation_id_still_closes_4409(server, tenant):
    subscription = "subscription { orderUpdates { sequence } }"

    async def scenario() -> int | None:
        async with TransportWS(server.ws_url, tenant.key) as client:
            await client.subscribe("same", subscription)
            await asyncio.sleep(0.2)
            await client.subscribe("same", VIEWER)
            try:
                while True:
                    await asyncio.wait_for(client.ws.recv(), 10)
            except websockets.ConnectionClosed as closed:
                return closed.rcvd.code if closed.rcvd else None
    assert asyncio.run(scenario()) == 4409


def test_complete_from_the_client_cancels_it_and_the_socket_goes_on(server, tenant):
    async def scenario() -> tuple[list[str], list[str]]:
        async with TransportWS(server.ws_url, tenant.key) as client:
            await client.subscribe("gone", VIEWER)
            await client.ws.send(json.dumps({"id": "gone", "type": "complete"}))
            await client.subscribe("after", VIEWER)
            gone, after = [], []
            while after[-1:] != ["complete"]:
                message = json.loads(await asyncio.wait_for(client.ws.recv(), 15))
                (gone if message.get("id") == "gone" else after).append(message["type"])
            return gone, after
    gone, after = asyncio.run(scenario())
    # answered before the `complete` arrived, or cut short by it: never an error, never more
    assert gone in ([], ["next"], ["next", "complete"])
    assert after == ["next", "complete"]


def test_operations_are_counted_for_the_socket(server, tenant):
    metrics = server.server.config.app.state.metrics

    def sample() -> float:
        return metrics.registry.get_sample_value(
            "alphintra_graphql_operation_seconds_count",
            {"operation": "CountedOverSocket", "type": "query", "transport": "ws"}) or 0.0

    before = sample()
    _over_socket(server, tenant.key, ("query CountedOverSocket { viewer { authenticatedBy } }",))
    assert sample() == before + 1  # once, by the socket: execute_operation does not count it again
