"""API key format and hashing.

A key reads `alp_<key_id>_<secret>`. The key id is public and indexed; the secret has 256 bits
of entropy, so one salted HMAC-SHA256 is enough (a slow KDF would only slow every request).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

PREFIX = "alp_"


@dataclass(frozen=True)
class KeyMaterial:
    key_id: str
    secret: str
    salt: str
    secret_hash: str

    @property
    def token(self) -> str:
        return f"{PREFIX}{self.key_id}_{self.secret}"


def hash_secret(secret: str, salt: str) -> str:
    return hmac.new(bytes.fromhex(salt), secret.encode(), hashlib.sha256).hexdigest()


def generate(token: str | None = None) -> KeyMaterial:
    """New key material; `token` lets an operator fix the key (the demo key from settings)."""
    if token is None:
        key_id, secret = secrets.token_hex(8), secrets.token_urlsafe(32)
    else:
        parsed = parse(token)
        if parsed is None:
            raise ValueError("an API key reads alp_<16 hex>_<secret of 32+ characters>")
        key_id, secret = parsed
    salt = secrets.token_hex(16)
    return KeyMaterial(key_id, secret, salt, hash_secret(secret, salt))


def parse(token: str) -> tuple[str, str] | None:
    if not token.startswith(PREFIX):
        return None
    key_id, sep, secret = token[len(PREFIX):].partition("_")
    if not sep or len(key_id) != 16 or len(secret) < 32:
        return None
    try:
        int(key_id, 16)
    except ValueError:
        return None
    return key_id, secret


def matches(secret: str, salt: str, secret_hash: str) -> bool:
    return hmac.compare_digest(hash_secret(secret, salt), secret_hash)
