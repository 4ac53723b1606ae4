"""Desk views: positions across accounts valued now, with realised and unrealised P&L, fees and
P&L net of fees, in the instrument's currency, the account's and the tenant's base currency.

- The mark is the mid of the instrument's current quote (market data at the markets clock's
  now); no quote: unrealised P&L is unknown (null), with a gap NO_QUOTE. A flat position has
  no unrealised P&L (0) and needs no quote.
- Fees are the sum of the position's fills' fees (a rebate is negative), over the position's
  whole life, as its realised P&L is. Net = realised + unrealised - fees.
- Conversion is at the current rate (translation at spot, the order service's FX source, as
  credit uses), not at each fill's rate. No rate: that currency's amounts are null with a gap
  FX_RATE_MISSING, never a number at a wrong rate.
- Totals (per account in its currency and in the base currency, overall in the base currency)
  add up each amount; one unknown part makes that total unknown, with the parts' gaps.

The tenant's base currency is `Tenant.base_currency` (set at onboarding, default USD).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import TYPE_CHECKING

from sqlalchemy import func, or_
from sqlalchemy import select as core_select
from sqlmodel import col, select

from gateway.errors import DomainError
from gateway.tenancy.models import Tenant
from gateway.trading.common import ZERO, AccountNotFound
from gateway.trading.models import AccountPosition, Execution, Order, TradingAccount
from gateway.trading.queries import FilterInvalid

if TYPE_CHECKING:
    from gateway.trading.service import OrderService

NO_QUOTE = "NO_QUOTE"
FX_RATE_MISSING = "FX_RATE_MISSING"


@dataclass(frozen=True)
class Gap:
    """Why an amount is unknown: `code` (NO_QUOTE, FX_RATE_MISSING) and what it concerns (an
    instrument key, or a currency pair FROM/TO)."""

    code: str
    subject: str


@dataclass(frozen=True)
class Amounts:
    """P&L in one currency; None where it cannot be known (see `gaps`)."""

    currency: str
    rate: Decimal | None  # from the instrument's currency (1 when the same); None: no rate
    realized: Decimal | None
    unrealized: Decimal | None
    fees: Decimal | None
    net: Decimal | None
    market_value: Decimal | None
    gaps: tuple[Gap, ...] = ()


@dataclass(frozen=True)
class PositionValue:
    row: AccountPosition
    account_currency: str
    mark: Decimal | None
    fees: Decimal
    local: Amounts  # the instrument's currency
    account: Amounts
    base: Amounts


@dataclass(frozen=True)
class AccountTotals:
    account: str
    in_account: Amounts
    in_base: Amounts


@dataclass(frozen=True)
class DeskValuation:
    at: datetime
    base_currency: str
    positions: list[PositionValue]
    accounts: list[AccountTotals]
    total: Amounts  # in the base currency


@dataclass
class _Rates:
    """FX rates and marks for one valuation, each asked for once."""

    service: OrderService
    at: datetime
    fx: dict[tuple[str, str], Decimal | None] = field(default_factory=dict)
    marks: dict[str, Decimal | None] = field(default_factory=dict)

    def rate(self, base: str, quote: str) -> Decimal | None:
        if base == quote:
            return Decimal(1)
        if (base, quote) not in self.fx:
            try:
                self.fx[(base, quote)] = self.service._fx(base, quote, self.at)
            except DomainError:  # no provider has the pair: unknown, never a guess
                self.fx[(base, quote)] = None
        return self.fx[(base, quote)]

    def mark(self, key: str) -> Decimal | None:
        if key not in self.marks:
            try:
                quote = self.service.market_data.quote(key, self.at)
            except DomainError:  # no longer listed, or its source failed: no mark
                quote = None
            mid = None
            if quote is not None:
                bid, ask = quote.bid or None, quote.ask or None
                mid = (bid + ask) / 2 if bid and ask else (bid or ask)
            self.marks[key] = mid
        return self.marks[key]


def valuate(service: OrderService, tenant_id: str, accounts: Sequence[str] | None = None,
            instrument: str | None = None) -> DeskValuation:
    """The tenant's positions in `accounts` (None: every account; an unknown code is
    ACCOUNT_NOT_FOUND; an empty list is FILTER_INVALID, as for orders and trades: it would
    match nothing, which is never what was meant), optionally of one instrument (ISIN,
    SYMBOL.MIC or symbol), valued now."""
    if accounts is not None and not accounts:
        raise FilterInvalid("accounts names at least one")
    at = service.markets.now()
    wanted = None if accounts is None else list(dict.fromkeys(a.strip() for a in accounts))
    with service.db.tenant_session(tenant_id) as session:
        base_currency = session.exec(select(Tenant)).one().base_currency
        stmt = select(TradingAccount)
        if wanted is not None:
            stmt = stmt.where(col(TradingAccount.code).in_(wanted))
        currencies = {a.code: a.currency for a in session.exec(stmt)}
        missing = [a for a in wanted or [] if a not in currencies]
        if missing:
            raise AccountNotFound(f"no trading account {missing[0]!r}", details={"accounts": missing})
        rows: list[AccountPosition] = []
        if currencies:
            pstmt = select(AccountPosition).where(col(AccountPosition.account).in_(list(currencies)))
            if instrument is not None:
                pstmt = pstmt.where(_instrument_clause(service, instrument))
            rows = list(session.exec(pstmt.order_by(col(AccountPosition.account),
                                                    col(AccountPosition.instrument_key))))
        fees = _fees(session, {r.account for r in rows})
    rates = _Rates(service, at)
    values = [_value(r, currencies[r.account], base_currency,
                     fees.get((r.account, r.instrument_key), ZERO), rates) for r in rows]
    totals = []
    for code in sorted(currencies):
        mine = [v for v in values if v.row.account == code]
        totals.append(AccountTotals(code, _sum(currencies[code], [v.account for v in mine]),
                                    _sum(base_currency, [v.base for v in mine])))
    return DeskValuation(at, base_currency, values, totals,
                         _sum(base_currency, [v.base for v in values]))


def instrument_keys(service: OrderService, instrument: str) -> set[str]:
    """The keys a holding or locate of `instrument` may be stored under (ISIN, else SYMBOL.MIC):
    the text as given, and for a listing key its key and ISIN."""
    text = instrument.strip().upper()
    keys = {text}
    try:
        listing = service.market_data.instrument(text)
        keys |= {listing.key} | ({listing.isin} if listing.isin else set())
    except DomainError:
        pass  # an ISIN, a bare symbol, or a listing no longer there: matched as given
    return keys


def _instrument_clause(service: OrderService, instrument: str) -> object:
    """A position is keyed by ISIN, else SYMBOL.MIC: a listing's key or a bare symbol finds it too."""
    return or_(col(AccountPosition.instrument_key).in_(instrument_keys(service, instrument)),
               AccountPosition.symbol == instrument.strip().upper())


def _fees(session: object, accounts: set[str]) -> dict[tuple[str, str], Decimal]:
    """Fees per (account, position key), summed in SQL. The key is the one a fill moves
    (reports._move_position: the order's ISIN, else SYMBOL.MIC of the order's venue)."""
    if not accounts:
        return {}
    stmt = (select(Execution.account, Order.isin, Order.symbol, Order.mic, func.sum(Execution.fee))
            .join(Order, col(Order.id) == col(Execution.order_id))
            .where(col(Execution.account).in_(accounts))
            .group_by(Execution.account, Order.isin, Order.symbol, Order.mic))
    out: dict[tuple[str, str], Decimal] = {}
    for account, isin, symbol, mic, total in session.exec(stmt):  # type: ignore[attr-defined]
        key = (account, isin or f"{symbol}.{mic}")
        out[key] = out.get(key, ZERO) + Decimal(total or 0)
    return out


def _value(row: AccountPosition, account_currency: str, base_currency: str, fees: Decimal,
           rates: _Rates) -> PositionValue:
    listing = f"{row.symbol}.{row.mic}"
    gaps: tuple[Gap, ...] = ()
    if row.quantity == 0:
        mark, unrealized, value = None, ZERO, ZERO
    else:
        mark = rates.mark(listing)
        if mark is None:
            unrealized = value = None
            gaps = (Gap(NO_QUOTE, listing),)
        else:
            unrealized = row.quantity * (mark - row.avg_price)
            value = row.quantity * mark
    net = None if unrealized is None else row.realized_pnl + unrealized - fees
    local = Amounts(row.currency, Decimal(1), row.realized_pnl, unrealized, fees, net, value, gaps)
    return PositionValue(row, account_currency, mark, fees, local,
                         _convert(local, account_currency, rates),
                         _convert(local, base_currency, rates))


def _convert(local: Amounts, currency: str, rates: _Rates) -> Amounts:
    rate = rates.rate(local.currency, currency)
    if rate is None:
        gap = Gap(FX_RATE_MISSING, f"{local.currency}/{currency}")
        return Amounts(currency, None, None, None, None, None, None, (*local.gaps, gap))

    def times(x: Decimal | None) -> Decimal | None:
        return None if x is None else x * rate

    return Amounts(currency, rate, times(local.realized), times(local.unrealized), times(local.fees),
                   times(local.net), times(local.market_value), local.gaps)


def _sum(currency: str, parts: Iterable[Amounts]) -> Amounts:
    parts = list(parts)

    def total(name: str) -> Decimal | None:
        values = [getattr(p, name) for p in parts]
        return None if any(v is None for v in values) else sum(values, ZERO)

    gaps = tuple(dict.fromkeys(g for p in parts for g in p.gaps))
    return Amounts(currency, None, total("realized"), total("unrealized"), total("fees"),
                   total("net"), total("market_value"), gaps)


def holdings(service: OrderService, tenant_id: str, columns: Sequence[str],
             accounts: Sequence[str] | None = None, instrument: str | None = None
             ) -> list[dict[str, object]]:
    """The positions `valuate` values, as stored, reading only `columns` of each (issue 14: a
    query that asks for no valued amount needs no quote, rate or fee sum), each with its
    account's currency as `account_currency`: the same positions in the same order, the same
    errors (FILTER_INVALID, ACCOUNT_NOT_FOUND). Core statements carrying the tenant filter
    themselves (the session's tenant hook does not see them)."""
    if accounts is not None and not accounts:
        raise FilterInvalid("accounts names at least one")
    wanted = None if accounts is None else list(dict.fromkeys(a.strip() for a in accounts))
    account_table, position_table = TradingAccount.__table__, AccountPosition.__table__  # type: ignore[attr-defined]
    stmt = core_select(account_table.c.code, account_table.c.currency).where(
        account_table.c.tenant_id == tenant_id)
    if wanted is not None:
        stmt = stmt.where(account_table.c.code.in_(wanted))
    with service.db.engine.connect() as conn:
        currencies = {code: currency for code, currency in conn.execute(stmt)}
        missing = [a for a in wanted or [] if a not in currencies]
        if missing:
            raise AccountNotFound(f"no trading account {missing[0]!r}",
                                  details={"accounts": missing})
        if not currencies:
            return []
        picked = dict.fromkeys(("account", "instrument_key", *columns))
        pstmt = core_select(*(position_table.c[name] for name in picked)).where(
            position_table.c.tenant_id == tenant_id,
            position_table.c.account.in_(list(currencies)))
        if instrument is not None:
            pstmt = pstmt.where(_instrument_clause(service, instrument))
        rows = conn.execute(pstmt.order_by(position_table.c.account,
                                           position_table.c.instrument_key)).all()
    return [{**row._mapping, "account_currency": currencies[row.account]} for row in rows]
