"""Strawberry resolvers called by the plan without strawberry's wrapper
(gateway/http/plan/direct.py): each answer compared with graphql-core's, which always goes
through the wrapper, and the wrapper kept wherever it does more than call the function."""

from __future__ import annotations

import enum
from typing import Annotated, Any

import pytest
import strawberry
from graphql import ExecutionResult, execute, parse, validate
from strawberry.extensions import FieldExtension
from strawberry.permission import BasePermission
from strawberry.types.field import StrawberryField

from gateway.http.plan import Plan, compile_plan, plan_difference
from gateway.http.plan.direct import direct_call


class Nope(Exception):
    pass


@strawberry.enum
class Level(enum.Enum):
    LOW = "low"
    HIGH = "high"


@strawberry.input
class Window:
    start: int
    size: int = 2
    level: Level = Level.LOW


class Denied(BasePermission):
    message = "not for you"

    def has_permission(self, source: Any, info: Any, **kwargs: Any) -> bool:
        return False


class Shout(FieldExtension):
    def resolve(self, next_: Any, source: Any, info: Any, **kwargs: Any) -> Any:
        return str(next_(source, info, **kwargs)).upper()


@strawberry.type
class Problem:
    reason: str


@strawberry.type
class Fine:
    value: int


class NopeHandler(strawberry.ExceptionHandler[Nope, Problem]):
    def handle(self, exception: Nope, *, field: Any, info: Any) -> Problem:
        return Problem(reason=str(exception))


@strawberry.type
class Item:
    value: int

    @strawberry.field
    def level(self) -> Level:
        return Level.HIGH if self.value % 2 else Level.LOW

    @strawberry.field
    def raw_level(self) -> Level:  # a member's value, not the member: strawberry's own coercion
        return "high" if self.value % 2 else "low"  # type: ignore[return-value]

    @strawberry.field
    def info_unread(self, info: strawberry.Info) -> str:  # takes an info, never reads it
        return f"{type(info).__name__}:{isinstance(info, strawberry.Info)}"

    @strawberry.field
    def levels(self) -> list[Level | None]:
        return [Level.LOW, None, Level.HIGH]

    @strawberry.field
    def doubled(self) -> int:
        return self.value * 2

    @strawberry.field
    def where(self, info: strawberry.Info) -> str:
        return f"{info.field_name}@{'.'.join(map(str, info.path.as_list()))}:{info.context['who']}"

    @strawberry.field
    def seen_as(self, inf: strawberry.Info) -> str:  # an info parameter not named `info`
        return f"{inf.field_name}/{inf.context['who']}"

    @strawberry.field
    def parent_value(self, parent: strawberry.Parent[Item]) -> int:
        return parent.value + 100

    @strawberry.field
    def scaled(self, by: int = 3, level: Level | None = None) -> str:
        return f"{self.value * by}:{level.value if level else '-'}"

    @strawberry.field
    def fails(self) -> int | None:
        if self.value % 2:
            raise ValueError(f"odd {self.value}")
        return self.value

    @strawberry.field
    def must(self) -> int:
        if self.value == 2:
            raise ValueError("two")
        return self.value

    @strawberry.field
    @staticmethod
    def constant() -> str:
        return "same"

    @strawberry.field(permission_classes=[Denied])
    def secret(self) -> str | None:
        return "never"

    @strawberry.field(extensions=[Shout()])
    def loud(self) -> str:
        return f"item {self.value}"

    @strawberry.field
    def checked(self) -> Annotated[Fine | Problem, strawberry.union("Checked")]:
        if self.value % 2:
            raise Nope(f"odd {self.value}")
        return Fine(value=self.value)


@strawberry.type
class Query:
    @strawberry.field
    def items(self, window: Window | None = None, levels: list[Level] | None = None) -> list[Item]:
        start, size = (window.start, window.size) if window else (0, 4)
        if levels is not None and window is not None and window.level not in levels:
            return []
        return [Item(value=v) for v in range(start, start + size)]

    @strawberry.field
    def root_info(self, info: strawberry.Info, tag: str = "t") -> str:
        return f"{tag}:{info.context['who']}"


SCHEMA = strawberry.Schema(query=Query, exception_handlers=[NopeHandler()])
GQL = SCHEMA._schema
EXECUTOR = SCHEMA.execution_context_class


def plan_of(query: str) -> tuple[Plan, Any]:
    document = parse(query)
    assert not validate(GQL, document)
    plan = compile_plan(GQL, document, document.definitions[0], EXECUTOR)
    assert plan is not None
    return plan, document


def both(query: str, variables: dict[str, Any] | None = None) -> ExecutionResult:
    """The compiled answer, after checking it equals graphql-core's (through the wrapper)."""
    plan, document = plan_of(query)
    compiled = plan.execute({"who": "me"}, variables, 20, False)
    assert compiled is not None
    expected = execute(GQL, document, context_value={"who": "me"}, variable_values=variables,
                       max_coercion_errors=20, executor_class=EXECUTOR)
    assert plan_difference(compiled, expected) is None
    return compiled


def item_field(name: str) -> Any:
    return GQL.type_map["Item"].fields[name].resolve  # type: ignore[attr-defined]


@pytest.fixture
def wrapper_calls(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every call of a field's resolver through strawberry's wrapper (`get_result`)."""
    calls: list[str] = []
    original = StrawberryField.get_result

    def counting(self: StrawberryField, *args: Any, **kwargs: Any) -> Any:
        calls.append(self.python_name)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(StrawberryField, "get_result", counting)
    return calls


def test_resolvers_run_without_the_wrapper(wrapper_calls: list[str]) -> None:
    plan, _ = plan_of("{ items { doubled where seenAs parentValue constant } rootInfo }")
    result = plan.execute({"who": "me"}, None, 20, False)
    assert result is not None and not result.errors
    assert result.data["items"][1] == {"doubled": 2, "where": "where@items.1.where:me",
                                       "seenAs": "seenAs/me", "parentValue": 101, "constant": "same"}
    assert result.data["rootInfo"] == "t:me"
    assert wrapper_calls == []  # graphql-core's execute, below, goes through it for each
    both("{ items { doubled where seenAs parentValue constant } rootInfo }")
    assert len(wrapper_calls) == 1 + 4 * 5 + 1


def test_without_direct_calls_the_plan_calls_the_wrapper(wrapper_calls: list[str]) -> None:
    document = parse("{ items { doubled } }")
    plan = compile_plan(GQL, document, document.definitions[0], EXECUTOR, direct=False)
    assert plan is not None
    result = plan.execute({"who": "me"}, None, 20, False)
    assert result is not None and result.data == {"items": [{"doubled": v * 2} for v in range(4)]}
    assert wrapper_calls == ["items"] + ["doubled"] * 4


def test_arguments_are_converted_as_strawberry_converts_them() -> None:
    # input objects with defaults, enums, lists of enums, variables, nulls, absent arguments
    result = both("{ items(window: {start: 3, level: HIGH}, levels: [HIGH]) { value scaled(level: HIGH) } }")
    assert result.data == {"items": [{"value": 3, "scaled": "9:high"}, {"value": 4, "scaled": "12:high"}]}
    result = both("query ($w: Window, $by: Int!, $l: Level) "
                  "{ items(window: $w) { scaled(by: $by, level: $l) } }",
                  {"w": {"start": 1, "size": 1}, "by": 5, "l": None})
    assert result.data == {"items": [{"scaled": "5:-"}]}
    result = both("{ items(window: {start: 0}, levels: [HIGH]) { value } rootInfo(tag: \"x\") }")
    assert result.data == {"items": [], "rootInfo": "x:me"}


def test_errors_are_the_wrappers_errors() -> None:
    result = both("{ items { value fails } }")
    assert [e.path for e in result.errors or ()] == [["items", 1, "fails"], ["items", 3, "fails"]]
    assert result.errors[0].message == "odd 1"
    result = both("{ items { value must } }")  # the list is non-null: so is the query's data
    assert result.data is None
    assert result.errors[0].path == ["items", 2, "must"] and result.errors[0].message == "two"


def test_permissions_extensions_and_exception_handlers_keep_the_wrapper(
        wrapper_calls: list[str]) -> None:
    for name in ("secret", "loud", "checked"):
        assert direct_call(item_field(name)) is None, name
    for name in ("doubled", "where", "seenAs", "parentValue", "constant"):
        assert direct_call(item_field(name)) is not None, name
    result = both("{ items(window: {start: 0, size: 2}) { secret loud checked { __typename ... on Fine "
                  "{ value } ... on Problem { reason } } } }")
    assert result.data["items"][1] == {"secret": None, "loud": "ITEM 1",
                                       "checked": {"__typename": "Problem", "reason": "odd 1"}}
    assert result.errors[0].message == "not for you"


def test_only_strawberrys_own_wrapper_is_replaced() -> None:
    assert direct_call(lambda source, info: 1) is None
    assert direct_call(getattr) is None
    assert direct_call(GQL.type_map["Item"].fields["value"].resolve) is None  # type: ignore[attr-defined]


def test_enum_leaves_answer_strawberrys_names_without_its_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    from strawberry.schema.schema_converter import CustomGraphQLEnumType

    plan, _ = plan_of("{ items { level rawLevel levels } }")
    calls: list[Any] = []
    original = CustomGraphQLEnumType.coerce_output_value

    def counting(self: Any, value: Any) -> Any:
        calls.append(value)
        return original(self, value)

    monkeypatch.setattr(CustomGraphQLEnumType, "coerce_output_value", counting)
    result = plan.execute({"who": "me"}, None, 20, False)
    assert result is not None and not result.errors
    both_levels = ["LOW", None, "HIGH"]
    assert result.data["items"][:2] == [{"level": "LOW", "rawLevel": "LOW", "levels": both_levels},
                                        {"level": "HIGH", "rawLevel": "HIGH", "levels": both_levels}]
    assert calls == ["low", "high", "low", "high"]  # only the values that are not members
    both("{ items { level rawLevel levels } }")


def test_graphql_cores_resolve_info_is_made_only_when_the_resolver_reads_it(
        monkeypatch: pytest.MonkeyPatch) -> None:
    plan, _ = plan_of("{ items { infoUnread } }")
    built: list[str] = []
    original = EXECUTOR.build_resolve_info

    def counting(self: Any, field_def: Any, nodes: Any, parent: Any, path: Any) -> Any:
        built.append(nodes[0].name.value)
        return original(self, field_def, nodes, parent, path)

    monkeypatch.setattr(EXECUTOR, "build_resolve_info", counting)
    result = plan.execute({"who": "me"}, None, 20, False)
    assert result is not None and result.data == {"items": [{"infoUnread": "LazyInfo:True"}] * 4}
    assert built == []  # `items` takes no info, `infoUnread` never reads the one it takes
    built.clear()
    plan, _ = plan_of("{ items { where } }")
    result = plan.execute({"who": "me"}, None, 20, False)
    assert result is not None and result.data["items"][3] == {"where": "where@items.3.where:me"}
    assert built == ["where"] * 4
