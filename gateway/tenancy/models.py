from __future__ import annotations

from datetime import datetime

from sqlalchemy import Column, Index, Text, UniqueConstraint, text
from sqlmodel import Field, SQLModel

from gateway.db import TenantOwned, TenantRoot, UTCDateTime, utcnow
from gateway.tenancy.ids import uuid4_text


def new_id() -> str:
    return uuid4_text()


class Tenant(SQLModel, TenantRoot, table=True):
    id: str = Field(default_factory=new_id, primary_key=True, max_length=36)
    slug: str = Field(unique=True, index=True, max_length=63)
    name: str = Field(max_length=200)
    base_currency: str = Field(default="USD", max_length=3)
    home_region: str = Field(default="americas", max_length=16)
    active: bool = True
    # Only documents the tenant registered run (gateway/tenancy/documents.py); admins are exempt.
    trusted_documents_only: bool = False
    created_at: datetime = Field(default_factory=utcnow, sa_column=Column(UTCDateTime(), nullable=False))


class User(TenantOwned, table=True):
    __table_args__ = (UniqueConstraint("tenant_id", "email"),)

    id: str = Field(default_factory=new_id, primary_key=True, max_length=36)
    email: str = Field(max_length=320)
    display_name: str = Field(default="", max_length=200)
    active: bool = True
    # How a MiFIR transaction report identifies this person as investment decision maker or
    # executor (RTS 22 Art. 6), as the tenant admin records it: the country code and national
    # identifier, passport number or CONCAT code, its scheme, and the country of the branch
    # that supervises the person. None until recorded; reports never put a user id in its place.
    national_id: str | None = Field(default=None, max_length=35)
    national_id_scheme: str | None = Field(default=None, max_length=6)  # NIDN | CCPT | CONCAT
    branch_country: str | None = Field(default=None, max_length=2)
    created_at: datetime = Field(default_factory=utcnow, sa_column=Column(UTCDateTime(), nullable=False))
    # Who made the user (a user id; None: the platform): separation of duties reads it.
    created_by: str | None = Field(default=None, max_length=36)


class ApiKey(TenantOwned, table=True):
    """A key acts as its user. Only a salted hash of the secret is stored."""

    __tablename__ = "api_key"

    id: str = Field(default_factory=new_id, primary_key=True, max_length=36)
    user_id: str = Field(foreign_key="user.id", index=True, max_length=36)
    name: str = Field(max_length=200)
    key_id: str = Field(unique=True, index=True, max_length=32)
    salt: str = Field(max_length=64)
    secret_hash: str = Field(max_length=128)
    created_at: datetime = Field(default_factory=utcnow, sa_column=Column(UTCDateTime(), nullable=False))
    expires_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime(), nullable=True))
    revoked_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime(), nullable=True))
    last_used_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime(), nullable=True))
    # Who made the key (a user id; None: the platform). Whoever holds a key acts as its user,
    # so a key someone made for an approver makes that approver not independent of them.
    created_by: str | None = Field(default=None, max_length=36)


PENDING_ONLY = text("status = 'PENDING'")


class VendorRoleRequest(TenantOwned, table=True):
    """A tenant admin's request that one of its users be made a plugin vendor. A platform
    administrator decides it; at most one is PENDING per tenant (a partial unique index)."""

    __tablename__ = "vendor_role_request"
    __table_args__ = (
        Index("ix_vendor_role_request_tenant_created", "tenant_id", "created_at", "id"),
        Index("ix_vendor_role_request_status_created", "status", "created_at", "id"),
        Index("ux_vendor_role_request_pending", "tenant_id", unique=True,
              sqlite_where=PENDING_ONLY, postgresql_where=PENDING_ONLY),
    )

    id: str = Field(default_factory=new_id, primary_key=True, max_length=36)
    user_id: str = Field(foreign_key="user.id", max_length=36)
    reason: str = Field(max_length=2000)
    status: str = Field(default="PENDING", max_length=16)  # PENDING | APPROVED | REJECTED
    requested_by: str = Field(max_length=36)
    created_at: datetime = Field(default_factory=utcnow, sa_column=Column(UTCDateTime(), nullable=False))
    decided_by: str | None = Field(default=None, max_length=36)
    decided_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime(), nullable=True))
    note: str | None = Field(default=None, max_length=2000)


class RoleGrantRequest(TenantOwned, table=True):
    """A tenant admin's request to grant a role that needs a second person (compliance_officer):
    another tenant admin, independent of the requester, or a platform administrator decides."""

    __tablename__ = "role_grant_request"
    __table_args__ = (
        Index("ix_role_grant_request_tenant_created", "tenant_id", "created_at", "id"),
    )

    id: str = Field(default_factory=new_id, primary_key=True, max_length=36)
    user_id: str = Field(foreign_key="user.id", max_length=36)
    role: str = Field(max_length=32)
    status: str = Field(default="PENDING", max_length=16)  # PENDING | APPROVED | REJECTED
    requested_by: str = Field(max_length=36)
    created_at: datetime = Field(default_factory=utcnow, sa_column=Column(UTCDateTime(), nullable=False))
    decided_by: str | None = Field(default=None, max_length=36)
    decided_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime(), nullable=True))


class TrustedDocument(TenantOwned, table=True):
    """A GraphQL document a tenant registered: in trusted-documents mode only these run. Also
    served by hash as a persisted query."""

    __tablename__ = "trusted_document"
    __table_args__ = (
        UniqueConstraint("tenant_id", "sha256"),
        Index("ix_trusted_document_tenant_created", "tenant_id", "created_at", "id"),
    )

    id: str = Field(default_factory=new_id, primary_key=True, max_length=36)
    sha256: str = Field(max_length=64)
    name: str = Field(default="", max_length=200)
    document: str = Field(sa_column=Column(Text, nullable=False))
    created_by: str | None = Field(default=None, max_length=36)
    created_at: datetime = Field(default_factory=utcnow, sa_column=Column(UTCDateTime(), nullable=False))
