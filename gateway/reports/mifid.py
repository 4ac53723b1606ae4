"""MiFIR Article 26 transaction reports (RTS 22) in the ISO 20022 auth.016.001.01 layout
(Document/FinInstrmRptgTxRpt/Tx/New), from fills: the fields the gateway holds.

One report per execution. The firm (the tenant, an investment firm: InvstmtPtyInd true)
executes its clients' orders on venues, so the trading capacity is AOTC and the venue (its MIC)
is the counterparty: a client's buy has the client as buyer and the venue as seller, a sell the
reverse. The firm is the executing and the submitting entity (its LEI, a request parameter);
no order is transmitted (TrnsmssnInd false); no fill is a securities financing transaction.

Who decided and who executed (fields 57-60) are natural persons or algorithms as the standard
identifies them, never a platform id: the investment decision is the user who submitted the
order, by the national identifier the tenant admin recorded for that user
(`setUserNationalIdentifier`: NIDN, CCPT or CONCAT, with the branch's country); the execution
within the firm is the smart order router (Algo ALPHINTRA-SOR) when it chose the venue, else
that same person. Orders carry no strategy, so no investment decision is an algorithm's.

What is not reported, and why:
- `exclusion_of`: instruments outside MiFIR Art. 26 (crypto-assets and spot FX are not MiFID II
  financial instruments; an instrument without an ISIN is not admitted to trading on an EU venue
  as far as the platform knows). They are listed (`Exclusion`, per instrument and reason) and
  left out; the report goes on.
- `missing_identifiers`: in-scope transactions the platform cannot identify as the standard
  requires: a client who is a natural person (the platform holds no name, birth date or national
  client identifier of its clients), a decision maker without a recorded national identifier.
  The report then fails with REPORT_IDENTIFIER_MISSING naming them (scope the report by account
  to leave a client out); nothing is guessed.

`build_transactions` is pure; `problems` checks every field before anything is written (a
report with problems is not written at all); `to_csv` and `to_xml` render; the XML is checked
against auth_016_001_01.xsd (in this package) with lxml by `xml_problems`.
"""

from __future__ import annotations

import re
import threading
from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from functools import cache
from importlib import resources
from typing import Any

from gateway.reports.common import cell, csv_bytes, decimal_text, instant_text
from gateway.reports.identifiers import (
    is_currency,
    is_mic,
    is_valid_isin,
    is_valid_lei,
    national_id_problem,
)

NAMESPACE = "urn:iso:std:iso:20022:tech:xsd:auth.016.001.01"
XSD = "auth_016_001_01.xsd"
ROUTER_ID = "ALPHINTRA-SOR"
_TRN = re.compile(r"[A-Z0-9]{1,52}")
_VALIDATING = threading.Lock()

# Why an instrument's transactions are not reported (Exclusion.reason).
CRYPTO_ASSET = "CRYPTO_ASSET"
FX_SPOT = "FX_SPOT"
NO_ISIN = "NO_ISIN"
_WHY = {
    CRYPTO_ASSET: "a crypto-asset is not a MiFID II financial instrument (MiCA governs it): "
                  "MiFIR Art. 26 does not apply",
    FX_SPOT: "spot foreign exchange is not a MiFID II financial instrument",
    NO_ISIN: "the instrument has no ISIN: not admitted to trading on an EU trading venue as far "
             "as the platform knows, so outside MiFIR Art. 26(2)",
}

# Who cannot be identified (MissingIdentifier.role).
CLIENT = "CLIENT"
DECISION_MAKER = "DECISION_MAKER"


@dataclass(frozen=True)
class Person:
    """A natural person within the firm as RTS 22 Art. 6 identifies one."""

    identifier: str  # country code + national id, passport number or CONCAT code
    scheme: str  # NIDN | CCPT | CONCAT
    branch_country: str  # ISO 3166-1 alpha-2 of the branch supervising the person


@dataclass(frozen=True)
class ExecutedTrade:
    """One fill with what the report needs of its order, account, instrument and user."""

    execution_id: str
    order_id: str
    account: str
    client_type: str  # INDIVIDUAL | LEGAL_ENTITY
    client_lei: str | None
    side: str  # BUY | SELL | SELL_SHORT
    quantity: Decimal
    price: Decimal
    currency: str
    mic: str
    isin: str | None
    symbol: str
    executed_at: datetime
    decided_by: str | None  # the user who submitted the order
    routed_by_router: bool  # the smart order router chose the venue
    instrument_class: str = "UNKNOWN"  # from market data
    decider: Person | None = None  # the national identifier recorded for `decided_by`
    decider_name: str = ""  # the user's e-mail, to name them

    @property
    def instrument(self) -> str:
        return f"{self.symbol}.{self.mic}"


@dataclass(frozen=True)
class Party:
    """An account owner's Id (PersonOrOrganisation1Choice)."""

    kind: str  # LEI | MIC
    id: str


@dataclass(frozen=True)
class Actor:
    """A decision maker or executor within the firm (ExecutingParty1Choice)."""

    kind: str  # PRSN | ALGO
    id: str
    scheme: str | None = None  # a person's: NIDN | CCPT | CONCAT
    branch_country: str | None = None  # a person's

    @classmethod
    def person(cls, p: Person) -> Actor:
        return cls("PRSN", p.identifier, p.scheme, p.branch_country)


@dataclass(frozen=True)
class TransactionReport:
    transaction_id: str  # TxId
    executing_entity: str  # ExctgPty
    investment_firm: bool  # InvstmtPtyInd
    submitting_entity: str  # SubmitgPty
    buyer: Party
    seller: Party
    transmission: bool  # OrdrTrnsmssn/TrnsmssnInd
    trading_date_time: datetime
    trading_capacity: str
    quantity: Decimal  # Qty/Unit
    price: Decimal  # Pric/Pric/MntryVal/Amt
    price_currency: str
    venue: str  # TradVn
    isin: str  # FinInstrm/Id
    investment_decision: Actor | None  # InvstmtDcsnPrsn
    execution_within_firm: Actor  # ExctgPrsn
    short_selling: str | None  # SESH | SELL for sells, none for buys
    securities_financing: bool  # AddtlAttrbts/SctiesFincgTxInd
    symbol: str  # not an RTS 22 field: names the row in problems


@dataclass(frozen=True)
class Exclusion:
    """An instrument whose transactions in the period are not reported, and why."""

    instrument: str  # SYMBOL.MIC
    instrument_class: str
    isin: str | None
    reason: str  # CRYPTO_ASSET | FX_SPOT | NO_ISIN
    transactions: int

    @property
    def detail(self) -> str:
        return _WHY[self.reason]

    def as_json(self) -> dict[str, Any]:
        return {"instrument": self.instrument, "instrumentClass": self.instrument_class,
                "isin": self.isin, "reason": self.reason, "detail": self.detail,
                "transactions": self.transactions}


@dataclass(frozen=True)
class MissingIdentifier:
    role: str  # CLIENT | DECISION_MAKER
    who: str  # the account code, or the user's e-mail and id
    transactions: int

    def text(self) -> str:
        if self.role == CLIENT:
            return (f"account {self.who} is a natural person: the platform holds no national "
                    f"client identifier for it ({self.transactions} transaction(s); scope the "
                    "report by account to leave it out)")
        return (f"user {self.who} decided {self.transactions} transaction(s) and has no national "
                "identifier recorded (setUserNationalIdentifier)")


def exclusion_reason(t: ExecutedTrade) -> str | None:
    if t.instrument_class == "CRYPTO":
        return CRYPTO_ASSET
    if t.instrument_class == "FX":
        return FX_SPOT
    if not t.isin:
        return NO_ISIN
    return None


def split_reportable(trades: list[ExecutedTrade]) -> tuple[list[ExecutedTrade], list[Exclusion]]:
    """The trades to report, and the instruments left out (with how many trades, and why)."""
    kept: list[ExecutedTrade] = []
    left: Counter[tuple[str, str, str | None, str]] = Counter()
    for t in trades:
        reason = exclusion_reason(t)
        if reason is None:
            kept.append(t)
        else:
            left[(t.instrument, t.instrument_class, t.isin or None, reason)] += 1
    return kept, [Exclusion(i, k, isin, r, n) for (i, k, isin, r), n in sorted(left.items(),
                                                                              key=lambda e: e[0][:2])]


def missing_identifiers(trades: list[ExecutedTrade]) -> list[MissingIdentifier]:
    clients: Counter[str] = Counter()
    deciders: Counter[str] = Counter()
    for t in trades:
        if t.client_type != "LEGAL_ENTITY":
            clients[t.account] += 1
        if t.decider is None:
            who = (f"{t.decider_name} ({t.decided_by})" if t.decider_name else
                   t.decided_by or f"unknown (order {t.order_id})")
            deciders[who] += 1
    return ([MissingIdentifier(CLIENT, a, n) for a, n in sorted(clients.items())]
            + [MissingIdentifier(DECISION_MAKER, u, n) for u, n in sorted(deciders.items())])


def _client(trade: ExecutedTrade) -> Party:
    return Party("LEI", trade.client_lei or "")


def build_transactions(trades: list[ExecutedTrade], executing_entity_lei: str
                       ) -> list[TransactionReport]:
    """Reports for trades already split (`split_reportable`) and identified
    (`missing_identifiers` empty): a natural-person client or a decision maker without an
    identifier would be a row `problems` refuses."""
    rows = []
    for t in sorted(trades, key=lambda t: (t.executed_at, t.execution_id)):
        client, venue = _client(t), Party("MIC", t.mic)
        buy = t.side == "BUY"
        decision = Actor.person(t.decider) if t.decider else None
        rows.append(TransactionReport(
            transaction_id=t.execution_id.replace("-", "").upper(),
            executing_entity=executing_entity_lei, investment_firm=True,
            submitting_entity=executing_entity_lei,
            buyer=client if buy else venue, seller=venue if buy else client, transmission=False,
            trading_date_time=t.executed_at, trading_capacity="AOTC",
            quantity=t.quantity, price=t.price, price_currency=t.currency, venue=t.mic,
            isin=t.isin or "", investment_decision=decision,
            execution_within_firm=Actor("ALGO", ROUTER_ID) if t.routed_by_router
            else (decision or Actor("PRSN", "")),
            short_selling=None if buy else ("SESH" if t.side == "SELL_SHORT" else "SELL"),
            securities_financing=False, symbol=t.symbol))
    return rows


def _actor_problem(actor: Actor) -> str | None:
    if actor.kind == "ALGO":
        return None if 0 < len(actor.id) <= 50 else "algorithm code must be 1-50 characters"
    if not actor.id:
        return "no national identifier"
    return national_id_problem(actor.scheme, actor.id, actor.branch_country)


def problems(rows: list[TransactionReport]) -> list[str]:
    found: list[str] = []
    seen: set[str] = set()
    for n, r in enumerate(rows, start=1):
        def bad(text: str, n: int = n, r: TransactionReport = r) -> None:
            found.append(f"row {n} ({r.symbol} {r.transaction_id}): {text}")

        if not _TRN.fullmatch(r.transaction_id):
            bad("transaction reference must be 1-52 letters and digits")
        elif r.transaction_id in seen:
            bad("transaction reference is not unique")
        seen.add(r.transaction_id)
        if not is_valid_lei(r.executing_entity):
            bad(f"executing entity LEI {r.executing_entity!r} fails ISO 17442")
        for role, party in (("buyer", r.buyer), ("seller", r.seller)):
            if party.kind == "LEI" and not is_valid_lei(party.id):
                bad(f"{role} LEI {party.id!r} fails ISO 17442" if party.id
                    else f"{role} is a legal entity without an LEI")
            elif party.kind == "MIC" and not is_mic(party.id):
                bad(f"{role} MIC {party.id!r} is not an ISO 10383 code")
        if r.trading_date_time.tzinfo is None:
            bad("trading date-time has no time zone")
        if not (r.quantity.is_finite() and r.quantity > 0):
            bad(f"quantity {r.quantity} must be above zero")
        if not (r.price.is_finite() and r.price > 0):
            bad(f"price {r.price} must be above zero")
        if not is_currency(r.price_currency):
            bad(f"currency {r.price_currency!r} is not ISO 4217")
        if not is_mic(r.venue):
            bad(f"venue {r.venue!r} is not an ISO 10383 MIC")
        if not r.isin:
            bad("instrument has no ISIN")
        elif not is_valid_isin(r.isin):
            bad(f"ISIN {r.isin!r} fails its check digit")
        if r.investment_decision is None:
            bad("no investment decision maker")
        elif (why := _actor_problem(r.investment_decision)) is not None:
            bad(f"investment decision maker: {why}")
        if (why := _actor_problem(r.execution_within_firm)) is not None:
            bad(f"execution within the firm: {why}")
    return found


CSV_HEADER = ("TxId", "ExctgPty", "InvstmtPtyInd", "SubmitgPty", "Buyr.Id.Type", "Buyr.Id",
              "Sellr.Id.Type", "Sellr.Id", "TrnsmssnInd", "TradDt", "TradgCpcty", "Qty.Unit",
              "Pric.MntryVal.Amt", "Pric.MntryVal.Ccy", "TradVn", "FinInstrm.Id",
              "InvstmtDcsnPrsn.Type", "InvstmtDcsnPrsn.Id", "InvstmtDcsnPrsn.Schme",
              "InvstmtDcsnPrsn.CtryOfBrnch", "ExctgPrsn.Type", "ExctgPrsn.Id", "ExctgPrsn.Schme",
              "ExctgPrsn.CtryOfBrnch", "ShrtSellgInd", "SctiesFincgTxInd")


def _flag(value: bool) -> str:
    return "true" if value else "false"


def _actor_cells(actor: Actor | None) -> tuple[Any, ...]:
    if actor is None:
        return ("", "", "", "")
    return (actor.kind, actor.id, actor.scheme, actor.branch_country)


def _fields(r: TransactionReport) -> tuple[Any, ...]:
    return (r.transaction_id, r.executing_entity, _flag(r.investment_firm), r.submitting_entity,
            r.buyer.kind, r.buyer.id, r.seller.kind, r.seller.id, _flag(r.transmission),
            r.trading_date_time, r.trading_capacity, r.quantity, r.price, r.price_currency,
            r.venue, r.isin, *_actor_cells(r.investment_decision),
            *_actor_cells(r.execution_within_firm), r.short_selling,
            _flag(r.securities_financing))


def to_csv(rows: list[TransactionReport]) -> bytes:
    return csv_bytes(CSV_HEADER, (_fields(r) for r in rows))


def to_xml(rows: list[TransactionReport]) -> bytes:
    """Document/FinInstrmRptgTxRpt with one Tx/New per row. The message needs at least one Tx:
    a period with nothing to report has no document."""
    if not rows:
        raise ValueError("an auth.016 report holds at least one transaction")
    from lxml import etree  # loaded on a worker, when a report is written

    q = f"{{{NAMESPACE}}}"

    def add(parent: Any, tag: str, text: str | None = None, **attributes: str) -> Any:
        element = etree.SubElement(parent, f"{q}{tag}", attributes)
        if text is not None:
            element.text = text
        return element

    def party(parent: Any, tag: str, p: Party) -> None:
        add(add(add(add(parent, tag), "AcctOwnr"), "Id"), p.kind, p.id)

    def actor(parent: Any, tag: str, a: Actor) -> None:
        element = add(parent, tag)
        if a.kind == "ALGO":
            add(element, "Algo", a.id)
            return
        person = add(element, "Prsn")
        add(person, "CtryOfBrnch", a.branch_country or "")
        other = add(person, "Othr")
        add(other, "Id", a.id)
        scheme = add(other, "SchmeNm")
        if a.scheme == "CONCAT":
            add(scheme, "Prtry", "CONCAT")
        else:
            add(scheme, "Cd", a.scheme or "")

    document = etree.Element(f"{q}Document", nsmap={None: NAMESPACE})
    report = add(document, "FinInstrmRptgTxRpt")
    for r in rows:
        new = add(add(report, "Tx"), "New")
        add(new, "TxId", r.transaction_id)
        add(new, "ExctgPty", r.executing_entity)
        add(new, "InvstmtPtyInd", _flag(r.investment_firm))
        add(new, "SubmitgPty", r.submitting_entity)
        party(new, "Buyr", r.buyer)
        party(new, "Sellr", r.seller)
        add(add(new, "OrdrTrnsmssn"), "TrnsmssnInd", _flag(r.transmission))
        tx = add(new, "Tx")
        add(tx, "TradDt", instant_text(r.trading_date_time))
        add(tx, "TradgCpcty", r.trading_capacity)
        add(add(tx, "Qty"), "Unit", decimal_text(r.quantity))
        add(add(add(add(tx, "Pric"), "Pric"), "MntryVal"), "Amt", cell(r.price),
            Ccy=r.price_currency)
        add(tx, "TradVn", r.venue)
        add(add(new, "FinInstrm"), "Id", r.isin)
        if r.investment_decision is not None:
            actor(new, "InvstmtDcsnPrsn", r.investment_decision)
        actor(new, "ExctgPrsn", r.execution_within_firm)
        extra = add(new, "AddtlAttrbts")
        if r.short_selling:
            add(extra, "ShrtSellgInd", r.short_selling)
        add(extra, "SctiesFincgTxInd", _flag(r.securities_financing))
    return bytes(etree.tostring(document, encoding="UTF-8", xml_declaration=True,
                                pretty_print=True))


@cache
def _schema() -> Any:
    from lxml import etree

    source = resources.files("gateway.reports").joinpath(XSD).read_bytes()
    return etree.XMLSchema(etree.fromstring(source))


def xml_problems(document: bytes) -> list[str]:
    """What the XSD says of `document`: one line per error, with its line and path."""
    from lxml import etree

    try:
        tree = etree.fromstring(document)
    except etree.XMLSyntaxError as error:
        return [f"XML: not well-formed: {error}"]
    schema = _schema()
    with _VALIDATING:  # one schema object, its error log per validation: one at a time
        if schema.validate(tree):
            return []
        return [f"XML line {e.line} {e.path}: {e.message}" for e in schema.error_log]
