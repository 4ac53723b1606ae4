"""A tenant's own market data files, uploaded through the API: their bytes in the database, so
every replica and worker serves the same data (gateway/marketdata/uploads.py)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Column, LargeBinary, UniqueConstraint
from sqlmodel import Field

from gateway.db import TenantOwned, UTCDateTime, utcnow
from gateway.tenancy.models import new_id


class TenantDataFile(TenantOwned, table=True):
    __tablename__ = "tenant_data_file"
    __table_args__ = (UniqueConstraint("tenant_id", "name"),)

    id: str = Field(default_factory=new_id, primary_key=True, max_length=36)
    name: str = Field(max_length=100)  # a CSV or Parquet file name in the file source's layout
    sha256: str = Field(max_length=64)
    size: int
    instruments: int  # how many instruments it holds, as read when it was stored
    bars: int
    content: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    created_by: str | None = Field(default=None, max_length=36)
    created_at: datetime = Field(default_factory=utcnow, sa_column=Column(UTCDateTime(), nullable=False))
