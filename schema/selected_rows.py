"""Selected reads of plain row-backed types (orders, trades, audit records: issue 14): which
columns a selection needs, and rows read with only those columns turned into objects of the
strawberry type carrying just what was read (schema.selection.partial).

A type declares, per GraphQL field, the columns the field reads (a computed field names the
columns its resolver reads off `self`), and per column a conversion from the column's value to
the attribute the type holds (enums, normalised Decimals); derived attributes (one attribute
computed from the row's values) come last. A field missing from the map (a new one, a
plugin's) makes `columns` answer None and the resolver read whole rows as before.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from schema.selection import Fields, partial

T = TypeVar("T")


@dataclass(frozen=True)
class RowShape(Generic[T]):
    """How rows of one table become objects of the strawberry type `cls`."""

    cls: type[T]
    fields: Mapping[str, tuple[str, ...]]
    """GraphQL field name -> the columns it reads ("__typename" and the like: none)."""
    always: tuple[str, ...] = ()
    """Columns every read selects (the cursor's, the key the loaders need)."""
    convert: Mapping[str, Callable[[Any], Any]] = field(default_factory=dict)
    """Column -> its value as the type's attribute of the same name."""
    derived: Mapping[str, tuple[str, Callable[[dict[str, Any]], Any]]] = field(
        default_factory=dict)
    """Attribute -> (the column it needs, how it is computed from the converted values)."""

    def columns(self, fields: Fields | None) -> tuple[str, ...] | None:
        """The columns a selection needs (the `always` ones first), or None when it cannot be
        mapped (the caller then reads whole rows)."""
        if fields is None or not set(fields) <= set(self.fields):
            return None
        picked: set[str] = set()
        for name in fields:
            picked.update(self.fields[name])
        # sorted: one statement (and one compiled-cache entry) per column set, whatever the
        # order a client lists its fields in
        return tuple(dict.fromkeys([*self.always, *sorted(picked)]))

    def builder(self, columns: tuple[str, ...], extra: Mapping[str, Any] | None = None
                ) -> Callable[[Any], T]:
        """Row (of a read of `columns`, in any order) -> an object carrying only those columns,
        converted, the derived attributes whose column was read, and `extra` (the same for
        every row, such as the tenant id)."""
        finish = self.values_builder(columns, extra)
        keys: tuple[str, ...] = ()  # the rows' column names: the same for every row of a read

        def build(row: Any) -> T:
            nonlocal keys
            keys = keys or row._fields
            return finish(dict(zip(keys, row, strict=True)))

        return build

    def values_builder(self, columns: tuple[str, ...], extra: Mapping[str, Any] | None = None
                       ) -> Callable[[dict[str, Any]], T]:
        """As `builder`, from a dict of column values (which it takes over)."""
        conversions = [(name, fn) for name, fn in self.convert.items() if name in columns]
        derived = [(name, fn) for name, (needs, fn) in self.derived.items() if needs in columns]
        constant = dict(extra or {})
        cls = self.cls

        def finish(values: dict[str, Any]) -> T:
            for name, fn in conversions:
                values[name] = fn(values[name])
            for name, compute in derived:
                values[name] = compute(values)
            values.update(constant)
            return partial(cls, values)

        return finish
