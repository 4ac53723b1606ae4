"""The order state machine, exhaustively: every (status, event) pair either moves as the table
says or raises, and the service's report mapping only produces events of the table."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime
from decimal import Decimal as D

import pytest

from gateway.trading import states
from gateway.trading.states import (
    OPEN,
    TERMINAL,
    TRANSITIONS,
    IllegalTransition,
    OrderEvent,
    OrderNotAmendable,
    OrderNotCancelable,
    OrderStatus,
)
from plugins.sdk import ExecType, ExecutionReport, OrdStatus

S, E = OrderStatus, OrderEvent
EXPECTED = {
    (S.NEW, E.COMPLIANCE_PASS): S.PENDING,
    (S.NEW, E.COMPLIANCE_DENY): S.DENIED,
    (S.PENDING, E.VENUE_PENDING): S.PENDING,
    (S.PENDING, E.VENUE_NEW): S.ACCEPTED,
    (S.PENDING, E.REJECTED): S.REJECTED,
    (S.PENDING, E.CANCELED): S.CANCELED,
    (S.PENDING, E.EXPIRED): S.EXPIRED,
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


@pytest.mark.parametrize(("status", "event"), list(itertools.product(OrderStatus, OrderEvent)))
def test_every_status_event_pair(status, event):
    expected = EXPECTED.get((status, event))
    if expected is None:
        with pytest.raises(IllegalTransition) as caught:
            states.apply(status, event)
        assert caught.value.code == "ORDER_ILLEGAL_TRANSITION"
        assert caught.value.details == {"status": str(status), "event": str(event)}
    else:
        assert states.apply(status, event) is expected


def test_the_table_is_exactly_the_expected_one():
    assert TRANSITIONS == EXPECTED
    assert len(list(itertools.product(OrderStatus, OrderEvent))) == 9 * 10


def test_terminal_states_have_no_way_out_and_every_state_is_reachable():
    assert all(from_ not in TERMINAL for from_, _ in TRANSITIONS)
    reachable, frontier = {S.NEW}, [S.NEW]
    while frontier:
        here = frontier.pop()
        for (from_, _), to in TRANSITIONS.items():
            if from_ is here and to not in reachable:
                reachable.add(to)
                frontier.append(to)
    assert reachable == set(OrderStatus)
    assert set(OrderStatus) - TERMINAL - OPEN == {S.NEW}


@pytest.mark.parametrize("status", list(OrderStatus))
def test_amend_and_cancel_only_while_open(status):
    if status in OPEN:
        states.check_amendable(status)
        states.check_cancelable(status)
        return
    with pytest.raises(OrderNotAmendable) as amend:
        states.check_amendable(status)
    with pytest.raises(OrderNotCancelable) as cancel:
        states.check_cancelable(status)
    assert amend.value.code == "ORDER_NOT_AMENDABLE" and cancel.value.code == "ORDER_NOT_CANCELABLE"


def _report(exec_type: ExecType, status: OrdStatus, leaves: str = "0") -> ExecutionReport:
    z = D(0)
    return ExecutionReport(exec_type, status, "c", "v", z, z, z, D(leaves), z, z, "", None,
                           datetime(2025, 1, 1, tzinfo=UTC))


@pytest.mark.parametrize(("exec_type", "ord_status", "leaves", "expected"), [
    (ExecType.NEW, OrdStatus.NEW, "10", E.VENUE_NEW),
    (ExecType.PENDING_NEW, OrdStatus.PENDING_NEW, "10", E.VENUE_PENDING),
    (ExecType.TRADE, OrdStatus.PARTIALLY_FILLED, "4", E.PARTIAL_FILL),
    (ExecType.TRADE, OrdStatus.FILLED, "0", E.FILL),
    (ExecType.CANCELED, OrdStatus.CANCELED, "0", E.CANCELED),
    (ExecType.EXPIRED, OrdStatus.EXPIRED, "0", E.EXPIRED),
    (ExecType.REPLACED, OrdStatus.NEW, "5", E.REPLACED),
    (ExecType.REJECTED, OrdStatus.REJECTED, "0", E.REJECTED),
    # A refused cancel/replace (FIX 35=9) changes nothing.
    (ExecType.REJECTED, OrdStatus.NEW, "10", None),
    (ExecType.REJECTED, OrdStatus.FILLED, "0", None),
])
def test_execution_reports_map_to_events(exec_type, ord_status, leaves, expected):
    assert states.event_of(_report(exec_type, ord_status, leaves)) is expected


def test_fix_status_values():
    assert {s: s.fix for s in OrderStatus} == {
        S.NEW: "0", S.PENDING: "A", S.ACCEPTED: "0", S.PARTIALLY_FILLED: "1", S.FILLED: "2",
        S.CANCELED: "4", S.REJECTED: "8", S.DENIED: "8", S.EXPIRED: "C"}


def test_the_service_changes_status_only_through_apply():
    """Every assignment of a status in the service goes through states.apply (by construction:
    this reads the source of the service and the modules it is split into)."""
    import inspect

    from gateway.trading import accounts, amendments, books, claims, queries, reports, service, venues

    source = "".join(inspect.getsource(m) for m in (service, claims, books, venues, reports,
                                                      amendments, queries, accounts))
    assigns = [line.strip() for line in source.splitlines()
               if ".status = " in line or '["status"] = ' in line]
    assert assigns == ['order["status"] = str(after)']
    assert "after = states.apply(" in source
