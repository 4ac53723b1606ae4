"""gateway/http/encoding.py: orjson writes the bytes the standard library wrote, for the bodies
and frames the gateway sends, except where its docstring says (and then the value read back is
the same)."""

from __future__ import annotations

import json
import math
from decimal import Decimal
from typing import Any

import pytest

from gateway.app import create_app
from gateway.http.encoding import JSONResponse, dumps
from gateway.http.websocket import SubscriptionEndpoint
from gateway.jobs.models import Job, JobStatus
from tests.support import GraphQLClient, LiveServer, onboard


def stdlib(value: Any) -> bytes:
    """What every body was before: Starlette's JSONResponse and the size cap's encoding."""
    return json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode()


ANSWERS: list[Any] = [
    {"data": {"tenant": {"name": "Société Générale — 東京 ✓ 😀", "note": "tab\tquote\"\\ \u2028 \x00 \x7f"}}},
    # DeFi amounts are Decimal scalars: strings on the wire, however many digits
    {"data": {"defiQuote": {"amountIn": "1000000000000000000000000.5",
                            "quotedOut": str(Decimal("123456789012345678901234.000000000000000001")),
                            "route": ["WETH", "USDC"], "gasEstimate": 2_147_483_647, "block": 17}}},
    {"data": {"jobs": {"edges": [{"node": {"id": "a", "result": None, "createdBy": None}},
                                 {"node": {"id": "b", "result": {"x": [None, {"y": None}]}}}]}}},
    {"data": None, "errors": [{"message": "job not found", "locations": [{"line": 1, "column": 3}],
                               "path": ["job"], "extensions": {"code": "NOT_FOUND", "id": "j-1"}}]},
    {"errors": [{"message": "Internal server error",
                 "extensions": {"code": "INTERNAL_ERROR", "requestId": "0f" * 16}}]},
    {"data": {"progress": [0.0, -0.0, 0.1, 0.35, 1.0, 100.0, 1e16, 1e22, 5e-324, 0.0001,
                           1.7976931348623157e308, -(2 ** 63), 2 ** 64 - 1, True, False]}},
    # a JSON scalar's values: integers beyond 64 bits and non-string keys (orjson refuses both)
    {"data": {"job": {"result": {"wei": 2 ** 80, "negative": -(2 ** 70), "nested": [[2 ** 65]]}}}},
    {"data": {"job": {"params": {1: "one", 2.5: "two and a half", None: "none", False: "no"}}}},
    {"type": "next", "id": "1", "payload": {"data": {"orderUpdates": {"symbol": "7203.XTKS",
                                                                       "venue": "東証"}}}},
]


@pytest.mark.parametrize("answer", ANSWERS, ids=range(len(ANSWERS)))
def test_dumps_writes_the_standard_librarys_bytes(answer: Any) -> None:
    assert dumps(answer) == stdlib(answer)


def test_json_response_writes_the_same_body_and_headers_as_starlettes() -> None:
    from starlette.responses import JSONResponse as StarletteJSONResponse

    for answer in ANSWERS:
        ours, theirs = JSONResponse(answer, status_code=400), StarletteJSONResponse(answer, status_code=400)
        assert ours.body == theirs.body
        assert ours.headers.items() == theirs.headers.items()


def test_where_the_bytes_differ_the_value_read_back_is_the_same() -> None:
    # orjson spells 1e-9 <= |x| < 1e-4 differently (the module's docstring): same double
    for x in (1e-05, 3.2e-05, -7.5e-06, 1e-07, 9.99e-09):
        assert dumps(x) != stdlib(x)
        assert json.loads(dumps(x)) == x
    for x in (1e-10, 1e-4, 0.5, 2.5e-300):
        assert dumps(x) == stdlib(x)
    # NaN and infinities: null (the standard library refused the whole body)
    assert dumps({"a": [math.nan, math.inf, -math.inf]}) == b'{"a":[null,null,null]}'


def test_what_the_standard_library_refused_is_still_refused() -> None:
    from datetime import UTC, datetime

    with pytest.raises(TypeError):
        dumps({"at": datetime(2025, 1, 1, tzinfo=UTC)})
    with pytest.raises(TypeError):
        dumps({"amount": Decimal("1.5")})
    with pytest.raises(UnicodeEncodeError):
        dumps({"s": "\ud800"})  # a lone surrogate is not UTF-8


def test_http_bodies_are_the_standard_librarys_bytes(runtime: Any) -> None:
    """Real answers: a job whose message and params hold non-ASCII text, integers beyond 64 bits
    and nested nulls (JSON scalars), a field error with extensions, a validation error."""
    tenant = onboard(runtime)
    with runtime.db.tenant_transaction(tenant.id) as session:
        # finished, so no worker picks it up and rewrites it
        job = Job(tenant_id=tenant.id, kind="diagnostics", status=JobStatus.SUCCEEDED.value,
                  region="americas", progress=0.35, message="Überweisung — 東京 ✓ 😀",
                  created_by=tenant.admin_id, result=None,
                  params={"wei": 2 ** 80, "nested": {"a": None, "b": [None, {"c": None}]}, "név": "é"})
        session.add(job)
        session.flush()
        job_id = job.id
    queries = [
        ('query J($id: ID!) { job(id: $id) { id kind status progress message params result '
         'createdBy { email } } }', {"id": job_id}),
        ('{ job(id: "no-such-job") { id } }', None),
        ("{ jobs(first: 5) { edges { node { id noSuchField } } } }", None),
        ("{ jobs(first: 5) { edges { node { id message params result } } } }", None),
    ]
    with LiveServer(create_app(runtime=runtime)) as live:
        gql = GraphQLClient(live.url)
        bodies = [gql.post(query, variables, key=tenant.key) for query, variables in queries]
    assert bodies[0].json()["data"]["job"]["params"]["wei"] == 2 ** 80
    assert bodies[0].json()["data"]["job"]["result"] is None
    assert bodies[1].json()["errors"][0]["extensions"]["code"]
    assert bodies[2].json()["errors"][0]["extensions"]["code"] == "GRAPHQL_VALIDATION_FAILED"
    for response in bodies:
        assert response.headers["content-type"] == "application/json"
        assert response.content == stdlib(json.loads(response.content)), response.text
    assert "東京".encode() in bodies[0].content  # UTF-8, not \\u escapes


def test_websocket_frames_are_utf8_text_with_the_same_value(runtime: Any) -> None:
    """Frames were written with ensure_ascii (\\u escapes) and allow_nan; they are now the HTTP
    bodies' encoding: the same JSON value, UTF-8 in the text frame."""
    app = create_app(runtime=runtime)
    endpoint = SubscriptionEndpoint(app.state.schema, runtime)
    for message in [ANSWERS[-1], {"type": "error", "id": "2", "payload": ANSWERS[3]["errors"]},
                    {"type": "next", "id": "3", "payload": ANSWERS[0]}]:
        frame = endpoint.encode_json(message)
        assert isinstance(frame, str)  # a text frame, as graphql-transport-ws requires
        assert frame.encode() == stdlib(message)
        assert json.loads(frame) == json.loads(json.dumps(message, separators=(",", ":")))
