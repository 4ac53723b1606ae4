"""Federations and their members.

`Federation` is a platform-level row, not tenant-owned: several tenants belong to one, so no
single tenant scope can own it. Who may see it is decided in one place,
`FederationService` (gateway/federated/service.py): a tenant sees a federation only while it
is an opted-in member, and anything else answers FEDERATION_NOT_FOUND, exactly as another
tenant's row would. Reading a federation row never reveals who its other members are; the
members' count is all a member learns.

`FederationMember` is tenant-owned: a tenant's membership (its opt-in) is its own row, filtered
by the tenant session like any other. Leaving keeps the row with `opted_in` false (when it
joined and left stays on record); joining again opts in again. Listing every member of a
federation, which a training run needs, is the platform's own work and uses a system session.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Column, Index, UniqueConstraint
from sqlmodel import Field, SQLModel

from gateway.db import TenantOwned, UTCDateTime, utcnow
from gateway.tenancy.models import new_id


def _stamp(nullable: bool = False) -> Any:
    if nullable:
        return Field(default=None, sa_column=Column(UTCDateTime(), nullable=True))
    return Field(default_factory=utcnow, sa_column=Column(UTCDateTime(), nullable=False))


class Federation(SQLModel, table=True):
    __table_args__ = (UniqueConstraint("created_by_tenant_id", "idempotency_key"),)

    id: str = Field(default_factory=new_id, primary_key=True, max_length=36)
    name: str = Field(max_length=200)
    # gateway.federated.data.FeatureSpec as a dict: what every participant computes.
    feature_spec: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    # Not `tenant_id`, on purpose: the row is not tenant-owned (see the module docstring).
    created_by_tenant_id: str = Field(foreign_key="tenant.id", index=True, max_length=36)
    created_by_user_id: str | None = Field(default=None, max_length=36)
    idempotency_key: str | None = Field(default=None, max_length=128)
    created_at: datetime = _stamp()


class FederationMember(TenantOwned, table=True):
    __tablename__ = "federation_member"
    __table_args__ = (
        UniqueConstraint("federation_id", "tenant_id"),
        Index("ix_federation_member_tenant_opted", "tenant_id", "opted_in"),
    )

    id: str = Field(default_factory=new_id, primary_key=True, max_length=36)
    federation_id: str = Field(foreign_key="federation.id", index=True, max_length=36)
    opted_in: bool = True
    joined_at: datetime = _stamp()
    left_at: datetime | None = _stamp(nullable=True)
    updated_at: datetime = _stamp()
