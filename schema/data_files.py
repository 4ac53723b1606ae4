"""A tenant's own market data files: upload, list and delete (tenant admins; reading the list
takes the plugin installations' read permission). The files feed the tenant's built-in file
source (gateway/marketdata/uploads.py): their instruments answer core `instruments`, `bars`
and `quote` for this tenant only. The bytes travel base64-encoded in the request, so a file is
bounded by the gateway's request size (`ALPHINTRA_MAX_BODY_BYTES`)."""

from __future__ import annotations

import base64
import binascii
from datetime import datetime

import strawberry
from strawberry.types import Info

from gateway.marketdata.uploads import FileInvalid, StoredFile
from schema.marketplace import _allowed


@strawberry.type(description="One of the tenant's own market data files, as stored.")
class MarketDataFile:
    name: str
    sha256: str
    size: int = strawberry.field(description="Bytes.")
    instruments: int
    bars: int
    created_at: datetime
    created_by: str | None

    @classmethod
    def of(cls, f: StoredFile) -> MarketDataFile:
        return cls(name=f.name, sha256=f.sha256, size=f.size, instruments=f.instruments, bars=f.bars,
                   created_at=f.created_at, created_by=f.created_by)


@strawberry.input
class MarketDataFileInput:
    name: str = strawberry.field(description="Ending .csv or .parquet; a file of that name is replaced.")
    content_base64: str = strawberry.field(description="The file's bytes, base64 (RFC 4648).")


@strawberry.type
class Query:
    @strawberry.field(description="The tenant's own market data files, by name.")
    def market_data_files(self, info: Info) -> list[MarketDataFile]:
        c = _allowed(info, "read")
        return [MarketDataFile.of(f) for f in c.runtime.market_data_files.list(c.tenant_id)]


@strawberry.type
class Mutation:
    @strawberry.mutation(description="Store a CSV or Parquet file of OHLCV bars in the file source's "
                                     "layout (docs/design/markets.md, the file source); it is read whole "
                                     "first, and a file that breaks the layout is refused naming its row "
                                     "and column (tenant admins).")
    def put_market_data_file(self, info: Info, input: MarketDataFileInput) -> MarketDataFile:
        c = _allowed(info, "install")
        try:
            content = base64.b64decode(input.content_base64, validate=True)
        except (binascii.Error, ValueError):
            raise FileInvalid("contentBase64 is not base64", details={"name": input.name[:100]}) from None
        return MarketDataFile.of(c.runtime.market_data_files.put(c.tenant_id, c.me.user_id, input.name,
                                                                 content))

    @strawberry.mutation(description="Delete one of the tenant's market data files (tenant admins).")
    def delete_market_data_file(self, info: Info, name: str) -> bool:
        c = _allowed(info, "install")
        c.runtime.market_data_files.delete(c.tenant_id, c.me.user_id, name)
        return True
