"""Check digits of the identifiers orders carry: ISIN (ISO 6166) and LEI (ISO 17442).

Pure functions, no I/O. They prove a code is well formed, not that it exists or is active:
whether an LEI has lapsed is GLEIF's data, which a deployment syncs separately.

Both standards first expand letters to numbers (A=10 … Z=35). The checks run per order, so
they stay in C where they can: `str.translate` expands, `bytes.translate` doubles digits, and
`sum` over bytes adds them (about a microsecond, against ten for a per-character loop).
"""

from __future__ import annotations

import re
import string
from types import MappingProxyType

_ISIN = re.compile(r"[A-Z]{2}[A-Z0-9]{9}[0-9]")
_ISIN_BODY = re.compile(r"[A-Z]{2}[A-Z0-9]{9}")
_LEI = re.compile(r"[A-Z0-9]{18}[0-9]{2}")
_LEI_PREFIX = re.compile(r"[A-Z0-9]{18}")

_LETTERS_TO_DIGITS = MappingProxyType(
    {ord(c): str(i) for i, c in enumerate(string.ascii_uppercase, start=10)})
# An ASCII digit to the digit sum of its double (Luhn's doubled positions), as a raw value.
_DOUBLED = bytes.maketrans(b"0123456789", bytes((0, 2, 4, 6, 8, 1, 3, 5, 7, 9)))
_ASCII_ZERO = ord("0")


def _expand(code: str) -> str:
    return code.translate(_LETTERS_TO_DIGITS)


def _luhn_total(digits: bytes) -> int:
    """Luhn's sum over ASCII digits whose rightmost is the check position (not doubled)."""
    kept = digits[-1::-2]
    doubled = digits[-2::-2]
    return sum(kept) - _ASCII_ZERO * len(kept) + sum(doubled.translate(_DOUBLED))


def isin_check_digit(body: str) -> int:
    """The check digit of the first 11 characters of an ISIN (ISO 6166): Luhn over the
    letters-to-digits expansion, so that the expansion with the check digit appended sums
    to a multiple of ten."""
    if not isinstance(body, str) or not _ISIN_BODY.fullmatch(body):
        raise ValueError(f"not an ISIN body: {body!r}")
    return (10 - _luhn_total((_expand(body) + "0").encode("ascii")) % 10) % 10


def is_valid_isin(code: str) -> bool:
    """Two letters (the issuer's country, or XS for international securities), nine
    alphanumerics and a check digit that matches."""
    if not isinstance(code, str) or not _ISIN.fullmatch(code):
        return False
    return _luhn_total(_expand(code).encode("ascii")) % 10 == 0


def lei_check_digits(prefix: str) -> str:
    """The two check digits for the first 18 characters of an LEI (ISO 17442, ISO 7064
    MOD 97-10): with '00' appended and letters expanded, 98 minus the number mod 97."""
    if not isinstance(prefix, str) or not _LEI_PREFIX.fullmatch(prefix):
        raise ValueError(f"not an LEI prefix: {prefix!r}")
    return f"{98 - int(_expand(prefix + '00')) % 97:02d}"


def is_valid_lei(code: str) -> bool:
    """Eighteen alphanumerics and two digits; the whole, letters expanded, is 1 mod 97."""
    if not isinstance(code, str) or not _LEI.fullmatch(code):
        return False
    return int(_expand(code)) % 97 == 1
