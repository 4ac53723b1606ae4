"""Smart order routing over exchange connectors: the best venue after fees, whole fills before
partial ones, listings found by ISIN, the alternatives recorded, directed orders, failures of
one connector or one plugin kept to themselves."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from gateway.markets.directory import CalendarVenueDirectory
from gateway.trading.routing import (
    BEST_PRICE_AFTER_FEES,
    CHOSEN,
    CONNECTOR_FAILED,
    CURRENCY_MISMATCH,
    DIRECTED,
    NO_EXECUTABLE_LIQUIDITY,
    ConnectorEntry,
    RouteAlternative,
    RouteUnavailable,
    SmartOrderRouter,
    collect_connectors,
    effective_price,
    is_smart,
    listings,
    rank,
)
from plugins import hookimpl
from plugins.builtin import BUILTINS
from plugins.builtin.market_twin import UNIVERSE, MarketTwin
from plugins.builtin.sim_exchange.connector import SimulatedExchange
from plugins.builtin.sim_exchange.matching import FeeSchedule
from plugins.host import PluginHost
from plugins.sdk import ExecType, Instrument, OrderRequest, OrdStatus, OrdType, Side, TimeInForce

D = Decimal
AT = datetime(2024, 3, 5, 15, 0, tzinfo=UTC)  # New York open
ISIN = "US0000000002"
FEES = {"XNAS": FeeSchedule(D("0"), D("30")), "XNYS": FeeSchedule(D("0"), D("5"))}
ACME = [
    Instrument("ACME", "XNAS", "USD", isin=ISIN),
    Instrument("ACM", "XNYS", "USD", isin=ISIN),  # another symbol on the other venue
    Instrument("ACMEL", "XLON", "GBP", isin=ISIN),
    Instrument("OTHER", "XNAS", "USD", isin="US0000000010"),
]


def order(cid: str, side: Side, qty: str, px: str | None = None, *, mic: str = "SMART",
          sym: str = "ACME", tif: TimeInForce = TimeInForce.DAY, acct: str = "C",
          currency: str = "USD") -> OrderRequest:
    return OrderRequest(cid, acct, sym, mic, side, OrdType.LIMIT if px else OrdType.MARKET, tif, D(qty),
                        D(px) if px else None, None, currency, None, AT)


@pytest.fixture(scope="module")
def directory() -> CalendarVenueDirectory:
    return CalendarVenueDirectory()


@pytest.fixture
def exchange(directory) -> SimulatedExchange:
    ex = SimulatedExchange(directory, mics=["XNAS", "XNYS", "XLON"], fees=FEES)
    # XNAS offers cheaper before fees (100.00 vs 100.10), XNYS after (30 vs 5 bps).
    ex.submit(order("n1", Side.SELL, "300", "100.00", mic="XNAS", acct="M"))
    ex.submit(order("y1", Side.SELL, "300", "100.10", mic="XNYS", sym="ACM", acct="M"))
    ex.submit(order("n2", Side.BUY, "300", "99.90", mic="XNAS", acct="M"))
    ex.submit(order("y2", Side.BUY, "300", "99.95", mic="XNYS", sym="ACM", acct="M"))
    return ex


@pytest.fixture
def router(exchange) -> SmartOrderRouter:
    return SmartOrderRouter([ConnectorEntry("sim-exchange", exchange)], ACME)


def test_buy_goes_where_the_price_after_fees_is_best(router, exchange):
    decision = router.route(order("b", Side.BUY, "200"))
    assert (decision.mic, decision.reason, decision.connector) == \
        ("XNYS", BEST_PRICE_AFTER_FEES, "sim-exchange")
    assert decision.order.mic == "XNYS" and decision.order.symbol == "ACM"  # the venue's symbol
    assert decision.expected_price == D("100.10") and decision.fee_bps == D(5)
    assert decision.score == effective_price(Side.BUY, D("100.10"), D(5)) == D("100.1500500")
    assert decision.expected_fee == (D("100.10") * 200 * 5 / 10_000).quantize(D("1e-8"))
    # Every alternative is kept for best-execution records, the chosen one first.
    recorded = [(a.mic, a.symbol, a.expected_price, a.score, a.status) for a in decision.alternatives]
    assert recorded == [
        ("XNYS", "ACM", D("100.10"), D("100.1500500"), CHOSEN),
        ("XNAS", "ACME", D("100.00"), D("100.3000000"), "RANKED_LOWER"),
        ("XLON", "ACMEL", None, None, CURRENCY_MISMATCH),
    ]
    # The venue then does what it quoted.
    reports = exchange.submit(decision.order)
    fills = [r for r in reports if r.client_order_id == "b" and r.exec_type is ExecType.TRADE]
    assert fills[-1].ord_status is OrdStatus.FILLED and fills[-1].avg_px == decision.expected_price


def test_sell_goes_where_it_receives_most_after_fees(router):
    decision = router.route(order("s", Side.SELL, "100"))
    assert decision.mic == "XNYS"  # 99.95 less 5 bps beats 99.90 less 30 bps
    assert decision.score == effective_price(Side.SELL, D("99.95"), D(5))
    short = router.route(order("ss", Side.SELL_SHORT, "100"))
    assert short.mic == "XNYS"


def test_a_whole_fill_beats_a_better_price_for_part(exchange, directory):
    cheap = SimulatedExchange(directory, mics=["XNAS", "XNYS"], fees=FEES)
    cheap.submit(order("n", Side.SELL, "100", "99.00", mic="XNAS", acct="M"))
    cheap.submit(order("y", Side.SELL, "300", "100.10", mic="XNYS", sym="ACM", acct="M"))
    router = SmartOrderRouter([ConnectorEntry("p", cheap)], ACME)
    decision = router.route(order("b", Side.BUY, "300"))
    assert decision.mic == "XNYS"
    partial = next(a for a in decision.alternatives if a.mic == "XNAS")
    assert (partial.available_qty, partial.expected_price) == (D(100), D("99.00"))
    # With no venue able to fill it all, the one filling most goes first.
    assert router.route(order("b2", Side.BUY, "400")).mic == "XNYS"


def test_isin_as_symbol_finds_every_listing(router):
    decision = router.route(order("i", Side.BUY, "100", sym=ISIN))
    assert {a.mic for a in decision.alternatives} == {"XNAS", "XNYS", "XLON"}
    assert decision.order.symbol == "ACM"


def test_directed_orders_go_where_they_say(router):
    decision = router.route(order("d", Side.BUY, "100", mic="xnas"))
    assert (decision.mic, decision.reason) == ("XNAS", DIRECTED)
    assert [a.mic for a in decision.alternatives] == ["XNAS"]


def test_nothing_executable_goes_to_the_named_listing(router):
    decision = router.route(order("p", Side.BUY, "100", "90.00"))  # passive: rests anywhere
    assert (decision.mic, decision.reason, decision.expected_price) == ("XNAS", NO_EXECUTABLE_LIQUIDITY, None)
    assert all(a.score is None for a in decision.alternatives)


def test_no_venue_taking_the_order_for_its_lot_is_order_lot_size(router):
    with pytest.raises(RouteUnavailable) as caught:
        router.route(order("lot", Side.BUY, "50"))  # US round lots of 100 here
    # Every venue that quoted refused the lot (XLON trades it in another currency): the code
    # says so; the alternatives stay in the details.
    assert caught.value.code == "ORDER_LOT_SIZE"
    statuses = {a["mic"]: a["status"] for a in caught.value.details["alternatives"]}
    assert statuses == {"XNAS": "LOT_SIZE", "XNYS": "LOT_SIZE", "XLON": CURRENCY_MISMATCH}


class _Broken:
    name = "broken"

    def mics(self):
        return ["XNYS"]

    def quote_for(self, order):
        raise RuntimeError("venue session dropped")

    def submit(self, order):
        raise RuntimeError

    def cancel(self, client_order_id, mic):
        raise RuntimeError

    def replace(self, client_order_id, mic, quantity, limit_price):
        raise RuntimeError

    def on_clock(self, at):
        return []


def test_a_failing_connector_is_left_out_of_the_decision(exchange):
    router = SmartOrderRouter([ConnectorEntry("bad", _Broken()), ConnectorEntry("sim", exchange)], ACME)
    decision = router.route(order("b", Side.BUY, "100"))
    assert decision.mic == "XNYS" and decision.connector == "sim-exchange"
    failed = [a for a in decision.alternatives if a.status == CONNECTOR_FAILED]
    assert [(a.connector, a.plugin, a.mic) for a in failed] == [("broken", "bad", "XNYS")]


def test_twin_fed_venues_with_the_same_prices_are_told_apart_by_fees(directory):
    aapl = next(s for s in UNIVERSE if s.sid == "AAPL")
    twin = MarketTwin(directory, universe=[aapl, dataclasses.replace(aapl, mic="XNYS")])
    ex = SimulatedExchange(directory, sources=[twin], mics=["XNAS", "XNYS"],
                           fees={"XNAS": FeeSchedule(D(0), D("0.30")), "XNYS": FeeSchedule(D(0), D("0.10"))})
    router = SmartOrderRouter([ConnectorEntry("sim", ex)], twin.instruments)
    decision = router.route(order("t", Side.BUY, "500", sym="AAPL"))
    quotes = {a.mic: a.expected_price for a in decision.alternatives}
    assert quotes["XNAS"] == quotes["XNYS"] is not None  # one simulated price on both venues
    assert decision.mic == "XNYS" and decision.fee_bps == D("0.10")


def test_pure_helpers():
    assert is_smart("") and is_smart("smart") and is_smart(None) and not is_smart("XNAS")
    assert effective_price(Side.BUY, D("10"), D("10")) == D("10.01000000")
    assert effective_price(Side.SELL, D("10"), D("10")) == D("9.99000000")

    def alt(mic: str, px: str, qty: str, fee: str) -> RouteAlternative:
        return RouteAlternative("c", "p", mic, "X", D(px), D(qty), D(fee),
                                effective_price(Side.BUY, D(px), D(fee)), "RANKED_LOWER")

    tied = [alt("B", "10", "5", "0"), alt("A", "10", "5", "0"), alt("C", "9", "1", "0")]
    # Equal scores keep the candidates' order; a partial fill ranks after whole ones.
    assert [a.mic for a in rank(Side.BUY, D(5), tied)] == ["B", "A", "C"]
    found = listings(order("x", Side.BUY, "1", sym="acm", mic="XNYS"), ACME)
    assert [(i.symbol, i.mic) for i in found] == [("ACM", "XNYS"), ("ACMEL", "XLON"), ("ACME", "XNAS")]


# -- connectors from plugins ---------------------------------------------------------------

class _RaisingPlugin:
    @hookimpl
    def alphintra_exchange_connectors(self, context):
        raise RuntimeError("cannot reach the venue gateway")


class _WrongShapePlugin:
    @hookimpl
    def alphintra_exchange_connectors(self, context):
        return ["not a connector"]


class _NamesakePlugin:
    @hookimpl
    def alphintra_exchange_connectors(self, context):
        return [SimulatedExchange(context.venues, mics=["XNAS"])]  # "sim-exchange" again


def test_a_connector_plugin_that_fails_fails_alone(directory):
    host = PluginHost(BUILTINS)
    host.register("raising", _RaisingPlugin())
    host.register("wrong-shape", _WrongShapePlugin())
    host.register("namesake", _NamesakePlugin())
    entries, failures = collect_connectors(host, directory)
    assert [(e.plugin, e.name) for e in entries] == [("sim-exchange", "sim-exchange")]
    assert sorted(f.plugin for f in failures) == ["raising", "wrong-shape"]
    assert all(f.code == "PLUGIN_FAILED" for f in failures)
    # The surviving built-in routes and trades.
    router = SmartOrderRouter(entries, [Instrument("AAPL", "XNAS", "USD", isin="US0378331005")])
    decision = router.route(order("a", Side.BUY, "10", sym="AAPL"))
    assert decision.mic == "XNAS" and decision.expected_price is not None


class _Batching:
    """A connector that quotes a batch in one call (as the venue process's does), counting calls."""

    def __init__(self, inner: SimulatedExchange, *, answer=None) -> None:
        self.name = inner.name  # so decisions compare with the exchange's own
        self.inner, self.batches, self.singles = inner, [], 0
        self._answer = answer

    def mics(self):
        return self.inner.mics()

    def quote_for(self, order):
        self.singles += 1
        return self.inner.quote_for(order)

    def quote_many(self, orders):
        self.batches.append(len(orders))
        if self._answer is not None:
            return self._answer(orders)
        return [self.inner.quote_for(o) for o in orders]


def _batch():
    return [order("b1", Side.BUY, "200"), order("s1", Side.SELL, "100"),
            order("d1", Side.BUY, "50", mic="XNYS", sym="ACM"),
            order("x", Side.BUY, "1", sym="NOPE", mic="XPAR"),  # no connector reaches XPAR
            order("b2", Side.BUY, "10", "99.00")]


def test_a_batch_is_routed_as_each_order_alone_with_one_quote_call(exchange):
    batching = _Batching(exchange)
    alone = SmartOrderRouter([ConnectorEntry("sim-exchange", exchange)], ACME)
    together = SmartOrderRouter([ConnectorEntry("sim-exchange", batching)], ACME)
    decisions = together.route_many(_batch())
    # One quote_many for every (order, listing) pair of the batch, never quote_for.
    assert batching.batches == [2 + 2 + 1 + 2] and batching.singles == 0
    for o, decision in zip(_batch(), decisions, strict=True):
        try:
            expected = alone.route(o)
        except RouteUnavailable as exc:
            assert isinstance(decision, RouteUnavailable)
            assert (decision.code, decision.details) == (exc.code, exc.details)
        else:
            assert decision == expected


def test_a_batch_quote_that_fails_fails_that_connector_for_every_order(exchange):
    def boom(orders):
        raise RuntimeError("venue process gone")

    for answer in (boom, lambda orders: [None]):  # raising, and one quote for several orders
        router = SmartOrderRouter([ConnectorEntry("sim-exchange", _Batching(exchange, answer=answer))],
                                  ACME)
        decisions = router.route_many([order("b1", Side.BUY, "200"), order("b2", Side.BUY, "5")])
        assert all(isinstance(d, RouteUnavailable) for d in decisions)
        statuses = {a["status"] for d in decisions for a in d.details["alternatives"]}
        assert statuses == {CONNECTOR_FAILED, CURRENCY_MISMATCH}  # the GBP listing left out
