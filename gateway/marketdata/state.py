"""The market-state feed: what pre-trade compliance knows of an instrument on a venue at an
instant (`plugins.sdk.MarketState`), from the data sources, the venues and the platform's own
decisions.

Per (instrument, MIC, instant):

- Quote: `best_bid`/`best_ask` from the source's quote; `reference_price` is their mid (the
  collar's anchor, as before).
- Previous close: the close of the latest daily bar of the instrument that starts before the
  venue's local midnight of the instant's day (bars of the last 14 calendar days are read:
  enough for any holiday run). It is the base of the TSE daily price limit and of the
  short-sale triggers.
- Last price and the day's low so far: the one-minute bars of the venue's local day that are
  complete at the instant (a bar [t, t+1m) counts once t+1m <= the instant: the twin knows its
  whole day, and the feed must not look ahead). No bar yet today: the last price is the
  previous close.
- Listings of one security: an instrument is the same security on two venues when both have
  the same ISIN (else, when either has none, the same symbol). An alternative venue
  (`Venue.alternative_to` set: BATS, ARCX, IEXG beside XNYS, CXAC beside XASX...) trades the
  shares of the primary markets of its country; an instrument's primary listing is the same
  security on a primary venue (no `alternative_to`) of the same country: the venue it sits
  beside first, then the others (AAPL.BATS -> AAPL.XNAS).
- Short-sale restriction, at venues whose country has a circuit breaker: SEC Rule 201 (US) and
  the TSE price restriction (JP, FIEA Enforcement Order Art. 26-4). Both trigger on a fall of
  10 % or more from the previous close (the day's low <= 0.9 x previous close) and stay in
  force for the rest of that day and the whole next trading day (from the venue's calendar).
  The trigger is read from the bars: the previous trading day's low against its own previous
  close, and today's low so far against today's base. A trigger seen on a platform source
  (not a tenant's own or installed source, whose data must not move other tenants) is recorded
  in `short_sale_restriction`, audited on the platform chain and published, so it holds after
  a restart and whatever the source remembers; recorded ones are read back too. Only the order
  path records (`market`, at the current instant); reading the state (`state`, the
  `marketState` query) computes it without writing anything, and refuses an instant later than
  now (MARKET_STATE_FUTURE). Intraday bars are read up to min(at, now) everywhere.
  The restriction is a property of the security in its market: it is computed and recorded
  against the primary listing and applies on every listing of the security in that country
  (a fall of AAPL on XNAS restricts short sales of AAPL on BATS, ARCX and IEXG too).
- Shortable: at a venue that keeps a short-sale list (XHKG: HKEX's designated securities) only
  the listed instruments; elsewhere every instrument. The list is the platform's
  (`short_sale_designation`, seeded by migration 0020, edited by platform administrators).
- Halts: a platform administrator halts an instrument on a venue, or a whole venue (HALTED: no
  order; REDUCING: only position-reducing orders) and resumes it. Rows in `market_halt`, every
  change audited on the platform chain (`market.halted`, `market.reducing`, `market.resumed`)
  and published on the bus topic `market.state`. A venue-wide halt applies to each of its
  instruments; HALTED and REDUCING may both apply (an instrument halted on a REDUCING venue).
  Halts cover alternative venues (SMART routing must not go around them):
  - an instrument halt on any venue applies to every listing of the same security on the
    venues of the same country (halting AAPL.XNAS halts AAPL on BATS, ARCX and IEXG; halting
    AAPL.BATS halts it on XNAS too);
  - a venue-wide halt of a primary market applies to its alternative venues (those whose
    `alternative_to` is it: halting XNYS halts BATS, ARCX and IEXG) and to every listing, on
    an alternative venue, of a security whose primary listing is on it (halting XNAS halts
    AAPL.BATS, not JPM.BATS). A venue-wide halt of an alternative venue covers only itself.

Cost on the order path: halts and lists are held in memory and reloaded when the one-row
`market_state_version` (moved by every write, in the same transaction) has changed; the
version is read at most every `VERSION_CHECK_S`, so another replica's halt applies within that
time (this process's own at once). Daily figures are cached per instrument and local day, the
intraday ones per instrument and minute, read incrementally (only the new minutes' bars).
The order service asks once per instrument and venue per batch.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from time import monotonic
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import update
from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel import Session, col, select

from gateway.audit import AuditEntry, AuditTrail
from gateway.db import Database, utcnow
from gateway.errors import DomainError
from gateway.events import Bus
from gateway.marketdata.errors import (
    HaltReasonInvalid,
    InstrumentUnknown,
    MarketStateFuture,
    NotHalted,
    ShortSaleListUnsupported,
)
from gateway.marketdata.service import MarketDataService, SourceEntry, aware
from gateway.marketdata.state_models import (
    VENUE_WIDE,
    MarketHalt,
    MarketStateVersion,
    ShortSaleDesignation,
    ShortSaleRestrictionRow,
)
from plugins.sdk import Bar, MarketState, VenueDirectory, VenueInfo

log = logging.getLogger(__name__)

TOPIC = "market.state"
VERSION_CHECK_S = 0.1
HALTED, REDUCING = "HALTED", "REDUCING"
MODES = (HALTED, REDUCING)
REASON_MAX = 500
DAILY_LOOKBACK = timedelta(days=14)
TRIGGER = Decimal("0.9")  # a fall of 10 % or more from the previous close
# Venue country -> the short-sale circuit breaker there.
SSR_RULES: Mapping[str, str] = {"US": "SEC_RULE_201", "JP": "TSE_PRICE_RESTRICTION"}
# Venues where only listed instruments may be sold short, and the name of their list.
SHORT_SALE_LISTS: Mapping[str, str] = {"XHKG": "HKEX designated securities"}
CACHE_MAX = 4096


@dataclass(frozen=True)
class Halt:
    mic: str
    symbol: str | None  # None: the whole venue
    mode: str
    reason: str
    set_by: str | None
    set_at: datetime

    @classmethod
    def of(cls, row: MarketHalt) -> Halt:
        return cls(row.mic, None if row.symbol == VENUE_WIDE else row.symbol, row.mode, row.reason,
                   row.set_by, row.set_at)


@dataclass(frozen=True)
class Restriction:
    rule: str
    triggered_on: date
    in_force_until: date
    previous_close: Decimal
    trigger_price: Decimal
    recorded: bool  # stored in short_sale_restriction (else seen in a tenant's own data only)


@dataclass(frozen=True)
class Designation:
    mic: str
    symbol: str
    added_by: str | None
    added_at: datetime


@dataclass(frozen=True)
class InstrumentState:
    """The market state of `symbol` on `mic` at `at`, and why: `market` is exactly what the
    rule packs see."""

    symbol: str
    mic: str
    at: datetime
    trading_day: date  # the venue's local date of `at`
    market: MarketState
    previous_close_on: date | None
    halts: tuple[Halt, ...]
    restriction: Restriction | None
    short_sale_list: str | None  # the venue's list, when it keeps one

    @property
    def key(self) -> str:
        return f"{self.symbol}.{self.mic}"


@dataclass(frozen=True)
class _Snapshot:
    version: int
    halts: Mapping[tuple[str, str], Halt]
    designated: frozenset[tuple[str, str]]


@dataclass(frozen=True)
class _Daily:
    close: Decimal | None  # the previous trading day's close
    close_on: date | None
    # The previous trading day's own trigger: (its date, its low, its base) when it fell 10 %.
    trigger: tuple[date, Decimal, Decimal] | None


@dataclass(frozen=True)
class _Intraday:
    day: date
    covered: datetime  # bars starting before this instant are counted
    low: Decimal | None
    last: Decimal | None


class MarketStateService:
    def __init__(self, db: Database, bus: Bus, market_data: MarketDataService,
                 venues: VenueDirectory, audit: AuditTrail | None = None) -> None:
        self.db = db
        self.bus = bus
        self.market_data = market_data
        self.venues = venues
        self.audit = audit
        self._lock = threading.Lock()
        self._snapshot: _Snapshot | None = None
        self._checked = 0.0
        self._daily: dict[tuple[Any, ...], _Daily] = {}
        self._intraday: dict[tuple[Any, ...], _Intraday] = {}
        self._recorded: dict[tuple[str, str, date], Restriction | None] = {}
        self._known: set[tuple[str, str, date]] = set()  # triggers recorded (or tried) here
        self._next_day: dict[tuple[str, date], date] = {}
        self._primary: dict[tuple[str, str], tuple[str, str]] = {}

    # -- reading -------------------------------------------------------------------------

    def market(self, key: str, at: datetime) -> tuple[MarketState, Decimal | None]:
        """For the order path: the MarketState of the listing `key` (SYMBOL.MIC) and the mid
        (the arrival price), one call per instrument and venue per batch."""
        symbol, _, mic = key.rpartition(".")
        state = self.state(symbol, mic, at, now=at, record=True)
        return state.market, state.market.reference_price

    def state(self, symbol: str, mic: str, at: datetime, now: datetime | None = None,
              record: bool = False) -> InstrumentState:
        """The state of `symbol` on `mic` at `at`. Bars are read up to min(at, now) (`now`
        default: the market-data clock). Only with `record` (the order path, `at` the current
        instant) is a short-sale trigger recorded for the platform; otherwise it is computed
        read-only."""
        at = aware(at, "at")
        now = aware(now, "now") if now is not None else self.market_data.now()
        cut = min(at, now)
        snap = self._current()
        key = f"{symbol}.{mic}"
        venue = self._venue(mic)
        zone = ZoneInfo(venue.timezone) if venue is not None else UTC
        day = at.astimezone(zone).date()
        halts = self._halts_of(snap, symbol, mic)
        listed = SHORT_SALE_LISTS.get(mic)
        shortable = listed is None or (mic, symbol) in snap.designated
        bid = ask = mid = None
        try:
            quote = self.market_data.quote(key, at)
        except DomainError:
            quote = None
        if quote is not None:
            bid, ask = quote.bid or None, quote.ask or None
            mid = (quote.bid + quote.ask) / 2 if bid and ask else (bid or ask)
        daily, intraday, entry = self._marks(key, day, zone, cut)
        previous_close = daily.close if daily is not None else None
        last = intraday.last if intraday is not None and intraday.last is not None else previous_close
        restriction = None
        rule = SSR_RULES.get(venue.country) if venue is not None else None
        if rule is not None:
            p_symbol, p_mic = self._primary_of(symbol, mic)
            if (p_symbol, p_mic) == (symbol, mic):
                restriction = self._restriction(rule, symbol, mic, day, daily, intraday, entry,
                                                record and at <= now)
            else:  # the security's restriction, from its primary listing
                p_venue = self._venue(p_mic)
                p_zone = ZoneInfo(p_venue.timezone) if p_venue is not None else zone
                p_day = at.astimezone(p_zone).date()
                p_daily, p_intraday, p_entry = self._marks(f"{p_symbol}.{p_mic}", p_day, p_zone, cut)
                restriction = self._restriction(rule, p_symbol, p_mic, p_day, p_daily, p_intraday,
                                                p_entry, record and at <= now)
        market = MarketState(
            reference_price=mid, previous_close=previous_close, best_bid=bid, best_ask=ask,
            last_price=last, halted=any(h.mode == HALTED for h in halts),
            reducing=any(h.mode == REDUCING for h in halts),
            short_sale_restricted=restriction is not None, shortable=shortable)
        return InstrumentState(symbol, mic, at, day, market,
                               daily.close_on if daily is not None else None, halts, restriction,
                               listed)

    def state_of(self, instrument: str, mic: str | None, at: datetime, now: datetime
                 ) -> InstrumentState:
        """`state` of an instrument key on `mic` (default: the key's venue), read-only (the
        `marketState` query: it never records); MARKET_STATE_FUTURE for `at` later than `now`."""
        if not isinstance(instrument, str) or not instrument.strip():
            raise InstrumentUnknown("name the instrument by its key, SYMBOL.MIC")
        at, now = aware(at, "at"), aware(now, "now")
        if at > now:
            raise MarketStateFuture(
                f"at {at.isoformat()} is later than now ({now.isoformat()}): the market state "
                "is known up to now only", details={"at": at.isoformat(), "now": now.isoformat()})
        symbol, venue = self.listing(instrument, mic or self.market_data.instrument(instrument).mic)
        assert symbol is not None  # a non-blank key names an instrument (or raised)
        return self.state(symbol, venue, at, now=now, record=False)

    def halts(self, mic: str | None = None) -> list[Halt]:
        snap = self._current(force=True)
        wanted = mic.strip().upper() if mic else None
        return sorted((h for (m, _), h in snap.halts.items() if wanted is None or m == wanted),
                      key=lambda h: (h.mic, h.symbol or ""))

    def designations(self, mic: str) -> list[Designation]:
        venue = self.venues.venue(mic.strip().upper())  # VENUE_UNKNOWN
        with self.db.system_session() as session:
            rows = session.exec(select(ShortSaleDesignation)
                                .where(ShortSaleDesignation.mic == venue.mic)
                                .order_by(col(ShortSaleDesignation.symbol))).all()
        return [Designation(r.mic, r.symbol, r.added_by, r.added_at) for r in rows]

    def listing(self, instrument: str | None, mic: str) -> tuple[str | None, str]:
        """(symbol, MIC) of an instrument key on a venue: `instrument` None or blank names the
        venue itself; a key of another venue names the same symbol on `mic`, which must be
        listed there. VENUE_UNKNOWN, INSTRUMENT_UNKNOWN otherwise."""
        venue = self.venues.venue(mic.strip().upper())
        if instrument is None or not instrument.strip():
            return None, venue.mic
        found = self.market_data.instrument(instrument)
        if found.mic != venue.mic:
            try:
                found = self.market_data.instrument(f"{found.symbol}.{venue.mic}")
            except InstrumentUnknown:
                raise InstrumentUnknown(f"{found.symbol} is not listed on {venue.mic}",
                                        details={"symbol": found.symbol, "mic": venue.mic}) from None
        return found.symbol, venue.mic

    # -- writing (platform administrators) -------------------------------------------------

    def halt(self, instrument: str | None, mic: str, mode: str, reason: str, actor: str | None
             ) -> Halt:
        """Halt (or put in REDUCING) an instrument on a venue, or the venue (`instrument`
        None); a halt already in force takes the new mode and reason."""
        if mode not in MODES:
            raise HaltReasonInvalid(f"mode must be one of {', '.join(MODES)}")
        text = _reason(reason)
        symbol, mic = self.listing(instrument, mic)
        target = symbol or VENUE_WIDE
        with self.db.system_transaction() as session:
            row = session.get(MarketHalt, (mic, target))
            if row is None:
                row = MarketHalt(mic=mic, symbol=target, mode=mode, reason=text, set_by=actor)
            else:
                row.mode, row.reason, row.set_by, row.set_at = mode, text, actor, utcnow()
            session.add(row)
            session.flush()
            halt = Halt.of(row)
            self._written(session, f"market.{mode.lower()}", halt.mic, halt.symbol,
                          {"mode": mode, "reason": text}, actor)
        self._invalidate()
        self._publish(mode, mic, symbol, {"reason": text, "by": actor})
        return halt

    def resume(self, instrument: str | None, mic: str, reason: str | None, actor: str | None
               ) -> Halt:
        """Lift the halt or REDUCING state of an instrument on a venue (or of the venue);
        answers the halt lifted. A venue-wide halt is lifted on its own: resuming one
        instrument does not lift its venue's."""
        text = _reason(reason) if reason is not None and reason.strip() else None
        symbol, mic = self.listing(instrument, mic)
        with self.db.system_transaction() as session:
            row = session.get(MarketHalt, (mic, symbol or VENUE_WIDE))
            if row is None:
                what = f"{symbol} on {mic}" if symbol else mic
                raise NotHalted(f"{what} is not halted", details={"mic": mic, "symbol": symbol})
            halt = Halt.of(row)
            session.delete(row)
            self._written(session, "market.resumed", mic, symbol,
                          {"mode": halt.mode, "haltReason": halt.reason, "reason": text}, actor)
        self._invalidate()
        self._publish("RESUMED", mic, symbol, {"reason": text, "by": actor})
        return halt

    def designate(self, instrument: str, mic: str, designated: bool, actor: str | None
                  ) -> Designation | None:
        """Put an instrument on (or take it off) its venue's short-sale list; answers the entry
        (None once taken off). Idempotent."""
        symbol, mic = self.listing(instrument, mic)
        if symbol is None:
            raise InstrumentUnknown("name the instrument to put on or take off the list")
        if mic not in SHORT_SALE_LISTS:
            raise ShortSaleListUnsupported(
                f"{mic} keeps no short-sale list: any instrument there may be sold short",
                details={"mic": mic, "venues": sorted(SHORT_SALE_LISTS)})
        with self.db.system_transaction() as session:
            row = session.get(ShortSaleDesignation, (mic, symbol))
            changed = (row is None) == designated
            if designated and row is None:
                row = ShortSaleDesignation(mic=mic, symbol=symbol, added_by=actor)
                session.add(row)
                session.flush()
            elif not designated and row is not None:
                session.delete(row)
            if changed:
                kind = "market.short_sale_designated" if designated else "market.short_sale_undesignated"
                self._written(session, kind, mic, symbol, {"list": SHORT_SALE_LISTS[mic]}, actor)
            answer = (Designation(row.mic, row.symbol, row.added_by, row.added_at)
                      if designated and row is not None else None)
        self._invalidate()
        if changed:
            self._publish("DESIGNATED" if designated else "UNDESIGNATED", mic, symbol, {"by": actor})
        return answer

    # -- internals -------------------------------------------------------------------------

    def _written(self, session: Session, kind: str, mic: str, symbol: str | None,
                 payload: dict[str, Any], actor: str | None) -> None:
        """In the write's transaction: the version moves on and the platform chain records it."""
        session.execute(update(MarketStateVersion)
                        .where(col(MarketStateVersion.id) == 1)
                        .values(version=MarketStateVersion.version + 1))
        if self.audit is not None:
            subject = f"{symbol}.{mic}" if symbol else mic
            self.audit.append(session, None, [AuditEntry(
                kind, subject, {"mic": mic, "symbol": symbol, **payload}, actor)])

    def _invalidate(self) -> None:
        """After a committed write: this process sees it at once (others at their next
        version check)."""
        with self._lock:
            self._snapshot = None
            self._recorded.clear()

    def _publish(self, kind: str, mic: str, symbol: str | None, extra: dict[str, Any]) -> None:
        try:
            self.bus.publish(TOPIC, {"kind": kind, "mic": mic, "symbol": symbol,
                                     "at": utcnow().isoformat(), **extra})
        except Exception:  # the change is committed; subscribers re-read marketState
            log.exception("market state event not published", extra={"mic": mic})

    def _current(self, force: bool = False) -> _Snapshot:
        now = monotonic()
        with self._lock:
            snap = self._snapshot
            if snap is not None and not force and now - self._checked < VERSION_CHECK_S:
                return snap
        with self.db.system_session() as session:
            version = session.exec(select(MarketStateVersion.version)
                                   .where(MarketStateVersion.id == 1)).first() or 0
            if snap is None or snap.version != version:
                halts = {(r.mic, r.symbol): Halt.of(r) for r in session.exec(select(MarketHalt))}
                designated = frozenset((r.mic, r.symbol)
                                       for r in session.exec(select(ShortSaleDesignation)))
                snap = _Snapshot(version, halts, designated)
                with self._lock:
                    self._recorded.clear()
        with self._lock:
            self._snapshot, self._checked = snap, now
        return snap

    def _venue(self, mic: str) -> VenueInfo | None:
        try:
            return self.venues.venue(mic)
        except DomainError:
            return None  # an installed connector's own venue: no calendar, no circuit breaker

    def _spec(self, mic: str) -> Any | None:
        """The registry entry of a venue (its `alternative_to`), None when unknown."""
        spec = getattr(self.venues, "spec", None)
        if spec is None:
            return None
        try:
            return spec(mic)
        except DomainError:
            return None

    def _same_security(self, a_symbol: str, a_mic: str, b_symbol: str, b_mic: str) -> bool:
        """Same ISIN when both listings have one, else the same symbol."""
        try:
            a = self.market_data.instrument(f"{a_symbol}.{a_mic}").isin
            b = self.market_data.instrument(f"{b_symbol}.{b_mic}").isin
        except DomainError:
            a = b = None
        return a == b if a and b else a_symbol == b_symbol

    def _primary_of(self, symbol: str, mic: str) -> tuple[str, str]:
        """(symbol, MIC) of the security's primary listing: itself on a primary venue (or an
        unknown one); on an alternative venue, the same security on a primary venue of the
        same country (the one it sits beside first), else itself."""
        cache_key = (symbol, mic)
        found = self._primary.get(cache_key)
        if found is not None:
            return found
        found = (symbol, mic)
        spec = self._spec(mic)
        if spec is not None and spec.alternative_to is not None:
            specs = getattr(self.venues, "specs", lambda: ())()
            others = sorted(v.mic for v in specs if v.country == spec.country
                            and v.alternative_to is None and v.mic != spec.alternative_to)
            candidates = [spec.alternative_to, *others]
            for primary in candidates:
                try:
                    self.market_data.instrument(f"{symbol}.{primary}")
                except DomainError:
                    continue
                if self._same_security(symbol, primary, symbol, mic):
                    found = (symbol, primary)
                    break
        _put(self._primary, cache_key, found)
        return found

    def _halts_of(self, snap: _Snapshot, symbol: str, mic: str) -> tuple[Halt, ...]:
        """The halts in force on the listing (see the module's docstring): venue-wide ones
        first, then the instrument's."""
        venue = self._venue(mic)
        spec = self._spec(mic)
        wide = {mic}
        if spec is not None and spec.alternative_to is not None:
            wide.add(spec.alternative_to)
            wide.add(self._primary_of(symbol, mic)[1])
        venue_wide: list[Halt] = []
        own: list[Halt] = []
        for (h_mic, h_symbol), halt in snap.halts.items():
            if h_symbol == VENUE_WIDE:
                if h_mic in wide:
                    venue_wide.append(halt)
            elif h_mic == mic and h_symbol == symbol:
                own.append(halt)
            elif venue is not None and h_mic != mic:
                other = self._venue(h_mic)
                if (other is not None and other.country == venue.country
                        and self._same_security(h_symbol, h_mic, symbol, mic)):
                    own.append(halt)
        key = lambda h: (h.mic != mic, h.mic, h.symbol or "")  # noqa: E731
        return tuple(sorted(venue_wide, key=key)) + tuple(sorted(own, key=key))

    def _marks(self, key: str, day: date, zone: ZoneInfo | Any, at: datetime
               ) -> tuple[_Daily | None, _Intraday | None, SourceEntry | None]:
        try:
            entry = self.market_data.source_of(key)
        except DomainError:
            return None, None, None
        midnight = datetime.combine(day, time(), zone).astimezone(UTC)
        return (self._daily_of(entry, key, day, midnight, zone),
                self._intraday_of(entry, key, day, midnight, at), entry)

    def _daily_of(self, entry: SourceEntry, key: str, day: date, midnight: datetime,
                  zone: Any) -> _Daily:
        cache_key = (entry, key, day)
        found = self._daily.get(cache_key)
        if found is not None:
            return found
        bars = self._bars(key, midnight - DAILY_LOOKBACK, midnight, "1d")
        close = close_on = trigger = None
        if bars:
            close, close_on = bars[-1].close, bars[-1].start.astimezone(zone).date()
            if len(bars) > 1:
                base = bars[-2].close
                if bars[-1].low <= base * TRIGGER:
                    trigger = (close_on, bars[-1].low, base)
        daily = _Daily(close, close_on, trigger)
        _put(self._daily, cache_key, daily)
        return daily

    def _intraday_of(self, entry: SourceEntry, key: str, day: date, midnight: datetime,
                     at: datetime) -> _Intraday:
        end = at.replace(second=0, microsecond=0)  # bars starting before it are complete
        cache_key = (entry, key)
        found = self._intraday.get(cache_key)
        if found is not None and found.day == day and found.covered == end:
            return found
        if found is not None and found.day == day and found.covered < end:
            start, low, last = found.covered, found.low, found.last
        else:
            start, low, last = midnight, None, None
        for bar in self._bars(key, start, end, "1m") if end > start else ():
            low = bar.low if low is None or bar.low < low else low
            last = bar.close
        intraday = _Intraday(day, end, low, last)
        if found is None or found.day != day or found.covered <= end:
            _put(self._intraday, cache_key, intraday)  # never moved back by an older instant
        return intraday

    def _bars(self, key: str, start: datetime, end: datetime, interval: str) -> list[Bar]:
        try:
            return self.market_data.bars(key, start, end, interval)
        except DomainError as exc:
            # No bars of this interval (a file with daily bars only), or a failing source: the
            # figures they would give are unknown, and rules fall back as they document.
            log.debug("market state: no %s bars of %s: %s", interval, key, exc.message)
            return []

    def _restriction(self, rule: str, symbol: str, mic: str, day: date, daily: _Daily | None,
                     intraday: _Intraday | None, entry: SourceEntry | None, record: bool
                     ) -> Restriction | None:
        seen: list[Restriction] = []
        if daily is not None and daily.trigger is not None:
            on, low, base = daily.trigger
            until = self._next_trading_day(mic, on)
            if until >= day:
                seen.append(Restriction(rule, on, until, base, low, False))
        if (daily is not None and daily.close is not None and intraday is not None
                and intraday.low is not None and intraday.low <= daily.close * TRIGGER):
            seen.append(Restriction(rule, day, self._next_trading_day(mic, day), daily.close,
                                    intraday.low, False))
        recorded = self._recorded_restriction(mic, symbol, day)
        shared = record and entry is not None and self.market_data.is_platform_source(entry)
        if shared:
            fresh = [f for f in seen if (mic, symbol, f.triggered_on) not in self._known]
            for found in fresh:
                self._record(symbol, mic, found)
            if fresh:
                recorded = self._recorded_restriction(mic, symbol, day) or recorded
        if recorded is not None:
            return recorded
        return seen[-1] if seen else None

    def _recorded_restriction(self, mic: str, symbol: str, day: date) -> Restriction | None:
        key = (mic, symbol, day)
        with self._lock:
            if key in self._recorded:
                return self._recorded[key]
        with self.db.system_session() as session:
            row = session.exec(select(ShortSaleRestrictionRow)
                               .where(ShortSaleRestrictionRow.mic == mic,
                                      ShortSaleRestrictionRow.symbol == symbol,
                                      col(ShortSaleRestrictionRow.triggered_on) <= day,
                                      col(ShortSaleRestrictionRow.in_force_until) >= day)
                               .order_by(col(ShortSaleRestrictionRow.triggered_on).desc())).first()
        found = None if row is None else Restriction(row.rule, row.triggered_on, row.in_force_until,
                                                     row.previous_close, row.trigger_price, True)
        with self._lock:
            if len(self._recorded) >= CACHE_MAX:
                self._recorded.clear()
            self._recorded[key] = found
        return found

    def _record(self, symbol: str, mic: str, found: Restriction) -> None:
        values = {"mic": mic, "symbol": symbol, "triggered_on": found.triggered_on,
                  "in_force_until": found.in_force_until, "rule": found.rule,
                  "previous_close": found.previous_close, "trigger_price": found.trigger_price,
                  "recorded_at": utcnow()}
        table = ShortSaleRestrictionRow.__table__  # type: ignore[attr-defined]
        if len(self._known) >= CACHE_MAX:
            self._known.clear()
        self._known.add((mic, symbol, found.triggered_on))  # one attempt per trigger and process
        try:
            with self.db.system_transaction() as session:
                dialect = session.get_bind().dialect.name
                insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
                # Replicas seeing the same trigger race to record it: the first one wins.
                inserted = session.execute(insert(table).values(values).on_conflict_do_nothing()
                                           ).rowcount  # type: ignore[attr-defined]
                if not inserted:
                    return
                self._written(session, "market.short_sale_restricted", mic, symbol, {
                    "rule": found.rule, "triggeredOn": found.triggered_on.isoformat(),
                    "inForceUntil": found.in_force_until.isoformat(),
                    "previousClose": found.previous_close, "triggerPrice": found.trigger_price},
                    None)
        except Exception:
            # Never fails the order being checked: the restriction applies from the data
            # anyway; the next process (or this one, after a restart) records it.
            log.exception("short-sale restriction not recorded", extra={"mic": mic})
            return
        self._invalidate()
        self._publish("SHORT_SALE_RESTRICTED", mic, symbol, {
            "rule": found.rule, "inForceUntil": found.in_force_until.isoformat()})

    def _next_trading_day(self, mic: str, day: date) -> date:
        """The venue's first trading day after `day` (its local dates)."""
        cache_key = (mic, day)
        found = self._next_day.get(cache_key)
        if found is not None:
            return found
        venue = self._venue(mic)
        following = day + timedelta(days=1)
        if venue is not None and not venue.always_open:
            zone = ZoneInfo(venue.timezone)
            start = datetime.combine(following, time(), zone).astimezone(UTC)
            windows = self.venues.sessions(mic, start, start + DAILY_LOOKBACK)
            if windows:
                following = min(w.opens_at for w in windows).astimezone(zone).date()
        _put(self._next_day, cache_key, following)
        return following


def _reason(reason: str | None) -> str:
    text = reason.strip() if isinstance(reason, str) else ""
    if not text or len(text) > REASON_MAX:
        raise HaltReasonInvalid(f"give a reason of 1 to {REASON_MAX} characters")
    return text


def _put(cache: dict[Any, Any], key: Any, value: Any) -> None:
    # Bounded: a long-running gateway sees a new day (or minute) for each instrument.
    if len(cache) >= CACHE_MAX:
        cache.clear()
    cache[key] = value


def venue_filter(mics: Iterable[str] | None) -> Callable[[dict[str, Any]], bool]:
    """A filter of `market.state` payloads by venue (none: every venue)."""
    wanted = {m.strip().upper() for m in mics or () if isinstance(m, str)}
    return lambda payload: not wanted or payload.get("mic") in wanted
