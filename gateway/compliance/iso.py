"""ISO code lists an account or a holding is checked against: ISO 4217 currencies and ISO
3166-1 alpha-2 countries, from pycountry (which follows the ISO tables and Debian's
iso-codes). Only the current codes count: a withdrawn currency (DEM) or country (YU) is not
one an account can be opened in."""

from __future__ import annotations

from functools import cache

import pycountry


@cache
def currencies() -> frozenset[str]:
    return frozenset(c.alpha_3 for c in pycountry.currencies)


@cache
def countries() -> frozenset[str]:
    return frozenset(c.alpha_2 for c in pycountry.countries)


def is_currency(code: object) -> bool:
    """An ISO 4217 alphabetic code, upper case (USD, not usd)."""
    return isinstance(code, str) and code in currencies()


def is_country(code: object) -> bool:
    """An ISO 3166-1 alpha-2 code, upper case (FR, not fr)."""
    return isinstance(code, str) and code in countries()
