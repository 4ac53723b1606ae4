"""A tenant's schema: the core schema plus the schema extensions of the plugins it installed.

Called by the installation service (through the composer the app hands it), at install,
upgrade, rollback and start-up, never on a request. Refuses name collisions (a type or a root
field defined twice, by two plugins or by a plugin and the core) with PLUGIN_SCHEMA_CONFLICT
naming the plugin, makes a plugin's root fields nullable (a failing one answers null and an
error, and the rest of the request its data), and wraps every resolver a plugin contributes
with the service's guard (timeout, PLUGIN_FAILED naming the plugin, its bound context, metering).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from graphql import (
    GraphQLNamedType,
    GraphQLNonNull,
    GraphQLObjectType,
    GraphQLSchema,
    GraphQLUnionType,
    get_named_type,
)
from strawberry.exceptions import DuplicatedTypeName

from gateway.settings import Settings
from marketplace.tenant_plugins import ComposedSchema, Guard, SchemaConflict
from plugins.sdk import SchemaExtension
from schema.compose import build_schema

ROOTS = ("query", "mutation", "subscription")


def _field_names(cls: type | None) -> list[str]:
    definition = getattr(cls, "__strawberry_definition__", None)
    if definition is None:
        return []
    return [f.graphql_name or _camel(f.python_name) for f in definition.fields]


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


def _type_name(cls: type) -> str | None:
    definition = getattr(cls, "__strawberry_definition__", None)
    return definition.name if definition is not None else None


def tenant_composer(settings: Settings) -> Callable[[Sequence[tuple[str, Sequence[SchemaExtension]]], Guard],
                                                   ComposedSchema]:
    core: GraphQLSchema = build_schema(settings)._schema
    core_roots = {root: set(getattr(core, f"{root}_type").fields) if getattr(core, f"{root}_type")
                  else set() for root in ROOTS}

    def compose(contributions: Sequence[tuple[str, Sequence[SchemaExtension]]], guard: Guard
                ) -> ComposedSchema:
        owners: dict[tuple[str, str], str] = {}
        for plugin_id, extensions in contributions:
            for extension in extensions:
                if not isinstance(extension, SchemaExtension):
                    raise TypeError(f"{plugin_id}: alphintra_schema_extensions returned a "
                                    f"{type(extension).__name__}, not a SchemaExtension")
                for root in ROOTS:
                    for name in _field_names(getattr(extension, root)):
                        other = owners.get((root, name)) or ("the core schema"
                                                             if name in core_roots[root] else None)
                        if other is not None:
                            raise SchemaConflict(plugin_id, f"{root} field {name!r} is also "
                                                            f"defined by {other}")
                        owners[(root, name)] = plugin_id
                for cls in extension.types:
                    name = _type_name(cls)
                    if name in core.type_map:
                        raise SchemaConflict(plugin_id, f"type {name!r} is defined by the core schema")
        extensions = [e for _, exts in contributions for e in exts]
        try:
            schema = build_schema(settings, extensions)
        except DuplicatedTypeName as exc:
            blamed = contributions[-1][0] if contributions else "?"
            raise SchemaConflict(blamed, str(exc).splitlines()[0]) from None
        gql: GraphQLSchema = schema._schema
        root_fields: dict[tuple[str, str], str] = {}
        owned_types: dict[str, str] = {}
        for (root, name), plugin_id in owners.items():
            root_type = getattr(gql, f"{root}_type")
            field = root_type.fields[name]
            root_fields[(root, name)] = plugin_id
            if root == "subscription":
                field.subscribe = guard(plugin_id, field.subscribe, "subscription")
            else:
                field.resolve = guard(plugin_id, field.resolve, root)
                # Nullable, so a failing plugin field nulls itself, not the whole answer.
                if isinstance(field.type, GraphQLNonNull):
                    field.type = field.type.of_type
            for named in _reachable(field.type, field.args):
                if (named.name not in core.type_map
                        and owned_types.setdefault(named.name, plugin_id) != plugin_id):
                    raise SchemaConflict(plugin_id, f"type {named.name!r} is also defined "
                                                    f"by {owned_types[named.name]}")
        for type_name, plugin_id in owned_types.items():
            named = gql.type_map[type_name]
            if isinstance(named, GraphQLObjectType):
                for field in named.fields.values():
                    if field.resolve is not None:
                        field.resolve = guard(plugin_id, field.resolve, "field")
        return ComposedSchema(schema=schema, gql=gql, root_fields=root_fields,
                              execution_context_class=getattr(schema, "execution_context_class", None))

    return compose


def _reachable(output: Any, args: dict[str, Any]) -> list[GraphQLNamedType]:
    """Named types reachable from a field's type and arguments."""
    seen: dict[str, GraphQLNamedType] = {}
    todo = [get_named_type(output), *(get_named_type(a.type) for a in args.values())]
    while todo:
        named = todo.pop()
        if named.name in seen or named.name.startswith("__"):
            continue
        seen[named.name] = named
        fields = getattr(named, "fields", None)
        if fields:
            for field in fields.values():
                todo.append(get_named_type(field.type))
                todo.extend(get_named_type(a.type) for a in getattr(field, "args", {}).values())
        todo.extend(getattr(named, "interfaces", ()) or ())
        if isinstance(named, GraphQLUnionType):
            todo.extend(named.types)
    return list(seen.values())
