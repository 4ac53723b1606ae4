"""marketplace catalogue

Publication tables of issue 5 (marketplace/models.py): `vendor` (a tenant that publishes,
with its Ed25519 public key), `plugin` (one per manifest id) and `plugin_version` (the signed
wheel, its manifest and its review status). Platform rows, not tenant-owned: visibility is
marketplace/service.py's.

Also the role permissions on the new casbin object "plugin": vendor read and write (register
a key, publish, list its versions); admin read (installing is the "plugin_install" object of
migration 0009). platform_admin already holds "*" (0002) and reviews and delists.

Revision ID: 0008
Revises: 0007
"""
from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

import gateway.db

revision: str = '0008'
down_revision: str | None = '0007'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

PERMISSIONS = [
    ("role:vendor", "*", "plugin", "read"),
    ("role:vendor", "*", "plugin", "write"),
    ("role:admin", "*", "plugin", "read"),
]

casbin_rule = sa.table(
    "casbin_rule",
    sa.column("ptype", sa.String),
    *(sa.column(f"v{i}", sa.String) for i in range(6)),
)


def upgrade() -> None:
    op.create_table('vendor',
    sa.Column('id', sqlmodel.sql.sqltypes.AutoString(length=36), nullable=False),
    sa.Column('tenant_id', sqlmodel.sql.sqltypes.AutoString(length=36), nullable=False),
    sa.Column('name', sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
    sa.Column('public_key', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('created_at', gateway.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('updated_at', gateway.db.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['tenant_id'], ['tenant.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('tenant_id')
    )
    op.create_table('plugin',
    sa.Column('id', sqlmodel.sql.sqltypes.AutoString(length=100), nullable=False),
    sa.Column('vendor_id', sqlmodel.sql.sqltypes.AutoString(length=36), nullable=False),
    sa.Column('name', sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
    sa.Column('category', sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
    sa.Column('tier', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
    sa.Column('delisted_at', gateway.db.UTCDateTime(timezone=True), nullable=True),
    sa.Column('created_at', gateway.db.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['vendor_id'], ['vendor.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('plugin', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_plugin_category'), ['category'], unique=False)
        batch_op.create_index(batch_op.f('ix_plugin_vendor_id'), ['vendor_id'], unique=False)

    op.create_table('plugin_version',
    sa.Column('id', sqlmodel.sql.sqltypes.AutoString(length=36), nullable=False),
    sa.Column('plugin_id', sqlmodel.sql.sqltypes.AutoString(length=100), nullable=False),
    sa.Column('version', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('manifest', sa.JSON(), nullable=False),
    sa.Column('wheel', sa.LargeBinary(), nullable=False),
    sa.Column('wheel_sha256', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('wheel_filename', sqlmodel.sql.sqltypes.AutoString(length=255), nullable=False),
    sa.Column('signature', sqlmodel.sql.sqltypes.AutoString(length=128), nullable=False),
    sa.Column('public_key', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('status', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
    sa.Column('reasons', sa.JSON(), nullable=False),
    sa.Column('published_by', sqlmodel.sql.sqltypes.AutoString(length=36), nullable=True),
    sa.Column('published_at', gateway.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('reviewed_at', gateway.db.UTCDateTime(timezone=True), nullable=True),
    sa.Column('reviewed_by', sqlmodel.sql.sqltypes.AutoString(length=36), nullable=True),
    sa.Column('created_at', gateway.db.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['plugin_id'], ['plugin.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('plugin_id', 'version')
    )
    with op.batch_alter_table('plugin_version', schema=None) as batch_op:
        batch_op.create_index('ix_plugin_version_plugin_created', ['plugin_id', 'created_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_plugin_version_plugin_id'), ['plugin_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_plugin_version_status'), ['status'], unique=False)

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
    with op.batch_alter_table('plugin_version', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_plugin_version_status'))
        batch_op.drop_index(batch_op.f('ix_plugin_version_plugin_id'))
        batch_op.drop_index('ix_plugin_version_plugin_created')

    op.drop_table('plugin_version')
    with op.batch_alter_table('plugin', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_plugin_vendor_id'))
        batch_op.drop_index(batch_op.f('ix_plugin_category'))

    op.drop_table('plugin')
    op.drop_table('vendor')
