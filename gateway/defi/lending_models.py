"""Tables of the lending side of DeFi: one row per lending action a tenant sent.

Token amounts are exact decimals of up to 18 places, stored as text (`DecimalText`) because
SQLite keeps NUMERIC as a binary double; the text is the Decimal's canonical form, so both
back-ends give back exactly what was written.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import JSON, BigInteger, Column, Index, String, UniqueConstraint
from sqlalchemy.types import TypeDecorator
from sqlmodel import Field

from gateway.db import TenantOwned, UTCDateTime, utcnow
from gateway.tenancy.models import new_id


class DecimalText(TypeDecorator[Decimal]):
    """An exact Decimal kept as its text."""

    impl = String(80)
    cache_ok = True

    def process_bind_param(self, value: Decimal | None, dialect: Any) -> str | None:
        return None if value is None else format(value, "f")

    def process_result_value(self, value: str | None, dialect: Any) -> Decimal | None:
        return None if value is None else Decimal(value)


def decimal_text(nullable: bool = False) -> Any:
    return Field(default=None if nullable else ..., sa_column=Column(DecimalText(), nullable=nullable))


def stamp() -> Any:
    return Field(default_factory=utcnow, sa_column=Column(UTCDateTime(), nullable=False))


class DefiLendingAction(TenantOwned, table=True):
    """A supply, borrow, repay or withdrawal the gateway signed and sent for the tenant."""

    __tablename__ = "defi_lending_action"
    __table_args__ = (
        UniqueConstraint("tenant_id", "idempotency_key"),
        Index("ix_defi_lending_action_tenant_created", "tenant_id", "created_at", "id"),
    )

    id: str = Field(default_factory=new_id, primary_key=True, max_length=36)
    chain_id: int = Field(sa_column=Column(BigInteger, nullable=False))
    action: str = Field(max_length=16)  # supply | borrow | repay | withdraw
    account: str = Field(max_length=42)  # the tenant's signing address
    pool: str = Field(max_length=42)  # the lending pool contract
    token: str = Field(max_length=16)  # token symbol
    token_address: str = Field(max_length=42)
    amount: Decimal = decimal_text()  # in whole tokens
    health_factor_before: Decimal | None = decimal_text(nullable=True)  # null: no debt
    health_factor_after: Decimal | None = decimal_text(nullable=True)
    # an approval first where one was needed, then the action
    tx_hashes: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    # PENDING: written before anything is sent; SENT: the action's hash (last of tx_hashes) is
    # known, its receipt not yet seen; EXECUTED: mined; FAILED: the action reverted.
    status: str = Field(default="EXECUTED", max_length=16)
    block_number: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))
    idempotency_key: str | None = Field(default=None, max_length=128)
    created_by: str | None = Field(default=None, max_length=36)
    created_at: datetime = stamp()
