"""Tables of the strategy lab; all tenant-owned (filtered by the tenant session).

- `Strategy`: a named strategy of one tenant; its content lives in versions.
- `StrategyVersion`: one immutable document (the DSL JSON) numbered 1, 2, ... per strategy,
  with its origin (HUMAN, LLM with model and prompt hash, OFFLINE), who created it, and who
  approved it when (human oversight: only an approved version may send orders).
- `Backtest`: one run of a version over a period: parameters, status, metrics, equity curve,
  trades, the explainer's summary and the feature drift report. Written once, when the job
  finishes, so a failed run leaves no half-written row.
- `DecisionExplanation`: why the strategy took one decision (gateway/strategies/explain.py).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Column, Index, Text, UniqueConstraint
from sqlmodel import Field

from gateway.db import TenantOwned, UTCDateTime, utcnow
from gateway.tenancy.models import new_id

ORIGINS = ("HUMAN", "LLM", "OFFLINE")


def _stamp(nullable: bool = False) -> Any:
    if nullable:
        return Field(default=None, sa_column=Column(UTCDateTime(), nullable=True))
    return Field(default_factory=utcnow, sa_column=Column(UTCDateTime(), nullable=False))


class Strategy(TenantOwned, table=True):
    __table_args__ = (UniqueConstraint("tenant_id", "idempotency_key"),)

    id: str = Field(default_factory=new_id, primary_key=True, max_length=36)
    name: str = Field(max_length=120)
    latest_version: int = 0
    created_by: str | None = Field(default=None, max_length=36)
    idempotency_key: str | None = Field(default=None, max_length=128)
    created_at: datetime = _stamp()
    updated_at: datetime = _stamp()


class StrategyVersion(TenantOwned, table=True):
    __tablename__ = "strategy_version"
    __table_args__ = (UniqueConstraint("strategy_id", "version"),)

    id: str = Field(default_factory=new_id, primary_key=True, max_length=36)
    strategy_id: str = Field(foreign_key="strategy.id", index=True, max_length=36)
    version: int
    document: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    document_hash: str = Field(max_length=64)
    origin: str = Field(max_length=16)  # HUMAN | LLM | OFFLINE
    origin_model: str | None = Field(default=None, max_length=200)
    origin_prompt_hash: str | None = Field(default=None, max_length=64)
    origin_note: str | None = Field(default=None, max_length=2000)
    created_by: str | None = Field(default=None, max_length=36)
    created_at: datetime = _stamp()
    approved_by: str | None = Field(default=None, max_length=36)
    approved_at: datetime | None = _stamp(nullable=True)


class Backtest(TenantOwned, table=True):
    __table_args__ = (Index("ix_backtest_version_created", "strategy_version_id", "created_at"),)

    id: str = Field(default_factory=new_id, primary_key=True, max_length=36)
    strategy_version_id: str = Field(foreign_key="strategy_version.id", max_length=36)
    job_id: str | None = Field(default=None, index=True, max_length=36)
    status: str = Field(default="SUCCEEDED", max_length=16)
    params: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    metrics: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    equity_curve: list[Any] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    trades: list[Any] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    explainer: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    drift: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    # The surrogate itself (LightGBM's text form; SHA-256 = explainer["model_hash"]), so a
    # reviewer can reload it and recompute any stored explanation.
    explainer_model: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    decision_count: int = 0
    created_by: str | None = Field(default=None, max_length=36)
    created_at: datetime = _stamp()


class DecisionExplanation(TenantOwned, table=True):
    __tablename__ = "decision_explanation"
    __table_args__ = (Index("ix_decision_explanation_version_created", "strategy_version_id", "created_at"),)

    id: str = Field(default_factory=new_id, primary_key=True, max_length=36)
    strategy_version_id: str = Field(foreign_key="strategy_version.id", max_length=36)
    backtest_id: str = Field(foreign_key="backtest.id", index=True, max_length=36)
    instrument: str = Field(max_length=40)
    at: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False))
    action: str = Field(max_length=16)  # BUY | SELL | HOLD | STAY_FLAT (what the strategy did)
    model_hash: str = Field(max_length=64)
    model_version: str = Field(max_length=80)
    features: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    base_value: float
    contributions: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    prediction: float  # the classifier's raw score (log-odds of being in the market)
    probability: float
    residual: float  # prediction - (base_value + sum(contributions))
    additive: bool
    sentence: str = Field(sa_column=Column(Text, nullable=False))
    created_at: datetime = _stamp()
