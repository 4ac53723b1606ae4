"""Strategy vaults deployed for a tenant: tenant-owned rows, one per deployed contract."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, BigInteger, Column, Index
from sqlmodel import Field

from gateway.db import TenantOwned
from gateway.defi.lending_models import stamp
from gateway.tenancy.models import new_id


class DefiVault(TenantOwned, table=True):
    __tablename__ = "defi_vault"
    __table_args__ = (
        # Not unique: the embedded chain starts empty with each process and deploys at the
        # same addresses again, while rows from before stay.
        Index("ix_defi_vault_chain_address", "chain_id", "address"),
        Index("ix_defi_vault_tenant_created", "tenant_id", "created_at", "id"),
    )

    id: str = Field(default_factory=new_id, primary_key=True, max_length=36)
    chain_id: int = Field(sa_column=Column(BigInteger, nullable=False))
    address: str = Field(max_length=42)
    asset: str = Field(max_length=16)  # token symbol
    asset_address: str = Field(max_length=42)
    owner: str = Field(max_length=42)  # the tenant's signing address
    strategy: str | None = Field(default=None, max_length=42)
    timelock_seconds: int
    tx_hashes: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    # DEPLOYING: the deploy transaction is sent (its hash kept, `address` the one it creates),
    # not yet confirmed; only DEPLOYED vaults are listed or governed.
    status: str = Field(default="DEPLOYED", max_length=16)
    job_id: str | None = Field(default=None, foreign_key="job.id", index=True, max_length=36)
    created_by: str | None = Field(default=None, max_length=36)
    created_at: datetime = stamp()
