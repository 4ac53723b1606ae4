"""The app factory: the composition root that assembles runtime, schema and routes.

It is the one module of gateway/ that reaches into schema/ (lazily, when no schema is handed
in), because it is where the GraphQL surface meets the runtime.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import logging
import threading
from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from typing import Any

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route, WebSocketRoute

from gateway.auth.policy import CREDENTIALS_TOPIC, POLICY_TOPIC
from gateway.events import Listeners
from gateway.http.console import console_routes, graphiql_page
from gateway.http.encoding import JSONResponse
from gateway.http.graphql import GraphQLEndpoint
from gateway.http.health import WarmUp, healthz, metrics_route, readiness
from gateway.http.middleware import RequestMiddleware, cors_middleware
from gateway.http.reports import report_download
from gateway.http.websocket import SubscriptionEndpoint
from gateway.jobs.broker import start_worker
from gateway.marketplace.inspection import CoreNames
from gateway.marketplace.install import CHANGED_TOPIC, DELISTED_TOPIC
from gateway.observability import logs
from gateway.observability.metrics import Metrics
from gateway.observability.tracing import make_tracer, tracing_middleware
from gateway.runtime import YOUNG_COLLECTION_EVERY, Runtime, build_runtime
from gateway.settings import Settings
from gateway.strategies.dsl import STRATEGY_SCHEMA
from gateway.trading.clock import run_venue_clock

log = logging.getLogger(__name__)

SchemaFactory = Callable[[Runtime], Any]


def _default_schema(runtime: Runtime) -> Any:
    from schema import build_schema

    return build_schema(runtime.settings)


def _core_names(settings: Settings) -> Callable[[], CoreNames]:
    """The core schema's root fields and types, for publication's check of schema extensions:
    the same core tenant schemas are composed on (schema/tenant.py), built at the first call."""

    @functools.cache
    def names() -> CoreNames:
        from graphql import GraphQLScalarType

        from schema import build_schema

        core = build_schema(settings)._schema
        root_types = {root: getattr(core, f"{root}_type") for root in ("query", "mutation", "subscription")}
        roots = {root: frozenset(t.fields) for root, t in root_types.items() if t is not None}
        named = {name: t for name, t in core.type_map.items() if not name.startswith("__")}
        return CoreNames(roots=roots,
                         types=frozenset(n for n, t in named.items() if not isinstance(t, GraphQLScalarType)),
                         scalars=frozenset(n for n, t in named.items() if isinstance(t, GraphQLScalarType)))

    return names


def _warm(runtime: Runtime, stopping: threading.Event, warm_up: WarmUp) -> None:
    """Load market calendars, train the pattern recogniser and deploy the embedded chain's demo
    world before any request needs them (/readyz is 503 until then). A shutdown waits only for
    the step under way."""
    steps: tuple[Callable[[], object], ...] = (
        runtime.markets.directory.calendars.warm,
        runtime.patterns.model,
        runtime.defi.warm,  # deploys the demo world on the embedded chain (a few seconds)
    )
    try:
        for step in steps:
            if stopping.is_set():
                return
            step()
    except Exception as exc:
        log.exception("warm-up failed; serving without it")
        warm_up.failed(exc)
        return
    warm_up.finished()


def create_app(settings: Settings | None = None, *, runtime: Runtime | None = None,
               schema_factory: SchemaFactory = _default_schema, tracer: Any = None) -> Starlette:
    settings = settings or (runtime.settings if runtime else Settings.from_env())
    runtime = runtime or build_runtime(settings)
    schema = schema_factory(runtime)
    from schema import federation
    from schema.tenant import tenant_composer  # the composition root: tenants' schemas too

    composer = tenant_composer(settings)
    runtime.marketplace.bind_composer(composer)
    # One SDL for every tenant (`_service`): the core plus every approved plugin's fields.
    federated = federation.bind(runtime, schema, composer)
    runtime.marketplace_publishing.bind_core_names(_core_names(settings))
    metrics = Metrics(runtime.db)
    if tracer is None:
        tracer, _provider = make_tracer(settings)
    graphql = GraphQLEndpoint(schema, runtime, metrics, tracer=tracer,
                              graphiql=graphiql_page,
                              federated=federated)
    subscriptions = SubscriptionEndpoint(schema, runtime, graphql)
    warm_up = WarmUp() if settings.warm_on_start else None
    for warning in settings.startup_warnings():  # production only; CORS: cors_middleware
        log.warning(warning)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await runtime.bus.start()
        # The runtime may outlive this app (the bus allows several owners; the test suite
        # serves many apps on one runtime): what this app listens to goes when it does.
        listening = Listeners(runtime.bus)
        try:
            await listening.listen(DELISTED_TOPIC, runtime.marketplace.on_delisted)
            await listening.listen(CHANGED_TOPIC, runtime.marketplace.on_changed)
            for topic in federated.topics:
                await listening.listen(topic, federated.on_event)
            sandbox = runtime.marketplace.sandbox
            layers = await asyncio.to_thread(sandbox.describe_layers)
            if sandbox.layers.missing_minimum():
                log.warning("%s: marketplace plugins %s", layers,
                            "will not run (ALPHINTRA_PLUGIN_SANDBOX=required)" if sandbox.limits.required
                            else "run with less isolation (best-effort)")
            else:
                log.info(layers)
            # installed plugins, each tenant on its own thread: a slow import delays only that tenant
            await asyncio.to_thread(runtime.marketplace.restore)
            # a revoked key or deactivated user closes its sockets on every replica
            await listening.listen(CREDENTIALS_TOPIC, runtime.authenticator.on_credentials_revoked)
            await listening.listen(CREDENTIALS_TOPIC, subscriptions.on_credentials_revoked)
            if graphql.cache is not None:  # the response cache hears the events that invalidate it
                await graphql.cache.start(runtime.bus)
            if settings.redis_url:  # in one process the policy object is already up to date
                await listening.listen(POLICY_TOPIC, lambda event: runtime.policy.reload())
            # after the reload above: sockets whose user lost a role close
            await listening.listen(POLICY_TOPIC, subscriptions.on_policy_changed)
        except BaseException:
            # A start-up that fails leaves the runtime's bus as it found it: the runtime may
            # outlive this app, and these listeners would run for every event after it.
            await listening.close()
            if graphql.cache is not None:
                await graphql.cache.stop()
            await runtime.bus.stop()
            raise
        warming = None
        stopping = threading.Event()
        if warm_up is not None:
            warming = asyncio.create_task(asyncio.to_thread(_warm, runtime, stopping, warm_up))
        venue_clock = asyncio.create_task(run_venue_clock(
            runtime.orders, unsent_after=timedelta(milliseconds=settings.orders_unsent_after_ms)))
        worker = None
        if settings.runs_embedded_worker:
            worker = start_worker(runtime.broker, settings.regions, settings.worker_threads)
        runtime.start_delivery()  # the outbox dispatcher and the job reaper
        if settings.runs_embedded_worker and not settings.redis_url:
            # the in-memory broker forgot its messages with the last process: send them now
            await asyncio.to_thread(runtime.job_reaper.reap, queued_age_s=0)
        # What start-up built (schemas, plugins, calendars: ~300k objects) lives as long as the
        # process: out of the collector's full passes, which otherwise rescan all of it and
        # cost ~15 % of order intake's CPU. Given back to the collector on shutdown.
        gc.freeze()
        # Young collections less often while serving (gateway/runtime.py says why).
        thresholds = gc.get_threshold()
        gc.set_threshold(YOUNG_COLLECTION_EVERY, *thresholds[1:])
        try:
            yield
        finally:
            gc.set_threshold(*thresholds)
            gc.unfreeze()
            # First: no event reaches what is about to stop (plugin reloads, closed sockets).
            await listening.close()
            if graphql.cache is not None:
                await graphql.cache.stop()
            venue_clock.cancel()
            if warming is not None:
                stopping.set()
                await warming
            if worker is not None:
                worker.stop(timeout=5_000)
            await asyncio.to_thread(runtime.stop_delivery)
            await asyncio.to_thread(runtime.marketplace.stop)  # flushes metering
            # DeFi event pollers start with the first defiEvents subscription; stop any here.
            await asyncio.to_thread(runtime.defi_events.stop)
            await runtime.bus.stop()
            graphql.executor.close()  # its request threads (the runtime may outlive this app)

    async def strategy_schema(request: Request) -> Response:
        # The strategy DSL's published JSON Schema: public, the same for every tenant.
        return JSONResponse(STRATEGY_SCHEMA, media_type="application/schema+json")

    app = Starlette(
        routes=[
            Route("/graphql", graphql.handle, methods=["GET", "POST"]),
            WebSocketRoute("/graphql", subscriptions),
            Route("/healthz", healthz),
            Route("/readyz", readiness(runtime, warm_up)),
            Route("/metrics", metrics_route(metrics, settings.metrics_token)),
            Route("/reports/{id}", report_download(runtime)),
            Route("/schemas/strategy.json", strategy_schema),
            *console_routes(runtime),  # /console (the web console), / redirecting there
        ],
        middleware=[*cors_middleware(settings), *tracing_middleware(tracer),
                    Middleware(RequestMiddleware, metrics=metrics,
                               max_body_bytes=settings.max_body_bytes)],
        lifespan=lifespan,
    )
    app.state.runtime = runtime
    app.state.schema = schema
    app.state.graphql = graphql
    app.state.federated = federated
    app.state.metrics = metrics
    return app


def app_from_env() -> Starlette:
    """The app of one worker process of `alphintra serve --workers N` (uvicorn's factory). Uvicorn
    spawns each worker, so nothing of the serving process's memory is inherited: each worker
    reads its settings from the environment and builds its own runtime, bus and pools."""
    settings = Settings.from_env()
    logs.configure(settings.log_level, settings.log_json)
    return create_app(settings)
