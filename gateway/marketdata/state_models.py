"""Tables of the market-state feed (gateway/marketdata/state.py): platform-wide, not
tenant-owned. A venue's halts, its short-sale restrictions and its short-sale list are the
same for every tenant, and only platform administrators (or the feed itself) write them."""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal

from sqlalchemy import Column
from sqlmodel import Field, SQLModel

from gateway.db import UTCDateTime, utcnow
from gateway.fx.models import ExactNumeric

VENUE_WIDE = "*"  # MarketHalt.symbol of a halt of the whole venue


class MarketHalt(SQLModel, table=True):
    """A halt in force: of one instrument on a venue, or (`symbol` "*") of the whole venue.
    `mode` HALTED refuses every order; REDUCING accepts only position-reducing ones. Lifting
    a halt deletes its row (the audit trail keeps the history)."""

    __tablename__ = "market_halt"

    mic: str = Field(primary_key=True, max_length=12)
    symbol: str = Field(primary_key=True, max_length=32)
    mode: str = Field(max_length=10)  # HALTED | REDUCING
    reason: str = Field(max_length=500)
    set_by: str | None = Field(default=None, max_length=36)
    set_at: datetime = Field(default_factory=utcnow, sa_column=Column(UTCDateTime(), nullable=False))


class ShortSaleRestrictionRow(SQLModel, table=True):
    """A short-sale price restriction triggered on `triggered_on` (the venue's local date) and
    in force through `in_force_until` (the next trading day), recorded when the feed first saw
    the trigger, so it survives a restart and a data source that forgets its history."""

    __tablename__ = "short_sale_restriction"

    mic: str = Field(primary_key=True, max_length=12)
    symbol: str = Field(primary_key=True, max_length=32)
    triggered_on: date = Field(primary_key=True)
    in_force_until: date
    rule: str = Field(max_length=40)  # SEC_RULE_201 | TSE_PRICE_RESTRICTION
    previous_close: Decimal = Field(sa_column=Column(ExactNumeric(10), nullable=False))
    trigger_price: Decimal = Field(sa_column=Column(ExactNumeric(10), nullable=False))
    recorded_at: datetime = Field(default_factory=utcnow,
                                  sa_column=Column(UTCDateTime(), nullable=False))


class ShortSaleDesignation(SQLModel, table=True):
    """An instrument on a venue's short-sale list (HKEX's designated securities): at a venue
    that keeps such a list, only these may be sold short."""

    __tablename__ = "short_sale_designation"

    mic: str = Field(primary_key=True, max_length=12)
    symbol: str = Field(primary_key=True, max_length=32)
    added_by: str | None = Field(default=None, max_length=36)
    added_at: datetime = Field(default_factory=utcnow, sa_column=Column(UTCDateTime(), nullable=False))


class MarketStateVersion(SQLModel, table=True):
    """One row (id 1) whose `version` every write of the tables above moves on, in the same
    transaction: a replica reads it to know when its cached halts and lists are stale."""

    __tablename__ = "market_state_version"

    id: int = Field(primary_key=True)
    version: int = Field(default=0)
