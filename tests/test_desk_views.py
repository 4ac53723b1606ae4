"""Desk views through GraphQL, on the simulated venues with a ManualClock: realised P&L after a
round trip, unrealised after the market moves, fees out of net P&L, amounts in the account's
and the tenant's base currency (null and marked with no rate or no quote), positions over
several accounts with totals; orders by date range, side and several statuses with a total
count; trades by range; locates; and another tenant seeing none of it."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal as D

import pytest

from gateway.app import create_app
from gateway.errors import DomainError
from gateway.markets.clock import ManualClock
from tests.support import GraphQLClient, LiveServer, error_codes, onboard, unique, with_clock
from tests.test_orders import ACCOUNT, OPEN_NY, SUBMIT, next_open_minute, order

AMOUNTS = "currency rate realizedPnl unrealizedPnl fees netPnl marketValue complete gaps { code subject }"
POSITION = f"""account instrumentKey symbol mic currency accountCurrency quantity avgPrice markPrice
  realizedPnl unrealizedPnl fees netPnl inInstrumentCurrency {{ {AMOUNTS} }}
  inAccountCurrency {{ {AMOUNTS} }} inBaseCurrency {{ {AMOUNTS} }}"""
POSITIONS = f"""query($accounts: [String!], $instrument: String) {{
  positions(accounts: $accounts, instrument: $instrument) {{ {POSITION} }} }}"""
SUMMARY = f"""query($accounts: [String!]) {{ positionSummary(accounts: $accounts) {{ at baseCurrency
  positions {{ account instrumentKey }}
  accounts {{ account inAccountCurrency {{ {AMOUNTS} }} inBaseCurrency {{ {AMOUNTS} }} }}
  total {{ {AMOUNTS} }} }} }}"""
ORDERS = """query($f: OrderFilter, $first: Int! = 20, $after: String) {
  orders(filter: $f, first: $first, after: $after) {
    totalCount pageInfo { hasNextPage endCursor } edges { node { id side status createdAt } } } }"""
TRADES = """query($from: DateTime, $to: DateTime, $side: OrderSide, $accounts: [String!],
  $first: Int! = 20, $after: String) {
  trades(from: $from, to: $to, side: $side, accounts: $accounts, first: $first, after: $after) {
    totalCount pageInfo { hasNextPage endCursor } edges { node { id orderId side at lastQty } } } }"""
LOCATE = """mutation($i: LocateInput!) { recordLocate(input: $i) { id } }"""
LOCATES = """query($account: String, $instrument: String, $active: Boolean! = false, $first: Int! = 20,
  $after: String) { locates(account: $account, instrument: $instrument, activeOnly: $active,
  first: $first, after: $after) { pageInfo { hasNextPage endCursor }
  edges { node { id account instrumentKey quantity remaining expiresAt } } } }"""
CLOSE = D("0.000001")  # positions keep prices to 10 places: an average is rounded there


class Rates:
    """The order service's FX source for one test: the pairs given, NO rate for any other."""

    def __init__(self, pairs: dict[tuple[str, str], str]) -> None:
        self.pairs = {k: D(v) for k, v in pairs.items()}

    def __call__(self, base: str, quote: str, at) -> D:
        if (base, quote) in self.pairs:
            return self.pairs[(base, quote)]
        if (quote, base) in self.pairs:
            return 1 / self.pairs[(quote, base)]
        raise DomainError(f"no rate {base}/{quote}", code="FX_RATE_UNAVAILABLE")


class NoQuotes:
    """Market data with every quote gone (a source that has none right now)."""

    def __init__(self, inner) -> None:
        self.inner = inner

    def quote(self, key, at):
        return None

    def __getattr__(self, name):
        return getattr(self.inner, name)


@pytest.fixture(scope="module")
def venue(runtime):
    clock = ManualClock(OPEN_NY)
    rt = with_clock(runtime, clock)
    with LiveServer(create_app(runtime=rt)) as live:
        yield live, clock, rt


@pytest.fixture
def desk(venue):
    """A tenant whose base currency is GBP, a USD account ACC1 and a EUR account EUR1, the clock
    a minute on in a New York session and the FX source USD/GBP 0.8, USD/EUR 0.9 only."""
    live, clock, rt = venue
    clock.set(next_open_minute(rt, clock))
    rt.orders.fx_rate = Rates({("USD", "GBP"): "0.8", ("USD", "EUR"): "0.9"})
    slug = unique()
    _, _, (_, key) = rt.tenancy.onboard(slug, f"Tenant {slug}", f"admin@{slug}.test",
                                        base_currency="GBP")
    gql = GraphQLClient(live.url)
    for code, currency, country in (("ACC1", "USD", "US"), ("EUR1", "EUR", "DE")):
        gql.data(ACCOUNT, {"input": {"code": code, "currency": currency, "domicile": country,
                                     "creditLimit": "1000000000", "equity": "500000000"}}, key=key)
    yield gql, key, clock, rt
    rt.orders.fx_rate = None


def fills(gql, key, order_id):
    return gql.data("query($id: ID!) { order(id: $id) { executions { lastQty lastPx fee side at } } }",
                    {"id": order_id}, key=key)["order"]["executions"]


def submit(gql, key, **overrides):
    return gql.data(SUBMIT, {"input": order(**overrides)}, key=key)["submitOrder"]


def mid(rt, clock, listing="AAPL.XNAS"):
    q = rt.market_data.quote(listing, clock.now())
    return (q.bid + q.ask) / 2


def positions(gql, key, **variables):
    return gql.data(POSITIONS, variables, key=key)["positions"]


def test_round_trip_realises_pnl_net_of_fees_in_account_and_base_currency(desk):
    gql, key, clock, _rt = desk
    bought = submit(gql, key, quantity="30")
    assert bought["status"] == "FILLED", bought
    clock.set(clock.now() + timedelta(minutes=3))
    sold = submit(gql, key, side="SELL", quantity="30")
    assert sold["status"] == "FILLED", sold
    buys, sells = fills(gql, key, bought["id"]), fills(gql, key, sold["id"])
    vwap = lambda xs: sum(D(x["lastQty"]) * D(x["lastPx"]) for x in xs) / 30  # noqa: E731
    realised = 30 * (vwap(sells) - vwap(buys))
    fees = sum(D(x["fee"]) for x in buys + sells)
    assert fees > 0  # taker fees on XNAS: the net below really subtracts something

    [p] = positions(gql, key, accounts=["ACC1"])
    assert D(p["quantity"]) == 0 and p["markPrice"] is None
    assert abs(D(p["realizedPnl"]) - realised) < CLOSE
    assert D(p["unrealizedPnl"]) == 0 and D(p["fees"]) == fees
    assert D(p["netPnl"]) == D(p["realizedPnl"]) - fees
    local, account, base = p["inInstrumentCurrency"], p["inAccountCurrency"], p["inBaseCurrency"]
    assert (local["currency"], account["currency"], base["currency"]) == ("USD", "USD", "GBP")
    assert D(account["rate"]) == 1 and account["netPnl"] == local["netPnl"]
    assert D(base["rate"]) == D("0.8")
    assert D(base["realizedPnl"]) == D(p["realizedPnl"]) * D("0.8")
    assert D(base["fees"]) == fees * D("0.8")
    assert D(base["netPnl"]) == D(p["netPnl"]) * D("0.8")
    assert base["complete"] is True and base["gaps"] == []


def test_unrealised_follows_the_mid_after_a_price_move(desk):
    gql, key, clock, rt = desk
    bought = submit(gql, key, quantity="20")
    assert bought["status"] == "FILLED", bought
    before = mid(rt, clock)
    [p] = positions(gql, key)
    avg, fees = D(p["avgPrice"]), D(p["fees"])
    assert D(p["markPrice"]) == before
    assert abs(D(p["unrealizedPnl"]) - 20 * (before - avg)) < CLOSE
    # The market moves: a few minutes on, the mid is another.
    for _ in range(30):
        clock.set(clock.now() + timedelta(minutes=1))
        if mid(rt, clock) != before:
            break
    after = mid(rt, clock)
    assert after != before
    [p] = positions(gql, key)
    assert D(p["markPrice"]) == after
    assert abs(D(p["unrealizedPnl"]) - 20 * (after - avg)) < CLOSE
    assert D(p["netPnl"]) == D(p["realizedPnl"]) + D(p["unrealizedPnl"]) - fees
    assert abs(D(p["inInstrumentCurrency"]["marketValue"]) - 20 * after) < CLOSE
    assert D(p["inBaseCurrency"]["unrealizedPnl"]) == D(p["unrealizedPnl"]) * D("0.8")


def test_no_rate_or_no_quote_is_null_and_marked_never_a_wrong_number(desk, monkeypatch):
    gql, key, _clock, rt = desk
    assert submit(gql, key, account="EUR1", quantity="10")["status"] == "FILLED"
    [p] = positions(gql, key, accounts=["EUR1"])
    assert p["accountCurrency"] == "EUR" and D(p["inAccountCurrency"]["rate"]) == D("0.9")
    assert D(p["inAccountCurrency"]["unrealizedPnl"]) == D(p["unrealizedPnl"]) * D("0.9")
    # The USD/EUR rate goes away: EUR amounts are null and say why; USD and GBP stay.
    rt.orders.fx_rate = Rates({("USD", "GBP"): "0.8"})
    [p] = positions(gql, key, accounts=["EUR1"])
    eur = p["inAccountCurrency"]
    assert eur["currency"] == "EUR" and eur["complete"] is False
    assert [eur[k] for k in ("rate", "realizedPnl", "unrealizedPnl", "fees", "netPnl", "marketValue")] \
        == [None] * 6
    assert eur["gaps"] == [{"code": "FX_RATE_MISSING", "subject": "USD/EUR"}]
    assert p["inBaseCurrency"]["complete"] is True and p["inBaseCurrency"]["netPnl"] is not None
    summary = gql.data(SUMMARY, {"accounts": ["EUR1"]}, key=key)["positionSummary"]
    [acct] = summary["accounts"]
    assert acct["inAccountCurrency"]["netPnl"] is None
    assert acct["inAccountCurrency"]["gaps"] == [{"code": "FX_RATE_MISSING", "subject": "USD/EUR"}]
    assert D(summary["total"]["netPnl"]) == D(p["inBaseCurrency"]["netPnl"])
    # No USD/GBP either: the base currency total is unknown, not a sum of what is left.
    rt.orders.fx_rate = Rates({})
    summary = gql.data(SUMMARY, {}, key=key)["positionSummary"]
    assert summary["baseCurrency"] == "GBP"
    assert summary["total"]["netPnl"] is None and summary["total"]["complete"] is False
    assert {"code": "FX_RATE_MISSING", "subject": "USD/GBP"} in summary["total"]["gaps"]
    # No quote to mark at: unrealised (and net) unknown in every currency, realised still known.
    rt.orders.fx_rate = Rates({("USD", "GBP"): "0.8", ("USD", "EUR"): "0.9"})
    monkeypatch.setattr(rt.orders, "market_data", NoQuotes(rt.orders.market_data))
    [p] = positions(gql, key, accounts=["EUR1"])
    assert p["markPrice"] is None and p["unrealizedPnl"] is None and p["netPnl"] is None
    assert p["realizedPnl"] == "0" and D(p["fees"]) > 0
    for amounts in (p["inInstrumentCurrency"], p["inAccountCurrency"], p["inBaseCurrency"]):
        assert amounts["unrealizedPnl"] is None and amounts["netPnl"] is None
        assert amounts["marketValue"] is None and amounts["realizedPnl"] is not None
        assert amounts["gaps"] == [{"code": "NO_QUOTE", "subject": "AAPL.XNAS"}]


def test_positions_over_two_accounts_in_one_call_with_totals(desk):
    gql, key, _clock, _rt = desk
    assert submit(gql, key, quantity="10")["status"] == "FILLED"
    assert submit(gql, key, account="EUR1", symbol="MSFT", quantity="5")["status"] == "FILLED"
    both = positions(gql, key, accounts=["ACC1", "EUR1"])
    assert [(p["account"], p["symbol"], D(p["quantity"])) for p in both] == \
        [("ACC1", "AAPL", 10), ("EUR1", "MSFT", 5)]
    assert positions(gql, key) == both  # no accounts: every account of the tenant
    assert [p["account"] for p in positions(gql, key, instrument="MSFT.XNAS")] == ["EUR1"]
    assert [p["account"] for p in positions(gql, key, instrument="US0378331005")] == ["ACC1"]
    # The single-account form still works.
    old = gql.data("query($a: String!) { positions(account: $a) { account quantity } }",
                   {"a": "ACC1"}, key=key)["positions"]
    assert old == [{"account": "ACC1", "quantity": "10"}]

    summary = gql.data(SUMMARY, {"accounts": ["ACC1", "EUR1"]}, key=key)["positionSummary"]
    assert summary["baseCurrency"] == "GBP"
    by_account = {a["account"]: a for a in summary["accounts"]}
    for p in both:
        mine = by_account[p["account"]]
        assert mine["inAccountCurrency"]["currency"] == p["accountCurrency"]
        assert mine["inAccountCurrency"]["netPnl"] == p["inAccountCurrency"]["netPnl"]
        assert mine["inBaseCurrency"]["netPnl"] == p["inBaseCurrency"]["netPnl"]
    total = summary["total"]
    assert total["currency"] == "GBP" and total["complete"] is True
    for field in ("realizedPnl", "unrealizedPnl", "fees", "netPnl", "marketValue"):
        assert D(total[field]) == sum(D(p["inBaseCurrency"][field]) for p in both)

    assert error_codes(gql(POSITIONS, {"accounts": ["ACC1", "NOPE"]}, key=key)) == ["ACCOUNT_NOT_FOUND"]
    assert error_codes(gql("{ positions(account: \"ACC1\", accounts: [\"EUR1\"]) { account } }",
                           key=key)) == ["FILTER_INVALID"]
    # An empty list would match nothing: refused, as by orders and trades.
    assert error_codes(gql(POSITIONS, {"accounts": []}, key=key)) == ["FILTER_INVALID"]
    assert error_codes(gql(SUMMARY, {"accounts": []}, key=key)) == ["FILTER_INVALID"]


def test_orders_by_date_range_side_and_two_statuses_with_total_count(desk):
    gql, key, clock, rt = desk
    q = rt.market_data.quote("AAPL.XNAS", clock.now())
    far_below = str((q.bid * D("0.95")).quantize(D("0.01")))
    resting = {"ordType": "LIMIT", "timeInForce": "GTC", "limitPrice": far_below}
    made = {}
    for name, overrides in (("a", {}), ("b", resting), ("c", {"side": "SELL"}), ("d", resting),
                            ("e", {})):
        made[name] = submit(gql, key, **overrides)
        made[name]["at"] = clock.now()
        clock.set(clock.now() + timedelta(minutes=1))
    gql.data("mutation($id: ID!) { cancelOrder(id: $id) { status } }", {"id": made["d"]["id"]}, key=key)
    assert [made[n]["status"] for n in "abce"] == ["FILLED", "ACCEPTED", "FILLED", "FILLED"]

    window = {"from": made["b"]["at"].isoformat(), "to": made["e"]["at"].isoformat(), "side": "BUY",
              "statuses": ["ACCEPTED", "CANCELED"]}
    page = gql.data(ORDERS, {"f": window, "first": 1}, key=key)["orders"]
    assert page["totalCount"] == 2 and page["pageInfo"]["hasNextPage"] is True
    assert [e["node"]["id"] for e in page["edges"]] == [made["d"]["id"]]  # newest first
    rest = gql.data(ORDERS, {"f": window, "first": 1, "after": page["pageInfo"]["endCursor"]},
                    key=key)["orders"]
    assert [e["node"]["id"] for e in rest["edges"]] == [made["b"]["id"]]
    assert rest["pageInfo"]["hasNextPage"] is False and rest["totalCount"] == 2

    # `to` is exclusive, `from` inclusive; the whole range with two statuses and one side.
    both = gql.data(ORDERS, {"f": {"from": made["a"]["at"].isoformat(), "to": made["e"]["at"].isoformat(),
                                   "statuses": ["FILLED", "ACCEPTED"], "side": "BUY"}}, key=key)["orders"]
    assert {e["node"]["id"] for e in both["edges"]} == {made["a"]["id"], made["b"]["id"]}
    assert both["totalCount"] == 2
    sells = gql.data(ORDERS, {"f": {"side": "SELL"}}, key=key)["orders"]
    assert [e["node"]["id"] for e in sells["edges"]] == [made["c"]["id"]] and sells["totalCount"] == 1
    assert gql.data(ORDERS, {}, key=key)["orders"]["totalCount"] == 5
    old = gql.data(ORDERS, {"f": {"status": "CANCELED"}}, key=key)["orders"]
    assert [e["node"]["id"] for e in old["edges"]] == [made["d"]["id"]]

    bad = {"from": made["e"]["at"].isoformat(), "to": made["a"]["at"].isoformat()}
    assert error_codes(gql(ORDERS, {"f": bad}, key=key)) == ["DATE_RANGE_INVALID"]
    assert error_codes(gql(ORDERS, {"f": {"status": "FILLED", "statuses": ["FILLED"]}}, key=key)) == \
        ["FILTER_INVALID"]
    assert error_codes(gql(ORDERS, {"f": {"statuses": []}}, key=key)) == ["FILTER_INVALID"]
    assert error_codes(gql(ORDERS, {"f": {"from": "2025-03-12T14:00:00"}}, key=key)) == \
        ["INSTANT_NOT_AWARE"]


def test_trades_by_range_side_and_accounts_with_total_count(desk):
    gql, key, clock, _rt = desk
    at = []
    for overrides in ({}, {"side": "SELL", "quantity": "4"}, {"account": "EUR1"}):
        o = submit(gql, key, **overrides)
        assert o["status"] == "FILLED", o
        at.append((clock.now(), o))
        clock.set(clock.now() + timedelta(minutes=1))
    everything = gql.data(TRADES, {"first": 100}, key=key)["trades"]
    assert everything["totalCount"] == len(everything["edges"]) >= 3
    middle = gql.data(TRADES, {"from": at[1][0].isoformat(), "to": at[2][0].isoformat()},
                      key=key)["trades"]
    assert {e["node"]["orderId"] for e in middle["edges"]} == {at[1][1]["id"]}
    assert middle["totalCount"] == len(middle["edges"])
    assert sum(D(e["node"]["lastQty"]) for e in middle["edges"]) == 4
    buys = gql.data(TRADES, {"side": "BUY", "first": 100}, key=key)["trades"]
    assert {e["node"]["orderId"] for e in buys["edges"]} == {at[0][1]["id"], at[2][1]["id"]}
    assert buys["totalCount"] == len(buys["edges"])
    eur = gql.data(TRADES, {"accounts": ["EUR1"], "first": 100}, key=key)["trades"]
    assert {e["node"]["orderId"] for e in eur["edges"]} == {at[2][1]["id"]}
    # Paged one fill at a time, the count stays and the pages cover every fill once.
    seen, after = [], None
    while True:
        page = gql.data(TRADES, {"side": "BUY", "first": 1, "after": after}, key=key)["trades"]
        assert page["totalCount"] == buys["totalCount"]
        seen += [e["node"]["id"] for e in page["edges"]]
        if not page["pageInfo"]["hasNextPage"]:
            break
        after = page["pageInfo"]["endCursor"]
    assert seen == [e["node"]["id"] for e in buys["edges"]]
    bad = {"from": at[2][0].isoformat(), "to": at[0][0].isoformat()}
    assert error_codes(gql(TRADES, bad, key=key)) == ["DATE_RANGE_INVALID"]


def test_locates_are_listed_paged_and_filtered(desk):
    gql, key, clock, _rt = desk
    expired = (clock.now() - timedelta(hours=1)).isoformat()
    for account, instrument, quantity, expires in (("ACC1", "AAPL.XNAS", "100", None),
                                                   ("ACC1", "MSFT.XNAS", "50", None),
                                                   ("EUR1", "AAPL.XNAS", "70", None),
                                                   ("ACC1", "AAPL.XNAS", "30", expired)):
        gql.data(LOCATE, {"i": {"account": account, "instrument": instrument, "quantity": quantity,
                                "expiresAt": expires}}, key=key)
    every = gql.data(LOCATES, {}, key=key)["locates"]["edges"]
    assert [e["node"]["quantity"] for e in every] == ["30", "70", "50", "100"]  # newest first
    acc1 = gql.data(LOCATES, {"account": "ACC1"}, key=key)["locates"]["edges"]
    assert [e["node"]["quantity"] for e in acc1] == ["30", "50", "100"]
    apple = gql.data(LOCATES, {"instrument": "AAPL.XNAS"}, key=key)["locates"]["edges"]
    assert {e["node"]["instrumentKey"] for e in apple} == {"US0378331005"} and len(apple) == 3
    active = gql.data(LOCATES, {"account": "ACC1", "instrument": "US0378331005", "active": True},
                      key=key)["locates"]["edges"]
    assert [e["node"]["quantity"] for e in active] == ["100"]
    first = gql.data(LOCATES, {"first": 2}, key=key)["locates"]
    assert first["pageInfo"]["hasNextPage"] is True
    second = gql.data(LOCATES, {"first": 2, "after": first["pageInfo"]["endCursor"]}, key=key)["locates"]
    assert [e["node"]["id"] for e in first["edges"] + second["edges"]] == [e["node"]["id"] for e in every]
    assert error_codes(gql(LOCATES, {"account": "NOPE"}, key=key)) == ["ACCOUNT_NOT_FOUND"]


def test_another_tenant_sees_none_of_it(desk):
    gql, key, clock, rt = desk
    assert submit(gql, key, quantity="10")["status"] == "FILLED"
    gql.data(LOCATE, {"i": {"account": "ACC1", "instrument": "AAPL.XNAS", "quantity": "10"}}, key=key)
    b = onboard(rt)
    now = clock.now()
    day = {"from": (now - timedelta(days=1)).isoformat(), "to": (now + timedelta(days=1)).isoformat()}
    orders = gql.data(ORDERS, {"f": {**day, "statuses": ["FILLED", "ACCEPTED"], "side": "BUY"}},
                      key=b.key)["orders"]
    assert orders == {"totalCount": 0, "pageInfo": {"hasNextPage": False, "endCursor": None}, "edges": []}
    assert gql.data(ORDERS, {}, key=b.key)["orders"]["totalCount"] == 0
    trades = gql.data(TRADES, day, key=b.key)["trades"]
    assert trades["totalCount"] == 0 and trades["edges"] == []
    assert gql.data(TRADES, {"accounts": ["ACC1"]}, key=b.key)["trades"]["totalCount"] == 0
    assert positions(gql, b.key) == []
    summary = gql.data(SUMMARY, {}, key=b.key)["positionSummary"]
    assert summary["positions"] == [] and summary["accounts"] == []
    assert summary["baseCurrency"] == "USD" and summary["total"]["netPnl"] == "0"
    assert gql.data(LOCATES, {}, key=b.key)["locates"]["edges"] == []
    for query, variables in ((POSITIONS, {"accounts": ["ACC1"]}), (SUMMARY, {"accounts": ["ACC1"]}),
                             (LOCATES, {"account": "ACC1"})):
        assert error_codes(gql(query, variables, key=b.key)) == ["ACCOUNT_NOT_FOUND"]
    # B's own account under A's code: B's (empty) book, none of A's rows.
    gql.data(ACCOUNT, {"input": {"code": "ACC1", "currency": "USD", "domicile": "US"}}, key=b.key)
    assert positions(gql, b.key, accounts=["ACC1"]) == []
    assert gql.data(LOCATES, {"account": "ACC1"}, key=b.key)["locates"]["edges"] == []
    # A still sees its own.
    assert [p["account"] for p in positions(gql, key)] == ["ACC1"]
    assert gql.data(ORDERS, {"f": day}, key=key)["orders"]["totalCount"] == 1
