"""FX exposure and hedging: the maths against hand-worked examples, the providers, and the GraphQL
surface end to end over the live server (roles, bad input, idempotency, tenant isolation).

The hand-worked examples value at 2026-01-05T16:00Z, where the shipped rates file
(plugins/builtin/data/fx_rates.csv) has round fixings: EUR/USD 1.1000, GBP/USD 1.2500,
USD/JPY 150.00, and interest rates USD 4.5% (ACT/360), EUR 3% (ACT/360), GBP 4.5% (ACT/365),
JPY 0.5% (ACT/365).
"""

from __future__ import annotations

import math
import threading
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal as D

import numpy as np
import pytest
from sqlmodel import func, select

from gateway.errors import DomainError
from gateway.fx import maths
from gateway.fx.maths import Holdings
from gateway.fx.models import CashBalance, HedgeExecution, HedgePosition, Portfolio, Position, UnsettledTrade
from gateway.fx.rates import FxRates
from gateway.fx.service import parse_policy
from plugins.builtin.fx_rates import FxTwin, RatesFileProvider, read_interest_rates, read_rates
from plugins.sdk import FxRate
from tests.support import error_codes, onboard, unique, user_key

AT = "2026-01-05T16:00:00Z"
AT_DT = datetime(2026, 1, 5, 16, tzinfo=UTC)
EXPOSURE = """query($p: ID!, $at: DateTime) { fxExposure(portfolio: $p, at: $at) {
  baseCurrency netInBase foreignGrossInBase foreignNetInBase
  currencies { currency long short cash unsettled hedged gross net spot grossInBase netInBase
               hedgeRatio } } }"""
PROPOSE = """mutation($p: ID!, $policy: HedgePolicyInput!, $at: DateTime) {
  proposeHedge(portfolio: $p, policy: $policy, at: $at) {
    policy { kind ratio band tenorDays lookbackDays }
    orders { pair currency side notional notionalInBase tenorDays tradeDate valueDate spotRate
             forwardRate foreignInterestRate baseInterestRate targetRatio ratioBefore }
    before { netInBase foreignNetInBase currencies { currency net hedged hedgeRatio } }
    after { netInBase foreignNetInBase currencies { currency net hedged hedgeRatio } }
    estimates { currency ratio effectiveness observations } } }"""
EXECUTE = """mutation($p: ID!, $policy: HedgePolicyInput!, $key: String!) {
  executeHedge(portfolio: $p, policy: $policy, idempotencyKey: $key) {
    id idempotencyKey replayed executedAt policy { kind ratio tenorDays }
    positions { id pair currency side notional forwardRate tenorDays tradeDate valueDate policy
                targetRatio idempotencyKey }
    after { currencies { currency net hedged } } } }"""


# --- The maths, by hand --------------------------------------------------------------------

def test_cip_forward_against_a_hand_computation():
    # EUR/USD, 30 days, both legs ACT/360:
    #   1 + 0.045 x 30/360 = 1.00375      (USD, the pair's quote)
    #   1 + 0.030 x 30/360 = 1.0025       (EUR, the pair's base)
    #   F = 1.10 x 1.00375 / 1.0025 = 1.10 x 1.0012468827930... = 1.1013715710723...
    assert maths.cip_forward(D("1.1000"), "EUR", "USD", D("0.03"), D("0.045"), 30) == D("1.101371571")
    # JPY/USD, 30 days, JPY on ACT/365: 1 + 0.005 x 30/365 = 1.000410958904...
    #   S = 1/150 = 0.006666666667; F = S x 1.00375 / 1.000410958904 = S x 1.0033376694509...
    #     = 0.0066889177966738...
    assert maths.cip_forward(D("0.006666666667"), "JPY", "USD", D("0.005"), D("0.045"), 30) \
        == D("0.006688917797")
    # GBP/USD, equal rates but GBP on ACT/365: 1 + 0.045 x 30/365 = 1.0036986301369...
    #   F = 1.25 x 1.00375 / 1.0036986301369 = 1.25 x 1.0000511805650 = 1.2500639757...
    assert maths.cip_forward(D("1.25"), "GBP", "USD", D("0.045"), D("0.045"), 30) == D("1.250063976")
    # Higher interest abroad: the foreign currency trades at a forward discount.
    assert maths.cip_forward(D("0.055"), "MXN", "USD", D("0.10"), D("0.045"), 90) < D("0.055")
    assert maths.year_fraction(30, "USD") == D(30) / 360 and maths.year_fraction(30, "GBP") == D(30) / 365


def _book() -> dict[str, Holdings]:
    """The hand-worked portfolio (base USD), as of 2026-01-05."""
    return maths.gather(
        positions=[("EUR", D("1000"), D("650.00")),     # ASML.XAMS long: 650,000 EUR
                   ("EUR", D("-200"), D("180.00")),     # SAP.XETR short: 36,000 EUR
                   ("JPY", D("5000"), D("2800")),       # 7203.XTKS: 14,000,000 JPY
                   ("GBP", D("100000"), D("0.75")),     # VOD.XLON (price in GBP): 75,000 GBP
                   ("USD", D("100"), D("190.00"))],     # AAPL.XNAS: 19,000 USD
        cash=[("EUR", D("50000")), ("JPY", D("-2000000")), ("USD", D("10000"))],
        unsettled=[("EUR", D("-14000")), ("GBP", D("5000"))],  # payable / receivable
        hedges=[("EUR", D("-300000"))])                         # 300,000 EUR sold forward


def test_exposure_against_a_hand_worked_example():
    spots = {"EUR": D("1.1000"), "JPY": D("0.006666666667"), "GBP": D("1.2500")}
    e = maths.value(_book(), "USD", spots, AT_DT)
    assert [c.currency for c in e.currencies] == ["USD", "EUR", "GBP", "JPY"]
    eur = e.of("EUR")
    # EUR gross = 650,000 - 36,000 + 50,000 - 14,000 = 650,000; net = 650,000 - 300,000.
    assert (eur.long, eur.short, eur.cash, eur.unsettled, eur.hedged) == \
        (D("650000.00"), D("36000.00"), D("50000.00"), D("-14000.00"), D("300000.00"))
    assert (eur.gross, eur.net) == (D("650000.00"), D("350000.00"))
    # x 1.10: 715,000 and 385,000 USD; hedged share 300/650 = 0.461538...
    assert (eur.gross_in_base, eur.net_in_base, eur.hedge_ratio) == \
        (D("715000.00"), D("385000.00"), D("0.461538"))
    jpy = e.of("JPY")
    # JPY has no minor unit: 14,000,000 - 2,000,000 = 12,000,000 x 0.006666666667 = 80,000.000004.
    assert (jpy.gross, jpy.net, jpy.net_in_base, jpy.hedge_ratio) == \
        (D("12000000"), D("12000000"), D("80000.00"), D("0"))
    gbp = e.of("GBP")
    assert (gbp.gross, gbp.net_in_base) == (D("80000.00"), D("100000.00"))  # 75,000 + 5,000
    usd = e.of("USD")
    assert (usd.net, usd.spot, usd.hedge_ratio) == (D("29000.00"), D(1), None)
    # 385,000 + 80,000 + 100,000 + 29,000; foreign gross 715,000 + 80,000 + 100,000.
    assert e.net_in_base == D("594000.00")
    assert (e.foreign_gross_in_base, e.foreign_net_in_base) == (D("895000.00"), D("565000.00"))


def test_static_and_dynamic_trades_by_hand():
    book = _book()
    eur, jpy = book["EUR"], book["JPY"]
    # STATIC 100%: hedge all 650,000 EUR; 300,000 already sold, so sell 350,000 more.
    assert maths.trade_for(eur, D("1"), None) == D("350000.00")
    # STATIC 50%: 325,000 - 300,000 = 25,000.
    assert maths.trade_for(eur, D("0.5"), None) == D("25000.00")
    # DYNAMIC 50% +/- 10%: EUR is 46.15% hedged, inside the band: no trade...
    assert maths.trade_for(eur, D("0.5"), D("0.1")) == 0
    # ...JPY is 0% hedged, outside it: back to the target itself, 6,000,000 JPY.
    assert maths.trade_for(jpy, D("0.5"), D("0.1")) == D("6000000")
    # DYNAMIC 80% +/- 10%: 46.15% drifted 33.8 points; sell 520,000 - 300,000 = 220,000.
    assert maths.trade_for(eur, D("0.8"), D("0.1")) == D("220000.00")
    # The band's edge is inside: 400/1000 against 50% +/- 10% trades nothing; 399 does.
    edge = Holdings("EUR", long=D("1000"), hedged=D("400"))
    assert maths.trade_for(edge, D("0.5"), D("0.1")) == 0
    assert maths.trade_for(Holdings("EUR", long=D("1000"), hedged=D("399")), D("0.5"), D("0.1")) \
        == D("101.00")
    # Over-hedged beyond the band: buy back (negative = buy).
    assert maths.trade_for(Holdings("EUR", long=D("1000"), hedged=D("900")), D("0.5"), D("0.1")) \
        == D("-400.00")
    # No exposure left but a hedge open: unwound whatever the band.
    assert maths.trade_for(Holdings("EUR", hedged=D("100")), D("0.5"), D("0.1")) == D("-100.00")
    # A net short exposure is hedged by buying forward.
    assert maths.trade_for(Holdings("EUR", short=D("1000")), D("1"), None) == D("-1000.00")


def test_minimum_variance_ratio_recovers_a_known_ratio():
    # dS = h dF + noise with h = 0.8: Var(h dF) = 0.64e-4, Var(noise) = 0.16e-4, so rho^2 =
    # 0.64 / (0.64 + 0.16) = 0.8.
    rng = np.random.default_rng(7)
    df = rng.normal(0, 0.01, 20_000)
    ds = 0.8 * df + rng.normal(0, 0.004, 20_000)
    est = maths.min_variance_ratio(list(ds), list(df))
    assert abs(est.ratio - D("0.8")) < D("0.01")
    assert abs(est.effectiveness - D("0.8")) < D("0.01")
    assert est.observations == 20_000
    # A perfect proxy: h = 2 exactly, rho^2 = 1.
    exact = maths.min_variance_ratio([2.0, -4.0, 6.0, 1.0], [1.0, -2.0, 3.0, 0.5])
    assert (exact.ratio, exact.effectiveness) == (D("2.000000"), D("1.000000"))
    with pytest.raises(ValueError):
        maths.min_variance_ratio([1.0, 2.0], [1.0, 1.0])


def test_minimum_variance_ratio_from_provider_history(runtime):
    # With constant rates the constant-tenor forward is k x spot, k = (1 + r_USD T)/(1 + r_EUR T),
    # so dF = k dS and h* = 1/k: 1.0025 / 1.00375 = 0.998754669..., and rho^2 = 1 (the twin's
    # rates: USD 4.5%, EUR 3%, both ACT/360, 30 days).
    policy = parse_policy("MINIMUM_VARIANCE", tenor_days=30, lookback_days=180)
    est = runtime.fx.estimate_ratio("EUR", "USD", AT_DT, policy)
    assert abs(est.ratio - D("1.0025") / D("1.00375")) < D("0.00001")
    assert est.effectiveness > D("0.9999")
    # Midnight fixings from 2025-07-10 to 2026-01-05 (the window opens at 16:00): 180, 179 changes.
    assert est.observations == 179


def test_cross_hedge_ratio_recovers_the_twins_covariance():
    # Hedging EUR with CHF: in log changes h = rho sigma_EUR / sigma_CHF and effectiveness rho^2,
    # with the twin's own parameters (rho from its factor loadings). Ten years of daily fixings.
    twin = FxTwin(seed=11)
    start, end = datetime(2014, 1, 1, tzinfo=UTC), datetime(2023, 12, 31, tzinfo=UTC)
    eur = [math.log(r.rate) for r in twin.history("EUR", "USD", start, end)]
    chf = [math.log(r.rate) for r in twin.history("CHF", "USD", start, end)]
    est = maths.min_variance_ratio(np.diff(eur).tolist(), np.diff(chf).tolist())
    cov = twin.covariance()
    i, j = twin.currencies[1:].index("EUR"), twin.currencies[1:].index("CHF")
    expected_h = cov[i, j] / cov[j, j]
    expected_rho2 = cov[i, j] ** 2 / (cov[i, i] * cov[j, j])
    assert abs(float(est.ratio) - expected_h) < 0.04
    assert abs(float(est.effectiveness) - expected_rho2) < 0.04
    # And the realised volatility is the one it was given.
    assert abs(np.std(np.diff(eur)) * math.sqrt(365.25) - 0.075) < 0.005


# --- Providers -------------------------------------------------------------------------------

def test_twin_is_reproducible_by_seed_and_independent_of_call_order():
    instants = [datetime(2025, 3, 1, 9, 30, 15, tzinfo=UTC), datetime(2019, 7, 4, tzinfo=UTC),
                datetime(2026, 1, 5, 16, tzinfo=UTC), datetime(2031, 12, 31, 23, 59, tzinfo=UTC)]
    forward = [FxTwin(seed=5).rate("EUR", "JPY", t).rate for t in instants]
    twin = FxTwin(seed=5)
    backward = [twin.rate("EUR", "JPY", t).rate for t in reversed(instants)][::-1]
    assert forward == backward
    assert [FxTwin(seed=6).rate("EUR", "JPY", t).rate for t in instants] != forward
    # Daily history and spot agree at the fixings; pairs are ratios of the USD rates.
    history = twin.history("EUR", "JPY", datetime(2025, 2, 27, tzinfo=UTC),
                           datetime(2025, 3, 2, tzinfo=UTC))
    assert [h.at.day for h in history] == [27, 28, 1, 2]
    assert all(h.rate == twin.rate("EUR", "JPY", h.at).rate for h in history)
    t = instants[0]
    cross = twin.rate("USD", "JPY", t).rate / twin.rate("USD", "EUR", t).rate
    assert abs(cross / twin.rate("EUR", "JPY", t).rate - 1) < D("1e-9")
    # Realistic: USD/JPY near its 2024 level, the HKD peg holds, interest rates per currency.
    assert D(100) < twin.rate("USD", "JPY", t).rate < D(200)
    assert D("7.6") < twin.rate("USD", "HKD", t).rate < D("8.0")
    assert twin.interest_rate("MXN", t) > twin.interest_rate("USD", t) > twin.interest_rate("JPY", t)
    assert twin.rate("USD", "NZD", t) is None and twin.interest_rate("NZD", t) is None


def test_rates_file_inverse_cross_and_staleness():
    rates = RatesFileProvider(read_rates("""# comment
base,quote,rate,at
EUR,USD,1.1000,2026-01-05T16:00:00Z
USD,JPY,150.00,2026-01-05T16:00:00Z
EUR,USD,1.2000,2026-01-06T16:00:00Z
"""), read_interest_rates("currency,rate,at\nUSD,0.05,2025-01-01T00:00:00Z\n"
                          "USD,0.04,2026-01-06T00:00:00Z\n"), max_age=timedelta(days=2))
    assert rates.rate("EUR", "USD", AT_DT).rate == D("1.1000")
    assert rates.rate("USD", "EUR", AT_DT).rate == D("0.9090909091")  # 1 / 1.1, 10 digits
    assert rates.rate("EUR", "JPY", AT_DT).rate == D("165.000000")  # 1.1 x 150 via USD
    assert rates.rate("JPY", "EUR", AT_DT).rate == D("0.006060606061")
    later = AT_DT + timedelta(hours=30)  # as of: the 2026-01-06 fixing for EUR, the 05 for JPY
    assert rates.rate("EUR", "USD", later).rate == D("1.2000")
    assert rates.rate("EUR", "JPY", later).at == AT_DT
    assert rates.rate("EUR", "USD", AT_DT - timedelta(seconds=1)) is None  # before any fixing
    assert rates.rate("USD", "JPY", AT_DT + timedelta(days=3)) is None  # older than max_age
    assert rates.rate("EUR", "GBP", AT_DT) is None
    assert [h.rate for h in rates.history("USD", "EUR", AT_DT, later)] == \
        [D("0.9090909091"), D("0.8333333333")]
    assert rates.interest_rate("USD", AT_DT) == D("0.05")
    assert rates.interest_rate("USD", later) == D("0.04")
    assert rates.interest_rate("USD", datetime(2020, 1, 1, tzinfo=UTC)) is None
    with pytest.raises(ValueError, match="line 2"):
        read_rates("base,quote,rate,at\nEUR,USD,abc,2026-01-05T16:00:00Z\n")
    with pytest.raises(ValueError, match="no UTC offset"):
        read_rates("base,quote,rate,at\nEUR,USD,1.1,2026-01-05T16:00:00\n")


def test_shipped_file_prefers_a_direct_cross_to_one_via_usd(runtime):
    # 2026-01-06: EUR/GBP 0.8834 is in the file; via USD it would be 1.1025 / 1.2480 = 0.88341...
    day2 = AT_DT + timedelta(days=1)
    assert runtime.fx.rate("EUR", "GBP", day2).rate == D("0.8834")
    assert runtime.fx.rate("GBP", "EUR", day2).source == "rates-file"
    # Outside the file's dates the twin answers.
    assert runtime.fx.rate("EUR", "GBP", datetime(2025, 6, 1, tzinfo=UTC)).source == "fx-twin"


class _Broken:
    name = "broken"

    def rate(self, base, quote, at):
        raise RuntimeError("down")

    def history(self, base, quote, start, end):
        raise RuntimeError("down")

    def interest_rate(self, currency, at):
        return "not a decimal"


class _UsdOnly:
    """Knows USD/EUR and GBP/USD only: the chain inverts and crosses for it."""

    name = "usd-only"
    fixings = {("USD", "EUR"): D("0.8"), ("GBP", "USD"): D("1.25")}

    def rate(self, base, quote, at):
        r = self.fixings.get((base, quote))
        return FxRate(base, quote, r, at, self.name) if r else None

    def history(self, base, quote, start, end):
        return []

    def interest_rate(self, currency, at):
        return {"USD": D("0.04")}.get(currency)


def test_provider_chain_skips_failures_and_crosses_through_usd():
    chain = FxRates([("p1", _Broken()), ("p2", _UsdOnly())])
    assert chain.spot("EUR", "USD", AT_DT).rate == D("1.25")  # inverted
    # GBP/EUR = GBP/USD x USD/EUR = 1.25 x 0.8
    cross = chain.spot("GBP", "EUR", AT_DT)
    assert (cross.rate, cross.source) == (D("1.000"), "usd-only via USD")
    assert chain.interest_rate("USD", AT_DT) == D("0.04")  # the broken answer is skipped
    with pytest.raises(DomainError) as failed:
        chain.spot("JPY", "USD", AT_DT)
    assert failed.value.code == "PLUGIN_FAILED"  # one provider was down: not just a gap
    with pytest.raises(DomainError) as gap:
        FxRates([("p2", _UsdOnly())]).spot("JPY", "USD", AT_DT)
    assert gap.value.code == "FX_RATE_UNAVAILABLE"
    with pytest.raises(DomainError) as short:
        FxRates([("p2", _UsdOnly())]).history("EUR", "USD", AT_DT - timedelta(days=90), AT_DT, 21)
    assert short.value.code == "FX_HISTORY_INSUFFICIENT"


# --- GraphQL end to end ----------------------------------------------------------------------

def _create(gql, key, name=None, **extra):
    return gql.data("mutation($i: CreatePortfolioInput!) { createPortfolio(input: $i) "
                    "{ id name baseCurrency } }", {"i": {"name": name or unique("pf"), **extra}},
                    key=key)["createPortfolio"]


def _position(gql, key, pid, instrument, mic, currency, quantity, price):
    return gql.data("mutation($i: RecordPositionInput!) { recordPosition(input: $i) "
                    "{ id quantity price marketValue } }",
                    {"i": {"portfolio": pid, "instrument": instrument, "mic": mic,
                           "currency": currency, "quantity": quantity, "price": price}},
                    key=key)["recordPosition"]


def _cash(gql, key, pid, currency, amount):
    return gql.data("mutation($i: SetCashBalanceInput!) { setCashBalance(input: $i) "
                    "{ currency amount } }",
                    {"i": {"portfolio": pid, "currency": currency, "amount": amount}},
                    key=key)["setCashBalance"]


def _trade(gql, key, pid, currency, amount, settles_on):
    return gql.data("mutation($i: RecordUnsettledTradeInput!) { recordUnsettledTrade(input: $i) "
                    "{ id amount settlesOn } }",
                    {"i": {"portfolio": pid, "currency": currency, "amount": amount,
                           "settlesOn": settles_on}}, key=key)["recordUnsettledTrade"]


def _book_over_graphql(gql, runtime, tenant):
    """The hand-worked book of `_book()`, recorded through the API, plus its existing hedges."""
    key = tenant.key
    pid = _create(gql, key)["id"]
    _position(gql, key, pid, "ASML.XAMS", "XAMS", "EUR", "1000", "650.00")
    _position(gql, key, pid, "SAP.XETR", "XETR", "EUR", "-200", "180.00")
    _position(gql, key, pid, "7203.XTKS", "XTKS", "JPY", "5000", "2800")
    _position(gql, key, pid, "VOD.XLON", "XLON", "GBP", "100000", "0.75")
    _position(gql, key, pid, "AAPL.XNAS", "XNAS", "USD", "100", "190.00")
    _cash(gql, key, pid, "EUR", "50000")
    _cash(gql, key, pid, "JPY", "-2000000")
    _cash(gql, key, pid, "USD", "10000")
    _trade(gql, key, pid, "EUR", "-14000", "2026-01-07")
    _trade(gql, key, pid, "GBP", "5000", "2026-01-06")
    _trade(gql, key, pid, "EUR", "1000", "2026-01-02")  # settled before the valuation date
    with runtime.db.tenant_transaction(tenant.id) as session:
        common = {"portfolio_id": pid, "base_currency": "USD", "spot_rate": D("1.1"),
                  "forward_rate": D("1.1"), "tenor_days": 30, "policy": "STATIC",
                  "target_ratio": D("0.5")}
        session.add(HedgePosition(pair="EUR/USD", currency="EUR", notional=D("-300000"),
                                  trade_date=date(2026, 1, 2), value_date=date(2026, 2, 1), **common))
        # Expired on 2025-12-01: no longer a hedge on 2026-01-05.
        session.add(HedgePosition(pair="GBP/USD", currency="GBP", notional=D("-10000"),
                                  trade_date=date(2025, 11, 1), value_date=date(2025, 12, 1),
                                  **common))
    return pid


def test_exposure_and_static_hedge_over_graphql(gql, runtime, tenant):
    pid = _book_over_graphql(gql, runtime, tenant)
    e = gql.data(EXPOSURE, {"p": pid, "at": AT}, key=tenant.key)["fxExposure"]
    assert (e["baseCurrency"], e["netInBase"], e["foreignGrossInBase"], e["foreignNetInBase"]) == \
        ("USD", "594000.00", "895000.00", "565000.00")
    by = {c["currency"]: c for c in e["currencies"]}
    assert list(by) == ["USD", "EUR", "GBP", "JPY"]
    assert by["EUR"] == {"currency": "EUR", "long": "650000.00", "short": "36000.00",
                         "cash": "50000.00", "unsettled": "-14000.00", "hedged": "300000.00",
                         "gross": "650000.00", "net": "350000.00", "spot": "1.1000",
                         "grossInBase": "715000.00", "netInBase": "385000.00",
                         "hedgeRatio": "0.461538"}
    assert (by["JPY"]["gross"], by["JPY"]["spot"], by["JPY"]["netInBase"]) == \
        ("12000000", "0.006666666667", "80000.00")
    assert (by["GBP"]["hedged"], by["GBP"]["netInBase"]) == ("0.00", "100000.00")

    policy = {"kind": "STATIC", "ratio": "1", "tenorDays": 30}
    p = gql.data(PROPOSE, {"p": pid, "policy": policy, "at": AT}, key=tenant.key)["proposeHedge"]
    assert p["policy"] == {"kind": "STATIC", "ratio": "1", "band": None, "tenorDays": 30,
                           "lookbackDays": None}
    orders = {o["currency"]: o for o in p["orders"]}
    # EUR: sell 650,000 - 300,000 = 350,000 forward at 1.101371571 (see the CIP test):
    # 350,000 x 1.101371571 = 385,480.04985 USD at value date.
    assert orders["EUR"] == {
        "pair": "EUR/USD", "currency": "EUR", "side": "SELL", "notional": "-350000.00",
        "notionalInBase": "385480.05", "tenorDays": 30, "tradeDate": "2026-01-05",
        "valueDate": "2026-02-04", "spotRate": "1.1000", "forwardRate": "1.101371571",
        "foreignInterestRate": "0.0300", "baseInterestRate": "0.0450", "targetRatio": "1",
        "ratioBefore": "0.461538"}
    # JPY: 12,000,000 x 0.006688917797 = 80,267.013564; GBP: 80,000 x 1.250063976 = 100,005.11808.
    assert (orders["JPY"]["notional"], orders["JPY"]["forwardRate"],
            orders["JPY"]["notionalInBase"]) == ("-12000000", "0.006688917797", "80267.01")
    assert (orders["GBP"]["notional"], orders["GBP"]["forwardRate"],
            orders["GBP"]["notionalInBase"]) == ("-80000.00", "1.250063976", "100005.12")
    assert p["before"]["foreignNetInBase"] == "565000.00"
    # Fully hedged: only the USD 29,000 is left exposed (in base terms nothing foreign).
    assert (p["after"]["netInBase"], p["after"]["foreignNetInBase"]) == ("29000.00", "0.00")
    assert {c["currency"]: c["hedgeRatio"] for c in p["after"]["currencies"]} == \
        {"USD": None, "EUR": "1.000000", "GBP": "1.000000", "JPY": "1.000000"}
    assert p["estimates"] == []

    # STATIC 50%: EUR 325,000 - 300,000 = 25,000; JPY 6,000,000; GBP 40,000.
    half = gql.data(PROPOSE, {"p": pid, "policy": {"kind": "STATIC", "ratio": "0.5"}, "at": AT},
                    key=tenant.key)["proposeHedge"]
    assert {o["currency"]: o["notional"] for o in half["orders"]} == \
        {"EUR": "-25000.00", "GBP": "-40000.00", "JPY": "-6000000"}
    # A proposal records nothing.
    with runtime.db.tenant_session(tenant.id) as session:
        assert session.exec(select(func.count(HedgePosition.id))).one() == 2


def test_dynamic_band_over_graphql(gql, runtime, tenant):
    pid = _book_over_graphql(gql, runtime, tenant)
    # 50% +/- 10%: EUR (46.15% hedged) stays; JPY and GBP (0%) go to 50%.
    p = gql.data(PROPOSE, {"p": pid, "policy": {"kind": "DYNAMIC", "ratio": "0.5", "band": "0.1"},
                           "at": AT}, key=tenant.key)["proposeHedge"]
    assert {o["currency"]: o["notional"] for o in p["orders"]} == \
        {"GBP": "-40000.00", "JPY": "-6000000"}
    # 80% +/- 10%: EUR drifted too far; 520,000 - 300,000 = 220,000 more.
    p = gql.data(PROPOSE, {"p": pid, "policy": {"kind": "DYNAMIC", "ratio": "0.8", "band": "0.1"},
                           "at": AT}, key=tenant.key)["proposeHedge"]
    assert {o["currency"]: o["notional"] for o in p["orders"]}["EUR"] == "-220000.00"
    # A wide band around 0.3 tolerates everything here: EUR 0.46 (drift 0.16), others 0 (0.3).
    p = gql.data(PROPOSE, {"p": pid, "policy": {"kind": "DYNAMIC", "ratio": "0.3", "band": "0.3"},
                           "at": AT}, key=tenant.key)["proposeHedge"]
    assert p["orders"] == [] and p["before"] == p["after"]


def test_minimum_variance_over_graphql(gql, runtime, tenant):
    pid = _book_over_graphql(gql, runtime, tenant)
    p = gql.data(PROPOSE, {"p": pid, "policy": {"kind": "MINIMUM_VARIANCE", "lookbackDays": 90},
                           "at": AT}, key=tenant.key)["proposeHedge"]
    est = {e["currency"]: e for e in p["estimates"]}
    assert set(est) == {"EUR", "GBP", "JPY"}
    # Same-currency forwards: h* = 1/k close to one, effectiveness close to one.
    for currency, e in est.items():
        assert abs(D(e["ratio"]) - 1) < D("0.01"), currency
        assert D(e["effectiveness"]) > D("0.999") and e["observations"] == 89
    eur = next(o for o in p["orders"] if o["currency"] == "EUR")
    # Sell h* x 650,000 - 300,000.
    assert D(eur["notional"]) == -(D(est["EUR"]["ratio"]) * 650000 - 300000).quantize(D("0.01"))
    assert eur["targetRatio"] == est["EUR"]["ratio"]


def test_execute_hedge_is_recorded_idempotent_and_reflected(gql, runtime, tenant):
    key = tenant.key
    pid = _create(gql, key)["id"]
    _position(gql, key, pid, "ASML.XAMS", "XAMS", "EUR", "1000", "650")
    _position(gql, key, pid, "7203.XTKS", "XTKS", "JPY", "1000", "2800")
    policy = {"kind": "STATIC", "ratio": "0.5", "tenorDays": 30}
    first = gql.data(EXECUTE, {"p": pid, "policy": policy, "key": "hedge-1"}, key=key)["executeHedge"]
    assert first["replayed"] is False and first["idempotencyKey"] == "hedge-1"
    positions = {p["currency"]: p for p in first["positions"]}
    assert (positions["EUR"]["notional"], positions["JPY"]["notional"]) == ("-325000", "-1400000")
    today = datetime.now(UTC).date()
    assert positions["EUR"]["tradeDate"] == today.isoformat()
    assert positions["EUR"]["valueDate"] == (today + timedelta(days=30)).isoformat()
    assert positions["EUR"]["idempotencyKey"] == "hedge-1" and positions["EUR"]["policy"] == "STATIC"

    again = gql.data(EXECUTE, {"p": pid, "policy": policy, "key": "hedge-1"}, key=key)["executeHedge"]
    assert again["replayed"] is True
    assert (again["id"], again["positions"], again["after"]) == \
        (first["id"], first["positions"], first["after"])
    with runtime.db.tenant_session(tenant.id) as session:
        assert session.exec(select(func.count(HedgePosition.id))).one() == 2
        assert session.exec(select(func.count(HedgeExecution.id))).one() == 1

    # Exposure now reflects the hedges: half of each currency is hedged.
    e = gql.data(EXPOSURE, {"p": pid}, key=key)["fxExposure"]
    by = {c["currency"]: c for c in e["currencies"]}
    assert (by["EUR"]["hedged"], by["EUR"]["net"], by["EUR"]["hedgeRatio"]) == \
        ("325000.00", "325000.00", "0.500000")
    assert by["JPY"]["hedged"] == "1400000"
    listed = gql.data("query($id: ID!) { portfolio(id: $id) { hedgePositions { id } } }",
                      {"id": pid}, key=key)["portfolio"]["hedgePositions"]
    assert {h["id"] for h in listed} == {p["id"] for p in first["positions"]}

    # A second execution of the same policy has nothing left to do, and says so.
    none = gql.data(EXECUTE, {"p": pid, "policy": policy, "key": "hedge-2"}, key=key)["executeHedge"]
    assert none["positions"] == [] and none["replayed"] is False
    assert gql.data(EXECUTE, {"p": pid, "policy": policy, "key": "hedge-2"},
                    key=key)["executeHedge"]["id"] == none["id"]
    # The same key for anything else is refused, and changes nothing.
    other = {"kind": "STATIC", "ratio": "1", "tenorDays": 30}
    assert error_codes(gql(EXECUTE, {"p": pid, "policy": other, "key": "hedge-1"},
                           key=key)) == ["IDEMPOTENCY_KEY_REUSED"]
    other_pid = _create(gql, key)["id"]
    assert error_codes(gql(EXECUTE, {"p": other_pid, "policy": policy, "key": "hedge-1"},
                           key=key)) == ["IDEMPOTENCY_KEY_REUSED"]
    with runtime.db.tenant_session(tenant.id) as session:
        assert session.exec(select(func.count(HedgePosition.id))).one() == 2


def test_stored_rates_come_back_exactly(gql, runtime, tenant):
    # SQLite keeps NUMERIC as a double; at 16 places 1.00370524 reads back 1.0037052399999999,
    # so readers round to the 10 significant digits rates carry.
    pid = _create(gql, tenant.key)["id"]
    with runtime.db.tenant_transaction(tenant.id) as session:
        for currency, rate in (("EUR", "1.00370524"), ("JPY", "0.006688917797"), ("MXN", "149.9876543")):
            session.add(HedgePosition(
                portfolio_id=pid, pair=f"{currency}/USD", currency=currency, base_currency="USD",
                notional=D("-123456789.12"), spot_rate=D(rate), forward_rate=D(rate), tenor_days=30,
                trade_date=date(2026, 1, 5), value_date=date(2026, 2, 4), policy="STATIC",
                target_ratio=D("0.5")))
    got = gql.data("query($id: ID!) { portfolio(id: $id) { hedgePositions(openOnly: false) "
                   "{ currency notional spotRate forwardRate } } }", {"id": pid},
                   key=tenant.key)["portfolio"]["hedgePositions"]
    assert {h["currency"]: (h["notional"], h["spotRate"], h["forwardRate"]) for h in got} == {
        "EUR": ("-123456789.12", "1.00370524", "1.00370524"),
        "JPY": ("-123456789.12", "0.006688917797", "0.006688917797"),
        "MXN": ("-123456789.12", "149.9876543", "149.9876543")}


def test_concurrent_executions_do_not_hedge_twice(gql, runtime, tenant):
    key = tenant.key
    pid = _create(gql, key)["id"]
    _position(gql, key, pid, "ASML.XAMS", "XAMS", "EUR", "1000", "650")
    policy = {"kind": "STATIC", "ratio": "1"}
    results: list[dict] = []

    def run(i: int) -> None:
        results.append(gql(EXECUTE, {"p": pid, "policy": policy, "key": f"race-{i}"}, key=key))

    threads = [threading.Thread(target=run, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all("errors" not in r for r in results), results
    e = gql.data(EXPOSURE, {"p": pid}, key=key)["fxExposure"]
    eur = next(c for c in e["currencies"] if c["currency"] == "EUR")
    assert (eur["hedged"], eur["net"]) == ("650000.00", "0.00")
    assert sum(len(r["data"]["executeHedge"]["positions"]) for r in results) == 1


def test_portfolios_create_idempotent_list_and_read(gql, runtime, tenant):
    key = tenant.key
    made = _create(gql, key, "Global equity", baseCurrency="EUR", idempotencyKey="pf-1")
    assert made["baseCurrency"] == "EUR"
    assert _create(gql, key, "Global equity", baseCurrency="EUR", idempotencyKey="pf-1") == made
    assert error_codes(gql("mutation { createPortfolio(input: {name: \"Other\", idempotencyKey: "
                           "\"pf-1\"}) { id } }", key=key)) == ["IDEMPOTENCY_KEY_REUSED"]
    assert error_codes(gql("mutation { createPortfolio(input: {name: \"Global equity\"}) { id } }",
                           key=key)) == ["PORTFOLIO_EXISTS"]
    default = _create(gql, key)  # the tenant's base currency
    assert default["baseCurrency"] == "USD"
    _position(gql, key, made["id"], "SAP.XETR", "XETR", "EUR", "10", "180.5")
    moved = _position(gql, key, made["id"], "SAP.XETR", "XETR", "EUR", "-15", "181.25")  # replaces
    assert moved == {"id": moved["id"], "quantity": "-15", "price": "181.25",
                     "marketValue": "-2718.75"}
    _cash(gql, key, made["id"], "EUR", "1000.50")
    assert _cash(gql, key, made["id"], "EUR", "2000") == {"currency": "EUR", "amount": "2000"}
    _trade(gql, key, made["id"], "USD", "-500", "2030-01-01")
    page = gql.data("""{ portfolios(first: 1) { edges { cursor node { id } }
                         pageInfo { hasNextPage endCursor } } }""", key=key)["portfolios"]
    assert page["pageInfo"]["hasNextPage"] is True
    rest = gql.data("""query($a: String) { portfolios(first: 10, after: $a) { edges { node {
        id name baseCurrency positions { instrument quantity } cashBalances { currency amount }
        unsettledTrades { currency amount settlesOn } hedgePositions(openOnly: false) { id } } }
        pageInfo { hasNextPage } } }""", {"a": page["pageInfo"]["endCursor"]}, key=key)["portfolios"]
    ids = [page["edges"][0]["node"]["id"]] + [e["node"]["id"] for e in rest["edges"]]
    assert sorted(ids) == sorted([made["id"], default["id"]]) and not rest["pageInfo"]["hasNextPage"]
    node = gql.data("""query($id: ID!) { portfolio(id: $id) { name positions { instrument quantity }
        cashBalances { currency amount } unsettledTrades { currency amount settlesOn } } }""",
                    {"id": made["id"]}, key=key)["portfolio"]
    assert node == {"name": "Global equity",
                    "positions": [{"instrument": "SAP.XETR", "quantity": "-15"}],
                    "cashBalances": [{"currency": "EUR", "amount": "2000"}],
                    "unsettledTrades": [{"currency": "USD", "amount": "-500",
                                         "settlesOn": "2030-01-01"}]}
    # Valued in its own base, EUR: -15 x 181.25 = -2,718.75 EUR short, 2,000 EUR cash, and
    # -500 USD payable x (1 / 1.10 = 0.9090909091) = -454.545... -> -454.55 EUR.
    e = gql.data(EXPOSURE, {"p": made["id"], "at": AT}, key=key)["fxExposure"]
    assert (e["baseCurrency"], e["netInBase"], e["foreignNetInBase"]) == ("EUR", "-1173.30", "-454.55")
    assert [(c["currency"], c["short"], c["net"]) for c in e["currencies"]] == \
        [("EUR", "2718.75", "-718.75"), ("USD", "0.00", "-500.00")]


def test_fx_rate_query(gql, tenant):
    r = gql.data('{ fxRate(base: "JPY", quote: "EUR", at: "2026-01-05T16:00:00Z") '
                 "{ base quote rate at source } }", key=tenant.key)["fxRate"]
    # 1 / (1.10 x 150) = 1/165
    assert r == {"base": "JPY", "quote": "EUR", "rate": "0.006060606061",
                 "at": "2026-01-05T16:00:00+00:00", "source": "rates-file"}
    now = gql.data('{ fxRate(base: "USD", quote: "INR") { rate source } }', key=tenant.key)["fxRate"]
    assert now["source"] == "fx-twin" and D(50) < D(now["rate"]) < D(150)


BAD = [
    # (mutation or query, variables, code)
    ('mutation { createPortfolio(input: {name: "x", baseCurrency: "usd"}) { id } }', None,
     "CURRENCY_INVALID"),
    ('mutation { createPortfolio(input: {name: "x", baseCurrency: "XAU"}) { id } }', None,
     "CURRENCY_UNSUPPORTED"),  # ISO 4217 (gold), but no provider quotes it
    ('mutation { createPortfolio(input: {name: "x", baseCurrency: "XYZ"}) { id } }', None,
     "CURRENCY_INVALID"),  # not an ISO 4217 code at all
    ('mutation { createPortfolio(input: {name: "  "}) { id } }', None, "PORTFOLIO_NAME_INVALID"),
    ('mutation { createPortfolio(input: {name: "x", idempotencyKey: ""}) { id } }', None,
     "IDEMPOTENCY_KEY_INVALID"),
    ("mutation($i: RecordPositionInput!) { recordPosition(input: $i) { id } }",
     {"mic": "NYSE1"}, "MIC_INVALID"),
    ("mutation($i: RecordPositionInput!) { recordPosition(input: $i) { id } }",
     {"instrument": "two words"}, "INSTRUMENT_INVALID"),
    ("mutation($i: RecordPositionInput!) { recordPosition(input: $i) { id } }",
     {"currency": "XAU"}, "CURRENCY_UNSUPPORTED"),
    ("mutation($i: RecordPositionInput!) { recordPosition(input: $i) { id } }",
     {"currency": "ZZZ"}, "CURRENCY_INVALID"),
    ("mutation($i: RecordPositionInput!) { recordPosition(input: $i) { id } }",
     {"quantity": "ten"}, "QUANTITY_INVALID"),
    ("mutation($i: RecordPositionInput!) { recordPosition(input: $i) { id } }",
     {"quantity": "1234567890.1234567"}, "QUANTITY_INVALID"),  # 17 significant digits
    ("mutation($i: RecordPositionInput!) { recordPosition(input: $i) { id } }",
     {"price": "0"}, "PRICE_INVALID"),
    ("mutation($i: RecordPositionInput!) { recordPosition(input: $i) { id } }",
     {"portfolio": "no-such-portfolio"}, "PORTFOLIO_NOT_FOUND"),
    ("mutation($p: ID!) { setCashBalance(input: {portfolio: $p, currency: \"EUR\", "
     "amount: \"NaN\"}) { amount } }", None, "AMOUNT_INVALID"),
    ("mutation($p: ID!) { recordUnsettledTrade(input: {portfolio: $p, currency: \"EUR\", "
     "amount: \"0\", settlesOn: \"2030-01-01\"}) { id } }", None, "AMOUNT_INVALID"),
    (PROPOSE, {"kind": "STATIC", "ratio": "1.5"}, "POLICY_RATIO_INVALID"),
    (PROPOSE, {"kind": "STATIC", "ratio": "-0.1"}, "POLICY_RATIO_INVALID"),
    (PROPOSE, {"kind": "STATIC", "ratio": "half"}, "POLICY_RATIO_INVALID"),
    (PROPOSE, {"kind": "STATIC"}, "POLICY_INVALID"),
    (PROPOSE, {"kind": "STATIC", "ratio": "1", "band": "0.1"}, "POLICY_INVALID"),
    (PROPOSE, {"kind": "DYNAMIC", "ratio": "0.5"}, "POLICY_INVALID"),
    (PROPOSE, {"kind": "DYNAMIC", "ratio": "0.5", "band": "0"}, "POLICY_BAND_INVALID"),
    (PROPOSE, {"kind": "MINIMUM_VARIANCE", "ratio": "0.5"}, "POLICY_INVALID"),
    (PROPOSE, {"kind": "MINIMUM_VARIANCE", "lookbackDays": 5}, "POLICY_LOOKBACK_INVALID"),
    (PROPOSE, {"kind": "STATIC", "ratio": "1", "tenorDays": 0}, "POLICY_TENOR_INVALID"),
    (EXECUTE, {"kind": "STATIC", "ratio": "2"}, "POLICY_RATIO_INVALID"),
    (EXECUTE, {"kind": "DYNAMIC", "ratio": "0.5", "band": "1.5"}, "POLICY_BAND_INVALID"),
]


@pytest.mark.parametrize(("query", "variables", "code"), BAD)
def test_bad_input_has_a_code_and_persists_nothing(gql, runtime, tenant, query, variables, code):
    key = tenant.key
    pid = _create(gql, key)["id"]
    _position(gql, key, pid, "ASML.XAMS", "XAMS", "EUR", "1000", "650")

    def counts() -> list[int]:
        with runtime.db.tenant_session(tenant.id) as session:
            return [session.exec(select(func.count(m.id))).one()
                    for m in (Portfolio, Position, CashBalance, UnsettledTrade, HedgePosition,
                              HedgeExecution)]

    before = counts()
    if query in (PROPOSE, EXECUTE):
        extra = {"key": "k"} if query is EXECUTE else {}
        body = gql(query, {"p": pid, "policy": variables, **extra}, key=key)
    elif "RecordPositionInput" in query:
        item = {"portfolio": pid, "instrument": "SAP.XETR", "mic": "XETR", "currency": "EUR",
                "quantity": "1", "price": "100", **variables}
        body = gql(query, {"i": item}, key=key)
    else:
        body = gql(query, {"p": pid} if "$p" in query else None, key=key)
    assert error_codes(body) == [code], body
    assert counts() == before


def test_bad_instants_and_unavailable_rates(gql, tenant):
    key = tenant.key
    pid = _create(gql, key)["id"]
    _position(gql, key, pid, "ASML.XAMS", "XAMS", "EUR", "1000", "650")
    assert error_codes(gql(EXPOSURE, {"p": pid, "at": "2026-01-05T16:00:00"}, key=key)) == \
        ["INSTANT_NOT_AWARE"]
    future = (datetime.now(UTC) + timedelta(days=2)).isoformat()
    assert error_codes(gql(EXPOSURE, {"p": pid, "at": future}, key=key)) == ["INSTANT_IN_FUTURE"]
    assert error_codes(gql(EXPOSURE, {"p": pid, "at": "1980-01-01T00:00:00Z"}, key=key)) == \
        ["FX_RATE_UNAVAILABLE"]
    assert error_codes(gql('{ fxRate(base: "EUR", quote: "XAU") { rate } }', key=key)) == \
        ["CURRENCY_UNSUPPORTED"]
    assert error_codes(gql('{ fxRate(base: "EURO", quote: "USD") { rate } }', key=key)) == \
        ["CURRENCY_INVALID"]
    assert error_codes(gql("query($p: ID!) { fxExposure(portfolio: $p) { netInBase } }",
                           {"p": "nope"}, key=key)) == ["PORTFOLIO_NOT_FOUND"]
    # Minimum variance needs history the providers do not have before 1990.
    assert error_codes(gql(PROPOSE, {"p": pid, "policy": {"kind": "MINIMUM_VARIANCE"},
                                     "at": "1990-01-10T00:00:00Z"}, key=key)) == \
        ["FX_HISTORY_INSUFFICIENT"]


def test_roles(gql, runtime, tenant):
    pid = _create(gql, tenant.key)["id"]
    _position(gql, tenant.key, pid, "ASML.XAMS", "XAMS", "EUR", "1000", "650")
    _, viewer = user_key(runtime, tenant, "viewer")
    _, trader = user_key(runtime, tenant, "trader")
    _, compliance = user_key(runtime, tenant, "compliance_officer")
    _, vendor = user_key(runtime, tenant, "vendor")
    policy = {"kind": "STATIC", "ratio": "1"}
    for reader in (viewer, compliance, trader):
        assert "errors" not in gql(EXPOSURE, {"p": pid}, key=reader)
        assert "errors" not in gql(PROPOSE, {"p": pid, "policy": policy}, key=reader)
        assert "errors" not in gql("{ portfolios { edges { node { id hedgePositions { id } } } } }",
                                   key=reader)
    for not_a_trader in (viewer, compliance, vendor):
        assert error_codes(gql(EXECUTE, {"p": pid, "policy": policy, "key": "x"},
                               key=not_a_trader)) == ["FORBIDDEN"]
        assert error_codes(gql('mutation { createPortfolio(input: {name: "no"}) { id } }',
                               key=not_a_trader)) == ["FORBIDDEN"]
        assert error_codes(gql("mutation($p: ID!) { setCashBalance(input: {portfolio: $p, "
                               'currency: "EUR", amount: "1"}) { amount } }', {"p": pid},
                               key=not_a_trader)) == ["FORBIDDEN"]
    assert error_codes(gql(EXPOSURE, {"p": pid}, key=vendor)) == ["FORBIDDEN"]
    with runtime.db.tenant_session(tenant.id) as session:
        assert session.exec(select(func.count(HedgePosition.id))).one() == 0
    done = gql.data(EXECUTE, {"p": pid, "policy": policy, "key": "t"}, key=trader)["executeHedge"]
    assert [p["notional"] for p in done["positions"]] == ["-650000"]
    _create(gql, trader)


# --- Tenant isolation (referenced from COVERED in tests/test_tenant_isolation.py) -------------

def test_fx_fields_with_another_tenants_ids_find_and_change_nothing(gql, runtime, tenant):
    b = onboard(runtime)
    bp = _create(gql, b.key, "B book", idempotencyKey="shared")["id"]
    _position(gql, b.key, bp, "ASML.XAMS", "XAMS", "EUR", "1000", "650")
    _cash(gql, b.key, bp, "EUR", "10")
    b_exec = gql.data(EXECUTE, {"p": bp, "policy": {"kind": "STATIC", "ratio": "0.5"},
                                "key": "shared"}, key=b.key)["executeHedge"]
    a = tenant.key

    def b_rows() -> list[tuple]:
        with runtime.db.tenant_session(b.id) as session:
            return [tuple(sorted(str(r.model_dump()) for r in session.exec(select(m))))
                    for m in (Portfolio, Position, CashBalance, UnsettledTrade, HedgePosition,
                              HedgeExecution)]

    before = b_rows()
    # Queries.
    assert error_codes(gql("query($id: ID!) { portfolio(id: $id) { id } }", {"id": bp},
                           key=a)) == ["PORTFOLIO_NOT_FOUND"]
    assert error_codes(gql(EXPOSURE, {"p": bp}, key=a)) == ["PORTFOLIO_NOT_FOUND"]
    listed = gql.data("{ portfolios(first: 200) { edges { node { id } } } }", key=a)["portfolios"]
    assert bp not in {e["node"]["id"] for e in listed["edges"]}
    assert "errors" not in gql('{ fxRate(base: "EUR", quote: "USD") { rate } }', key=a)  # public
    # Mutations on B's portfolio.
    assert error_codes(gql("mutation($i: RecordPositionInput!) { recordPosition(input: $i) { id } }",
                           {"i": {"portfolio": bp, "instrument": "X", "mic": "XNYS",
                                  "currency": "USD", "quantity": "1", "price": "1"}},
                           key=a)) == ["PORTFOLIO_NOT_FOUND"]
    assert error_codes(gql("mutation($p: ID!) { setCashBalance(input: {portfolio: $p, "
                           'currency: "EUR", amount: "999"}) { amount } }', {"p": bp},
                           key=a)) == ["PORTFOLIO_NOT_FOUND"]
    assert error_codes(gql("mutation($p: ID!) { recordUnsettledTrade(input: {portfolio: $p, "
                           'currency: "EUR", amount: "5", settlesOn: "2030-01-01"}) { id } }',
                           {"p": bp}, key=a)) == ["PORTFOLIO_NOT_FOUND"]
    assert error_codes(gql(PROPOSE, {"p": bp, "policy": {"kind": "STATIC", "ratio": "1"}},
                           key=a)) == ["PORTFOLIO_NOT_FOUND"]
    assert error_codes(gql(EXECUTE, {"p": bp, "policy": {"kind": "STATIC", "ratio": "1"},
                                     "key": "a-1"}, key=a)) == ["PORTFOLIO_NOT_FOUND"]
    # B's idempotency keys mean nothing to A: A gets its own portfolio and execution.
    mine = _create(gql, a, "B book", idempotencyKey="shared")
    assert mine["id"] != bp
    _position(gql, a, mine["id"], "SAP.XETR", "XETR", "EUR", "10", "100")
    a_exec = gql.data(EXECUTE, {"p": mine["id"], "policy": {"kind": "STATIC", "ratio": "0.5"},
                                "key": "shared"}, key=a)["executeHedge"]
    assert a_exec["id"] != b_exec["id"] and a_exec["replayed"] is False
    assert b_rows() == before
    # And B still sees exactly its own.
    e = gql.data(EXPOSURE, {"p": bp}, key=b.key)["fxExposure"]
    assert {c["currency"]: c["hedged"] for c in e["currencies"]} == {"EUR": "325005.00"}
