"""The tenant's compliance controls: the stored row and the `TenantControls` a check sees."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

from sqlmodel import Session, select

from gateway.trading.models import ComplianceControlsRow
from plugins.sdk import TenantControls


def controls_of(row: ComplianceControlsRow | None, tenant_id: str) -> TenantControls:
    if row is None:
        return TenantControls(tenant_id=tenant_id)
    duplicate = (None if row.duplicate_window_ms is None
                 else timedelta(milliseconds=row.duplicate_window_ms))
    return TenantControls(
        tenant_id=tenant_id, kill_switch=row.kill_switch, restricted=frozenset(row.restricted),
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
