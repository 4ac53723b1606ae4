"""Subscriptions over graphql-transport-ws, on strawberry's protocol implementation.
Authentication travels in the `connection_init` payload as {"Authorization": "Bearer …"};
a connection that fails it is closed with 4403 before any operation runs.

Each operation runs on the schema of the connection's tenant (core + its installed plugins'
extensions), read when the operation starts: after `connection_init` authenticated it, so a
tenant's plugin subscriptions work here as its plugin fields do over HTTP. An install during a
running subscription does not move it; the next `subscribe` message gets the new schema."""

from __future__ import annotations

import logging
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.websockets import WebSocket
from strawberry.asgi import GraphQL
from strawberry.exceptions import ConnectionRejectionError
from strawberry.subscriptions import GRAPHQL_TRANSPORT_WS_PROTOCOL
from strawberry.subscriptions.protocols.graphql_transport_ws.handlers import BaseGraphQLTransportWSHandler

from gateway.auth.authenticate import bearer_token
from gateway.errors import DomainError
from gateway.http.context import RequestContext
from gateway.runtime import Runtime
from gateway.scope import enter_tenant

log = logging.getLogger(__name__)


class TenantSchemaHandler(BaseGraphQLTransportWSHandler):
    """strawberry's protocol handler, reading `schema` per operation from the tenant."""

    @property  # type: ignore[override]
    def schema(self) -> Any:
        principal = getattr(self.context, "principal", None)
        if principal is not None:
            composed = self.context.runtime.marketplace.schema_for(principal.tenant_id)
            if composed is not None:
                return composed.schema
        return self._core_schema

    @schema.setter
    def schema(self, value: Any) -> None:
        self._core_schema = value


class SubscriptionEndpoint(GraphQL):
    graphql_transport_ws_handler_class = TenantSchemaHandler

    def __init__(self, schema: Any, runtime: Runtime) -> None:
        super().__init__(schema, graphql_ide=None,
                         subscription_protocols=(GRAPHQL_TRANSPORT_WS_PROTOCOL,))
        self.runtime = runtime

    async def get_context(self, request: Request | WebSocket, response: Any = None) -> RequestContext:
        return RequestContext(runtime=self.runtime, request_id=request.state.request_id)

    async def on_ws_connect(self, context: RequestContext) -> dict[str, object] | None:
        params = context.connection_params or {}
        header = params.get("Authorization") or params.get("authorization")
        try:
            token = bearer_token(header if isinstance(header, str) else None)
            if token is None:
                raise ConnectionRejectionError({"code": "UNAUTHENTICATED"})
            context.principal = await run_in_threadpool(self.runtime.authenticator.authenticate, token)
            enter_tenant(context.principal.tenant_id)  # this connection's operations run for it
        except DomainError as exc:
            log.info("websocket authentication refused", extra={"code": exc.code})
            raise ConnectionRejectionError({"code": exc.code}) from None
        return {"tenant": context.principal.tenant_slug}
