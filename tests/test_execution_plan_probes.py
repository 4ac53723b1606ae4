"""Hostile probes of compiled execution plans (issue 14): spec corners, permissions and field
extensions, resolver info, mutations and the plan cache, each answer compared with
graphql-core's on the same schema, document and variables (`both`)."""

from __future__ import annotations

import enum
from collections.abc import Iterator
from typing import Annotated, Any, NewType

import pytest
import strawberry
from graphql import ExecutionResult, execute, parse
from strawberry.extensions import FieldExtension
from strawberry.permission import BasePermission
from strawberry.schema.config import StrawberryConfig

from gateway.http.plan import compile_plan, plan_difference
from tests.test_execution_plan import both

SEEN: list[tuple[Any, ...]] = []


class Never(BasePermission):
    message = "needs a role you lack"

    def has_permission(self, source: Any, info: Any, **kwargs: Any) -> bool:
        return False


class Upper(FieldExtension):
    """A field extension on a field with no resolver: the plan must not read the attribute."""

    def resolve(self, next_: Any, source: Any, info: Any, **kwargs: Any) -> Any:
        return str(next_(source, info, **kwargs)).upper()


@strawberry.enum
class Colour(enum.Enum):
    RED = "red"
    BLUE = "blue"


class Other(enum.Enum):
    GREEN = "green"


def _bad_serialize(value: Any) -> Any:
    raise ValueError(f"cannot serialize {value!r}")


Fragile = NewType("Fragile", str)


@strawberry.type
class Leaf:
    name: str
    colour: Colour
    hidden: str | None = strawberry.field(default="top secret", permission_classes=[Never])
    shout: str = strawberry.field(default="quiet", extensions=[Upper()])

    @strawberry.field
    def fragile(self) -> Fragile | None:
        return Fragile("x")

    @strawberry.field
    def strict(self) -> str:
        if self.name == "bad":
            raise ValueError("bad leaf")
        return self.name

    @strawberry.field
    def where(self, info: strawberry.Info) -> str:
        raw = info._raw_info
        nodes = [(n.name.value, n.loc.start if n.loc else None) for n in raw.field_nodes]
        SEEN.append((tuple(info.path.as_list()), dict(info.variable_values), info.root_value,
                     id(info.context), nodes,
                     raw.parent_type.name, str(raw.return_type), raw.operation.name.value
                     if raw.operation.name else None, sorted(raw.fragments)))
        return "/".join(map(str, info.path.as_list()))


@strawberry.type
class Box:
    size: int


Thing = Annotated[Leaf | Box, strawberry.union("Thing")]


@strawberry.type
class Chain:
    depth: int

    @strawberry.field
    def next(self) -> Chain | None:
        return Chain(depth=self.depth + 1) if self.depth < 40 else None


def leaf(name: str, colour: Any = Colour.RED) -> Leaf:
    return Leaf(name=name, colour=colour)


@strawberry.type
class Query:
    @strawberry.field
    def leaves(self) -> list[Leaf]:
        return [leaf("a"), leaf("b")]

    @strawberry.field
    def generated(self) -> list[Leaf]:
        def items() -> Iterator[Leaf]:
            yield leaf("g1")
            yield leaf("g2")
        return items()  # type: ignore[return-value]

    @strawberry.field
    def broken_generator(self) -> list[Leaf] | None:
        def items() -> Iterator[Leaf]:
            yield leaf("g1")
            raise RuntimeError("generator broke")
        return items()  # type: ignore[return-value]

    @strawberry.field
    def nothing(self) -> list[Leaf] | None:
        return None

    @strawberry.field
    def nested(self) -> list[list[Leaf | None]]:
        # a non-null field error inside a nullable item inside a non-null list
        return [[leaf("a"), leaf("bad")], [leaf("c")]]

    @strawberry.field
    def strict_nested(self) -> list[list[Leaf]] | None:
        return [[leaf("a"), leaf("bad")], [leaf("c")]]

    @strawberry.field
    def off_enum(self) -> list[Leaf | None]:
        return [leaf("ok"), leaf("off", Other.GREEN)]

    @strawberry.field
    def things(self) -> list[Thing]:
        return [leaf("t"), Box(size=2)]

    @strawberry.field
    def one(self, flag: bool = True) -> Leaf | None:
        return leaf("one") if flag else None

    @strawberry.field
    def wrong_type(self) -> list[Thing | None]:
        return [Box(size=1), "not a thing", ValueError("an error as a value")]  # type: ignore[list-item]

    @strawberry.field
    def wrong_object(self) -> Leaf | None:
        return Box(size=1)  # type: ignore[return-value]

    @strawberry.field
    def chain(self) -> Chain:
        return Chain(depth=0)


@strawberry.type
class Mutation:
    @strawberry.mutation
    def fail(self, info: strawberry.Info) -> int | None:
        info.context.setdefault("ran", []).append("fail")
        raise ValueError("first field failed")

    @strawberry.mutation
    def fail_strict(self, info: strawberry.Info) -> int:
        info.context.setdefault("ran", []).append("fail_strict")
        raise ValueError("strict field failed")

    @strawberry.mutation
    def ok(self, info: strawberry.Info) -> int:
        info.context.setdefault("ran", []).append("ok")
        return len(info.context["ran"])


SCHEMA = strawberry.Schema(query=Query, mutation=Mutation, config=StrawberryConfig(scalar_map={
    Fragile: strawberry.scalar(name="Fragile", serialize=_bad_serialize, parse_value=str)}))
GQL = SCHEMA._schema
EXECUTOR = SCHEMA.execution_context_class


def check(query: str, variables: dict[str, Any] | None = None, operation_name: str | None = None
          ) -> ExecutionResult:
    return both(query, variables, operation_name, gql=GQL, executor=EXECUTOR)[0]


def test_merged_selections_fragments_twice_and_untyped_inline_fragments() -> None:
    result = check("""
      { leaves { name ...L ...L ... { colour name } }
        leaves { where ... on Leaf { name } }
        a: one { name } a: one { colour } }
      fragment L on Leaf { name colour ...M }
      fragment M on Leaf { where }""")
    assert result.data is not None
    assert result.data["leaves"][0] == {"name": "a", "colour": "RED", "where": "leaves/0/where"}
    assert result.data["a"] == {"name": "one", "colour": "RED"}


@pytest.mark.parametrize("variables", [{"s": True, "i": True}, {"s": False, "i": True},
                                       {"s": False, "i": False}, {"s": True, "i": False}, {}])
def test_skip_and_include_everywhere(variables: dict[str, Any]) -> None:
    result = check("""
      query ($s: Boolean = false, $i: Boolean = true) {
        leaves { name @skip(if: $s) @include(if: $i)
                 ...F @skip(if: $s) ... @include(if: $i) { colour }
                 ... on Leaf @skip(if: $i) { where } }
      }
      fragment F on Leaf { strict }""", variables)
    assert result.data is not None


def test_errors_in_lists_and_generators() -> None:
    result = check("{ nested { name strict } }")
    assert result.data == {"nested": [[{"name": "a", "strict": "a"}, None], [{"name": "c", "strict": "c"}]]}
    assert [e.path for e in result.errors or ()] == [["nested", 0, 1, "strict"]]
    result = check("{ strictNested { strict } leaves { name } }")
    assert result.data == {"strictNested": None, "leaves": [{"name": "a"}, {"name": "b"}]}
    result = check("{ generated { name } nothing { name } }")
    assert result.data == {"generated": [{"name": "g1"}, {"name": "g2"}], "nothing": None}
    result = check("{ brokenGenerator { name } }")
    assert result.data == {"brokenGenerator": None}
    assert [e.path for e in result.errors or ()] == [["brokenGenerator"]]


def test_leaves_that_do_not_serialize() -> None:
    result = check("{ offEnum { name colour } leaves { fragile } }")
    assert result.data is not None and result.data["offEnum"] == [{"name": "ok", "colour": "RED"}, None]
    assert [e.path for e in result.errors or ()][:1] == [["offEnum", 1, "colour"]]
    assert result.data["leaves"] == [{"fragile": None}, {"fragile": None}]


def test_permissions_and_extensions_run_on_plain_attributes() -> None:
    result = check("{ leaves { hidden shout } }")
    assert result.data == {"leaves": [{"hidden": None, "shout": "QUIET"}] * 2}
    assert {e.message for e in result.errors or ()} == {"needs a role you lack"}


def test_typename_at_root_in_unions_and_aliased() -> None:
    result = check("{ __typename t: __typename things { __typename ... on Box { k: __typename size }"
                   " ... on Leaf { name } } }")
    assert result.data == {"__typename": "Query", "t": "Query", "things": [
        {"__typename": "Leaf", "name": "t"}, {"__typename": "Box", "k": "Box", "size": 2}]}


def test_resolvers_see_the_info_graphql_core_gives() -> None:
    query = ("query A { one { where } } query B($f: Boolean = true) "
             "{ x: one(flag: $f) { ...W } leaves { where } } fragment W on Leaf { where }")
    document = parse(query)
    operation = document.definitions[1]
    plan = compile_plan(GQL, document, operation, EXECUTOR)  # type: ignore[arg-type]
    assert plan is not None
    context = {"who": "me"}
    SEEN.clear()
    compiled = plan.execute(context, {"f": True}, 20, False)
    mine = list(SEEN)
    SEEN.clear()
    expected = execute(GQL, document, context_value=context, variable_values={"f": True},
                       operation_name="B", executor_class=EXECUTOR)
    assert compiled is not None and plan_difference(compiled, expected) is None
    assert mine == SEEN and len(mine) == 3
    assert mine[0][:2] == (("x", "where"), {"f": True})


def run_mutation(query: str, compiled: bool) -> tuple[ExecutionResult, list[str]]:
    context: dict[str, Any] = {}
    document = parse(query)
    if compiled:
        plan = compile_plan(GQL, document, document.definitions[0], EXECUTOR)  # type: ignore[arg-type]
        assert plan is not None
        result = plan.execute(context, None, 20, False)
        assert result is not None
    else:
        result = execute(GQL, document, context_value=context, executor_class=EXECUTOR)  # type: ignore[assignment]
    return result, context.get("ran", [])


@pytest.mark.parametrize("query", [
    "mutation { fail a: ok b: ok }",
    "mutation { a: ok failStrict b: ok }",
    "mutation { failStrict fail }",
])
def test_mutation_errors_run_later_fields_as_graphql_core_does(query: str) -> None:
    compiled, ran = run_mutation(query, True)
    expected, ran_core = run_mutation(query, False)
    assert plan_difference(compiled, expected) is None
    assert ran == ran_core


# Over real HTTP against the gateway's schema: the suite runs ALPHINTRA_EXECUTION=verify, so a
# compiled answer that differs from graphql-core's is a 500 (PlanMismatch), never a pass.

VIEWER = """
query Other { tenant { slug } }
query Mine($roles: Boolean = true, $skipTenant: Boolean = false) {
  t: __typename
  viewer { user { email ...U ...U } ...V ... { roles @include(if: $roles) } }
  viewer { user { id } tenant @skip(if: $skipTenant) { slug ... @skip(if: $skipTenant) { id } } }
  users(first: 50) { edges { node { email ... on User { __typename } } } }
}
fragment U on User { email kind: __typename roles }
fragment V on Viewer { authenticatedBy tenant { ...T } }
fragment T on Tenant { id slug }
"""


def test_gateway_spec_corners_match_graphql_core(gql: Any, tenant: Any, other_tenant: Any) -> None:
    for handle in (tenant, other_tenant):  # one cached plan, two tenants
        for variables in ({}, {"roles": False, "skipTenant": True}):
            response = gql.post(VIEWER, variables, key=handle.key, operation_name="Mine")
            assert response.status_code == 200, response.text
            body = response.json()
            assert "errors" not in body, body
            data = body["data"]
            assert data["t"] == "Query"
            assert data["viewer"]["tenant"]["slug"] == handle.slug
            assert data["viewer"]["user"]["kind"] == "User"
            assert ("roles" in data["viewer"]) == (variables.get("roles") is not False)
            # the tenant spread by V stays when the @skip'ed sibling selection goes
            assert data["viewer"]["tenant"].get("id") is not None
            # another tenant's users never appear through the shared plan
            emails = [e["node"]["email"] for e in data["users"]["edges"]]
            assert emails and all(email.endswith(f"@{handle.slug}.test") for email in emails)


def test_gateway_resolver_permission_errors_match_graphql_core(gql: Any, runtime: Any, tenant: Any) -> None:
    from tests.support import error_codes, user_key
    _, key = user_key(runtime, tenant, "trader")  # may not read API keys or users
    body = gql("query { viewer { roles } apiKeys { edges { node { name } } } }", key=key)
    assert body["data"] is None  # apiKeys is non-null: its FORBIDDEN nulls data
    assert error_codes(body) == ["FORBIDDEN"] and body["errors"][0]["path"] == ["apiKeys"]
    body = gql("query { a: viewer { roles } b: user(id: \"x\") { email } c: viewer { roles } }", key=key)
    assert body["data"] is None and body["errors"][0]["path"] == ["b"]


def test_wrong_runtime_values_and_deep_fragments() -> None:
    result = check("{ wrongType { ... on Box { size } ... on Leaf { name } } wrongObject { name } }")
    assert result.data is not None and result.data["wrongType"][0] == {"size": 1}
    assert result.data["wrongType"][1:] == [None, None] and result.data["wrongObject"] is None
    assert len(result.errors or ()) == 3
    depth = 30
    fragments = " ".join(f"fragment F{i} on Chain {{ depth next {{ ...F{i + 1} }} }}" for i in range(depth))
    result = check(f"{{ chain {{ ...F0 }} }} {fragments} fragment F{depth} on Chain {{ depth }}")
    node = result.data["chain"]  # type: ignore[index]
    for expected in range(depth + 1):
        assert node["depth"] == expected
        node = node.get("next")


def test_a_variable_default_drives_include_in_a_mutation() -> None:
    query = "mutation ($twice: Boolean = true) { a: ok b: ok @include(if: $twice) }"
    compiled, ran = run_mutation(query, True)
    expected, ran_core = run_mutation(query, False)
    assert plan_difference(compiled, expected) is None and ran == ran_core == ["ok", "ok"]


ENTITIES = """query($r: [_Any!]!, $slug: Boolean = true) {
  e: _entities(representations: $r) { __typename ...E ... on Tenant { id } } }
fragment E on Tenant { slug @include(if: $slug) id }"""


def entity_reps(tenant: Any, other_tenant: Any) -> list[dict[str, str]]:
    return [{"__typename": "Tenant", "id": tenant.id}, {"__typename": "Tenant", "id": other_tenant.id},
            {"__typename": "Tenant", "id": tenant.id}]


def test_gateway_federation_entities_mixed_tenants(gql: Any, tenant: Any, other_tenant: Any) -> None:
    for variables in ({}, {"slug": False}):
        response = gql.post(ENTITIES, {"r": entity_reps(tenant, other_tenant), **variables}, key=tenant.key)
        assert response.status_code == 200, response.text  # verify: a difference would be a 500
        body = response.json()
        own = {"__typename": "Tenant", "slug": tenant.slug, "id": tenant.id}
        if variables:
            del own["slug"]
        assert body["data"]["e"] == [own, None, own]  # another tenant's row never appears
        assert [e["path"] for e in body["errors"]] == [["e", 1]]
        assert {e["extensions"]["code"] for e in body["errors"]} == {"TENANT_NOT_FOUND"}


def test_gateway_two_entities_fields_on_one_variable(gql: Any, tenant: Any, other_tenant: Any) -> None:
    query = """query($r: [_Any!]!) { a: _entities(representations: $r) { ... on Tenant { id } }
                                      b: _entities(representations: $r) { ... on Tenant { id } } }"""
    body = gql(query, {"r": entity_reps(tenant, other_tenant)}, key=tenant.key)
    assert body["data"]["a"] == body["data"]["b"] == [{"id": tenant.id}, None, {"id": tenant.id}]


@strawberry.type(name="Query")
class QueryB:
    @strawberry.field
    def one(self) -> Leaf | None:
        return leaf("from schema b")


SCHEMA_B = strawberry.Schema(query=QueryB, config=StrawberryConfig(scalar_map={
    Fragile: strawberry.scalar(name="Fragile", serialize=_bad_serialize, parse_value=str)}))


def test_a_plan_is_never_reused_for_another_schema_under_the_same_key(runtime: Any) -> None:
    """A ComposedSchema left with the default key "core" collides with the core schema's key,
    and a document valid for both gets one plan cache key: the plan bound to one schema must
    not answer for the other."""
    from gateway.http.graphql import GraphQLEndpoint
    from gateway.marketplace.tenant_plugins import ComposedSchema
    from gateway.observability.metrics import Metrics

    endpoint = GraphQLEndpoint(SCHEMA_B, runtime, Metrics(runtime.db))
    endpoint.execution = "compiled"
    other = ComposedSchema(SCHEMA, GQL, {}, EXECUTOR)
    assert other.key == "core"
    document = parse("{ __typename one { name } }")
    operation = document.definitions[0]

    def never(_v: Any) -> ExecutionResult:
        raise AssertionError("compiled, never graphql-core")

    first = endpoint._execute(never, GQL, document, operation, other, EXECUTOR, {}, {})  # type: ignore[arg-type]
    assert first.data == {"__typename": "Query", "one": {"name": "one"}}
    second = endpoint._execute(never, SCHEMA_B._schema, document, operation, None,  # type: ignore[arg-type]
                               SCHEMA_B.execution_context_class, {}, {})
    assert second.data == {"__typename": "Query", "one": {"name": "from schema b"}}


def test_a_null_directive_argument_is_the_client_error_graphql_core_gives(caplog: Any) -> None:
    """`@skip(if: $s)` with a defaulted variable sent as null: graphql-core answers a field
    error where it collects the sub-selection; the plan, collecting everything up front, must
    fall back to that answer without logging a compiler failure (the client chose it)."""
    query = "query ($s: Boolean = false) { one { name @skip(if: $s) } leaves { name } }"
    document = parse(query)
    plan = compile_plan(GQL, document, document.definitions[0], EXECUTOR)  # type: ignore[arg-type]
    assert plan is not None
    with caplog.at_level("DEBUG", logger="gateway.http.plan"):
        assert plan.execute({}, {"s": None}, 20, False) is None  # graphql-core answers it
    assert not [r for r in caplog.records if r.levelname in ("ERROR", "CRITICAL")]
    expected = execute(GQL, document, variable_values={"s": None}, executor_class=EXECUTOR)
    assert expected.data == {"one": None, "leaves": [{"name": "a"}, {"name": "b"}]}
    # the other variants still compile
    compiled = plan.execute({}, {"s": True}, 20, False)
    assert compiled is not None and compiled.data == {"one": {}, "leaves": [{"name": "a"}, {"name": "b"}]}


def test_threads_sharing_a_fresh_plan_get_their_own_answers() -> None:
    from concurrent.futures import ThreadPoolExecutor
    query = "query ($f: Boolean!, $n: Boolean!) { one(flag: $f) { name where @include(if: $n) } }"
    document = parse(query)
    plan = compile_plan(GQL, document, document.definitions[0], EXECUTOR)  # type: ignore[arg-type]
    assert plan is not None
    cases = [{"f": bool(i % 2), "n": bool(i % 3)} for i in range(48)]

    def run(variables: dict[str, Any]) -> str | None:
        compiled = plan.execute({}, variables, 20, False)
        assert compiled is not None
        return plan_difference(compiled, execute(GQL, document, variable_values=variables,
                                                 executor_class=EXECUTOR))

    with ThreadPoolExecutor(8) as pool:
        assert list(pool.map(run, cases)) == [None] * len(cases)
    assert len(plan._variants) == 2  # $n is the only switch
