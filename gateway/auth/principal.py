from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Principal:
    """Who is calling: one user acting in one tenant, and how they proved it."""

    tenant_id: str
    tenant_slug: str
    user_id: str
    via: str  # "api_key" | "jwt"
    roles: tuple[str, ...] = field(default=())
    api_key_id: str | None = None
