"""Liveness, readiness and metrics routes."""

from __future__ import annotations

from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from gateway.observability.metrics import Metrics
from gateway.runtime import Runtime


async def healthz(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


def readiness(runtime: Runtime) -> Any:
    def check() -> dict[str, str]:
        results: dict[str, str] = {}
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
        ready = all(v == "ok" for v in results.values())
        return JSONResponse({"status": "ready" if ready else "unavailable", "checks": results},
                            status_code=200 if ready else 503)

    return readyz


def _ping_broker(runtime: Runtime) -> None:
    client = getattr(runtime.broker, "client", None)  # RedisBroker; the in-memory one is always up
    if client is not None:
        client.ping()


def metrics_route(metrics: Metrics) -> Any:
    async def metrics_endpoint(request: Request) -> Response:
        body = await run_in_threadpool(generate_latest, metrics.registry)
        return Response(body, media_type=CONTENT_TYPE_LATEST)

    return metrics_endpoint
