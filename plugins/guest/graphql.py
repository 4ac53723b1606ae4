"""A plugin's own GraphQL inside its worker: the schema its SchemaExtensions make, its SDL for
the gateway to compose, and execution of the sub-documents the gateway forwards.

The gateway sends, for each plugin root field a client selected, a document holding just that
field (with its arguments, sub-selection and the fragments it uses; `__typename` added to every
selection set so the gateway can resolve abstract types); the answer is the field's data as
JSON values, already serialized, or errors naming the exception type (the gateway shows the
client PLUGIN_FAILED, never a plugin's text).
"""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Sequence
from typing import Any

import strawberry
from graphql import (
    DocumentNode,
    ExecutionResult,
    GraphQLError,
    parse,
    specified_rules,
    subscribe,
    validate,
)
from graphql import execute as gql_execute
from strawberry.tools import merge_types

from plugins.sdk import SchemaExtension
from plugins.wire import PLACEHOLDER_FIELD

PLACEHOLDER = PLACEHOLDER_FIELD
MAX_DOCUMENTS = 512


@strawberry.type
class _Placeholder:
    @strawberry.field(name=PLACEHOLDER)
    def placeholder(self) -> bool | None:
        return None


class PluginGraphQL:
    def __init__(self, schema: strawberry.Schema, roots: dict[str, list[str]]) -> None:
        self.schema = schema
        self.gql = schema._schema
        self.roots = roots
        self._prepare = functools.lru_cache(maxsize=MAX_DOCUMENTS)(self._parse_and_validate)

    @classmethod
    def of(cls, extensions: Any) -> PluginGraphQL:
        if not isinstance(extensions, list) or not all(isinstance(e, SchemaExtension) for e in extensions):
            raise TypeError("alphintra_schema_extensions must answer a list of plugins.sdk.SchemaExtension")

        def merged(name: str) -> Any:
            parts = tuple(p for e in extensions if (p := getattr(e, name.lower())) is not None)
            return merge_types(name, parts) if parts else None

        query = merged("Query")
        schema = strawberry.Schema(query=query or merge_types("Query", (_Placeholder,)),
                                   mutation=merged("Mutation"), subscription=merged("Subscription"),
                                   types=[t for e in extensions for t in e.types])
        gql = schema._schema
        roots = {root: sorted(f for f in (getattr(gql, f"{root}_type").fields
                                          if getattr(gql, f"{root}_type") else ()) if f != PLACEHOLDER)
                 for root in ("query", "mutation", "subscription")}
        return cls(schema, roots)

    def describe(self) -> dict[str, Any]:
        return {"sdl": self.schema.as_str(), "roots": self.roots}

    def _parse_and_validate(self, document: str) -> DocumentNode | list[GraphQLError]:
        try:
            ast = parse(document)
        except GraphQLError as exc:
            return [exc]
        errors = validate(self.gql, ast, specified_rules)
        return errors or ast

    async def execute(self, document: str, variables: dict[str, Any]) -> dict[str, Any]:
        prepared = self._prepare(document)
        if isinstance(prepared, list):
            return _result(ExecutionResult(None, prepared))
        result = gql_execute(self.gql, prepared, variable_values=variables,
                             executor_class=self.schema.execution_context_class)
        if hasattr(result, "__await__"):
            result = await result  # type: ignore[misc]
        return _result(result)  # type: ignore[arg-type]

    async def subscribe(self, document: str, variables: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        prepared = self._prepare(document)
        if isinstance(prepared, list):
            yield _result(ExecutionResult(None, prepared))
            return
        stream = await subscribe(self.gql, prepared, variable_values=variables)
        if isinstance(stream, ExecutionResult):
            yield _result(stream)
            return
        async for item in stream:
            yield _result(item)


def _result(result: ExecutionResult) -> dict[str, Any]:
    return {"data": result.data, "errors": _errors(result.errors or ())}


def _errors(errors: Sequence[GraphQLError]) -> list[dict[str, Any]]:
    out = []
    for error in errors:
        original = error.original_error
        out.append({"path": error.path, "type": type(original).__name__ if original else "GraphQLError",
                    "message": error.message if original is None else ""})
    return out
