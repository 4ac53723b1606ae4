"""Stable error codes of the markets domain."""

from __future__ import annotations

from gateway.errors import DomainError, InvalidInput, NotFound


class VenueUnknown(NotFound):
    code = "VENUE_UNKNOWN"


class RegionUnknown(InvalidInput):
    code = "REGION_UNKNOWN"


class InstantNotAware(InvalidInput):
    """An instant without a time zone: it names no moment, so no session can be answered."""

    code = "INSTANT_NOT_AWARE"


class HorizonInvalid(InvalidInput):
    code = "HORIZON_INVALID"


class HorizonTooLong(InvalidInput):
    code = "HORIZON_TOO_LONG"


class SessionOutOfRange(DomainError):
    """The calendar library has no sessions that far (e.g. exchange_calendars' XSHG ends where
    its precomputed holiday list ends)."""

    code = "SESSION_OUT_OF_RANGE"
