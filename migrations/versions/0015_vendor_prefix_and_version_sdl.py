"""vendor id prefixes and the SDL of published versions

`vendor.prefix` (nullable, unique): the first segment of plugin ids the vendor alone may create
("acme" for "acme.news-sentiment"). Backfilled from what vendors already published where that is
unambiguous: a vendor whose plugins all share one prefix that no other vendor's plugin uses gets
it; the others get theirs on their next publication, if it is still free.

`plugin_version.sdl` (nullable text): the GraphQL SDL the plugin's worker reported when the
version was inspected (plugins with schema extensions; versions published before stay NULL).

Revision ID: 0015
Revises: 0014
"""
from collections import defaultdict
from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = '0015'
down_revision: str | None = '0014'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

vendor = sa.table("vendor", sa.column("id", sa.String), sa.column("prefix", sa.String))
plugin = sa.table("plugin", sa.column("id", sa.String), sa.column("vendor_id", sa.String))


def upgrade() -> None:
    with op.batch_alter_table('vendor', schema=None) as batch_op:
        batch_op.add_column(sa.Column('prefix', sqlmodel.sql.sqltypes.AutoString(length=100),
                                      nullable=True))
        batch_op.create_index(batch_op.f('ix_vendor_prefix'), ['prefix'], unique=True)
    with op.batch_alter_table('plugin_version', schema=None) as batch_op:
        batch_op.add_column(sa.Column('sdl', sa.Text(), nullable=True))

    bind = op.get_bind()
    prefixes_of: dict[str, set[str]] = defaultdict(set)  # vendor -> prefixes of its plugins
    vendors_of: dict[str, set[str]] = defaultdict(set)  # prefix -> vendors publishing under it
    for plugin_id, vendor_id in bind.execute(sa.select(plugin.c.id, plugin.c.vendor_id)):
        prefix = plugin_id.split(".", 1)[0]
        prefixes_of[vendor_id].add(prefix)
        vendors_of[prefix].add(vendor_id)
    for vendor_id, prefixes in sorted(prefixes_of.items()):
        if len(prefixes) == 1:
            (prefix,) = prefixes
            if vendors_of[prefix] == {vendor_id}:
                bind.execute(vendor.update().where(vendor.c.id == vendor_id).values(prefix=prefix))


def downgrade() -> None:
    with op.batch_alter_table('plugin_version', schema=None) as batch_op:
        batch_op.drop_column('sdl')
    with op.batch_alter_table('vendor', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_vendor_prefix'))
        batch_op.drop_column('prefix')
