"""a tenant's switches for the built-in plugins

`tenant_builtin_plugin`: one row per tenant and built-in plugin it switched (enabled false: its
providers no longer serve that tenant's requests and jobs). Tenant-owned like every tenant
table; no casbin lines (the "plugin_install" object's permissions apply).

Revision ID: 0016
Revises: 0015
"""
from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

import gateway.db

revision: str = '0016'
down_revision: str | None = '0015'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('tenant_builtin_plugin',
    sa.Column('tenant_id', sqlmodel.sql.sqltypes.AutoString(length=36), nullable=False),
    sa.Column('id', sqlmodel.sql.sqltypes.AutoString(length=36), nullable=False),
    sa.Column('plugin', sqlmodel.sql.sqltypes.AutoString(length=100), nullable=False),
    sa.Column('enabled', sa.Boolean(), nullable=False),
    sa.Column('updated_by', sqlmodel.sql.sqltypes.AutoString(length=36), nullable=True),
    sa.Column('updated_at', gateway.db.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['tenant_id'], ['tenant.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('tenant_id', 'plugin')
    )
    with op.batch_alter_table('tenant_builtin_plugin', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_tenant_builtin_plugin_tenant_id'), ['tenant_id'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('tenant_builtin_plugin', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_tenant_builtin_plugin_tenant_id'))
    op.drop_table('tenant_builtin_plugin')
