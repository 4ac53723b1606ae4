"""Encryption at rest for secrets the gateway must use again (plugin configuration secrets,
tenants' signing keys): AES-256-GCM with the purpose and owner as associated data, so a
ciphertext copied to another tenant's row, or to another purpose, fails to open."""

from __future__ import annotations

import base64
import os
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from gateway.errors import DomainError
from gateway.settings import Settings, SettingsError, decode_key

VERSION = "v1"
NONCE_BYTES = 12


class SecretUnreadable(DomainError):
    """A sealed value that does not open with this key and context: tampered, moved, or the
    key changed. Never says more (the caller logs it)."""

    code = "SECRET_UNREADABLE"
    http_status = 500


class SecretBox:
    """Seal and open small secrets. `context` binds a ciphertext to where it belongs, for
    instance f"plugin-config:{tenant_id}:{plugin_id}"."""

    def __init__(self, key: bytes) -> None:
        if len(key) != 32:
            raise ValueError("the secret key must be 32 bytes")
        self._aead = AESGCM(key)

    @classmethod
    def from_settings(cls, settings: Settings) -> SecretBox:
        """The key from ALPHINTRA_SECRET_KEY, else from ALPHINTRA_SECRET_KEY_FILE. Only the
        embedded default (SQLite, no Redis) may make a key file on first use: with a shared
        database a new key would leave every secret sealed by the others unreadable."""
        if settings.secret_key:
            return cls(decode_key(settings.secret_key, "ALPHINTRA_SECRET_KEY"))
        problem = settings.secret_key_problem()
        if problem:
            raise SettingsError(problem)
        path = Path(settings.secret_key_file)
        if settings.is_sqlite and not settings.redis_url:
            return cls(_key_file(path))
        try:
            text = path.read_text()
        except OSError as exc:
            raise SettingsError(f"ALPHINTRA_SECRET_KEY_FILE {path}: {exc.strerror}") from None
        return cls(decode_key(text, f"ALPHINTRA_SECRET_KEY_FILE {path}"))

    def seal(self, plaintext: bytes, context: str) -> str:
        nonce = os.urandom(NONCE_BYTES)
        sealed = self._aead.encrypt(nonce, plaintext, context.encode())
        return f"{VERSION}:{base64.urlsafe_b64encode(nonce + sealed).decode()}"

    def open(self, token: str, context: str) -> bytes:
        version, _, body = token.partition(":")
        if version != VERSION:
            raise SecretUnreadable("a sealed secret in an unknown format")
        try:
            raw = base64.urlsafe_b64decode(body.encode())
            return self._aead.decrypt(raw[:NONCE_BYTES], raw[NONCE_BYTES:], context.encode())
        except (InvalidTag, ValueError):
            raise SecretUnreadable("a sealed secret could not be opened") from None


def _key_file(path: Path) -> bytes:
    if path.exists():
        return base64.b64decode(path.read_text().strip())
    key = os.urandom(32)
    # O_EXCL: two processes starting at once agree on the first key written.
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return base64.b64decode(path.read_text().strip())
    with os.fdopen(fd, "w") as handle:
        handle.write(base64.b64encode(key).decode())
    return key
