"""What every report shares: the period, plain Decimal text, CSV bytes."""

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
