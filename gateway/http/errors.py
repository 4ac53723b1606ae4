"""How errors reach a client: domain errors with their code, GraphQL request errors with theirs,
and anything else masked, with the request id to quote, and logged in full."""

from __future__ import annotations

import logging
from typing import Any

from graphql import GraphQLError

from gateway.db import is_unavailable
from gateway.errors import (
    CLIENT_ERRORS,
    COMMITTED_ANSWER_UNAVAILABLE,
    GRAPHQL_VALIDATION_FAILED,
    INTERNAL_ERROR,
    ServiceUnavailable,
)

log = logging.getLogger("gateway.errors")


def error_body(code: str, message: str, **extensions: Any) -> dict[str, Any]:
    return {"errors": [{"message": message, "extensions": {"code": code, **extensions}}]}


def format_error(error: GraphQLError, request_id: str, default_code: str = GRAPHQL_VALIDATION_FAILED,
                 *, committed: bool = False) -> dict[str, Any]:
    """`committed`: the operation committed its write before this error (reading its answer
    back failed): the client is told so, never that it failed or should retry blindly."""
    original = error.original_error
    while isinstance(original, GraphQLError) and original.original_error is not None:
        original = original.original_error
    if original is None or isinstance(original, GraphQLError):
        formatted = error.formatted
        ext = dict(formatted.get("extensions") or {})
        ext.setdefault("code", default_code)
        formatted["extensions"] = ext
        return formatted
    if isinstance(original, CLIENT_ERRORS):
        formatted = {"message": original.message,
                     "extensions": {"code": original.code, **original.details}}
    elif committed:
        log.error("error after the operation committed its write", exc_info=original,
                  extra={"request_id": request_id, "path": error.path})
        formatted = {"message": "the change was committed, but its answer could not be read back; "
                                "read it again (a repeat with the same idempotency key answers "
                                "the first result)",
                     "extensions": {"code": COMMITTED_ANSWER_UNAVAILABLE, "committed": True,
                                    "retryable": False, "requestId": request_id}}
    elif is_unavailable(original):
        log.warning("database unavailable: %s", original.__class__.__name__,
                    extra={"request_id": request_id, "path": error.path})
        unavailable = ServiceUnavailable()
        formatted = {"message": unavailable.message,
                     "extensions": {"code": unavailable.code, **unavailable.details,
                                    "requestId": request_id}}
    else:
        log.error("unexpected error in resolver", exc_info=original,
                  extra={"request_id": request_id, "path": error.path})
        formatted = {"message": "Internal server error",
                     "extensions": {"code": INTERNAL_ERROR, "requestId": request_id}}
    if error.locations is not None:
        formatted["locations"] = [{"line": loc.line, "column": loc.column} for loc in error.locations]
    if error.path is not None:
        formatted["path"] = error.path
    return formatted
