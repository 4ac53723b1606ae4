"""The Python apps the throughput benchmark serves, as uvicorn factories.

The first two read their settings from the same ALPHINTRA_* environment (set by
graphql_throughput.py), so they share one database and one configuration:

- `gateway_app`: the real gateway, `gateway.app.create_app(settings)`.
- `bare_app`: a plain Starlette route doing the same domain work with no GraphQL in between:
  parse the bearer token, authenticate it with `runtime.authenticator`, check the same
  `job:read` permission the `jobs` resolver checks, load the page with `runtime.jobs.list` and
  the creators with `runtime.tenancy.users_by_id` (in a worker thread, as the gateway does),
  and answer the JSON the GraphQL query answers.

The other two serve the data file the benchmark dumped at start (`bench_data`; its path in
BENCH_DATA_FILE), held in memory, with no database, authentication or permission check, as
bench/yoga/server.mjs does:

- `strawberry_app`: plain strawberry (its own ASGI app) with a minimal schema of the same shape.
- `raw_app`: a Starlette route answering the same JSON, encoded once at start: the ceiling of
  uvicorn + Starlette (and of the load generator) on this machine.

`published_gateway_app` is the gateway for bench/subscription_fanout.py: the same app, whose bus
also notes when each `orders.*` message was handed to it (right after its transaction
committed), answered at GET /bench/published.

Run by the benchmark as `uvicorn _servers:gateway_app --factory --app-dir bench …`.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import strawberry
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from gateway.auth.authenticate import bearer_token
from gateway.errors import DomainError, Forbidden, Unauthenticated
from gateway.http.errors import error_body
from gateway.observability import logs
from gateway.runtime import Runtime, build_runtime
from gateway.settings import Settings

PAGE_SIZE = 50
QUERY = (f"query Page {{ jobs(first: {PAGE_SIZE}) {{ edges {{ node {{ id kind status progress "
         "createdAt createdBy { email } } } } }")


def _settings() -> Settings:
    settings = Settings.from_env()
    logs.configure(settings.log_level, settings.log_json)
    return settings


def gateway_app() -> Starlette:
    from gateway.app import create_app

    return create_app(_settings())


def threaded_hits_gateway_app() -> Starlette:
    """The gateway whose response-cache hits go through a request thread, as before they were
    answered on the event loop (bench/response_cache.py's `gateway-cache-thread`)."""
    app = gateway_app()
    app.state.graphql.hits_on_loop = False
    return app


def published_gateway_app() -> Starlette:
    from gateway.app import create_app

    settings = _settings()
    runtime = build_runtime(settings)
    published: dict[int, float] = {}  # bus sequence -> time.time() just before publishing
    publish = runtime.bus.publish

    def noting(topic: str, payload: dict[str, Any]) -> Any:
        committed = time.time()
        event = publish(topic, payload)
        if topic.startswith("orders."):
            published[event.sequence] = committed
        return event

    runtime.bus.publish = noting  # type: ignore[method-assign]  (this instance only)
    if os.environ.get("BENCH_DIRECT_WRITES") == "off":  # every frame through uvicorn's `send`
        from gateway.http import websocket

        websocket.direct_connection = lambda send: None  # type: ignore[assignment]

    async def times(request: Request) -> Response:
        return JSONResponse(published)

    app = create_app(settings, runtime=runtime)
    app.router.routes.insert(0, Route("/bench/published", times))
    return app


def jobs_page(runtime: Runtime, token: str, first: int = PAGE_SIZE) -> dict[str, Any]:
    """The bare route's work, in one thread: what `jobs(first: 50)` with its fields costs
    without GraphQL. Raises DomainError like the gateway's services do."""
    principal = runtime.authenticator.authenticate(token)
    if not runtime.policy.allowed(principal.user_id, principal.tenant_id, "job", "read"):
        raise Forbidden("read on job is not allowed for this user", code="FORBIDDEN")
    page = runtime.jobs.list(principal.tenant_id, first=first)
    creators = list({job.created_by for job in page.items if job.created_by is not None})
    users = runtime.tenancy.users_by_id(principal.tenant_id, creators)
    edges = []
    for job in page.items:
        user = users.get(job.created_by) if job.created_by is not None else None
        edges.append({"node": {
            "id": job.id, "kind": job.kind, "status": job.status, "progress": job.progress,
            "createdAt": job.created_at.isoformat(),
            "createdBy": {"email": user.email} if user is not None else None,
        }})
    return {"data": {"jobs": {"edges": edges}}}


def bare_app() -> Starlette:
    settings = _settings()
    runtime = build_runtime(settings)

    async def jobs(request: Request) -> Response:
        try:
            token = bearer_token(request.headers.get("authorization"))
            if token is None:
                raise Unauthenticated("send Authorization: Bearer <API key>",
                                      code="UNAUTHENTICATED")
            json.loads(await request.body())  # read the request the gateway reads; query unused
            body = await run_in_threadpool(jobs_page, runtime, token)
        except DomainError as exc:
            return JSONResponse(error_body(exc.code, exc.message), status_code=exc.http_status)
        return JSONResponse(body)

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        try:
            yield
        finally:
            runtime.close()

    return Starlette(routes=[Route("/graphql", jobs, methods=["POST"]),
                             Route("/healthz", healthz)], lifespan=lifespan)


# In-memory servers -----------------------------------------------------------------------------

def bench_data(runtime: Runtime, token: str, first: int = PAGE_SIZE) -> dict[str, Any]:
    """The page as data for the in-memory servers: jobs in page order, each naming its creator
    by id, and the creators by id (what the gateway's resolvers read, without the database)."""
    principal = runtime.authenticator.authenticate(token)
    page = runtime.jobs.list(principal.tenant_id, first=first)
    creators = list({job.created_by for job in page.items if job.created_by is not None})
    users = runtime.tenancy.users_by_id(principal.tenant_id, creators)
    return {
        "jobs": [{"id": job.id, "kind": job.kind, "status": job.status, "progress": job.progress,
                  "createdAt": job.created_at.isoformat(), "createdBy": job.created_by}
                 for job in page.items],
        "users": {user_id: {"email": user.email} for user_id, user in users.items()},
    }


def _load_data() -> dict[str, Any]:
    return json.loads(Path(os.environ["BENCH_DATA_FILE"]).read_text())


def _in_memory_app(graphql: Any) -> Starlette:
    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    return Starlette(routes=[Route("/healthz", healthz), Route("/graphql", graphql,
                                                               methods=["POST"])])


@strawberry.type
class BenchUser:
    email: str


@strawberry.type
class BenchJob:
    id: strawberry.ID
    kind: str
    status: str
    progress: float
    created_at: str
    creator_id: strawberry.Private[str | None]

    @strawberry.field
    def created_by(self, info: strawberry.Info) -> BenchUser | None:
        user = info.context["users"].get(self.creator_id)
        return None if user is None else BenchUser(email=user["email"])


@strawberry.type
class BenchJobEdge:
    node: BenchJob


@strawberry.type
class BenchJobConnection:
    edges: list[BenchJobEdge]


@strawberry.type
class BenchQuery:
    @strawberry.field
    def jobs(self, info: strawberry.Info, first: int = PAGE_SIZE) -> BenchJobConnection:
        return BenchJobConnection(edges=[BenchJobEdge(node=job)
                                         for job in info.context["jobs"][:first]])


def strawberry_app() -> Starlette:
    from strawberry.asgi import GraphQL

    data = _load_data()
    jobs = [BenchJob(id=strawberry.ID(j["id"]), kind=j["kind"], status=j["status"],
                     progress=j["progress"], created_at=j["createdAt"],
                     creator_id=j["createdBy"]) for j in data["jobs"]]
    context = {"jobs": jobs, "users": data["users"]}

    class App(GraphQL[dict[str, Any], None]):
        async def get_context(self, request: Any, response: Any) -> dict[str, Any]:
            return context

    return _in_memory_app(App(strawberry.Schema(query=BenchQuery), graphql_ide=None))


def raw_app() -> Starlette:
    data = _load_data()
    edges = []
    for job in data["jobs"]:
        user = data["users"].get(job["createdBy"])
        edges.append({"node": {**job, "createdBy": user}})
    # JSONResponse's own encoding, done once: the answer is the same bytes every time
    body = JSONResponse({"data": {"jobs": {"edges": edges}}}).body

    async def jobs(request: Request) -> Response:
        await request.body()  # read the request, as every other server does
        return Response(body, media_type="application/json")

    return _in_memory_app(jobs)
