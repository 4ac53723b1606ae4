"""Credentials and decisions cached safely (issue 14): a cached API key still has its secret
checked and its expiry read on every request; a revocation, a deactivation or a role change
applies on the very next request, in this process and on another replica through the bus; no
tenant ever gets another tenant's cached principal."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import event
from sqlmodel import select, update

from gateway.app import create_app
from gateway.auth import apikeys, tokens
from gateway.auth.authenticate import Authenticator
from gateway.auth.cache import CredentialCache, KeyEntry
from gateway.auth.models import CasbinRule
from gateway.auth.policy import AccessPolicy, role_subject, subject
from gateway.db import utcnow
from gateway.errors import Unauthenticated
from gateway.runtime import Runtime, build_runtime
from gateway.tenancy.models import ApiKey, User
from tests.support import GraphQLClient, LiveServer, error_codes, onboard, user_key, wait_for

VIEWER = "{ viewer { authenticatedBy } }"
REVOKE = "mutation($id: ID!) { revokeApiKey(id: $id) { revokedAt } }"


@contextmanager
def key_queries(runtime: Runtime) -> Iterator[list[str]]:
    """SQL statements touching `api_key` run by this thread (other threads poll the database)."""
    seen: list[str] = []
    me = threading.get_ident()

    def record(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any,
               executemany: bool) -> None:
        if threading.get_ident() == me and "api_key" in statement:
            seen.append(statement)

    event.listen(runtime.db.engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(runtime.db.engine, "before_cursor_execute", record)


def _refusal(authenticator: Authenticator, token: str, **kwargs: bool) -> str | None:
    """The refusal's code, or None when the token is accepted."""
    try:
        authenticator.authenticate(token, **kwargs)
    except Unauthenticated as refused:
        return refused.code
    return None


def _code(authenticator: Authenticator, token: str, **kwargs: bool) -> str:
    with pytest.raises(Unauthenticated) as refused:
        authenticator.authenticate(token, **kwargs)
    return refused.value.code


def _key_pk(runtime: Runtime, tenant_id: str, token: str) -> str:
    with runtime.db.tenant_session(tenant_id) as session:
        return session.exec(select(ApiKey.id).where(ApiKey.key_id == token.split("_")[1])).one()


def test_a_cached_key_answers_the_same_principal_without_reading_the_key(runtime):
    tenant = onboard(runtime)
    user_id, key = user_key(runtime, tenant, "trader")
    auth = runtime.authenticator
    first = auth.authenticate(key)  # reads the row, touches last_used_at
    with key_queries(runtime) as seen:
        again = auth.authenticate(key)
    assert again == first
    assert (again.tenant_id, again.user_id, again.via, again.roles) == \
        (tenant.id, user_id, "api_key", ("trader",))
    assert seen == []  # neither the join nor a last_used_at write
    # a fresh look-up (WebSocket re-checks) reads the row whatever is kept, and agrees
    with key_queries(runtime) as seen:
        assert auth.authenticate(key, fresh=True) == first
    assert len(seen) == 1


def test_last_used_at_is_written_once_a_minute_not_per_request(runtime):
    tenant = onboard(runtime)
    _, key = user_key(runtime, tenant, "viewer")
    pk = _key_pk(runtime, tenant.id, key)
    with key_queries(runtime) as seen:
        for _ in range(5):
            runtime.authenticator.authenticate(key)
    writes = [s for s in seen if s.lstrip().upper().startswith("UPDATE")]
    assert len(writes) == 1
    with runtime.db.tenant_session(tenant.id) as session:
        assert session.exec(select(ApiKey.last_used_at).where(ApiKey.id == pk)).one() is not None


def test_a_revoked_key_is_refused_on_the_very_next_request(runtime):
    tenant = onboard(runtime)
    _, key = user_key(runtime, tenant, "trader")
    runtime.authenticator.authenticate(key)
    runtime.tenancy.revoke_api_key(tenant.id, _key_pk(runtime, tenant.id, key), actor=tenant.admin_id)
    assert _code(runtime.authenticator, key) == "AUTH_KEY_REVOKED"
    assert key.split("_")[1] not in runtime.authenticator.keys._entries


def test_a_deactivated_user_is_refused_at_once_and_reactivation_applies_at_once(runtime):
    tenant = onboard(runtime)
    user_id, key = user_key(runtime, tenant, "viewer")
    jwt = tokens.issue(runtime.settings, user_id=user_id, tenant_id=tenant.id)
    auth = runtime.authenticator
    auth.authenticate(key), auth.authenticate(jwt)
    runtime.tenancy.set_user_active(tenant.id, user_id, False, actor=tenant.admin_id)
    assert _code(auth, key) == "AUTH_USER_DEACTIVATED"
    assert _code(auth, jwt) == "AUTH_USER_DEACTIVATED"
    # refusals are not kept: reactivating needs no wait
    runtime.tenancy.set_user_active(tenant.id, user_id, True, actor=tenant.admin_id)
    assert auth.authenticate(key).user_id == user_id
    assert auth.authenticate(jwt).user_id == user_id


def test_a_revoked_role_denies_the_next_decision_and_leaves_the_next_principal(runtime):
    tenant = onboard(runtime)
    user_id, key = user_key(runtime, tenant, "trader")
    policy = runtime.policy
    assert policy.allowed(user_id, tenant.id, "order", "write")
    assert policy.allowed(user_id, tenant.id, "order", "write")  # cached
    assert runtime.authenticator.authenticate(key).roles == ("trader",)
    runtime.tenancy.revoke_role(tenant.id, user_id, "trader", actor=tenant.admin_id)
    assert not policy.allowed(user_id, tenant.id, "order", "write")
    assert runtime.authenticator.authenticate(key).roles == ()
    runtime.tenancy.grant_role(tenant.id, user_id, "viewer", actor=tenant.admin_id)
    assert runtime.authenticator.authenticate(key).roles == ("viewer",)
    assert not policy.allowed(user_id, tenant.id, "order", "write")


def test_a_policy_changed_by_another_process_reaches_cached_decisions(runtime):
    """No bus: a row written behind the policy's back shows at its fingerprint check, and the
    cached decision made before it is not answered after."""
    tenant = onboard(runtime)
    user_id, _ = user_key(runtime, tenant)
    policy = AccessPolicy(runtime.db, refresh_seconds=0.2)
    assert not policy.allowed(user_id, tenant.id, "order", "write")
    assert not policy.allowed(user_id, tenant.id, "order", "write")
    with runtime.db.system_transaction() as session:
        session.add(CasbinRule(ptype="g", v0=subject(user_id), v1=role_subject("trader"), v2=tenant.id))
    wait_for(lambda: policy.allowed(user_id, tenant.id, "order", "write"), timeout=3)
    assert policy.roles(user_id, tenant.id) == ["trader"]


def test_a_tenants_mode_change_reaches_its_cached_principals_at_once(runtime):
    tenant, bystander = onboard(runtime), onboard(runtime)
    auth = runtime.authenticator
    assert not auth.authenticate(tenant.key).trusted_documents_only
    auth.authenticate(bystander.key)
    runtime.tenancy.documents.set_mode(tenant.id, True, actor=tenant.admin_id)
    assert auth.authenticate(tenant.key).trusted_documents_only
    assert bystander.key.split("_")[1] in auth.keys._entries  # another tenant's stays


def test_a_wrong_secret_for_a_cached_key_id_is_refused(runtime):
    tenant = onboard(runtime)
    _, key = user_key(runtime, tenant, "admin")
    runtime.authenticator.authenticate(key)
    key_id, secret = apikeys.parse(key) or ("", "")
    forged = f"{apikeys.PREFIX}{key_id}_{'x' * len(secret)}"
    assert _code(runtime.authenticator, forged) == "AUTH_KEY_INVALID"
    assert runtime.authenticator.authenticate(key).tenant_id == tenant.id  # still the real one


def test_a_cached_key_expires_on_time(runtime):
    tenant = onboard(runtime)
    user = runtime.tenancy.create_user(tenant.id, f"exp@{tenant.slug}.test", roles=["viewer"],
                                       by_platform=True)
    expires = utcnow() + timedelta(seconds=1.5)
    _, key = runtime.tenancy.create_api_key(tenant.id, user.id, "short", expires_at=expires,
                                            by_platform=True)
    assert runtime.authenticator.authenticate(key).expires_at == expires
    time.sleep(max(0.0, (expires - utcnow()).total_seconds()) + 0.05)
    with key_queries(runtime) as seen:
        assert _code(runtime.authenticator, key) == "AUTH_KEY_EXPIRED"
    assert seen == []  # refused from the kept expiry, no look-up needed


def test_no_tenant_gets_another_tenants_cached_principal(runtime):
    a, b = onboard(runtime), onboard(runtime)
    auth = runtime.authenticator
    pa, pb = auth.authenticate(a.key), auth.authenticate(b.key)
    assert (pa.tenant_id, pb.tenant_id) == (a.id, b.id)
    # key ids are global: A's id with B's secret (and the reverse) matches neither row
    a_id, a_secret = apikeys.parse(a.key) or ("", "")
    b_id, b_secret = apikeys.parse(b.key) or ("", "")
    assert _code(auth, f"{apikeys.PREFIX}{a_id}_{b_secret}") == "AUTH_KEY_INVALID"
    assert _code(auth, f"{apikeys.PREFIX}{b_id}_{a_secret}") == "AUTH_KEY_INVALID"
    assert auth.authenticate(a.key).tenant_id == a.id and auth.authenticate(b.key).tenant_id == b.id
    # a JWT naming A's (cached) user in tenant B finds no such user there
    auth.authenticate(tokens.issue(runtime.settings, user_id=a.admin_id, tenant_id=a.id))
    cross = tokens.issue(runtime.settings, user_id=a.admin_id, tenant_id=b.id)
    assert _code(auth, cross) == "AUTH_TOKEN_INVALID"
    # revoking B's key leaves A's entry alone
    runtime.tenancy.revoke_api_key(b.id, _key_pk(runtime, b.id, b.key), actor=b.admin_id)
    assert _code(auth, b.key) == "AUTH_KEY_REVOKED"
    assert a_id in auth.keys._entries and auth.authenticate(a.key).tenant_id == a.id


def test_a_change_behind_the_gateways_back_shows_within_the_ttl(runtime):
    tenant = onboard(runtime)
    user_id, key = user_key(runtime, tenant, "viewer")
    auth = Authenticator(runtime.db, runtime.policy, runtime.settings.with_(auth_cache_seconds=0.5))
    auth.authenticate(key)
    with runtime.db.tenant_transaction(tenant.id) as session:  # SQL: no bus event
        session.exec(update(User).where(User.id == user_id).values(active=False))
    assert auth.authenticate(key).user_id == user_id  # kept for at most the TTL
    assert _code(auth, key, fresh=True) == "AUTH_USER_DEACTIVATED"  # a re-check reads anew
    assert _code(auth, key) == "AUTH_USER_DEACTIVATED"  # and left nothing kept behind
    off = Authenticator(runtime.db, runtime.policy, runtime.settings.with_(auth_cache_seconds=0))
    assert _code(off, key) == "AUTH_USER_DEACTIVATED" and len(off.keys) == 0


def test_a_look_up_racing_an_invalidation_is_not_kept():
    cache: CredentialCache[KeyEntry] = CredentialCache(ttl=60, size=2)
    entry = KeyEntry("pk", "t", "slug", "u", "00", "h", None, False, None)
    epoch = cache.epoch()  # a look-up starts reading
    cache.forget("t", key_pk="pk")  # the revocation lands meanwhile
    cache.put("k1", entry, epoch)
    assert cache.get("k1") is None
    for n in range(3):  # bounded: the oldest goes
        cache.put(f"k{n}", entry, cache.epoch())
    assert len(cache) == 2 and cache.get("k0") is None and cache.get("k2") is entry


def test_two_apps_on_one_runtime_refuse_a_key_revoked_through_either(runtime):
    tenant = onboard(runtime)
    _, key = user_key(runtime, tenant, "viewer")
    app = Runtime(**{**runtime.__dict__, "settings": runtime.settings.with_(embedded_worker="off")})
    with LiveServer(create_app(runtime=app)) as one, LiveServer(create_app(runtime=app)) as two:
        first, second = GraphQLClient(one.url), GraphQLClient(two.url)
        assert second.data(VIEWER, key=key) and second.data(VIEWER, key=key)  # cached on two
        first.data(REVOKE, {"id": _key_pk(runtime, tenant.id, key)}, key=tenant.key)
        assert error_codes(second.post(VIEWER, key=key).json()) == ["AUTH_KEY_REVOKED"]
        assert error_codes(first.post(VIEWER, key=key).json()) == ["AUTH_KEY_REVOKED"]


@pytest.mark.redis
def test_another_replica_forgets_through_the_bus(runtime, settings):
    """Two runtimes share Redis; the other keeps look-ups for 5 minutes, so only the bus can
    make it refuse within seconds."""
    tenant = onboard(runtime)
    revoked_user, revoked_key = user_key(runtime, tenant, "trader")
    deactivated_user, deactivated_key = user_key(runtime, tenant, "trader")
    other = build_runtime(settings.with_(embedded_worker="off", auth_cache_seconds=300))
    try:
        with LiveServer(create_app(runtime=other)):  # its lifespan listens on the bus
            for key in (revoked_key, deactivated_key):
                other.authenticator.authenticate(key)
            assert other.policy.allowed(revoked_user, tenant.id, "order", "write")
            runtime.tenancy.revoke_api_key(tenant.id, _key_pk(runtime, tenant.id, revoked_key),
                                           actor=tenant.admin_id)
            runtime.tenancy.set_user_active(tenant.id, deactivated_user, False, actor=tenant.admin_id)
            runtime.tenancy.revoke_role(tenant.id, revoked_user, "trader", actor=tenant.admin_id)
            started = time.monotonic()
            wait_for(lambda: _refusal(other.authenticator, revoked_key) == "AUTH_KEY_REVOKED",
                     timeout=3)
            wait_for(lambda: _refusal(other.authenticator, deactivated_key) == "AUTH_USER_DEACTIVATED",
                     timeout=3)
            wait_for(lambda: not other.policy.allowed(revoked_user, tenant.id, "order", "write"),
                     timeout=3)
            print(f"the other replica refused {(time.monotonic() - started) * 1000:.0f} ms after")
    finally:
        other.close()
