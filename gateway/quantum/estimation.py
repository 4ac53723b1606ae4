"""Expected returns and covariance from daily bars, and the covariance check.

The data: daily ("1d") bars of the requested instruments from the market data service
(`Runtime.market_data`: the market twin and other source plugins) over [as_of - lookback,
as_of). Until tenants install their own data sources, every tenant reads the same sources,
so "the tenant's data" is the bars of the instruments it names.

The estimate:
- Each bar is dated by its venue's local trading day (a Sydney session opens on the previous
  UTC day); the close is converted from Decimal to float for the statistics only.
- Venues keep different calendars, so prices are put on one grid, the weekdays (Mon-Fri) of
  the window, each instrument's price on a day being its last close on or before that day
  (a holiday carries the last close forward, a zero return). The grid starts on the first day
  every instrument has a price.
- Simple returns r_t = P_t / P_{t-1} - 1 (a portfolio's return is then linear in its weights),
  mu = mean(r)·A and Sigma = cov(r, ddof=1)·A with A = 365.25·5/7 ~ 260.9 weekdays a year.
- Returns are in each instrument's own currency (no FX translation), and closes at different
  hours are treated as simultaneous, which understates correlation across time zones (the
  Epps effect). Both are stated in the job's result.

The check: Sigma must be symmetric positive definite to be a covariance the optimisers can
trust. Its eigenvalues decide: the smallest must exceed RELATIVE_EIGEN_FLOOR times the
largest. A singular or indefinite estimate (fewer returns than assets, a constant price, two
instruments that move as one) is refused as COVARIANCE_SINGULAR unless the request asks for
shrinkage delta > 0, which uses (1 - delta)·Sigma + delta·(tr Sigma / n)·I (Ledoit-Wolf's
target, with a chosen rather than estimated intensity); that is definite whenever some asset
varies.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import numpy as np

from gateway.errors import DomainError
from gateway.marketdata import MarketDataService
from gateway.quantum.errors import CovarianceSingular, HistoryInsufficient

PERIODS_PER_YEAR = 365.25 * 5 / 7
MIN_RETURNS = 20
# An instrument must have its own bar on this share of the grid's days; fewer means its
# history does not cover the window and carried-forward prices would fake a low volatility.
MIN_COVERAGE = 0.75
RELATIVE_EIGEN_FLOOR = 1e-10


@dataclass(frozen=True, eq=False)
class Moments:
    instruments: tuple[str, ...]
    mu: np.ndarray
    sigma: np.ndarray
    observations: int  # returns per instrument
    first_day: date
    last_day: date
    coverage: dict[str, float]  # share of the grid's days with the instrument's own bar


def estimate_moments(market_data: MarketDataService, keys: Sequence[str], as_of: datetime,
                     lookback_days: int, progress: Callable[[int], None] | None = None) -> Moments:
    start = as_of - timedelta(days=lookback_days)
    grid = [d for d in _days(start.astimezone(UTC).date(), as_of.astimezone(UTC).date())
            if d.weekday() < 5]
    prices = np.full((len(grid), len(keys)), np.nan)
    coverage: dict[str, float] = {}
    for column, key in enumerate(keys):
        zone = _zone(market_data, key)
        closes = {bar.start.astimezone(zone).date(): float(bar.close)
                  for bar in market_data.bars(key, start, as_of, "1d")}
        own = 0
        last = math.nan
        days = sorted(closes)
        cursor = 0
        for row, day in enumerate(grid):
            while cursor < len(days) and days[cursor] <= day:
                last = closes[days[cursor]]
                cursor += 1
            prices[row, column] = last
            own += day in closes
        coverage[key] = own / len(grid) if grid else 0.0
        if coverage[key] < MIN_COVERAGE:
            raise HistoryInsufficient(
                f"{key} has daily bars on {own} of the {len(grid)} weekdays of the lookback; "
                f"at least {MIN_COVERAGE:.0%} are needed", details={"instrument": key})
        if progress is not None:
            progress(column)
    complete = np.flatnonzero(~np.isnan(prices).any(axis=1))
    prices = prices[complete[0]:] if len(complete) else prices[:0]
    returns = prices[1:] / prices[:-1] - 1.0
    if len(returns) < MIN_RETURNS:
        raise HistoryInsufficient(f"{len(returns)} daily returns in the lookback; at least "
                                  f"{MIN_RETURNS} are needed", details={"returns": len(returns)})
    mu = returns.mean(axis=0) * PERIODS_PER_YEAR
    sigma = np.atleast_2d(np.cov(returns, rowvar=False, ddof=1)) * PERIODS_PER_YEAR
    first = grid[complete[0]] if len(complete) else grid[0]
    return Moments(tuple(keys), mu, (sigma + sigma.T) / 2.0, len(returns), first, grid[-1], coverage)


@dataclass(frozen=True, eq=False)
class CheckedCovariance:
    sigma: np.ndarray
    shrinkage: float
    min_eigenvalue: float  # of the matrix used
    raw_min_eigenvalue: float  # before shrinkage
    condition_number: float


def check_covariance(sigma: np.ndarray, shrinkage: float = 0.0) -> CheckedCovariance:
    sigma = np.asarray(sigma, dtype=np.float64)
    if not np.all(np.isfinite(sigma)) or not np.allclose(sigma, sigma.T, rtol=1e-9, atol=1e-15):
        raise CovarianceSingular("the covariance estimate is not a finite symmetric matrix")
    raw = np.linalg.eigvalsh(sigma)
    used, eigen = sigma, raw
    if shrinkage > 0:
        n = len(sigma)
        used = (1.0 - shrinkage) * sigma + shrinkage * (np.trace(sigma) / n) * np.eye(n)
        eigen = np.linalg.eigvalsh(used)
    largest = float(eigen.max()) if eigen.size else 0.0
    if largest <= 0 or eigen.min() <= RELATIVE_EIGEN_FLOOR * largest:
        hint = "" if shrinkage > 0 else "; set shrinkage (e.g. 0.1) to make it definite"
        raise CovarianceSingular(
            f"the covariance estimate is singular or not positive definite (smallest eigenvalue "
            f"{eigen.min():.3g}, largest {largest:.3g}){hint}",
            details={"min_eigenvalue": float(eigen.min()), "max_eigenvalue": largest,
                     "shrinkage": shrinkage})
    return CheckedCovariance(used, shrinkage, float(eigen.min()), float(raw.min()),
                             float(largest / eigen.min()))


def _days(first: date, last: date) -> list[date]:
    """Days in [first, last)."""
    return [first + timedelta(days=i) for i in range((last - first).days)]


def _zone(market_data: MarketDataService, key: str) -> ZoneInfo:
    """The instrument's venue's time zone, for dating its daily bars; UTC when the directory
    does not know the venue (a file source may hold venues it does not list)."""
    try:
        return ZoneInfo(market_data.venues.venue(market_data.instrument(key).mic).timezone)
    except DomainError:
        return ZoneInfo("UTC")
