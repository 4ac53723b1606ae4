"""Markets: regions, venues, trading sessions, follow-the-sun hand-offs and session events.

Market structure is public reference data, the same for every tenant: any authenticated
principal may read it, whatever its roles; nothing here reads or returns tenant data.
Definitions of statuses, opens/closes and "leads" are in gateway/markets/service.py.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from datetime import datetime
from decimal import Decimal

import strawberry
from strawberry.types import Info

from gateway.markets import service as markets
from gateway.markets import venues
from schema.common import ctx

SessionStatus = strawberry.enum(markets.SessionStatus, name="SessionStatus")
MarketSessionEventKind = strawberry.enum(markets.SessionEventKind, name="MarketSessionEventKind")


def _service(info: Info) -> markets.MarketsService:
    c = ctx(info)
    c.me  # authenticated, any role: market structure is public reference data  # noqa: B018
    return c.runtime.markets


@strawberry.type
class PriceBand:
    price: Decimal = strawberry.field(description="The band applies from this price upward.")
    value: Decimal


@strawberry.type(description="A tick or lot size that may depend on the price.")
class PriceBandedRule:
    bands: list[PriceBand]
    note: str
    upper_inclusive: bool = strawberry.field(
        description="True when a boundary price belongs to the lower band (\"3,000 or less\").")
    rule: strawberry.Private[venues.PriceBandedRule]

    @strawberry.field(description="The value that applies at `price`.")
    def at(self, price: Decimal) -> Decimal:
        return self.rule.at(price)

    @classmethod
    def of(cls, rule: venues.PriceBandedRule) -> PriceBandedRule:
        return cls(bands=[PriceBand(price=b.price, value=b.value) for b in rule.bands],
                   note=rule.note, upper_inclusive=rule.upper_inclusive, rule=rule)


@strawberry.type
class VenueSession:
    mic: str
    at: datetime
    status: SessionStatus  # type: ignore[valid-type]
    opens_at: datetime | None = strawberry.field(
        description="First open of the trading day `at` is in, else of the last one that ended.")
    closes_at: datetime | None = strawberry.field(
        description="Last close of that trading day.")
    next_open: datetime | None = strawberry.field(
        description="Next instant trading starts (a day's open or the end of a lunch break).")
    next_close: datetime | None = strawberry.field(
        description="Next instant trading stops (a lunch break's start or a day's close).")

    @classmethod
    def of(cls, s: markets.VenueSession) -> VenueSession:
        return cls(mic=s.mic, at=s.at, status=s.status, opens_at=s.opens_at,
                   closes_at=s.closes_at, next_open=s.next_open, next_close=s.next_close)


@strawberry.type
class Venue:
    mic: str = strawberry.field(description="ISO 10383 MIC (ALPX: the platform's 24/7 venue).")
    name: str
    region: str
    country: str = strawberry.field(description="ISO 3166-1 alpha-2.")
    currency: str = strawberry.field(description="ISO 4217.")
    timezone: str = strawberry.field(description="IANA time zone.")
    regulators: list[str]
    lot_size: PriceBandedRule
    tick_size: PriceBandedRule
    always_open: bool
    pre_open_minutes: int
    post_close_minutes: int
    calendar: str | None = strawberry.field(
        description="The calendar library and calendar the sessions come from.")

    @strawberry.field(description="The venue's session at `at` (default: now).")
    def session(self, info: Info, at: datetime | None = None) -> VenueSession:
        service = _service(info)
        return VenueSession.of(service.session(self.mic, at or service.now()))

    @classmethod
    def of(cls, v: venues.Venue) -> Venue:
        return cls(mic=v.mic, name=v.name, region=v.region, country=v.country,
                   currency=v.currency, timezone=v.timezone, regulators=list(v.regulators),
                   lot_size=PriceBandedRule.of(v.lot_size), tick_size=PriceBandedRule.of(v.tick_size),
                   always_open=v.always_open, pre_open_minutes=v.pre_open_minutes,
                   post_close_minutes=v.post_close_minutes,
                   calendar=f"{v.calendar.library}:{v.calendar.name}" if v.calendar else None)


@strawberry.type
class Region:
    code: str
    name: str
    venues: list[Venue]


@strawberry.type
class RegionHandoff:
    at: datetime
    from_region: str
    to_region: str
    venues: list[str] = strawberry.field(description="The new leader's venues in session.")


@strawberry.type(description="Which region leads when: the leader at `at`, then each hand-off "
                             "up to `until`.")
class FollowTheSun:
    at: datetime
    until: datetime
    leader: str
    leader_venues: list[str]
    handoffs: list[RegionHandoff]
    uncovered_venues: list[str] = strawberry.field(
        description="Venues left out because their calendar does not reach the horizon.")

    @classmethod
    def of(cls, p: markets.SunPath) -> FollowTheSun:
        return cls(at=p.at, until=p.until, leader=p.leader.region,
                   leader_venues=list(p.leader.venues),
                   handoffs=[RegionHandoff(at=h.at, from_region=h.from_region,
                                           to_region=h.to_region, venues=list(h.venues))
                             for h in p.handoffs],
                   uncovered_venues=list(p.uncovered))


@strawberry.type
class MarketSessionEvent:
    kind: MarketSessionEventKind  # type: ignore[valid-type]
    at: datetime
    region: str = strawberry.field(description="The venue's region; for a hand-off, the new leader.")
    mic: str | None
    from_region: str | None
    to_region: str | None


@strawberry.type
class Query:
    @strawberry.field(description="The regions and their venues (public reference data).")
    def regions(self, info: Info) -> list[Region]:
        return [Region(code=r.region.code, name=r.region.name, venues=[Venue.of(v) for v in r.venues])
                for r in _service(info).regions()]

    @strawberry.field(description="A venue by ISO 10383 MIC.")
    def venue(self, info: Info, mic: str) -> Venue:
        return Venue.of(_service(info).venue(mic))

    @strawberry.field(description="Venues open for trading at `at` (default: now).")
    def active_markets(self, info: Info, at: datetime | None = None) -> list[Venue]:
        service = _service(info)
        return [Venue.of(v) for v in service.active_markets(at or service.now())]

    @strawberry.field(description="The leading region at `at` (default: now) and the ordered "
                                  "hand-offs over `horizon`, an ISO 8601 duration in weeks, "
                                  "days, hours or minutes (\"P7D\", \"PT36H\"), at most 14 days.")
    def follow_the_sun(self, info: Info, at: datetime | None = None,
                       horizon: str = "P1D") -> FollowTheSun:
        service = _service(info)
        return FollowTheSun.of(service.follow_the_sun(at or service.now(),
                                                      markets.parse_horizon(horizon)))


@strawberry.type
class Subscription:
    @strawberry.subscription(description="OPEN, BREAK_START, BREAK_END, CLOSE of the venues in "
                                         "`mics` or `regions`, and REGION_HANDOFF touching "
                                         "`regions`, as they happen; both empty: all of them.")
    async def market_session_events(self, info: Info, regions: list[str] | None = None,
                                    mics: list[str] | None = None
                                    ) -> AsyncGenerator[MarketSessionEvent, None]:
        service = _service(info)
        selection = service.event_filter(regions, mics)
        async for e in service.session_events(selection):
            yield MarketSessionEvent(kind=e.kind, at=e.at, region=e.region, mic=e.mic,
                                     from_region=e.from_region, to_region=e.to_region)
