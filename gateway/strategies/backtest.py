"""An event-driven backtester over bars from any data source.

Events, in time order: a bar's OPEN (pending orders of that instrument fill at the bar's open
price) and its CLOSE (the position is marked, equity recorded, the strategy decides). A
decision at bar t's close becomes an order that fills at bar t+1's open: the strategy never
trades on a price it used to decide. At one instant, closes come before opens.

Sessions: with a venue directory, a bar is kept only if its interval overlaps one of the
venue's trading windows, its close instant is the earlier of its end and that window's close,
and an order fills at the later of the bar's start and the window's open: orders only fill in
session. Without a directory (pure tests) bars are taken as they come.

Costs (`Costs`): a fill pays half the quoted spread plus slippage on the open price (a buy
above, a sell below) and a commission on the notional in the base currency, at least
`commission_min`. Money is Decimal throughout: cash, fills, commissions, equity.

Liquidity (`Costs.participation_rate`, `Costs.impact_coefficient`), as on the simulated
venues (plugins/builtin/sim_exchange/liquidity.py), whose books are shaped by the same law, so
that walking one costs what a fill pays here, and show at most the same participation rate of
their volume (over a 15-minute window) at an instant: an order takes at most
`participation_rate` (default 10 %) of the volume of the bar it fills in, rounded down to
lots; the rest keeps working at the next bars' opens (partial fills) until it is done, the
decision changes (an entry's remainder is cancelled by an exit) or the run ends, and what
never filled is reported (`unfilled_quantity`, `fill_ratio`). Each fill also pays square-root
market impact on its price, `plugins.sdk.square_root_impact`: Y·sigma·sqrt(q / V), with Y
`impact_coefficient` (default 1), q the fill, V the bar's volume and sigma the instrument's
per-bar volatility as known at the decision (the last 20 close returns; fewer early on; the
decision bar's range before that). A round trip's pnl is booked on the fill that closes the position.

Base currency: the account is kept in the tenant's base currency; a fill or a mark in another
currency is converted at the FX rate of that instant (`fx.rate(currency, base, at).rate`,
cached per currency and UTC day: a daily fixing is the "keep it simple but real" choice).

Sizing: `fixed_fraction` targets fraction·equity; `volatility_target` targets
target_volatility / (per-bar volatility of the last `window` close returns · √P), capped at
`max_fraction`; both capped at the risk limit `max_position`, rounded down to the instrument's
lot (an entry worth less than one lot fills nothing and leaves the book flat, free to enter on a
later signal). Risk: `stop_loss` exits when the close moves that fraction against the entry price;
`max_drawdown` flattens every position and halts trading for the rest of the run.

Without an `exit` rule a position closes when the entry condition stops holding.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import ROUND_DOWN, Decimal, InvalidOperation
from typing import Any, Protocol

import numpy as np

from gateway.strategies import interpreter
from gateway.strategies.dsl import Strategy
from gateway.strategies.errors import BacktestNoData, BacktestParamsInvalid
from gateway.strategies.metrics import deflated_sharpe_ratio, performance, walk_forward_splits
from plugins.sdk import (
    DEFAULT_IMPACT_COEFFICIENT,
    DEFAULT_PARTICIPATION_RATE,
    Bar,
    VenueDirectory,
    square_root_impact,
)

INTERVAL_SPANS: Mapping[str, timedelta] = {
    "1m": timedelta(minutes=1),
    "5m": timedelta(minutes=5),
    "15m": timedelta(minutes=15),
    "1h": timedelta(hours=1),
    "1d": timedelta(days=1),
}
BPS = Decimal(10_000)
MONEY = Decimal("0.0001")
MAX_WALL_CLOCK_BARS = 400_000  # per instrument: about 9 months of minutes, 45 years of hours
Progress = Callable[[float, str], None]


class FxConverter(Protocol):
    def rate(self, base: str, quote: str, at: datetime | None = None) -> Any: ...  # .rate: Decimal


def _decimal(value: Any, name: str, low: Decimal, high: Decimal) -> Decimal:
    try:
        number = Decimal(str(value))
    except (InvalidOperation, ValueError):
        raise BacktestParamsInvalid(f"{name} must be a number") from None
    if not number.is_finite() or not low <= number <= high:
        raise BacktestParamsInvalid(f"{name} must be between {low} and {high}")
    return number


@dataclass(frozen=True)
class Costs:
    commission_bps: Decimal = Decimal("1")
    commission_min: Decimal = Decimal("0")  # per fill, in the base currency
    spread_bps: Decimal = Decimal("2")  # the full quoted spread; each fill pays half
    slippage_bps: Decimal = Decimal("1")
    initial_capital: Decimal = Decimal("1000000")  # in the base currency
    participation_rate: Decimal = DEFAULT_PARTICIPATION_RATE  # of a bar's volume, per order and bar
    impact_coefficient: Decimal = DEFAULT_IMPACT_COEFFICIENT  # Y of the square-root impact Y·sigma·sqrt(q/V)

    @classmethod
    def from_params(cls, data: Mapping[str, Any] | None) -> Costs:
        """Validated costs from JSON-like parameters (BACKTEST_PARAMS_INVALID)."""
        data = dict(data or {})
        unknown = set(data) - set(cls.__dataclass_fields__)
        if unknown:
            raise BacktestParamsInvalid(f"unknown cost parameters: {sorted(unknown)}")
        default = cls()
        return cls(
            commission_bps=_decimal(
                data.get("commission_bps", default.commission_bps),
                "commission_bps",
                Decimal(0),
                Decimal(1000),
            ),
            commission_min=_decimal(
                data.get("commission_min", default.commission_min),
                "commission_min",
                Decimal(0),
                Decimal(10_000),
            ),
            spread_bps=_decimal(
                data.get("spread_bps", default.spread_bps), "spread_bps", Decimal(0), Decimal(1000)
            ),
            slippage_bps=_decimal(
                data.get("slippage_bps", default.slippage_bps), "slippage_bps", Decimal(0), Decimal(1000)
            ),
            initial_capital=_decimal(
                data.get("initial_capital", default.initial_capital),
                "initial_capital",
                Decimal(1),
                Decimal(10) ** 12,
            ),
            participation_rate=_decimal(
                data.get("participation_rate", default.participation_rate),
                "participation_rate",
                Decimal("0.0001"),
                Decimal(1),
            ),
            impact_coefficient=_decimal(
                data.get("impact_coefficient", default.impact_coefficient),
                "impact_coefficient",
                Decimal(0),
                Decimal(10),
            ),
        )

    def to_params(self) -> dict[str, str]:
        return {k: str(v) for k, v in asdict(self).items()}


@dataclass(frozen=True)
class Trade:
    instrument: str
    side: str  # BUY | SELL
    quantity: Decimal  # positive
    price: Decimal  # fill price, instrument currency
    fx_rate: Decimal  # base currency per one unit of the instrument's
    notional: Decimal  # base currency
    commission: Decimal  # base currency
    at: datetime
    reason: str  # entry | exit | stop_loss | max_drawdown
    pnl: Decimal | None = None  # realised, base currency, after all costs of the round trip
    ordered: Decimal | None = None  # what the order still wanted before this fill
    impact_bps: Decimal = Decimal(0)  # market impact paid on the price
    participation: Decimal | None = None  # this fill / the bar's volume

    def to_json(self) -> dict[str, Any]:
        return {
            "instrument": self.instrument,
            "side": self.side,
            "quantity": str(self.quantity),
            "price": str(self.price.quantize(MONEY)),
            "fx_rate": str(self.fx_rate),
            "notional": str(self.notional.quantize(MONEY)),
            "commission": str(self.commission.quantize(MONEY)),
            "at": self.at.isoformat(),
            "reason": self.reason,
            "pnl": None if self.pnl is None else str(self.pnl.quantize(MONEY)),
            "ordered": None if self.ordered is None else str(self.ordered),
            "impact_bps": str(self.impact_bps.quantize(MONEY)),
            "participation": None if self.participation is None else str(self.participation.quantize(MONEY)),
        }


@dataclass(frozen=True)
class Decision:
    instrument: str
    at: datetime
    action: str  # ENTER | EXIT | HOLD | WAIT
    features: dict[str, float | None]
    in_position: bool  # before the decision
    target: int  # 1: in the market after the decision, 0: flat
    reason: str
    close: float

    def to_json(self) -> dict[str, Any]:
        return {
            "instrument": self.instrument,
            "at": self.at.isoformat(),
            "action": self.action,
            "features": self.features,
            "in_position": self.in_position,
            "target": self.target,
            "reason": self.reason,
            "close": self.close,
        }


@dataclass
class BacktestResult:
    metrics: dict[str, Any]
    equity_curve: list[tuple[datetime, Decimal]]
    trades: list[Trade]
    decisions: list[Decision]
    base_currency: str
    instruments: list[str]
    bars: int = 0
    notes: list[str] = field(default_factory=list)
    # one point per bar interval (UTC buckets, see `periodic`): what every figure is computed on
    periods: list[tuple[datetime, Decimal]] = field(default_factory=list)
    periods_invested: list[bool] = field(default_factory=list)
    periods_per_year: float = 252.0

    def curve_json(self, limit: int = 2000) -> list[list[str]]:
        """At most `limit` points (evenly spaced, the last kept) for storage and display."""
        points = self.equity_curve
        if len(points) > limit:
            step = len(points) / limit
            picked = [points[int(i * step)] for i in range(limit - 1)] + [points[-1]]
            points = picked
        return [[at.isoformat(), str(value.quantize(MONEY))] for at, value in points]


# -- sessions -------------------------------------------------------------------------------
@dataclass(frozen=True)
class Timed:
    opens: list[datetime]  # when an order at this bar fills
    closes: list[datetime]  # when the strategy decides at this bar
    bars: list[Bar]


def in_session(bars: Sequence[Bar], interval: str, venues: VenueDirectory | None) -> Timed:
    span = INTERVAL_SPANS[interval]
    if not bars:
        return Timed([], [], [])
    if venues is None:
        return Timed([b.start for b in bars], [b.start + span for b in bars], list(bars))
    mic = bars[0].mic
    windows = list(
        venues.sessions(mic, bars[0].start - timedelta(days=1), bars[-1].start + span + timedelta(days=1))
    )
    starts = [w.opens_at for w in windows]
    kept, opens, closes = [], [], []
    j = 0
    for bar in bars:
        end = bar.start + span
        while j < len(windows) and windows[j].closes_at <= bar.start:
            j += 1
        k, overlapping = j, []
        while k < len(windows) and starts[k] < end:
            overlapping.append(windows[k])
            k += 1
        if not overlapping:
            continue  # outside every session: not a tradable bar
        kept.append(bar)
        opens.append(max(bar.start, overlapping[0].opens_at))
        closes.append(min(end, overlapping[-1].closes_at))
    return Timed(opens, closes, kept)


# -- loading --------------------------------------------------------------------------------
def load_bars(
    market_data: Any,
    keys: Sequence[str],
    start: datetime,
    end: datetime,
    interval: str,
    progress: Progress | None = None,
) -> dict[str, list[Bar]]:
    """Bars over [start, end) per instrument, asked in chunks that each fit the source's cap."""
    span = INTERVAL_SPANS[interval]
    if (end - start) / span > MAX_WALL_CLOCK_BARS:
        raise BacktestParamsInvalid(
            f"the range holds more than {MAX_WALL_CLOCK_BARS} {interval} intervals; "
            "shorten it or use a longer interval"
        )
    chunk = span * market_data.max_bars
    out: dict[str, list[Bar]] = {}
    for i, key in enumerate(keys):
        bars: list[Bar] = []
        a = start
        while a < end:
            b = min(end, a + chunk)
            bars.extend(market_data.bars(key, a, b, interval))
            a = b
        out[key] = bars
        if progress is not None:
            progress(0.05 + 0.25 * (i + 1) / len(keys), f"read {len(bars)} bars of {key}")
    return out


# -- the run ----------------------------------------------------------------------------------
class _FxCache:
    def __init__(self, fx: FxConverter | None, base: str) -> None:
        self.fx, self.base = fx, base
        self.cache: dict[tuple[str, date], Decimal] = {}

    def rate(self, currency: str, at: datetime) -> Decimal:
        if currency == self.base:
            return Decimal(1)
        key = (currency, at.astimezone(UTC).date())
        found = self.cache.get(key)
        if found is None:
            if self.fx is None:
                raise BacktestParamsInvalid(f"no FX rates to convert {currency} to {self.base}")
            noon = datetime.combine(key[1], datetime.min.time(), UTC) + timedelta(hours=12)
            found = self.cache[key] = Decimal(self.fx.rate(currency, self.base, min(noon, at)).rate)
        return found


@dataclass
class _Order:
    enter: bool
    fraction: float
    reason: str
    remaining: Decimal | None = None  # sized at its first open; then what is left to fill


@dataclass
class _Book:
    key: str
    currency: str
    lot: Decimal
    timed: Timed
    evaluation: interpreter.Evaluation
    vol: np.ndarray
    quantity: Decimal = Decimal(0)
    entry_price: Decimal = Decimal(0)
    entry_flow: Decimal = Decimal(0)  # base-currency cash flows of the opening fills
    last_close: Decimal | None = None
    fx: Decimal = Decimal(1)
    desired: bool = False
    impact_vol: np.ndarray | None = None  # per-bar volatility known at each bar's close
    order: _Order | None = None  # the working order: it fills at the next opens
    exit_flow: Decimal = Decimal(0)  # base-currency cash flows of the closing fills so far


IMPACT_WINDOW = 20


def impact_volatility(bars: Sequence[Bar]) -> np.ndarray:
    """Per-bar volatility as known at each bar's close, for the impact of the fill after it: the
    sample std of the last IMPACT_WINDOW close returns (fewer while they accumulate, at least
    two), and before that the bar's own range (Parkinson: ln(high/low) / (2·sqrt(ln 2)))."""
    closes = np.array([float(b.close) for b in bars], dtype=float)
    out = np.empty(len(bars))
    r = np.zeros(len(bars))
    if len(bars) > 1:
        with np.errstate(divide="ignore", invalid="ignore"):
            r[1:] = closes[1:] / closes[:-1] - 1.0
    for t, b in enumerate(bars[: IMPACT_WINDOW]):  # while the window fills up
        window = r[1 : t + 1]
        if len(window) >= 2:
            out[t] = float(np.std(window, ddof=1))
        else:
            high, low = float(b.high), float(b.low)
            out[t] = math.log(high / low) / (2 * math.sqrt(math.log(2))) if low > 0 and high > low else 0.0
    if len(bars) > IMPACT_WINDOW:  # full windows, vectorised: r[t-19..t] for t >= 20
        full = np.lib.stride_tricks.sliding_window_view(r[1:], IMPACT_WINDOW)
        out[IMPACT_WINDOW:] = full.std(axis=1, ddof=1)
    return np.nan_to_num(out, nan=0.0, posinf=0.0)


def periodic(
    curve: Sequence[tuple[datetime, Decimal]], invested: Sequence[bool], span: timedelta
) -> tuple[list[tuple[datetime, Decimal]], list[bool]]:
    """The last point of each interval-long bucket (UTC): venues closing at different hours
    would otherwise count as separate periods and inflate annualisation."""
    out: list[tuple[datetime, Decimal]] = []
    held: list[bool] = []
    last_bucket = None
    seconds = span.total_seconds()
    for (at, value), flag in zip(curve, invested, strict=True):
        bucket = int(at.timestamp() // seconds)
        if bucket == last_bucket:
            out[-1], held[-1] = (at, value), held[-1] or flag
        else:
            out.append((at, value))
            held.append(flag)
        last_bucket = bucket
    return out, held


def probabilistic_sharpe(metrics: Mapping[str, Any], n: int) -> float | None:
    """P(true Sharpe > 0) given the sample's skew and kurtosis: the deflated Sharpe ratio of a
    single trial (synthesis and improvement runs deflate by their own trial counts)."""
    sr, skew, kurt = metrics.get("sharpe_per_period"), metrics.get("skew"), metrics.get("kurtosis")
    if sr is None or skew is None or kurt is None or n < 2:
        return None
    try:
        return deflated_sharpe_ratio(sr, 1, n, skew, kurt, 0.0)
    except ValueError:
        return None


def walk_forward(equity: Sequence[float], times: Sequence[datetime], ppy: float) -> list[dict[str, Any]]:
    """Out-of-sample windows: the first third of the run is history only (a rule strategy fits
    nothing, but its indicators warm up), then four consecutive test windows, each with its own
    figures, to show whether the result holds up over time rather than in one lucky stretch."""
    n = len(equity)
    test = n // 6
    if test < 5:
        return []
    out = []
    for _, window in walk_forward_splits(n, train=n - 4 * test, test=test):
        points = equity[window.start - 1 : window.stop]  # from the close before the window
        figures = performance(points, ppy)
        out.append(
            {
                "start": times[window.start].isoformat(),
                "end": times[window.stop - 1].isoformat(),
                "total_return": figures["total_return"],
                "sharpe": figures["sharpe"],
                "max_drawdown": figures["max_drawdown"],
            }
        )
    return out


def segment_metrics(result: BacktestResult, window: range) -> dict[str, Any]:
    """The figures of the periods at `window` (indices into `result.periods`), as the whole run
    computes its own: returns measured from the point before the window when there is one (so
    each of the window's periods has its return), and the turnover, hit rate and exposure of
    the fills, closed round trips and positions inside it."""
    points = result.periods
    if not points or window.start < 0 or window.stop > len(points) or len(window) < 1:
        raise ValueError("the window must lie within the run's periods")
    first = max(window.start - 1, 0)
    after = points[window.start - 1][0] if window.start > 0 else None
    until = points[window.stop - 1][0]
    inside = [tr for tr in result.trades if (after is None or tr.at > after) and tr.at <= until]
    pnls = [float(tr.pnl) for tr in inside if tr.pnl is not None]
    out = performance(
        [float(v) for _, v in points[first : window.stop]],
        result.periods_per_year,
        traded_notional=float(sum((tr.notional for tr in inside), Decimal(0))),
        trade_pnls=pnls,
        invested=result.periods_invested[window.start : window.stop],
    )
    out.update(
        start=points[window.start][0].isoformat(),
        end=until.isoformat(),
        trades=len(inside),
        closed_trades=len(pnls),
    )
    return out


def estimate_periods_per_year(times: Sequence[datetime]) -> float:
    if len(times) < 2:
        return 252.0
    years = (times[-1] - times[0]).total_seconds() / (365.25 * 86400)
    return (len(times) - 1) / years if years > 0 else 252.0


def run_backtest(
    strategy: Strategy,
    bars: Mapping[str, Sequence[Bar]],
    costs: Costs,
    base_currency: str,
    fx: FxConverter | None = None,
    *,
    currencies: Mapping[str, str] | None = None,
    lots: Mapping[str, Decimal] | None = None,
    news: Mapping[str, interpreter.NewsItems] | None = None,
    sessions: VenueDirectory | None = None,
    periods_per_year: float | None = None,
    progress: Progress | None = None,
) -> BacktestResult:
    """Simulate `strategy` over `bars` ({instrument key: bars, oldest first}). `currencies`
    names each instrument's currency (default: the base currency)."""
    rates = _FxCache(fx, base_currency)
    books: list[_Book] = []
    events: list[tuple[datetime, int, int, int]] = []  # (instant, 0 close | 1 open, book, bar)
    for key, series in bars.items():
        timed = in_session(sorted(series, key=lambda b: b.start), strategy.interval, sessions)
        if not timed.bars:
            continue
        evaluation = interpreter.evaluate(strategy, timed.bars, timed.closes, (news or {}).get(key))
        closes = np.array([float(b.close) for b in timed.bars])
        vol_window = strategy.sizing.window if strategy.sizing.method == "volatility_target" else 2
        book = _Book(
            key,
            (currencies or {}).get(key, base_currency),
            Decimal((lots or {}).get(key, 1)),
            timed,
            evaluation,
            interpreter.volatility(closes, vol_window),
            impact_vol=impact_volatility(timed.bars),
        )
        index = len(books)
        books.append(book)
        for t in range(len(timed.bars)):
            events.append((timed.opens[t], 1, index, t))
            events.append((timed.closes[t], 0, index, t))
    if not books:
        raise BacktestNoData("no bars inside the venues' sessions for this range")
    events.sort()
    closes_at = sorted({e[0] for e in events if e[1] == 0})
    ppy = periods_per_year or estimate_periods_per_year(
        [
            at
            for at, _ in periodic(
                [(at, Decimal(0)) for at in closes_at],
                [False] * len(closes_at),
                INTERVAL_SPANS[strategy.interval],
            )[0]
        ]
    )

    half_cost = (costs.spread_bps / 2 + costs.slippage_bps) / BPS
    cash = costs.initial_capital
    peak = cash
    halted = False
    curve: list[tuple[datetime, Decimal]] = []
    invested: list[bool] = []
    trades: list[Trade] = []
    decisions: list[Decision] = []
    traded = Decimal(0)
    ordered = filled = impact_paid = Decimal(0)  # quantities (summed over instruments), money
    partial_fills = 0
    long = strategy.side == "long"
    risk, sizing = strategy.risk, strategy.sizing
    step = max(1, len(events) // 20)

    def equity() -> Decimal:
        return cash + sum(
            (b.quantity * b.last_close * b.fx for b in books if b.quantity and b.last_close is not None),
            Decimal(0),
        )

    for n, (at, kind, index, t) in enumerate(events):
        if progress is not None and n % step == 0 and n:
            progress(0.3 + 0.5 * n / len(events), f"simulated {n} of {len(events)} events")
        book = books[index]
        bar = book.timed.bars[t]
        if kind == 1:  # the open: fill what is working, within the bar's liquidity
            order = book.order
            if order is None:
                continue
            rate = rates.rate(book.currency, at)
            if order.enter:
                buy = long
                if order.remaining is None:
                    if book.quantity != 0:
                        book.order = None
                        continue
                    unit = bar.open * (1 + half_cost if buy else 1 - half_cost) * rate
                    target = Decimal(str(order.fraction)) * equity()
                    lots_count = (
                        (target / unit / book.lot).to_integral_value(ROUND_DOWN) if unit > 0 else Decimal(0)
                    )
                    order.remaining = lots_count * book.lot
                    if order.remaining <= 0:
                        # the entry buys nothing (less than one lot): stay flat and free to enter
                        # again, rather than "holding" a position that does not exist
                        book.order, book.desired = None, False
                        continue
                    ordered += order.remaining
            else:
                if order.remaining is None:
                    order.remaining = abs(book.quantity)
                    ordered += order.remaining
                if order.remaining <= 0 or book.quantity == 0:
                    book.order = None
                    continue
                buy = book.quantity < 0
            cap = (costs.participation_rate * bar.volume / book.lot).to_integral_value(ROUND_DOWN) * book.lot
            quantity = min(order.remaining, max(cap, Decimal(0)))
            if quantity <= 0:
                continue  # no volume in this bar: the order waits for the next
            wanted = order.remaining
            if quantity < wanted:
                partial_fills += 1
            impact = (
                square_root_impact(quantity, bar.volume,
                                   Decimal(str(float(book.impact_vol[t - 1]) if t > 0 else 0.0)),
                                   costs.impact_coefficient)
                if book.impact_vol is not None
                else Decimal(0)
            )
            slip = half_cost + impact
            price = bar.open * (1 + slip) if buy else bar.open * (1 - slip)
            signed = quantity if buy else -quantity
            notional = quantity * price * rate
            commission = max(notional * costs.commission_bps / BPS, costs.commission_min)
            flow = -signed * price * rate - commission
            cash += flow
            traded += notional
            filled += quantity
            impact_paid += quantity * bar.open * impact * rate
            order.remaining -= quantity
            pnl = None
            if order.enter:
                size = abs(book.quantity)  # the entry price is the fills' average
                book.entry_price = (book.entry_price * size + price * quantity) / (size + quantity)
                book.entry_flow += flow
            else:
                book.exit_flow += flow
            book.quantity += signed
            if not order.enter and book.quantity == 0:
                pnl = book.entry_flow + book.exit_flow
                book.entry_flow = book.exit_flow = Decimal(0)
            if order.remaining <= 0:
                book.order = None
            book.last_close = book.last_close if book.last_close is not None else bar.open
            book.fx = rate
            trades.append(
                Trade(
                    book.key,
                    "BUY" if buy else "SELL",
                    quantity,
                    price,
                    rate,
                    notional,
                    commission,
                    at,
                    order.reason,
                    pnl,
                    ordered=wanted,
                    impact_bps=impact * BPS,
                    participation=quantity / bar.volume if bar.volume > 0 else None,
                )
            )
            continue

        # the close: mark, record, decide
        book.last_close = bar.close
        book.fx = rates.rate(book.currency, at)
        value = equity()
        if curve and curve[-1][0] == at:
            curve[-1] = (at, value)
            invested[-1] = any(b.quantity != 0 for b in books)
        else:
            curve.append((at, value))
            invested.append(any(b.quantity != 0 for b in books))
        peak = max(peak, value)
        if (
            risk.max_drawdown is not None
            and not halted
            and value < peak * (1 - Decimal(str(risk.max_drawdown)))
        ):
            halted = True

        ev = book.evaluation
        held = book.desired
        action, reason, fraction = ("HOLD", "hold", 0.0) if held else ("WAIT", "no entry signal", 0.0)
        if held:
            stopped = False
            if risk.stop_loss is not None and book.quantity != 0:
                move = (bar.close - book.entry_price) / book.entry_price
                stopped = (
                    move <= -Decimal(str(risk.stop_loss)) if long else move >= Decimal(str(risk.stop_loss))
                )
            exit_now = bool(ev.exit[t]) if ev.exit is not None else not bool(ev.entry[t])
            if halted:
                action, reason = "EXIT", "max_drawdown"
            elif stopped:
                action, reason = "EXIT", "stop_loss"
            elif exit_now:
                action, reason = "EXIT", "exit" if ev.exit is not None else "entry no longer holds"
        elif halted:
            reason = "max_drawdown: trading halted"
        elif book.order is not None and not book.order.enter:
            reason = "the last exit is still filling"
        elif bool(ev.entry[t]):
            if sizing.method == "fixed_fraction":
                fraction = min(sizing.fraction, risk.max_position)
            else:
                vol = float(book.vol[t]) * math.sqrt(ppy)
                fraction = (
                    min(sizing.target_volatility / vol, sizing.max_fraction, risk.max_position)
                    if vol > 0 and math.isfinite(vol)
                    else 0.0
                )
            if fraction > 0:
                action, reason = "ENTER", "entry"
            else:
                reason = "entry signal, but no volatility estimate to size it"
        if action == "ENTER":
            book.desired, book.order = True, _Order(True, fraction, "entry")
        elif action == "EXIT":
            # an entry's unfilled remainder is cancelled: the exit takes over
            book.desired = False
            book.order = _Order(False, 0.0, reason if reason in ("stop_loss", "max_drawdown") else "exit")
        decisions.append(
            Decision(
                book.key, at, action, ev.feature_row(t), held, int(book.desired), reason, float(bar.close)
            )
        )

    pnls = [float(tr.pnl) for tr in trades if tr.pnl is not None]
    sampled, held = periodic(curve, invested, INTERVAL_SPANS[strategy.interval])
    metrics = performance(
        [float(v) for _, v in sampled], ppy, traded_notional=float(traded), trade_pnls=pnls, invested=held
    )
    metrics.update(
        trades=len(trades),
        closed_trades=len(pnls),
        final_equity=str(curve[-1][1].quantize(MONEY)),
        initial_capital=str(costs.initial_capital),
        base_currency=base_currency,
        traded_notional=str(traded.quantize(MONEY)),
        commissions=str(sum((tr.commission for tr in trades), Decimal(0)).quantize(MONEY)),
        probabilistic_sharpe=probabilistic_sharpe(metrics, len(sampled) - 1),
        walk_forward=walk_forward([float(v) for _, v in sampled], [at for at, _ in sampled], ppy),
        ordered_quantity=str(ordered),
        filled_quantity=str(filled),
        unfilled_quantity=str(ordered - filled),
        fill_ratio=float(filled / ordered) if ordered > 0 else None,
        partial_fills=partial_fills,
        impact_cost=str(impact_paid.quantize(MONEY)),
        participation_rate=str(costs.participation_rate),
    )
    notes = [] if not halted else ["max_drawdown reached: positions flattened and trading halted"]
    if ordered > filled:
        notes.append(
            f"liquidity: {ordered - filled} of {ordered} ordered units did not fill within "
            f"{costs.participation_rate:%} of the bars' volume"
        )
    return BacktestResult(
        metrics,
        curve,
        trades,
        decisions,
        base_currency,
        [b.key for b in books],
        bars=sum(len(b.timed.bars) for b in books),
        notes=notes,
        periods=sampled,
        periods_invested=held,
        periods_per_year=ppy,
    )
