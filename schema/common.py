"""Types every domain module shares: connections (cursor pagination) and context access."""

from __future__ import annotations

from collections.abc import Callable
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
        edges = [Edge(cursor=page.cursor(row), node=convert(row)) for row in page.items]
        return cls(edges=edges, page_info=PageInfo(
            has_next_page=page.has_next, end_cursor=edges[-1].cursor if edges else None))
