"""What an order is checked against, for submit and amend alike: each account's book for one
batch (positions, unused locates, credit in use, recent orders), the market reference price,
the FX rate and the order increment; and the use of locates when a short sale is claimed."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from sqlalchemy import func
from sqlmodel import Session, col, select

from gateway.compliance.errors import CREDIT_FX_UNAVAILABLE
from gateway.errors import DomainError
from gateway.trading.common import (
    ONE,
    OPEN_STATUSES,
    ORDERS,
    SHORT_OR_BUY,
    UNFILLED_ENDS,
    ZERO,
)
from gateway.trading.models import AccountPosition, Locate, Order, TradingAccount
from plugins.sdk import (
    AccountState,
    ClientProfile,
    Denial,
    MarketState,
    OrderRequest,
    Side,
    TenantControls,
)

if TYPE_CHECKING:
    from gateway.trading.service import OrderService


@dataclass
class _AccountBook:
    """One account's state for the checks of one batch. Credit is in the account's currency:
    open orders in another currency are converted at `fx_rates` (currency -> rate); those whose
    currency has no rate are in `unvalued`, and then the credit used is unknown."""

    row: TradingAccount
    positions: dict[str, Decimal]
    locates: dict[str, Decimal]
    credit_used: Decimal
    recent: list[datetime]
    # time in force -> order_fingerprint -> when an alike order was last accepted
    fingerprints: dict[str, dict[tuple[Any, ...], datetime]]
    fx_rates: dict[str, Decimal] = field(default_factory=dict)
    unvalued: set[str] = field(default_factory=set)

    def state(self, time_in_force: str | None = None) -> AccountState:
        """For an order with this time in force: the duplicate guard compares it with orders
        of the same time in force only (an IOC is not a resent FOK)."""
        row = self.row
        if time_in_force is not None:
            seen = self.fingerprints.get(time_in_force, {})
        else:
            seen = {k: t for by_tif in self.fingerprints.values() for k, t in by_tif.items()}
        return AccountState(row.code, row.currency, row.credit_limit, self.credit_used, row.equity,
                            self.positions, self.locates, self.recent, seen)

    def client(self) -> ClientProfile:
        row = self.row
        return ClientProfile(row.code, row.client_type, row.domicile, (row.lei or "").strip() or None,
                             frozenset(row.assessments))


def _books(service: OrderService, session: Session, tenant_id: str, codes: set[str],
           controls: TenantControls, now: datetime) -> dict[str, _AccountBook]:
    if not codes:
        return {}
    accounts = session.exec(select(TradingAccount).where(col(TradingAccount.code).in_(codes))).all()
    books = {a.code: _AccountBook(a, {}, {}, ZERO, [], {}) for a in accounts}
    if not books:
        return books
    found = list(books)
    for p in session.exec(select(AccountPosition).where(col(AccountPosition.account).in_(found))):
        books[p.account].positions[p.instrument_key] = p.quantity
    for loc in session.exec(select(Locate).where(col(Locate.account).in_(found),
                                                 col(Locate.remaining) > 0)
                            .order_by(col(Locate.created_at))):
        if loc.expires_at is not None and loc.expires_at <= now:
            continue
        book = books[loc.account]
        book.locates[loc.instrument_key] = book.locates.get(loc.instrument_key, ZERO) + loc.remaining
    price = func.coalesce(Order.limit_price, Order.stop_price, Order.avg_px)
    used = session.exec(
        select(Order.account, Order.currency, func.sum(Order.leaves_qty * price))
        .where(col(Order.account).in_(found), col(Order.status).in_(OPEN_STATUSES),
               col(Order.side).in_(SHORT_OR_BUY))
        .group_by(Order.account, Order.currency)).all()
    for code, currency, total in used:
        # Credit is in the account's currency: an open order in another is converted at
        # the current rate; without a rate the credit in use is unknown (see _prepare).
        book = books[code]
        if not total:
            continue
        rate = _credit_rate(service, book, currency, now)
        if rate is None:
            book.unvalued.add(currency)
        else:
            book.credit_used += Decimal(total) * rate
    window = max(controls.throttle_window if controls.throttle_max_orders else timedelta(0),
                 controls.duplicate_window or timedelta(0))
    if window > timedelta(0):
        t = ORDERS.c
        recent = session.execute(
            select(t.account, t.symbol, t.mic, t.side, t.ord_type, t.time_in_force, t.quantity,
                   t.limit_price, t.stop_price, t.status, t.cum_qty, t.created_at)
            .where(t.tenant_id == tenant_id, t.account.in_(found), t.created_at >= now - window)
            .order_by(t.created_at))
        for o in recent:
            book = books[o.account]
            book.recent.append(o.created_at)
            if o.status in UNFILLED_ENDS and not o.cum_qty:
                continue  # denied, or killed/cancelled/rejected/expired having traded nothing
            # order_fingerprint's shape, from the stored columns, per time in force
            book.fingerprints.setdefault(o.time_in_force, {})[
                (o.account, o.symbol, o.mic, o.side, o.ord_type, o.quantity, o.limit_price,
                 o.stop_price)] = o.created_at
    return books


def _credit_rate(service: OrderService, book: _AccountBook, currency: str, now: datetime
                 ) -> Decimal | None:
    """Units of the account's currency per unit of `currency` (1 for its own), once per
    book; None when no FX provider has the rate."""
    if currency == book.row.currency:
        return ONE
    if currency not in book.fx_rates:
        try:
            book.fx_rates[currency] = service._fx(currency, book.row.currency, now)
        except DomainError:
            return None
    return book.fx_rates[currency]


def _reference(service: OrderService, key: str, now: datetime) -> tuple[MarketState, Decimal | None]:
    """The MarketState of the listing `key` (SYMBOL.MIC, the routed venue's) and the mid, from
    the market-state feed (gateway/marketdata/state.py): quote, previous close, last price,
    halts, short-sale restriction and list. Called once per instrument and venue per batch."""
    return service.market_state.market(key, now)


def _fx_and_lot(service: OrderService, listing: Any, book: _AccountBook, request: OrderRequest,
                reference: Decimal | None, now: datetime) -> tuple[Decimal | None, Decimal]:
    """The FX rate (listing currency to the account's) and the order increment compliance
    checks an order against; submit and amend both use these."""
    fx = None
    if listing.currency != book.row.currency:
        try:
            fx = service._fx(listing.currency, book.row.currency, now)
        except DomainError:
            fx = None  # compliance denies it: COMPLIANCE_FX_RATE_MISSING
    price = request.limit_price or request.stop_price or reference
    try:
        venue_lot = service.markets.directory.lot_size(request.mic, price) if price else None
    except DomainError:  # a venue an installed connector brings: its own lot, from the listing
        venue_lot = None
    # The lot the venue's connector enforces (the instrument's, unless the venue trades
    # fractions): compliance and the venue agree on the order increment.
    lot = venue_lot if venue_lot is not None and venue_lot < 1 else Decimal(listing.lot_size)
    return fx, lot


def _fx(service: OrderService, base: str, quote: str, at: datetime) -> Decimal:
    """A rate from the service's FX source (FX provider plugins unless one was given). Called
    as `service._fx`: a test replaces it on one service."""
    if service.fx_rate is None:
        with service._setup_lock:
            if service.fx_rate is None:
                from gateway.fx.service import FxService

                fx = FxService.from_plugins(service.db, service.plugins, service.max_page_size)
                service.fx_rate = lambda b, q, t: fx.rate(b, q, t).rate
    return service.fx_rate(base, quote, at)


def _listing(service: OrderService, key: str) -> Any:
    try:
        return service.market_data.instrument(key)
    except DomainError:
        return None


def _take_locates(session: Session, tenant_id: str, account: str, key: str, need: Decimal,
                  now: datetime) -> None:
    """Use `need` located shares, oldest locate first; an expired one covers nothing (as
    in _books)."""
    rows = session.exec(select(Locate).where(Locate.tenant_id == tenant_id,
                                             Locate.account == account,
                                             Locate.instrument_key == key,
                                             col(Locate.remaining) > 0)
                        .order_by(col(Locate.created_at))).all()
    for loc in rows:
        if need <= 0:
            break
        if loc.expires_at is not None and loc.expires_at <= now:
            continue
        take = min(need, loc.remaining)
        loc.remaining -= take
        need -= take
        session.add(loc)
    session.flush()


def _release_own(book: _AccountBook, order: Order, listing: Any) -> None:
    """Take the amended order's own reservation out of the book (as _books counted it), so
    the amendment is not checked against itself: its credit and, for a short sale, the
    located shares its unfilled part holds."""
    if order.status not in OPEN_STATUSES:
        return
    rate = ONE if order.currency == book.row.currency else book.fx_rates.get(order.currency)
    if order.side in SHORT_OR_BUY and rate is not None:  # as _books converted it
        price = order.limit_price if order.limit_price is not None else (
            order.stop_price if order.stop_price is not None else order.avg_px)
        book.credit_used = max(book.credit_used - order.leaves_qty * (price or ZERO) * rate, ZERO)
    if order.side == str(Side.SELL_SHORT):
        key = listing.isin or listing.key
        book.locates[key] = book.locates.get(key, ZERO) + order.leaves_qty


def _credit_unknown(book: _AccountBook) -> Denial:
    pairs = ", ".join(f"{c}/{book.row.currency}" for c in sorted(book.unvalued))
    return Denial(CREDIT_FX_UNAVAILABLE, "credit", "", f"the credit in use cannot be valued in "
                  f"{book.row.currency}: open orders in {', '.join(sorted(book.unvalued))} and no "
                  f"{pairs} rate", f"a {pairs} rate", "none")
