"""Tables of cross-currency portfolios and their hedges. Every row is tenant-owned.

Decimals are NUMERIC(28, 10) on every back-end (rates NUMERIC(28, 16)). PostgreSQL keeps them
exactly. SQLite stores NUMERIC as a binary double, which holds 15 significant digits, and reads
it back formatted to the column's scale, inventing digits past the fifteenth
(-123456789.12 comes back -123456789.1200000048); `ExactNumeric` rounds what SQLite returns to
15 significant digits again, and the service refuses inputs with more (`FxService.number`), so
every value comes back exactly as written on both back-ends.
"""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import JSON, Column, Index, Numeric, UniqueConstraint
from sqlalchemy.types import TypeDecorator
from sqlmodel import Field

from gateway.db import TenantOwned, UTCDateTime, utcnow
from gateway.tenancy.models import new_id

SQLITE_DIGITS = 15


class ExactNumeric(TypeDecorator[Decimal]):
    """NUMERIC(28, scale) that gives back on SQLite the (at most 15-digit) Decimal written."""

    impl = Numeric
    cache_ok = True

    def __init__(self, scale: int = 10) -> None:
        super().__init__(precision=28, scale=scale, asdecimal=True)

    def process_result_value(self, value: Decimal | None, dialect: Any) -> Decimal | None:
        if value is None or dialect.name != "sqlite" or value == 0:
            return value
        exponent = value.adjusted() - SQLITE_DIGITS + 1
        return value.quantize(Decimal(1).scaleb(exponent)).normalize()


def _decimal(scale: int = 10) -> Any:
    return Field(sa_column=Column(ExactNumeric(scale), nullable=False))


def _stamp() -> Any:
    return Field(default_factory=utcnow, sa_column=Column(UTCDateTime(), nullable=False))


class Portfolio(TenantOwned, table=True):
    __table_args__ = (
        UniqueConstraint("tenant_id", "name"),
        UniqueConstraint("tenant_id", "idempotency_key"),
        Index("ix_portfolio_tenant_created", "tenant_id", "created_at"),
    )

    id: str = Field(default_factory=new_id, primary_key=True, max_length=36)
    name: str = Field(max_length=200)
    base_currency: str = Field(max_length=3)
    idempotency_key: str | None = Field(default=None, max_length=128)
    created_by: str | None = Field(default=None, max_length=36)
    created_at: datetime = _stamp()
    # Touched by every hedge execution first thing in its transaction, so two executions on one
    # portfolio take turns (a row lock on PostgreSQL, the write lock on SQLite) and never both
    # hedge the same exposure.
    updated_at: datetime = _stamp()


class Position(TenantOwned, table=True):
    """Holding of one instrument on one venue, in the venue's currency."""

    __tablename__ = "portfolio_position"  # "position" is left to the trading domain's own
    __table_args__ = (UniqueConstraint("portfolio_id", "instrument", "mic"),)

    id: str = Field(default_factory=new_id, primary_key=True, max_length=36)
    portfolio_id: str = Field(foreign_key="portfolio.id", index=True, max_length=36)
    instrument: str = Field(max_length=64)  # instrument key (SYMBOL.MIC), ISIN or symbol
    mic: str = Field(max_length=4)  # ISO 10383
    currency: str = Field(max_length=3)  # ISO 4217
    quantity: Decimal = _decimal()  # negative = short
    price: Decimal = _decimal()
    created_at: datetime = _stamp()
    updated_at: datetime = _stamp()


class CashBalance(TenantOwned, table=True):
    __tablename__ = "cash_balance"
    __table_args__ = (UniqueConstraint("portfolio_id", "currency"),)

    id: str = Field(default_factory=new_id, primary_key=True, max_length=36)
    portfolio_id: str = Field(foreign_key="portfolio.id", index=True, max_length=36)
    currency: str = Field(max_length=3)
    amount: Decimal = _decimal()  # negative = overdrawn
    created_at: datetime = _stamp()
    updated_at: datetime = _stamp()


class UnsettledTrade(TenantOwned, table=True):
    """Cash that moves on `settles_on` (positive = receivable); counts until that day."""

    __tablename__ = "unsettled_trade"

    id: str = Field(default_factory=new_id, primary_key=True, max_length=36)
    portfolio_id: str = Field(foreign_key="portfolio.id", index=True, max_length=36)
    currency: str = Field(max_length=3)
    amount: Decimal = _decimal()
    settles_on: date
    reference: str = Field(default="", max_length=64)
    created_at: datetime = _stamp()


class HedgeExecution(TenantOwned, table=True):
    """One `executeHedge` request: its idempotency key, the policy, and what it answered
    (exposure before and after), so a retry returns the first answer even when it traded
    nothing."""

    __tablename__ = "hedge_execution"
    __table_args__ = (UniqueConstraint("tenant_id", "idempotency_key"),)

    id: str = Field(default_factory=new_id, primary_key=True, max_length=36)
    portfolio_id: str = Field(foreign_key="portfolio.id", index=True, max_length=36)
    idempotency_key: str = Field(max_length=128)
    policy: dict[str, Any] = Field(sa_column=Column(JSON, nullable=False))
    summary: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    valued_at: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False))
    created_by: str | None = Field(default=None, max_length=36)
    created_at: datetime = _stamp()


class HedgePosition(TenantOwned, table=True):
    """An FX forward recorded by `executeHedge`: open from trade_date until value_date."""

    __tablename__ = "hedge_position"

    id: str = Field(default_factory=new_id, primary_key=True, max_length=36)
    portfolio_id: str = Field(foreign_key="portfolio.id", index=True, max_length=36)
    execution_id: str | None = Field(default=None, foreign_key="hedge_execution.id", index=True,
                                     max_length=36)
    pair: str = Field(max_length=7)  # foreign/base, e.g. EUR/USD
    currency: str = Field(max_length=3)  # the foreign currency
    base_currency: str = Field(max_length=3)
    notional: Decimal = _decimal()  # in `currency`, signed: selling it forward is negative
    # Rates keep 16 places: a JPY-based rate such as 0.006688917797 needs 12 for the 10
    # significant digits rates carry.
    spot_rate: Decimal = _decimal(16)
    forward_rate: Decimal = _decimal(16)  # units of base per one foreign, for value_date
    tenor_days: int
    trade_date: date
    value_date: date = Field(index=True)
    policy: str = Field(max_length=32)  # PolicyKind
    target_ratio: Decimal = _decimal()
    idempotency_key: str | None = Field(default=None, max_length=128)
    created_at: datetime = _stamp()
