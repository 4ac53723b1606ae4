"""CFTC swap data (17 CFR Part 45 style) for the FX forwards the hedging path records.

One row per hedge forward (`HedgePosition`). The reporting counterparty is the firm (its LEI);
the other counterparty is the dealer the forwards were dealt with, given with the request (the
hedging path records no dealer). The UTI is the reporting LEI followed by the forward's id
(without dashes): 52 characters, unique, per CFTC's UTI construction. Leg 1 is the foreign
currency (notional as hedged, unsigned), leg 2 the base currency at the forward rate; the
firm's side is the buyer of leg 1 when it bought the foreign currency forward (positive
notional), else the seller. Delivery is physical; the expiration and settlement date is the
value date.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime
from decimal import ROUND_HALF_EVEN, Decimal

from gateway.reports.common import csv_bytes
from gateway.reports.identifiers import is_currency, is_valid_lei

_UTI = re.compile(r"[A-Z0-9]{20}[A-Z0-9]{1,32}")
NOTIONAL_PLACES = Decimal("0.01")


@dataclass(frozen=True)
class FxForward:
    position_id: str
    pair: str  # FOREIGN/BASE
    currency: str  # foreign, leg 1
    base_currency: str  # leg 2
    notional: Decimal  # signed, in `currency`: negative sold forward
    forward_rate: Decimal  # base per one foreign
    trade_date: date
    value_date: date
    executed_at: datetime


@dataclass(frozen=True)
class SwapRecord:
    uti: str
    action_type: str
    reporting_counterparty: str
    other_counterparty: str
    reporting_side: str  # BUYER | SELLER of leg 1
    asset_class: str
    product: str
    notional_leg1: Decimal
    currency_leg1: str
    notional_leg2: Decimal
    currency_leg2: str
    exchange_rate: Decimal
    exchange_rate_basis: str
    execution_timestamp: datetime
    effective_date: date
    expiration_date: date
    settlement_date: date
    delivery_type: str


def build_swaps(forwards: list[FxForward], reporting_lei: str, counterparty_lei: str
                ) -> list[SwapRecord]:
    rows = []
    for f in sorted(forwards, key=lambda f: (f.executed_at, f.position_id)):
        leg1 = abs(f.notional)
        rows.append(SwapRecord(
            uti=f"{reporting_lei}{f.position_id.replace('-', '').upper()}",
            action_type="NEWT", reporting_counterparty=reporting_lei,
            other_counterparty=counterparty_lei,
            reporting_side="BUYER" if f.notional > 0 else "SELLER",
            asset_class="FX", product="ForeignExchange:Forward",
            notional_leg1=leg1, currency_leg1=f.currency,
            notional_leg2=(leg1 * f.forward_rate).quantize(NOTIONAL_PLACES, ROUND_HALF_EVEN),
            currency_leg2=f.base_currency, exchange_rate=f.forward_rate,
            exchange_rate_basis=f"{f.currency}/{f.base_currency}", execution_timestamp=f.executed_at,
            effective_date=f.trade_date, expiration_date=f.value_date, settlement_date=f.value_date,
            delivery_type="PHYS"))
    return rows


def problems(rows: list[SwapRecord]) -> list[str]:
    found: list[str] = []
    seen: set[str] = set()
    for n, r in enumerate(rows, start=1):
        def bad(text: str, n: int = n, r: SwapRecord = r) -> None:
            found.append(f"row {n} ({r.exchange_rate_basis} {r.uti}): {text}")

        if not _UTI.fullmatch(r.uti) or len(r.uti) > 52:
            bad("UTI must be an LEI and up to 32 letters and digits")
        elif r.uti in seen:
            bad("UTI is not unique")
        seen.add(r.uti)
        for role, lei in (("reporting counterparty", r.reporting_counterparty),
                          ("other counterparty", r.other_counterparty)):
            if not is_valid_lei(lei):
                bad(f"{role} LEI {lei!r} fails ISO 17442")
        if r.reporting_counterparty == r.other_counterparty:
            bad("the counterparties are the same entity")
        for leg, currency in (("leg 1", r.currency_leg1), ("leg 2", r.currency_leg2)):
            if not is_currency(currency):
                bad(f"{leg} currency {currency!r} is not ISO 4217")
        if r.currency_leg1 == r.currency_leg2:
            bad("both legs are in the same currency")
        if not (r.notional_leg1.is_finite() and r.notional_leg1 > 0):
            bad(f"notional {r.notional_leg1} must be above zero")
        if not (r.exchange_rate.is_finite() and r.exchange_rate > 0):
            bad(f"forward rate {r.exchange_rate} must be above zero")
        if r.expiration_date < r.effective_date:
            bad(f"value date {r.expiration_date} is before the trade date {r.effective_date}")
        if r.execution_timestamp.tzinfo is None:
            bad("execution timestamp has no time zone")
    return found


CSV_HEADER = ("UniqueTransactionIdentifier", "ActionType", "ReportingCounterpartyLEI",
              "OtherCounterpartyLEI", "ReportingCounterpartySide", "AssetClass", "ProductType",
              "NotionalAmountLeg1", "NotionalCurrencyLeg1", "NotionalAmountLeg2",
              "NotionalCurrencyLeg2", "ExchangeRate", "ExchangeRateBasis", "ExecutionTimestamp",
              "EffectiveDate", "ExpirationDate", "SettlementDate", "DeliveryType")


def to_csv(rows: list[SwapRecord]) -> bytes:
    return csv_bytes(CSV_HEADER, ((r.uti, r.action_type, r.reporting_counterparty,
                                   r.other_counterparty, r.reporting_side, r.asset_class, r.product,
                                   r.notional_leg1, r.currency_leg1, r.notional_leg2,
                                   r.currency_leg2, r.exchange_rate, r.exchange_rate_basis,
                                   r.execution_timestamp, r.effective_date.isoformat(),
                                   r.expiration_date.isoformat(), r.settlement_date.isoformat(),
                                   r.delivery_type) for r in rows))
