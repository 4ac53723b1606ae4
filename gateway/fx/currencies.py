"""ISO 4217 facts the FX maths needs: minor units and money-market day counts."""

from __future__ import annotations

import re
from decimal import ROUND_HALF_EVEN, Decimal
from types import MappingProxyType

CODE = re.compile(r"^[A-Z]{3}$")

# ISO 4217 exponents that differ from 2 (among currencies a provider is likely to quote).
_MINOR_UNITS = MappingProxyType({"JPY": 0, "KRW": 0, "CLP": 0, "ISK": 0, "VND": 0, "BHD": 3,
                                 "KWD": 3, "OMR": 3, "JOD": 3, "TND": 3})

# Money-market day-count denominators: ACT/365 where that market's deposits use it (sterling,
# the Commonwealth markets, Japan, Hong Kong, India); ACT/360 for USD, EUR, CHF, CNY, MXN and,
# as the more common convention, any currency not listed.
_ACT_365 = frozenset({"GBP", "AUD", "NZD", "CAD", "HKD", "INR", "JPY", "SGD", "ZAR"})


def minor_units(currency: str) -> int:
    return _MINOR_UNITS.get(currency, 2)


def quantum(currency: str) -> Decimal:
    return Decimal(1).scaleb(-minor_units(currency))


def round_money(amount: Decimal, currency: str) -> Decimal:
    """Round to the currency's minor unit, half to even (no drift over many roundings)."""
    return amount.quantize(quantum(currency), rounding=ROUND_HALF_EVEN)


def day_count_basis(currency: str) -> int:
    return 365 if currency in _ACT_365 else 360
