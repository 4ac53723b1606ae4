"""Response-cache hits answered on the event loop (GraphQLEndpoint._cached_on_loop): no hop to
a request thread, yet the credential's HMAC, revocation, tenant, roles and rate limit still
decide every hit exactly as on the threaded path."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from gateway.app import create_app
from gateway.auth import tokens
from gateway.db import utcnow
from gateway.http.graphql import GraphQLEndpoint
from gateway.http.ratelimit import Buckets, MemoryBuckets, RateLimiter, RedisBuckets
from gateway.jobs.models import Job
from gateway.runtime import Runtime
from gateway.tenancy.documents import document_hash
from tests.support import (
    GraphQLClient,
    LiveServer,
    TenantHandle,
    error_codes,
    onboard,
    user_key,
    wait_for,
)

JOBS = "{ jobs(first: 20) { edges { node { id status createdBy { email } } } } }"
CACHE = "x-alphintra-cache"
BURST = 8


@dataclass
class Served:
    client: GraphQLClient
    endpoint: GraphQLEndpoint
    threaded: list[Any]  # one item per request that went to the request executor


def _serve(runtime: Runtime, buckets: Buckets | None = None, **settings: Any) -> Iterator[Served]:
    rt = Runtime(**{**runtime.__dict__, "settings": runtime.settings.with_(
        response_cache="on", embedded_worker="off", **settings)})
    app = create_app(runtime=rt)
    endpoint: GraphQLEndpoint = app.state.graphql
    if buckets is not None:  # else the app's own: in memory, or on the suite's Redis
        endpoint.limiter = RateLimiter(rt.settings, buckets)
    threaded: list[Any] = []
    run = endpoint.executor.run

    async def counting(fn: Any, *args: Any) -> Any:
        threaded.append(args)
        return await run(fn, *args)

    endpoint.executor.run = counting  # type: ignore[method-assign]
    with LiveServer(app) as live:
        yield Served(GraphQLClient(live.url), endpoint, threaded)


@pytest.fixture(scope="module")
def served(runtime: Runtime, server: LiveServer) -> Iterator[Served]:
    yield from _serve(runtime)


@pytest.fixture(scope="module", params=["memory", pytest.param("redis", marks=pytest.mark.redis)])
def limited(request: pytest.FixtureRequest, runtime: Runtime, server: LiveServer) -> Iterator[Served]:
    """BURST requests per key, then one token every 1,000 s; buckets in memory, or on Redis
    (awaited on the loop through redis.asyncio)."""
    buckets = (RedisBuckets(runtime.settings.redis_url, f"{runtime.settings.redis_namespace}-loop")
               if request.param == "redis" else MemoryBuckets())
    yield from _serve(runtime, buckets, rate_limit_key_per_second=0.001, rate_limit_key_burst=BURST)


def _on_loop(served: Served, post: Any) -> Any:
    """A HIT answered without the executor. The threaded path runs the policy's freshness check
    (at most once a second) and notes the key's use (once a minute); until it has, a hit goes
    threaded, so ask a few times (each miss or threaded hit makes the next one loop-ready)."""
    def attempt() -> Any:
        before = len(served.threaded)
        response = post()
        return response if response.headers.get(CACHE) == "HIT" and len(served.threaded) == before \
            else None

    return wait_for(attempt, timeout=10, interval=0.01)


def _counted(endpoint: GraphQLEndpoint, status: str) -> float:
    return float(endpoint.metrics.requests.labels("/graphql", "POST", status)._value.get())


def _errors(endpoint: GraphQLEndpoint) -> float:
    return sum(s.value for m in endpoint.metrics.errors.collect() for s in m.samples
               if s.name.endswith("_total"))


def _with_job(runtime: Runtime, tenant: TenantHandle) -> str:
    """A finished job written directly: no queue, no later event to drop the entry."""
    at = utcnow()
    with runtime.db.tenant_transaction(tenant.id) as session:
        job = Job(tenant_id=tenant.id, kind="diagnostics", status="SUCCEEDED", region="americas",
                  progress=1.0, params={"steps": 1}, created_by=tenant.admin_id, attempts=1,
                  created_at=at, updated_at=at)
        session.add(job)
        session.flush()
        return str(job.id)


def _ids(response: Any) -> list[str]:
    return [e["node"]["id"] for e in response.json()["data"]["jobs"]["edges"]]


def test_a_hit_is_answered_without_the_executor(served, runtime):
    tenant = onboard(runtime)
    job = _with_job(runtime, tenant)
    first = served.client.post(JOBS, key=tenant.key)
    assert first.status_code == 200 and _ids(first) == [job]
    assert len(served.threaded) >= 1  # the miss executed on a request thread
    hit = _on_loop(served, lambda: served.client.post(JOBS, key=tenant.key))
    assert hit.status_code == 200 and hit.content == first.content
    assert hit.headers["etag"] == first.headers["etag"]
    assert hit.headers["cache-control"] == "private, no-cache"
    assert hit.headers["content-type"].startswith("application/json")
    assert hit.headers["x-request-id"]  # the middleware still wrapped it
    # counted by the middleware like any request, and no error counted
    requests, errors = _counted(served.endpoint, "200"), _errors(served.endpoint)
    again = _on_loop(served, lambda: served.client.post(JOBS, key=tenant.key))
    assert again.content == first.content
    assert _counted(served.endpoint, "200") > requests and _errors(served.endpoint) == errors
    # ETag revalidation on the loop: 304 with no body, as on the threaded path
    etag = hit.headers["etag"]
    unchanged = _on_loop(served, lambda: served.client.post(JOBS, key=tenant.key,
                                                            headers={"if-none-match": etag}))
    assert unchanged.status_code == 304 and unchanged.content == b""
    assert unchanged.headers["etag"] == etag
    # graphql-response+json: the same bytes under its media type
    typed = _on_loop(served, lambda: served.client.post(
        JOBS, key=tenant.key, headers={"accept": "application/graphql-response+json"}))
    assert typed.content == first.content
    assert typed.headers["content-type"].startswith("application/graphql-response+json")


def test_a_revoked_key_is_refused_though_its_answer_is_cached(served, runtime):
    tenant = onboard(runtime)
    user, _ = user_key(runtime, tenant, "viewer")
    row, key = runtime.tenancy.create_api_key(tenant.id, user, "doomed", by_platform=True)
    served.client.post(JOBS, key=key)
    _on_loop(served, lambda: served.client.post(JOBS, key=key))
    # the same key id with another secret: the HMAC is checked on the loop too, and it is refused
    key_id = key.split("_")[1]
    forged = served.client.post(JOBS, key=f"alp_{key_id}_{'x' * 43}")
    assert forged.status_code == 401 and error_codes(forged.json()) == ["AUTH_KEY_INVALID"]
    runtime.tenancy.revoke_api_key(tenant.id, row.id)
    refused = served.client.post(JOBS, key=key)
    assert refused.status_code == 401 and error_codes(refused.json()) == ["AUTH_KEY_REVOKED"]
    assert CACHE not in refused.headers
    # the tenant's admin key still hits: only the revoked key lost its answers
    served.client.post(JOBS, key=tenant.key)
    _on_loop(served, lambda: served.client.post(JOBS, key=tenant.key))


def test_tenants_and_roles_never_share_a_hit_on_the_loop(served, runtime):
    a, b = onboard(runtime), onboard(runtime)
    a_user, viewer = user_key(runtime, a, "viewer")
    _, router = user_key(runtime, a, "router")  # may not read jobs
    a_job, b_job = _with_job(runtime, a), _with_job(runtime, b)

    served.client.post(JOBS, key=a.key)
    assert _ids(_on_loop(served, lambda: served.client.post(JOBS, key=a.key))) == [a_job]
    b_first = served.client.post(JOBS, key=b.key)
    assert b_first.headers[CACHE] == "MISS" and _ids(b_first) == [b_job]
    assert _ids(_on_loop(served, lambda: served.client.post(JOBS, key=b.key))) == [b_job]
    as_viewer = served.client.post(JOBS, key=viewer)  # another role: its own entry
    assert as_viewer.headers[CACHE] == "MISS" and _ids(as_viewer) == [a_job]
    assert _on_loop(served, lambda: served.client.post(JOBS, key=viewer)).content == as_viewer.content
    for _ in range(2):  # a role that may not read jobs is refused every time, never served a hit
        refused = served.client.post(JOBS, key=router)
        assert error_codes(refused.json()) == ["FORBIDDEN"] and CACHE not in refused.headers
    # a JWT for the viewer answers on the loop from the viewer's entry (same tenant and roles)
    jwt = tokens.issue(runtime.settings, user_id=a_user, tenant_id=a.id)
    served.client.post(JOBS, key=jwt)
    assert _on_loop(served, lambda: served.client.post(JOBS, key=jwt)).content == as_viewer.content


def test_a_persisted_hash_hits_on_the_loop(served, runtime):
    tenant = onboard(runtime)
    extensions = {"persistedQuery": {"version": 1, "sha256Hash": document_hash(JOBS)}}
    headers = {"authorization": f"Bearer {tenant.key}"}
    full = served.client.http.post("/graphql", json={"query": JOBS, "extensions": extensions},
                                   headers=headers)
    assert full.status_code == 200
    by_hash = _on_loop(served, lambda: served.client.http.post(
        "/graphql", json={"extensions": extensions}, headers=headers))
    assert by_hash.content == full.content


def test_the_rate_limit_applies_to_hits(limited, runtime):
    tenant = onboard(runtime)
    assert limited.client.post(JOBS, key=tenant.key).status_code == 200  # the miss: one token
    _on_loop(limited, lambda: limited.client.post(JOBS, key=tenant.key))  # a loop hit: tokens too
    before = len(limited.threaded)
    for _ in range(BURST):
        answer = limited.client.post(JOBS, key=tenant.key)
        if answer.status_code != 200:
            break
        assert answer.headers[CACHE] == "HIT"
    assert answer.status_code == 429 and error_codes(answer.json()) == ["RATE_LIMITED"]
    assert int(answer.headers["retry-after"]) >= 1 and CACHE not in answer.headers
    assert len(limited.threaded) == before  # hits and the refusal, all on the loop
    # another tenant's key has buckets of its own
    assert limited.client.post(JOBS, key=onboard(runtime).key).status_code == 200


def test_trusted_documents_mode_holds_on_the_loop(served, runtime):
    """A tenant that runs registered documents only: a registered query hits on the loop; once
    it is removed, its cached answer is refused to a non-admin (the check runs on every hit)."""
    tenant = onboard(runtime)
    _, viewer = user_key(runtime, tenant, "viewer")
    documents = runtime.tenancy.documents
    row = documents.register(tenant.id, JOBS)
    documents.set_mode(tenant.id, True)
    first = served.client.post(JOBS, key=viewer)
    assert first.status_code == 200 and first.headers[CACHE] == "MISS"
    assert _on_loop(served, lambda: served.client.post(JOBS, key=viewer)).content == first.content
    documents.remove(tenant.id, row.id)
    refused = served.client.post(JOBS, key=viewer)
    assert error_codes(refused.json()) == ["DOCUMENT_NOT_TRUSTED"] and CACHE not in refused.headers
