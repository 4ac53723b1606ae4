"""Stable error codes of pattern detection (unknown instruments and bad intervals keep market
data's: INSTRUMENT_UNKNOWN, INTERVAL_INVALID, INSTRUMENTS_TOO_MANY)."""

from __future__ import annotations

from gateway.errors import InvalidInput, NotFound


class WindowTooShort(InvalidInput):
    code = "WINDOW_TOO_SHORT"


class WindowTooLong(InvalidInput):
    code = "WINDOW_TOO_LONG"


class NoData(NotFound):
    """Fewer completed bars than the window asks for (none at all included) in the look-back."""

    code = "NO_DATA"


class InstantInFuture(InvalidInput):
    code = "INSTANT_IN_FUTURE"
