"""GraphQL over graphql-transport-ws, on strawberry's protocol implementation.
Authentication travels in the `connection_init` payload as {"Authorization": "Bearer …"};
a connection that fails it is closed with 4403 before any operation runs.

Each operation runs on the schema of the connection's tenant (core + its installed plugins'
extensions), read when the operation starts: after `connection_init` authenticated it, so a
tenant's plugin subscriptions work here as its plugin fields do over HTTP. An install during a
running subscription does not move it; the next `subscribe` message gets the new schema.

The same gate as HTTP, before strawberry sees a `subscribe`: the credentials are checked again,
the rate limits taken, the document chosen (persisted queries, trusted-documents mode) and
prepared with the HTTP endpoint's rules and cache (depth, aliases, cost, introspection, no
suggestions when introspection is off), the operation chosen as HTTP does. A refusal answers
an `error` message for that id.

A query or mutation then runs on the HTTP pipeline, not on strawberry: the HTTP endpoint's
`execute_operation` (compiled plan, committed-write marking, plugin blame, uninstalled
plugins' fields, size cap) on its request threads, answering `next` with the body HTTP would
send, byte for byte, then `complete`; a request error (variables that do not coerce, say) is an
`error` message instead. strawberry's id bookkeeping stays: a duplicate id closes 4409 and a
client's `complete` cancels it. Subscriptions run on strawberry, or on a shared fan-out group.

Credentials are checked for the life of the socket. It closes with code 4403 and the reason's
code (AUTH_KEY_REVOKED, AUTH_USER_DEACTIVATED, AUTH_TOKEN_EXPIRED, …) as a reason when:
- its key is revoked or its user deactivated: announced on the bus (`CREDENTIALS_TOPIC`),
  which every replica listens to, so within a second anywhere;
- its JWT or key expires: at the expiry (a JWT's leeway included);
- a periodic re-check (`websocket_recheck_seconds`) finds the credentials no longer valid:
  the fallback for a bus event lost, or a change made outside the gateway (the CLI, SQL).
Its operations are cancelled before it closes, so no further event reaches it.

Cancel-on-disconnect: `connection_init` with `"cancelOnDisconnect": true` (a user with order
write rights; else refused, 4403) is acknowledged with `"cancelOnDisconnect": true`, and when
the socket closes, for any reason, the user's open orders are cancelled (reason
CANCEL_ON_DISCONNECT, gateway/trading/mass_cancel.py). A value other than a boolean closes the
socket with 4400 CANCEL_ON_DISCONNECT_INVALID.

The WebSocket Origin allow-list (`websocket_origins`, strawberry's `allowed_origins`) refuses
the handshake (HTTP 403) of a page from any other origin than the gateway's own: browsers send
their page's origin, which a cross-site page cannot forge.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from typing import TYPE_CHECKING, Any

from opentelemetry import trace
from opentelemetry.propagate import extract
from opentelemetry.trace import NoOpTracer, SpanKind, Tracer
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.websockets import WebSocket
from strawberry.asgi import GraphQL
from strawberry.exceptions import ConnectionRejectionError
from strawberry.subscriptions import GRAPHQL_TRANSPORT_WS_PROTOCOL
from strawberry.subscriptions.protocols.graphql_transport_ws.handlers import (
    BaseGraphQLTransportWSHandler,
    Operation,
)

from gateway.auth.authenticate import bearer_token
from gateway.auth.principal import Principal
from gateway.db import is_unavailable, utcnow
from gateway.errors import INTERNAL_ERROR, RESPONSE_TOO_LARGE, DomainError, ServiceUnavailable
from gateway.events import Event
from gateway.http.context import RequestContext
from gateway.http.encoding import dumps, loads
from gateway.http.errors import error_body, format_error
from gateway.http.executor import RequestExecutor
from gateway.http.fanout import (
    SLOW_CONSUMER,
    SLOW_CONSUMER_CLOSE_CODE,
    Group,
    Hub,
    Member,
    Outlet,
    direct_connection,
    group_key,
    transport_of,
)
from gateway.http.graphql import _ENCODED, choose_operation
from gateway.observability.metrics import Metrics
from gateway.runtime import Runtime
from gateway.scope import enter_tenant
from gateway.trading.mass_cancel import cancel_on_disconnect

if TYPE_CHECKING:
    from gateway.http.graphql import GraphQLEndpoint

log = logging.getLogger(__name__)

CREDENTIALS_CLOSE_CODE = 4403
# A role the socket was opened with was revoked: its subscriptions were authorised with it.
ROLES_CHANGED = "AUTH_ROLES_CHANGED"
# A slow consumer's close frame waits behind its backlog; a peer that still has not read it by
# then is disconnected outright.
SLOW_CONSUMER_GRACE_S = 10.0
# connection_init's opt-in: on close, cancel the user's open orders (mass_cancel.py).
CANCEL_ON_DISCONNECT = "cancelOnDisconnect"


def _cancel_on_disconnect(context: RequestContext) -> bool:
    return (context.connection_params or {}).get(CANCEL_ON_DISCONNECT) is True


def _token(context: RequestContext) -> str | None:
    params = context.connection_params or {}
    header = params.get("Authorization") or params.get("authorization")
    return bearer_token(header if isinstance(header, str) else None)


class FanoutOperation(Operation):
    """A subscribe served by a shared group (gateway/http/fanout.py): its task attends the group."""

    __slots__ = ("group", "member")
    group: Group
    member: Member


class SingleOperation(Operation):
    """A query or mutation over the socket: run by the HTTP endpoint's `execute_operation`."""

    __slots__ = ("principal",)
    principal: Principal


class TenantSchemaHandler(BaseGraphQLTransportWSHandler):
    """strawberry's protocol handler, reading `schema` per operation from the tenant, gating
    each `subscribe` and watching the connection's credentials."""

    view: SubscriptionEndpoint
    closed_for: str | None = None
    cancel_on_disconnect = False  # opted in at connection_init (gateway/trading/mass_cancel.py)
    _watch: asyncio.Task[None] | None = None
    trace_context: Any = None  # the connection's trace (the handshake's traceparent)
    _outlet: Outlet | None = None  # fanned-out frames to this socket, made at the first
    _closing: asyncio.Task[None] | None = None  # a slow consumer's close
    # Operations not yet answered: id -> (name, type, start) for the latency histogram.
    _started: dict[str, tuple[str | None, str, float]]

    async def handle(self) -> None:
        self._started = {}
        metrics = self.view.metrics
        if metrics is None:
            await super().handle()
            return
        metrics.ws_connections.inc()  # an accepted socket, open until its handler returns
        try:
            await super().handle()
        finally:
            metrics.ws_connections.dec()

    async def run_operation(self, operation: Any) -> None:
        entry = self._started.get(operation.id)
        metrics = self.view.metrics
        gauge = (metrics.subscriptions if metrics is not None and entry is not None
                 and entry[1] == "subscription" else None)
        if gauge is not None:
            gauge.inc()
        try:
            if isinstance(operation, FanoutOperation):
                await operation.group.attend(operation.member)
            elif isinstance(operation, SingleOperation):
                await self._run_single(operation)
            else:
                await super().run_operation(operation)
        finally:
            if gauge is not None:
                gauge.dec()
            if entry is not None and self._started.get(operation.id) is entry:
                del self._started[operation.id]  # ended unanswered (cancelled); not a reused id

    async def send_message(self, message: Any) -> None:
        if message.get("type") in ("next", "error", "complete"):
            self._answered(message.get("id"))
        await super().send_message(message)

    def _answered(self, operation_id: Any) -> None:
        entry = self._started.pop(operation_id, None)
        if entry is not None and self.view.metrics is not None:  # the first answer: its latency
            name, kind, started = entry
            self.view.metrics.observe_operation(name, kind, "ws", time.perf_counter() - started)

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

    @property
    def principal(self) -> Principal | None:
        return getattr(self.context, "principal", None)

    async def handle_connection_init(self, message: Any) -> None:
        payload = message.get("payload")
        if isinstance(payload, dict) and not isinstance(payload.get(CANCEL_ON_DISCONNECT, False), bool):
            await self.websocket.close(code=4400, reason="CANCEL_ON_DISCONNECT_INVALID")
            return
        # One trace per connection, under the handshake's `traceparent`: this span covers the
        # authentication; each subscribe's span is its child (operations run for hours, so a
        # span for the socket's whole life would reach the exporter only at close).
        headers = getattr(getattr(self.websocket, "ws", None), "headers", {})
        span = self.view.tracer.start_span("graphql.ws.connect", context=extract(dict(headers)),
                                           kind=SpanKind.SERVER)
        self.trace_context = trace.set_span_in_context(span)
        try:
            with trace.use_span(span, end_on_exit=True):
                await super().handle_connection_init(message)
        except Exception as exc:
            if not is_unavailable(exc):
                raise
            # 1013 Try Again Later: not 4403, which a client takes as "your credentials".
            log.warning("websocket connect: database unavailable")
            await self.websocket.close(code=1013, reason=ServiceUnavailable.code)
            return
        if self.connection_acknowledged and self.principal is not None:
            self.loop = asyncio.get_running_loop()
            self.view.sockets.add(self)
            self._watch = asyncio.create_task(self._watch_credentials())
            self.cancel_on_disconnect = _cancel_on_disconnect(self.context)

    async def shutdown(self) -> None:
        self.view.sockets.discard(self)
        if self._watch is not None:
            self._watch.cancel()
        await super().shutdown()
        if self._outlet is not None:
            self._outlet.close()
        if self.cancel_on_disconnect and self.principal is not None:
            # Any close (the client's, a revocation, the server's): the user's open orders go.
            await run_in_threadpool(self.view.cancel_orders_of, self.principal)

    async def handle_subscribe(self, message: Any) -> None:
        if not self.connection_acknowledged or self.principal is None:
            await super().handle_subscribe(message)
            return
        if self.closed_for is not None:
            return  # closing: nothing new starts
        with self.view.tracer.start_as_current_span("graphql.subscribe", context=self.trace_context):
            await self._subscribe(message)

    async def _subscribe(self, message: Any) -> None:
        started = time.perf_counter()
        try:
            principal = await self.view.executor.run(self.view.runtime.authenticator.recheck,
                                                     _token(self.context) or "")
        except DomainError as exc:
            await self.close_for(exc.code)
            return
        except Exception as exc:
            if not is_unavailable(exc):
                raise
            principal = None
        try:
            refusal, operation = (await self.view.executor.run(self._gate, message, principal)
                                  if principal is not None else (_unavailable(), None))
        except Exception as exc:
            if not is_unavailable(exc):
                raise
            refusal, operation = _unavailable(), None
        if refusal is not None:
            await self.send_message({"id": message.get("id"), "type": "error",  # type: ignore[typeddict-item]
                                     "payload": refusal})
            return
        if operation is not None and isinstance(message.get("id"), str):
            self._started[message["id"]] = (*operation, started)
            if operation[1] == "subscription" and self._fan_out(message, principal):
                return
            if (operation[1] != "subscription" and self.view.single_on_pipeline
                    and _well_formed(message["payload"])):
                await self._start_single(message, principal)
                return
        await super().handle_subscribe(message)

    async def _start_single(self, message: Any, principal: Principal) -> None:
        """Register a query/mutation with strawberry's id bookkeeping (a duplicate id closes
        4409, the per-connection limit, `complete` cancelling its task); it runs in
        `_run_single`."""
        op_id, payload = message["id"], message["payload"]
        if op_id in self.operations:
            await self.websocket.close(code=4409, reason=f"Subscriber for {op_id} already exists")
            return
        limit = self.max_subscriptions_per_connection
        if limit is not None and len(self.operations) >= limit:
            await self.send_message({"id": op_id, "type": "error",
                                     "payload": [{"message": "Subscription limit reached"}]})
            return
        operation = SingleOperation(self, op_id, payload["query"], payload.get("variables"),
                                    payload.get("operationName"))
        operation.principal = principal
        # Created inside the subscribe span: the task's context carries it to the execution.
        operation.task = asyncio.create_task(self.run_operation(operation))
        operation.task.add_done_callback(self._task_done)
        self.operations[op_id] = operation

    async def _run_single(self, operation: SingleOperation) -> None:
        """The operation on the HTTP pipeline (`GraphQLEndpoint.execute_operation`, on its
        request threads): `next` with the body HTTP would answer, then `complete`; a request
        error (validation, unknown operation, variables) answers `error` instead."""
        gate = self.view.gate
        assert gate is not None
        params = {"query": operation.query, "variables": operation.variables,
                  "operationName": operation.operation_name}
        request_id = self.context.request_id
        try:
            status, body = await self.view.executor.run(
                gate.execute_operation, operation.principal, operation.query, params, request_id, "ws")
        except Exception as exc:
            if is_unavailable(exc):
                errors = _unavailable()
            else:  # masked like HTTP's: the id to quote, the detail in the log
                log.exception("unexpected error in a websocket operation",
                              extra={"request_id": request_id})
                errors = error_body(INTERNAL_ERROR, "Internal server error",
                                    requestId=request_id)["errors"]
            if self.operations.get(operation.id) is operation:
                await operation.send_operation_message(
                    {"id": operation.id, "type": "error", "payload": errors})  # type: ignore[typeddict-item]
            return
        if self.operations.get(operation.id) is not operation:
            return  # the client completed it (or the socket closed) while it ran: nothing is sent
        body.pop(_ENCODED, None)  # HTTP's bytes; the frame is encoded whole by encode_json
        if status != 200:
            # GRAPHQL_REQUEST_ERROR: nothing executed; any other (a plan mismatch's 500) has no
            # result either. No `next`: an `error` ends the operation, as the protocol says.
            await operation.send_operation_message(
                {"id": operation.id, "type": "error", "payload": body["errors"]})  # type: ignore[typeddict-item]
            return
        await operation.send_operation_message({"id": operation.id, "type": "next", "payload": body})  # type: ignore[typeddict-item]
        await operation.send_operation_message({"id": operation.id, "type": "complete"})

    def _fan_out(self, message: Any, principal: Principal) -> bool:
        """Serve this subscription from a shared group (gateway/http/fanout.py); False when it
        is left to strawberry (fan-out off, an id in use, the per-connection limit reached)."""
        hub = self.view.fanout
        op_id, payload = message["id"], message["payload"]
        limit = self.max_subscriptions_per_connection
        if (hub is None or op_id in self.operations
                or (limit is not None and len(self.operations) >= limit)):
            return False
        schema, query = self.schema, payload["query"]
        variables, name = payload.get("variables"), payload.get("operationName")
        key = group_key(schema, query, variables, name, principal.tenant_id, principal.roles)
        if key is None:
            return False
        operation = FanoutOperation(self, op_id, query, variables, name)
        operation.member = Member(op_id, self._socket_outlet(), self._answered, self._forget)
        # The member's task before the group's: it counts in the gauge before any answer.
        operation.task = asyncio.create_task(self.run_operation(operation))
        operation.task.add_done_callback(self._task_done)
        self.operations[op_id] = operation
        context, root_value = self.context, self.root_value
        operation.group = hub.join(key, operation.member, lambda: schema.stream(
            query, variable_values=variables, context_value=context, root_value=root_value,
            operation_name=name))
        return True

    def _socket_outlet(self) -> Outlet:
        if self._outlet is None:
            ws = self.websocket.ws  # type: ignore[attr-defined]  # strawberry's ASGI adapter
            send = getattr(ws, "_send", None)
            self._outlet = Outlet(ws.send_text, transport_of(send), self.view.send_queue,
                                  self._slow_consumer, direct_connection(send))
        return self._outlet

    def _forget(self, operation_id: str) -> None:
        """A shared operation answered its last message: its id may be used again."""
        operation = self.operations.get(operation_id)
        if isinstance(operation, FanoutOperation):
            del self.operations[operation_id]

    def _slow_consumer(self) -> None:
        if self._closing is None:
            self._closing = asyncio.create_task(self._close(
                SLOW_CONSUMER_CLOSE_CODE, SLOW_CONSUMER, "websocket closed: slow consumer"))

    def _gate(self, message: Any, principal: Principal
              ) -> tuple[list[dict[str, Any]] | None, tuple[str | None, str] | None]:
        """Errors refusing this subscribe (an `error` message's payload), or None, and the
        operation's (name, type) when the document has it; sets the payload's query to the
        document chosen."""
        gate = self.view.gate
        if gate is None:
            return None, None
        payload = message.get("payload")
        if not isinstance(payload, dict):
            return None, None  # strawberry answers the malformed message
        request_id = self.context.request_id
        try:
            gate.limiter.check(principal)
            query = gate.resolver.query(payload, principal)
        except DomainError as exc:
            return error_body(exc.code, exc.message, **exc.details)["errors"], None
        payload["query"] = query
        composed = self.view.runtime.marketplace.schema_for(principal.tenant_id)
        prepared = gate.prepare(query, composed)
        if prepared.document is None:
            return [format_error(e, request_id, prepared.code or "") for e in prepared.errors], None
        operation, unknown = choose_operation(prepared.document, payload.get("operationName"))
        if operation is None:  # as over HTTP (strawberry would close the socket 4400)
            return unknown["errors"], None
        return None, (operation.name.value if operation.name else None, operation.operation.value)

    async def close_for(self, reason: str) -> None:
        """Cancel every operation, then close with 4403 and `reason` (a code)."""
        await self._close(CREDENTIALS_CLOSE_CODE, reason, "websocket closed: credentials no longer valid")

    async def _close(self, code: int, reason: str, message: str) -> None:
        if self.closed_for is not None:
            return
        self.closed_for = reason
        log.info(message, extra={"code": reason})
        if self.view.metrics is not None:
            self.view.metrics.errors.labels(reason, "ws").inc()
        for operation_id in list(self.operations):
            await self.cleanup_operation(operation_id)
        if self._outlet is not None:
            self._outlet.close()  # nothing queued goes out after the operations ended
            if code == SLOW_CONSUMER_CLOSE_CODE:
                self._outlet.abort_later(SLOW_CONSUMER_GRACE_S)
        with contextlib.suppress(Exception):  # the peer may be gone already
            await self.websocket.close(code=code, reason=reason)

    def revoke_threadsafe(self, reason: str) -> None:
        with contextlib.suppress(RuntimeError):  # the loop has closed
            self.loop.call_soon_threadsafe(lambda: asyncio.ensure_future(self.close_for(reason)))

    async def _watch_credentials(self) -> None:
        """Close at the credentials' expiry, and re-authenticate every recheck interval."""
        recheck = self.view.runtime.settings.websocket_recheck_seconds
        principal = self.principal
        assert principal is not None
        while self.closed_for is None:
            wait = recheck
            if principal.expires_at is not None:
                wait = min(wait, max(0.0, (principal.expires_at - utcnow()).total_seconds()))
            await asyncio.sleep(wait)
            if principal.expires_at is not None and utcnow() >= principal.expires_at:
                await self.close_for("AUTH_TOKEN_EXPIRED" if principal.via == "jwt"
                                     else "AUTH_KEY_EXPIRED")
                return
            try:
                current = await run_in_threadpool(self.view.runtime.authenticator.recheck,
                                                  _token(self.context) or "")
            except DomainError as exc:
                await self.close_for(exc.code)
                return
            except Exception:  # the database is away: the bus and the next check still count
                log.warning("websocket credential re-check failed", exc_info=True)
                continue
            if set(principal.roles) - set(current.roles):
                await self.close_for(ROLES_CHANGED)
                return


class SubscriptionEndpoint(GraphQL):
    graphql_transport_ws_handler_class = TenantSchemaHandler

    def __init__(self, schema: Any, runtime: Runtime, gate: GraphQLEndpoint | None = None) -> None:
        # strawberry refuses a handshake from an Origin that is neither the gateway's own nor
        # listed here (HTTP 403); clients that send none are not browsers and pass.
        super().__init__(schema, graphql_ide=None,
                         subscription_protocols=(GRAPHQL_TRANSPORT_WS_PROTOCOL,),
                         allowed_origins=[o.rstrip("/") for o in runtime.settings.websocket_origins])
        self.runtime = runtime
        self.gate = gate
        self.metrics: Metrics | None = gate.metrics if gate is not None else None
        self.sockets: set[TenantSchemaHandler] = set()
        # request work (authentication, the gate) on the HTTP endpoint's threads; background
        # work (credential re-checks, cancel-on-disconnect) stays on the shared pool
        self.executor = gate.executor if gate is not None else RequestExecutor(
            runtime.settings.request_threads)
        self.max_response_bytes = runtime.settings.max_response_bytes
        # identical subscriptions share one execution (gateway/http/fanout.py)
        self.fanout = (Hub(self.encode_json, self.max_response_bytes)
                       if runtime.settings.subscription_fanout else None)
        self.send_queue = runtime.settings.websocket_send_queue
        self.tracer: Tracer = gate.tracer if gate is not None else NoOpTracer()
        # Queries and mutations on the HTTP pipeline (`_run_single`); False leaves them to
        # strawberry as before it (bench/ws_query.py compares the two in one run).
        self.single_on_pipeline = gate is not None
        # strawberry executes (and coerces variables) itself here: with introspection off its
        # "Did you mean …?" would spell the schema out, so they are cut from what is sent.
        self.hide_suggestions = not runtime.settings.introspection

    async def get_context(self, request: Request | WebSocket, response: Any = None) -> RequestContext:
        return RequestContext(runtime=self.runtime, request_id=request.state.request_id)

    def decode_json(self, data: str | bytes) -> object:
        # not strawberry's `json.loads`: a deeply nested message would crash the process
        # (gateway/http/encoding.py `loads`); refused, it is "message must be valid JSON" (4400)
        return loads(data)

    async def on_ws_connect(self, context: RequestContext) -> dict[str, object] | None:
        try:
            token = _token(context)
            if token is None:
                raise ConnectionRejectionError({"code": "UNAUTHENTICATED"})
            context.principal = await self.executor.run(self.runtime.authenticator.authenticate, token)
            enter_tenant(context.principal.tenant_id)  # this connection's operations run for it
        except DomainError as exc:
            log.info("websocket authentication refused", extra={"code": exc.code})
            self._count_error(exc.code)
            raise ConnectionRejectionError({"code": exc.code}) from None
        if not _cancel_on_disconnect(context):
            return {"tenant": context.principal.tenant_slug}
        p = context.principal  # cancelling orders on close needs the right to cancel them
        if not await self.executor.run(self.runtime.policy.allowed, p.user_id, p.tenant_id,
                                       "order", "write"):
            log.info("websocket cancel-on-disconnect refused", extra={"code": "FORBIDDEN"})
            self._count_error("FORBIDDEN")
            raise ConnectionRejectionError({"code": "FORBIDDEN"})
        return {"tenant": p.tenant_slug, CANCEL_ON_DISCONNECT: True}

    def cancel_orders_of(self, principal: Principal) -> None:
        """Cancel-on-disconnect: the open orders `principal`'s user submitted (mass_cancel)."""
        try:
            result = cancel_on_disconnect(self.runtime.orders, principal.tenant_id, principal.user_id)
        except Exception:
            log.exception("cancel-on-disconnect failed", extra={"tenant_id": principal.tenant_id})
            return
        log.info("websocket closed: its user's open orders cancelled",
                 extra={"tenant_id": principal.tenant_id, "matched": result.matched,
                        "canceled": result.count("CANCELED")})

    def on_credentials_revoked(self, event: Event) -> None:
        """A bus listener (any thread): close this process's sockets those credentials opened."""
        payload = event.payload
        tenant, key, user = payload.get("tenantId"), payload.get("apiKeyId"), payload.get("userId")
        reason = str(payload.get("reason") or "AUTH_REVOKED")
        for socket in list(self.sockets):
            p = socket.principal
            if p is None or p.tenant_id != tenant:
                continue
            if (key is not None and p.api_key_id == key) or (user is not None and p.user_id == user):
                socket.revoke_threadsafe(reason)

    def on_policy_changed(self, event: Event) -> None:
        """A bus listener (any thread), after this process's policy reloaded: a socket whose
        user lost a role it was opened with closes (its running subscriptions were authorised
        with that role); the client reconnects with what it holds now."""
        policy = self.runtime.policy
        for socket in list(self.sockets):
            p = socket.principal
            if p is not None and set(p.roles) - set(policy.roles(p.user_id, p.tenant_id)):
                socket.revoke_threadsafe(ROLES_CHANGED)

    def encode_json(self, data: object) -> str:
        if self.hide_suggestions and isinstance(data, dict):
            data = _without_suggestions(data)
        encoded = dumps(data)  # a text frame's UTF-8, so the cap counts the bytes sent
        if (self.max_response_bytes and len(encoded) > self.max_response_bytes
                and isinstance(data, dict) and data.get("type") == "next"):
            log.warning("websocket message over the size cap", extra={"bytes": len(encoded)})
            body = {"data": None, **error_body(
                RESPONSE_TOO_LARGE, f"the answer is {len(encoded)} bytes, over the limit of "
                f"{self.max_response_bytes}", size=len(encoded), maximum=self.max_response_bytes)}
            data = {**data, "payload": body}
            encoded = dumps(data)
        if self.metrics is not None and isinstance(data, dict):
            # every error a client is sent, as sent (the size cap's included)
            if data.get("type") == "error" and isinstance(data.get("payload"), list):
                self.metrics.count_errors(data["payload"], "ws")
            elif data.get("type") == "next" and isinstance(data.get("payload"), dict):
                self.metrics.count_errors(data["payload"].get("errors") or (), "ws")
        return encoded.decode()  # str: graphql-transport-ws messages are text frames

    def _count_error(self, code: str) -> None:
        if self.metrics is not None:
            self.metrics.errors.labels(code, "ws").inc()


_SUGGESTION = re.compile(r"\s*Did you mean [^?]*\?\s*$")


def _without_suggestions(message: dict[str, Any]) -> dict[str, Any]:
    """An `error` or `next` message with every error's "Did you mean …?" cut off."""
    payload = message.get("payload")
    if message.get("type") == "error" and isinstance(payload, list):
        return {**message, "payload": [_cut(e) for e in payload]}
    if message.get("type") == "next" and isinstance(payload, dict) and payload.get("errors"):
        return {**message, "payload": {**payload, "errors": [_cut(e) for e in payload["errors"]]}}
    return message


def _cut(error: Any) -> Any:
    if isinstance(error, dict) and isinstance(error.get("message"), str):
        return {**error, "message": _SUGGESTION.sub("", error["message"])}
    return error


def _well_formed(payload: Any) -> bool:
    """A subscribe payload the HTTP pipeline takes as is; anything else is left to strawberry,
    which answers malformed messages as graphql-transport-ws says."""
    return (isinstance(payload, dict) and isinstance(payload.get("query"), str)
            and isinstance(payload.get("variables") or {}, dict)
            and isinstance(payload.get("operationName") or "", str))


def _unavailable() -> list[dict[str, Any]]:
    """A subscribe refused because the database is unavailable: retryable, the socket stays."""
    down = ServiceUnavailable()
    return [{"message": down.message, "extensions": {"code": down.code, **down.details}}]
