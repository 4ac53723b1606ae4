"""Synthesis and improvement runs: what was asked, of which model, and every trial.

Written once, in the same transaction as the strategy version it produced, so a run that
failed (a refusal, an answer that never validated, a backtest without data) leaves no row and
no version. `job_id` is unique: a job redelivered after its worker died finds the run it
already stored and answers with it instead of creating a second version.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Column, Text, UniqueConstraint
from sqlmodel import Field

from gateway.db import TenantOwned, UTCDateTime, utcnow
from gateway.tenancy.models import new_id


class SynthesisRun(TenantOwned, table=True):
    __tablename__ = "synthesis_run"
    __table_args__ = (UniqueConstraint("job_id"),)

    id: str = Field(default_factory=new_id, primary_key=True, max_length=36)
    job_id: str = Field(max_length=36)
    kind: str = Field(max_length=16)  # SYNTHESIZE | IMPROVE
    strategy_id: str = Field(foreign_key="strategy.id", index=True, max_length=36)
    strategy_version_id: str | None = Field(default=None, foreign_key="strategy_version.id", max_length=36)
    objective: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    constraints: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    universe: list[Any] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    provider: str = Field(max_length=80)
    model: str = Field(max_length=200)
    is_llm: bool
    prompt_hash: str = Field(max_length=64)
    repairs: int = 0
    trial_count: int = 0
    deflated_sharpe: float | None = None
    regime: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    trials: list[Any] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    metrics: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    created_by: str | None = Field(default=None, max_length=36)
    created_at: datetime = Field(default_factory=utcnow, sa_column=Column(UTCDateTime(), nullable=False))
