"""`diagnostics`: a real job that checks the path a job travels, in steps with progress.

Each step does something real (a database round trip in the job's tenant scope, an event on
the bus) and the remaining steps pace the job, so progress, cancellation, retries and worker
failure can be watched end to end."""

from __future__ import annotations

import os
import socket
import time
from typing import Any

from sqlmodel import select

from gateway.errors import InvalidInput
from gateway.jobs.kinds import JobKind, Params
from gateway.jobs.runner import JobContext, JobFailed
from gateway.tenancy.models import Tenant

MAX_STEPS = 50
MAX_STEP_SECONDS = 10.0


def validate(params: Params) -> Params:
    unknown = set(params) - {"steps", "step_seconds", "fail_at_step"}
    if unknown:
        raise InvalidInput(f"unknown diagnostics parameters: {sorted(unknown)}",
                           code="JOB_PARAMS_INVALID")
    steps = params.get("steps", 5)
    step_seconds = params.get("step_seconds", 0.2)
    fail_at = params.get("fail_at_step")
    if not isinstance(steps, int) or not 2 <= steps <= MAX_STEPS:
        raise InvalidInput(f"steps must be an integer from 2 to {MAX_STEPS}",
                           code="JOB_PARAMS_INVALID")
    if not isinstance(step_seconds, int | float) or not 0 <= step_seconds <= MAX_STEP_SECONDS:
        raise InvalidInput(f"step_seconds must be from 0 to {MAX_STEP_SECONDS}",
                           code="JOB_PARAMS_INVALID")
    if fail_at is not None and (not isinstance(fail_at, int) or not 1 <= fail_at <= steps):
        raise InvalidInput("fail_at_step must be a step number", code="JOB_PARAMS_INVALID")
    return {"steps": steps, "step_seconds": float(step_seconds), "fail_at_step": fail_at}


def run(ctx: JobContext, params: Params) -> dict[str, Any]:
    steps: int = params["steps"]
    checks: list[dict[str, Any]] = []

    def timed(name: str, check: Any) -> None:
        started = time.perf_counter()
        detail = check()
        checks.append({"name": name, "ok": True, "ms": round((time.perf_counter() - started) * 1e3, 3),
                       "detail": detail})

    def database() -> str:
        with ctx.session() as session:
            return session.exec(select(Tenant.slug)).one()

    def bus() -> int:
        return ctx.bus.publish(f"diagnostics.{ctx.job_id}", {"attempt": ctx.attempt}).sequence

    for step in range(1, steps + 1):
        if params["fail_at_step"] == step:
            raise JobFailed("DIAGNOSTICS_REQUESTED_FAILURE", f"failure requested at step {step}")
        if step == 1:
            timed("database", database)
        elif step == 2:
            timed("bus", bus)
        else:
            time.sleep(params["step_seconds"])
        ctx.progress(step / steps, f"step {step} of {steps}")
    return {
        "steps": steps,
        "checks": checks,
        "attempt": ctx.attempt,
        "worker": {"host": socket.gethostname(), "pid": os.getpid()},
    }


DIAGNOSTICS = JobKind(
    name="diagnostics",
    description="Checks database and bus from a worker, reporting progress in steps.",
    run=run,
    validate=validate,
)
