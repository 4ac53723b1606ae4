"""Validation rules that bound what one operation may ask: depth, aliases and cost.

Cost is static per document, so it is cached with validation: each field costs 1, and a field
with a `first`/`last`/`limit` argument multiplies its subtree by that number (by the page-size
maximum when the number comes from a variable).

Introspection counts like any other field (aliases, cost, depth), with one allowance so the
standard introspection query (graphql-core's and graphql-js's `getIntrospectionQuery`, which
GraphiQL and Apollo send: depth 15, three nested lists `types → fields → args`) still runs:

- an operation holds at most one introspection root (`__schema` or `__type`): the response of
  one is bounded by the schema's size, and repeating it under aliases is how one request
  multiplied a 460 kB answer into 13.8 MB;
- inside that root, the depth limit is `INTROSPECTION_MAX_DEPTH` instead of `max_depth`
  (a chain of `ofType` walks the wrappers of one type reference and adds no breadth), but at
  most `INTROSPECTION_MAX_LISTS` list fields may nest (as Apollo Router's rule: the standard
  query nests three; `types { fields { type { fields … } } }` would grow with the schema's
  size to a power), and no alias may appear (an alias is the only way to select the same list
  twice).

`__typename` is an ordinary leaf field here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from graphql import (
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLError,
    InlineFragmentNode,
    IntValueNode,
    OperationDefinitionNode,
    SelectionSetNode,
    ValidationContext,
    ValidationRule,
    VariableNode,
)

from gateway.errors import QUERY_TOO_COMPLEX

PAGE_ARGS = ("first", "last", "limit")
INTROSPECTION_ROOTS = frozenset({"__schema", "__type"})
# Fields of the introspection types that answer lists (their nesting is what grows a response).
INTROSPECTION_LISTS = frozenset({"types", "directives", "fields", "args", "interfaces",
                                 "possibleTypes", "enumValues", "inputFields", "locations"})
INTROSPECTION_MAX_ROOTS = 1
INTROSPECTION_MAX_DEPTH = 20
INTROSPECTION_MAX_LISTS = 3


@dataclass
class _Walk:
    """What one operation's walk found beyond depth, aliases and cost."""

    roots: int = 0
    lists: int = 0  # deepest nesting of list fields inside an introspection root
    introspection_depth: int = 0
    inner_aliases: list[str] = field(default_factory=list)


def limits_rule(max_depth: int, max_aliases: int, max_cost: int, max_page: int) -> type[ValidationRule]:
    class OperationLimits(ValidationRule):
        def __init__(self, context: ValidationContext) -> None:
            super().__init__(context)
            self.fragments: dict[str, FragmentDefinitionNode] = {}

        def enter_document(self, node: Any, *_: Any) -> None:
            self.fragments = {
                d.name.value: d for d in node.definitions if isinstance(d, FragmentDefinitionNode)
            }

        def enter_operation_definition(self, node: OperationDefinitionNode, *_: Any) -> None:
            walk = _Walk()
            depth, aliases, cost = self._measure(node.selection_set, 0, frozenset(), walk, None)
            name = node.name.value if node.name else "anonymous"
            for what, value, limit in (("depth", depth, max_depth), ("aliases", aliases, max_aliases),
                                       ("cost", cost, max_cost)):
                if value > limit:
                    self._refuse(node, f"operation {name} has {what} {value}, over the limit of {limit}",
                                 what, value, limit)
            if walk.roots > INTROSPECTION_MAX_ROOTS:
                self._refuse(node, f"operation {name} has {walk.roots} introspection fields "
                             f"(__schema, __type); at most {INTROSPECTION_MAX_ROOTS} per operation",
                             "introspection", walk.roots, INTROSPECTION_MAX_ROOTS)
            if walk.lists > INTROSPECTION_MAX_LISTS:
                self._refuse(node, f"operation {name} nests {walk.lists} introspection lists, over "
                             f"the limit of {INTROSPECTION_MAX_LISTS}",
                             "introspectionLists", walk.lists, INTROSPECTION_MAX_LISTS)
            if walk.introspection_depth > INTROSPECTION_MAX_DEPTH:
                self._refuse(node, f"operation {name} has introspection depth "
                             f"{walk.introspection_depth}, over the limit of {INTROSPECTION_MAX_DEPTH}",
                             "introspectionDepth", walk.introspection_depth, INTROSPECTION_MAX_DEPTH)
            if walk.inner_aliases:
                self._refuse(node, f"operation {name} uses aliases inside introspection "
                             f"({', '.join(sorted(set(walk.inner_aliases)))}); none are allowed there",
                             "introspectionAliases", len(walk.inner_aliases), 0)

        def _refuse(self, node: OperationDefinitionNode, message: str, what: str, value: int,
                    limit: int) -> None:
            self.report_error(GraphQLError(message, node, extensions={
                "code": QUERY_TOO_COMPLEX, "limit": what, "value": value, "maximum": limit}))

        def _measure(self, selection_set: SelectionSetNode | None, depth: int, seen: frozenset[str],
                     walk: _Walk, lists: int | None) -> tuple[int, int, int]:
            """(depth outside introspection, aliases, cost) of `selection_set`; `lists` is the
            list nesting so far inside an introspection root (None: outside one)."""
            if selection_set is None:
                return depth, 0, 0
            max_d, aliases, cost = depth, 0, 0
            for sel in selection_set.selections:
                if isinstance(sel, FieldNode):
                    name = sel.name.value
                    inner = lists
                    if lists is None and name in INTROSPECTION_ROOTS:
                        walk.roots += 1
                        inner = 0
                    elif lists is not None:
                        if sel.alias is not None:
                            walk.inner_aliases.append(sel.alias.value)
                        if name in INTROSPECTION_LISTS:
                            inner = lists + 1
                            walk.lists = max(walk.lists, inner)
                    d, a, c = self._measure(sel.selection_set, depth + 1, seen, walk, inner)
                    if inner is None:
                        max_d = max(max_d, d)
                    else:  # inside introspection: held to its own depth allowance
                        walk.introspection_depth = max(walk.introspection_depth, d)
                    aliases += a + (1 if sel.alias else 0)
                    cost += 1 + c * self._multiplier(sel)
                elif isinstance(sel, InlineFragmentNode):
                    d, a, c = self._measure(sel.selection_set, depth, seen, walk, lists)
                    max_d, aliases, cost = max(max_d, d), aliases + a, cost + c
                elif isinstance(sel, FragmentSpreadNode):
                    frag = self.fragments.get(sel.name.value)
                    if frag is None or sel.name.value in seen:
                        continue  # unknown or cyclic: other rules report it
                    d, a, c = self._measure(frag.selection_set, depth, seen | {sel.name.value},
                                            walk, lists)
                    max_d, aliases, cost = max(max_d, d), aliases + a, cost + c
            return max_d, aliases, cost

        @staticmethod
        def _multiplier(node: FieldNode) -> int:
            for arg in node.arguments or ():
                if arg.name.value in PAGE_ARGS:
                    if isinstance(arg.value, IntValueNode):
                        return max(1, int(arg.value.value))
                    if isinstance(arg.value, VariableNode):
                        return max_page
            return 1

    return OperationLimits
