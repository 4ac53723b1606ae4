"""How much a simulated venue shows, what taking it costs, and how the price recovers.

One law for all of it, the square-root law of market impact shared with the backtester
(`plugins.sdk.square_root_impact`): a fill of q against a venue trading V a day, on an
instrument of daily volatility sigma, pays on average I(q) = Y·sigma·sqrt(q / V) beyond the
touch (Y the impact coefficient, 1 by default), and leaves the venue's mid moved by I(q).

- Profile (`estimate`): V is the venue's mean daily volume over the last 20 trading days, sigma
  the sample standard deviation of those days' log close-to-close returns, both from the
  source's daily bars before the day (the backtester measures sigma the same way, over its
  bars). A source without that history gets no profile: the venue falls back to the flat
  ladder (`connector.ladder`) and moves no price.
- Depth (`law_ladder`): for the average over a walk to be I(q), the price after taking q must
  lie (3/2)·I(q) beyond the touch, so the quantity within a fraction x of the mid beyond the
  touch is Q(x) = V·(2x / (3·Y·sigma))^2. The touch keeps the source's quoted size s; the other
  levels lie `spacing` ticks apart, each holding what s + Q adds up to its price, until the side
  holds the participation cap; `spacing` is the smallest whole number of ticks that reaches the
  cap within the `depth` levels. Sizes are cut to whole lots. A walk beyond the touch pays I of
  what it takes beyond it, a little above on a coarse grid (the levels sit at their outer edge).
- Participation cap (`Profile.cap`): one side of the book shows at most `participation_rate`
  (10 %, the backtester's default) of the venue's volume over `participation_window` (15
  minutes) at the day's average pace: V · rate · window / trading minutes a day. An order can
  take no more at one instant; a market or IOC order's rest is cancelled PARTICIPATION_LIMIT, a
  resting order's rest waits for the next instants' liquidity.
- Impact and recovery (`Impact`): the venue keeps, per (MIC, symbol), the mid's displacement
  as a fraction of the price. Each client fill against the synthetic book adds its signed
  quantity to the quantity the current displacement stands for (V·(d / (Y·sigma))^2) and the
  displacement becomes I of that total, signed: two halves at one instant move the price as
  the whole would. The displacement decays toward the source's price with a half-life (5
  minutes of the venue clock by default) and the next ladder is centred on the displaced
  quote, rounded to whole ticks. The displacement is the venue's own: other venues of the
  instrument, and the market data quote, keep the source's price.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal
from itertools import pairwise

from plugins.sdk import (
    DEFAULT_IMPACT_COEFFICIENT,
    DEFAULT_PARTICIPATION_RATE,
    Bar,
    Quote,
    Side,
    square_root_impact,
)

ZERO = Decimal(0)
HISTORY_DAYS = 20  # trading days of bars a profile is measured over
DEFAULT_HALF_LIFE = timedelta(minutes=5)
DEFAULT_PARTICIPATION_WINDOW = timedelta(minutes=15)
DEFAULT_LAW_DEPTH = 12  # levels a side when the law shapes the book
MIN_VOLATILITY = Decimal("0.001")  # a flat history still has some price risk


@dataclass(frozen=True)
class LiquiditySettings:
    impact_coefficient: Decimal = DEFAULT_IMPACT_COEFFICIENT
    participation_rate: Decimal = DEFAULT_PARTICIPATION_RATE
    participation_window: timedelta = DEFAULT_PARTICIPATION_WINDOW
    half_life: timedelta = DEFAULT_HALF_LIFE

    def __post_init__(self) -> None:
        if self.impact_coefficient <= 0 or not 0 < self.participation_rate <= 1:
            raise ValueError("impact_coefficient must be above 0 and participation_rate in (0, 1]")
        if self.participation_window <= timedelta(0) or self.half_life <= timedelta(0):
            raise ValueError("participation_window and half_life must be positive")

    def describe_cap(self) -> str:
        minutes = self.participation_window.total_seconds() / 60
        return f"{self.participation_rate * 100:f}".rstrip("0").rstrip(".") + \
            f"% of {minutes:g} minutes' volume"


@dataclass(frozen=True)
class Profile:
    """What the law needs of one instrument on one venue (module docstring)."""

    volume: Decimal  # mean daily volume
    volatility: Decimal  # daily, of log returns
    minutes: Decimal  # trading minutes in a day

    def impact(self, quantity: Decimal, coefficient: Decimal) -> Decimal:
        return square_root_impact(quantity, self.volume, self.volatility, coefficient)

    def depth_within(self, fraction: Decimal, coefficient: Decimal) -> Decimal:
        """Q(x): what the book holds within `fraction` of the mid beyond the touch."""
        if fraction <= 0:
            return ZERO
        return self.volume * (2 * fraction / (3 * coefficient * self.volatility)) ** 2

    def reach(self, quantity: Decimal, coefficient: Decimal) -> Decimal:
        """The fraction beyond the touch where the book's cumulative depth is `quantity`."""
        return Decimal(3) / 2 * self.impact(quantity, coefficient)

    def cap(self, settings: LiquiditySettings) -> Decimal:
        window = Decimal(str(settings.participation_window.total_seconds() / 60))
        return self.volume * settings.participation_rate * min(window / self.minutes, Decimal(1))

    def equivalent_quantity(self, displacement: Decimal, coefficient: Decimal) -> Decimal:
        """The signed quantity whose impact is `displacement` (the inverse of `impact`)."""
        if displacement == 0:
            return ZERO
        q = self.volume * (abs(displacement) / (coefficient * self.volatility)) ** 2
        return q if displacement > 0 else -q


def estimate(bars: Sequence[Bar], minutes: Decimal) -> Profile | None:
    """A profile from daily bars, oldest first (the last HISTORY_DAYS + 1 are used), or None
    when there are fewer than three or no volume."""
    recent = [b for b in bars if b.close > 0][-(HISTORY_DAYS + 1):]
    if len(recent) < 3 or minutes <= 0:
        return None
    volumes = [b.volume for b in recent[1:]]
    volume = sum(volumes, ZERO) / len(volumes)
    if volume <= 0:
        return None
    returns = [math.log(float(b.close / a.close)) for a, b in pairwise(recent)]
    mean = sum(returns) / len(returns)
    variance = sum((r - mean) ** 2 for r in returns) / (len(returns) - 1)
    volatility = max(Decimal(str(math.sqrt(variance))), MIN_VOLATILITY)
    return Profile(volume, volatility, minutes)


@dataclass(frozen=True)
class Impact:
    """The mid's displacement on one venue, as a fraction of the price, at an instant."""

    at: datetime
    displacement: Decimal

    def now(self, at: datetime, half_life: timedelta) -> Decimal:
        elapsed = (at - self.at).total_seconds()
        if elapsed <= 0:
            return self.displacement
        decay = 0.5 ** (elapsed / half_life.total_seconds())
        return self.displacement * Decimal(str(decay)) if decay > 1e-9 else ZERO

    @staticmethod
    def after(previous: Impact | None, at: datetime, flow: Decimal, profile: Profile,
              settings: LiquiditySettings) -> Impact:
        """The displacement once `flow` (signed: client buys positive) has traded at `at`."""
        y = settings.impact_coefficient
        current = previous.now(at, settings.half_life) if previous is not None else ZERO
        total = profile.equivalent_quantity(current, y) + flow
        moved = profile.impact(abs(total), y)
        return Impact(at, moved if total > 0 else -moved)


def displaced(quote: Quote, displacement: Decimal, tick: Decimal) -> Quote:
    """`quote` moved by `displacement` of its mid, in whole ticks (the spread kept)."""
    if displacement == 0 or quote.bid <= 0 or quote.ask <= 0:
        return quote
    mid = (quote.bid + quote.ask) / 2
    ticks = (mid * displacement / tick).to_integral_value()
    if ticks == 0:
        return quote
    shift = ticks * tick
    if quote.bid + shift <= 0:
        return quote
    return Quote(quote.symbol, quote.mic, quote.at, quote.bid + shift, quote.ask + shift,
                 quote.bid_size, quote.ask_size)


def law_ladder(quote: Quote | None, tick: Callable[[Decimal], Decimal],
               lot: Callable[[Decimal], Decimal], depth: int, profile: Profile,
               settings: LiquiditySettings) -> list[tuple[Side, Decimal, Decimal]]:
    """The synthetic orders of a book shaped by the law around `quote` (module docstring),
    best first per side."""
    out: list[tuple[Side, Decimal, Decimal]] = []
    if quote is None or depth <= 0:
        return out
    y = settings.impact_coefficient
    cap = profile.cap(settings)
    mid = (quote.bid + quote.ask) / 2
    if mid <= 0:
        return out
    for side, top, size in ((Side.BUY, quote.bid, quote.bid_size), (Side.SELL, quote.ask, quote.ask_size)):
        if size <= ZERO or top <= ZERO:
            continue
        up = side is Side.SELL
        # Ticks between levels: the smallest spacing whose last level reaches the cap.
        spacing = 1
        if depth > 1:
            span = profile.reach(cap, y) * mid / tick(top)
            spacing = max(1, int((span / (depth - 1)).to_integral_value(rounding=ROUND_CEILING)))
        price, held = top, ZERO
        for k in range(depth):
            if k:
                price = _step(price, tick, up=up, ticks=spacing)
                if price <= ZERO:
                    break
            unit = lot(price)
            beyond = abs(price - top) / mid
            target = min(size + profile.depth_within(beyond, y), cap)
            quantity = ((target - held) // unit) * unit
            if quantity > ZERO:
                out.append((side, price, quantity))
                held += quantity
            if held + unit > cap:
                break
    return out


def _step(price: Decimal, tick: Callable[[Decimal], Decimal], *, up: bool, ticks: int = 1) -> Decimal:
    """The price `ticks` ticks away (of the band `price` is in), on the tick of the band it
    lands in."""
    nxt = price + ticks * tick(price) if up else price - ticks * tick(price)
    if nxt <= ZERO:
        return ZERO
    step = tick(nxt)
    whole = (nxt / step).to_integral_value(rounding=ROUND_CEILING if up else ROUND_FLOOR)
    return whole * step
