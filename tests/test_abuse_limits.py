"""Abuse refused before execution (issue 16): introspection counts toward the limits, with one
allowance for the standard introspection query; a response-size cap; no field suggestions and no
`_service` for ordinary callers when introspection is off; the same rules over WebSocket, where a
refusal is an `error` message."""

from __future__ import annotations

import asyncio
import time

import pytest
from graphql import get_introspection_query, parse, specified_rules, validate

from gateway.app import create_app
from gateway.http.limits import limits_rule
from gateway.runtime import Runtime
from schema.compose import build_schema
from tests.support import GraphQLClient, LiveServer, TransportWS, error_codes, user_key

GR = "application/graphql-response+json"
# The drill's request: the full schema, 30 times under aliases (13.8 MB in 7.7 s before).
AMPLIFIED = "{ " + " ".join(
    f"s{i}: __schema {{ types {{ name fields {{ name type {{ name ofType {{ name }} }} }} }} }}"
    for i in range(30)) + " }"
STANDARD = get_introspection_query(descriptions=True, specified_by_url=True,
                                   directive_is_repeatable=True, schema_description=True,
                                   input_value_deprecation=True)


def _app(runtime: Runtime, **changes):
    settings = runtime.settings.with_(embedded_worker="off", **changes)
    return create_app(runtime=Runtime(**{**runtime.__dict__, "settings": settings}))


@pytest.fixture(scope="module")
def closed(runtime):
    """A gateway with introspection off (production's setting)."""
    with LiveServer(_app(runtime, introspection=False, graphiql=False)) as live:
        yield live


def _limits(errors):
    return {e["extensions"]["limit"] for e in errors if e["extensions"]["code"] == "QUERY_TOO_COMPLEX"}


def test_amplified_introspection_is_refused_before_execution(gql, runtime, tenant):
    _, viewer = user_key(runtime, tenant, "viewer")
    started = time.perf_counter()
    response = gql.post(AMPLIFIED, key=viewer, headers={"accept": GR})
    elapsed = time.perf_counter() - started
    assert response.status_code == 400  # a request error: nothing executed
    body = response.json()
    assert "data" not in body
    assert "introspection" in _limits(body["errors"])
    assert len(response.content) < 10_000
    print(f"amplified introspection refused in {elapsed * 1000:.1f} ms, {len(response.content)} bytes")


def test_aliases_and_nested_lists_inside_introspection_are_refused(gql, tenant):
    inner = gql.post("{ __schema { a: types { name } b: types { name } } }", key=tenant.key,
                     headers={"accept": GR})
    assert inner.status_code == 400 and "introspectionAliases" in _limits(inner.json()["errors"])
    deep = gql.post("{ __schema { types { fields { type { fields { type { fields { name } } } } } } } }",
                    key=tenant.key, headers={"accept": GR})
    assert deep.status_code == 400 and "introspectionLists" in _limits(deep.json()["errors"])
    two = gql.post('{ __schema { queryType { name } } __type(name: "Query") { name } }',
                   key=tenant.key, headers={"accept": GR})
    assert two.status_code == 400 and "introspection" in _limits(two.json()["errors"])
    # __typename is an ordinary field: aliases of it count like any other alias
    many = "{ " + " ".join(f"t{i}: __typename" for i in range(31)) + " }"
    counted = gql.post(many, key=tenant.key, headers={"accept": GR})
    assert counted.status_code == 400 and "aliases" in _limits(counted.json()["errors"])


def test_the_standard_introspection_query_runs(gql, tenant):
    body = gql(STANDARD, key=tenant.key)
    assert "errors" not in body, body.get("errors")
    names = {t["name"] for t in body["data"]["__schema"]["types"]}
    assert {"Query", "Mutation", "User", "__Type"} <= names
    # graphql-core's default variant too, and a single __type lookup
    assert "errors" not in gql(get_introspection_query(), key=tenant.key)
    assert gql.data('{ __type(name: "User") { fields { name type { name ofType { name } } } } }',
                    key=tenant.key)["__type"]["fields"]


def test_introspection_depth_counts_outside_its_allowance(settings):
    schema = build_schema(settings)._schema
    rule = limits_rule(3, 100, 10_000, 200)
    # the standard query (depth 15) is within the introspection allowance …
    assert validate(schema, parse(STANDARD), [*specified_rules, rule]) == []
    # … but a chain of ofType past it is not, and the cost of introspection fields counts
    chain = "{ __schema { queryType { " + "ofType { " * 20 + "name" + " }" * 20 + " } } }"
    errors = validate(schema, parse(chain), [*specified_rules, rule])
    assert {e.extensions["limit"] for e in errors} == {"introspectionDepth"}
    cheap = limits_rule(20, 100, 50, 200)
    errors = validate(schema, parse(STANDARD), [*specified_rules, cheap])
    assert {e.extensions["limit"] for e in errors} == {"cost"}


def test_response_size_cap(runtime, tenant):
    with LiveServer(_app(runtime, max_response_bytes=20_000)) as live:
        client = GraphQLClient(live.url)
        response = client.post("{ __schema { types { name description fields { name description } } } }",
                               key=tenant.key)
        assert response.status_code == 200
        body = response.json()
        assert body["data"] is None and error_codes(body) == ["RESPONSE_TOO_LARGE"]
        assert body["errors"][0]["extensions"]["maximum"] == 20_000
        assert body["errors"][0]["extensions"]["size"] > 20_000
        assert len(response.content) < 1_000
        # a small answer passes whole
        assert client.data("{ viewer { authenticatedBy } }", key=tenant.key)["viewer"]


def test_no_suggestions_when_introspection_is_off(closed, gql, tenant):
    typo = "{ viewr { authenticatedBy } }"
    on = gql(typo, key=tenant.key)
    assert "Did you mean" in on["errors"][0]["message"]  # the default (introspection on) suggests
    off = GraphQLClient(closed.url)(typo, key=tenant.key)
    assert error_codes(off) == ["GRAPHQL_VALIDATION_FAILED"]
    assert "Did you mean" not in off["errors"][0]["message"]
    assert "viewer" not in off["errors"][0]["message"]
    enum_typo = GraphQLClient(closed.url)(
        "{ jobs(status: QUEUD) { edges { node { id } } } }", key=tenant.key)
    assert enum_typo["errors"] and all("Did you mean" not in e["message"] for e in enum_typo["errors"])


def test_service_sdl_needs_the_router_role_when_introspection_is_off(closed, gql, runtime, tenant):
    client = GraphQLClient(closed.url)
    refused = client("{ _service { sdl } }", key=tenant.key)  # a tenant admin
    assert error_codes(refused) == ["FORBIDDEN"] and refused["data"] is None
    _, router = user_key(runtime, tenant, "router")
    assert "type Query" in client.data("{ _service { sdl } }", key=router)["_service"]["sdl"]
    # introspection on: `_service` is as open as introspection itself
    assert "type Query" in gql.data("{ _service { sdl } }", key=tenant.key)["_service"]["sdl"]


def test_the_same_rules_over_websocket(closed, server, tenant):
    async def scenario(url: str, query: str):
        async with TransportWS(url, tenant.key) as ws:
            await ws.subscribe("1", query)
            refused = await ws.next(op_id="1")
            # the socket stays usable: a valid operation on it still runs
            await ws.subscribe("2", "{ viewer { authenticatedBy } }")
            fine = await ws.next(op_id="2")
            return refused, fine

    refused, fine = asyncio.run(scenario(server.ws_url, AMPLIFIED))
    assert refused["type"] == "error"
    assert "introspection" in _limits(refused["payload"])
    assert fine["type"] == "next" and fine["payload"]["data"]["viewer"]["authenticatedBy"] == "api_key"

    refused, _ = asyncio.run(scenario(closed.ws_url, "{ viewr { authenticatedBy } }"))
    assert refused["type"] == "error"
    assert [e["extensions"]["code"] for e in refused["payload"]] == ["GRAPHQL_VALIDATION_FAILED"]
    assert "Did you mean" not in refused["payload"][0]["message"]

    refused, _ = asyncio.run(scenario(closed.ws_url, "{ _service { sdl } }"))
    errors = refused["payload"]["errors"] if refused["type"] == "next" else refused["payload"]
    assert [e["extensions"]["code"] for e in errors] == ["FORBIDDEN"]


def test_no_suggestions_over_websocket_when_introspection_is_off(closed, tenant):
    """strawberry executes subscriptions itself; its variable coercion suggests enum values."""
    query = "query($s: JobStatus) { jobs(status: $s) { edges { node { id } } } }"

    async def scenario() -> dict:
        async with TransportWS(closed.ws_url, tenant.key) as ws:
            await ws.subscribe("1", query, {"s": "QUEUD"})
            return await ws.next(op_id="1")

    answer = asyncio.run(scenario())
    errors = answer["payload"] if answer["type"] == "error" else answer["payload"]["errors"]
    assert errors and all("Did you mean" not in e["message"] for e in errors)
    assert all("QUEUED" not in e["message"] for e in errors)


def test_a_tenant_admin_cannot_make_itself_a_router(closed, tenant):
    """The router reads the whole federated SDL (every approved plugin's fields)."""
    client = GraphQLClient(closed.url)
    me = client.data("{ viewer { user { id } } }", key=tenant.key)["viewer"]["user"]["id"]
    grant = client("mutation($u: ID!) { grantRole(userId: $u, role: \"router\") { roles } }",
                   {"u": me}, key=tenant.key)
    assert error_codes(grant) == ["ROLE_NEEDS_PLATFORM"]
    assert error_codes(client("{ _service { sdl } }", key=tenant.key)) == ["FORBIDDEN"]
