"""Domain errors with stable codes.

Every error a client may see carries a code from this module in `extensions.code`. Anything
else that escapes a resolver is an internal error: masked for the client, logged in full.
"""

from __future__ import annotations

from typing import Any

from marketplace.errors import ToolkitError


class DomainError(Exception):
    """An expected failure a client can act on. `code` is stable; `message` is for humans."""

    code: str = "BAD_REQUEST"
    http_status: int = 400

    def __init__(
        self, message: str, *, code: str | None = None, details: dict[str, Any] | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.details = details or {}


class Unauthenticated(DomainError):
    code = "UNAUTHENTICATED"
    http_status = 401


class Forbidden(DomainError):
    code = "FORBIDDEN"
    http_status = 403


class NotFound(DomainError):
    """Also used for another tenant's ids: a tenant cannot tell them from missing ones."""

    code = "NOT_FOUND"
    http_status = 404


class InvalidInput(DomainError):
    code = "BAD_USER_INPUT"


class Conflict(DomainError):
    code = "CONFLICT"
    http_status = 409


class ServiceUnavailable(DomainError):
    """A service the operation needs (the database) could not be reached or lost the
    connection: the operation did not run, or it was rolled back. The one case a client cannot
    tell apart, a connection lost during COMMIT itself, is why writes take idempotency keys:
    retrying with the same key answers the first result instead of writing twice."""

    code = "SERVICE_UNAVAILABLE"
    http_status = 503
    retry_after = 1

    def __init__(self, message: str = "the database is unavailable; retry shortly (with the same "
                                      "idempotency key for a write)") -> None:
        super().__init__(message, details={"retryable": True})


# What a client may see as is: the gateway's own errors and the vendor toolkit's (manifest,
# wheel, signature), which cannot import this module.
CLIENT_ERRORS: tuple[type[Exception], ...] = (DomainError, ToolkitError)

# Codes raised by the transport rather than a service.
INTERNAL_ERROR = "INTERNAL_SERVER_ERROR"
GRAPHQL_PARSE_FAILED = "GRAPHQL_PARSE_FAILED"
GRAPHQL_VALIDATION_FAILED = "GRAPHQL_VALIDATION_FAILED"
BAD_REQUEST = "BAD_REQUEST"
OPERATION_NOT_FOUND = "OPERATION_NOT_FOUND"
QUERY_TOO_COMPLEX = "QUERY_TOO_COMPLEX"
REQUEST_TOO_LARGE = "REQUEST_TOO_LARGE"
METHOD_NOT_ALLOWED = "METHOD_NOT_ALLOWED"
UNSUPPORTED_MEDIA_TYPE = "UNSUPPORTED_MEDIA_TYPE"
NOT_ACCEPTABLE = "NOT_ACCEPTABLE"
PERSISTED_QUERY_NOT_SUPPORTED = "PERSISTED_QUERY_NOT_SUPPORTED"
RESPONSE_TOO_LARGE = "RESPONSE_TOO_LARGE"
# An operation committed its write, then failed to read its answer back (the database went
# away after the commit): the client must not take it for a failure.
COMMITTED_ANSWER_UNAVAILABLE = "COMMITTED_ANSWER_UNAVAILABLE"
