"""Tables of installation: what each tenant installed, its history, ratings and metered usage.

All tenant-owned: a tenant session sees only its own. Counting installations and averaging
ratings across tenants for the catalogue is the platform's own work (a system session), and
answers aggregates only.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Column, Index, Text, UniqueConstraint
from sqlmodel import Field

from gateway.db import TenantOwned, UTCDateTime, utcnow
from gateway.tenancy.models import new_id


def _stamp() -> Any:
    return Field(default_factory=utcnow, sa_column=Column(UTCDateTime(), nullable=False))


class PluginInstallation(TenantOwned, table=True):
    """A plugin installed for a tenant: one row per tenant and plugin while installed.
    `config` holds the non-secret values; `sealed_secrets` the secret ones as one SecretBox
    token (JSON inside), bound to f"plugin-config:{tenant_id}:{plugin_id}"."""

    __tablename__ = "plugin_installation"
    __table_args__ = (UniqueConstraint("tenant_id", "plugin_id"),)

    id: str = Field(default_factory=new_id, primary_key=True, max_length=36)
    plugin_id: str = Field(foreign_key="plugin.id", index=True, max_length=100)
    version_id: str = Field(foreign_key="plugin_version.id", max_length=36)
    version: str = Field(max_length=64)
    # The version this one replaced (upgrade or rollback): where `rollbackPlugin` goes.
    previous_version_id: str | None = Field(default=None, max_length=36)
    config: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    sealed_secrets: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    secret_fields: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    # The configuration in force with `previous_version_id` (non-secret values, and its secrets
    # sealed as `sealed_secrets` are): a rollback restores it, since the current configuration
    # may not be valid for the older version's schema.
    previous_config: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON, nullable=True))
    previous_sealed_secrets: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    installed_by: str | None = Field(default=None, max_length=36)
    created_at: datetime = _stamp()
    updated_at: datetime = _stamp()


class PluginInstallationEvent(TenantOwned, table=True):
    """The installation history: every install, configuration, upgrade, rollback, uninstall,
    delisting and failure, newest last. Install's idempotency key lives here, so a retried
    install after an uninstall is still recognised."""

    __tablename__ = "plugin_installation_event"
    __table_args__ = (
        UniqueConstraint("tenant_id", "idempotency_key"),
        Index("ix_plugin_installation_event_tenant_plugin", "tenant_id", "plugin_id", "created_at"),
    )

    id: str = Field(default_factory=new_id, primary_key=True, max_length=36)
    plugin_id: str = Field(max_length=100)
    action: str = Field(max_length=16)  # INSTALLED CONFIGURED UPGRADED ROLLED_BACK UNINSTALLED DELISTED
    version_id: str | None = Field(default=None, max_length=36)
    version: str | None = Field(default=None, max_length=64)
    previous_version: str | None = Field(default=None, max_length=64)
    actor: str | None = Field(default=None, max_length=36)
    idempotency_key: str | None = Field(default=None, max_length=128)
    created_at: datetime = _stamp()


class PluginRating(TenantOwned, table=True):
    """One rating per tenant and plugin; rating again replaces it."""

    __tablename__ = "plugin_rating"
    __table_args__ = (UniqueConstraint("tenant_id", "plugin_id"),)

    id: str = Field(default_factory=new_id, primary_key=True, max_length=36)
    plugin_id: str = Field(foreign_key="plugin.id", index=True, max_length=100)
    rating: int
    comment: str | None = Field(default=None, max_length=2000)
    rated_by: str | None = Field(default=None, max_length=36)
    created_at: datetime = _stamp()
    updated_at: datetime = _stamp()


class PluginUsage(TenantOwned, table=True):
    """Metered use per tenant, plugin, version and UTC day: calls and bytes of results.
    Written by `gateway.marketplace.metering.Meter` at each call (an upsert adding to the counters)."""

    __tablename__ = "plugin_usage"
    __table_args__ = (UniqueConstraint("tenant_id", "plugin_id", "version", "day"),
                      Index("ix_plugin_usage_plugin_day", "plugin_id", "day"))

    id: str = Field(default_factory=new_id, primary_key=True, max_length=36)
    plugin_id: str = Field(max_length=100)
    version: str = Field(max_length=64)
    day: str = Field(max_length=10)  # ISO date, UTC
    calls: int = Field(default=0, sa_column=Column(BigInteger, nullable=False))
    bytes: int = Field(default=0, sa_column=Column(BigInteger, nullable=False))


class TenantBuiltinPlugin(TenantOwned, table=True):
    """A tenant's switch for one built-in plugin (only switched ones have a row)."""

    __tablename__ = "tenant_builtin_plugin"
    __table_args__ = (UniqueConstraint("tenant_id", "plugin"),)

    id: str = Field(default_factory=new_id, primary_key=True, max_length=36)
    plugin: str = Field(max_length=100)
    enabled: bool = True
    updated_by: str | None = Field(default=None, max_length=36)
    updated_at: datetime = _stamp()
