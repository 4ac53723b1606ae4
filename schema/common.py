"""Types every domain module shares: connections (cursor pagination) and context access."""

from __future__ import annotations

from collections.abc import Callable
from functools import cached_property
from typing import Any, Generic, TypeVar

import strawberry
from strawberry.types import Info

from gateway.http.context import RequestContext
from gateway.pagination import Page

T = TypeVar("T")
DEFAULT_PAGE = 20


def ctx(info: Info) -> RequestContext:
    return info.context


def epoch_field() -> Any:
    """The `epoch` every subscription event carries beside its `sequence`."""
    return strawberry.field(default=None, description=(
        "Names the numbering `sequence` belongs to. It changes when the numbers restart (the "
        "event bus lost its counters, e.g. Redis restarted empty): events may have been missed "
        "even if the sequence looks continuous, so re-read the state you follow (subscribe "
        "again: every subscription starts from stored state). Null on a snapshot read from the "
        "store."))


@strawberry.type
class PageInfo:
    has_next_page: bool
    end_cursor: str | None


@strawberry.type
class Edge(Generic[T]):
    cursor: str
    node: T


@strawberry.type
class Connection(Generic[T]):
    edges: list[Edge[T]]
    page_info: PageInfo

    @classmethod
    def of(cls, page: Page[Any], convert: Callable[[Any], T]) -> Connection[T]:
        edges: list[Edge[T]] = [_page_edge(page, row, convert(row)) for row in page.items]
        return cls(edges=edges, page_info=PageInfo(
            has_next_page=page.has_next, end_cursor=edges[-1].cursor if edges else None))


class _PageEdge(Edge[T]):
    """An edge of `Connection.of` whose cursor is encoded when first read: most reads of a page
    ask for the nodes only (encoding 50 cursors took about a tenth of a page query's CPU). To
    GraphQL it is an `Edge` (a subclass: strawberry's type checks accept it)."""

    _page: Page[Any]
    _row: Any

    @cached_property
    def cursor(self) -> str:  # type: ignore[override]
        return self._page.cursor(self._row)


def _page_edge(page: Page[Any], row: Any, node: T) -> Edge[T]:
    edge: _PageEdge[T] = object.__new__(_PageEdge)  # no __init__: it would store a cursor
    edge.__dict__.update(node=node, _page=page, _row=row)
    return edge
