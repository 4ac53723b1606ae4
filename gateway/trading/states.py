"""The order state machine: every status an order can have, every event that moves it, and the
one table of legal moves.

    NEW ──COMPLIANCE_PASS──▶ PENDING ──VENUE_NEW──▶ ACCEPTED ──TRADE──▶ PARTIALLY_FILLED ──TRADE──▶ FILLED
     │                        │  ▲ (VENUE_PENDING: queued for the open)   │
     └─COMPLIANCE_DENY─▶ DENIED  └──┘            CANCELED / EXPIRED / REJECTED (by the venue)

FIX names (OrdStatus 39): PENDING is PENDING_NEW (A) and ACCEPTED is NEW (0); DENIED is the
gateway's own (compliance refused it before any venue saw it) and reports as REJECTED (8).

`apply(status, event)` is the only way a status changes (the service never assigns one), and
it raises `IllegalTransition` for a pair the table does not hold, so an illegal move cannot
be written: it is refused before anything is stored. Amend and cancel requests change no
status themselves (the venue's answer does); `check_amendable`/`check_cancelable` say whether
they may be sent at all.
"""

from __future__ import annotations

from enum import StrEnum

from gateway.errors import Conflict
from plugins.sdk import ExecType, ExecutionReport, OrdStatus


class OrderStatus(StrEnum):
    NEW = "NEW"
    PENDING = "PENDING"
    ACCEPTED = "ACCEPTED"
    PARTIALLY_FILLED = "PARTIALLY_FILLED"
    FILLED = "FILLED"
    CANCELED = "CANCELED"
    REJECTED = "REJECTED"
    DENIED = "DENIED"
    EXPIRED = "EXPIRED"

    @property
    def fix(self) -> str:
        return _FIX[self]

    @property
    def is_terminal(self) -> bool:
        return self in TERMINAL

    @property
    def is_open(self) -> bool:
        """At a venue and able to trade or be amended/cancelled."""
        return self in OPEN


class OrderEvent(StrEnum):
    COMPLIANCE_PASS = "COMPLIANCE_PASS"  # the gateway sends it to the venue
    COMPLIANCE_DENY = "COMPLIANCE_DENY"
    VENUE_PENDING = "VENUE_PENDING"  # ExecType PENDING_NEW: queued for the venue's open
    VENUE_NEW = "VENUE_NEW"  # ExecType NEW: on the book (or about to trade)
    PARTIAL_FILL = "PARTIAL_FILL"  # ExecType TRADE, leaves > 0
    FILL = "FILL"  # ExecType TRADE, leaves = 0
    REPLACED = "REPLACED"  # ExecType REPLACED: amended at the venue
    CANCELED = "CANCELED"
    EXPIRED = "EXPIRED"
    REJECTED = "REJECTED"  # the venue refused the order


S, E = OrderStatus, OrderEvent
TERMINAL = frozenset({S.FILLED, S.CANCELED, S.REJECTED, S.DENIED, S.EXPIRED})
OPEN = frozenset({S.PENDING, S.ACCEPTED, S.PARTIALLY_FILLED})
_FIX = {S.NEW: "0", S.PENDING: "A", S.ACCEPTED: "0", S.PARTIALLY_FILLED: "1", S.FILLED: "2",
        S.CANCELED: "4", S.REJECTED: "8", S.DENIED: "8", S.EXPIRED: "C"}

# (from, event) -> to. Nothing else is legal.
TRANSITIONS: dict[tuple[OrderStatus, OrderEvent], OrderStatus] = {
    (S.NEW, E.COMPLIANCE_PASS): S.PENDING,
    (S.NEW, E.COMPLIANCE_DENY): S.DENIED,
    (S.PENDING, E.VENUE_PENDING): S.PENDING,
    (S.PENDING, E.VENUE_NEW): S.ACCEPTED,
    (S.PENDING, E.REJECTED): S.REJECTED,
    (S.PENDING, E.CANCELED): S.CANCELED,  # cancelled while queued, or an IOC/FOK with nothing done
    (S.PENDING, E.EXPIRED): S.EXPIRED,  # a queued GTD whose time passed before the open
    (S.PENDING, E.REPLACED): S.PENDING,
    (S.ACCEPTED, E.PARTIAL_FILL): S.PARTIALLY_FILLED,
    (S.ACCEPTED, E.FILL): S.FILLED,
    (S.ACCEPTED, E.REPLACED): S.ACCEPTED,
    (S.ACCEPTED, E.CANCELED): S.CANCELED,
    (S.ACCEPTED, E.EXPIRED): S.EXPIRED,
    (S.PARTIALLY_FILLED, E.PARTIAL_FILL): S.PARTIALLY_FILLED,
    (S.PARTIALLY_FILLED, E.FILL): S.FILLED,
    (S.PARTIALLY_FILLED, E.REPLACED): S.PARTIALLY_FILLED,
    (S.PARTIALLY_FILLED, E.CANCELED): S.CANCELED,
    (S.PARTIALLY_FILLED, E.EXPIRED): S.EXPIRED,
}


class IllegalTransition(Conflict):
    code = "ORDER_ILLEGAL_TRANSITION"


class OrderNotAmendable(Conflict):
    code = "ORDER_NOT_AMENDABLE"


class OrderNotCancelable(Conflict):
    code = "ORDER_NOT_CANCELABLE"


def apply(status: OrderStatus, event: OrderEvent) -> OrderStatus:
    """The status after `event`; raises IllegalTransition for a move the table lacks."""
    found = TRANSITIONS.get((OrderStatus(status), OrderEvent(event)))
    if found is None:
        raise IllegalTransition(f"an order that is {status} cannot take {event}",
                                details={"status": str(status), "event": str(event)})
    return found


def event_of(report: ExecutionReport) -> OrderEvent | None:
    """The event an execution report carries; None for a refused cancel/replace (FIX 35=9),
    which leaves the order as it was."""
    kind = report.exec_type
    if kind is ExecType.REJECTED:
        return E.REJECTED if report.ord_status is OrdStatus.REJECTED else None
    if kind is ExecType.TRADE:
        return E.FILL if report.leaves_qty == 0 else E.PARTIAL_FILL
    return _BY_EXEC_TYPE[kind]


_BY_EXEC_TYPE = {ExecType.NEW: E.VENUE_NEW, ExecType.PENDING_NEW: E.VENUE_PENDING,
                 ExecType.CANCELED: E.CANCELED, ExecType.EXPIRED: E.EXPIRED,
                 ExecType.REPLACED: E.REPLACED}


def check_amendable(status: OrderStatus) -> None:
    if OrderStatus(status) not in OPEN:
        raise OrderNotAmendable(f"an order that is {status} cannot be amended",
                                details={"status": str(status)})


def check_cancelable(status: OrderStatus) -> None:
    if OrderStatus(status) not in OPEN:
        raise OrderNotCancelable(f"an order that is {status} cannot be cancelled",
                                 details={"status": str(status)})
