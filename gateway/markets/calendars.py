"""Trading sessions from the calendar libraries, precomputed for bisecting.

Sessions, holidays, early closes and lunch breaks all come from exchange_calendars (XNYS …
XASX) or pandas_market_calendars (NSE, which exchange_calendars lacks); nothing here knows a
holiday. Per venue, the library's schedule is turned once into sorted arrays of trading
windows in UTC epoch seconds (a lunch break splits a day into two windows), so answering
"where is `at`?" is one bisect instead of a pandas look-up.

Coverage starts as the library's default range (exchange_calendars: twenty years back to one
ahead) and is extended on demand, by whole years, as far as the library allows: some
calendars end where their recorded holidays end (exchange_calendars' XSHG), and an instant
past that is SESSION_OUT_OF_RANGE rather than a guess. Calendars load on first use, under a
per-venue lock, and live on a `VenueCalendars` object owned by the runtime.
"""

from __future__ import annotations

import threading
import warnings
from bisect import bisect_right
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime
from functools import cached_property
from typing import TYPE_CHECKING, Any

from gateway.markets.errors import InstantNotAware, SessionOutOfRange, VenueUnknown
from gateway.markets.venues import CalendarSource, Venue

if TYPE_CHECKING:  # pandas loads with the first calendar, not with the gateway
    import pandas as pd

# The longest run of closed days a calendar has (Golden Week, Lunar New Year) is under two
# weeks; an instant this far inside the loaded range has its previous and next session loaded.
MARGIN_SECONDS = 40 * 86_400
MIN_YEAR, MAX_YEAR = 1990, 2100


def require_aware(at: datetime) -> datetime:
    if at.tzinfo is None or at.utcoffset() is None:
        raise InstantNotAware(f"{at.isoformat()} has no time zone; send an offset such as Z")
    return at


@dataclass(frozen=True)
class SessionTable:
    """One venue's trading windows over a loaded range, in UTC epoch seconds.

    Windows are sorted and disjoint. A trading day (the library's session) is one window, or
    two around a lunch break; `day` maps each window to its trading day.
    """

    opens: list[float]
    closes: list[float]
    day: list[int]
    day_opens: list[float]
    day_closes: list[float]
    lo: float  # instants in [lo, hi) have their neighbouring sessions loaded
    hi: float
    first: date  # the sessions loaded, by label
    last: date
    at_min_bound: bool  # the library has nothing before `first`
    at_max_bound: bool  # …or after `last`

    def covers(self, t: float) -> bool:
        return self.lo <= t < self.hi

    def is_open(self, t: float) -> bool:
        i = bisect_right(self.opens, t) - 1
        return i >= 0 and t < self.closes[i]

    def window_at_or_before(self, t: float) -> int:
        """Index of the last window opening at or before t (-1 if none)."""
        return bisect_right(self.opens, t) - 1

    def next_open_index(self, t: float) -> int:
        """Index of the first window opening strictly after t (len if none)."""
        return bisect_right(self.opens, t)

    def next_close_index(self, t: float) -> int:
        return bisect_right(self.closes, t)

    def day_in_session(self, t: float) -> float | None:
        """The open of the trading day `t` lies in (lunch break included), or None."""
        k = bisect_right(self.day_opens, t) - 1
        return self.day_opens[k] if k >= 0 and t < self.day_closes[k] else None

    def windows_between(self, start: float, end: float) -> Iterator[tuple[float, float]]:
        j = bisect_right(self.closes, start)
        while j < len(self.opens) and self.opens[j] < end:
            yield self.opens[j], self.closes[j]
            j += 1

    def is_first_window(self, i: int) -> bool:
        return i == 0 or self.day[i - 1] != self.day[i]

    def is_last_window(self, i: int) -> bool:
        return i == len(self.day) - 1 or self.day[i + 1] != self.day[i]


def _seconds(value: Any) -> float | None:
    import pandas as pd

    return None if value is None or pd.isna(value) else pd.Timestamp(value).timestamp()


def _midnight(day: date) -> float:
    return datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp()


def build_table(frame: pd.DataFrame, first: date, last: date, *, at_min_bound: bool,
                at_max_bound: bool) -> SessionTable:
    """From a schedule of sessions labelled `first`…`last`, with columns open, close and
    optionally break_start, break_end (UTC timestamps; NaT where a day has no break)."""
    opens: list[float] = []
    closes: list[float] = []
    day: list[int] = []
    day_opens: list[float] = []
    day_closes: list[float] = []
    breaks = "break_start" in frame.columns and "break_end" in frame.columns
    none = [None] * len(frame)
    rows = zip(frame["open"], frame["close"], frame["break_start"] if breaks else none,
               frame["break_end"] if breaks else none, strict=True)
    for k, (o, c, bs, be) in enumerate(rows):
        op, cl, b0, b1 = _seconds(o), _seconds(c), _seconds(bs), _seconds(be)
        if op is None or cl is None:
            raise ValueError(f"session {k} of the schedule has no open or close")
        day_opens.append(op)
        day_closes.append(cl)
        # A half day in Hong Kong has no afternoon: the library leaves its break empty.
        if b0 is not None and b1 is not None and op < b0 < b1 < cl:
            opens += [op, b1]
            closes += [b0, cl]
            day += [k, k]
        else:
            opens.append(op)
            closes.append(cl)
            day.append(k)
    lo = opens[0] if at_min_bound else _midnight(first) + MARGIN_SECONDS
    hi = closes[-1] if at_max_bound else _midnight(last) + 86_400 - MARGIN_SECONDS
    return SessionTable(opens, closes, day, day_opens, day_closes, lo, hi, first, last,
                        at_min_bound, at_max_bound)


@dataclass(frozen=True)
class Schedule:
    frame: pd.DataFrame
    first: date
    last: date


class CalendarLoader:
    """Reads one venue's schedule from its library."""

    def __init__(self, source: CalendarSource) -> None:
        self.source = source

    def initial(self) -> Schedule:
        """The library's default range (for pandas_market_calendars, the same span)."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # pandas deprecation chatter inside the libraries
            if self.source.library == "exchange_calendars":
                import exchange_calendars as xc

                calendar = xc.get_calendar(self.source.name)
                return Schedule(calendar.schedule, calendar.first_session.date(),
                                calendar.last_session.date())
        today = date.today()
        return self.schedule(today.replace(year=today.year - 20, day=1),
                             today.replace(year=today.year + 1, day=1))

    @cached_property
    def bounds(self) -> tuple[date, date]:
        """The first and last day the library can answer for this calendar at all."""
        lo, hi = date(MIN_YEAR, 1, 1), date(MAX_YEAR, 12, 31)
        if self.source.library == "exchange_calendars":
            import exchange_calendars as xc

            cls = type(xc.get_calendar(self.source.name))  # the library caches this one
            # Calendars built from recorded holidays (XHKG, XSHG) are bounded; rule-based are not.
            bound_min, bound_max = cls.bound_min(), cls.bound_max()
            if bound_min is not None:
                lo = max(lo, bound_min.date())
            if bound_max is not None:
                hi = min(hi, bound_max.date())
        return lo, hi

    def schedule(self, first: date, last: date) -> Schedule:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if self.source.library == "exchange_calendars":
                import exchange_calendars as xc

                frame = xc.get_calendar(self.source.name, start=first.isoformat(),
                                        end=last.isoformat()).schedule
            else:
                import pandas_market_calendars as pmc

                frame = pmc.get_calendar(self.source.name).schedule(
                    first.isoformat(), last.isoformat())
                frame = frame.rename(columns={"market_open": "open", "market_close": "close"})
        return Schedule(frame, first, last)


class VenueCalendars:
    """Lazily loaded, cached session tables for a set of venues. Thread-safe: a table is
    immutable and replaced whole when its range grows. Venues naming the same calendar (the
    alternative venues of a market follow its primary's) share one table."""

    def __init__(self, venues: Iterable[Venue]) -> None:
        self._keys: dict[str, tuple[str, str]] = {
            v.mic: (v.calendar.library, v.calendar.name) for v in venues if v.calendar}
        self._loaders = {key: CalendarLoader(CalendarSource(*key)) for key in set(self._keys.values())}
        self._tables: dict[tuple[str, str], SessionTable] = {}
        self._locks = {key: threading.Lock() for key in self._loaders}

    def mics(self) -> list[str]:
        return list(self._keys)

    def table(self, mic: str, *instants: float) -> SessionTable:
        """The venue's table, loaded to cover every one of `instants` (epoch seconds)."""
        key = self._keys.get(mic)
        if key is None:
            raise VenueUnknown(f"no calendar for venue {mic!r}")
        table = self._tables.get(key)
        if table is not None and all(table.covers(t) for t in instants):
            return table
        with self._locks[key]:
            table = self._tables.get(key)
            if table is None:
                table = self._build(key, self._loaders[key].initial())
            for t in instants:
                if not table.covers(t):
                    table = self._extend(key, table, t)
            self._tables[key] = table
            return table

    def warm(self) -> None:
        for mic in self._keys:
            self.table(mic)

    def _build(self, key: tuple[str, str], schedule: Schedule) -> SessionTable:
        lo, hi = self._loaders[key].bounds
        return build_table(schedule.frame, schedule.first, schedule.last,
                           at_min_bound=schedule.first <= lo, at_max_bound=schedule.last >= hi)

    def _extend(self, key: tuple[str, str], table: SessionTable, t: float) -> SessionTable:
        """Grow the range by whole years to cover `t`, as far as the library allows."""
        loader = self._loaders[key]
        lo, hi = loader.bounds
        year = datetime.fromtimestamp(t, UTC).year
        if not lo.year <= year <= hi.year:
            raise self._out_of_range(loader, table, t)
        first = max(lo, min(table.first, date(max(year - 1, lo.year), 1, 1)))
        last = min(hi, max(table.last, date(min(year + 1, hi.year), 12, 31)))
        if (first, last) != (table.first, table.last):
            table = self._build(key, loader.schedule(first, last))
        if not table.covers(t):
            raise self._out_of_range(loader, table, t)
        return table

    @staticmethod
    def _out_of_range(loader: CalendarLoader, table: SessionTable, t: float) -> SessionOutOfRange:
        lo, hi = loader.bounds
        return SessionOutOfRange(
            f"the {loader.source.library} {loader.source.name} calendar has no sessions around "
            f"{datetime.fromtimestamp(t, UTC).isoformat()} (it can cover {lo.isoformat()} to "
            f"{hi.isoformat()})")
