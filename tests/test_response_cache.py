"""The response cache (ALPHINTRA_RESPONSE_CACHE=on): hits answer the miss's bytes, job and
order events drop what they change at once, tenants and roles never share an entry, mutations
and fields off the allow-list are never kept, ETag/If-None-Match revalidate, a policy change
or a new bus epoch flushes, and an answer computed before an invalidation is not stored after."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from gateway.app import create_app
from gateway.events import InProcessBus, RedisBus, new_epoch
from gateway.http.response_cache import ResponseCache, cache_key
from gateway.jobs.runner import tenant_jobs_topic
from gateway.runtime import Runtime, build_runtime
from gateway.settings import Settings, SettingsError
from gateway.trading.common import orders_topic
from tests.support import GraphQLClient, LiveServer, TenantHandle, error_codes, onboard, user_key, wait_for

JOBS = "{ jobs(first: 50) { edges { node { id status cancelRequested createdBy { email } } } } }"
CACHE = "x-alphintra-cache"


@pytest.fixture(scope="module")
def cached(runtime: Runtime, server: LiveServer) -> Iterator[tuple[LiveServer, Runtime]]:
    """A second app on the suite's runtime with the cache on (the suite's server runs the jobs)."""
    rt = Runtime(**{**runtime.__dict__, "settings": runtime.settings.with_(
        response_cache="on", embedded_worker="off")})
    app = create_app(runtime=rt)
    with LiveServer(app) as live:
        live.cache = app.state.graphql.cache  # type: ignore[attr-defined]
        yield live, rt


@pytest.fixture
def client(cached: tuple[LiveServer, Runtime]) -> GraphQLClient:
    return GraphQLClient(cached[0].url)


@pytest.fixture
def cache(cached: tuple[LiveServer, Runtime]) -> ResponseCache:
    return cached[0].cache  # type: ignore[attr-defined,no-any-return]


def _job(client: GraphQLClient, key: str, steps: int = 2, seconds: float = 0.0) -> str:
    query = ("mutation($s: Int!, $t: Float!) { runDiagnostics(input: {steps: $s, stepSeconds: $t})"
             " { id } }")
    return str(client.data(query, {"s": steps, "t": seconds}, key=key)["runDiagnostics"]["id"])


def _ids(response: httpx.Response) -> list[str]:
    return [e["node"]["id"] for e in response.json()["data"]["jobs"]["edges"]]


def _quiet(runtime: Runtime, tenant: TenantHandle) -> None:
    """Wait until the tenant's jobs are finished: no event lands during a test's assertions."""
    wait_for(lambda: all(j.status in {"SUCCEEDED", "FAILED", "CANCELED"}
                         for j in runtime.jobs.list(tenant.id, first=200).items), timeout=30)


def _settled(client: GraphQLClient, key: str) -> None:
    """Onboarding and grants change the policy, which flushes the cache; across Redis that
    event lands a moment later. Wait until a cached answer stays cached."""
    def steady() -> bool:
        client.post("{ jobKinds }", key=key)
        return all(client.post("{ jobKinds }", key=key).headers[CACHE] == "HIT" and not time.sleep(0.03)
                   for _ in range(3))

    wait_for(steady, timeout=10)


def _eventually(fetch: Any, check: Any, redis: bool) -> httpx.Response:
    """In one process the bus delivers during the write; across Redis within milliseconds."""
    response = fetch()
    if redis and not check(response):
        def checked() -> httpx.Response | None:
            again = fetch()
            return again if check(again) else None

        response = wait_for(checked, timeout=3)
    assert check(response), response.text
    return response


def test_a_hit_answers_the_misses_bytes(client, runtime):
    tenant = onboard(runtime)
    _job(client, tenant.key)
    _quiet(runtime, tenant)
    _settled(client, tenant.key)
    first = client.post(JOBS, key=tenant.key)
    second = client.post(JOBS, key=tenant.key)
    assert (first.headers[CACHE], second.headers[CACHE]) == ("MISS", "HIT")
    assert second.content == first.content and len(_ids(second)) == 1
    assert second.headers["etag"] == first.headers["etag"]
    assert second.headers["cache-control"] == "private, no-cache"
    assert second.headers["content-type"].startswith("application/json")
    # the same over GET, keyed the same way (the document, its variables, the operation)
    got = client.http.get("/graphql", params={"query": JOBS},
                          headers={"authorization": f"Bearer {tenant.key}"})
    assert got.headers[CACHE] == "HIT" and got.content == first.content


def test_a_job_change_drops_the_jobs_page_at_once(client, runtime, settings):
    tenant = onboard(runtime)
    _settled(client, tenant.key)
    job = _job(client, tenant.key, steps=30, seconds=1.0)
    wait_for(lambda: runtime.jobs.get(tenant.id, job).status == "RUNNING", timeout=15)
    # cached between two of the job's progress events (each drops the page)
    wait_for(lambda: client.post(JOBS, key=tenant.key).headers[CACHE] == "HIT", timeout=5)
    client.data('mutation($id: ID!) { cancelJob(id: $id) { id } }', {"id": job}, key=tenant.key)
    after = _eventually(lambda: client.post(JOBS, key=tenant.key),
                        lambda r: r.json()["data"]["jobs"]["edges"][0]["node"]["cancelRequested"]
                        or r.json()["data"]["jobs"]["edges"][0]["node"]["status"] == "CANCELED",
                        bool(settings.redis_url))
    assert after.headers[CACHE] == "MISS"
    _quiet(runtime, tenant)
    # a new job is on the listing page at once
    client.post(JOBS, key=tenant.key)
    new = _job(client, tenant.key)
    _eventually(lambda: client.post(JOBS, key=tenant.key), lambda r: new in _ids(r),
                bool(settings.redis_url))


def test_tenants_and_roles_never_share_an_entry(client, runtime):
    a, b = onboard(runtime), onboard(runtime)
    _, viewer = user_key(runtime, a, "viewer")
    _, router = user_key(runtime, a, "router")  # a role that may not read jobs
    a_job, b_job = _job(client, a.key), _job(client, b.key)
    _quiet(runtime, a)
    _quiet(runtime, b)
    _settled(client, a.key)
    client.post(JOBS, key=a.key)
    assert client.post(JOBS, key=a.key).headers[CACHE] == "HIT"

    other = client.post(JOBS, key=b.key)
    assert other.headers[CACHE] == "MISS" and _ids(other) == [b_job]
    as_viewer = client.post(JOBS, key=viewer)
    assert as_viewer.headers[CACHE] == "MISS" and _ids(as_viewer) == [a_job]  # its own entry
    assert client.post(JOBS, key=viewer).headers[CACHE] == "HIT"
    refused = client.post(JOBS, key=router)
    assert error_codes(refused.json()) == ["FORBIDDEN"] and refused.json()["data"] is None
    assert refused.headers["cache-control"] == "no-store" and CACHE not in refused.headers
    assert error_codes(client.post(JOBS, key=router).json()) == ["FORBIDDEN"]  # never kept


@pytest.mark.parametrize("query", [
    "mutation { runDiagnostics(input: {steps: 1, stepSeconds: 0}) { id } }",
    "{ viewer { user { id } roles } }",  # answers per user: not on the allow-list
    "{ jobs(first: 5) { edges { node { id } } } viewer { roles } }",  # one field off the list
    "{ jobs(first: 5) { edges { node { id tenant { name } } } } }",  # a nested field off it
    "{ jobs(first: 5) { edges { node { createdBy { active } } } } }",  # no event on reactivation
    "{ jobs(first: 5) { edges { node { ...J } } } }"
    " fragment J on Job { createdBy { nationalIdentifier { scheme } } }",  # in a fragment
    "{ __schema { queryType { name } } }",  # introspection
    "{ activeMarkets { mic } }",  # reads the clock
    '{ job(id: "no-such-job") { id } }',  # an error is never kept
])
def test_what_is_never_cached(client, runtime, query):
    tenant = onboard(runtime)
    for _ in range(2):
        response = client.post(query, key=tenant.key)
        assert response.status_code == 200, response.text
        assert response.headers["cache-control"] == "no-store" and CACHE not in response.headers
        assert "etag" not in response.headers
    _quiet(runtime, tenant)


def test_if_none_match_answers_304_without_executing(client, runtime, settings):
    tenant = onboard(runtime)
    _job(client, tenant.key)
    _quiet(runtime, tenant)
    _settled(client, tenant.key)
    for _ in range(5):  # another test's policy change moves every key: ask again (a miss)
        etag = client.post(JOBS, key=tenant.key).headers["etag"]
        unchanged = client.post(JOBS, key=tenant.key, headers={"if-none-match": etag})
        if unchanged.headers[CACHE] == "HIT":
            break
    assert unchanged.status_code == 304 and unchanged.content == b""
    assert unchanged.headers["etag"] == etag and unchanged.headers[CACHE] == "HIT"
    assert client.post(JOBS, key=tenant.key, headers={"if-none-match": '"other"'}).status_code == 200
    _job(client, tenant.key)
    changed = _eventually(lambda: client.post(JOBS, key=tenant.key, headers={"if-none-match": etag}),
                          lambda r: r.status_code == 200, bool(settings.redis_url))
    assert changed.headers["etag"] != etag and len(_ids(changed)) == 2
    _quiet(runtime, tenant)


def test_a_store_after_an_invalidation_is_dropped(client, runtime, cache):
    """The race: an answer whose read started before a job change must not be kept after it."""
    tenant = onboard(runtime)
    principal = runtime.authenticator.authenticate(tenant.key)
    key = cache_key(principal, "core", runtime.policy.current_generation(), JOBS, {})
    assert cache.watching(tenant.id)
    probe = ("probe", tenant.id)
    assert cache.store(cache.ticket(probe, tenant.id, {"jobs"}), b"{}") is not None
    before = cache.ticket(key, tenant.id, {"jobs"})  # execution starts reading
    _job(client, tenant.key)  # a job is created meanwhile: its event lands
    wait_for(lambda: cache.lookup(probe) is None, timeout=3)  # (Redis: after the pub/sub hop)
    assert cache.store(before, b'{"data":{"jobs":"stale"}}') is None
    assert cache.lookup(key) is None
    assert cache.store(cache.ticket(key, tenant.id, {"jobs"}), b'{"data":{}}') is not None
    _quiet(runtime, tenant)


def test_an_orders_event_drops_order_pages_only(client, runtime, cache):
    tenant = onboard(runtime)
    _settled(client, tenant.key)
    orders = "{ orders(first: 5) { edges { node { id status } } totalCount } }"
    for query in (orders, JOBS):
        client.post(query, key=tenant.key)
        assert client.post(query, key=tenant.key).headers[CACHE] == "HIT"
    runtime.outbox.committed_bus().publish(orders_topic(tenant.id), {"tenant_id": tenant.id})
    wait_for(lambda: client.post(orders, key=tenant.key).headers[CACHE] == "MISS", timeout=3)
    assert client.post(JOBS, key=tenant.key).headers[CACHE] == "HIT"


def test_a_policy_change_flushes(client, runtime):
    tenant = onboard(runtime)
    user, _ = user_key(runtime, tenant, "viewer", "trader")
    _settled(client, tenant.key)
    client.post(JOBS, key=tenant.key)
    assert client.post(JOBS, key=tenant.key).headers[CACHE] == "HIT"
    client.data('mutation($u: ID!) { revokeRole(userId: $u, role: "trader") { id } }', {"u": user},
                key=tenant.key)
    wait_for(lambda: client.post(JOBS, key=tenant.key).headers[CACHE] == "MISS", timeout=3)


def test_a_new_bus_epoch_flushes_the_tenant(client, runtime, cache, settings):
    """The bus lost its numbering (Redis restarted empty; a new process): events may have been
    missed, so the tenant's entries go, whatever tag the first event of the new epoch names."""
    tenant = onboard(runtime)
    topic = orders_topic(tenant.id)
    bus = runtime.outbox.committed_bus()
    _settled(client, tenant.key)
    client.post(JOBS, key=tenant.key)  # cached: the cache follows the tenant's topics from here
    bus.publish(topic, {"tenant_id": tenant.id})  # the epoch the cache knows (jobs not dropped)
    wait_for(lambda: client.post(JOBS, key=tenant.key).headers[CACHE] == "HIT", timeout=3)
    if isinstance(runtime.bus, RedisBus):
        runtime.bus._sync.delete(f"{settings.redis_namespace}:seq2:{topic}")  # Redis forgot
    else:
        assert isinstance(runtime.bus, InProcessBus)
        runtime.bus.epoch = new_epoch()
    bus.publish(topic, {"tenant_id": tenant.id})
    wait_for(lambda: client.post(JOBS, key=tenant.key).headers[CACHE] == "MISS", timeout=3)


@pytest.mark.redis
def test_another_replica_invalidates_through_redis(client, runtime, settings):
    tenant = onboard(runtime)
    other = build_runtime(settings.with_(embedded_worker="off", response_cache="on"))
    try:
        with LiveServer(create_app(runtime=other)) as live:
            replica = GraphQLClient(live.url)
            _settled(client, tenant.key)
            _settled(replica, tenant.key)
            for side in (client, replica):
                side.post(JOBS, key=tenant.key)
                assert side.post(JOBS, key=tenant.key).headers[CACHE] == "HIT"
            new = _job(replica, tenant.key)  # written by the other runtime
            wait_for(lambda: new in _ids(client.post(JOBS, key=tenant.key)), timeout=3)
            wait_for(lambda: new in _ids(replica.post(JOBS, key=tenant.key)), timeout=3)
            _quiet(runtime, tenant)
    finally:
        other.close()


def test_entries_expire_and_stay_bounded():
    now = [0.0]
    cache = ResponseCache(ttl_s=30, max_entries=2, max_bytes=10, clock=lambda: now[0])
    for n in range(3):
        assert cache.store(cache.ticket(("k", n), "t", {"jobs"}), b"12345") is not None
        now[0] += 1
    assert len(cache) == 2 and cache.lookup(("k", 0)) is None  # the least recently used went
    assert cache.store(cache.ticket(("big",), "t", ()), b"x" * 11) is None  # over the byte cap
    assert cache.lookup(("k", 2)) is not None
    now[0] += 30
    assert cache.lookup(("k", 2)) is None  # a lost invalidation is bounded by the TTL
    ticket = cache.ticket(("k", 9), "t", {"jobs"})
    cache.clear()
    assert cache.store(ticket, b"1") is None


def test_settings_are_checked():
    assert Settings().response_cache == "off"
    for bad in ({"response_cache": "yes"}, {"response_cache_ttl_s": 0}, {"response_cache_entries": 0}):
        with pytest.raises(SettingsError):
            Settings(**bad).check()  # type: ignore[arg-type]
    assert tenant_jobs_topic("t1") == "jobs.t1"
