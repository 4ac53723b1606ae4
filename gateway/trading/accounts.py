"""Trading accounts, the tenant's compliance controls (kill switch, limits, throttle) and
locates (borrowable shares a short sale needs): each change validated, written and audited
with before and after."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from sqlmodel import col, select

from gateway.audit import AuditEntry
from gateway.compliance.iso import is_country, is_currency
from gateway.db import utcnow
from gateway.errors import DomainError, InvalidInput
from gateway.pagination import Page
from gateway.trading import mass_cancel
from gateway.trading.common import DEFAULT_DUPLICATE_MS, AccountNotFound, _plain
from gateway.trading.controls import ACCOUNT_PREFIX, controls_of, kill_entries, load_row
from gateway.trading.desk import instrument_keys
from gateway.trading.intake import amount, check_lei
from gateway.trading.models import ComplianceControlsRow, Locate, TradingAccount
from plugins.sdk import TenantControls

if TYPE_CHECKING:
    from gateway.trading.service import OrderService


def accounts(service: OrderService, tenant_id: str) -> list[TradingAccount]:
    with service.db.tenant_session(tenant_id) as session:
        return list(session.exec(select(TradingAccount).order_by(col(TradingAccount.code))))


def upsert_account(service: OrderService, tenant_id: str, user_id: str | None, *, code: str, currency: str,
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
    with service.db.tenant_transaction(tenant_id) as session:
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
        service.audit.append(session, tenant_id, [AuditEntry(
            "trading.account_changed", row.id, {"before": before, "after": _account_payload(row)},
            user_id)])
    return row


def controls(service: OrderService, tenant_id: str) -> TenantControls:
    with service.db.tenant_session(tenant_id) as session:
        return controls_of(load_row(session, tenant_id), tenant_id)


def set_controls(service: OrderService, tenant_id: str, user_id: str | None, changes: dict[str, Any], *,
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
    with service.db.tenant_transaction(tenant_id) as session:
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
        service.audit.append(session, tenant_id, [AuditEntry(
            "compliance.controls_changed", tenant_id,
            {"before": before, "after": _controls_payload(after)}, user_id)])
    if clean.get("kill_switch") and cancel_open:
        mass_cancel.kill(service, tenant_id, user_id)
    return after


def record_locate(service: OrderService, tenant_id: str, user_id: str | None, *, account: str,
                  instrument: str, quantity: Any, source: str = "", expires_at: datetime | None = None
                  ) -> Locate:
    qty = amount(quantity, "quantity", "QUANTITY_INVALID")
    if expires_at is not None and expires_at.tzinfo is None:
        raise InvalidInput("expiresAt needs its offset", code="INSTANT_NOT_AWARE")
    key = instrument.strip().upper()
    listing = None
    try:
        listing = service.market_data.instrument(key)
    except DomainError:
        matches = [i for i in service.market_data.instruments() if (i.isin or "") == key]
        if not matches:
            raise
        listing = matches[0]
    instrument_key = listing.isin or listing.key
    with service.db.tenant_transaction(tenant_id) as session:
        if session.exec(select(TradingAccount).where(TradingAccount.code == account)).first() is None:
            raise AccountNotFound(f"no trading account {account!r}")
        row = Locate(tenant_id=tenant_id, account=account, instrument_key=instrument_key,
                     quantity=qty, remaining=qty, source=source[:200], expires_at=expires_at,
                     created_by=user_id)
        session.add(row)
        session.flush()
        service.audit.append(session, tenant_id, [AuditEntry(
            "trading.locate_recorded", row.id, {"account": account, "instrument": instrument_key,
                                                "quantity": _plain(qty), "source": row.source},
            user_id)])
    return row


def locates(service: OrderService, tenant_id: str, *, account: str | None = None,
            instrument: str | None = None, active_only: bool = False, first: int = 20,
            after: str | None = None) -> Page[Locate]:
    """The tenant's locates, newest first (keyset pages): of one account, of one instrument
    (SYMBOL.MIC or ISIN: a locate is stored under the listing's ISIN, else its key, as
    record_locate keys it), and with `active_only` those a short sale could still use now."""
    keys = instrument_keys(service, instrument) if instrument is not None else None
    return service.queries.locates(tenant_id, account=account,
                                   instrument_keys=sorted(keys) if keys else None,
                                   active_at=service.markets.now() if active_only else None,
                                   first=first, after=after)


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
