"""Plugin fields in a tenant's schema: forwarded to the tenant's own plugin worker.

A root field a plugin contributes resolves by sending the worker a document holding just that
field: its arguments, its sub-selection (with `__typename` added to every selection set, so
abstract types resolve here), the fragments it spreads, and the variables it uses, serialized
as JSON. The worker answers the field's data already serialized; fields of the plugin's types
read it by response key, and leaves pass through unchanged (`PreSerialized`, honoured by
`PluginAwareExecutor`). A plugin error becomes PLUGIN_FAILED naming the plugin, for that
field only. Printed documents are cached per field node (documents are cached per schema).
"""

from __future__ import annotations

import asyncio
import threading
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from typing import Any

from graphql import (
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLList,
    GraphQLNonNull,
    GraphQLResolveInfo,
    NameNode,
    SelectionSetNode,
    VariableNode,
    Visitor,
    ast_from_value,
    is_leaf_type,
    print_ast,
    type_from_ast,
    value_from_ast_untyped,
    visit,
)
from strawberry.schema.schema import StrawberryGraphQLCoreExecutionContext

from gateway.marketplace.errors import PluginCallFailed

_TYPENAME = FieldNode(name=NameNode(value="__typename"), arguments=(), directives=())
MAX_CACHED = 2048


class PreSerialized:
    """A leaf value the plugin's worker already serialized."""

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value


class PluginAwareExecutor(StrawberryGraphQLCoreExecutionContext):
    @staticmethod
    def complete_leaf_value(return_type: Any, result: Any) -> Any:
        if type(result) is PreSerialized:
            return result.value
        return StrawberryGraphQLCoreExecutionContext.complete_leaf_value(return_type, result)


def wrap(value: Any, return_type: Any) -> Any:
    """Mark the worker's leaves as serialized, through lists and non-nulls."""
    if value is None:
        return None
    while isinstance(return_type, GraphQLNonNull):
        return_type = return_type.of_type
    if isinstance(return_type, GraphQLList):
        return [wrap(v, return_type.of_type) for v in value] if isinstance(value, list) else value
    if is_leaf_type(return_type):
        return PreSerialized(value)
    return value


def by_key(source: Any, info: GraphQLResolveInfo, **_: Any) -> Any:
    """A field of a plugin's type: the worker's answer under the field's response key."""
    value = source.get(info.path.key) if isinstance(source, dict) else None
    return wrap(value, info.return_type)


def typename_of(value: Any, info: GraphQLResolveInfo, abstract_type: Any) -> str | None:
    return value.get("__typename") if isinstance(value, dict) else None


class _AddTypename(Visitor):
    def enter_selection_set(self, node: SelectionSetNode, *_: Any) -> SelectionSetNode:
        return SelectionSetNode(selections=(*node.selections, _TYPENAME))


class _Documents:
    """Printed sub-documents by field node; bounded, thread-safe."""

    def __init__(self) -> None:
        self._data: OrderedDict[int, tuple[Any, str, tuple[str, ...]]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, info: GraphQLResolveInfo, keyword: str) -> tuple[str, tuple[str, ...]]:
        node = info.field_nodes[0]
        with self._lock:
            found = self._data.get(id(node))
            if found is not None and found[0] is node:
                return found[1], found[2]
        text, variables = _print(info, keyword)
        with self._lock:
            self._data[id(node)] = (node, text, variables)
            if len(self._data) > MAX_CACHED:
                self._data.popitem(last=False)
        return text, variables


def _print(info: GraphQLResolveInfo, keyword: str) -> tuple[str, tuple[str, ...]]:
    fragments: dict[str, FragmentDefinitionNode] = {}
    variables: set[str] = set()

    class Collect(Visitor):
        def enter_fragment_spread(self, node: FragmentSpreadNode, *_: Any) -> None:
            name = node.name.value
            if name not in fragments and name in info.fragments:
                fragments[name] = info.fragments[name]
                visit(fragments[name], self)

        def enter_variable(self, node: VariableNode, *_: Any) -> None:
            variables.add(node.name.value)

    for node in info.field_nodes:
        visit(node, Collect())
    # The field itself keeps its name and alias; @skip/@include on it were applied here.
    nodes = [FieldNode(alias=n.alias, name=n.name, arguments=n.arguments, directives=(),
                       selection_set=n.selection_set) for n in info.field_nodes]
    body = " ".join(print_ast(visit(n, _AddTypename())) for n in nodes)
    definitions = [d for d in (info.operation.variable_definitions or ())
                   if d.variable.name.value in variables]
    header = f"({', '.join(print_ast(d) for d in definitions)})" if definitions else ""
    text = f"{keyword}{header} {{ {body} }}"
    for fragment in fragments.values():
        text += "\n" + print_ast(visit(fragment, _AddTypename()))
    return text, tuple(sorted(variables))


_DOCUMENTS = _Documents()


def _variables(info: GraphQLResolveInfo, names: tuple[str, ...]) -> dict[str, Any]:
    """The used variables' values as JSON, serialized by their declared types."""
    out: dict[str, Any] = {}
    definitions = {d.variable.name.value: d for d in info.operation.variable_definitions or ()}
    for name in names:
        if name not in info.variable_values or name not in definitions:
            continue
        type_ = type_from_ast(info.schema, definitions[name].type)
        literal = ast_from_value(info.variable_values[name], type_) if type_ is not None else None
        out[name] = value_from_ast_untyped(literal) if literal is not None else None
    return out


def _field(plugin_id: str, answer: dict[str, Any], info: GraphQLResolveInfo) -> Any:
    errors = answer.get("errors") or []
    if errors:
        kinds = sorted({str(e.get("type", "Exception")) for e in errors if isinstance(e, dict)})
        raise PluginCallFailed(plugin_id, ", ".join(kinds) or "an error")
    data = answer.get("data")
    value = data.get(info.path.key) if isinstance(data, dict) else None
    return wrap(value, info.return_type)


def forward(plugin_id: str, keyword: str, service: Any) -> Callable[..., Any]:
    """The resolver of a plugin's query or mutation root field."""

    def resolve(source: Any, info: GraphQLResolveInfo, **_: Any) -> Any:
        document, names = _DOCUMENTS.get(info, keyword)
        variables = _variables(info, names)
        context = info.context
        tenant_id, view = context.tenant_id, getattr(context, "plugin_view", None)
        try:
            asyncio.get_running_loop()
        except RuntimeError:  # HTTP: the request's own thread may wait for the worker
            return _field(plugin_id, service.plugin_graphql(tenant_id, plugin_id, document, variables,
                                                            view), info)

        async def resolve_async() -> Any:  # WebSocket: never block the event loop
            answer = await service.aplugin_graphql(tenant_id, plugin_id, document, variables, view)
            return _field(plugin_id, answer, info)
        return resolve_async()

    return resolve


def forward_subscription(plugin_id: str, service: Any) -> Callable[..., AsyncIterator[Any]]:
    async def subscribe(source: Any, info: GraphQLResolveInfo, **_: Any) -> AsyncIterator[Any]:
        document, names = _DOCUMENTS.get(info, "subscription")
        variables = _variables(info, names)
        async for item in service.plugin_subscribe(info.context.tenant_id, plugin_id, document, variables):
            yield _field(plugin_id, item, info)

    return subscribe


def event(payload: Any, info: GraphQLResolveInfo, **_: Any) -> Any:
    return payload
