"""Automatic Persisted Queries (Apollo's protocol, GET and POST) and the per-tenant
trusted-documents mode (issue 16)."""

from __future__ import annotations

import asyncio
import hashlib
import json

from tests.support import GraphQLClient, TransportWS, error_codes, onboard, user_key

VIEWER = "query Who { viewer { authenticatedBy roles } }"
REGISTER = ("mutation($d: String!, $n: String!) { registerTrustedDocument(document: $d, name: $n) "
            "{ id sha256 name } }")
MODE = "mutation($on: Boolean!) { setTrustedDocumentsOnly(enabled: $on) { trustedDocumentsOnly } }"


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def apq(digest: str) -> dict:
    return {"persistedQuery": {"version": 1, "sha256Hash": digest}}


def post(gql: GraphQLClient, key: str, body: dict) -> dict:
    response = gql.http.post("/graphql", content=json.dumps(body), headers={
        "authorization": f"Bearer {key}", "content-type": "application/json"})
    assert response.status_code == 200, response.text
    return response.json()


def get(gql: GraphQLClient, key: str, params: dict) -> dict:
    response = gql.http.get("/graphql", params=params, headers={"authorization": f"Bearer {key}"})
    assert response.status_code == 200, response.text
    return response.json()


def test_apq_over_post_not_found_then_registered_then_by_hash(gql, tenant):
    text = VIEWER + " # post " + tenant.id
    digest = sha(text)
    assert error_codes(post(gql, tenant.key, {"extensions": apq(digest)})) == ["PERSISTED_QUERY_NOT_FOUND"]
    first = post(gql, tenant.key, {"query": text, "extensions": apq(digest)})
    assert first["data"]["viewer"]["authenticatedBy"] == "api_key"
    again = post(gql, tenant.key, {"extensions": apq(digest), "operationName": "Who"})
    assert again == first
    wrong = post(gql, tenant.key, {"query": VIEWER, "extensions": apq(digest)})
    assert error_codes(wrong) == ["PERSISTED_QUERY_HASH_MISMATCH"]
    bad = post(gql, tenant.key, {"extensions": {"persistedQuery": {"version": 2, "sha256Hash": digest}}})
    assert error_codes(bad) == ["PERSISTED_QUERY_INVALID"]


def test_apq_over_get_and_per_tenant(gql, runtime, tenant):
    text = VIEWER + " # get " + tenant.id
    digest = sha(text)
    params = {"extensions": json.dumps(apq(digest))}
    assert error_codes(get(gql, tenant.key, params)) == ["PERSISTED_QUERY_NOT_FOUND"]
    assert get(gql, tenant.key, {**params, "query": text})["data"]["viewer"]
    assert get(gql, tenant.key, params)["data"]["viewer"]["authenticatedBy"] == "api_key"
    other = onboard(runtime)
    assert error_codes(get(gql, other.key, params)) == ["PERSISTED_QUERY_NOT_FOUND"]


def test_trusted_documents_mode_runs_registered_documents_only(gql, runtime, tenant):
    _, trader = user_key(runtime, tenant, "trader")
    registered = gql.data(REGISTER, {"d": VIEWER, "n": "who am I"}, key=tenant.key)["registerTrustedDocument"]
    assert registered["sha256"] == sha(VIEWER)
    # registering the same text again answers the same row
    again = gql.data(REGISTER, {"d": VIEWER, "n": "again"}, key=tenant.key)["registerTrustedDocument"]
    assert again["id"] == registered["id"]
    assert gql.data(MODE, {"on": True}, key=tenant.key)["setTrustedDocumentsOnly"]["trustedDocumentsOnly"]

    assert gql.data(VIEWER, key=trader)["viewer"]["roles"] == ["trader"]
    by_hash = post(gql, trader, {"extensions": apq(sha(VIEWER))})
    assert by_hash["data"]["viewer"]["roles"] == ["trader"]
    refused = gql.post("{ viewer { roles } }", key=trader,
                       headers={"accept": "application/graphql-response+json"})
    assert refused.status_code == 400 and error_codes(refused.json()) == ["DOCUMENT_NOT_TRUSTED"]
    # APQ does not make a document trusted
    text = "{ tenant { slug } }"
    assert error_codes(post(gql, trader, {"query": text, "extensions": apq(sha(text))})) == \
        ["DOCUMENT_NOT_TRUSTED"]
    # over the WebSocket too
    async def over_ws():
        async with TransportWS(gql_ws(gql), trader) as ws:
            await ws.subscribe("1", "{ tenant { slug } }")
            return await ws.next(op_id="1")

    message = asyncio.run(over_ws())
    assert message["type"] == "error"
    assert [e["extensions"]["code"] for e in message["payload"]] == ["DOCUMENT_NOT_TRUSTED"]
    # tenant admins are exempt (they manage the mode); switching it off lets everything run
    assert gql.data("{ tenant { slug } }", key=tenant.key)["tenant"]["slug"] == tenant.slug
    gql.data(MODE, {"on": False}, key=tenant.key)
    assert gql.data("{ tenant { slug } }", key=trader)["tenant"]["slug"] == tenant.slug


def test_trusted_documents_are_an_admins_and_tenant_isolated(gql, runtime, tenant, other_tenant):
    _, trader = user_key(runtime, tenant, "trader")
    assert error_codes(gql(REGISTER, {"d": VIEWER, "n": ""}, key=trader)) == ["FORBIDDEN"]
    unparsable = gql(REGISTER, {"d": "{ nope", "n": ""}, key=tenant.key)
    assert error_codes(unparsable) == ["TRUSTED_DOCUMENT_INVALID"]
    doc = gql.data(REGISTER, {"d": VIEWER + " # a", "n": "a"}, key=tenant.key)["registerTrustedDocument"]
    listed = "{ trustedDocuments { edges { node { id sha256 } } } }"
    edges = gql.data(listed, key=tenant.key)["trustedDocuments"]["edges"]
    assert [e["node"]["id"] for e in edges] == [doc["id"]]
    assert gql.data(listed, key=other_tenant.key)["trustedDocuments"]["edges"] == []
    remove = "mutation($id: ID!) { removeTrustedDocument(id: $id) { id } }"
    assert error_codes(gql(remove, {"id": doc["id"]}, key=other_tenant.key)) == ["TRUSTED_DOCUMENT_NOT_FOUND"]
    # B's mode switch is B's alone
    gql.data(MODE, {"on": True}, key=other_tenant.key)
    mine = gql.data("{ tenant { trustedDocumentsOnly } }", key=tenant.key)["tenant"]
    assert mine["trustedDocumentsOnly"] is False
    gql.data(MODE, {"on": False}, key=other_tenant.key)
    assert gql.data(remove, {"id": doc["id"]}, key=tenant.key)["removeTrustedDocument"]["id"] == doc["id"]


def gql_ws(gql: GraphQLClient) -> str:
    return str(gql.http.base_url).replace("http://", "ws://").rstrip("/") + "/graphql"


def test_one_tenants_many_hashes_never_evict_anothers(runtime):
    """The remembered documents are kept per tenant: a tenant registering hash after hash fills
    only its own cache."""
    from gateway.auth.principal import Principal
    from gateway.http.persisted import DocumentResolver

    resolver = DocumentResolver(runtime.tenancy.documents, cache_size=3)

    def who(tenant_id: str) -> Principal:
        return Principal(tenant_id=tenant_id, tenant_slug=tenant_id, user_id="u", via="api_key")

    kept = "{ viewer { authenticatedBy } }"
    resolver.query({"query": kept, "extensions": apq(sha(kept))}, who("quiet"))
    for i in range(10):
        text = f"query Q{i} {{ __typename }}"
        resolver.query({"query": text, "extensions": apq(sha(text))}, who("noisy"))
    assert resolver.query({"extensions": apq(sha(kept))}, who("quiet")) == kept
    oldest = "query Q0 { __typename }"
    assert error_codes_of(lambda: resolver.query({"extensions": apq(sha(oldest))}, who("noisy"))) \
        == "PERSISTED_QUERY_NOT_FOUND"


def error_codes_of(call) -> str | None:
    from gateway.errors import DomainError

    try:
        call()
    except DomainError as exc:
        return exc.code
    return None
