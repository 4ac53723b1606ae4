"""The public SDK: markers, the normalised data models plugins return, the protocols of the
providers they offer, and the context they receive. Prices and quantities are Decimal;
timestamps are timezone-aware UTC."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any, Protocol, runtime_checkable

import pluggy

PROJECT = "alphintra"
hookimpl = pluggy.HookimplMarker(PROJECT)


# Normalised market data: one model whatever the source.
@dataclass(frozen=True)
class Instrument:
    symbol: str
    mic: str  # ISO 10383 venue code
    currency: str  # ISO 4217
    name: str = ""
    isin: str | None = None  # ISO 6166 where one exists
    asset_class: str = "EQUITY"
    lot_size: int = 1
    tick_size: Decimal = Decimal("0.01")

    @property
    def key(self) -> str:
        return f"{self.symbol}.{self.mic}"


@dataclass(frozen=True)
class Bar:
    symbol: str
    mic: str
    start: datetime  # UTC, start of the interval
    interval: str  # "1m", "5m", "15m", "1h", "1d"
    open: Decimal
    high: Decimal
    low: Decimal
    close: Decimal
    volume: Decimal
    session: str = "REGULAR"


@dataclass(frozen=True)
class Quote:
    symbol: str
    mic: str
    at: datetime
    bid: Decimal
    ask: Decimal
    bid_size: Decimal
    ask_size: Decimal


@dataclass(frozen=True)
class Trade:
    symbol: str
    mic: str
    at: datetime
    price: Decimal
    quantity: Decimal


@dataclass(frozen=True)
class FxRate:
    base: str
    quote: str
    rate: Decimal  # units of quote per one unit of base
    at: datetime
    source: str = ""


# What the gateway tells plugins about venues (implemented by the gateway, read-only here).
@dataclass(frozen=True)
class VenueInfo:
    mic: str
    name: str
    region: str
    country: str
    currency: str
    timezone: str
    always_open: bool = False


@dataclass(frozen=True)
class SessionWindow:
    """One trading session of a venue, in UTC; a lunch break splits a day into two windows."""

    mic: str
    opens_at: datetime
    closes_at: datetime


@runtime_checkable
class VenueDirectory(Protocol):
    def venues(self) -> Sequence[VenueInfo]: ...
    def venue(self, mic: str) -> VenueInfo: ...
    def is_open(self, mic: str, at: datetime) -> bool: ...
    def sessions(self, mic: str, start: datetime, end: datetime) -> Sequence[SessionWindow]: ...


# Providers a plugin offers through its hooks.
@runtime_checkable
class MarketDataSource(Protocol):
    name: str

    def instruments(self) -> Sequence[Instrument]: ...
    def bars(self, instrument: Instrument, start: datetime, end: datetime,
             interval: str) -> Sequence[Bar]: ...
    def quote(self, instrument: Instrument, at: datetime) -> Quote | None: ...


@runtime_checkable
class FxRateProvider(Protocol):
    name: str

    def rate(self, base: str, quote: str, at: datetime) -> FxRate | None: ...
    def history(self, base: str, quote: str, start: datetime, end: datetime) -> Sequence[FxRate]: ...
    def interest_rate(self, currency: str, at: datetime) -> Decimal | None:
        """Annualised simple rate (e.g. Decimal("0.045")) for forward pricing, or None."""
        ...


@dataclass(frozen=True)
class PluginContext:
    """What a plugin receives: its own configuration, a logger, and the capabilities its
    manifest declared (only those)."""

    plugin_id: str
    config: Mapping[str, Any] = field(default_factory=dict)
    venues: VenueDirectory | None = None
    logger: logging.Logger = field(default_factory=lambda: logging.getLogger("alphintra.plugin"))
