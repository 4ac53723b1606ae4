"""the order stream: drop-copy grade order updates (issue 17)

- `order_event.stream_seq`: each transition's position in its tenant's order stream (1, 2, 3 …,
  no gaps, in commit order: gateway/trading/stream.py), unique per tenant; existing rows are
  numbered by (at, order_id, seq);
- `order_event.last_qty`, `last_px`, `avg_px`, `exec_id`: a fill's quantity, price and
  execution id, and the average price after each transition (None on existing rows);
- `execution.stream_seq`: its TRADE event's position, execution order among fills with one
  transact time (0 on existing rows);
- `order_stream_head`: the last position handed out per tenant.

Revision ID: 0023
Revises: 0021
"""
from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = '0023'
down_revision: str | None = '0021'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('order_stream_head',
    sa.Column('tenant_id', sqlmodel.sql.sqltypes.AutoString(length=36), nullable=False),
    sa.Column('last_seq', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('tenant_id')
    )
    with op.batch_alter_table('order_event', schema=None) as batch_op:
        batch_op.add_column(sa.Column('stream_seq', sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column('last_qty', sa.Numeric(precision=28, scale=10), nullable=True))
        batch_op.add_column(sa.Column('last_px', sa.Numeric(precision=28, scale=10), nullable=True))
        batch_op.add_column(sa.Column('avg_px', sa.Numeric(precision=28, scale=10), nullable=True))
        batch_op.add_column(sa.Column('exec_id', sqlmodel.sql.sqltypes.AutoString(length=64),
                                      nullable=True))
    # UPDATE … FROM: PostgreSQL, and SQLite from 3.33.
    op.execute("""
        UPDATE order_event SET stream_seq = numbered.n
        FROM (SELECT id, row_number() OVER (PARTITION BY tenant_id ORDER BY at, order_id, seq) AS n
              FROM order_event) AS numbered
        WHERE numbered.id = order_event.id
    """)
    op.execute("""
        INSERT INTO order_stream_head (tenant_id, last_seq)
        SELECT tenant_id, max(stream_seq) FROM order_event GROUP BY tenant_id
    """)
    with op.batch_alter_table('order_event', schema=None) as batch_op:
        batch_op.alter_column('stream_seq', existing_type=sa.BigInteger(), nullable=False)
        batch_op.create_unique_constraint('uq_order_event_tenant_stream', ['tenant_id', 'stream_seq'])
    with op.batch_alter_table('execution', schema=None) as batch_op:
        batch_op.add_column(sa.Column('stream_seq', sa.BigInteger(), server_default=sa.text('0'),
                                      nullable=False))


def downgrade() -> None:
    with op.batch_alter_table('execution', schema=None) as batch_op:
        batch_op.drop_column('stream_seq')
    with op.batch_alter_table('order_event', schema=None) as batch_op:
        batch_op.drop_constraint('uq_order_event_tenant_stream', type_='unique')
        batch_op.drop_column('exec_id')
        batch_op.drop_column('avg_px')
        batch_op.drop_column('last_px')
        batch_op.drop_column('last_qty')
        batch_op.drop_column('stream_seq')
    op.drop_table('order_stream_head')
