"""defi accounts: lending actions, strategy vaults and the event cursor (issue 8, lending)

The casbin object "defi" and its role permissions come with 0012.

Revision ID: 0013
Revises: 0012
"""
from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

import gateway.db
import gateway.defi.lending_models

revision: str = '0013'
down_revision: str | None = '0012'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('defi_lending_action',
    sa.Column('tenant_id', sqlmodel.sql.sqltypes.AutoString(length=36), nullable=False),
    sa.Column('id', sqlmodel.sql.sqltypes.AutoString(length=36), nullable=False),
    sa.Column('chain_id', sa.BigInteger(), nullable=False),
    sa.Column('action', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
    sa.Column('account', sqlmodel.sql.sqltypes.AutoString(length=42), nullable=False),
    sa.Column('pool', sqlmodel.sql.sqltypes.AutoString(length=42), nullable=False),
    sa.Column('token', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
    sa.Column('token_address', sqlmodel.sql.sqltypes.AutoString(length=42), nullable=False),
    sa.Column('amount', gateway.defi.lending_models.DecimalText(), nullable=False),
    sa.Column('health_factor_before', gateway.defi.lending_models.DecimalText(), nullable=True),
    sa.Column('health_factor_after', gateway.defi.lending_models.DecimalText(), nullable=True),
    sa.Column('tx_hashes', sa.JSON(), nullable=False),
    sa.Column('status', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
    sa.Column('block_number', sa.BigInteger(), nullable=True),
    sa.Column('idempotency_key', sqlmodel.sql.sqltypes.AutoString(length=128), nullable=True),
    sa.Column('created_by', sqlmodel.sql.sqltypes.AutoString(length=36), nullable=True),
    sa.Column('created_at', gateway.db.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['tenant_id'], ['tenant.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('tenant_id', 'idempotency_key')
    )
    with op.batch_alter_table('defi_lending_action', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_defi_lending_action_tenant_id'), ['tenant_id'], unique=False)
        batch_op.create_index('ix_defi_lending_action_tenant_created',
                              ['tenant_id', 'created_at', 'id'], unique=False)

    op.create_table('defi_vault',
    sa.Column('tenant_id', sqlmodel.sql.sqltypes.AutoString(length=36), nullable=False),
    sa.Column('id', sqlmodel.sql.sqltypes.AutoString(length=36), nullable=False),
    sa.Column('chain_id', sa.BigInteger(), nullable=False),
    sa.Column('address', sqlmodel.sql.sqltypes.AutoString(length=42), nullable=False),
    sa.Column('asset', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
    sa.Column('asset_address', sqlmodel.sql.sqltypes.AutoString(length=42), nullable=False),
    sa.Column('owner', sqlmodel.sql.sqltypes.AutoString(length=42), nullable=False),
    sa.Column('strategy', sqlmodel.sql.sqltypes.AutoString(length=42), nullable=True),
    sa.Column('timelock_seconds', sa.Integer(), nullable=False),
    sa.Column('tx_hashes', sa.JSON(), nullable=False),
    sa.Column('status', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
    sa.Column('job_id', sqlmodel.sql.sqltypes.AutoString(length=36), nullable=True),
    sa.Column('created_by', sqlmodel.sql.sqltypes.AutoString(length=36), nullable=True),
    sa.Column('created_at', gateway.db.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['job_id'], ['job.id'], ),
    sa.ForeignKeyConstraint(['tenant_id'], ['tenant.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('defi_vault', schema=None) as batch_op:
        batch_op.create_index('ix_defi_vault_chain_address', ['chain_id', 'address'], unique=False)
        batch_op.create_index(batch_op.f('ix_defi_vault_job_id'), ['job_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_defi_vault_tenant_id'), ['tenant_id'], unique=False)
        batch_op.create_index('ix_defi_vault_tenant_created', ['tenant_id', 'created_at', 'id'],
                              unique=False)

    op.create_table('defi_event_cursor',
    sa.Column('chain_id', sa.BigInteger(), autoincrement=False, nullable=False),
    sa.Column('genesis_hash', sqlmodel.sql.sqltypes.AutoString(length=66), nullable=False),
    sa.Column('last_block', sa.BigInteger(), nullable=False),
    sa.Column('updated_at', gateway.db.UTCDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('chain_id')
    )


def downgrade() -> None:
    op.drop_table('defi_event_cursor')
    with op.batch_alter_table('defi_vault', schema=None) as batch_op:
        batch_op.drop_index('ix_defi_vault_tenant_created')
        batch_op.drop_index(batch_op.f('ix_defi_vault_tenant_id'))
        batch_op.drop_index(batch_op.f('ix_defi_vault_job_id'))
        batch_op.drop_index('ix_defi_vault_chain_address')
    op.drop_table('defi_vault')
    with op.batch_alter_table('defi_lending_action', schema=None) as batch_op:
        batch_op.drop_index('ix_defi_lending_action_tenant_created')
        batch_op.drop_index(batch_op.f('ix_defi_lending_action_tenant_id'))
    op.drop_table('defi_lending_action')
