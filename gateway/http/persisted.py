"""Which document a request runs: its query text, Automatic Persisted Queries, trusted documents.

APQ (Apollo's protocol, over GET and POST): `extensions.persistedQuery = {version: 1,
sha256Hash}`. A hash alone runs the document registered under it: the tenant's trusted documents
first, then those this process remembered from earlier requests (an LRU per tenant, so one
tenant's many hashes never evict another's; a miss on another replica only costs the client its
usual retry); unknown, it answers
PERSISTED_QUERY_NOT_FOUND and the client sends hash and text, which must agree
(PERSISTED_QUERY_HASH_MISMATCH) and are remembered.

Trusted-documents mode (per tenant): the text about to run must be registered for the tenant,
else DOCUMENT_NOT_TRUSTED; tenant admins are exempt.
"""

from __future__ import annotations

from typing import Any

from gateway.auth.principal import Principal
from gateway.errors import DomainError
from gateway.tenancy.documents import TrustedDocuments, document_hash

PERSISTED_QUERY_NOT_FOUND = "PERSISTED_QUERY_NOT_FOUND"
TENANTS_REMEMBERED = 1_000  # tenants whose APQ documents this process keeps
ADMIN = "admin"


class DocumentRefused(DomainError):
    """A request error about the document itself: 400 with graphql-response+json."""


class DocumentResolver:
    def __init__(self, documents: TrustedDocuments, cache_size: int) -> None:
        from gateway.http.graphql import LRU  # the endpoint's bounded LRU

        self.documents = documents
        # tenants' own LRUs, the least recently active dropped past TENANTS_REMEMBERED
        self.remembered = LRU(TENANTS_REMEMBERED)
        self._make_cache = lambda: LRU(cache_size)

    def query(self, params: dict[str, Any], principal: Principal) -> str:
        """The document text to run for this request, or DocumentRefused."""
        text = params.get("query")
        persisted = _persisted(params.get("extensions"))
        if persisted is not None:
            if isinstance(text, str) and text.strip():
                if document_hash(text) != persisted:
                    raise DocumentRefused("the query's SHA-256 is not extensions.persistedQuery."
                                          "sha256Hash", code="PERSISTED_QUERY_HASH_MISMATCH")
                self.check_trusted(text, principal)  # never remember what may not run
                self._tenant(principal).get_or_make(persisted, lambda: text)
            else:
                text = self._tenant(principal).peek(persisted) \
                    or self.documents.text(principal.tenant_id, persisted)
                if text is None:
                    raise DocumentRefused("PersistedQueryNotFound", code=PERSISTED_QUERY_NOT_FOUND)
        if not isinstance(text, str) or not text.strip():
            raise DocumentRefused("the request has no query string", code="BAD_REQUEST")
        self.check_trusted(text, principal)
        return text

    def query_nowait(self, params: dict[str, Any], principal: Principal) -> str | None:
        """`query` when it answers from memory alone (for the event loop): None when it would
        read the database (a hash not remembered here, a trusted-documents check not cached) or
        refuse; the caller then asks `query`, which answers or refuses as it always does."""
        text = params.get("query")
        try:
            persisted = _persisted(params.get("extensions"))
        except DocumentRefused:
            return None
        sent = isinstance(text, str) and bool(text.strip())
        if persisted is not None:
            if sent:
                if document_hash(text) != persisted:
                    return None
            else:
                text = self._tenant(principal).peek(persisted)
        if not isinstance(text, str) or not text.strip():
            return None
        if principal.trusted_documents_only and ADMIN not in principal.roles and \
                not self.documents.known_cached(principal.tenant_id, document_hash(text)):
            return None
        if persisted is not None and sent:
            self._tenant(principal).get_or_make(persisted, lambda: text)  # as `query` remembers it
        return text

    def _tenant(self, principal: Principal) -> Any:
        return self.remembered.get_or_make(principal.tenant_id, self._make_cache)

    def check_trusted(self, text: str, principal: Principal) -> None:
        if not principal.trusted_documents_only or ADMIN in principal.roles:
            return
        if not self.documents.known(principal.tenant_id, document_hash(text)):
            raise DocumentRefused("this tenant runs registered documents only; this one is not "
                                  "registered", code="DOCUMENT_NOT_TRUSTED")


def _persisted(extensions: Any) -> str | None:
    """The sha256Hash of a well-formed persistedQuery extension; None without one."""
    if not isinstance(extensions, dict) or "persistedQuery" not in extensions:
        return None
    persisted = extensions["persistedQuery"]
    if not isinstance(persisted, dict) or persisted.get("version") != 1:
        raise DocumentRefused("persistedQuery needs version 1", code="PERSISTED_QUERY_INVALID")
    digest = persisted.get("sha256Hash")
    if not isinstance(digest, str) or len(digest) != 64 or \
            any(c not in "0123456789abcdef" for c in digest.lower()):
        raise DocumentRefused("sha256Hash must be 64 hex digits", code="PERSISTED_QUERY_INVALID")
    return digest.lower()
