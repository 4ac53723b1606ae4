"""trade_order loses its single-column tenant_id index

`ix_trade_order_tenant_id` was redundant: the unique (tenant_id, client_order_id) index, and the
(tenant_id, created_at) and (tenant_id, account, created_at) ones, all lead with tenant_id, so
they serve any look-up by tenant alone. Worse, until ANALYZE the planner took it for a fresh
tenant's ClOrdID look-ups and scanned every order of the tenant; and each order's insert
maintained one index more.

Revision ID: 0025
Revises: 0024
"""
from collections.abc import Sequence

from alembic import op

revision: str = '0025'
down_revision: str | None = '0024'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('trade_order', schema=None) as batch_op:
        batch_op.drop_index('ix_trade_order_tenant_id')


def downgrade() -> None:
    with op.batch_alter_table('trade_order', schema=None) as batch_op:
        batch_op.create_index('ix_trade_order_tenant_id', ['tenant_id'], unique=False)
