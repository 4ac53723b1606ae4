"""Compiled execution plans (gateway/http/plan/): each answer compared with graphql-core's
on the same schema, document and variables, plus what the plan answers of its own."""

from __future__ import annotations

import asyncio
import datetime as dt
import enum
from collections.abc import AsyncIterator
from dataclasses import replace
from decimal import Decimal
from typing import Any

import pytest
import strawberry
from graphql import ExecutionResult, GraphQLError, execute, parse, validate
from graphql.execution import Executor
from strawberry.permission import BasePermission

from gateway.http.graphql import GraphQLEndpoint
from gateway.http.plan import Plan, PlanMismatch, compile_plan, plan_difference
from gateway.marketplace.tenant_plugins import PluginSchema
from gateway.observability.metrics import Metrics
from schema import plugin_fields
from schema.tenant import tenant_composer


class Boom(Exception):
    pass


@strawberry.enum
class Side(enum.Enum):
    BUY = "buy"
    SELL = "sell"


class Denied(BasePermission):
    message = "not for you"

    def has_permission(self, source: Any, info: Any, **kwargs: Any) -> bool:
        return False


@strawberry.interface
class Named:
    name: str


@strawberry.type
class Child(Named):
    value: int
    side: Side
    at: dt.datetime
    amount: Decimal

    @strawberry.field
    def must(self) -> str:  # non-null, fails for odd values
        if self.value % 2:
            raise Boom(f"odd {self.value}")
        return "even"

    @strawberry.field
    def may(self) -> str | None:
        if self.value == 3:
            raise Boom("three")
        return f"may {self.value}"

    @strawberry.field(permission_classes=[Denied])
    def secret(self) -> str | None:
        return "never"

    @strawberry.field
    def null_must(self) -> str:
        return None  # type: ignore[return-value]

    @strawberry.field
    def scaled(self, by: int = 1) -> int:
        return self.value * by


@strawberry.type
class Other(Named):
    size: int


@strawberry.type
class Holder:
    child: Child
    maybe_child: Child | None


def child(value: int) -> Child:
    return Child(name=f"c{value}", value=value, side=Side.BUY if value % 2 else Side.SELL,
                 at=dt.datetime(2025, 1, 2, 3, 4, 5, tzinfo=dt.UTC), amount=Decimal("1.50"))


@strawberry.type
class Query:
    @strawberry.field
    def children(self, count: int = 4) -> list[Child]:
        return [child(v) for v in range(count)]

    @strawberry.field
    def strict_children(self) -> list[Child]:
        return [child(v) for v in range(4)]

    @strawberry.field
    def holder(self, value: int = 1) -> Holder | None:
        return Holder(child=child(value), maybe_child=child(value))

    @strawberry.field
    def named(self) -> list[Named]:
        return [child(2), Other(name="o", size=3)]

    @strawberry.field
    def not_a_list(self) -> list[int] | None:
        return 5  # type: ignore[return-value]

    @strawberry.field
    async def slow(self) -> int:
        return 1

    @strawberry.field
    def viewer(self, info: strawberry.Info) -> str:
        return f"{info.field_name}@{'.'.join(map(str, info.path.as_list()))}:{info.context['who']}"


@strawberry.type
class Mutation:
    @strawberry.mutation
    def bump(self, info: strawberry.Info, by: int) -> int:
        info.context["counter"] = info.context.get("counter", 0) + by
        return info.context["counter"]


@strawberry.type
class Subscription:
    @strawberry.subscription
    async def ticks(self) -> AsyncIterator[int]:
        yield 1


SCHEMA = strawberry.Schema(query=Query, mutation=Mutation, subscription=Subscription, types=[Other])
GQL = SCHEMA._schema
EXECUTOR = SCHEMA.execution_context_class


def both(query: str, variables: dict[str, Any] | None = None, operation_name: str | None = None,
         gql: Any = GQL, executor: Any = EXECUTOR, context: Any = None) -> tuple[ExecutionResult, Plan]:
    """The compiled answer, after checking it equals graphql-core's."""
    document = parse(query)
    assert not validate(gql, document)
    operation = next(d for d in document.definitions if getattr(d, "operation", None) is not None
                     and (operation_name is None or d.name.value == operation_name))
    plan = compile_plan(gql, document, operation, executor)
    assert plan is not None
    compiled = plan.execute(context if context is not None else {"who": "me"}, variables, 20, False)
    assert compiled is not None, "the variant did not compile"
    expected = execute(gql, document, context_value=context if context is not None else {"who": "me"},
                       variable_values=variables, operation_name=operation_name,
                       max_coercion_errors=20, executor_class=executor)
    assert plan_difference(compiled, expected) is None
    return compiled, plan


def formatted(result: ExecutionResult) -> list[dict[str, Any]]:
    return [e.formatted for e in result.errors or ()]


def test_non_null_errors_null_the_nearest_nullable_parent() -> None:
    result, _ = both("{ holder(value: 3) { child { must value } maybeChild { value } } }")
    # Child.must is non-null, Holder.child is non-null: holder (nullable) becomes null
    assert result.data == {"holder": None}
    assert formatted(result) == [{"message": "odd 3", "locations": [{"line": 1, "column": 30}],
                                  "path": ["holder", "child", "must"]}]
    result, _ = both("{ holder(value: 3) { maybeChild { must } child { value } } }")
    assert result.data == {"holder": {"maybeChild": None, "child": {"value": 3}}}
    result, _ = both("{ holder { child { nullMust } } }")
    assert result.data == {"holder": None}
    assert result.errors[0].message == "Cannot return null for non-nullable field Child.nullMust."


def test_errors_in_lists_carry_their_index_in_order() -> None:
    result, _ = both("{ children { value may } }")
    assert result.data["children"][3] == {"value": 3, "may": None}
    assert [e.path for e in result.errors] == [["children", 3, "may"]]
    # a non-null item's error nulls the item; [Child!]! then nulls the list, up to data
    result, _ = both("{ children { must } }")
    assert result.data is None
    assert [e.path for e in result.errors] == [["children", 1, "must"]]
    result, _ = both("{ viewer strictChildren { value must } }")
    assert result.data is None
    assert [e.path for e in result.errors] == [["strictChildren", 1, "must"]]
    result, _ = both("{ notAList }")
    assert result.data == {"notAList": None}
    assert result.errors[0].message == "Expected Iterable, but did not find one for field 'Query.notAList'."


def test_aliases_fragments_and_inline_fragments_merge() -> None:
    query = """
      query Q { a: children(count: 2) { ...F value v2: value ... on Child { name value } }
                b: children(count: 1) { __typename name }
                named { __typename name ... on Other { size } ... on Child { value } } }
      fragment F on Child { side scaled(by: 3) }
    """
    result, _ = both(query)
    assert result.data["a"] == [
        {"side": "SELL", "scaled": 0, "value": 0, "v2": 0, "name": "c0"},
        {"side": "BUY", "scaled": 3, "value": 1, "v2": 1, "name": "c1"}]
    assert list(result.data["a"][0]) == ["side", "scaled", "value", "v2", "name"]
    assert result.data["b"] == [{"__typename": "Child", "name": "c0"}]
    assert result.data["named"] == [{"__typename": "Child", "name": "c2", "value": 2},
                                    {"__typename": "Other", "name": "o", "size": 3}]


def test_skip_and_include_with_variables_compile_one_variant_each() -> None:
    query = """query ($a: Boolean!, $b: Boolean = true, $n: Int) {
      children(count: $n) {
        value @skip(if: $a) name @include(if: $b) ... on Child @include(if: $a) { side } } }"""
    r1, plan = both(query, {"a": True, "n": 1})
    assert r1.data == {"children": [{"name": "c0", "side": "SELL"}]}
    r2, _ = both(query, {"a": False, "b": False, "n": 2})
    assert r2.data == {"children": [{"value": 0}, {"value": 1}]}
    assert plan.switches == ("a", "b")
    # same plan, other switches: a second variant; other variables, the same variant
    assert plan.execute({}, {"a": False, "b": False, "n": 3}, 20, False).data == {
        "children": [{"value": 0}, {"value": 1}, {"value": 2}]}
    plan.execute({}, {"a": True, "n": 3}, 20, False)
    assert set(plan._variants) == {(True, True), (False, False)}


def test_enums_and_scalars_serialize_as_graphql_core_does() -> None:
    result, _ = both("{ children(count: 2) { side at amount value name } }")
    assert result.data["children"][1] == {"side": "BUY", "at": "2025-01-02T03:04:05+00:00",
                                          "amount": "1.50", "value": 1, "name": "c1"}


def test_resolvers_get_a_real_info_and_permissions_apply() -> None:
    result, _ = both("{ viewer holder { child { secret } } }")
    assert result.data == {"viewer": "viewer@viewer:me", "holder": {"child": {"secret": None}}}
    assert result.errors[0].message == "not for you"


def test_variables_that_do_not_coerce_answer_request_errors() -> None:
    query = "query ($n: Int!) { children(count: $n) { value } }"
    result, _ = both(query, {"n": "x"})
    assert result.data is None and result.errors[0].path is None
    result, _ = both(query, {})
    assert "to be provided" in result.errors[0].message


def test_mutations_run_root_fields_in_turn() -> None:
    context: dict[str, Any] = {}
    document = parse("mutation { a: bump(by: 1) b: bump(by: 10) c: bump(by: 100) }")
    plan = compile_plan(GQL, document, document.definitions[0], EXECUTOR)
    assert plan is not None
    result = plan.execute(context, None, 20, False)
    assert result is not None and result.data == {"a": 1, "b": 11, "c": 111}


def test_what_does_not_compile_falls_back() -> None:
    for query in ("{ __schema { queryType { name } } }", "subscription { ticks }",
                  "{ children { value } __type(name: \"Child\") { name } }"):
        document = parse(query)
        assert compile_plan(GQL, document, document.definitions[0], EXECUTOR) is None, query
    # async resolvers are found when the variant compiles: nothing has run yet
    document = parse("query ($s: Boolean!) { children { value } slow @include(if: $s) }")
    plan = compile_plan(GQL, document, document.definitions[0], EXECUTOR)
    assert plan is not None
    assert plan.execute({}, {"s": True}, 20, False) is None
    skipped = plan.execute({}, {"s": False}, 20, False)
    assert skipped is not None and skipped.data == {"children": [{"value": v} for v in range(4)]}


def test_an_unexpected_awaitable_is_a_field_error_not_a_hang() -> None:
    # A sync function answering a coroutine (as a plugin field would under an event loop).
    async def later() -> int:
        return 1

    gql = strawberry.Schema(query=Query)._schema
    gql.query_type.fields["viewer"].resolve = lambda *_a, **_k: later()
    document = parse("{ viewer }")
    plan = compile_plan(gql, document, document.definitions[0], EXECUTOR)
    assert plan is not None
    result = plan.execute({}, None, 20, False)
    assert result is not None and result.data is None
    assert "awaitable" in result.errors[0].message


PLUGIN_SDL = """
type Query { acmeQuote(symbol: String!): AcmeQuote }
enum AcmeVenue { XNAS XLON }
type AcmeQuote { symbol: String! price: Float! venue: AcmeVenue! tags: [String!]! }
"""


class FakeForwarder:
    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []

    def plugin_graphql(self, tenant_id: str, plugin_id: str, document: str, variables: dict[str, Any],
                       view: Any) -> dict[str, Any]:
        self.calls.append((document, variables))
        if variables.get("s") == "FAIL":
            return {"errors": [{"type": "ValueError"}]}
        # the worker answers serialized leaves under the response keys it was asked
        return {"data": {"q": {"symbol": variables.get("s"), "price": 1.25, "venue": "XNAS",
                               "tags": ["a", "b"], "__typename": "AcmeQuote"}}}


class PluginContext:
    tenant_id = "t1"
    plugin_view = None


@pytest.fixture(scope="module")
def plugin_schema(settings: Any) -> Any:
    forwarder = FakeForwarder()
    contribution = ("acme.quotes", PluginSchema(PLUGIN_SDL, {"query": ("acmeQuote",)}))
    composed = tenant_composer(settings)([contribution], forwarder)
    # the marketplace gives each composed schema a key of its own (tenant_plugins.py)
    return replace(composed, key="acme-quotes-1", content="acme-quotes"), forwarder


def test_plugin_fields_run_compiled_with_their_preserialized_leaves(plugin_schema: Any) -> None:
    composed, forwarder = plugin_schema
    assert composed.execution_context_class is plugin_fields.PluginAwareExecutor
    query = "query ($s: String!) { q: acmeQuote(symbol: $s) { symbol price venue tags } }"
    result, _ = both(query, {"s": "AAPL"}, gql=composed.gql, executor=composed.execution_context_class,
                     context=PluginContext())
    assert result.data == {"q": {"symbol": "AAPL", "price": 1.25, "venue": "XNAS", "tags": ["a", "b"]}}
    result, _ = both(query, {"s": "FAIL"}, gql=composed.gql, executor=composed.execution_context_class,
                     context=PluginContext())
    assert result.data == {"q": None} and result.errors[0].path == ["q"]
    assert len(forwarder.calls) == 4  # each path called the worker once per request


def test_the_plan_cache_is_keyed_by_schema(runtime: Any, plugin_schema: Any) -> None:
    """The same query text prepared for the core schema and for a tenant's schema with a plugin
    field gets a plan of its own, each bound to its own schema and executor."""
    composed, _ = plugin_schema
    endpoint = GraphQLEndpoint(SCHEMA, runtime, Metrics(runtime.db))
    endpoint.execution = "compiled"  # the suite's runtime says verify
    query = "{ __typename }"
    core = endpoint.prepare(query)
    tenant = endpoint.prepare(query, composed)
    assert core.document is not tenant.document
    cases = ((core, None, GQL, EXECUTOR),
             (tenant, composed, composed.gql, composed.execution_context_class))
    for prepared, schema, gql, executor in cases:
        operation = prepared.document.definitions[0]
        result = endpoint._execute(lambda _v: pytest.fail("compiled, never graphql-core"), gql,
                                   prepared.document, operation, schema, executor, PluginContext(), {})
        assert result.data == {"__typename": "Query"}
    plans = {key[0]: plan for key, (_doc, plan) in endpoint.plans._data.items()}
    assert set(plans) == {"core", composed.key}
    assert plans["core"].schema is GQL and plans["core"].executor_class is EXECUTOR
    assert plans[composed.key].schema is composed.gql
    assert plans[composed.key].executor_class is plugin_fields.PluginAwareExecutor


def test_verify_refuses_a_difference(runtime: Any) -> None:
    endpoint = GraphQLEndpoint(SCHEMA, runtime, Metrics(runtime.db))
    endpoint.execution = "verify"  # as ALPHINTRA_EXECUTION=verify sets it
    prepared = endpoint.prepare("{ children(count: 1) { value } }")
    operation = prepared.document.definitions[0]
    wrong = ExecutionResult({"children": [{"value": 1}]}, None)
    with pytest.raises(PlanMismatch, match="data"):
        endpoint._execute(lambda _v: wrong, GQL, prepared.document, operation, None, EXECUTOR, {}, {})
    other_error = ExecutionResult({"children": [{"value": 0}]}, [GraphQLError("extra")])
    with pytest.raises(PlanMismatch, match="errors"):
        endpoint._execute(lambda _v: other_error, GQL, prepared.document, operation, None, EXECUTOR, {}, {})
    right = endpoint._execute(lambda _v: execute(GQL, prepared.document, executor_class=EXECUTOR), GQL,
                              prepared.document, operation, None, EXECUTOR, {}, {})
    assert right.data == {"children": [{"value": 0}]}


def test_a_plain_executor_class_compiles_too() -> None:
    document = parse("{ children(count: 1) { value side } }")
    plan = compile_plan(GQL, document, document.definitions[0], None)
    assert plan is not None and plan.executor_class is Executor
    assert plan.execute({}, None, 20, False).data == {"children": [{"value": 0, "side": "SELL"}]}


def test_async_run_loop_is_not_needed() -> None:
    # The plan never creates coroutines of its own: it runs inside a running loop unchanged.
    async def inside() -> Any:
        return both("{ children(count: 1) { value } }")[0].data

    assert asyncio.run(inside()) == {"children": [{"value": 0}]}


def test_variants_are_bounded_and_beyond_them_graphql_core_answers() -> None:
    flags = [f"f{i}" for i in range(5)]
    query = (f"query ({', '.join(f'${f}: Boolean!' for f in flags)}) {{ children(count: 1) {{ "
             + " ".join(f"{f}: value @include(if: ${f})" for f in flags) + " } }")
    document = parse(query)
    plan = compile_plan(GQL, document, document.definitions[0], EXECUTOR)
    assert plan is not None
    answered = 0
    for n in range(20):
        variables = {f: bool(n >> i & 1) for i, f in enumerate(flags)}
        result = plan.execute({}, variables, 20, False)
        if result is not None:
            answered += 1
            expected = execute(GQL, document, variable_values=variables, executor_class=EXECUTOR)
            assert plan_difference(result, expected) is None
    assert answered == len(plan._variants) == 16
