"""MiFIR Article 26 transaction reports (RTS 22): the fields the gateway owns, from fills.

One report per execution. The firm executes its clients' orders on venues, so the trading
capacity is AOTC and the venue (its MIC) is the counterparty: a client's buy has the client as
buyer and the venue as seller, a sell the reverse. A legal-entity client is identified by its
LEI; a natural person by the account code (the gateway holds no national client identifiers,
which the firm's reporting system adds). The investment decision is the user who submitted the
order; the execution within the firm is the smart order router when it chose the venue, else
that user.

`build_transactions` is pure; `problems` checks every field before anything is written (a
report with problems is not written at all); `to_csv` and `to_xml` render; the XML is checked
against mifid_transactions.xsd (in this package) by `xml_problems`.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from functools import cache
from importlib import resources
from typing import Any

from gateway.reports.common import Period, cell, csv_bytes, instant_text
from gateway.reports.identifiers import is_currency, is_mic, is_valid_isin, is_valid_lei

NAMESPACE = "urn:alphintra:mifir:transactions:1"
ROUTER_ID = "ALPHINTRA-SOR"
_TRN = re.compile(r"[A-Z0-9]{1,52}")


@dataclass(frozen=True)
class ExecutedTrade:
    """One fill with what the report needs of its order and account."""

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


@dataclass(frozen=True)
class Party:
    kind: str  # LEI | MIC | ACCOUNT
    id: str


@dataclass(frozen=True)
class TransactionReport:
    report_status: str
    transaction_reference: str
    executing_entity: str
    buyer: Party
    seller: Party
    trading_date_time: datetime
    trading_capacity: str
    quantity: Decimal
    price: Decimal
    price_currency: str
    venue: str
    isin: str
    investment_decision: str
    execution_within_firm: str
    short_selling: str | None  # SESH | SELL for sells, empty for buys
    symbol: str  # not an RTS 22 field: names the row in problems


def _client(trade: ExecutedTrade) -> Party:
    if trade.client_type == "LEGAL_ENTITY":
        return Party("LEI", trade.client_lei or "")
    return Party("ACCOUNT", trade.account)


def build_transactions(trades: list[ExecutedTrade], executing_entity_lei: str
                       ) -> list[TransactionReport]:
    rows = []
    for t in sorted(trades, key=lambda t: (t.executed_at, t.execution_id)):
        client, venue = _client(t), Party("MIC", t.mic)
        buy = t.side == "BUY"
        decided_by = t.decided_by or ""
        rows.append(TransactionReport(
            report_status="NEWT",
            transaction_reference=t.execution_id.replace("-", "").upper(),
            executing_entity=executing_entity_lei,
            buyer=client if buy else venue, seller=venue if buy else client,
            trading_date_time=t.executed_at, trading_capacity="AOTC",
            quantity=t.quantity, price=t.price, price_currency=t.currency, venue=t.mic,
            isin=t.isin or "", investment_decision=decided_by,
            execution_within_firm=ROUTER_ID if t.routed_by_router else decided_by,
            short_selling=None if buy else ("SESH" if t.side == "SELL_SHORT" else "SELL"),
            symbol=t.symbol))
    return rows


def problems(rows: list[TransactionReport]) -> list[str]:
    found: list[str] = []
    seen: set[str] = set()
    for n, r in enumerate(rows, start=1):
        def bad(text: str, n: int = n, r: TransactionReport = r) -> None:
            found.append(f"row {n} ({r.symbol} {r.transaction_reference}): {text}")

        if not _TRN.fullmatch(r.transaction_reference):
            bad("transaction reference must be 1-52 letters and digits")
        elif r.transaction_reference in seen:
            bad("transaction reference is not unique")
        seen.add(r.transaction_reference)
        if not is_valid_lei(r.executing_entity):
            bad(f"executing entity LEI {r.executing_entity!r} fails ISO 17442")
        for role, party in (("buyer", r.buyer), ("seller", r.seller)):
            if party.kind == "LEI" and not is_valid_lei(party.id):
                bad(f"{role} LEI {party.id!r} fails ISO 17442" if party.id
                    else f"{role} is a legal entity without an LEI")
            elif party.kind == "MIC" and not is_mic(party.id):
                bad(f"{role} MIC {party.id!r} is not an ISO 10383 code")
            elif party.kind == "ACCOUNT" and not party.id:
                bad(f"{role} has no identifier")
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
        if not r.investment_decision:
            bad("no investment decision maker")
        if not r.execution_within_firm:
            bad("no execution decision maker")
    return found


CSV_HEADER = ("ReportStatus", "TransactionReferenceNumber", "ExecutingEntityLEI", "BuyerIdType",
              "BuyerId", "SellerIdType", "SellerId", "TradingDateTime", "TradingCapacity",
              "Quantity", "Price", "PriceCurrency", "Venue", "ISIN", "InvestmentDecisionWithinFirm",
              "ExecutionWithinFirm", "ShortSellingIndicator")


def _fields(r: TransactionReport) -> tuple[Any, ...]:
    return (r.report_status, r.transaction_reference, r.executing_entity, r.buyer.kind, r.buyer.id,
            r.seller.kind, r.seller.id, r.trading_date_time, r.trading_capacity, r.quantity,
            r.price, r.price_currency, r.venue, r.isin, r.investment_decision,
            r.execution_within_firm, r.short_selling)


def to_csv(rows: list[TransactionReport]) -> bytes:
    return csv_bytes(CSV_HEADER, (_fields(r) for r in rows))


def to_xml(rows: list[TransactionReport], executing_entity_lei: str, period: Period,
           generated_at: datetime) -> bytes:
    ET.register_namespace("", NAMESPACE)
    q = f"{{{NAMESPACE}}}"
    root = ET.Element(f"{q}TransactionReports", {
        "executingEntity": executing_entity_lei, "from": instant_text(period.start),
        "to": instant_text(period.end), "generated": instant_text(generated_at),
        "count": str(len(rows))})
    for r in rows:
        tx = ET.SubElement(root, f"{q}Transaction")
        for tag, value in (("ReportStatus", r.report_status),
                           ("TransactionReferenceNumber", r.transaction_reference),
                           ("ExecutingEntity", r.executing_entity)):
            ET.SubElement(tx, f"{q}{tag}").text = value
        for tag, party in (("Buyer", r.buyer), ("Seller", r.seller)):
            ET.SubElement(ET.SubElement(tx, f"{q}{tag}"), f"{q}{party.kind}").text = party.id
        for tag, value in (("TradingDateTime", r.trading_date_time),
                           ("TradingCapacity", r.trading_capacity), ("Quantity", r.quantity)):
            ET.SubElement(tx, f"{q}{tag}").text = cell(value)
        price = ET.SubElement(tx, f"{q}Price", {"currency": r.price_currency})
        price.text = cell(r.price)
        for tag, value in (("Venue", r.venue), ("ISIN", r.isin),
                           ("InvestmentDecisionWithinFirm", r.investment_decision),
                           ("ExecutionWithinFirm", r.execution_within_firm)):
            ET.SubElement(tx, f"{q}{tag}").text = value
        if r.short_selling:
            ET.SubElement(tx, f"{q}ShortSellingIndicator").text = r.short_selling
    return ET.tostring(root, encoding="utf-8", xml_declaration=True)


@cache
def _schema() -> Any:
    import xmlschema  # loaded on a worker, when a report is written

    source = resources.files("gateway.reports").joinpath("mifid_transactions.xsd").read_text()
    return xmlschema.XMLSchema(source)


def xml_problems(document: bytes) -> list[str]:
    """What the XSD says of `document`: one line per error, with its path."""
    return [f"XML {error.path or '/'}: {error.reason}" for error in _schema().iter_errors(document)]
