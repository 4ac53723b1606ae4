"""The runtime: everything a gateway or worker process needs, built from Settings.

Built explicitly by whoever owns the process (the app factory's lifespan, `alphintra worker`,
a test), never at import time.
"""

from __future__ import annotations

from dataclasses import dataclass

import dramatiq

from gateway.auth.authenticate import Authenticator
from gateway.auth.policy import AccessPolicy
from gateway.db import Database
from gateway.events import Bus, make_bus
from gateway.federated.kind import FEDERATED_TRAIN
from gateway.fx.service import FxService
from gateway.jobs.actors import JobExecutor, declare_run_job
from gateway.jobs.broker import build_broker
from gateway.jobs.diagnostics import DIAGNOSTICS
from gateway.jobs.kinds import JobKinds
from gateway.jobs.runner import JobRows
from gateway.jobs.service import JobService
from gateway.marketdata import MarketDataService
from gateway.markets.service import MarketsService
from gateway.patterns import PatternService
from gateway.quantum import PortfolioOptimisationService
from gateway.quantum.job import portfolio_optimisation_kind
from gateway.settings import Settings
from gateway.tenancy.service import TenancyService
from plugins.builtin import BUILTINS
from plugins.host import PluginHost


@dataclass
class Runtime:
    settings: Settings
    db: Database
    bus: Bus
    policy: AccessPolicy
    authenticator: Authenticator
    broker: dramatiq.Broker
    job_kinds: JobKinds
    jobs: JobService
    tenancy: TenancyService
    plugins: PluginHost
    markets: MarketsService  # venues and sessions; its clock is the system's unless a test's
    market_data: MarketDataService  # instruments, bars and quotes from data-source plugins
    portfolio: PortfolioOptimisationService  # portfolio optimisation on optimiser plugins
    fx: FxService  # portfolios, FX exposure and hedging, on FX-provider plugins
    patterns: PatternService  # chart patterns in recent bars, by a spiking network trained on first use

    def close(self) -> None:
        self.broker.close()
        self.db.dispose()


def build_runtime(settings: Settings, *, db: Database | None = None) -> Runtime:
    db = db or Database(settings.database_url)
    bus = make_bus(settings.redis_url, settings.redis_namespace)
    policy = AccessPolicy(db)
    kinds = JobKinds()
    kinds.register(DIAGNOSTICS)
    kinds.register(FEDERATED_TRAIN)  # imports flwr and ray only when a job runs
    broker = build_broker(settings)
    executor = JobExecutor(JobRows(db, bus), kinds, settings.job_max_retries)
    actor = declare_run_job(broker, executor, settings)
    plugins = PluginHost(BUILTINS)
    markets = MarketsService()
    market_data = MarketDataService(plugins, markets.directory, now=markets.now)
    portfolio = PortfolioOptimisationService(plugins, market_data)
    kinds.register(portfolio_optimisation_kind(portfolio))  # qiskit/pennylane load only in a job
    return Runtime(
        settings=settings,
        db=db,
        bus=bus,
        policy=policy,
        authenticator=Authenticator(db, policy, settings),
        broker=broker,
        job_kinds=kinds,
        jobs=JobService(db, bus, kinds, actor, settings.regions, settings.max_page_size),
        tenancy=TenancyService(db, policy, bus, settings.regions, settings.max_page_size),
        plugins=plugins,
        markets=markets,
        market_data=market_data,
        portfolio=portfolio,
        fx=FxService.from_plugins(db, plugins, settings.max_page_size),
        patterns=PatternService(market_data),
    )
