"""Checks of the identifiers reports carry: LEI (ISO 17442) and ISIN (ISO 6166) by their check
digits (the same functions the compliance rule packs use), MIC (ISO 10383) by form, currencies
against the ISO 4217 list, and the national identifiers of natural persons (RTS 22 Art. 6) by
their form."""

from __future__ import annotations

import re
from datetime import date

from plugins.builtin.compliance.validators import is_valid_isin, is_valid_lei

__all__ = ["ISO_4217", "PERSON_SCHEMES", "is_currency", "is_mic", "is_valid_isin", "is_valid_lei",
           "national_id_problem"]

_MIC = re.compile(r"[A-Z0-9]{4}")

# ISO 4217 active codes (list one, 2024), funds and precious metals left out.
ISO_4217 = frozenset({
    "AED", "AFN", "ALL", "AMD", "ANG", "AOA", "ARS", "AUD", "AWG", "AZN", "BAM", "BBD", "BDT",
    "BGN", "BHD", "BIF", "BMD", "BND", "BOB", "BRL", "BSD", "BTN", "BWP", "BYN", "BZD", "CAD",
    "CDF", "CHF", "CLP", "CNY", "COP", "CRC", "CUP", "CVE", "CZK", "DJF", "DKK", "DOP", "DZD",
    "EGP", "ERN", "ETB", "EUR", "FJD", "FKP", "GBP", "GEL", "GHS", "GIP", "GMD", "GNF", "GTQ",
    "GYD", "HKD", "HNL", "HTG", "HUF", "IDR", "ILS", "INR", "IQD", "IRR", "ISK", "JMD", "JOD",
    "JPY", "KES", "KGS", "KHR", "KMF", "KPW", "KRW", "KWD", "KYD", "KZT", "LAK", "LBP", "LKR",
    "LRD", "LSL", "LYD", "MAD", "MDL", "MGA", "MKD", "MMK", "MNT", "MOP", "MRU", "MUR", "MVR",
    "MWK", "MXN", "MYR", "MZN", "NAD", "NGN", "NIO", "NOK", "NPR", "NZD", "OMR", "PAB", "PEN",
    "PGK", "PHP", "PKR", "PLN", "PYG", "QAR", "RON", "RSD", "RUB", "RWF", "SAR", "SBD", "SCR",
    "SDG", "SEK", "SGD", "SHP", "SLE", "SOS", "SRD", "SSP", "STN", "SVC", "SYP", "SZL", "THB",
    "TJS", "TMT", "TND", "TOP", "TRY", "TTD", "TWD", "TZS", "UAH", "UGX", "USD", "UYU", "UZS",
    "VED", "VES", "VND", "VUV", "WST", "XAF", "XCD", "XOF", "XPF", "YER", "ZAR", "ZMW", "ZWG",
})


def is_mic(code: str | None) -> bool:
    return isinstance(code, str) and bool(_MIC.fullmatch(code))


def is_currency(code: str | None) -> bool:
    return code in ISO_4217


# How RTS 22 Art. 6 identifies a natural person: by the national identifier of the person's
# nationality (NIDN), else the passport number (CCPT), else the CONCAT code.
PERSON_SCHEMES = ("NIDN", "CCPT", "CONCAT")
_COUNTRY = re.compile(r"[A-Z]{2}")
_NATIONAL = re.compile(r"[A-Z]{2}[A-Z0-9]{1,33}")
# Country of nationality, birth date (YYYYMMDD), first five letters of the first name and of
# the surname, each padded with # (prefixes, titles, apostrophes and accents removed).
_CONCAT = re.compile(r"[A-Z]{2}(\d{8})[A-Z#]{5}[A-Z#]{5}")


def national_id_problem(scheme: str | None, identifier: str | None,
                        branch_country: str | None) -> str | None:
    """What is wrong with a person's identifier for InvstmtDcsnPrsn / ExctgPrsn, None if
    nothing: the scheme one of PERSON_SCHEMES, the identifier starting with the country code
    (CONCAT: country, birth date, five and five letters), the branch country two letters."""
    if scheme not in PERSON_SCHEMES:
        return f"scheme must be one of {', '.join(PERSON_SCHEMES)}"
    if not isinstance(identifier, str):
        return "identifier is missing"
    if scheme == "CONCAT":
        match = _CONCAT.fullmatch(identifier)
        if match is None:
            return ("a CONCAT code is the country code, the birth date (YYYYMMDD) and the first "
                    "five letters of the first name and of the surname, # for padding")
        try:
            date(int(match[1][:4]), int(match[1][4:6]), int(match[1][6:]))
        except ValueError:
            return f"a CONCAT code's birth date {match[1]} is not a date"
    elif not _NATIONAL.fullmatch(identifier):
        return ("the identifier is the country code followed by up to 33 capital letters and "
                "digits")
    if not isinstance(branch_country, str) or not _COUNTRY.fullmatch(branch_country):
        return "branch country must be an ISO 3166-1 alpha-2 code"
    return None
