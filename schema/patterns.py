"""Chart patterns in recent bars, recognised by a spiking neural network.

Patterns are derived from market data, which is reference data: any authenticated principal may
ask, whatever its roles, and every tenant gets the same answer for the same instrument, window
and instant (nothing here reads or returns tenant data).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
from datetime import datetime
from enum import Enum

import strawberry
from starlette.concurrency import run_in_threadpool
from strawberry.types import Info

from gateway.marketdata.errors import IntervalInvalid
from gateway.patterns import Detection, PatternService
from schema.common import ctx

MIN_STREAM_INTERVAL_MS = 1_000
MAX_STREAM_INTERVAL_MS = 300_000


def _service(info: Info) -> PatternService:
    c = ctx(info)
    c.me  # authenticated, any role: patterns are derived from reference data  # noqa: B018
    return c.runtime.patterns


@strawberry.enum(description="A chart pattern the recogniser knows.")
class ChartPattern(Enum):
    # The members mirror gateway.patterns.PATTERNS, the model's classes (a test checks).
    HEAD_AND_SHOULDERS = "HEAD_AND_SHOULDERS"
    DOUBLE_TOP = "DOUBLE_TOP"
    DOUBLE_BOTTOM = "DOUBLE_BOTTOM"
    BREAKOUT = "BREAKOUT"
    FLAG = "FLAG"
    NONE = "NONE"


@strawberry.type
class PatternProbability:
    pattern: ChartPattern
    probability: float


@strawberry.type(description="The recogniser's answer for one window of completed bars.")
class PatternDetection:
    instrument: str = strawberry.field(description="The instrument's key, SYMBOL.MIC.")
    pattern: ChartPattern = strawberry.field(description="The most probable pattern.")
    confidence: float = strawberry.field(description="Its probability.")
    probabilities: list[PatternProbability] = strawberry.field(
        description="Every pattern's probability, in the enum's order.")
    at: datetime = strawberry.field(description="The instant the detection is as of.")
    interval: str
    window: int = strawberry.field(description="Bars classified.")
    window_start: datetime = strawberry.field(description="Start of the first bar.")
    window_end: datetime = strawberry.field(description="End of the last bar's interval.")
    latency_ms: float = strawberry.field(
        description="The recogniser's time for this window (encoding, network and readout), "
                    "not reading the bars.")
    model: str = strawberry.field(description="The network's version: architecture and a hash of "
                                              "its parameters.")

    @classmethod
    def of(cls, d: Detection) -> PatternDetection:
        return cls(instrument=d.instrument, pattern=ChartPattern(d.pattern), confidence=d.confidence,
                   probabilities=[PatternProbability(pattern=ChartPattern(name), probability=p)
                                  for name, p in d.probabilities],
                   at=d.at, interval=d.interval, window=d.window, window_start=d.window_start,
                   window_end=d.window_end, latency_ms=d.latency_ms, model=d.model)


@strawberry.type
class Query:
    @strawberry.field(description="The chart pattern in the last `window` completed bars (30 to "
                                  "400) of `interval` (1m, 5m, 15m, 1h, 1d) up to `at` (default: "
                                  "now). The first request of a process trains the network, "
                                  "which takes a few seconds.")
    def detect_patterns(self, info: Info, instrument: str, window: int, interval: str = "1m",
                        at: datetime | None = None) -> PatternDetection:
        return PatternDetection.of(_service(info).detect(instrument, window, interval, at))


@strawberry.type
class Subscription:
    @strawberry.subscription(description="The chart pattern in the last `window` completed 1m bars "
                                         "of each of `instruments` (at most 20), every "
                                         "`intervalMs` milliseconds (1,000 to 300,000), from now "
                                         "on; an instrument without enough bars at that moment "
                                         "is left out of that round.")
    async def pattern_detections(self, info: Info, instruments: list[str], window: int = 60,
                                 interval_ms: int = 5000) -> AsyncGenerator[list[PatternDetection], None]:
        service = _service(info)
        if not MIN_STREAM_INTERVAL_MS <= interval_ms <= MAX_STREAM_INTERVAL_MS:
            raise IntervalInvalid(f"intervalMs must be between {MIN_STREAM_INTERVAL_MS} and "
                                  f"{MAX_STREAM_INTERVAL_MS}")
        keys = await run_in_threadpool(service.check_stream, instruments, window)
        while True:
            # Reading bars computes (the twin simulates) and the first round trains the
            # network: off the event loop.
            detections = await run_in_threadpool(service.detect_many, keys, window, service.now())
            yield [PatternDetection.of(d) for d in detections]
            await asyncio.sleep(interval_ms / 1000)
