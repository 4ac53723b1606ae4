from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime


@dataclass(frozen=True)
class Principal:
    """Who is calling: one user acting in one tenant, and how they proved it."""

    tenant_id: str
    tenant_slug: str
    user_id: str
    via: str  # "api_key" | "jwt"
    roles: tuple[str, ...] = field(default=())
    api_key_id: str | None = None
    # When the credential stops being valid (a JWT's exp, a key's expiry): an open WebSocket
    # closes then. None: it does not expire.
    expires_at: datetime | None = None
    # The tenant runs registered documents only (gateway/tenancy/documents.py).
    trusted_documents_only: bool = False
