"""What the order service's modules share: its bus topics, its errors, the submit answer, the
order tables as Core objects (bulk reads and writes) and a few constants."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import bindparam, update

from gateway.audit.chain import plain_decimal
from gateway.compliance.engine import Decision
from gateway.errors import DomainError, InvalidInput, NotFound
from gateway.trading import states
from gateway.trading.models import (
    AccountPosition,
    ComplianceDecisionRow,
    Execution,
    Order,
    OrderEvent,
)
from gateway.trading.states import OrderStatus
from plugins.sdk import Side

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


def _plain(value: Any) -> Any:
    return plain_decimal(value) if isinstance(value, Decimal) else value
