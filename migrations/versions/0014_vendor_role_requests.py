"""vendor role requests: a tenant admin asks for the vendor role, a platform administrator decides

Tenant-owned like every tenant table. At most one PENDING request per tenant: a partial unique
index (SQLite and PostgreSQL both have them). No casbin lines: asking needs "role" "write"
(tenant admins), deciding needs a platform administrator.

Revision ID: 0014
Revises: 0013
"""
from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

import gateway.db

revision: str = '0014'
down_revision: str | None = '0013'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

PENDING_ONLY = sa.text("status = 'PENDING'")


def upgrade() -> None:
    op.create_table('vendor_role_request',
    sa.Column('tenant_id', sqlmodel.sql.sqltypes.AutoString(length=36), nullable=False),
    sa.Column('id', sqlmodel.sql.sqltypes.AutoString(length=36), nullable=False),
    sa.Column('user_id', sqlmodel.sql.sqltypes.AutoString(length=36), nullable=False),
    sa.Column('reason', sqlmodel.sql.sqltypes.AutoString(length=2000), nullable=False),
    sa.Column('status', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
    sa.Column('requested_by', sqlmodel.sql.sqltypes.AutoString(length=36), nullable=False),
    sa.Column('created_at', gateway.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('decided_by', sqlmodel.sql.sqltypes.AutoString(length=36), nullable=True),
    sa.Column('decided_at', gateway.db.UTCDateTime(timezone=True), nullable=True),
    sa.Column('note', sqlmodel.sql.sqltypes.AutoString(length=2000), nullable=True),
    sa.ForeignKeyConstraint(['tenant_id'], ['tenant.id'], ),
    sa.ForeignKeyConstraint(['user_id'], ['user.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('vendor_role_request', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_vendor_role_request_tenant_id'), ['tenant_id'],
                              unique=False)
        batch_op.create_index('ix_vendor_role_request_tenant_created',
                              ['tenant_id', 'created_at', 'id'], unique=False)
        batch_op.create_index('ix_vendor_role_request_status_created',
                              ['status', 'created_at', 'id'], unique=False)
        batch_op.create_index('ux_vendor_role_request_pending', ['tenant_id'], unique=True,
                              sqlite_where=PENDING_ONLY, postgresql_where=PENDING_ONLY)


def downgrade() -> None:
    with op.batch_alter_table('vendor_role_request', schema=None) as batch_op:
        batch_op.drop_index('ux_vendor_role_request_pending')
        batch_op.drop_index('ix_vendor_role_request_status_created')
        batch_op.drop_index('ix_vendor_role_request_tenant_created')
        batch_op.drop_index(batch_op.f('ix_vendor_role_request_tenant_id'))
    op.drop_table('vendor_role_request')
