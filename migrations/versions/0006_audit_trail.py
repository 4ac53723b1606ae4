"""audit trail

The hash-chained audit trail (gateway/audit/models.py): `audit_record`, one row per record,
keyed by (chain, seq), tenant-owned except the platform chain's rows (tenant_id NULL), and
`audit_head`, the last seq and hash of each chain, whose row appenders lock.

`audit_record` is append-only in the database itself: triggers refuse UPDATE and DELETE (and,
on PostgreSQL, TRUNCATE), whoever connects. Casbin object "audit": admin and compliance_officer
read.

Revision ID: 0006
Revises: 0005
"""
from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

import gateway.db

revision: str = '0006'
down_revision: str | None = '0005'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

PERMISSIONS = [
    ("role:admin", "*", "audit", "read"),
    ("role:compliance_officer", "*", "audit", "read"),
]

casbin_rule = sa.table(
    "casbin_rule",
    sa.column("ptype", sa.String),
    *(sa.column(f"v{i}", sa.String) for i in range(6)),
)

PG_UP = [
    """CREATE FUNCTION audit_record_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
       BEGIN
         RAISE EXCEPTION 'audit_record is append-only: % refused', TG_OP
           USING ERRCODE = 'insufficient_privilege';
       END $$""",
    """CREATE TRIGGER audit_record_no_update BEFORE UPDATE OR DELETE ON audit_record
       FOR EACH ROW EXECUTE FUNCTION audit_record_append_only()""",
    """CREATE TRIGGER audit_record_no_truncate BEFORE TRUNCATE ON audit_record
       FOR EACH STATEMENT EXECUTE FUNCTION audit_record_append_only()""",
]
PG_DOWN = [
    "DROP TRIGGER IF EXISTS audit_record_no_truncate ON audit_record",
    "DROP TRIGGER IF EXISTS audit_record_no_update ON audit_record",
    "DROP FUNCTION IF EXISTS audit_record_append_only()",
]
SQLITE_UP = [
    """CREATE TRIGGER audit_record_no_update BEFORE UPDATE ON audit_record
       BEGIN SELECT RAISE(ABORT, 'audit_record is append-only: UPDATE refused'); END""",
    """CREATE TRIGGER audit_record_no_delete BEFORE DELETE ON audit_record
       BEGIN SELECT RAISE(ABORT, 'audit_record is append-only: DELETE refused'); END""",
]
SQLITE_DOWN = [
    "DROP TRIGGER IF EXISTS audit_record_no_delete",
    "DROP TRIGGER IF EXISTS audit_record_no_update",
]


def upgrade() -> None:
    op.create_table('audit_head',
    sa.Column('chain', sqlmodel.sql.sqltypes.AutoString(length=36), nullable=False),
    sa.Column('last_seq', sa.Integer(), nullable=False),
    sa.Column('last_hash', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.PrimaryKeyConstraint('chain')
    )
    op.create_table('audit_record',
    sa.Column('tenant_id', sqlmodel.sql.sqltypes.AutoString(length=36), nullable=True),
    sa.Column('chain', sqlmodel.sql.sqltypes.AutoString(length=36), nullable=False),
    sa.Column('seq', sa.Integer(), nullable=False),
    sa.Column('at', gateway.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('kind', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('subject', sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
    sa.Column('actor', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True),
    sa.Column('payload', sa.JSON(), nullable=False),
    sa.Column('prev_hash', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('hash', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.ForeignKeyConstraint(['tenant_id'], ['tenant.id'], ),
    sa.PrimaryKeyConstraint('chain', 'seq')
    )
    with op.batch_alter_table('audit_record', schema=None) as batch_op:
        batch_op.create_index('ix_audit_record_chain_at', ['chain', 'at'], unique=False)
        batch_op.create_index('ix_audit_record_chain_kind_seq', ['chain', 'kind', 'seq'], unique=False)
        batch_op.create_index(batch_op.f('ix_audit_record_tenant_id'), ['tenant_id'], unique=False)

    dialect = op.get_bind().dialect.name
    for statement in PG_UP if dialect == "postgresql" else SQLITE_UP if dialect == "sqlite" else []:
        op.execute(statement)
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
    dialect = op.get_bind().dialect.name
    for statement in PG_DOWN if dialect == "postgresql" else SQLITE_DOWN if dialect == "sqlite" else []:
        op.execute(statement)
    with op.batch_alter_table('audit_record', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_audit_record_tenant_id'))
        batch_op.drop_index('ix_audit_record_chain_kind_seq')
        batch_op.drop_index('ix_audit_record_chain_at')

    op.drop_table('audit_record')
    op.drop_table('audit_head')
