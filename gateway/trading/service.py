"""OrderService: order intake, amend, cancel, execution reports, and the reads.

Intake of a batch (one order is a batch of one), per tenant, under the tenant's intake lock:

1. Validate each order (intake.parse_order); a bad one gets its error and nothing is stored.
2. Idempotency: a ClOrdID the tenant already used answers its FIRST order (`replayed`); the
   same ClOrdID twice in one batch answers the first of them. The unique constraint
   (tenant_id, client_order_id) settles races between processes: the loser's insert fails and
   it answers the winner's order.
3. Read once per batch: the accounts, their positions, unused locates, open orders (credit
   used), recent orders (throttle, duplicate guard), the tenant's controls.
4. Per order: route (SMART or the named venue), then compliance on the chosen venue with the
   context assembled from that state (every decision is recorded, pass or deny). Later
   orders of the batch see the earlier ones in the throttle, duplicate guard, credit used and
   locates; positions are as of the batch's start (fills come after, in step 6).
5. Claim: one transaction inserts the batch's orders (PENDING or DENIED), their first events,
   the decisions, locate use and the audit records (bulk inserts, no ORM flush per row).
6. Send the passed orders to their connectors and apply every execution report they cause
   (also to resting orders of other accounts or tenants they traded with) in a second
   transaction: state changes through states.apply only, fills, positions, events, audit.
7. Publish order updates and compliance alerts on the bus after commit.

Connectors are called under one lock, and the reports they answer are applied under it, in
the order the venue produced them (so two threads never apply one order's fills out of order).
Time: each intake and `advance()` (a periodic task of the app) tell the connectors the markets
clock's now (`on_clock`) and apply what that causes: expiries, queued orders at the open, fills
of resting orders when the market moves through them.

Not covered: an order claimed (step 5) whose process dies before step 6 stays PENDING; across
processes the credit/throttle state is per process's reading of the database.
"""

from __future__ import annotations

import logging
import threading
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from types import SimpleNamespace
from typing import Any

from sqlalchemy import bindparam, func, update
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from gateway.audit import AuditEntry, AuditTrail
from gateway.audit.chain import plain_decimal
from gateway.bulk import bulk_insert
from gateway.compliance.engine import ComplianceEngine, Decision, deny
from gateway.compliance.errors import CREDIT_FX_UNAVAILABLE
from gateway.compliance.iso import is_country, is_currency
from gateway.db import Database, utcnow
from gateway.errors import DomainError, InvalidInput, NotFound
from gateway.events import Bus
from gateway.marketdata import MarketDataService
from gateway.markets.service import MarketsService
from gateway.pagination import Page, keyset_page
from gateway.scope import current_tenant, tenant_scope
from gateway.tenancy.models import new_id
from gateway.trading import mass_cancel, recovery, states
from gateway.trading.controls import (
    ACCOUNT_PREFIX,
    controls_for,
    controls_of,
    kill_entries,
    killed_accounts,
    load_row,
)
from gateway.trading.intake import (
    ClOrdIdConflict,
    ClOrdIdRepeated,
    OrderInput,
    OrderInvalid,
    ValidOrder,
    amount,
    check_lei,
    differences,
    parse_order,
)
from gateway.trading.models import (
    AccountPosition,
    ComplianceControlsRow,
    ComplianceDecisionRow,
    Execution,
    Locate,
    Order,
    OrderEvent,
    TradingAccount,
)
from gateway.trading.routing import (
    ConnectorEntry,
    RoutingDecision,
    SmartOrderRouter,
    collect_connectors,
)
from gateway.trading.states import OrderStatus
from gateway.trading.vetting import OrderState, VettedConnector
from plugins.host import PluginHost
from plugins.sdk import (
    AccountState,
    ClientProfile,
    Denial,
    ExchangeConnector,
    ExecType,
    ExecutionReport,
    InstrumentFacts,
    MarketState,
    OrderRequest,
    OrdStatus,
    Side,
    TenantControls,
    VenueQuote,
    order_fingerprint,
)

log = logging.getLogger(__name__)

ORDERS = Order.__table__  # type: ignore[attr-defined]
EXECUTIONS = Execution.__table__  # type: ignore[attr-defined]
EVENTS = OrderEvent.__table__  # type: ignore[attr-defined]
DECISIONS = ComplianceDecisionRow.__table__  # type: ignore[attr-defined]
POSITIONS = AccountPosition.__table__  # type: ignore[attr-defined]
_UPDATED = ("id", "status", "cum_qty", "leaves_qty", "avg_px", "quantity", "limit_price",
            "venue_order_id", "reject_code", "reject_text", "version", "updated_at", "fees")
ORDER_UPDATE = (update(ORDERS).where(ORDERS.c.id == bindparam("b_id"))
                .values({k: bindparam("b_" + k) for k in _UPDATED if k != "id"}))
_POSITION_UPDATED = ("id", "quantity", "avg_price", "realized_pnl", "symbol", "mic", "updated_at")
POSITION_UPDATE = (update(POSITIONS).where(POSITIONS.c.id == bindparam("b_id"))
                   .values({k: bindparam("b_" + k) for k in _POSITION_UPDATED if k != "id"}))

MAX_BATCH = 1000
DEFAULT_DUPLICATE_MS = 5000  # TenantControls' default duplicate window
# A claimed order is sent within milliseconds; one still unacknowledged after this was lost.
UNSENT_AFTER = timedelta(minutes=1)
ZERO = Decimal(0)
ONE = Decimal(1)
SHORT_OR_BUY = (str(Side.BUY), str(Side.SELL_SHORT))
OPEN_STATUSES = [str(s) for s in states.OPEN]
# Orders that ended without trading: no double submission for the duplicate guard to catch.
UNFILLED_ENDS = frozenset(str(s) for s in (OrderStatus.CANCELED, OrderStatus.REJECTED,
                                           OrderStatus.EXPIRED, OrderStatus.DENIED))


def orders_topic(tenant_id: str) -> str:
    return f"orders.{tenant_id}"


def alerts_topic(tenant_id: str) -> str:
    return f"compliance.{tenant_id}"


class OrderNotFound(NotFound):
    code = "ORDER_NOT_FOUND"


class AccountNotFound(NotFound):
    code = "ACCOUNT_NOT_FOUND"


class BatchInvalid(InvalidInput):
    code = "BATCH_INVALID"


class VenueRefused(DomainError):
    """The venue refused a cancel or replace; `details.venueCode` says why."""

    code = "ORDER_VENUE_REFUSED"
    http_status = 409


@dataclass
class SubmitResult:
    client_order_id: str
    order: Any = None  # an Order, or a plain view of one with the same attributes
    error: DomainError | None = None
    replayed: bool = False
    decision: Decision | None = None


class _Serialized:
    """A connector whose methods run under the service's venue lock (a connector is called by
    one thread at a time)."""

    def __init__(self, connector: ExchangeConnector, lock: threading.RLock) -> None:
        self.inner = connector
        self.name = connector.name
        self._lock = lock

    def mics(self) -> list[str]:
        with self._lock:
            return self.inner.mics()

    def submit(self, order: OrderRequest) -> list[ExecutionReport]:
        with self._lock:
            return self.inner.submit(order)

    def cancel(self, client_order_id: str, mic: str) -> ExecutionReport:
        with self._lock:
            return self.inner.cancel(client_order_id, mic)

    def replace(self, client_order_id: str, mic: str, quantity: Decimal,
                limit_price: Decimal | None) -> list[ExecutionReport]:
        with self._lock:
            return self.inner.replace(client_order_id, mic, quantity, limit_price)

    def quote_for(self, order: OrderRequest) -> VenueQuote | None:
        with self._lock:
            return self.inner.quote_for(order)

    def on_clock(self, at: datetime) -> list[ExecutionReport]:
        with self._lock:
            return self.inner.on_clock(at)


@dataclass
class _AccountBook:
    """One account's state for the checks of one batch. Credit is in the account's currency:
    open orders in another currency are converted at `fx_rates` (currency -> rate); those whose
    currency has no rate are in `unvalued`, and then the credit used is unknown."""

    row: TradingAccount
    positions: dict[str, Decimal]
    locates: dict[str, Decimal]
    credit_used: Decimal
    recent: list[datetime]
    # time in force -> order_fingerprint -> when an alike order was last accepted
    fingerprints: dict[str, dict[tuple[Any, ...], datetime]]
    fx_rates: dict[str, Decimal] = field(default_factory=dict)
    unvalued: set[str] = field(default_factory=set)

    def state(self, time_in_force: str | None = None) -> AccountState:
        """For an order with this time in force: the duplicate guard compares it with orders
        of the same time in force only (an IOC is not a resent FOK)."""
        row = self.row
        if time_in_force is not None:
            seen = self.fingerprints.get(time_in_force, {})
        else:
            seen = {k: t for by_tif in self.fingerprints.values() for k, t in by_tif.items()}
        return AccountState(row.code, row.currency, row.credit_limit, self.credit_used, row.equity,
                            self.positions, self.locates, self.recent, seen)

    def client(self) -> ClientProfile:
        row = self.row
        return ClientProfile(row.code, row.client_type, row.domicile, (row.lei or "").strip() or None,
                             frozenset(row.assessments))


@dataclass
class _Amendment:
    """An amend request travelling with the replace's reports (see _apply_reports)."""

    order_id: str
    limit_price: Decimal | None
    entry: AuditEntry  # order.amend_requested
    locate_key: str | None = None  # a short sale's instrument: a larger order uses more locates
    at: datetime | None = None
    refused: bool = False
    written: bool = False


@dataclass
class _Prepared:
    index: int
    valid: ValidOrder
    order: dict[str, Any]  # the trade_order row
    decision: Decision
    request: OrderRequest | None  # None when denied
    connector: str
    after: dict[str, Any] | None = None  # the row once its execution reports are applied


def _plain(value: Any) -> Any:
    return plain_decimal(value) if isinstance(value, Decimal) else value


def _fix_decimal(value: Decimal) -> str:
    return format(value.normalize(), "f") if value else "0"


@dataclass(frozen=True)
class InstalledConnectors:
    """What the marketplace tells the order service of tenants' installed connectors."""

    connectors: Callable[[str], Sequence[tuple[str, ExchangeConnector]]]  # tenant -> (plugin, connector)
    venues: Callable[[str], Mapping[str, tuple[str, Any]]]  # tenant -> MIC -> (plugin, VenueDefinition)
    tenants: Callable[[], Sequence[str]]  # tenants with installed connectors
    disabled: Callable[[str], frozenset[str]] = lambda tenant: frozenset()  # built-ins switched off


class OrderService:
    def __init__(self, db: Database, bus: Bus, markets: MarketsService, market_data: MarketDataService,
                 plugins: PluginHost, audit: AuditTrail, *, engine: ComplianceEngine | None = None,
                 fx_rate: Callable[[str, str, datetime], Decimal] | None = None,
                 max_page_size: int = 100,
                 connector_configs: dict[str, dict[str, Any]] | None = None) -> None:
        self.db = db
        self.bus = bus
        self.markets = markets
        self.market_data = market_data
        self.plugins = plugins
        self.audit = audit
        self.fx_rate = fx_rate
        self.max_page_size = max_page_size
        self._engine = engine
        self._connector_configs = connector_configs
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

    def connectors(self) -> dict[str, _Serialized]:
        if self._connectors is None:
            # The venue lock first (restoring calls the venues): the order every caller takes them in.
            with self._venue_lock, self._setup_lock:
                if self._connectors is None:
                    entries, failures = collect_connectors(self.plugins, self.markets.directory,
                                                           self._connector_configs)
                    for failure in failures:
                        log.error("exchange connector plugin %s failed to load", failure.plugin)
                    wrapped = {e.name: _Serialized(e.connector, self._venue_lock) for e in entries}
                    self._router = SmartOrderRouter(
                        [ConnectorEntry(e.plugin, wrapped[e.name]) for e in entries],
                        self.market_data.instruments)
                    # After a restart: the venues' open orders back before anyone uses them.
                    try:
                        recovery.restore_builtins(self, wrapped, self.markets.now())
                    except Exception:
                        log.exception("restoring the built-in venues' open orders failed")
                    self._connectors = wrapped
        return self._connectors

    def recover(self) -> None:
        """At start-up (the venue clock): build the connectors when the database holds orders
        open at a venue, so they are restored (gateway/trading/recovery.py) and trade, expire
        and answer cancels without waiting for a first request."""
        if self._connectors is None and recovery.any_open(self.db):
            self.connectors()

    @property
    def router(self) -> SmartOrderRouter:
        self.connectors()
        assert self._router is not None
        return self._router

    # A tenant's installed connectors (sandboxed marketplace plugins, orders:submit) join the
    # built-ins for that tenant's orders: routing, sending, amending, cancelling and the clock.
    def bind_installed_connectors(self, installed: InstalledConnectors) -> None:
        self._installed_connectors = installed
        if self._engine is not None:
            self._engine.bind_installed_venues(installed.venues)

    def _scoped_connectors(self) -> tuple[dict[str, _Serialized], SmartOrderRouter]:
        """The connectors and router for the tenant in scope: the built-ins, plus its installed
        connectors, each behind a lock of its own (a slow plugin holds up only its own venue;
        its deadline bounds the wait)."""
        builtins = self.connectors()
        tenant = current_tenant()
        source = self._installed_connectors
        installed = source.connectors(tenant) if source is not None and tenant is not None else []
        off = source.disabled(tenant) if source is not None and tenant is not None else frozenset()
        if not installed and not off:
            return builtins, self.router
        key = (*(id(c) for _, c in installed), *sorted(off))
        found = self._scoped.get(tenant)  # type: ignore[arg-type]
        if found is not None and found[0] == key:
            return found[1], found[2]
        entries = [e for e in self.router.connectors if e.plugin not in off]
        merged = {e.name: builtins[e.name] for e in entries}
        for plugin, connector in installed:
            name = str(connector.name)
            if name in merged:
                log.warning("an installed connector's name is taken; left out",
                            extra={"plugin": plugin, "connector": name})
                continue
            vetted = VettedConnector(connector, plugin, tenant, self._order_states)  # type: ignore[arg-type]
            merged[name] = _Serialized(vetted, threading.RLock())  # type: ignore[arg-type]
            entries.append(ConnectorEntry(plugin, merged[name]))
        router = SmartOrderRouter(entries, self.market_data.instruments)
        self._scoped[tenant] = (key, merged, router)  # type: ignore[index]
        return merged, router

    def _order_states(self, tenant_id: str, ids: Sequence[str]) -> dict[str, OrderState]:
        """What an installed connector's reports are vetted against (gateway/trading/vetting.py)."""
        ids = [i for i in ids if isinstance(i, str) and len(i) <= 64][:1000]
        if not ids:
            return {}
        o, e = ORDERS.c, EXECUTIONS.c
        with self.db.tenant_session(tenant_id) as session:
            rows = session.execute(select(o.id, o.tenant_id, o.connector, o.side, o.quantity, o.limit_price,
                                          o.cum_qty, o.avg_px, o.status)
                                   .where(o.tenant_id == tenant_id, o.id.in_(ids))).all()
            fills: dict[str, set[str]] = defaultdict(set)
            for order_id, exec_id in session.execute(select(e.order_id, e.exec_id).where(
                    e.tenant_id == tenant_id, e.order_id.in_([r.id for r in rows]))):
                fills[order_id].add(exec_id)
        return {r.id: OrderState(r.id, r.tenant_id, r.connector, r.side, r.quantity, r.limit_price,
                                 r.cum_qty, r.avg_px, r.status, frozenset(fills[r.id])) for r in rows}

    def connector(self, name: str) -> ExchangeConnector:
        """The connector itself (tests and tools inspect its books)."""
        return self.connectors()[name].inner  # type: ignore[return-value]

    # -- time --------------------------------------------------------------------------------

    def advance(self, at: datetime | None = None) -> int:
        """Tell every connector the time and apply what it causes; the number of reports."""
        source = self._installed_connectors
        if self._connectors is None and (source is None or not source.tenants()):
            return 0  # no order has been taken yet: nothing at any venue
        when = at or self.markets.now()

        def tick() -> list[ExecutionReport]:
            reports: list[ExecutionReport] = []
            # Built-ins here; installed connectors (a call across a socket each) hear the time
            # from the venue clock's round below and from each order's own submitted_at.
            for connector in self.connectors().values():
                try:
                    reports.extend(connector.on_clock(when))
                except Exception:
                    log.exception("exchange connector failed on the clock",
                                  extra={"connector": connector.name})
            if current_tenant() is None:  # the venue clock: every tenant's installed connectors too
                reports.extend(self._installed_clock(when))
            return reports

        reports, changed = self._at_venue(tick)
        self._publish(changed)
        return len(reports)

    def _installed_clock(self, when: datetime) -> list[ExecutionReport]:
        source = self._installed_connectors
        reports: list[ExecutionReport] = []
        for tenant in source.tenants() if source is not None else ():
            with tenant_scope(tenant):
                try:  # one tenant's plugins that cannot load never stop the others' clock
                    connectors = list(source.connectors(tenant))
                except Exception:
                    log.exception("a tenant's installed connectors did not load for the clock",
                                  extra={"tenant_id": tenant})
                    continue
                for plugin, connector in connectors:
                    try:
                        reports.extend(VettedConnector(connector, plugin, tenant,
                                                       self._order_states).on_clock(when))
                    except DomainError as exc:  # PLUGIN_FAILED: its worker says why in the log
                        log.warning("installed exchange connector failed on the clock",
                                    extra={"plugin": plugin, "tenant_id": tenant, "code": exc.code})
                    except Exception:
                        log.exception("installed exchange connector failed on the clock",
                                      extra={"plugin": plugin, "tenant_id": tenant})
        return reports

    def sweep_unsent(self, older_than: timedelta = UNSENT_AFTER, at: datetime | None = None) -> int:
        """Reject orders claimed but never acknowledged by a venue (PENDING without a venue
        order id) for longer than `older_than`: their process died between the claim and the
        connector call. A REJECTED report (ORDER_NOT_SENT) goes through the state machine like
        any other; the number rejected."""
        now = at or self.markets.now()
        t = ORDERS.c
        with self.db.system_session() as session:
            stale = session.execute(
                select(t.id, t.mic).where(t.status == str(OrderStatus.PENDING),
                                          t.venue_order_id.is_(None),
                                          t.created_at < now - older_than).limit(1000)).all()
        if not stale:
            return 0
        reports = [ExecutionReport(ExecType.REJECTED, OrdStatus.REJECTED, row.id, "", ZERO, ZERO, ZERO,
                                   ZERO, ZERO, ZERO, "claimed but never sent to the venue",
                                   "ORDER_NOT_SENT", now, exec_id=new_id(), mic=row.mic)
                   for row in stale]
        with self._apply_lock:
            changed = self._apply_reports(reports)
        self._publish(changed)
        return len(changed)

    def _at_venue(self, call: Callable[[], list[ExecutionReport]], amendment: _Amendment | None = None
                  ) -> tuple[list[ExecutionReport], list[dict[str, Any]]]:
        """Run `call` at the venues (one caller at a time), then apply its reports. The apply
        lock is taken before the venue lock is let go, so reports are applied in the order the
        venues produced them, while the next caller's venue work already runs (a pipeline:
        one request's matching overlaps the previous one's database writes)."""
        self._venue_lock.acquire()
        try:
            reports = call()
            self._apply_lock.acquire()
        finally:
            self._venue_lock.release()
        try:
            changed = self._apply_reports(reports, amendment) if reports else []
        finally:
            self._apply_lock.release()
        return reports, changed

    # -- intake ------------------------------------------------------------------------------

    def submit(self, tenant_id: str, user_id: str | None, raw: OrderInput) -> SubmitResult:
        return self.submit_many(tenant_id, user_id, [raw])[0]

    def submit_many(self, tenant_id: str, user_id: str | None, raws: Sequence[OrderInput]
                    ) -> list[SubmitResult]:
        if not raws:
            raise BatchInvalid("send at least one order")
        if len(raws) > MAX_BATCH:
            raise BatchInvalid(f"at most {MAX_BATCH} orders per batch", details={"max": MAX_BATCH})
        now = self.markets.now()
        self.advance(now)
        results = [SubmitResult(str(r.client_order_id)) for r in raws]
        instruments = self.market_data.instruments()
        valid: dict[int, ValidOrder] = {}
        first_index: dict[str, int] = {}
        for k, raw in enumerate(raws):
            cid = raw.client_order_id.strip() if isinstance(raw.client_order_id, str) else None
            if cid:
                if cid in first_index:  # a batch names each order once
                    results[k].error = ClOrdIdRepeated(
                        f"clientOrderId {cid!r} is already item {first_index[cid]} of this batch",
                        details={"index": first_index[cid], "clientOrderId": cid})
                    continue
                first_index[cid] = k
            try:
                valid[k] = parse_order(raw, instruments, now)
            except DomainError as exc:
                results[k].error = exc
        with self._tenant_locks[tenant_id]:
            prepared, claimed = self._prepare_and_claim(tenant_id, user_id, valid, results, now)
        if claimed:
            self._send(prepared)
            # Answer each sent order as it stands after its execution reports: the row their
            # application just wrote (every sent order has one, its acknowledgement at least),
            # else read back.
            fresh: dict[str, Any] = {p.order["id"]: SimpleNamespace(**p.after)
                                     for p in prepared if p.after is not None}
            unseen = [p.order["id"] for p in prepared if p.after is None]
            if unseen:
                fresh.update(self._views(tenant_id, unseen))
            for result in results:
                if result.order is not None and result.order.id in fresh:
                    result.order = fresh[result.order.id]
        return results

    def _prepare_and_claim(self, tenant_id: str, user_id: str | None, valid: dict[int, ValidOrder],
                           results: list[SubmitResult], now: datetime
                           ) -> tuple[list[_Prepared], bool]:
        # submit_many answered repeats inside the batch: one order per ClOrdID here.
        first_of = {v.client_order_id: k for k, v in valid.items()}
        fresh = dict(valid)
        with self.db.tenant_session(tenant_id) as session:
            existing = self._existing(session, list(first_of))
            for cid, k in first_of.items():
                if cid in existing:
                    self._answer_existing(session, results[k], fresh[k], existing[cid])
                    del fresh[k]
            row = load_row(session, tenant_id)
            controls, killed = controls_of(row, tenant_id), killed_accounts(row)
            books = self._books(session, tenant_id, {v.account for v in fresh.values()}, controls, now)
        prepared: list[_Prepared] = []
        references: dict[str, tuple[MarketState, Decimal | None]] = {}  # one quote per instrument
        for k, v in fresh.items():
            book = books.get(v.account)
            if book is None:
                results[k].error = AccountNotFound(f"no trading account {v.account!r}")
                continue
            try:
                prepared.append(self._prepare(k, v, book, controls_for(controls, killed, v.account),
                                              tenant_id, user_id, now, references))
            except DomainError as exc:
                results[k].error = exc
        self._claim(tenant_id, user_id, prepared, results)
        sent = [p for p in prepared if results[p.index].order is not None
                and not results[p.index].replayed and p.request is not None]
        return sent, bool(sent)

    @staticmethod
    def _answer_existing(session: Session | None, result: SubmitResult, v: ValidOrder, row: Any) -> None:
        """A ClOrdID already taken: the same order again is a replay (the first order,
        `replayed`); other terms are CLORDID_CONFLICT naming the order and the terms."""
        changed = differences(v, row)
        if session is not None and {"quantity", "limitPrice"} & set(changed):
            original = OrderService._original_terms(session, row)
            if original is not None:
                changed = differences(v, row, original)
        if changed:
            result.error = ClOrdIdConflict(
                f"clientOrderId {v.client_order_id!r} already names order {row.id}, with another "
                f"{', '.join(changed)}", details={"orderId": row.id, "fields": changed})
            return
        result.order, result.replayed = row, True

    @staticmethod
    def _original_terms(session: Session, row: Any) -> tuple[Decimal, Decimal | None] | None:
        """(quantity, limit price) as the order was submitted, from its first compliance
        decision (an amendment changes the row's); None when there is none."""
        records = session.exec(select(ComplianceDecisionRow.record)
                               .where(ComplianceDecisionRow.order_id == row.id)
                               .order_by(col(ComplianceDecisionRow.created_at))).all()
        first = next((r for r in records if not r.get("amend")), None)
        if first is None or first.get("quantity") is None:
            return None
        limit = None
        if row.limit_price is not None and first.get("price") is not None:
            limit = Decimal(first["price"])
        return Decimal(first["quantity"]), limit

    @staticmethod
    def _existing(session: Session, cids: list[str]) -> dict[str, Order]:
        found: dict[str, Order] = {}
        for start in range(0, len(cids), 500):
            chunk = cids[start:start + 500]
            for row in session.exec(select(Order).where(col(Order.client_order_id).in_(chunk))):
                found[row.client_order_id] = row
        return found

    def _books(self, session: Session, tenant_id: str, codes: set[str], controls: TenantControls,
               now: datetime) -> dict[str, _AccountBook]:
        if not codes:
            return {}
        accounts = session.exec(select(TradingAccount).where(col(TradingAccount.code).in_(codes))).all()
        books = {a.code: _AccountBook(a, {}, {}, ZERO, [], {}) for a in accounts}
        if not books:
            return books
        found = list(books)
        for p in session.exec(select(AccountPosition).where(col(AccountPosition.account).in_(found))):
            books[p.account].positions[p.instrument_key] = p.quantity
        for loc in session.exec(select(Locate).where(col(Locate.account).in_(found),
                                                     col(Locate.remaining) > 0)
                                .order_by(col(Locate.created_at))):
            if loc.expires_at is not None and loc.expires_at <= now:
                continue
            book = books[loc.account]
            book.locates[loc.instrument_key] = book.locates.get(loc.instrument_key, ZERO) + loc.remaining
        price = func.coalesce(Order.limit_price, Order.stop_price, Order.avg_px)
        used = session.exec(
            select(Order.account, Order.currency, func.sum(Order.leaves_qty * price))
            .where(col(Order.account).in_(found), col(Order.status).in_(OPEN_STATUSES),
                   col(Order.side).in_(SHORT_OR_BUY))
            .group_by(Order.account, Order.currency)).all()
        for code, currency, total in used:
            # Credit is in the account's currency: an open order in another is converted at
            # the current rate; without a rate the credit in use is unknown (see _prepare).
            book = books[code]
            if not total:
                continue
            rate = self._credit_rate(book, currency, now)
            if rate is None:
                book.unvalued.add(currency)
            else:
                book.credit_used += Decimal(total) * rate
        window = max(controls.throttle_window if controls.throttle_max_orders else timedelta(0),
                     controls.duplicate_window or timedelta(0))
        if window > timedelta(0):
            t = ORDERS.c
            recent = session.execute(
                select(t.account, t.symbol, t.mic, t.side, t.ord_type, t.time_in_force, t.quantity,
                       t.limit_price, t.stop_price, t.status, t.cum_qty, t.created_at)
                .where(t.tenant_id == tenant_id, t.account.in_(found), t.created_at >= now - window)
                .order_by(t.created_at))
            for o in recent:
                book = books[o.account]
                book.recent.append(o.created_at)
                if o.status in UNFILLED_ENDS and not o.cum_qty:
                    continue  # denied, or killed/cancelled/rejected/expired having traded nothing
                # order_fingerprint's shape, from the stored columns, per time in force
                book.fingerprints.setdefault(o.time_in_force, {})[
                    (o.account, o.symbol, o.mic, o.side, o.ord_type, o.quantity, o.limit_price,
                     o.stop_price)] = o.created_at
        return books

    def _credit_rate(self, book: _AccountBook, currency: str, now: datetime) -> Decimal | None:
        """Units of the account's currency per unit of `currency` (1 for its own), once per
        book; None when no FX provider has the rate."""
        if currency == book.row.currency:
            return ONE
        if currency not in book.fx_rates:
            try:
                book.fx_rates[currency] = self._fx(currency, book.row.currency, now)
            except DomainError:
                return None
        return book.fx_rates[currency]

    def _reference(self, key: str, now: datetime) -> tuple[MarketState, Decimal | None]:
        try:
            quote = self.market_data.quote(key, now)
        except DomainError:
            quote = None
        if quote is None:
            return MarketState(reference_price=None), None
        bid, ask = quote.bid, quote.ask
        mid = (bid + ask) / 2 if bid > 0 and ask > 0 else (bid or ask or None)
        return MarketState(reference_price=mid, best_bid=bid or None, best_ask=ask or None,
                           previous_close=None), mid

    def _prepare(self, index: int, v: ValidOrder, book: _AccountBook, controls: TenantControls,
                 tenant_id: str, user_id: str | None, now: datetime,
                 references: dict[str, tuple[MarketState, Decimal | None]]) -> _Prepared:
        order_id = new_id()
        request = OrderRequest(order_id, v.account, v.instrument.symbol, v.requested_mic, v.side,
                               v.ord_type, v.time_in_force, v.quantity, v.limit_price, v.stop_price,
                               v.currency, v.expire_at, now)
        decision_route = self._scoped_connectors()[1].route(request)
        routed = decision_route.order
        key = f"{routed.symbol}.{routed.mic}"
        listing = self._listing(key) or v.instrument
        if key not in references:
            references[key] = self._reference(key, now)
        market, arrival = references[key]
        fx, lot = self._fx_and_lot(listing, book, routed, arrival, now)
        ctx = self.engine.context(
            routed, instrument=InstrumentFacts(listing.isin, listing.currency, listing.asset_class),
            client=book.client(), account=book.state(str(v.time_in_force)), market=market,
            controls=controls, now=now, fx_rate=fx, tick_size=listing.tick_size, lot_size=lot)
        decision = self.engine.check(ctx)
        if book.unvalued and v.side is not Side.SELL:
            decision = deny(decision, _credit_unknown(book))
        status = states.apply(OrderStatus.NEW, states.OrderEvent.COMPLIANCE_PASS if decision.passed
                              else states.OrderEvent.COMPLIANCE_DENY)
        first = decision.denials[0] if decision.denials else None
        row = {
            "id": order_id, "tenant_id": tenant_id, "client_order_id": v.client_order_id,
            "account": v.account, "symbol": routed.symbol, "isin": listing.isin, "mic": routed.mic,
            "requested_mic": v.requested_mic, "connector": decision_route.connector,
            "side": str(v.side), "ord_type": str(v.ord_type), "time_in_force": str(v.time_in_force),
            "quantity": v.quantity, "limit_price": v.limit_price, "stop_price": v.stop_price,
            "currency": v.currency, "expire_at": v.expire_at, "status": str(status),
            "cum_qty": ZERO, "leaves_qty": v.quantity if decision.passed else ZERO, "avg_px": ZERO,
            "fees": ZERO, "venue_order_id": None,
            "reject_code": first.code if first else None,
            "reject_text": first.message[:500] if first else None,
            "routing": self._routing_record(decision_route, arrival),
            "created_by": user_id, "created_at": now, "updated_at": now, "version": 1,
        }
        if decision.passed:
            book.recent.append(now)
            book.fingerprints.setdefault(str(v.time_in_force), {})[order_fingerprint(routed)] = now
            if v.side is not Side.SELL and ctx.value is not None:
                book.credit_used += ctx.value
            if v.side is Side.SELL_SHORT:
                left = book.locates.get(ctx.instrument_key, ZERO)
                book.locates[ctx.instrument_key] = max(left - v.quantity, ZERO)
        else:
            book.recent.append(now)  # a denied message still counts for the throttle
        return _Prepared(index, v, row, decision, routed if decision.passed else None,
                         decision_route.connector)

    def _fx_and_lot(self, listing: Any, book: _AccountBook, request: OrderRequest,
                    reference: Decimal | None, now: datetime) -> tuple[Decimal | None, Decimal]:
        """The FX rate (listing currency to the account's) and the order increment compliance
        checks an order against; submit and amend both use these."""
        fx = None
        if listing.currency != book.row.currency:
            try:
                fx = self._fx(listing.currency, book.row.currency, now)
            except DomainError:
                fx = None  # compliance denies it: COMPLIANCE_FX_RATE_MISSING
        price = request.limit_price or request.stop_price or reference
        try:
            venue_lot = self.markets.directory.lot_size(request.mic, price) if price else None
        except DomainError:  # a venue an installed connector brings: its own lot, from the listing
            venue_lot = None
        # The lot the venue's connector enforces (the instrument's, unless the venue trades
        # fractions): compliance and the venue agree on the order increment.
        lot = venue_lot if venue_lot is not None and venue_lot < 1 else Decimal(listing.lot_size)
        return fx, lot

    def _fx(self, base: str, quote: str, at: datetime) -> Decimal:
        if self.fx_rate is None:
            with self._setup_lock:
                if self.fx_rate is None:
                    from gateway.fx.service import FxService

                    fx = FxService.from_plugins(self.db, self.plugins, self.max_page_size)
                    self.fx_rate = lambda b, q, t: fx.rate(b, q, t).rate
        return self.fx_rate(base, quote, at)

    def _listing(self, key: str) -> Any:
        try:
            return self.market_data.instrument(key)
        except DomainError:
            return None

    @staticmethod
    def _routing_record(d: RoutingDecision, arrival: Decimal | None) -> dict[str, Any]:
        return {
            "connector": d.connector, "plugin": d.plugin, "mic": d.mic, "reason": d.reason,
            "expected_price": _plain(d.expected_price), "fee_bps": _plain(d.fee_bps),
            "expected_fee": _plain(d.expected_fee), "score": _plain(d.score),
            "arrival_price": _plain(arrival), "decided_at": d.decided_at.isoformat(),
            "alternatives": [{"connector": a.connector, "mic": a.mic, "symbol": a.symbol,
                              "expected_price": _plain(a.expected_price),
                              "available_qty": _plain(a.available_qty), "fee_bps": _plain(a.fee_bps),
                              "score": _plain(a.score), "status": a.status}
                             for a in d.alternatives],
        }

    # -- claiming: the batch's rows in one transaction -------------------------------------------

    def _claim(self, tenant_id: str, user_id: str | None, prepared: list[_Prepared],
               results: list[SubmitResult]) -> None:
        if not prepared:
            return
        try:
            with self.db.tenant_transaction(tenant_id) as session:
                self._write_claims(session, tenant_id, user_id, prepared)
        except IntegrityError:
            # Another process claimed one of these ClOrdIDs: one order at a time, each in its
            # own transaction, so only the losers answer the winner's order.
            lost: set[int] = set()
            for p in prepared:
                try:
                    with self.db.tenant_transaction(tenant_id) as session:
                        self._write_claims(session, tenant_id, user_id, [p])
                except IntegrityError:
                    with self.db.tenant_session(tenant_id) as session:
                        winner = self._existing(session, [p.valid.client_order_id])
                    row = winner.get(p.valid.client_order_id)
                    if row is not None:  # the winner's order, or CLORDID_CONFLICT
                        self._answer_existing(None, results[p.index], p.valid, row)
                    lost.add(p.index)
                    p.request = None
                    continue
                results[p.index].order = SimpleNamespace(**p.order)
                results[p.index].decision = p.decision
            self._publish_claims(tenant_id, [p for p in prepared if p.index not in lost])
            return
        for p in prepared:
            results[p.index].order = SimpleNamespace(**p.order)
            results[p.index].decision = p.decision
        self._publish_claims(tenant_id, prepared)

    def _write_claims(self, session: Session, tenant_id: str, user_id: str | None,
                      prepared: list[_Prepared]) -> None:
        orders, events, decisions, audit = [], [], [], []
        for p in prepared:
            row, decision = p.order, p.decision
            orders.append(row)
            event = (states.OrderEvent.COMPLIANCE_PASS if decision.passed
                     else states.OrderEvent.COMPLIANCE_DENY)
            events.append({"id": new_id(), "tenant_id": tenant_id, "order_id": row["id"], "seq": 1,
                           "event": str(event), "exec_type": None, "status_from": "NEW",
                           "status_to": row["status"], "cum_qty": ZERO, "leaves_qty": row["leaves_qty"],
                           "code": row["reject_code"], "text": row["reject_text"] or "",
                           "at": row["created_at"]})
            record = decision.record()
            # The record's client_order_id is the id the venue sees (the order's own id).
            record["order_id"] = row["id"]
            record["client_order_id"] = row["client_order_id"]
            decisions.append({"id": new_id(), "tenant_id": tenant_id, "order_id": row["id"],
                              "client_order_id": row["client_order_id"], "account": row["account"],
                              "passed": decision.passed, "codes": list(decision.codes),
                              "jurisdictions": list(decision.jurisdictions), "record": record,
                              "elapsed_ns": decision.elapsed_ns, "decided_at": decision.decided_at,
                              "created_at": row["created_at"]})
            # One record per order: the order and its decision (per-rule timings stay in the
            # compliance_decision row; they are measurements, not facts to attest).
            audit.append(AuditEntry("order.submitted", row["id"], {
                **self._order_payload(row, event),
                "compliance": {k: v for k, v in record.items() if k != "timings_ns"}}, user_id))
        bulk_insert(session, ORDERS, orders)
        bulk_insert(session, EVENTS, events)
        bulk_insert(session, DECISIONS, decisions)
        self._use_locates(session, prepared)
        self.audit.append(session, tenant_id, audit)

    @classmethod
    def _use_locates(cls, session: Session, prepared: list[_Prepared]) -> None:
        for p in prepared:
            if p.request is not None and p.valid.side is Side.SELL_SHORT:
                cls._take_locates(session, p.order["tenant_id"], p.valid.account,
                                  p.decision.context.instrument_key, p.valid.quantity,
                                  p.order["created_at"])

    @staticmethod
    def _take_locates(session: Session, tenant_id: str, account: str, key: str, need: Decimal,
                      now: datetime) -> None:
        """Use `need` located shares, oldest locate first; an expired one covers nothing (as
        in _books)."""
        rows = session.exec(select(Locate).where(Locate.tenant_id == tenant_id,
                                                 Locate.account == account,
                                                 Locate.instrument_key == key,
                                                 col(Locate.remaining) > 0)
                            .order_by(col(Locate.created_at))).all()
        for loc in rows:
            if need <= 0:
                break
            if loc.expires_at is not None and loc.expires_at <= now:
                continue
            take = min(need, loc.remaining)
            loc.remaining -= take
            need -= take
            session.add(loc)
        session.flush()

    @staticmethod
    def _order_payload(row: dict[str, Any], event: Any) -> dict[str, Any]:
        return {"event": str(event), "client_order_id": row["client_order_id"],
                "account": row["account"], "symbol": row["symbol"], "mic": row["mic"],
                "side": row["side"], "ord_type": row["ord_type"],
                "time_in_force": row["time_in_force"], "quantity": _plain(row["quantity"]),
                "limit_price": _plain(row["limit_price"]), "stop_price": _plain(row["stop_price"]),
                "status": row["status"], "reject_code": row["reject_code"]}

    def _publish_claims(self, tenant_id: str, prepared: list[_Prepared]) -> None:
        for p in prepared:
            if not p.decision.passed:
                self.bus.publish(alerts_topic(tenant_id), {
                    "tenant_id": tenant_id, "order_id": p.order["id"], **{
                        k: v for k, v in p.decision.record().items()
                        if k in ("account", "symbol", "mic", "denials", "jurisdictions",
                                 "decided_at")},
                    "client_order_id": p.order["client_order_id"]})
            self.bus.publish(orders_topic(tenant_id), {"tenant_id": tenant_id, "id": p.order["id"],
                                                       "account": p.order["account"],
                                                       "status": p.order["status"]})

    # -- sending and applying execution reports -------------------------------------------------

    def _send(self, prepared: list[_Prepared]) -> None:
        connectors = self._scoped_connectors()[0]

        def submit() -> list[ExecutionReport]:
            reports: list[ExecutionReport] = []
            for p in prepared:
                assert p.request is not None
                try:
                    reports.extend(connectors[p.connector].submit(p.request))
                except Exception:
                    log.exception("exchange connector failed to take an order",
                                  extra={"connector": p.connector, "order_id": p.order["id"]})
                    reports.append(_local_reject(p.request, p.order["mic"]))
            return reports

        _, changed = self._at_venue(submit)
        self._publish(changed)
        rows = {o["id"]: o for o in changed}
        for p in prepared:
            p.after = rows.get(p.order["id"])

    def _apply_reports(self, reports: Sequence[ExecutionReport], amendment: _Amendment | None = None
                       ) -> list[dict[str, Any]]:
        try:
            return self._apply_reports_once(reports, amendment)
        except IntegrityError:
            # Another writer changed one of these orders between this read and its write (the
            # stuck-order sweep, another process): an event number or a new position collided.
            # Nothing was written; read again and apply what is still legal from there.
            log.warning("execution reports collided with another writer; applying them again",
                        extra={"reports": len(reports)})
            if amendment is not None:
                amendment.written = False
            return self._apply_reports_once(reports, amendment)

    def _apply_reports_once(self, reports: Sequence[ExecutionReport],
                            amendment: _Amendment | None = None) -> list[dict[str, Any]]:
        """Apply reports in order, in one transaction across every tenant they concern. Rows
        are read and written with Core statements (executemany), not ORM objects per row. An
        `amendment` (the request whose replace caused them) is written with its REPLACED
        report: the new limit price and its audit record commit with the new quantity."""
        ids = list(dict.fromkeys(r.client_order_id for r in reports))
        if not ids:
            return []
        table = ORDERS
        with self.db.system_transaction() as session:
            orders: dict[str, dict[str, Any]] = {}
            for start in range(0, len(ids), 500):
                for row in session.execute(select(table).where(table.c.id.in_(ids[start:start + 500]))):
                    orders[row.id] = dict(row._mapping)
            if not orders:
                return []
            positions = self._positions_for(session, orders.values())
            executions, events = [], []
            audit: dict[str, list[AuditEntry]] = defaultdict(list)
            changed: dict[str, dict[str, Any]] = {}
            for report in reports:
                order = orders.get(report.client_order_id)
                if order is None:
                    continue  # not one of the gateway's orders (a tool's, a test's)
                event = states.event_of(report)
                if event is None:
                    continue  # a refused cancel/replace: the caller answers it
                before = order["status"]
                try:
                    after = states.apply(OrderStatus(before), event)
                except states.IllegalTransition:
                    log.error("execution report out of order ignored",
                              extra={"order_id": order["id"], "status": before, "event": str(event)})
                    continue
                order["status"] = str(after)
                more = report.leaves_qty - order["leaves_qty"]
                order["cum_qty"], order["leaves_qty"] = report.cum_qty, report.leaves_qty
                order["avg_px"] = report.avg_px
                if event is states.OrderEvent.REPLACED:
                    order["quantity"] = report.cum_qty + report.leaves_qty
                    if amendment is not None and amendment.order_id == order["id"] \
                            and not amendment.refused and not amendment.written:
                        if amendment.limit_price is not None:
                            order["limit_price"] = amendment.limit_price
                        if amendment.locate_key is not None and more > 0:
                            self._take_locates(session, order["tenant_id"], order["account"],
                                               amendment.locate_key, more,
                                               amendment.at or report.at)
                        audit[order["tenant_id"]].append(amendment.entry)
                        amendment.written = True
                if report.venue_order_id:
                    order["venue_order_id"] = report.venue_order_id
                if event in (states.OrderEvent.REJECTED, states.OrderEvent.CANCELED,
                             states.OrderEvent.EXPIRED) and report.reject_code:
                    order["reject_code"], order["reject_text"] = report.reject_code, report.text[:500]
                order["version"] += 1
                order["updated_at"] = report.at
                tenant_id = order["tenant_id"]
                if report.exec_type is ExecType.TRADE:
                    order["fees"] += report.fee
                    executions.append({
                        "id": new_id(), "tenant_id": tenant_id, "order_id": order["id"],
                        "exec_id": report.exec_id or new_id(), "match_id": report.match_id,
                        "account": order["account"], "symbol": order["symbol"], "side": order["side"],
                        "last_qty": report.last_qty, "last_px": report.last_px, "fee": report.fee,
                        "currency": order["currency"], "liquidity": report.liquidity,
                        "mic": report.mic or order["mic"], "at": report.at, "created_at": report.at})
                    self._move_position(positions, order, report)
                events.append({"id": new_id(), "tenant_id": tenant_id, "order_id": order["id"],
                               "seq": order["version"], "event": str(event),
                               "exec_type": str(report.exec_type), "status_from": before,
                               "status_to": order["status"], "cum_qty": report.cum_qty,
                               "leaves_qty": report.leaves_qty, "code": report.reject_code,
                               "text": (report.text or "")[:500], "at": report.at})
                audit[tenant_id].append(AuditEntry(
                    f"order.{str(event).lower()}", order["id"],
                    {"client_order_id": order["client_order_id"], "exec_type": str(report.exec_type),
                     "exec_id": report.exec_id, "status_from": before, "status_to": order["status"],
                     "last_qty": _plain(report.last_qty), "last_px": _plain(report.last_px),
                     "cum_qty": _plain(report.cum_qty), "leaves_qty": _plain(report.leaves_qty),
                     "fee": _plain(report.fee), "code": report.reject_code}))
                changed[order["id"]] = order
            if changed:
                session.execute(ORDER_UPDATE, [{"b_" + k: o[k] for k in _UPDATED} for o in changed.values()])
            if executions:
                bulk_insert(session, EXECUTIONS, executions)
            if events:
                bulk_insert(session, EVENTS, events)
            self._write_positions(session, positions)
            # Chains in one order, so two transactions never wait on each other's heads.
            for tenant_id, entries in sorted(audit.items()):
                self.audit.append(session, tenant_id, entries)
        return list(changed.values())

    @staticmethod
    def _positions_for(session: Session, orders: Iterable[dict[str, Any]]
                       ) -> dict[tuple[str, str, str], dict[str, Any]]:
        wanted = {(o["tenant_id"], o["account"]) for o in orders}
        accounts = {a for _, a in wanted}
        found: dict[tuple[str, str, str], dict[str, Any]] = {}
        for row in session.execute(select(POSITIONS).where(POSITIONS.c.account.in_(accounts))):
            if (row.tenant_id, row.account) in wanted:
                found[(row.tenant_id, row.account, row.instrument_key)] = {**row._mapping, "_state": "old"}
        return found

    @staticmethod
    def _write_positions(session: Session, positions: dict[tuple[str, str, str], dict[str, Any]]) -> None:
        new = [{k: v for k, v in p.items() if k != "_state"} for p in positions.values()
               if p["_state"] == "new"]
        moved = [{"b_" + k: p[k] for k in _POSITION_UPDATED} for p in positions.values()
                 if p["_state"] == "moved"]
        if new:
            bulk_insert(session, POSITIONS, new)
        if moved:
            session.execute(POSITION_UPDATE, moved)

    @staticmethod
    def _move_position(positions: dict[tuple[str, str, str], dict[str, Any]], order: dict[str, Any],
                       report: ExecutionReport) -> None:
        key = order["isin"] or f"{order['symbol']}.{order['mic']}"
        row = positions.get((order["tenant_id"], order["account"], key))
        if row is None:
            row = {"id": new_id(), "tenant_id": order["tenant_id"], "account": order["account"],
                   "instrument_key": key, "symbol": order["symbol"], "mic": order["mic"],
                   "currency": order["currency"], "quantity": ZERO, "avg_price": ZERO,
                   "realized_pnl": ZERO, "created_at": report.at, "updated_at": report.at,
                   "_state": "new"}
            positions[(order["tenant_id"], order["account"], key)] = row
        elif row["_state"] == "old":
            row["_state"] = "moved"
        signed = report.last_qty if order["side"] == str(Side.BUY) else -report.last_qty
        held, average = row["quantity"], row["avg_price"]
        after = held + signed
        if held == 0 or (held > 0) == (signed > 0):
            # Opening or adding: the average price moves.
            row["avg_price"] = (abs(held) * average + report.last_qty * report.last_px) / abs(after)
        else:
            closed = min(abs(signed), abs(held))
            direction = 1 if held > 0 else -1
            row["realized_pnl"] += closed * (report.last_px - average) * direction
            if after == 0:
                row["avg_price"] = ZERO
            elif (after > 0) != (held > 0):  # flipped: the rest opens at this price
                row["avg_price"] = report.last_px
        row["quantity"] = after
        row["symbol"], row["mic"] = order["symbol"], report.mic or order["mic"]
        row["updated_at"] = report.at

    def _publish(self, changed: Sequence[dict[str, Any]]) -> None:
        for o in changed:
            self.bus.publish(orders_topic(o["tenant_id"]), {"tenant_id": o["tenant_id"], "id": o["id"],
                                                            "account": o["account"], "status": o["status"]})

    # -- amend and cancel --------------------------------------------------------------------

    def cancel(self, tenant_id: str, user_id: str | None, order_id: str) -> Order:
        self.advance()
        order = self.get(tenant_id, order_id)
        states.check_cancelable(OrderStatus(order.status))
        connector = self._scoped_connectors()[0].get(order.connector)
        if connector is None:
            raise states.OrderNotCancelable("the order's venue connector is gone",
                                            details={"connector": order.connector})
        refused: list[ExecutionReport] = []

        def cancel() -> list[ExecutionReport]:
            report = connector.cancel(order.id, order.mic)
            # A REJECTED answer to a cancel refuses the request (FIX 35=9), whatever OrdStatus
            # the venue put on it: the order stays as it was.
            if report.exec_type is ExecType.REJECTED:
                refused.append(report)
                return []
            return [report]

        _, changed = self._at_venue(cancel)
        if refused:
            raise VenueRefused(f"the venue refused the cancel: {refused[0].text}",
                               details={"venueCode": refused[0].reject_code})
        self._audit_request(tenant_id, user_id, "order.cancel_requested", order, {})
        self._publish(changed)
        return self.get(tenant_id, order_id)

    def amend(self, tenant_id: str, user_id: str | None, order_id: str, *, quantity: Any = None,
              limit_price: Any = None) -> Order:
        self.advance()
        order = self.get(tenant_id, order_id)
        states.check_amendable(OrderStatus(order.status))
        qty = order.quantity if quantity is None else amount(quantity, "quantity", "QUANTITY_INVALID")
        price = None if limit_price is None else amount(limit_price, "limitPrice", "PRICE_INVALID")
        if price is not None and order.ord_type not in ("LIMIT", "STOP_LIMIT"):
            raise OrderInvalid(f"a {order.ord_type} order has no limit price", code="PRICE_INVALID")
        if qty <= order.cum_qty:
            raise states.OrderNotAmendable(f"{order.cum_qty} already filled: the quantity must be "
                                           f"above it (cancel instead)",
                                           code="ORDER_QUANTITY_BELOW_FILLED")
        if quantity is None and limit_price is None:
            raise OrderInvalid("change the quantity, the limit price or both", code="AMEND_EMPTY")
        # The amended order is checked again (collar, sizes, limits) before the venue sees it.
        now = self.markets.now()
        with self._tenant_locks[tenant_id]:
            with self.db.tenant_session(tenant_id) as session:
                row = load_row(session, tenant_id)
                controls = controls_for(controls_of(row, tenant_id), killed_accounts(row), order.account)
                books = self._books(session, tenant_id, {order.account}, controls, now)
                # Its reservation as the books just counted it (fills may have come since).
                held = session.get(Order, order.id) or order
            book = books.get(order.account)
            if book is None:
                raise AccountNotFound(f"no trading account {order.account!r}")
            listing = self._listing(f"{order.symbol}.{order.mic}")
            if listing is None:
                raise NotFound(f"{order.symbol}.{order.mic} is no longer listed", code="INSTRUMENT_UNKNOWN")
            if price is not None and price % listing.tick_size:
                raise OrderInvalid(f"limitPrice {price} is not a multiple of the tick {listing.tick_size}",
                                   code="PRICE_OFF_TICK")
            request = OrderRequest(order.id, order.account, order.symbol, order.mic, Side(order.side),
                                   order.ord_type, order.time_in_force,  # type: ignore[arg-type]
                                   qty - order.cum_qty, price or order.limit_price, order.stop_price,
                                   order.currency, order.expire_at, now)
            market, mid = self._reference(listing.key, now)
            book.fingerprints.clear()  # the order itself is not its own duplicate
            self._release_own(book, held, listing)
            fx, lot = self._fx_and_lot(listing, book, request, mid, now)
            ctx = self.engine.context(
                request, instrument=InstrumentFacts(listing.isin, listing.currency, listing.asset_class),
                client=book.client(), account=book.state(), market=market, controls=controls,
                now=now, fx_rate=fx, tick_size=listing.tick_size, lot_size=lot)
            decision = self.engine.check(ctx)
            if book.unvalued and order.side != str(Side.SELL):  # credit in use unknown: closed
                decision = deny(decision, _credit_unknown(book))
            with self.db.tenant_transaction(tenant_id) as session:
                record = decision.record()
                record["order_id"] = order.id
                record["amend"] = True
                session.add(ComplianceDecisionRow(
                    tenant_id=tenant_id, order_id=order.id, client_order_id=order.client_order_id,
                    account=order.account, passed=decision.passed, codes=list(decision.codes),
                    jurisdictions=list(decision.jurisdictions), record=record,
                    elapsed_ns=decision.elapsed_ns, decided_at=decision.decided_at))
                self.audit.append(session, tenant_id, [AuditEntry("compliance.decision", order.id,
                                                                  record, user_id)])
            if not decision.passed:
                raise decision.error()
        connector = self._scoped_connectors()[0].get(order.connector)
        if connector is None:
            raise states.OrderNotAmendable("the order's venue connector is gone")
        refused: list[ExecutionReport] = []
        amendment = _Amendment(order.id, price, AuditEntry(
            "order.amend_requested", order.id,
            {"client_order_id": order.client_order_id, "quantity": _plain(qty),
             "limit_price": _plain(price)}, user_id),
            locate_key=ctx.instrument_key if order.side == str(Side.SELL_SHORT) else None, at=now)

        def replace() -> list[ExecutionReport]:
            reports = connector.replace(order.id, order.mic, qty, price)
            if reports and reports[0].exec_type is ExecType.REJECTED \
                    and reports[0].client_order_id == order.id:
                refused.append(reports[0])  # a refused replace (see cancel)
                amendment.refused = True
                return reports[1:]
            return reports

        _, changed = self._at_venue(replace, amendment)
        if refused:
            raise VenueRefused(f"the venue refused the amendment: {refused[0].text}",
                               details={"venueCode": refused[0].reject_code})
        if not amendment.written:
            # The venue took it without a REPLACED report for the order (none applied): the
            # price and the request's record still go together, in one transaction.
            with self.db.tenant_transaction(tenant_id) as session:
                if price is not None:
                    session.execute(update(Order).where(col(Order.id) == order.id)
                                    .values(limit_price=price))
                self.audit.append(session, tenant_id, [amendment.entry])
        self._publish(changed)
        return self.get(tenant_id, order_id)

    @staticmethod
    def _release_own(book: _AccountBook, order: Order, listing: Any) -> None:
        """Take the amended order's own reservation out of the book (as _books counted it), so
        the amendment is not checked against itself: its credit and, for a short sale, the
        located shares its unfilled part holds."""
        if order.status not in OPEN_STATUSES:
            return
        rate = ONE if order.currency == book.row.currency else book.fx_rates.get(order.currency)
        if order.side in SHORT_OR_BUY and rate is not None:  # as _books converted it
            price = order.limit_price if order.limit_price is not None else (
                order.stop_price if order.stop_price is not None else order.avg_px)
            book.credit_used = max(book.credit_used - order.leaves_qty * (price or ZERO) * rate, ZERO)
        if order.side == str(Side.SELL_SHORT):
            key = listing.isin or listing.key
            book.locates[key] = book.locates.get(key, ZERO) + order.leaves_qty

    def _audit_request(self, tenant_id: str, user_id: str | None, kind: str, order: Order,
                       payload: dict[str, Any]) -> None:
        with self.db.tenant_transaction(tenant_id) as session:
            self.audit.append(session, tenant_id, [AuditEntry(
                kind, order.id, {"client_order_id": order.client_order_id, **payload}, user_id)])

    # -- reads -------------------------------------------------------------------------------

    def get(self, tenant_id: str, order_id: str) -> Order:
        with self.db.tenant_session(tenant_id) as session:
            row = session.get(Order, order_id)
            # session.get skips the tenant criteria for an identity-map hit: check explicitly.
            if row is None or row.tenant_id != tenant_id:
                raise OrderNotFound(f"no order {order_id}")
            return row

    def _views(self, tenant_id: str, ids: list[str]) -> dict[str, Any]:
        """Orders as plain attribute views (a Core read: no ORM object per row)."""
        with self.db.tenant_session(tenant_id) as session:
            return {row.id: SimpleNamespace(**row._mapping) for row in session.execute(
                select(ORDERS).where(ORDERS.c.id.in_(ids), ORDERS.c.tenant_id == tenant_id))}

    def orders_by_ids(self, tenant_id: str, ids: list[str]) -> dict[str, Order]:
        with self.db.tenant_session(tenant_id) as session:
            return {o.id: o for o in session.exec(select(Order).where(col(Order.id).in_(ids)))}

    def list(self, tenant_id: str, *, account: str | None = None, status: str | None = None,
             symbol: str | None = None, mic: str | None = None, client_order_id: str | None = None,
             first: int = 20, after: str | None = None) -> Page[Order]:
        stmt = select(Order)
        for column, value in ((Order.account, account), (Order.status, status),
                              (Order.symbol, symbol), (Order.mic, mic),
                              (Order.client_order_id, client_order_id)):
            if value is not None:
                stmt = stmt.where(column == value)
        return keyset_page(self.db, tenant_id, stmt, Order, first=first, after=after,
                           max_page_size=self.max_page_size)

    def executions(self, tenant_id: str, order_ids: list[str]) -> dict[str, list[Execution]]:
        out: dict[str, list[Execution]] = {k: [] for k in order_ids}
        with self.db.tenant_session(tenant_id) as session:
            for e in session.exec(select(Execution).where(col(Execution.order_id).in_(order_ids))
                                  .order_by(col(Execution.at), col(Execution.id))):
                out[e.order_id].append(e)
        return out

    def events(self, tenant_id: str, order_ids: list[str]) -> dict[str, list[OrderEvent]]:
        out: dict[str, list[OrderEvent]] = {k: [] for k in order_ids}
        with self.db.tenant_session(tenant_id) as session:
            for e in session.exec(select(OrderEvent).where(col(OrderEvent.order_id).in_(order_ids))
                                  .order_by(col(OrderEvent.seq))):
                out[e.order_id].append(e)
        return out

    def trades(self, tenant_id: str, *, account: str | None = None, order_id: str | None = None,
               symbol: str | None = None, first: int = 20, after: str | None = None) -> Page[Execution]:
        stmt = select(Execution)
        for column, value in ((Execution.account, account), (Execution.order_id, order_id),
                              (Execution.symbol, symbol)):
            if value is not None:
                stmt = stmt.where(column == value)
        return keyset_page(self.db, tenant_id, stmt, Execution, first=first, after=after,
                           max_page_size=self.max_page_size)

    def positions(self, tenant_id: str, account: str) -> list[AccountPosition]:
        with self.db.tenant_session(tenant_id) as session:
            if session.exec(select(TradingAccount).where(TradingAccount.code == account)).first() is None:
                raise AccountNotFound(f"no trading account {account!r}")
            return list(session.exec(select(AccountPosition).where(AccountPosition.account == account)
                                     .order_by(col(AccountPosition.instrument_key))))

    def decisions(self, tenant_id: str, *, order_id: str | None = None, passed: bool | None = None,
                  first: int = 20, after: str | None = None) -> Page[ComplianceDecisionRow]:
        stmt = select(ComplianceDecisionRow)
        if order_id is not None:
            stmt = stmt.where(ComplianceDecisionRow.order_id == order_id)
        if passed is not None:
            stmt = stmt.where(ComplianceDecisionRow.passed == passed)
        return keyset_page(self.db, tenant_id, stmt, ComplianceDecisionRow, first=first, after=after,
                           max_page_size=self.max_page_size)

    # -- accounts, controls, locates -----------------------------------------------------------

    def accounts(self, tenant_id: str) -> list[TradingAccount]:
        with self.db.tenant_session(tenant_id) as session:
            return list(session.exec(select(TradingAccount).order_by(col(TradingAccount.code))))

    def upsert_account(self, tenant_id: str, user_id: str | None, *, code: str, currency: str,
                       domicile: str, client_type: str = "INDIVIDUAL", lei: str | None = None,
                       name: str = "", credit_limit: Any = "0", equity: Any = "0",
                       assessments: Sequence[str] = ()) -> TradingAccount:
        code = (code or "").strip()
        if not code or len(code) > 64:
            raise InvalidInput("an account code is 1 to 64 characters", code="ACCOUNT_CODE_INVALID")
        currency = (currency or "").strip().upper()
        if not is_currency(currency):
            raise InvalidInput(f"{currency!r} is not an ISO 4217 currency code such as USD",
                               code="CURRENCY_INVALID")
        domicile = (domicile or "").strip().upper()
        if not is_country(domicile):
            raise InvalidInput(f"{domicile!r} is not an ISO 3166-1 alpha-2 country code such as US",
                               code="DOMICILE_INVALID")
        client_type = (client_type or "").strip().upper()
        if client_type not in ("INDIVIDUAL", "LEGAL_ENTITY"):
            raise InvalidInput("clientType is INDIVIDUAL or LEGAL_ENTITY", code="CLIENT_TYPE_INVALID")
        checked_lei = check_lei(lei)
        credit = _money(credit_limit, "creditLimit")
        eq = _money(equity, "equity")
        with self.db.tenant_transaction(tenant_id) as session:
            row = session.exec(select(TradingAccount).where(TradingAccount.code == code)).first()
            before = None if row is None else _account_payload(row)
            if row is None:
                row = TradingAccount(tenant_id=tenant_id, code=code, currency=currency, domicile=domicile)
            row.currency, row.domicile = currency, domicile
            row.client_type, row.lei = client_type, checked_lei
            row.name, row.credit_limit, row.equity = name, credit, eq
            row.assessments = sorted({a.strip().upper() for a in assessments if a.strip()})
            row.updated_at = utcnow()
            session.add(row)
            session.flush()
            self.audit.append(session, tenant_id, [AuditEntry(
                "trading.account_changed", row.id, {"before": before, "after": _account_payload(row)},
                user_id)])
        return row

    def controls(self, tenant_id: str) -> TenantControls:
        with self.db.tenant_session(tenant_id) as session:
            return controls_of(load_row(session, tenant_id), tenant_id)

    def set_controls(self, tenant_id: str, user_id: str | None, changes: dict[str, Any], *,
                     cancel_open: bool = True) -> TenantControls:
        """Changes the named fields (others stay); audited with before and after. Switching the
        kill switch on also cancels every open order of the tenant (mass_cancel.kill)."""
        allowed = {"kill_switch", "restricted", "max_order_value", "max_order_quantity", "collar_pct",
                   "collar_pct_by_mic", "max_position", "max_concentration_pct",
                   "throttle_max_orders", "throttle_window_ms", "duplicate_window_ms"}
        unknown = set(changes) - allowed
        if unknown:
            raise InvalidInput(f"unknown controls {sorted(unknown)}", code="CONTROLS_INVALID")
        clean: dict[str, Any] = {}
        for name, value in changes.items():
            if name in ("max_order_value", "max_order_quantity", "max_position",
                        "max_concentration_pct", "collar_pct"):
                clean[name] = None if value is None else _money(value, name, positive=True)
                if name == "collar_pct" and value is None:
                    raise InvalidInput("collarPct cannot be removed", code="CONTROLS_INVALID")
            elif name == "collar_pct_by_mic":
                if value is not None and not isinstance(value, dict):
                    raise InvalidInput("collarPctByMic is an object of MIC to percent",
                                       code="CONTROLS_INVALID")
                clean[name] = {str(k).upper(): _plain(_money(v, name, positive=True))
                               for k, v in (value or {}).items()}
            elif name in ("throttle_max_orders", "throttle_window_ms", "duplicate_window_ms"):
                if value is not None and (not isinstance(value, int) or value < 1):
                    raise InvalidInput(f"{name} must be a whole number above 0", code="CONTROLS_INVALID")
                if value is None and name == "throttle_window_ms":
                    raise InvalidInput("throttleWindowMs cannot be removed", code="CONTROLS_INVALID")
                clean[name] = value
            elif name == "restricted":
                clean[name] = sorted({str(x).strip().upper() for x in value or [] if str(x).strip()})
            elif name == "kill_switch":
                clean[name] = bool(value)
        with self.db.tenant_transaction(tenant_id) as session:
            row = load_row(session, tenant_id)
            before = _controls_payload(controls_of(row, tenant_id))
            if row is None:
                row = ComplianceControlsRow(tenant_id=tenant_id, duplicate_window_ms=DEFAULT_DUPLICATE_MS)
            for name, value in clean.items():
                if name == "restricted":  # account kill switches share the list (controls.py)
                    value = [x for x in value if not x.startswith(ACCOUNT_PREFIX)] + kill_entries(row)
                setattr(row, name, value)
            row.updated_by, row.updated_at = user_id, utcnow()
            row.version = (row.version or 0) + 1
            session.add(row)
            session.flush()
            after = controls_of(row, tenant_id)
            self.audit.append(session, tenant_id, [AuditEntry(
                "compliance.controls_changed", tenant_id,
                {"before": before, "after": _controls_payload(after)}, user_id)])
        if clean.get("kill_switch") and cancel_open:
            mass_cancel.kill(self, tenant_id, user_id)
        return after

    def record_locate(self, tenant_id: str, user_id: str | None, *, account: str, instrument: str,
                      quantity: Any, source: str = "", expires_at: datetime | None = None) -> Locate:
        qty = amount(quantity, "quantity", "QUANTITY_INVALID")
        if expires_at is not None and expires_at.tzinfo is None:
            raise InvalidInput("expiresAt needs its offset", code="INSTANT_NOT_AWARE")
        key = instrument.strip().upper()
        listing = None
        try:
            listing = self.market_data.instrument(key)
        except DomainError:
            matches = [i for i in self.market_data.instruments() if (i.isin or "") == key]
            if not matches:
                raise
            listing = matches[0]
        instrument_key = listing.isin or listing.key
        with self.db.tenant_transaction(tenant_id) as session:
            if session.exec(select(TradingAccount).where(TradingAccount.code == account)).first() is None:
                raise AccountNotFound(f"no trading account {account!r}")
            row = Locate(tenant_id=tenant_id, account=account, instrument_key=instrument_key,
                         quantity=qty, remaining=qty, source=source[:200], expires_at=expires_at,
                         created_by=user_id)
            session.add(row)
            session.flush()
            self.audit.append(session, tenant_id, [AuditEntry(
                "trading.locate_recorded", row.id, {"account": account, "instrument": instrument_key,
                                                    "quantity": _plain(qty), "source": row.source},
                user_id)])
        return row



def _credit_unknown(book: _AccountBook) -> Denial:
    pairs = ", ".join(f"{c}/{book.row.currency}" for c in sorted(book.unvalued))
    return Denial(CREDIT_FX_UNAVAILABLE, "credit", "", f"the credit in use cannot be valued in "
                  f"{book.row.currency}: open orders in {', '.join(sorted(book.unvalued))} and no "
                  f"{pairs} rate", f"a {pairs} rate", "none")


def _local_reject(request: OrderRequest, mic: str) -> ExecutionReport:
    return ExecutionReport(ExecType.REJECTED, OrdStatus.REJECTED, request.client_order_id, "", ZERO,
                           ZERO, ZERO, ZERO, ZERO, ZERO, "the venue connector failed", "CONNECTOR_FAILED",
                           request.submitted_at, exec_id=new_id(), mic=mic)


def _money(value: Any, what: str, *, positive: bool = False) -> Decimal:
    if isinstance(value, float):
        raise InvalidInput(f"{what} must be a decimal string", code="AMOUNT_INVALID")
    try:
        number = Decimal(str(value).strip())
    except (ArithmeticError, ValueError):
        raise InvalidInput(f"{what} {value!r} is not a number", code="AMOUNT_INVALID") from None
    if not number.is_finite() or number < 0 or (positive and number == 0) or number >= Decimal("1e17"):
        raise InvalidInput(f"{what} must be a finite number of at least 0", code="AMOUNT_INVALID")
    return number


def _account_payload(row: TradingAccount) -> dict[str, Any]:
    return {"code": row.code, "currency": row.currency, "client_type": row.client_type,
            "domicile": row.domicile, "lei": row.lei, "credit_limit": _plain(row.credit_limit),
            "equity": _plain(row.equity), "assessments": list(row.assessments)}


def _controls_payload(c: TenantControls) -> dict[str, Any]:
    return {"kill_switch": c.kill_switch, "restricted": sorted(c.restricted),
            "max_order_value": _plain(c.max_order_value), "max_order_quantity": _plain(c.max_order_quantity),
            "collar_pct": _plain(c.collar_pct),
            "collar_pct_by_mic": {k: _plain(v) for k, v in c.collar_pct_by_mic.items()},
            "max_position": _plain(c.max_position), "max_concentration_pct": _plain(c.max_concentration_pct),
            "throttle_max_orders": c.throttle_max_orders,
            "throttle_window_ms": int(c.throttle_window.total_seconds() * 1000),
            "duplicate_window_ms": None if c.duplicate_window is None
            else int(c.duplicate_window.total_seconds() * 1000)}


__all__ = ["OrderInput", "OrderService", "SubmitResult"]
