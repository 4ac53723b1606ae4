"""GraphQL over HTTP: media types, status codes, bad input, limits, error masking."""

import json
import logging

import pytest
import strawberry

from gateway.app import create_app
from gateway.http.graphql import LRU
from schema.compose import DOMAINS, build_schema
from tests.support import GraphQLClient, LiveServer, error_codes

GR = "application/graphql-response+json"
VIEWER = "{ viewer { authenticatedBy } }"


def test_post_json_and_graphql_response_media_types(gql, tenant):
    legacy = gql.post(VIEWER, key=tenant.key)
    assert legacy.status_code == 200
    assert legacy.headers["content-type"].startswith("application/json")
    modern = gql.post(VIEWER, key=tenant.key, headers={"accept": GR})
    assert modern.status_code == 200
    assert modern.headers["content-type"].startswith(GR)
    assert modern.json() == {"data": {"viewer": {"authenticatedBy": "api_key"}}}


def test_get_runs_queries_but_not_mutations(gql, tenant):
    auth = {"authorization": f"Bearer {tenant.key}"}
    ok = gql.http.get("/graphql", params={"query": VIEWER}, headers=auth)
    assert ok.status_code == 200 and ok.json()["data"]["viewer"]["authenticatedBy"] == "api_key"
    mutation = gql.http.get("/graphql", params={"query": "mutation { runDiagnostics { id } }"},
                            headers=auth)
    assert mutation.status_code == 405
    assert error_codes(mutation.json()) == ["METHOD_NOT_ALLOWED"]


def test_graphiql_for_browsers(gql):
    page = gql.http.get("/graphql", headers={"accept": "text/html"})
    assert page.status_code == 200 and "graphiql" in page.text.lower()


def test_exact_route_without_redirect(gql, tenant):
    response = gql.http.post("/graphql", content=json.dumps({"query": VIEWER}),
                             headers={"content-type": "application/json",
                                      "authorization": f"Bearer {tenant.key}"},
                             follow_redirects=False)
    assert response.status_code == 200


@pytest.mark.parametrize("accept, parse_status", [(GR, 400), ("application/json", 200)])
def test_request_errors_status_by_media_type(gql, tenant, accept, parse_status):
    headers = {"accept": accept}
    parse = gql.post("{ viewer { ", key=tenant.key, headers=headers)
    assert parse.status_code == parse_status
    assert error_codes(parse.json()) == ["GRAPHQL_PARSE_FAILED"]
    assert "data" not in parse.json()
    invalid = gql.post("{ viewer { nope } }", key=tenant.key, headers=headers)
    assert invalid.status_code == parse_status
    assert error_codes(invalid.json()) == ["GRAPHQL_VALIDATION_FAILED"]
    unknown_op = gql.post("query A { viewer { authenticatedBy } }", key=tenant.key,
                          headers=headers, operation_name="B")
    assert unknown_op.status_code == parse_status
    assert error_codes(unknown_op.json()) == ["OPERATION_NOT_FOUND"]
    wrong_type = gql.post("query($id: ID!) { job(id: $id) { id } }", {"id": {"not": "an id"}},
                          key=tenant.key, headers=headers)
    assert wrong_type.status_code == parse_status
    assert error_codes(wrong_type.json()) == ["BAD_USER_INPUT"]
    missing = gql.post("query($id: ID!) { job(id: $id) { id } }", {}, key=tenant.key,
                       headers=headers)
    assert error_codes(missing.json()) == ["BAD_USER_INPUT"]


def test_malformed_http_requests(gql, tenant):
    auth = {"authorization": f"Bearer {tenant.key}", "content-type": "application/json"}
    not_json = gql.http.post("/graphql", content="{nope", headers=auth)
    assert not_json.status_code == 400 and error_codes(not_json.json()) == ["BAD_REQUEST"]
    no_query = gql.http.post("/graphql", content="{}", headers=auth)
    assert no_query.status_code == 400 and error_codes(no_query.json()) == ["BAD_REQUEST"]
    batch = gql.http.post("/graphql", content="[]", headers=auth)
    assert batch.status_code == 400
    variables = gql.http.post("/graphql", content=json.dumps({"query": VIEWER, "variables": [1]}),
                              headers=auth)
    assert variables.status_code == 400
    form = gql.http.post("/graphql", content="query=x", headers={
        **auth, "content-type": "application/x-www-form-urlencoded"})
    assert form.status_code == 415 and error_codes(form.json()) == ["UNSUPPORTED_MEDIA_TYPE"]
    xml = gql.post(VIEWER, key=tenant.key, headers={"accept": "application/xml"})
    assert xml.status_code == 406 and error_codes(xml.json()) == ["NOT_ACCEPTABLE"]
    persisted = gql.http.post("/graphql", content=json.dumps(
        {"extensions": {"persistedQuery": {"version": 1, "sha256Hash": "ab"}}}), headers=auth)
    # A malformed persisted-query hash (tests/test_persisted_queries.py has the protocol).
    assert persisted.status_code == 200 and error_codes(persisted.json()) == ["PERSISTED_QUERY_INVALID"]


def test_body_size_limit(gql, tenant, settings):
    big = "{ viewer { authenticatedBy } }" + " " * (settings.max_body_bytes + 10)
    response = gql.post(big, key=tenant.key)
    assert response.status_code == 413
    assert error_codes(response.json()) == ["REQUEST_TOO_LARGE"]


def test_request_id_is_echoed_or_made(gql, tenant):
    given = gql.post(VIEWER, key=tenant.key, headers={"x-request-id": "req-1234567890"})
    assert given.headers["x-request-id"] == "req-1234567890"
    made = gql.post(VIEWER, key=tenant.key, headers={"x-request-id": "bad id with spaces"})
    assert len(made.headers["x-request-id"]) == 32


def test_depth_alias_cost_and_token_limits(gql, tenant, settings):
    aliases = "{ " + " ".join(f"a{i}: viewer {{ authenticatedBy }}"
                              for i in range(settings.max_aliases + 1)) + " }"
    response = gql.post(aliases, key=tenant.key, headers={"accept": GR})
    assert response.status_code == 400
    error = response.json()["errors"][0]
    assert error["extensions"]["code"] == "QUERY_TOO_COMPLEX"
    assert error["extensions"]["limit"] == "aliases"

    costly = "{ " + " ".join(
        f"j{i}: jobs(first: 200) {{ edges {{ node {{ id kind status params result message "
        f"region progress attempts createdBy {{ email }} }} }} }}"
        for i in range(25)) + " }"
    response = gql.post(costly, key=tenant.key, headers={"accept": GR})
    assert response.status_code == 400
    assert {e["extensions"]["limit"] for e in response.json()["errors"]} >= {"cost"}

    tokens = "{ viewer { " + " ".join(["authenticatedBy"] * (settings.max_tokens + 1)) + " } }"
    response = gql.post(tokens, key=tenant.key, headers={"accept": GR})
    assert response.status_code == 400
    assert error_codes(response.json()) == ["QUERY_TOO_COMPLEX"]


def test_depth_limit_reports_depth(gql, tenant, settings):
    # Fragments cannot hide depth: each spread is measured where it is used.
    query = """
      fragment U on User { id }
      fragment K on ApiKey { user { ...U } }
      { apiKeys { edges { node { ...K } } } }
    """
    assert "errors" not in gql(query, key=tenant.key)
    from graphql import parse, specified_rules, validate

    from gateway.http.limits import limits_rule

    schema = build_schema(settings)
    rule = limits_rule(3, 100, 10_000, 200)
    errors = validate(schema._schema, parse(query), [*specified_rules, rule])
    assert errors and errors[0].extensions["limit"] == "depth"
    assert errors[0].extensions["value"] == 5


def test_variable_page_size_counts_at_maximum(settings):
    from graphql import parse, validate

    from gateway.http.limits import limits_rule

    schema = build_schema(settings)
    rule = limits_rule(20, 100, 500, 200)  # literal costs 7, the variable 601
    literal = parse("{ jobs(first: 2) { edges { node { id } } } }")
    variable = parse("query($n: Int!) { jobs(first: $n) { edges { node { id } } } }")
    assert validate(schema._schema, literal, [rule]) == []
    assert validate(schema._schema, variable, [rule])[0].extensions["limit"] == "cost"


def test_document_cache_is_bounded():
    cache = LRU(3)
    for i in range(10):
        cache.get_or_make(i, lambda i=i: i * 2)
    assert len(cache) == 3
    assert cache.get_or_make(9, lambda: "recomputed") == 18


@strawberry.type
class Exploding:
    @strawberry.field
    def explode(self) -> str:
        raise RuntimeError("password=hunter2 SELECT * FROM secrets")


def _schema_with_explosion(runtime):
    from strawberry.tools import merge_types

    query = merge_types("Query", (*[m.Query for m in DOMAINS], Exploding))
    return strawberry.federation.Schema(query=query, federation_version="2.7")


@pytest.fixture(scope="module")
def exploding(runtime):
    from gateway.runtime import Runtime

    quiet = runtime.settings.with_(embedded_worker="off")
    app = create_app(runtime=Runtime(**{**runtime.__dict__, "settings": quiet}),
                     schema_factory=_schema_with_explosion)
    with LiveServer(app) as live:
        yield GraphQLClient(live.url)


def test_internal_errors_are_masked_and_logged_with_request_id(exploding, tenant, caplog):
    caplog.set_level(logging.ERROR, logger="gateway.errors")
    response = exploding.post("{ explode }", key=tenant.key, headers={"x-request-id": "trace-abcdef12"})
    assert response.status_code == 200
    error = response.json()["errors"][0]
    assert error["message"] == "Internal server error"
    assert error["extensions"] == {"code": "INTERNAL_SERVER_ERROR", "requestId": "trace-abcdef12"}
    assert "hunter2" not in response.text and "SELECT" not in response.text
    assert "Traceback" not in response.text
    logged = [r for r in caplog.records if getattr(r, "request_id", None) == "trace-abcdef12"]
    assert logged and logged[0].exc_info is not None


def test_strict_settings_introspection_off_and_shallow_depth(runtime, tenant):
    from gateway.runtime import Runtime

    strict = runtime.settings.with_(introspection=False, max_depth=3, embedded_worker="off")
    app = create_app(runtime=Runtime(**{**runtime.__dict__, "settings": strict}))
    with LiveServer(app) as live:
        client = GraphQLClient(live.url)
        body = client("{ __schema { types { name } } }", key=tenant.key)
        assert set(error_codes(body)) == {"GRAPHQL_VALIDATION_FAILED"}
        assert "data" not in body
        assert "errors" not in client("{ viewer { authenticatedBy } }", key=tenant.key)
        deep = client.post("{ jobs { edges { node { createdBy { email } } } } }", key=tenant.key,
                           headers={"accept": GR})
        assert deep.status_code == 400
        error = deep.json()["errors"][0]
        assert error["extensions"] == {"code": "QUERY_TOO_COMPLEX", "limit": "depth", "value": 5,
                                       "maximum": 3}
