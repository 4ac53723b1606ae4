"""A participant's own data: features and labels built from the market twin's bars.

Every tenant that takes part in a federation trains on "its own" data. On this platform that
is a slice of the market twin (plugins/builtin/market_twin.py) that depends on the tenant:

- which instruments: `instruments` of the twin's universe (equities on seven venues, two crypto
  pairs on the 24/7 venue), drawn without replacement;
- which period: `window_days` calendar days ending on a date drawn between 2008 and 2023;

both drawn from numpy's SeedSequence keyed by (spec.seed, a stable hash of the tenant's key),
so a tenant's data are the same in every run and every process, and differ between tenants.
The result is non-IID on purpose, as institutions' books are: different assets (crypto
volatility is two to three times an equity's), different market regimes (one window may hold a
crisis, another only calm), different sample sizes (24/7 venues have more bars per day).

Features of bar t, all scale-free (divided by the instrument's own trailing volatility or
logged ratios), so participants need no shared normalisation, which would leak their
statistics:
    ret_0, ret_1, ret_2   log returns r_t, r_{t-1}, r_{t-2} over sigma_long (the std of the last 40)
    momentum_5            (r_{t-4} + … + r_t) / (sigma_long·√5)
    vol_ratio             log(sigma_short / sigma_long), sigma_short the std of the last 5 returns
    abs_ret               |r_t| / sigma_long
    range                 log(high_t / low_t) / sigma_long
    volume_surprise       log(volume_t / mean of the last 20 volumes)
    range_position        where close_t sits in the last 20 closes' range, -0.5 to 0.5
Labels (next period, t+1):
    DIRECTION    r_{t+1} > 0
    VOLATILITY   |r_{t+1}| > 0.6745·sigma_long (the median of |N(0, sigma_long²)|)

A word on DIRECTION: the twin's prices are geometric Brownian motion with a regime-dependent
drift, a martingale up to that drift, so no model can predict the sign of the next return much
better than chance (about 51% in a crisis). Federated, local-only and centralised models all
score near 50% on it, which is the right answer, not a bug. VOLATILITY is predictable (regimes
persist for weeks, so recent volatility forecasts the next move's size) and shows what
federation buys when there is something to learn.

Samples are split by time: the last `test_fraction` of the window is the test set, and a
training sample whose label reaches into it is dropped, so nothing of the test period leaks
into training.

`build_participant_data` is the only way to the data. It is called inside the participant's
client function (gateway/federated/flower.py), never by the server side of a run.
"""

from __future__ import annotations

import enum
import functools
import hashlib
import json
import math
import os
from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

from gateway.errors import InvalidInput

FEATURES: tuple[str, ...] = ("ret_0", "ret_1", "ret_2", "momentum_5", "vol_ratio", "abs_ret", "range",
                             "volume_surprise", "range_position", "gap")
INTERVALS = ("1d", "1h")
LONG = 40  # bars in sigma_long
SHORT = 5
VOLUME_WINDOW = 20
MEDIAN_ABS_NORMAL = 0.6744897501960817  # Φ⁻¹(0.75)
FEATURE_CLIP = 8.0
# Windows end between these dates: inside every venue calendar's coverage and the twin's history.
FIRST_START = date(2008, 1, 1)
LAST_END = date(2023, 12, 31)
# Calendar days fetched before the window so the first sample has its 40 returns of history.
WARMUP_DAYS = {"1d": 100, "1h": 12}
# Hourly bars are fetched in chunks below the market data service's 10,000-bar cap.
CHUNK_DAYS = {"1d": 3650, "1h": 300}
TWIN_PLUGIN = "market-twin"
MIN_TRAIN, MIN_TEST = 30, 10


class Target(enum.StrEnum):
    DIRECTION = "DIRECTION"
    VOLATILITY = "VOLATILITY"


class SpecInvalid(InvalidInput):
    code = "FEATURE_SPEC_INVALID"


class DataInsufficient(InvalidInput):
    code = "FEDERATION_DATA_INSUFFICIENT"


@dataclass(frozen=True)
class FeatureSpec:
    """What every participant of a federation computes from its data (stored on the Federation)."""

    target: Target = Target.DIRECTION
    interval: str = "1d"
    instruments: int = 3
    window_days: int = 730
    test_fraction: float = 0.3
    seed: int = 7
    version: int = 1

    def __post_init__(self) -> None:
        if self.version != 1:
            raise SpecInvalid("feature spec version must be 1")
        if not isinstance(self.target, Target):
            try:
                object.__setattr__(self, "target", Target(str(self.target).upper()))
            except ValueError:
                raise SpecInvalid("target must be DIRECTION or VOLATILITY") from None
        if self.interval not in INTERVALS:
            raise SpecInvalid(f"interval must be one of {', '.join(INTERVALS)}")
        if not isinstance(self.instruments, int) or not 1 <= self.instruments <= 6:
            raise SpecInvalid("instruments per participant must be from 1 to 6")
        if not isinstance(self.window_days, int) or not 60 <= self.window_days <= 3650:
            raise SpecInvalid("window_days must be from 60 to 3650")
        if self.interval == "1h" and self.window_days > 365:
            # Hourly bars come from the twin's minute paths: a year is plenty, and bounded.
            raise SpecInvalid("with hourly bars window_days must be at most 365")
        if not isinstance(self.test_fraction, int | float) or not 0.1 <= self.test_fraction <= 0.5:
            raise SpecInvalid("test_fraction must be from 0.1 to 0.5")
        if not isinstance(self.seed, int) or not 0 <= self.seed < 2**31:
            raise SpecInvalid("seed must be from 0 to 2^31 - 1")

    @property
    def n_features(self) -> int:
        return len(FEATURES)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["target"] = self.target.value
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FeatureSpec:
        unknown = set(data) - {f for f in cls.__dataclass_fields__}
        if unknown:
            raise SpecInvalid(f"unknown feature spec fields: {sorted(unknown)}")
        return cls(**data)

    @classmethod
    def from_json(cls, text: str) -> FeatureSpec:
        return cls.from_dict(json.loads(text))


@dataclass(frozen=True)
class Assignment:
    """Which slice of the twin a participant holds."""

    instruments: tuple[str, ...]
    start: date
    end: date  # exclusive


@dataclass(frozen=True)
class ParticipantData:
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    assignment: Assignment

    @property
    def positive_rate(self) -> float:
        return float(np.mean(self.y_train)) if len(self.y_train) else float("nan")


def tenant_hash(tenant_key: str) -> int:
    """A stable 63-bit integer for a tenant key (Python's hash() is salted per process)."""
    return int.from_bytes(hashlib.sha256(f"alphintra-fl:{tenant_key}".encode()).digest()[:8], "big") >> 1


@functools.lru_cache(maxsize=1)
def _market_data() -> Any:
    """This process's market data service over the built-in plugins (the twin with its default
    seed, as the gateway runs it). Built on first use: a Ray worker or a Flower ClientApp
    process has no gateway runtime to borrow one from."""
    from gateway.marketdata import MarketDataService
    from gateway.markets.service import MarketsService
    from plugins.builtin import BUILTINS
    from plugins.host import PluginHost

    markets = MarketsService()
    return MarketDataService(PluginHost(BUILTINS), markets.directory, now=markets.now)


def twin_universe() -> tuple[str, ...]:
    """The twin's instruments, each once: listings on alternative venues repeat their primary
    listing's price path, so they are not other instruments to learn from."""
    from gateway.markets.venues import VENUES

    alternative = {v.mic for v in VENUES if v.alternative_to is not None}
    service = _market_data()
    return tuple(sorted(i.key for i in service.instruments()
                        if service.source_of(i.key).plugin == TWIN_PLUGIN and i.mic not in alternative))


def assign(spec: FeatureSpec, tenant_key: str, universe: tuple[str, ...] | None = None) -> Assignment:
    universe = universe if universe is not None else twin_universe()
    if spec.instruments > len(universe):
        raise SpecInvalid(f"the twin has only {len(universe)} instruments")
    rng = np.random.default_rng(np.random.SeedSequence(spec.seed, spawn_key=(tenant_hash(tenant_key),)))
    picked = sorted(str(k) for k in rng.choice(np.array(universe), size=spec.instruments, replace=False))
    earliest_end = FIRST_START + timedelta(days=spec.window_days)
    end = earliest_end + timedelta(days=int(rng.integers(0, (LAST_END - earliest_end).days + 1)))
    return Assignment(tuple(picked), end - timedelta(days=spec.window_days), end)


def build_participant_data(spec: FeatureSpec, tenant_key: str, *,
                           cache_dir: str | None = None) -> ParticipantData:
    """The participant's training and test samples. Memoised per process (a Ray worker serves
    many messages of the same node). A SuperNode starts a fresh process for every message, so
    it may keep them in `cache_dir` instead: a directory on the participant's own machine."""
    if cache_dir is None:
        return _build(spec, tenant_key)
    spec_hash = hashlib.sha256(spec.to_json().encode()).hexdigest()[:16]
    path = Path(cache_dir) / f"{tenant_hash(tenant_key):016x}-{spec_hash}.npz"
    if path.exists():
        with np.load(path) as saved:
            return ParticipantData(saved["x_train"], saved["y_train"], saved["x_test"], saved["y_test"],
                                   Assignment(tuple(str(k) for k in saved["instruments"]),
                                              date.fromisoformat(str(saved["start"])),
                                              date.fromisoformat(str(saved["end"]))))
    data = _build(spec, tenant_key)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(f".{os.getpid()}.tmp.npz")
    np.savez(partial, x_train=data.x_train, y_train=data.y_train, x_test=data.x_test, y_test=data.y_test,
             instruments=np.array(data.assignment.instruments), start=data.assignment.start.isoformat(),
             end=data.assignment.end.isoformat())
    partial.replace(path)  # atomic: a concurrent reader sees the whole file or none
    return data


@functools.lru_cache(maxsize=16)
def _build(spec: FeatureSpec, tenant_key: str) -> ParticipantData:
    assignment = assign(spec, tenant_key)
    start = datetime.combine(assignment.start, datetime.min.time(), UTC)
    end = datetime.combine(assignment.end, datetime.min.time(), UTC)
    cut = start + (end - start) * (1 - spec.test_fraction)
    parts: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = []
    for key in assignment.instruments:
        parts.append(_instrument_samples(spec, key, start, end, cut))
    x = np.concatenate([p[0] for p in parts]) if parts else np.empty((0, len(FEATURES)))
    y = np.concatenate([p[1] for p in parts]) if parts else np.empty(0)
    train = np.concatenate([p[2] for p in parts]) if parts else np.empty(0, dtype=bool)
    test = np.concatenate([p[3] for p in parts]) if parts else np.empty(0, dtype=bool)
    data = ParticipantData(x[train], y[train], x[test], y[test], assignment)
    if len(data.y_train) < MIN_TRAIN or len(data.y_test) < MIN_TEST:
        raise DataInsufficient(f"a participant has {len(data.y_train)} training and {len(data.y_test)} "
                               f"test samples; at least {MIN_TRAIN} and {MIN_TEST} are needed "
                               "(lengthen window_days)")
    return data


def _fetch(key: str, start: datetime, end: datetime, interval: str) -> list[Any]:
    service = _market_data()
    bars: list[Any] = []
    step = timedelta(days=CHUNK_DAYS[interval])
    a = start
    while a < end:
        b = min(a + step, end)
        bars.extend(service.bars(key, a, b, interval))
        a = b
    return bars


def _instrument_samples(spec: FeatureSpec, key: str, start: datetime, end: datetime, cut: datetime
                        ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(features, labels, is_train, is_test) for one instrument's samples in [start, end)."""
    # A few days past the end, so the last sample has its next bar for the label.
    bars = _fetch(key, start - timedelta(days=WARMUP_DAYS[spec.interval]), end + timedelta(days=7),
                  spec.interval)
    empty = (np.empty((0, len(FEATURES))), np.empty(0), np.empty(0, dtype=bool), np.empty(0, dtype=bool))
    if len(bars) < LONG + 3:
        return empty
    close = np.array([float(b.close) for b in bars])
    high = np.array([float(b.high) for b in bars])
    low = np.array([float(b.low) for b in bars])
    volume = np.array([float(b.volume) for b in bars]) + 1.0  # a quiet minute can trade nothing
    when = np.array([b.start.timestamp() for b in bars])
    x, labels, t = features(close, high, low, volume, when, spec.target)
    bar_time, next_time = when[t], when[t + 1]
    inside = (bar_time >= start.timestamp()) & (bar_time < end.timestamp())
    train = inside & (next_time < cut.timestamp())  # the label, too, is before the cut
    test = inside & (bar_time >= cut.timestamp())
    keep = train | test
    return x[keep], labels[keep], train[keep], test[keep]


def features(close: np.ndarray, high: np.ndarray, low: np.ndarray, volume: np.ndarray,
             when: np.ndarray, target: Target) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Features of every bar t with LONG returns of history and a next bar, their labels, and
    the indices t (into the bar arrays)."""
    from numpy.lib.stride_tricks import sliding_window_view as windows

    r = np.diff(np.log(close))  # r[k] is the return into bar k + 1
    # Bar t has returns r[t-LONG .. t-1] behind it (its own return is r[t-1]).
    t = np.arange(LONG, len(close) - 1)
    own = t - 1
    long_std = windows(r, LONG).std(axis=1, ddof=1)[own - LONG + 1]
    long_std = np.where(long_std > 0, long_std, np.nan)
    short_std = windows(r, SHORT).std(axis=1, ddof=1)[own - SHORT + 1]
    momentum = windows(r, SHORT).sum(axis=1)[own - SHORT + 1]
    vol_mean = windows(volume, VOLUME_WINDOW).mean(axis=1)[t - VOLUME_WINDOW + 1]
    lo20 = windows(close, VOLUME_WINDOW).min(axis=1)[t - VOLUME_WINDOW + 1]
    hi20 = windows(close, VOLUME_WINDOW).max(axis=1)[t - VOLUME_WINDOW + 1]
    spread = np.where(hi20 > lo20, hi20 - lo20, np.nan)
    x = np.column_stack([
        r[own] / long_std,
        r[own - 1] / long_std,
        r[own - 2] / long_std,
        momentum / (long_std * math.sqrt(SHORT)),
        np.log(np.maximum(short_std, 1e-12) / long_std),
        np.abs(r[own]) / long_std,
        np.log(high[t] / low[t]) / long_std,
        np.log(volume[t] / vol_mean),
        np.nan_to_num((close[t] - lo20) / spread, nan=0.5) - 0.5,
        np.log((when[t + 1] - when[t]) / np.median(np.diff(when))),
    ])
    following = r[t]  # the return from bar t to bar t + 1
    if target is Target.DIRECTION:
        y = (following > 0).astype(np.float64)
    else:
        y = (np.abs(following) > MEDIAN_ABS_NORMAL * long_std).astype(np.float64)
    ok = np.all(np.isfinite(x), axis=1)
    return np.clip(x[ok], -FEATURE_CLIP, FEATURE_CLIP), y[ok], t[ok]
