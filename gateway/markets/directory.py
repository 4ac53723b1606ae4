"""The venue directory the gateway hands to plugins (`plugins.sdk.VenueDirectory`).

It answers venue facts from the registry (`venues.py`) and trading sessions from the calendar
library through `VenueCalendars` (`calendars.py`). Read-only and thread-safe: plugins such as
the market simulator call it from worker threads.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from decimal import Decimal

from gateway.markets.calendars import VenueCalendars, require_aware
from gateway.markets.errors import VenueUnknown
from gateway.markets.venues import VENUES, Venue
from plugins.sdk import SessionWindow, VenueInfo


class CalendarVenueDirectory:
    """`plugins.sdk.VenueDirectory` backed by exchange_calendars / pandas_market_calendars."""

    def __init__(self, venues: Iterable[Venue] = VENUES,
                 calendars: VenueCalendars | None = None) -> None:
        self._venues: dict[str, Venue] = {v.mic: v for v in venues}
        self._infos: tuple[VenueInfo, ...] = tuple(v.info() for v in self._venues.values())
        self.calendars = calendars or VenueCalendars(self._venues.values())

    # -- the plugins.sdk.VenueDirectory protocol --------------------------------------------
    def venues(self) -> Sequence[VenueInfo]:
        return self._infos

    def venue(self, mic: str) -> VenueInfo:
        return self.spec(mic).info()

    def is_open(self, mic: str, at: datetime) -> bool:
        venue = self.spec(mic)
        if venue.always_open:
            return True
        t = require_aware(at).timestamp()
        return self.calendars.table(mic, t).is_open(t)

    def sessions(self, mic: str, start: datetime, end: datetime) -> Sequence[SessionWindow]:
        """Trading windows overlapping [start, end), in order; a lunch break splits a day in two.

        The 24/7 venue answers one window spanning [start, end)."""
        venue = self.spec(mic)
        start, end = require_aware(start), require_aware(end)
        if end <= start:
            return []
        if venue.always_open:
            return [SessionWindow(mic, start.astimezone(UTC), end.astimezone(UTC))]
        a, b = start.timestamp(), end.timestamp()
        table = self.calendars.table(mic, a, b)
        return [SessionWindow(mic, datetime.fromtimestamp(o, UTC), datetime.fromtimestamp(c, UTC))
                for o, c in table.windows_between(a, b)]

    def lot_size(self, mic: str, price: Decimal) -> Decimal:
        """The registry's lot at `price` (the common case; an instrument may know better)."""
        return self.spec(mic).lot_size.at(price)

    def tick_size(self, mic: str, price: Decimal) -> Decimal:
        """The registry's tick at `price` (the common case; an instrument may know better)."""
        return self.spec(mic).tick_size.at(price)

    # -- beyond the protocol: the gateway's own view --------------------------------------
    def spec(self, mic: str) -> Venue:
        """The full registry entry (lot and tick rules, auction windows); VENUE_UNKNOWN else."""
        venue = self._venues.get(mic.upper()) if isinstance(mic, str) else None
        if venue is None:
            raise VenueUnknown(f"no venue with MIC {mic!r}")
        return venue

    def specs(self) -> Sequence[Venue]:
        return tuple(self._venues.values())
