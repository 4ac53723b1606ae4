"""The market data service: sources from plugins, an instrument registry, validated requests.

Sources are collected once, on first use (the hook is documented as called once at
activation), through `PluginHost.collect`: each plugin gets its own context (its config and
the runtime's venue directory). A plugin whose hook raises, or a source whose `instruments()`
does, is left out and logged; the others serve. A source that raises while answering a request
fails that request only, with PLUGIN_FAILED naming the plugin.

Instruments are keyed "SYMBOL.MIC". When two sources offer the same key, the one with the
higher `precedence` (an optional int attribute of a source, default 0) wins; between equals, the
first collected (built-ins are registered first); the other is logged. The file source sets 10:
a user's own data wins over the simulated twin, for every interval and the quote of that key.

The built-ins' market data is reference data: the same for every tenant, and any
authenticated principal may read it (the schema checks authentication, not a permission). A
tenant's installed data sources (its marketplace plugins with `marketdata:publish`, called in
their sandboxed workers) join them for that tenant only, in the scope the request or job runs
in (gateway/scope.py): its instruments, bars and quotes, and so its backtests, patterns and
valuations. Precedence: an installed source's instrument replaces a built-in's of the same key
(the tenant installed it to get that data), and among installed sources the earlier install
wins. A tenant's overlay is rebuilt when its installed set changes, and its instrument lists are
read again after `OVERLAY_TTL_S`.
"""

from __future__ import annotations

import base64
import logging
import math
import threading
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

from gateway.errors import DomainError, InvalidInput
from gateway.marketdata.errors import (
    InstrumentUnknown,
    IntervalInvalid,
    RangeInvalid,
    SourceFailed,
    TooManyInstruments,
)
from gateway.markets.errors import InstantNotAware
from gateway.pagination import check_page_size
from gateway.scope import current_tenant
from plugins.host import PluginFailed, PluginHost, default_context
from plugins.sdk import Bar, Instrument, MarketDataSource, PluginContext, Quote, VenueDirectory

log = logging.getLogger(__name__)

HOOK = "alphintra_market_data_sources"
OWN_FILES = "file-source"  # the plugin a tenant's own files are served as (tenant_files.py)
INTERVAL_SPANS: Mapping[str, timedelta] = {
    "1m": timedelta(minutes=1), "5m": timedelta(minutes=5), "15m": timedelta(minutes=15),
    "1h": timedelta(hours=1), "1d": timedelta(days=1),
}
INTERVALS: tuple[str, ...] = tuple(INTERVAL_SPANS)
MAX_BARS = 10_000
# A range this many times the cap in wall-clock intervals cannot fit however few hours the
# venue trades (the thinnest venues trade about a sixth of the week), so it is refused without
# asking the calendar for years of sessions.
WALL_CLOCK_FACTOR = 10
MAX_QUOTE_INSTRUMENTS = 50
OVERLAY_TTL_S = 30.0
InstalledSources = Callable[[str], Sequence[tuple[str, MarketDataSource]]]

T = TypeVar("T")


@dataclass(frozen=True)
class SourceEntry:
    plugin: str
    source: MarketDataSource
    # An installed (sandboxed) source: its intraday price bars must fall in its venue's sessions.
    held_to_sessions: bool = False

    @property
    def name(self) -> str:
        return str(getattr(self.source, "name", "?"))


@dataclass(frozen=True)
class _Registry:
    by_key: Mapping[str, tuple[Instrument, SourceEntry]]  # upper-cased key
    ordered: tuple[Instrument, ...]  # by key
    sources: tuple[SourceEntry, ...]
    failures: tuple[PluginFailed, ...] = field(default=())


def _precedence(source: MarketDataSource) -> int:
    value = getattr(source, "precedence", 0)
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def aware(at: datetime, what: str = "instant") -> datetime:
    if at.tzinfo is None or at.utcoffset() is None:
        raise InstantNotAware(f"{what} {at.isoformat()} has no time zone; send an offset such as Z")
    return at.astimezone(UTC)


class MarketDataService:
    def __init__(self, plugins: PluginHost, venues: VenueDirectory, *,
                 configs: Mapping[str, Mapping[str, Any]] | None = None,
                 max_bars: int = MAX_BARS, now: Callable[[], datetime] | None = None) -> None:
        self.plugins = plugins
        self.venues = venues
        # The clock quote streams read; the runtime passes the markets clock, so a test that
        # drives sessions with a controllable clock drives quotes with it too.
        self.now: Callable[[], datetime] = now or (lambda: datetime.now(UTC))
        self.configs = dict(configs or {})
        self.max_bars = max_bars
        self._lock = threading.Lock()
        self._registry: _Registry | None = None
        self._installed: InstalledSources | None = None
        self._disabled: Callable[[str], frozenset[str]] | None = None
        self._overlays: dict[str, tuple[tuple[Any, ...], float, _Registry]] = {}

    def bind_installed(self, installed: InstalledSources,
                       disabled: Callable[[str], frozenset[str]] | None = None) -> None:
        """Where a tenant's installed sources come from (the marketplace's view of it), and which
        built-in plugins it switched off."""
        self._installed = installed
        self._disabled = disabled

    # -- sources ----------------------------------------------------------------------------

    def context_for(self, plugin: str) -> PluginContext:
        return default_context(plugin, config=dict(self.configs.get(plugin, {})), venues=self.venues)

    def reload(self) -> None:
        """Collect the sources again on next use (after plugins were added or reconfigured)."""
        with self._lock:
            self._registry = None

    def sources(self) -> tuple[SourceEntry, ...]:
        return self._load().sources

    def failures(self) -> tuple[PluginFailed, ...]:
        return self._load().failures

    def _load(self) -> _Registry:
        with self._lock:
            if self._registry is None:
                self._registry = self._collect()
            base = self._registry
        tenant = current_tenant()
        if tenant is None or self._installed is None:
            return base
        installed = self._installed(tenant)
        off = self._disabled(tenant) if self._disabled is not None else frozenset()
        if not installed and not off:
            return base
        return self._overlay(tenant, base, installed, off)

    def _overlay(self, tenant: str, base: _Registry, installed: Sequence[tuple[str, MarketDataSource]],
                 off: frozenset[str] = frozenset()) -> _Registry:
        key = (*(id(source) for _, source in installed), *sorted(off))
        now = time.monotonic()
        with self._lock:
            found = self._overlays.get(tenant)
        if found is not None and found[0] == key and now - found[1] < OVERLAY_TTL_S:
            return found[2]
        by_key = {k: v for k, v in base.by_key.items() if v[1].plugin not in off}
        entries = [e for e in base.sources if e.plugin not in off]
        failures = list(base.failures)
        taken: set[str] = set()
        for plugin, source in installed:
            entry = SourceEntry(plugin, source, held_to_sessions=plugin != OWN_FILES)
            try:
                offered = list(source.instruments())
            except DomainError as exc:  # PLUGIN_FAILED from the sandbox: left out, logged
                log.error("installed data source failed to list instruments",
                          extra={"plugin": plugin, "tenant_id": tenant, "code": exc.code})
                failures.append(PluginFailed(plugin, exc.message))
                continue
            entries.append(entry)
            for instrument in offered:
                upper = instrument.key.upper()
                if upper not in taken:
                    by_key[upper] = (instrument, entry)
                    taken.add(upper)
        ordered = tuple(sorted((i for i, _ in by_key.values()), key=lambda i: i.key))
        registry = _Registry(by_key, ordered, tuple(entries), tuple(failures))
        with self._lock:
            self._overlays[tenant] = (key, now, registry)
        return registry

    def _collect(self) -> _Registry:
        contributions, failures = self.plugins.collect(HOOK, self.context_for, expect=MarketDataSource)
        by_key: dict[str, tuple[Instrument, SourceEntry]] = {}
        entries: list[SourceEntry] = []
        listed: list[tuple[SourceEntry, list[Instrument]]] = []
        for contribution in contributions:
            entry = SourceEntry(contribution.plugin, contribution.value)
            try:
                offered = list(entry.source.instruments())
                wrong = next((i for i in offered if not isinstance(i, Instrument)), None)
                if wrong is not None:
                    raise TypeError(f"instruments() returned a {type(wrong).__name__}")
            except Exception as exc:
                log.exception("market data source failed to list instruments",
                              extra={"plugin": entry.plugin, "source": entry.name})
                failures.append(PluginFailed(entry.plugin, f"instruments() of {entry.name}: {exc}"))
                continue
            entries.append(entry)
            listed.append((entry, offered))
        # Stable: between sources of equal precedence, the first collected keeps a key.
        for entry, offered in sorted(listed, key=lambda pair: -_precedence(pair[0].source)):
            for instrument in offered:
                key = instrument.key.upper()
                if key in by_key:
                    log.warning("instrument %s offered twice; %s of %s kept", instrument.key,
                                by_key[key][1].name, by_key[key][1].plugin)
                    continue
                by_key[key] = (instrument, entry)
        ordered = tuple(sorted((i for i, _ in by_key.values()), key=lambda i: i.key))
        return _Registry(by_key, ordered, tuple(entries), tuple(failures))

    # -- instruments ------------------------------------------------------------------------

    def instruments(self, mic: str | None = None, search: str | None = None) -> list[Instrument]:
        """Instruments by key, optionally on one venue and matching `search` (a case-insensitive
        part of the symbol, name, ISIN or key). An unknown MIC is VENUE_UNKNOWN."""
        items: Sequence[Instrument] = self._load().ordered
        if mic is not None:
            wanted = mic.strip().upper()
            items = [i for i in items if i.mic == wanted]
            if not items:
                self.venues.venue(wanted)  # raises VENUE_UNKNOWN when no venue has that MIC
        if search is not None and search.strip():
            needle = search.strip().lower()
            items = [i for i in items if any(needle in (v or "").lower()
                                             for v in (i.symbol, i.name, i.isin, i.key))]
        return list(items)

    def instruments_of(self, plugins: Collection[str], search: str | None = None
                       ) -> list[tuple[str, Instrument]]:
        """(plugin, instrument) of the sources `plugins` offer (a tenant's installed ones)."""
        registry = self._load()
        return [(entry.plugin, i) for i in self.instruments(search=search)
                if (entry := registry.by_key[i.key.upper()][1]).plugin in plugins]

    def bars_of(self, plugins: Collection[str], key: str, start: datetime, end: datetime,
                interval: str) -> tuple[str, list[Bar]]:
        """`bars`, when one of `plugins` is the instrument's source (else INSTRUMENT_UNKNOWN)."""
        entry = self.source_of(key)
        if entry.plugin not in plugins:
            raise InstrumentUnknown(f"no installed data source serves {key}")
        return entry.plugin, self.bars(key, start, end, interval)

    def instrument(self, key: str) -> Instrument:
        return self._find(key)[0]

    def is_platform_source(self, entry: SourceEntry) -> bool:
        """Whether `entry` is one of the platform's own sources (a built-in, the same for every
        tenant), not a tenant's own files or installed plugin: what the market-state feed may
        record for everyone."""
        with self._lock:
            base = self._registry
        return base is not None and entry in base.sources

    def source_of(self, key: str) -> SourceEntry:
        return self._find(key)[1]

    def _find(self, key: str) -> tuple[Instrument, SourceEntry]:
        found = self._load().by_key.get(key.strip().upper()) if isinstance(key, str) else None
        if found is None:
            raise InstrumentUnknown(f"no instrument {key!r}; instruments are named SYMBOL.MIC")
        return found

    # -- bars and quotes --------------------------------------------------------------------

    def bars(self, key: str, start: datetime, end: datetime, interval: str) -> list[Bar]:
        """Bars of `interval` starting in [start, end), oldest first."""
        instrument, entry = self._find(key)
        if interval not in INTERVAL_SPANS:
            raise IntervalInvalid(f"interval must be one of {', '.join(INTERVALS)}")
        start, end = aware(start, "start"), aware(end, "end")
        if end <= start:
            raise RangeInvalid("end must be after start")
        self._check_size(instrument, start, end, interval)
        bars = self._call(entry, "bars", instrument, start, end, interval)
        if not isinstance(bars, Sequence) or any(not isinstance(b, Bar) for b in bars):
            raise self._failed(entry, "bars", "answered in the wrong shape")
        problem = _bars_problem(bars, instrument, start, end, interval)
        if problem is None and entry.held_to_sessions and instrument.asset_class != "ALTERNATIVE_DATA":
            problem = _session_problem(self.venues, bars, interval)  # a sentiment series runs all day
        if problem is not None:
            # A source's wrong data fails this request, naming the plugin, rather than reaching a
            # backtest or a chart half-right.
            raise self._failed(entry, "bars", f"answered bars that {problem}")
        if len(bars) > self.max_bars:
            raise RangeInvalid(f"more than {self.max_bars} bars; ask for a shorter range",
                               details={"maxBars": self.max_bars})
        return list(bars)

    def quote(self, key: str, at: datetime) -> Quote | None:
        instrument, entry = self._find(key)
        at = aware(at, "at")
        quote = self._call(entry, "quote", instrument, at)
        if quote is not None and not isinstance(quote, Quote):
            raise self._failed(entry, "quote", "answered in the wrong shape")
        return quote

    def check_quote_request(self, keys: Sequence[str]) -> list[str]:
        """The instruments' canonical keys, for a quote stream; raises on bad input."""
        if not keys:
            raise InvalidInput("name at least one instrument", code="INSTRUMENTS_EMPTY")
        if len(keys) > MAX_QUOTE_INSTRUMENTS:
            raise TooManyInstruments(f"at most {MAX_QUOTE_INSTRUMENTS} instruments per subscription")
        return list(dict.fromkeys(self.instrument(k).key for k in keys))

    def quotes(self, keys: Sequence[str], at: datetime) -> list[Quote]:
        """Quotes of several instruments at one instant, for streams: an instrument whose source
        has no quote, or fails, is left out of this round (and the failure logged), so one
        broken source does not stop the others' quotes."""
        out = []
        for key in keys:
            try:
                quote = self.quote(key, at)
            except SourceFailed:
                continue
            if quote is not None:
                out.append(quote)
        return out

    def _check_size(self, instrument: Instrument, start: datetime, end: datetime, interval: str) -> None:
        """Refuse a request that would return more than max_bars bars, counting only trading
        time where the venue directory knows the venue."""
        span = INTERVAL_SPANS[interval]
        wall = math.ceil((end - start) / span)
        if wall <= self.max_bars:
            return
        too_many = RangeInvalid(f"more than {self.max_bars} {interval} bars; ask for a shorter range",
                                details={"maxBars": self.max_bars})
        if wall > self.max_bars * WALL_CLOCK_FACTOR:
            raise too_many
        try:
            venue = self.venues.venue(instrument.mic)
        except DomainError:
            venue = None  # a file source may hold venues the directory does not know
        if venue is None or venue.always_open:
            raise too_many
        windows = self.venues.sessions(instrument.mic, start, end)
        if interval == "1d":
            zone = ZoneInfo(venue.timezone)
            count = len({w.opens_at.astimezone(zone).date() for w in windows})
        else:
            count = sum(math.ceil((min(w.closes_at, end) - max(w.opens_at, start)) / span)
                        for w in windows)
        if count > self.max_bars:
            raise too_many

    def _call(self, entry: SourceEntry, method: str, *args: Any) -> Any:
        try:
            return getattr(entry.source, method)(*args)
        except DomainError:
            # The gateway's own errors (say, from the venue directory the source asked) keep
            # their codes: they describe the request, not the plugin.
            raise
        except Exception as exc:
            log.exception("market data source failed",
                          extra={"plugin": entry.plugin, "source": entry.name, "method": method})
            raise self._failed(entry, method, "raised") from exc

    @staticmethod
    def _failed(entry: SourceEntry, method: str, what: str) -> SourceFailed:
        # The client hears which plugin failed, not the exception text (it may carry paths or
        # secrets of the plugin); the log has the traceback.
        failed = PluginFailed(entry.plugin, f"{method}() of source {entry.name!r} {what}")
        return SourceFailed(failed.message, details={"plugin": failed.plugin, "source": entry.name})


def _bars_problem(bars: Sequence[Bar], instrument: Instrument, start: datetime, end: datetime,
                  interval: str) -> str | None:
    """What is wrong with a source's bars, if anything: not ascending, outside the range asked
    for, of another instrument or interval, or with prices out of order."""
    previous: datetime | None = None
    for bar in bars:
        if (bar.symbol, bar.mic, bar.interval) != (instrument.symbol, instrument.mic, interval):
            return f"are of {bar.symbol}.{bar.mic} {bar.interval}, not {instrument.key} {interval}"
        if bar.start.tzinfo is None or not start <= bar.start < end:
            return f"start at {bar.start.isoformat()}, outside the range asked for"
        if previous is not None and bar.start <= previous:
            return "are not in ascending order of start"
        if not bar.low <= min(bar.open, bar.close) <= max(bar.open, bar.close) <= bar.high or bar.volume < 0:
            return f"break low <= open, close <= high (at {bar.start.isoformat()})"
        previous = bar.start
    return None


def _session_problem(venues: VenueDirectory, bars: Sequence[Bar], interval: str) -> str | None:
    """An intraday bar no session of its venue overlaps (a venue the directory does not know,
    such as an installed connector's own, is the plugin's to describe)."""
    span = INTERVAL_SPANS[interval]
    if span >= timedelta(days=1):
        return None
    for bar in bars:
        try:
            inside = venues.is_open(bar.mic, bar.start) or bool(venues.sessions(bar.mic, bar.start,
                                                                                bar.start + span))
        except DomainError:
            return None
        if not inside:
            return f"start at {bar.start.isoformat()}, outside {bar.mic}'s sessions"
    return None


# -- cursor pages over in-memory lists sorted by a unique string key -------------------------

def encode_key_cursor(key: str) -> str:
    return base64.urlsafe_b64encode(f"k|{key}".encode()).decode()


def decode_key_cursor(cursor: str) -> str:
    try:
        text = base64.urlsafe_b64decode(cursor.encode()).decode()
    except (ValueError, UnicodeDecodeError):
        text = ""
    if not text.startswith("k|"):
        raise InvalidInput("cursor is not one this API returned", code="CURSOR_INVALID")
    return text[2:]


def key_page(items: Sequence[T], key: Callable[[T], str], first: int, after: str | None,
             maximum: int) -> tuple[list[T], bool]:
    """The `first` items after the cursor `after`; `items` sorted by `key`. Keyed rather than
    positional, so a page stays right when instruments come or go between requests."""
    check_page_size(first, maximum)
    if after is not None:
        last = decode_key_cursor(after)
        items = [i for i in items if key(i) > last]
    return list(items[:first]), len(items) > first
