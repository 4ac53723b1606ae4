"""ALPHINTRA_EXECUTION=verify: a query's answer on its plan checked against graphql-core's."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from typing import Any

from graphql import ExecutionResult, GraphQLError

log = logging.getLogger("gateway.http.plan")


class PlanMismatch(Exception):
    """ALPHINTRA_EXECUTION=verify: the compiled plan answered differently from graphql-core."""


class Verification:
    """ALPHINTRA_EXECUTION=verify's extra runs. A test that counts what one request does (SQL
    statements, plugin calls) turns them off for its duration (tests/conftest.py,
    `single_execution`): verify runs a query twice or more."""

    enabled = True


verification = Verification()


def verify(compiled: ExecutionResult, run_compiled: Callable[[], ExecutionResult | None],
           run_graphql_core: Callable[[], ExecutionResult]) -> ExecutionResult:
    """`compiled` (a query's answer on its plan) once graphql-core answered the same; else
    PlanMismatch. An answer that varies between runs (a live FX rate, a time stamp, a plugin
    worker restarting) is not held against the plan: on a difference both run once more, and
    only a difference that reproduces while each path agrees with itself is a mismatch; else
    the check is inconclusive (logged) and the plan's first answer stands."""
    if not verification.enabled:
        return compiled
    expected = run_graphql_core()
    difference = plan_difference(compiled, expected)
    if difference is None:
        return compiled
    second, again = run_compiled(), run_graphql_core()
    if (second is not None and plan_difference(second, compiled) is None
            and plan_difference(again, expected) is None):
        log.error("compiled plan differs from graphql-core: %s", difference)
        raise PlanMismatch(f"the compiled plan's answer differs from graphql-core's: {difference}")
    log.warning("verify inconclusive: the answer varies between runs: %s", difference)
    return compiled


def plan_difference(compiled: ExecutionResult, expected: ExecutionResult) -> str | None:
    """What differs between two results (data as JSON, errors in order with their message,
    locations, path, extensions and original exception), or None when they are the same."""
    if _json(compiled.data) != _json(expected.data):
        return f"data: compiled {_json(compiled.data)[:500]!r} != graphql-core {_json(expected.data)[:500]!r}"
    mine, theirs = _errors(compiled.errors), _errors(expected.errors)
    if mine != theirs:
        return f"errors: compiled {mine!r} != graphql-core {theirs!r}"
    return None


def _json(value: Any) -> str:
    # repr would call 1 and True, or 1 and 1.0, equal where the answers' bytes differ
    try:
        return json.dumps(value, sort_keys=False, default=repr)
    except (TypeError, ValueError):
        return repr(value)


def _errors(errors: Sequence[GraphQLError] | None) -> list[tuple[Any, ...]]:
    out = []
    for error in errors or ():
        original = error.original_error
        out.append((error.message, error.locations, error.path, error.extensions,
                    type(original).__name__ if original is not None else None,
                    str(original) if original is not None else None))
    return out
