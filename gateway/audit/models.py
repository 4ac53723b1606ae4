"""Tables of the hash-chained audit trail.

Each tenant's trail is up to 16 lanes, each a chain (gateway/audit/lanes.py): lane 0 named by
the tenant id, lane k by "<tenant id>/k" (hence 40 characters, migration 0026); the platform has
one chain ("platform"). A record is tenant-owned so that a tenant session sees only its own
lanes; platform records have no tenant (tenant_id NULL), so only a system session reads them.
`audit_head` holds the last seq and hash of each chain: appenders lock its row, which serialises
them per lane, not per tenant or table. `audit_record` refuses UPDATE and DELETE by trigger
(migration 0006). A tenant's records are read newest first across its lanes by (at, chain,
seq): the two tenant indexes serve that order, with and without a kind.

`audit_checkpoint` (migration 0017) holds signed statements of chain heads (gateway/audit/
checkpoints.py), tenant-owned like the records; `audit_signing_key` the platform's Ed25519 key
that signs them, sealed with the gateway's secret key. Both refuse UPDATE and DELETE by trigger.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Column, Index, Text
from sqlmodel import Field, SQLModel

from gateway.db import TenantOwned, UTCDateTime

PLATFORM_CHAIN = "platform"


class AuditRecord(TenantOwned, table=True):
    __tablename__ = "audit_record"
    __table_args__ = (Index("ix_audit_record_chain_at", "chain", "at"),
                      Index("ix_audit_record_tenant_at", "tenant_id", "at", "chain", "seq"),
                      Index("ix_audit_record_tenant_kind_at", "tenant_id", "kind", "at", "chain",
                            "seq"))

    # Platform records belong to no tenant: nullable, unlike every other tenant-owned row. Its
    # look-ups (and the foreign key's) use the tenant indexes above, which lead with it.
    tenant_id: str | None = Field(default=None, foreign_key="tenant.id", max_length=36,
                                  nullable=True)
    chain: str = Field(primary_key=True, max_length=40)
    seq: int = Field(primary_key=True)
    at: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False))
    kind: str = Field(max_length=64)
    subject: str = Field(max_length=200)
    actor: str | None = Field(default=None, max_length=64)
    payload: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    prev_hash: str = Field(max_length=64)
    hash: str = Field(max_length=64)


class AuditHead(SQLModel, table=True):
    """The end of one chain. Not tenant-owned: it holds nothing but a count and a hash."""

    __tablename__ = "audit_head"

    chain: str = Field(primary_key=True, max_length=40)
    last_seq: int = 0
    last_hash: str = Field(max_length=64)


class AuditCheckpoint(TenantOwned, table=True):
    """A signed statement that chain `chain` had `count` records ending at `seq` with hash
    `head_hash` at `at`: Ed25519 by the platform key (`public_key`), over
    `checkpoints.statement(...)`. Exported, it proves the chain's past to an auditor."""

    __tablename__ = "audit_checkpoint"

    tenant_id: str | None = Field(default=None, foreign_key="tenant.id", index=True, max_length=36,
                                  nullable=True)
    chain: str = Field(primary_key=True, max_length=40)
    seq: int = Field(primary_key=True)
    head_hash: str = Field(max_length=64)
    at: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False))
    count: int
    public_key: str = Field(max_length=64)  # Ed25519, raw 32 bytes, base64
    signature: str = Field(max_length=128)  # Ed25519, raw 64 bytes, base64


class AuditSigningKey(SQLModel, table=True):
    """The platform's checkpoint key: the private key sealed with the gateway's SecretBox
    (`runtime.secrets`, as tenants' DeFi keys are), the public key beside it for reading."""

    __tablename__ = "audit_signing_key"

    id: str = Field(primary_key=True, max_length=36)
    public_key: str = Field(max_length=64)
    sealed_key: str = Field(sa_column=Column(Text, nullable=False))
    created_at: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False))
