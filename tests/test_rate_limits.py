"""Rate limits per key and per tenant (issue 16): token buckets answering HTTP 429 with
Retry-After and RATE_LIMITED, in memory and shared through Redis."""

from __future__ import annotations

import asyncio
import os
import uuid

import pytest

from gateway.app import create_app
from gateway.auth.principal import Principal
from gateway.http.ratelimit import Bucket, MemoryBuckets, RateLimited, RateLimiter, RedisBuckets
from gateway.runtime import Runtime
from tests.support import GraphQLClient, LiveServer, TransportWS, error_codes, onboard, user_key

VIEWER = "{ viewer { authenticatedBy } }"
REDIS_URL = os.environ.get("ALPHINTRA_REDIS_URL")


def _app(runtime: Runtime, **changes):
    settings = runtime.settings.with_(embedded_worker="off", **changes)
    return create_app(runtime=Runtime(**{**runtime.__dict__, "settings": settings}))


def test_a_keys_burst_then_429_with_retry_after(runtime):
    tenant = onboard(runtime)
    _, other_key = user_key(runtime, tenant, "viewer")
    with LiveServer(_app(runtime, rate_limit_key_per_second=0.5, rate_limit_key_burst=3)) as live:
        gql = GraphQLClient(live.url)
        answers = [gql.post(VIEWER, key=tenant.key) for _ in range(4)]
        assert [a.status_code for a in answers] == [200, 200, 200, 429]
        refused = answers[-1]
        assert error_codes(refused.json()) == ["RATE_LIMITED"]
        assert refused.json()["errors"][0]["extensions"]["scope"] == "key"
        assert 1 <= int(refused.headers["retry-after"]) <= 2  # one token at 0.5 a second
        # another key of the same tenant has its own bucket
        assert gql.post(VIEWER, key=other_key).status_code == 200

        async def subscribe():  # a WebSocket subscribe takes a token too
            async with TransportWS(live.ws_url, tenant.key) as ws:
                await ws.subscribe("1", VIEWER)
                return await ws.next(op_id="1")

        message = asyncio.run(subscribe())
        assert message["type"] == "error"
        assert [e["extensions"]["code"] for e in message["payload"]] == ["RATE_LIMITED"]


def test_a_tenants_bucket_spans_its_keys(runtime):
    tenant, other = onboard(runtime), onboard(runtime)
    _, second = user_key(runtime, tenant, "viewer")
    with LiveServer(_app(runtime, rate_limit_tenant_per_second=0.2, rate_limit_tenant_burst=2)) as live:
        gql = GraphQLClient(live.url)
        assert gql.post(VIEWER, key=tenant.key).status_code == 200
        assert gql.post(VIEWER, key=second).status_code == 200
        refused = gql.post(VIEWER, key=second)
        assert refused.status_code == 429
        assert refused.json()["errors"][0]["extensions"]["scope"] == "tenant"
        assert int(refused.headers["retry-after"]) >= 1
        assert gql.post(VIEWER, key=other.key).status_code == 200  # other tenants are untouched


def test_memory_buckets_refill_at_their_rate():
    now = [100.0]
    buckets = MemoryBuckets(clock=lambda: now[0])
    b = [Bucket("k", "key", rate=2.0, burst=2)]
    assert buckets.take(b) is None and buckets.take(b) is None
    scope, wait = buckets.take(b)
    assert scope == "key" and wait == pytest.approx(0.5)
    now[0] += 0.5
    assert buckets.take(b) is None
    # a refusal takes from no bucket: the tenant's keeps all 5 tokens while the key's is empty
    tenant = Bucket("t", "tenant", 0.001, 5)
    assert buckets.take([b[0], tenant]) == ("key", pytest.approx(0.5))
    assert [buckets.take([tenant]) for _ in range(6)] == [None] * 5 + [("tenant", pytest.approx(1000))]


@pytest.mark.redis
def test_redis_buckets_are_shared_between_limiters(settings):
    """Two limiters (two replicas) on one Redis share the buckets."""
    namespace = f"alphintra-rl-{uuid.uuid4().hex[:8]}"
    s = settings.with_(redis_namespace=namespace, rate_limit_key_per_second=0.5, rate_limit_key_burst=2)
    a = RateLimiter(s, RedisBuckets(REDIS_URL, namespace))
    b = RateLimiter(s, RedisBuckets(REDIS_URL, namespace))
    me = Principal(tenant_id=str(uuid.uuid4()), tenant_slug="t", user_id="u", via="api_key",
                   api_key_id="k1")
    a.check(me)
    b.check(me)
    with pytest.raises(RateLimited) as refused:
        a.check(me)
    assert refused.value.code == "RATE_LIMITED" and refused.value.retry_after in (1, 2)
    with pytest.raises(RateLimited):
        b.check(me)


@pytest.mark.redis
def test_redis_rate_limit_over_http(runtime):
    tenant = onboard(runtime)
    with LiveServer(_app(runtime, rate_limit_key_per_second=0.5, rate_limit_key_burst=2)) as live:
        gql = GraphQLClient(live.url)
        codes = [gql.post(VIEWER, key=tenant.key).status_code for _ in range(3)]
        assert codes == [200, 200, 429]
