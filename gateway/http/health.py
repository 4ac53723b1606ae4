"""Liveness, readiness and metrics routes."""

from __future__ import annotations

import hmac
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from gateway.http.encoding import JSONResponse
from gateway.observability.metrics import Metrics
from gateway.runtime import Runtime


async def healthz(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


class WarmUp:
    """Where start-up warm-up stands (gateway/app.py runs it): /readyz is 503 while it is
    pending, so a load balancer sends no request that would pay for it."""

    def __init__(self) -> None:
        self.state = "pending"

    def finished(self) -> None:
        self.state = "ok"

    def failed(self, exc: BaseException) -> None:
        # Warm-up only saves the first requests time: what it loads is also loaded on first use.
        # Ready anyway, saying so, rather than out of rotation for good.
        self.state = f"failed: {type(exc).__name__}"


def readiness(runtime: Runtime, warm_up: WarmUp | None = None) -> Any:
    def check() -> dict[str, str]:
        results: dict[str, str] = {}
        if warm_up is not None:
            results["warm_up"] = warm_up.state
        for name, probe in (("database", runtime.db.ping), ("bus", runtime.bus.ping),
                            ("broker", lambda: _ping_broker(runtime))):
            try:
                probe()
                results[name] = "ok"
            except Exception as exc:  # report, never raise: this is the probe
                results[name] = f"unavailable: {type(exc).__name__}"
        return results

    async def readyz(request: Request) -> Response:
        results = await run_in_threadpool(check)
        ready = all(v == "ok" or (name == "warm_up" and v.startswith("failed"))
                    for name, v in results.items())
        return JSONResponse({"status": "ready" if ready else "unavailable", "checks": results},
                            status_code=200 if ready else 503)

    return readyz


def _ping_broker(runtime: Runtime) -> None:
    client = getattr(runtime.broker, "client", None)  # RedisBroker; the in-memory one is always up
    if client is not None:
        client.ping()


def metrics_route(metrics: Metrics, token: str | None = None) -> Any:
    """/metrics; with a token (ALPHINTRA_METRICS_TOKEN), only for `Authorization: Bearer <token>`."""
    expected = f"Bearer {token}".encode() if token else None

    async def metrics_endpoint(request: Request) -> Response:
        if expected is not None and not hmac.compare_digest(
                request.headers.get("authorization", "").encode(), expected):
            return Response("unauthorized\n", status_code=401, media_type="text/plain",
                            headers={"WWW-Authenticate": "Bearer"})
        # with several workers, every worker's values (gateway/observability/metrics.py)
        body = await run_in_threadpool(generate_latest, metrics.scraped)
        return Response(body, media_type=CONTENT_TYPE_LATEST)

    return metrics_endpoint
