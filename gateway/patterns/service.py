"""PatternService: chart patterns in an instrument's recent bars, by the spiking recogniser.

`detect(instrument, window, interval, at)` reads the last `window` completed bars of
`interval` up to `at` (default: the markets clock's now) from the market data service, and
classifies their closes. Only completed bars count (a bar whose interval has not yet passed
would show a price that is still moving), so an answer does not change within a bar.

The model is trained on first use, once per service (so once per process), under a lock; the
first request pays for it (3 to 6 s on the 2-core development machine, with other work on it:
drawing 2,400 synthetic windows, encoding and simulating them, and fitting the readout, most
of it L-BFGS) and every later one reads the cached network. It is
a function of its config's seed, so every process trains the same network, and answers name
it by `model` (the version: architecture and a hash of the parameters). Nothing is stored on
disk: training is cheap enough that a cache would add a failure mode (stale or foreign files)
for a saving of seconds once per process.

Patterns are market-derived reference data: the same for every tenant, like the bars they are
read from (the schema checks authentication only).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import numpy as np

from gateway.errors import InvalidInput
from gateway.marketdata import MarketDataService
from gateway.marketdata.errors import IntervalInvalid, RangeInvalid, SourceFailed, TooManyInstruments
from gateway.marketdata.service import INTERVAL_SPANS, INTERVALS, aware
from gateway.patterns.baseline import NearestTemplate
from gateway.patterns.errors import InstantInFuture, NoData, WindowTooLong, WindowTooShort
from gateway.patterns.snn import TRAINED_LENGTHS, Config, SpikingRecogniser
from gateway.patterns.synthetic import PATTERNS, generate
from plugins.sdk import Bar

log = logging.getLogger(__name__)

MIN_WINDOW, MAX_WINDOW = TRAINED_LENGTHS
MAX_STREAM_INSTRUMENTS = 20
# An `at` this far ahead of the clock is the client's clock running fast, not the future.
CLOCK_SKEW = timedelta(minutes=1)
# How far back bars are looked for: at least this, and at least LOOKBACK_FACTOR windows of
# wall-clock time (a window of 1m bars on a venue that trades 6.5 hours a day, across a long
# weekend, spans days of wall-clock time).
MIN_LOOKBACK = timedelta(days=30)
LOOKBACK_FACTOR = 8


@dataclass(frozen=True)
class Detection:
    instrument: str  # canonical key
    interval: str
    window: int  # bars classified
    window_start: datetime  # start of the first bar
    window_end: datetime  # end of the last bar's interval
    at: datetime  # the instant the detection is as of
    pattern: str  # one of PATTERNS
    confidence: float  # the pattern's probability
    probabilities: tuple[tuple[str, float], ...]  # every pattern, in PATTERNS order
    latency_ms: float  # the recogniser's time: encoding, network and readout
    model: str  # the network's version


class PatternService:
    def __init__(self, market_data: MarketDataService, *, now: Callable[[], datetime] | None = None,
                 config: Config | None = None, model: SpikingRecogniser | None = None) -> None:
        """`model`: a network already trained (tests and tools that hold one); by default it is
        trained from `config` on first use."""
        self.market_data = market_data
        # The markets clock by way of market data, so a test clock drives detections too.
        self.now: Callable[[], datetime] = now or market_data.now
        self.config = model.config if model is not None else config or Config()
        self._lock = threading.Lock()
        self._model: SpikingRecogniser | None = model
        self._baseline: NearestTemplate | None = None

    # -- the models -------------------------------------------------------------------------

    def model(self) -> SpikingRecogniser:
        """The trained network (trained here on first use)."""
        with self._lock:
            if self._model is None:
                began = time.perf_counter()
                self._model = SpikingRecogniser.train(self.config)
                log.info("pattern recogniser trained in %.1f s: %s", time.perf_counter() - began,
                         self._model.version)
            return self._model

    def baseline(self) -> NearestTemplate:
        """The classical baseline on the same training windows (for comparisons: tests, bench)."""
        with self._lock:
            if self._baseline is None:
                data = generate(self.config.train_per_class, self.config.seed, self.config.train_lengths)
                self._baseline = NearestTemplate.fit(data, steps=self.config.encoder.steps)
            return self._baseline

    # -- requests ---------------------------------------------------------------------------

    def check(self, key: str, window: int, interval: str) -> str:
        """The instrument's canonical key; raises on bad input."""
        check_window(window)
        canonical = self.market_data.instrument(key).key
        if interval not in INTERVAL_SPANS:
            raise IntervalInvalid(f"interval must be one of {', '.join(INTERVALS)}")
        return canonical

    def check_stream(self, keys: Sequence[str], window: int) -> list[str]:
        """Canonical keys for a detection stream (on 1m bars); raises on bad input."""
        check_window(window)
        if not keys:
            raise InvalidInput("name at least one instrument", code="INSTRUMENTS_EMPTY")
        if len(keys) > MAX_STREAM_INSTRUMENTS:
            raise TooManyInstruments(f"at most {MAX_STREAM_INSTRUMENTS} instruments per subscription")
        return list(dict.fromkeys(self.market_data.instrument(k).key for k in keys))

    def instant(self, at: datetime | None) -> datetime:
        now = self.now()
        if at is None:
            return now
        at = aware(at, "at")
        if at > now + CLOCK_SKEW:
            raise InstantInFuture("patterns are detected in bars that exist, up to now")
        return min(at, now)

    def detect(self, key: str, window: int, interval: str = "1m", at: datetime | None = None
               ) -> Detection:
        """The pattern in the last `window` completed bars of `interval` up to `at`."""
        key = self.check(key, window, interval)
        at = self.instant(at)
        bars = self.recent_bars(key, window, interval, at)
        return self._classify(key, interval, bars, at)

    def detect_many(self, keys: Sequence[str], window: int, at: datetime, interval: str = "1m"
                    ) -> list[Detection]:
        """Detections for checked keys (see check_stream), for streams: an instrument without
        enough bars at the moment, or whose source fails, is left out of this round (the
        failure is logged by market data), so one does not stop the others."""
        out = []
        for key in keys:
            try:
                bars = self.recent_bars(key, window, interval, at)
            except (NoData, SourceFailed):
                continue
            out.append(self._classify(key, interval, bars, at))
        return out

    def recent_bars(self, key: str, window: int, interval: str, at: datetime) -> list[Bar]:
        """The last `window` bars of `interval` completed by `at`, oldest first.

        The look-back starts at two windows of wall-clock time and doubles until it holds
        enough bars, up to max(MIN_LOOKBACK, LOOKBACK_FACTOR windows): a source answers any
        range, so a first guess that is short (a weekend, a holiday, a lunch break) costs one
        more call, never a wrong answer, and a long one is not paid for where bars are dense
        (the 24/7 venue)."""
        span = INTERVAL_SPANS[interval]
        longest = max(MIN_LOOKBACK, span * window * LOOKBACK_FACTOR)
        lookback = min(span * window * 2, longest)
        found: list[Bar] = []
        while True:
            try:
                bars = self.market_data.bars(key, at - lookback, at, interval)
            except RangeInvalid:
                break  # more bars than one request may hold: what the last look-back found is all
            found = [b for b in bars if b.start + span <= at]
            if len(found) >= window or lookback >= longest:
                break
            lookback = min(lookback * 2, longest)
        if len(found) < window:
            raise NoData(f"{len(found)} completed {interval} bars of {key} in the "
                         f"{_days(lookback)} before {at.isoformat()}; the window needs {window}",
                         details={"found": len(found), "window": window})
        return found[-window:]

    def _classify(self, key: str, interval: str, bars: Sequence[Bar], at: datetime) -> Detection:
        model = self.model()
        closes = np.array([float(b.close) for b in bars])
        began = time.perf_counter()
        p = model.probabilities_one(closes)
        latency = time.perf_counter() - began
        best = int(p.argmax())
        return Detection(
            instrument=key, interval=interval, window=len(bars), window_start=bars[0].start,
            window_end=bars[-1].start + INTERVAL_SPANS[interval], at=at, pattern=PATTERNS[best],
            confidence=round(float(p[best]), 6),
            probabilities=tuple((name, round(float(q), 6)) for name, q in zip(PATTERNS, p, strict=True)),
            latency_ms=latency * 1000, model=model.version)


def check_window(window: int) -> None:
    if window < MIN_WINDOW:
        raise WindowTooShort(f"a window needs at least {MIN_WINDOW} bars to hold a pattern",
                             details={"min": MIN_WINDOW})
    if window > MAX_WINDOW:
        raise WindowTooLong(f"a window holds at most {MAX_WINDOW} bars (the lengths the "
                            "recogniser was trained on)", details={"max": MAX_WINDOW})


def _days(span: timedelta) -> str:
    hours = span.total_seconds() / 3600
    return f"{hours:.0f} hours" if hours < 48 else f"{hours / 24:.0f} days"
