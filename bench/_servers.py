"""The two apps the throughput benchmark serves, as uvicorn factories.

Both read their settings from the same ALPHINTRA_* environment (set by graphql_throughput.py),
so they share one database and one configuration:

- `gateway_app`: the real gateway, `gateway.app.create_app(settings)`.
- `bare_app`: a plain Starlette route doing the same domain work with no GraphQL in between:
  parse the bearer token, authenticate it with `runtime.authenticator`, check the same
  `job:read` permission the `jobs` resolver checks, load the page with `runtime.jobs.list` and
  the creators with `runtime.tenancy.users_by_id` (in a worker thread, as the gateway does),
  and answer the JSON the GraphQL query answers.

Run by the benchmark as `uvicorn _servers:gateway_app --factory --app-dir bench …`.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

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
