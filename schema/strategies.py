"""The AI strategy lab: strategies as data, versions, approvals, backtests, explained decisions.

Permissions (casbin object "strategy"): read for the queries, write to create strategies and
versions and to start backtests. Approving a version needs "strategy_approval" (admin,
compliance_officer) and someone other than its creator. A backtest is a Job (kind
`strategy.backtest`); its result names the stored Backtest (`backtestResult(id)`).
`strategyReport(strategyId, format)` answers the regulatory report as base64 (HTML or PDF).
"""

from __future__ import annotations

import base64
import enum
from datetime import datetime
from decimal import Decimal
from typing import Any

import strawberry
from strawberry.scalars import JSON
from strawberry.types import Info

from gateway.http.context import RequestContext
from gateway.strategies import models
from gateway.strategies.dsl import STRATEGY_SCHEMA
from gateway.strategies.kind import KIND
from gateway.strategies.report import render_report
from gateway.strategies.service import StrategyService, can_trade
from schema.common import DEFAULT_PAGE, Connection, ctx
from schema.jobs import Job


def _service(info: Info, act: str) -> tuple[RequestContext, StrategyService]:
    c = ctx(info)
    c.require("strategy", act)
    return c, c.runtime.strategies


@strawberry.enum
class StrategyOrigin(enum.Enum):
    HUMAN = "HUMAN"
    LLM = "LLM"
    OFFLINE = "OFFLINE"


@strawberry.enum
class StrategyReportFormat(enum.Enum):
    HTML = "HTML"
    PDF = "PDF"


@strawberry.type
class EquityPoint:
    at: datetime
    equity: Decimal


@strawberry.type(description="Stored result of one backtest run.")
class Backtest:
    id: strawberry.ID
    strategy_version_id: strawberry.ID
    job_id: strawberry.ID | None
    params: JSON
    metrics: JSON = strawberry.field(
        description="Returns, volatility, Sharpe, Sortino, drawdown, turnover, "
        "hit rate, exposure (floats: statistics, not money)."
    )
    equity_curve: list[EquityPoint] = strawberry.field(
        description="In the tenant's base currency; at most 2,000 evenly spaced points."
    )
    trades: JSON
    explainer: JSON = strawberry.field(description="The surrogate model: hash, version, fidelity, counts.")
    drift: JSON = strawberry.field(description="Feature drift between the training and live windows.")
    decision_count: int
    created_at: datetime
    explainer_model: str | None = strawberry.field(
        description="The explanation model in LightGBM's text form (its SHA-256 is the explainer's "
        "model_hash): reload it to recompute any explanation."
    )
    fill_ratio: float | None = strawberry.field(
        default=None,
        description="Filled / ordered quantity: orders take at most the participation rate of "
        "each bar's volume, the rest works over the next bars. Null when nothing was ordered "
        "(or for backtests run before the liquidity model).",
    )
    unfilled_quantity: Decimal | None = strawberry.field(
        default=None,
        description="Ordered quantity (summed over instruments) that never filled: remainders "
        "cancelled by an exit or still working at the end.",
    )

    @classmethod
    def of(cls, row: models.Backtest) -> Backtest:
        return cls(
            id=strawberry.ID(row.id),
            strategy_version_id=strawberry.ID(row.strategy_version_id),
            job_id=strawberry.ID(row.job_id) if row.job_id else None,
            params=row.params,
            metrics=row.metrics,
            equity_curve=[
                EquityPoint(at=datetime.fromisoformat(a), equity=Decimal(v)) for a, v in row.equity_curve
            ],
            trades=row.trades,
            explainer=row.explainer,
            drift=row.drift,
            decision_count=row.decision_count,
            explainer_model=row.explainer_model,
            created_at=row.created_at,
            fill_ratio=row.metrics.get("fill_ratio"),
            unfilled_quantity=(
                Decimal(row.metrics["unfilled_quantity"]) if "unfilled_quantity" in row.metrics else None
            ),
        )


@strawberry.type
class StrategyVersion:
    id: strawberry.ID
    strategy_id: strawberry.ID
    version: int
    document: JSON
    document_hash: str
    origin: StrategyOrigin
    origin_model: str | None
    origin_prompt_hash: str | None
    origin_note: str | None
    created_by_id: strawberry.ID | None
    created_at: datetime
    approved_by_id: strawberry.ID | None
    approved_at: datetime | None
    can_trade: bool = strawberry.field(description="Only an approved version may send orders.")

    @strawberry.field
    def backtests(
        self, info: Info, first: int = DEFAULT_PAGE, after: str | None = None
    ) -> Connection[Backtest]:
        c, service = _service(info, "read")
        return Connection.of(
            service.backtests(c.tenant_id, str(self.id), first=first, after=after), Backtest.of
        )

    @classmethod
    def of(cls, row: models.StrategyVersion) -> StrategyVersion:
        return cls(
            id=strawberry.ID(row.id),
            strategy_id=strawberry.ID(row.strategy_id),
            version=row.version,
            document=row.document,
            document_hash=row.document_hash,
            origin=StrategyOrigin(row.origin),
            origin_model=row.origin_model,
            origin_prompt_hash=row.origin_prompt_hash,
            origin_note=row.origin_note,
            created_by_id=strawberry.ID(row.created_by) if row.created_by else None,
            created_at=row.created_at,
            approved_by_id=strawberry.ID(row.approved_by) if row.approved_by else None,
            approved_at=row.approved_at,
            can_trade=can_trade(row),
        )


@strawberry.type
class Strategy:
    id: strawberry.ID
    name: str
    latest_version: int
    created_by_id: strawberry.ID | None
    created_at: datetime
    updated_at: datetime

    @strawberry.field(description="Every version, oldest first.")
    def versions(self, info: Info) -> list[StrategyVersion]:
        c, service = _service(info, "read")
        rows = c.loader("strategy.versions", lambda ids: service.versions(c.tenant_id, ids)).load(
            str(self.id)
        )
        return [StrategyVersion.of(r) for r in rows or []]

    @classmethod
    def of(cls, row: models.Strategy) -> Strategy:
        return cls(
            id=strawberry.ID(row.id),
            name=row.name,
            latest_version=row.latest_version,
            created_by_id=strawberry.ID(row.created_by) if row.created_by else None,
            created_at=row.created_at,
            updated_at=row.updated_at,
        )


@strawberry.type
class Contribution:
    feature: str
    value: float | None = strawberry.field(description="The feature's value at the decision.")
    contribution: float = strawberry.field(
        description="Signed SHAP value, in log-odds of being in the market."
    )


@strawberry.type
class DecisionExplanation:
    id: strawberry.ID
    strategy_version_id: strawberry.ID
    backtest_id: strawberry.ID
    instrument: str
    at: datetime
    action: str = strawberry.field(description="ENTER, EXIT, HOLD or WAIT: what the strategy did.")
    model_hash: str
    model_version: str
    features: JSON
    base_value: float
    contributions: list[Contribution] = strawberry.field(description="Largest magnitude first.")
    prediction: float = strawberry.field(description="The model's raw score (log-odds).")
    probability: float
    residual: float = strawberry.field(description="prediction - (baseValue + sum of contributions).")
    additive: bool = strawberry.field(description="|residual| <= 1e-6.")
    sentence: str

    @classmethod
    def of(cls, row: models.DecisionExplanation) -> DecisionExplanation:
        ordered = sorted(row.contributions.items(), key=lambda kv: -abs(kv[1]))
        return cls(
            id=strawberry.ID(row.id),
            strategy_version_id=strawberry.ID(row.strategy_version_id),
            backtest_id=strawberry.ID(row.backtest_id),
            instrument=row.instrument,
            at=row.at,
            action=row.action,
            model_hash=row.model_hash,
            model_version=row.model_version,
            features=row.features,
            base_value=row.base_value,
            contributions=[
                Contribution(feature=k, value=row.features.get(k), contribution=v) for k, v in ordered
            ],
            prediction=row.prediction,
            probability=row.probability,
            residual=row.residual,
            additive=row.additive,
            sentence=row.sentence,
        )


@strawberry.type
class StrategyReport:
    filename: str
    content_type: str
    base64: str = strawberry.field(description="The document's bytes, base64-encoded.")


@strawberry.input
class CreateStrategyInput:
    name: str | None = None
    document: JSON
    idempotency_key: str | None = None


@strawberry.input(description="Costs in basis points of the notional; amounts in the base currency.")
class BacktestCostsInput:
    commission_bps: Decimal | None = None
    commission_min: Decimal | None = None
    spread_bps: Decimal | None = None
    slippage_bps: Decimal | None = None
    initial_capital: Decimal | None = None
    participation_rate: Decimal | None = strawberry.field(
        default=None, description="Share of a bar's volume an order may take in it (default 0.1)."
    )
    impact_coefficient: Decimal | None = strawberry.field(
        default=None,
        description="Y of the square-root market impact Y·sigma·sqrt(fill / bar volume) on a "
        "fill's price (default 1).",
    )

    def params(self) -> dict[str, Any]:
        return {k: str(v) for k, v in vars(self).items() if v is not None}


@strawberry.type
class Query:
    @strawberry.field(description="The published JSON Schema of the strategy DSL.")
    def strategy_schema(self, info: Info) -> JSON:
        _service(info, "read")
        return STRATEGY_SCHEMA

    @strawberry.field
    def strategies(
        self, info: Info, first: int = DEFAULT_PAGE, after: str | None = None, search: str | None = None
    ) -> Connection[Strategy]:
        c, service = _service(info, "read")
        page = service.strategies(c.tenant_id, first=first, after=after, search=search)
        c.loader("strategy.versions", lambda ids: service.versions(c.tenant_id, ids)).want(
            r.id for r in page.items
        )
        return Connection.of(page, Strategy.of)

    @strawberry.field
    def strategy(self, info: Info, id: strawberry.ID) -> Strategy:
        c, service = _service(info, "read")
        return Strategy.of(service.strategy(c.tenant_id, str(id)))

    @strawberry.field
    def backtest_result(self, info: Info, id: strawberry.ID) -> Backtest:
        c, service = _service(info, "read")
        return Backtest.of(service.backtest(c.tenant_id, str(id)))

    @strawberry.field
    def explain_decision(self, info: Info, id: strawberry.ID) -> DecisionExplanation:
        c, service = _service(info, "read")
        return DecisionExplanation.of(service.explanation(c.tenant_id, str(id)))

    @strawberry.field(description="Explained decisions of a version, newest first.")
    def decision_explanations(
        self,
        info: Info,
        strategy_version_id: strawberry.ID,
        first: int = DEFAULT_PAGE,
        after: str | None = None,
        backtest_id: strawberry.ID | None = None,
    ) -> Connection[DecisionExplanation]:
        c, service = _service(info, "read")
        page = service.explanations(
            c.tenant_id,
            str(strategy_version_id),
            first=first,
            after=after,
            backtest_id=str(backtest_id) if backtest_id else None,
        )
        return Connection.of(page, DecisionExplanation.of)

    @strawberry.field(
        description="The regulatory report of a strategy: governance trail, metrics, explanations."
    )
    def strategy_report(
        self, info: Info, strategy_id: strawberry.ID, format: StrategyReportFormat = StrategyReportFormat.HTML
    ) -> StrategyReport:
        c, service = _service(info, "read")
        filename, content_type, body = render_report(service, c.tenant_id, str(strategy_id), format.value)
        return StrategyReport(
            filename=filename, content_type=content_type, base64=base64.b64encode(body).decode()
        )


@strawberry.type
class Mutation:
    @strawberry.mutation(description="A new strategy with its first version (origin HUMAN).")
    def create_strategy(self, info: Info, input: CreateStrategyInput) -> Strategy:
        c, service = _service(info, "write")
        row, _ = service.create_strategy(
            c.me, input.name, input.document, idempotency_key=input.idempotency_key
        )
        return Strategy.of(row)

    @strawberry.mutation(description="A new version of a strategy; it needs its own approval.")
    def create_strategy_version(
        self, info: Info, strategy_id: strawberry.ID, document: JSON
    ) -> StrategyVersion:
        from gateway.strategies.service import Origin

        c, service = _service(info, "write")
        return StrategyVersion.of(
            service.create_version(
                c.tenant_id, document, Origin.human(), c.me.user_id, strategy_id=str(strategy_id)
            )
        )

    @strawberry.mutation(description="Approve a version (admin or compliance officer, not its creator).")
    def approve_strategy_version(self, info: Info, id: strawberry.ID) -> StrategyVersion:
        c, service = _service(info, "read")
        return StrategyVersion.of(service.approve(c.me, str(id)))

    @strawberry.mutation(
        description="Backtest a version over [start, end) (a Job; its result names the Backtest)."
    )
    def backtest(
        self,
        info: Info,
        strategy_version_id: strawberry.ID,
        start: datetime,
        end: datetime,
        instruments: list[str] | None = None,
        costs: BacktestCostsInput | None = None,
        idempotency_key: str | None = None,
        region: str | None = None,
    ) -> Job:
        c, service = _service(info, "write")
        params = {
            "strategy_version_id": str(strategy_version_id),
            "start": start.isoformat(),
            "end": end.isoformat(),
            "instruments": instruments,
            "costs": costs.params() if costs else {},
        }
        from gateway.strategies.kind import validate

        checked = validate(params)
        service.check_backtest(
            c.tenant_id,
            checked["strategy_version_id"],
            datetime.fromisoformat(checked["start"]),
            datetime.fromisoformat(checked["end"]),
            checked["instruments"],
        )
        return Job.from_row(
            c.runtime.jobs.start(c.me, KIND, params, region=region, idempotency_key=idempotency_key)
        )
