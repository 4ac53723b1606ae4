"""defi markets: tenants' signing keys and swaps (issue 8, AMM)

Also the role permissions on the new casbin object "defi" (a data step, as in 0004): admin
everything; trader read and write (quotes, swaps); compliance_officer and viewer read.

Revision ID: 0012
Revises: 0011
"""
from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

import gateway.db

revision: str = '0012'
down_revision: str | None = '0011'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

PERMISSIONS = [
    ("role:admin", "*", "defi", "*"),
    ("role:trader", "*", "defi", "read"),
    ("role:trader", "*", "defi", "write"),
    ("role:compliance_officer", "*", "defi", "read"),
    ("role:viewer", "*", "defi", "read"),
]

casbin_rule = sa.table(
    "casbin_rule",
    sa.column("ptype", sa.String),
    *(sa.column(f"v{i}", sa.String) for i in range(6)),
)


def upgrade() -> None:
    op.create_table('defi_key',
    sa.Column('tenant_id', sqlmodel.sql.sqltypes.AutoString(length=36), nullable=False),
    sa.Column('id', sqlmodel.sql.sqltypes.AutoString(length=36), nullable=False),
    sa.Column('chain_id', sa.BigInteger(), nullable=False),
    sa.Column('address', sqlmodel.sql.sqltypes.AutoString(length=42), nullable=False),
    sa.Column('sealed_key', sa.Text(), nullable=False),
    sa.Column('created_at', gateway.db.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['tenant_id'], ['tenant.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('tenant_id', 'chain_id')
    )
    with op.batch_alter_table('defi_key', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_defi_key_tenant_id'), ['tenant_id'], unique=False)

    op.create_table('defi_swap',
    sa.Column('tenant_id', sqlmodel.sql.sqltypes.AutoString(length=36), nullable=False),
    sa.Column('id', sqlmodel.sql.sqltypes.AutoString(length=36), nullable=False),
    sa.Column('idempotency_key', sqlmodel.sql.sqltypes.AutoString(length=128), nullable=False),
    sa.Column('chain_id', sa.BigInteger(), nullable=False),
    sa.Column('account', sqlmodel.sql.sqltypes.AutoString(length=42), nullable=False),
    sa.Column('token_in', sqlmodel.sql.sqltypes.AutoString(length=42), nullable=False),
    sa.Column('token_out', sqlmodel.sql.sqltypes.AutoString(length=42), nullable=False),
    sa.Column('amount_in', sqlmodel.sql.sqltypes.AutoString(length=80), nullable=False),
    sa.Column('quoted_out', sqlmodel.sql.sqltypes.AutoString(length=80), nullable=False),
    sa.Column('min_out', sqlmodel.sql.sqltypes.AutoString(length=80), nullable=False),
    sa.Column('amount_out', sqlmodel.sql.sqltypes.AutoString(length=80), nullable=True),
    sa.Column('slippage_bps', sa.Integer(), nullable=False),
    sa.Column('deadline', gateway.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('route', sa.JSON(), nullable=False),
    sa.Column('status', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
    sa.Column('error_code', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True),
    sa.Column('error_message', sqlmodel.sql.sqltypes.AutoString(length=500), nullable=True),
    sa.Column('tx_hashes', sa.JSON(), nullable=False),
    sa.Column('block_number', sa.BigInteger(), nullable=True),
    sa.Column('created_by', sqlmodel.sql.sqltypes.AutoString(length=36), nullable=True),
    sa.Column('created_at', gateway.db.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['tenant_id'], ['tenant.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('tenant_id', 'idempotency_key')
    )
    with op.batch_alter_table('defi_swap', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_defi_swap_tenant_id'), ['tenant_id'], unique=False)
        batch_op.create_index('ix_defi_swap_tenant_created', ['tenant_id', 'created_at', 'id'],
                              unique=False)

    op.bulk_insert(
        casbin_rule,
        [{"ptype": "p", "v0": s, "v1": d, "v2": o, "v3": a, "v4": "", "v5": ""}
         for s, d, o, a in PERMISSIONS],
    )


def downgrade() -> None:
    for s, d, o, a in PERMISSIONS:
        op.execute(
            casbin_rule.delete().where(
                (casbin_rule.c.ptype == "p") & (casbin_rule.c.v0 == s) & (casbin_rule.c.v1 == d)
                & (casbin_rule.c.v2 == o) & (casbin_rule.c.v3 == a)
            )
        )
    with op.batch_alter_table('defi_swap', schema=None) as batch_op:
        batch_op.drop_index('ix_defi_swap_tenant_created')
        batch_op.drop_index(batch_op.f('ix_defi_swap_tenant_id'))
    op.drop_table('defi_swap')
    with op.batch_alter_table('defi_key', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_defi_key_tenant_id'))
    op.drop_table('defi_key')
