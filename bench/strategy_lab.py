"""The strategy lab: explanation latency per decision and backtest speed in bars per second.

    .venv/bin/python bench/strategy_lab.py [--decisions N] [--synthetic-bars M]

1. Reads daily bars of the market twin (AAPL.XNAS, SAP.XETR, 7203.XTKS, BTC-USD.ALPX,
   2014-2024) and backtests a trend strategy on them with the venues' sessions and FX into USD
   (`run_backtest` alone is timed: bars per second = bars simulated / seconds).
2. The same strategy on M synthetic bars of one instrument without sessions or FX: the
   simulation's own speed (indicators, events, Decimal accounting, decisions).
3. Fits the explanation model on the twin run's decisions (LightGBM, one thread) and times
   N single-decision explanations (`DecisionExplainer.explain([d])`: the feature row, SHAP
   TreeExplainer, the additivity check, the sentence), each on its own after 50 of warm-up;
   prints p50 / p99 / max in ms, and the batched cost per decision for comparison.

Prints figures; never passes or fails on time. The seed target for an explanation is 10 s;
the aim is under 10 ms.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gateway.strategies.backtest import Costs, run_backtest
from gateway.strategies.dsl import parse_strategy
from gateway.strategies.explain import DecisionExplainer
from plugins.sdk import Bar

DOC = {
    "name": "bench trend",
    "universe": {"instruments": ["AAPL.XNAS", "SAP.XETR", "7203.XTKS", "BTC-USD.ALPX"]},
    "signals": [
        {"name": "fast", "indicator": "ema", "window": 10},
        {"name": "slow", "indicator": "sma", "window": 40},
        {"name": "strength", "indicator": "rsi", "window": 14},
        {"name": "z", "indicator": "zscore", "window": 20},
        {"name": "vol", "indicator": "volatility", "window": 20},
    ],
    "entry": {
        "op": "and",
        "args": [
            {"op": "gt", "left": "fast", "right": "slow"},
            {"op": "lt", "left": "strength", "right": 70},
        ],
    },
    "exit": {
        "op": "or",
        "args": [
            {"op": "cross_under", "left": "fast", "right": "slow"},
            {"op": "gt", "left": "z", "right": 2.5},
        ],
    },
    "sizing": {"method": "volatility_target", "target_volatility": 0.15, "window": 20, "max_fraction": 0.3},
    "risk": {"max_position": 0.3, "stop_loss": 0.1, "max_drawdown": 0.5},
}


def runtime():
    from gateway.cli import migrate_database
    from gateway.runtime import build_runtime
    from gateway.settings import Settings

    path = Path(tempfile.mkdtemp()) / "bench.db"
    settings = Settings(database_url=f"sqlite:///{path}", warm_on_start=False, log_json=False)
    migrate_database(settings)
    return build_runtime(settings)


def synthetic(n: int) -> list[Bar]:
    rng = np.random.default_rng(5)
    prices = 100 * np.exp(np.cumsum(rng.normal(0, 0.012, n)))
    t0 = datetime(2000, 1, 1, tzinfo=UTC)
    out = []
    for i, p in enumerate(prices):
        price = Decimal(f"{p:.2f}")
        out.append(
            Bar("SYN", "XNAS", t0 + timedelta(hours=i), "1h", price, price, price, price, Decimal(100))
        )
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--decisions", type=int, default=500)
    parser.add_argument("--synthetic-bars", type=int, default=100_000)
    args = parser.parse_args()
    print(f"python {platform.python_version()}, {platform.machine()}, {os.cpu_count()} cpus")

    rt = runtime()
    strategy = rt.strategies.parse(DOC)
    keys = rt.strategies.universe(strategy)
    start, end = datetime(2014, 1, 1, tzinfo=UTC), datetime(2024, 1, 1, tzinfo=UTC)
    t = time.perf_counter()
    bars = rt.strategies.load_bars(keys, start, end, "1d")
    print(
        f"read {sum(map(len, bars.values()))} daily bars of {len(keys)} instruments in "
        f"{time.perf_counter() - t:.1f} s (market twin)"
    )
    currencies = {k: rt.market_data.instrument(k).currency for k in keys}
    best = float("inf")
    for _ in range(3):
        t = time.perf_counter()
        result = run_backtest(
            strategy, bars, Costs(), "USD", rt.fx, currencies=currencies, sessions=rt.market_data.venues
        )
        best = min(best, time.perf_counter() - t)
    print(
        f"backtest, twin, sessions + FX: {result.bars} bars in {best * 1000:.0f} ms = "
        f"{result.bars / best:,.0f} bars/s ({len(result.trades)} trades, {len(result.decisions)} decisions)"
    )

    synthetic_doc = {**DOC, "universe": {"instruments": ["SYN.XNAS"]}, "interval": "1h"}
    series = synthetic(args.synthetic_bars)
    t = time.perf_counter()
    syn = run_backtest(parse_strategy(synthetic_doc), {"SYN.XNAS": series}, Costs(), "USD")
    took = time.perf_counter() - t
    print(
        f"backtest, synthetic 1h, no sessions: {syn.bars} bars in {took:.2f} s = "
        f"{syn.bars / took:,.0f} bars/s "
        f"({len(syn.trades)} trades)"
    )

    t = time.perf_counter()
    explainer = DecisionExplainer.fit(result.decisions, strategy.feature_names)
    print(f"fit the explanation model on {len(result.decisions)} decisions: {time.perf_counter() - t:.2f} s")
    decisions = result.decisions
    for d in decisions[:50]:
        explainer.explain([d])
    times = []
    residual = 0.0
    for i in range(args.decisions):
        d = decisions[(i * 7919) % len(decisions)]
        t0 = time.perf_counter_ns()
        (e,) = explainer.explain([d])
        times.append((time.perf_counter_ns() - t0) / 1e6)
        residual = max(residual, abs(e.residual))
    ms = np.array(times)
    print(
        f"explanation per decision, one at a time ({len(ms)}): p50 {np.percentile(ms, 50):.2f} ms, "
        f"p99 {np.percentile(ms, 99):.2f} ms, max {ms.max():.2f} ms; "
        f"largest additivity residual {residual:.1e}"
    )
    batch = decisions[: min(len(decisions), 2000)]
    t = time.perf_counter()
    explainer.explain(batch)
    per = (time.perf_counter() - t) / len(batch) * 1000
    print(f"explanation per decision, batched ({len(batch)}): {per:.3f} ms")
    rt.close()


if __name__ == "__main__":
    main()
