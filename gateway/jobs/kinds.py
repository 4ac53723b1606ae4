"""What a job can be. A kind validates its parameters when the job is requested (so bad input
never reaches a queue) and runs on a worker with a JobContext."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from gateway.errors import InvalidInput

if TYPE_CHECKING:
    from gateway.jobs.runner import JobContext

Params = dict[str, Any]


@dataclass(frozen=True)
class JobKind:
    name: str
    description: str
    run: Callable[[JobContext, Params], dict[str, Any]]
    validate: Callable[[Params], Params] = lambda params: params
    permission: str = "job"  # casbin object checked (action "write") to start one


class JobKinds:
    def __init__(self) -> None:
        self._kinds: dict[str, JobKind] = {}

    def register(self, kind: JobKind) -> None:
        if kind.name in self._kinds:
            raise ValueError(f"job kind {kind.name!r} is already registered")
        self._kinds[kind.name] = kind

    def get(self, name: str) -> JobKind:
        try:
            return self._kinds[name]
        except KeyError:
            raise InvalidInput(f"unknown job kind {name!r}", code="JOB_KIND_UNKNOWN") from None

    def names(self) -> list[str]:
        return sorted(self._kinds)
