"""The plugin: a market data source of sentiment bars, and a GraphQL field.

A real feed would call Acme's API with `context.config["api_key"]` (the manifest declares
`network:egress:api.acme-news.example`); this example derives a reproducible index from a hash
of (ticker, hour), so it runs offline. It imports only `plugins.sdk` and strawberry.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import strawberry

from plugins.sdk import (
    Bar,
    Instrument,
    PluginContext,
    Quote,
    SchemaExtension,
    current_context,
    hookimpl,
)

DEFAULT_TICKERS = ("AAPL.XNAS", "MSFT.XNAS", "VOD.XLON", "7203.XTKS")
STEP = {"1h": timedelta(hours=1), "1d": timedelta(days=1)}
CENT = Decimal("0.01")


def _hourly_score(ticker: str, hour: datetime) -> tuple[Decimal, int]:
    """(index 0..100, articles) for one ticker and UTC hour; reproducible."""
    digest = hashlib.sha256(f"{ticker}|{hour:%Y-%m-%dT%H}".encode()).digest()
    index = Decimal(int.from_bytes(digest[:4], "big") % 10_001) / 100
    return index.quantize(CENT), digest[4] % 12


def _sentiment_symbol(ticker: str) -> tuple[str, str]:
    symbol, mic = ticker.split(".", 1)
    return f"{symbol}-SENT", mic


class SentimentSource:
    """Bars of the sentiment index: open/close the first/last hourly reading of the interval,
    high/low their extremes, volume the number of articles."""

    def __init__(self, tickers: Sequence[str]) -> None:
        self.name = "acme-news-sentiment"
        self._by_key = {}
        for ticker in tickers:
            symbol, mic = _sentiment_symbol(ticker)
            self._by_key[f"{symbol}.{mic}"] = (ticker, Instrument(
                symbol=symbol, mic=mic, currency="USD", name=f"Acme sentiment {ticker}",
                asset_class="ALTERNATIVE_DATA", tick_size=CENT))

    def instruments(self) -> list[Instrument]:
        return [inst for _, inst in self._by_key.values()]

    def bars(self, instrument: Instrument, start: datetime, end: datetime,
             interval: str) -> list[Bar]:
        ticker, _ = self._by_key[instrument.key]
        step = STEP.get(interval)
        if step is None:
            return []
        out = []
        t = start.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
        if interval == "1d":
            t = t.replace(hour=0)
        if t < start:
            t += step
        while t < end:
            hours = [t + timedelta(hours=h) for h in range(int(step.total_seconds() // 3600))]
            readings = [_hourly_score(ticker, h) for h in hours]
            values = [r[0] for r in readings]
            out.append(Bar(symbol=instrument.symbol, mic=instrument.mic, start=t, interval=interval,
                           open=values[0], high=max(values), low=min(values), close=values[-1],
                           volume=Decimal(sum(r[1] for r in readings)), session="CONTINUOUS"))
            t += step
        return out

    def quote(self, instrument: Instrument, at: datetime) -> Quote | None:
        ticker, _ = self._by_key[instrument.key]
        index, articles = _hourly_score(ticker, at.astimezone(UTC))
        return Quote(symbol=instrument.symbol, mic=instrument.mic, at=at, bid=index, ask=index,
                     bid_size=Decimal(articles), ask_size=Decimal(articles))


@strawberry.type
class AcmeSentimentReading:
    ticker: str
    at: datetime
    index: Decimal = strawberry.field(description="0 (bearish) to 100 (bullish).")
    articles: int


@strawberry.type
class AcmeSentimentQuery:
    @strawberry.field(description="The latest hourly news-sentiment reading of a ticker "
                                  "(SYMBOL.MIC), from Acme Data.")
    def acme_news_sentiment(self, ticker: str) -> AcmeSentimentReading:
        context = current_context()
        followed = tuple(context.config.get("tickers") or DEFAULT_TICKERS)
        if ticker not in followed:
            raise ValueError(f"{ticker} is not followed; configure it in `tickers`")
        hour = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
        index, articles = _hourly_score(ticker, hour)
        return AcmeSentimentReading(ticker=ticker, at=hour, index=index, articles=articles)


@hookimpl
def alphintra_market_data_sources(context: PluginContext) -> list[SentimentSource]:
    return [SentimentSource(tuple(context.config.get("tickers") or DEFAULT_TICKERS))]


@hookimpl
def alphintra_schema_extensions(context: PluginContext) -> list[SchemaExtension]:
    return [SchemaExtension(query=AcmeSentimentQuery)]
