"""An installed connector's execution reports, checked before the order state machine sees them.

A built-in connector is the project's own code; an installed one is a vendor's, in a sandbox,
and what it answers is data from outside. Its reports must concern this tenant's orders sent
to this connector, and tell a story a venue can tell: quantities that add up, a fill inside the
order's limit and never past its quantity, an average price that is the fills' average, a
terminal status with nothing left. A report that does not is refused with
CONNECTOR_REPORT_INVALID naming the plugin and why:

- on `submit`: the order is rejected with that code (nothing of the refused reports is written)
  after asking the connector to cancel it, so the venue does not keep an order the gateway
  has given up on;
- on `cancel` and `replace`: the request answers that code and the order stays as it was;
- on the clock: that report and every later one for the same order in the round are dropped
  (logged, naming the plugin); the order's other reports and other orders are applied.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from decimal import Decimal
from typing import Any

from gateway.errors import DomainError
from plugins.sdk import ExecType, ExecutionReport, OrderRequest, OrdStatus, Side, VenueQuote

log = logging.getLogger(__name__)

ZERO = Decimal(0)
AVG_TOLERANCE = Decimal("1e-6")  # relative: a venue may round its average price
MAX_ID = 64  # the order and execution rows' identifier and code columns
TERMINAL = frozenset({OrdStatus.FILLED, OrdStatus.CANCELED, OrdStatus.REJECTED, OrdStatus.EXPIRED})
_DECIMALS = ("last_qty", "last_px", "cum_qty", "leaves_qty", "avg_px", "fee")


class ReportInvalid(DomainError):
    code = "CONNECTOR_REPORT_INVALID"
    http_status = 502

    def __init__(self, plugin: str, order_id: str, problem: str) -> None:
        super().__init__(f"exchange connector {plugin} answered an invalid execution report for "
                         f"order {order_id}: {problem}",
                         details={"plugin": plugin, "orderId": order_id, "problem": problem})
        self.plugin = plugin
        self.problem = problem


@dataclass(frozen=True)
class OrderState:
    """What the gateway holds of an order, as far as its reports must agree with it."""

    id: str
    tenant_id: str
    connector: str
    side: str
    quantity: Decimal
    limit_price: Decimal | None
    cum_qty: Decimal
    avg_px: Decimal
    status: str
    exec_ids: frozenset[str] = frozenset()  # its executions so far: a fill's id is new


OrderStates = Callable[[str, Sequence[str]], Mapping[str, OrderState]]  # (tenant, ids) -> by id


def _text_problem(report: ExecutionReport) -> str | None:
    """Text the order and execution rows hold, within their columns."""
    for name in ("exec_id", "venue_order_id", "match_id", "reject_code"):
        value = getattr(report, name)
        if value is not None and (not isinstance(value, str) or len(value) > MAX_ID):
            return f"{name} must be text of at most {MAX_ID} characters"
    if not isinstance(report.text, str) or not isinstance(report.mic, str) or len(report.mic) > 4:
        return "text and mic must be text (a MIC has four characters)"
    if report.liquidity not in (None, "ADDED", "REMOVED"):
        return "liquidity is ADDED, REMOVED or none"
    return None


def problem_of(report: Any, order: OrderState) -> str | None:
    """Why `report` cannot be a true next report of `order`, or None."""
    if not isinstance(report, ExecutionReport):
        return "not an ExecutionReport"
    if not isinstance(report.exec_type, ExecType) or not isinstance(report.ord_status, OrdStatus):
        return "exec_type and ord_status must be the SDK's enums"
    text = _text_problem(report)
    if text is not None:
        return text
    for name in _DECIMALS:
        value = getattr(report, name)
        if not isinstance(value, Decimal) or not value.is_finite():
            return f"{name} must be a finite Decimal"
        if name != "fee" and value < 0:
            return f"{name} is negative"
    if not isinstance(report.at, datetime) or report.at.tzinfo is None:
        return "at must be an aware datetime"
    if report.exec_type is ExecType.REJECTED and report.ord_status is not OrdStatus.REJECTED:
        return None  # a refused cancel or replace: the order stays as it was, nothing to add up
    quantity = order.quantity  # after a REPLACED report, the quantity the replace asked for
    if report.exec_type is ExecType.TRADE:
        if report.last_qty <= 0 or report.last_px <= 0:
            return "a fill has a positive quantity and price"
        if report.exec_id and report.exec_id in order.exec_ids:
            return f"exec_id {report.exec_id} was already reported for this order"
        if report.cum_qty != order.cum_qty + report.last_qty:
            return (f"cum_qty {report.cum_qty} is not the {order.cum_qty} filled before plus "
                    f"this fill's {report.last_qty}")
        if report.cum_qty > quantity:
            return f"fills of {report.cum_qty} exceed the order's {quantity}"
        if order.limit_price is not None and (
                (order.side == str(Side.BUY) and report.last_px > order.limit_price)
                or (order.side != str(Side.BUY) and report.last_px < order.limit_price)):
            return f"a fill at {report.last_px} is outside the order's limit {order.limit_price}"
        expected = (order.cum_qty * order.avg_px + report.last_qty * report.last_px) / report.cum_qty
        if abs(report.avg_px - expected) > expected * AVG_TOLERANCE:
            return f"avg_px {report.avg_px} is not the fills' average {expected.normalize():f}"
        if abs(report.fee) > report.last_qty * report.last_px:
            return "a fee larger than the fill's value"
    else:
        if report.last_qty != 0 or report.last_px != 0:
            return "only a TRADE report carries last_qty and last_px"
        if report.cum_qty != order.cum_qty:
            return f"cum_qty moved from {order.cum_qty} to {report.cum_qty} without a fill"
        if report.fee != 0:
            return "only a TRADE report carries a fee"
    if report.ord_status in TERMINAL:
        if report.leaves_qty != 0:
            return f"a {report.ord_status} order has nothing left, not {report.leaves_qty}"
        if report.ord_status is OrdStatus.FILLED and report.cum_qty != quantity:
            return f"FILLED at {report.cum_qty} of {quantity}"
    elif report.cum_qty + report.leaves_qty != quantity:
        return f"cum_qty + leaves_qty is {report.cum_qty + report.leaves_qty}, not the order's {quantity}"
    return None


def advanced(order: OrderState, report: ExecutionReport) -> OrderState:
    """The order as the next report in the same round must find it."""
    if report.exec_type is ExecType.REJECTED and report.ord_status is not OrdStatus.REJECTED:
        return order
    exec_ids = order.exec_ids | {report.exec_id} if report.exec_type is ExecType.TRADE else order.exec_ids
    return replace(order, cum_qty=report.cum_qty, avg_px=report.avg_px, status=str(report.ord_status),
                   exec_ids=exec_ids)


class VettedConnector:
    """An installed connector whose answers are vetted (see the module's docstring)."""

    def __init__(self, connector: Any, plugin: str, tenant_id: str, states: OrderStates) -> None:
        self.inner = connector
        self.plugin = plugin
        self.tenant_id = tenant_id
        self.name = connector.name
        self._states = states

    def mics(self) -> list[str]:
        return self.inner.mics()

    def quote_for(self, order: OrderRequest) -> VenueQuote | None:
        return self.inner.quote_for(order)

    def venues(self) -> Any:
        return self.inner.venues()

    def submit(self, order: OrderRequest) -> list[ExecutionReport]:
        reports = self.inner.submit(order)
        state = OrderState(order.client_order_id, self.tenant_id, self.name, str(order.side), order.quantity,
                           order.limit_price, ZERO, ZERO, str(OrdStatus.PENDING_NEW))
        try:
            if not isinstance(reports, list):
                raise ReportInvalid(self.plugin, order.client_order_id, "submit() answers a list")
            for report in reports:
                self._check(report, state, order.client_order_id)
                state = advanced(state, report)
        except ReportInvalid as invalid:
            self._withdraw(order)
            return [self._rejected(order, invalid)]
        return reports

    def cancel(self, client_order_id: str, mic: str) -> ExecutionReport:
        report = self.inner.cancel(client_order_id, mic)
        self._check(report, self._state(client_order_id), client_order_id)
        return report

    def replace(self, client_order_id: str, mic: str, quantity: Decimal,
                limit_price: Decimal | None) -> list[ExecutionReport]:
        reports = self.inner.replace(client_order_id, mic, quantity, limit_price)
        if not isinstance(reports, list):
            raise ReportInvalid(self.plugin, client_order_id, "replace() answers a list")
        state = self._state(client_order_id)
        for report in reports:
            if getattr(report, "exec_type", None) is ExecType.REPLACED:  # from here on, the new terms
                state = replace(state, quantity=quantity,
                                limit_price=limit_price if limit_price is not None else state.limit_price)
            self._check(report, state, client_order_id)
            state = advanced(state, report)
        return reports

    def on_clock(self, at: datetime) -> list[ExecutionReport]:
        reports = self.inner.on_clock(at)
        ids = list(dict.fromkeys(getattr(r, "client_order_id", "") for r in reports))
        known = dict(self._states(self.tenant_id, [i for i in ids if isinstance(i, str)])) if ids else {}
        spoiled: set[str] = set()
        kept: list[ExecutionReport] = []
        for report in reports:
            order_id = str(getattr(report, "client_order_id", ""))
            state = known.get(order_id)
            problem = "an order this connector does not hold for this tenant" \
                if state is None or state.connector != self.name else None
            if problem is None and order_id not in spoiled:
                assert state is not None
                problem = self._problem(report, state)
            if problem is not None or order_id in spoiled:
                spoiled.add(order_id)
                log.error("installed connector's execution report refused",
                          extra={"plugin": self.plugin, "tenant_id": self.tenant_id,
                                 "order_id": order_id[:64],
                                 "problem": problem or "an earlier report was refused"})
                continue
            assert state is not None
            known[order_id] = advanced(state, report)
            kept.append(report)
        return kept

    # --
    def _state(self, order_id: str) -> OrderState:
        state = self._states(self.tenant_id, [order_id]).get(order_id)
        if state is None or state.connector != self.name:
            raise ReportInvalid(self.plugin, order_id, "an order this connector does not hold")
        return state

    def _check(self, report: Any, state: OrderState, order_id: str) -> None:
        if getattr(report, "client_order_id", None) != order_id:
            raise ReportInvalid(self.plugin, order_id, "a report for another order")
        problem = self._problem(report, state)
        if problem is not None:
            raise ReportInvalid(self.plugin, order_id, problem)

    def _problem(self, report: Any, state: OrderState) -> str | None:
        mic = getattr(report, "mic", "")
        if isinstance(mic, str) and mic and mic not in self.mics():
            return f"a report from {mic[:8]}, a venue this connector does not reach"
        return problem_of(report, state)

    def _withdraw(self, order: OrderRequest) -> None:
        try:
            self.inner.cancel(order.client_order_id, order.mic)
        except Exception:  # the order is rejected here whatever the venue says
            log.warning("could not withdraw an order after an invalid report",
                        extra={"plugin": self.plugin, "order_id": order.client_order_id})

    def _rejected(self, order: OrderRequest, invalid: ReportInvalid) -> ExecutionReport:
        log.error("installed connector's execution report refused",
                  extra={"plugin": self.plugin, "tenant_id": self.tenant_id,
                         "order_id": order.client_order_id, "problem": invalid.problem})
        return ExecutionReport(ExecType.REJECTED, OrdStatus.REJECTED, order.client_order_id, "", ZERO, ZERO,
                               ZERO, ZERO, ZERO, ZERO, str(invalid)[:500], ReportInvalid.code,
                               order.submitted_at, mic=order.mic)
