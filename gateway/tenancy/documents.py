"""Trusted documents: the GraphQL documents a tenant registered, and its mode in which only
they run (`Tenant.trusted_documents_only`; tenant admins are exempt, so the mode cannot lock
out the people who manage it).

A document is known by the SHA-256 of its exact text (hex), as Apollo's persisted queries name
it; a registered document is also served by hash alone. The HTTP path asks `known(tenant, hash)`
on every request in trusted mode: registered hashes are cached per tenant, a hash the cache
lacks is looked up (so a registration on another replica counts at once), and the cache is
read again after `CACHE_SECONDS` (so a removal reaches other replicas within that time).
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable

from graphql import GraphQLError, parse
from sqlalchemy.exc import IntegrityError
from sqlmodel import select, update

from gateway.audit import AuditEntry, AuditTrail
from gateway.db import Database
from gateway.errors import InvalidInput, NotFound
from gateway.pagination import Page, keyset_page
from gateway.tenancy.models import Tenant, TrustedDocument

CACHE_SECONDS = 5.0
MAX_DOCUMENT_CHARS = 100_000
NAME_MAX = 200


def document_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


class TrustedDocuments:
    def __init__(self, db: Database, audit: AuditTrail, max_page_size: int,
                 max_tokens: int = 5_000) -> None:
        self.db = db
        self.audit = audit
        self.max_page_size = max_page_size
        self.max_tokens = max_tokens
        # Called with the tenant id after its mode changed: cached principals carry the mode
        # (TenancyService binds it to a tenant-wide credentials event).
        self.mode_changed: Callable[[str], None] | None = None
        self._lock = threading.Lock()
        self._cache: dict[str, tuple[float, frozenset[str]]] = {}

    def register(self, tenant_id: str, document: str, *, name: str = "",
                 actor: str | None = None) -> TrustedDocument:
        """Register `document` (it must parse); registering the same text again answers the
        row it has."""
        if not document.strip() or len(document) > MAX_DOCUMENT_CHARS:
            raise InvalidInput(f"document must be 1 to {MAX_DOCUMENT_CHARS} characters",
                               code="TRUSTED_DOCUMENT_INVALID")
        if len(name) > NAME_MAX:
            raise InvalidInput(f"name is longer than {NAME_MAX} characters",
                               code="TRUSTED_DOCUMENT_INVALID")
        try:
            parse(document, max_lexical_tokens=self.max_tokens)
        except GraphQLError as exc:
            raise InvalidInput(f"document does not parse: {exc.message}",
                               code="TRUSTED_DOCUMENT_INVALID") from None
        digest = document_hash(document)
        existing = self._by_hash(tenant_id, digest)
        if existing is not None:
            return existing
        row = TrustedDocument(tenant_id=tenant_id, sha256=digest, name=name.strip(),
                              document=document, created_by=actor)
        try:
            with self.db.tenant_transaction(tenant_id) as session:
                session.add(row)
                session.flush()
                self.audit.append(session, tenant_id, [AuditEntry(
                    "trusted_document.registered", row.id, {"sha256": digest, "name": row.name},
                    actor)])
                session.refresh(row)
                session.expunge(row)
        except IntegrityError:  # registered meanwhile by someone else
            existing = self._by_hash(tenant_id, digest)
            if existing is None:
                raise
            return existing
        self._forget(tenant_id)
        return row

    def remove(self, tenant_id: str, document_id: str, *, actor: str | None = None) -> TrustedDocument:
        with self.db.tenant_transaction(tenant_id) as session:
            row = session.exec(select(TrustedDocument).where(TrustedDocument.id == document_id)).first()
            if row is None:
                raise NotFound(f"no trusted document {document_id}", code="TRUSTED_DOCUMENT_NOT_FOUND")
            session.delete(row)
            self.audit.append(session, tenant_id, [AuditEntry(
                "trusted_document.removed", row.id, {"sha256": row.sha256}, actor)])
        self._forget(tenant_id)
        return row

    def set_mode(self, tenant_id: str, only_trusted: bool, *, actor: str | None = None) -> bool:
        with self.db.tenant_transaction(tenant_id) as session:
            session.exec(update(Tenant).where(Tenant.id == tenant_id)
                         .values(trusted_documents_only=only_trusted))
            self.audit.append(session, tenant_id, [AuditEntry(
                "tenant.trusted_documents_only", tenant_id, {"enabled": only_trusted}, actor)])
        if self.mode_changed is not None:
            self.mode_changed(tenant_id)
        return only_trusted

    def mode(self, tenant_id: str) -> bool:
        with self.db.tenant_session(tenant_id) as session:
            tenant = session.exec(select(Tenant)).first()
        return bool(tenant and tenant.trusted_documents_only)

    def documents(self, tenant_id: str, *, first: int, after: str | None = None
                  ) -> Page[TrustedDocument]:
        return keyset_page(self.db, tenant_id, select(TrustedDocument), TrustedDocument,
                           first=first, after=after, max_page_size=self.max_page_size)

    def text(self, tenant_id: str, digest: str) -> str | None:
        """The registered document with this hash, if any."""
        row = self._by_hash(tenant_id, digest)
        return row.document if row is not None else None

    def known(self, tenant_id: str, digest: str) -> bool:
        now = time.monotonic()
        with self._lock:
            cached = self._cache.get(tenant_id)
        if cached is not None and now - cached[0] < CACHE_SECONDS and digest in cached[1]:
            return True
        with self.db.tenant_session(tenant_id) as session:
            hashes = frozenset(session.exec(select(TrustedDocument.sha256)).all())
        with self._lock:
            self._cache[tenant_id] = (now, hashes)
        return digest in hashes

    def known_cached(self, tenant_id: str, digest: str) -> bool:
        """`known` from the cached set alone, never reading the database (for the event loop):
        False also when the set is stale or absent (the caller asks `known`)."""
        with self._lock:
            cached = self._cache.get(tenant_id)
        return cached is not None and time.monotonic() - cached[0] < CACHE_SECONDS and digest in cached[1]

    def _by_hash(self, tenant_id: str, digest: str) -> TrustedDocument | None:
        with self.db.tenant_session(tenant_id) as session:
            return session.exec(select(TrustedDocument).where(TrustedDocument.sha256 == digest)).first()

    def _forget(self, tenant_id: str) -> None:
        with self._lock:
            self._cache.pop(tenant_id, None)
