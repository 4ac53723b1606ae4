"""Portfolio optimisation: a job that picks `budget` instruments (quantum or classical backend,
checked against the exact classical optimum) and weighs them; and the optimisers on offer.

Thin: the permission check, then `runtime.jobs.start(..., "portfolio.optimize", ...)`, whose
kind validates the parameters (gateway/quantum/service.py) before anything is queued. The
result is the job's JSON, described in
docs/design/quantum-federated-patterns.md.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import strawberry
from strawberry.types import Info

from gateway.quantum.job import KIND
from gateway.quantum.service import DEFAULT_BACKEND
from schema.common import ctx
from schema.jobs import Job


@strawberry.input(description="Weight bounds of one instrument when it is chosen.")
class AssetBoundInput:
    instrument: str
    min: float = strawberry.field(default=0.0, description="0 to max.")
    max: float = strawberry.field(default=1.0, description="Above 0, up to 1.")


@strawberry.input(description="A sector: its instruments (sectors must not overlap), at most "
                              "`maxAssets` of them chosen and at most `maxWeight` of the capital.")
class SectorCapInput:
    sector: str
    instruments: list[str]
    max_assets: int | None = None
    max_weight: float | None = None


@strawberry.input(description="Choose `budget` of `instruments` to minimise q·w'Σw - μ'w "
                              "(w the equal weights of the chosen ones), then weigh them by "
                              "mean-variance. μ and Σ come from daily bars over `lookbackDays`.")
class OptimizePortfolioInput:
    instruments: list[str] = strawberry.field(description="Keys, SYMBOL.MIC; at most 50.")
    budget: int = strawberry.field(description="How many instruments to hold, at least 1.")
    risk_aversion: float = strawberry.field(default=1.0, description="q, 0 to 10000.")
    backend: str = strawberry.field(default=DEFAULT_BACKEND,
                                    description="An optimiser's name (portfolioOptimisers).")
    lookback_days: int = strawberry.field(default=365, description="30 to 1830 calendar days.")
    as_of: datetime | None = strawberry.field(
        default=None, description="End of the lookback; default the start of today, UTC.")
    bounds: list[AssetBoundInput] | None = None
    sector_caps: list[SectorCapInput] | None = None
    cvar_alpha: float | None = strawberry.field(
        default=None, description="qiskit-qaoa: optimise the CVaR of the lowest alpha share "
                                  "of sampled energies, (0, 1].")
    layers: int | None = strawberry.field(default=None, description="QAOA depth p, 1 to 10.")
    shots: int | None = strawberry.field(default=None, description="Samples of the final circuit.")
    seed: int = 7
    shrinkage: float = strawberry.field(
        default=0.0, description="0 to 1; mixes Σ with (tr Σ/n)·I. Needed when Σ is singular.")
    risk_free_rate: float = strawberry.field(default=0.0, description="For the Sharpe ratio.")
    deadline_seconds: float = strawberry.field(default=120.0, description="Per backend, 1 to 600.")
    weights_over_universe: bool = strawberry.field(
        default=False, description="Also weigh the whole universe, without the budget.")
    min_holding_share: float = strawberry.field(
        default=0.5, description="Each chosen instrument's minimum weight as a share of the equal "
                                 "weight 1/budget, 0 to 1 (lowered where bounds or sector caps "
                                 "need it; 0: no floor).")
    region: str | None = None
    idempotency_key: str | None = None

    def params(self) -> dict[str, Any]:
        return {
            "instruments": list(self.instruments), "budget": self.budget,
            "risk_aversion": self.risk_aversion, "backend": self.backend,
            "lookback_days": self.lookback_days,
            "as_of": self.as_of.isoformat() if self.as_of is not None else None,
            "bounds": [{"instrument": b.instrument, "min": b.min, "max": b.max}
                       for b in self.bounds or []],
            "sector_caps": [{"sector": c.sector, "instruments": list(c.instruments),
                             "max_assets": c.max_assets, "max_weight": c.max_weight}
                            for c in self.sector_caps or []],
            "cvar_alpha": self.cvar_alpha, "layers": self.layers, "shots": self.shots,
            "seed": self.seed, "shrinkage": self.shrinkage, "risk_free_rate": self.risk_free_rate,
            "deadline_seconds": self.deadline_seconds,
            "weights_over_universe": self.weights_over_universe,
            "min_holding_share": self.min_holding_share,
        }


@strawberry.type(description="A portfolio optimiser plugin: a backend for optimizePortfolio.")
class PortfolioOptimiser:
    name: str
    kind: str = strawberry.field(description="quantum or classical.")
    max_assets: int
    max_qubits: int | None = strawberry.field(description="Null for classical optimisers.")
    plugin: str


@strawberry.type
class Query:
    @strawberry.field(description="The optimisers optimizePortfolio can use, built-ins first.")
    def portfolio_optimisers(self, info: Info) -> list[PortfolioOptimiser]:
        c = ctx(info)
        c.require("job", "read")
        return [PortfolioOptimiser(name=e.name, kind=str(e.optimiser.kind),
                                   max_assets=int(e.optimiser.max_assets),
                                   max_qubits=e.optimiser.max_qubits, plugin=e.plugin)
                for e in c.runtime.portfolio.optimisers()]


@strawberry.type
class Mutation:
    @strawberry.mutation(description="Start a portfolio optimisation job (kind portfolio.optimize).")
    def optimize_portfolio(self, info: Info, input: OptimizePortfolioInput) -> Job:
        c = ctx(info)
        me = c.require("job", "write")
        return Job.from_row(c.runtime.jobs.start(me, KIND, input.params(), region=input.region,
                                                 idempotency_key=input.idempotency_key))
