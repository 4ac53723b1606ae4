"""the audit signing key may be resealed (secret key rotation)

`audit_signing_key` stays append-only in what matters: its id, public key and creation time can
never change and the row can never be deleted. Only `sealed_key`, the private key's sealed form,
may be rewritten, so `alphintra secrets reseal` can move it to a new secret key (the key itself,
and so every checkpoint signature, stays the same: the public key column proves it).

Revision ID: 0024
Revises: 0023
"""
from collections.abc import Sequence

from alembic import op

revision: str = '0024'
down_revision: str | None = '0023'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

PG_UP = [
    "DROP TRIGGER IF EXISTS audit_signing_key_no_update ON audit_signing_key",
    """CREATE FUNCTION audit_signing_key_reseal_only() RETURNS trigger LANGUAGE plpgsql AS $$
       BEGIN
         IF TG_OP = 'UPDATE' AND NEW.id = OLD.id AND NEW.public_key = OLD.public_key
            AND NEW.created_at = OLD.created_at THEN
           RETURN NEW;
         END IF;
         RAISE EXCEPTION '% is append-only: % refused', TG_TABLE_NAME, TG_OP
           USING ERRCODE = 'insufficient_privilege';
       END $$""",
    """CREATE TRIGGER audit_signing_key_no_update BEFORE UPDATE OR DELETE ON audit_signing_key
       FOR EACH ROW EXECUTE FUNCTION audit_signing_key_reseal_only()""",
]
PG_DOWN = [
    "DROP TRIGGER IF EXISTS audit_signing_key_no_update ON audit_signing_key",
    "DROP FUNCTION IF EXISTS audit_signing_key_reseal_only()",
    """CREATE TRIGGER audit_signing_key_no_update BEFORE UPDATE OR DELETE ON audit_signing_key
       FOR EACH ROW EXECUTE FUNCTION audit_checkpoint_append_only()""",
]
SQLITE_UP = [
    "DROP TRIGGER IF EXISTS audit_signing_key_no_update",
    """CREATE TRIGGER audit_signing_key_no_update BEFORE UPDATE OF id, public_key, created_at
       ON audit_signing_key
       BEGIN SELECT RAISE(ABORT, 'audit_signing_key is append-only: UPDATE refused'); END""",
]
SQLITE_DOWN = [
    "DROP TRIGGER IF EXISTS audit_signing_key_no_update",
    """CREATE TRIGGER audit_signing_key_no_update BEFORE UPDATE ON audit_signing_key
       BEGIN SELECT RAISE(ABORT, 'audit_signing_key is append-only: UPDATE refused'); END""",
]


def _run(postgres: list[str], sqlite: list[str]) -> None:
    dialect = op.get_bind().dialect.name
    for statement in postgres if dialect == "postgresql" else sqlite if dialect == "sqlite" else ():
        op.execute(statement)


def upgrade() -> None:
    _run(PG_UP, SQLITE_UP)


def downgrade() -> None:
    _run(PG_DOWN, SQLITE_DOWN)
