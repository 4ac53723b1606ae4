"""The FX arithmetic, pure and in Decimal: exposure, forwards, hedge policies, hedge ratios.

Sign conventions
- Amounts are in their own currency. A position's value is quantity x price (quantity < 0 is
  short). Cash and unsettled trades are signed (negative = owed).
- A hedge's `notional` is the foreign amount of the forward, signed: selling the foreign
  currency forward is negative. The amount *hedged* is minus the sum of open notionals, so
  selling 300,000 EUR forward hedges +300,000 of EUR exposure.
- Exposure per currency: gross = long - short + cash + unsettled; net = gross - hedged.
  Converted to the portfolio's base currency at spot (units of base per one unit of currency).
- A pair is written foreign/base ("EUR/USD") and its rates are units of base per one foreign.

Rounding: amounts to the currency's minor unit, half to even; rates to 10 significant digits;
hedge ratios to 6 decimal places. Statistics (variances, correlations) are estimated in binary
floating point: they are estimates, not money, and the ratio is turned into a Decimal once.
"""

from __future__ import annotations

import enum
import itertools
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import date, datetime, timedelta
from decimal import Decimal

from gateway.fx.currencies import day_count_basis, round_money
from gateway.fx.rates import significant

ZERO = Decimal(0)
RATIO_PLACES = Decimal("0.000001")


class PolicyKind(enum.StrEnum):
    STATIC = "STATIC"
    DYNAMIC = "DYNAMIC"
    MINIMUM_VARIANCE = "MINIMUM_VARIANCE"


@dataclass(frozen=True)
class HedgePolicy:
    """A validated hedge policy (see `gateway.fx.service.parse_policy` for the rules)."""

    kind: PolicyKind
    ratio: Decimal | None = None  # STATIC, DYNAMIC: target share of gross exposure hedged
    band: Decimal | None = None  # DYNAMIC: tolerated |actual ratio - target| before trading
    tenor_days: int = 30
    lookback_days: int = 180  # MINIMUM_VARIANCE: days of history to estimate from

    def canonical(self) -> dict[str, str | int]:
        """The fields that matter for this kind, as JSON: compared for idempotency and stored."""
        out: dict[str, str | int] = {"kind": self.kind.value, "tenorDays": self.tenor_days}
        if self.ratio is not None:
            out["ratio"] = str(self.ratio.normalize())
        if self.band is not None:
            out["band"] = str(self.band.normalize())
        if self.kind is PolicyKind.MINIMUM_VARIANCE:
            out["lookbackDays"] = self.lookback_days
        return out


@dataclass(frozen=True)
class Holdings:
    """Raw amounts of one currency in a portfolio, before valuation."""

    currency: str
    long: Decimal = ZERO
    short: Decimal = ZERO  # positive: the value of short positions
    cash: Decimal = ZERO
    unsettled: Decimal = ZERO
    hedged: Decimal = ZERO  # positive when foreign currency has been sold forward

    @property
    def gross(self) -> Decimal:
        return self.long - self.short + self.cash + self.unsettled

    @property
    def net(self) -> Decimal:
        return self.gross - self.hedged


def gather(positions: Iterable[tuple[str, Decimal, Decimal]] = (),
           cash: Iterable[tuple[str, Decimal]] = (),
           unsettled: Iterable[tuple[str, Decimal]] = (),
           hedges: Iterable[tuple[str, Decimal]] = ()) -> dict[str, Holdings]:
    """Holdings per currency from (currency, quantity, price) positions, (currency, amount) cash
    and unsettled trades, and (currency, signed notional) open hedges."""
    out: dict[str, Holdings] = {}

    def add(currency: str, **amounts: Decimal) -> None:
        h = out.get(currency) or Holdings(currency)
        out[currency] = replace(h, **{k: getattr(h, k) + v for k, v in amounts.items()})

    for currency, quantity, price in positions:
        value = quantity * price
        if value >= 0:
            add(currency, long=value)
        else:
            add(currency, short=-value)
    for currency, amount in cash:
        add(currency, cash=amount)
    for currency, amount in unsettled:
        add(currency, unsettled=amount)
    for currency, notional in hedges:
        add(currency, hedged=-notional)
    return out


@dataclass(frozen=True)
class CurrencyExposure:
    currency: str
    long: Decimal
    short: Decimal
    cash: Decimal
    unsettled: Decimal
    hedged: Decimal
    gross: Decimal
    net: Decimal
    spot: Decimal  # units of the base currency per one unit of `currency`
    gross_in_base: Decimal
    net_in_base: Decimal
    hedge_ratio: Decimal | None  # hedged / gross; None when gross is zero


@dataclass(frozen=True)
class Exposure:
    base_currency: str
    at: datetime
    currencies: tuple[CurrencyExposure, ...]  # the base currency first, then alphabetical
    net_in_base: Decimal  # everything, base currency included
    foreign_gross_in_base: Decimal
    foreign_net_in_base: Decimal

    def of(self, currency: str) -> CurrencyExposure | None:
        return next((c for c in self.currencies if c.currency == currency), None)


def hedge_ratio(hedged: Decimal, gross: Decimal) -> Decimal | None:
    return None if gross == 0 else (hedged / gross).quantize(RATIO_PLACES)


def value(holdings: Mapping[str, Holdings], base: str, spots: Mapping[str, Decimal],
          at: datetime) -> Exposure:
    """Value each currency's holdings in `base` at `spots` (units of base per one currency)."""
    rows = []
    for currency in sorted(holdings, key=lambda c: (c != base, c)):
        h = holdings[currency]
        spot = Decimal(1) if currency == base else spots[currency]
        rows.append(CurrencyExposure(
            currency=currency,
            long=round_money(h.long, currency), short=round_money(h.short, currency),
            cash=round_money(h.cash, currency), unsettled=round_money(h.unsettled, currency),
            hedged=round_money(h.hedged, currency), gross=round_money(h.gross, currency),
            net=round_money(h.net, currency), spot=spot,
            gross_in_base=round_money(h.gross * spot, base),
            net_in_base=round_money(h.net * spot, base),
            hedge_ratio=hedge_ratio(h.hedged, h.gross) if currency != base else None,
        ))
    foreign = [r for r in rows if r.currency != base]
    return Exposure(
        base_currency=base, at=at, currencies=tuple(rows),
        net_in_base=sum((r.net_in_base for r in rows), ZERO),
        foreign_gross_in_base=sum((r.gross_in_base for r in foreign), ZERO),
        foreign_net_in_base=sum((r.net_in_base for r in foreign), ZERO),
    )


# Forwards by covered interest parity.
def year_fraction(days: int, currency: str) -> Decimal:
    """ACT/360 or ACT/365 by the currency's money-market convention (see currencies.py)."""
    return Decimal(days) / Decimal(day_count_basis(currency))


def cip_forward(spot: Decimal, foreign: str, base: str, r_foreign: Decimal, r_base: Decimal,
                days: int) -> Decimal:
    """Forward rate of foreign/base (units of base per one foreign) for delivery in `days`:

        F = S x (1 + r_base x d/basis_base) / (1 + r_foreign x d/basis_foreign)

    simple interest, each leg on its own day count; no arbitrage between borrowing one currency,
    converting spot and lending the other. The pair's quote currency is `base` here, so this is
    the usual F = S (1 + r_quote T) / (1 + r_base T) with the pair's base being `foreign`.
    """
    grow_base = 1 + r_base * year_fraction(days, base)
    grow_foreign = 1 + r_foreign * year_fraction(days, foreign)
    return significant(spot * grow_base / grow_foreign)


# The minimum-variance hedge ratio.
@dataclass(frozen=True)
class RatioEstimate:
    ratio: Decimal  # h* = Cov(dS, dF) / Var(dF)
    effectiveness: Decimal  # rho^2: the share of spot variance the hedge removes
    observations: int


def min_variance_ratio(spot_changes: Sequence[float], forward_changes: Sequence[float]
                       ) -> RatioEstimate:
    """h* = Cov(dS, dF) / Var(dF) and rho^2 = Cov(dS, dF)^2 / (Var(dS) Var(dF)).

    h* minimises Var(dS - h dF), the variance of a position hedged with h forwards per unit;
    rho^2 is how much of Var(dS) that hedge removes (hedge effectiveness). Raises ValueError
    when there are fewer than two pairs or the forward never moved.
    """
    n = len(spot_changes)
    if n != len(forward_changes) or n < 2:
        raise ValueError("need at least two paired changes")
    mean_s, mean_f = math.fsum(spot_changes) / n, math.fsum(forward_changes) / n
    cov = math.fsum((s - mean_s) * (f - mean_f) for s, f in zip(spot_changes, forward_changes,
                                                                 strict=True)) / (n - 1)
    var_s = math.fsum((s - mean_s) ** 2 for s in spot_changes) / (n - 1)
    var_f = math.fsum((f - mean_f) ** 2 for f in forward_changes) / (n - 1)
    if var_f <= 0 or not math.isfinite(var_f):
        raise ValueError("the forward did not move; no ratio can be estimated")
    rho2 = cov * cov / (var_s * var_f) if var_s > 0 else 0.0
    return RatioEstimate(ratio=Decimal(repr(cov / var_f)).quantize(RATIO_PLACES),
                         effectiveness=Decimal(repr(min(rho2, 1.0))).quantize(RATIO_PLACES),
                         observations=n)


def changes(values: Sequence[Decimal]) -> list[float]:
    return [float(b - a) for a, b in itertools.pairwise(values)]


# Hedge policies.
def trade_for(holdings: Holdings, target: Decimal, band: Decimal | None) -> Decimal:
    """The foreign amount to sell forward now (negative: buy) to bring the hedged share of gross
    exposure to `target`; zero for no trade.

    With a band (DYNAMIC), nothing is traded while |hedged/gross - target| <= band; outside it
    the hedge goes back to the target itself (not to the band's edge, which would trade again at
    the next wobble). With no exposure left, any remaining hedge is outside every band and is
    unwound.
    """
    currency = holdings.currency
    if band is not None:
        current = hedge_ratio(holdings.hedged, holdings.gross)
        if current is None:
            if holdings.hedged == 0:
                return ZERO
        elif abs(current - target) <= band:
            return ZERO
    return round_money(target * holdings.gross, currency) - round_money(holdings.hedged, currency)


@dataclass(frozen=True)
class ForwardQuote:
    spot: Decimal
    forward: Decimal
    r_foreign: Decimal
    r_base: Decimal
    source: str


@dataclass(frozen=True)
class HedgeOrder:
    """An FX forward: sell (notional < 0) or buy `currency` against the base currency."""

    pair: str  # foreign/base, e.g. "EUR/USD"
    currency: str
    base_currency: str
    notional: Decimal  # signed, in `currency`
    notional_in_base: Decimal  # |notional| x forward: the base amount exchanged at value date
    tenor_days: int
    trade_date: date
    value_date: date
    spot_rate: Decimal
    forward_rate: Decimal
    foreign_interest_rate: Decimal
    base_interest_rate: Decimal
    target_ratio: Decimal
    ratio_before: Decimal | None

    @property
    def side(self) -> str:
        return "SELL" if self.notional < 0 else "BUY"


def order(holdings: Holdings, base: str, notional_to_sell: Decimal, quote: ForwardQuote,
          target: Decimal, tenor_days: int, trade_date: date) -> HedgeOrder:
    notional = -notional_to_sell
    return HedgeOrder(
        pair=f"{holdings.currency}/{base}", currency=holdings.currency, base_currency=base,
        notional=notional, notional_in_base=round_money(abs(notional) * quote.forward, base),
        tenor_days=tenor_days, trade_date=trade_date,
        value_date=trade_date + timedelta(days=tenor_days),
        spot_rate=quote.spot, forward_rate=quote.forward,
        foreign_interest_rate=quote.r_foreign, base_interest_rate=quote.r_base,
        target_ratio=target, ratio_before=hedge_ratio(holdings.hedged, holdings.gross))


def after_orders(holdings: Mapping[str, Holdings], orders: Iterable[HedgeOrder]
                 ) -> dict[str, Holdings]:
    out = dict(holdings)
    for o in orders:
        h = out[o.currency]
        out[o.currency] = replace(h, hedged=h.hedged - o.notional)
    return out


@dataclass(frozen=True)
class HedgeProposal:
    portfolio_id: str
    policy: HedgePolicy
    at: datetime
    orders: tuple[HedgeOrder, ...]
    before: Exposure
    after: Exposure
    estimates: Mapping[str, RatioEstimate] = field(default_factory=dict)  # MINIMUM_VARIANCE
