"""JWT bearer tokens for partner front-ends (HS256 with a shared secret, or RS256 with the
issuer's public key). Claims: `sub` user id, `tid` tenant id, `exp`; `iss` and `aud` when set."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import jwt

from gateway.db import utcnow
from gateway.errors import Unauthenticated
from gateway.settings import Settings


@dataclass(frozen=True)
class TokenClaims:
    user_id: str
    tenant_id: str
    expires_at: datetime | None = None


def _verification_key(settings: Settings) -> str:
    if settings.jwt_algorithm == "HS256":
        if not settings.jwt_secret:
            raise Unauthenticated("JWT is not configured on this gateway", code="AUTH_JWT_DISABLED")
        return settings.jwt_secret
    key = settings.jwt_public_key
    if not key:
        raise Unauthenticated("JWT is not configured on this gateway", code="AUTH_JWT_DISABLED")
    return key if key.lstrip().startswith("-----BEGIN") else Path(key).read_text()


# A JWT is a few hundred characters. A longer one is refused before PyJWT reads its JSON: with
# the recursion limit py-evm sets (100,000, gateway/http/encoding.py) a deeply nested header
# overflows the C stack and the whole process dies.
MAX_TOKEN_CHARS = 8_192


def decode(token: str, settings: Settings) -> TokenClaims:
    if len(token) > MAX_TOKEN_CHARS:
        raise Unauthenticated("invalid token: too long", code="AUTH_TOKEN_INVALID")
    options: dict[str, Any] = {"require": ["exp", "sub", "tid"]}
    try:
        claims = jwt.decode(
            token,
            _verification_key(settings),
            algorithms=[settings.jwt_algorithm],
            audience=settings.jwt_audience,
            issuer=settings.jwt_issuer,
            leeway=settings.jwt_leeway_seconds,
            options=options,
        )
    except jwt.ExpiredSignatureError:
        raise Unauthenticated("token has expired", code="AUTH_TOKEN_EXPIRED") from None
    except jwt.InvalidTokenError as exc:
        raise Unauthenticated(f"invalid token: {exc}", code="AUTH_TOKEN_INVALID") from None
    return TokenClaims(user_id=str(claims["sub"]), tenant_id=str(claims["tid"]),
                       expires_at=datetime.fromtimestamp(int(claims["exp"]), UTC))


def issue(
    settings: Settings, *, user_id: str, tenant_id: str, ttl: timedelta = timedelta(hours=1),
    private_key: str | None = None,
) -> str:
    """Mint a token; for HS256 from the shared secret, for RS256 from `private_key` (PEM)."""
    now = utcnow()
    claims: dict[str, Any] = {"sub": user_id, "tid": tenant_id, "iat": now, "exp": now + ttl}
    if settings.jwt_issuer:
        claims["iss"] = settings.jwt_issuer
    if settings.jwt_audience:
        claims["aud"] = settings.jwt_audience
    key = settings.jwt_secret if settings.jwt_algorithm == "HS256" else private_key
    if not key:
        raise ValueError("no signing key for " + settings.jwt_algorithm)
    return jwt.encode(claims, key, algorithm=settings.jwt_algorithm)
