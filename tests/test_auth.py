"""Authentication (API keys, JWT) and authorisation (roles through casbin)."""

import time
from datetime import timedelta

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from sqlmodel import select

from gateway.auth import tokens
from gateway.auth.authenticate import Authenticator
from gateway.db import ALL_TENANTS, utcnow
from gateway.errors import Unauthenticated
from gateway.tenancy.models import ApiKey
from tests.support import JWT_SECRET, error_codes, unique, user_key

VIEWER = "{ viewer { user { id } tenant { slug } roles authenticatedBy } }"


def status_and_code(gql, key, query=VIEWER):
    response = gql.post(query, key=key)
    return response.status_code, (error_codes(response.json()) or [None])[0]


def test_api_key_is_stored_only_as_a_salted_hash(runtime, tenant):
    secret = tenant.key.split("_", 2)[2]
    with runtime.db.tenant_session(tenant.id) as session:
        rows = session.exec(select(ApiKey)).all()
    assert len(rows) == 1
    stored = rows[0].model_dump()
    assert all(secret not in str(value) for value in stored.values())
    assert len(rows[0].salt) == 32 and len(rows[0].secret_hash) == 64


def test_bad_keys_and_headers_are_refused_with_codes(gql, tenant):
    key_id, secret = tenant.key.split("_", 2)[1:]
    assert status_and_code(gql, f"alp_{key_id}_{secret[:-1]}x") == (401, "AUTH_KEY_INVALID")
    assert status_and_code(gql, "alp_0000000000000000_" + "x" * 40) == (401, "AUTH_KEY_INVALID")
    assert status_and_code(gql, "alp_short") == (401, "AUTH_KEY_INVALID")
    assert status_and_code(gql, None) == (401, "UNAUTHENTICATED")
    basic = gql.post(VIEWER, headers={"authorization": "Basic dXNlcjpwYXNz"})
    assert basic.status_code == 401 and error_codes(basic.json()) == ["AUTH_HEADER_INVALID"]
    assert basic.headers["www-authenticate"] == "Bearer"


def test_revoked_and_expired_keys(gql, runtime, tenant):
    row, key = runtime.tenancy.create_api_key(tenant.id, tenant.admin_id, "short-lived",
                                              expires_at=utcnow() + timedelta(seconds=1.5))
    assert status_and_code(gql, key) == (200, None)
    # the expiry is checked per request, also on a key whose look-up is cached
    time.sleep(max(0.0, (row.expires_at - utcnow()).total_seconds()) + 0.05)
    assert status_and_code(gql, key) == (401, "AUTH_KEY_EXPIRED")

    data = gql.data('mutation { createApiKey(input: {name: "ci"}) { key apiKey { id keyId } } }',
                    key=tenant.key)["createApiKey"]
    assert data["key"].startswith(f"alp_{data['apiKey']['keyId']}_")
    assert status_and_code(gql, data["key"]) == (200, None)
    revoked = gql.data("mutation($id: ID!) { revokeApiKey(id: $id) { revokedAt } }",
                       {"id": data["apiKey"]["id"]}, key=tenant.key)
    assert revoked["revokeApiKey"]["revokedAt"] is not None
    assert status_and_code(gql, data["key"]) == (401, "AUTH_KEY_REVOKED")


def test_last_use_of_a_key_is_recorded(gql, tenant):
    query = "{ apiKeys(first: 5) { edges { node { lastUsedAt } } } }"
    used = gql.data(query, key=tenant.key)["apiKeys"]["edges"][0]["node"]["lastUsedAt"]
    assert used is not None


def test_api_key_expiry_must_be_in_the_future(gql, tenant):
    body = gql('mutation { createApiKey(input: {name: "x", expiresAt: "2001-01-01T00:00:00+00:00"}) '
               "{ key } }", key=tenant.key)
    assert error_codes(body) == ["APIKEY_EXPIRY_INVALID"]


def test_jwt_hs256(gql, runtime, tenant):
    token = tokens.issue(runtime.settings, user_id=tenant.admin_id, tenant_id=tenant.id)
    data = gql.data(VIEWER, key=token)["viewer"]
    assert data["authenticatedBy"] == "jwt" and data["tenant"]["slug"] == tenant.slug

    expired = tokens.issue(runtime.settings, user_id=tenant.admin_id, tenant_id=tenant.id,
                           ttl=timedelta(minutes=-10))
    assert status_and_code(gql, expired) == (401, "AUTH_TOKEN_EXPIRED")
    forged = jwt.encode({"sub": tenant.admin_id, "tid": tenant.id,
                         "exp": utcnow() + timedelta(hours=1)}, "another-secret-of-32-bytes-long!!",
                        algorithm="HS256")
    assert status_and_code(gql, forged) == (401, "AUTH_TOKEN_INVALID")
    none_alg = jwt.encode({"sub": tenant.admin_id, "tid": tenant.id,
                           "exp": utcnow() + timedelta(hours=1)}, None, algorithm="none")
    assert status_and_code(gql, none_alg) == (401, "AUTH_TOKEN_INVALID")
    no_exp = jwt.encode({"sub": tenant.admin_id, "tid": tenant.id}, JWT_SECRET, algorithm="HS256")
    assert status_and_code(gql, no_exp) == (401, "AUTH_TOKEN_INVALID")


def test_jwt_naming_a_user_of_another_tenant_is_refused(gql, runtime, tenant, other_tenant):
    token = tokens.issue(runtime.settings, user_id=other_tenant.admin_id, tenant_id=tenant.id)
    assert status_and_code(gql, token) == (401, "AUTH_TOKEN_INVALID")


def test_jwt_rs256(runtime, tenant):
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private_pem = private.private_bytes(serialization.Encoding.PEM,
                                        serialization.PrivateFormat.PKCS8,
                                        serialization.NoEncryption()).decode()
    public_pem = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    settings = runtime.settings.with_(jwt_algorithm="RS256", jwt_public_key=public_pem,
                                      jwt_issuer="https://idp.example", jwt_audience="alphintra")
    authenticator = Authenticator(runtime.db, runtime.policy, settings)
    token = tokens.issue(settings, user_id=tenant.admin_id, tenant_id=tenant.id,
                         private_key=private_pem)
    principal = authenticator.authenticate(token)
    assert (principal.tenant_id, principal.user_id, principal.via) == (tenant.id, tenant.admin_id, "jwt")
    # An HS256 token signed with the public key text must not pass (algorithm confusion).
    confused = jwt.encode({"sub": tenant.admin_id, "tid": tenant.id, "iss": "https://idp.example",
                           "aud": "alphintra", "exp": utcnow() + timedelta(hours=1)},
                          JWT_SECRET, algorithm="HS256")
    with pytest.raises(Unauthenticated) as refused:
        authenticator.authenticate(confused)
    assert refused.value.code == "AUTH_TOKEN_INVALID"
    wrong_audience = tokens.issue(settings.with_(jwt_audience="someone-else"),
                                  user_id=tenant.admin_id, tenant_id=tenant.id,
                                  private_key=private_pem)
    with pytest.raises(Unauthenticated):
        authenticator.authenticate(wrong_audience)


def test_roles_decide_what_a_user_may_do(gql, runtime, tenant):
    _, viewer = user_key(runtime, tenant, "viewer")
    _, trader = user_key(runtime, tenant, "trader")
    _, officer = user_key(runtime, tenant, "compliance_officer")
    _, vendor = user_key(runtime, tenant, "vendor")
    _, nobody = user_key(runtime, tenant)
    start = "mutation { runDiagnostics(input: {steps: 2, stepSeconds: 0}) { id } }"
    read_jobs = "{ jobs(first: 1) { edges { node { id } } } }"
    users = "{ users(first: 5) { edges { node { email } } } }"
    create_user = 'mutation { createUser(input: {email: "%s@x.test"}) { id } }'

    def code(key, query):
        return (error_codes(gql(query, key=key)) or [None])[0]

    assert code(trader, start) is None
    assert code(officer, start) is None
    assert code(viewer, start) == "FORBIDDEN"
    assert code(vendor, start) == "FORBIDDEN"
    assert code(nobody, start) == "FORBIDDEN"
    assert code(viewer, read_jobs) is None
    assert code(nobody, read_jobs) == "FORBIDDEN"
    assert code(officer, users) is None
    assert code(trader, users) == "FORBIDDEN"
    assert code(trader, create_user % unique()) == "FORBIDDEN"
    assert code(tenant.key, create_user % unique()) is None


def test_role_changes_take_effect_without_restart(gql, runtime, tenant):
    user_id, key = user_key(runtime, tenant, "viewer")
    start = "mutation { runDiagnostics(input: {steps: 2, stepSeconds: 0}) { id } }"
    assert error_codes(gql(start, key=key)) == ["FORBIDDEN"]
    granted = gql.data('mutation($u: ID!) { grantRole(userId: $u, role: "trader") { roles } }',
                       {"u": user_id}, key=tenant.key)
    assert granted["grantRole"]["roles"] == ["trader", "viewer"]
    assert "errors" not in gql(start, key=key)
    gql.data('mutation($u: ID!) { revokeRole(userId: $u, role: "trader") { roles } }',
             {"u": user_id}, key=tenant.key)
    assert error_codes(gql(start, key=key)) == ["FORBIDDEN"]


def test_unknown_roles_are_refused_and_nothing_is_written(gql, runtime, tenant):
    email = f"{unique()}@x.test"
    body = gql('mutation($e: String!) { createUser(input: {email: $e, roles: ["admin", "wizard"]}) '
               "{ id } }", {"e": email}, key=tenant.key)
    assert error_codes(body) == ["ROLE_INVALID"]
    users = gql.data("{ users(first: 50) { edges { node { email } } } }", key=tenant.key)
    assert email not in [e["node"]["email"] for e in users["users"]["edges"]]
    body = gql('mutation($u: ID!) { grantRole(userId: $u, role: "platform_admin") { id } }',
               {"u": tenant.admin_id}, key=tenant.key)
    assert error_codes(body) == ["ROLE_INVALID"]


def test_only_platform_admins_create_tenants(gql, runtime, tenant):
    create = ('mutation($s: String!) { createTenant(input: {slug: $s, name: "New", '
              'adminEmail: "boss@new.test", homeRegion: "emea"}) '
              "{ tenant { slug homeRegion } admin { email roles } adminKey { key } } }")
    assert error_codes(gql(create, {"s": unique()}, key=tenant.key)) == ["FORBIDDEN"]
    operator, key = user_key(runtime, tenant)
    runtime.policy.grant(operator, "platform_admin", ALL_TENANTS)
    slug = unique()
    created = gql.data(create, {"s": slug}, key=key)["createTenant"]
    assert created["tenant"] == {"slug": slug, "homeRegion": "emea"}
    assert created["admin"]["roles"] == ["admin"]
    new_view = gql.data(VIEWER, key=created["adminKey"]["key"])["viewer"]
    assert new_view["tenant"]["slug"] == slug
    duplicate = gql(create, {"s": slug}, key=key)
    assert error_codes(duplicate) == ["TENANT_EXISTS"]
    bad = gql(create, {"s": "Not A Slug"}, key=key)
    assert error_codes(bad) == ["TENANT_SLUG_INVALID"]
