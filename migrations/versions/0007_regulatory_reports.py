"""regulatory reports

`report_file` (gateway/reports/models.py): the files regulatory-report jobs write, tenant-owned,
one per (job, filename), bytes and SHA-256 kept in the row.

Casbin object "report": admin and compliance_officer everything (start reports, download);
trader read (list and download).

Revision ID: 0007
Revises: 0006
"""
from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

import gateway.db

revision: str = '0007'
down_revision: str | None = '0006'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

PERMISSIONS = [
    ("role:admin", "*", "report", "*"),
    ("role:compliance_officer", "*", "report", "*"),
    ("role:trader", "*", "report", "read"),
]

casbin_rule = sa.table(
    "casbin_rule",
    sa.column("ptype", sa.String),
    *(sa.column(f"v{i}", sa.String) for i in range(6)),
)


def upgrade() -> None:
    op.create_table('report_file',
    sa.Column('tenant_id', sqlmodel.sql.sqltypes.AutoString(length=36), nullable=False),
    sa.Column('id', sqlmodel.sql.sqltypes.AutoString(length=36), nullable=False),
    sa.Column('job_id', sqlmodel.sql.sqltypes.AutoString(length=36), nullable=False),
    sa.Column('kind', sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
    sa.Column('media_type', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('filename', sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
    sa.Column('sha256', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('size', sa.Integer(), nullable=False),
    sa.Column('rows', sa.Integer(), nullable=False),
    sa.Column('content', sa.LargeBinary(), nullable=False),
    sa.Column('created_at', gateway.db.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['job_id'], ['job.id'], ),
    sa.ForeignKeyConstraint(['tenant_id'], ['tenant.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('job_id', 'filename')
    )
    with op.batch_alter_table('report_file', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_report_file_job_id'), ['job_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_report_file_tenant_id'), ['tenant_id'], unique=False)
        batch_op.create_index('ix_report_file_tenant_created', ['tenant_id', 'created_at'], unique=False)

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
    with op.batch_alter_table('report_file', schema=None) as batch_op:
        batch_op.drop_index('ix_report_file_tenant_created')
        batch_op.drop_index(batch_op.f('ix_report_file_tenant_id'))
        batch_op.drop_index(batch_op.f('ix_report_file_job_id'))

    op.drop_table('report_file')
