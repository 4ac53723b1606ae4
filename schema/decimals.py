"""The `Decimal` scalar in plain notation: strawberry's writes `str(value)`, which is "1E+1" for
a ten read back from SQLite and "1E-7" for a small price; this one writes every digit without
an exponent ("10", "0.0000001"), keeping the digits the value has ("1.50" stays "1.50"). Input
is parsed as before. The core schema (schema/compose.py) overrides Decimal with it."""

from __future__ import annotations

import dataclasses
from decimal import Decimal
from typing import Any

from strawberry.schema.types.base_scalars import DecimalDefinition

from gateway.audit.chain import plain_decimal


def serialize(value: Any) -> str:
    return plain_decimal(value) if isinstance(value, Decimal) else plain_decimal(Decimal(str(value)))


PLAIN_DECIMAL = dataclasses.replace(DecimalDefinition, serialize=serialize)
OVERRIDES: dict[object, Any] = {Decimal: PLAIN_DECIMAL}
