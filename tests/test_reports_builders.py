"""The report builders, pure, against rows computed by hand."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

from gateway.reports import best_execution, cftc, mifid

FIRM = "529900T8BM49AURSDO55"
CLIENT = "5493001KJTIIGC8Y1R12"
DEALER = "213800D1EI4B9WTWWD28"
APPLE = "US0378331005"
T0 = datetime(2026, 11, 23, 14, 30, tzinfo=UTC)


JEAN = mifid.Person("FR19800101JEAN#DUPON", "CONCAT", "FR")
MARIA = mifid.Person("ITRSSMRA80A01H501U", "NIDN", "IT")


def trade(**changes):
    base = dict(execution_id="0b9f2c1e-aaaa-4bbb-8ccc-000000000001", order_id="o-1", account="ACME",
                client_type="LEGAL_ENTITY", client_lei=CLIENT, side="BUY", quantity=Decimal("100"),
                price=Decimal("187.2500"), currency="USD", mic="XNAS", isin=APPLE, symbol="AAPL",
                executed_at=T0, decided_by="user-7", routed_by_router=True,
                instrument_class="EQUITY", decider=JEAN, decider_name="jean@firm.test")
    base.update(changes)
    return mifid.ExecutedTrade(**base)


def test_mifid_rows_by_hand():
    buy = trade()
    short = trade(execution_id="0b9f2c1e-aaaa-4bbb-8ccc-000000000002", side="SELL_SHORT",
                  quantity=Decimal("5"), price=Decimal("10.5"), currency="EUR", mic="XPAR",
                  isin="FR0000120271", symbol="TTE", executed_at=T0 - timedelta(minutes=1),
                  routed_by_router=False, decider=MARIA)
    rows = mifid.build_transactions([buy, short], FIRM)
    assert [r.transaction_id for r in rows] == ["0B9F2C1EAAAA4BBB8CCC000000000002",
                                                "0B9F2C1EAAAA4BBB8CCC000000000001"]
    first, second = rows  # earlier first
    assert (first.buyer, first.seller) == (mifid.Party("MIC", "XPAR"), mifid.Party("LEI", CLIENT))
    maria = mifid.Actor("PRSN", "ITRSSMRA80A01H501U", "NIDN", "IT")
    assert first.short_selling == "SESH"
    assert first.investment_decision == first.execution_within_firm == maria
    assert (second.buyer, second.seller) == (mifid.Party("LEI", CLIENT), mifid.Party("MIC", "XNAS"))
    assert second.short_selling is None
    assert second.execution_within_firm == mifid.Actor("ALGO", "ALPHINTRA-SOR")
    assert second.investment_decision == mifid.Actor("PRSN", "FR19800101JEAN#DUPON", "CONCAT", "FR")
    assert second.trading_capacity == "AOTC" and second.investment_firm
    assert second.submitting_entity == second.executing_entity == FIRM
    assert not second.transmission and not second.securities_financing
    assert mifid.problems(rows) == []
    lines = mifid.to_csv(rows).decode().split("\r\n")
    assert lines[0].startswith("TxId,ExctgPty,InvstmtPtyInd,SubmitgPty,")
    assert lines[2] == (f"0B9F2C1EAAAA4BBB8CCC000000000001,{FIRM},true,{FIRM},LEI,{CLIENT},MIC,XNAS,"
                        "false,2026-11-23T14:30:00.000000Z,AOTC,100,187.25,USD,XNAS,"
                        f"{APPLE},PRSN,FR19800101JEAN#DUPON,CONCAT,FR,ALGO,ALPHINTRA-SOR,,,,false")
    assert lines[1].endswith(",10.5,EUR,XPAR,FR0000120271,PRSN,ITRSSMRA80A01H501U,NIDN,IT,"
                             "PRSN,ITRSSMRA80A01H501U,NIDN,IT,SESH,false")
    document = mifid.to_xml(rows)
    assert mifid.xml_problems(document) == []
    assert b'<Amt Ccy="USD">187.25</Amt>' in document
    assert b"<Prtry>CONCAT</Prtry>" in document and b"<Cd>NIDN</Cd>" in document
    assert b"user-7" not in document


def test_what_is_left_out_and_who_is_missing():
    trades = [trade(), trade(execution_id="e-2", symbol="BTC-USD", mic="ALPX", isin=None,
                             instrument_class="CRYPTO"),
              trade(execution_id="e-3", symbol="BTC-USD", mic="ALPX", isin=None,
                    instrument_class="CRYPTO"),
              trade(execution_id="e-4", symbol="EURUSD", mic="XOFF", isin=None, instrument_class="FX"),
              trade(execution_id="e-5", symbol="PRIV", isin=None, instrument_class="UNKNOWN")]
    kept, excluded = mifid.split_reportable(trades)
    assert [t.execution_id for t in kept] == [trades[0].execution_id]
    assert [(e.instrument, e.reason, e.transactions) for e in excluded] == [
        ("BTC-USD.ALPX", "CRYPTO_ASSET", 2), ("EURUSD.XOFF", "FX_SPOT", 1),
        ("PRIV.XNAS", "NO_ISIN", 1)]
    assert mifid.missing_identifiers(kept) == []
    missing = mifid.missing_identifiers([
        trade(client_type="INDIVIDUAL", client_lei=None, account="JDOE-1"),
        trade(execution_id="e-2", decider=None), trade(execution_id="e-3", decider=None),
        trade(execution_id="e-4", decider=None, decided_by=None, decider_name="")])
    assert [(m.role, m.who, m.transactions) for m in missing] == [
        ("CLIENT", "JDOE-1", 1), ("DECISION_MAKER", "jean@firm.test (user-7)", 2),
        ("DECISION_MAKER", "unknown (order o-1)", 1)]
    assert "no national identifier recorded" in missing[1].text()


def test_mifid_problems_name_row_and_field():
    rows = mifid.build_transactions([
        trade(client_lei="5493001KJTIIGC8Y1R13"),  # check digits off by one
        trade(execution_id="e-2", isin="US0378331006", currency="XXQ", quantity=Decimal(0)),
        trade(execution_id="e-3", isin=None, mic="xn"),
        trade(execution_id="e-4", client_lei=None, decider=None, routed_by_router=False),
        trade(execution_id="e-5", decider=mifid.Person("FR19801301JEAN#DUPON", "CONCAT", "FR")),
    ], "529900T8BM49AURSDO56")
    found = mifid.problems(rows)
    assert sum("executing entity LEI" in p for p in found) == 5
    assert any(p.startswith("row 1 (AAPL") and "buyer LEI '5493001KJTIIGC8Y1R13' fails" in p
               for p in found)
    assert any("ISIN 'US0378331006' fails its check digit" in p for p in found)
    assert any("currency 'XXQ' is not ISO 4217" in p for p in found)
    assert any("quantity 0 must be above zero" in p for p in found)
    assert any(p.startswith("row 3") and "instrument has no ISIN" in p for p in found)
    assert any(p.startswith("row 3") and "venue 'xn' is not an ISO 10383 MIC" in p for p in found)
    assert any(p.startswith("row 4") and "buyer is a legal entity without an LEI" in p for p in found)
    assert any(p.startswith("row 4") and "no investment decision maker" in p for p in found)
    assert any(p.startswith("row 4") and "execution within the firm: no national identifier" in p
               for p in found)
    assert any(p.startswith("row 5") and "birth date 19801301 is not a date" in p for p in found)


def test_xml_schema_refuses_a_bad_document():
    document = mifid.to_xml(mifid.build_transactions([trade()], FIRM))
    broken = document.replace(b"<TradVn>XNAS</TradVn>", b"<TradVn>XNAS!</TradVn>")
    broken = broken.replace(b"<TradgCpcty>AOTC", b"<TradgCpcty>OWN")
    problems = mifid.xml_problems(broken)
    assert len(problems) == 2 and any("TradVn" in p for p in problems)
    assert any("TradgCpcty" in p for p in problems)
    assert mifid.xml_problems(b"<Document") != []
    twice = mifid.build_transactions([trade(), trade()], FIRM)  # one reference twice
    assert any("not unique" in p for p in mifid.problems(twice))


def outcome(order_id, side, qty, filled, avg, arrival, delay_ms, mic="XNAS", klass="EQUITY"):
    return best_execution.OrderOutcome(
        order_id=order_id, mic=mic, instrument_class=klass, side=side, quantity=Decimal(qty),
        filled_quantity=Decimal(filled), average_price=Decimal(avg) if avg else None,
        arrival_price=Decimal(arrival) if arrival else None, submitted_at=T0,
        first_fill_at=T0 + timedelta(milliseconds=delay_ms) if delay_ms is not None else None)


def test_best_execution_by_hand():
    rows = best_execution.build_quality([
        outcome("a", "BUY", "100", "100", "99.9", "100", 120),     # +10 bps on 100
        outcome("b", "SELL", "400", "300", "49.95", "50", 60),     # -10 bps on 300
        outcome("c", "BUY", "50", "0", None, "10", None),          # nothing filled
        outcome("d", "BUY", "10", "10", "20", None, 300),          # no arrival price
        outcome("e", "SELL_SHORT", "7", "7", "30.3", "30", 5, mic="XLON", klass="ETF"),
    ])
    assert [(r.mic, r.instrument_class) for r in rows] == [("XLON", "ETF"), ("XNAS", "EQUITY")]
    etf, equity = rows
    assert (equity.orders, equity.filled, equity.partially_filled, equity.unfilled) == (4, 2, 1, 1)
    assert equity.quantity_ordered == Decimal(560) and equity.quantity_filled == Decimal(410)
    assert equity.fill_ratio == Decimal("0.732143")  # 410 / 560
    assert equity.price_improvement_bps == Decimal("-5.00")  # (10*100 - 10*300) / 400
    assert equity.orders_without_arrival_price == 1
    assert equity.median_ms_to_first_fill == Decimal("120.000")
    assert equity.mean_ms_to_first_fill == Decimal("160.000")  # (120 + 60 + 300) / 3
    assert etf.price_improvement_bps == Decimal("100.00")  # (30.3 - 30) / 30 for a (short) sale
    assert etf.fill_ratio == Decimal("1.000000")
    csv = best_execution.to_csv(rows).decode().split("\r\n")
    # The venue has all of its class's filled quantity; no order came through the router.
    assert csv[2] == "XNAS,EQUITY,4,2,1,1,560,410,0.732143,-5,1,120,160,1,0,"
    assert best_execution.summary(rows)[1]["priceImprovementBps"] == "-5"


def forward(**changes):
    base = dict(position_id="6f1d0c8e-1111-4222-8333-444455556666", pair="EUR/USD", currency="EUR",
                base_currency="USD", notional=Decimal("-1000000"), forward_rate=Decimal("1.0850125"),
                trade_date=date(2026, 11, 23), value_date=date(2026, 12, 23), executed_at=T0)
    base.update(changes)
    return cftc.FxForward(**base)


def test_cftc_rows_by_hand():
    rows = cftc.build_swaps([forward(), forward(position_id="p-2", notional=Decimal("250000.5"),
                                                currency="GBP", pair="GBP/USD",
                                                forward_rate=Decimal("1.27"))], FIRM, DEALER)
    sold, bought = rows
    assert sold.uti == FIRM + "6F1D0C8E1111422283334444555566666"[:32] and len(sold.uti) == 52
    assert (sold.reporting_side, sold.notional_leg1, sold.notional_leg2) == (
        "SELLER", Decimal("1000000"), Decimal("1085012.50"))
    assert (bought.reporting_side, bought.notional_leg2) == ("BUYER", Decimal("317500.64"))  # .635 to even
    assert cftc.problems(rows) == []
    lines = cftc.to_csv(rows).decode().split("\r\n")
    assert lines[1] == (f"{sold.uti},NEWT,{FIRM},{DEALER},SELLER,FX,ForeignExchange:Forward,1000000,"
                        "EUR,1085012.5,USD,1.0850125,EUR/USD,2026-11-23T14:30:00.000000Z,"
                        "2026-11-23,2026-12-23,2026-12-23,PHYS")


def test_cftc_problems():
    rows = cftc.build_swaps([forward(value_date=date(2026, 11, 1), base_currency="EUR"),
                             forward(position_id="p-2", forward_rate=Decimal(0))], FIRM, FIRM)
    found = cftc.problems(rows)
    assert any("same entity" in p for p in found)
    assert any(p.startswith("row 1") and "before the trade date" in p for p in found)
    assert any(p.startswith("row 1") and "same currency" in p for p in found)
    assert any(p.startswith("row 2") and "forward rate 0 must be above zero" in p for p in found)
