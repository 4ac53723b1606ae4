"""The venue registry, as data: who each venue is, where, in what currency, under whom, how its
prices tick and its quantities lot, and which calendar says when it trades.

Holidays, early closes and lunch breaks are never written here: they come from the calendar
library named by `Venue.calendar` (see calendars.py). What is here changes rarely and by
exchange notice: identity, regulators, tick and lot tables, auction windows.

Tick and lot tables are deliberately small and simple. Where a venue's real rule depends on the
instrument (MiFID II liquidity bands, HKEX board lots set by each issuer), the table is the
common case and `note` says what it leaves out; the instrument's own `tick_size`/`lot_size`
(plugins.sdk.Instrument) wins where a data source knows better.

Alternative venues (issue 17) sit beside the primary markets: Cboe BZX (BATS), NYSE Arca
(ARCX, a segment MIC of the NYSE group) and IEX (IEXG) in the US; Cboe Europe's CXE book (CHIX,
a segment of Cboe Europe Ltd), Turquoise (TRQX) and Aquis (AQXE) in London; Cboe Europe B.V.
(CEUX) and Aquis Exchange Europe (AQEU) for euro shares; Cboe Japan (CHIJ) and Japannext
(SBIJ) in Tokyo; Cboe Australia (CXAC) in Sydney. Their `calendar` is their primary market's:
they trade its shares in its continuous session, and a listing's sessions are its venue's.

"ALPX" is the platform's own 24/7 venue for crypto assets and DeFi. It is NOT an ISO 10383 MIC
(no registered venue is ours); it has no calendar and is always open.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from dataclasses import dataclass
from decimal import Decimal
from typing import Literal

from plugins.sdk import VenueInfo

RegionCode = Literal["americas", "emea", "apac", "global"]


@dataclass(frozen=True)
class Region:
    code: RegionCode
    name: str


REGIONS: tuple[Region, ...] = (
    Region("americas", "Americas"),
    Region("emea", "Europe, Middle East and Africa"),
    Region("apac", "Asia-Pacific"),
    Region("global", "Global (24/7)"),
)


@dataclass(frozen=True)
class PriceBand:
    """A band of a price-banded table: `value` applies from `price` upward to the next band."""

    price: Decimal
    value: Decimal


@dataclass(frozen=True)
class PriceBandedRule:
    """A tick size or lot size that depends on the price.

    `upper_inclusive` says on which side a boundary price falls: Tokyo's "3,000 yen or less"
    puts 3,000 in the lower band (True); SEC Rule 612's "$1.00 or more" puts it in the upper.
    """

    bands: tuple[PriceBand, ...]
    note: str = ""
    upper_inclusive: bool = False

    def at(self, price: Decimal) -> Decimal:
        prices = [b.price for b in self.bands]
        find = bisect_left if self.upper_inclusive else bisect_right
        return self.bands[max(find(prices, price) - 1, 0)].value


def _bands(*pairs: tuple[str, str]) -> tuple[PriceBand, ...]:
    return tuple(PriceBand(Decimal(p), Decimal(v)) for p, v in pairs)


def flat(value: str, note: str = "") -> PriceBandedRule:
    return PriceBandedRule(_bands(("0", value)), note)


# ESMA RTS 11 (MiFID II) tick table, column of the most liquid band (average daily number of
# trades >= 9,000). Less liquid shares tick coarser; their band is instrument data.
MIFID_LIQUID = PriceBandedRule(
    _bands(("0", "0.0001"), ("1", "0.0002"), ("2", "0.0005"), ("5", "0.001"), ("10", "0.002"),
           ("20", "0.005"), ("50", "0.01"), ("100", "0.02"), ("200", "0.05"), ("500", "0.1"),
           ("1000", "0.2"), ("2000", "0.5"), ("5000", "1"), ("10000", "2"), ("20000", "5"),
           ("50000", "10")),
    "ESMA RTS 11 tick table, most liquid band (ADNT >= 9000); less liquid shares tick coarser",
)
ONE_SHARE = flat("1", "any whole number of shares")


@dataclass(frozen=True)
class CalendarSource:
    """Which library and calendar name give a venue's sessions."""

    library: Literal["exchange_calendars", "pandas_market_calendars"]
    name: str


@dataclass(frozen=True)
class Venue:
    mic: str  # ISO 10383, except the platform's own 24/7 venue
    name: str
    region: RegionCode
    country: str  # ISO 3166-1 alpha-2
    currency: str  # ISO 4217
    timezone: str  # IANA
    regulators: tuple[str, ...]
    lot_size: PriceBandedRule
    tick_size: PriceBandedRule
    calendar: CalendarSource | None  # None: always open
    # Minutes before the first open / after the last close of a trading day reported as
    # PRE_OPEN / POST_CLOSE (opening and closing auctions, pre- and after-market sessions).
    pre_open_minutes: int = 0
    post_close_minutes: int = 0
    # An alternative venue: the primary market whose listed shares it trades (None for a
    # primary market). Its instruments are listings of the primary's, not other instruments.
    alternative_to: str | None = None

    @property
    def always_open(self) -> bool:
        return self.calendar is None

    def info(self) -> VenueInfo:
        return VenueInfo(mic=self.mic, name=self.name, region=self.region, country=self.country,
                         currency=self.currency, timezone=self.timezone,
                         always_open=self.always_open)


def _xc(name: str) -> CalendarSource:
    return CalendarSource("exchange_calendars", name)


US_TICK = PriceBandedRule(_bands(("0", "0.0001"), ("1", "0.01")),
                          "SEC Reg NMS Rule 612: $0.01 at $1.00 or more, $0.0001 below")
US_LOT = flat("100", "round lot of 100 shares; odd lots accepted")
EURONEXT_LOT = ONE_SHARE
TSE_TICK = PriceBandedRule(
    _bands(("0", "1"), ("3000", "5"), ("5000", "10"), ("30000", "50"), ("50000", "100"),
           ("300000", "500"), ("500000", "1000"), ("3000000", "5000"), ("5000000", "10000"),
           ("30000000", "50000"), ("50000000", "100000")),
    "TSE table for shares outside TOPIX 100", upper_inclusive=True)
ASX_TICK = PriceBandedRule(_bands(("0", "0.001"), ("0.10", "0.005"), ("2.00", "0.01")),
                           "ASX: 0.1c to 10c, 0.5c to $2.00, 1c from $2.00")

# The platform's own 24/7 venue for crypto assets and DeFi. "ALPX" is NOT an ISO 10383 MIC
# (no registered venue trades around the clock for us); it is the platform's code for it.
ALWAYS_OPEN_MIC = "ALPX"

VENUES: tuple[Venue, ...] = (
    # Americas
    Venue("XNYS", "New York Stock Exchange", "americas", "US", "USD", "America/New_York",
          ("SEC", "FINRA"), US_LOT, US_TICK, _xc("XNYS"),
          pre_open_minutes=30),  # opening auction imbalance feed from 09:00
    Venue("XNAS", "Nasdaq Stock Market", "americas", "US", "USD", "America/New_York",
          ("SEC", "FINRA"), US_LOT, US_TICK, _xc("XNAS"),
          pre_open_minutes=330, post_close_minutes=240),  # pre-market 04:00, after-hours to 20:00
    Venue("XTSE", "Toronto Stock Exchange", "americas", "CA", "CAD", "America/Toronto",
          ("CIRO", "OSC"),
          PriceBandedRule(_bands(("0", "1000"), ("0.10", "500"), ("1.00", "100")),
                          "TSX board lots: 1,000 below $0.10, 500 to $0.995, 100 from $1.00"),
          PriceBandedRule(_bands(("0", "0.005"), ("0.50", "0.01")),
                          "TSX: $0.005 below $0.50, $0.01 from $0.50"),
          _xc("XTSE"), pre_open_minutes=150),  # pre-open order entry from 07:00
    Venue("XMEX", "Bolsa Mexicana de Valores", "americas", "MX", "MXN", "America/Mexico_City",
          ("CNBV",), ONE_SHARE, flat("0.01", "MXN 0.01 (simplified)"), _xc("XMEX"),
          pre_open_minutes=30),  # opening auction
    # EMEA
    Venue("XLON", "London Stock Exchange", "emea", "GB", "GBP", "Europe/London",
          ("FCA",), ONE_SHARE, MIFID_LIQUID, _xc("XLON"),
          pre_open_minutes=10, post_close_minutes=5),  # auctions 07:50-08:00 and 16:30-16:35
    Venue("XPAR", "Euronext Paris", "emea", "FR", "EUR", "Europe/Paris",
          ("AMF",), EURONEXT_LOT, MIFID_LIQUID, _xc("XPAR"),
          pre_open_minutes=105, post_close_minutes=10),  # pre-open 07:15; closing auction, TAL
    Venue("XAMS", "Euronext Amsterdam", "emea", "NL", "EUR", "Europe/Amsterdam",
          ("AFM",), EURONEXT_LOT, MIFID_LIQUID, _xc("XAMS"),
          pre_open_minutes=105, post_close_minutes=10),
    Venue("XETR", "Xetra (Deutsche Börse)", "emea", "DE", "EUR", "Europe/Berlin",
          ("BaFin", "Hessian Exchange Supervisory Authority"), ONE_SHARE, MIFID_LIQUID, _xc("XETR"),
          pre_open_minutes=10, post_close_minutes=5),  # opening and closing auctions
    Venue("XMIL", "Borsa Italiana", "emea", "IT", "EUR", "Europe/Rome",
          ("CONSOB",), ONE_SHARE, MIFID_LIQUID, _xc("XMIL"),
          pre_open_minutes=60, post_close_minutes=5),  # pre-auction from 08:00; closing auction
    # APAC
    Venue("XTKS", "Tokyo Stock Exchange", "apac", "JP", "JPY", "Asia/Tokyo",
          ("JFSA",), flat("100", "trading unit of 100 shares"),
          TSE_TICK, _xc("XTKS"), pre_open_minutes=60),  # order acceptance from 08:00
    Venue("XHKG", "Hong Kong Stock Exchange", "apac", "HK", "HKD", "Asia/Hong_Kong",
          ("SFC",), flat("100", "board lot set by each issuer; 100 is only the common case"),
          PriceBandedRule(_bands(("0", "0.001"), ("0.25", "0.005"), ("0.50", "0.01"),
                                 ("10", "0.02"), ("20", "0.05"), ("100", "0.1"), ("200", "0.2"),
                                 ("500", "0.5"), ("1000", "1"), ("2000", "2"), ("5000", "5")),
                          "HKEX spread table, part A", upper_inclusive=True),
          _xc("XHKG"), pre_open_minutes=30, post_close_minutes=10),  # POS; closing auction
    Venue("XSHG", "Shanghai Stock Exchange", "apac", "CN", "CNY", "Asia/Shanghai",
          ("CSRC",), flat("100", "buy in lots of 100 shares; odd lots may be sold"),
          flat("0.01", "CNY 0.01 for A shares"),
          _xc("XSHG"), pre_open_minutes=15),  # opening call auction 09:15-09:25
    Venue("XASX", "Australian Securities Exchange", "apac", "AU", "AUD", "Australia/Sydney",
          ("ASIC",), flat("1", "no board lot; a first holding must be a marketable parcel (AUD 500)"),
          ASX_TICK, _xc("XASX"), pre_open_minutes=180, post_close_minutes=12),  # pre-open 07:00; CSPA
    Venue("XNSE", "National Stock Exchange of India", "apac", "IN", "INR", "Asia/Kolkata",
          ("SEBI",), ONE_SHARE, flat("0.05", "INR 0.05 (simplified; NSE also bands by price)"),
          CalendarSource("pandas_market_calendars", "NSE"),
          pre_open_minutes=15, post_close_minutes=30),  # pre-open 09:00; post-close to 16:00
    # Alternative venues (issue 17): real ISO 10383 MICs trading the covered markets' shares
    # beside their primary listings. Each follows its primary market's calendar (their own
    # hours are that market's continuous session; their few extra minutes, such as
    # Japannext's night session, are not modelled) and its tick and lot rules.
    Venue("BATS", "Cboe BZX Exchange", "americas", "US", "USD", "America/New_York",
          ("SEC", "FINRA"), US_LOT, US_TICK, _xc("XNYS"), alternative_to="XNYS"),
    Venue("ARCX", "NYSE Arca", "americas", "US", "USD", "America/New_York",
          ("SEC", "FINRA"), US_LOT, US_TICK, _xc("XNYS"), alternative_to="XNYS"),
    Venue("IEXG", "Investors Exchange (IEX)", "americas", "US", "USD", "America/New_York",
          ("SEC", "FINRA"), US_LOT, US_TICK, _xc("XNYS"), alternative_to="XNYS"),
    Venue("CHIX", "Cboe Europe (CXE order books)", "emea", "GB", "GBP", "Europe/London",
          ("FCA",), ONE_SHARE, MIFID_LIQUID, _xc("XLON"), alternative_to="XLON"),
    Venue("TRQX", "Turquoise", "emea", "GB", "GBP", "Europe/London",
          ("FCA",), ONE_SHARE, MIFID_LIQUID, _xc("XLON"), alternative_to="XLON"),
    Venue("AQXE", "Aquis Exchange", "emea", "GB", "GBP", "Europe/London",
          ("FCA",), ONE_SHARE, MIFID_LIQUID, _xc("XLON"), alternative_to="XLON"),
    Venue("CEUX", "Cboe Europe B.V. (DXE)", "emea", "NL", "EUR", "Europe/Amsterdam",
          ("AFM",), ONE_SHARE, MIFID_LIQUID, _xc("XETR"), alternative_to="XETR"),
    Venue("AQEU", "Aquis Exchange Europe", "emea", "FR", "EUR", "Europe/Paris",
          ("AMF",), ONE_SHARE, MIFID_LIQUID, _xc("XETR"), alternative_to="XETR"),
    Venue("CHIJ", "Cboe Japan", "apac", "JP", "JPY", "Asia/Tokyo",
          ("JFSA",), flat("100", "trading unit of 100 shares"), TSE_TICK, _xc("XTKS"), alternative_to="XTKS"),
    Venue("SBIJ", "Japannext", "apac", "JP", "JPY", "Asia/Tokyo",
          ("JFSA",), flat("100", "trading unit of 100 shares"), TSE_TICK, _xc("XTKS"), alternative_to="XTKS"),
    Venue("CXAC", "Cboe Australia", "apac", "AU", "AUD", "Australia/Sydney",
          ("ASIC",), flat("1", "no board lot"), ASX_TICK, _xc("XASX"), alternative_to="XASX"),
    # Global
    # "XX": no country (a user-assigned ISO 3166 code).
    Venue(ALWAYS_OPEN_MIC, "Alphintra 24/7 digital assets venue", "global", "XX", "USD", "UTC",
          (), flat("0.00000001", "fractional quantities to 1e-8"), flat("0.01", "USD 0.01"),
          None),
)
