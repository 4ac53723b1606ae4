"""Turn an `Authorization: Bearer …` value into a Principal, or refuse with a stable code."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlmodel import select, update

from gateway.auth import apikeys, tokens
from gateway.auth.policy import AccessPolicy
from gateway.auth.principal import Principal
from gateway.db import Database, utcnow
from gateway.errors import Unauthenticated
from gateway.settings import Settings
from gateway.tenancy.models import ApiKey, Tenant, User

TOUCH_INTERVAL = timedelta(minutes=1)


def bearer_token(header: str | None) -> str | None:
    if not header:
        return None
    scheme, _, value = header.strip().partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        raise Unauthenticated("Authorization must be 'Bearer <key or token>'",
                              code="AUTH_HEADER_INVALID")
    return value.strip()


class Authenticator:
    def __init__(self, db: Database, policy: AccessPolicy, settings: Settings) -> None:
        self._db = db
        self._policy = policy
        self._settings = settings

    def authenticate(self, token: str) -> Principal:
        parsed = apikeys.parse(token)
        if parsed is not None:
            return self._from_api_key(*parsed)
        if token.startswith(apikeys.PREFIX):
            raise Unauthenticated("malformed API key", code="AUTH_KEY_INVALID")
        claims = tokens.decode(token, self._settings)
        return self._from_claims(claims)

    def _from_api_key(self, key_id: str, secret: str) -> Principal:
        # The key decides the tenant, so its look-up spans all tenants by necessity.
        with self._db.system_session() as session:
            row = session.exec(
                select(ApiKey, User, Tenant)
                .join(User, User.id == ApiKey.user_id)
                .join(Tenant, Tenant.id == ApiKey.tenant_id)
                .where(ApiKey.key_id == key_id)
            ).first()
        if row is None or not apikeys.matches(secret, row[0].salt, row[0].secret_hash):
            raise Unauthenticated("unknown API key", code="AUTH_KEY_INVALID")
        key, user, tenant = row
        now = utcnow()
        if key.revoked_at is not None:
            raise Unauthenticated("API key has been revoked", code="AUTH_KEY_REVOKED")
        if key.expires_at is not None and key.expires_at <= now:
            raise Unauthenticated("API key has expired", code="AUTH_KEY_EXPIRED")
        self._check_active(tenant, user)
        self._touch(key, now)
        return Principal(
            tenant_id=tenant.id, tenant_slug=tenant.slug, user_id=user.id, via="api_key",
            roles=tuple(self._policy.roles(user.id, tenant.id)), api_key_id=key.id,
            expires_at=key.expires_at, trusted_documents_only=tenant.trusted_documents_only,
        )

    def _from_claims(self, claims: tokens.TokenClaims) -> Principal:
        with self._db.system_session() as session:
            row = session.exec(
                select(User, Tenant)
                .join(Tenant, Tenant.id == User.tenant_id)
                .where(User.id == claims.user_id, Tenant.id == claims.tenant_id)
            ).first()
        if row is None:
            raise Unauthenticated("token names no user of that tenant", code="AUTH_TOKEN_INVALID")
        user, tenant = row
        self._check_active(tenant, user)
        return Principal(
            tenant_id=tenant.id, tenant_slug=tenant.slug, user_id=user.id, via="jwt",
            roles=tuple(self._policy.roles(user.id, tenant.id)),
            # the socket closes when the token would no longer be accepted (exp + leeway)
            expires_at=(claims.expires_at + timedelta(seconds=self._settings.jwt_leeway_seconds)
                        if claims.expires_at else None),
            trusted_documents_only=tenant.trusted_documents_only,
        )

    def _touch(self, key: ApiKey, now: datetime) -> None:
        # At most one write a minute per key: admins see when a key was last used without
        # every request paying for an UPDATE.
        if key.last_used_at is not None and now - key.last_used_at < TOUCH_INTERVAL:
            return
        with self._db.tenant_transaction(key.tenant_id) as session:
            session.exec(update(ApiKey).where(ApiKey.id == key.id).values(last_used_at=now))

    @staticmethod
    def _check_active(tenant: Tenant, user: User) -> None:
        if not tenant.active:
            raise Unauthenticated("tenant is suspended", code="AUTH_TENANT_SUSPENDED")
        if not user.active:
            raise Unauthenticated("user is deactivated", code="AUTH_USER_DEACTIVATED")
