"""DeFi tables (migration 0012). Token amounts are integers in the token's base units, stored
as decimal strings (they exceed 64 bits); both tables are tenant-owned."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Column, Index, Text, UniqueConstraint
from sqlmodel import Field

from gateway.db import TenantOwned, UTCDateTime, utcnow
from gateway.tenancy.models import new_id


def _stamp() -> Any:
    return Field(default_factory=utcnow, sa_column=Column(UTCDateTime(), nullable=False))


class DefiKey(TenantOwned, table=True):
    """A tenant's signing key on one chain, sealed with the gateway's SecretBox under the
    context f"defi-key:{tenant_id}:{chain_id}" (a sealed key moved to another row fails to
    open). Only `address` ever leaves the gateway."""

    __tablename__ = "defi_key"
    __table_args__ = (UniqueConstraint("tenant_id", "chain_id"),)

    id: str = Field(default_factory=new_id, primary_key=True, max_length=36)
    chain_id: int = Field(sa_column=Column(BigInteger, nullable=False))
    address: str = Field(max_length=42)
    sealed_key: str = Field(sa_column=Column(Text, nullable=False))
    created_at: datetime = _stamp()


class DefiSwap(TenantOwned, table=True):
    """One `defiSwap` request and its outcome: EXECUTED (mined), REFUSED (compliance, the
    simulation, or the chain's minimum-out check; nothing changed hands) or FAILED."""

    __tablename__ = "defi_swap"
    __table_args__ = (UniqueConstraint("tenant_id", "idempotency_key"),
                      Index("ix_defi_swap_tenant_created", "tenant_id", "created_at", "id"))

    id: str = Field(default_factory=new_id, primary_key=True, max_length=36)
    idempotency_key: str = Field(max_length=128)
    chain_id: int = Field(sa_column=Column(BigInteger, nullable=False))
    account: str = Field(max_length=42)
    token_in: str = Field(max_length=42)  # addresses
    token_out: str = Field(max_length=42)
    amount_in: str = Field(max_length=80)
    quoted_out: str = Field(max_length=80)
    min_out: str = Field(max_length=80)
    amount_out: str | None = Field(default=None, max_length=80)
    slippage_bps: int
    deadline: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False))
    route: list[Any] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    status: str = Field(max_length=16)
    error_code: str | None = Field(default=None, max_length=64)
    error_message: str | None = Field(default=None, max_length=500)
    tx_hashes: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    block_number: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))
    created_by: str | None = Field(default=None, max_length=36)
    created_at: datetime = _stamp()
