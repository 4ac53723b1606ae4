"""marketplace installations

Tables of installation (marketplace/install_models.py), all tenant-owned:
`plugin_installation` (one row per tenant and installed plugin, non-secret configuration as
JSON, secret fields sealed as one SecretBox token), `plugin_installation_event` (the history:
installs, configurations, upgrades, rollbacks, uninstalls, delistings; install idempotency keys),
`plugin_rating` (one per tenant and plugin) and `plugin_usage` (metered calls and bytes per
tenant, plugin, version and day).

Also the role permissions on the new casbin objects: "plugin_install" (admin everything:
install, configure, upgrade, roll back, uninstall, rate; trader, compliance_officer, viewer and
vendor read) and "vendor_statement" (admin and vendor read).

Revision ID: 0009
Revises: 0008
"""
from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

import gateway.db

revision: str = '0009'
down_revision: str | None = '0008'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

PERMISSIONS = [
    ("role:admin", "*", "plugin_install", "*"),
    ("role:trader", "*", "plugin_install", "read"),
    ("role:compliance_officer", "*", "plugin_install", "read"),
    ("role:viewer", "*", "plugin_install", "read"),
    ("role:vendor", "*", "plugin_install", "read"),
    ("role:admin", "*", "vendor_statement", "read"),
    ("role:vendor", "*", "vendor_statement", "read"),
]

casbin_rule = sa.table(
    "casbin_rule",
    sa.column("ptype", sa.String),
    *(sa.column(f"v{i}", sa.String) for i in range(6)),
)


def upgrade() -> None:
    op.create_table('plugin_installation',
    sa.Column('tenant_id', sqlmodel.sql.sqltypes.AutoString(length=36), nullable=False),
    sa.Column('id', sqlmodel.sql.sqltypes.AutoString(length=36), nullable=False),
    sa.Column('plugin_id', sqlmodel.sql.sqltypes.AutoString(length=100), nullable=False),
    sa.Column('version_id', sqlmodel.sql.sqltypes.AutoString(length=36), nullable=False),
    sa.Column('version', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('previous_version_id', sqlmodel.sql.sqltypes.AutoString(length=36), nullable=True),
    sa.Column('config', sa.JSON(), nullable=False),
    sa.Column('sealed_secrets', sa.Text(), nullable=True),
    sa.Column('secret_fields', sa.JSON(), nullable=False),
    sa.Column('previous_config', sa.JSON(), nullable=True),
    sa.Column('previous_sealed_secrets', sa.Text(), nullable=True),
    sa.Column('installed_by', sqlmodel.sql.sqltypes.AutoString(length=36), nullable=True),
    sa.Column('created_at', gateway.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('updated_at', gateway.db.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['plugin_id'], ['plugin.id'], ),
    sa.ForeignKeyConstraint(['tenant_id'], ['tenant.id'], ),
    sa.ForeignKeyConstraint(['version_id'], ['plugin_version.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('tenant_id', 'plugin_id')
    )
    with op.batch_alter_table('plugin_installation', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_plugin_installation_plugin_id'), ['plugin_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_plugin_installation_tenant_id'), ['tenant_id'], unique=False)

    op.create_table('plugin_installation_event',
    sa.Column('tenant_id', sqlmodel.sql.sqltypes.AutoString(length=36), nullable=False),
    sa.Column('id', sqlmodel.sql.sqltypes.AutoString(length=36), nullable=False),
    sa.Column('plugin_id', sqlmodel.sql.sqltypes.AutoString(length=100), nullable=False),
    sa.Column('action', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
    sa.Column('version_id', sqlmodel.sql.sqltypes.AutoString(length=36), nullable=True),
    sa.Column('version', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True),
    sa.Column('previous_version', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True),
    sa.Column('actor', sqlmodel.sql.sqltypes.AutoString(length=36), nullable=True),
    sa.Column('idempotency_key', sqlmodel.sql.sqltypes.AutoString(length=128), nullable=True),
    sa.Column('created_at', gateway.db.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['tenant_id'], ['tenant.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('tenant_id', 'idempotency_key')
    )
    with op.batch_alter_table('plugin_installation_event', schema=None) as batch_op:
        batch_op.create_index('ix_plugin_installation_event_tenant_plugin',
                              ['tenant_id', 'plugin_id', 'created_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_plugin_installation_event_tenant_id'), ['tenant_id'],
                              unique=False)

    op.create_table('plugin_rating',
    sa.Column('tenant_id', sqlmodel.sql.sqltypes.AutoString(length=36), nullable=False),
    sa.Column('id', sqlmodel.sql.sqltypes.AutoString(length=36), nullable=False),
    sa.Column('plugin_id', sqlmodel.sql.sqltypes.AutoString(length=100), nullable=False),
    sa.Column('rating', sa.Integer(), nullable=False),
    sa.Column('comment', sqlmodel.sql.sqltypes.AutoString(length=2000), nullable=True),
    sa.Column('rated_by', sqlmodel.sql.sqltypes.AutoString(length=36), nullable=True),
    sa.Column('created_at', gateway.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('updated_at', gateway.db.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['plugin_id'], ['plugin.id'], ),
    sa.ForeignKeyConstraint(['tenant_id'], ['tenant.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('tenant_id', 'plugin_id')
    )
    with op.batch_alter_table('plugin_rating', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_plugin_rating_plugin_id'), ['plugin_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_plugin_rating_tenant_id'), ['tenant_id'], unique=False)

    op.create_table('plugin_usage',
    sa.Column('tenant_id', sqlmodel.sql.sqltypes.AutoString(length=36), nullable=False),
    sa.Column('id', sqlmodel.sql.sqltypes.AutoString(length=36), nullable=False),
    sa.Column('plugin_id', sqlmodel.sql.sqltypes.AutoString(length=100), nullable=False),
    sa.Column('version', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('day', sqlmodel.sql.sqltypes.AutoString(length=10), nullable=False),
    sa.Column('calls', sa.BigInteger(), nullable=False),
    sa.Column('bytes', sa.BigInteger(), nullable=False),
    sa.ForeignKeyConstraint(['tenant_id'], ['tenant.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('tenant_id', 'plugin_id', 'version', 'day')
    )
    with op.batch_alter_table('plugin_usage', schema=None) as batch_op:
        batch_op.create_index('ix_plugin_usage_plugin_day', ['plugin_id', 'day'], unique=False)
        batch_op.create_index(batch_op.f('ix_plugin_usage_tenant_id'), ['tenant_id'], unique=False)

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
    with op.batch_alter_table('plugin_usage', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_plugin_usage_tenant_id'))
        batch_op.drop_index('ix_plugin_usage_plugin_day')
    op.drop_table('plugin_usage')
    with op.batch_alter_table('plugin_rating', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_plugin_rating_tenant_id'))
        batch_op.drop_index(batch_op.f('ix_plugin_rating_plugin_id'))
    op.drop_table('plugin_rating')
    with op.batch_alter_table('plugin_installation_event', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_plugin_installation_event_tenant_id'))
        batch_op.drop_index('ix_plugin_installation_event_tenant_plugin')
    op.drop_table('plugin_installation_event')
    with op.batch_alter_table('plugin_installation', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_plugin_installation_tenant_id'))
        batch_op.drop_index(batch_op.f('ix_plugin_installation_plugin_id'))
    op.drop_table('plugin_installation')
