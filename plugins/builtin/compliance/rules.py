"""The rules every built-in pack shares, and the factories of rules packs parameterise.

A rule is a function `CheckContext -> Violation | None`, wrapped in a named `ComplianceRule`.
Rules read only their context (no I/O, no clock: `ctx.now` is the instant of the check) and
keep no state, so one rule object serves every thread. They are written for the pass path:
the common case does a few attribute reads and Decimal comparisons, and messages are only
formatted on a denial. Every denial names the limit and the value that tripped it.

Several rules step aside when another one owns the problem, so one cause gives one denial:
with no reference price (REFERENCE_PRICE_MISSING) or no FX rate (FX_RATE_MISSING) the value
of the order is unknown and the value-based rules do not run; a rule never passes because of
that, since the order is denied by the owner.

What is simplified, and why:
- The price collar is symmetric around the reference price; a passive order far from the
  market is refused like an aggressive one (fat-finger protection errs towards asking again).
- Credit is consumed by BUY and SELL_SHORT at their full value; a SELL consumes none. Margin
  models (haircuts, netting) belong to the credit system that fills `AccountState`.
- Position, concentration and REDUCING checks assume the whole order fills.
- The ISIN and LEI checks prove the check digits, not that the code is issued or active.
"""

from __future__ import annotations

from bisect import bisect_left
from datetime import timedelta
from decimal import Decimal

from plugins.builtin.compliance import codes
from plugins.builtin.compliance.validators import is_valid_isin, is_valid_lei
from plugins.sdk import CheckContext, ComplianceRule, Side, Violation, order_fingerprint

_ZERO = Decimal(0)
_HUNDRED = Decimal(100)
_CENT = Decimal("0.01")
_ONE = Decimal(1)


def num(value: object) -> str:
    """A number for a message, in plain notation without trailing zeros: a limit read back as
    1E+1, or from a NUMERIC column as 10.0000000000, reads "10"."""
    return format(value.normalize(), "f") if isinstance(value, Decimal) and value.is_finite() \
        else str(value)


def _seconds(delta: timedelta) -> Decimal:
    seconds = Decimal(str(delta.total_seconds())).normalize()
    return seconds.quantize(_ONE) if seconds.as_tuple().exponent > 0 else seconds  # type: ignore[operator]


# -- shared rules ----------------------------------------------------------------------------

def kill_switch(ctx: CheckContext) -> Violation | None:
    if ctx.controls.kill_switch:
        return Violation(codes.KILL_SWITCH, "the tenant's kill switch is on: no new orders",
                         "OFF", "ON")
    return None


def isin_valid(ctx: CheckContext) -> Violation | None:
    isin = ctx.instrument.isin
    if isin is not None and not is_valid_isin(isin):
        return _isin_invalid(isin)
    return None


def _isin_invalid(isin: str) -> Violation:
    return Violation(codes.ISIN_INVALID,
                     f"{isin!r} is not a valid ISIN (ISO 6166 format and check digit)",
                     "ISO 6166", isin)


ISIN_CACHE_SIZE = 65_536


def isin_valid_cached() -> ComplianceRule:
    """`isin_valid` remembering its answers: an ISIN's validity never changes, and checking
    it (about 2 µs) would be the dearest shared rule. The cache belongs to the rule object, is
    bounded (cleared when full), and a race only computes an answer twice."""
    known: dict[str, bool] = {}

    def check(ctx: CheckContext) -> Violation | None:
        isin = ctx.instrument.isin
        if isin is None:
            return None
        valid = known.get(isin)
        if valid is None:
            valid = is_valid_isin(isin)
            if len(known) >= ISIN_CACHE_SIZE:
                known.clear()
            known[isin] = valid
        return None if valid else _isin_invalid(isin)

    return ComplianceRule("isin", check)


def restricted_list(ctx: CheckContext) -> Violation | None:
    restricted = ctx.controls.restricted
    if not restricted:
        return None
    order = ctx.order
    listing = f"{order.symbol}.{order.mic}"
    for key in (ctx.instrument.isin, listing):
        if key is not None and key in restricted:
            return Violation(codes.RESTRICTED_INSTRUMENT,
                             f"{key} is on the tenant's restricted list", "not restricted", key)
    return None


def trading_halt(ctx: CheckContext) -> Violation | None:
    if ctx.market.halted:
        order = ctx.order
        return Violation(codes.TRADING_HALTED,
                         f"trading in {order.symbol} on {order.mic} is halted", "TRADING",
                         "HALTED")
    return None


def reducing_only(ctx: CheckContext) -> Violation | None:
    """In the REDUCING state only an order that shrinks the position, without flipping it,
    passes: a BUY against a short, a SELL against a long; a SELL_SHORT never."""
    if not ctx.market.reducing:
        return None
    order = ctx.order
    position = ctx.position
    if order.side == Side.BUY:
        allowed = -position if position < 0 else _ZERO
    elif order.side == Side.SELL:
        allowed = position if position > 0 else _ZERO
    else:
        allowed = _ZERO
    if order.quantity > allowed:
        return Violation(codes.REDUCING_ONLY,
                         f"{order.symbol} on {order.mic} accepts only position-reducing orders; "
                         f"this one may be at most {num(allowed)}", allowed, order.quantity)
    return None


def reference_price(ctx: CheckContext) -> Violation | None:
    """Without a reference price the collar cannot be checked and a market order cannot be
    valued: the order waits for a price rather than going out unchecked."""
    if ctx.market.reference_price is None:
        order = ctx.order
        return Violation(codes.REFERENCE_PRICE_MISSING,
                         f"no reference price for {order.symbol} on {order.mic}",
                         "a reference price", "none")
    return None


def fx_rate(ctx: CheckContext) -> Violation | None:
    if ctx.price is not None and ctx.value is None:
        pair = f"{ctx.instrument.currency}/{ctx.account.currency}"
        return Violation(codes.FX_RATE_MISSING,
                         f"the order cannot be valued in the account's currency: no {pair} rate",
                         f"a {pair} rate", "none")
    return None


def price_collar(ctx: CheckContext) -> Violation | None:
    order = ctx.order
    price = order.limit_price if order.limit_price is not None else order.stop_price
    reference = ctx.market.reference_price
    if price is None or reference is None:
        return None
    controls = ctx.controls
    pct = controls.collar_pct
    if controls.collar_pct_by_mic:
        pct = controls.collar_pct_by_mic.get(order.mic, pct)
    # Compared without dividing on the pass path; the percentage is computed for the denial.
    if abs(price - reference) * _HUNDRED > pct * reference:
        deviation = (abs(price - reference) * _HUNDRED / reference).quantize(_CENT)
        return Violation(codes.PRICE_COLLAR,
                         f"price {num(price)} is {num(deviation)}% from the reference price "
                         f"{num(reference)}; "
                         f"the collar allows {num(pct)}%", pct, deviation)
    return None


def max_order_quantity(ctx: CheckContext) -> Violation | None:
    limit = ctx.controls.max_order_quantity
    quantity = ctx.order.quantity
    if limit is not None and quantity > limit:
        return Violation(codes.MAX_ORDER_QUANTITY,
                         f"quantity {num(quantity)} exceeds the maximum order quantity {num(limit)}",
                         limit, quantity)
    return None


def max_order_value(ctx: CheckContext) -> Violation | None:
    limit = ctx.controls.max_order_value
    value = ctx.value
    if limit is not None and value is not None and value > limit:
        return Violation(codes.MAX_ORDER_VALUE,
                         f"order value {num(value.quantize(_CENT))} {ctx.account.currency} exceeds "
                         f"the maximum order value {num(limit)}", limit, value.quantize(_CENT))
    return None


def credit_limit(ctx: CheckContext) -> Violation | None:
    """SEC 15c3-5-style credit threshold: what a BUY or SELL_SHORT would use must fit in what
    is left of the account's limit."""
    value = ctx.value
    if value is None or ctx.order.side == Side.SELL:
        return None
    account = ctx.account
    available = account.credit_limit - account.credit_used
    if value > available:
        return Violation(codes.CREDIT_LIMIT,
                         f"order value {num(value.quantize(_CENT))} {account.currency} exceeds the "
                         f"credit available, {num(available)}", available, value.quantize(_CENT))
    return None


def position_limit(ctx: CheckContext) -> Violation | None:
    """Bounds the absolute position after a full fill; an order that shrinks the position
    always passes, even when the account is already over the limit."""
    limit = ctx.controls.max_position
    if limit is None:
        return None
    after = abs(ctx.position_after)
    if after > limit and after > abs(ctx.position):
        return Violation(codes.POSITION_LIMIT,
                         f"the position would reach {num(after)}, above the limit {num(limit)}",
                         limit, after)
    return None


def concentration_limit(ctx: CheckContext) -> Violation | None:
    """The position's value after a full fill against the account's equity. Reported in
    money: the limit is the largest value the percentage allows, the value what it would be."""
    pct = ctx.controls.max_concentration_pct
    price = ctx.price
    if pct is None or price is None or ctx.value is None:
        return None
    after = abs(ctx.position_after)
    if after <= abs(ctx.position):
        return None
    exposure = after * price
    if ctx.fx_rate is not None:
        exposure *= ctx.fx_rate
    allowed = ctx.account.equity * pct / _HUNDRED
    if exposure > allowed:
        return Violation(codes.CONCENTRATION_LIMIT,
                         f"the position would be worth {num(exposure.quantize(_CENT))} "
                         f"{ctx.account.currency}, above {num(pct)}% of equity "
                         f"({num(allowed.quantize(_CENT))})", allowed.quantize(_CENT),
                         exposure.quantize(_CENT))
    return None


def duplicate_order(ctx: CheckContext) -> Violation | None:
    """The same order (account, instrument, side, type, quantity, prices) accepted again
    within the window is taken for a double submission. A retry of one ClOrdID is not this
    rule's business: order intake answers it with the first order."""
    window = ctx.controls.duplicate_window
    seen = ctx.account.recent_fingerprints
    if window is None or not seen:
        return None
    last = seen.get(order_fingerprint(ctx.order))
    if last is not None and ctx.now - last < window:
        return Violation(codes.DUPLICATE_ORDER,
                         f"an identical order was accepted {_seconds(ctx.now - last)} s ago; "
                         f"the duplicate window is {_seconds(window)} s",
                         _seconds(window), _seconds(ctx.now - last))
    return None


def throttle(ctx: CheckContext) -> Violation | None:
    """At most `throttle_max_orders` order messages per account in any `throttle_window`,
    this one included."""
    controls = ctx.controls
    limit = controls.throttle_max_orders
    if limit is None:
        return None
    recent = ctx.account.recent_orders
    count = len(recent) - bisect_left(recent, ctx.now - controls.throttle_window) + 1
    if count > limit:
        return Violation(codes.THROTTLE,
                         f"{count} order messages in {_seconds(controls.throttle_window)} s; "
                         f"the throttle allows {limit}", Decimal(limit), Decimal(count))
    return None


def lot_size(ctx: CheckContext) -> Violation | None:
    lot = ctx.venue.lot_size
    quantity = ctx.order.quantity
    if quantity % lot:
        return Violation(codes.LOT_SIZE,
                         f"quantity {num(quantity)} is not a multiple of the lot size {num(lot)} on "
                         f"{ctx.venue.mic}", lot, quantity)
    return None


def tick_size(ctx: CheckContext) -> Violation | None:
    tick = ctx.venue.tick_size
    order = ctx.order
    for price in (order.limit_price, order.stop_price):
        if price is not None and price % tick:
            return Violation(codes.TICK_SIZE,
                             f"price {num(price)} is not a multiple of the tick size {num(tick)} on "
                             f"{ctx.venue.mic}", tick, price)
    return None


def short_sale_marking(ctx: CheckContext) -> Violation | None:
    """A sale of more than the account holds is a short sale and must say so (SELL_SHORT):
    Reg SHO Rule 200(g) order marking, the EU/UK short-selling flag of transaction reports,
    and the short-sale marking of the Asia-Pacific markets."""
    order = ctx.order
    if order.side != Side.SELL:
        return None
    long = ctx.position if ctx.position > 0 else _ZERO
    if order.quantity > long:
        return Violation(codes.SHORT_SALE_NOT_FLAGGED,
                         f"selling {num(order.quantity)} with {num(long)} held is a short sale: mark it "
                         f"SELL_SHORT", long, order.quantity)
    return None


def shared_rules() -> tuple[ComplianceRule, ...]:
    """The rules every built-in pack runs, in order (cheap and decisive ones first, though all
    of them run)."""
    return (
        ComplianceRule("kill_switch", kill_switch),
        isin_valid_cached(),
        ComplianceRule("restricted_list", restricted_list),
        ComplianceRule("trading_halt", trading_halt),
        ComplianceRule("reducing_only", reducing_only),
        ComplianceRule("reference_price", reference_price),
        ComplianceRule("fx_rate", fx_rate),
        ComplianceRule("price_collar", price_collar),
        ComplianceRule("max_order_quantity", max_order_quantity),
        ComplianceRule("max_order_value", max_order_value),
        ComplianceRule("credit_limit", credit_limit),
        ComplianceRule("position_limit", position_limit),
        ComplianceRule("concentration_limit", concentration_limit),
        ComplianceRule("duplicate_order", duplicate_order),
        ComplianceRule("throttle", throttle),
        ComplianceRule("lot_size", lot_size),
        ComplianceRule("tick_size", tick_size),
        ComplianceRule("short_sale_marking", short_sale_marking),
    )


# -- factories: rules the jurisdictions share with their own citations ------------------------

def locate_required(citation: str) -> ComplianceRule:
    """A short sale needs shares located (or borrowed, or agreed to be borrowed) for its whole
    quantity before it is sent: no naked short selling."""

    def check(ctx: CheckContext) -> Violation | None:
        order = ctx.order
        if order.side != Side.SELL_SHORT:
            return None
        located = ctx.account.locates.get(ctx.instrument_key, _ZERO)
        if located < order.quantity:
            return Violation(codes.SHORT_LOCATE_REQUIRED,
                             f"{citation}: a short sale of {num(order.quantity)} needs a locate; "
                             f"{num(located)} located", located, order.quantity)
        return None

    return ComplianceRule("short_sale_locate", check)


def short_sale_price_test(citation: str, reference: str, *, strictly_above: bool,
                          always: bool) -> ComplianceRule:
    """A short sale's limit price against a market price (`reference`: best_bid, best_ask or
    last_price of MarketState): strictly above it, or at least at it. `always` for markets
    where the test is permanent (Hong Kong); otherwise only while the venue's short-sale
    restriction is in force. A market order cannot promise a price and is refused then."""

    def check(ctx: CheckContext) -> Violation | None:
        order = ctx.order
        market = ctx.market
        if order.side != Side.SELL_SHORT or not (always or market.short_sale_restricted):
            return None
        bound = getattr(market, reference)
        price = order.limit_price
        relation = "above" if strictly_above else "at or above"
        if bound is None:
            return Violation(codes.SHORT_SALE_PRICE_TEST,
                             f"{citation}: no {reference} to test the short sale's price against",
                             f"a {reference}", "none")
        if price is None:
            return Violation(codes.SHORT_SALE_PRICE_TEST,
                             f"{citation}: a short sale must be priced {relation} the "
                             f"{reference} {num(bound)}; a market order cannot be", bound, "MARKET")
        if price < bound or (strictly_above and price == bound):
            return Violation(codes.SHORT_SALE_PRICE_TEST,
                             f"{citation}: a short sale must be priced {relation} the "
                             f"{reference} {num(bound)}", bound, price)
        return None

    return ComplianceRule("short_sale_price_test", check, venue_only=True)


def short_sale_eligible(citation: str) -> ComplianceRule:
    def check(ctx: CheckContext) -> Violation | None:
        if ctx.order.side == Side.SELL_SHORT and not ctx.market.shortable:
            order = ctx.order
            return Violation(codes.SHORT_SALE_NOT_ELIGIBLE,
                             f"{citation}: {order.symbol} may not be sold short on {order.mic}",
                             "eligible for short selling", "not eligible")
        return None

    return ComplianceRule("short_sale_eligible", check, venue_only=True)


def lei_required(citation: str) -> ComplianceRule:
    """A legal-entity client needs a valid LEI ("no LEI, no trade"); any LEI given is checked."""

    def check(ctx: CheckContext) -> Violation | None:
        client = ctx.client
        lei = client.lei
        if lei is None or not lei.strip():  # blank is missing, not an invalid LEI
            if client.client_type == "LEGAL_ENTITY":
                return Violation(codes.LEI_MISSING,
                                 f"{citation}: a legal-entity client needs an LEI",
                                 "an LEI (ISO 17442)", "none")
            return None
        if not is_valid_lei(lei):
            return Violation(codes.LEI_INVALID,
                             f"{citation}: {lei!r} is not a valid LEI (ISO 17442 check digits)",
                             "ISO 17442", lei)
        return None

    return ComplianceRule("lei", check)


def isin_required(citation: str) -> ComplianceRule:
    def check(ctx: CheckContext) -> Violation | None:
        if ctx.instrument.isin is None:
            order = ctx.order
            return Violation(codes.ISIN_MISSING,
                             f"{citation}: {order.symbol}.{order.mic} has no ISIN",
                             "an ISIN (ISO 6166)", "none")
        return None

    return ComplianceRule("isin_required", check)


def appropriateness(assessment: str, citation: str) -> ComplianceRule:
    """An individual opening exposure to a complex product must have passed `assessment`."""

    def check(ctx: CheckContext) -> Violation | None:
        client = ctx.client
        if (ctx.instrument.complex_product and client.client_type == "INDIVIDUAL"
                and ctx.order.side != Side.SELL and assessment not in client.assessments):
            return Violation(codes.APPROPRIATENESS,
                             f"{citation}: a complex product needs the client's {assessment} "
                             f"assessment", assessment, "not assessed")
        return None

    return ComplianceRule("appropriateness", check)
