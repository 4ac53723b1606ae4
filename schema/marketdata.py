"""Market data: instruments, bars and quotes, one normalised shape whatever the source plugin.

Market data is reference data, the same for every tenant: any authenticated principal may read
it, whatever its roles; nothing here reads or returns tenant data. Prices, sizes and volumes are
`Decimal` (a string on the wire); instants are UTC. Instruments are named by their key,
"SYMBOL.MIC" (e.g. "AAPL.XNAS").
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
from datetime import datetime
from decimal import Decimal

import strawberry
from starlette.concurrency import run_in_threadpool
from strawberry.types import Info

from gateway.marketdata import MarketDataService
from gateway.marketdata.errors import IntervalInvalid
from gateway.marketdata.service import encode_key_cursor, key_page
from plugins import sdk
from schema.common import DEFAULT_PAGE, Connection, Edge, PageInfo, ctx

MIN_QUOTE_INTERVAL_MS = 250
MAX_QUOTE_INTERVAL_MS = 60_000


def _service(info: Info) -> MarketDataService:
    c = ctx(info)
    c.me  # authenticated, any role: market data is reference data  # noqa: B018
    return c.runtime.market_data


@strawberry.type(description="A tradable instrument, named by its key SYMBOL.MIC.")
class Instrument:
    key: str
    symbol: str
    mic: str = strawberry.field(description="ISO 10383 venue code.")
    currency: str = strawberry.field(description="ISO 4217 code of its prices.")
    name: str
    isin: str | None = strawberry.field(description="ISO 6166, where one exists.")
    asset_class: str
    lot_size: int
    tick_size: Decimal
    source: str = strawberry.field(description="The data source that serves it.")
    plugin: str = strawberry.field(description="The plugin that offers that source: a built-in's name, "
                                               "or the id of a marketplace plugin this tenant installed.")

    @classmethod
    def of(cls, instrument: sdk.Instrument, source: str, plugin: str = "") -> Instrument:
        return cls(key=instrument.key, symbol=instrument.symbol, mic=instrument.mic,
                   currency=instrument.currency, name=instrument.name, isin=instrument.isin,
                   asset_class=instrument.asset_class, lot_size=instrument.lot_size,
                   tick_size=instrument.tick_size, source=source, plugin=plugin)


def _instrument(service: MarketDataService, instrument: sdk.Instrument) -> Instrument:
    entry = service.source_of(instrument.key)
    return Instrument.of(instrument, entry.name, entry.plugin)


@strawberry.type(description="OHLCV over [start, start + interval), cut short by the session's "
                             "end; a 1d bar covers one trading day and starts at its first open.")
class Bar:
    symbol: str
    mic: str
    start: datetime
    interval: str
    open: Decimal
    high: Decimal
    low: Decimal
    close: Decimal
    volume: Decimal
    session: str

    @classmethod
    def of(cls, bar: sdk.Bar) -> Bar:
        return cls(symbol=bar.symbol, mic=bar.mic, start=bar.start, interval=bar.interval,
                   open=bar.open, high=bar.high, low=bar.low, close=bar.close, volume=bar.volume,
                   session=bar.session)


@strawberry.type(description="Best bid and ask at an instant. Outside trading sessions a source "
                             "may answer an indicative quote: the last close as bid and ask, "
                             "with zero sizes.")
class Quote:
    instrument: str = strawberry.field(description="The instrument's key.")
    symbol: str
    mic: str
    at: datetime
    bid: Decimal
    ask: Decimal
    bid_size: Decimal
    ask_size: Decimal

    @classmethod
    def of(cls, quote: sdk.Quote) -> Quote:
        return cls(instrument=f"{quote.symbol}.{quote.mic}", symbol=quote.symbol, mic=quote.mic,
                   at=quote.at, bid=quote.bid, ask=quote.ask, bid_size=quote.bid_size,
                   ask_size=quote.ask_size)


@strawberry.type
class Query:
    @strawberry.field(description="Instruments by key, optionally on one venue (`mic`) and "
                                  "matching `search` in symbol, name or ISIN.")
    def instruments(self, info: Info, mic: str | None = None, search: str | None = None,
                    first: int = DEFAULT_PAGE, after: str | None = None) -> Connection[Instrument]:
        service = _service(info)
        items, has_next = key_page(service.instruments(mic, search), lambda i: i.key, first, after,
                                   ctx(info).runtime.settings.max_page_size)
        edges = [Edge(cursor=encode_key_cursor(i.key), node=_instrument(service, i)) for i in items]
        return Connection(edges=edges, page_info=PageInfo(
            has_next_page=has_next, end_cursor=edges[-1].cursor if edges else None))

    @strawberry.field(description="An instrument by key, SYMBOL.MIC.")
    def instrument(self, info: Info, key: str) -> Instrument:
        service = _service(info)
        return _instrument(service, service.instrument(key))

    @strawberry.field(description="Bars of `interval` (1m, 5m, 15m, 1h, 1d) starting in "
                                  "[start, end), oldest first; only inside trading sessions. At "
                                  "most 10,000 bars per request.")
    def bars(self, info: Info, instrument: str, start: datetime, end: datetime,
             interval: str = "1d") -> list[Bar]:
        return [Bar.of(b) for b in _service(info).bars(instrument, start, end, interval)]

    @strawberry.field(description="The quote at `at` (default: now); null where the source has "
                                  "none.")
    def quote(self, info: Info, instrument: str, at: datetime | None = None) -> Quote | None:
        service = _service(info)
        quote = service.quote(instrument, at or service.now())
        return Quote.of(quote) if quote else None


@strawberry.type
class Subscription:
    @strawberry.subscription(description="Fresh quotes of `instruments` (at most 50) every "
                                         "`intervalMs` milliseconds (250 to 60,000), from now "
                                         "on; an instrument whose source has no quote at that "
                                         "moment is left out of that round.")
    async def quotes(self, info: Info, instruments: list[str], interval_ms: int = 1000
                     ) -> AsyncGenerator[list[Quote], None]:
        service = _service(info)
        if not MIN_QUOTE_INTERVAL_MS <= interval_ms <= MAX_QUOTE_INTERVAL_MS:
            raise IntervalInvalid(f"intervalMs must be between {MIN_QUOTE_INTERVAL_MS} and "
                                  f"{MAX_QUOTE_INTERVAL_MS}")
        keys = await run_in_threadpool(service.check_quote_request, instruments)
        while True:
            # Sources compute (the twin simulates), so off the event loop.
            quotes = await run_in_threadpool(service.quotes, keys, service.now())
            yield [Quote.of(q) for q in quotes]
            await asyncio.sleep(interval_ms / 1000)

