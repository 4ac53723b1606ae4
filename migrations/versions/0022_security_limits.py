"""security limits and separation of duties (issue 16)

- `tenant.trusted_documents_only` and `trusted_document` (a tenant's registered GraphQL
  documents: in trusted-documents mode only these run; also served by hash as persisted queries);
- `user.created_by` and `api_key.created_by`: who made a user or key, read by the independence
  rule of approvals (gateway/tenancy/independence.py);
- `role_grant_request`: a role that needs a second person (compliance_officer), requested by one
  tenant admin and decided by another or a platform administrator;
- the role `router` may read the federated SDL (`_service`) when introspection is off: casbin
  object "schema", act "read".

Revision ID: 0022
Revises: 0020
"""
from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

import gateway.db

revision: str = '0022'
down_revision: str | None = '0020'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

PERMISSIONS = [
    ("role:router", "*", "schema", "read"),
]

casbin_rule = sa.table(
    "casbin_rule",
    sa.column("ptype", sa.String),
    *(sa.column(f"v{i}", sa.String) for i in range(6)),
)


def upgrade() -> None:
    with op.batch_alter_table('tenant', schema=None) as batch_op:
        batch_op.add_column(sa.Column('trusted_documents_only', sa.Boolean(), nullable=False,
                                      server_default=sa.false()))
    with op.batch_alter_table('user', schema=None) as batch_op:
        batch_op.add_column(sa.Column('created_by', sqlmodel.sql.sqltypes.AutoString(length=36),
                                      nullable=True))
    with op.batch_alter_table('api_key', schema=None) as batch_op:
        batch_op.add_column(sa.Column('created_by', sqlmodel.sql.sqltypes.AutoString(length=36),
                                      nullable=True))

    op.create_table('role_grant_request',
    sa.Column('tenant_id', sqlmodel.sql.sqltypes.AutoString(length=36), nullable=False),
    sa.Column('id', sqlmodel.sql.sqltypes.AutoString(length=36), nullable=False),
    sa.Column('user_id', sqlmodel.sql.sqltypes.AutoString(length=36), nullable=False),
    sa.Column('role', sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
    sa.Column('status', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
    sa.Column('requested_by', sqlmodel.sql.sqltypes.AutoString(length=36), nullable=False),
    sa.Column('created_at', gateway.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('decided_by', sqlmodel.sql.sqltypes.AutoString(length=36), nullable=True),
    sa.Column('decided_at', gateway.db.UTCDateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['tenant_id'], ['tenant.id'], ),
    sa.ForeignKeyConstraint(['user_id'], ['user.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('role_grant_request', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_role_grant_request_tenant_id'), ['tenant_id'],
                              unique=False)
        batch_op.create_index('ix_role_grant_request_tenant_created',
                              ['tenant_id', 'created_at', 'id'], unique=False)

    op.create_table('trusted_document',
    sa.Column('tenant_id', sqlmodel.sql.sqltypes.AutoString(length=36), nullable=False),
    sa.Column('id', sqlmodel.sql.sqltypes.AutoString(length=36), nullable=False),
    sa.Column('sha256', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('name', sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
    sa.Column('document', sa.Text(), nullable=False),
    sa.Column('created_by', sqlmodel.sql.sqltypes.AutoString(length=36), nullable=True),
    sa.Column('created_at', gateway.db.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['tenant_id'], ['tenant.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('tenant_id', 'sha256')
    )
    with op.batch_alter_table('trusted_document', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_trusted_document_tenant_id'), ['tenant_id'],
                              unique=False)
        batch_op.create_index('ix_trusted_document_tenant_created',
                              ['tenant_id', 'created_at', 'id'], unique=False)

    op.bulk_insert(casbin_rule, [{"ptype": "p", "v0": s, "v1": d, "v2": o, "v3": a, "v4": "",
                                  "v5": ""} for s, d, o, a in PERMISSIONS])


def downgrade() -> None:
    for s, d, o, a in PERMISSIONS:
        op.execute(casbin_rule.delete().where(
            (casbin_rule.c.ptype == "p") & (casbin_rule.c.v0 == s) & (casbin_rule.c.v1 == d)
            & (casbin_rule.c.v2 == o) & (casbin_rule.c.v3 == a)))
    op.execute(sa.text("DELETE FROM casbin_rule WHERE ptype = 'g' AND v1 = 'role:router'"))
    with op.batch_alter_table('trusted_document', schema=None) as batch_op:
        batch_op.drop_index('ix_trusted_document_tenant_created')
        batch_op.drop_index(batch_op.f('ix_trusted_document_tenant_id'))
    op.drop_table('trusted_document')
    with op.batch_alter_table('role_grant_request', schema=None) as batch_op:
        batch_op.drop_index('ix_role_grant_request_tenant_created')
        batch_op.drop_index(batch_op.f('ix_role_grant_request_tenant_id'))
    op.drop_table('role_grant_request')
    with op.batch_alter_table('api_key', schema=None) as batch_op:
        batch_op.drop_column('created_by')
    with op.batch_alter_table('user', schema=None) as batch_op:
        batch_op.drop_column('created_by')
    with op.batch_alter_table('tenant', schema=None) as batch_op:
        batch_op.drop_column('trusted_documents_only')
