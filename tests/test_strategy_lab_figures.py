"""Issue 17, strategy lab: the figures the lab reports and the improvement loop judges by.

- Backtests respect liquidity: an order takes at most the participation rate of a bar's
  volume, the rest works over the next bars (partial fills), and each fill pays square-root
  market impact (before: 11.2 billion shares filled against bars of 1,000 at +2 bp).
- In- and out-of-sample figures come from the segment's own trades (before: turnover 0.0,
  exposure 0.0 and hit_rate null for every trial).
- Sharpe ratios are per period of one equity curve across venues (before: AAPL.XNAS and
  SAP.XETR closes counted as two periods a day, annualised as one: 0.660 instead of 0.945, and
  twice the DSR's observations).
- The improvement prompt's market regime covers the in-sample segment only (before: the last
  365 days, out-of-sample included).
"""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import numpy as np
import pytest

from gateway.strategies.backtest import Costs, run_backtest, segment_metrics
from gateway.strategies.dsl import parse_strategy
from gateway.strategies.metrics import performance
from gateway.strategies.regime import describe_regime
from plugins.sdk import Bar
from tests.support import wait_for
from tests.test_synthesis import IMPROVE, finished, recorded  # noqa: F401  (the fixture)

AS_OF = "2026-06-01T00:00:00+00:00"
CREATE = """mutation($doc: JSON!) { createStrategy(input: {document: $doc}) { id versions { id } } }"""
BACKTEST = """mutation($v: ID!, $start: DateTime!, $end: DateTime!, $costs: BacktestCostsInput) {
  backtest(strategyVersionId: $v, start: $start, end: $end, costs: $costs) { id } }"""
RESULT = """query($id: ID!) { backtestResult(id: $id) { metrics trades params } }"""
FILLS = """query($id: ID!) { backtestResult(id: $id) { fillRatio unfilledQuantity } }"""
BARS = """query($i: String!, $s: DateTime!, $e: DateTime!) {
  bars(instrument: $i, start: $s, end: $e, interval: "1d") { start open volume } }"""
README_DOC: dict[str, Any] = {  # the README's strategy lab example
    "name": "SMA trend",
    "universe": {"instruments": ["AAPL.XNAS", "SAP.XETR"]},
    "signals": [
        {"name": "fast", "indicator": "sma", "window": 10},
        {"name": "slow", "indicator": "sma", "window": 40},
        {"name": "strength", "indicator": "rsi", "window": 14},
    ],
    "entry": {"op": "and", "args": [{"op": "gt", "left": "fast", "right": "slow"},
                                    {"op": "lt", "left": "strength", "right": 70}]},
    "exit": {"op": "cross_under", "left": "fast", "right": "slow"},
    "sizing": {"method": "fixed_fraction", "fraction": 0.2},
    "risk": {"max_position": 0.25, "stop_loss": 0.08},
}
ALWAYS_IN: dict[str, Any] = {
    "name": "always in",
    "universe": {"instruments": ["JPM.XNYS"]},
    "signals": [{"name": "m", "indicator": "momentum", "window": 1}],
    "entry": {"op": "gt", "left": "close", "right": 0},
    "sizing": {"method": "fixed_fraction", "fraction": 1.0},
    "risk": {"max_position": 1},
}


def _strategy(gql, key: str, doc: dict[str, Any]) -> tuple[str, str]:
    made = gql.data(CREATE, {"doc": doc}, key=key)["createStrategy"]
    return made["id"], made["versions"][0]["id"]


# -- liquidity -------------------------------------------------------------------------------

def test_backtest_fills_within_the_bars_volume_with_impact(gql, runtime, tenant):
    """A trillion of capital all in one stock: the order must work over many bars, never more
    than 10 % of a bar's volume, each fill paying impact beyond spread and slippage."""
    _, version = _strategy(gql, tenant.key, ALWAYS_IN)
    start, end = "2024-03-01T00:00:00Z", "2024-05-01T00:00:00Z"
    job = gql.data(BACKTEST, {"v": version, "start": start, "end": end,
                              "costs": {"initialCapital": "1000000000000", "spreadBps": "2",
                                        "slippageBps": "1"}}, key=tenant.key)["backtest"]
    wait_for(lambda: runtime.jobs.get(tenant.id, job["id"]).finished_at, timeout=120)
    done = runtime.jobs.get(tenant.id, job["id"])
    assert done.status == "SUCCEEDED", (done.error_code, done.error_message)
    stored = gql.data(RESULT, {"id": done.result["backtest_id"]}, key=tenant.key)["backtestResult"]
    volumes = {b["start"][:10]: (Decimal(b["open"]), Decimal(b["volume"])) for b in gql.data(
        BARS, {"i": "JPM.XNYS", "s": start, "e": end}, key=tenant.key)["bars"]}
    trades = stored["trades"]
    assert len(trades) > 5  # one order, filled piece by piece
    for trade in trades:
        open_, volume = volumes[trade["at"][:10]]
        quantity = Decimal(trade["quantity"])
        assert 0 < quantity <= volume / 10, trade
        assert Decimal(trade["impact_bps"]) > 0
        # buys pay half the spread (1 bp), slippage (1 bp) and the impact above the open
        expected = open_ * (1 + (Decimal(2) + Decimal(trade["impact_bps"])) / 10_000)
        assert Decimal(trade["price"]) == pytest.approx(expected, rel=Decimal("1e-6"))
        assert Decimal(trade["price"]) > open_ * Decimal("1.0002")
    metrics = stored["metrics"]
    stored.update(gql.data(FILLS, {"id": done.result["backtest_id"]}, key=tenant.key)["backtestResult"])
    filled = sum(Decimal(t["quantity"]) for t in trades)
    assert Decimal(metrics["filled_quantity"]) == filled
    assert Decimal(metrics["unfilled_quantity"]) == Decimal(metrics["ordered_quantity"]) - filled > 0
    assert 0 < stored["fillRatio"] < 1 and stored["fillRatio"] == pytest.approx(
        float(filled / Decimal(metrics["ordered_quantity"])))
    assert Decimal(stored["unfilledQuantity"]) == Decimal(metrics["unfilled_quantity"])
    assert metrics["partial_fills"] == len(trades) and Decimal(metrics["impact_cost"]) > 0
    costs = stored["params"]["costs"]
    assert (costs["participation_rate"], costs["impact_coefficient"]) == ("0.1", "1")  # the defaults


def test_backtest_liquidity_parameters_are_checked(gql, tenant):
    from tests.support import error_codes

    _, version = _strategy(gql, tenant.key, ALWAYS_IN)
    for costs in ({"participationRate": "0"}, {"participationRate": "1.5"}, {"impactCoefficient": "-1"}):
        body = gql(BACKTEST, {"v": version, "start": "2024-03-01T00:00:00Z",
                              "end": "2024-04-01T00:00:00Z", "costs": costs}, key=tenant.key)
        assert error_codes(body) == ["BACKTEST_PARAMS_INVALID"], costs


T0 = datetime(2024, 1, 1, tzinfo=UTC)


def _bar(i: int, price: str, volume: int = 1000, open_: str | None = None) -> Bar:
    p, o = Decimal(price), Decimal(open_ or price)
    return Bar("AAA", "XNAS", T0 + timedelta(days=i), "1d", o, max(o, p), min(o, p), p, Decimal(volume))


def test_partial_fills_by_hand():
    # Capital 100,000 all in at 100: 1,000 shares wanted; 10 % of bars of 300 is 30 a bar.
    # Entry at t0's close; fills at t1..t4's opens (100) of 30 each (120 of 1,000), then t4
    # closes at 99, under 100: exit, the entry's 880 unfilled are cancelled, and the 120 held
    # sell 30 a bar at t5..t8's opens (99). No impact here (the next test prices it).
    doc = {**ALWAYS_IN, "universe": {"instruments": ["AAA.XNAS"]},
           "entry": {"op": "ge", "left": "close", "right": 100},
           "exit": {"op": "lt", "left": "close", "right": 100}}
    series = [_bar(i, "100", 300) for i in range(4)] + [_bar(4, "99", 300, open_="100")]
    series += [_bar(i, "99", 300) for i in range(5, 10)]
    costs = Costs(commission_bps=Decimal(0), spread_bps=Decimal(0), slippage_bps=Decimal(0),
                  initial_capital=Decimal(100_000), impact_coefficient=Decimal(0))
    result = run_backtest(parse_strategy(doc), {"AAA.XNAS": series}, costs, "USD")
    assert [(t.side, t.quantity, t.ordered) for t in result.trades] == [
        ("BUY", Decimal(30), Decimal(1000)), ("BUY", Decimal(30), Decimal(970)),
        ("BUY", Decimal(30), Decimal(940)), ("BUY", Decimal(30), Decimal(910)),
        ("SELL", Decimal(30), Decimal(120)), ("SELL", Decimal(30), Decimal(90)),
        ("SELL", Decimal(30), Decimal(60)), ("SELL", Decimal(30), Decimal(30)),
    ]
    assert [t.pnl for t in result.trades] == [None] * 7 + [Decimal(-120)]  # 120 shares, 1 down
    m = result.metrics
    assert (m["ordered_quantity"], m["filled_quantity"], m["unfilled_quantity"]) == ("1120", "240", "880")
    assert m["fill_ratio"] == pytest.approx(240 / 1120) and m["closed_trades"] == 1
    assert result.equity_curve[-1][1] == Decimal(100_000 - 120)


def test_square_root_impact_by_hand():
    # Returns +1 %, -1 %, +1 %, ... known at the decision: sigma = their sample std. A fill of
    # 25 against a bar of 1,000 pays sigma·sqrt(0.025) on the open.
    closes = [100, 101, 99.99, 100.9899, 99.980001, 100.9798]
    series = [_bar(i, str(c)) for i, c in enumerate(closes)] + [_bar(6, "200")]
    doc = {**ALWAYS_IN, "universe": {"instruments": ["AAA.XNAS"]},
           "entry": {"op": "gt", "left": "close", "right": 100.5},
           "sizing": {"method": "fixed_fraction", "fraction": 0.5}, "risk": {"max_position": 1}}
    costs = Costs(commission_bps=Decimal(0), spread_bps=Decimal(0), slippage_bps=Decimal(0),
                  initial_capital=Decimal(10_000))
    result = run_backtest(parse_strategy(doc), {"AAA.XNAS": series}, costs, "USD")
    first = result.trades[0]
    assert first.at == series[2].start  # decided at t1's close (101)
    assert first.impact_bps == 0  # one return known at t1: the bar's range (none) stands in
    later = next(t for t in result.trades if t.at == series[6].start)  # decided at t5's close
    returns = [closes[i] / closes[i - 1] - 1 for i in range(1, 6)]
    sigma = float(np.std(returns, ddof=1))
    impact = sigma * math.sqrt(float(later.quantity) / 1000)
    assert float(later.impact_bps) == pytest.approx(impact * 10_000, rel=1e-9)
    assert float(later.price) == pytest.approx(200 * (1 + impact), rel=1e-12)


# -- segment figures -------------------------------------------------------------------------

def test_segment_metrics_count_the_segments_trades():
    # 0-3 flat at 100; enter at t1's close, buy 5 at t2's open 100; close 110 at t3, 120 at t4;
    # exit below 100 at t5 (90), sell at t6's open 90. Points 0..7; in-sample [0, 4), out [4, 8).
    doc = {**ALWAYS_IN, "universe": {"instruments": ["AAA.XNAS"]},
           "entry": {"op": "ge", "left": "close", "right": 100},
           "exit": {"op": "lt", "left": "close", "right": 100},
           "sizing": {"method": "fixed_fraction", "fraction": 0.5}}
    prices = ["99", "100", "100", "110", "120", "90", "90", "90"]
    costs = Costs(commission_bps=Decimal(0), spread_bps=Decimal(0), slippage_bps=Decimal(0),
                  initial_capital=Decimal(1000), impact_coefficient=Decimal(0))
    result = run_backtest(parse_strategy(doc), {"AAA.XNAS": [_bar(i, p) for i, p in enumerate(prices)]},
                          costs, "USD", periods_per_year=252)
    assert [(t.side, t.quantity, t.price) for t in result.trades] == [
        ("BUY", Decimal(5), Decimal(100)), ("SELL", Decimal(5), Decimal(90))]
    equity = [float(v) for _, v in result.periods]
    assert equity == [1000, 1000, 1000, 1050, 1100, 950, 950, 950]
    inside = segment_metrics(result, range(0, 4))
    assert inside["turnover"] == pytest.approx(500 / np.mean(equity[:4]))
    assert inside["exposure"] == pytest.approx(2 / 4)  # held at t2 and t3
    assert inside["hit_rate"] is None and inside["trades"] == 1  # the buy; nothing closed yet
    outside = segment_metrics(result, range(4, 8))
    assert outside["periods"] == 4  # measured from the last in-sample point
    assert outside["turnover"] == pytest.approx(450 / np.mean(equity[3:8]))
    assert outside["exposure"] == pytest.approx(2 / 4)  # held at t4 and t5
    assert outside["hit_rate"] == 0.0 and outside["trades"] == 1 and outside["closed_trades"] == 1
    assert outside["total_return"] == pytest.approx(950 / 1050 - 1)
    assert outside["sharpe"] == pytest.approx(performance(equity[3:8], 252)["sharpe"])


def test_improvement_figures_are_the_trials_own(gql, runtime, tenant):
    strategy_id, _ = _strategy(gql, tenant.key, README_DOC)
    job = gql.data(IMPROVE, {"input": {"strategyId": strategy_id, "trials": 1, "asOf": AS_OF,
                                       "backtestDays": 365}}, key=tenant.key)["improveStrategy"]
    done = finished(gql, tenant.key, job["id"])
    assert done["status"] == "SUCCEEDED", done
    r = done["result"]
    base_in = r["baseline"]["in_sample"]
    assert base_in["turnover"] > 0 and base_in["exposure"] > 0 and base_in["hit_rate"] is not None
    for figures in (base_in, r["baseline"]["out_of_sample"],
                    r["trials"][0]["in_sample"], r["trials"][0]["out_of_sample"]):
        assert (figures["turnover"] > 0) == (figures["trades"] > 0), figures
        assert figures["exposure"] > 0 or not figures["trades"]


# -- Sharpe per period across venues ---------------------------------------------------------

def _daily(curve: list[tuple[datetime, Decimal]]) -> list[tuple[datetime, float]]:
    """The last equity point of each UTC day, by hand."""
    last: dict[Any, tuple[datetime, float]] = {}
    for at, value in curve:
        last[at.astimezone(UTC).date()] = (at, float(value))
    return [last[d] for d in sorted(last)]


def test_improvement_sharpe_is_per_day_across_venues(gql, runtime, tenant):
    strategy_id, _ = _strategy(gql, tenant.key, README_DOC)
    job = gql.data(IMPROVE, {"input": {"strategyId": strategy_id, "trials": 1, "asOf": AS_OF,
                                       "backtestDays": 365}}, key=tenant.key)["improveStrategy"]
    done = finished(gql, tenant.key, job["id"])
    assert done["status"] == "SUCCEEDED", done
    r = done["result"]
    # the same backtest the job ran, and its curve reduced to one point a UTC day by hand
    as_of = datetime.fromisoformat(AS_OF)
    result = runtime.strategies.simulate(parse_strategy(README_DOC), as_of - timedelta(days=365), as_of,
                                         base_currency=runtime.strategies.base_currency(tenant.id))
    closes_per_day = len(result.equity_curve) / len(_daily(result.equity_curve))
    assert closes_per_day > 1.5  # two venues closing at different hours
    daily = _daily(result.equity_curve)
    train = int(len(daily) * 0.7)
    ppy = (len(daily) - 1) / ((daily[-1][0] - daily[0][0]).total_seconds() / (365.25 * 86400))
    oos = [v for _, v in daily[train - 1:]]
    returns = np.diff(oos) / np.array(oos[:-1])
    expected = float(np.mean(returns) / np.std(returns, ddof=1) * math.sqrt(ppy))
    got = r["baseline"]["out_of_sample"]
    assert got["sharpe"] == pytest.approx(expected, rel=1e-6)
    assert got["periods"] == len(daily) - train  # one observation a day, not one a close
    assert got["start"] == daily[train][0].isoformat() and got["end"] == daily[-1][0].isoformat()
    assert r["baseline"]["in_sample"]["periods"] == train - 1


# -- the regime in the prompt ----------------------------------------------------------------

def test_improvement_regime_covers_the_in_sample_segment_only(gql, runtime, tenant, recorded):  # noqa: F811
    doc = {**README_DOC, "universe": {"instruments": ["AAPL.XNAS", "MSFT.XNAS"]}}  # the recording's
    strategy_id, _ = _strategy(gql, tenant.key, doc)
    runtime.strategy_ai.synthesis.max_repairs = 0
    replay = recorded(["improve_revision"])
    job = gql.data(IMPROVE, {"input": {"strategyId": strategy_id, "trials": 1, "asOf": AS_OF,
                                       "backtestDays": 365, "trainFraction": 0.6}},
                   key=tenant.key)["improveStrategy"]
    done = finished(gql, tenant.key, job["id"])
    assert done["status"] == "SUCCEEDED", done
    r = done["result"]
    prompt = replay.bodies[0]["messages"][0]["content"]
    in_sample_end = datetime.fromisoformat(r["baseline"]["in_sample"]["end"])
    as_of = datetime.fromisoformat(AS_OF)
    universe = doc["universe"]["instruments"]
    leaked = describe_regime(runtime.market_data, universe, as_of)  # the last 365 days
    assert leaked["summary"] not in prompt and "Over the last 365 days" not in prompt
    days = (in_sample_end - (as_of - timedelta(days=365))).days
    honest = describe_regime(runtime.market_data, universe, in_sample_end, days, closed_by=True)
    assert f"Market regime: {honest['summary']}" in prompt
    regime = r["regime"]
    assert datetime.fromisoformat(regime["as_of"]) == in_sample_end
    assert datetime.fromisoformat(regime["start"]) >= as_of - timedelta(days=365)
    assert regime["summary"] == honest["summary"]
