"""Cross-currency portfolios, FX exposure and hedging.

Amounts, prices and rates are Decimals: returned as the `Decimal` scalar (a string on the wire)
and taken as strings in inputs ("1250.50"), never as JSON numbers, which are binary floats.
Permissions (casbin objects): "portfolio" read for portfolios, exposure and rates, write for
creating and changing them; "hedge" read for hedge positions and proposals (a proposal records
nothing), write for executing. Sign conventions and the maths: gateway/fx/maths.py.
"""

from __future__ import annotations

import enum
from datetime import date, datetime
from decimal import Decimal
from typing import Any

import strawberry
from strawberry.types import Info

from gateway.fx import maths, models
from gateway.fx.rates import Spot
from gateway.fx.service import FxService, HedgeExecuted, parse_policy
from gateway.http.context import RequestContext
from schema.common import DEFAULT_PAGE, Connection, ctx


def _plain(value: Decimal) -> Decimal:
    """Without trailing zeros or an exponent, so it reads "50000", not "5E+4"."""
    normal = value.normalize()
    return normal.quantize(Decimal(1)) if normal.as_tuple().exponent > 0 else normal  # type: ignore[operator]


def _fx(info: Info, obj: str, act: str) -> tuple[RequestContext, FxService]:
    c = ctx(info)
    c.require(obj, act)
    return c, c.runtime.fx


@strawberry.enum
class HedgePolicyKind(enum.Enum):
    STATIC = "STATIC"
    DYNAMIC = "DYNAMIC"
    MINIMUM_VARIANCE = "MINIMUM_VARIANCE"


@strawberry.enum
class HedgeSide(enum.Enum):
    BUY = "BUY"
    SELL = "SELL"


@strawberry.input(description="STATIC: hedge `ratio` of the exposure, renewing a `tenorDays` "
                              "forward at each value date. DYNAMIC: trade back to `ratio` only when "
                              "the hedged share drifts more than `band` from it. MINIMUM_VARIANCE: "
                              "the ratio Cov(dS,dF)/Var(dF) from `lookbackDays` of daily history.")
class HedgePolicyInput:
    kind: HedgePolicyKind
    ratio: str | None = strawberry.field(default=None, description="0 to 1, e.g. \"0.5\".")
    band: str | None = strawberry.field(default=None, description="Above 0, up to 1 (DYNAMIC).")
    tenor_days: int = strawberry.field(default=30, description="Forward tenor, 1 to 365 days.")
    lookback_days: int = strawberry.field(default=180, description="30 to 3650 (MINIMUM_VARIANCE).")

    def parse(self) -> maths.HedgePolicy:
        return parse_policy(self.kind.value, self.ratio, self.band, self.tenor_days,
                            self.lookback_days)


@strawberry.type
class HedgePolicy:
    kind: HedgePolicyKind
    ratio: Decimal | None
    band: Decimal | None
    tenor_days: int
    lookback_days: int | None

    @classmethod
    def of(cls, data: dict[str, Any]) -> HedgePolicy:
        """From the canonical form (`maths.HedgePolicy.canonical`), which executions store."""
        return cls(kind=HedgePolicyKind(data["kind"]),
                   ratio=Decimal(data["ratio"]) if "ratio" in data else None,
                   band=Decimal(data["band"]) if "band" in data else None,
                   tenor_days=int(data["tenorDays"]), lookback_days=data.get("lookbackDays"))


@strawberry.type
class Position:
    id: strawberry.ID
    instrument: str = strawberry.field(description="Instrument key (SYMBOL.MIC), ISIN or symbol.")
    mic: str = strawberry.field(description="ISO 10383 venue.")
    currency: str = strawberry.field(description="ISO 4217: the venue's currency.")
    quantity: Decimal = strawberry.field(description="Negative: short.")
    price: Decimal
    market_value: Decimal = strawberry.field(description="quantity x price, in `currency`.")
    updated_at: datetime

    @classmethod
    def of(cls, row: models.Position) -> Position:
        return cls(id=strawberry.ID(row.id), instrument=row.instrument, mic=row.mic,
                   currency=row.currency, quantity=_plain(row.quantity), price=_plain(row.price),
                   market_value=_plain(row.quantity * row.price), updated_at=row.updated_at)


@strawberry.type
class CashBalance:
    currency: str
    amount: Decimal
    updated_at: datetime

    @classmethod
    def of(cls, row: models.CashBalance) -> CashBalance:
        return cls(currency=row.currency, amount=_plain(row.amount), updated_at=row.updated_at)


@strawberry.type
class UnsettledTrade:
    id: strawberry.ID
    currency: str
    amount: Decimal = strawberry.field(description="Positive: receivable; negative: payable.")
    settles_on: date
    reference: str
    created_at: datetime

    @classmethod
    def of(cls, row: models.UnsettledTrade) -> UnsettledTrade:
        return cls(id=strawberry.ID(row.id), currency=row.currency, amount=_plain(row.amount),
                   settles_on=row.settles_on, reference=row.reference, created_at=row.created_at)


@strawberry.type(description="An FX forward recorded by executeHedge; it hedges from its trade "
                             "date until its value date.")
class HedgePosition:
    id: strawberry.ID
    pair: str = strawberry.field(description="foreign/base, e.g. EUR/USD.")
    currency: str
    base_currency: str
    side: HedgeSide
    notional: Decimal = strawberry.field(description="In `currency`; negative: sold forward.")
    spot_rate: Decimal
    forward_rate: Decimal = strawberry.field(description="Units of base per one foreign.")
    tenor_days: int
    trade_date: date
    value_date: date
    policy: HedgePolicyKind
    target_ratio: Decimal
    idempotency_key: str | None
    created_at: datetime

    @classmethod
    def of(cls, row: models.HedgePosition) -> HedgePosition:
        return cls(id=strawberry.ID(row.id), pair=row.pair, currency=row.currency,
                   base_currency=row.base_currency,
                   side=HedgeSide.SELL if row.notional < 0 else HedgeSide.BUY,
                   notional=_plain(row.notional), spot_rate=_plain(row.spot_rate),
                   forward_rate=_plain(row.forward_rate), tenor_days=row.tenor_days,
                   trade_date=row.trade_date, value_date=row.value_date,
                   policy=HedgePolicyKind(row.policy), target_ratio=_plain(row.target_ratio),
                   idempotency_key=row.idempotency_key, created_at=row.created_at)


@strawberry.type
class Portfolio:
    id: strawberry.ID
    name: str
    base_currency: str = strawberry.field(description="ISO 4217; exposure is valued in it.")
    created_at: datetime

    @strawberry.field
    def positions(self, info: Info) -> list[Position]:
        c, fx = _fx(info, "portfolio", "read")
        rows = c.loader("fx.positions", lambda ids: fx.positions(c.tenant_id, ids)).load(str(self.id))
        return [Position.of(r) for r in rows or []]

    @strawberry.field
    def cash_balances(self, info: Info) -> list[CashBalance]:
        c, fx = _fx(info, "portfolio", "read")
        rows = c.loader("fx.cash", lambda ids: fx.cash_balances(c.tenant_id, ids)).load(str(self.id))
        return [CashBalance.of(r) for r in rows or []]

    @strawberry.field(description="Every recorded trade; exposure counts those not yet settled.")
    def unsettled_trades(self, info: Info) -> list[UnsettledTrade]:
        c, fx = _fx(info, "portfolio", "read")
        rows = c.loader("fx.trades", lambda ids: fx.unsettled_trades(c.tenant_id, ids)).load(
            str(self.id))
        return [UnsettledTrade.of(r) for r in rows or []]

    @strawberry.field(description="Hedges open today (trade date <= today < value date), or all "
                                  "of them with openOnly: false.")
    def hedge_positions(self, info: Info, open_only: bool = True) -> list[HedgePosition]:
        c, fx = _fx(info, "hedge", "read")
        on = fx.clock().date() if open_only else None
        rows = c.loader(f"fx.hedges.{on}", lambda ids: fx.hedge_positions(
            c.tenant_id, ids, open_on=on)).load(str(self.id))
        return [HedgePosition.of(r) for r in rows or []]

    @classmethod
    def of(cls, row: models.Portfolio) -> Portfolio:
        return cls(id=strawberry.ID(row.id), name=row.name, base_currency=row.base_currency,
                   created_at=row.created_at)


@strawberry.type(description="One currency of a portfolio, in that currency and in the base "
                             "currency. gross = long - short + cash + unsettled; net = gross - "
                             "hedged.")
class CurrencyExposure:
    currency: str
    long: Decimal
    short: Decimal = strawberry.field(description="Value of short positions, as a positive amount.")
    cash: Decimal
    unsettled: Decimal = strawberry.field(description="Trades not settled at the valuation date.")
    hedged: Decimal = strawberry.field(description="Sold forward by open hedges (negative: bought).")
    gross: Decimal
    net: Decimal
    spot: Decimal = strawberry.field(description="Units of the base currency per one unit.")
    gross_in_base: Decimal
    net_in_base: Decimal
    hedge_ratio: Decimal | None = strawberry.field(description="hedged / gross; null for the base "
                                                               "currency or no exposure.")

    @classmethod
    def of(cls, e: maths.CurrencyExposure) -> CurrencyExposure:
        return cls(currency=e.currency, long=e.long, short=e.short, cash=e.cash,
                   unsettled=e.unsettled, hedged=e.hedged, gross=e.gross, net=e.net, spot=e.spot,
                   gross_in_base=e.gross_in_base, net_in_base=e.net_in_base,
                   hedge_ratio=e.hedge_ratio)


@strawberry.type
class FxExposure:
    portfolio_id: strawberry.ID
    base_currency: str
    at: datetime = strawberry.field(description="The valuation instant: rates as of it.")
    currencies: list[CurrencyExposure] = strawberry.field(description="Base currency first.")
    net_in_base: Decimal = strawberry.field(description="Everything, the base currency included.")
    foreign_gross_in_base: Decimal
    foreign_net_in_base: Decimal = strawberry.field(description="What FX moves can still change.")

    @classmethod
    def of(cls, portfolio_id: str, e: maths.Exposure) -> FxExposure:
        return cls(portfolio_id=strawberry.ID(portfolio_id), base_currency=e.base_currency, at=e.at,
                   currencies=[CurrencyExposure.of(x) for x in e.currencies],
                   net_in_base=e.net_in_base, foreign_gross_in_base=e.foreign_gross_in_base,
                   foreign_net_in_base=e.foreign_net_in_base)


@strawberry.type(description="An FX forward to trade: sell (notional < 0) or buy `currency` "
                             "against the base currency for the value date.")
class HedgeOrder:
    pair: str = strawberry.field(description="foreign/base, e.g. EUR/USD.")
    currency: str
    side: HedgeSide
    notional: Decimal = strawberry.field(description="In `currency`, signed.")
    notional_in_base: Decimal = strawberry.field(description="|notional| x forwardRate.")
    tenor_days: int
    trade_date: date
    value_date: date
    spot_rate: Decimal
    forward_rate: Decimal = strawberry.field(
        description="Covered interest parity: spot x (1 + r_base d/basis) / (1 + r_foreign d/basis).")
    foreign_interest_rate: Decimal
    base_interest_rate: Decimal
    target_ratio: Decimal
    ratio_before: Decimal | None

    @classmethod
    def of(cls, o: maths.HedgeOrder) -> HedgeOrder:
        return cls(pair=o.pair, currency=o.currency, side=HedgeSide(o.side), notional=o.notional,
                   notional_in_base=o.notional_in_base, tenor_days=o.tenor_days,
                   trade_date=o.trade_date, value_date=o.value_date, spot_rate=o.spot_rate,
                   forward_rate=o.forward_rate, foreign_interest_rate=o.foreign_interest_rate,
                   base_interest_rate=o.base_interest_rate, target_ratio=o.target_ratio,
                   ratio_before=o.ratio_before)


@strawberry.type(description="A minimum-variance hedge ratio and how well it hedges.")
class HedgeRatioEstimate:
    currency: str
    ratio: Decimal = strawberry.field(description="h* = Cov(dS, dF) / Var(dF).")
    effectiveness: Decimal = strawberry.field(description="rho squared: share of variance removed.")
    observations: int

    @classmethod
    def all(cls, estimates: dict[str, maths.RatioEstimate]) -> list[HedgeRatioEstimate]:
        return [cls(currency=k, ratio=v.ratio, effectiveness=v.effectiveness,
                    observations=v.observations) for k, v in sorted(estimates.items())]


@strawberry.type
class HedgeProposal:
    portfolio_id: strawberry.ID
    policy: HedgePolicy
    at: datetime
    orders: list[HedgeOrder]
    before: FxExposure
    after: FxExposure
    estimates: list[HedgeRatioEstimate] = strawberry.field(description="MINIMUM_VARIANCE only.")

    @classmethod
    def of(cls, p: maths.HedgeProposal) -> HedgeProposal:
        return cls(portfolio_id=strawberry.ID(p.portfolio_id),
                   policy=HedgePolicy.of(p.policy.canonical()), at=p.at,
                   orders=[HedgeOrder.of(o) for o in p.orders],
                   before=FxExposure.of(p.portfolio_id, p.before),
                   after=FxExposure.of(p.portfolio_id, p.after),
                   estimates=HedgeRatioEstimate.all(dict(p.estimates)))


@strawberry.type(description="What executeHedge did: the hedge positions it recorded (orders are "
                             "not routed to a venue yet) and the exposure before and after.")
class HedgeExecution:
    id: strawberry.ID
    idempotency_key: str
    portfolio_id: strawberry.ID
    policy: HedgePolicy
    executed_at: datetime
    replayed: bool = strawberry.field(description="True when this answers a retry of the key.")
    positions: list[HedgePosition]
    before: FxExposure
    after: FxExposure
    estimates: list[HedgeRatioEstimate]

    @classmethod
    def of(cls, done: HedgeExecuted) -> HedgeExecution:
        e = done.execution
        return cls(id=strawberry.ID(e.id), idempotency_key=e.idempotency_key,
                   portfolio_id=strawberry.ID(e.portfolio_id), policy=HedgePolicy.of(e.policy),
                   executed_at=e.valued_at, replayed=done.replayed,
                   positions=[HedgePosition.of(p) for p in done.positions],
                   before=FxExposure.of(e.portfolio_id, done.before),
                   after=FxExposure.of(e.portfolio_id, done.after),
                   estimates=HedgeRatioEstimate.all(done.estimates))


@strawberry.type
class FxRate:
    base: str
    quote: str
    rate: Decimal = strawberry.field(description="Units of quote per one base.")
    at: datetime = strawberry.field(description="The fixing's time (a rates file's may be older "
                                                "than asked).")
    source: str

    @classmethod
    def of(cls, s: Spot) -> FxRate:
        return cls(base=s.base, quote=s.quote, rate=s.rate, at=s.at, source=s.source)


@strawberry.input
class CreatePortfolioInput:
    name: str
    base_currency: str | None = strawberry.field(default=None,
                                                 description="Default: the tenant's base currency.")
    idempotency_key: str | None = None


@strawberry.input(description="Sets the holding of an instrument on a venue (replacing it).")
class RecordPositionInput:
    portfolio: strawberry.ID
    instrument: str
    mic: str
    currency: str
    quantity: str = strawberry.field(description="Decimal string; negative for a short.")
    price: str = strawberry.field(description="Decimal string, above zero, in `currency`.")


@strawberry.input(description="Sets the cash held in one currency (replacing it).")
class SetCashBalanceInput:
    portfolio: strawberry.ID
    currency: str
    amount: str = strawberry.field(description="Decimal string; negative when overdrawn.")


@strawberry.input
class RecordUnsettledTradeInput:
    portfolio: strawberry.ID
    currency: str
    amount: str = strawberry.field(description="Decimal string: + receivable, - payable.")
    settles_on: date
    reference: str = ""


@strawberry.type
class Query:
    @strawberry.field
    def portfolios(self, info: Info, first: int = DEFAULT_PAGE, after: str | None = None
                   ) -> Connection[Portfolio]:
        c, fx = _fx(info, "portfolio", "read")
        page = fx.portfolios(c.tenant_id, first=first, after=after)
        ids = [p.id for p in page.items]
        for name, load in (("fx.positions", fx.positions), ("fx.cash", fx.cash_balances),
                           ("fx.trades", fx.unsettled_trades)):
            c.loader(name, lambda keys, load=load: load(c.tenant_id, keys)).want(ids)
        return Connection.of(page, Portfolio.of)

    @strawberry.field
    def portfolio(self, info: Info, id: strawberry.ID) -> Portfolio:
        c, fx = _fx(info, "portfolio", "read")
        return Portfolio.of(fx.portfolio(c.tenant_id, str(id)))

    @strawberry.field(description="Exposure per currency at `at` (default: now).")
    def fx_exposure(self, info: Info, portfolio: strawberry.ID, at: datetime | None = None
                    ) -> FxExposure:
        c, fx = _fx(info, "portfolio", "read")
        return FxExposure.of(str(portfolio), fx.exposure(c.tenant_id, str(portfolio), at))

    @strawberry.field(description="Spot: units of quote per one base at `at` (default: now), "
                                  "direct, inverted or crossed through USD.")
    def fx_rate(self, info: Info, base: str, quote: str, at: datetime | None = None) -> FxRate:
        _, fx = _fx(info, "portfolio", "read")
        return FxRate.of(fx.rate(base, quote, at))


@strawberry.type
class Mutation:
    @strawberry.mutation
    def create_portfolio(self, info: Info, input: CreatePortfolioInput) -> Portfolio:
        c, fx = _fx(info, "portfolio", "write")
        return Portfolio.of(fx.create_portfolio(c.me, input.name, base_currency=input.base_currency,
                                                idempotency_key=input.idempotency_key))

    @strawberry.mutation
    def record_position(self, info: Info, input: RecordPositionInput) -> Position:
        c, fx = _fx(info, "portfolio", "write")
        return Position.of(fx.record_position(
            c.tenant_id, str(input.portfolio), instrument=input.instrument, mic=input.mic,
            currency=input.currency, quantity=input.quantity, price=input.price))

    @strawberry.mutation
    def set_cash_balance(self, info: Info, input: SetCashBalanceInput) -> CashBalance:
        c, fx = _fx(info, "portfolio", "write")
        return CashBalance.of(fx.set_cash_balance(c.tenant_id, str(input.portfolio),
                                                  currency=input.currency, amount=input.amount))

    @strawberry.mutation
    def record_unsettled_trade(self, info: Info, input: RecordUnsettledTradeInput) -> UnsettledTrade:
        c, fx = _fx(info, "portfolio", "write")
        return UnsettledTrade.of(fx.record_unsettled_trade(
            c.tenant_id, str(input.portfolio), currency=input.currency, amount=input.amount,
            settles_on=input.settles_on, reference=input.reference))

    @strawberry.mutation(description="Hedge orders for `policy` at `at` (default: now) with the "
                                     "exposure before and after. Records nothing.")
    def propose_hedge(self, info: Info, portfolio: strawberry.ID, policy: HedgePolicyInput,
                      at: datetime | None = None) -> HedgeProposal:
        c, fx = _fx(info, "hedge", "read")
        c.require("portfolio", "read")
        return HedgeProposal.of(fx.propose_hedge(c.tenant_id, str(portfolio), policy.parse(), at))

    @strawberry.mutation(description="Propose at current rates and record the orders as hedge "
                                     "positions. Idempotent by key.")
    def execute_hedge(self, info: Info, portfolio: strawberry.ID, policy: HedgePolicyInput,
                      idempotency_key: str) -> HedgeExecution:
        c, fx = _fx(info, "hedge", "write")
        return HedgeExecution.of(fx.execute_hedge(c.me, str(portfolio), policy.parse(),
                                                  idempotency_key))
