"""a tenant's own market data files, uploaded through the API

`tenant_data_file`: one row per tenant and file name (CSV or Parquet in the file source's
layout), its bytes and digest. Tenant-owned like every tenant table; no casbin lines (the
"plugin_install" object's permissions apply: the files feed the tenant's built-in file source).

Revision ID: 0018
Revises: 0017
"""
from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

import gateway.db

revision: str = '0018'
down_revision: str | None = '0017'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('tenant_data_file',
    sa.Column('tenant_id', sqlmodel.sql.sqltypes.AutoString(length=36), nullable=False),
    sa.Column('id', sqlmodel.sql.sqltypes.AutoString(length=36), nullable=False),
    sa.Column('name', sqlmodel.sql.sqltypes.AutoString(length=100), nullable=False),
    sa.Column('sha256', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('size', sa.Integer(), nullable=False),
    sa.Column('instruments', sa.Integer(), nullable=False),
    sa.Column('bars', sa.Integer(), nullable=False),
    sa.Column('content', sa.LargeBinary(), nullable=False),
    sa.Column('created_by', sqlmodel.sql.sqltypes.AutoString(length=36), nullable=True),
    sa.Column('created_at', gateway.db.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['tenant_id'], ['tenant.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('tenant_id', 'name')
    )
    with op.batch_alter_table('tenant_data_file', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_tenant_data_file_tenant_id'), ['tenant_id'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('tenant_data_file', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_tenant_data_file_tenant_id'))
    op.drop_table('tenant_data_file')
