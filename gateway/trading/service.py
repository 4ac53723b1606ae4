"""OrderService: the order service's one face (GraphQL, the runtime, the venue clock, tools).

It holds the wiring and the shared state (locks, connectors, the compliance engine) and hands
each call to the module that does it; read those one at a time:

- claims.py      intake: validate, prepare (route and check), claim, send (the intake steps)
- books.py       what an order is checked against: account books, reference price, FX, lot
- venues.py      the connectors, the venue lock, time (advance, the unsent sweep)
- reports.py     execution reports applied (state machine, fills, positions), then published
- amendments.py  amend and cancel one order (many at once: mass_cancel.py)
- queries.py     the reads
- desk.py        positions across accounts valued now (P&L, fees, three currencies)
- accounts.py    trading accounts, compliance controls, locates
- common.py      topics, errors, tables and constants they share
"""

from __future__ import annotations

import threading
from collections import defaultdict
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlmodel import Session

from gateway.audit import AuditTrail
from gateway.compliance.engine import ComplianceEngine
from gateway.db import Database
from gateway.events import Bus
from gateway.marketdata import MarketDataService
from gateway.marketdata.state import MarketStateService
from gateway.markets.service import MarketsService
from gateway.pagination import Page
from gateway.trading import accounts, amendments, books, claims, desk, reports, venues
from gateway.trading.common import (
    DEFAULT_DUPLICATE_MS,
    MAX_BATCH,
    UNSENT_AFTER,
    AccountNotFound,
    BatchInvalid,
    OrderNotFound,
    SubmitResult,
    VenueRefused,
    alerts_topic,
    orders_topic,
)
from gateway.trading.decisions import DecisionRecords
from gateway.trading.desk import DeskValuation
from gateway.trading.intake import OrderInput
from gateway.trading.models import (
    AccountPosition,
    ComplianceDecisionRow,
    Execution,
    Locate,
    Order,
    OrderEvent,
    TradingAccount,
)
from gateway.trading.queries import OrderCriteria, OrderQueries, TradeCriteria
from gateway.trading.reports import _Amendment
from gateway.trading.routing import SmartOrderRouter
from gateway.trading.venue_client import RemoteVenue
from gateway.trading.venues import InstalledConnectors, _Serialized
from plugins.host import PluginHost
from plugins.sdk import ExchangeConnector, ExecutionReport, TenantControls


class OrderService:
    def __init__(self, db: Database, bus: Bus, markets: MarketsService, market_data: MarketDataService,
                 plugins: PluginHost, audit: AuditTrail, *, engine: ComplianceEngine | None = None,
                 fx_rate: Callable[[str, str, datetime], Decimal] | None = None,
                 max_page_size: int = 100,
                 connector_configs: dict[str, dict[str, Any]] | None = None,
                 market_state: MarketStateService | None = None,
                 venue: RemoteVenue | None = None) -> None:
        self.db = db
        self.bus = bus
        self.markets = markets
        self.market_data = market_data
        # What compliance sees of each instrument and venue (halts, short-sale restrictions and
        # lists, last and previous close); the runtime's, else one of its own on the same tables.
        self.market_state = market_state or MarketStateService(db, bus, market_data,
                                                               markets.directory, audit)
        self.plugins = plugins
        self.audit = audit
        self.fx_rate = fx_rate
        self.max_page_size = max_page_size
        self.decision_records = DecisionRecords()  # compliance records stored compact
        self.queries = OrderQueries(db, max_page_size, self.decision_records)
        self._engine = engine
        self._connector_configs = connector_configs
        # `alphintra venue serve` holding the built-in connectors (ALPHINTRA_VENUE_URL), or None.
        self.venue = venue
        self._venue_lock = threading.RLock()
        self._apply_lock = threading.Lock()  # execution reports are applied in venue order
        self._setup_lock = threading.Lock()
        self._tenant_locks: dict[str, threading.Lock] = defaultdict(threading.Lock)
        self._connectors: dict[str, _Serialized] | None = None
        self._router: SmartOrderRouter | None = None
        self._installed_packs: tuple[Any, Any] | None = None
        self._installed_connectors: InstalledConnectors | None = None
        self._scoped: dict[str, tuple[tuple[Any, ...], dict[str, _Serialized], SmartOrderRouter]] = {}

    # -- set-up ------------------------------------------------------------------------------

    @property
    def engine(self) -> ComplianceEngine:
        if self._engine is None:
            with self._setup_lock:
                if self._engine is None:
                    engine = ComplianceEngine.from_plugins(self.plugins, clock=self.markets.now)
                    if self._installed_packs is not None:
                        engine.bind_installed(*self._installed_packs)
                    if self._installed_connectors is not None:
                        engine.bind_installed_venues(self._installed_connectors.venues)
                    self._engine = engine
        return self._engine

    def bind_installed_packs(self, installed: Callable[[str], Sequence[tuple[str, Any]]],
                             check_all: Callable[[Sequence[Any], Any], list[Any]]) -> None:
        """A tenant's installed rule packs join its orders' checks (ComplianceEngine)."""
        self._installed_packs = (installed, check_all)
        if self._engine is not None:
            self._engine.bind_installed(installed, check_all)

    # A tenant's installed connectors (sandboxed marketplace plugins, orders:submit) join the
    # built-ins for that tenant's orders: routing, sending, amending, cancelling and the clock.
    def bind_installed_connectors(self, installed: InstalledConnectors) -> None:
        self._installed_connectors = installed
        if self._engine is not None:
            self._engine.bind_installed_venues(installed.venues)

    # -- venues and time (venues.py) -----------------------------------------------------------

    def connectors(self) -> dict[str, _Serialized]:
        return venues.built_in_connectors(self)

    def recover(self) -> None:
        venues.recover(self)

    @property
    def router(self) -> SmartOrderRouter:
        return venues.built_in_router(self)

    def connector(self, name: str) -> ExchangeConnector:
        """The connector itself (tests and tools inspect its books)."""
        return self.connectors()[name].inner  # type: ignore[return-value]

    def advance(self, at: datetime | None = None) -> int:
        return venues.advance(self, at)

    def sweep_unsent(self, older_than: timedelta = UNSENT_AFTER, at: datetime | None = None) -> int:
        return venues.sweep_unsent(self, older_than, at)

    # mass_cancel.py and recovery.py reach the venues through these two, and _publish.
    def _scoped_connectors(self) -> tuple[dict[str, _Serialized], SmartOrderRouter]:
        return venues._scoped_connectors(self)

    def _at_venue(self, call: Callable[[], list[ExecutionReport]], amendment: _Amendment | None = None
                  ) -> tuple[list[ExecutionReport], list[dict[str, Any]]]:
        return venues._at_venue(self, call, amendment)

    def _publish(self, changed: Sequence[dict[str, Any]]) -> None:
        reports._publish(self.bus, changed)

    # -- intake (claims.py) --------------------------------------------------------------------

    def submit(self, tenant_id: str, user_id: str | None, raw: OrderInput) -> SubmitResult:
        return self.submit_many(tenant_id, user_id, [raw])[0]

    def submit_many(self, tenant_id: str, user_id: str | None, raws: Sequence[OrderInput]
                    ) -> list[SubmitResult]:
        return claims.submit_many(self, tenant_id, user_id, raws)

    # The modules call these through the service: a test replaces one on one instance (a stale
    # ClOrdID read, a claim that collides, a process that dies before sending, no FX rate,
    # another writer between a read and its writes).
    @staticmethod
    def _existing(session: Session, cids: list[str]) -> dict[str, Order]:
        return claims._existing(session, cids)

    def _write_claims(self, session: Session, tenant_id: str, user_id: str | None,
                      prepared: list[claims._Prepared]) -> None:
        claims._write_claims(self, session, tenant_id, user_id, prepared)

    def _send(self, prepared: list[claims._Prepared]) -> None:
        claims._send(self, prepared)

    def _fx(self, base: str, quote: str, at: datetime) -> Decimal:
        return books._fx(self, base, quote, at)

    _positions_for = staticmethod(reports._positions_for)

    # -- amend and cancel (amendments.py) ------------------------------------------------------

    def cancel(self, tenant_id: str, user_id: str | None, order_id: str) -> Order:
        return amendments.cancel(self, tenant_id, user_id, order_id)

    def amend(self, tenant_id: str, user_id: str | None, order_id: str, *, quantity: Any = None,
              limit_price: Any = None) -> Order:
        return amendments.amend(self, tenant_id, user_id, order_id, quantity=quantity,
                                limit_price=limit_price)

    # -- reads (queries.py) --------------------------------------------------------------------

    def get(self, tenant_id: str, order_id: str) -> Order:
        return self.queries.get(tenant_id, order_id)

    def _views(self, tenant_id: str, ids: list[str]) -> dict[str, Any]:
        return self.queries.views(tenant_id, ids)

    def orders_by_ids(self, tenant_id: str, ids: list[str]) -> dict[str, Order]:
        return self.queries.orders_by_ids(tenant_id, ids)

    def list(self, tenant_id: str, criteria: OrderCriteria = OrderCriteria(), *, first: int = 20,
             after: str | None = None) -> Page[Order]:
        return self.queries.list(tenant_id, criteria, first=first, after=after)

    def count(self, tenant_id: str, criteria: OrderCriteria = OrderCriteria()) -> int:
        return self.queries.count(tenant_id, criteria)

    def executions(self, tenant_id: str, order_ids: list[str]) -> dict[str, list[Execution]]:
        return self.queries.executions(tenant_id, order_ids)

    def events(self, tenant_id: str, order_ids: list[str]) -> dict[str, list[OrderEvent]]:
        return self.queries.events(tenant_id, order_ids)

    def trades(self, tenant_id: str, criteria: TradeCriteria = TradeCriteria(), *, first: int = 20,
               after: str | None = None) -> Page[Execution]:
        return self.queries.trades(tenant_id, criteria, first=first, after=after)

    def count_trades(self, tenant_id: str, criteria: TradeCriteria = TradeCriteria()) -> int:
        return self.queries.count_trades(tenant_id, criteria)

    def positions(self, tenant_id: str, account: str) -> list[AccountPosition]:
        return self.queries.positions(tenant_id, account)

    def valuate(self, tenant_id: str, accounts: Sequence[str] | None = None,
                instrument: str | None = None) -> DeskValuation:
        """Positions across accounts with P&L, fees, in three currencies (desk.py)."""
        return desk.valuate(self, tenant_id, accounts, instrument)

    def decisions(self, tenant_id: str, *, order_id: str | None = None, passed: bool | None = None,
                  first: int = 20, after: str | None = None) -> Page[ComplianceDecisionRow]:
        return self.queries.decisions(tenant_id, order_id=order_id, passed=passed, first=first,
                                      after=after)

    # -- accounts, controls, locates (accounts.py) -----------------------------------------------

    def accounts(self, tenant_id: str) -> list[TradingAccount]:
        return accounts.accounts(self, tenant_id)

    def upsert_account(self, tenant_id: str, user_id: str | None, *, code: str, currency: str,
                       domicile: str, client_type: str = "INDIVIDUAL", lei: str | None = None,
                       name: str = "", credit_limit: Any = "0", equity: Any = "0",
                       assessments: Sequence[str] = ()) -> TradingAccount:
        return accounts.upsert_account(self, tenant_id, user_id, code=code, currency=currency,
                                       domicile=domicile, client_type=client_type, lei=lei, name=name,
                                       credit_limit=credit_limit, equity=equity,
                                       assessments=assessments)

    def controls(self, tenant_id: str) -> TenantControls:
        return accounts.controls(self, tenant_id)

    def set_controls(self, tenant_id: str, user_id: str | None, changes: dict[str, Any], *,
                     cancel_open: bool = True) -> TenantControls:
        """Changes the named fields (others stay); audited with before and after. Switching the
        kill switch on also cancels every open order of the tenant (mass_cancel.kill)."""
        return accounts.set_controls(self, tenant_id, user_id, changes, cancel_open=cancel_open)

    def locates(self, tenant_id: str, *, account: str | None = None, instrument: str | None = None,
                active_only: bool = False, first: int = 20, after: str | None = None) -> Page[Locate]:
        return accounts.locates(self, tenant_id, account=account, instrument=instrument,
                                active_only=active_only, first=first, after=after)

    def record_locate(self, tenant_id: str, user_id: str | None, *, account: str, instrument: str,
                      quantity: Any, source: str = "", expires_at: datetime | None = None) -> Locate:
        return accounts.record_locate(self, tenant_id, user_id, account=account, instrument=instrument,
                                      quantity=quantity, source=source, expires_at=expires_at)


# What callers imported from here before the split (schema/, runtime, mass_cancel, tests, bench).
__all__ = ["DEFAULT_DUPLICATE_MS", "MAX_BATCH", "UNSENT_AFTER", "AccountNotFound", "BatchInvalid",
           "InstalledConnectors", "OrderInput", "OrderNotFound", "OrderService", "SubmitResult",
           "VenueRefused", "alerts_topic", "orders_topic"]
