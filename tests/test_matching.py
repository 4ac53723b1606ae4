"""The simulated exchange: its order book and matching engine (price-time priority, partial
fills, IOC/FOK, market and stop orders, cancel/replace priority, self-trade prevention),
lot and tick rules, sessions from the real calendars (holidays, lunch breaks, early closes,
DAY and GTD expiry), the liquidity fed by the market twin, invariants under random order
streams, and the plugin hook.

Most matching tests use the 24/7 venue (ALPX: always open, tick 0.01, lot 1e-8) with no
market behind the book, so every fill comes from the test's own orders."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal, localcontext

import pytest

from gateway.markets.directory import CalendarVenueDirectory
from plugins.builtin import BUILTINS
from plugins.builtin.market_twin import MarketTwin
from plugins.builtin.sim_exchange.book import BookSide, OrderBook
from plugins.builtin.sim_exchange.connector import DEFAULT_FEES, SimulatedExchange
from plugins.builtin.sim_exchange.matching import PLACES
from plugins.host import PluginHost, default_context
from plugins.sdk import (
    ExchangeConnector,
    ExecType,
    ExecutionReport,
    Instrument,
    OrderRequest,
    OrdStatus,
    OrdType,
    Quote,
    Side,
    TimeInForce,
)

D = Decimal
BUY, SELL, SHORT = Side.BUY, Side.SELL, Side.SELL_SHORT
T0 = datetime(2024, 3, 5, 15, 0, tzinfo=UTC)


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def order(cid: str, side: Side, qty: str, px: str | None = None, *, typ: OrdType | None = None,
          tif: TimeInForce = TimeInForce.GTC, acct: str = "A", at: datetime = T0,
          stop: str | None = None, mic: str = "ALPX", sym: str = "TEST", currency: str = "USD",
          expire: datetime | None = None) -> OrderRequest:
    if typ is None:
        typ = OrdType.LIMIT if px is not None else OrdType.MARKET
    return OrderRequest(client_order_id=cid, account=acct, symbol=sym, mic=mic, side=side,
                        ord_type=typ, time_in_force=tif, quantity=D(qty),
                        limit_price=None if px is None else D(px),
                        stop_price=None if stop is None else D(stop), currency=currency,
                        expire_at=expire, submitted_at=at)


@pytest.fixture(scope="module")
def directory() -> CalendarVenueDirectory:
    return CalendarVenueDirectory()


@pytest.fixture
def ex(directory: CalendarVenueDirectory) -> SimulatedExchange:
    return SimulatedExchange(directory)


def of(reports: list[ExecutionReport], cid: str) -> list[ExecutionReport]:
    return [r for r in reports if r.client_order_id == cid]


def trades(reports: list[ExecutionReport], cid: str | None = None) -> list[tuple[Decimal, Decimal]]:
    return [(r.last_qty, r.last_px) for r in reports
            if r.exec_type is ExecType.TRADE and (cid is None or r.client_order_id == cid)]


def last(reports: list[ExecutionReport], cid: str) -> ExecutionReport:
    return of(reports, cid)[-1]


def depth(ex: SimulatedExchange, mic: str = "ALPX", sym: str = "TEST"):
    return ex.book(mic, sym).depth(10)


# -- the book ----------------------------------------------------------------------------

@dataclass(eq=False)
class _Entry:
    order_id: str
    is_buy: bool
    price: Decimal
    leaves: Decimal


def test_book_side_best_is_kept_through_inserts_and_removals():
    rng = random.Random(3)
    side = BookSide(is_bid=True)
    live: dict[str, _Entry] = {}
    for k in range(2000):
        if live and rng.random() < 0.45:
            entry = live.pop(rng.choice(sorted(live)))
            side.remove(entry)
        else:
            entry = _Entry(f"e{k}", True, D(rng.randint(9000, 9100)) / 100, D(1))
            side.add(entry)
            live[entry.order_id] = entry
        prices = sorted({e.price for e in live.values()}, reverse=True)
        assert side.best_price() == (prices[0] if prices else None)
        if k % 97 == 0:
            assert [lv.price for lv in side.levels()] == prices
    # Stale heap keys are compacted away rather than growing without bound.
    assert len(side._heap) <= 2 * len(side) + 33


def test_book_fifo_within_a_level_and_in_place_reduction():
    book = OrderBook()
    a, b, c = (_Entry(x, False, D("10.00"), D(5)) for x in "abc")
    for e in (a, b, c):
        book.add(e)
    book.reduce(a, D(2))  # a keeps its place
    assert [e.order_id for e in book.asks.best()] == ["a", "b", "c"]
    assert book.asks.best().total == D(13)
    book.remove("b")
    assert [e.order_id for e in book.asks.best()] == ["a", "c"]
    book.reduce(a, D(3))  # fully executed: leaves the book
    assert "a" not in book and book.asks.best().head() is c
    with pytest.raises(ValueError):
        book.add(c)


# -- price-time priority and bookkeeping -------------------------------------------------

def test_price_time_priority_across_and_within_levels(ex):
    ex.submit(order("s1", SELL, "5", "101.00", acct="S1"))
    ex.submit(order("s2", SELL, "5", "100.00", acct="S2"))
    ex.submit(order("s3", SELL, "5", "100.00", acct="S3"))
    ex.submit(order("s4", SELL, "5", "102.00", acct="S4"))
    reports = ex.submit(order("b1", BUY, "12", "101.00", acct="B"))
    # Better price first (100 before 101), and at 100 the earlier s2 before s3.
    assert trades(reports, "b1") == [(D(5), D("100.00")), (D(5), D("100.00")), (D(2), D("101.00"))]
    assert [r.client_order_id for r in reports if r.exec_type is ExecType.TRADE and
            r.liquidity == "ADDED"] == ["s2", "s3", "s1"]
    # Each trade's two sides share a match id; the resting side is the maker.
    for r in reports:
        if r.exec_type is ExecType.TRADE:
            twin = [x for x in reports if x.match_id == r.match_id and x is not r]
            assert len(twin) == 1 and twin[0].last_qty == r.last_qty and twin[0].last_px == r.last_px
            assert {r.liquidity, twin[0].liquidity} == {"ADDED", "REMOVED"}
    assert last(reports, "b1").ord_status is OrdStatus.FILLED
    assert last(reports, "s1").ord_status is OrdStatus.PARTIALLY_FILLED
    assert last(reports, "s1").leaves_qty == D(3)
    assert depth(ex) == ([], [(D("101.00"), D(3)), (D("102.00"), D(5))])


def test_partial_fills_keep_cum_leaves_and_average_exact(ex):
    ex.submit(order("s1", SELL, "3", "100.01", acct="S"))
    ex.submit(order("s2", SELL, "4", "100.02", acct="S"))
    reports = ex.submit(order("b", BUY, "10", "100.05", acct="B"))
    fills = of(reports, "b")
    assert [r.exec_type for r in fills] == [ExecType.NEW, ExecType.TRADE, ExecType.TRADE]
    first, second = fills[1], fills[2]
    assert (first.cum_qty, first.leaves_qty, first.avg_px) == (D(3), D(7), D("100.01000000"))
    notional = D(3) * D("100.01") + D(4) * D("100.02")
    assert (second.cum_qty, second.leaves_qty) == (D(7), D(3))
    assert second.avg_px == (notional / 7).quantize(PLACES)
    assert second.ord_status is OrdStatus.PARTIALLY_FILLED
    for r in fills:
        assert r.cum_qty + r.leaves_qty == D(10)
        assert all(isinstance(v, Decimal) for v in (r.last_qty, r.last_px, r.cum_qty, r.leaves_qty,
                                                     r.avg_px, r.fee))
    # Taker pays the taker fee; the makers the maker fee (both per fill, on its notional).
    fees = DEFAULT_FEES["ALPX"]
    assert first.fee == (D(3) * D("100.01") * fees.taker_bps / 10_000).quantize(PLACES)
    assert last(reports, "s2").fee == (D(4) * D("100.02") * fees.maker_bps / 10_000).quantize(PLACES)
    # The rest (3) rests at the limit.
    assert depth(ex) == ([(D("100.05"), D(3))], [])
    # A later seller fills it at the resting price.
    more = ex.submit(order("s3", SELL, "5", "100.00", acct="S"))
    assert trades(more, "b") == [(D(3), D("100.05"))]
    assert last(more, "b").ord_status is OrdStatus.FILLED and last(more, "b").leaves_qty == 0
    assert last(more, "b").avg_px == ((notional + 3 * D("100.05")) / 10).quantize(PLACES)


def test_ioc_fills_what_it_can_and_cancels_the_rest(ex):
    ex.submit(order("s1", SELL, "4", "50.00", acct="S"))
    ex.submit(order("s2", SELL, "4", "50.50", acct="S"))
    reports = ex.submit(order("ioc", BUY, "10", "50.00", tif=TimeInForce.IOC, acct="B"))
    assert trades(reports, "ioc") == [(D(4), D("50.00"))]
    done = last(reports, "ioc")
    assert (done.exec_type, done.ord_status, done.reject_code) == \
        (ExecType.CANCELED, OrdStatus.CANCELED, "IOC_REMAINDER")
    assert (done.cum_qty, done.leaves_qty) == (D(4), D(0))
    assert depth(ex) == ([], [(D("50.50"), D(4))])  # nothing of the IOC rests


def test_fok_is_all_or_nothing_checked_before_any_fill(ex):
    ex.submit(order("s1", SELL, "4", "50.00", acct="S"))
    ex.submit(order("s2", SELL, "4", "50.10", acct="S"))
    before = depth(ex)
    short = ex.submit(order("fok1", BUY, "9", "50.10", tif=TimeInForce.FOK, acct="B"))
    assert trades(short) == []  # not one partial fill, on either side
    assert (last(short, "fok1").ord_status, last(short, "fok1").reject_code) == \
        (OrdStatus.CANCELED, "FOK_UNFILLED")
    assert depth(ex) == before
    # Within its limit only 4 is there, even though 8 is on the book.
    assert last(ex.submit(order("fok2", BUY, "8", "50.00", tif=TimeInForce.FOK, acct="B")),
                "fok2").reject_code == "FOK_UNFILLED"
    whole = ex.submit(order("fok3", BUY, "8", "50.10", tif=TimeInForce.FOK, acct="B"))
    assert trades(whole, "fok3") == [(D(4), D("50.00")), (D(4), D("50.10"))]
    assert last(whole, "fok3").ord_status is OrdStatus.FILLED


def test_fok_does_not_count_the_accounts_own_orders(ex):
    ex.submit(order("own", SELL, "5", "10.00", acct="A"))
    ex.submit(order("other", SELL, "3", "10.00", acct="X"))
    reports = ex.submit(order("fok", BUY, "6", "10.00", tif=TimeInForce.FOK, acct="A"))
    assert last(reports, "fok").reject_code == "FOK_UNFILLED"
    assert of(reports, "own") == []  # a refused FOK cancels nothing either
    assert depth(ex) == ([], [(D("10.00"), D(8))])


def test_market_order_sweeps_levels_and_cancels_what_finds_no_liquidity(ex):
    for k, (qty, px) in enumerate([("2", "20.00"), ("3", "20.01"), ("4", "20.05")]):
        ex.submit(order(f"s{k}", SELL, qty, px, acct="S"))
    sweep = ex.submit(order("m1", BUY, "6", tif=TimeInForce.DAY, acct="B"))
    assert trades(sweep, "m1") == [(D(2), D("20.00")), (D(3), D("20.01")), (D(1), D("20.05"))]
    assert last(sweep, "m1").ord_status is OrdStatus.FILLED
    rest = ex.submit(order("m2", BUY, "10", tif=TimeInForce.DAY, acct="B"))
    assert trades(rest, "m2") == [(D(3), D("20.05"))]
    done = last(rest, "m2")
    assert (done.ord_status, done.reject_code, done.cum_qty, done.leaves_qty) == \
        (OrdStatus.CANCELED, "MARKET_NO_LIQUIDITY", D(3), D(0))
    empty = ex.submit(order("m3", SELL, "1", acct="B"))
    assert [r.exec_type for r in empty] == [ExecType.NEW, ExecType.CANCELED]
    assert depth(ex) == ([], [])  # a market order never rests


def test_stop_orders_trigger_on_the_last_trade_price(ex):
    ex.submit(order("s1", SELL, "1", "104.00", acct="S"))
    ex.submit(order("s2", SELL, "1", "105.00", acct="S"))
    ex.submit(order("s3", SELL, "5", "106.00", acct="S"))
    new = ex.submit(order("stop", BUY, "3", typ=OrdType.STOP, stop="105.00", acct="T"))
    assert [r.exec_type for r in new] == [ExecType.NEW] and depth(ex)[0] == []  # off the book
    below = ex.submit(order("b1", BUY, "1", "104.00", acct="B"))
    assert trades(below, "stop") == []  # last 104 < 105: not yet
    at_stop = ex.submit(order("b2", BUY, "1", "105.00", acct="B"))
    # The trade at 105 fires the stop, which buys at market: the 106 level.
    assert trades(at_stop, "b2") == [(D(1), D("105.00"))]
    assert trades(at_stop, "stop") == [(D(3), D("106.00"))]
    assert last(at_stop, "stop").ord_status is OrdStatus.FILLED


def test_stop_limit_becomes_a_limit_order_and_stops_cascade(ex):
    ex.submit(order("b1", BUY, "1", "99.00", acct="B"))
    ex.submit(order("b2", BUY, "2", "98.00", acct="B"))
    ex.submit(order("sl", SELL, "5", "97.50", typ=OrdType.STOP_LIMIT, stop="99.00", acct="T"))
    ex.submit(order("st", SELL, "1", typ=OrdType.STOP, stop="98.00", acct="U"))
    reports = ex.submit(order("s", SELL, "1", "99.00", acct="S"))
    # s trades at 99 -> the stop-limit fires, sells 2 at 98 (its limit is 97.50) and rests 3 at
    # 97.50; the trade at 98 fires the stop, which finds no bid left and is cancelled.
    assert trades(reports, "sl") == [(D(2), D("98.00"))]
    assert last(reports, "sl").ord_status is OrdStatus.PARTIALLY_FILLED
    assert last(reports, "st").reject_code == "MARKET_NO_LIQUIDITY"
    assert depth(ex) == ([], [(D("97.50"), D(3))])
    # A stop whose condition already holds triggers on arrival.
    ex.submit(order("b3", BUY, "1", "97.50", acct="B"))  # last trade now 97.50
    now = ex.submit(order("late", SELL, "1", "97.50", typ=OrdType.STOP_LIMIT, stop="98.00", acct="V"))
    assert last(now, "late").ord_status is OrdStatus.NEW and depth(ex)[1][0] == (D("97.50"), D(3))


def test_cancel_and_its_refusals(ex):
    ex.submit(order("b", BUY, "5", "10.00"))
    done = ex.cancel("b", "ALPX")
    assert (done.exec_type, done.ord_status, done.leaves_qty) == (ExecType.CANCELED, OrdStatus.CANCELED, 0)
    assert depth(ex) == ([], [])
    again = ex.cancel("b", "ALPX")
    assert (again.exec_type, again.ord_status, again.reject_code) == \
        (ExecType.REJECTED, OrdStatus.CANCELED, "TOO_LATE")
    assert ex.cancel("nope", "ALPX").reject_code == "UNKNOWN_ORDER"
    ex.submit(order("c", BUY, "5", "10.00"))
    assert ex.cancel("c", "XNAS").reject_code == "UNKNOWN_ORDER"  # wrong venue


def test_replace_keeps_priority_on_a_decrease_and_loses_it_otherwise(ex):
    for cid in ("b1", "b2", "b3", "b4"):
        ex.submit(order(cid, BUY, "5", "100.00", acct=cid))
    down = ex.replace("b1", "ALPX", D(3), None)
    assert [(r.exec_type, r.leaves_qty) for r in down] == [(ExecType.REPLACED, D(3))]
    ex.replace("b2", "ALPX", D(6), None)  # more: to the back of the level
    ex.replace("b3", "ALPX", D(5), D("100.00"))  # same price, same quantity: nothing changes
    reports = ex.submit(order("s", SELL, "100", "100.00", acct="S"))
    assert [r.client_order_id for r in reports if r.liquidity == "ADDED"] == ["b1", "b3", "b4", "b2"]
    assert trades(reports, "b1") == [(D(3), D("100.00"))]
    assert trades(reports, "b2") == [(D(6), D("100.00"))]


def test_replace_price_change_loses_priority_and_may_trade_at_once(ex):
    ex.submit(order("b1", BUY, "5", "100.00", acct="X"))
    ex.submit(order("b2", BUY, "5", "100.00", acct="Y"))
    ex.replace("b1", "ALPX", D(5), D("100.01"))
    ex.replace("b1", "ALPX", D(5), D("100.00"))  # back at 100: now behind b2
    fills = ex.submit(order("s1", SELL, "5", "100.00", acct="S"))
    assert [r.client_order_id for r in fills if r.liquidity == "ADDED"] == ["b2"]
    ex.submit(order("s2", SELL, "4", "100.50", acct="S"))
    crossing = ex.replace("b1", "ALPX", D(5), D("100.50"))
    assert [r.exec_type for r in of(crossing, "b1")] == [ExecType.REPLACED, ExecType.TRADE]
    assert trades(crossing, "b1") == [(D(4), D("100.50"))]
    assert last(crossing, "b1").leaves_qty == D(1)


def test_replace_refusals_leave_the_order_as_it_was(ex):
    ex.submit(order("s", SELL, "2", "10.00", acct="S"))
    ex.submit(order("b", BUY, "5", "10.00", acct="B"))  # 2 filled, 3 rest
    below = ex.replace("b", "ALPX", D(2), None)
    assert [(r.exec_type, r.ord_status, r.reject_code) for r in below] == \
        [(ExecType.REJECTED, OrdStatus.PARTIALLY_FILLED, "QUANTITY_BELOW_FILLED")]
    off_tick = ex.replace("b", "ALPX", D(5), D("10.001"))
    assert off_tick[0].reject_code == "TICK_SIZE"
    assert ex.replace("b", "ALPX", D("NaN"), None)[0].reject_code == "INVALID_QUANTITY"
    assert depth(ex) == ([(D("10.00"), D(3))], [])
    ex.cancel("b", "ALPX")
    assert ex.replace("b", "ALPX", D(9), None)[0].reject_code == "TOO_LATE"


def test_self_trade_prevention_cancels_the_resting_order(ex):
    ex.submit(order("mine", SELL, "5", "100.00", acct="A"))
    ex.submit(order("theirs", SELL, "5", "100.00", acct="B"))
    reports = ex.submit(order("buy", BUY, "8", "100.00", acct="A"))
    stp = last(reports, "mine")
    assert (stp.exec_type, stp.ord_status, stp.reject_code) == \
        (ExecType.CANCELED, OrdStatus.CANCELED, "SELF_TRADE_PREVENTED")
    assert trades(reports, "mine") == []
    assert trades(reports, "buy") == [(D(5), D("100.00"))]
    assert depth(ex) == ([(D("100.00"), D(3))], [])  # the buy's rest
    # SELL_SHORT is a sell for the book.
    short = ex.submit(order("short", SHORT, "3", "100.00", acct="C"))
    assert trades(short, "short") == [(D(3), D("100.00"))]


def test_duplicate_client_order_id_is_refused_and_the_first_order_untouched(ex):
    ex.submit(order("dup", BUY, "5", "10.00"))
    second = ex.submit(order("dup", SELL, "1", "9.00"))
    assert [(r.exec_type, r.reject_code) for r in second] == [(ExecType.REJECTED, "DUPLICATE_ORDER_ID")]
    assert depth(ex) == ([(D("10.00"), D(5))], [])


@pytest.mark.parametrize(("kwargs", "code"), [
    ({"qty": "0"}, "INVALID_QUANTITY"),
    ({"qty": "-1"}, "INVALID_QUANTITY"),
    ({"qty": "NaN"}, "INVALID_QUANTITY"),
    ({"qty": "Infinity"}, "INVALID_QUANTITY"),
    ({"qty": "1E+20"}, "INVALID_QUANTITY"),
    ({"qty": "0.0000000000001"}, "INVALID_QUANTITY"),  # 13 decimal places
    ({"px": "1E+16"}, "INVALID_PRICE"),
    ({"px": "-5.00"}, "INVALID_PRICE"),
    ({"px": "NaN"}, "INVALID_PRICE"),
    ({"px": "10.005"}, "TICK_SIZE"),
    ({"typ": OrdType.LIMIT, "px": None}, "INVALID_ORDER"),
    ({"typ": OrdType.MARKET, "px": "10.00"}, "INVALID_ORDER"),
    ({"typ": OrdType.STOP, "px": None}, "INVALID_ORDER"),
    ({"tif": TimeInForce.GTD}, "EXPIRE_TIME_INVALID"),
    ({"tif": TimeInForce.GTD, "expire": T0 - timedelta(minutes=1)}, "EXPIRE_TIME_INVALID"),
    ({"mic": "XXXX"}, "UNKNOWN_VENUE"),
])
def test_bad_orders_are_rejected_with_a_code(ex, kwargs, code):
    args = {"qty": "1", "px": "10.00"} | kwargs
    reports = ex.submit(order("bad", BUY, args.pop("qty"), args.pop("px"), **args))
    assert [(r.exec_type, r.ord_status, r.reject_code) for r in reports] == \
        [(ExecType.REJECTED, OrdStatus.REJECTED, code)]
    assert depth(ex) == ([], [])


def test_large_amounts_stay_exact(ex):
    # 38 significant digits of notional: the default 28-digit context would round the fee.
    qty, px = "99999999999999.99999999", "99999999999999.99"
    ex.submit(order("big-s", SELL, qty, px, acct="S"))
    reports = ex.submit(order("big-b", BUY, qty, px, acct="B"))
    fill = last(reports, "big-b")
    assert (fill.last_qty, fill.last_px, fill.avg_px) == (D(qty), D(px), D(px))
    notional = D("9999999999999998999999000000.0000000001")
    with localcontext(prec=60):
        assert D(qty) * D(px) == notional
        assert fill.fee == (notional * DEFAULT_FEES["ALPX"].taker_bps / 10_000).quantize(PLACES)


# -- lot and tick sizes --------------------------------------------------------------------

def test_lot_and_tick_sizes_follow_the_venue_rules(ex):
    at = utc(2024, 3, 5, 1, 0)  # Tokyo in its morning session
    # TSE table: 1 yen up to 3,000 (inclusive), 5 yen above; trading unit 100 shares.
    assert last(ex.submit(order("t1", BUY, "100", "3000", mic="XTKS", at=at)), "t1").ord_status \
        is OrdStatus.NEW
    assert last(ex.submit(order("t2", BUY, "100", "3001", mic="XTKS", at=at)), "t2").reject_code \
        == "TICK_SIZE"
    assert last(ex.submit(order("t3", BUY, "100", "3005", mic="XTKS", at=at)), "t3").ord_status \
        is OrdStatus.NEW
    assert last(ex.submit(order("t4", BUY, "150", "3005", mic="XTKS", at=at)), "t4").reject_code \
        == "LOT_SIZE"
    # A market order's lot is read at the price it would trade at (its own price has none).
    assert last(ex.submit(order("t5", SELL, "50", mic="XTKS", at=at)), "t5").reject_code == "LOT_SIZE"
    assert ex.replace("t1", "XTKS", D(150), None)[0].reject_code == "LOT_SIZE"


def test_an_instruments_own_tick_beats_the_venue_table(directory):
    twin = MarketTwin(directory)
    ex = SimulatedExchange(directory, sources=[twin], mics=["XTKS"])
    at = utc(2024, 3, 5, 1, 0)
    # Toyota (a TOPIX 100 share) ticks 0.5 yen below 3,000; the venue's general table says 1.
    ok = ex.submit(order("t", BUY, "100", "2000.5", mic="XTKS", sym="7203", currency="JPY", at=at))
    assert last(ok, "t").ord_status is OrdStatus.NEW
    off = ex.submit(order("u", BUY, "100", "2000.25", mic="XTKS", sym="7203", currency="JPY", at=at))
    assert last(off, "u").reject_code == "TICK_SIZE"
    assert last(ex.submit(order("v", BUY, "100", "2000", mic="XTKS", sym="NOPE", currency="JPY",
                                at=at)), "v").reject_code == "UNKNOWN_SYMBOL"
    assert last(ex.submit(order("w", BUY, "100", "2000", mic="XTKS", sym="7203", currency="USD",
                                at=at)), "w").reject_code == "CURRENCY_MISMATCH"


# -- sessions --------------------------------------------------------------------------------

def test_holiday_queues_day_orders_and_rejects_immediate_ones(ex):
    july4 = utc(2024, 7, 4, 15, 0)  # Independence Day: NYSE closed
    queued = ex.submit(order("day", BUY, "100", "50.00", tif=TimeInForce.DAY, mic="XNYS", at=july4))
    assert [(r.exec_type, r.ord_status) for r in queued] == [(ExecType.PENDING_NEW, OrdStatus.PENDING_NEW)]
    assert "2024-07-05T13:30:00+00:00" in queued[0].text
    for cid, kwargs in (("ioc", {"tif": TimeInForce.IOC}), ("fok", {"tif": TimeInForce.FOK}),
                        ("mkt", {"px": None, "tif": TimeInForce.DAY})):
        px = kwargs.pop("px", "50.00")
        reports = ex.submit(order(cid, BUY, "100", px, mic="XNYS", at=july4, **kwargs))
        assert (reports[-1].exec_type, reports[-1].reject_code) == (ExecType.REJECTED, "SESSION_CLOSED")
    ex.submit(order("gtc", SELL, "100", "50.00", mic="XNYS", at=july4, acct="S"))
    assert depth(ex, "XNYS") == ([], [])  # nothing enters the book while closed
    assert ex.on_clock(utc(2024, 7, 5, 13, 29)) == []
    opened = ex.on_clock(utc(2024, 7, 5, 13, 31))
    assert [(r.client_order_id, r.exec_type) for r in opened][:2] == \
        [("day", ExecType.NEW), ("gtc", ExecType.NEW)]
    assert all(r.at == utc(2024, 7, 5, 13, 30) for r in opened)  # at the open, not the clock
    assert trades(opened, "gtc") == [(D(100), D("50.00"))]


def test_lunch_break_queues_new_orders_and_keeps_resting_ones(ex):
    morning, lunch = utc(2024, 3, 5, 1, 0), utc(2024, 3, 5, 2, 45)  # Tokyo: break 02:30-03:30Z
    ex.submit(order("am", BUY, "100", "2500", tif=TimeInForce.DAY, mic="XTKS", at=morning))
    ex.submit(order("gtc", BUY, "100", "2400", mic="XTKS", at=morning))
    assert ex.on_clock(utc(2024, 3, 5, 2, 31)) == []  # the break ends nothing
    pending = ex.submit(order("pm", BUY, "100", "2501", tif=TimeInForce.DAY, mic="XTKS", at=lunch))
    assert pending[-1].ord_status is OrdStatus.PENDING_NEW
    assert ex.submit(order("ioc", SELL, "100", "2500", tif=TimeInForce.IOC, mic="XTKS",
                           at=lunch))[-1].reject_code == "SESSION_CLOSED"
    # While closed a resting order may shrink but not re-enter (it could trade).
    assert ex.replace("am", "XTKS", D(100), D(2600))[0].reject_code == "SESSION_CLOSED"
    assert ex.replace("gtc", "XTKS", D(200), None)[0].reject_code == "SESSION_CLOSED"
    assert ex.replace("pm", "XTKS", D(200), None)[0].exec_type is ExecType.REPLACED  # queued: fine
    assert depth(ex, "XTKS", "TEST") == ([(D(2500), D(100)), (D(2400), D(100))], [])
    afternoon = ex.on_clock(utc(2024, 3, 5, 3, 30))
    assert [(r.client_order_id, r.exec_type, r.leaves_qty) for r in afternoon] == \
        [("pm", ExecType.NEW, D(200))]
    closing = ex.on_clock(utc(2024, 3, 5, 6, 0))
    assert sorted((r.client_order_id, r.exec_type, r.reject_code) for r in closing) == \
        [("am", ExecType.EXPIRED, "DAY_EXPIRED"), ("pm", ExecType.EXPIRED, "DAY_EXPIRED")]
    assert all(r.at == utc(2024, 3, 5, 6, 0) for r in closing)
    assert depth(ex, "XTKS", "TEST") == ([(D(2400), D(100))], [])  # GTC stays


def test_day_orders_expire_at_the_close_even_an_early_one(ex):
    early = utc(2024, 7, 3, 15, 0)  # NYSE closes at 13:00 New York before Independence Day
    ex.submit(order("day", BUY, "100", "10.00", tif=TimeInForce.DAY, mic="XNYS", at=early))
    ex.submit(order("gtc", BUY, "100", "9.00", mic="XNYS", at=early))
    assert ex.on_clock(utc(2024, 7, 3, 16, 59)) == []
    # Jumping far ahead still plays the expiry at its own instant.
    expired = ex.on_clock(utc(2024, 7, 4, 12, 0))
    assert [(r.client_order_id, r.exec_type, r.at) for r in expired] == \
        [("day", ExecType.EXPIRED, utc(2024, 7, 3, 17, 0))]
    assert ex.cancel("gtc", "XNYS").ord_status is OrdStatus.CANCELED


def test_queued_day_order_opens_and_expires_in_one_jump(ex):
    ex.submit(order("day", BUY, "100", "10.00", tif=TimeInForce.DAY, mic="XNYS",
                    at=utc(2024, 3, 9, 12, 0)))  # a Saturday
    reports = ex.on_clock(utc(2024, 3, 12, 0, 0))
    # Monday 11 March: open 13:30Z (New York is on summer time from the 10th), close 20:00Z.
    assert [(r.exec_type, r.at) for r in reports] == \
        [(ExecType.NEW, utc(2024, 3, 11, 13, 30)), (ExecType.EXPIRED, utc(2024, 3, 11, 20, 0))]


def test_gtd_orders_expire_at_their_time_open_or_not(ex):
    expire = T0 + timedelta(hours=1)
    ex.submit(order("gtd", BUY, "1", "10.00", tif=TimeInForce.GTD, expire=expire))
    assert ex.on_clock(T0 + timedelta(minutes=30)) == []
    done = ex.on_clock(T0 + timedelta(hours=3))
    assert [(r.exec_type, r.reject_code, r.at) for r in done] == [(ExecType.EXPIRED, "GTD_EXPIRED", expire)]
    assert depth(ex) == ([], [])
    # Queued on a closed venue, and expiring before the open: it never enters the book.
    saturday = utc(2024, 3, 9, 12, 0)
    ex.submit(order("wk", BUY, "100", "10.00", tif=TimeInForce.GTD, mic="XNYS", at=saturday,
                    expire=saturday + timedelta(hours=20)))
    later = ex.on_clock(utc(2024, 3, 12))
    assert [(r.exec_type, r.at) for r in later] == [(ExecType.EXPIRED, saturday + timedelta(hours=20))]


def test_the_clock_never_goes_back(ex):
    ex.on_clock(T0 + timedelta(hours=1))
    reports = ex.submit(order("old", BUY, "1", "10.00", at=T0))
    assert reports[0].at == T0 + timedelta(hours=1)
    with pytest.raises(ValueError):
        ex.on_clock(datetime(2024, 3, 5, 16, 0))  # naive


# -- liquidity from the market twin -----------------------------------------------------------

def test_twin_liquidity_around_the_quote_and_taken_once_per_instant(directory):
    twin = MarketTwin(directory)
    ex = SimulatedExchange(directory, sources=[twin], mics=["XNAS"])
    at = utc(2024, 3, 5, 15, 0, 30)
    aapl = next(i for i in twin.instruments() if i.key == "AAPL.XNAS")
    quote = twin.quote(aapl, at)
    assert quote.ask_size > 0
    probe = order("m1", BUY, str(quote.ask_size * 2), mic="XNAS", sym="AAPL", at=at)
    expected = ex.quote_for(probe)
    reports = ex.submit(probe)
    fills = trades(reports, "m1")
    # The first level is the quote itself; the next ones further out, deeper (the square-root
    # law's book: tests/test_liquidity.py checks its shape).
    assert fills[0] == (quote.ask_size, quote.ask)
    assert fills[1][1] > quote.ask and sum(q for q, _ in fills) == probe.quantity
    assert last(reports, "m1").ord_status is OrdStatus.FILLED
    assert (expected.expected_price, expected.available_qty) == (last(reports, "m1").avg_px, probe.quantity)
    bids, asks = ex.book("XNAS", "AAPL").depth(20)
    assert bids[0] == (quote.bid, quote.bid_size) and len(bids) > 5
    assert asks[0][0] == fills[-1][1]  # what is left of the last level taken
    # The same instant again: the liquidity taken stays taken.
    again = ex.submit(order("m2", BUY, str(quote.ask_size), mic="XNAS", sym="AAPL", at=at))
    assert trades(again, "m2")[0][1] == fills[-1][1]
    # Outside the session there is no liquidity, and immediate orders are refused.
    night = utc(2024, 3, 5, 23, 0)
    assert ex.quote_for(order("q", BUY, "1", mic="XNAS", sym="AAPL", at=night)).reject_code == \
        "SESSION_CLOSED"


@dataclass
class _MovingMarket:
    """A market data source whose quote the test sets."""

    quote_now: tuple[str, str, str, str] = ("99.00", "10", "101.00", "10")
    asked: list[datetime] = field(default_factory=list)
    name: str = "moving"

    def instruments(self) -> list[Instrument]:
        return [Instrument(symbol="MOVE", mic="ALPX", currency="USD", tick_size=D("0.01"))]

    def bars(self, instrument, start, end, interval):
        return []

    def quote(self, instrument: Instrument, at: datetime) -> Quote:
        self.asked.append(at)
        bid, bid_size, ask, ask_size = (D(v) for v in self.quote_now)
        return Quote("MOVE", "ALPX", at, bid, ask, bid_size, ask_size)


def test_a_resting_order_fills_when_the_market_moves_through_it(directory):
    market = _MovingMarket()
    ex = SimulatedExchange(directory, sources=[market], mics=["ALPX"], depth=2)
    placed = ex.submit(order("bid", BUY, "15", "100.00", sym="MOVE"))
    assert trades(placed) == []
    assert ex.book("ALPX", "MOVE").depth() == ([(D("100.00"), D(15)), (D("99.00"), D(10)),
                                                (D("98.99"), D(20))],
                                               [(D("101.00"), D(10)), (D("101.01"), D(20))])
    market.quote_now = ("98.00", "10", "99.50", "10")  # the offer falls through the bid
    moved = ex.on_clock(T0 + timedelta(minutes=1))
    # The new offers trade at the resting bid's price: 10 at the touch, 5 of the next level.
    assert trades(moved, "bid") == [(D(10), D("100.00")), (D(5), D("100.00"))]
    assert last(moved, "bid").ord_status is OrdStatus.FILLED and moved[0].liquidity == "ADDED"
    assert not ex.book("ALPX", "MOVE").crossed()
    # No client order left: the clock no longer reads the market for this book.
    count = len(market.asked)
    ex.on_clock(T0 + timedelta(minutes=2))
    assert len(market.asked) == count


# -- invariants under random order streams ------------------------------------------------------

def _check_book(ex: SimulatedExchange) -> None:
    book = ex.book("ALPX", "RND")
    assert not book.crossed()
    for side in (book.bids, book.asks):
        for level in side.levels():
            assert len(level) > 0
            assert level.total == sum(e.leaves for e in level)
            assert all(e.leaves > 0 and e.price == level.price for e in level)


def _check_reports(got: list[ExecutionReport], quantities: dict[str, Decimal],
                   cum: dict[str, Decimal]) -> None:
    """Leaves never negative; cum = the order's fills so far; cum + leaves = the order's
    quantity (as last replaced) while it lives; nothing left once it is done."""
    for r in got:
        assert r.leaves_qty >= 0 and r.cum_qty >= 0
        if r.exec_type is ExecType.TRADE:
            cum[r.client_order_id] = cum.get(r.client_order_id, D(0)) + r.last_qty
            assert r.last_qty > 0
        if r.client_order_id in quantities:
            assert r.cum_qty == cum.get(r.client_order_id, D(0))
            if r.ord_status.is_terminal:
                assert r.leaves_qty == 0
            else:
                assert r.cum_qty + r.leaves_qty == quantities[r.client_order_id]
            if r.ord_status is OrdStatus.FILLED:
                assert r.cum_qty == quantities[r.client_order_id]


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_random_order_streams_keep_the_invariants(directory, seed):
    rng = random.Random(seed)
    ex = SimulatedExchange(directory, mics=["ALPX"])
    engine = ex.engine("ALPX", "RND")
    reports: list[ExecutionReport] = []
    quantities: dict[str, Decimal] = {}
    cum: dict[str, Decimal] = {}
    at = T0
    for k in range(500):
        at += timedelta(seconds=rng.randint(0, 3))
        roll = rng.random()
        live = [cid for cid in quantities if not engine.orders[cid].status.is_terminal]
        if roll < 0.12 and live:
            got = [ex.cancel(rng.choice(live), "ALPX")]
        elif roll < 0.22 and live:
            cid = rng.choice(live)
            qty = D(rng.randint(1, 30))
            price = None if rng.random() < 0.5 else D(rng.randint(9_900, 10_100)) / 100
            got = ex.replace(cid, "ALPX", qty, price)
            if got[0].exec_type is ExecType.REPLACED:
                quantities[cid] = qty
        else:
            cid = f"o{k}"
            typ = rng.choices([OrdType.LIMIT, OrdType.MARKET, OrdType.STOP, OrdType.STOP_LIMIT],
                              [70, 12, 9, 9])[0]
            tif = rng.choice([TimeInForce.GTC, TimeInForce.DAY, TimeInForce.IOC, TimeInForce.FOK])
            stops = typ in (OrdType.STOP, OrdType.STOP_LIMIT)
            stop = str(D(rng.randint(9_900, 10_100)) / 100) if stops else None
            limit = str(D(rng.randint(9_900, 10_100)) / 100) \
                if typ in (OrdType.LIMIT, OrdType.STOP_LIMIT) else None
            request = order(cid, rng.choice([BUY, SELL, SHORT]), str(rng.randint(1, 40)), limit,
                            typ=typ, tif=tif, stop=stop, acct=rng.choice("ABCDE"), at=at, sym="RND")
            got = ex.submit(request)
            if of(got, cid)[0].exec_type is not ExecType.REJECTED:
                quantities[cid] = request.quantity
        _check_reports(got, quantities, cum)
        reports.extend(got)
        _check_book(ex)
    traded = [r for r in reports if r.exec_type is ExecType.TRADE]
    assert len(traded) > 100, "the stream should trade"
    # Quantity is conserved: every trade has exactly two sides, buying and selling as much.
    by_match: dict[str, list[ExecutionReport]] = {}
    for r in traded:
        by_match.setdefault(r.match_id, []).append(r)
    for pair in by_match.values():
        assert len(pair) == 2
        assert pair[0].last_qty == pair[1].last_qty and pair[0].last_px == pair[1].last_px
        assert {p.side is Side.BUY for p in pair} == {True, False}
        assert pair[0].client_order_id != pair[1].client_order_id
    bought = sum(r.last_qty for r in traded if r.side is Side.BUY)
    sold = sum(r.last_qty for r in traded if r.side is not Side.BUY)
    assert bought == sold
    # The engine's own state agrees with what it reported.
    for cid, state in engine.orders.items():
        assert state.cum_qty == cum.get(cid, D(0))
        resting = engine.book.get(cid)
        if resting is not None:
            assert resting.leaves == state.quantity - state.cum_qty
    assert engine.volume == bought


# -- the plugin ----------------------------------------------------------------------------

def test_the_builtin_plugin_offers_one_connector_for_every_venue(directory):
    host = PluginHost(BUILTINS)
    contributions, failures = host.collect(
        "alphintra_exchange_connectors", lambda name: default_context(name, venues=directory),
        expect=ExchangeConnector)
    assert failures == []
    [contribution] = contributions
    connector = contribution.value
    assert contribution.plugin == "sim-exchange" and isinstance(connector, ExchangeConnector)
    assert sorted(connector.mics()) == sorted(v.mic for v in directory.venues())
    # Fed by the twin: its instruments trade, others are unknown.
    at = utc(2024, 3, 5, 15, 0)
    assert connector.quote_for(order("q", BUY, "10", mic="XNAS", sym="AAPL", at=at)).available_qty == 10
    assert connector.quote_for(order("q", BUY, "10", mic="XNAS", sym="ZZZZ", at=at)) is None
    # Crypto on the 24/7 venue trades in fractions (the venue's lot), at any hour.
    night = utc(2024, 3, 9, 3, 0)
    btc = connector.submit(order("btc", BUY, "0.25", mic="ALPX", sym="BTC-USD", at=night,
                                 tif=TimeInForce.IOC))
    assert last(btc, "btc").ord_status is OrdStatus.FILLED and last(btc, "btc").cum_qty == D("0.25")
