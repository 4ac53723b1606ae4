"""The tenant a piece of work runs for, as a context variable: set where a request or a job
begins (the GraphQL endpoint, the WebSocket connection, the job actor), read by services that
answer per tenant without taking a tenant argument everywhere, such as market data, which
serves the built-in sources to everyone and a tenant's installed sources to that tenant only.
Outside any scope (start-up, the venue clock) the answer is None: built-ins only."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

_TENANT: ContextVar[str | None] = ContextVar("alphintra_tenant", default=None)


def current_tenant() -> str | None:
    return _TENANT.get()


@contextmanager
def tenant_scope(tenant_id: str | None) -> Iterator[None]:
    token = _TENANT.set(tenant_id)
    try:
        yield
    finally:
        _TENANT.reset(token)


def enter_tenant(tenant_id: str | None) -> None:
    """For a long-lived task that serves one tenant (a WebSocket connection): set it for the
    rest of the task and the tasks it starts."""
    _TENANT.set(tenant_id)
