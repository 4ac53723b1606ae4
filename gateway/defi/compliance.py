"""The tenant's restricted list applied to DeFi tokens, one rule for swaps and lending.

A token is restricted when the list holds "DEFI:<SYMBOL>" (e.g. "DEFI:WETH"), its contract
address, or its bare symbol ("WETH"), any case. The bare symbol is accepted so that a list
written for lending before the prefix existed keeps working; "DEFI:<SYMBOL>" is the documented
form (it cannot collide with an exchange ticker).
"""

from __future__ import annotations

from collections.abc import Iterable


def is_restricted(symbol: str, address: str, restricted: Iterable[str]) -> bool:
    listed = {r.strip().lower() for r in restricted}
    symbol = symbol.strip().lower()
    return bool({f"defi:{symbol}", symbol, address.strip().lower()} & listed)
