"""Interpreter indicators, backtest accounting and metrics against hand-computed examples,
walk-forward splitting and the deflated Sharpe ratio."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from gateway.strategies import interpreter as ind
from gateway.strategies.backtest import Costs, in_session, run_backtest
from gateway.strategies.dsl import parse_strategy
from gateway.strategies.errors import BacktestNoData, BacktestParamsInvalid
from gateway.strategies.metrics import deflated_sharpe_ratio, performance, walk_forward_splits
from plugins.sdk import Bar, SessionWindow

X = np.array([2.0, 4.0, 6.0, 5.0, 9.0])
T0 = datetime(2024, 1, 1, tzinfo=UTC)


def close_to(got: np.ndarray, expected: list[float]) -> bool:
    return np.allclose(got, np.array(expected, dtype=float), equal_nan=True, atol=1e-6)


def test_indicators_by_hand():
    # sma 3: (2+4+6)/3 = 4, (4+6+5)/3 = 5, (6+5+9)/3 = 6.6667
    assert close_to(ind.sma(X, 3), [np.nan, np.nan, 4, 5, 20 / 3])
    # ema 3: alpha 0.5, seeded by sma 4 at t=2; 0.5*5 + 0.5*4 = 4.5; 0.5*9 + 0.5*4.5 = 6.75
    assert close_to(ind.ema(X, 3), [np.nan, np.nan, 4, 4.5, 6.75])
    # momentum 2: 6/2-1 = 2, 5/4-1 = 0.25, 9/6-1 = 0.5
    assert close_to(ind.momentum(X, 2), [np.nan, np.nan, 2, 0.25, 0.5])
    # zscore 3 (population std): [2,4,6]: (6-4)/sqrt(8/3) = 1.224745; [4,6,5]: 0;
    # [6,5,9]: mean 20/3, var (4/9 + 25/9 + 49/9)/3 = 26/9 -> (9 - 20/3)/sqrt(26/9) = 1.372813
    assert close_to(ind.zscore(X, 3), [np.nan, np.nan, 1.224745, 0.0, 1.372813])
    # volatility 2: returns 1, 0.5, -1/6, 0.8; sample std of pairs = |a-b|/sqrt(2)
    assert close_to(
        ind.volatility(X, 2),
        [np.nan, np.nan, 0.5 / math.sqrt(2), (2 / 3) / math.sqrt(2), (0.8 + 1 / 6) / math.sqrt(2)],
    )
    # rsi 2 on 10, 11, 10.5, 12, 11: changes +1, -0.5, +1.5, -1
    # t=2: gain (1+0)/2 = 0.5, loss (0+0.5)/2 = 0.25, RS 2 -> 66.667
    # t=3: gain (0.5+1.5)/2 = 1, loss (0.25+0)/2 = 0.125, RS 8 -> 88.889
    # t=4: gain (1+0)/2 = 0.5, loss (0.125+1)/2 = 0.5625, RS 8/9 -> 47.059
    assert close_to(
        ind.rsi(np.array([10, 11, 10.5, 12, 11.0]), 2),
        [np.nan, np.nan, 100 - 100 / 3, 100 - 100 / 9, 100 - 100 / (1 + 8 / 9)],
    )
    assert close_to(ind.rsi(np.array([1, 2, 3, 4.0]), 2), [np.nan, np.nan, 100, 100])  # no loss: 100
    assert close_to(ind.zscore(np.array([5, 5, 5.0]), 3), [np.nan, np.nan, 0])  # flat window: 0


def test_crosses_thresholds_and_news():
    env = {"a": np.array([1, 2, 3, 2, 1.0]), "b": np.full(5, 2.0), "n": np.array([np.nan, 1, 3, 1, 3])}
    strategy = parse_strategy(
        {
            "name": "t",
            "universe": {"instruments": ["A.XNAS"]},
            "signals": [
                {"name": "a", "indicator": "sma", "window": 1},
                {"name": "b", "indicator": "sma", "window": 1},
                {"name": "n", "indicator": "sma", "window": 1},
            ],
            "sizing": {"method": "fixed_fraction", "fraction": 0.1},
            "risk": {"max_position": 1},
            "entry": {"op": "cross_over", "left": "a", "right": 2},
            "exit": {"op": "cross_under", "left": "a", "right": "b"},
        }
    )
    assert ind.evaluate_condition(strategy.entry, env, 5).tolist() == [False, False, True, False, False]
    assert ind.evaluate_condition(strategy.exit, env, 5).tolist() == [False, False, False, False, True]
    nan_cross = ind.evaluate_condition(
        parse_strategy({**strategy.document, "entry": {"op": "cross_over", "left": "n", "right": 2}}).entry,
        env,
        5,
    )
    assert nan_cross.tolist() == [False, False, True, False, True]  # NaN at t=0 never crosses
    ends = [T0 + timedelta(hours=h) for h in (0, 10, 20, 100)]
    items = [(T0 + timedelta(hours=5), 0.5), (T0 + timedelta(hours=11), -2.0)]
    # as of each end: none yet; 0.5 (5 h old); -1 (clipped, 9 h old); nothing younger than 48 h
    assert ind.news_sentiment(ends, items, 48).tolist() == [0.0, 0.5, -1.0, 0.0]


def bar(i: int, open_: str, close: str, symbol: str = "AAA", mic: str = "XNAS", day: int = 1) -> Bar:
    o, c = Decimal(open_), Decimal(close)
    return Bar(symbol, mic, T0 + timedelta(days=i * day), "1d", o, max(o, c), min(o, c), c, Decimal(1000))


THRESHOLD = {
    "name": "above 100",
    "universe": {"instruments": ["AAA.XNAS"]},
    "signals": [{"name": "m", "indicator": "momentum", "window": 1}],
    "entry": {"op": "gt", "left": "close", "right": 100},
    "exit": {"op": "lt", "left": "close", "right": 100},
    "sizing": {"method": "fixed_fraction", "fraction": 0.5},
    "risk": {"max_position": 1},
}
SERIES = [
    bar(0, "100", "100"),
    bar(1, "100", "102"),
    bar(2, "104", "105"),
    bar(3, "106", "99"),
    bar(4, "98", "97"),
]
FREE = Costs(
    commission_bps=Decimal(0),
    spread_bps=Decimal(0),
    slippage_bps=Decimal(0),
    initial_capital=Decimal(1000),
    impact_coefficient=Decimal(0),  # 4 shares of bars of 1,000: within the 10 % participation cap
)


def test_backtest_accounting_without_costs_by_hand():
    # t0 close 100: not above 100, WAIT. t1 close 102: ENTER (fill at t2's open).
    # t2 open 104: target 0.5 * 1000 = 500 -> floor(500/104) = 4 shares, cash 1000 - 416 = 584;
    #    close 105: equity 584 + 4*105 = 1004, HOLD.
    # t3 close 99: equity 584 + 396 = 980, EXIT (fill at t4's open).
    # t4 open 98: sell 4 -> cash 584 + 392 = 976; close 97: equity 976.
    result = run_backtest(parse_strategy(THRESHOLD), {"AAA.XNAS": SERIES}, FREE, "USD", periods_per_year=252)
    assert [v for _, v in result.equity_curve] == [
        Decimal(1000),
        Decimal(1000),
        Decimal(1004),
        Decimal(980),
        Decimal(976),
    ]
    assert [d.action for d in result.decisions] == ["WAIT", "ENTER", "HOLD", "EXIT", "WAIT"]
    assert [(t.side, t.quantity, t.price, t.at, t.pnl) for t in result.trades] == [
        ("BUY", Decimal(4), Decimal(104), SERIES[2].start, None),
        ("SELL", Decimal(4), Decimal(98), SERIES[4].start, Decimal(-24)),
    ]
    assert result.decisions[2].features == {"m": 105 / 102 - 1} and result.decisions[2].in_position

    m = result.metrics
    r = [0.0, 0.004, 980 / 1004 - 1, 976 / 980 - 1]  # period returns
    mean, std = sum(r) / 4, math.sqrt(sum((x - sum(r) / 4) ** 2 for x in r) / 3)
    assert m["total_return"] == pytest.approx(-0.024)
    assert m["annualised_return"] == pytest.approx(0.976 ** (252 / 4) - 1)
    assert m["volatility"] == pytest.approx(std * math.sqrt(252))
    assert m["sharpe"] == pytest.approx(mean / std * math.sqrt(252))
    assert m["sortino"] == pytest.approx(mean / math.sqrt((r[2] ** 2 + r[3] ** 2) / 4) * math.sqrt(252))
    assert m["max_drawdown"] == pytest.approx(1 - 976 / 1004)  # peak 1004, trough 976
    assert m["turnover"] == pytest.approx((416 + 392) / ((1000 + 1000 + 1004 + 980 + 976) / 5))
    assert m["hit_rate"] == 0.0 and m["closed_trades"] == 1
    assert m["exposure"] == pytest.approx(2 / 5)  # held at t2 and t3 closes


def test_backtest_costs_by_hand():
    # half spread 10 bps + slippage 5 bps = 15 bps against each fill; commission 10 bps.
    # buy: 104 * 1.0015 = 104.156, floor(500 / 104.156) = 4, notional 416.624, commission 0.416624
    #      cash 1000 - 416.624 - 0.416624 = 582.959376
    # sell: 98 * 0.9985 = 97.853, notional 391.412, commission 0.391412
    #      cash 582.959376 + 391.412 - 0.391412 = 973.979964; round trip pnl -26.020036
    costs = Costs(
        commission_bps=Decimal(10),
        spread_bps=Decimal(20),
        slippage_bps=Decimal(5),
        initial_capital=Decimal(1000),
        impact_coefficient=Decimal(0),
    )
    result = run_backtest(parse_strategy(THRESHOLD), {"AAA.XNAS": SERIES}, costs, "USD")
    buy, sell = result.trades
    assert (buy.price, buy.notional, buy.commission) == (
        Decimal("104.156"),
        Decimal("416.624"),
        Decimal("0.416624"),
    )
    assert (sell.price, sell.notional, sell.commission) == (
        Decimal("97.853"),
        Decimal("391.412"),
        Decimal("0.391412"),
    )
    assert sell.pnl == Decimal("-26.020036")
    assert [v for _, v in result.equity_curve][2:] == [
        Decimal("1002.959376"),
        Decimal("978.959376"),
        Decimal("973.979964"),
    ]
    assert result.metrics["commissions"] == "0.8080"


class FakeFx:
    def __init__(self) -> None:
        self.asked: list[tuple[str, str]] = []

    def rate(self, base: str, quote: str, at: datetime | None = None) -> Any:
        self.asked.append((base, quote))
        return SimpleNamespace(rate=Decimal("1.1"))


def test_base_currency_conversion():
    # An EUR instrument in a USD account at 1.1 USD per EUR: 500 USD buys floor(500/(104*1.1)) = 4,
    # costing 457.6 USD; the sale brings 4*98*1.1 = 431.2; equity ends at 1000 - 26.4.
    fx = FakeFx()
    result = run_backtest(
        parse_strategy(THRESHOLD), {"AAA.XNAS": SERIES}, FREE, "USD", fx, currencies={"AAA.XNAS": "EUR"}
    )
    assert result.trades[0].notional == Decimal("457.6") and result.trades[0].fx_rate == Decimal("1.1")
    assert result.equity_curve[-1][1] == Decimal("973.6")
    assert set(fx.asked) == {("EUR", "USD")}
    with pytest.raises(BacktestParamsInvalid):
        run_backtest(
            parse_strategy(THRESHOLD), {"AAA.XNAS": SERIES}, FREE, "USD", None, currencies={"AAA.XNAS": "EUR"}
        )


class Sessions:
    """Weekdays 09:00-17:00 UTC."""

    def sessions(self, mic: str, start: datetime, end: datetime) -> list[SessionWindow]:
        out, day = [], start.replace(hour=0, minute=0, second=0, microsecond=0)
        while day < end:
            if day.weekday() < 5:
                out.append(SessionWindow(mic, day + timedelta(hours=9), day + timedelta(hours=17)))
            day += timedelta(days=1)
        return out


def test_sessions_keep_only_tradable_bars_and_fill_in_session():
    hours = [
        Bar(
            "AAA",
            "XNAS",
            datetime(2024, 1, 5, h, tzinfo=UTC),
            "1h",
            Decimal(100),
            Decimal(100),
            Decimal(100),
            Decimal(100),
            Decimal(1),
        )
        for h in (8, 9, 16, 17)
    ]
    timed = in_session(hours, "1h", Sessions())  # type: ignore[arg-type]
    assert [b.start.hour for b in timed.bars] == [9, 16]
    days = [
        Bar(
            "AAA",
            "XNAS",
            datetime(2024, 1, d, tzinfo=UTC),
            "1d",
            Decimal(1),
            Decimal(1),
            Decimal(1),
            Decimal(1),
            Decimal(1),
        )
        for d in (5, 6, 8)
    ]  # Friday, Saturday, Monday
    timed = in_session(days, "1d", Sessions())  # type: ignore[arg-type]
    assert [b.start.day for b in timed.bars] == [5, 8]
    assert timed.opens == [datetime(2024, 1, 5, 9, tzinfo=UTC), datetime(2024, 1, 8, 9, tzinfo=UTC)]
    assert timed.closes == [datetime(2024, 1, 5, 17, tzinfo=UTC), datetime(2024, 1, 8, 17, tzinfo=UTC)]
    result = run_backtest(parse_strategy(THRESHOLD), {"AAA.XNAS": SERIES}, FREE, "USD", sessions=Sessions())  # type: ignore[arg-type]
    for trade in result.trades:
        assert trade.at.weekday() < 5 and trade.at.hour == 9  # at the session's open
    with pytest.raises(BacktestNoData):
        run_backtest(parse_strategy(THRESHOLD), {"AAA.XNAS": [days[1]]}, FREE, "USD", sessions=Sessions())  # type: ignore[arg-type]


def test_stop_loss_short_side_and_max_drawdown():
    # Long with a 5% stop: entered at 104, the close of 98.8 is 5% below: EXIT with stop_loss.
    doc = {
        **THRESHOLD,
        "exit": {"op": "lt", "left": "close", "right": 50},
        "risk": {"max_position": 1, "stop_loss": 0.05},
    }
    series = [
        bar(0, "100", "100"),
        bar(1, "100", "102"),
        bar(2, "104", "104"),
        bar(3, "103", "98.8"),
        bar(4, "98", "97"),
    ]
    result = run_backtest(parse_strategy(doc), {"AAA.XNAS": series}, FREE, "USD")
    assert [(d.action, d.reason) for d in result.decisions][3] == ("EXIT", "stop_loss")
    assert result.trades[-1].reason == "stop_loss"
    # Short: sells 4 at 104, buys back 4 at 98: pnl +24.
    short = run_backtest(parse_strategy({**THRESHOLD, "side": "short"}), {"AAA.XNAS": SERIES}, FREE, "USD")
    assert [(t.side, t.pnl) for t in short.trades] == [("SELL", None), ("BUY", Decimal(24))]
    assert short.equity_curve[-1][1] == Decimal(1024)
    # Max drawdown 1%: equity 1004 -> 980 is 2.4% down: flatten and halt.
    halted = run_backtest(
        parse_strategy(
            {
                **THRESHOLD,
                "exit": {"op": "lt", "left": "close", "right": 50},
                "risk": {"max_position": 1, "max_drawdown": 0.01},
            }
        ),
        {"AAA.XNAS": SERIES},
        FREE,
        "USD",
    )
    assert halted.decisions[3].reason == "max_drawdown" and halted.trades[-1].reason == "max_drawdown"
    assert halted.notes


def test_an_entry_too_small_for_one_lot_leaves_the_book_flat_and_free_to_enter():
    # Capital 100, fraction 0.5: a 50 target. t0 close 100: ENTER; t1 open 100 buys floor(50/100) = 0
    # shares, so the book stays flat (not a phantom HOLD). t1 close 60: ENTER again; t2 open 60: 0
    # shares again. t2 close 40: ENTER; t3 open 40: 1 share (cash 60). t3 close 30: 25% down, past the
    # 10% stop: EXIT stop_loss; t4 open 30: sell 1 (pnl -10).
    doc = {
        **THRESHOLD,
        "entry": {"op": "gt", "left": "close", "right": 10},
        "exit": {"op": "lt", "left": "close", "right": 5},
        "risk": {"max_position": 1, "stop_loss": 0.1},
    }
    series = [
        bar(0, "100", "100"),
        bar(1, "100", "60"),
        bar(2, "60", "40"),
        bar(3, "40", "30"),
        bar(4, "30", "30"),
    ]
    tiny = Costs(
        commission_bps=Decimal(0),
        spread_bps=Decimal(0),
        slippage_bps=Decimal(0),
        initial_capital=Decimal(100),
        impact_coefficient=Decimal(0),
    )
    result = run_backtest(parse_strategy(doc), {"AAA.XNAS": series}, tiny, "USD")
    assert [d.action for d in result.decisions[:4]] == ["ENTER", "ENTER", "ENTER", "EXIT"]
    assert not result.decisions[1].in_position and result.decisions[3].in_position
    assert result.decisions[3].reason == "stop_loss"
    assert [(t.side, t.quantity, t.price, t.at, t.reason, t.pnl) for t in result.trades] == [
        ("BUY", Decimal(1), Decimal(40), series[3].start, "entry", None),
        ("SELL", Decimal(1), Decimal(30), series[4].start, "stop_loss", Decimal(-10)),
    ]
    assert [v for _, v in result.equity_curve] == [Decimal(100)] * 3 + [Decimal(90)] * 2


def test_volatility_target_sizing():
    # returns alternate +1%/-1%: per-bar sample std over 4 returns, annualised by sqrt(252);
    # target 10% -> fraction min(0.1 / vol, max_fraction 0.5, max_position 1).
    closes = [100, 101, 99.99, 100.9899, 99.980001, 120, 120]
    series = [bar(i, str(c), str(c)) for i, c in enumerate(closes)]
    doc = {
        **THRESHOLD,
        "entry": {"op": "gt", "left": "close", "right": 110},
        "sizing": {"method": "volatility_target", "target_volatility": 0.1, "window": 4, "max_fraction": 0.5},
    }
    capital = Costs(
        commission_bps=Decimal(0),
        spread_bps=Decimal(0),
        slippage_bps=Decimal(0),
        initial_capital=Decimal(100_000),
        participation_rate=Decimal(1),  # the whole bar: this test is about the size, not liquidity
        impact_coefficient=Decimal(0),
    )
    result = run_backtest(parse_strategy(doc), {"AAA.XNAS": series}, capital, "USD", periods_per_year=252)
    r = [closes[i] / closes[i - 1] - 1 for i in range(2, 6)]
    vol = float(np.std(r, ddof=1)) * math.sqrt(252)
    fraction = min(0.1 / vol, 0.5)
    expected_qty = math.floor(fraction * 100_000 / 120)
    assert expected_qty > 10
    assert result.trades[0].quantity == Decimal(expected_qty)


def test_performance_edge_cases():
    flat = performance([100, 100, 100], 252)
    assert flat["sharpe"] is None and flat["max_drawdown"] == 0 and flat["total_return"] == 0
    assert performance([100], 252)["periods"] == 0


def test_walk_forward_splits():
    splits = walk_forward_splits(10, train=4, test=2)
    assert [(list(a), list(b)) for a, b in splits] == [
        ([0, 1, 2, 3], [4, 5]),
        ([2, 3, 4, 5], [6, 7]),
        ([4, 5, 6, 7], [8, 9]),
    ]
    assert len(walk_forward_splits(10, 4, 2, step=1)) == 5  # s = 0..4
    assert walk_forward_splits(5, 4, 2) == []
    with pytest.raises(ValueError):
        walk_forward_splits(10, 0, 2)


def test_deflated_sharpe_ratio_known_value():
    # Bailey & López de Prado (2014), the paper's example: annualised SR 2.5 over 5 years of daily
    # returns (T = 1250, 250 days a year), N = 100 trials with variance 0.5 of annualised SRs,
    # skew -3, kurtosis 10. Per day: SR = 2.5/sqrt(250) = 0.1581, V = 0.5/250.
    # SR0 = sqrt(0.002) * (0.4228 * 2.3263 + 0.5772 * 2.6824) = 0.1132 (the paper's 0.1132)
    # DSR = Phi((0.1581 - 0.1132) * sqrt(1249) / sqrt(1 + 3*0.1581 + 9/4*0.1581^2)) = 0.9004
    dsr = deflated_sharpe_ratio(2.5 / math.sqrt(250), 100, 1250, -3, 10, 0.5 / 250)
    assert dsr == pytest.approx(0.9004, abs=5e-4)
    # One trial: the probabilistic Sharpe ratio against zero; more trials deflate it.
    one = deflated_sharpe_ratio(0.1, 1, 250, 0, 3, 0.001)
    assert one == pytest.approx(
        0.5 + 0.5 * math.erf(0.1 * math.sqrt(249) / math.sqrt(1 + 0.005) / math.sqrt(2))
    )
    assert deflated_sharpe_ratio(0.1, 50, 250, 0, 3, 0.001) < one


def test_walk_forward_windows_of_a_run():
    # 30 points growing 1% a period: history is the first 10, then four windows of 5 periods,
    # each measured from the close before it: (1.01)^5 - 1 apiece, no drawdown.
    from gateway.strategies.backtest import walk_forward

    equity = [100 * 1.01**i for i in range(30)]
    times = [T0 + timedelta(days=i) for i in range(30)]
    windows = walk_forward(equity, times, 252)
    assert [w["start"] for w in windows] == [times[i].isoformat() for i in (10, 15, 20, 25)]
    for w in windows:
        assert w["total_return"] == pytest.approx(1.01**5 - 1) and w["max_drawdown"] == 0
    assert walk_forward(equity[:20], times[:20], 252) == []  # too short for windows of 5


def test_news_sentiment_series_drive_a_backtest():
    # Enter when the latest news about the instrument scores above 0.5 (as of the bar's close),
    # leave when it turns below 0. News at t1 (+0.8) and t3 (-0.6): enter at t1's close, fill at
    # t2's open; exit at t3's close, fill at t4's open.
    doc = {
        **THRESHOLD,
        "signals": [{"name": "mood", "indicator": "news_sentiment", "max_age_hours": 240}],
        "entry": {"op": "gt", "left": "mood", "right": 0.5},
        "exit": {"op": "lt", "left": "mood", "right": 0},
    }
    news = {
        "AAA.XNAS": [
            (SERIES[1].start + timedelta(hours=12), 0.8),
            (SERIES[3].start + timedelta(hours=1), -0.6),
        ]
    }
    result = run_backtest(parse_strategy(doc), {"AAA.XNAS": SERIES}, FREE, "USD", news=news)
    assert [d.action for d in result.decisions] == ["WAIT", "ENTER", "HOLD", "EXIT", "WAIT"]
    assert [d.features["mood"] for d in result.decisions] == [0.0, 0.8, 0.8, -0.6, -0.6]
    assert [t.at for t in result.trades] == [SERIES[2].start, SERIES[4].start]


def test_explanations_drift_and_a_strategy_that_never_trades():
    from gateway.strategies.explain import drift_report, explain_run, psi

    rng = np.random.default_rng(0)
    same = rng.normal(0, 1, 2000)
    assert psi(same[:1000], same[1000:]) < 0.05
    # Two bins of equal expected share 0.5/0.5 against actual 0.9/0.1:
    # (0.9-0.5) ln(0.9/0.5) + (0.1-0.5) ln(0.1/0.5) = 0.2351 + 0.6438 = 0.8789
    expected = np.array([0.0] * 50 + [1.0] * 50)
    actual = np.array([0.0] * 90 + [1.0] * 10)
    assert psi(expected, actual, bins=2) == pytest.approx(0.4 * math.log(1.8) + 0.4 * math.log(5), rel=1e-6)

    flat = run_backtest(
        parse_strategy({**THRESHOLD, "entry": {"op": "gt", "left": "close", "right": 1000}}),
        {"AAA.XNAS": SERIES},
        FREE,
        "USD",
    )
    assert flat.trades == [] and {d.action for d in flat.decisions} == {"WAIT"}
    skipped = explain_run(flat.decisions, ["m"])
    assert skipped.summary["status"] == "SKIPPED" and skipped.explanations == []
    shifted = [d.__class__(**{**d.__dict__, "features": {"m": 5.0}}) for d in flat.decisions]
    report = drift_report(flat.decisions[:3], shifted[3:], ["m"])
    assert report["features"]["m"]["status"] == "significant" and report["drifted"] == ["m"]
