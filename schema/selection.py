"""What a query asked of a field, read off its resolver's `info`, so a resolver can read only the
columns the answer needs (issue 14, "reads that select what was asked").

Fragments and inline fragments are flattened; aliases and repeated fields merge by field name;
`@skip`/`@include` are ignored (a skipped field only widens the read). Whatever this cannot
read with certainty (a fragment on another type, a shape it does not know) answers None, and
the resolver then reads whole rows as before.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, TypeVar

from strawberry.types import Info
from strawberry.types.nodes import FragmentSpread, InlineFragment, SelectedField, Selection

T = TypeVar("T")

Fields = dict[str, list[SelectedField]]
"""Field name -> every occurrence of it in the selection (under aliases or fragments)."""


def flatten(selections: Iterable[Selection], type_name: str) -> Fields | None:
    """The fields selected on an object of `type_name`; None if a fragment names another type
    (an interface or union the object belongs to: not worth following)."""
    fields: Fields = {}
    todo = list(selections)
    while todo:
        selection = todo.pop()
        if isinstance(selection, SelectedField):
            fields.setdefault(selection.name, []).append(selection)
        elif isinstance(selection, (FragmentSpread, InlineFragment)):
            if selection.type_condition not in (None, type_name):
                return None
            todo.extend(selection.selections)
        else:
            return None
    return fields


def children(occurrences: list[SelectedField], type_name: str) -> Fields | None:
    """The fields selected under every occurrence of one field whose type is `type_name`."""
    return flatten((s for field in occurrences for s in field.selections), type_name)


def node_fields(info: Info, node_type: str) -> Fields | None:
    """The fields asked of the object a resolver returns (type `node_type`), or None."""
    return children(_current(info), node_type)


def connection_node_fields(info: Info, node_type: str, *, connection_type: str | None = None,
                           extra: frozenset[str] = frozenset()) -> Fields | None:
    """The fields asked of each node of a `Connection[node_type]` (schema/common.py) field,
    under edges -> node; {} if only cursors or page info were asked; None if the selection is
    not one this can read. A connection type of another name (`connection_type`) may carry
    fields of its own that need no node column (`extra`, such as a total count)."""
    connection = children(_current(info), connection_type or f"{node_type}Connection")
    if connection is None or not set(connection) <= {"edges", "pageInfo", "__typename", *extra}:
        return None
    edges = children(connection.get("edges", []), f"{node_type}Edge")
    if edges is None or not set(edges) <= {"cursor", "node", "__typename"}:
        return None
    return children(edges.get("node", []), node_type)


def _current(info: Info) -> list[SelectedField]:
    # One entry per field node merged under this response key (the same field repeated).
    return [s for s in info.selected_fields if isinstance(s, SelectedField)]


def partial(cls: type[T], values: dict[str, Any]) -> T:
    """An instance of the strawberry type `cls` carrying only `values`. Strawberry resolves a
    plain field by reading the attribute of that name, and only for fields the query asked for,
    so attributes the query did not ask for are never read; its `is_type_of` checks (unions,
    federation entities) see a real `cls`. Only for values built from a selection read here."""
    obj = cls.__new__(cls)
    obj.__dict__.update(values)
    return obj
