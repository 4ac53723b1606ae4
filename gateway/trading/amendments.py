"""Amend and cancel one order: the request checked (state machine; an amendment through
compliance again, against the account's book without the order's own reservation), sent to the
order's venue, and the venue's answer applied (reports.py) or, refused, answered as
ORDER_VENUE_REFUSED with the order unchanged. Cancelling many orders at once: mass_cancel.py."""

from __future__ import annotations

from decimal import Decimal
from typing import TYPE_CHECKING, Any

from sqlalchemy import update
from sqlmodel import col

from gateway.audit import AuditEntry
from gateway.compliance.engine import deny
from gateway.errors import NotFound
from gateway.trading import states
from gateway.trading.books import (
    _books,
    _credit_unknown,
    _fx_and_lot,
    _listing,
    _reference,
    _release_own,
)
from gateway.trading.common import AccountNotFound, VenueRefused, _plain
from gateway.trading.controls import controls_for, controls_of, killed_accounts, load_row
from gateway.trading.intake import OrderInvalid, amount
from gateway.trading.models import ComplianceDecisionRow, Order
from gateway.trading.reports import _Amendment, _publish
from gateway.trading.states import OrderStatus
from gateway.trading.venue_client import is_remote
from gateway.trading.venues import _at_venue, _scoped_connectors
from plugins.sdk import ExecType, ExecutionReport, InstrumentFacts, OrderRequest, Side

if TYPE_CHECKING:
    from gateway.trading.service import OrderService


def cancel(service: OrderService, tenant_id: str, user_id: str | None, order_id: str) -> Order:
    service.advance()
    order = service.get(tenant_id, order_id)
    states.check_cancelable(OrderStatus(order.status))
    connector = _scoped_connectors(service)[0].get(order.connector)
    if connector is None:
        raise states.OrderNotCancelable("the order's venue connector is gone",
                                        details={"connector": order.connector})
    if is_remote(connector):
        refused = connector.venue.cancel(connector.name, order.id, order.mic)
    else:
        refused = cancel_at_venue(service, connector, order.id, order.mic)
    if refused is not None:
        raise VenueRefused(f"the venue refused the cancel: {refused.text}",
                           details={"venueCode": refused.reject_code})
    _audit_request(service, tenant_id, user_id, "order.cancel_requested", order, {})
    return service.get(tenant_id, order_id)


def cancel_at_venue(service: OrderService, connector: Any, order_id: str, mic: str
                    ) -> ExecutionReport | None:
    """Send the cancel and apply its answer (then publish it); the venue's refusal, if it
    refused. Where the venue is: this process, or the venue process for its connectors."""
    refused: list[ExecutionReport] = []

    def cancel() -> list[ExecutionReport]:
        report = connector.cancel(order_id, mic)
        # A REJECTED answer to a cancel refuses the request (FIX 35=9), whatever OrdStatus
        # the venue put on it: the order stays as it was.
        if report.exec_type is ExecType.REJECTED:
            refused.append(report)
            return []
        return [report]

    _, changed = _at_venue(service, cancel)
    _publish(service.bus, changed)
    return refused[0] if refused else None


def amend(service: OrderService, tenant_id: str, user_id: str | None, order_id: str, *,
          quantity: Any = None, limit_price: Any = None) -> Order:
    service.advance()
    order = service.get(tenant_id, order_id)
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
    now = service.markets.now()
    with service._tenant_locks[tenant_id]:
        with service.db.tenant_session(tenant_id) as session:
            row = load_row(session, tenant_id)
            controls = controls_for(controls_of(row, tenant_id), killed_accounts(row), order.account)
            books = _books(service, session, tenant_id, {order.account}, controls, now)
            # Its reservation as the books just counted it (fills may have come since).
            held = session.get(Order, order.id) or order
        book = books.get(order.account)
        if book is None:
            raise AccountNotFound(f"no trading account {order.account!r}")
        listing = _listing(service, f"{order.symbol}.{order.mic}")
        if listing is None:
            raise NotFound(f"{order.symbol}.{order.mic} is no longer listed", code="INSTRUMENT_UNKNOWN")
        if price is not None and price % listing.tick_size:
            raise OrderInvalid(f"limitPrice {price} is not a multiple of the tick {listing.tick_size}",
                               code="PRICE_OFF_TICK")
        request = OrderRequest(order.id, order.account, order.symbol, order.mic, Side(order.side),
                               order.ord_type, order.time_in_force,  # type: ignore[arg-type]
                               qty - order.cum_qty, price or order.limit_price, order.stop_price,
                               order.currency, order.expire_at, now)
        market, mid = _reference(service, listing.key, now)
        book.fingerprints.clear()  # the order itself is not its own duplicate
        _release_own(book, held, listing)
        fx, lot = _fx_and_lot(service, listing, book, request, mid, now)
        ctx = service.engine.context(
            request, instrument=InstrumentFacts(listing.isin, listing.currency, listing.asset_class),
            client=book.client(), account=book.state(), market=market, controls=controls,
            now=now, fx_rate=fx, tick_size=listing.tick_size, lot_size=lot)
        decision = service.engine.check(ctx)
        if book.unvalued and order.side != str(Side.SELL):  # credit in use unknown: closed
            decision = deny(decision, _credit_unknown(book))
        with service.db.tenant_transaction(tenant_id) as session:
            record = decision.record()
            record["order_id"] = order.id
            record["amend"] = True
            row = {"tenant_id": tenant_id, "order_id": order.id,
                   "client_order_id": order.client_order_id, "account": order.account,
                   "passed": decision.passed, "codes": list(decision.codes),
                   "jurisdictions": list(decision.jurisdictions),
                   "elapsed_ns": decision.elapsed_ns, "decided_at": decision.decided_at}
            stored, rule_set = service.decision_records.compact(row, record)
            service.decision_records.store_rule_sets(session, tenant_id, [rule_set])
            session.add(ComplianceDecisionRow(**row, record=stored,
                                              record_compact=rule_set is not None))
            service.audit.append(session, tenant_id, [AuditEntry("compliance.decision", order.id,
                                                                 record, user_id)])
        if not decision.passed:
            raise decision.error()
    connector = _scoped_connectors(service)[0].get(order.connector)
    if connector is None:
        raise states.OrderNotAmendable("the order's venue connector is gone")
    amendment = _Amendment(order.id, price, AuditEntry(
        "order.amend_requested", order.id,
        {"client_order_id": order.client_order_id, "quantity": _plain(qty),
         "limit_price": _plain(price)}, user_id),
        locate_key=ctx.instrument_key if order.side == str(Side.SELL_SHORT) else None, at=now)
    if is_remote(connector):
        refused = connector.venue.replace(connector.name, tenant_id, order.id, order.mic, qty,
                                          price, amendment)
    else:
        refused = replace_at_venue(service, connector, tenant_id, order.id, order.mic, qty, price,
                                   amendment)
    if refused is not None:
        raise VenueRefused(f"the venue refused the amendment: {refused.text}",
                           details={"venueCode": refused.reject_code})
    return service.get(tenant_id, order_id)


def replace_at_venue(service: OrderService, connector: Any, tenant_id: str, order_id: str,
                     mic: str, qty: Decimal, price: Decimal | None, amendment: _Amendment
                     ) -> ExecutionReport | None:
    """Send the replace and apply its answer with the request (then publish it); the venue's
    refusal, if it refused. Where the venue is: see cancel_at_venue."""
    refused: list[ExecutionReport] = []

    def replace() -> list[ExecutionReport]:
        reports = connector.replace(order_id, mic, qty, price)
        if reports and reports[0].exec_type is ExecType.REJECTED \
                and reports[0].client_order_id == order_id:
            refused.append(reports[0])  # a refused replace (see cancel)
            amendment.refused = True
            return reports[1:]
        return reports

    _, changed = _at_venue(service, replace, amendment)
    if not refused and not amendment.written:
        # The venue took it without a REPLACED report for the order (none applied): the
        # price and the request's record still go together, in one transaction.
        with service.db.tenant_transaction(tenant_id) as session:
            if price is not None:
                session.execute(update(Order).where(col(Order.id) == order_id)
                                .values(limit_price=price))
            service.audit.append(session, tenant_id, [amendment.entry])
    _publish(service.bus, changed)
    return refused[0] if refused else None


def _audit_request(service: OrderService, tenant_id: str, user_id: str | None, kind: str,
                   order: Order, payload: dict[str, Any]) -> None:
    with service.db.tenant_transaction(tenant_id) as session:
        service.audit.append(session, tenant_id, [AuditEntry(
            kind, order.id, {"client_order_id": order.client_order_id, **payload}, user_id)])
