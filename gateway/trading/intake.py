"""Checking what a client asks for before anything is stored: `parse_order` turns raw input
into a `ValidOrder` (Decimals, enums, the instrument) or raises a DomainError with a stable
code. Nothing here touches the database."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from gateway.errors import DomainError, InvalidInput, NotFound
from gateway.trading.routing import is_smart
from plugins.builtin.compliance.validators import is_valid_isin, is_valid_lei
from plugins.sdk import Instrument, OrdType, Side, TimeInForce

MAX_CLORDID = 64
MAX_AMOUNT = Decimal("1e15")
MIN_EXPONENT = -10  # the columns' scale
# Every back-end stores it exactly (SQLite's NUMERIC is a double: 15 significant digits).
MAX_DIGITS = 15
ONE = Decimal(1)


class OrderInvalid(InvalidInput):
    code = "ORDER_INVALID"


class InstrumentNotFound(NotFound):
    code = "INSTRUMENT_UNKNOWN"


@dataclass(frozen=True)
class OrderInput:
    """A new order as a client sends it. Amounts are Decimals or decimal strings; `symbol` is a
    symbol, a SYMBOL.MIC key or an ISIN; `mic` names the venue or "SMART"."""

    client_order_id: str
    account: str
    symbol: str
    side: str
    quantity: Any
    ord_type: str = "LIMIT"
    time_in_force: str = "DAY"
    limit_price: Any = None
    stop_price: Any = None
    mic: str = "SMART"
    currency: str | None = None
    expire_at: datetime | None = None
    isin: str | None = None


@dataclass(frozen=True)
class ValidOrder:
    client_order_id: str
    account: str
    side: Side
    ord_type: OrdType
    time_in_force: TimeInForce
    quantity: Decimal
    limit_price: Decimal | None
    stop_price: Decimal | None
    requested_mic: str  # a MIC, or SMART
    currency: str
    expire_at: datetime | None
    instrument: Instrument  # the listing named (or the first listing, for SMART)


def amount(value: Any, what: str, code: str) -> Decimal:
    """A finite Decimal above zero, below 1e15, with at most 10 decimal places; floats are
    refused (they are binary fractions, not the number the client meant)."""
    if isinstance(value, (float, bool)):
        raise OrderInvalid(f"{what} must be a decimal string, not a binary float", code=code,
                           details={"field": what})
    try:
        number = value if isinstance(value, Decimal) else Decimal(str(value).strip())
    except (InvalidOperation, ValueError):
        raise OrderInvalid(f"{what} {value!r} is not a decimal number", code=code,
                           details={"field": what}) from None
    if not number.is_finite() or number <= 0 or number >= MAX_AMOUNT:
        raise OrderInvalid(f"{what} must be a finite number above 0 and below 1e15, got {value}",
                           code=code, details={"field": what, "value": str(value)})
    exponent = number.as_tuple().exponent
    if exponent < MIN_EXPONENT:  # type: ignore[operator]
        raise OrderInvalid(f"{what} {value} has more than 10 decimal places", code=code,
                           details={"field": what, "value": str(value)})
    if len(number.normalize().as_tuple().digits) > MAX_DIGITS:
        raise OrderInvalid(f"{what} {value} has more than {MAX_DIGITS} significant digits", code=code,
                           details={"field": what, "value": str(value)})
    if exponent > 0:  # type: ignore[operator]
        number = number.quantize(ONE)  # "5e4" is 50000: plain notation from here on
    return number


def _enum(kind: Any, value: Any, code: str) -> Any:
    try:
        return kind(str(value).upper())
    except ValueError:
        raise OrderInvalid(f"{value!r} is not one of {', '.join(kind)}", code=code) from None


class InstrumentIndex:
    """The listings by upper-cased symbol and ISIN, each key's in the list's order: a batch
    builds it once instead of upper-casing every listing for every order."""

    def __init__(self, instruments: list[Instrument]) -> None:
        self.instruments = instruments
        self._named: dict[str, list[Instrument]] = {}
        self._symbols: set[str] = set()
        for i in instruments:
            symbol, isin = i.symbol.upper(), (i.isin or "").upper()
            self._symbols.add(symbol)
            self._named.setdefault(symbol, []).append(i)
            if isin and isin != symbol:
                self._named.setdefault(isin, []).append(i)

    def has_symbol(self, wanted: str) -> bool:
        return wanted in self._symbols

    def named(self, wanted: str) -> list[Instrument]:
        """The listings whose symbol or ISIN is `wanted` (upper case), in the list's order."""
        return self._named.get(wanted, [])


def find_instrument(instruments: list[Instrument] | InstrumentIndex, symbol: str,
                    mic: str) -> Instrument:
    index = instruments if isinstance(instruments, InstrumentIndex) else InstrumentIndex(instruments)
    wanted = (symbol or "").strip().upper()
    if not wanted:
        raise OrderInvalid("name an instrument", code="INSTRUMENT_UNKNOWN")
    if "." in wanted and is_smart(mic) and not index.has_symbol(wanted):
        wanted, mic = wanted.rsplit(".", 1)  # a SYMBOL.MIC key (a symbol may hold a dot itself)
    looks_like_isin = len(wanted) == 12 and wanted[:2].isalpha() and wanted[2:].isalnum()
    if looks_like_isin and not index.has_symbol(wanted) and not is_valid_isin(wanted):
        raise OrderInvalid(f"{wanted} is not a valid ISIN (ISO 6166 check digit)", code="ISIN_INVALID")
    named = index.named(wanted)
    if not is_smart(mic):
        named = [i for i in named if i.mic == mic.strip().upper()]
    if not named:
        where = "" if is_smart(mic) else f" on {mic}"
        raise InstrumentNotFound(f"no instrument {symbol!r}{where}")
    return named[0]


def parse_order(raw: OrderInput, instruments: list[Instrument] | InstrumentIndex,
                now: datetime) -> ValidOrder:
    cid = raw.client_order_id
    if not isinstance(cid, str) or not cid.strip() or len(cid) > MAX_CLORDID or not cid.isprintable():
        raise OrderInvalid(f"clientOrderId must be 1 to {MAX_CLORDID} printable characters",
                           code="CLIENT_ORDER_ID_INVALID")
    if not isinstance(raw.account, str) or not raw.account.strip():
        raise OrderInvalid("name the account", code="ACCOUNT_NOT_FOUND")
    side = _enum(Side, raw.side, "ORDER_SIDE_INVALID")
    ord_type = _enum(OrdType, raw.ord_type, "ORDER_TYPE_INVALID")
    tif = _enum(TimeInForce, raw.time_in_force, "TIME_IN_FORCE_INVALID")
    quantity = amount(raw.quantity, "quantity", "QUANTITY_INVALID")
    limit = None if raw.limit_price is None else amount(raw.limit_price, "limitPrice", "PRICE_INVALID")
    stop = None if raw.stop_price is None else amount(raw.stop_price, "stopPrice", "PRICE_INVALID")
    if ord_type in (OrdType.LIMIT, OrdType.STOP_LIMIT) and limit is None:
        raise OrderInvalid(f"a {ord_type} order needs a limitPrice", code="PRICE_REQUIRED")
    if ord_type in (OrdType.STOP, OrdType.STOP_LIMIT) and stop is None:
        raise OrderInvalid(f"a {ord_type} order needs a stopPrice", code="PRICE_REQUIRED")
    if ord_type in (OrdType.MARKET, OrdType.STOP) and limit is not None:
        raise OrderInvalid(f"a {ord_type} order has no limitPrice", code="PRICE_INVALID")
    if ord_type in (OrdType.MARKET, OrdType.LIMIT) and stop is not None:
        raise OrderInvalid(f"a {ord_type} order has no stopPrice", code="PRICE_INVALID")
    if tif is TimeInForce.GTD:
        if raw.expire_at is None or raw.expire_at.tzinfo is None or raw.expire_at <= now:
            raise OrderInvalid("a GTD order needs an expireAt in the future, with its offset",
                               code="EXPIRE_AT_INVALID")
    elif raw.expire_at is not None:
        raise OrderInvalid("expireAt is for GTD orders only", code="EXPIRE_AT_INVALID")
    mic = (raw.mic or "SMART").strip().upper()
    if raw.isin is not None and not is_valid_isin(raw.isin.strip().upper()):
        raise OrderInvalid(f"{raw.isin} is not a valid ISIN (ISO 6166 check digit)", code="ISIN_INVALID")
    instrument = find_instrument(instruments, raw.symbol, mic)
    if raw.isin is not None and (instrument.isin or "") != raw.isin.strip().upper():
        raise OrderInvalid(f"{instrument.key} has ISIN {instrument.isin}, not {raw.isin}",
                           code="ISIN_MISMATCH")
    currency = (raw.currency or instrument.currency).strip().upper()
    if currency != instrument.currency:
        raise OrderInvalid(f"{instrument.key} trades in {instrument.currency}, not {currency}",
                           code="CURRENCY_MISMATCH")
    tick = instrument.tick_size
    for name, price in (("limitPrice", limit), ("stopPrice", stop)):
        if price is not None and price % tick:
            raise OrderInvalid(f"{name} {price:f} is not a multiple of the tick {tick:f} of "
                               f"{instrument.key}", code="PRICE_OFF_TICK",
                               details={"tick": format(tick, "f"), "price": format(price, "f")})
    return ValidOrder(cid.strip(), raw.account.strip(), side, ord_type, tif, quantity, limit, stop,
                      "SMART" if is_smart(mic) else mic, currency, raw.expire_at, instrument)


class ClOrdIdConflict(DomainError):
    """A ClOrdID already names an order with other terms: `details.orderId` is that order,
    `details.fields` the terms that differ."""

    code = "CLORDID_CONFLICT"
    http_status = 409


class ClOrdIdRepeated(InvalidInput):
    """A ClOrdID a batch already used for an earlier item: `details.index` is that item."""

    code = "CLORDID_DUPLICATE_IN_BATCH"


def _same_number(a: Any, b: Any) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return Decimal(a) == Decimal(b)


def differences(v: ValidOrder, row: Any, original: tuple[Any, Any] | None = None) -> list[str]:
    """The terms in which a new submission `v` differs from the stored order `row` under the
    same ClOrdID (empty: a replay). `original` gives (quantity, limit price) as first
    submitted, for an order amended since."""
    quantity, limit = original if original is not None else (row.quantity, row.limit_price)
    instrument = v.instrument
    same_instrument = ((instrument.isin is not None and instrument.isin == row.isin)
                       or instrument.symbol == row.symbol)
    if v.requested_mic != "SMART":
        same_instrument = same_instrument and row.mic == v.requested_mic
    checks = (
        ("account", v.account == row.account),
        ("symbol", same_instrument),
        ("mic", v.requested_mic == row.requested_mic),
        ("side", str(v.side) == row.side),
        ("ordType", str(v.ord_type) == row.ord_type),
        ("timeInForce", str(v.time_in_force) == row.time_in_force),
        ("quantity", _same_number(v.quantity, quantity)),
        ("limitPrice", _same_number(v.limit_price, limit)),
        ("stopPrice", _same_number(v.stop_price, row.stop_price)),
        ("currency", v.currency == row.currency),
        ("expireAt", v.expire_at == row.expire_at),
    )
    return [name for name, same in checks if not same]


class LeiInvalid(InvalidInput):
    code = "LEI_INVALID"


def check_lei(lei: str | None) -> str | None:
    if lei is None or not lei.strip():
        return None
    code = lei.strip().upper()
    if not is_valid_lei(code):
        raise LeiInvalid(f"{lei} is not a valid LEI (ISO 17442: 20 characters, check digits 97-10)")
    return code
