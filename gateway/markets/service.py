"""Markets: regions, venues, sessions, active markets and the follow-the-sun hand-offs.

Definitions the answers follow (all instants timezone-aware; UTC out):

Session status of a venue at an instant `at`, with a trading day being the calendar library's
session (one window, or two around a lunch break), windows half-open [open, close):
- OPEN: inside a window. BREAK: between the two windows of one trading day (lunch).
- PRE_OPEN: before a trading day's first open, within the venue's `pre_open_minutes`
  (opening auction, pre-market); POST_CLOSE: after a day's last close, within
  `post_close_minutes` (closing auction, after-hours). POST_CLOSE wins if both would apply.
- CLOSED: otherwise (nights, weekends, holidays).
- opensAt / closesAt: the first open and last close of the trading day `at` is in (OPEN or
  BREAK), else of the last trading day that has ended.
- nextOpen: the first instant after `at` at which trading starts (a day's open, or the end of
  a lunch break); nextClose: the first instant after `at` at which it stops (a lunch break's
  start or a day's close). Either is null only where the library knows no later session.
- The 24/7 venue is always OPEN and has no opens or closes (all four null).

Leading region (follow-the-sun): among the venues in a trading day at that instant (OPEN, or
BREAK: a lunch break does not hand the book away), the region whose venue opened its day most
recently leads; ties go to the region with more venues in session, then to the order of
REGIONS. With no venue in session (evenings, weekends) the "global" 24/7 venue leads. So a
weekday runs apac → emea (at the first European open) → americas (at the first American open)
→ global (at the last American close) → apac (at Sydney's or Tokyo's open). A hand-off is an
instant at which the leader changes.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import re
from bisect import bisect_right
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from gateway.markets.calendars import SessionTable, require_aware
from gateway.markets.clock import Clock, SystemClock
from gateway.markets.directory import CalendarVenueDirectory
from gateway.markets.errors import HorizonInvalid, HorizonTooLong, RegionUnknown, SessionOutOfRange
from gateway.markets.venues import REGIONS, Region, Venue

log = logging.getLogger(__name__)

MAX_HORIZON = timedelta(days=14)
GLOBAL = "global"
# How far ahead the event stream looks for the next hand-off before concluding none is due
# (the longest all-closed stretch, a long weekend of holidays, is far shorter).
HANDOFF_LOOKAHEAD = 30 * 86_400
_REGION_ORDER = {r.code: n for n, r in enumerate(REGIONS)}


class SessionStatus(enum.StrEnum):
    OPEN = "OPEN"
    CLOSED = "CLOSED"
    BREAK = "BREAK"
    PRE_OPEN = "PRE_OPEN"
    POST_CLOSE = "POST_CLOSE"


class SessionEventKind(enum.StrEnum):
    # Declared in the order events of one instant are sent: stops, starts, then the hand-off
    # they cause.
    CLOSE = "CLOSE"
    BREAK_START = "BREAK_START"
    BREAK_END = "BREAK_END"
    OPEN = "OPEN"
    REGION_HANDOFF = "REGION_HANDOFF"


_KIND_ORDER = {k: n for n, k in enumerate(SessionEventKind)}


@dataclass(frozen=True)
class VenueSession:
    mic: str
    at: datetime
    status: SessionStatus
    opens_at: datetime | None
    closes_at: datetime | None
    next_open: datetime | None
    next_close: datetime | None


@dataclass(frozen=True)
class RegionVenues:
    region: Region
    venues: tuple[Venue, ...]


@dataclass(frozen=True)
class Leadership:
    region: str
    venues: tuple[str, ...]  # the leading region's venues in session (the 24/7 one for global)


@dataclass(frozen=True)
class Handoff:
    at: datetime
    from_region: str
    to_region: str
    venues: tuple[str, ...]


@dataclass(frozen=True)
class SunPath:
    """Who leads at `at`, and every hand-off in (at, until]."""

    at: datetime
    until: datetime
    leader: Leadership
    handoffs: tuple[Handoff, ...]
    uncovered: tuple[str, ...]  # venues left out: their calendar does not reach the horizon


@dataclass(frozen=True)
class SessionEvent:
    kind: SessionEventKind
    at: datetime
    region: str  # the venue's region; for a hand-off, the region taking the lead
    mic: str | None = None
    from_region: str | None = None
    to_region: str | None = None


@dataclass(frozen=True)
class EventFilter:
    """Venue events for venues in `mics` or in `regions`; hand-offs touching `regions`. Both
    empty: everything."""

    mics: frozenset[str]
    regions: frozenset[str]

    @property
    def everything(self) -> bool:
        return not self.mics and not self.regions

    def wants_venue(self, venue: Venue) -> bool:
        return self.everything or venue.mic in self.mics or venue.region in self.regions

    def wants_handoffs(self) -> bool:
        return self.everything or bool(self.regions)

    def wants_handoff(self, handoff: Handoff) -> bool:
        return self.everything or bool({handoff.from_region, handoff.to_region} & self.regions)


_DURATION = re.compile(r"P(?:(\d+)W)?(?:(\d+)D)?(?:T(?:(\d+)H)?(?:(\d+)M)?(?:(\d+)S)?)?")


def parse_horizon(text: str) -> timedelta:
    """An ISO 8601 duration in weeks, days, hours, minutes, seconds ("P7D", "PT36H", "P1DT12H").
    Years and months are refused: they have no fixed length."""
    match = _DURATION.fullmatch(text.strip().upper())
    if match is None or not any(match.groups()) or text.strip().upper().endswith("T"):
        raise HorizonInvalid(f"{text!r} is not an ISO 8601 duration such as P7D or PT36H")
    weeks, days, hours, minutes, seconds = (int(g or 0) for g in match.groups())
    try:
        return timedelta(weeks=weeks, days=days, hours=hours, minutes=minutes, seconds=seconds)
    except OverflowError:
        raise HorizonTooLong(f"{text!r} is far longer than any horizon allowed") from None


def _dt(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, UTC)


class MarketsService:
    def __init__(self, directory: CalendarVenueDirectory | None = None,
                 clock: Clock | None = None) -> None:
        self.directory = directory or CalendarVenueDirectory()
        self.clock: Clock = clock or SystemClock()
        self._calendars = self.directory.calendars
        self._scheduled = tuple(v for v in self.directory.specs() if not v.always_open)
        self._always_open = tuple(v for v in self.directory.specs() if v.always_open)

    def now(self) -> datetime:
        return self.clock.now()

    # -- reference data ------------------------------------------------------------------
    def regions(self) -> list[RegionVenues]:
        venues = self.directory.specs()
        return [RegionVenues(r, tuple(v for v in venues if v.region == r.code)) for r in REGIONS]

    def region(self, code: str) -> Region:
        for region in REGIONS:
            if region.code == code.lower():
                return region
        raise RegionUnknown(f"no region {code!r}; regions are "
                            f"{', '.join(r.code for r in REGIONS)}")

    def venue(self, mic: str) -> Venue:
        return self.directory.spec(mic)

    # -- sessions ------------------------------------------------------------------------
    def session(self, mic: str, at: datetime) -> VenueSession:
        venue = self.directory.spec(mic)
        at = require_aware(at)
        if venue.always_open:
            return VenueSession(venue.mic, at, SessionStatus.OPEN, None, None, None, None)
        t = at.timestamp()
        table = self._calendars.table(venue.mic, t)
        opens, closes, day = table.opens, table.closes, table.day
        n = len(opens)
        i = table.window_at_or_before(t)
        if i < 0:  # only before the first session the library has at all
            raise SessionOutOfRange(f"no session of {venue.mic} is known before {at.isoformat()}")
        has_next = i + 1 < n
        if i >= 0 and t < closes[i]:
            status, current = SessionStatus.OPEN, day[i]
            next_close: float | None = closes[i]
        elif i >= 0 and has_next and day[i + 1] == day[i]:
            status, current, next_close = SessionStatus.BREAK, day[i], closes[i + 1]
        else:
            current, next_close = day[i], closes[i + 1] if has_next else None
            if t < closes[i] + venue.post_close_minutes * 60:
                status = SessionStatus.POST_CLOSE
            elif has_next and t >= opens[i + 1] - venue.pre_open_minutes * 60:
                status = SessionStatus.PRE_OPEN
            else:
                status = SessionStatus.CLOSED
        return VenueSession(
            venue.mic, at, status, _dt(table.day_opens[current]), _dt(table.day_closes[current]),
            _dt(opens[i + 1]) if has_next else None,
            _dt(next_close) if next_close is not None else None)

    def active_markets(self, at: datetime) -> list[Venue]:
        """Venues open for trading at `at` (status OPEN), in registry order; the 24/7 venue
        always. A venue whose calendar does not reach `at` is left out."""
        t = require_aware(at).timestamp()
        active = []
        for venue in self.directory.specs():
            if venue.always_open:
                active.append(venue)
                continue
            try:
                if self._calendars.table(venue.mic, t).is_open(t):
                    active.append(venue)
            except SessionOutOfRange:
                log.warning("calendar of %s does not reach %s", venue.mic, at.isoformat())
        return active

    # -- follow the sun ------------------------------------------------------------------
    def follow_the_sun(self, at: datetime, horizon: timedelta) -> SunPath:
        """The leader at `at` and the ordered hand-offs in (at, at + horizon]; see the module
        docstring for what "leads" means. The horizon is at most MAX_HORIZON."""
        at = require_aware(at)
        if horizon <= timedelta(0):
            raise HorizonInvalid("the horizon must be positive")
        if horizon > MAX_HORIZON:
            raise HorizonTooLong(f"the horizon is at most {MAX_HORIZON.days} days")
        a, b = at.timestamp(), (at + horizon).timestamp()
        tables, uncovered = self._tables(a, b)
        boundaries = sorted({t for _, table in tables for t in _day_boundaries(table, a, b)})
        leader = self._leader(tables, a)
        first = leader
        handoffs = []
        for t in boundaries:
            now_leading = self._leader(tables, t)
            if now_leading.region != leader.region:
                handoffs.append(Handoff(_dt(t), leader.region, now_leading.region,
                                        now_leading.venues))
            leader = now_leading
        return SunPath(at, at + horizon, first, tuple(handoffs), uncovered)

    def leader(self, at: datetime) -> Leadership:
        t = require_aware(at).timestamp()
        return self._leader(self._tables(t, t)[0], t)

    def _tables(self, *instants: float) -> tuple[list[tuple[Venue, SessionTable]], tuple[str, ...]]:
        tables, uncovered = [], []
        for venue in self._scheduled:
            try:
                tables.append((venue, self._calendars.table(venue.mic, *instants)))
            except SessionOutOfRange:
                uncovered.append(venue.mic)
        return tables, tuple(uncovered)

    def _leader(self, tables: Sequence[tuple[Venue, SessionTable]], t: float) -> Leadership:
        latest: dict[str, float] = {}
        members: dict[str, list[str]] = {}
        for venue, table in tables:
            day_open = table.day_in_session(t)
            if day_open is not None:
                latest[venue.region] = max(latest.get(venue.region, day_open), day_open)
                members.setdefault(venue.region, []).append(venue.mic)
        if not latest:
            return Leadership(GLOBAL, tuple(v.mic for v in self._always_open))
        region = max(latest, key=lambda r: (latest[r], len(members[r]), -_REGION_ORDER[r]))
        return Leadership(region, tuple(members[region]))

    # -- session events ------------------------------------------------------------------
    def event_filter(self, regions: Iterable[str] | None, mics: Iterable[str] | None) -> EventFilter:
        """Validated: unknown regions are REGION_UNKNOWN, unknown MICs VENUE_UNKNOWN."""
        return EventFilter(mics=frozenset(self.directory.spec(m).mic for m in mics or ()),
                           regions=frozenset(self.region(r).code for r in regions or ()))

    def next_events(self, after: datetime, selection: EventFilter) -> list[SessionEvent]:
        """All selected events at the earliest instant strictly after `after` (several venues
        often open together), in sending order; empty if the calendars know none."""
        a = require_aware(after).timestamp()
        tables, _ = self._tables(a)
        candidates: list[SessionEvent] = []
        for venue, table in tables:
            if selection.wants_venue(venue):
                candidates += _venue_events_after(venue, table, a)
        if selection.wants_handoffs():
            handoff = self._next_handoff(tables, a, selection)
            if handoff is not None:
                candidates.append(SessionEvent(SessionEventKind.REGION_HANDOFF, handoff.at,
                                               handoff.to_region, None, handoff.from_region,
                                               handoff.to_region))
        if not candidates:
            return []
        first = min(e.at for e in candidates)
        return sorted((e for e in candidates if e.at == first),
                      key=lambda e: (_KIND_ORDER[e.kind], e.mic or ""))

    def _next_handoff(self, tables: Sequence[tuple[Venue, SessionTable]], a: float,
                      selection: EventFilter) -> Handoff | None:
        leader = self._leader(tables, a)
        t = a
        while t < a + HANDOFF_LOOKAHEAD:
            later = [b for _, table in tables if (b := _next_day_boundary(table, t)) is not None]
            if not later:
                return None
            t = min(later)
            now_leading = self._leader(tables, t)
            if now_leading.region != leader.region:
                handoff = Handoff(_dt(t), leader.region, now_leading.region, now_leading.venues)
                if selection.wants_handoff(handoff):
                    return handoff
            leader = now_leading
        return None

    async def session_events(self, selection: EventFilter) -> AsyncIterator[SessionEvent]:
        """Events as they happen, from now on, forever.

        Nothing is remembered between calls: each step asks the calendars for the next events
        after the last instant sent (at first: the clock's now) and sleeps on the clock until
        then. A restarted gateway, or another replica, computes the same events.
        """
        cursor = self.clock.now()
        while True:
            # Off the event loop: a first look-up may load a calendar from the library.
            batch = await asyncio.to_thread(self.next_events, cursor, selection)
            if not batch:
                cursor += timedelta(days=1)  # nothing known yet; look again a day later
                await self.clock.sleep_until(cursor)
                continue
            await self.clock.sleep_until(batch[0].at)
            for event in batch:
                yield event
            cursor = batch[0].at


def _day_boundaries(table: SessionTable, a: float, b: float) -> list[float]:
    """Opens and closes of trading days in (a, b]."""
    out = []
    for series in (table.day_opens, table.day_closes):
        j = bisect_right(series, a)
        while j < len(series) and series[j] <= b:
            out.append(series[j])
            j += 1
    return out


def _next_day_boundary(table: SessionTable, t: float) -> float | None:
    j, k = bisect_right(table.day_opens, t), bisect_right(table.day_closes, t)
    times = [s[x] for s, x in ((table.day_opens, j), (table.day_closes, k)) if x < len(s)]
    return min(times) if times else None


def _venue_events_after(venue: Venue, table: SessionTable, a: float) -> list[SessionEvent]:
    """The venue's next window open and next window close after `a`, as events."""
    events = []
    j = table.next_open_index(a)
    if j < len(table.opens):
        kind = SessionEventKind.OPEN if table.is_first_window(j) else SessionEventKind.BREAK_END
        events.append(SessionEvent(kind, _dt(table.opens[j]), venue.region, venue.mic))
    k = table.next_close_index(a)
    if k < len(table.closes):
        kind = SessionEventKind.CLOSE if table.is_last_window(k) else SessionEventKind.BREAK_START
        events.append(SessionEvent(kind, _dt(table.closes[k]), venue.region, venue.mic))
    return events
