"""Credentials are checked for the life of a WebSocket (issue 16): revoking its key, deactivating
its user or its JWT expiring closes it with 4403 and the reason's code within seconds, its
subscriptions stop, and a new subscription on a socket whose credentials went bad is refused."""

from __future__ import annotations

import asyncio
import json
import time
from datetime import timedelta

import pytest
import websockets
from sqlmodel import update

from gateway.app import create_app
from gateway.auth import tokens
from gateway.jobs.models import Job
from gateway.jobs.runner import job_topic, snapshot
from gateway.runtime import Runtime, build_runtime
from gateway.tenancy.models import ApiKey, User
from tests.support import GraphQLClient, LiveServer, TransportWS, error_codes, onboard, user_key, wait_for

JOB_UPDATED = "subscription($id: ID!) { jobUpdated(id: $id) { sequence job { id status } } }"
REVOKE = "mutation($id: ID!) { revokeApiKey(id: $id) { revokedAt } }"
DEACTIVATE = "mutation($u: ID!, $a: Boolean!) { setUserActive(userId: $u, active: $a) { active } }"


def _app(runtime: Runtime, **changes):
    settings = runtime.settings.with_(embedded_worker="off", **changes)
    return create_app(runtime=Runtime(**{**runtime.__dict__, "settings": settings}))


@pytest.fixture(scope="module")
def live(runtime):
    with LiveServer(_app(runtime)) as server:
        yield server


def _queued_job(runtime: Runtime, tenant_id: str, user_id: str) -> Job:
    """A job that stays QUEUED (no message sent): its topic carries the events we publish."""
    with runtime.db.tenant_transaction(tenant_id) as session:
        job = Job(kind="diagnostics", params={}, region="americas", created_by=user_id,
                  tenant_id=tenant_id)
        session.add(job)
        session.flush()
        session.refresh(job)
        session.expunge(job)
    return job


def _key_id(runtime: Runtime, tenant_id: str, key: str) -> str:
    from sqlmodel import select

    with runtime.db.tenant_session(tenant_id) as session:
        return session.exec(select(ApiKey.id).where(ApiKey.key_id == key.split("_")[1])).one()


async def _closed(ws: TransportWS, timeout: float) -> tuple[int | None, str, list[dict]]:
    """Read until the server closes: (close code, reason, messages seen meanwhile)."""
    seen = []
    try:
        while True:
            seen.append(json.loads(await asyncio.wait_for(ws.ws.recv(), timeout)))
    except websockets.ConnectionClosed as closed:
        return closed.rcvd.code if closed.rcvd else None, closed.rcvd.reason if closed.rcvd else "", seen


def _watch_then(runtime, live, tenant, key, act, *, timeout=5.0):
    """Subscribe with `key` to a job's updates, get one event, run `act`, and time the close."""
    user_id = tenant.admin_id
    job = _queued_job(runtime, tenant.id, user_id)

    async def scenario():
        async with TransportWS(live.ws_url, key) as ws:
            assert ws.ack["type"] == "connection_ack"
            await ws.subscribe("1", JOB_UPDATED, {"id": job.id})
            first = await ws.next(op_id="1")
            assert first["type"] == "next" and first["payload"]["data"]["jobUpdated"]["sequence"] is None
            runtime.bus.publish(job_topic(job.id), {**snapshot(job), "status": "RUNNING"})
            event = await ws.next(op_id="1")
            assert event["payload"]["data"]["jobUpdated"]["job"]["status"] == "RUNNING"
            started = time.monotonic()
            await asyncio.to_thread(act)
            code, reason, seen = await _closed(ws, timeout + 1)
            return code, reason, time.monotonic() - started, seen

    code, reason, elapsed, seen = asyncio.run(scenario())
    return job, code, reason, elapsed, seen


def test_a_revoked_keys_socket_closes_within_5_s_and_its_subscription_stops(runtime, live):
    tenant = onboard(runtime)
    gql = GraphQLClient(live.url)
    _, key = user_key(runtime, tenant, "trader")
    key_id = _key_id(runtime, tenant.id, key)
    job, code, reason, elapsed, _ = _watch_then(
        runtime, live, tenant, key, lambda: gql.data(REVOKE, {"id": key_id}, key=tenant.key))
    assert (code, reason) == (4403, "AUTH_KEY_REVOKED")
    assert elapsed < 5
    print(f"revoked key's socket closed {elapsed * 1000:.0f} ms after the revocation")
    # its subscription is gone from the bus: no further event is delivered to anyone for it
    wait_for(lambda: runtime.bus.subscribers(job_topic(job.id)) == 0, timeout=5)
    assert error_codes(gql.post("{ viewer { authenticatedBy } }", key=key).json()) == ["AUTH_KEY_REVOKED"]


def test_a_deactivated_users_socket_closes(runtime, live):
    tenant = onboard(runtime)
    gql = GraphQLClient(live.url)
    user_id, key = user_key(runtime, tenant, "viewer")
    _, code, reason, elapsed, _ = _watch_then(
        runtime, live, tenant, key,
        lambda: gql.data(DEACTIVATE, {"u": user_id, "a": False}, key=tenant.key))
    assert (code, reason) == (4403, "AUTH_USER_DEACTIVATED") and elapsed < 5
    refused = gql.post("{ viewer { authenticatedBy } }", key=key).json()
    assert error_codes(refused) == ["AUTH_USER_DEACTIVATED"]
    # reactivated, the same key works again; a user cannot deactivate itself
    gql.data(DEACTIVATE, {"u": user_id, "a": True}, key=tenant.key)
    assert gql.data("{ viewer { authenticatedBy } }", key=key)
    assert error_codes(gql(DEACTIVATE, {"u": tenant.admin_id, "a": False}, key=tenant.key)) == \
        ["USER_SELF_DEACTIVATION"]


def test_a_role_revoked_closes_the_sockets_it_authorised(runtime, live):
    """Subscriptions were authorised with the roles the socket opened with: losing one closes
    the socket (the client reconnects with what it holds now); gaining one changes nothing."""
    tenant = onboard(runtime)
    gql = GraphQLClient(live.url)
    user_id, key = user_key(runtime, tenant, "trader")
    grant = "mutation($u: ID!, $r: String!) { grantRole(userId: $u, role: $r) { roles } }"
    revoke = "mutation($u: ID!, $r: String!) { revokeRole(userId: $u, role: $r) { roles } }"

    def regrant_then_revoke() -> None:
        gql.data(grant, {"u": user_id, "r": "viewer"}, key=tenant.key)  # a gain: stays open
        time.sleep(0.3)
        gql.data(revoke, {"u": user_id, "r": "trader"}, key=tenant.key)

    _, code, reason, elapsed, _ = _watch_then(runtime, live, tenant, key, regrant_then_revoke)
    assert (code, reason) == (4403, "AUTH_ROLES_CHANGED") and elapsed < 5


def test_set_user_active_with_another_tenants_user_finds_nothing(runtime, live):
    a, b = onboard(runtime), onboard(runtime)
    gql = GraphQLClient(live.url)
    body = gql(DEACTIVATE, {"u": b.admin_id, "a": False}, key=a.key)
    assert error_codes(body) == ["USER_NOT_FOUND"]
    assert gql.data("{ viewer { authenticatedBy } }", key=b.key)  # B's admin is untouched
    _, viewer = user_key(runtime, a, "viewer")
    assert error_codes(gql(DEACTIVATE, {"u": a.admin_id, "a": False}, key=viewer)) == ["FORBIDDEN"]


def test_a_new_subscription_on_a_socket_whose_key_went_bad_is_refused(runtime, live):
    """Revoked behind the gateway's back (no bus event): the next subscribe re-authenticates."""
    tenant = onboard(runtime)
    _, key = user_key(runtime, tenant, "trader")
    key_id = _key_id(runtime, tenant.id, key)
    job = _queued_job(runtime, tenant.id, tenant.admin_id)

    async def scenario():
        async with TransportWS(live.ws_url, key) as ws:
            from gateway.db import utcnow

            with runtime.db.tenant_transaction(tenant.id) as session:
                session.exec(update(ApiKey).where(ApiKey.id == key_id).values(revoked_at=utcnow()))
            await ws.subscribe("1", JOB_UPDATED, {"id": job.id})
            return await _closed(ws, 5)

    code, reason, seen = asyncio.run(scenario())
    assert (code, reason) == (4403, "AUTH_KEY_REVOKED")
    assert seen == []  # nothing ran


def test_the_periodic_recheck_closes_a_socket_without_a_bus_event(runtime):
    tenant = onboard(runtime)
    user_id, key = user_key(runtime, tenant, "viewer")
    with LiveServer(_app(runtime, websocket_recheck_seconds=0.5)) as server:
        def deactivate_behind_the_back():
            with runtime.db.tenant_transaction(tenant.id) as session:
                session.exec(update(User).where(User.id == user_id).values(active=False))

        _, code, reason, elapsed, _ = _watch_then(runtime, server, tenant, key,
                                                  deactivate_behind_the_back)
    assert (code, reason) == (4403, "AUTH_USER_DEACTIVATED") and elapsed < 5


def test_an_expiring_jwt_closes_its_socket_at_expiry(runtime):
    from gateway.auth.authenticate import Authenticator

    tenant = onboard(runtime)
    strict = runtime.settings.with_(jwt_leeway_seconds=0, embedded_worker="off")
    app = create_app(runtime=Runtime(**{**runtime.__dict__, "settings": strict, "authenticator":
                                        Authenticator(runtime.db, runtime.policy, strict)}))
    with LiveServer(app) as server:
        token = tokens.issue(runtime.settings, user_id=tenant.admin_id, tenant_id=tenant.id,
                             ttl=timedelta(seconds=3))
        _, code, reason, elapsed, _ = _watch_then(runtime, server, tenant, token, lambda: None)
    assert (code, reason) == (4403, "AUTH_TOKEN_EXPIRED") and elapsed < 5


@pytest.mark.redis
def test_revocation_reaches_another_replica(runtime, settings):
    """Two gateways on their own runtimes share Redis: the key is revoked through one, the socket
    open on the other closes."""
    other = build_runtime(settings.with_(embedded_worker="off"))
    try:
        with LiveServer(create_app(runtime=other)) as replica_b, LiveServer(_app(runtime)) as replica_a:
            tenant = onboard(runtime)
            _, key = user_key(runtime, tenant, "trader")
            key_id = _key_id(runtime, tenant.id, key)
            gql_a = GraphQLClient(replica_a.url)
            _, code, reason, elapsed, _ = _watch_then(
                other, replica_b, tenant, key, lambda: gql_a.data(REVOKE, {"id": key_id}, key=tenant.key))
            assert (code, reason) == (4403, "AUTH_KEY_REVOKED") and elapsed < 5
            print(f"across replicas: closed {elapsed * 1000:.0f} ms after the revocation")
    finally:
        other.close()
