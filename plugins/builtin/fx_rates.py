"""Built-in FX rate providers: a seeded FX twin and a rates file.

Both follow `plugins.sdk.FxRateProvider` and are offered by one hook implementation. The hook
returns the file first and the twin second, so where the file has a fresh fixing it wins (a real
fixing beats a simulation) and the twin answers everywhere else.

Configuration (`context.config`, all optional):
  twin_seed              int, the twin's seed (default 20240101)
  rates_path             CSV of spot fixings (default: the file shipped in builtin/data)
  interest_rates_path    CSV of interest rates (default: the shipped one)
  rates_max_age_days     how old a file fixing may be and still answer (default 4: a weekend
                         and a holiday)

The FX twin
-----------
Spot rates for USD, EUR, GBP, JPY, HKD, CNY, AUD, CAD, MXN, INR and CHF. Each non-USD currency X
has a rate U_X = units of X per one USD that follows a driftless-in-log geometric Brownian motion
from a realistic anchor on 2024-01-01:

    U_X(t) = anchor_X * exp(sigma_X * (L W(t))_X)

with W a 10-dimensional standard Brownian motion (time in years) and L the Cholesky factor of a
correlation matrix built from four factors (USD-wide, European, commodity/EM, Asian), so EUR and
CHF move together and HKD hardly moves. Any pair is a ratio: base/quote = U_quote / U_base.

Reproducible and independent of call order: W is built as a Brownian tree. The time line is cut
into 64-day blocks, blocks into days, days into hours, hours into minutes; the increments inside
a node come from a random stream keyed only by (seed, level, node index), and are bridged
between the node's end points, which its parent fixed. So W(t) depends on the seed and t alone,
never on what was asked before. Between minute points W is interpolated linearly. The twin
answers from 1990 to 2100 (the first query far from 2024 walks the blocks in between once).

Interest rates are constant per currency (policy rates of 2025, simple annual), enough for
covered interest parity; a deployment wanting curves ships a plugin with them.

The rates file
--------------
Two small CSV files, `#` starts a comment line, the first other line is the header:

    fx_rates.csv             base,quote,rate,at
                             EUR,USD,1.1000,2026-01-05T16:00:00Z
        `rate` is units of quote per one base (market quoting: EUR,USD,1.10 means 1 EUR =
        1.10 USD). `at` is an ISO 8601 instant with an offset or Z.
    fx_interest_rates.csv    currency,rate,at
                             USD,0.0450,2025-01-01T00:00:00Z
        `rate` is an annual simple rate as a decimal fraction; it holds from `at` until the
        currency's next row.

A spot query is answered as of `at`: the latest fixing at or before it, if no older than
`rates_max_age_days`. A pair missing from the file is answered from its inverse (1 / rate), or
else as a cross through USD (base/USD x USD/quote, each direct or inverse). History is the
fixings in the range, with the same inverse and cross rules.
"""

from __future__ import annotations

import bisect
import csv
import functools
import math
import threading
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from importlib import resources
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np

from plugins.sdk import FxRate, FxRateProvider, PluginContext, hookimpl

USD = "USD"
SIGNIFICANT_DIGITS = 10

# Units of X per one USD on 2024-01-01 (close to the market that day).
TWIN_ANCHORS: Mapping[str, float] = MappingProxyType({
    "EUR": 0.905, "GBP": 0.785, "CHF": 0.842, "JPY": 141.0, "AUD": 1.468,
    "CAD": 1.325, "MXN": 16.97, "HKD": 7.81, "CNY": 7.10, "INR": 83.2,
})
# Annualised volatility of log U_X; HKD is pegged, CNY managed.
TWIN_VOLATILITIES: Mapping[str, float] = MappingProxyType({
    "EUR": 0.075, "GBP": 0.085, "CHF": 0.080, "JPY": 0.100, "AUD": 0.110,
    "CAD": 0.065, "MXN": 0.130, "HKD": 0.004, "CNY": 0.035, "INR": 0.050,
})
# Loadings on (USD-wide, European, commodity/EM, Asian) factors; each row's squared norm is
# below one, the rest being the currency's own noise, so the correlation matrix is valid.
TWIN_LOADINGS: Mapping[str, tuple[float, float, float, float]] = MappingProxyType({
    "EUR": (0.75, 0.55, 0.00, 0.00), "GBP": (0.65, 0.50, 0.00, 0.00),
    "CHF": (0.65, 0.55, 0.00, 0.00), "JPY": (0.55, 0.00, 0.00, 0.30),
    "AUD": (0.60, 0.00, 0.55, 0.00), "CAD": (0.50, 0.00, 0.50, 0.00),
    "MXN": (0.40, 0.00, 0.50, 0.00), "HKD": (0.20, 0.00, 0.00, 0.30),
    "CNY": (0.45, 0.00, 0.00, 0.50), "INR": (0.35, 0.00, 0.20, 0.35),
})
# Annual simple rates, roughly the policy rates of 2025.
TWIN_INTEREST_RATES: Mapping[str, Decimal] = MappingProxyType({
    "USD": Decimal("0.0450"), "EUR": Decimal("0.0300"), "GBP": Decimal("0.0450"),
    "CHF": Decimal("0.0100"), "JPY": Decimal("0.0050"), "AUD": Decimal("0.0410"),
    "CAD": Decimal("0.0375"), "MXN": Decimal("0.1000"), "HKD": Decimal("0.0400"),
    "CNY": Decimal("0.0250"), "INR": Decimal("0.0650"),
})

TWIN_EPOCH = datetime(2024, 1, 1, tzinfo=UTC)
TWIN_FIRST = datetime(1990, 1, 1, tzinfo=UTC)
TWIN_LAST = datetime(2100, 1, 1, tzinfo=UTC)
DEFAULT_SEED = 20240101
BLOCK_DAYS = 64
# Children per node at each level below the block: days in a block, hours in a day,
# minutes in an hour.
SUBDIVISIONS = (BLOCK_DAYS, 24, 60)
SECONDS_PER_YEAR = 365.25 * 86_400
MAX_HISTORY_POINTS = 3_700  # about ten years of daily fixings


def significant(value: float | Decimal, digits: int = SIGNIFICANT_DIGITS) -> Decimal:
    """A rate as a Decimal with `digits` significant digits (more would be false precision)."""
    if isinstance(value, float):
        return Decimal(format(value, f".{digits}g"))
    if value == 0 or len(value.as_tuple().digits) <= digits:
        return value
    return value.quantize(Decimal(1).scaleb(value.adjusted() - digits + 1))


def _zigzag(index: int) -> int:
    """Non-negative stream keys for signed node indices (numpy seeds must be >= 0)."""
    return 2 * index if index >= 0 else -2 * index - 1


class FxTwin:
    """Seeded, correlated GBM spot rates and constant interest rates; see the module doc."""

    def __init__(self, seed: int = DEFAULT_SEED, name: str = "fx-twin") -> None:
        self.name = name
        self.seed = int(seed)
        self.currencies: tuple[str, ...] = (USD, *TWIN_ANCHORS)
        self._foreign = tuple(TWIN_ANCHORS)
        self._index = {c: i for i, c in enumerate(self._foreign)}
        self._log_anchor = np.log(np.array([TWIN_ANCHORS[c] for c in self._foreign]))
        self._sigma = np.array([TWIN_VOLATILITIES[c] for c in self._foreign])
        self._cholesky = np.linalg.cholesky(self.correlation())
        self._block_seconds = BLOCK_DAYS * 86_400
        # Seconds per node at each level: block, day, hour, minute.
        self._node_seconds = (self._block_seconds, 86_400, 3_600, 60)
        # W at block boundaries, extended outward from the epoch as queries need it.
        self._block_levels: dict[int, np.ndarray] = {0: np.zeros(len(self._foreign))}
        self._lock = threading.Lock()
        self._node_path = functools.lru_cache(maxsize=4_096)(self._compute_node_path)

    def correlation(self) -> np.ndarray:
        loadings = np.array([TWIN_LOADINGS[c] for c in self._foreign])
        corr = loadings @ loadings.T
        np.fill_diagonal(corr, 1.0)
        return corr

    def covariance(self) -> np.ndarray:
        """Annualised covariance of d log U (rows and columns in `self.currencies[1:]` order)."""
        return np.outer(self._sigma, self._sigma) * self.correlation()

    # The Brownian tree.
    def _block_level(self, block: int) -> np.ndarray:
        with self._lock:
            known = self._block_levels
            if block not in known:
                step = 1 if block > 0 else -1
                b = block
                while b not in known:
                    b -= step
                while b != block:
                    nxt = b + step
                    # The increment over block min(b, nxt) comes from that block's own stream.
                    first = min(b, nxt)
                    increment = self._block_increment(first)
                    known[nxt] = known[b] + increment if step > 0 else known[b] - increment
                    b = nxt
            return known[block]

    def _block_increment(self, block: int) -> np.ndarray:
        rng = np.random.default_rng([self.seed, 0, _zigzag(block)])
        scale = math.sqrt(self._block_seconds / SECONDS_PER_YEAR)
        return rng.standard_normal(len(self._foreign)) * scale

    def _compute_node_path(self, level: int, index: int) -> np.ndarray:
        """W at the children's boundaries of node `index` at `level` (0 = block, 1 = day,
        2 = hour): an array of shape (children + 1, currencies)."""
        if level == 0:
            start, end = self._block_level(index), self._block_level(index + 1)
        else:
            parent_children = SUBDIVISIONS[level - 1]
            parent = self._node_path(level - 1, index // parent_children)
            offset = index % parent_children
            start, end = parent[offset], parent[offset + 1]
        children = SUBDIVISIONS[level]
        rng = np.random.default_rng([self.seed, level + 1, _zigzag(index)])
        steps = rng.standard_normal((children, len(self._foreign)))
        walk = np.vstack([np.zeros(len(self._foreign)), np.cumsum(steps, axis=0)])
        fraction = np.arange(children + 1)[:, None] / children
        # A random walk minus its straight line is a discrete Brownian bridge from 0 to 0;
        # scaled to the child step and laid on the line between the parent's end points.
        bridge = (walk - fraction * walk[-1]) * math.sqrt(self._node_seconds[level + 1] / SECONDS_PER_YEAR)
        return start + fraction * (end - start) + bridge

    def _brownian(self, at: datetime) -> np.ndarray:
        seconds = (at - TWIN_EPOCH).total_seconds()
        minute = math.floor(seconds / 60)
        hour, minute_in_hour = divmod(minute, 60)
        path = self._node_path(2, hour)
        weight = (seconds - minute * 60) / 60
        return path[minute_in_hour] * (1 - weight) + path[minute_in_hour + 1] * weight

    def _daily(self, first_day: int, last_day: int) -> np.ndarray:
        """W at 00:00 UTC of days first_day..last_day (day 0 = the epoch), one row per day."""
        rows = []
        for day in range(first_day, last_day + 1):
            block, offset = divmod(day, BLOCK_DAYS)
            rows.append(self._node_path(0, block)[offset])
        return np.array(rows).reshape(-1, len(self._foreign))

    def _per_usd(self, w: np.ndarray) -> np.ndarray:
        """Units of each foreign currency per USD, for W values (rows)."""
        return np.exp(self._log_anchor + self._sigma * (w @ self._cholesky.T))

    def _ratio(self, per_usd: np.ndarray, base: str, quote: str) -> Any:
        def units(currency: str) -> Any:
            return 1.0 if currency == USD else per_usd[..., self._index[currency]]
        return units(quote) / units(base)

    def _covers(self, base: str, quote: str, at: datetime) -> bool:
        return base in self.currencies and quote in self.currencies and TWIN_FIRST <= at < TWIN_LAST

    # The provider protocol.
    def rate(self, base: str, quote: str, at: datetime) -> FxRate | None:
        if not self._covers(base, quote, at):
            return None
        value = 1.0 if base == quote else float(self._ratio(self._per_usd(self._brownian(at)), base, quote))
        return FxRate(base=base, quote=quote, rate=significant(value), at=at, source=self.name)

    def history(self, base: str, quote: str, start: datetime, end: datetime) -> Sequence[FxRate]:
        """Daily fixings at 00:00 UTC from `start` to `end` (every calendar day: FX trades
        around the clock), at most the last MAX_HISTORY_POINTS of them."""
        start, end = max(start, TWIN_FIRST), min(end, TWIN_LAST - timedelta(days=1))
        if base not in self.currencies or quote not in self.currencies or start > end:
            return []
        first_day = math.ceil((start - TWIN_EPOCH).total_seconds() / 86_400)
        last_day = math.floor((end - TWIN_EPOCH).total_seconds() / 86_400)
        first_day = max(first_day, last_day - MAX_HISTORY_POINTS + 1)
        if first_day > last_day:
            return []
        values = self._ratio(self._per_usd(self._daily(first_day, last_day)), base, quote)
        values = np.broadcast_to(values, (last_day - first_day + 1,))
        return [FxRate(base=base, quote=quote, rate=significant(float(v)),
                       at=TWIN_EPOCH + timedelta(days=first_day + i), source=self.name)
                for i, v in enumerate(values)]

    def interest_rate(self, currency: str, at: datetime) -> Decimal | None:
        return TWIN_INTEREST_RATES.get(currency)


class RatesFileProvider:
    """Spot fixings and interest rates read from two CSV files; see the module doc."""

    def __init__(self, rates: Iterable[tuple[str, str, Decimal, datetime]],
                 interest_rates: Iterable[tuple[str, Decimal, datetime]], *,
                 max_age: timedelta = timedelta(days=4), name: str = "rates-file") -> None:
        self.name = name
        self.max_age = max_age
        self._series: dict[tuple[str, str], tuple[list[datetime], list[Decimal]]] = {}
        for base, quote, rate, at in sorted(rates, key=lambda r: r[3]):
            times, values = self._series.setdefault((base, quote), ([], []))
            times.append(at)
            values.append(rate)
        self._interest: dict[str, tuple[list[datetime], list[Decimal]]] = {}
        for currency, rate, at in sorted(interest_rates, key=lambda r: r[2]):
            times, values = self._interest.setdefault(currency, ([], []))
            times.append(at)
            values.append(rate)
        self.currencies: frozenset[str] = frozenset(
            c for pair in self._series for c in pair) | frozenset(self._interest)

    @classmethod
    def from_files(cls, rates_path: Path | str, interest_rates_path: Path | str, *,
                   max_age: timedelta = timedelta(days=4), name: str = "rates-file"
                   ) -> RatesFileProvider:
        return cls(read_rates(Path(rates_path).read_text()),
                   read_interest_rates(Path(interest_rates_path).read_text()),
                   max_age=max_age, name=name)

    def _fixing(self, base: str, quote: str, at: datetime, max_age: timedelta | None
                ) -> tuple[Decimal, datetime] | None:
        """The direct or inverse fixing as of `at`."""
        for pair, invert in (((base, quote), False), ((quote, base), True)):
            series = self._series.get(pair)
            if series is None:
                continue
            times, values = series
            i = bisect.bisect_right(times, at) - 1
            if i < 0 or (max_age is not None and at - times[i] > max_age):
                continue
            return (Decimal(1) / values[i] if invert else values[i]), times[i]
        return None

    def _as_of(self, base: str, quote: str, at: datetime, max_age: timedelta | None
               ) -> tuple[Decimal, datetime] | None:
        if base == quote:
            return Decimal(1), at
        found = self._fixing(base, quote, at, max_age)
        if found is not None or USD in (base, quote):
            return found
        first, second = self._fixing(base, USD, at, max_age), self._fixing(USD, quote, at, max_age)
        if first is None or second is None:
            return None
        return first[0] * second[0], min(first[1], second[1])

    def rate(self, base: str, quote: str, at: datetime) -> FxRate | None:
        found = self._as_of(base, quote, at, self.max_age)
        if found is None:
            return None
        return FxRate(base=base, quote=quote, rate=significant(found[0]), at=found[1], source=self.name)

    def history(self, base: str, quote: str, start: datetime, end: datetime) -> Sequence[FxRate]:
        legs = {(base, quote), (quote, base), (base, USD), (USD, base), (quote, USD), (USD, quote)}
        times = sorted({t for pair in legs if pair in self._series
                        for t in self._series[pair][0] if start <= t <= end})
        out: list[FxRate] = []
        for t in times:
            # Each point uses fixings of that very instant or earlier, never later ones.
            found = self._as_of(base, quote, t, self.max_age)
            if found is not None:
                out.append(FxRate(base=base, quote=quote, rate=significant(found[0]), at=t,
                                  source=self.name))
        return out

    def interest_rate(self, currency: str, at: datetime) -> Decimal | None:
        series = self._interest.get(currency)
        if series is None:
            return None
        times, values = series
        i = bisect.bisect_right(times, at) - 1
        return values[i] if i >= 0 else None


# CSV reading: strict, so a bad file fails the plugin at activation with the line to fix.
def _rows(text: str, header: tuple[str, ...]) -> Iterable[tuple[int, dict[str, str]]]:
    lines = [(n, line) for n, line in enumerate(text.splitlines(), start=1)
             if line.strip() and not line.lstrip().startswith("#")]
    reader = csv.reader(line for _, line in lines)
    found = None
    for (number, _), row in zip(lines, reader, strict=True):
        cells = tuple(cell.strip() for cell in row)
        if found is None:
            found = cells
            if found != header:
                raise ValueError(f"line {number}: header must be {','.join(header)}")
            continue
        if len(cells) != len(header):
            raise ValueError(f"line {number}: expected {len(header)} fields")
        yield number, dict(zip(header, cells, strict=True))


def _currency(value: str, number: int) -> str:
    if len(value) != 3 or not value.isalpha() or not value.isupper():
        raise ValueError(f"line {number}: {value!r} is not an ISO 4217 code")
    return value


def _decimal(value: str, number: int) -> Decimal:
    try:
        parsed = Decimal(value)
    except InvalidOperation:
        raise ValueError(f"line {number}: {value!r} is not a number") from None
    if not parsed.is_finite():
        raise ValueError(f"line {number}: {value!r} is not finite")
    return parsed


def _instant(value: str, number: int) -> datetime:
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(f"line {number}: {value!r} is not an ISO 8601 instant") from None
    if parsed.tzinfo is None:
        raise ValueError(f"line {number}: {value!r} has no UTC offset")
    return parsed.astimezone(UTC)


def read_rates(text: str) -> list[tuple[str, str, Decimal, datetime]]:
    out = []
    for number, row in _rows(text, ("base", "quote", "rate", "at")):
        base, quote = _currency(row["base"], number), _currency(row["quote"], number)
        rate = _decimal(row["rate"], number)
        if rate <= 0 or base == quote:
            raise ValueError(f"line {number}: a rate is positive and between two currencies")
        out.append((base, quote, rate, _instant(row["at"], number)))
    return out


def read_interest_rates(text: str) -> list[tuple[str, Decimal, datetime]]:
    out = []
    for number, row in _rows(text, ("currency", "rate", "at")):
        rate = _decimal(row["rate"], number)
        if not Decimal("-1") < rate < Decimal("1"):
            raise ValueError(f"line {number}: an annual rate is a fraction such as 0.045")
        out.append((_currency(row["currency"], number), rate, _instant(row["at"], number)))
    return out


def _shipped(name: str) -> str:
    return resources.files("plugins.builtin").joinpath("data", name).read_text()


@hookimpl
def alphintra_fx_rate_providers(context: PluginContext) -> list[FxRateProvider]:
    config = context.config
    max_age = timedelta(days=float(config.get("rates_max_age_days", 4)))
    rates = (Path(config["rates_path"]).read_text() if "rates_path" in config
             else _shipped("fx_rates.csv"))
    interest = (Path(config["interest_rates_path"]).read_text() if "interest_rates_path" in config
                else _shipped("fx_interest_rates.csv"))
    return [
        RatesFileProvider(read_rates(rates), read_interest_rates(interest), max_age=max_age),
        FxTwin(seed=int(config.get("twin_seed", DEFAULT_SEED))),
    ]
