"""Performance figures of an equity curve, the deflated Sharpe ratio, walk-forward splits.

With equity E_0..E_n sampled P times a year and r_i = E_i/E_(i-1) - 1:
- total_return = E_n/E_0 - 1; annualised_return = (1 + total)^(P/n) - 1;
- volatility = std(r, ddof 1)·√P; sharpe = mean(r)/std(r, ddof 1)·√P (risk-free rate 0);
- sortino = mean(r)/√(mean(min(r, 0)²))·√P (downside deviation against 0, over all periods);
- max_drawdown = max_t (1 - E_t / max_(s<=t) E_s);
- turnover = traded notional / mean equity (over the whole run); annual_turnover divides by
  the years the run spans (n/P);
- hit_rate = winning closed trades / closed trades; exposure = share of periods with a
  position.
Ratios are floats: they are statistics, not money.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy.stats import kurtosis as _kurtosis
from scipy.stats import norm
from scipy.stats import skew as _skew

EULER_GAMMA = 0.5772156649015329


def _none_if_nan(value: float) -> float | None:
    return None if value is None or not math.isfinite(value) else float(value)


def performance(
    equity: Sequence[float],
    periods_per_year: float,
    *,
    traded_notional: float = 0.0,
    trade_pnls: Sequence[float] = (),
    invested: Sequence[bool] = (),
) -> dict[str, Any]:
    e = np.asarray(equity, dtype=float)
    n = len(e) - 1
    out: dict[str, Any] = {"periods": max(n, 0), "periods_per_year": periods_per_year}
    if n < 1 or e[0] <= 0:
        out.update(
            total_return=0.0,
            annualised_return=None,
            volatility=None,
            sharpe=None,
            sortino=None,
            max_drawdown=0.0,
            turnover=0.0,
            annual_turnover=None,
            hit_rate=None,
            exposure=0.0,
            skew=None,
            kurtosis=None,
            sharpe_per_period=None,
        )
        return out
    r = e[1:] / e[:-1] - 1.0
    total = e[-1] / e[0] - 1.0
    years = n / periods_per_year
    std = float(np.std(r, ddof=1)) if n > 1 else float("nan")
    mean = float(np.mean(r))
    downside = math.sqrt(float(np.mean(np.minimum(r, 0.0) ** 2)))
    peaks = np.maximum.accumulate(e)
    closed = [p for p in trade_pnls]
    out.update(
        total_return=float(total),
        annualised_return=_none_if_nan((1.0 + total) ** (1.0 / years) - 1.0) if total > -1 else -1.0,
        volatility=_none_if_nan(std * math.sqrt(periods_per_year)),
        sharpe=_none_if_nan(mean / std * math.sqrt(periods_per_year)) if std > 0 else None,
        sharpe_per_period=_none_if_nan(mean / std) if std > 0 else None,
        sortino=_none_if_nan(mean / downside * math.sqrt(periods_per_year)) if downside > 0 else None,
        max_drawdown=float(np.max(1.0 - e / peaks)),
        turnover=float(traded_notional / float(np.mean(e))),
        annual_turnover=float(traded_notional / float(np.mean(e)) / years),
        hit_rate=(sum(1 for p in closed if p > 0) / len(closed)) if closed else None,
        exposure=(float(np.mean(np.asarray(invested, dtype=float))) if len(invested) else 0.0),
        skew=_none_if_nan(float(_skew(r))) if n > 2 and std > 0 else None,
        kurtosis=_none_if_nan(float(_kurtosis(r, fisher=False))) if n > 3 and std > 0 else None,
    )
    return out


def deflated_sharpe_ratio(
    sharpe: float, n_trials: int, n_obs: int, skew: float, kurtosis: float, sharpe_variance: float
) -> float:
    """Bailey & López de Prado (2014): the probability that the true Sharpe ratio is above the
    best one expected from `n_trials` unskilled trials.

    All figures per period (not annualised): `sharpe` the selected trial's, `sharpe_variance`
    the variance of the Sharpe ratios across trials, `kurtosis` non-excess (3 for a normal).
    SR0 = √V·((1-g)·Φ⁻¹(1 - 1/N) + g·Φ⁻¹(1 - 1/(N·e))) with g Euler's constant, and
    DSR = Φ((SR - SR0)·√(T-1) / √(1 - skew·SR + (kurtosis-1)/4·SR²)). With one trial SR0 = 0 and DSR is
    the probabilistic Sharpe ratio against 0.
    """
    if n_trials < 1 or n_obs < 2 or sharpe_variance < 0:
        raise ValueError("n_trials >= 1, n_obs >= 2 and sharpe_variance >= 0 are required")
    if n_trials == 1:
        sr0 = 0.0
    else:
        sr0 = math.sqrt(sharpe_variance) * (
            (1 - EULER_GAMMA) * norm.ppf(1 - 1 / n_trials)
            + EULER_GAMMA * norm.ppf(1 - 1 / (n_trials * math.e))
        )
    denominator = 1 - skew * sharpe + (kurtosis - 1) / 4 * sharpe**2
    if denominator <= 0:
        raise ValueError("skew and kurtosis give a non-positive variance for this Sharpe ratio")
    return float(norm.cdf((sharpe - sr0) * math.sqrt(n_obs - 1) / math.sqrt(denominator)))


def walk_forward_splits(n: int, train: int, test: int, step: int | None = None) -> list[tuple[range, range]]:
    """Rolling (train, test) index windows over n observations: train [s, s+train), test
    [s+train, s+train+test), s = 0, step, 2·step, … while the test window fits. `step`
    defaults to `test` (consecutive test windows that do not overlap)."""
    step = test if step is None else step
    if min(train, test, step) < 1 or n < 0:
        raise ValueError("train, test and step must be positive")
    out: list[tuple[range, range]] = []
    s = 0
    while s + train + test <= n:
        out.append((range(s, s + train), range(s + train, s + train + test)))
        s += step
    return out
