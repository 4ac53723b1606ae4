"""The tenant's compliance controls: the stored row and the `TenantControls` a check sees.

Kill switches: the tenant's is `kill_switch`; an account's is an entry "ACCOUNT:<code>" in the
row's `restricted` JSON list (no migration: the list is where the tenant's "may not trade"
entries live). `controls_of` leaves those entries out of `restricted` (instrument keys only),
`killed_accounts` reads them, and `controls_for` gives an order of a switched-off account the
controls with the kill switch on, so the same compliance rule (COMPLIANCE_KILL_SWITCH) denies it."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from decimal import Decimal

from sqlmodel import Session, select

from gateway.trading.models import ComplianceControlsRow
from plugins.sdk import TenantControls

ACCOUNT_PREFIX = "ACCOUNT:"  # an account's kill switch, in the row's `restricted` list


def controls_of(row: ComplianceControlsRow | None, tenant_id: str) -> TenantControls:
    if row is None:
        return TenantControls(tenant_id=tenant_id)
    duplicate = (None if row.duplicate_window_ms is None
                 else timedelta(milliseconds=row.duplicate_window_ms))
    return TenantControls(
        tenant_id=tenant_id, kill_switch=row.kill_switch,
        restricted=frozenset(x for x in row.restricted if not x.startswith(ACCOUNT_PREFIX)),
        max_order_value=row.max_order_value, max_order_quantity=row.max_order_quantity,
        collar_pct=row.collar_pct,
        collar_pct_by_mic={k: Decimal(v) for k, v in row.collar_pct_by_mic.items()},
        max_position=row.max_position, max_concentration_pct=row.max_concentration_pct,
        throttle_max_orders=row.throttle_max_orders,
        throttle_window=timedelta(milliseconds=row.throttle_window_ms),
        duplicate_window=duplicate)


def load_row(session: Session, tenant_id: str) -> ComplianceControlsRow | None:
    return session.exec(select(ComplianceControlsRow)
                        .where(ComplianceControlsRow.tenant_id == tenant_id)).first()


def load_controls(session: Session, tenant_id: str) -> TenantControls:
    """The tenant's controls as of `session` (the defaults when it has set none)."""
    return controls_of(load_row(session, tenant_id), tenant_id)


def killed_accounts(row: ComplianceControlsRow | None) -> frozenset[str]:
    """The accounts whose own kill switch is on."""
    if row is None:
        return frozenset()
    return frozenset(x[len(ACCOUNT_PREFIX):] for x in row.restricted if x.startswith(ACCOUNT_PREFIX))


def controls_for(controls: TenantControls, killed: frozenset[str], account: str) -> TenantControls:
    """The controls an order of `account` is checked against: the kill switch on when the
    account's own is."""
    if account in killed and not controls.kill_switch:
        return replace(controls, kill_switch=True)
    return controls


def kill_entries(row: ComplianceControlsRow | None) -> list[str]:
    """The row's account kill switch entries (kept when the restricted list is replaced)."""
    return [] if row is None else [x for x in row.restricted if x.startswith(ACCOUNT_PREFIX)]


def with_account_switch(row: ComplianceControlsRow, account: str, on: bool) -> None:
    """Switch `account`'s own kill switch on or off in `row`."""
    entry = ACCOUNT_PREFIX + account
    kept = [x for x in row.restricted if x != entry]
    row.restricted = [*kept, entry] if on else kept
