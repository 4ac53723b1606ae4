"""Pre-trade compliance: the ISIN and LEI check digits, every shared rule's allow and deny
sides (with the limit and value in the denial), each jurisdiction's own rules, which packs an
order falls under (venue x domicile), and the engine's all-must-pass and fail-closed
behaviour, including a broken pack on a fresh PluginHost. No database: a check is a pure
function of its context."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal as D

import pytest

from gateway.compliance.engine import ComplianceEngine, Decision
from gateway.compliance.errors import NO_RULE_PACK, ORDER_INVALID, PACK_FAILED, ComplianceDenied
from gateway.compliance.jurisdictions import required_jurisdictions
from gateway.markets.errors import VenueUnknown
from gateway.markets.venues import MIFID_LIQUID, VENUES
from plugins import hookimpl, hookspecs
from plugins.builtin import BUILTINS
from plugins.builtin.compliance import au, codes, eu, hk, jp, rules, sg, uk, us
from plugins.builtin.compliance.mifid import mifid_tick
from plugins.builtin.compliance.validators import (
    is_valid_isin,
    is_valid_lei,
    isin_check_digit,
    lei_check_digits,
)
from plugins.host import PluginHost
from plugins.sdk import (
    AccountState,
    CheckContext,
    ClientProfile,
    Denial,
    InstrumentFacts,
    MarketState,
    OrderRequest,
    OrdType,
    RulePack,
    RuleSetPack,
    Side,
    TenantControls,
    TimeInForce,
    order_fingerprint,
)

NOW = datetime(2026, 3, 3, 14, 30, tzinfo=UTC)
IBM = "US4592001014"


@pytest.fixture(scope="module")
def engine() -> ComplianceEngine:
    return ComplianceEngine.from_plugins(PluginHost(BUILTINS))


def make_order(**overrides) -> OrderRequest:
    fields = dict(client_order_id="o-1", account="ACC-1", symbol="IBM", mic="XNYS",
                  side=Side.BUY, ord_type=OrdType.LIMIT, time_in_force=TimeInForce.DAY,
                  quantity=D(100), limit_price=D("100.00"), stop_price=None, currency="USD",
                  expire_at=None, submitted_at=NOW)
    fields.update(overrides)
    return OrderRequest(**fields)


def make_ctx(engine: ComplianceEngine, *, order: dict | None = None, instrument: dict | None = None,
             client: dict | None = None, account: dict | None = None, market: dict | None = None,
             controls: dict | None = None, fx_rate: D | None = None) -> CheckContext:
    """A passing order by default: IBM at 100 on XNYS for a US individual, no limits set."""
    o = make_order(**(order or {}))
    currency = (instrument or {}).get("currency", o.currency)
    inst = dict(isin=IBM, currency=currency)
    inst.update(instrument or {})
    cli = dict(account="ACC-1", client_type="INDIVIDUAL", domicile="US")
    cli.update(client or {})
    acc = dict(account="ACC-1", currency=currency, credit_limit=D(10_000_000),
               equity=D(10_000_000))
    acc.update(account or {})
    mkt = dict(reference_price=D("100"))
    mkt.update(market or {})
    ctl = dict(tenant_id="tenant-1")
    ctl.update(controls or {})
    return engine.context(o, instrument=InstrumentFacts(**inst), client=ClientProfile(**cli),
                          account=AccountState(**acc), market=MarketState(**mkt),
                          controls=TenantControls(**ctl), now=NOW, fx_rate=fx_rate)


def only(decision: Decision) -> Denial:
    assert len(decision.denials) == 1, decision.denials
    return decision.denials[0]


# -- identifiers ------------------------------------------------------------------------------

REAL_ISINS = ["US0378331005",  # Apple Inc.
              "US4592001014",  # IBM
              "GB0002634946",  # BAE Systems
              "DE0005140008",  # Deutsche Bank
              "JP3633400001",  # Toyota Motor
              "AU0000XVGZA3",  # Treasury Corp. of Victoria (letters in the body)
              "KYG875721634"]  # Tencent Holdings
REAL_LEIS = ["5493001KJTIIGC8Y1R12",  # Bloomberg Finance L.P.
             "HWUPKR0MPOU8FGXBT394",  # Apple Inc.
             "7LTWFZYICNSX8D621K86"]  # Deutsche Bank AG


@pytest.mark.parametrize("isin", REAL_ISINS)
def test_real_isins_are_valid_and_their_check_digit_recomputes(isin):
    assert is_valid_isin(isin)
    assert isin_check_digit(isin[:11]) == int(isin[11])


@pytest.mark.parametrize("isin", [
    "US0378331004",  # wrong check digit
    "US0378331015",  # a body digit changed
    "us0378331005",  # lower case
    "US037833100",  # too short
    "US03783310055",  # too long
    "1S0378331005",  # country code not letters
    "US037833100X",  # check character not a digit
    "",
])
def test_invalid_isins(isin):
    assert not is_valid_isin(isin)


def test_isin_catches_every_single_digit_error():
    isin = "US0378331005"
    for i, ch in enumerate(isin):
        if ch.isdigit():
            for other in "0123456789":
                if other != ch:
                    assert not is_valid_isin(isin[:i] + other + isin[i + 1:]), (i, other)


@pytest.mark.parametrize("lei", REAL_LEIS)
def test_real_leis_are_valid_and_their_check_digits_recompute(lei):
    assert is_valid_lei(lei)
    assert lei_check_digits(lei[:18]) == lei[18:]


@pytest.mark.parametrize("lei", [
    "5493001KJTIIGC8Y1R13",  # wrong check digits
    "5493001KJTIIGC8Y1R21",  # check digits swapped
    "5493001KJTIIGC8Y2R12",  # a body character changed
    "5493001kjtiigc8y1r12",  # lower case
    "5493001KJTIIGC8Y1R1",  # too short
    "5493001KJTIIGC8Y1R1A",  # check digits must be digits
    None,
])
def test_invalid_leis(lei):
    assert not is_valid_lei(lei)


def test_lei_catches_every_substitution_of_a_digit_by_a_digit_or_a_letter_by_a_letter():
    # Either changes the expansion by (a - b) * 10^k with |a - b| < 97, never a multiple of 97.
    # A digit swapped for a letter lengthens the expansion and is not always caught: ISO 7064's
    # guarantee is for the numeric string ("5493001KJ…" with L for the 1 happens to pass).
    for lei in REAL_LEIS:
        for i in range(18):
            same_class = "0123456789" if lei[i].isdigit() else "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
            for other in same_class:
                if other != lei[i]:
                    assert not is_valid_lei(lei[:i] + other + lei[i + 1:]), (lei, i, other)


# -- shared rules, allow and deny -------------------------------------------------------------
# (name, overrides that pass, overrides that deny, code, limit, value); run through the engine,
# so the denial also carries the rule's name and the US jurisdiction.

RULE_CASES = [
    ("kill_switch", {}, dict(controls=dict(kill_switch=True)), codes.KILL_SWITCH, "OFF", "ON"),
    ("isin", {}, dict(instrument=dict(isin="US4592001015")), codes.ISIN_INVALID, "ISO 6166",
     "US4592001015"),
    ("restricted_list", dict(controls=dict(restricted=frozenset({"US0000000002"}))),
     dict(controls=dict(restricted=frozenset({IBM}))), codes.RESTRICTED_INSTRUMENT,
     "not restricted", IBM),
    ("restricted_list", {}, dict(controls=dict(restricted=frozenset({"IBM.XNYS"}))),
     codes.RESTRICTED_INSTRUMENT, "not restricted", "IBM.XNYS"),
    ("trading_halt", dict(market=dict(halted=False)), dict(market=dict(halted=True)),
     codes.TRADING_HALTED, "TRADING", "HALTED"),
    ("reducing_only",
     dict(market=dict(reducing=True), order=dict(side=Side.SELL),
          account=dict(positions={IBM: D(300)})),
     dict(market=dict(reducing=True), account=dict(positions={IBM: D(300)})),  # a BUY
     codes.REDUCING_ONLY, D(0), D(100)),
    ("reducing_only",  # a BUY against a short may cover it, not flip it long
     dict(market=dict(reducing=True), account=dict(positions={IBM: D(-200)})),
     dict(market=dict(reducing=True), order=dict(quantity=D(300)),
          account=dict(positions={IBM: D(-200)})),
     codes.REDUCING_ONLY, D(200), D(300)),
    ("reference_price", {}, dict(market=dict(reference_price=None)),
     codes.REFERENCE_PRICE_MISSING, "a reference price", "none"),
    ("fx_rate", dict(instrument=dict(currency="GBP"), account=dict(currency="USD"),
                     fx_rate=D("1.27")),
     dict(instrument=dict(currency="GBP"), account=dict(currency="USD")),
     codes.FX_RATE_MISSING, "a GBP/USD rate", "none"),
    ("price_collar", dict(order=dict(limit_price=D("105.00")), controls=dict(collar_pct=D(5))),
     dict(order=dict(limit_price=D("105.01")), controls=dict(collar_pct=D(5))),
     codes.PRICE_COLLAR, D(5), D("5.01")),
    ("price_collar", dict(order=dict(limit_price=D("95.00")), controls=dict(collar_pct=D(5))),
     dict(order=dict(limit_price=D("98.50")),
          controls=dict(collar_pct=D(5), collar_pct_by_mic={"XNYS": D(1)})),
     codes.PRICE_COLLAR, D(1), D("1.50")),
    ("max_order_quantity", dict(controls=dict(max_order_quantity=D(100))),
     dict(controls=dict(max_order_quantity=D(99))), codes.MAX_ORDER_QUANTITY, D(99), D(100)),
    ("max_order_value", dict(controls=dict(max_order_value=D(10_000))),
     dict(controls=dict(max_order_value=D(9_999))), codes.MAX_ORDER_VALUE, D(9_999),
     D("10000.00")),
    ("max_order_value",  # valued in the account's currency
     dict(instrument=dict(currency="GBP"), account=dict(currency="USD"), fx_rate=D("1.25"),
          controls=dict(max_order_value=D(12_500))),
     dict(instrument=dict(currency="GBP"), account=dict(currency="USD"), fx_rate=D("1.25"),
          controls=dict(max_order_value=D(12_000))),
     codes.MAX_ORDER_VALUE, D(12_000), D("12500.00")),
    ("credit_limit", dict(account=dict(credit_limit=D(50_000), credit_used=D(40_000))),
     dict(account=dict(credit_limit=D(50_000), credit_used=D(40_001))), codes.CREDIT_LIMIT,
     D(9_999), D("10000.00")),
    ("credit_limit",  # a SELL uses no credit
     dict(order=dict(side=Side.SELL), account=dict(credit_limit=D(0), positions={IBM: D(100)})),
     dict(order=dict(side=Side.SELL_SHORT), account=dict(credit_limit=D(0),
                                                          locates={IBM: D(100)})),
     codes.CREDIT_LIMIT, D(0), D("10000.00")),
    ("position_limit",
     dict(controls=dict(max_position=D(1_000)), account=dict(positions={IBM: D(900)})),
     dict(controls=dict(max_position=D(1_000)), account=dict(positions={IBM: D(901)})),
     codes.POSITION_LIMIT, D(1_000), D(1_001)),
    ("position_limit",  # already over the limit: reducing passes, adding is denied
     dict(controls=dict(max_position=D(1_000)), order=dict(side=Side.SELL),
          account=dict(positions={IBM: D(1_500)})),
     dict(controls=dict(max_position=D(1_000)), order=dict(quantity=D(1)),
          account=dict(positions={IBM: D(1_500)})),
     codes.POSITION_LIMIT, D(1_000), D(1_501)),
    ("concentration_limit",
     dict(controls=dict(max_concentration_pct=D(10)), account=dict(equity=D(100_000))),
     dict(controls=dict(max_concentration_pct=D(10)), account=dict(equity=D(99_999))),
     codes.CONCENTRATION_LIMIT, D("9999.90"), D("10000.00")),
    ("duplicate_order",
     dict(account=dict(recent_fingerprints={
         order_fingerprint(make_order()): NOW - timedelta(seconds=6)})),
     dict(account=dict(recent_fingerprints={
         order_fingerprint(make_order()): NOW - timedelta(seconds=2)})),
     codes.DUPLICATE_ORDER, D(5), D(2)),
    ("throttle",
     dict(controls=dict(throttle_max_orders=3),
          account=dict(recent_orders=[NOW - timedelta(seconds=s) for s in (1.5, 0.5, 0.2)])),
     dict(controls=dict(throttle_max_orders=3),
          account=dict(recent_orders=[NOW - timedelta(seconds=s) for s in (1.5, 0.5, 0.2, 0.1)])),
     codes.THROTTLE, D(3), D(4)),
    ("tick_size", dict(order=dict(limit_price=D("0.5001")),  # sub-dollar: 0.0001
                       market=dict(reference_price=D("0.50"))),
     dict(order=dict(limit_price=D("100.005"))), codes.TICK_SIZE, D("0.01"), D("100.005")),
    ("short_sale_marking",
     dict(order=dict(side=Side.SELL), account=dict(positions={IBM: D(100)})),
     dict(order=dict(side=Side.SELL, quantity=D(150)), account=dict(positions={IBM: D(100)})),
     codes.SHORT_SALE_NOT_FLAGGED, D(100), D(150)),
]


@pytest.mark.parametrize(("rule", "allow", "deny", "code", "limit", "value"), RULE_CASES,
                         ids=[f"{c[0]}-{i}" for i, c in enumerate(RULE_CASES)])
def test_shared_rule_allows_and_denies(engine, rule, allow, deny, code, limit, value):
    passed = engine.check(make_ctx(engine, **allow))
    assert passed.passed, passed.denials
    denial = only(engine.check(make_ctx(engine, **deny)))
    assert (denial.code, denial.rule, denial.jurisdiction) == (code, rule, "US")
    assert denial.limit == limit and type(denial.limit) is type(limit)
    assert denial.value == value and type(denial.value) is type(value)
    assert denial.message


def test_every_shared_rule_has_a_case():
    assert {rule.name for rule in rules.shared_rules()} - {c[0] for c in RULE_CASES} == {"lot_size"}


def test_lot_size_odd_lots_on_us_venues_board_lots_in_tokyo(engine):
    assert engine.check(make_ctx(engine, order=dict(quantity=D(150)))).passed  # XNYS odd lot
    tokyo = dict(mic="XTKS", symbol="7203", currency="JPY", limit_price=D("2805"))
    jp_ctx = dict(instrument=dict(isin="JP3633400001"), client=dict(domicile="JP"),
                  market=dict(reference_price=D("2805")))
    assert engine.check(make_ctx(engine, order=dict(tokyo, quantity=D(200)), **jp_ctx)).passed
    denial = only(engine.check(make_ctx(engine, order=dict(tokyo, quantity=D(150)), **jp_ctx)))
    assert (denial.code, denial.rule, denial.jurisdiction) == (codes.LOT_SIZE, "lot_size", "JP")
    assert (denial.limit, denial.value) == (D(100), D(150))


def test_tick_follows_the_venue_table_at_the_order_price(engine):
    # Tokyo: 3,000 yen falls in the 1-yen band ("3,000 or less"), 3,001 in the 5-yen band.
    base = dict(mic="XTKS", symbol="7203", currency="JPY")
    jp_ctx = dict(instrument=dict(isin="JP3633400001"), client=dict(domicile="JP"),
                  market=dict(reference_price=D("3000"), previous_close=D("3000")))
    assert engine.check(make_ctx(engine, order=dict(base, limit_price=D(2999)), **jp_ctx)).passed
    denial = only(engine.check(make_ctx(engine, order=dict(base, limit_price=D(3001)), **jp_ctx)))
    assert (denial.code, denial.limit, denial.value) == (codes.TICK_SIZE, D(5), D(3001))
    for venue in VENUES:
        for price in (D("0.5"), D("1"), D("3000"), D("3000.5"), D("123.45")):
            assert engine.venue_facts(venue.mic, price).tick_size == venue.tick_size.at(price)


def test_a_market_order_is_valued_at_the_reference_price(engine):
    ctx = make_ctx(engine, order=dict(ord_type=OrdType.MARKET, limit_price=None),
                   controls=dict(max_order_value=D(9_000)))
    assert ctx.price == D(100) and ctx.value == D(10_000)
    denial = only(engine.check(ctx))
    assert (denial.code, denial.value) == (codes.MAX_ORDER_VALUE, D("10000.00"))


def test_one_cause_one_denial_without_a_reference_price(engine):
    ctx = make_ctx(engine, order=dict(ord_type=OrdType.MARKET, limit_price=None),
                   market=dict(reference_price=None),
                   controls=dict(max_order_value=D(1), max_concentration_pct=D(1)),
                   account=dict(credit_limit=D(0)))
    assert engine.check(ctx).codes == (codes.REFERENCE_PRICE_MISSING,)


# -- jurisdiction rules -----------------------------------------------------------------------

def test_us_reg_sho_locate_for_short_sales(engine):
    short = dict(side=Side.SELL_SHORT)
    assert engine.check(make_ctx(engine, order=short, account=dict(locates={IBM: D(100)}))).passed
    denial = only(engine.check(make_ctx(engine, order=short, account=dict(locates={IBM: D(50)}))))
    assert (denial.code, denial.rule, denial.jurisdiction) == (
        codes.SHORT_LOCATE_REQUIRED, "short_sale_locate", "US")
    assert (denial.limit, denial.value) == (D(50), D(100))
    assert "Reg SHO" in denial.message


def test_us_rule_201_price_test_only_while_restricted_and_only_at_us_venues(engine):
    state = dict(account=dict(locates={IBM: D(100)}),
                 market=dict(short_sale_restricted=True, best_bid=D("100.00")))
    at_bid = make_ctx(engine, order=dict(side=Side.SELL_SHORT, limit_price=D("100.00")), **state)
    denial = only(engine.check(at_bid))
    assert (denial.code, denial.limit, denial.value) == (
        codes.SHORT_SALE_PRICE_TEST, D("100.00"), D("100.00"))
    above = make_ctx(engine, order=dict(side=Side.SELL_SHORT, limit_price=D("100.01")), **state)
    assert engine.check(above).passed
    unrestricted = dict(state, market=dict(best_bid=D("100.00")))
    assert engine.check(make_ctx(engine, order=dict(side=Side.SELL_SHORT),
                                 **unrestricted)).passed
    market_short = make_ctx(engine, order=dict(side=Side.SELL_SHORT, ord_type=OrdType.MARKET,
                                               limit_price=None), **state)
    assert only(engine.check(market_short)).value == "MARKET"


def _xlon(**order) -> dict:
    return {**dict(mic="XLON", symbol="VOD", currency="GBP", limit_price=D("72.50")), **order}


def _xpar(**order) -> dict:
    return {**dict(mic="XPAR", symbol="TTE", currency="EUR", limit_price=D("58.40")), **order}


@pytest.mark.parametrize(("venue", "domicile", "jurisdiction", "isin", "reference"), [
    (_xpar, "FR", "EU", "FR0000120271", D("58.40")),
    (_xlon, "GB", "UK", "GB00BH4HKS39", D("72.55")),
])
def test_mifid_family(engine, venue, domicile, jurisdiction, isin, reference):
    base = dict(instrument=dict(isin=isin), market=dict(reference_price=reference))

    def check(order=None, client=None, **kw):
        merged = dict(base)
        for key, extra in kw.items():
            merged[key] = {**merged.get(key, {}), **extra}
        return engine.check(make_ctx(engine, order=venue(**{"limit_price": reference,
                                                            **(order or {})}),
                                     client=dict(domicile=domicile, **(client or {})), **merged))

    assert check().passed
    # LEI: required for a legal entity, checked whenever given
    denial = only(check(client=dict(client_type="LEGAL_ENTITY")))
    assert (denial.code, denial.jurisdiction) == (codes.LEI_MISSING, jurisdiction)
    denial = only(check(client=dict(client_type="LEGAL_ENTITY", lei="5493001KJTIIGC8Y1R13")))
    assert (denial.code, denial.value) == (codes.LEI_INVALID, "5493001KJTIIGC8Y1R13")
    assert check(client=dict(client_type="LEGAL_ENTITY", lei=REAL_LEIS[0])).passed
    # ISIN: transaction reports need one
    denial = only(check(instrument=dict(isin=None)))
    assert (denial.code, denial.rule) == (codes.ISIN_MISSING, "isin_required")
    # Short selling: flagged (the shared marking rule) and covered (SSR Art. 12)
    denial = only(check(order=dict(side=Side.SELL)))
    assert denial.code == codes.SHORT_SALE_NOT_FLAGGED
    denial = only(check(order=dict(side=Side.SELL_SHORT)))
    assert (denial.code, denial.jurisdiction, denial.limit, denial.value) == (
        codes.SHORT_LOCATE_REQUIRED, jurisdiction, D(0), D(100))
    assert "SSR Art. 12" in denial.message
    assert check(order=dict(side=Side.SELL_SHORT), account=dict(locates={isin: D(100)})).passed
    # Tick regime: a less liquid share ticks coarser than the venue's (most liquid) table
    tick = mifid_tick(reference, 1)
    denial = only(check(instrument=dict(liquidity_band=1)))
    assert (denial.code, denial.limit, denial.value) == (codes.MIFID_TICK_SIZE, tick, reference)
    on_band_tick = (reference / tick).to_integral_value() * tick
    assert check(order=dict(limit_price=on_band_tick), instrument=dict(liquidity_band=1)).passed
    assert check(instrument=dict(liquidity_band=6)).passed
    # Appropriateness for complex products
    denial = only(check(instrument=dict(complex_product=True)))
    assert (denial.code, denial.limit) == (codes.APPROPRIATENESS, "APPROPRIATENESS")
    assert check(instrument=dict(complex_product=True),
                 client=dict(assessments=frozenset({"APPROPRIATENESS"}))).passed


def test_mifid_tick_table_band_6_is_the_venue_registrys_table():
    prices = [D(p) for p in ("0.05", "0.1", "0.15", "0.2", "0.7", "1", "1.5", "2", "3", "5", "7",
                             "10", "15", "20", "30", "50", "75", "100", "150", "200", "300",
                             "500", "700", "1000", "1500", "2000", "3000", "5000", "7000",
                             "10000", "15000", "20000", "30000", "50000", "70000")]
    for price in prices:
        assert mifid_tick(price, 6) == MIFID_LIQUID.at(price), price
    # RTS 11's corners: the least liquid band at the lowest and highest prices
    assert (mifid_tick(D("0.05"), 1), mifid_tick(D("60000"), 1)) == (D("0.0005"), D(500))
    assert mifid_tick(D("1.5"), 3) == D("0.002")


def _tokyo(**order) -> dict:
    return {**dict(mic="XTKS", symbol="7203", currency="JPY", limit_price=D("2805")), **order}


def test_jp_daily_price_limit_short_sale_rules(engine):
    base = dict(instrument=dict(isin="JP3633400001"), client=dict(domicile="JP"),
                market=dict(reference_price=D("2805"), previous_close=D("2805")),
                controls=dict(collar_pct=D(25)))  # the exchange's limit is wider than ours
    # base 2,805 is below 3,000: limit +/- 500, both ends allowed
    assert engine.check(make_ctx(engine, order=_tokyo(limit_price=D(3305)), **base)).passed
    denial = only(engine.check(make_ctx(engine, order=_tokyo(limit_price=D(3310)), **base)))
    assert (denial.code, denial.rule, denial.jurisdiction) == (
        codes.DAILY_PRICE_LIMIT, "daily_price_limit", "JP")
    assert (denial.limit, denial.value) == ("2305..3305", D(3310))
    assert jp.daily_price_limit(D(99)) == D(30) and jp.daily_price_limit(D(100)) == D(50)
    assert jp.daily_price_limit(D(2_000_000)) is None
    # naked short selling, and the price restriction once triggered
    short = _tokyo(side=Side.SELL_SHORT)
    assert only(engine.check(make_ctx(engine, order=short, **base))).code == \
        codes.SHORT_LOCATE_REQUIRED
    located = dict(base, account=dict(locates={"JP3633400001": D(100)}),
                   market=dict(base["market"], short_sale_restricted=True, last_price=D(2805)))
    denial = only(engine.check(make_ctx(engine, order=short, **located)))
    assert (denial.code, denial.limit, denial.value) == (
        codes.SHORT_SALE_PRICE_TEST, D(2805), D(2805))
    assert engine.check(make_ctx(engine, order=_tokyo(side=Side.SELL_SHORT, limit_price=D(2806)),
                                 **located)).passed


def _hongkong(**order) -> dict:
    return {**dict(mic="XHKG", symbol="700", currency="HKD", limit_price=D("382.40")), **order}


def test_hk_covered_designated_and_tick_rule(engine):
    state = dict(instrument=dict(isin="KYG875721634"), client=dict(domicile="HK"),
                 account=dict(locates={"KYG875721634": D(100)}),
                 market=dict(reference_price=D("382.40"), best_ask=D("382.40")))
    assert engine.check(make_ctx(engine, order=_hongkong(side=Side.SELL_SHORT), **state)).passed
    below = _hongkong(side=Side.SELL_SHORT, limit_price=D("382.20"))
    denial = only(engine.check(make_ctx(engine, order=below, **state)))
    assert (denial.code, denial.jurisdiction, denial.limit, denial.value) == (
        codes.SHORT_SALE_PRICE_TEST, "HK", D("382.40"), D("382.20"))
    not_designated = dict(state, market=dict(state["market"], shortable=False))
    denial = only(engine.check(make_ctx(engine, order=_hongkong(side=Side.SELL_SHORT),
                                        **not_designated)))
    assert denial.code == codes.SHORT_SALE_NOT_ELIGIBLE
    naked = dict(state, account={})
    assert only(engine.check(make_ctx(engine, order=_hongkong(side=Side.SELL_SHORT),
                                      **naked))).code == codes.SHORT_LOCATE_REQUIRED


def test_sg_specified_investment_products_need_a_cka(engine):
    # A Singapore client on XHKG is under HK (venue) and SG (client); only SG asks for the CKA.
    state = dict(instrument=dict(isin="KYG875721634", complex_product=True),
                 client=dict(domicile="SG"), market=dict(reference_price=D("382.40")))
    decision = engine.check(make_ctx(engine, order=_hongkong(), **state))
    assert decision.jurisdictions == ("HK", "SG")
    denial = only(decision)
    assert (denial.code, denial.jurisdiction, denial.limit) == (codes.APPROPRIATENESS, "SG",
                                                                "SG_CKA")
    assessed = dict(state, client=dict(domicile="SG", assessments=frozenset({"SG_CKA"})))
    assert engine.check(make_ctx(engine, order=_hongkong(), **assessed)).passed


def test_au_marketable_parcel_and_covered_short_sales(engine):
    state = dict(instrument=dict(isin="AU000000BHP4"), client=dict(domicile="AU"),
                 market=dict(reference_price=D("45.10")))
    sydney = dict(mic="XASX", symbol="BHP", currency="AUD", limit_price=D("45.10"))
    denial = only(engine.check(make_ctx(engine, order=dict(sydney, quantity=D(10)), **state)))
    assert (denial.code, denial.jurisdiction, denial.limit, denial.value) == (
        codes.MARKETABLE_PARCEL, "AU", D(500), D("451.00"))
    assert engine.check(make_ctx(engine, order=dict(sydney, quantity=D(12)), **state)).passed
    holding = dict(state, account=dict(positions={"AU000000BHP4": D(5)}))
    assert engine.check(make_ctx(engine, order=dict(sydney, quantity=D(1)), **holding)).passed
    denial = only(engine.check(make_ctx(engine, order=dict(sydney, side=Side.SELL_SHORT,
                                                           quantity=D(20)), **state)))
    assert (denial.code, denial.jurisdiction) == (codes.SHORT_LOCATE_REQUIRED, "AU")


def test_each_pack_is_the_shared_rules_then_its_own():
    shared = [r.name for r in rules.shared_rules()]
    own = {
        us: ["short_sale_locate", "short_sale_price_test"],
        eu: ["lei", "isin_required", "short_sale_locate", "mifid_tick_size", "appropriateness"],
        uk: ["lei", "isin_required", "short_sale_locate", "mifid_tick_size", "appropriateness"],
        jp: ["short_sale_locate", "short_sale_price_test", "daily_price_limit"],
        hk: ["short_sale_locate", "short_sale_eligible", "short_sale_price_test"],
        sg: ["appropriateness"],
        au: ["short_sale_locate", "marketable_parcel"],
    }
    for module, names in own.items():
        pack = module.pack()
        assert isinstance(pack, RulePack)
        assert [r.name for r in pack.rules] == shared + names, module.__name__
        assert pack.regulators == module.REGULATORS
    assert us.REGULATORS == ("SEC", "FINRA", "CFTC")


# -- which packs apply ------------------------------------------------------------------------

SELECTION = [
    # venue, domicile, jurisdictions, uncovered (denied NO_RULE_PACK)
    ("XNYS", "US", ("US",), ()),
    ("XNAS", "CA", ("US",), ()),  # a client outside the perimeter: the venue's rules
    ("XLON", "US", ("UK", "US"), ()),
    ("XLON", "GB", ("UK",), ()),
    ("XLON", "DE", ("EU", "UK"), ()),
    ("XPAR", "FR", ("EU",), ()),
    ("XETR", "US", ("EU", "US"), ()),
    ("XAMS", "NO", ("EU",), ()),  # EEA
    ("XMIL", "IT", ("EU",), ()),
    ("XTKS", "JP", ("JP",), ()),
    ("XNYS", "JP", ("JP", "US"), ()),
    ("XHKG", "HK", ("HK",), ()),
    ("XHKG", "SG", ("HK", "SG"), ()),
    ("XASX", "AU", ("AU",), ()),
    ("XASX", "GB", ("AU", "UK"), ()),
    ("ALPX", "US", ("US",), ()),  # the platform's 24/7 venue adds no jurisdiction
    ("ALPX", "SG", ("SG",), ()),
    ("ALPX", "CH", (), ("",)),  # nothing applies at all
    # Markets outside the client perimeter: their packs judge orders at their own venues.
    ("XTSE", "CA", ("CA",), ()),
    ("XTSE", "US", ("CA", "US"), ()),
    ("XNSE", "IN", ("IN",), ()),
    ("XSHG", "HK", ("CN", "HK"), ()),
    ("XMEX", "MX", ("MX",), ()),
    ("XNYS", "MX", ("US",), ()),  # a Mexican client elsewhere: not under the MX pack
]
VENUE_MARKETS = {"CA", "MX", "CN", "IN"}  # one plugin, compliance-venue-markets


def _plugin(jurisdiction: str) -> str:
    if jurisdiction in VENUE_MARKETS:
        return "compliance-venue-markets"
    return f"compliance-{jurisdiction.lower()}"


@pytest.mark.parametrize(("mic", "domicile", "jurisdictions", "uncovered"), SELECTION,
                         ids=[f"{s[0]}-{s[1]}" for s in SELECTION])
def test_jurisdiction_selection(engine, mic, domicile, jurisdictions, uncovered):
    venue = next(v for v in VENUES if v.mic == mic)
    price = D("100")
    facts = engine.venue_facts(mic, price)
    ctx = make_ctx(engine, order=dict(mic=mic, currency=venue.currency, limit_price=price,
                                      quantity=facts.lot_size * 100),
                   client=dict(domicile=domicile), market=dict(reference_price=price))
    decision = engine.check(ctx)
    assert decision.jurisdictions == jurisdictions
    covered = tuple(j for j in jurisdictions if j not in uncovered)
    assert decision.plugins == tuple(_plugin(j) for j in covered)
    assert [d.jurisdiction for d in decision.denials] == list(uncovered)
    assert all(d.code == NO_RULE_PACK for d in decision.denials)
    assert decision.passed is (not uncovered)
    assert {j for j, _, _ in decision.timings} <= set(covered)


def test_required_jurisdictions_follow_regulators_too():
    # a venue in one country supervised from another brings both
    assert required_jurisdictions("CH", "emea", ("FCA",), "CH") == {"CH", "UK"}
    assert required_jurisdictions("XX", "global", (), "FR") == {"EU"}


# -- the engine ---------------------------------------------------------------------------------

def test_every_applicable_pack_must_pass(engine):
    entity = dict(client_type="LEGAL_ENTITY")  # no LEI: fine in the US, not under UK MiFIR
    assert engine.check(make_ctx(engine, client=entity)).passed
    decision = engine.check(make_ctx(engine, order=_xlon(), client=entity,
                                     instrument=dict(isin="GB00BH4HKS39"),
                                     market=dict(reference_price=D("72.50"))))
    assert decision.jurisdictions == ("UK", "US")
    assert decision.plugins == ("compliance-uk", "compliance-us")
    assert not decision.passed
    assert [(d.code, d.jurisdiction) for d in decision.denials] == [(codes.LEI_MISSING, "UK")]


def test_all_denials_are_collected_with_their_jurisdictions(engine):
    ctx = make_ctx(engine, order=_xlon(side=Side.SELL_SHORT, limit_price=D("90.005")),
                   client=dict(client_type="LEGAL_ENTITY"), instrument=dict(isin="GB00BH4HKS39"),
                   market=dict(reference_price=D("72.50")), controls=dict(kill_switch=True))
    decision = engine.check(ctx)
    found = {(d.code, d.jurisdiction) for d in decision.denials}
    for jurisdiction in ("UK", "US"):
        for code in (codes.KILL_SWITCH, codes.PRICE_COLLAR, codes.TICK_SIZE,
                     codes.SHORT_LOCATE_REQUIRED):
            assert (code, jurisdiction) in found
    assert (codes.LEI_MISSING, "UK") in found
    assert decision.codes[0] == codes.KILL_SWITCH
    error = decision.error()
    assert isinstance(error, ComplianceDenied) and error.code == codes.KILL_SWITCH
    assert len(error.details["denials"]) == len(decision.denials)


def test_decision_carries_what_the_audit_trail_records(engine):
    decision = engine.check(make_ctx(engine))
    assert decision.passed and decision.denials == () and decision.decided_at == NOW
    assert [rule for _, rule, _ in decision.timings] == [r.name for r in us.pack().rules]
    assert all(ns >= 0 for _, _, ns in decision.timings) and decision.elapsed_ns > 0
    record = decision.record()
    assert json.loads(json.dumps(record)) == record
    assert record["jurisdictions"] == ["US"] and record["plugins"] == ["compliance-us"]
    assert record["client_order_id"] == "o-1" and record["tenant_id"] == "tenant-1"
    denied = engine.check(make_ctx(engine, controls=dict(max_order_value=D(10)))).record()
    assert denied["denials"][0] | {"message": ""} == {
        "code": codes.MAX_ORDER_VALUE, "rule": "max_order_value", "jurisdiction": "US",
        "message": "", "limit": "10", "value": "10000.00"}
    with pytest.raises(ValueError):
        decision.error()
    untimed = ComplianceEngine(engine.packs, rule_timings=False).check(make_ctx(engine))
    assert [(j, r) for j, r, _ in untimed.timings] == [("US", "*")]


@pytest.mark.parametrize(("order", "market", "what"), [
    (dict(quantity=D(0)), {}, "quantity"),
    (dict(quantity=D(-5)), {}, "quantity"),
    (dict(quantity=D("NaN")), {}, "quantity"),
    (dict(quantity=100.0), {}, "quantity"),  # a float is not money
    (dict(limit_price=D("Infinity")), {}, "limit_price"),
    (dict(limit_price=None), {}, "limit_price"),  # a LIMIT without its price
    (dict(ord_type=OrdType.STOP_LIMIT), {}, "stop_price"),
    (dict(side="SELL_LONG"), {}, "side"),
    ({}, dict(reference_price=D("-1")), "reference price"),
])
def test_malformed_orders_are_denied_before_any_pack(engine, order, market, what):
    decision = engine.check(make_ctx(engine, order=order, market=market))
    denial = only(decision)
    assert (denial.code, denial.rule) == (ORDER_INVALID, "order")
    assert what in denial.message
    assert decision.plugins == () and decision.timings == ()


def test_an_order_must_be_routed_first(engine):
    with pytest.raises(VenueUnknown):
        make_ctx(engine, order=dict(mic="SMART"))
    with pytest.raises(VenueUnknown):
        make_ctx(engine, order=dict(mic="XXXX"))
    ctx = make_ctx(engine)
    decision = engine.check(replace(ctx, order=replace(ctx.order, mic="SMART")))
    assert only(decision).code == ORDER_INVALID


class _RaisingPack:
    jurisdiction = "US"
    regulators = ("SEC",)

    def applies(self, venue_country: str, client_domicile: str) -> bool:
        return venue_country == "US"

    def check(self, ctx: CheckContext) -> list[Denial]:
        raise RuntimeError("secret connection string in the message")


class _WrongShapePack(_RaisingPack):
    jurisdiction = "HOUSE"

    def applies(self, venue_country: str, client_domicile: str) -> bool:
        return True

    def check(self, ctx: CheckContext) -> list[Denial]:
        return "nothing to see"  # type: ignore[return-value]


class _DenyingPack(_RaisingPack):
    jurisdiction = "HOUSE"

    def applies(self, venue_country: str, client_domicile: str) -> bool:
        return True

    def check(self, ctx: CheckContext) -> list[Denial]:
        return [Denial("HOUSE_NO_IBM", "no_ibm", "HOUSE", "house rule", "no IBM", ctx.order.symbol)]


class _Offers:
    def __init__(self, *packs: object) -> None:
        self.packs = list(packs)

    @hookimpl
    def alphintra_compliance_rule_packs(self, context):
        return self.packs


class _BrokenHook:
    @hookimpl
    def alphintra_compliance_rule_packs(self, context):
        raise RuntimeError("cannot load")


def test_a_broken_pack_fails_alone_and_the_order_is_denied(caplog):
    host = PluginHost([*BUILTINS, ("broken-pack", _Offers(_RaisingPack())),
                       ("house-rules", _Offers(_DenyingPack()))])
    engine = ComplianceEngine.from_plugins(host)
    assert engine.load_failures == ()
    decision = engine.check(make_ctx(engine))
    assert decision.plugins == ("house-rules", "broken-pack", "compliance-us")
    assert not decision.passed
    by_code = {d.code: d for d in decision.denials}
    assert set(by_code) == {PACK_FAILED, "HOUSE_NO_IBM"}
    failed = by_code[PACK_FAILED]
    assert failed.jurisdiction == "US" and failed.value == "broken-pack: RuntimeError"
    assert "broken-pack" in failed.message and "secret" not in failed.message
    assert "secret connection string" in caplog.text  # the detail stays in the log
    # the built-in US pack still ran and still judges: its denials are kept beside the failure
    denied = engine.check(make_ctx(engine, controls=dict(kill_switch=True)))
    assert (codes.KILL_SWITCH, "US") in {(d.code, d.jurisdiction) for d in denied.denials}
    # where the broken pack does not apply, nothing changes but the house rule
    tokyo = make_ctx(engine, order=_tokyo(), instrument=dict(isin="JP3633400001"),
                     client=dict(domicile="JP"), market=dict(reference_price=D("2805")))
    assert engine.check(tokyo).codes == ("HOUSE_NO_IBM",)


def test_a_pack_answering_the_wrong_shape_fails_closed():
    host = PluginHost([*BUILTINS, ("sloppy", _Offers(_WrongShapePack()))])
    engine = ComplianceEngine.from_plugins(host)
    denial = only(engine.check(make_ctx(engine)))
    assert (denial.code, denial.value) == (PACK_FAILED, "sloppy: TypeError")


def test_a_plugin_that_fails_to_load_denies_every_order():
    host = PluginHost([*BUILTINS, ("broken-hook", _BrokenHook()),
                       ("not-a-pack", _Offers(object()))])
    engine = ComplianceEngine.from_plugins(host)
    assert {f.plugin for f in engine.load_failures} == {"broken-hook", "not-a-pack"}
    assert len(engine.packs) == 11  # the built-ins loaded: 7 perimeter packs, 4 venue markets
    decision = engine.check(make_ctx(engine))
    assert decision.plugins == ("compliance-us",)
    assert {(d.code, d.value) for d in decision.denials} == {
        (PACK_FAILED, "broken-hook"), (PACK_FAILED, "not-a-pack")}


@pytest.mark.parametrize(("mic", "domicile", "jurisdiction"), [
    ("XMEX", "MX", "MX"), ("XSHG", "CN", "CN"), ("XNSE", "IN", "IN")])
def test_venue_markets_require_a_locate_for_short_sales(engine, mic, domicile, jurisdiction):
    venue = next(v for v in VENUES if v.mic == mic)
    price = D("100")
    lot = engine.venue_facts(mic, price).lot_size
    base = dict(mic=mic, currency=venue.currency, limit_price=price, quantity=lot * 10)

    def decide(side: Side, locates: dict[str, D]) -> Decision:
        return engine.check(make_ctx(engine, order={**base, "side": side},
                                     client=dict(domicile=domicile),
                                     account=dict(locates=locates),
                                     market=dict(reference_price=price)))

    denied = decide(Side.SELL_SHORT, {})
    assert denied.jurisdictions == (jurisdiction,)
    assert [(d.code, d.jurisdiction) for d in denied.denials] == [
        ("COMPLIANCE_SHORT_LOCATE_REQUIRED", jurisdiction)]
    assert decide(Side.SELL_SHORT, {IBM: lot * 10}).passed
    assert decide(Side.BUY, {}).passed


def test_a_missing_pack_never_narrows_the_check():
    # Without the UK plugin a US client on XLON would otherwise be judged by the US pack alone.
    without_uk = [(name, module) for name, module in BUILTINS if name != "compliance-uk"]
    engine = ComplianceEngine.from_plugins(PluginHost(without_uk))
    decision = engine.check(make_ctx(engine, order=_xlon(), instrument=dict(isin="GB00BH4HKS39"),
                                     market=dict(reference_price=D("72.50"))))
    assert decision.plugins == ("compliance-us",)
    denial = only(decision)
    assert (denial.code, denial.jurisdiction) == (NO_RULE_PACK, "UK")


def test_applies_is_asked_once_per_venue_and_domicile():
    class Counting(RuleSetPack):
        calls = 0

        def applies(self, venue_country: str, client_domicile: str) -> bool:
            type(self).calls += 1
            return super().applies(venue_country, client_domicile)

    pack = Counting("US", ("SEC",), {"US"}, rules.shared_rules())
    engine = ComplianceEngine.from_plugins(PluginHost([("counting", _Offers(pack))]))
    for _ in range(5):
        assert engine.check(make_ctx(engine)).passed
    assert Counting.calls == 1


def test_a_pack_raising_in_applies_denies_where_it_would_judge():
    class Raising(_RaisingPack):
        def applies(self, venue_country: str, client_domicile: str) -> bool:
            raise RuntimeError("boom")

    engine = ComplianceEngine.from_plugins(PluginHost([*BUILTINS, ("flaky", _Offers(Raising()))]))
    decision = engine.check(make_ctx(engine))
    assert {(d.code, d.value) for d in decision.denials} == {(PACK_FAILED, "flaky: RuntimeError")}


def test_the_hook_is_documented_and_the_sdk_exports_the_types():
    import plugins

    doc = hookspecs.alphintra_compliance_rule_packs.__doc__
    assert "COMPLIANCE_PACK_FAILED" in doc and "applies" in doc
    for name in ("ClientProfile", "AccountState", "MarketState", "TenantControls",
                 "CheckContext", "Denial", "RulePack", "RuleSetPack", "ComplianceRule",
                 "Violation", "InstrumentFacts", "VenueFacts", "order_fingerprint"):
        assert name in plugins.__all__
