"""A report a job wrote: its bytes, kept in the database with their digest."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Column, Index, LargeBinary, UniqueConstraint
from sqlmodel import Field

from gateway.db import TenantOwned, UTCDateTime, utcnow
from gateway.tenancy.models import new_id


class ReportFile(TenantOwned, table=True):
    __tablename__ = "report_file"
    __table_args__ = (
        UniqueConstraint("job_id", "filename"),  # a retried job finds what it already wrote
        Index("ix_report_file_tenant_created", "tenant_id", "created_at"),
    )

    id: str = Field(default_factory=new_id, primary_key=True, max_length=36)
    job_id: str = Field(foreign_key="job.id", index=True, max_length=36)
    kind: str = Field(max_length=32)  # ReportKind
    media_type: str = Field(max_length=64)
    filename: str = Field(max_length=200)
    sha256: str = Field(max_length=64)
    size: int
    rows: int
    content: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    created_at: datetime = Field(default_factory=utcnow, sa_column=Column(UTCDateTime(), nullable=False))
