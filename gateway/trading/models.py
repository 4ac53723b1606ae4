"""Tables of the order lifecycle. Every row is tenant-owned; quantities, prices and money are
NUMERIC(28, 10) (`ExactNumeric`, see gateway/fx/models.py for why SQLite needs it).

The regulatory reports read `Order` (trade_order), `Execution` and `Order.routing`: their
column names are a contract.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import JSON, BigInteger, Boolean, Column, Index, UniqueConstraint
from sqlalchemy import text as sql_text
from sqlmodel import Field, SQLModel

from gateway.db import TenantOwned, UTCDateTime, utcnow
from gateway.fx.models import ExactNumeric
from gateway.tenancy.models import new_id


def _decimal(*, nullable: bool = False, default: Any = None) -> Any:
    if nullable:
        return Field(default=default, sa_column=Column(ExactNumeric(10), nullable=True))
    return Field(default=Decimal(0) if default is None else default,
                 sa_column=Column(ExactNumeric(10), nullable=False))


def _stamp() -> Any:
    return Field(default_factory=utcnow, sa_column=Column(UTCDateTime(), nullable=False))


def _instant(nullable: bool = False) -> Any:
    return Field(default=None, sa_column=Column(UTCDateTime(), nullable=nullable))


def _json(default: Any) -> Any:
    return Field(default_factory=default, sa_column=Column(JSON, nullable=False))


class TradingAccount(TenantOwned, table=True):
    """An account orders are placed for: who the client is (for the jurisdictions and MiFID's
    LEI rule) and its credit."""

    __tablename__ = "trading_account"
    __table_args__ = (UniqueConstraint("tenant_id", "code"),)

    id: str = Field(default_factory=new_id, primary_key=True, max_length=36)
    code: str = Field(max_length=64)
    name: str = Field(default="", max_length=200)
    currency: str = Field(max_length=3)
    client_type: str = Field(default="INDIVIDUAL", max_length=16)  # INDIVIDUAL | LEGAL_ENTITY
    domicile: str = Field(max_length=2)  # ISO 3166-1 alpha-2
    lei: str | None = Field(default=None, max_length=20)
    credit_limit: Decimal = _decimal()
    equity: Decimal = _decimal()
    assessments: list[str] = _json(list)
    created_at: datetime = _stamp()
    updated_at: datetime = _stamp()


class Order(TenantOwned, table=True):
    __tablename__ = "trade_order"
    __table_args__ = (
        UniqueConstraint("tenant_id", "client_order_id"),  # the idempotency key
        Index("ix_trade_order_tenant_created", "tenant_id", "created_at"),
        Index("ix_trade_order_tenant_account_created", "tenant_id", "account", "created_at"),
    )

    # No index of its own (migration 0025): the indexes above all lead with tenant_id.
    tenant_id: str = Field(foreign_key="tenant.id", max_length=36)
    id: str = Field(default_factory=new_id, primary_key=True, max_length=36)
    client_order_id: str = Field(max_length=64)
    account: str = Field(max_length=64)
    symbol: str = Field(max_length=32)
    isin: str | None = Field(default=None, max_length=12)
    mic: str = Field(default="", max_length=4)  # the venue chosen
    requested_mic: str = Field(default="SMART", max_length=5)
    connector: str = Field(default="", max_length=64)
    side: str = Field(max_length=10)
    ord_type: str = Field(max_length=10)
    time_in_force: str = Field(max_length=3)
    quantity: Decimal = _decimal()
    limit_price: Decimal | None = _decimal(nullable=True)
    stop_price: Decimal | None = _decimal(nullable=True)
    currency: str = Field(max_length=3)
    expire_at: datetime | None = _instant(nullable=True)
    status: str = Field(default="NEW", max_length=16)
    cum_qty: Decimal = _decimal()
    leaves_qty: Decimal = _decimal()
    avg_px: Decimal = _decimal()
    fees: Decimal = _decimal()
    venue_order_id: str | None = Field(default=None, max_length=64)
    reject_code: str | None = Field(default=None, max_length=64)
    reject_text: str | None = Field(default=None, max_length=500)
    # The router's decision and alternatives, and the arrival price (reference at submission).
    routing: dict[str, Any] = _json(dict)
    created_by: str | None = Field(default=None, max_length=36)
    created_at: datetime = _stamp()
    updated_at: datetime = _stamp()
    version: int = Field(default=1)


class Execution(TenantOwned, table=True):
    """One fill of one order (an ExecutionReport with ExecType TRADE)."""

    __tablename__ = "execution"
    __table_args__ = (UniqueConstraint("order_id", "exec_id"),
                      Index("ix_execution_tenant_created", "tenant_id", "created_at"))

    id: str = Field(default_factory=new_id, primary_key=True, max_length=36)
    order_id: str = Field(foreign_key="trade_order.id", index=True, max_length=36)
    exec_id: str = Field(max_length=64)
    match_id: str | None = Field(default=None, max_length=64)
    account: str = Field(max_length=64)
    symbol: str = Field(max_length=32)
    side: str = Field(max_length=10)
    last_qty: Decimal = _decimal()
    last_px: Decimal = _decimal()
    fee: Decimal = _decimal()
    currency: str = Field(max_length=3)
    liquidity: str | None = Field(default=None, max_length=8)  # ADDED | REMOVED
    mic: str = Field(max_length=4)
    at: datetime = _instant()
    created_at: datetime = _stamp()
    # Its TRADE event's place in the tenant's order stream (OrderEvent.stream_seq): execution
    # order when fills share a transact time. 0: recorded before migration 0023.
    stream_seq: int = Field(default=0, sa_column=Column(BigInteger, nullable=False,
                                                         server_default=sql_text("0")))


class OrderEvent(TenantOwned, table=True):
    """Each change of an order, in order: `seq` per order (1, 2, 3 …, no gaps) and
    `stream_seq` across the tenant's orders (the drop copy's cursor: gateway/trading/stream.py).
    A fill's `last_qty`, `last_px` and `exec_id` are its execution's."""

    __tablename__ = "order_event"
    __table_args__ = (UniqueConstraint("order_id", "seq"),
                      UniqueConstraint("tenant_id", "stream_seq", name="uq_order_event_tenant_stream"))

    id: str = Field(default_factory=new_id, primary_key=True, max_length=36)
    order_id: str = Field(foreign_key="trade_order.id", index=True, max_length=36)
    seq: int
    event: str = Field(max_length=20)  # states.OrderEvent
    exec_type: str | None = Field(default=None, max_length=12)  # FIX ExecType, when from a venue
    status_from: str = Field(max_length=16)
    status_to: str = Field(max_length=16)
    cum_qty: Decimal = _decimal()
    leaves_qty: Decimal = _decimal()
    code: str | None = Field(default=None, max_length=64)
    text: str = Field(default="", max_length=500)
    at: datetime = _instant()
    stream_seq: int = Field(sa_column=Column(BigInteger, nullable=False))
    # None on rows before migration 0023 (and last_* on anything but a fill).
    last_qty: Decimal | None = _decimal(nullable=True)
    last_px: Decimal | None = _decimal(nullable=True)
    avg_px: Decimal | None = _decimal(nullable=True)
    exec_id: str | None = Field(default=None, max_length=64)


class OrderStreamHead(SQLModel, table=True):
    """The last position handed out in a tenant's order stream. Not tenant-owned: a count. Its
    row lock, held to commit, makes positions follow commit order (gateway/trading/stream.py)."""

    __tablename__ = "order_stream_head"

    tenant_id: str = Field(primary_key=True, max_length=36)
    last_seq: int = Field(default=0, sa_column=Column(BigInteger, nullable=False))


class AccountPosition(TenantOwned, table=True):
    """What an account holds of an instrument, from its fills (negative: short)."""

    __tablename__ = "account_position"
    __table_args__ = (UniqueConstraint("tenant_id", "account", "instrument_key"),)

    id: str = Field(default_factory=new_id, primary_key=True, max_length=36)
    account: str = Field(max_length=64)
    instrument_key: str = Field(max_length=64)  # ISIN, else SYMBOL.MIC
    symbol: str = Field(max_length=32)
    mic: str = Field(max_length=4)  # of the last fill
    currency: str = Field(max_length=3)
    quantity: Decimal = _decimal()
    avg_price: Decimal = _decimal()  # of the open quantity
    realized_pnl: Decimal = _decimal()
    created_at: datetime = _stamp()
    updated_at: datetime = _stamp()


class Locate(TenantOwned, table=True):
    """Shares located or borrowed for short sales (Reg SHO 203(b)(1), EU SSR Art. 12); each
    accepted SELL_SHORT uses `remaining` up."""

    __tablename__ = "locate"
    __table_args__ = (Index("ix_locate_tenant_account", "tenant_id", "account"),)

    id: str = Field(default_factory=new_id, primary_key=True, max_length=36)
    account: str = Field(max_length=64)
    instrument_key: str = Field(max_length=64)
    quantity: Decimal = _decimal()
    remaining: Decimal = _decimal()
    source: str = Field(default="", max_length=200)
    expires_at: datetime | None = _instant(nullable=True)
    created_by: str | None = Field(default=None, max_length=36)
    created_at: datetime = _stamp()


class ComplianceControlsRow(TenantOwned, table=True):
    """The tenant's risk controls (plugins.sdk.TenantControls); no row: the defaults."""

    __tablename__ = "compliance_controls"
    __table_args__ = (UniqueConstraint("tenant_id"),)

    id: str = Field(default_factory=new_id, primary_key=True, max_length=36)
    kill_switch: bool = False
    restricted: list[str] = _json(list)
    max_order_value: Decimal | None = _decimal(nullable=True)
    max_order_quantity: Decimal | None = _decimal(nullable=True)
    collar_pct: Decimal = _decimal(default=Decimal(10))
    collar_pct_by_mic: dict[str, str] = _json(dict)
    max_position: Decimal | None = _decimal(nullable=True)
    max_concentration_pct: Decimal | None = _decimal(nullable=True)
    throttle_max_orders: int | None = None
    throttle_window_ms: int = 1000
    # No Python default: SQLAlchemy would put it in place of an explicit None (guard off);
    # a new row gets 5000 ms from the service.
    duplicate_window_ms: int | None = None
    updated_by: str | None = Field(default=None, max_length=36)
    updated_at: datetime = _stamp()
    version: int = Field(default=1)


class ComplianceDecisionRow(TenantOwned, table=True):
    """Every compliance decision, pass or deny (`Decision.record()`). `record` is stored
    compact (gateway/trading/decisions.py): read it through `decisions.expand`."""

    __tablename__ = "compliance_decision"
    __table_args__ = (Index("ix_compliance_decision_tenant_created", "tenant_id", "created_at"),)

    id: str = Field(default_factory=new_id, primary_key=True, max_length=36)
    order_id: str | None = Field(default=None, foreign_key="trade_order.id", index=True,
                                 max_length=36)
    client_order_id: str = Field(max_length=64)
    account: str = Field(max_length=64)
    passed: bool
    codes: list[str] = _json(list)
    jurisdictions: list[str] = _json(list)
    record: dict[str, Any] = _json(dict)
    # `record` stored compact (decisions.py); False for one stored whole, as before 0027.
    record_compact: bool = Field(default=False, sa_column=Column(
        Boolean, nullable=False, server_default=sql_text("false")))
    elapsed_ns: int = Field(sa_column=Column(BigInteger, nullable=False))
    decided_at: datetime = _instant()
    created_at: datetime = _stamp()


class ComplianceRuleSet(TenantOwned, table=True):
    """The (jurisdiction, rule) list a decision timed, once per tenant, named by its digest: a
    compact decision record keeps the digest and the nanoseconds (gateway/trading/decisions.py).
    Content-addressed, so never updated."""

    __tablename__ = "compliance_rule_set"

    tenant_id: str = Field(foreign_key="tenant.id", primary_key=True, max_length=36)
    id: str = Field(primary_key=True, max_length=32)
    rules: list[list[str]] = _json(list)
    created_at: datetime = _stamp()
