"""Validation rules that bound what one operation may ask: depth, aliases and cost.

Cost is static per document, so it is cached with validation: each field costs 1, and a field
with a `first`/`last`/`limit` argument multiplies its subtree by that number (by the page-size
maximum when the number comes from a variable). Introspection fields are free.
"""

from __future__ import annotations

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
            depth, aliases, cost = self._measure(node.selection_set, 0, frozenset())
            name = node.name.value if node.name else "anonymous"
            for what, value, limit in (("depth", depth, max_depth), ("aliases", aliases, max_aliases),
                                       ("cost", cost, max_cost)):
                if value > limit:
                    self.report_error(GraphQLError(
                        f"operation {name} has {what} {value}, over the limit of {limit}",
                        node, extensions={"code": QUERY_TOO_COMPLEX, "limit": what,
                                          "value": value, "maximum": limit}))

        def _measure(self, selection_set: SelectionSetNode | None, depth: int,
                     seen: frozenset[str]) -> tuple[int, int, int]:
            if selection_set is None:
                return depth, 0, 0
            max_d, aliases, cost = depth, 0, 0
            for sel in selection_set.selections:
                if isinstance(sel, FieldNode):
                    if sel.name.value.startswith("__"):
                        continue
                    d, a, c = self._measure(sel.selection_set, depth + 1, seen)
                    max_d = max(max_d, d)
                    aliases += a + (1 if sel.alias else 0)
                    cost += 1 + c * self._multiplier(sel)
                elif isinstance(sel, InlineFragmentNode):
                    d, a, c = self._measure(sel.selection_set, depth, seen)
                    max_d, aliases, cost = max(max_d, d), aliases + a, cost + c
                elif isinstance(sel, FragmentSpreadNode):
                    frag = self.fragments.get(sel.name.value)
                    if frag is None or sel.name.value in seen:
                        continue  # unknown or cyclic: other rules report it
                    d, a, c = self._measure(frag.selection_set, depth, seen | {sel.name.value})
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
