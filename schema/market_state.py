"""The market-state feed (gateway/marketdata/state.py): what pre-trade compliance sees of an
instrument on a venue, halts and REDUCING states, and the short-sale lists.

Market state is platform-wide reference data, the same for every tenant: any authenticated
principal may read it. Only platform administrators halt, resume and edit the short-sale
lists (FORBIDDEN otherwise, a tenant admin included); every change is audited on the platform
chain and published (`marketStateEvents`). Instruments are named by their key SYMBOL.MIC; a
`mic` beside it names the venue (default: the key's), where the symbol must be listed.
"""

from __future__ import annotations

import enum
from collections.abc import AsyncGenerator
from datetime import date, datetime
from decimal import Decimal

import strawberry
from strawberry.scalars import JSON
from strawberry.types import Info

from gateway.http.context import RequestContext
from gateway.marketdata import state as svc
from schema.common import ctx, epoch_field


@strawberry.enum(description="HALTED: no order is accepted. REDUCING: only orders that shrink "
                             "a position, without flipping it, are accepted.")
class TradingRestriction(enum.Enum):
    HALTED = "HALTED"
    REDUCING = "REDUCING"


@strawberry.type(description="A halt or REDUCING state in force, of an instrument on a venue "
                             "or of a whole venue.")
class MarketHalt:
    mic: str
    symbol: str | None = strawberry.field(description="Null: the whole venue.")
    instrument: str | None = strawberry.field(description="SYMBOL.MIC; null for the venue.")
    mode: TradingRestriction
    reason: str
    set_by: strawberry.ID | None
    set_at: datetime

    @classmethod
    def of(cls, h: svc.Halt) -> MarketHalt:
        return cls(mic=h.mic, symbol=h.symbol, instrument=f"{h.symbol}.{h.mic}" if h.symbol else None,
                   mode=TradingRestriction(h.mode), reason=h.reason,
                   set_by=strawberry.ID(h.set_by) if h.set_by else None, set_at=h.set_at)


@strawberry.type(description="A short-sale price restriction in force (SEC Rule 201's circuit "
                             "breaker, the TSE's 10 % trigger): a fall of 10 % or more from the "
                             "previous close, for the rest of that day and the next trading day.")
class ShortSaleRestriction:
    rule: str = strawberry.field(description="SEC_RULE_201 or TSE_PRICE_RESTRICTION.")
    triggered_on: date = strawberry.field(description="The venue's local date of the trigger.")
    in_force_until: date = strawberry.field(description="The last day in force (inclusive).")
    previous_close: Decimal = strawberry.field(description="The base the fall is measured from.")
    trigger_price: Decimal = strawberry.field(description="The low that triggered it.")
    recorded: bool = strawberry.field(description="Recorded by the platform (false: seen only in "
                                                  "this tenant's own market data).")


@strawberry.type(name="MarketState",
                 description="An instrument on a venue at an instant, as pre-trade compliance "
                             "sees it.")
class MarketStateView:
    instrument: str = strawberry.field(description="SYMBOL.MIC of the listing on `mic`.")
    symbol: str
    mic: str
    at: datetime
    trading_day: date = strawberry.field(description="The venue's local date of `at`.")
    reference_price: Decimal | None = strawberry.field(description="The quote's mid: the price "
                                                                   "collar's anchor.")
    previous_close: Decimal | None = strawberry.field(description="The previous trading day's "
                                                                  "close: the base of daily "
                                                                  "price limits and of the "
                                                                  "short-sale triggers.")
    previous_close_on: date | None
    best_bid: Decimal | None
    best_ask: Decimal | None
    last_price: Decimal | None = strawberry.field(description="The last complete minute's close "
                                                              "today, else the previous close.")
    halted: bool
    reducing: bool
    short_sale_restricted: bool
    shortable: bool = strawberry.field(description="May be sold short on this venue at all "
                                                   "(at a venue with a short-sale list: listed).")
    short_sale_list: str | None = strawberry.field(description="The venue's short-sale list, "
                                                               "when it keeps one.")
    halts: list[MarketHalt] = strawberry.field(description="The venue's and the instrument's.")
    short_sale_restriction: ShortSaleRestriction | None

    @classmethod
    def of(cls, s: svc.InstrumentState) -> MarketStateView:
        m, r = s.market, s.restriction
        return cls(
            instrument=s.key, symbol=s.symbol, mic=s.mic, at=s.at, trading_day=s.trading_day,
            reference_price=m.reference_price, previous_close=m.previous_close,
            previous_close_on=s.previous_close_on, best_bid=m.best_bid, best_ask=m.best_ask,
            last_price=m.last_price, halted=m.halted, reducing=m.reducing,
            short_sale_restricted=m.short_sale_restricted, shortable=m.shortable,
            short_sale_list=s.short_sale_list, halts=[MarketHalt.of(h) for h in s.halts],
            short_sale_restriction=None if r is None else ShortSaleRestriction(
                rule=r.rule, triggered_on=r.triggered_on, in_force_until=r.in_force_until,
                previous_close=r.previous_close, trigger_price=r.trigger_price,
                recorded=r.recorded))


@strawberry.type(description="An instrument on a venue's short-sale list.")
class ShortSaleDesignation:
    mic: str
    symbol: str
    instrument: str
    added_by: strawberry.ID | None = strawberry.field(description="Null: seeded by the platform.")
    added_at: datetime

    @classmethod
    def of(cls, d: svc.Designation) -> ShortSaleDesignation:
        return cls(mic=d.mic, symbol=d.symbol, instrument=f"{d.symbol}.{d.mic}",
                   added_by=strawberry.ID(d.added_by) if d.added_by else None, added_at=d.added_at)


@strawberry.type
class MarketStateEvent:
    sequence: int
    kind: str = strawberry.field(description="HALTED, REDUCING, RESUMED, SHORT_SALE_RESTRICTED, "
                                             "DESIGNATED or UNDESIGNATED.")
    mic: str
    symbol: str | None = strawberry.field(description="Null: the whole venue.")
    at: datetime
    details: JSON = strawberry.field(description="The reason, who, the rule and its last day.")
    epoch: str | None = epoch_field()


@strawberry.input
class HaltTradingInput:
    mic: str = strawberry.field(description="The venue (ISO 10383 MIC).")
    instrument: str | None = strawberry.field(
        default=None, description="SYMBOL.MIC; null halts the whole venue.")
    mode: TradingRestriction = TradingRestriction.HALTED
    reason: str = strawberry.field(description="1 to 500 characters, kept in the audit trail.")


def _reader(info: Info) -> tuple[RequestContext, svc.MarketStateService]:
    c = ctx(info)
    c.me  # authenticated, any role: market state is platform-wide reference data  # noqa: B018
    return c, c.runtime.market_state


@strawberry.type
class Query:
    @strawberry.field(description="What pre-trade compliance sees of `instrument` (SYMBOL.MIC) "
                                  "on `mic` (default: the key's venue) at `at` (default: now; "
                                  "later than now: MARKET_STATE_FUTURE). Read-only: it never "
                                  "records a short-sale restriction (only orders do).")
    def market_state(self, info: Info, instrument: str, mic: str | None = None,
                     at: datetime | None = None) -> MarketStateView:
        c, service = _reader(info)
        now = c.runtime.markets.now()
        return MarketStateView.of(service.state_of(instrument, mic, at or now, now))

    @strawberry.field(description="Halts and REDUCING states in force, of one venue or all.")
    def market_halts(self, info: Info, mic: str | None = None) -> list[MarketHalt]:
        _, service = _reader(info)
        return [MarketHalt.of(h) for h in service.halts(mic)]

    @strawberry.field(description="A venue's short-sale list (XHKG: HKEX designated securities).")
    def short_sale_designations(self, info: Info, mic: str) -> list[ShortSaleDesignation]:
        _, service = _reader(info)
        return [ShortSaleDesignation.of(d) for d in service.designations(mic)]


@strawberry.type
class Mutation:
    @strawberry.mutation(description="Halt (or put in REDUCING) an instrument on a venue, or a "
                                     "whole venue; platform administrators only. A halt in "
                                     "force takes the new mode and reason.")
    def halt_trading(self, info: Info, input: HaltTradingInput) -> MarketHalt:
        c = ctx(info)
        me = c.require_platform_admin()
        return MarketHalt.of(c.runtime.market_state.halt(
            input.instrument, input.mic, input.mode.value, input.reason, me.user_id))

    @strawberry.mutation(description="Lift the halt or REDUCING state of an instrument on a "
                                     "venue (or of the venue: `instrument` null); answers the "
                                     "halt lifted. Platform administrators only.")
    def resume_trading(self, info: Info, mic: str, instrument: str | None = None,
                       reason: str | None = None) -> MarketHalt:
        c = ctx(info)
        me = c.require_platform_admin()
        return MarketHalt.of(c.runtime.market_state.resume(instrument, mic, reason, me.user_id))

    @strawberry.mutation(description="Put an instrument on (true) or take it off (false) its "
                                     "venue's short-sale list; answers the entry, null once off. "
                                     "Platform administrators only.")
    def set_short_sale_designation(self, info: Info, instrument: str, mic: str,
                                   designated: bool) -> ShortSaleDesignation | None:
        c = ctx(info)
        me = c.require_platform_admin()
        found = c.runtime.market_state.designate(instrument, mic, designated, me.user_id)
        return None if found is None else ShortSaleDesignation.of(found)


@strawberry.type
class Subscription:
    @strawberry.subscription(description="Halts, resumptions, short-sale restrictions and list "
                                         "changes as they happen, of the venues in `mics` (empty: "
                                         "all).")
    async def market_state_events(self, info: Info, mics: list[str] | None = None
                                  ) -> AsyncGenerator[MarketStateEvent, None]:
        c, _ = _reader(info)
        wanted = svc.venue_filter(mics)
        subscription = await c.runtime.bus.subscribe(svc.TOPIC)
        try:
            async for event in subscription:
                p = event.payload
                if not wanted(p):
                    continue
                details = {k: v for k, v in p.items() if k not in ("kind", "mic", "symbol", "at")}
                yield MarketStateEvent(sequence=event.sequence, kind=str(p.get("kind")),
                                       mic=str(p.get("mic")), symbol=p.get("symbol"),
                                       at=datetime.fromisoformat(str(p.get("at"))), details=details,
                                       epoch=event.epoch)
        finally:
            await subscription.close()
