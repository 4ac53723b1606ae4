"""The `portfolio.optimize` job kind: parameters checked when requested, the work on a worker."""

from __future__ import annotations

from typing import Any

from gateway.jobs.kinds import JobKind, Params
from gateway.jobs.runner import JobContext
from gateway.quantum.service import PortfolioOptimisationService

KIND = "portfolio.optimize"


def portfolio_optimisation_kind(service: PortfolioOptimisationService) -> JobKind:
    def run(ctx: JobContext, params: Params) -> dict[str, Any]:
        # Progress goes to the Job row between stages; a cancel request is seen there.
        return service.run(params, ctx.progress)

    return JobKind(
        name=KIND,
        description="Chooses `budget` instruments (quantum or classical backend, checked against "
                    "the exact optimum) and their mean-variance weights.",
        run=run,
        validate=service.validate,
    )
