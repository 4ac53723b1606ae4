"""The `strategy.backtest` job kind: simulate a version, explain its decisions, store once.

Parameters: strategy_version_id, start and end (ISO 8601 with an offset), instruments (optional:
default the strategy's universe), costs (optional, see backtest.Costs). `validate` checks them
when the job is requested; the resolver also checks that the version is the caller's and that
the instruments exist (StrategyService.check_backtest) before anything is queued.

The run reads bars (progress 5-30 %), simulates (30-80 %), fits and explains (80-95 %), then
writes the Backtest row, its DecisionExplanation rows and an audit record in ONE transaction:
a failure (BACKTEST_NO_DATA and the like) leaves no half-stored backtest. A redelivered job
whose row was already written answers with that row.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from gateway.errors import InvalidInput
from gateway.jobs.kinds import JobKind, Params
from gateway.jobs.runner import JobContext
from gateway.strategies.backtest import Costs
from gateway.strategies.errors import BacktestParamsInvalid

if TYPE_CHECKING:
    from gateway.strategies.service import StrategyService

KIND = "strategy.backtest"
PARAMS = {"strategy_version_id", "start", "end", "instruments", "costs"}


def _instant(value: Any, name: str) -> datetime:
    try:
        at = datetime.fromisoformat(str(value))
    except ValueError:
        raise BacktestParamsInvalid(f"{name} must be an ISO 8601 instant") from None
    if at.tzinfo is None:
        raise InvalidInput(f"{name} has no time zone; send an offset such as Z", code="INSTANT_NOT_AWARE")
    return at


def validate(params: Params) -> Params:
    unknown = set(params) - PARAMS
    if unknown:
        raise InvalidInput(f"unknown {KIND} parameters: {sorted(unknown)}", code="JOB_PARAMS_INVALID")
    version_id = params.get("strategy_version_id")
    if not isinstance(version_id, str) or not 1 <= len(version_id) <= 36:
        raise BacktestParamsInvalid("name a strategy version by its id")
    start, end = _instant(params.get("start"), "start"), _instant(params.get("end"), "end")
    if end <= start:
        raise BacktestParamsInvalid("end must be after start")
    instruments = params.get("instruments")
    if instruments is not None and (
        not isinstance(instruments, list)
        or not 1 <= len(instruments) <= 50
        or any(not isinstance(k, str) for k in instruments)
        or len(set(instruments)) != len(instruments)
    ):
        raise BacktestParamsInvalid("instruments: 1 to 50 distinct SYMBOL.MIC keys")
    costs = Costs.from_params(params.get("costs"))
    return {
        "strategy_version_id": version_id,
        "start": start.isoformat(),
        "end": end.isoformat(),
        "instruments": instruments,
        "costs": costs.to_params(),
    }


def strategy_backtest_kind(service: StrategyService) -> JobKind:
    def run(ctx: JobContext, params: Params) -> dict[str, Any]:
        done = service.backtest_of_job(ctx.tenant_id, ctx.job_id)
        if done is None:
            ctx.progress(0.01, "reading the strategy version")
            done = service.run_backtest_job(ctx.tenant_id, ctx.job_id, params, progress=ctx.progress)
        return {
            "backtest_id": done.id,
            "strategy_version_id": done.strategy_version_id,
            "metrics": done.metrics,
            "explained": done.explainer.get("explained", 0),
            "decisions": done.decision_count,
        }

    return JobKind(
        name=KIND,
        description="Backtests a strategy version over market data, with costs, "
        "sessions and the base currency, and explains its decisions.",
        run=run,
        validate=validate,
        permission="strategy",
    )
