"""What every report shares: the period, the scope, plain Decimal text, CSV bytes."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any


@dataclass(frozen=True)
class Period:
    """[start, end): a report covers what happened from `start` up to, not including, `end`."""

    start: datetime
    end: datetime


@dataclass(frozen=True)
class Scope:
    """Which trades a report covers besides the period: instrument classes (market data's:
    EQUITY, ETF, BOND, FUTURE, CRYPTO, FX...), venues (MICs) and accounts (codes). An empty
    set is no filter."""

    instrument_classes: frozenset[str] = frozenset()
    venues: frozenset[str] = frozenset()
    accounts: frozenset[str] = frozenset()

    def admits_class(self, instrument_class: str) -> bool:
        return not self.instrument_classes or instrument_class in self.instrument_classes

    def as_json(self) -> dict[str, list[str]]:
        return {name: sorted(values) for name, values in (
            ("instrumentClasses", self.instrument_classes), ("venues", self.venues),
            ("accounts", self.accounts)) if values}

    @classmethod
    def of(cls, value: Any) -> Scope:
        """From `as_json`'s form (a job's parameters); None or {} is everything."""
        value = value or {}
        return cls(frozenset(value.get("instrumentClasses") or ()),
                   frozenset(value.get("venues") or ()), frozenset(value.get("accounts") or ()))


EVERYTHING = Scope()


def decimal_text(value: Decimal | None) -> str:
    """Fixed-point, no exponent, no trailing zeros: "100", "0.0005", "-12.5"."""
    if value is None:
        return ""
    text = format(value.normalize(), "f")
    return "0" if text in {"-0", "0"} else text


def instant_text(at: datetime) -> str:
    """UTC to the microsecond with a Z, as RTS 22 and Part 45 write instants."""
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, Decimal):
        return decimal_text(value)
    if isinstance(value, datetime):
        return instant_text(value)
    return str(value)


def csv_bytes(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")  # RFC 4180
    writer.writerow(header)
    for row in rows:
        writer.writerow([cell(v) for v in row])
    return out.getvalue().encode("utf-8")
