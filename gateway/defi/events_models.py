"""Where the DeFi event poller stopped, per chain: the platform's row, not a tenant's."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Column
from sqlmodel import Field, SQLModel

from gateway.defi.lending_models import stamp


class DefiEventCursor(SQLModel, table=True):
    __tablename__ = "defi_event_cursor"

    chain_id: int = Field(sa_column=Column(BigInteger, primary_key=True, autoincrement=False))
    # The chain's genesis block hash: an embedded chain starts again at each process start, so
    # a cursor from another genesis is reset rather than trusted.
    genesis_hash: str = Field(max_length=66)
    last_block: int = Field(sa_column=Column(BigInteger, nullable=False))
    updated_at: datetime = stamp()
