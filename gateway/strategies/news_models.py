"""The news analyses cache: one row per (tenant, item, provider, model).

An item is identified by its digest (sha256 of its timestamp, headline, text and tickers), so
the same text is analysed once per model whether it came from a source or inline. Rows are
tenant-owned: a tenant's analyses (and what it paid for) are its own.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Column, Text, UniqueConstraint
from sqlmodel import Field

from gateway.db import TenantOwned, UTCDateTime, utcnow
from gateway.tenancy.models import new_id


class NewsAnalysis(TenantOwned, table=True):
    __tablename__ = "news_analysis"
    __table_args__ = (UniqueConstraint("tenant_id", "item_digest", "provider", "model"),)

    id: str = Field(default_factory=new_id, primary_key=True, max_length=36)
    item_digest: str = Field(max_length=64, index=True)
    item_ref: str = Field(max_length=200)  # "<source>:<id>", or "inline:<id>"
    published_at: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False))
    provider: str = Field(max_length=80)
    model: str = Field(max_length=200)
    is_llm: bool
    sentiment: float  # -1..1: statistics, not money
    relevance: float  # 0..1
    instruments: list[Any] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    rationale: str = Field(sa_column=Column(Text, nullable=False))
    created_at: datetime = Field(default_factory=utcnow, sa_column=Column(UTCDateTime(), nullable=False))
