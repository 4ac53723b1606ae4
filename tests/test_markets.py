"""Markets: session answers checked against the calendar libraries themselves, follow-the-sun
hand-offs, the GraphQL surface over the live server, and session events over a real websocket
driven by a controllable clock."""

import asyncio
import random
import warnings
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import exchange_calendars as xc
import pandas as pd
import pandas_market_calendars as pmc
import pytest

from gateway.app import create_app
from gateway.markets.clock import ManualClock
from gateway.markets.directory import CalendarVenueDirectory
from gateway.markets.service import MarketsService, SessionEventKind, SessionStatus, parse_horizon
from gateway.markets.venues import VENUES
from gateway.runtime import Runtime
from plugins.sdk import VenueDirectory
from tests.support import LiveServer, TransportWS, error_codes, user_key, wait_for

XC_MICS = ["XNYS", "XNAS", "XTSE", "XMEX", "XLON", "XPAR", "XAMS", "XETR", "XMIL", "XTKS", "XHKG",
           "XSHG", "XASX"]
# The covered markets' alternative venues (issue 17), on their primary market's calendar.
ALTERNATIVE_MICS = ["BATS", "ARCX", "IEXG", "CHIX", "TRQX", "AQXE", "CEUX", "AQEU", "CHIJ", "SBIJ",
                    "CXAC"]
# Those open with New York and Europe (the US ones, and London's and the euro ones).
OPEN_ALTERNATIVES = ["BATS", "ARCX", "IEXG", "CHIX", "TRQX", "AQXE", "CEUX", "AQEU"]
EMEA = ("AQEU", "AQXE", "CEUX", "CHIX", "TRQX", "XAMS", "XETR", "XLON", "XMIL", "XPAR")
PRE = {v.mic: timedelta(minutes=v.pre_open_minutes) for v in VENUES}
POST = {v.mic: timedelta(minutes=v.post_close_minutes) for v in VENUES}


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(UTC)


@pytest.fixture(scope="module")
def markets(runtime) -> MarketsService:
    runtime.markets.directory.calendars.warm()  # load every calendar once, up front
    return runtime.markets


class LibraryOracle:
    """What the calendar library itself says about an instant, by its own API (exchange_calendars)
    or by pandas on its schedule (pandas_market_calendars), with our PRE_OPEN/POST_CLOSE layer."""

    def __init__(self, mic: str) -> None:
        self.mic = mic
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the libraries' own pandas deprecation warnings
            if mic == "XNSE":
                self.pmc = pmc.get_calendar("NSE")
                self.raw = self.pmc.schedule("2024-06-01", "2026-06-30")
                self.nse = self.raw.rename(columns={"market_open": "open", "market_close": "close"})
            else:
                self.cal = xc.get_calendar(mic, start="2024-06-01", end="2026-06-30")

    def expect(self, at: datetime) -> dict:
        m = pd.Timestamp(at)
        if self.mic == "XNSE":
            s = self.nse
            i = s["open"].searchsorted(m, side="right") - 1
            is_open = i >= 0 and m < s["close"].iloc[i]
            assert is_open == self.pmc.open_at_time(self.raw, m)
            day = s.iloc[i]
            after = s.iloc[i + 1]
            status = "OPEN" if is_open else None
            next_open = after["open"]
            next_close = day["close"] if is_open else after["close"]
            return self._finish(at, status, day["open"], day["close"], next_open, next_close,
                                last_close=day["close"])
        cal, schedule = self.cal, self.cal.schedule
        if cal.is_open_on_minute(m):
            status = "OPEN"
        elif cal.has_break and cal.is_break_minute(m):
            status = "BREAK"
        else:
            status = None
        label = cal.minute_to_session(m, "previous" if status is None else "none")
        day = schedule.loc[label]
        nxt = schedule.loc[cal.minute_to_session(m, "next")]
        next_open, next_close = cal.next_open(m), cal.next_close(m)
        if cal.has_break and not pd.isna(nxt["break_start"]):
            # exchange_calendars' next_open/next_close ignore lunch breaks; ours do not.
            if m < nxt["break_end"]:
                next_open = min(next_open, nxt["break_end"])
            if m < nxt["break_start"]:
                next_close = min(next_close, nxt["break_start"])
        return self._finish(at, status, day["open"], day["close"], next_open, next_close,
                            last_close=day["close"])

    def _finish(self, at, status, opens_at, closes_at, next_open, next_close, last_close) -> dict:
        if status is None:
            if at < last_close.to_pydatetime() + POST[self.mic]:
                status = "POST_CLOSE"
            elif at >= next_open.to_pydatetime() - PRE[self.mic]:
                status = "PRE_OPEN"
            else:
                status = "CLOSED"
        return {"status": status, "opens_at": opens_at.to_pydatetime(),
                "closes_at": closes_at.to_pydatetime(), "next_open": next_open.to_pydatetime(),
                "next_close": next_close.to_pydatetime()}


def answer(markets: MarketsService, mic: str, at: datetime) -> dict:
    s = markets.session(mic, at)
    return {"status": s.status.value, "opens_at": s.opens_at, "closes_at": s.closes_at,
            "next_open": s.next_open, "next_close": s.next_close}


@pytest.mark.parametrize("mic", [*XC_MICS, "XNSE"])
def test_sessions_agree_with_the_library_over_a_year(markets, mic):
    oracle = LibraryOracle(mic)
    rng = random.Random(f"sessions-2025-{mic}")
    start = datetime(2025, 1, 1, tzinfo=UTC)
    # Minutes: exchange_calendars answers per minute. A third of the sample lands on a
    # boundary (an open, a close, a break edge), where off-by-one mistakes live.
    instants = [start + timedelta(minutes=rng.randrange(365 * 24 * 60)) for _ in range(240)]
    table = markets.directory.calendars.table(mic)
    edges = [t for t in (*table.opens, *table.closes)
             if start.timestamp() <= t < start.timestamp() + 365 * 86_400]
    instants += [datetime.fromtimestamp(rng.choice(edges), UTC) + timedelta(minutes=d)
                 for d in (-1, 0, 1) for _ in range(30)]
    statuses = set()
    for at in instants:
        expected, got = oracle.expect(at), answer(markets, mic, at)
        assert got == expected, (mic, at.isoformat())
        statuses.add(got["status"])
        assert markets.directory.is_open(mic, at) == (got["status"] == "OPEN")
    assert {"OPEN", "CLOSED"} <= statuses
    if mic in ("XTKS", "XHKG", "XSHG"):
        assert "BREAK" in statuses


TARGETED = [
    # (mic, instant, status, opensAt, closesAt, nextOpen, nextClose)
    # Independence Day: closed; the last session was the 3rd, an early close at 13:00 EDT.
    ("XNYS", "2025-07-04T15:00Z", "CLOSED", "2025-07-03T13:30Z", "2025-07-03T17:00Z",
     "2025-07-07T13:30Z", "2025-07-07T20:00Z"),
    # The day after Thanksgiving closes at 13:00 EST.
    ("XNYS", "2025-11-28T17:59Z", "OPEN", "2025-11-28T14:30Z", "2025-11-28T18:00Z",
     "2025-12-01T14:30Z", "2025-11-28T18:00Z"),
    ("XNYS", "2025-11-28T18:00Z", "CLOSED", "2025-11-28T14:30Z", "2025-11-28T18:00Z",
     "2025-12-01T14:30Z", "2025-12-01T21:00Z"),
    # Nasdaq's after-hours reach 20:00 ET: POST_CLOSE after the early close.
    ("XNAS", "2025-11-28T20:00Z", "POST_CLOSE", "2025-11-28T14:30Z", "2025-11-28T18:00Z",
     "2025-12-01T14:30Z", "2025-12-01T21:00Z"),
    # Tokyo's lunch break (11:30-12:30 JST), and the morning before it.
    ("XTKS", "2025-07-03T03:00Z", "BREAK", "2025-07-03T00:00Z", "2025-07-03T06:30Z",
     "2025-07-03T03:30Z", "2025-07-03T06:30Z"),
    ("XTKS", "2025-07-03T01:00Z", "OPEN", "2025-07-03T00:00Z", "2025-07-03T06:30Z",
     "2025-07-03T03:30Z", "2025-07-03T02:30Z"),
    # Hong Kong's lunch (12:00-13:00 HKT); Christmas Eve is a half day with no afternoon.
    ("XHKG", "2025-07-03T04:30Z", "BREAK", "2025-07-03T01:30Z", "2025-07-03T08:00Z",
     "2025-07-03T05:00Z", "2025-07-03T08:00Z"),
    ("XHKG", "2025-12-24T04:30Z", "CLOSED", "2025-12-24T01:30Z", "2025-12-24T04:00Z",
     "2025-12-29T01:30Z", "2025-12-29T04:00Z"),
    ("XSHG", "2025-07-03T04:00Z", "BREAK", "2025-07-03T01:30Z", "2025-07-03T07:00Z",
     "2025-07-03T05:00Z", "2025-07-03T07:00Z"),
    # A Saturday in London, and the auctions around a weekday.
    ("XLON", "2025-03-08T12:00Z", "CLOSED", "2025-03-07T08:00Z", "2025-03-07T16:30Z",
     "2025-03-10T08:00Z", "2025-03-10T16:30Z"),
    ("XLON", "2025-03-10T07:55Z", "PRE_OPEN", "2025-03-07T08:00Z", "2025-03-07T16:30Z",
     "2025-03-10T08:00Z", "2025-03-10T16:30Z"),
    ("XLON", "2025-03-10T16:32Z", "POST_CLOSE", "2025-03-10T08:00Z", "2025-03-10T16:30Z",
     "2025-03-11T08:00Z", "2025-03-11T16:30Z"),
    # DST: New York moves on 9 March, London on 30 March, Sydney back on 6 April.
    ("XNYS", "2025-03-07T14:00Z", "PRE_OPEN", "2025-03-06T14:30Z", "2025-03-06T21:00Z",
     "2025-03-07T14:30Z", "2025-03-07T21:00Z"),
    ("XNYS", "2025-03-10T14:00Z", "OPEN", "2025-03-10T13:30Z", "2025-03-10T20:00Z",
     "2025-03-11T13:30Z", "2025-03-10T20:00Z"),
    ("XLON", "2025-03-31T07:30Z", "OPEN", "2025-03-31T07:00Z", "2025-03-31T15:30Z",
     "2025-04-01T07:00Z", "2025-03-31T15:30Z"),
    ("XASX", "2025-04-04T23:30Z", "CLOSED", "2025-04-03T23:00Z", "2025-04-04T05:00Z",
     "2025-04-07T00:00Z", "2025-04-07T06:00Z"),
]


@pytest.mark.parametrize("mic, at, status, opens_at, closes_at, next_open, next_close", TARGETED)
def test_targeted_sessions(markets, mic, at, status, opens_at, closes_at, next_open, next_close):
    assert answer(markets, mic, utc(at)) == {
        "status": status, "opens_at": utc(opens_at), "closes_at": utc(closes_at),
        "next_open": utc(next_open), "next_close": utc(next_close)}
    assert answer(markets, mic, utc(at)) == LibraryOracle(mic).expect(utc(at))


def test_the_always_open_venue_and_the_directory_protocol(markets):
    directory = markets.directory
    assert isinstance(directory, VenueDirectory)
    assert {v.mic for v in directory.venues()} == {*XC_MICS, *ALTERNATIVE_MICS, "XNSE", "ALPX"}
    alpx = directory.venue("ALPX")
    assert alpx.always_open and alpx.region == "global"
    saturday = utc("2025-03-08T03:00Z")
    assert markets.session("ALPX", saturday).status is SessionStatus.OPEN
    assert directory.is_open("ALPX", saturday)
    windows = directory.sessions("XTKS", utc("2025-07-03T00:00Z"), utc("2025-07-05T00:00Z"))
    assert [(w.opens_at.hour, w.closes_at.hour) for w in windows] == [(0, 2), (3, 6), (0, 2), (3, 6)]
    assert directory.sessions("XNYS", utc("2025-07-04T00:00Z"), utc("2025-07-05T00:00Z")) == []
    # A second directory shares nothing with the first: calendars live on the object.
    assert CalendarVenueDirectory().calendars is not directory.calendars


def test_tick_and_lot_rules():
    venues = {v.mic: v for v in VENUES}
    assert venues["XNYS"].tick_size.at(Decimal("0.99")) == Decimal("0.0001")
    assert venues["XNYS"].tick_size.at(Decimal("1.00")) == Decimal("0.01")
    assert venues["XTKS"].tick_size.at(Decimal("3000")) == Decimal("1")  # "3,000 yen or less"
    assert venues["XTKS"].tick_size.at(Decimal("3001")) == Decimal("5")
    assert venues["XHKG"].tick_size.at(Decimal("0.25")) == Decimal("0.001")
    assert venues["XHKG"].tick_size.at(Decimal("15")) == Decimal("0.02")
    assert venues["XLON"].tick_size.at(Decimal("123.4")) == Decimal("0.02")
    assert venues["XTSE"].lot_size.at(Decimal("0.05")) == Decimal("1000")
    assert venues["XTSE"].lot_size.at(Decimal("1.00")) == Decimal("100")
    assert {v.region for v in VENUES} == {"americas", "emea", "apac", "global"}
    assert all(len(v.country) == 2 and len(v.currency) == 3 for v in VENUES)


def test_active_markets(markets):
    # Wednesday 12 March 2025, 14:00 UTC: New York and Toronto are on summer time, Mexico City
    # (no DST) opens at 14:30 UTC, Europe is still on winter time.
    at = utc("2025-03-12T14:00Z")
    active = [v.mic for v in markets.active_markets(at)]
    assert active == ["XNYS", "XNAS", "XTSE", "XLON", "XPAR", "XAMS", "XETR", "XMIL", *OPEN_ALTERNATIVES,
                      "ALPX"]
    assert active == [v.mic for v in VENUES if markets.session(v.mic, at).status is SessionStatus.OPEN]
    assert [v.mic for v in markets.active_markets(utc("2025-03-08T12:00Z"))] == ["ALPX"]  # Saturday


def test_follow_the_sun_over_a_week(markets):
    # From Monday 10 March 2025: New York is on summer time (13:30 UTC), Mexico City keeps
    # standard time (closes 21:00 UTC), Europe is not yet (opens 08:00 UTC), and Sydney still
    # is (opens 23:00 UTC the day before).
    path = markets.follow_the_sun(utc("2025-03-10T00:00Z"), parse_horizon("P7D"))
    assert path.leader.region == "apac" and path.uncovered == ()
    got = [(h.at, h.from_region, h.to_region) for h in path.handoffs]
    expected = []
    for day in range(10, 15):  # Monday to Friday
        expected += [(utc(f"2025-03-{day}T08:00Z"), "apac", "emea"),
                     (utc(f"2025-03-{day}T13:30Z"), "emea", "americas"),
                     (utc(f"2025-03-{day}T21:00Z"), "americas", "global")]
        if day < 14:
            expected.append((utc(f"2025-03-{day}T23:00Z"), "global", "apac"))
    expected.append((utc("2025-03-16T23:00Z"), "global", "apac"))  # Sunday night: Sydney's Monday
    assert got == expected
    # Mexico opens an hour later; the US alternative venues open with New York.
    assert path.handoffs[1].venues == ("XNYS", "XNAS", "XTSE", "BATS", "ARCX", "IEXG")
    # Each hand-off goes to the region it names, and the regions chain up.
    assert all(a.to_region == b.from_region for a, b in zip(path.handoffs, path.handoffs[1:], strict=False))


def test_follow_the_sun_with_a_regional_holiday(markets):
    # Boxing Day 2025: Europe, Sydney and Hong Kong are closed; Tokyo and Mumbai trade.
    path = markets.follow_the_sun(utc("2025-12-26T00:00Z"), timedelta(hours=24))
    assert [(h.at, h.from_region, h.to_region) for h in path.handoffs] == [
        (utc("2025-12-26T10:00Z"), "apac", "global"),  # Mumbai closes; no European open today
        (utc("2025-12-26T14:30Z"), "global", "americas"),
        (utc("2025-12-26T21:00Z"), "americas", "global"),
    ]


def test_bad_input_codes(markets):
    for call, code in (
        (lambda: markets.venue("XXXX"), "VENUE_UNKNOWN"),
        (lambda: markets.session("XNYS", datetime(2025, 7, 4, 15)), "INSTANT_NOT_AWARE"),
        (lambda: markets.active_markets(datetime(2025, 7, 4, 15)), "INSTANT_NOT_AWARE"),
        (lambda: markets.follow_the_sun(utc("2025-07-04T00:00Z"), timedelta(days=15)),
         "HORIZON_TOO_LONG"),
        (lambda: markets.follow_the_sun(utc("2025-07-04T00:00Z"), timedelta(0)), "HORIZON_INVALID"),
        (lambda: parse_horizon("P1M"), "HORIZON_INVALID"),
        (lambda: parse_horizon("PT"), "HORIZON_INVALID"),
        (lambda: parse_horizon("P99999999999W"), "HORIZON_TOO_LONG"),
        (lambda: markets.event_filter(["mars"], None), "REGION_UNKNOWN"),
        (lambda: markets.session("XSHG", utc("2099-01-05T03:00Z")), "SESSION_OUT_OF_RANGE"),
    ):
        with pytest.raises(Exception) as raised:
            call()
        assert getattr(raised.value, "code", None) == code
    assert parse_horizon("P1W") == timedelta(days=7)
    assert parse_horizon("P1DT12H") == timedelta(hours=36)


def test_events_are_recomputed_from_the_calendar_not_remembered(markets):
    """A gateway that was running all day and one started at noon agree on what comes next."""
    selection = markets.event_filter(None, None)
    cursor, running = utc("2025-03-12T00:00Z"), []
    while cursor < utc("2025-03-13T00:00Z"):
        batch = markets.next_events(cursor, selection)
        running += batch
        cursor = batch[0].at
    restarted = MarketsService(markets.directory, ManualClock(utc("2025-03-12T12:00Z")))
    cursor, fresh = restarted.now(), []
    while cursor < utc("2025-03-13T00:00Z"):
        batch = restarted.next_events(cursor, selection)
        fresh += batch
        cursor = batch[0].at
    assert fresh == [e for e in running if e.at > utc("2025-03-12T12:00Z")]
    kinds = {e.kind for e in running}
    assert kinds == set(SessionEventKind)
    handoffs = [(e.at, e.from_region, e.to_region) for e in running
                if e.kind is SessionEventKind.REGION_HANDOFF]
    assert handoffs[:3] == [(utc("2025-03-12T08:00Z"), "apac", "emea"),
                            (utc("2025-03-12T13:30Z"), "emea", "americas"),
                            (utc("2025-03-12T21:00Z"), "americas", "global")]


# --- over GraphQL -------------------------------------------------------------------------

VENUE_FIELDS = "mic name region country currency timezone regulators alwaysOpen calendar " \
               "tickSize { note at(price: \"150\") bands { price value } } lotSize { note }"


def test_regions_and_venues_over_graphql(gql, runtime, tenant):
    _, viewer = user_key(runtime, tenant, "viewer")  # any role may read market structure
    data = gql.data(f"{{ regions {{ code name venues {{ {VENUE_FIELDS} }} }} }}", key=viewer)
    regions = {r["code"]: [v["mic"] for v in r["venues"]] for r in data["regions"]}
    assert regions == {"americas": ["XNYS", "XNAS", "XTSE", "XMEX", "BATS", "ARCX", "IEXG"],
                       "emea": ["XLON", "XPAR", "XAMS", "XETR", "XMIL", "CHIX", "TRQX", "AQXE",
                                "CEUX", "AQEU"],
                       "apac": ["XTKS", "XHKG", "XSHG", "XASX", "XNSE", "CHIJ", "SBIJ", "CXAC"],
                       "global": ["ALPX"]}
    nyse = data["regions"][0]["venues"][0]
    assert nyse["currency"] == "USD" and nyse["timezone"] == "America/New_York"
    assert nyse["calendar"] == "exchange_calendars:XNYS" and nyse["regulators"] == ["SEC", "FINRA"]
    assert nyse["tickSize"]["at"] == "0.01"
    nse = gql.data('{ venue(mic: "XNSE") { calendar currency } }', key=viewer)["venue"]
    assert nse == {"calendar": "pandas_market_calendars:NSE", "currency": "INR"}


def test_sessions_and_sun_over_graphql(gql, tenant):
    q = """query($at: DateTime) { venue(mic: "XTKS") { session(at: $at) {
             status opensAt closesAt nextOpen nextClose } } }"""
    session = gql.data(q, {"at": "2025-07-03T12:00:00+09:00"}, key=tenant.key)["venue"]["session"]
    assert session == {"status": "BREAK", "opensAt": "2025-07-03T00:00:00+00:00",
                       "closesAt": "2025-07-03T06:30:00+00:00",
                       "nextOpen": "2025-07-03T03:30:00+00:00",
                       "nextClose": "2025-07-03T06:30:00+00:00"}
    now = gql.data('{ venue(mic: "ALPX") { session { status } } }', key=tenant.key)
    assert now["venue"]["session"]["status"] == "OPEN"
    active = gql.data('{ activeMarkets(at: "2025-03-12T14:00:00Z") { mic } }', key=tenant.key)
    assert [v["mic"] for v in active["activeMarkets"]] == \
        ["XNYS", "XNAS", "XTSE", "XLON", "XPAR", "XAMS", "XETR", "XMIL", *OPEN_ALTERNATIVES, "ALPX"]
    sun = gql.data('{ followTheSun(at: "2025-03-10T00:00:00Z", horizon: "P1D") { leader '
                   'leaderVenues until handoffs { at fromRegion toRegion venues } } }',
                   key=tenant.key)["followTheSun"]
    assert sun["leader"] == "apac" and sun["until"] == "2025-03-11T00:00:00+00:00"
    assert [(h["at"], h["toRegion"]) for h in sun["handoffs"]] == [
        ("2025-03-10T08:00:00+00:00", "emea"), ("2025-03-10T13:30:00+00:00", "americas"),
        ("2025-03-10T21:00:00+00:00", "global"), ("2025-03-10T23:00:00+00:00", "apac")]


def test_bad_input_over_graphql(gql, tenant):
    for query, code in (
        ('{ venue(mic: "XXXX") { mic } }', "VENUE_UNKNOWN"),
        ('{ venue(mic: "XNYS") { session(at: "2025-07-04T15:00:00") { status } } }',
         "INSTANT_NOT_AWARE"),
        ('{ activeMarkets(at: "2025-07-04T15:00:00") { mic } }', "INSTANT_NOT_AWARE"),
        ('{ followTheSun(horizon: "P15D") { leader } }', "HORIZON_TOO_LONG"),
        ('{ followTheSun(horizon: "P1M") { leader } }', "HORIZON_INVALID"),
        ('{ followTheSun(horizon: "soon") { leader } }', "HORIZON_INVALID"),
    ):
        assert error_codes(gql(query, key=tenant.key)) == [code], query
    unauthenticated = gql.post("{ regions { code } }")
    assert unauthenticated.status_code == 401


def test_two_tenants_get_identical_market_answers(gql, tenant, other_tenant):
    query = """{ regions { code venues { mic session(at: "2025-03-12T14:00:00Z") { status } } }
                 activeMarkets(at: "2025-03-12T14:00:00Z") { mic }
                 followTheSun(at: "2025-03-10T00:00:00Z", horizon: "P2D") { leader handoffs { at } } }"""
    mine, theirs = gql.data(query, key=tenant.key), gql.data(query, key=other_tenant.key)
    assert mine == theirs
    text = str(mine)
    assert tenant.id not in text and other_tenant.id not in text and tenant.slug not in text


# --- session events over a real websocket ---------------------------------------------------

EVENTS = """subscription($regions: [String!], $mics: [String!]) {
  marketSessionEvents(regions: $regions, mics: $mics) { kind at region mic fromRegion toRegion } }"""


@pytest.fixture
def clocked(runtime, markets):
    """A gateway whose markets run on a ManualClock (sharing the warm calendars)."""
    clock = ManualClock(utc("2025-03-12T13:00Z"))
    markets = MarketsService(markets.directory, clock)
    app = create_app(runtime=Runtime(**{**runtime.__dict__, "markets": markets,
                                        "settings": runtime.settings.with_(embedded_worker="off")}))
    with LiveServer(app) as live:
        yield live, clock


def test_session_events_over_a_websocket_with_a_manual_clock(clocked, tenant):
    live, clock = clocked

    async def scenario():
        async with TransportWS(live.ws_url, tenant.key) as ws:
            await ws.subscribe("e", EVENTS, {"mics": ["XNYS"], "regions": ["emea"]})
            await asyncio.to_thread(wait_for, lambda: clock.sleepers == 1, 10)

            async def take(n):
                out = []
                for _ in range(n):
                    message = await ws.next(op_id="e")
                    assert message["type"] == "next", message
                    e = message["payload"]["data"]["marketSessionEvents"]
                    out.append((e["kind"], e["at"][11:16], e["mic"] or f"{e['fromRegion']}>{e['toRegion']}"))
                return out

            clock.set(utc("2025-03-12T13:30Z"))  # New York opens: the book leaves Europe
            first = await take(2)
            clock.set(utc("2025-03-12T16:40Z"))  # Europe closes at 16:30
            second = await take(len(EMEA))
            clock.set(utc("2025-03-13T08:00Z"))  # New York closes; Europe opens next morning
            third = await take(1 + len(EMEA) + 1)
            # Nothing is due before the next instant the clock reaches.
            with pytest.raises(TimeoutError):
                await ws.next(timeout=0.5, op_id="e")
            return first, second, third

    first, second, third = asyncio.run(scenario())
    assert first == [("OPEN", "13:30", "XNYS"), ("REGION_HANDOFF", "13:30", "emea>americas")]
    assert second == [("CLOSE", "16:30", m) for m in EMEA]
    # americas > global (21:00) and global > apac (23:00) touch no region asked for.
    assert third == [("CLOSE", "20:00", "XNYS"),
                     *[("OPEN", "08:00", m) for m in EMEA],
                     ("REGION_HANDOFF", "08:00", "apac>emea")]


def test_lunch_break_events_and_bad_filters_over_a_websocket(clocked, tenant):
    live, clock = clocked

    async def scenario():
        async with TransportWS(live.ws_url, tenant.key) as ws:
            await ws.subscribe("bad", EVENTS, {"mics": ["NOPE"]})
            bad = await ws.next(op_id="bad")
            await ws.subscribe("t", EVENTS, {"mics": ["XTKS"]})
            await asyncio.to_thread(wait_for, lambda: clock.sleepers == 1, 10)
            clock.set(utc("2025-03-13T07:00Z"))  # a whole Tokyo day goes by at once
            events = []
            for _ in range(4):
                e = (await ws.next(op_id="t"))["payload"]["data"]["marketSessionEvents"]
                events.append((e["kind"], e["at"]))
            return bad, events

    bad, events = asyncio.run(scenario())
    errors = bad["payload"]["errors"] if bad["type"] == "next" else bad["payload"]
    assert [e["extensions"]["code"] for e in errors] == ["VENUE_UNKNOWN"]
    assert events == [("OPEN", "2025-03-13T00:00:00+00:00"),
                      ("BREAK_START", "2025-03-13T02:30:00+00:00"),
                      ("BREAK_END", "2025-03-13T03:30:00+00:00"),
                      ("CLOSE", "2025-03-13T06:30:00+00:00")]
