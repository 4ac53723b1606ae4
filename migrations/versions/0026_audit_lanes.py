"""audit lanes: the audit chain sharded (issue 14)

A tenant's trail is now up to 16 lanes (gateway/audit/lanes.py): lane 0 keeps the tenant id as
its chain name, lane k is "<tenant id>/k", so `chain` widens from 36 to 40 characters in
`audit_record`, `audit_head` and `audit_checkpoint`. Every existing row, hash and checkpoint is
kept as it is (the hash covers the chain name, which does not change).

A tenant's records are read newest first across its lanes by (at, chain, seq):
`ix_audit_record_tenant_at` (tenant_id, at, chain, seq) serves that order and
`ix_audit_record_tenant_kind_at` (tenant_id, kind, at, chain, seq) the same with a kind. They
replace `ix_audit_record_chain_kind_seq` (its kind-filtered page read one chain) and
`ix_audit_record_tenant_id` (both new ones lead with tenant_id), so an append maintains as many
indexes as before.

PostgreSQL widens a VARCHAR in place (no rewrite). SQLite enforces no VARCHAR length, but the
declared type is what models and migrations are compared on (tests/test_migrations.py), so
there the tables are rebuilt (Alembic's batch mode), and the append-only triggers, which a
rebuild drops with the old table, are made again from their stored text.

The downgrade narrows the columns back, which a lane's name no longer fits: it refuses while
any chain is longer than 36 characters (audit records are never deleted to make them fit).

Revision ID: 0026
Revises: 0025
"""
from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = '0026'
down_revision: str | None = '0025'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLES = ("audit_head", "audit_checkpoint", "audit_record")
RECORD_INDEXES = {
    "ix_audit_record_tenant_at": ["tenant_id", "at", "chain", "seq"],
    "ix_audit_record_tenant_kind_at": ["tenant_id", "kind", "at", "chain", "seq"],
}
OLD_RECORD_INDEXES = {
    "ix_audit_record_chain_kind_seq": ["chain", "kind", "seq"],
    "ix_audit_record_tenant_id": ["tenant_id"],
}


def _triggers(table: str) -> list[str]:
    """SQLite: the CREATE TRIGGER statements of `table`, to make again after a rebuild."""
    bind = op.get_bind()
    if bind.dialect.name != "sqlite":
        return []
    return [sql for (sql,) in bind.execute(sa.text(
        "SELECT sql FROM sqlite_master WHERE type = 'trigger' AND tbl_name = :t ORDER BY name"),
        {"t": table})]


def _chain(table: str, old: int, new: int, *, drop: dict[str, list[str]],
           create: dict[str, list[str]]) -> None:
    triggers = _triggers(table)
    with op.batch_alter_table(table, schema=None) as batch_op:
        batch_op.alter_column('chain', existing_type=sqlmodel.sql.sqltypes.AutoString(length=old),
                              type_=sqlmodel.sql.sqltypes.AutoString(length=new),
                              existing_nullable=False)
        for name in drop:
            batch_op.drop_index(name)
        for name, columns in create.items():
            batch_op.create_index(name, columns, unique=False)
    for sql in triggers:
        op.execute(sql)


def upgrade() -> None:
    for table in TABLES:
        indexes = (OLD_RECORD_INDEXES, RECORD_INDEXES) if table == "audit_record" else ({}, {})
        _chain(table, 36, 40, drop=indexes[0], create=indexes[1])


def downgrade() -> None:
    bind = op.get_bind()
    for table in TABLES:
        longest = bind.execute(sa.text(f"SELECT max(length(chain)) FROM {table}")).scalar()
        if longest is not None and longest > 36:
            raise RuntimeError(
                f"{table} holds audit lanes (chains longer than 36 characters): revision 0025 "
                f"cannot name them, and audit records are never deleted; stay on 0026")
    for table in reversed(TABLES):
        indexes = (RECORD_INDEXES, OLD_RECORD_INDEXES) if table == "audit_record" else ({}, {})
        _chain(table, 40, 36, drop=indexes[0], create=indexes[1])
