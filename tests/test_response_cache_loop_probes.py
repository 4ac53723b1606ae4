"""Review probes of response-cache hits answered on the event loop (GraphQLEndpoint.
_cached_on_loop): every credential change that refuses a request on the threaded path refuses
it on the loop too, whatever is cached; a loop-path failure answers as the threaded path does;
a Redis outage lets hits through without stopping the loop."""

from __future__ import annotations

import asyncio
import base64
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import jwt
import pytest
import websockets

from gateway.auth import tokens
from gateway.db import utcnow
from gateway.http.ratelimit import Bucket, MemoryBuckets, RedisBuckets
from gateway.runtime import Runtime
from tests.support import LiveServer, error_codes, onboard, user_key
from tests.test_response_cache_loop import CACHE, JOBS, Served, _on_loop, _serve, _with_job


@pytest.fixture(scope="module")
def served(runtime: Runtime, server: LiveServer) -> Iterator[Served]:
    yield from _serve(runtime)


@pytest.fixture(scope="module")
def redis_down(runtime: Runtime, server: LiveServer) -> Iterator[Served]:
    """Rate limits on, their buckets on a Redis nobody listens on (port 1 refuses at once)."""
    yield from _serve(runtime, RedisBuckets("redis://127.0.0.1:1/15", "probe"),
                      rate_limit_key_per_second=0.001, rate_limit_key_burst=2)


def _secret(runtime: Runtime) -> str:
    secret = runtime.settings.jwt_secret
    if not secret or runtime.settings.jwt_algorithm != "HS256":
        pytest.skip("needs HS256 JWTs")
    return secret


def test_a_key_expiring_is_refused_at_its_expiry_though_its_hit_is_on_the_loop(served, runtime):
    tenant = onboard(runtime)
    user, _ = user_key(runtime, tenant, "viewer")
    expires = utcnow() + timedelta(seconds=3)
    _, key = runtime.tenancy.create_api_key(tenant.id, user, "short", expires_at=expires,
                                            by_platform=True)
    served.client.post(JOBS, key=key)
    _on_loop(served, lambda: served.client.post(JOBS, key=key))
    time.sleep(max(0.0, (expires - utcnow()).total_seconds()) + 0.05)
    refused = served.client.post(JOBS, key=key)
    assert refused.status_code == 401 and error_codes(refused.json()) == ["AUTH_KEY_EXPIRED"]
    assert CACHE not in refused.headers


def test_a_deactivated_user_is_refused_though_its_hit_is_on_the_loop(served, runtime):
    tenant = onboard(runtime)
    user, key = user_key(runtime, tenant, "viewer")
    token = tokens.issue(runtime.settings, user_id=user, tenant_id=tenant.id) \
        if runtime.settings.jwt_secret else None
    for credential in filter(None, (key, token)):
        served.client.post(JOBS, key=credential)
        _on_loop(served, lambda c=credential: served.client.post(JOBS, key=c))
    runtime.tenancy.set_user_active(tenant.id, user, False, actor=tenant.admin_id)
    for credential in filter(None, (key, token)):
        refused = served.client.post(JOBS, key=credential)
        assert refused.status_code == 401, refused.text
        assert error_codes(refused.json()) == ["AUTH_USER_DEACTIVATED"]


def test_a_removed_role_stops_the_hits_of_that_role(served, runtime):
    """A viewer's cached answer is not served once the role is revoked: the user (key or JWT)
    has no role left that may read jobs, and is refused."""
    tenant = onboard(runtime)
    user, key = user_key(runtime, tenant, "viewer")
    token = tokens.issue(runtime.settings, user_id=user, tenant_id=tenant.id) \
        if runtime.settings.jwt_secret else None
    for credential in filter(None, (key, token)):
        served.client.post(JOBS, key=credential)
        _on_loop(served, lambda c=credential: served.client.post(JOBS, key=c))
    runtime.tenancy.revoke_role(tenant.id, user, "viewer", actor=tenant.admin_id)
    for credential in filter(None, (key, token)):
        refused = served.client.post(JOBS, key=credential)
        assert error_codes(refused.json()) == ["FORBIDDEN"], refused.text
        assert CACHE not in refused.headers


def test_expired_and_foreign_jwts_are_refused_though_the_answer_is_cached(served, runtime):
    secret = _secret(runtime)
    tenant = onboard(runtime)
    user, _ = user_key(runtime, tenant, "viewer")
    good = tokens.issue(runtime.settings, user_id=user, tenant_id=tenant.id)
    served.client.post(JOBS, key=good)
    _on_loop(served, lambda: served.client.post(JOBS, key=good))
    now = int(time.time())
    claims = {"sub": user, "tid": tenant.id, "iat": now}
    leeway = runtime.settings.jwt_leeway_seconds
    settings = runtime.settings
    extra = {**({"iss": settings.jwt_issuer} if settings.jwt_issuer else {}),
             **({"aud": settings.jwt_audience} if settings.jwt_audience else {})}
    expired = jwt.encode({**claims, **extra, "exp": now - leeway - 2}, secret, algorithm="HS256")
    answer = served.client.post(JOBS, key=expired)
    assert answer.status_code == 401 and error_codes(answer.json()) == ["AUTH_TOKEN_EXPIRED"]
    # a token signed with another (rotated away, or forged) secret
    foreign = jwt.encode({**claims, **extra, "exp": now + 600}, secret + "-rotated", algorithm="HS256")
    answer = served.client.post(JOBS, key=foreign)
    assert answer.status_code == 401 and error_codes(answer.json()) == ["AUTH_TOKEN_INVALID"]


def test_a_failure_on_the_loop_path_answers_as_the_threaded_path(served, runtime):
    """A validly signed JWT whose `exp` no datetime holds makes decoding raise something other
    than Unauthenticated. The threaded path masks it (500, INTERNAL_ERROR, the request id); the
    loop path must not let it escape `handle` as a bare 500."""
    secret = _secret(runtime)
    tenant = onboard(runtime)
    settings = runtime.settings
    claims = {"sub": tenant.admin_id, "tid": tenant.id, "exp": 10**20,
              **({"iss": settings.jwt_issuer} if settings.jwt_issuer else {}),
              **({"aud": settings.jwt_audience} if settings.jwt_audience else {})}
    odd = jwt.encode(claims, secret, algorithm="HS256")
    answers = []
    for on_loop in (False, True):
        served.endpoint.hits_on_loop = on_loop
        try:
            answers.append(served.client.post(JOBS, key=odd))
        finally:
            served.endpoint.hits_on_loop = True
    threaded, looped = answers
    assert looped.status_code == threaded.status_code
    assert looped.headers["content-type"] == threaded.headers["content-type"]
    assert error_codes(looped.json()) == error_codes(threaded.json())


def test_hits_pass_on_the_loop_while_redis_is_down(redis_down, runtime):
    """Rate limits on Redis, Redis unreachable: requests pass unlimited (as on the threaded
    path), the hits still on the loop, none refused, none failing."""
    tenant = onboard(runtime)
    _with_job(runtime, tenant)
    first = redis_down.client.post(JOBS, key=tenant.key)
    assert first.status_code == 200
    hit = _on_loop(redis_down, lambda: redis_down.client.post(JOBS, key=tenant.key))
    assert hit.content == first.content
    before = len(redis_down.threaded)
    started = time.monotonic()
    for _ in range(5):  # over the burst of 2: Redis down, nothing is limited
        answer = redis_down.client.post(JOBS, key=tenant.key)
        assert answer.status_code == 200 and answer.headers[CACHE] == "HIT"
    assert len(redis_down.threaded) - before <= 1  # the policy check may send one threaded
    assert time.monotonic() - started < 5  # a refused connection fails at once, no retry storm


def test_deeply_nested_json_is_refused_without_crashing_the_process():
    """py-evm and py_ecc raise the recursion limit to 100,000 at import; `json.loads` on a
    deeply nested body then overflows the C stack and the process dies (SIGSEGV). The body
    parser refuses it as not JSON instead (in a child process: a crash must not take the suite)."""
    probe = (
        "import gateway.http.graphql as g\n"
        "for n in (1_025, 100_000):\n"
        "    for body in (b'[' * n + b']' * n, '{\"v\":' * n + '1' + '}' * n):\n"
        "        try:\n"
        "            g._loads(body)\n"
        "        except ValueError:  # json.JSONDecodeError too\n"
        "            continue\n"
        "        raise SystemExit(f'accepted {n} levels')\n"
        "assert g._loads(b'{\"n\": NaN, \"big\": 123456789012345678901234567890}')['big'] > 2**64\n"
        "assert g._loads('[' * 1_000 + ']' * 1_000) is not None  # orjson's own limit holds\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120,
                          cwd=Path(__file__).resolve().parents[1])
    assert done.returncode == 0, (done.returncode, done.stderr[-2000:])


def test_a_deeply_nested_body_is_a_400_and_the_server_lives_on(served):
    n = 450_000  # under the body limit; enough to overflow a uvicorn thread's stack before
    for content in (b"[" * n + b"]" * n,):
        answer = served.client.http.post("/graphql", content=content,
                                         headers={"content-type": "application/json"})
        assert answer.status_code == 400 and error_codes(answer.json()) == ["BAD_REQUEST"]
    deep = "[" * 5_000 + "]" * 5_000
    answer = served.client.http.get("/graphql", params={"query": "{ __typename }", "variables": deep})
    assert answer.status_code == 400 and error_codes(answer.json()) == ["BAD_REQUEST"]
    assert served.client.http.post("/graphql", json={"query": "{ __typename }"}).status_code == 401


def test_a_deeply_nested_websocket_message_closes_that_socket_only(served):
    """strawberry reads each message with `json.loads`: a deeply nested one crashed the process.
    It is not JSON to the gateway: that socket closes with 4400, the server answers on."""
    async def scenario() -> int | None:
        url = str(served.client.http.base_url.join("/graphql")).replace("http", "ws", 1)
        async with websockets.connect(url, subprotocols=["graphql-transport-ws"]) as ws:
            n = 450_000
            await ws.send("[" * n + "]" * n)
            with pytest.raises(websockets.ConnectionClosed):
                await asyncio.wait_for(ws.recv(), 10)
            return ws.close_code

    assert asyncio.run(scenario()) == 4400
    assert served.client.http.post("/graphql", json={"query": "{ __typename }"}).status_code == 401


def test_a_jwt_with_a_deeply_nested_header_is_refused_and_the_server_lives_on(served):
    """PyJWT reads a token's header with `json.loads` before any signature check: a deeply
    nested one crashed the process (the loop path decodes it first). Over-long tokens are
    refused before."""
    n = 450_000
    header = base64.urlsafe_b64encode(b"[" * n + b"]" * n).rstrip(b"=").decode()
    answer = served.client.post(JOBS, key=f"{header}.e30.c2ln")
    assert answer.status_code == 401 and error_codes(answer.json()) == ["AUTH_TOKEN_INVALID"]
    assert served.client.http.post("/graphql", json={"query": "{ __typename }"}).status_code == 401


def test_trusted_documents_mode_switched_on_refuses_an_answer_cached_before(served, runtime):
    """The mode turned on after a viewer's answer was cached (and hit on the loop): the next
    request for that unregistered document is refused, never served from the cache."""
    tenant = onboard(runtime)
    _, viewer = user_key(runtime, tenant, "viewer")
    served.client.post(JOBS, key=viewer)
    _on_loop(served, lambda: served.client.post(JOBS, key=viewer))
    runtime.tenancy.documents.set_mode(tenant.id, True)
    refused = served.client.post(JOBS, key=viewer)
    assert error_codes(refused.json()) == ["DOCUMENT_NOT_TRUSTED"] and CACHE not in refused.headers


@pytest.mark.parametrize("condition", ["open", "compressed", "closing", "close_sent", "paused",
                                       "handshaking", "transport_closing", "buffered", "queued"])
def test_a_direct_write_happens_only_on_a_plain_open_connection(condition):
    """`Outlet.write` puts bytes on the transport only when uvicorn's own `send` would write
    the same frame now; in every other state it writes nothing and the frame takes `send`."""
    from websockets.protocol import State

    from gateway.http.fanout import Member, Outlet
    from tests.test_fanout import _Transport

    async def scenario() -> tuple[bool, list[bytes], list[str]]:
        transport, texts = _Transport(), []
        writable = asyncio.Event()
        writable.set()
        connection = type("Conn", (), {})()
        connection.conn = type("WS", (), {"extensions": [], "state": State.OPEN})()
        connection.close_sent, connection.handshake_complete = False, True
        connection.initial_response, connection.writable = None, writable
        if condition == "compressed":
            connection.conn.extensions = ["permessage-deflate"]
        elif condition == "closing":
            connection.conn.state = State.CLOSING
        elif condition == "close_sent":
            connection.close_sent = True
        elif condition == "paused":
            writable.clear()
        elif condition == "handshaking":
            connection.handshake_complete = False
        elif condition == "transport_closing":
            transport.is_closing = lambda: True  # type: ignore[method-assign]
        elif condition == "buffered":
            transport.get_write_buffer_size = lambda: 10  # type: ignore[method-assign]

        async def send_text(text: str) -> None:
            texts.append(text)

        outlet = Outlet(send_text, transport, 8, lambda: None, connection)
        member = Member("a", outlet, lambda _: None, lambda _: None)
        if condition == "queued":  # a frame waiting in the outlet: nothing may overtake it
            transport.get_write_buffer_size = lambda: 10  # type: ignore[method-assign]
            await outlet.send(member, "first")
            transport.get_write_buffer_size = lambda: 0  # type: ignore[method-assign]
        return outlet.write(member, b"frame"), transport.written, texts

    done, written, _ = asyncio.run(scenario())
    assert (done, written) == ((True, [b"frame"]) if condition == "open" else (False, []))


class _CountingBuckets(MemoryBuckets):
    """In-memory buckets that count the requests they were asked for."""

    def __init__(self) -> None:
        super().__init__()
        self.taken = 0

    def take(self, buckets: list[Bucket]) -> tuple[str, float] | None:
        self.taken += 1
        return super().take(buckets)


@pytest.fixture(scope="module")
def counted(runtime: Runtime, server: LiveServer) -> Iterator[tuple[Served, _CountingBuckets]]:
    buckets = _CountingBuckets()
    for served in _serve(runtime, buckets, rate_limit_key_per_second=1000.0,
                         rate_limit_key_burst=1000):
        yield served, buckets


def test_every_request_takes_exactly_one_token_hit_or_miss(counted, runtime):
    """A hit on the loop takes one token; a miss tried on the loop takes none there and one on
    the threaded path: never two for a request, never none."""
    served, buckets = counted
    tenant = onboard(runtime)
    before = buckets.taken
    served.client.post(JOBS, key=tenant.key)  # the miss: tried on the loop, run threaded
    assert buckets.taken == before + 1
    _on_loop(served, lambda: served.client.post(JOBS, key=tenant.key))
    before, threaded = buckets.taken, len(served.threaded)
    for _ in range(10):
        assert served.client.post(JOBS, key=tenant.key).headers[CACHE] == "HIT"
    assert buckets.taken == before + 10
    other = served.client.post("{ jobs(first: 3) { edges { node { id } } } }", key=tenant.key)
    assert other.headers[CACHE] == "MISS" and buckets.taken == before + 11
    assert len(served.threaded) - threaded <= 2  # the miss, and at most one freshness check
