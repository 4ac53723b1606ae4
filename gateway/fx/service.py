"""What resolvers call for portfolios, FX exposure and hedging. Plain Python on SQLModel rows in
tenant sessions, and FX-provider plugins through `FxRates`.

Every input is validated before anything is written, and every write is one transaction, so a
bad request leaves nothing behind. Hedge maths lives in `maths.py`; this module fetches rows and
rates, applies a policy and records the result.

Rolling one-month forwards: a hedge is an FX forward open from its trade date until its value
date. On the value date it settles (its gain or loss lands in cash, which the portfolio's owner
records with `setCashBalance`) and stops counting as a hedge, so the exposure it covered shows
again; running the policy on that day proposes a new forward of the same tenor for the exposure
as it is then. Rolling is therefore re-running the policy at each value date, with the forward
priced afresh from that day's spot and interest rates, the size following the exposure.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any

from sqlalchemy import update
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from gateway.auth.principal import Principal
from gateway.compliance.iso import is_currency
from gateway.db import Database, utcnow
from gateway.errors import Conflict, DomainError, InvalidInput, NotFound
from gateway.fx import maths
from gateway.fx.currencies import CODE
from gateway.fx.maths import (
    CurrencyExposure,
    Exposure,
    ForwardQuote,
    HedgeOrder,
    HedgePolicy,
    HedgeProposal,
    Holdings,
    PolicyKind,
    RatioEstimate,
)
from gateway.fx.models import (
    CashBalance,
    HedgeExecution,
    HedgePosition,
    Portfolio,
    Position,
    UnsettledTrade,
)
from gateway.fx.rates import FxRates, Spot
from gateway.pagination import Page, keyset_page
from gateway.scope import current_tenant
from gateway.tenancy.models import Tenant
from plugins.host import PluginHost, default_context
from plugins.sdk import FxRateProvider

MIC = re.compile(r"^[A-Z0-9]{4}$")  # ISO 10383 shape; the venue registry comes with issue 3
INSTRUMENT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/-]{0,63}$")
MAX_TENOR_DAYS = 365
LOOKBACK_DAYS = (30, 3_650)
MIN_CHANGES = 20  # fewer daily changes than this give a ratio too noisy to trade on
# SQLite keeps NUMERIC as a double: 15 significant digits survive the round trip exactly.
MAX_DIGITS, MAX_PLACES = 15, 10
CLOCK_SKEW = timedelta(minutes=1)


def parse_policy(kind: str, ratio: Decimal | str | None = None, band: Decimal | str | None = None,
                 tenor_days: int = 30, lookback_days: int = 180) -> HedgePolicy:
    """Validate a policy. STATIC needs `ratio`; DYNAMIC `ratio` and `band`; MINIMUM_VARIANCE
    estimates its ratio, so takes neither. Ratios lie in [0, 1], a band in (0, 1]."""
    try:
        policy_kind = PolicyKind(kind)
    except ValueError:
        raise InvalidInput(f"policy kind must be one of {', '.join(PolicyKind)}",
                           code="POLICY_INVALID") from None
    parsed_ratio = None if ratio is None else _fraction(ratio, "ratio", "POLICY_RATIO_INVALID")
    parsed_band = None if band is None else _fraction(band, "band", "POLICY_BAND_INVALID")
    if policy_kind is PolicyKind.MINIMUM_VARIANCE:
        if parsed_ratio is not None or parsed_band is not None:
            raise InvalidInput("MINIMUM_VARIANCE estimates its ratio; give neither ratio nor band",
                               code="POLICY_INVALID")
        if not LOOKBACK_DAYS[0] <= lookback_days <= LOOKBACK_DAYS[1]:
            raise InvalidInput(f"lookbackDays must be between {LOOKBACK_DAYS[0]} and "
                               f"{LOOKBACK_DAYS[1]}", code="POLICY_LOOKBACK_INVALID")
    elif parsed_ratio is None:
        raise InvalidInput(f"{policy_kind.value} needs a ratio", code="POLICY_INVALID")
    if policy_kind is PolicyKind.DYNAMIC:
        if parsed_band is None:
            raise InvalidInput("DYNAMIC needs a band", code="POLICY_INVALID")
        if parsed_band == 0:
            raise InvalidInput("band must be above 0 (a zero band is a STATIC policy)",
                               code="POLICY_BAND_INVALID")
    elif policy_kind is PolicyKind.STATIC and parsed_band is not None:
        raise InvalidInput("a band applies to DYNAMIC policies only", code="POLICY_INVALID")
    if not 1 <= tenor_days <= MAX_TENOR_DAYS:
        raise InvalidInput(f"tenorDays must be between 1 and {MAX_TENOR_DAYS}",
                           code="POLICY_TENOR_INVALID")
    return HedgePolicy(policy_kind, parsed_ratio, parsed_band, tenor_days, lookback_days)


def _fraction(value: Decimal | str, name: str, code: str) -> Decimal:
    try:
        parsed = value if isinstance(value, Decimal) else Decimal(str(value).strip())
    except InvalidOperation:
        raise InvalidInput(f"{name} must be a decimal number such as 0.5", code=code) from None
    if not parsed.is_finite() or not Decimal(0) <= parsed <= Decimal(1):
        raise InvalidInput(f"{name} must lie between 0 and 1", code=code)
    return parsed


@dataclass(frozen=True)
class HedgeExecuted:
    execution: HedgeExecution
    positions: list[HedgePosition]
    before: Exposure
    after: Exposure
    estimates: dict[str, RatioEstimate]
    replayed: bool  # True when the idempotency key had been used for this very request


class FxService:
    def __init__(self, db: Database, rates: FxRates, max_page_size: int,
                 clock: Callable[[], datetime] = utcnow) -> None:
        self.db = db
        self.builtin_rates = rates
        self.max_page_size = max_page_size
        self.clock = clock
        self._installed: Callable[[str], Sequence[tuple[str, FxRateProvider]]] | None = None
        self._disabled: Callable[[str], frozenset[str]] | None = None
        self._chains: dict[str, tuple[tuple[Any, ...], FxRates]] = {}

    def bind_installed(self, installed: Callable[[str], Sequence[tuple[str, FxRateProvider]]],
                       disabled: Callable[[str], frozenset[str]] | None = None) -> None:
        """Where a tenant's installed FX providers come from (the marketplace's view of it), and
        which built-in plugins it switched off."""
        self._installed = installed
        self._disabled = disabled

    @property
    def rates(self) -> FxRates:
        """The chain for the tenant in scope: its installed providers first (it installed them
        for their rates), then the built-ins, which still answer what they do not cover."""
        tenant = current_tenant()
        installed = self._installed(tenant) if tenant is not None and self._installed else ()
        off = self._disabled(tenant) if tenant is not None and self._disabled else frozenset()
        if not installed and not off:
            return self.builtin_rates
        key = (*(id(provider) for _, provider in installed), *sorted(off))
        found = self._chains.get(tenant)  # type: ignore[arg-type]
        if found is None or found[0] != key:
            builtins = [(n, p) for n, p in self.builtin_rates.providers if n not in off]
            found = (key, FxRates([*installed, *builtins]))
            self._chains[tenant] = found  # type: ignore[index]
        return found[1]

    @classmethod
    def from_plugins(cls, db: Database, plugins: PluginHost, max_page_size: int) -> FxService:
        """The service on every FX provider the plugins offer, built-ins first. A plugin whose
        hook fails is logged by the host and left out; the others still serve."""
        contributions, _failures = plugins.collect("alphintra_fx_rate_providers", default_context,
                                                   expect=FxRateProvider)
        return cls(db, FxRates([(c.plugin, c.value) for c in contributions]), max_page_size)

    # Validation shared by every entry point.
    def instant(self, at: datetime | None) -> datetime:
        now = self.clock()
        if at is None:
            return now
        if at.tzinfo is None or at.utcoffset() is None:
            raise InvalidInput("an instant needs a time zone offset, such as 2026-01-05T16:00:00Z",
                               code="INSTANT_NOT_AWARE")
        if at > now + CLOCK_SKEW:
            raise InvalidInput("rates are known up to now, not for the future",
                               code="INSTANT_IN_FUTURE")
        return at

    def currency(self, code: str, at: datetime | None = None) -> str:
        """An ISO 4217 code that some FX provider can value."""
        if not isinstance(code, str) or not CODE.match(code) or not is_currency(code):
            raise InvalidInput(f"{code!r} is not an ISO 4217 currency code such as USD",
                               code="CURRENCY_INVALID")
        # Coverage is asked now (and at `at` for a provider that covers only the past), so an
        # instant no provider reaches is FX_RATE_UNAVAILABLE, not an unsupported currency.
        if not (self.rates.covers(code, self.clock()) or (at is not None and self.rates.covers(code, at))):
            raise InvalidInput(f"no FX provider covers {code}", code="CURRENCY_UNSUPPORTED")
        return code

    @staticmethod
    def number(value: Decimal | str | int, name: str, code: str, *, positive: bool = False
               ) -> Decimal:
        try:
            parsed = value if isinstance(value, Decimal) else Decimal(str(value).strip())
        except InvalidOperation:
            raise InvalidInput(f"{name} must be a decimal number as a string, such as \"1250.50\"",
                               code=code) from None
        if not parsed.is_finite():
            raise InvalidInput(f"{name} must be finite", code=code)
        if positive and parsed <= 0:
            raise InvalidInput(f"{name} must be above zero", code=code)
        normal = parsed.normalize()
        places = max(0, -int(normal.as_tuple().exponent))
        if normal != 0 and (len(normal.as_tuple().digits) > MAX_DIGITS or places > MAX_PLACES):
            raise InvalidInput(f"{name} may have at most {MAX_DIGITS} significant digits and "
                               f"{MAX_PLACES} decimal places", code=code)
        return parsed + 0  # drops a negative zero

    @staticmethod
    def _key(key: str | None) -> str | None:
        if key is not None and not 1 <= len(key) <= 128:
            raise InvalidInput("idempotencyKey must be 1 to 128 characters",
                               code="IDEMPOTENCY_KEY_INVALID")
        return key

    # Rates.
    def rate(self, base: str, quote: str, at: datetime | None = None) -> Spot:
        at = self.instant(at)
        return self.rates.spot(self.currency(base, at), self.currency(quote, at), at)

    def forward(self, spot: Spot, tenor_days: int) -> ForwardQuote:
        """The forward for `spot`'s pair (foreign/base) by covered interest parity, with interest
        rates as of the spot's own time, from the spot's provider where it has them."""
        foreign, base = spot.base, spot.quote
        r_foreign = self.rates.interest_rate(foreign, spot.at, spot.provider)
        r_base = self.rates.interest_rate(base, spot.at, spot.provider)
        return ForwardQuote(spot=spot.rate,
                            forward=maths.cip_forward(spot.rate, foreign, base, r_foreign, r_base,
                                                      tenor_days),
                            r_foreign=r_foreign, r_base=r_base, source=spot.source)

    # Portfolios.
    def create_portfolio(self, principal: Principal, name: str, *, base_currency: str | None = None,
                         idempotency_key: str | None = None) -> Portfolio:
        name = name.strip()
        if not 1 <= len(name) <= 200:
            raise InvalidInput("name must be 1 to 200 characters", code="PORTFOLIO_NAME_INVALID")
        key = self._key(idempotency_key)
        if base_currency is not None:
            self.currency(base_currency)
        with self.db.tenant_session(principal.tenant_id) as session:
            if key is not None:
                existing = self._portfolio_by_key(session, key)
                if existing is not None:
                    return self._same_portfolio(existing, name, base_currency)
            base = base_currency or session.exec(select(Tenant)).one().base_currency
            if base_currency is None:
                self.currency(base)  # the tenant's own base currency must be valued too
            portfolio = Portfolio(tenant_id=principal.tenant_id, name=name, base_currency=base,
                                  idempotency_key=key, created_by=principal.user_id)
            session.add(portfolio)
            try:
                session.commit()
            except IntegrityError:
                session.rollback()
                existing = self._portfolio_by_key(session, key) if key is not None else None
                if existing is None:
                    raise Conflict(f"a portfolio named {name!r} exists",
                                   code="PORTFOLIO_EXISTS") from None
                return self._same_portfolio(existing, name, base_currency)
        return portfolio

    @staticmethod
    def _portfolio_by_key(session: Session, key: str) -> Portfolio | None:
        return session.exec(select(Portfolio).where(Portfolio.idempotency_key == key)).first()

    @staticmethod
    def _same_portfolio(existing: Portfolio, name: str, base_currency: str | None) -> Portfolio:
        if existing.name != name or base_currency not in (None, existing.base_currency):
            raise Conflict("idempotencyKey was used for a different request",
                           code="IDEMPOTENCY_KEY_REUSED")
        return existing

    def portfolio(self, tenant_id: str, portfolio_id: str) -> Portfolio:
        with self.db.tenant_session(tenant_id) as session:
            return self._portfolio(session, portfolio_id)

    @staticmethod
    def _portfolio(session: Session, portfolio_id: str) -> Portfolio:
        found = session.exec(select(Portfolio).where(Portfolio.id == portfolio_id)).first()
        if found is None:
            raise NotFound(f"no portfolio {portfolio_id}", code="PORTFOLIO_NOT_FOUND")
        return found

    def portfolios(self, tenant_id: str, *, first: int, after: str | None = None) -> Page[Portfolio]:
        return keyset_page(self.db, tenant_id, select(Portfolio), Portfolio, first=first,
                           after=after, max_page_size=self.max_page_size)

    def portfolios_by_id(self, tenant_id: str, ids: list[str]) -> dict[str, Portfolio]:
        with self.db.tenant_session(tenant_id) as session:
            rows = session.exec(select(Portfolio).where(col(Portfolio.id).in_(ids))).all()
        return {p.id: p for p in rows}

    # Rows of portfolios, grouped by portfolio (for batch loaders).
    def _grouped(self, tenant_id: str, model: Any, portfolio_ids: list[str], *where: Any,
                 order: Any = None) -> dict[str, list[Any]]:
        stmt = select(model).where(col(model.portfolio_id).in_(portfolio_ids), *where)
        stmt = stmt.order_by(order if order is not None else col(model.created_at), col(model.id))
        out: dict[str, list[Any]] = {pid: [] for pid in portfolio_ids}
        with self.db.tenant_session(tenant_id) as session:
            for row in session.exec(stmt):
                out[row.portfolio_id].append(row)
        return out

    def positions(self, tenant_id: str, portfolio_ids: list[str]) -> dict[str, list[Position]]:
        return self._grouped(tenant_id, Position, portfolio_ids)

    def cash_balances(self, tenant_id: str, portfolio_ids: list[str]) -> dict[str, list[CashBalance]]:
        return self._grouped(tenant_id, CashBalance, portfolio_ids, order=col(CashBalance.currency))

    def unsettled_trades(self, tenant_id: str, portfolio_ids: list[str]
                         ) -> dict[str, list[UnsettledTrade]]:
        return self._grouped(tenant_id, UnsettledTrade, portfolio_ids,
                             order=col(UnsettledTrade.settles_on))

    def hedge_positions(self, tenant_id: str, portfolio_ids: list[str], *, open_on: date | None = None
                        ) -> dict[str, list[HedgePosition]]:
        where = [] if open_on is None else [col(HedgePosition.trade_date) <= open_on,
                                            col(HedgePosition.value_date) > open_on]
        return self._grouped(tenant_id, HedgePosition, portfolio_ids, *where)

    def record_position(self, tenant_id: str, portfolio_id: str, *, instrument: str, mic: str,
                        currency: str, quantity: Decimal | str, price: Decimal | str) -> Position:
        """Set the holding of `instrument` on `mic` (replacing an earlier one; quantity 0 keeps
        a flat position). A holding is kept in one currency: recording it in another is
        POSITION_CURRENCY_MISMATCH (a conflict: the same instrument cannot be priced in two
        currencies at once; record it at 0 and under the new currency's listing instead)."""
        instrument = instrument.strip()
        if not INSTRUMENT.match(instrument):
            raise InvalidInput("instrument must be 1 to 64 letters, digits or . _ : / -, such as "
                               "ASML.XAMS or an ISIN", code="INSTRUMENT_INVALID")
        if not MIC.match(mic):
            raise InvalidInput("mic must be an ISO 10383 market identifier code such as XNYS",
                               code="MIC_INVALID")
        self.currency(currency)
        qty = self.number(quantity, "quantity", "QUANTITY_INVALID")
        px = self.number(price, "price", "PRICE_INVALID", positive=True)
        with self.db.tenant_transaction(tenant_id) as session:
            self._portfolio(session, portfolio_id)
            row = session.exec(select(Position).where(
                Position.portfolio_id == portfolio_id, Position.instrument == instrument,
                Position.mic == mic)).first()
            if row is None:
                row = Position(tenant_id=tenant_id, portfolio_id=portfolio_id,
                               instrument=instrument, mic=mic, currency=currency, quantity=qty,
                               price=px)
            elif row.currency != currency:
                raise Conflict(f"{instrument} on {mic} is held in {row.currency}, not {currency}",
                               code="POSITION_CURRENCY_MISMATCH",
                               details={"positionId": row.id, "currency": row.currency})
            else:
                row.quantity, row.price, row.updated_at = qty, px, utcnow()
            session.add(row)
        return row

    def set_cash_balance(self, tenant_id: str, portfolio_id: str, *, currency: str,
                         amount: Decimal | str) -> CashBalance:
        self.currency(currency)
        value = self.number(amount, "amount", "AMOUNT_INVALID")
        with self.db.tenant_transaction(tenant_id) as session:
            self._portfolio(session, portfolio_id)
            row = session.exec(select(CashBalance).where(
                CashBalance.portfolio_id == portfolio_id, CashBalance.currency == currency)).first()
            if row is None:
                row = CashBalance(tenant_id=tenant_id, portfolio_id=portfolio_id, currency=currency,
                                  amount=value)
            else:
                row.amount, row.updated_at = value, utcnow()
            session.add(row)
        return row

    def record_unsettled_trade(self, tenant_id: str, portfolio_id: str, *, currency: str,
                               amount: Decimal | str, settles_on: date, reference: str = ""
                               ) -> UnsettledTrade:
        self.currency(currency)
        value = self.number(amount, "amount", "AMOUNT_INVALID")
        if value == 0:
            raise InvalidInput("amount must not be zero", code="AMOUNT_INVALID")
        if len(reference) > 64:
            raise InvalidInput("reference must be at most 64 characters", code="REFERENCE_INVALID")
        with self.db.tenant_transaction(tenant_id) as session:
            self._portfolio(session, portfolio_id)
            row = UnsettledTrade(tenant_id=tenant_id, portfolio_id=portfolio_id, currency=currency,
                                 amount=value, settles_on=settles_on, reference=reference.strip())
            session.add(row)
        return row

    # Exposure.
    @staticmethod
    def _holdings(session: Session, portfolio_id: str, on: date) -> dict[str, Holdings]:
        """Positions, cash, trades not yet settled on `on`, and hedges open on `on`."""
        positions = session.exec(select(Position).where(Position.portfolio_id == portfolio_id))
        cash = session.exec(select(CashBalance).where(CashBalance.portfolio_id == portfolio_id))
        trades = session.exec(select(UnsettledTrade).where(
            UnsettledTrade.portfolio_id == portfolio_id, col(UnsettledTrade.settles_on) >= on))
        hedges = session.exec(select(HedgePosition).where(
            HedgePosition.portfolio_id == portfolio_id, col(HedgePosition.trade_date) <= on,
            col(HedgePosition.value_date) > on))
        return maths.gather(
            positions=[(p.currency, p.quantity, p.price) for p in positions],
            cash=[(c.currency, c.amount) for c in cash],
            unsettled=[(t.currency, t.amount) for t in trades],
            hedges=[(h.currency, h.notional) for h in hedges])

    def _spots(self, holdings: Iterable[str], base: str, at: datetime) -> dict[str, Spot]:
        return {c: self.rates.spot(c, base, at) for c in sorted(holdings) if c != base}

    def exposure(self, tenant_id: str, portfolio_id: str, at: datetime | None = None) -> Exposure:
        at = self.instant(at)
        with self.db.tenant_session(tenant_id) as session:
            portfolio = self._portfolio(session, portfolio_id)
            holdings = self._holdings(session, portfolio_id, at.date())
        spots = self._spots(holdings, portfolio.base_currency, at)
        return maths.value(holdings, portfolio.base_currency,
                           {c: s.rate for c, s in spots.items()}, at)

    # Hedging.
    def propose_hedge(self, tenant_id: str, portfolio_id: str, policy: HedgePolicy,
                      at: datetime | None = None) -> HedgeProposal:
        """Hedge orders that would bring the portfolio to `policy`, priced at `at` (default
        now), with the exposure before and after them. Nothing is recorded."""
        at = self.instant(at)
        with self.db.tenant_session(tenant_id) as session:
            portfolio = self._portfolio(session, portfolio_id)
            holdings = self._holdings(session, portfolio_id, at.date())
        return self._propose(portfolio, holdings, policy, at)

    def _propose(self, portfolio: Portfolio, holdings: dict[str, Holdings], policy: HedgePolicy,
                 at: datetime) -> HedgeProposal:
        base = portfolio.base_currency
        spots = self._spots(holdings, base, at)
        rates = {c: s.rate for c, s in spots.items()}
        orders: list[HedgeOrder] = []
        estimates: dict[str, RatioEstimate] = {}
        for currency, spot in spots.items():
            h = holdings[currency]
            band = policy.band if policy.kind is PolicyKind.DYNAMIC else None
            if policy.kind is PolicyKind.MINIMUM_VARIANCE:
                if h.gross == 0:
                    target = Decimal(0)  # nothing to hedge: any open hedge is unwound
                else:
                    estimates[currency] = self.estimate_ratio(currency, base, at, policy)
                    target = estimates[currency].ratio
            else:
                target = policy.ratio or Decimal(0)
            sell = maths.trade_for(h, target, band)
            if sell == 0:
                continue
            quote = self.forward(spot, policy.tenor_days)
            orders.append(maths.order(h, base, sell, quote, target, policy.tenor_days, at.date()))
        before = maths.value(holdings, base, rates, at)
        after = maths.value(maths.after_orders(holdings, orders), base, rates, at)
        return HedgeProposal(portfolio_id=portfolio.id, policy=policy, at=at, orders=tuple(orders),
                             before=before, after=after, estimates=estimates)

    def estimate_ratio(self, foreign: str, base: str, at: datetime, policy: HedgePolicy
                       ) -> RatioEstimate:
        """h* from daily changes over the lookback of the spot and of the constant-tenor forward
        (each day's forward by covered interest parity from that day's spot and rates)."""
        start = at - timedelta(days=policy.lookback_days)
        rows, provider = self.rates.history(foreign, base, start, at, MIN_CHANGES + 1)
        spots = [r.rate for r in rows]
        forwards = [maths.cip_forward(r.rate, foreign, base,
                                      self.rates.interest_rate(foreign, r.at, provider),
                                      self.rates.interest_rate(base, r.at, provider),
                                      policy.tenor_days) for r in rows]
        try:
            return maths.min_variance_ratio(maths.changes(spots), maths.changes(forwards))
        except ValueError as exc:
            raise DomainError(f"{foreign}/{base}: {exc}", code="FX_HISTORY_INSUFFICIENT") from None

    def execute_hedge(self, principal: Principal, portfolio_id: str, policy: HedgePolicy,
                      idempotency_key: str) -> HedgeExecuted:
        """Propose at the current rates and record the orders as open hedge positions, so
        exposure reflects them at once.

        The orders issue's routing does not exist yet: orders are not sent to a venue or a
        dealer, only recorded as HedgePosition rows (booked at the proposed forward rate).
        When routing exists, this is where the orders go out.

        Idempotent by key (per tenant): the same key with the same portfolio and policy returns
        the first execution unchanged, even if it traded nothing; with anything else it is
        IDEMPOTENCY_KEY_REUSED. Executions on one portfolio take turns (see Portfolio.updated_at).
        """
        key = self._key(idempotency_key)
        if key is None:
            raise InvalidInput("idempotencyKey is required", code="IDEMPOTENCY_KEY_INVALID")
        tenant_id = principal.tenant_id
        canonical = policy.canonical()
        with self.db.tenant_session(tenant_id) as session:
            existing = self._execution_by_key(session, key)
            if existing is not None:
                return self._replay(session, existing, portfolio_id, canonical)
            at = self.clock()
            locked = session.exec(update(Portfolio).where(col(Portfolio.id) == portfolio_id)
                                  .values(updated_at=at))  # type: ignore[call-overload]
            if locked.rowcount == 0:
                session.rollback()
                raise NotFound(f"no portfolio {portfolio_id}", code="PORTFOLIO_NOT_FOUND")
            existing = self._execution_by_key(session, key)  # committed while we waited
            if existing is not None:
                session.rollback()
                return self._replay(session, existing, portfolio_id, canonical)
            portfolio = self._portfolio(session, portfolio_id)
            proposal = self._propose(portfolio, self._holdings(session, portfolio_id, at.date()),
                                     policy, at)
            execution = HedgeExecution(
                tenant_id=tenant_id, portfolio_id=portfolio_id, idempotency_key=key,
                policy=canonical, valued_at=at, created_by=principal.user_id,
                summary={"before": exposure_json(proposal.before),
                         "after": exposure_json(proposal.after),
                         "estimates": {c: estimate_json(e) for c, e in proposal.estimates.items()}})
            session.add(execution)
            session.flush()
            positions = [HedgePosition(
                tenant_id=tenant_id, portfolio_id=portfolio_id, execution_id=execution.id,
                pair=o.pair, currency=o.currency, base_currency=o.base_currency,
                notional=o.notional, spot_rate=o.spot_rate, forward_rate=o.forward_rate,
                tenor_days=o.tenor_days, trade_date=o.trade_date, value_date=o.value_date,
                policy=policy.kind.value, target_ratio=o.target_ratio, idempotency_key=key,
                created_at=at) for o in proposal.orders]
            session.add_all(positions)
            try:
                session.commit()
            except IntegrityError:
                # The same key won a race on another portfolio's lock: answer as a retry would.
                session.rollback()
                existing = self._execution_by_key(session, key)
                if existing is None:
                    raise
                return self._replay(session, existing, portfolio_id, canonical)
        return HedgeExecuted(execution, positions, proposal.before, proposal.after,
                             dict(proposal.estimates), replayed=False)

    @staticmethod
    def _execution_by_key(session: Session, key: str) -> HedgeExecution | None:
        return session.exec(select(HedgeExecution).where(HedgeExecution.idempotency_key == key)).first()

    @staticmethod
    def _replay(session: Session, execution: HedgeExecution, portfolio_id: str,
                canonical: dict[str, Any]) -> HedgeExecuted:
        if execution.portfolio_id != portfolio_id or execution.policy != canonical:
            raise Conflict("idempotencyKey was used for a different request",
                           code="IDEMPOTENCY_KEY_REUSED")
        positions = list(session.exec(select(HedgePosition).where(
            HedgePosition.execution_id == execution.id).order_by(col(HedgePosition.currency))))
        summary = execution.summary
        return HedgeExecuted(execution, positions, exposure_from_json(summary["before"]),
                             exposure_from_json(summary["after"]),
                             {c: estimate_from_json(e) for c, e in summary["estimates"].items()},
                             replayed=True)

    def execution_positions(self, tenant_id: str, execution_id: str) -> list[HedgePosition]:
        with self.db.tenant_session(tenant_id) as session:
            return list(session.exec(select(HedgePosition).where(
                HedgePosition.execution_id == execution_id).order_by(col(HedgePosition.currency))))


# What an execution answered, kept as JSON (Decimals as strings) so a retry answers the same.
_AMOUNTS = ("long", "short", "cash", "unsettled", "hedged", "gross", "net", "spot",
            "gross_in_base", "net_in_base")


def exposure_json(e: Exposure) -> dict[str, Any]:
    return {"base_currency": e.base_currency, "at": e.at.isoformat(),
            "net_in_base": str(e.net_in_base), "foreign_gross_in_base": str(e.foreign_gross_in_base),
            "foreign_net_in_base": str(e.foreign_net_in_base),
            "currencies": [{"currency": c.currency,
                            "hedge_ratio": None if c.hedge_ratio is None else str(c.hedge_ratio),
                            **{k: str(getattr(c, k)) for k in _AMOUNTS}} for c in e.currencies]}


def exposure_from_json(data: dict[str, Any]) -> Exposure:
    return Exposure(
        base_currency=data["base_currency"], at=datetime.fromisoformat(data["at"]),
        net_in_base=Decimal(data["net_in_base"]),
        foreign_gross_in_base=Decimal(data["foreign_gross_in_base"]),
        foreign_net_in_base=Decimal(data["foreign_net_in_base"]),
        currencies=tuple(CurrencyExposure(
            currency=c["currency"],
            hedge_ratio=None if c["hedge_ratio"] is None else Decimal(c["hedge_ratio"]),
            **{k: Decimal(c[k]) for k in _AMOUNTS}) for c in data["currencies"]))


def estimate_json(e: RatioEstimate) -> dict[str, Any]:
    return {"ratio": str(e.ratio), "effectiveness": str(e.effectiveness),
            "observations": e.observations}


def estimate_from_json(data: dict[str, Any]) -> RatioEstimate:
    return RatioEstimate(Decimal(data["ratio"]), Decimal(data["effectiveness"]),
                         int(data["observations"]))
