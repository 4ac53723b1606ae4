"""Realistic simulated liquidity (issue 17): a large order walks a book shaped by the
square-root law and pays for it, moves the venue's quote, which recovers with a half-life; a
venue shows at most its participation cap at once; the covered instruments trade on several
real venues, and smart routing chooses among them by price, fees and depth; the backtester
charges what the venues' books cost. Through GraphQL where a client would see it, on the
plugin where the law itself is checked."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal as D

import pytest

from gateway.app import create_app
from gateway.markets.clock import ManualClock
from gateway.markets.directory import CalendarVenueDirectory
from gateway.reports import best_execution
from gateway.strategies.backtest import Costs
from plugins.builtin.market_twin import MarketTwin
from plugins.builtin.sim_exchange.connector import SimulatedExchange
from plugins.builtin.sim_exchange.liquidity import LiquiditySettings
from plugins.sdk import (
    DEFAULT_IMPACT_COEFFICIENT,
    DEFAULT_PARTICIPATION_RATE,
    OrderRequest,
    OrdType,
    Side,
    TimeInForce,
    square_root_impact,
)
from tests.support import GraphQLClient, LiveServer, onboard, with_clock

ISIN = "US0378331005"  # AAPL
US_VENUES = {"XNAS", "BATS", "ARCX", "IEXG"}
FIELDS = "id status mic cumQty leavesQty avgPx rejectCode rejectText routing"
SUBMIT = f"mutation($input: SubmitOrderInput!) {{ submitOrder(input: $input) {{ {FIELDS} }} }}"
TRADES = "query($id: ID!) { trades(orderId: $id) { edges { node { lastQty lastPx } } } }"
ACCOUNT = """mutation($input: TradingAccountInput!) { upsertTradingAccount(input: $input) { id } }"""
INSTRUMENTS = """query($search: String) { instruments(search: $search, first: 100) {
  edges { node { key symbol mic isin currency } } } }"""
TICK = D("0.01")


# -- on the plugin: the law -------------------------------------------------------------------

@pytest.fixture(scope="module")
def directory() -> CalendarVenueDirectory:
    return CalendarVenueDirectory()


def probe(cid: str, qty: D, at: datetime, mic: str = "XNAS", side: Side = Side.BUY,
          tif: TimeInForce = TimeInForce.IOC, price: D | None = None) -> OrderRequest:
    return OrderRequest(cid, "A", "AAPL", mic, side, OrdType.LIMIT if price else OrdType.MARKET, tif,
                        qty, price, None, "USD", None, at)


def test_slippage_grows_with_size_as_the_square_root_law_says(directory):
    twin = MarketTwin(directory)
    ex = SimulatedExchange(directory, sources=[twin], mics=["XNAS"])
    at = datetime(2024, 3, 5, 15, 0, 30, tzinfo=UTC)
    aapl = next(i for i in twin.instruments() if i.key == "AAPL.XNAS")
    quote = twin.quote(aapl, at)
    mid = (quote.bid + quote.ask) / 2
    ex.quote_for(probe("warm", D(1), at))
    profile = ex._profiles[("XNAS", "AAPL")][1]
    assert profile is not None and profile.volume > 0 and profile.volatility > 0
    slippage = []
    for qty in (D(20_000), D(60_000), D(120_000), D(200_000)):
        got = ex.quote_for(probe(f"q{qty}", qty, at))
        assert got.available_qty == qty  # all within the participation cap
        beyond_touch = (got.expected_price - quote.ask) / mid
        law = square_root_impact(qty - quote.ask_size, profile.volume, profile.volatility)
        # The walk pays the law's figure beyond the touch, a little more on the tick grid.
        assert law * D("0.9") <= beyond_touch * qty / (qty - quote.ask_size) <= law * D("1.35"), qty
        slippage.append((got.expected_price - mid) / mid)
    assert slippage == sorted(slippage) and slippage[-1] > 2 * slippage[0]


def test_the_participation_cap_bounds_an_instant_and_a_resting_rest_keeps_working(directory):
    twin = MarketTwin(directory)
    ex = SimulatedExchange(directory, sources=[twin], mics=["IEXG"])
    at = datetime(2024, 3, 5, 15, 0, 30, tzinfo=UTC)
    ex.quote_for(probe("warm", D(1), at, mic="IEXG"))
    profile = ex._profiles[("IEXG", "AAPL")][1]
    cap = profile.cap(ex.liquidity)
    # 10 % of 15 minutes' volume at the day's pace on IEX.
    assert cap == profile.volume * D("0.1") * D(15) / D(390)
    reports = ex.submit(probe("big", D(200_000), at, mic="IEXG"))
    done = reports[-1]
    assert done.reject_code == "PARTICIPATION_LIMIT" and "10% of 15 minutes' volume" in done.text
    assert cap - 1 <= done.cum_qty <= cap and done.leaves_qty == 0
    # A limit order through the whole book takes the same at once, rests, and takes more as
    # the venue shows liquidity again a minute later.
    later = at + timedelta(hours=1)
    limit = ex.submit(probe("lim", D(200_000), later, mic="IEXG", tif=TimeInForce.DAY, price=D(400)))
    first = limit[-1].cum_qty
    assert 0 < first <= cap and limit[-1].ord_status.value == "PARTIALLY_FILLED"
    more = ex.on_clock(later + timedelta(minutes=1))
    assert [r for r in more if r.client_order_id == "lim"][-1].cum_qty > first


def test_the_backtester_charges_what_the_venue_book_costs(directory):
    """One formula and one set of defaults on both sides: a backtest fill of q against a day's
    volume V and volatility sigma pays `square_root_impact(q, V, sigma)`, and walking the
    venue's book for q costs that beyond the touch."""
    costs, venue = Costs(), LiquiditySettings()
    assert costs.participation_rate == venue.participation_rate == DEFAULT_PARTICIPATION_RATE
    assert costs.impact_coefficient == venue.impact_coefficient == DEFAULT_IMPACT_COEFFICIENT
    twin = MarketTwin(directory)
    ex = SimulatedExchange(directory, sources=[twin], mics=["XNAS"])
    at = datetime(2024, 6, 4, 15, 0, tzinfo=UTC)
    aapl = next(i for i in twin.instruments() if i.key == "AAPL.XNAS")
    quote = twin.quote(aapl, at)
    qty = D(100_000)
    got = ex.quote_for(probe("p", qty, at))
    profile = ex._profiles[("XNAS", "AAPL")][1]
    # The backtester's impact on a daily bar of the same history (its own code path).
    from gateway.strategies import backtest

    bars = twin.bars(aapl, at - timedelta(days=45), at.replace(hour=0), "1d")
    assert backtest.square_root_impact is square_root_impact
    charged = square_root_impact(qty - quote.ask_size, profile.volume, profile.volatility)
    paid = (got.expected_price - quote.ask) / quote.ask * qty / (qty - quote.ask_size)
    assert charged * D("0.9") <= paid <= charged * D("1.35")
    assert abs(profile.volume - sum(b.volume for b in bars[-20:]) / 20) < 1


# -- through GraphQL -------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def venue(runtime):
    clock = ManualClock(datetime(2025, 3, 11, 15, 0, tzinfo=UTC))
    rt = with_clock(runtime, clock)
    with LiveServer(create_app(runtime=rt)) as live:
        yield GraphQLClient(live.url), clock, rt


@pytest.fixture
def desk(venue):
    gql, clock, rt = venue
    tenant = onboard(rt)
    gql.data(ACCOUNT, {"input": {"code": "ACC1", "currency": "USD", "domicile": "US",
                                 "creditLimit": "10000000000", "equity": "5000000000"}}, key=tenant.key)
    return gql, tenant, clock, rt


def submit(gql, tenant, qty: D | int, *, mic: str = "XNAS", symbol: str = "AAPL", **more):
    body = {"clientOrderId": f"c-{datetime.now(UTC).timestamp()}-{qty}-{mic}", "account": "ACC1",
            "symbol": symbol, "mic": mic, "side": "BUY", "quantity": str(qty), "ordType": "MARKET",
            "timeInForce": "IOC", **more}
    return gql.data(SUBMIT, {"input": body}, key=tenant.key)["submitOrder"]


def test_a_large_order_walks_the_book_moves_the_quote_and_it_recovers(desk):
    gql, tenant, clock, rt = desk
    t0 = datetime(2025, 3, 12, 15, 0, tzinfo=UTC)
    clock.set(t0)
    q0 = rt.market_data.quote("AAPL.XNAS", t0)
    small = submit(gql, tenant, 100)
    assert small["status"] == "FILLED" and D(small["avgPx"]) == q0.ask
    # About $12 M at once.
    clock.set(t0 + timedelta(seconds=1))
    q1 = rt.market_data.quote("AAPL.XNAS", clock.now())
    qty = int(D(12_000_000) / q1.ask / 100) * 100
    big = submit(gql, tenant, qty)
    assert big["status"] == "FILLED", big
    prices = {D(e["node"]["lastPx"]) for e in
              gql.data(TRADES, {"id": big["id"]}, key=tenant.key)["trades"]["edges"]}
    arrival = D(big["routing"]["arrival_price"])
    slippage_bps = (D(big["avgPx"]) - arrival) / arrival * 10_000
    # It walked many levels and paid real slippage: several basis points, not a few cents.
    assert len(prices) >= 4 and max(prices) - q1.ask >= 10 * TICK
    assert slippage_bps > 3 and D(big["avgPx"]) - q1.ask > 5 * TICK, slippage_bps

    def moved(after: timedelta) -> D:
        clock.set(t0 + timedelta(seconds=1) + after)
        source = rt.market_data.quote("AAPL.XNAS", clock.now())
        # Each probe its own quantity: the duplicate-order guard would deny a repeat.
        o = submit(gql, tenant, 100 + after.seconds // 60 + 1)
        assert o["status"] == "FILLED", o
        assert D(o["routing"]["expected_price"]) == D(o["avgPx"])
        return D(o["avgPx"]) - source.ask  # the venue's ask against the unmoved source's

    first = moved(timedelta(seconds=1))
    assert first >= 5 * TICK  # the venue's quote moved up with the buying
    half = moved(timedelta(minutes=5))  # one half-life later
    assert first * D("0.25") <= half <= first * D("0.75"), (first, half)
    assert moved(timedelta(minutes=40)) <= TICK  # recovered


def test_the_same_instrument_trades_on_several_real_venues(desk):
    gql, tenant, *_ = desk
    edges = gql.data(INSTRUMENTS, {"search": ISIN}, key=tenant.key)["instruments"]["edges"]
    assert {e["node"]["mic"] for e in edges} == US_VENUES
    assert {(e["node"]["symbol"], e["node"]["isin"], e["node"]["currency"]) for e in edges} == \
        {("AAPL", ISIN, "USD")}
    for search, venues in (("GB00BP6MXD84", {"XLON", "CHIX", "TRQX", "AQXE"}),
                           ("DE0007164600", {"XETR", "CEUX", "AQEU"}),
                           ("JP3633400001", {"XTKS", "CHIJ", "SBIJ"}),
                           ("AU000000BHP4", {"XASX", "CXAC"})):
        found = gql.data(INSTRUMENTS, {"search": search}, key=tenant.key)["instruments"]["edges"]
        assert {e["node"]["mic"] for e in found} == venues, search


def test_smart_routing_chooses_by_price_fees_and_depth(desk):
    gql, tenant, clock, rt = desk
    t0 = datetime(2025, 3, 13, 15, 0, tzinfo=UTC)
    clock.set(t0)
    o = submit(gql, tenant, 100, mic="SMART")
    assert o["status"] == "FILLED" and o["mic"] in US_VENUES - {"XNAS"}, o["mic"]
    routing = o["routing"]
    scores = {a["mic"]: D(a["score"]) for a in routing["alternatives"]}
    assert set(scores) == US_VENUES and scores[o["mic"]] == min(scores.values())
    chosen, primary = (next(a for a in routing["alternatives"] if a["mic"] == m)
                       for m in (o["mic"], "XNAS"))
    # Not a better price: a lower fee on the same price.
    assert D(chosen["expected_price"]) <= D(primary["expected_price"])
    assert D(chosen["fee_bps"]) < D(primary["fee_bps"]) and scores["XNAS"] > scores[o["mic"]]
    # About $12 M: the thin venues would cost more than the primary's deeper book.
    clock.set(t0 + timedelta(hours=1))
    ask = rt.market_data.quote("AAPL.XNAS", clock.now()).ask
    big = submit(gql, tenant, int(D(12_000_000) / ask / 100) * 100, mic="SMART")
    assert big["status"] == "FILLED" and big["mic"] == "XNAS", big["mic"]
    thin = [a for a in big["routing"]["alternatives"] if a["mic"] != "XNAS"]
    assert all(a["score"] is None or D(a["score"]) > D(big["routing"]["score"]) for a in thin)
    # The best-execution figures on these two orders: each venue's share and what routing
    # gained over the runner-up.
    outcomes = [best_execution.OrderOutcome(
        order_id=x["id"], mic=x["mic"], instrument_class="EQUITY", side="BUY",
        quantity=D(x["cumQty"]), filled_quantity=D(x["cumQty"]), average_price=D(x["avgPx"]),
        arrival_price=D(x["routing"]["arrival_price"]), submitted_at=t0, first_fill_at=t0,
        routing=x["routing"]) for x in (o, big)]
    rows = {r.mic: r for r in best_execution.build_quality(outcomes)}
    assert rows["XNAS"].share_of_quantity > D("0.99") and rows["XNAS"].smart_orders == 1
    assert rows[o["mic"]].routing_gain_bps > 0 and rows["XNAS"].routing_gain_bps > 0


def test_an_order_beyond_the_participation_cap_is_cut_with_a_reason(desk):
    gql, tenant, clock, _rt = desk
    clock.set(datetime(2025, 3, 14, 15, 0, tzinfo=UTC))
    # IEX is a fifth of Nasdaq's volume: 100,000 AAPL is beyond what it shows at once.
    o = submit(gql, tenant, 100_000, mic="IEXG")
    assert o["status"] == "CANCELED" and o["rejectCode"] == "PARTICIPATION_LIMIT", o
    assert 0 < D(o["cumQty"]) < 100_000 and o["leavesQty"] == "0"
    assert "15 minutes' volume" in o["rejectText"]


def test_the_profile_of_a_venue_open_before_utc_midnight_reads_no_bar_of_its_day(directory):
    """XASX opens ~23:00 UTC the day before: the profile is cut at Sydney's midnight, so the
    day's own daily bar (its whole volume, not known yet) is never read; cached per local day."""
    from zoneinfo import ZoneInfo

    sydney = ZoneInfo("Australia/Sydney")
    twin = MarketTwin(directory)
    bhp = next(i for i in twin.instruments() if i.key == "BHP.XASX")
    read: list[tuple[datetime, datetime]] = []

    class Recording:
        plugin_name = "recording"

        def __getattr__(self, name):
            return getattr(twin, name)

        def bars(self, instrument, start, end, interval):
            bars = twin.bars(instrument, start, end, interval)
            if interval == "1d":
                read.extend((b.start, end) for b in bars)
            return bars

    ex = SimulatedExchange(directory, sources=[Recording()], mics=["XASX"])
    at = datetime(2025, 3, 12, 11, 30, tzinfo=sydney).astimezone(UTC)  # 00:30 UTC, same date
    request = OrderRequest("bhp", "A", "BHP", "XASX", Side.BUY, OrdType.MARKET, TimeInForce.IOC,
                           D(1), None, None, "AUD", None, at)
    ex.quote_for(request)
    profile = ex._profiles[("XASX", "BHP")]
    assert profile[0] == datetime(2025, 3, 12).date() and profile[1] is not None
    assert read, "no daily bar read"
    local_days = {start.astimezone(sydney).date() for start, _ in read}
    assert datetime(2025, 3, 12).date() not in local_days, sorted(local_days)[-3:]
    # The twin has a bar for that local day (the cut, not the data, keeps it out).
    today = twin.bars(bhp, datetime(2025, 3, 11, tzinfo=UTC), datetime(2025, 3, 13, tzinfo=UTC), "1d")
    assert datetime(2025, 3, 12).date() in {b.start.astimezone(sydney).date() for b in today}


def test_an_empty_side_of_a_capped_book_is_no_participation_limit(directory):
    """The participation cap is reached only on a side the capped ladder put liquidity on: a
    market order against a side empty from the start is MARKET_NO_LIQUIDITY."""
    at = datetime(2024, 3, 5, 15, 0, tzinfo=UTC)
    engine = SimulatedExchange(directory, mics=["ALPX"]).engine("ALPX", "TEST")
    engine.refresh([(Side.SELL, D("100"), D("5"))], at, cap_note="10 % of the volume")

    def market(cid: str, side: Side, qty: str) -> str | None:
        r = OrderRequest(cid, "A", "TEST", "ALPX", side, OrdType.MARKET, TimeInForce.IOC, D(qty),
                         None, None, "USD", None, at)
        return engine.accept(r, f"v-{cid}", at)[-1].reject_code

    assert market("sell", Side.SELL, "1") == "MARKET_NO_LIQUIDITY"  # no bid at all
    assert market("buy", Side.BUY, "8") == "PARTICIPATION_LIMIT"  # took the capped asks
