"""The market simulator ("digital twin"): a built-in market data source.

Prices follow correlated geometric Brownian motion with a global regime (a Markov chain over
calm / volatile / crisis days that shifts drift, volatility, volume and spreads). Bars exist only
inside the trading sessions `context.venues` gives, and intraday volume follows a U-shaped curve
in each session window.

Reproducible by seed, whatever is asked and in whatever order: every random number comes from
a stream derived from (seed, purpose, instrument or factor, day or year) with numpy's
SeedSequence, and each stream is always consumed in full, so one answer never depends on what
was computed before it.

The model, in log prices:
- Daily: the latent log price at each UTC midnight, L(d+1) = L(d) + (mu - sigma^2/2)/365
  + sigma/sqrt(365) * Z(d), in calendar days (the latent price moves while a venue is closed,
  and the move shows as the gap at the next open). Z = sum_k beta_k F_k + sqrt(1 - sum beta^2) e,
  with F_k shared factors (global, one per region, crypto) and e the instrument's own shock, so
  corr(i, j) = sum_k beta_ik beta_jk. Daily shocks come in one stream per (factor or instrument,
  year); prices are anchored at ANCHOR, and a level is a sum of yearly totals from there.
- Intraday: per (instrument, UTC day), a Brownian bridge on a one-minute grid from L(d) to
  L(d+1), with the same factor structure (factor streams per day), so intraday moves are
  correlated too. Each minute's high and low are drawn exactly from the distribution of a
  Brownian bridge's maximum and minimum, so 1m, 5m, 1h and 1d bars agree with each other.

Listings: each instrument on its primary venue (`TwinSpec.mic`) and, for the covered equity
markets, on the market's alternative venues (`TwinSpec.listings`: Cboe, Arca, IEX, Turquoise,
Aquis, Japannext …) with the same ISIN and the same simulated price (one latent path: cross-venue
arbitrage is taken as instant), each venue with its own volume (a ratio of the primary's), spread
(a multiple of the primary's) and quoted sizes (their noise shifted per venue), so venues differ
in what they show and a router has a real choice.

Beyond the `MarketDataSource` protocol, `MarketTwin` answers `regime_on(day)`,
`daily_log_levels(...)` and `correlation()`, for tests and for anyone checking the model.
"""

from __future__ import annotations

import bisect
import hashlib
import math
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np

from plugins.sdk import (
    Bar,
    Instrument,
    MarketDataSource,
    PluginContext,
    Quote,
    VenueDirectory,
    VenueInfo,
    hookimpl,
)

NAME = "market-twin"
DEFAULT_SEED = 7
# Bar intervals and their length in minutes; "1d" is one bar per trading day.
INTERVAL_MINUTES: Mapping[str, int] = {"1m": 1, "5m": 5, "15m": 15, "1h": 60, "1d": 1440}
MINUTES_PER_DAY = 1440
DAYS_PER_YEAR = 365.0  # the latent process runs in calendar time
# The simulated history: the regime chain starts calm on FIRST_DAY; prices are given at ANCHOR.
FIRST_DAY = date(1990, 1, 1)
LAST_DAY = date(2100, 12, 31)
ANCHOR = date(2024, 1, 1)
# Sessions are read with this margin around a request, so a window the directory clips at the
# edge of what was asked never changes a bar inside it.
PAD = timedelta(days=2)
FACTORS = ("global", "americas", "emea", "apac", "crypto")


@dataclass(frozen=True)
class Regime:
    name: str
    drift: float  # added to each instrument's annual drift
    volatility: float  # multiplies each instrument's volatility
    volume: float  # multiplies daily volume
    spread: float  # multiplies the quoted spread


REGIMES: tuple[Regime, ...] = (
    Regime("calm", 0.0, 1.0, 1.0, 1.0),
    Regime("volatile", -0.10, 1.8, 1.5, 2.0),
    Regime("crisis", -0.60, 3.5, 2.5, 4.0),
)
# Daily transition probabilities (rows: from, columns: to). Calm spells last months, crises
# weeks; about 70% of days are calm in the long run.
TRANSITIONS: tuple[tuple[float, ...], ...] = (
    (0.985, 0.013, 0.002),
    (0.040, 0.950, 0.010),
    (0.020, 0.060, 0.920),
)


@dataclass(frozen=True)
class Listing:
    """An instrument's listing on an alternative venue: the same simulated price (one latent
    path, cross-venue arbitrage taken as instant), the venue's own liquidity. Illustrative
    ratios of the order of the venues' market shares, not measured ones."""

    mic: str
    volume_ratio: float  # the venue's daily volume as a fraction of the primary listing's
    spread_ratio: float  # its quoted spread as a multiple of the primary's (never below a tick)


@dataclass(frozen=True)
class TwinSpec:
    """One simulated instrument. `mic` None puts it on the directory's 24/7 venue."""

    sid: str  # names its random streams; stable whatever MIC the instrument ends up on
    symbol: str
    mic: str | None
    currency: str
    name: str
    isin: str | None
    asset_class: str
    lot_size: int
    tick_size: Decimal
    price: float  # at ANCHOR
    volatility: float  # annualised, calm regime
    drift: float  # annualised, calm regime
    loadings: tuple[tuple[str, float], ...]  # (factor, beta); sum of beta^2 below 1
    daily_volume: float  # units per trading day, calm regime
    quantity_step: Decimal  # volumes and quote sizes are multiples of it
    spread_bps: float  # full quoted spread, calm regime
    listings: tuple[Listing, ...] = ()  # alternative venues, beside `mic`
    size_phase: int = 0  # minutes the quoted sizes' noise is shifted by (venues differ)

    def on(self, listing: Listing) -> TwinSpec:
        """This instrument as listed on an alternative venue: the same random streams (`sid`),
        so the same prices; a share of the volume, a wider or equal spread."""
        return replace(self, mic=listing.mic, daily_volume=self.daily_volume * listing.volume_ratio,
                       spread_bps=self.spread_bps * listing.spread_ratio, listings=(),
                       size_phase=_number(f"sizes:{listing.mic}") % MINUTES_PER_DAY)

    def instrument(self, mic: str) -> Instrument:
        return Instrument(symbol=self.symbol, mic=mic, currency=self.currency, name=self.name,
                          isin=self.isin, asset_class=self.asset_class, lot_size=self.lot_size,
                          tick_size=self.tick_size)


def _equity(sid: str, mic: str, currency: str, name: str, isin: str, *, lot: int = 1,
            tick: str = "0.01", price: float, vol: float, drift: float = 0.07,
            region: str, beta_global: float = 0.5, beta_region: float = 0.45,
            volume: float, spread_bps: float = 2.0, listings: tuple[Listing, ...] = ()) -> TwinSpec:
    return TwinSpec(sid=sid, symbol=sid, mic=mic, currency=currency, name=name, isin=isin,
                    asset_class="EQUITY", lot_size=lot, tick_size=Decimal(tick), price=price,
                    volatility=vol, drift=drift,
                    loadings=(("global", beta_global), (region, beta_region)),
                    daily_volume=volume, quantity_step=Decimal(lot), spread_bps=spread_bps,
                    listings=listings)


# Where the covered markets' shares also trade (gateway/markets/venues.py has the venues).
US_ALTERNATIVES = (Listing("BATS", 0.4, 1.0), Listing("ARCX", 0.5, 1.25), Listing("IEXG", 0.2, 1.5))
UK_ALTERNATIVES = (Listing("CHIX", 0.35, 1.0), Listing("TRQX", 0.12, 1.25), Listing("AQXE", 0.15, 1.25))
EURO_ALTERNATIVES = (Listing("CEUX", 0.25, 1.0), Listing("AQEU", 0.1, 1.3))
JAPAN_ALTERNATIVES = (Listing("CHIJ", 0.06, 1.25), Listing("SBIJ", 0.08, 1.25))
AUSTRALIA_ALTERNATIVES = (Listing("CXAC", 0.2, 1.1),)


def _crypto(sid: str, name: str, *, price: float, vol: float, volume: float) -> TwinSpec:
    return TwinSpec(sid=sid, symbol=sid, mic=None, currency="USD", name=name, isin=None,
                    asset_class="CRYPTO", lot_size=1, tick_size=Decimal("0.01"), price=price,
                    volatility=vol, drift=0.10, loadings=(("global", 0.25), ("crypto", 0.8)),
                    daily_volume=volume, quantity_step=Decimal("0.0001"), spread_bps=1.0)


# Prices near their real levels at ANCHOR; lots and ticks as the venues set them (Tokyo and
# Hong Kong trade in board lots of 100; SHEL is priced in GBP, not pence, to stay in ISO 4217).
UNIVERSE: tuple[TwinSpec, ...] = (
    _equity("AAPL", "XNAS", "USD", "Apple Inc.", "US0378331005", price=192.0, vol=0.25,
            region="americas", beta_global=0.55, volume=55e6, spread_bps=1.0,
            listings=US_ALTERNATIVES),
    _equity("MSFT", "XNAS", "USD", "Microsoft Corp.", "US5949181045", price=375.0, vol=0.24,
            region="americas", beta_global=0.55, volume=22e6, spread_bps=1.0,
            listings=US_ALTERNATIVES),
    _equity("JPM", "XNYS", "USD", "JPMorgan Chase & Co.", "US46625H1005", price=170.0, vol=0.22,
            region="americas", volume=9e6, listings=US_ALTERNATIVES),
    _equity("SHEL", "XLON", "GBP", "Shell plc", "GB00BP6MXD84", tick="0.005", price=25.7,
            vol=0.22, region="emea", volume=15e6, listings=UK_ALTERNATIVES),
    _equity("SAP", "XETR", "EUR", "SAP SE", "DE0007164600", tick="0.02", price=140.0, vol=0.24,
            region="emea", volume=2e6, listings=EURO_ALTERNATIVES),
    _equity("7203", "XTKS", "JPY", "Toyota Motor Corp.", "JP3633400001", lot=100, tick="0.5",
            price=2590.0, vol=0.27, region="apac", beta_global=0.45, beta_region=0.5,
            volume=30e6, listings=JAPAN_ALTERNATIVES),
    _equity("0700", "XHKG", "HKD", "Tencent Holdings Ltd.", "KYG875721634", lot=100, tick="0.2",
            price=294.0, vol=0.33, region="apac", beta_global=0.4, beta_region=0.55,
            volume=18e6),
    _equity("BHP", "XASX", "AUD", "BHP Group Ltd.", "AU000000BHP4", price=50.0, vol=0.24,
            region="apac", beta_global=0.45, volume=7e6,
            listings=AUSTRALIA_ALTERNATIVES),
    _crypto("BTC-USD", "Bitcoin / US dollar", price=42_000.0, vol=0.6, volume=30_000.0),
    _crypto("ETH-USD", "Ether / US dollar", price=2_300.0, vol=0.7, volume=400_000.0),
)


def _u_curve(x: np.ndarray) -> np.ndarray:
    """Relative trading intensity at fraction x of a session window: busy at the open, quiet
    at midday, busiest into the close (the closing auction)."""
    return 1.0 + 2.5 * np.exp(-x / 0.07) + 3.5 * np.exp(-(1.0 - x) / 0.05)


def _number(name: str) -> int:
    # A stable hash: Python's own hash() of a str changes from process to process.
    return int.from_bytes(hashlib.blake2b(name.encode(), digest_size=8).digest(), "big")


def _minute(t: datetime) -> int:
    """Minutes since 0001-01-01 00:00 UTC, floored."""
    t = t.astimezone(UTC)
    return t.toordinal() * MINUTES_PER_DAY + t.hour * 60 + t.minute


def _instant(minute: int) -> datetime:
    day, m = divmod(minute, MINUTES_PER_DAY)
    return datetime.combine(date.fromordinal(day), time(m // 60, m % 60), UTC)


def _ticks(log_prices: np.ndarray, tick: float) -> np.ndarray:
    # Nearest tick, half to even; never below one tick.
    return np.maximum(np.rint(np.exp(log_prices) / tick), 1).astype(np.int64)


@dataclass(frozen=True)
class _Day:
    """One instrument's latent path over one UTC day."""

    path: np.ndarray  # 1441 log prices, at each minute boundary, both midnights included
    high: np.ndarray  # 1440 log highs within each minute
    low: np.ndarray  # 1440 log lows
    size_noise: np.ndarray  # 1440 uniforms for quoted sizes
    regime: int


@dataclass(frozen=True)
class _TradingDay:
    day: date  # the venue's local date
    windows: tuple[tuple[int, int], ...]  # [first minute, end minute) in global minutes


class MarketTwin:
    """A `MarketDataSource` simulating UNIVERSE (or any list of TwinSpec) on `venues`."""

    name = NAME

    def __init__(self, venues: VenueDirectory, *, seed: int = DEFAULT_SEED,
                 universe: Iterable[TwinSpec] = UNIVERSE, crypto_mic: str | None = None,
                 regimes: Sequence[Regime] = REGIMES,
                 transitions: Sequence[Sequence[float]] = TRANSITIONS,
                 logger: Any = None) -> None:
        if seed < 0:
            raise ValueError("seed must be a non-negative integer")
        self.seed = seed
        self.venues = venues
        self.regimes = tuple(regimes)
        self._cumulative = [list(np.cumsum(row)) for row in transitions]
        if len(self._cumulative) != len(self.regimes) or any(
                len(row) != len(self.regimes) or abs(row[-1] - 1.0) > 1e-9 for row in self._cumulative):
            raise ValueError("transitions must be a square stochastic matrix over the regimes")
        known = {v.mic: v for v in venues.venues()}
        if crypto_mic is None:
            crypto_mic = next((v.mic for v in known.values() if v.always_open), None)
        self._specs: dict[str, tuple[TwinSpec, Instrument, VenueInfo]] = {}
        for spec in universe:
            if sum(b * b for _, b in spec.loadings) >= 1.0:
                raise ValueError(f"{spec.sid}: factor loadings must have sum of squares below 1")
            if any(f not in FACTORS for f, _ in spec.loadings):
                raise ValueError(f"{spec.sid}: factors are {FACTORS}")
            mic = spec.mic or crypto_mic
            if mic is None or mic not in known:
                # A venue the directory does not know has no sessions to respect: leave it out.
                if logger is not None:
                    logger.warning("market twin: no venue %s for %s; left out", mic, spec.sid)
                continue
            instrument = spec.instrument(mic)
            self._specs[instrument.key] = (spec, instrument, known[mic])
            for listing in spec.listings:
                if listing.mic in known:  # a directory without the venue: the primary only
                    alternative = spec.on(listing)
                    instrument = alternative.instrument(listing.mic)
                    self._specs[instrument.key] = (alternative, instrument, known[listing.mic])
        self._lock = threading.RLock()
        self._regime_years: dict[int, np.ndarray] = {}
        self._level_years: dict[tuple[str, int], np.ndarray] = {}
        self._numbers: dict[str, int] = {}  # stream names hashed, memoised

    def _number(self, name: str) -> int:
        self._numbers[name] = number = _number(name)
        return number

    # -- the MarketDataSource protocol ------------------------------------------------------

    def instruments(self) -> list[Instrument]:
        return [instrument for _, instrument, _ in self._specs.values()]

    def bars(self, instrument: Instrument, start: datetime, end: datetime, interval: str) -> list[Bar]:
        spec, inst, venue = self._lookup(instrument)
        if interval not in INTERVAL_MINUTES:
            raise ValueError(f"interval must be one of {sorted(INTERVAL_MINUTES)}")
        start, end = _aware(start), _aware(end)
        days: dict[int, _Day] = {}
        noises: dict[int, tuple[float, np.ndarray]] = {}
        tick = float(spec.tick_size)
        bars: list[Bar] = []
        for trading_day in self._trading_days(venue, start, end):
            first, last = trading_day.windows[0][0], trading_day.windows[-1][1]
            # Days read only for the margin around the request cost no simulation.
            if interval == "1d":
                wanted = start <= _instant(first) < end
            else:
                wanted = _instant(last) > start and _instant(first) < end
            if not wanted:
                continue
            spans = [self._span(spec, g0, g1, days) for g0, g1 in trading_day.windows]
            lots = self._volumes(spec, venue, trading_day, noises)
            if interval == "1d":
                o = _ticks(spans[0][0][:1], tick)[0]
                c = _ticks(spans[-1][0][-1:], tick)[0]
                h = _ticks(np.array([max(s[1].max() for s in spans)]), tick)[0]
                lo = _ticks(np.array([min(s[2].min() for s in spans)]), tick)[0]
                volume = sum(int(v.sum()) for v in lots)
                bars.append(self._bar(inst, first, interval, o, h, lo, c, volume, spec))
                continue
            step = INTERVAL_MINUTES[interval]
            for (g0, g1), (path, high, low), window_lots in zip(
                    trading_day.windows, spans, lots, strict=True):
                n = g1 - g0
                offsets = np.arange(0, n, step)
                ends = np.minimum(offsets + step, n)
                opens = _ticks(path[offsets], tick)
                closes = _ticks(path[ends], tick)
                highs = _ticks(np.maximum.reduceat(high, offsets), tick)
                lows = _ticks(np.minimum.reduceat(low, offsets), tick)
                volumes = np.add.reduceat(window_lots, offsets)
                for k, offset in enumerate(offsets):
                    if start <= _instant(g0 + int(offset)) < end:
                        bars.append(self._bar(inst, g0 + int(offset), interval, opens[k], highs[k],
                                              lows[k], closes[k], int(volumes[k]), spec))
        return bars

    def quote(self, instrument: Instrument, at: datetime) -> Quote | None:
        """Inside a session: bid and ask around the simulated price at `at`, with sizes.
        Outside (closed, lunch break, holiday): the last session's closing price as both bid
        and ask with zero sizes, an indicative quote nobody can trade on; None before the
        simulated history starts."""
        spec, inst, venue = self._lookup(instrument)
        at = _aware(at).astimezone(UTC)
        if not FIRST_DAY <= at.date() <= LAST_DAY:
            return None
        tick = spec.tick_size
        if self.venues.is_open(venue.mic, at):
            g = _minute(at)
            day = self._day(spec, g // MINUTES_PER_DAY)
            m = g % MINUTES_PER_DAY
            fraction = (at.second + at.microsecond / 1e6) / 60.0
            log_mid = day.path[m] + fraction * (day.path[m + 1] - day.path[m])
            mid = math.exp(log_mid)
            regime = self.regimes[day.regime]
            # The modelled spread, at least one tick wide.
            half = mid * spec.spread_bps * regime.spread / 2e4
            bid = max(math.floor((mid - half) / float(tick)), 1)
            ask = max(math.ceil((mid + half) / float(tick)), bid + 1)
            # A few lots at the top of the book: about a twentieth of a minute's volume.
            base = max(1.0, spec.daily_volume * regime.volume / 400 / 20 / float(spec.quantity_step))
            noise = day.size_noise[(m + spec.size_phase) % MINUTES_PER_DAY]
            bid_lots = max(1, round(base * (0.5 + noise)))
            ask_lots = max(1, round(base * (1.5 - noise)))
            return Quote(symbol=inst.symbol, mic=inst.mic, at=at, bid=bid * tick, ask=ask * tick,
                         bid_size=bid_lots * spec.quantity_step,
                         ask_size=ask_lots * spec.quantity_step)
        close = self._last_close(spec, venue, at)
        if close is None:
            return None
        price = int(_ticks(np.array([close]), float(tick))[0]) * tick
        zero = Decimal(0) * spec.quantity_step
        return Quote(symbol=inst.symbol, mic=inst.mic, at=at, bid=price, ask=price,
                     bid_size=zero, ask_size=zero)

    # -- the model, for tests and inspection -------------------------------------------------

    def regime_on(self, day: date) -> str:
        """The regime of a UTC day."""
        return self.regimes[self._regime(day.toordinal())].name

    def daily_log_levels(self, instrument: Instrument, first: date, last: date) -> np.ndarray:
        """The latent log price at each UTC midnight from `first` to `last`, inclusive."""
        spec, _, _ = self._lookup(instrument)
        return np.array([self._level(spec, d) for d in range(first.toordinal(), last.toordinal() + 1)])

    def correlation(self, instruments: Sequence[Instrument]) -> np.ndarray:
        """The model's correlation of the instruments' log returns."""
        loadings = np.array([[dict(self._lookup(i)[0].loadings).get(f, 0.0) for f in FACTORS]
                             for i in instruments])
        corr = loadings @ loadings.T
        np.fill_diagonal(corr, 1.0)
        return corr

    # -- internals ---------------------------------------------------------------------------

    def _lookup(self, instrument: Instrument) -> tuple[TwinSpec, Instrument, VenueInfo]:
        try:
            return self._specs[instrument.key]
        except KeyError:
            raise ValueError(f"{instrument.key} is not simulated by {self.name}") from None

    def _stream(self, *parts: int | str) -> np.random.Generator:
        key = tuple(p if isinstance(p, int) else self._numbers.get(p) or self._number(p) for p in parts)
        sequence = np.random.SeedSequence(self.seed, spawn_key=key)
        return np.random.Generator(np.random.PCG64(sequence))

    def _regime_year(self, year: int) -> np.ndarray:
        """Regime of each UTC day of `year` (the chain runs forward from FIRST_DAY, calm)."""
        with self._lock:
            if year not in self._regime_years:
                state = 0 if year == FIRST_DAY.year else int(self._regime_year(year - 1)[-1])
                n = (date(year + 1, 1, 1) - date(year, 1, 1)).days
                draws = self._stream("regime", year).random(366)
                states = np.empty(n, dtype=np.int8)
                for k in range(n):
                    row = self._cumulative[state]
                    state = min(bisect.bisect_right(row, draws[k]), len(row) - 1)
                    states[k] = state
                self._regime_years[year] = states
            return self._regime_years[year]

    def _regime(self, ordinal: int) -> int:
        day = date.fromordinal(ordinal)
        return int(self._regime_year(day.year)[day.timetuple().tm_yday - 1])

    def _shocks(self, spec: TwinSpec, purpose: str, when: int, size: int,
                own: np.random.Generator) -> np.ndarray:
        """Unit-variance correlated shocks: shared factor streams plus the instrument's own."""
        idiosyncratic = own.standard_normal(size)
        total = 0.0
        z = np.zeros(size)
        for factor, beta in spec.loadings:
            z += beta * self._stream(purpose, f"factor:{factor}", when).standard_normal(size)
            total += beta * beta
        return z + math.sqrt(1.0 - total) * idiosyncratic

    def _level_year(self, spec: TwinSpec, year: int) -> np.ndarray:
        """Log price at each UTC midnight of `year`, and at the next year's first midnight."""
        key = (spec.sid, year)
        with self._lock:
            if key not in self._level_years:
                n = (date(year + 1, 1, 1) - date(year, 1, 1)).days
                z = self._shocks(spec, "daily", year, 366, self._stream("daily", spec.sid, year))[:n]
                regimes = self._regime_year(year)
                vol = spec.volatility * np.array([r.volatility for r in self.regimes])[regimes]
                drift = spec.drift + np.array([r.drift for r in self.regimes])[regimes]
                returns = (drift - 0.5 * vol**2) / DAYS_PER_YEAR + vol / math.sqrt(DAYS_PER_YEAR) * z
                if year == ANCHOR.year:
                    first = math.log(spec.price)
                elif year > ANCHOR.year:
                    first = float(self._level_year(spec, year - 1)[-1])
                else:
                    first = float(self._level_year(spec, year + 1)[0]) - float(returns.sum())
                self._level_years[key] = first + np.concatenate(([0.0], np.cumsum(returns)))
            return self._level_years[key]

    def _level(self, spec: TwinSpec, ordinal: int) -> float:
        day = date.fromordinal(ordinal)
        return float(self._level_year(spec, day.year)[day.timetuple().tm_yday - 1])

    def _day(self, spec: TwinSpec, ordinal: int) -> _Day:
        regime = self._regime(ordinal)
        start, end = self._level(spec, ordinal), self._level(spec, ordinal + 1)
        own = self._stream("intraday", spec.sid, ordinal)
        z = self._shocks(spec, "intraday", ordinal, MINUTES_PER_DAY, own)
        # Draw everything else from `own` in a fixed order, whatever the caller needs.
        u_high, u_low = 1.0 - own.random(MINUTES_PER_DAY), 1.0 - own.random(MINUTES_PER_DAY)
        size_noise = own.random(MINUTES_PER_DAY)
        variance = (spec.volatility * self.regimes[regime].volatility) ** 2 / DAYS_PER_YEAR \
            / MINUTES_PER_DAY
        walk = np.concatenate(([0.0], np.cumsum(z))) * math.sqrt(variance)
        t = np.arange(MINUTES_PER_DAY + 1) / MINUTES_PER_DAY
        path = start + t * (end - start) + walk - t * walk[-1]
        path[0], path[-1] = start, end  # exact, so adjacent days meet without rounding noise
        a, b = path[:-1], path[1:]
        # The maximum (minimum) of a Brownian bridge from a to b with variance v over the step
        # is (a + b +- sqrt((b - a)^2 - 2 v ln U)) / 2 for U uniform on (0, 1].
        high = (a + b + np.sqrt((b - a) ** 2 - 2 * variance * np.log(u_high))) / 2
        low = (a + b - np.sqrt((b - a) ** 2 - 2 * variance * np.log(u_low))) / 2
        return _Day(path, high, low, size_noise, regime)

    def _span(self, spec: TwinSpec, g0: int, g1: int, days: dict[int, _Day]
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Path points g0..g1 (inclusive) and per-minute highs and lows over [g0, g1),
        crossing UTC midnights as needed. `days` memoises _Day within one request."""
        paths, highs, lows = [], [], []
        for ordinal in range(g0 // MINUTES_PER_DAY, (g1 - 1) // MINUTES_PER_DAY + 1):
            if ordinal not in days:
                days[ordinal] = self._day(spec, ordinal)
            day = days[ordinal]
            base = ordinal * MINUTES_PER_DAY
            a, b = max(g0, base) - base, min(g1, base + MINUTES_PER_DAY) - base
            paths.append(day.path[a:b])
            highs.append(day.high[a:b])
            lows.append(day.low[a:b])
        last = days[(g1 - 1) // MINUTES_PER_DAY]
        paths.append(last.path[(g1 - 1) % MINUTES_PER_DAY + 1:][:1])
        return np.concatenate(paths), np.concatenate(highs), np.concatenate(lows)

    def _volumes(self, spec: TwinSpec, venue: VenueInfo, trading_day: _TradingDay,
                 noises: dict[int, tuple[float, np.ndarray]]) -> list[np.ndarray]:
        """Volume of each minute of each window, in whole quantity steps (so coarser bars are
        exact sums of finer ones). `noises` memoises _volume_noise within one request."""
        first_day = trading_day.windows[0][0] // MINUTES_PER_DAY
        regime = self.regimes[self._regime(first_day)]
        daily = spec.daily_volume * regime.volume * self._volume_noise(spec, first_day, noises)[0]
        total = sum(g1 - g0 for g0, g1 in trading_day.windows)
        step = float(spec.quantity_step)
        out = []
        for g0, g1 in trading_day.windows:
            n = g1 - g0
            x = (np.arange(n) + 0.5) / n
            # A 24/7 market has no opening or closing rush to speak of: flat.
            weights = np.ones(n) if venue.always_open else _u_curve(x)
            parts = []
            for ordinal in range(g0 // MINUTES_PER_DAY, (g1 - 1) // MINUTES_PER_DAY + 1):
                base = ordinal * MINUTES_PER_DAY
                a, b = max(g0, base) - base, min(g1, base + MINUTES_PER_DAY) - base
                parts.append(self._volume_noise(spec, ordinal, noises)[1][a:b])
            volume = daily * (n / total) * weights / weights.sum() * np.concatenate(parts)
            out.append(np.rint(volume / step).astype(np.int64))
        return out

    def _volume_noise(self, spec: TwinSpec, ordinal: int, noises: dict[int, tuple[float, np.ndarray]]
                      ) -> tuple[float, np.ndarray]:
        """Mean-one multipliers of a UTC day: one for the daily volume of a trading day opening
        that day, one per minute. Drawn apart from the price path, so volumes cost no price
        simulation and prices none of these draws."""
        if ordinal not in noises:
            stream = self._stream("volume", spec.sid, ordinal)
            daily = math.exp(0.25 * stream.standard_normal() - 0.03125)
            noises[ordinal] = (daily, np.exp(0.5 * stream.standard_normal(MINUTES_PER_DAY) - 0.125))
        return noises[ordinal]

    def _trading_days(self, venue: VenueInfo, start: datetime, end: datetime) -> list[_TradingDay]:
        """Session windows around [start, end), cut at the venue's local midnights and grouped
        by local date; only days inside the simulated history."""
        lo = max(start - PAD, datetime.combine(FIRST_DAY, time(), UTC))
        hi = min(end + PAD, datetime.combine(LAST_DAY + timedelta(days=1), time(), UTC))
        if lo >= hi:
            return []
        tz = ZoneInfo(venue.timezone)
        if venue.always_open:
            # Windows of whole local days, so bars align the same whatever range is asked.
            first, last = lo.astimezone(tz).date(), hi.astimezone(tz).date()
            windows = [(datetime.combine(first + timedelta(days=k), time(), tz),
                        datetime.combine(first + timedelta(days=k + 1), time(), tz))
                       for k in range((last - first).days + 1)]
        else:
            windows = [(w.opens_at, w.closes_at) for w in self.venues.sessions(venue.mic, lo, hi)]
        lowest = FIRST_DAY.toordinal() * MINUTES_PER_DAY
        highest = (LAST_DAY.toordinal() + 1) * MINUTES_PER_DAY
        grouped: dict[date, list[tuple[int, int]]] = {}
        for opens, closes in sorted(windows):
            for local_day, a, b in _cut_at_midnights(opens, closes, tz):
                g0, g1 = _minute(a), _minute(b)
                if g1 > g0 and g0 >= lowest and g1 <= highest:
                    grouped.setdefault(local_day, []).append((g0, g1))
        return [_TradingDay(d, tuple(w)) for d, w in sorted(grouped.items())]

    def _last_close(self, spec: TwinSpec, venue: VenueInfo, at: datetime) -> float | None:
        for lookback in (timedelta(days=10), timedelta(days=40)):
            windows = [w for w in self.venues.sessions(venue.mic, at - lookback, at)
                       if w.closes_at <= at]
            if windows:
                g = _minute(max(w.closes_at for w in windows))
                if g <= FIRST_DAY.toordinal() * MINUTES_PER_DAY:
                    return None
                day = self._day(spec, (g - 1) // MINUTES_PER_DAY)
                return float(day.path[(g - 1) % MINUTES_PER_DAY + 1])
        return None

    @staticmethod
    def _bar(inst: Instrument, minute: int, interval: str, o: int, h: int, lo: int, c: int,
             volume: int, spec: TwinSpec) -> Bar:
        tick = spec.tick_size
        return Bar(symbol=inst.symbol, mic=inst.mic, start=_instant(minute), interval=interval,
                   open=int(o) * tick, high=int(h) * tick, low=int(lo) * tick, close=int(c) * tick,
                   volume=volume * spec.quantity_step)


def _aware(t: datetime) -> datetime:
    if t.tzinfo is None or t.utcoffset() is None:
        raise ValueError("instants must be timezone-aware")
    return t


def _cut_at_midnights(opens: datetime, closes: datetime, tz: ZoneInfo
                      ) -> list[tuple[date, datetime, datetime]]:
    out = []
    a = opens
    while a < closes:
        local = a.astimezone(tz).date()
        midnight = datetime.combine(local + timedelta(days=1), time(), tz).astimezone(UTC)
        b = min(closes, midnight)
        out.append((local, a, b))
        a = b
    return out


@hookimpl
def alphintra_market_data_sources(context: PluginContext) -> list[MarketDataSource]:
    """Config: `seed` (int, default 7), `crypto_mic` (the 24/7 venue for the crypto pairs;
    default: the directory's first always-open venue)."""
    if context.venues is None:
        raise RuntimeError("the market twin needs a venue directory to respect sessions")
    seed = int(context.config.get("seed", DEFAULT_SEED))
    return [MarketTwin(context.venues, seed=seed, crypto_mic=context.config.get("crypto_mic"),
                       logger=context.logger)]
