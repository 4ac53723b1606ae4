"""GraphQL over HTTP (POST and GET), after the GraphQL-over-HTTP specification.

Queries and mutations run synchronously in a worker thread (one thread hop per request, no
per-field coroutines: measured faster than async execution for our sync resolvers), on the
endpoint's own few threads (gateway/http/executor.py). Bodies are written by
gateway/http/encoding.py. Parsing
and validation are cached per document in bounded LRU caches. Subscriptions go over the
WebSocket route instead (gateway/http/websocket.py).

Status codes: with `application/graphql-response+json` a request error (unparsable, invalid,
unknown operation, bad variables) is 400 and an executed operation 200; with legacy
`application/json` every well-formed request is 200. Authentication failures are 401.
"""

from __future__ import annotations

import copy
import logging
import os
import random
import time
from collections import OrderedDict, defaultdict
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from threading import Lock
from typing import Any, Protocol

from graphql import (
    DocumentNode,
    ExecutionResult,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLError,
    GraphQLSchema,
    NameNode,
    NoSchemaIntrospectionCustomRule,
    OperationDefinitionNode,
    OperationType,
    TypeInfo,
    TypeInfoVisitor,
    VariableNode,
    Visitor,
    execute,
    get_operation_ast,
    parse,
    specified_rules,
    validate,
    visit,
)
from opentelemetry.trace import NoOpTracer, Tracer
from starlette.requests import Request
from starlette.responses import Response
from strawberry.execution.is_awaitable import optimized_is_awaitable

from gateway import errors as codes
from gateway.auth.authenticate import bearer_token
from gateway.auth.principal import Principal
from gateway.db import committed_a_write, counting_commits, is_unavailable
from gateway.errors import DomainError, InvalidInput, ServiceUnavailable, Unauthenticated
from gateway.http.context import RequestContext
from gateway.http.encoding import JSONResponse, dumps
from gateway.http.encoding import loads as _loads  # safe on deep nesting
from gateway.http.errors import error_body, format_error
from gateway.http.executor import RequestExecutor
from gateway.http.limits import limits_rule
from gateway.http.persisted import DocumentResolver
from gateway.http.plan import PlanMismatch, compile_plan, verify
from gateway.http.ratelimit import RateLimited, RateLimiter
from gateway.http.response_cache import (
    HIT,
    MISS,
    Entry,
    ResponseCache,
    cache_key,
    cacheable_tags,
    etag_of,
    matches,
)
from gateway.marketplace.tenant_plugins import ComposedSchema
from gateway.observability.logs import log_context
from gateway.observability.metrics import Metrics
from gateway.runtime import Runtime
from gateway.scope import tenant_scope

log = logging.getLogger(__name__)

GRAPHQL_RESPONSE = "application/graphql-response+json"
JSON = "application/json"
# Marks a GraphQL request error: 400 for graphql-response+json, 200 for legacy JSON.
GRAPHQL_REQUEST_ERROR = -400
MAX_VARIABLE_ERRORS = 20
PLUGIN_NOT_INSTALLED = "PLUGIN_NOT_INSTALLED"
ROOTS = ("query", "mutation", "subscription")
_ENCODED = "__encoded__"  # a body's key holding its JSON bytes, taken out before sending
_NO_SPAN = nullcontext()  # reusable: it holds no state


class LRU:
    """A small thread-safe LRU; bounded so hostile documents cannot grow memory."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._data: OrderedDict[Any, Any] = OrderedDict()
        self._lock = Lock()

    def get_or_make(self, key: Any, make: Callable[[], Any]) -> Any:
        with self._lock:
            if key in self._data:
                self._data.move_to_end(key)
                return self._data[key]
        value = make()
        with self._lock:
            self._data[key] = value
            if len(self._data) > self._size:
                self._data.popitem(last=False)
        return value

    def peek(self, key: Any) -> Any:
        with self._lock:
            if key in self._data:
                self._data.move_to_end(key)
                return self._data[key]
        return None

    def __len__(self) -> int:
        return len(self._data)


@dataclass(frozen=True)
class Missing:
    """A root field of a plugin the tenant has not installed (or whose installed version lacks
    it): answered null with PLUGIN_NOT_INSTALLED, under its response key."""

    key: str
    plugin: str
    field: str
    node: FieldNode


@dataclass(frozen=True)
class Prepared:
    document: DocumentNode | None
    errors: tuple[GraphQLError, ...]
    code: str | None
    parsed: DocumentNode | None = None  # the document as parsed, kept when it did not validate
    # Plugin fields the tenant has not installed, stood in for by `__typename` under their
    # response keys, by operation name (None: the anonymous one).
    missing: Mapping[str | None, tuple[Missing, ...]] = field(default_factory=dict)


class FederatedSource(Protocol):
    """The federated schema (core + every approved plugin's root fields, owned by plugin id)
    that one supergraph routes every tenant's operations by; schema/federation.py provides it."""

    def current(self) -> ComposedSchema: ...


class RequestProblem(Exception):
    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, headers or {}


class GraphQLEndpoint:
    """The `/graphql` HTTP route. Owns the document caches for one schema."""

    def __init__(self, schema: Any, runtime: Runtime, metrics: Metrics,
                 tracer: Tracer | None = None, graphiql: Callable[[Request], Response] | None = None,
                 federated: FederatedSource | None = None) -> None:
        settings = runtime.settings
        self.schema = schema
        self.federated = federated
        self.gql: GraphQLSchema = schema._schema
        self.execution_context_class = getattr(schema, "execution_context_class", None)
        self.runtime = runtime
        self.metrics = metrics
        self.tracer = tracer or NoOpTracer()
        # GraphiQL for a browser's GET (gateway/http/console.py: the bundled page)
        self.graphiql = graphiql if settings.graphiql else None
        self.max_tokens = settings.max_tokens
        self.rules = [*specified_rules, limits_rule(settings.max_depth, settings.max_aliases,
                                                    settings.max_cost, settings.max_page_size)]
        if not settings.introspection:
            self.rules.append(NoSchemaIntrospectionCustomRule)
        # With introspection off, "Did you mean …?" would spell the schema out field by field.
        self.hide_suggestions = not settings.introspection
        self.max_response_bytes = settings.max_response_bytes
        self.documents = LRU(settings.parse_cache_size)
        self.resolver = DocumentResolver(runtime.tenancy.documents, settings.apq_cache_size)
        self.limiter = RateLimiter(settings)
        self.executor = RequestExecutor(settings.request_threads)
        # ALPHINTRA_RESPONSE_CACHE=on: answers of allow-listed queries (gateway/http/response_cache.py)
        self.cache = ResponseCache(settings.response_cache_ttl_s, settings.response_cache_entries,
                                   settings.response_cache_bytes) if settings.response_cache == "on" else None
        self.cacheable = LRU(settings.parse_cache_size)  # verdicts per (schema, document, operation)
        # Compiled plans per (schema, prepared document, operation): gateway/http/plan/
        self.execution = settings.execution
        self.plans = LRU(settings.parse_cache_size)
        # Hits answered on the event loop (`_cached_on_loop`); False sends them through the
        # request thread as before (bench/response_cache.py compares the two in one run).
        self.hits_on_loop = True

    # Preparation: parse + validate, cached per (schema, query text): a document valid for one
    # tenant's schema (with its plugins' fields) is not valid for another's.
    def prepare(self, query: str, schema: ComposedSchema | None = None) -> Prepared:
        key = (schema.key if schema is not None else "core", query)
        gql = schema.gql if schema is not None else self.gql
        prepared = self.documents.get_or_make(key, lambda: self._prepare(query, gql))
        if prepared.code != codes.GRAPHQL_VALIDATION_FAILED or self.federated is None:
            return prepared
        try:
            federated = self.federated.current()
        except Exception:  # the catalogue could not be read: the tenant's own verdict stands
            log.exception("the federated schema is unavailable")
            return prepared
        if not federated.root_fields:
            return prepared
        return self.documents.get_or_make(
            (*key, federated.key), lambda: self._without_uninstalled(prepared, gql, schema, federated))

    def _without_uninstalled(self, prepared: Prepared, gql: GraphQLSchema, schema: ComposedSchema | None,
                             federated: ComposedSchema) -> Prepared:
        """A document the supergraph routed here may name root fields of plugins this tenant has
        not installed: when it is valid for the federated schema, those fields are taken out
        (to answer null with PLUGIN_NOT_INSTALLED) and the rest runs if it is valid for the
        tenant's schema. Anything else keeps the tenant's validation errors."""
        document = prepared.parsed
        if document is None or self._validate(federated.gql, document):
            return prepared
        installed = set(schema.root_fields) if schema is not None else set()
        pruned = _prune(document, federated, installed)
        if pruned is None or self._validate(gql, pruned.document):
            return prepared
        return pruned

    def _prepare(self, query: str, gql: GraphQLSchema) -> Prepared:
        try:
            document = parse(query, max_lexical_tokens=self.max_tokens,
                             max_comments=self.max_tokens, no_location=False)
        except GraphQLError as error:
            code = (codes.QUERY_TOO_COMPLEX if "tokens" in error.message and "Parsing aborted"
                    in error.message else codes.GRAPHQL_PARSE_FAILED)
            return Prepared(None, (error,), code)
        errors = self._validate(gql, document)
        if errors:
            return Prepared(None, tuple(errors), codes.GRAPHQL_VALIDATION_FAILED, parsed=document)
        return Prepared(document, (), None)

    def _validate(self, gql: GraphQLSchema, document: DocumentNode) -> list[GraphQLError]:
        return validate(gql, document, self.rules, hide_suggestions=self.hide_suggestions)

    async def handle(self, request: Request) -> Response:
        request_id = request.state.request_id
        if request.method == "GET" and self.graphiql is not None and _wants_html(request):
            return self.graphiql(request)
        accept, content_type, authorization, if_none_match = _headers(request)
        try:
            media = _negotiate(accept)
            params = await _read_params(request, content_type)
            token = bearer_token(authorization)
        except RequestProblem as problem:
            return self._problem(problem, JSON)
        except Unauthenticated as exc:
            return self._problem(RequestProblem(401, exc.code, exc.message,
                                                {"WWW-Authenticate": "Bearer"}), JSON)
        answered = (await self._cached_on_loop(self.cache, params, token, if_none_match)
                    if self.cache is not None and token is not None and self.hits_on_loop else None)
        if answered is None:  # anything but a cache hit: the whole operation on a request thread
            answered = await self.executor.run(self.run, params, token, request.method, request_id,
                                               if_none_match)
        status, body, headers = answered
        self.metrics.count_errors(body.get("errors", ()), "http")
        if media == JSON and status == GRAPHQL_REQUEST_ERROR:
            status = 200  # legacy media type: a well-formed request is 200 whatever its errors
        elif status == GRAPHQL_REQUEST_ERROR:
            status = 400
        if status == 401:
            headers = {**headers, "WWW-Authenticate": "Bearer"}
        content = body.pop(_ENCODED, None)
        if content is not None:  # serialised in the worker thread (the size cap measured it)
            return Response(content, status_code=status, media_type=media, headers=headers)
        return JSONResponse(body, status_code=status, media_type=media, headers=headers)

    def _problem(self, problem: RequestProblem, media: str) -> Response:
        self.metrics.errors.labels(problem.code, "http").inc()
        return JSONResponse(error_body(problem.code, problem.message), status_code=problem.status,
                            media_type=media, headers=problem.headers)

    async def _cached_on_loop(self, cache: ResponseCache, params: dict[str, Any], token: str,
                              if_none_match: str | None
                              ) -> tuple[int, dict[str, Any], dict[str, str]] | None:
        """A response-cache hit answered on the event loop, with no thread hop (the hop and its
        wake-ups cost several times the hit itself). Only what answers from memory without
        blocking runs here: the cached credential (HMAC and expiry still checked), the policy
        generation, the document from the request or this process's APQ memory, the key (the
        same `cache_key` as `_through_cache`) and the lookup; on a hit, the rate limit (in memory,
        or Redis awaited). None on anything else, a miss included: nothing here took a rate-limit
        token or stored anything, so `run` then does the whole request exactly as without it."""
        if self.limiter.blocks:  # buckets that can only be asked by blocking
            return None
        try:
            found = self._cached_entry(cache, params, token)
        except Exception:
            # Whatever failed here (a token that decodes oddly, say) fails again on the threaded
            # path, which masks it or answers it as it always does (and logs it there): nothing
            # was taken or stored.
            log.debug("response cache: the event-loop path failed; answered threaded", exc_info=True)
            return None
        if found is None:
            return None
        principal, entry = found
        try:  # a hit spends a token like any request: after the lookup, so a miss spends none here
            await self.limiter.acheck(principal)
        except RateLimited as exc:
            return 429, error_body(exc.code, exc.message, **exc.details), \
                {"Retry-After": str(exc.retry_after)}
        return _validated(entry.body, entry.etag, HIT, if_none_match)

    def _cached_entry(self, cache: ResponseCache, params: dict[str, Any], token: str
                      ) -> tuple[Principal, Entry] | None:
        """The caller and its cached entry, from memory alone (`_cached_on_loop`); None: ask
        the threaded path."""
        principal = self.runtime.authenticator.cached(token)
        if principal is None:
            return None
        generation = self.runtime.policy.generation_nowait()
        if generation is None:
            return None
        query = self.resolver.query_nowait(params, principal)
        if query is None:
            return None
        view = self.runtime.marketplace.view(principal.tenant_id)
        key = cache_key(principal, _schema_key(view.schema if view is not None else None),
                        generation, query, params)
        entry = cache.lookup(key)
        return (principal, entry) if entry is not None else None

    def run(self, params: dict[str, Any], token: str | None, method: str, request_id: str,
            if_none_match: str | None = None) -> tuple[int, dict[str, Any], dict[str, str]]:
        """Authenticate, rate-limit, pick the document, prepare, execute: the whole operation
        in this one thread. (status, body, headers)"""
        started = time.perf_counter()  # the operation's latency counts from here
        if token is None:
            return 401, error_body(Unauthenticated.code,
                                   "send Authorization: Bearer <API key or token>"), {}
        try:
            principal = self.runtime.authenticator.authenticate(token)
            self.limiter.check(principal)
            query = self.resolver.query(params, principal)
        except RateLimited as exc:
            return 429, error_body(exc.code, exc.message, **exc.details), \
                {"Retry-After": str(exc.retry_after)}
        except DomainError as exc:
            status = GRAPHQL_REQUEST_ERROR if exc.http_status == 400 else exc.http_status
            return status, error_body(exc.code, exc.message), {}
        except Exception as exc:
            if not is_unavailable(exc):
                # Masked like a resolver's, as a GraphQL body with the id to quote.
                log.exception("unexpected error before execution", extra={"request_id": request_id})
                return 500, error_body(codes.INTERNAL_ERROR, "Internal server error",
                                       requestId=request_id), {}
            log.warning("database unavailable before execution", extra={"request_id": request_id})
            down = ServiceUnavailable()
            return down.http_status, error_body(down.code, down.message, **down.details), \
                {"Retry-After": str(down.retry_after)}
        if self.cache is not None:  # after the rate limit and the document's checks, as for any request
            return self._through_cache(self.cache, principal, query, params, method, request_id,
                                       started, if_none_match)
        status, body = self._run(principal, query, params, method, request_id, started)
        return status, body, {}

    def _through_cache(self, cache: ResponseCache, principal: Principal, query: str,
                       params: dict[str, Any], method: str, request_id: str, started: float,
                       if_none_match: str | None) -> tuple[int, dict[str, Any], dict[str, str]]:
        """A cached answer (304 when the client holds it), or `_run` and, for an allow-listed
        query answered without errors, its bytes kept for the next caller with the same key."""
        view = self.runtime.marketplace.view(principal.tenant_id)
        tenant_schema = view.schema if view is not None else None
        key = cache_key(principal, _schema_key(tenant_schema), self.runtime.policy.current_generation(),
                        query, params)
        entry = cache.lookup(key)
        if entry is not None:
            return _validated(entry.body, entry.etag, HIT, if_none_match)
        kinds = self._cacheable_tags(query, params.get("operationName"), tenant_schema)
        # Nothing is stored for a tenant whose invalidations this process does not hear yet; the
        # generations are read before execution, so a change during it voids the store.
        ticket = cache.ticket(key, principal.tenant_id, kinds) \
            if kinds is not None and cache.watching(principal.tenant_id) else None
        status, body = self._run(principal, query, params, method, request_id, started)
        if ticket is None or status != 200 or "errors" in body or body.get("data") is None:
            return status, body, {"Cache-Control": "no-store"}
        encoded = body.get(_ENCODED) or dumps(body)
        stored = cache.store(ticket, encoded)
        return _validated(encoded, stored.etag if stored is not None else etag_of(encoded), MISS,
                          if_none_match)

    def _cacheable_tags(self, query: str, operation_name: str | None, schema: ComposedSchema | None
                        ) -> frozenset[str] | None:
        prepared = self.prepare(query, schema)
        if prepared.document is None or prepared.missing:
            return None
        operation = get_operation_ast(prepared.document, operation_name)
        if operation is None:
            return None
        gql = schema.gql if schema is not None else self.gql
        document = prepared.document
        key = (schema.key if schema is not None else "core", query, operation_name)
        return self.cacheable.get_or_make(key, lambda: cacheable_tags(gql, document, operation))

    def _run(self, principal: Principal, query: str, params: dict[str, Any], method: str,
             request_id: str, started: float) -> tuple[int, dict[str, Any]]:
        return self.execute_operation(principal, query, params, request_id, "http", method, started)

    def execute_operation(self, principal: Principal, query: str, params: dict[str, Any],
                          request_id: str, transport: str = "http", method: str = "POST",
                          started: float | None = None) -> tuple[int, dict[str, Any]]:
        """One authenticated operation (a query or a mutation), for both transports: prepare,
        choose the operation, execute (compiled plan or graphql-core), format the errors (plugin
        blame, uninstalled plugins' fields, committed writes), cap the size, count it under
        `transport` ("http", "ws"). (status, body); GRAPHQL_REQUEST_ERROR: nothing executed.
        The latency is observed from `started` when given (the WebSocket times its operations
        from the `subscribe` message to the first answer itself)."""
        # The tenant's schema (core + its installed plugins), read once: the whole request runs
        # on it even if an install swaps the tenant's schema meanwhile.
        view = self.runtime.marketplace.view(principal.tenant_id)
        tenant_schema = view.schema if view is not None else None
        gql = tenant_schema.gql if tenant_schema is not None else self.gql
        execution_context_class = (tenant_schema.execution_context_class if tenant_schema is not None
                                   else self.execution_context_class)
        with log_context(request_id=request_id, tenant_id=principal.tenant_id):
            with self._span("graphql.prepare"):
                prepared = self.prepare(query, tenant_schema)
            if prepared.document is None:
                return GRAPHQL_REQUEST_ERROR, {"errors": [format_error(e, request_id, prepared.code or "")
                                                          for e in prepared.errors]}
            operation, unknown = choose_operation(prepared.document, params.get("operationName"))
            if operation is None:
                return GRAPHQL_REQUEST_ERROR, unknown
            if method == "GET" and operation.operation != OperationType.QUERY:
                return 405, error_body(codes.METHOD_NOT_ALLOWED,
                                       f"{operation.operation.value} needs POST")
            if operation.operation == OperationType.SUBSCRIPTION:
                return GRAPHQL_REQUEST_ERROR, error_body(
                    codes.BAD_REQUEST, "subscriptions go over the graphql-transport-ws WebSocket")
            context = RequestContext(runtime=self.runtime, request_id=request_id,
                                     principal=principal, plugin_view=view)
            with self._span("graphql.execute", operation):
                # Strawberry's check answers "not awaitable" fast for plain values.
                kwargs: dict[str, Any] = {"is_awaitable": optimized_is_awaitable}
                if execution_context_class is not None:
                    kwargs["executor_class"] = execution_context_class
                # graphql-core coerces the variables once, here (a batch of 500 orders costs
                # milliseconds to coerce), and answers variables that do not coerce with a
                # request error before any resolver runs.
                with tenant_scope(principal.tenant_id), counting_commits():
                    def on_graphql_core(variables: dict[str, Any] | None) -> ExecutionResult:
                        return execute(gql, prepared.document, context_value=context,
                                       variable_values=variables,
                                       operation_name=params.get("operationName"),
                                       max_coercion_errors=MAX_VARIABLE_ERRORS,
                                       hide_suggestions=self.hide_suggestions, **kwargs)
                    try:
                        result = self._execute(on_graphql_core, gql, prepared.document, operation,
                                               tenant_schema, execution_context_class, context, params)
                    except PlanMismatch:  # verify mode: the difference is logged, never shown
                        log.exception("compiled plan mismatch", extra={"request_id": request_id})
                        return 500, error_body(codes.INTERNAL_ERROR, "Internal server error",
                                               requestId=request_id)
                    # Errors after a committed write must say it was committed: known for an
                    # operation of one root field (mutation fields run in turn; with several,
                    # which one committed is not tracked).
                    committed = (committed_a_write()
                                 and len(operation.selection_set.selections) == 1)
            if started is not None:
                self.metrics.observe_operation(operation.name.value if operation.name else None,
                                               operation.operation.value, transport,
                                               time.perf_counter() - started)
            if _is_request_error(result):
                return GRAPHQL_REQUEST_ERROR, {"errors": [format_error(e, request_id, InvalidInput.code)
                                                          for e in result.errors or ()]}
            self.metrics.operations.labels(operation.operation.value).inc()
            body: dict[str, Any] = {"data": result.data}
            if result.errors:
                body["errors"] = [format_error(e, request_id, committed=committed)
                                  for e in result.errors]
                if tenant_schema is not None and tenant_schema.root_fields:
                    _blame_plugins(body["errors"], result.errors, operation, tenant_schema)
            missing = prepared.missing.get(operation.name.value if operation.name else None)
            if missing:
                _answer_missing(body, missing, tenant_schema, request_id)
            if self.max_response_bytes and operation.operation == OperationType.QUERY:
                return 200, self._capped(body)
            return 200, body

    def _span(self, name: str, operation: OperationDefinitionNode | None = None
              ) -> AbstractContextManager[Any]:
        """A GraphQL span; with tracing off (the no-op tracer) nothing: its context manager and
        context switch cost ~10 µs a span, twice a request, for nothing recorded."""
        if isinstance(self.tracer, NoOpTracer):
            return _NO_SPAN
        attributes = None if operation is None else {
            "graphql.operation.type": operation.operation.value,
            "graphql.operation.name": operation.name.value if operation.name else ""}
        return self.tracer.start_as_current_span(name, attributes=attributes)

    def _execute(self, on_graphql_core: Callable[[dict[str, Any] | None], ExecutionResult],
                 gql: GraphQLSchema, document: DocumentNode, operation: OperationDefinitionNode,
                 schema: ComposedSchema | None, executor_class: Any, context: RequestContext,
                 params: dict[str, Any]) -> ExecutionResult:
        """The operation's result on its compiled plan (gateway/http/plan/) or on graphql-core,
        as ALPHINTRA_EXECUTION says; `verify` runs a query on both and refuses a difference."""
        variables = params.get("variables")
        if self.execution == "graphql-core":
            return on_graphql_core(variables)
        key = (schema.key if schema is not None else "core", id(document), operation.name.value
               if operation.name else None)
        # The entry holds its document, so the id cannot be reused while it is cached.
        cached, plan = self.plans.get_or_make(
            key, lambda: (document, compile_plan(gql, document, operation, executor_class)))
        if cached is not document or (plan is not None and plan.schema is not gql):
            # never expected (keys are unique per schema object); compile rather than trust it
            plan = compile_plan(gql, document, operation, executor_class)
        if plan is None:
            return on_graphql_core(variables)
        if self.execution != "verify" or operation.operation != OperationType.QUERY:
            compiled = plan.execute(context, variables, MAX_VARIABLE_ERRORS, self.hide_suggestions,
                                    optimized_is_awaitable)
            return compiled if compiled is not None else on_graphql_core(variables)

        # verify (queries only: mutations have side effects). Each run gets its own copy of the
        # variables: a resolver may change what it was given (federation's `_entities` takes
        # `__typename` out of each representation).
        def on_plan() -> ExecutionResult | None:
            return plan.execute(context, copy.deepcopy(variables), MAX_VARIABLE_ERRORS,
                                self.hide_suggestions, optimized_is_awaitable)
        compiled = on_plan()
        if compiled is None:
            return on_graphql_core(variables)
        return verify(compiled, on_plan, lambda: on_graphql_core(copy.deepcopy(variables)))

    def _capped(self, body: dict[str, Any]) -> dict[str, Any]:
        """The body, serialised once here; over the cap, RESPONSE_TOO_LARGE instead (a query:
        asking again for less is safe)."""
        encoded = dumps(body)
        if len(encoded) > self.max_response_bytes:
            log.warning("response over the size cap", extra={"bytes": len(encoded)})
            return {"data": None, **error_body(
                codes.RESPONSE_TOO_LARGE, f"the answer is {len(encoded)} bytes, over the limit of "
                f"{self.max_response_bytes}; ask for fewer fields or smaller pages",
                size=len(encoded), maximum=self.max_response_bytes)}
        return {**body, _ENCODED: encoded}


def choose_operation(document: DocumentNode, name: Any
                     ) -> tuple[OperationDefinitionNode | None, dict[str, Any]]:
    """The operation `name` picks in `document` (the only one when None), or None and the
    OPERATION_NOT_FOUND body: the same choice and answer over HTTP and WebSocket."""
    operation = get_operation_ast(document, name if isinstance(name, str) else None)
    if operation is not None:
        return operation, {}
    message = (f"no operation named {name!r} in the document" if name
               else "the document has several operations; name one in operationName")
    return None, error_body(codes.OPERATION_NOT_FOUND, message)


def _schema_key(schema: ComposedSchema | None) -> str:
    """The tenant's schema in a response-cache key (its plugins change what a query answers)."""
    return schema.key if schema is not None else "core"


def _validated(encoded: bytes, etag: str, state: str, if_none_match: str | None
               ) -> tuple[int, dict[str, Any], dict[str, str]]:
    """A cacheable answer: clients may keep it but revalidate (ETag), and one that holds it
    already is answered 304 with no body."""
    headers = {"ETag": etag, "Cache-Control": "private, no-cache", "X-Alphintra-Cache": state}
    if matches(if_none_match, etag):
        return 304, {_ENCODED: b""}, headers
    return 200, {_ENCODED: encoded}, headers


def _blame_plugins(formatted: list[dict[str, Any]], errors: list[GraphQLError],
                   operation: OperationDefinitionNode, schema: ComposedSchema) -> None:
    """An error under a plugin's root field that is not already a domain error (a value of the
    wrong shape, found by graphql-core while completing it) becomes PLUGIN_FAILED naming the
    plugin, so clients can tell a plugin's fault from their own."""
    root = operation.operation.value
    owners: dict[str, str] = {}
    for selection in operation.selection_set.selections:
        if isinstance(selection, FieldNode):
            plugin = schema.root_fields.get((root, selection.name.value))
            if plugin is not None:
                owners[(selection.alias or selection.name).value] = plugin
    if not owners:
        return
    for out, error in zip(formatted, errors, strict=True):
        plugin = owners.get(str(error.path[0])) if error.path else None
        ext = out.setdefault("extensions", {})
        if plugin is not None and ext.get("code") in (codes.GRAPHQL_VALIDATION_FAILED, codes.INTERNAL_ERROR):
            ext["code"] = "PLUGIN_FAILED"
            ext["plugin"] = plugin
            out["message"] = f"plugin {plugin} failed: it answered a value of the wrong shape"


def _answer_missing(body: dict[str, Any], missing: tuple[Missing, ...], schema: ComposedSchema | None,
                    request_id: str) -> None:
    """Each uninstalled plugin's field that ran (its stand-in answered; @skip/@include applied):
    null, and a field error naming the plugin."""
    installed = set(schema.root_fields.values()) if schema is not None else set()
    data = body["data"]
    errors = body.setdefault("errors", [])
    for item in missing:
        if isinstance(data, dict):
            if item.key not in data:
                continue  # skipped
            data[item.key] = None
        message = (f"{item.field} is not in the version of plugin {item.plugin} this tenant installed"
                   if item.plugin in installed else
                   f"plugin {item.plugin} is not installed for this tenant ({item.field})")
        errors.append(format_error(GraphQLError(
            message, item.node, path=[item.key],
            extensions={"code": PLUGIN_NOT_INSTALLED, "plugin": item.plugin}), request_id))
    if not errors:
        del body["errors"]


def _prune(document: DocumentNode, federated: ComposedSchema, installed: set[tuple[str, str]]
           ) -> Prepared | None:
    """`document` (valid for the federated schema) with each root field of a plugin the tenant
    has not installed (`installed`: its own plugin root fields) replaced by `__typename` under
    the same response key and directives, so the operation keeps its shape and @skip/@include
    still apply; fragments and variables only those fields used are dropped. None when the
    document names no such field."""
    gql = federated.gql
    roots = {t.name: root for root in ROOTS if (t := getattr(gql, f"{root}_type")) is not None}
    found: dict[tuple[str, str | None], list[Missing]] = defaultdict(list)
    type_info = TypeInfo(gql)

    class Prune(Visitor):
        definition: tuple[str, str | None] = ("operation", None)

        def enter_operation_definition(self, node: OperationDefinitionNode, *_: Any) -> None:
            self.definition = ("operation", node.name.value if node.name else None)

        def enter_fragment_definition(self, node: FragmentDefinitionNode, *_: Any) -> None:
            self.definition = ("fragment", node.name.value)

        def enter_field(self, node: FieldNode, *_: Any) -> Any:
            parent = type_info.get_parent_type()
            root = roots.get(parent.name) if parent is not None else None
            name = node.name.value
            plugin = federated.root_fields.get((root, name)) if root is not None else None
            if plugin is None or (root, name) in installed:
                return None
            key = (node.alias or node.name).value
            found[self.definition].append(Missing(key, plugin, name, node))
            return FieldNode(alias=NameNode(value=key), name=NameNode(value="__typename"), arguments=(),
                             directives=node.directives, loc=node.loc)

    pruned = visit(document, TypeInfoVisitor(type_info, Prune()))
    if not found:
        return None
    operations = [d for d in pruned.definitions if isinstance(d, OperationDefinitionNode)]
    fragments = {d.name.value: d for d in pruned.definitions if isinstance(d, FragmentDefinitionNode)}
    reached: set[str] = set()
    definitions: list[Any] = []
    missing: dict[str | None, tuple[Missing, ...]] = {}
    for operation in operations:
        name = operation.name.value if operation.name else None
        spread = _reachable_in(operation, fragments)
        reached |= spread
        by_key: dict[str, Missing] = {}
        for definition in [("operation", name), *(("fragment", f) for f in sorted(spread))]:
            for item in found.get(definition, ()):
                by_key.setdefault(item.key, item)
        if by_key:
            missing[name] = tuple(by_key.values())
        used = _variables_in([operation.selection_set, *(operation.directives or ()),
                              *(fragments[f] for f in spread)])
        definitions.append(_with(operation, variable_definitions=tuple(
            d for d in operation.variable_definitions or () if d.variable.name.value in used)))
    definitions += [f for name, f in fragments.items() if name in reached]
    return Prepared(DocumentNode(definitions=tuple(definitions)), (), None, missing=missing)


def _with(node: Any, **changes: Any) -> Any:
    return node.__class__(**{k: getattr(node, k) for k in node.keys} | changes)


class _Collect(Visitor):
    """The names of the fragments spread and of the variables used."""

    def __init__(self) -> None:
        super().__init__()
        self.spreads: list[str] = []
        self.variables: set[str] = set()

    def enter_fragment_spread(self, node: FragmentSpreadNode, *_: Any) -> None:
        self.spreads.append(node.name.value)

    def enter_variable(self, node: VariableNode, *_: Any) -> None:
        self.variables.add(node.name.value)


def _reachable_in(node: Any, fragments: Mapping[str, FragmentDefinitionNode]) -> set[str]:
    """The fragments `node` spreads, directly or through other fragments."""
    seen: set[str] = set()
    todo = [node]
    while todo:
        collect = _Collect()
        visit(todo.pop(), collect)
        for name in collect.spreads:
            if name not in seen and name in fragments:
                seen.add(name)
                todo.append(fragments[name])
    return seen


def _variables_in(nodes: list[Any]) -> set[str]:
    """The variables `nodes` (an operation's selections and directives, the fragments it
    spreads) use."""
    collect = _Collect()
    for node in nodes:
        visit(node, collect)
    return collect.variables


def _is_request_error(result: ExecutionResult) -> bool:
    """Nothing ran: graphql-core refused the request (its variables), so no error has a path;
    a field's error always has one, even when it nulls the whole data."""
    return result.data is None and bool(result.errors) and all(e.path is None for e in result.errors)


def _wants_html(request: Request) -> bool:
    accept = request.headers.get("accept", "")
    return "text/html" in accept and "query" not in request.query_params


def _negotiate(accept: str | None) -> str:
    if not accept:
        return JSON
    offered = []
    for part in accept.split(","):
        media, *rest = [p.strip() for p in part.split(";")]
        q = 1.0
        for param in rest:
            if param.startswith("q="):
                try:
                    q = float(param[2:])
                except ValueError:
                    q = 0.0
        if q > 0:
            offered.append((q, media.lower()))
    offered.sort(key=lambda item: -item[0])
    for _, media in offered:
        if media == GRAPHQL_RESPONSE:
            return GRAPHQL_RESPONSE
        if media in {JSON, "application/*", "*/*"}:
            return JSON
    raise RequestProblem(406, codes.NOT_ACCEPTABLE,
                         f"this endpoint answers {GRAPHQL_RESPONSE} or {JSON}")


_WANTED = {b"accept": 0, b"content-type": 1, b"authorization": 2, b"if-none-match": 3}


def _headers(request: Request) -> list[str | None]:
    """accept, content-type, authorization and if-none-match, read in one pass over the raw
    headers (four `request.headers.get` scan them four times: ~5 µs of a 100 µs cache hit).
    The first of repeated headers wins, as with `Headers.get`; ASGI names are lower case."""
    found: list[str | None] = [None, None, None, None]
    for name, value in request.scope["headers"]:
        index = _WANTED.get(name)
        if index is not None and found[index] is None:
            found[index] = value.decode("latin-1")
    return found


async def _read_params(request: Request, content_type: str | None) -> dict[str, Any]:
    if request.method == "GET":
        q = request.query_params
        params: dict[str, Any] = {"query": q.get("query"), "operationName": q.get("operationName")}
        for key in ("variables", "extensions"):
            if q.get(key):
                try:
                    params[key] = _loads(q[key])
                except ValueError:
                    raise RequestProblem(400, codes.BAD_REQUEST, f"{key} is not JSON") from None
    else:
        if (content_type or "").split(";")[0].strip().lower() not in {JSON, GRAPHQL_RESPONSE}:
            raise RequestProblem(415, codes.UNSUPPORTED_MEDIA_TYPE,
                                 "POST a JSON body with Content-Type: application/json")
        try:
            params = _loads(await request.body())
        except ValueError:
            raise RequestProblem(400, codes.BAD_REQUEST, "request body is not valid JSON") from None
        if not isinstance(params, dict):
            raise RequestProblem(400, codes.BAD_REQUEST,
                                 "request body must be a JSON object (batching is not supported)")
    query = params.get("query")
    persisted = isinstance(params.get("extensions"), dict) and "persistedQuery" in params["extensions"]
    if query is not None and not isinstance(query, str):
        raise RequestProblem(400, codes.BAD_REQUEST, "query must be a string")
    if not persisted and (query is None or not query.strip()):
        raise RequestProblem(400, codes.BAD_REQUEST, "the request has no query string")
    name = params.get("operationName")
    if name is not None and not isinstance(name, str):
        raise RequestProblem(400, codes.BAD_REQUEST, "operationName must be a string")
    variables = params.get("variables")
    if variables is not None and not isinstance(variables, dict):
        raise RequestProblem(400, codes.BAD_REQUEST, "variables must be a JSON object")
    return params


def new_request_id() -> str:
    """32 hex digits like uuid4().hex. An id names a request in logs and answers, it guards
    nothing (a client may send its own), so it comes from `random` (seeded from the OS, reseeded
    after a fork), not `os.urandom`: that releases the GIL on the event loop for its system call,
    and under load the loop then waits for a request thread to hand it back (up to the switch
    interval), on every request (measured: 320 µs of the loop's wall time a request). A generator
    of its own, so the ids never reveal the state of the process's shared `random`."""
    return f"{_REQUEST_IDS.getrandbits(128):032x}"


_REQUEST_IDS = random.Random()  # seeded from the OS
if hasattr(os, "register_at_fork"):  # a forked child must not repeat its parent's ids
    os.register_at_fork(after_in_child=_REQUEST_IDS.seed)
