"""Turn an `Authorization: Bearer …` value into a Principal, or refuse with a stable code.

What the database says about a credential is cached for `auth_cache_seconds`
(gateway/auth/cache.py): an API key's secret is still checked by HMAC on every request, its
expiry against the clock; revocations and deactivations drop entries at once (`forget`, and the
`CREDENTIALS_TOPIC` listener on every replica). `authenticate(..., fresh=True)` reads the
database whatever is cached (`recheck(token)` too): for re-checks whose point is to notice a
change made behind the gateway's back (an open WebSocket's periodic re-check, a new subscribe
on it).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlmodel import select, update

from gateway.auth import apikeys, tokens
from gateway.auth.cache import AccountEntry, CredentialCache, KeyEntry
from gateway.auth.policy import AccessPolicy
from gateway.auth.principal import Principal
from gateway.db import Database, utcnow
from gateway.errors import Unauthenticated
from gateway.events import Event
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
        # key_id -> KeyEntry; (tenant id, user id) -> AccountEntry for JWTs
        self.keys: CredentialCache[KeyEntry] = CredentialCache(
            settings.auth_cache_seconds, settings.auth_cache_size)
        self.accounts: CredentialCache[AccountEntry] = CredentialCache(
            settings.auth_cache_seconds, settings.auth_cache_size)

    def authenticate(self, token: str, *, fresh: bool = False) -> Principal:
        parsed = apikeys.parse(token)
        if parsed is not None:
            return self._from_api_key(*parsed, fresh=fresh)
        if token.startswith(apikeys.PREFIX):
            raise Unauthenticated("malformed API key", code="AUTH_KEY_INVALID")
        claims = tokens.decode(token, self._settings)
        return self._from_claims(claims, fresh=fresh)

    def cached(self, token: str) -> Principal | None:
        """The Principal from what this process holds alone, never blocking (for the event
        loop): an API key's secret is still checked by HMAC and its expiry against the clock, a
        JWT's signature and claims are still verified. None whenever anything would need the
        database or a file: a miss, a secret that does not match what is kept, an expired key,
        the key's last-used write due, the policy's freshness check due, roles not derived yet,
        an RS256 key read from a file; a refused token too. The caller then takes
        `authenticate`, which answers or refuses exactly as it does without this path."""
        parsed = apikeys.parse(token)
        if parsed is not None:
            return self._cached_key(*parsed)
        settings = self._settings
        if token.startswith(apikeys.PREFIX) or (
                settings.jwt_algorithm != "HS256"
                and not (settings.jwt_public_key or "").lstrip().startswith("-----BEGIN")):
            return None
        try:
            claims = tokens.decode(token, settings)
        except Unauthenticated:
            return None  # refused on the normal path, with its own code
        entry = self.accounts.get((claims.tenant_id, claims.user_id))
        if entry is None:
            return None
        roles = self._policy.cached_roles(entry.user_id, entry.tenant_id)
        if roles is None:
            return None
        return self._jwt_principal(entry, claims, roles)

    def _cached_key(self, key_id: str, secret: str) -> Principal | None:
        entry = self.keys.get(key_id)
        if entry is None or not apikeys.matches(secret, entry.salt, entry.secret_hash):
            return None
        now = utcnow()
        if entry.expires_at is not None and entry.expires_at <= now:
            return None
        last = entry.last_used_at
        if last is None or now - last >= TOUCH_INTERVAL:
            return None  # `_touch` would write
        generation = self._policy.generation_nowait()
        built = entry.principal
        if generation is None or built is None or built[0] != generation:
            return None
        return built[1]

    def recheck(self, token: str) -> Principal:
        """`authenticate` from the database, whatever is cached: for re-checks of credentials
        already accepted (an open WebSocket's), whose point is to see changes made behind the
        gateway's back."""
        return self.authenticate(token, fresh=True)

    # Invalidation: the payload of CREDENTIALS_TOPIC (tenantId, and apiKeyId or userId).
    def forget(self, payload: dict[str, Any]) -> None:
        tenant, key, user = payload.get("tenantId"), payload.get("apiKeyId"), payload.get("userId")
        self.keys.forget(tenant, key_pk=key, user_id=user)
        self.accounts.forget(tenant, key_pk=key, user_id=user)

    def on_credentials_revoked(self, event: Event) -> None:
        """A bus listener (any thread, any replica's change)."""
        self.forget(event.payload)

    def _from_api_key(self, key_id: str, secret: str, *, fresh: bool) -> Principal:
        entry = None if fresh else self.keys.get(key_id)
        if entry is None or not apikeys.matches(secret, entry.salt, entry.secret_hash):
            # A miss, or a secret that does not match what is kept: ask the database (a wrong
            # secret costs what it cost before the cache, and is refused there).
            entry = self._load_key(key_id, secret)
        now = utcnow()
        if entry.expires_at is not None and entry.expires_at <= now:
            raise Unauthenticated("API key has expired", code="AUTH_KEY_EXPIRED")
        self._touch(entry, now)
        generation = self._policy.current_generation()
        built = entry.principal
        if built is not None and built[0] == generation:
            return built[1]
        principal = Principal(
            tenant_id=entry.tenant_id, tenant_slug=entry.tenant_slug, user_id=entry.user_id,
            via="api_key", roles=tuple(self._policy.roles(entry.user_id, entry.tenant_id)),
            api_key_id=entry.key_pk, expires_at=entry.expires_at,
            trusted_documents_only=entry.trusted_documents_only,
        )
        entry.principal = (generation, principal)
        return principal

    def _load_key(self, key_id: str, secret: str) -> KeyEntry:
        epoch = self.keys.epoch()
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
        try:
            if key.revoked_at is not None:
                raise Unauthenticated("API key has been revoked", code="AUTH_KEY_REVOKED")
            if key.expires_at is not None and key.expires_at <= utcnow():
                raise Unauthenticated("API key has expired", code="AUTH_KEY_EXPIRED")
            self._check_active(tenant, user)
        except Unauthenticated:
            self.keys.drop(key_id)  # a fresh re-check found it refused: nothing kept says otherwise
            raise
        entry = KeyEntry(
            key_pk=key.id, tenant_id=tenant.id, tenant_slug=tenant.slug, user_id=user.id,
            salt=key.salt, secret_hash=key.secret_hash, expires_at=key.expires_at,
            trusted_documents_only=tenant.trusted_documents_only, last_used_at=key.last_used_at,
        )
        self.keys.put(key_id, entry, epoch)
        return entry

    def _from_claims(self, claims: tokens.TokenClaims, *, fresh: bool) -> Principal:
        entry = None if fresh else self.accounts.get((claims.tenant_id, claims.user_id))
        if entry is None:
            entry = self._load_account(claims)
        return self._jwt_principal(entry, claims, tuple(self._policy.roles(entry.user_id, entry.tenant_id)))

    def _jwt_principal(self, entry: AccountEntry, claims: tokens.TokenClaims, roles: tuple[str, ...]
                       ) -> Principal:
        return Principal(
            tenant_id=entry.tenant_id, tenant_slug=entry.tenant_slug, user_id=entry.user_id,
            via="jwt", roles=roles,
            # the socket closes when the token would no longer be accepted (exp + leeway)
            expires_at=(claims.expires_at + timedelta(seconds=self._settings.jwt_leeway_seconds)
                        if claims.expires_at else None),
            trusted_documents_only=entry.trusted_documents_only,
        )

    def _load_account(self, claims: tokens.TokenClaims) -> AccountEntry:
        cache_key = (claims.tenant_id, claims.user_id)
        epoch = self.accounts.epoch()
        with self._db.system_session() as session:
            row = session.exec(
                select(User, Tenant)
                .join(Tenant, Tenant.id == User.tenant_id)
                .where(User.id == claims.user_id, Tenant.id == claims.tenant_id)
            ).first()
        if row is None:
            raise Unauthenticated("token names no user of that tenant", code="AUTH_TOKEN_INVALID")
        user, tenant = row
        try:
            self._check_active(tenant, user)
        except Unauthenticated:
            self.accounts.drop(cache_key)
            raise
        entry = AccountEntry(tenant_id=tenant.id, tenant_slug=tenant.slug, user_id=user.id,
                             trusted_documents_only=tenant.trusted_documents_only)
        self.accounts.put(cache_key, entry, epoch)
        return entry

    def _touch(self, entry: KeyEntry, now: datetime) -> None:
        # At most one write a minute per key and process: admins see when a key was last used
        # without every request paying for an UPDATE. The kept entry remembers the last write.
        last = entry.last_used_at
        if last is not None and now - last < TOUCH_INTERVAL:
            return
        entry.last_used_at = now  # first, so concurrent requests do not all write
        with self._db.tenant_transaction(entry.tenant_id) as session:
            session.exec(update(ApiKey).where(ApiKey.id == entry.key_pk).values(last_used_at=now))

    @staticmethod
    def _check_active(tenant: Tenant, user: User) -> None:
        if not tenant.active:
            raise Unauthenticated("tenant is suspended", code="AUTH_TENANT_SUSPENDED")
        if not user.active:
            raise Unauthenticated("user is deactivated", code="AUTH_USER_DEACTIVATED")
