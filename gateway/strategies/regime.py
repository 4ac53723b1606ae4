"""The market regime, described from daily bars: what a synthesis prompt states as facts.

Over `lookback_days` (default 365) of daily bars of the universe, ending at `as_of` (the
improvement loop ends it at its in-sample segment's last close, so no later bar is described):
- per instrument: simple daily returns r; trend = mean(r)·P (P = observed bars per year:
  bars / calendar years), with its t-statistic mean(r)/std(r)·√n; volatility = std(r)·√P over
  the whole window and over the last 20 bars; the 1-year return;
- trend label: the median t-statistic over the universe above 1 → "up", below -1 → "down",
  otherwise "sideways";
- volatility label: the median ratio of the last 20 bars' volatility to the window's above
  1.25 → "volatile", below 0.8 → "calm", otherwise "normal";
- correlation: the mean pairwise correlation of returns on the UTC dates both instruments
  traded (at least 20 shared dates); above 0.6 → "high", below 0.3 → "low", else "moderate".
The summary is one plain sentence of these figures. Nothing here is predictive: it states
what the data showed, and the model (or the offline templates) decide from it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

import numpy as np

from gateway.errors import DomainError
from gateway.marketdata import MarketDataService
from plugins.sdk import Bar

SHORT_WINDOW = 20
MIN_BARS = 30


class RegimeNoData(DomainError):
    code = "REGIME_NO_DATA"


def _returns(bars: Sequence[Bar]) -> tuple[list[str], np.ndarray]:
    closes = np.array([float(b.close) for b in bars], dtype=float)
    days = [b.start.date().isoformat() for b in bars[1:]]
    return days, closes[1:] / closes[:-1] - 1.0


def describe_bars(bars_by_key: Mapping[str, Sequence[Bar]], lookback_days: int) -> dict[str, Any]:
    per: list[dict[str, Any]] = []
    series: dict[str, dict[str, float]] = {}
    for key, bars in bars_by_key.items():
        if len(bars) < MIN_BARS:
            continue
        days, r = _returns(bars)
        per_year = len(bars) / (lookback_days / 365.25)
        std = float(np.std(r, ddof=1))
        short = float(np.std(r[-SHORT_WINDOW:], ddof=1))
        mean = float(np.mean(r))
        per.append(
            {
                "instrument": key,
                "bars": len(bars),
                "return": round(float(bars[-1].close / bars[0].close) - 1.0, 6),
                "trend": round(mean * per_year, 6),
                "trend_t": round(mean / std * math.sqrt(len(r)), 4) if std > 0 else 0.0,
                "volatility": round(std * math.sqrt(per_year), 6),
                "recent_volatility": round(short * math.sqrt(per_year), 6),
                "volatility_ratio": round(short / std, 4) if std > 0 else 1.0,
            }
        )
        series[key] = dict(zip(days, r.tolist(), strict=True))
    if not per:
        raise RegimeNoData(f"fewer than {MIN_BARS} daily bars for every instrument of the universe")
    t_median = float(np.median([p["trend_t"] for p in per]))
    ratio_median = float(np.median([p["volatility_ratio"] for p in per]))
    correlations: list[float] = []
    keys = sorted(series)
    for i, a in enumerate(keys):
        for b in keys[i + 1 :]:
            shared = sorted(set(series[a]) & set(series[b]))
            if len(shared) < 20:
                continue
            x = np.array([series[a][d] for d in shared])
            y = np.array([series[b][d] for d in shared])
            if np.std(x) > 0 and np.std(y) > 0:
                correlations.append(float(np.corrcoef(x, y)[0, 1]))
    mean_corr = float(np.mean(correlations)) if correlations else None
    trend = "up" if t_median > 1 else "down" if t_median < -1 else "sideways"
    volatility = "volatile" if ratio_median > 1.25 else "calm" if ratio_median < 0.8 else "normal"
    correlation = (
        None if mean_corr is None else "high" if mean_corr > 0.6 else "low" if mean_corr < 0.3 else "moderate"
    )
    avg_vol = float(np.mean([p["volatility"] for p in per]))
    summary = (
        f"Over the last {lookback_days} days the universe trended {trend} (median trend "
        f"t-statistic {t_median:+.2f}); volatility is {volatility} (recent/window ratio "
        f"{ratio_median:.2f}, average annualised volatility {avg_vol:.1%})"
        + (
            f"; correlation is {correlation} (mean pairwise {mean_corr:+.2f})."
            if mean_corr is not None
            else "."
        )
    )
    return {
        "lookback_days": lookback_days,
        "trend": trend,
        "trend_t_median": round(t_median, 4),
        "volatility": volatility,
        "volatility_ratio_median": round(ratio_median, 4),
        "average_volatility": round(avg_vol, 6),
        "correlation": correlation,
        "mean_correlation": None if mean_corr is None else round(mean_corr, 4),
        "instruments": per,
        "summary": summary,
    }


def describe_regime(
    market_data: MarketDataService,
    keys: Sequence[str],
    as_of: datetime,
    lookback_days: int = 365,
    *,
    closed_by: bool = False,
) -> dict[str, Any]:
    """`closed_by`: keep only bars whose session closed by `as_of` (not merely started before
    it), for a cut-off inside a run, such as the end of an in-sample segment."""
    start = as_of - timedelta(days=lookback_days)
    bars = {key: market_data.bars(key, start, as_of, "1d") for key in keys}
    if closed_by:
        bars = {key: _closed(series, as_of, market_data) for key, series in bars.items()}
    out = describe_bars(bars, lookback_days)
    out["as_of"] = as_of.isoformat()
    out["start"] = start.isoformat()
    return out


def _closed(bars: Sequence[Bar], as_of: datetime, market_data: MarketDataService) -> list[Bar]:
    from gateway.strategies.backtest import in_session

    timed = in_session(bars, "1d", market_data.venues)
    return [b for b, close in zip(timed.bars, timed.closes, strict=True) if close <= as_of]
