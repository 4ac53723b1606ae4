"""An order's listing found through the batch's InstrumentIndex (gateway/trading/intake.py):
the same listing, or the same refusal, as the scan over every listing it replaces."""

from __future__ import annotations

import random

import pytest

from gateway.errors import DomainError
from gateway.trading.intake import InstrumentIndex, find_instrument, is_smart
from plugins.builtin.compliance.validators import is_valid_isin
from plugins.sdk import Instrument

AAPL_ISIN = "US0378331005"


def scanned(instruments: list[Instrument], symbol: str, mic: str) -> Instrument | str:
    """The scan the index replaced (find_instrument before it), errors as class and code."""
    wanted = (symbol or "").strip().upper()
    if not wanted:
        return "OrderInvalid INSTRUMENT_UNKNOWN"
    if "." in wanted and is_smart(mic) and not any(i.symbol.upper() == wanted for i in instruments):
        wanted, mic = wanted.rsplit(".", 1)
    looks_like_isin = len(wanted) == 12 and wanted[:2].isalpha() and wanted[2:].isalnum()
    if looks_like_isin and not any(i.symbol.upper() == wanted for i in instruments) \
            and not is_valid_isin(wanted):
        return "OrderInvalid ISIN_INVALID"
    named = [i for i in instruments
             if i.symbol.upper() == wanted or (i.isin or "").upper() == wanted]
    if not is_smart(mic):
        named = [i for i in named if i.mic == mic.strip().upper()]
    return named[0] if named else "InstrumentNotFound INSTRUMENT_UNKNOWN"


def found(instruments: list[Instrument] | InstrumentIndex, symbol: str, mic: str
          ) -> Instrument | str:
    try:
        return find_instrument(instruments, symbol, mic)
    except DomainError as exc:
        return f"{type(exc).__name__} {exc.code}"


def test_the_first_listing_in_the_list_whether_named_by_symbol_or_isin() -> None:
    by_isin = Instrument("AAPL", "XNAS", "USD", isin=AAPL_ISIN)
    by_symbol = Instrument(AAPL_ISIN, "XLON", "GBP")  # a symbol that is another's ISIN
    for listings in ([by_isin, by_symbol], [by_symbol, by_isin]):
        index = InstrumentIndex(listings)
        assert find_instrument(index, AAPL_ISIN.lower(), "SMART") is listings[0]
        assert find_instrument(index, AAPL_ISIN, "xlon") is by_symbol


def test_the_same_answers_as_the_scan() -> None:
    rng = random.Random(14)
    symbols = ["AAPL", "aapl", "BRK.B", "BTC-USD", AAPL_ISIN, "X"]
    mics = ["XNAS", "XLON", "ALPX", "BRK"]
    isins = [None, AAPL_ISIN, "us0378331005", "GB0002634946"]
    queries = [*symbols, "BRK.B.XNAS", "AAPL.XLON", "brk.b", "US0000000000", "", "  x ", "B",
               "GB0002634946.XLON"]
    for _ in range(200):
        listings = [Instrument(rng.choice(symbols), rng.choice(mics), "USD",
                               isin=rng.choice(isins)) for _ in range(rng.randint(0, 8))]
        index = InstrumentIndex(listings)
        for query in queries:
            for mic in ["SMART", "", *mics, "xnas"]:
                expected = scanned(listings, query, mic)
                assert found(index, query, mic) == expected, (listings, query, mic)
                assert found(listings, query, mic) == expected


@pytest.mark.parametrize("symbol", ["BTC-USD", "btc-usd.alpx"])
def test_a_plain_list_still_works(symbol: str) -> None:
    listing = Instrument("BTC-USD", "ALPX", "USD")
    assert find_instrument([listing], symbol, "SMART") is listing
