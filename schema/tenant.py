"""A tenant's schema: the core schema plus the types and root fields of the SDL its installed
plugins' workers reported (the gateway never imports plugin code; schema/plugin_fields.py
forwards each plugin field to the tenant's own worker).

Called by the installation service (through the composer the app hands it) at install,
upgrade, rollback, configuration and start-up, never on a request. Refuses name collisions (a
type or a root field defined twice, by two plugins or by a plugin and the core) with
PLUGIN_SCHEMA_CONFLICT naming the other party; a scalar the core also defines (DateTime, JSON
...) is the core's. A plugin's root fields are made nullable, so a failing one answers null and
an error while the rest of the request gets its data.

The core's type objects are used as they are (strawberry's enums and scalars serialize in
their own way); only the root types are new objects, holding the core's fields and the
plugins'. Plugin types are rebuilt from each plugin's SDL with references to shared scalars
pointing at the core's.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from typing import Any

from graphql import (
    GraphQLArgument,
    GraphQLEnumType,
    GraphQLField,
    GraphQLInputField,
    GraphQLInputObjectType,
    GraphQLInterfaceType,
    GraphQLList,
    GraphQLNamedType,
    GraphQLNonNull,
    GraphQLObjectType,
    GraphQLScalarType,
    GraphQLSchema,
    GraphQLUnionType,
    build_ast_schema,
    parse,
    validate_schema,
)

from gateway.marketplace.errors import PluginCallFailed
from gateway.marketplace.tenant_plugins import ComposedSchema, Forwarder, PluginSchema, SchemaConflict
from gateway.settings import Settings
from plugins.wire import PLACEHOLDER_FIELD
from schema import plugin_fields
from schema.compose import build_schema

ROOTS = ("query", "mutation", "subscription")


def tenant_composer(settings: Settings) -> Callable[[Sequence[tuple[str, PluginSchema]], Forwarder],
                                                   ComposedSchema]:
    core_strawberry = build_schema(settings)
    core: GraphQLSchema = core_strawberry._schema
    root_types = {root: getattr(core, f"{root}_type") for root in ROOTS}

    def compose(contributions: Sequence[tuple[str, PluginSchema]], forwarder: Forwarder) -> ComposedSchema:
        root_fields: dict[str, dict[str, GraphQLField]] = {root: {} for root in ROOTS}
        owners: dict[tuple[str, str], str] = {}
        plugin_types: dict[str, GraphQLNamedType] = {}
        type_owners: dict[str, str] = {}
        for plugin_id, plugin_schema in contributions:
            try:
                own = build_ast_schema(parse(plugin_schema.sdl))
            except Exception as exc:
                raise PluginCallFailed(plugin_id, f"its SDL does not build ({str(exc)[:200]})") from None
            rebuilt = _Rebuild(plugin_id, own, core, plugin_types, type_owners)
            for root in ROOTS:
                own_root = getattr(own, f"{root}_type")
                for name, field in (own_root.fields.items() if own_root is not None else ()):
                    if name == PLACEHOLDER_FIELD:
                        continue
                    other = owners.get((root, name)) or (
                        "the core schema" if root_types[root] is not None and name in root_types[root].fields
                        else None)
                    if other is not None:
                        raise SchemaConflict(plugin_id, f"{root} field {name!r} is also defined by {other}")
                    if root_types[root] is None:
                        raise SchemaConflict(plugin_id, f"the core schema has no {root} type to extend")
                    owners[(root, name)] = plugin_id
                    made = rebuilt.field(field, nullable=True)
                    if root == "subscription":
                        made.subscribe = plugin_fields.forward_subscription(plugin_id, forwarder)
                        made.resolve = plugin_fields.event
                    else:
                        made.resolve = plugin_fields.forward(plugin_id, root, forwarder)
                    root_fields[root][name] = made
            rebuilt.all_types()
        roots = {}
        for root in ROOTS:
            core_root = root_types[root]
            if core_root is None:
                roots[root] = None
                continue
            new = copy.copy(core_root)
            new.fields = {**core_root.fields, **root_fields[root]}
            roots[root] = new
        types = [t for name, t in core.type_map.items()
                 if not name.startswith("__") and t not in root_types.values()]
        try:
            gql = GraphQLSchema(query=roots["query"], mutation=roots["mutation"],
                                subscription=roots["subscription"], types=[*types, *plugin_types.values()],
                                directives=core.directives, extensions=core.extensions)
            problems = validate_schema(gql)
        except Exception as exc:
            blamed = contributions[-1][0] if contributions else "?"
            raise PluginCallFailed(blamed, f"its schema does not compose ({str(exc)[:200]})") from None
        if problems:
            blamed = contributions[-1][0] if contributions else "?"
            raise PluginCallFailed(blamed, f"its schema does not compose ({problems[0].message[:200]})")
        # The WebSocket path runs strawberry's pipeline: the core's, on this schema.
        ws = copy.copy(core_strawberry)
        ws._schema = gql
        ws.execution_context_class = plugin_fields.PluginAwareExecutor
        gql._strawberry_schema = ws  # type: ignore[attr-defined]
        return ComposedSchema(schema=ws, gql=gql, root_fields=dict(owners),
                              execution_context_class=plugin_fields.PluginAwareExecutor)

    return compose


class _Rebuild:
    """One plugin's types, rebuilt for the tenant's schema: fields read the worker's answer by
    response key, abstract types resolve by `__typename`, shared scalars are the core's."""

    def __init__(self, plugin_id: str, own: GraphQLSchema, core: GraphQLSchema,
                 made: dict[str, GraphQLNamedType], owners: dict[str, str]) -> None:
        self.plugin_id, self.own, self.core, self.made, self.owners = plugin_id, own, core, made, owners
        self.roots = {t.name for t in (own.query_type, own.mutation_type, own.subscription_type) if t}

    def all_types(self) -> None:
        for name, named in self.own.type_map.items():
            if not name.startswith("__") and name not in self.roots:
                self.named(named)

    def named(self, named: GraphQLNamedType) -> GraphQLNamedType:
        name = named.name
        core = self.core.type_map.get(name)
        if core is not None:
            if isinstance(named, GraphQLScalarType) and isinstance(core, GraphQLScalarType):
                return core  # a shared scalar (String, DateTime ...): the core's serves
            raise SchemaConflict(self.plugin_id, f"type {name!r} is defined by the core schema")
        owner = self.owners.setdefault(name, self.plugin_id)
        if owner != self.plugin_id:
            raise SchemaConflict(self.plugin_id, f"type {name!r} is also defined by {owner}")
        found = self.made.get(name)
        if found is not None:
            return found
        made: GraphQLNamedType
        if isinstance(named, GraphQLObjectType):
            made = GraphQLObjectType(
                name, lambda n=named: {k: self.field(f) for k, f in n.fields.items()},
                interfaces=lambda n=named: [self.named(i) for i in n.interfaces],
                description=named.description)
        elif isinstance(named, GraphQLInterfaceType):
            made = GraphQLInterfaceType(
                name, lambda n=named: {k: self.field(f) for k, f in n.fields.items()},
                interfaces=lambda n=named: [self.named(i) for i in n.interfaces],
                resolve_type=plugin_fields.typename_of, description=named.description)
        elif isinstance(named, GraphQLUnionType):
            made = GraphQLUnionType(name, lambda n=named: [self.named(t) for t in n.types],
                                    resolve_type=plugin_fields.typename_of, description=named.description)
        elif isinstance(named, GraphQLInputObjectType):
            made = GraphQLInputObjectType(name, lambda n=named: {
                k: GraphQLInputField(self.ref(f.type), default_value=f.default_value,
                                     description=f.description) for k, f in n.fields.items()},
                description=named.description)
        elif isinstance(named, GraphQLEnumType | GraphQLScalarType):
            made = named  # the plugin's own enum or scalar: values pass through as serialized
        else:
            raise SchemaConflict(self.plugin_id, f"type {name!r} is of an unsupported kind")
        self.made[name] = made
        return made

    def ref(self, type_: Any) -> Any:
        if isinstance(type_, GraphQLNonNull):
            return GraphQLNonNull(self.ref(type_.of_type))
        if isinstance(type_, GraphQLList):
            return GraphQLList(self.ref(type_.of_type))
        return self.named(type_)

    def field(self, field: GraphQLField, nullable: bool = False) -> GraphQLField:
        type_ = field.type.of_type if nullable and isinstance(field.type, GraphQLNonNull) else field.type
        args = {k: GraphQLArgument(self.ref(a.type), default_value=a.default_value, description=a.description,
                                   deprecation_reason=a.deprecation_reason) for k, a in field.args.items()}
        return GraphQLField(self.ref(type_), args, resolve=plugin_fields.by_key,
                            description=field.description, deprecation_reason=field.deprecation_reason)
