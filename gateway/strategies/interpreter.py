"""The interpreter of a parsed strategy (dsl.Strategy) over one instrument's bars.

Nothing here compiles or evaluates text: a signal's indicator picks one of the functions in
`INDICATOR_FUNCTIONS` (a closed dict), and a condition is walked as a tree of dataclasses.
All series are numpy float arrays aligned on the bars; a value at bar t uses bar t's close and
earlier data only (causal), so a decision at a bar's close sees nothing of the future.

Definitions (NaN until enough data; a comparison or cross with NaN is false):
- sma(x, n): mean of the last n values.
- ema(x, n): alpha = 2/(n+1), seeded with the SMA of the first n values, then
  e_t = alpha*x_t + (1-alpha)*e_(t-1).
- rsi(x, n): Wilder's: the first average gain/loss is the mean of the first n changes, then
  a_t = (a_(t-1)*(n-1) + g_t)/n; RSI = 100 - 100/(1 + gain/loss), 100 when there is no loss.
- zscore(x, n): (x_t - mean)/std over the last n values, population std (ddof 0); 0 when the
  window is flat.
- momentum(x, n): x_t / x_(t-n) - 1.
- volatility(x, n): sample std (ddof 1) of the last n simple returns x_t/x_(t-1) - 1, per bar
  (not annualised).
- news_sentiment: the latest score of the instrument's news at or before the bar's end, 0 when
  none is younger than max_age_hours.
- cross_over(a, b) at t: a_(t-1) <= b_(t-1) and a_t > b_t; cross_under the mirror.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import numpy as np

from gateway.strategies.dsl import Compare, Condition, Logical, Not, Signal, Strategy
from plugins.sdk import Bar

Array = np.ndarray


def _windows(x: Array, n: int) -> Array:
    """Rows of the last n values ending at t = n-1 .. len-1."""
    return np.lib.stride_tricks.sliding_window_view(x, n)


def sma(x: Array, n: int) -> Array:
    out = np.full(len(x), np.nan)
    if len(x) >= n:
        out[n - 1 :] = _windows(x, n).mean(axis=1)  # NaN in a window gives NaN
    return out


def ema(x: Array, n: int) -> Array:
    out = np.full(len(x), np.nan)
    alpha = 2.0 / (n + 1)
    run = 0
    value = np.nan
    for t, v in enumerate(x):
        if np.isnan(v):
            run, value = 0, np.nan
            continue
        run += 1
        if run < n:
            continue
        value = float(np.mean(x[t - n + 1 : t + 1])) if run == n else alpha * v + (1 - alpha) * value
        out[t] = value
    return out


def rsi(x: Array, n: int) -> Array:
    out = np.full(len(x), np.nan)
    if len(x) <= n:
        return out
    change = np.diff(x)
    gains, losses = np.clip(change, 0, None), np.clip(-change, 0, None)
    gain, loss = float(np.mean(gains[:n])), float(np.mean(losses[:n]))
    for t in range(n, len(x)):
        if t > n:
            gain = (gain * (n - 1) + gains[t - 1]) / n
            loss = (loss * (n - 1) + losses[t - 1]) / n
        if np.isnan(gain) or np.isnan(loss):
            continue
        out[t] = 100.0 if loss == 0 else 100.0 - 100.0 / (1.0 + gain / loss)
    return out


def zscore(x: Array, n: int) -> Array:
    out = np.full(len(x), np.nan)
    if len(x) >= n:
        w = _windows(x, n)
        mean, std = w.mean(axis=1), w.std(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            z = np.where(std > 0, (x[n - 1 :] - mean) / np.where(std > 0, std, 1.0), 0.0)
        z[np.isnan(mean)] = np.nan
        out[n - 1 :] = z
    return out


def momentum(x: Array, n: int) -> Array:
    out = np.full(len(x), np.nan)
    if len(x) > n:
        with np.errstate(invalid="ignore", divide="ignore"):
            out[n:] = x[n:] / x[:-n] - 1.0
    return out


def returns(x: Array) -> Array:
    out = np.full(len(x), np.nan)
    with np.errstate(invalid="ignore", divide="ignore"):
        out[1:] = x[1:] / x[:-1] - 1.0
    return out


def volatility(x: Array, n: int) -> Array:
    r = returns(x)
    out = np.full(len(x), np.nan)
    if n >= 2 and len(x) > n:
        out[n:] = _windows(r[1:], n).std(axis=1, ddof=1)
    return out


INDICATOR_FUNCTIONS: Mapping[str, Callable[[Array, int], Array]] = {
    "sma": sma,
    "ema": ema,
    "rsi": rsi,
    "zscore": zscore,
    "momentum": momentum,
    "volatility": volatility,
}

NewsItems = Sequence[tuple[datetime, float]]


def news_sentiment(ends: Sequence[datetime], items: NewsItems, max_age_hours: float) -> Array:
    out = np.zeros(len(ends))
    if not items:
        return out
    ordered = sorted(items, key=lambda item: item[0])
    times = [t for t, _ in ordered]
    max_age = timedelta(hours=max_age_hours)
    for i, end in enumerate(ends):
        j = bisect.bisect_right(times, end) - 1
        if j >= 0 and end - times[j] <= max_age:
            out[i] = max(-1.0, min(1.0, float(ordered[j][1])))
    return out


def price_series(bars: Sequence[Bar]) -> dict[str, Array]:
    return {
        field: np.array([float(getattr(b, field)) for b in bars], dtype=float)
        for field in ("open", "high", "low", "close", "volume")
    }


@dataclass(frozen=True)
class Evaluation:
    features: dict[str, Array]  # each signal by name
    entry: Array  # bool
    exit: Array | None  # bool; None when the strategy has no exit rule

    def feature_row(self, t: int) -> dict[str, float | None]:
        columns = self.__dict__.get("_columns")
        if columns is None:  # plain Python lists once: indexing numpy per bar is slow
            columns = [(name, values.tolist()) for name, values in self.features.items()]
            object.__setattr__(self, "_columns", columns)
        return {name: (None if values[t] != values[t] else values[t]) for name, values in columns}


def compute_signals(
    signals: Sequence[Signal], prices: Mapping[str, Array], ends: Sequence[datetime], news: NewsItems | None
) -> dict[str, Array]:
    env: dict[str, Array] = dict(prices)
    out: dict[str, Array] = {}
    for signal in signals:
        if signal.indicator == "news_sentiment":
            values = news_sentiment(ends, news or (), signal.max_age_hours)
        else:
            values = INDICATOR_FUNCTIONS[signal.indicator](env[signal.input], signal.window)
        env[signal.name] = out[signal.name] = values
    return out


def _operand(value: float | str, env: Mapping[str, Array], size: int) -> Array:
    return np.full(size, float(value)) if not isinstance(value, str) else env[value]


def evaluate_condition(cond: Condition, env: Mapping[str, Array], size: int) -> Array:
    if isinstance(cond, Logical):
        parts = [evaluate_condition(c, env, size) for c in cond.args]
        return np.logical_and.reduce(parts) if cond.op == "and" else np.logical_or.reduce(parts)
    if isinstance(cond, Not):
        return ~evaluate_condition(cond.arg, env, size)
    assert isinstance(cond, Compare)
    a, b = _operand(cond.left, env, size), _operand(cond.right, env, size)
    with np.errstate(invalid="ignore"):
        if cond.op == "gt":
            return a > b
        if cond.op == "ge":
            return a >= b
        if cond.op == "lt":
            return a < b
        if cond.op == "le":
            return a <= b
        out = np.zeros(size, dtype=bool)
        if size > 1:
            if cond.op == "cross_over":
                out[1:] = (a[:-1] <= b[:-1]) & (a[1:] > b[1:])
            else:
                out[1:] = (a[:-1] >= b[:-1]) & (a[1:] < b[1:])
        return out


def evaluate(
    strategy: Strategy, bars: Sequence[Bar], ends: Sequence[datetime], news: NewsItems | None = None
) -> Evaluation:
    """Signals and rule outcomes at each bar's close. `ends[t]` is when bar t closed."""
    prices = price_series(bars)
    features = compute_signals(strategy.signals, prices, ends, news)
    env = {**prices, **features}
    size = len(bars)
    entry = evaluate_condition(strategy.entry, env, size)
    exit_ = evaluate_condition(strategy.exit, env, size) if strategy.exit is not None else None
    return Evaluation(features, entry, exit_)
