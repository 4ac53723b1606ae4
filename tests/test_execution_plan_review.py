"""Review probes of the compiled plan's fast path (issue 14): what `verify` mode cannot see.
Direct resolver calls against strawberry's wrapper for the shapes of resolver the schema uses,
the lazy `Info` read twice, lazy page cursors outside GraphQL, strawberry enums' look-up, and
the request executor's hop when the work raises StopIteration."""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import enum
import pickle
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Generic, TypeVar

import pytest
import strawberry
from graphql import execute, parse, validate
from strawberry.types.field import StrawberryField

from gateway.http.executor import RequestExecutor
from gateway.http.plan import compile_plan, plan_difference
from gateway.http.plan.direct import direct_call, enum_output
from gateway.pagination import Page, encode_cursor
from schema.common import Connection

T = TypeVar("T")


@strawberry.enum
class Side(enum.StrEnum):
    BUY = "buy"
    SELL = "sell"


@strawberry.enum
class Rank(enum.IntEnum):
    ONE = 1
    TWO = 2


@strawberry.input
class Filter:
    side: Side | None = strawberry.UNSET
    ranks: list[Rank] | None = None


@strawberry.type
class Box(Generic[T]):
    item: T
    secret: strawberry.Private[str]

    @strawberry.field
    def described(self, info: strawberry.Info) -> str:
        # everything a resolver may read off its info
        return (f"{info.field_name}|{info.python_name}|{info.return_type}|"
                f"{'.'.join(map(str, info.path.as_list()))}|{sorted(info.variable_values)}|"
                f"{[s.name for s in info.selected_fields]}|{self.secret}")

    @strawberry.field
    def via_root(self, root: strawberry.Parent[Box[T]]) -> str:
        return f"root:{root.secret}"


@strawberry.type
class Query:
    @strawberry.field
    def boxes(self, filter: Filter | None = None, limit: int | None = strawberry.UNSET) -> list[Box[int]]:
        side = "unset" if filter is None or filter.side is strawberry.UNSET else filter.side
        ranks = None if filter is None else filter.ranks
        lim = "unset" if limit is strawberry.UNSET else limit
        return [Box(item=i, secret=f"{side}/{ranks}/{lim}/{i}") for i in range(3)]

    @strawberry.field
    def root_named(root, tag: str = "t") -> str:
        return f"{tag}:{type(root).__name__}"


SCHEMA = strawberry.Schema(query=Query)
GQL = SCHEMA._schema
EXECUTOR = SCHEMA.execution_context_class


def both(query: str, variables: dict[str, Any] | None = None) -> Any:
    document = parse(query)
    assert not validate(GQL, document)
    plan = compile_plan(GQL, document, document.definitions[0], EXECUTOR)
    assert plan is not None
    compiled = plan.execute({"who": "me"}, variables, 20, False)
    expected = execute(GQL, document, context_value={"who": "me"}, variable_values=variables,
                       max_coercion_errors=20, executor_class=EXECUTOR)
    assert compiled is not None and plan_difference(compiled, expected) is None, (compiled, expected)
    return compiled


def test_every_resolver_shape_here_is_called_directly() -> None:
    box = GQL.type_map["IntBox"].fields  # type: ignore[attr-defined]
    for resolve in (box["described"].resolve, box["viaRoot"].resolve,
                    GQL.query_type.fields["boxes"].resolve, GQL.query_type.fields["rootNamed"].resolve):
        assert direct_call(resolve) is not None


@pytest.mark.parametrize(("query", "variables"), [
    ("{ boxes { item described viaRoot } rootNamed }", None),
    ("query ($f: Filter, $l: Int) { boxes(filter: $f, limit: $l) { described } }", {"f": None, "l": None}),
    ("query ($f: Filter) { boxes(filter: $f) { described } }", {"f": {"side": None, "ranks": ["TWO"]}}),
    ("query ($f: Filter) { boxes(filter: $f) { described } }", {"f": {"side": "SELL"}}),
    ("{ boxes(filter: {ranks: [ONE, TWO]}, limit: 2) { a: described b: described } rootNamed(tag: \"x\") }",
     None),
])
def test_direct_calls_answer_what_the_wrapper_answers(query: str, variables: dict[str, Any] | None) -> None:
    result = both(query, variables)
    assert not result.errors


def test_the_lazy_info_may_be_made_twice() -> None:
    """From Python 3.12 cached_property takes no lock: two threads reading one `Info` at once
    both run its maker. Here both runs are made in turn; the second must not fail."""
    seen: list[Any] = []

    @strawberry.type
    class Q:
        @strawberry.field
        def peek(self, info: strawberry.Info) -> int:
            seen.append(info)
            return 1

    schema = strawberry.Schema(query=Q)
    document = parse("{ peek }")
    plan = compile_plan(schema._schema, document, document.definitions[0], schema.execution_context_class)
    assert plan is not None
    result = plan.execute({"who": "me"}, None, 20, False)
    assert result is not None and result.data == {"peek": 1}
    (info,) = seen
    maker = type(info).__dict__["_raw_info"].func  # what each unlocked reader would run
    first, second = maker(info), maker(info)
    assert first.field_name == second.field_name == "peek"
    assert info.context == {"who": "me"} and info.path.key == "peek"


@pytest.mark.parametrize("value", [Side.BUY, "buy", "BUY", Side.SELL, 1, Rank.ONE, None, "x"])
def test_enum_lookups_answer_strawberrys_coercion(value: Any) -> None:
    for name in ("Side", "Rank"):
        type_ = GQL.type_map[name]
        fast = enum_output(type_)
        assert fast is not None

        def answer(coerce: Any) -> Any:
            try:
                return coerce(value)
            except Exception as exc:
                return type(exc), str(exc)
        assert answer(fast) == answer(type_.coerce_output_value)  # type: ignore[attr-defined]


@dataclass
class Row:
    id: str
    created_at: datetime


@strawberry.type
class Thing:
    id: str


def test_lazy_edges_copy_pickle_and_convert_with_their_cursors() -> None:
    start = datetime(2026, 1, 1, tzinfo=UTC)
    rows = [Row(id=f"r{i}", created_at=start - timedelta(seconds=i)) for i in range(3)]
    connection = Connection.of(Page(rows, False), lambda row: Thing(id=row.id))
    cursors = [encode_cursor(r.created_at, r.id) for r in rows]
    for edges in (connection.edges, copy.copy(connection).edges, copy.deepcopy(connection).edges,
                  pickle.loads(pickle.dumps(connection)).edges):
        assert [e.cursor for e in edges] == cursors
        assert [dataclasses.asdict(e) for e in edges] == [
            {"cursor": c, "node": {"id": r.id}} for c, r in zip(cursors, rows, strict=True)]
    assert repr(connection.edges[0]).startswith("_PageEdge(cursor=")


def test_request_work_raising_stop_iteration_fails_its_caller_rather_than_hanging() -> None:
    """asyncio refuses to put a StopIteration in a future: without converting it in the thread
    the caller waited forever, and could not even be cancelled (`_finished` waits for a future
    that never completes). anyio's to_thread converted it to a RuntimeError."""
    loop = asyncio.new_event_loop()
    try:
        executor = RequestExecutor(1)
        task = loop.create_task(executor.run(lambda: next(iter(()))))
        loop.run_until_complete(asyncio.wait({task}, timeout=5))
        assert task.done(), "the caller still waits for work that has finished"
        assert isinstance(task.exception(), RuntimeError)
        follow = loop.create_task(executor.run(lambda: 42))
        loop.run_until_complete(asyncio.wait({follow}, timeout=5))
        assert follow.done() and follow.result() == 42
    finally:
        loop.close()


class _Doubling(StrawberryField):
    """A field class whose `get_result` does more than call the resolver."""

    def get_result(self, source: Any, info: Any, args: list[Any], kwargs: Any) -> Any:
        return super().get_result(source, info, args, kwargs) * 2


def _seven() -> int:
    return 7


def test_a_field_class_with_its_own_get_result_keeps_the_wrapper() -> None:
    @strawberry.type
    class Q:
        seven: int = _Doubling()(_seven)

    schema = strawberry.Schema(query=Q)
    assert direct_call(schema._schema.query_type.fields["seven"].resolve) is None  # type: ignore[union-attr]
    document = parse("{ seven }")
    plan = compile_plan(schema._schema, document, document.definitions[0], schema.execution_context_class)
    assert plan is not None
    result = plan.execute(None, None, 20, False)
    assert result is not None and result.data == {"seven": 14} == execute(schema._schema, document).data
