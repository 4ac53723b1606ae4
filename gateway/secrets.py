"""Encryption at rest for secrets the gateway must use again (plugin configuration secrets,
tenants' signing keys): AES-256-GCM with the purpose and owner as associated data, so a
ciphertext copied to another tenant's row, or to another purpose, fails to open.

A sealed value names its key: `v2:<key id>:<nonce + ciphertext>`, the key id a hash of the key
(never the key). Rotation: the new key becomes `secret_key`, the old one goes to
`secret_keys_previous` (opened, never sealed with), and `alphintra secrets reseal`
(gateway/secrets_reseal.py) moves every sealed value to the current key. `v1:` values, sealed
before key ids, open with whichever key fits."""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
from collections.abc import Sequence
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from gateway.errors import DomainError
from gateway.settings import Settings, SettingsError, decode_key

VERSION = "v2"
LEGACY = "v1"  # no key id: tried with every key
NONCE_BYTES = 12


def key_id(key: bytes) -> str:
    return hashlib.sha256(b"alphintra-secret-key-id:" + key).hexdigest()[:16]


class SecretUnreadable(DomainError):
    """A sealed value that does not open with this key and context: tampered, moved, or the
    key changed. Never says more (the caller logs it)."""

    code = "SECRET_UNREADABLE"
    http_status = 500


class SecretBox:
    """Seal and open small secrets. `context` binds a ciphertext to where it belongs, for
    instance f"plugin-config:{tenant_id}:{plugin_id}"."""

    def __init__(self, key: bytes, previous: Sequence[bytes] = ()) -> None:
        if any(len(k) != 32 for k in (key, *previous)):
            raise ValueError("the secret key must be 32 bytes")
        self.key_id = key_id(key)
        self._aead = AESGCM(key)
        self._derive_from = key
        # The current key first: a legacy value is most likely sealed with it.
        self._keys = {self.key_id: self._aead}
        for old in previous:
            self._keys.setdefault(key_id(old), AESGCM(old))

    @classmethod
    def from_settings(cls, settings: Settings) -> SecretBox:
        """The key from ALPHINTRA_SECRET_KEY, else from ALPHINTRA_SECRET_KEY_FILE. Only the
        embedded default (SQLite, no Redis) may make a key file on first use: with a shared
        database a new key would leave every secret sealed by the others unreadable."""
        previous = settings.previous_secret_keys()
        if settings.secret_key:
            return cls(decode_key(settings.secret_key, "ALPHINTRA_SECRET_KEY"), previous)
        problem = settings.secret_key_problem()
        if problem:
            raise SettingsError(problem)
        path = Path(settings.secret_key_file)
        if settings.is_sqlite and not settings.redis_url:
            return cls(_key_file(path), previous)
        try:
            text = path.read_text()
        except OSError as exc:
            raise SettingsError(f"ALPHINTRA_SECRET_KEY_FILE {path}: {exc.strerror}") from None
        return cls(decode_key(text, f"ALPHINTRA_SECRET_KEY_FILE {path}"), previous)

    def derive(self, purpose: bytes) -> bytes:
        """A key for one other purpose (HMAC-SHA256 of the purpose under the current key): it
        proves the holder has the secret key without ever sending it."""
        return hmac.new(self._derive_from, b"alphintra-derived-key:" + purpose, hashlib.sha256).digest()

    def seal(self, plaintext: bytes, context: str) -> str:
        nonce = os.urandom(NONCE_BYTES)
        sealed = self._aead.encrypt(nonce, plaintext, context.encode())
        return f"{VERSION}:{self.key_id}:{base64.urlsafe_b64encode(nonce + sealed).decode()}"

    def is_current(self, token: str) -> bool:
        """Sealed with the current key (nothing for a reseal to do)."""
        return token.startswith(f"{VERSION}:{self.key_id}:")

    def open(self, token: str, context: str) -> bytes:
        version, _, rest = token.partition(":")
        if version == VERSION:
            kid, _, body = rest.partition(":")
            aead = self._keys.get(kid)
            if aead is None:  # the id is a hash: naming it tells nothing about the key
                raise SecretUnreadable(f"a sealed secret needs key {kid}, which is not configured")
            candidates = [aead]
        elif version == LEGACY:
            body, candidates = rest, list(self._keys.values())
        else:
            raise SecretUnreadable("a sealed secret in an unknown format")
        try:
            raw = base64.urlsafe_b64decode(body.encode())
        except ValueError:
            raise SecretUnreadable("a sealed secret could not be opened") from None
        for candidate in candidates:
            try:
                return candidate.decrypt(raw[:NONCE_BYTES], raw[NONCE_BYTES:], context.encode())
            except (InvalidTag, ValueError):
                continue
        raise SecretUnreadable("a sealed secret could not be opened")


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
