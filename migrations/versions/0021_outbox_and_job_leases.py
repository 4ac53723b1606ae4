"""the transactional outbox and job leases

- `outbox`: work committed with a domain write and not yet delivered (a job's Dramatiq message,
  an event for the bus); gateway/outbox.py delivers and deletes each row.
- `job.lease_expires_at`: renewed by the heartbeat of the worker running the job; past it, the
  reaper re-queues the job (gateway/jobs/upkeep.py).

Numbered 0021 but applied after 0022 (0020 → 0022 → 0021): the three were written at the same
time, and the chain follows the order they landed in.

Revision ID: 0021
Revises: 0022
"""
from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

import gateway.db

revision: str = '0021'
down_revision: str | None = '0022'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        'outbox',
        sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True,
                  nullable=False),
        sa.Column('kind', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column('key', sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
        sa.Column('payload', sa.JSON(), nullable=False),
        sa.Column('created_at', gateway.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column('available_at', gateway.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column('attempts', sa.Integer(), nullable=False),
        sa.Column('last_error', sqlmodel.sql.sqltypes.AutoString(length=500), nullable=True),
        sa.PrimaryKeyConstraint('id'),
    )
    op.create_index('ix_outbox_kind_key', 'outbox', ['kind', 'key'], unique=False)
    op.create_index('ix_outbox_available_at', 'outbox', ['available_at'], unique=False)
    with op.batch_alter_table('job', schema=None) as batch_op:
        batch_op.add_column(sa.Column('lease_expires_at', gateway.db.UTCDateTime(timezone=True),
                                      nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('job', schema=None) as batch_op:
        batch_op.drop_column('lease_expires_at')
    op.drop_index('ix_outbox_available_at', table_name='outbox')
    op.drop_index('ix_outbox_kind_key', table_name='outbox')
    op.drop_table('outbox')
