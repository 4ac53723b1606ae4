"""Stable error codes of market data."""

from __future__ import annotations

from gateway.errors import DomainError, InvalidInput, NotFound


class InstrumentUnknown(NotFound):
    code = "INSTRUMENT_UNKNOWN"


class IntervalInvalid(InvalidInput):
    code = "INTERVAL_INVALID"


class RangeInvalid(InvalidInput):
    """end not after start, or more bars than one request may return."""

    code = "RANGE_INVALID"


class TooManyInstruments(InvalidInput):
    code = "INSTRUMENTS_TOO_MANY"


class SourceFailed(DomainError):
    """A data-source plugin raised or answered in the wrong shape; `details.plugin` names it.
    Only requests that needed that source fail."""

    code = "PLUGIN_FAILED"
    http_status = 502


class HaltReasonInvalid(InvalidInput):
    """A halt, REDUCING state or resumption needs a reason of 1 to 500 characters."""

    code = "MARKET_HALT_REASON_INVALID"


class NotHalted(NotFound):
    """Resuming an instrument or venue that is not halted (nor REDUCING)."""

    code = "MARKET_NOT_HALTED"


class ShortSaleListUnsupported(InvalidInput):
    """A short-sale list entry for a venue that keeps no such list (every instrument there
    may be sold short, subject to its rules)."""

    code = "SHORT_SALE_LIST_UNSUPPORTED"


class MarketStateFuture(InvalidInput):
    """A market state asked for at an instant later than now: the feed never reads ahead."""

    code = "MARKET_STATE_FUTURE"
