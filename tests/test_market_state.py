"""The market-state feed end to end through GraphQL (gateway/marketdata/state.py): every rule
that reads MarketState fires and denies an order with its code.

- halts (instrument and venue) and resumption, audited on the platform chain and published;
- REDUCING: an increasing order denied, a reducing one passes;
- SEC Rule 201: after a 10 % fall in the twin's data, a short sale at the best bid is denied,
  the same order passes on a day without the trigger;
- HKEX designated securities: a short sale of an instrument off the list is denied;
- the TSE short-sale price restriction after a 10 % fall;
- the TSE daily price limit measured from the previous close, not the mid;
- only platform administrators halt, resume and edit the lists; every tenant sees the same.

The fall-of-10 % days are found in the twin's own data (a scan of its daily bars), not named."""

from __future__ import annotations

import asyncio
import itertools
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal as D
from zoneinfo import ZoneInfo

import pytest
from sqlmodel import col, select

from gateway.app import create_app
from gateway.audit.models import PLATFORM_CHAIN, AuditRecord
from gateway.db import ALL_TENANTS
from gateway.marketdata.state import TOPIC, MarketStateService
from gateway.marketdata.state_models import MarketHalt, ShortSaleRestrictionRow
from gateway.markets.clock import ManualClock
from plugins.builtin.compliance.jp import daily_price_limit
from tests.support import (
    GraphQLClient,
    LiveServer,
    TransportWS,
    error_codes,
    onboard,
    subscribed,
    unique,
    user_key,
    with_clock,
)

OPEN_NY = datetime(2025, 3, 12, 15, 0, tzinfo=UTC)  # a Wednesday, New York open since 13:30
EARLY = datetime(2000, 1, 3, tzinfo=UTC)
STATE = """query($i: String!, $m: String) { marketState(instrument: $i, mic: $m) { instrument
  symbol mic tradingDay referencePrice previousClose previousCloseOn bestBid bestAsk lastPrice
  halted reducing shortSaleRestricted shortable shortSaleList halts { mic symbol instrument mode
  reason } shortSaleRestriction { rule triggeredOn inForceUntil previousClose triggerPrice
  recorded } } }"""
HALT = """mutation($i: HaltTradingInput!) { haltTrading(input: $i) { mic symbol instrument mode
  reason setBy } }"""
RESUME = """mutation($m: String!, $i: String) { resumeTrading(mic: $m, instrument: $i) { mic symbol
  mode } }"""
DESIGNATE = """mutation($i: String!, $m: String!, $d: Boolean!) { setShortSaleDesignation(
  instrument: $i, mic: $m, designated: $d) { mic symbol instrument } }"""
SUBMIT = """mutation($input: SubmitOrderInput!) { submitOrder(input: $input) { id status rejectCode
  rejectText mic } }"""
ACCOUNT = """mutation($input: TradingAccountInput!) { upsertTradingAccount(input: $input) { code } }"""
LOCATE = """mutation($i: LocateInput!) { recordLocate(input: $i) { remaining } }"""
CONTROLS = """mutation($input: ComplianceControlsInput!) { setComplianceControls(input: $input) {
  collarPct } }"""


@pytest.fixture
def platform_admin(runtime):
    ops = onboard(runtime)
    user_id, key = user_key(runtime, ops)
    runtime.policy.grant(user_id, "platform_admin", ALL_TENANTS)
    return user_id, key


@pytest.fixture
def desk(runtime):
    """A gateway on a ManualClock (its own simulated venues) and a tenant with accounts in
    New York (USD), Tokyo (JPY) and Hong Kong (HKD)."""
    clock = ManualClock(EARLY)  # each test moves it to its scenario (it only goes forward)
    rt = with_clock(runtime, clock)
    with LiveServer(create_app(runtime=rt)) as live:
        gql = GraphQLClient(live.url)
        tenant = onboard(rt)
        for code, currency, domicile in (("US1", "USD", "US"), ("JP1", "JPY", "JP"),
                                         ("HK1", "HKD", "HK")):
            gql.data(ACCOUNT, {"input": {"code": code, "currency": currency, "domicile": domicile,
                                         "creditLimit": "100000000000", "equity": "100000000000"}},
                     key=tenant.key)
        yield gql, tenant, clock, rt, live


def order(account: str, symbol: str, mic: str, side: str = "BUY", quantity: str = "100",
          price: D | None = None) -> dict[str, str]:
    out = {"clientOrderId": unique("o"), "account": account, "symbol": symbol, "mic": mic,
           "side": side, "quantity": quantity, "ordType": "MARKET", "timeInForce": "IOC"}
    if price is not None:
        out.update(ordType="LIMIT", timeInForce="DAY", limitPrice=format(price, "f"))
    return out


def submit(gql, key, **kw):
    return gql.data(SUBMIT, {"input": order(**kw)}, key=key)["submitOrder"]


def state(gql, key, instrument, mic=None):
    return gql.data(STATE, {"i": instrument, "m": mic}, key=key)["marketState"]


def locate(gql, key, account, instrument, quantity="100000"):
    gql.data(LOCATE, {"i": {"account": account, "instrument": instrument, "quantity": quantity}},
             key=key)


def session_instant(rt, mic: str, day: date, minutes: int = 30) -> datetime:
    """`minutes` after the venue's first open on or after its local date `day`."""
    zone = ZoneInfo(rt.markets.directory.venue(mic).timezone)
    start = datetime.combine(day, time(), zone).astimezone(UTC)
    windows = rt.markets.directory.sessions(mic, start, start + timedelta(days=10))
    return windows[0].opens_at + timedelta(minutes=minutes)


def next_trading_day(rt, mic: str, day: date) -> date:
    zone = ZoneInfo(rt.markets.directory.venue(mic).timezone)
    return session_instant(rt, mic, day + timedelta(days=1), 0).astimezone(zone).date()


def ten_percent_fall(rt, country: str) -> tuple[str, date]:
    """(instrument key, local date) of the first day on which a twin equity of a venue in
    `country` traded 10 % or more below its previous close."""
    directory = rt.markets.directory
    keys = [i.key for i in rt.market_data.instruments()
            if i.asset_class == "EQUITY" and directory.venue(i.mic).country == country
            and rt.market_data.source_of(i.key).plugin == "market-twin"]
    for year in range(2018, 2030, 4):
        for key in keys:
            bars = rt.market_data.bars(key, datetime(year, 1, 1, tzinfo=UTC),
                                       datetime(year + 4, 1, 1, tzinfo=UTC), "1d")
            zone = ZoneInfo(directory.venue(key.rpartition(".")[2]).timezone)
            for before, bar in itertools.pairwise(bars):
                if bar.low <= before.close * D("0.9"):
                    return key, bar.start.astimezone(zone).date()
    pytest.fail(f"the twin has no 10 % fall of a {country} equity to test with")


def quiet_day(gql, key, rt, clock, instrument, mic, after: date) -> dict:
    """Move the clock into a session at least 20 days after `after` where no short-sale
    restriction is in force; answers that instant's market state."""
    day = after + timedelta(days=20)
    for _ in range(30):
        clock.set(max(clock.now(), session_instant(rt, mic, day)))
        found = state(gql, key, instrument)
        if not found["shortSaleRestricted"]:
            return found
        day = next_trading_day(rt, mic, day)
    pytest.fail("no day without a short-sale restriction")


def platform_records(rt, kind: str) -> list[AuditRecord]:
    with rt.db.system_session() as session:
        return list(session.exec(select(AuditRecord).where(AuditRecord.chain == PLATFORM_CHAIN,
                                                           AuditRecord.kind == kind)
                                 .order_by(col(AuditRecord.seq))).all())


# -- halts ---------------------------------------------------------------------------------

def test_a_halt_denies_orders_until_resumed_and_is_audited_and_published(desk, platform_admin):
    gql, tenant, clock, rt, live = desk
    clock.set(OPEN_NY)
    admin_id, admin = platform_admin
    # A tenant admin is not a platform administrator: it cannot halt, and nothing changes.
    body = gql(HALT, {"i": {"mic": "XNAS", "instrument": "AAPL.XNAS", "reason": "mine"}},
               key=tenant.key)
    assert error_codes(body) == ["FORBIDDEN"]
    assert gql.data("{ marketHalts { mic } }", key=tenant.key)["marketHalts"] == []
    before = len(platform_records(rt, "market.halted"))

    async def scenario():
        async with TransportWS(live.ws_url, tenant.key) as ws:
            await ws.subscribe("s", 'subscription { marketStateEvents(mics: ["XNAS"]) { kind mic '
                                    "symbol details } }")
            await subscribed(rt, TOPIC)
            halted = await asyncio.to_thread(gql.data, HALT, {"i": {
                "mic": "XNAS", "instrument": "AAPL.XNAS", "reason": "news pending"}}, key=admin)
            message = await ws.next(timeout=10, op_id="s")
            return halted["haltTrading"], message["payload"]["data"]["marketStateEvents"]

    try:
        halted, event = asyncio.run(scenario())
        assert halted == {"mic": "XNAS", "symbol": "AAPL", "instrument": "AAPL.XNAS",
                          "mode": "HALTED", "reason": "news pending", "setBy": admin_id}
        assert event["kind"] == "HALTED" and event["symbol"] == "AAPL"
        assert event["details"]["reason"] == "news pending"
        seen = state(gql, tenant.key, "AAPL.XNAS")
        assert seen["halted"] is True and seen["halts"][0]["reason"] == "news pending"
        denied = submit(gql, tenant.key, account="US1", symbol="AAPL", mic="XNAS")
        assert denied["status"] == "DENIED" and denied["rejectCode"] == "COMPLIANCE_TRADING_HALTED"
        # Another instrument of the venue trades; a venue-wide halt stops it too.
        assert submit(gql, tenant.key, account="US1", symbol="MSFT", mic="XNAS")["status"] == "FILLED"
        gql.data(HALT, {"i": {"mic": "XNAS", "reason": "venue outage"}}, key=admin)
        msft = submit(gql, tenant.key, account="US1", symbol="MSFT", mic="XNAS")
        assert msft["rejectCode"] == "COMPLIANCE_TRADING_HALTED"
        assert len(state(gql, tenant.key, "MSFT.XNAS")["halts"]) == 1
        # Resuming the instrument does not lift the venue's halt; resuming the venue does.
        gql.data(RESUME, {"m": "XNAS"}, key=admin)
        again = submit(gql, tenant.key, account="US1", symbol="MSFT", mic="XNAS", quantity="110")
        assert again["status"] == "FILLED", again  # (another quantity: not the duplicate guard's)
        assert submit(gql, tenant.key, account="US1", symbol="AAPL", mic="XNAS")["status"] == "DENIED"
        assert error_codes(gql(RESUME, {"m": "XNAS", "i": "AAPL.XNAS"}, key=tenant.key)) == ["FORBIDDEN"]
        assert gql.data(RESUME, {"m": "XNAS", "i": "AAPL.XNAS"}, key=admin)["resumeTrading"] == {
            "mic": "XNAS", "symbol": "AAPL", "mode": "HALTED"}
        assert submit(gql, tenant.key, account="US1", symbol="AAPL", mic="XNAS")["status"] == "FILLED"
    finally:
        with rt.db.system_transaction() as session:  # leave no halt to the other tests
            for row in session.exec(select(MarketHalt).where(MarketHalt.mic == "XNAS")):
                session.delete(row)
        rt.market_state._invalidate()
    records = platform_records(rt, "market.halted")[before:]
    assert [(r.subject, r.actor, r.payload["reason"]) for r in records] == [
        ("AAPL.XNAS", admin_id, "news pending"), ("XNAS", admin_id, "venue outage")]
    assert [r.subject for r in platform_records(rt, "market.resumed")][-2:] == ["XNAS", "AAPL.XNAS"]
    assert rt.audit.verify(None).ok


def test_reducing_accepts_only_position_reducing_orders(desk, platform_admin):
    gql, tenant, clock, _rt, _ = desk
    clock.set(OPEN_NY)
    _, admin = platform_admin
    assert submit(gql, tenant.key, account="US1", symbol="AAPL", mic="XNAS",
                  quantity="10")["status"] == "FILLED"
    gql.data(HALT, {"i": {"mic": "XNAS", "instrument": "AAPL.XNAS", "mode": "REDUCING",
                          "reason": "corporate action"}}, key=admin)
    try:
        seen = state(gql, tenant.key, "AAPL.XNAS")
        assert seen["reducing"] is True and seen["halted"] is False
        more = submit(gql, tenant.key, account="US1", symbol="AAPL", mic="XNAS", quantity="10")
        assert more["status"] == "DENIED" and more["rejectCode"] == "COMPLIANCE_REDUCING_ONLY"
        flip = submit(gql, tenant.key, account="US1", symbol="AAPL", mic="XNAS", side="SELL",
                      quantity="11")
        assert flip["rejectCode"] in ("COMPLIANCE_REDUCING_ONLY", "COMPLIANCE_SHORT_SALE_NOT_FLAGGED")
        less = submit(gql, tenant.key, account="US1", symbol="AAPL", mic="XNAS", side="SELL",
                      quantity="5")
        assert less["status"] == "FILLED", less
    finally:
        gql.data(RESUME, {"m": "XNAS", "i": "AAPL.XNAS"}, key=admin)
    assert submit(gql, tenant.key, account="US1", symbol="AAPL", mic="XNAS",
                  quantity="12")["status"] == "FILLED"


def test_halt_input_is_checked_and_nothing_is_written(desk, platform_admin):
    gql, tenant, _clock, _rt, _ = desk
    _, admin = platform_admin
    cases = [
        ({"mic": "XNAS", "instrument": "AAPL.XNAS", "reason": "  "}, "MARKET_HALT_REASON_INVALID"),
        ({"mic": "XNAS", "instrument": "AAPL.XNAS", "reason": "x" * 501}, "MARKET_HALT_REASON_INVALID"),
        ({"mic": "XXXX", "reason": "r"}, "VENUE_UNKNOWN"),
        ({"mic": "XNAS", "instrument": "NOPE.XNAS", "reason": "r"}, "INSTRUMENT_UNKNOWN"),
        ({"mic": "XHKG", "instrument": "AAPL.XNAS", "reason": "r"}, "INSTRUMENT_UNKNOWN"),
    ]
    for given, code in cases:
        assert error_codes(gql(HALT, {"i": given}, key=admin)) == [code], given
    assert gql.data("{ marketHalts { mic } }", key=admin)["marketHalts"] == []
    assert error_codes(gql(RESUME, {"m": "XNAS", "i": "AAPL.XNAS"}, key=admin)) == ["MARKET_NOT_HALTED"]
    assert error_codes(gql(DESIGNATE, {"i": "AAPL.XNAS", "m": "XNAS", "d": False},
                           key=admin)) == ["SHORT_SALE_LIST_UNSUPPORTED"]
    assert error_codes(gql(STATE, {"i": "AAPL.XNAS", "m": "XTKS"}, key=tenant.key)) == [
        "INSTRUMENT_UNKNOWN"]


# -- short-sale rules ------------------------------------------------------------------------

def test_rule_201_denies_a_short_sale_at_the_bid_after_a_ten_percent_fall(desk):
    gql, tenant, clock, rt, _ = desk
    key, fell_on = ten_percent_fall(rt, "US")
    symbol, _, mic = key.rpartition(".")
    clock.set(session_instant(rt, mic, next_trading_day(rt, mic, fell_on)))
    seen = state(gql, tenant.key, key)
    assert seen["shortSaleRestricted"] is True, seen
    ssr = seen["shortSaleRestriction"]
    assert ssr["rule"] == "SEC_RULE_201" and ssr["triggeredOn"] == fell_on.isoformat()
    assert D(ssr["triggerPrice"]) <= D(ssr["previousClose"]) * D("0.9")
    locate(gql, tenant.key, "US1", key)
    bid = D(seen["bestBid"])
    at_bid = submit(gql, tenant.key, account="US1", symbol=symbol, mic=mic, side="SELL_SHORT",
                    price=bid)
    assert at_bid["status"] == "DENIED", at_bid
    assert at_bid["rejectCode"] == "COMPLIANCE_SHORT_SALE_PRICE_TEST"
    assert "Rule 201" in at_bid["rejectText"]
    # The order path recorded it (reading the state never does).
    assert state(gql, tenant.key, key)["shortSaleRestriction"]["recorded"] is True
    # The restriction is the security's: it applies on its alternative venues' listings too.
    listings = [i.key for i in rt.market_data.instruments() if i.symbol == symbol
                and rt.markets.directory.venue(i.mic).country == "US"]
    assert len(listings) >= 3, listings
    for listing in listings:
        alt = state(gql, tenant.key, listing)["shortSaleRestriction"]
        assert alt is not None and alt["triggeredOn"] == fell_on.isoformat(), (listing, alt)
        assert alt["recorded"] is True, (listing, alt)
    above = submit(gql, tenant.key, account="US1", symbol=symbol, mic=mic, side="SELL_SHORT",
                   price=D(seen["bestAsk"]) + D("0.01"))
    assert above["rejectCode"] is None, above
    # Recorded, against the primary listing: a fresh feed (a restarted process, caches empty)
    # knows it.
    primary = next(i.mic for i in rt.market_data.instruments() if i.symbol == symbol
                   and rt.markets.directory.venue(i.mic).country == "US"
                   and rt.markets.directory.spec(i.mic).alternative_to is None)
    with rt.db.system_session() as session:
        assert session.get(ShortSaleRestrictionRow, (primary, symbol, fell_on)) is not None
        if primary != mic:
            assert session.get(ShortSaleRestrictionRow, (mic, symbol, fell_on)) is None
    fresh = MarketStateService(rt.db, rt.bus, rt.market_data, rt.markets.directory)
    assert fresh.state(symbol, mic, clock.now()).market.short_sale_restricted is True
    subjects = [r.subject for r in platform_records(rt, "market.short_sale_restricted")]
    assert subjects.count(f"{symbol}.{primary}") == 1
    # Without the trigger the same order at the bid passes.
    quiet = quiet_day(gql, tenant.key, rt, clock, key, mic, fell_on)
    passed = submit(gql, tenant.key, account="US1", symbol=symbol, mic=mic, side="SELL_SHORT",
                    price=D(quiet["bestBid"]))
    assert passed["status"] != "DENIED" and passed["rejectCode"] is None, passed


def test_tse_short_sale_price_restriction_after_a_ten_percent_fall(desk):
    gql, tenant, clock, rt, _ = desk
    key, fell_on = ten_percent_fall(rt, "JP")
    symbol, _, mic = key.rpartition(".")
    clock.set(session_instant(rt, mic, next_trading_day(rt, mic, fell_on)))
    seen = state(gql, tenant.key, key)
    assert seen["shortSaleRestricted"] is True, seen
    assert seen["shortSaleRestriction"]["rule"] == "TSE_PRICE_RESTRICTION"
    locate(gql, tenant.key, "JP1", key)
    last = D(seen["lastPrice"])
    at_last = submit(gql, tenant.key, account="JP1", symbol=symbol, mic=mic, side="SELL_SHORT",
                     price=last)
    assert at_last["rejectCode"] == "COMPLIANCE_SHORT_SALE_PRICE_TEST", at_last
    quiet = quiet_day(gql, tenant.key, rt, clock, key, mic, fell_on)
    passed = submit(gql, tenant.key, account="JP1", symbol=symbol, mic=mic, side="SELL_SHORT",
                    price=D(quiet["lastPrice"]))
    assert passed["rejectCode"] is None, passed


def test_tse_daily_limit_is_measured_from_the_previous_close_not_the_mid(desk):
    gql, tenant, clock, rt, _ = desk
    gql.data(CONTROLS, {"input": {"collarPct": "50"}}, key=tenant.key)  # the limit, not the collar
    tick = rt.market_data.instrument("7203.XTKS").tick_size
    day = date(2025, 3, 3)
    for _ in range(40):  # a session where the mid has moved off the previous close
        clock.set(max(clock.now(), session_instant(rt, "XTKS", day, 60)))
        seen = state(gql, tenant.key, "7203.XTKS")
        mid, close = D(seen["referencePrice"]), D(seen["previousClose"])
        if abs(mid - close) >= 2 * tick and daily_price_limit(mid) == daily_price_limit(close):
            break
        day = next_trading_day(rt, "XTKS", day)
    else:
        pytest.fail("no session with the mid two ticks off the previous close")
    width = daily_price_limit(close)
    # Just outside the band around the previous close, inside the band around the mid.
    price = close + width + tick if mid > close else close - width - tick
    assert abs(price - mid) <= width
    side = "BUY" if mid > close else "SELL"
    if side == "SELL":
        assert submit(gql, tenant.key, account="JP1", symbol="7203", mic="XTKS")["status"] == "FILLED"
    denied = submit(gql, tenant.key, account="JP1", symbol="7203", mic="XTKS", side=side, price=price)
    assert denied["rejectCode"] == "COMPLIANCE_DAILY_PRICE_LIMIT", denied
    assert f"base {close.normalize():f}" in denied["rejectText"]
    inside = close + width if mid > close else close - width
    ok = submit(gql, tenant.key, account="JP1", symbol="7203", mic="XTKS", side=side, price=inside)
    assert ok["rejectCode"] is None, ok


def test_hkex_short_sale_of_a_non_designated_security_is_denied(desk, platform_admin):
    gql, tenant, clock, rt, _ = desk
    _, admin = platform_admin
    clock.set(session_instant(rt, "XHKG", date(2025, 3, 13)))
    listed = gql.data('{ shortSaleDesignations(mic: "XHKG") { symbol instrument } }',
                      key=tenant.key)["shortSaleDesignations"]
    assert {"symbol": "0700", "instrument": "0700.XHKG"} in listed  # seeded
    locate(gql, tenant.key, "HK1", "0700.XHKG")
    assert error_codes(gql(DESIGNATE, {"i": "0700.XHKG", "m": "XHKG", "d": False},
                           key=tenant.key)) == ["FORBIDDEN"]
    try:
        assert gql.data(DESIGNATE, {"i": "0700.XHKG", "m": "XHKG", "d": False},
                        key=admin)["setShortSaleDesignation"] is None
        seen = state(gql, tenant.key, "0700.XHKG")
        assert seen["shortable"] is False and seen["shortSaleList"] == "HKEX designated securities"
        denied = submit(gql, tenant.key, account="HK1", symbol="0700", mic="XHKG", side="SELL_SHORT",
                        price=D(seen["bestAsk"]))
        assert denied["status"] == "DENIED"
        assert denied["rejectCode"] == "COMPLIANCE_SHORT_SALE_NOT_ELIGIBLE", denied
    finally:
        gql.data(DESIGNATE, {"i": "0700.XHKG", "m": "XHKG", "d": True}, key=admin)
    seen = state(gql, tenant.key, "0700.XHKG")
    assert seen["shortable"] is True
    passed = submit(gql, tenant.key, account="HK1", symbol="0700", mic="XHKG", side="SELL_SHORT",
                    price=D(seen["bestAsk"]))
    assert passed["rejectCode"] is None, passed
    kinds = [r.kind for r in platform_records(rt, "market.short_sale_undesignated")]
    assert kinds and len(platform_records(rt, "market.short_sale_designated")) >= 1


def test_market_state_shows_the_previous_close_and_the_last_trade(desk):
    gql, tenant, clock, rt, _ = desk
    clock.set(OPEN_NY)
    seen = state(gql, tenant.key, "AAPL.XNAS")
    now = clock.now()
    zone = ZoneInfo("America/New_York")
    local = now.astimezone(zone).date()
    midnight = datetime.combine(local, time(), zone).astimezone(UTC)
    daily = rt.market_data.bars("AAPL.XNAS", midnight - timedelta(days=14), midnight, "1d")
    minutes = rt.market_data.bars("AAPL.XNAS", midnight, now.replace(second=0, microsecond=0), "1m")
    assert D(seen["previousClose"]) == daily[-1].close
    assert seen["previousCloseOn"] == daily[-1].start.astimezone(zone).date().isoformat()
    assert D(seen["lastPrice"]) == minutes[-1].close
    assert seen["tradingDay"] == local.isoformat() and seen["shortable"] is True


# -- tenants ---------------------------------------------------------------------------------

def test_market_state_is_platform_wide_and_only_platform_admins_change_it(desk, platform_admin):
    """Tenant B sees what tenant A sees; neither tenant's admin halts, resumes or edits the
    lists (for the platform or for itself: there are no tenant-scoped market states)."""
    gql, a, clock, rt, _ = desk
    clock.set(OPEN_NY)
    _, admin = platform_admin
    b = onboard(rt)
    gql.data(HALT, {"i": {"mic": "XNAS", "instrument": "MSFT.XNAS", "reason": "test"}}, key=admin)
    try:
        for query, variables in ((STATE, {"i": "MSFT.XNAS"}), ("{ marketHalts { mic symbol } }", None),
                                 ('{ shortSaleDesignations(mic: "XHKG") { symbol } }', None)):
            assert gql.data(query, variables, key=a.key) == gql.data(query, variables, key=b.key)
        for key in (a.key, b.key):
            assert error_codes(gql(RESUME, {"m": "XNAS", "i": "MSFT.XNAS"}, key=key)) == ["FORBIDDEN"]
            assert error_codes(gql(HALT, {"i": {"mic": "XNAS", "reason": "x"}}, key=key)) == ["FORBIDDEN"]
            assert error_codes(gql(DESIGNATE, {"i": "0700.XHKG", "m": "XHKG", "d": False},
                                   key=key)) == ["FORBIDDEN"]
        assert state(gql, b.key, "MSFT.XNAS")["halted"] is True
        assert [h["symbol"] for h in gql.data("{ marketHalts { symbol } }", key=b.key)["marketHalts"]] == [
            "MSFT"]
        assert state(gql, b.key, "0700.XHKG")["shortable"] is True
    finally:
        gql.data(RESUME, {"m": "XNAS", "i": "MSFT.XNAS"}, key=admin)


# -- look-ahead and read-only reads ------------------------------------------------------------

FUTURE = """query($i: String!, $at: DateTime) { marketState(instrument: $i, at: $at) {
  shortSaleRestricted shortSaleRestriction { triggeredOn recorded } } }"""


def unrecorded_fall(rt, country: str) -> tuple[str, date]:
    """A 10 % fall of a twin equity of `country` (on a primary venue) not recorded yet."""
    directory = rt.markets.directory
    keys = [i.key for i in rt.market_data.instruments()
            if i.asset_class == "EQUITY" and directory.venue(i.mic).country == country
            and directory.spec(i.mic).alternative_to is None
            and rt.market_data.source_of(i.key).plugin == "market-twin"]
    for year in range(2018, 2030, 4):
        for key in keys:
            symbol, _, mic = key.rpartition(".")
            bars = rt.market_data.bars(key, datetime(year, 1, 1, tzinfo=UTC),
                                       datetime(year + 4, 1, 1, tzinfo=UTC), "1d")
            zone = ZoneInfo(directory.venue(mic).timezone)
            for before, bar in itertools.pairwise(bars):
                if bar.low <= before.close * D("0.9"):
                    day = bar.start.astimezone(zone).date()
                    with rt.db.system_session() as session:
                        recorded = session.exec(select(ShortSaleRestrictionRow).where(
                            ShortSaleRestrictionRow.mic == mic,
                            ShortSaleRestrictionRow.symbol == symbol,
                            col(ShortSaleRestrictionRow.in_force_until) >= day - timedelta(days=1),
                            col(ShortSaleRestrictionRow.triggered_on) <= day + timedelta(days=5))
                        ).first()
                    if recorded is None:
                        return key, day
    pytest.fail(f"the twin has no unrecorded 10 % fall of a {country} equity")


def restriction_rows(rt) -> int:
    with rt.db.system_session() as session:
        return len(session.exec(select(ShortSaleRestrictionRow)).all())


def test_market_state_refuses_a_future_instant_and_never_records(desk):
    """A read can neither look ahead (a later `at`: MARKET_STATE_FUTURE) nor record a
    platform-wide short-sale restriction: only the order path records."""
    gql, tenant, clock, rt, _ = desk
    key, fell_on = unrecorded_fall(rt, "US")
    _, _, mic = key.rpartition(".")
    clock.set(session_instant(rt, mic, fell_on, 2))
    later = session_instant(rt, mic, fell_on, 380)
    rows, audited = restriction_rows(rt), len(platform_records(rt, "market.short_sale_restricted"))
    body = gql(FUTURE, {"i": key, "at": later.isoformat()}, key=tenant.key)
    assert error_codes(body) == ["MARKET_STATE_FUTURE"], body
    assert restriction_rows(rt) == rows
    # Later, the fall day (a past instant) and the next day are read, the fall seen, not recorded.
    clock.set(session_instant(rt, mic, next_trading_day(rt, mic, fell_on), 30))
    seen = gql.data(FUTURE, {"i": key, "at": later.isoformat()}, key=tenant.key)["marketState"]
    assert seen["shortSaleRestricted"] is True, seen
    assert seen["shortSaleRestriction"]["recorded"] is False
    assert gql.data(FUTURE, {"i": key, "at": None}, key=tenant.key)["marketState"][
        "shortSaleRestriction"]["recorded"] is False
    assert restriction_rows(rt) == rows
    assert len(platform_records(rt, "market.short_sale_restricted")) == audited


# -- alternative venues ------------------------------------------------------------------------

def test_halts_on_the_primary_market_cover_the_alternative_venues(desk, platform_admin):
    """An instrument halt covers every listing of the security in its country; a venue-wide
    halt of a primary market covers its alternative venues and the alternative listings of
    the securities it lists."""
    gql, tenant, clock, rt, _ = desk
    _, admin = platform_admin
    clock.set(session_instant(rt, "XNAS", date(2025, 3, 12), 60))
    quantity = iter(range(100, 1000, 7))  # a new quantity each: not the duplicate guard's

    def status(symbol, mic):
        found = submit(gql, tenant.key, account="US1", symbol=symbol, mic=mic,
                       quantity=str(next(quantity)))
        return found["status"], found["rejectCode"]

    halted = ("DENIED", "COMPLIANCE_TRADING_HALTED")
    try:
        gql.data(HALT, {"i": {"mic": "XNAS", "instrument": "AAPL.XNAS", "reason": "news pending"}},
                 key=admin)
        for mic in ("XNAS", "BATS", "ARCX", "IEXG"):
            assert status("AAPL", mic) == halted, mic
        seen = state(gql, tenant.key, "AAPL.BATS")
        assert seen["halted"] is True and seen["halts"][0]["instrument"] == "AAPL.XNAS"
        assert status("MSFT", "BATS")[0] == "FILLED"
        gql.data(RESUME, {"m": "XNAS", "i": "AAPL.XNAS"}, key=admin)
        assert status("AAPL", "BATS")[0] == "FILLED"
        # A venue-wide halt of XNYS covers its alternative venues.
        gql.data(HALT, {"i": {"mic": "XNYS", "reason": "venue outage"}}, key=admin)
        assert status("MSFT", "ARCX") == halted and status("JPM", "BATS") == halted
        assert status("MSFT", "XNAS")[0] == "FILLED"
        gql.data(RESUME, {"m": "XNYS"}, key=admin)
        assert status("MSFT", "ARCX")[0] == "FILLED"
        # A venue-wide halt of XNAS covers the alternative listings of its securities only.
        gql.data(HALT, {"i": {"mic": "XNAS", "reason": "venue outage"}}, key=admin)
        assert status("AAPL", "BATS") == halted
        assert status("JPM", "BATS")[0] == "FILLED"
        gql.data(RESUME, {"m": "XNAS"}, key=admin)
        assert status("AAPL", "BATS")[0] == "FILLED"
    finally:
        with rt.db.system_transaction() as session:  # leave no halt to the other tests
            for row in session.exec(select(MarketHalt)):
                session.delete(row)
        rt.market_state._invalidate()
