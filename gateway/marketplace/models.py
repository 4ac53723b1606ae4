"""Tables of publication: vendors, plugins and their versions.

These are platform rows, not tenant-owned: a plugin is published once and seen by many tenants.
Who may see what is decided in one place, `MarketplacePublishing` (marketplace/service.py):
a PRIVATE plugin only by its vendor's own tenant, an unapproved version only by its vendor and
platform administrators. Reading these rows outside that service is the platform's own work.
"""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Column, Index, LargeBinary, Text, UniqueConstraint
from sqlmodel import Field, SQLModel

from gateway.db import UTCDateTime, utcnow
from gateway.tenancy.models import new_id


class Tier(enum.StrEnum):
    PRIVATE = "PRIVATE"  # its vendor's own tenant only; approved at once, never reviewed
    COMMUNITY = "COMMUNITY"
    CERTIFIED = "CERTIFIED"


class VersionStatus(enum.StrEnum):
    SUBMITTED = "SUBMITTED"
    IN_REVIEW = "IN_REVIEW"
    APPROVED = "APPROVED"
    REJECTED = "REJECTED"
    DELISTED = "DELISTED"


def _stamp(nullable: bool = False) -> Any:
    if nullable:
        return Field(default=None, sa_column=Column(UTCDateTime(), nullable=True))
    return Field(default_factory=utcnow, sa_column=Column(UTCDateTime(), nullable=False))


class Vendor(SQLModel, table=True):
    """A tenant that publishes plugins (its users hold the role "vendor"); one per tenant."""

    id: str = Field(default_factory=new_id, primary_key=True, max_length=36)
    # Not a TenantOwned `tenant_id` filter: the row is read across tenants when versions are
    # verified at load, so the column is named for what it is, the vendor's own tenant.
    tenant_id: str = Field(foreign_key="tenant.id", unique=True, max_length=36)
    name: str = Field(max_length=200)
    public_key: str = Field(max_length=64)  # Ed25519, raw 32 bytes, base64
    # The first segment of plugin ids this vendor alone may create ("acme" for
    # "acme.news-sentiment"); reserved at registration or on the first publication, never changed.
    prefix: str | None = Field(default=None, max_length=100, unique=True, index=True)
    created_at: datetime = _stamp()
    updated_at: datetime = _stamp()


class Plugin(SQLModel, table=True):
    id: str = Field(primary_key=True, max_length=100)  # the manifest's id, e.g. "acme.news-sentiment"
    vendor_id: str = Field(foreign_key="vendor.id", index=True, max_length=36)
    name: str = Field(max_length=200)
    category: str = Field(index=True, max_length=32)
    tier: str = Field(max_length=16)
    delisted_at: datetime | None = _stamp(nullable=True)
    created_at: datetime = _stamp()


class PluginVersion(SQLModel, table=True):
    __tablename__ = "plugin_version"
    __table_args__ = (
        UniqueConstraint("plugin_id", "version"),
        Index("ix_plugin_version_plugin_created", "plugin_id", "created_at"),
    )

    id: str = Field(default_factory=new_id, primary_key=True, max_length=36)
    plugin_id: str = Field(foreign_key="plugin.id", index=True, max_length=100)
    version: str = Field(max_length=64)  # semver
    manifest: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    wheel: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    wheel_sha256: str = Field(max_length=64)
    wheel_filename: str = Field(max_length=255)
    signature: str = Field(max_length=128)  # Ed25519 over marketplace.signing.payload, base64
    # The key the signature was verified with at publication; loads verify against it, so a
    # vendor rotating its key does not orphan what it already published.
    public_key: str = Field(max_length=64)
    status: str = Field(index=True, max_length=16)
    # The GraphQL SDL the plugin's worker reported at inspection (schema extensions only).
    sdl: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    reasons: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    published_by: str | None = Field(default=None, max_length=36)
    published_at: datetime = _stamp()
    reviewed_at: datetime | None = _stamp(nullable=True)
    reviewed_by: str | None = Field(default=None, max_length=36)
    created_at: datetime = _stamp()
