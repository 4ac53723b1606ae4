"""Market data: one normalised view (instruments, bars, quotes) over every data-source plugin,
the built-in market twin and file source included."""

from gateway.marketdata.service import INTERVALS, MAX_BARS, MarketDataService

__all__ = ["INTERVALS", "MAX_BARS", "MarketDataService"]
