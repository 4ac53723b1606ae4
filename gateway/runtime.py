"""The runtime: everything a gateway or worker process needs, built from Settings.

Built explicitly by whoever owns the process (the app factory's lifespan, `alphintra worker`,
a test), never at import time.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal
from typing import Any

import dramatiq

from gateway.audit import AuditTrail
from gateway.auth.authenticate import Authenticator
from gateway.auth.policy import AccessPolicy
from gateway.db import Database
from gateway.defi.chain import Chains
from gateway.defi.demo_world import build_demo_world
from gateway.defi.events import DefiEventPoller, world_sources
from gateway.defi.keys import DefiKeys
from gateway.defi.lending import LendingService
from gateway.defi.pools import PoolBook
from gateway.defi.service import DefiMarkets
from gateway.defi.swaps import DefiSwaps
from gateway.defi.vault import VaultService
from gateway.defi.world import DemoWorld
from gateway.events import Bus, make_bus
from gateway.federated.kind import FEDERATED_TRAIN
from gateway.fx.service import FxService
from gateway.jobs.actors import JobExecutor, declare_run_job
from gateway.jobs.broker import build_broker
from gateway.jobs.delivery import JobMessages, make_ledger
from gateway.jobs.diagnostics import DIAGNOSTICS
from gateway.jobs.kinds import JobKinds
from gateway.jobs.runner import JobRows
from gateway.jobs.service import JobService
from gateway.jobs.upkeep import JobReaper, LeaseKeeper
from gateway.marketdata import MarketDataService
from gateway.marketdata.service import HOOK as MARKET_DATA_HOOK
from gateway.marketdata.state import MarketStateService
from gateway.marketdata.tenant_files import TenantFiles
from gateway.marketdata.uploads import TenantUploads
from gateway.marketplace.builtins import BuiltinSwitches
from gateway.marketplace.catalogue import Catalogue
from gateway.marketplace.install import Installations, build_installations
from gateway.marketplace.publishing import MarketplacePublishing
from gateway.marketplace.sandbox.proxies import check_packs
from gateway.markets.service import MarketsService
from gateway.outbox import Outbox
from gateway.patterns import PatternService
from gateway.quantum import PortfolioOptimisationService
from gateway.quantum.job import portfolio_optimisation_kind
from gateway.reports import RegulatoryReports
from gateway.reports.service import instrument_classes
from gateway.secrets import SecretBox
from gateway.settings import Settings
from gateway.strategies.kind import strategy_backtest_kind
from gateway.strategies.llm_lab import LLMLab, build_llm_lab
from gateway.strategies.service import StrategyService
from gateway.tenancy.service import TenancyService
from gateway.tenancy.vendor_role import VendorRoleRequests
from gateway.trading.controls import load_controls
from gateway.trading.service import InstalledConnectors, OrderService
from gateway.trading.venue_client import remote_venue
from plugins.builtin import BUILTINS
from plugins.host import PluginHost

# Allocations between young collections while a process serves (CPython's default: 700). A
# request or an order batch allocates thousands of short-lived objects; at 700 the collector
# took about 30 % of intake's CPU (docs/performance.md, "The collector's threshold").
YOUNG_COLLECTION_EVERY = 20_000


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
    vendor_roles: VendorRoleRequests  # tenant admins ask for the vendor role; the platform decides
    plugins: PluginHost
    markets: MarketsService  # venues and sessions; its clock is the system's unless a test's
    market_data: MarketDataService  # instruments, bars and quotes from data-source plugins
    market_data_files: TenantUploads  # a tenant's own data files, uploaded through the API
    market_state: MarketStateService  # halts, short-sale restrictions and lists: what compliance sees
    portfolio: PortfolioOptimisationService  # portfolio optimisation on optimiser plugins
    fx: FxService  # portfolios, FX exposure and hedging, on FX-provider plugins
    patterns: PatternService  # chart patterns in recent bars, by a spiking network trained on first use
    secrets: SecretBox  # encryption at rest for plugin secrets and tenants' signing keys
    audit: AuditTrail  # the hash-chained audit trail; append inside the caller's transaction
    reports: RegulatoryReports  # MiFID II, best-execution and CFTC reports, as jobs and files
    chains: Chains  # DeFi chains: the embedded EVM (built on first use) and JSON-RPC endpoints
    defi_world: DemoWorld  # tokens, pools (and the lending market) on the embedded chain
    defi_keys: DefiKeys  # tenants' signing keys, sealed with `secrets`
    defi: DefiMarkets  # pools from the protocol plugins, quotes, tenants' on-chain accounts
    defi_swaps: DefiSwaps  # protected swaps, compliance-checked and audited
    defi_lending: LendingService  # lending positions and actions, signed with the tenant's key
    defi_vaults: VaultService  # strategy vaults: the deploy job and the tenant's vaults
    defi_events: DefiEventPoller  # chain events to the bus, resuming from a stored cursor
    marketplace_publishing: MarketplacePublishing  # vendor keys, signed versions, review, delisting
    marketplace: Installations  # per-tenant plugin installs, their views and schemas, metering
    builtin_plugins: BuiltinSwitches  # a tenant's switches for the built-in plugins
    marketplace_catalogue: Catalogue  # the catalogue as a tenant sees it; vendor statements
    orders: OrderService  # order intake, routing, compliance, execution reports, positions
    strategies: StrategyService  # strategy lab: versions, approvals, backtests, explained decisions
    strategy_ai: LLMLab  # LLM providers, news analysis, strategy synthesis and improvement

    outbox: Outbox  # delivers jobs' messages and events committed with their writes
    job_reaper: JobReaper  # re-queues dead workers' jobs, re-sends lost messages
    job_leases: LeaseKeeper  # renews the leases of the jobs this process runs

    def start_delivery(self) -> None:
        """The outbox dispatcher and the job reaper, in a process whose broker has consumers
        (Redis, or the embedded worker); once per owner, `stop_delivery` by each."""
        if self.settings.redis_url or self.settings.runs_embedded_worker:
            self.outbox.start()
            self.job_reaper.start()

    def stop_delivery(self) -> None:
        if self.settings.redis_url or self.settings.runs_embedded_worker:
            self.job_reaper.stop()
            self.outbox.stop()

    def close(self) -> None:
        self.job_reaper.stop(force=True)
        self.job_leases.stop()
        self.outbox.stop(force=True)
        self.audit.checkpointer.drain()
        self.broker.close()
        self.marketplace.meter.close()
        if self.orders.venue is not None:
            self.orders.venue.close()
        self.db.dispose()


def build_runtime(settings: Settings, *, db: Database | None = None) -> Runtime:
    db = db or Database(settings.database_url)
    bus = make_bus(settings.redis_url, settings.redis_namespace)
    policy = AccessPolicy(db, cache_size=settings.policy_cache_size)
    authenticator = Authenticator(db, policy, settings)
    kinds = JobKinds()
    kinds.register(DIAGNOSTICS)
    kinds.register(FEDERATED_TRAIN)  # imports flwr and ray only when a job runs
    broker = build_broker(settings)
    # Jobs' messages and events commit with their writes and are delivered from the outbox.
    outbox = Outbox(db, bus, poll_ms=settings.outbox_poll_ms,
                    retry_max_ms=settings.outbox_retry_max_ms)
    job_messages = JobMessages(outbox, broker, make_ledger(settings.redis_url,
                                                           settings.redis_namespace))
    job_rows = JobRows(db, outbox, job_messages, lease_s=settings.job_lease_written_s)
    job_leases = LeaseKeeper(job_rows, settings.job_heartbeat_ms / 1000)
    executor = JobExecutor(job_rows, kinds, settings.job_max_retries, leases=job_leases,
                           min_backoff_ms=settings.job_min_backoff_ms,
                           max_backoff_ms=settings.job_max_backoff_ms)
    actor = declare_run_job(broker, executor, settings)
    job_reaper = JobReaper(db, job_rows, job_messages,
                           interval_s=settings.job_reaper_interval_ms / 1000,
                           redeliver_after_s=settings.job_redeliver_after_ms / 1000,
                           max_attempts=settings.job_max_retries + 1)
    plugins = PluginHost(BUILTINS)
    markets = MarketsService()
    market_data = MarketDataService(plugins, markets.directory, now=markets.now,
                                    configs=settings.market_data_configs())  # ALPHINTRA_MARKETDATA_*
    portfolio = PortfolioOptimisationService(plugins, market_data)
    kinds.register(portfolio_optimisation_kind(portfolio))  # qiskit/pennylane load only in a job
    secrets = SecretBox.from_settings(settings)
    # Signed checkpoints after appends commit; each tenant's appends spread over its lanes.
    audit = AuditTrail(db, settings.max_page_size, secrets=secrets, lanes=settings.audit_lanes)
    reports = RegulatoryReports(db, audit, instrument_classes(market_data.instrument),
                                settings.max_page_size)
    for report_kind in reports.job_kinds():
        kinds.register(report_kind)
    fx = FxService.from_plugins(db, plugins, settings.max_page_size)
    strategies = StrategyService(db, market_data, policy, audit, fx=fx, max_page_size=settings.max_page_size,
                                 approval_window=timedelta(hours=settings.approval_window_hours))
    kinds.register(strategy_backtest_kind(strategies))
    strategy_ai = build_llm_lab(settings, db, plugins, market_data, strategies, markets.now)
    strategies.use_news(strategy_ai.news.signals_for)  # news_sentiment series for backtest jobs
    for ai_kind in strategy_ai.synthesis.kinds():
        kinds.register(ai_kind)
    chains = Chains.from_settings(settings)  # cheap: no web3 until a chain is first used
    defi_world = build_demo_world()  # with the lending market, as `alphintra chain serve` deploys it
    defi_keys = DefiKeys(db, secrets, funder=defi_world.fund)
    defi = DefiMarkets(chains, PoolBook(plugins, defi_world), defi_keys)
    defi_lending = LendingService(db, chains, defi_world, defi_keys, audit,
                                  floor=Decimal(settings.defi_health_factor_floor),
                                  controls=load_controls, max_page_size=settings.max_page_size)
    defi_vaults = VaultService(db, chains, defi_world, defi_keys, audit, settings.max_page_size)
    kinds.register(defi_vaults.kind())
    defi_events = DefiEventPoller(db, bus, chains, world_sources(defi_world),
                                  interval_seconds=settings.defi_event_poll_ms / 1000)
    tenancy = TenancyService(db, policy, bus, settings.regions, settings.max_page_size, audit,
                             approval_window=timedelta(hours=settings.approval_window_hours),
                             outbox=outbox)
    # this process forgets a revoked credential at once; other replicas by the bus event
    tenancy.credentials_changed = authenticator.forget
    # Services that publish after their commits: through the outbox, never raising.
    committed = outbox.committed_bus()
    marketplace = build_installations(settings, db, committed, secrets, audit, markets.directory,
                                      chains)
    builtin_plugins = BuiltinSwitches(db, plugins, audit)
    market_state = MarketStateService(db, committed, market_data, markets.directory, audit)
    orders = OrderService(db, committed, markets, market_data, plugins, audit,
                          max_page_size=settings.max_page_size, market_state=market_state,
                          venue=remote_venue(settings.venue_url, secrets))  # ALPHINTRA_VENUE_URL
    tenant_files = TenantFiles(settings.marketdata_tenant_dir, markets.directory, settings.marketdata_adjust)
    market_data_files = TenantUploads(db, audit, markets.directory, settings.marketdata_adjust)
    _bind_plugin_view(marketplace, builtin_plugins, market_data, fx, strategy_ai, orders, portfolio,
                      defi, tenant_files, market_data_files)
    return Runtime(
        settings=settings,
        db=db,
        bus=bus,
        policy=policy,
        authenticator=authenticator,
        broker=broker,
        job_kinds=kinds,
        jobs=JobService(db, bus, kinds, actor, settings.regions, settings.max_page_size,
                        rows=job_rows, messages=job_messages),
        outbox=outbox,
        job_reaper=job_reaper,
        job_leases=job_leases,
        tenancy=tenancy,
        vendor_roles=VendorRoleRequests(db, tenancy, audit, settings.max_page_size),
        plugins=plugins,
        markets=markets,
        market_data=market_data,
        market_data_files=market_data_files,
        market_state=market_state,
        portfolio=portfolio,
        fx=fx,
        patterns=PatternService(market_data),
        secrets=secrets,
        audit=audit,
        reports=reports,
        chains=chains,
        defi_world=defi_world,
        defi_keys=defi_keys,
        defi=defi,
        defi_swaps=DefiSwaps(db, defi, audit),
        defi_lending=defi_lending,
        defi_vaults=defi_vaults,
        defi_events=defi_events,
        marketplace=marketplace,
        builtin_plugins=builtin_plugins,
        marketplace_catalogue=Catalogue(db, settings.max_page_size),
        marketplace_publishing=MarketplacePublishing(db, committed, audit, marketplace.sandbox,
                                                     max_page_size=settings.max_page_size),
        strategies=strategies,
        strategy_ai=strategy_ai,
        orders=orders,
    )


def _bind_plugin_view(marketplace: Installations, builtin_plugins: BuiltinSwitches,
                      market_data: MarketDataService, fx: FxService,
                      strategy_ai: LLMLab, orders: OrderService,
                      portfolio: PortfolioOptimisationService, defi: DefiMarkets,
                      tenant_files: TenantFiles | None = None,
                      uploads: TenantUploads | None = None) -> None:
    """The per-tenant plugin view: each domain service asks, for the tenant in scope, for its
    installed plugins' providers (sandboxed) beside the built-ins (in process), less the
    built-ins the tenant switched off."""

    def installed(hook: str) -> Callable[[str], list[tuple[str, Any]]]:
        return lambda tenant: marketplace.providers(tenant, hook)

    off = builtin_plugins.disabled

    def own(tenant: str) -> list[tuple[str, Any]]:  # uploaded through the API, then the server's folder
        return [*(uploads.sources(tenant) if uploads is not None else ()),
                *(tenant_files.sources(tenant) if tenant_files is not None else ())]

    def sources(tenant: str) -> list[tuple[str, Any]]:  # the tenant's own files first: its data wins
        return [*own(tenant), *marketplace.providers(tenant, MARKET_DATA_HOOK)]

    market_data.bind_installed(sources, off)
    fx.bind_installed(installed("alphintra_fx_rate_providers"), off)
    strategy_ai.providers.bind_installed(installed("alphintra_llm_providers"), off)
    strategy_ai.news.bind_installed(installed("alphintra_news_sources"), off)
    bind_orders_view(marketplace, builtin_plugins, orders)
    portfolio.bind_installed(installed("alphintra_portfolio_optimisers"), off)
    defi.pools.bind_installed(installed("alphintra_defi_protocols"), off)


def bind_orders_view(marketplace: Installations, builtin_plugins: BuiltinSwitches, orders: OrderService
                     ) -> None:
    """The order service's part of the view (alone for an order service of its own, as a test
    or a bench builds one beside the runtime's): installed rule packs and connectors."""
    orders.bind_installed_packs(
        lambda tenant: marketplace.providers(tenant, "alphintra_compliance_rule_packs"), check_packs)
    orders.bind_installed_connectors(InstalledConnectors(
        lambda tenant: marketplace.providers(tenant, "alphintra_exchange_connectors"),
        marketplace.installed_venues, lambda: marketplace.tenants_with("alphintra_exchange_connectors"),
        builtin_plugins.disabled))
