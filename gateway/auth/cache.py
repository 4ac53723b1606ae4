"""What a credential look-up read from the database, kept in process for a few seconds.

An API key's row joined with its user and tenant costs a database round trip (~0.6 ms); the
HMAC of its secret costs ~2 µs. Entries keep what the join gave (salt, hash, tenant, user,
expiry), so a request with a known key pays the HMAC, still checked every time, and no round
trip. Only accepted look-ups are kept: a revoked key, a deactivated user or a suspended tenant
is read again on each request, so undoing the change (reactivating) takes effect at once.

Invalidation:
- a key revoked or a user deactivated: `forget`, called in the process that made the change at
  once, and in every replica by the `CREDENTIALS_TOPIC` event the change already announces;
- a change made outside the gateway (the CLI without a shared bus, SQL) or a lost event: each
  entry lives `ttl` seconds at most;
- a key's expiry: checked on every request against the kept value.

A look-up racing an invalidation (read before the change committed, stored after the event)
must not put the old state back: `forget` moves an epoch, and a `put` whose read began before
it is dropped.
"""

from __future__ import annotations

import contextlib
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Generic, TypeVar

from gateway.auth.principal import Principal


@dataclass
class KeyEntry:
    """An API key's row, with its user and tenant as the join read them (all accepted)."""

    key_pk: str  # ApiKey.id: what revocation events name
    tenant_id: str
    tenant_slug: str
    user_id: str
    salt: str
    secret_hash: str
    expires_at: datetime | None
    trusted_documents_only: bool
    # Mutable: the `last_used_at` throttle runs on this copy, not on a row read per request.
    last_used_at: datetime | None
    loaded_at: float = field(default_factory=time.monotonic)
    # (policy generation, Principal) built from this entry: rebuilt when the policy moved.
    principal: tuple[int, Principal] | None = None


@dataclass
class AccountEntry:
    """A JWT's user and tenant rows as read (both active)."""

    tenant_id: str
    tenant_slug: str
    user_id: str
    trusted_documents_only: bool
    key_pk: None = None
    loaded_at: float = field(default_factory=time.monotonic)


Entry = TypeVar("Entry", KeyEntry, AccountEntry)


class CredentialCache(Generic[Entry]):
    """Bounded, TTL-limited map; `ttl` 0 turns it off (every look-up reads the database)."""

    def __init__(self, ttl: float, size: int) -> None:
        self.ttl = ttl
        self.size = size
        self._entries: dict[Any, Entry] = {}
        self._lock = threading.Lock()
        self._epoch = 0

    @property
    def enabled(self) -> bool:
        return self.ttl > 0 and self.size > 0

    def epoch(self) -> int:
        """Take before reading the database; hand to `put` with what was read."""
        return self._epoch

    def get(self, key: Any) -> Entry | None:
        entry = self._entries.get(key)
        if entry is None or time.monotonic() - entry.loaded_at >= self.ttl:
            return None
        return entry

    def put(self, key: Any, entry: Entry, epoch: int) -> None:
        if not self.enabled:
            return
        with self._lock:
            if epoch != self._epoch:  # an invalidation happened while this was read
                return
            if key not in self._entries and len(self._entries) >= self.size:
                with contextlib.suppress(StopIteration, KeyError):
                    del self._entries[next(iter(self._entries))]  # the oldest goes first
            self._entries[key] = entry

    def drop(self, key: Any) -> None:
        with self._lock:
            self._entries.pop(key, None)

    def forget(self, tenant_id: str | None, *, key_pk: str | None = None,
               user_id: str | None = None) -> int:
        """Drop the entries of a key (by row id) and of a user; with neither, of a whole tenant
        (of all tenants with no tenant either). Returns how many went."""
        with self._lock:
            self._epoch += 1
            whole = key_pk is None and user_id is None
            doomed = [k for k, e in self._entries.items()
                      if (tenant_id is None or e.tenant_id == tenant_id)
                      and (whole or (key_pk is not None and e.key_pk == key_pk)
                           or (user_id is not None and e.user_id == user_id))]
            for k in doomed:
                del self._entries[k]
            return len(doomed)

    def __len__(self) -> int:
        return len(self._entries)
