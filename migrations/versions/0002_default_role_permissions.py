"""default role permissions

The permissions of the built-in roles, as casbin `p` lines with domain "*" (every tenant).
A snapshot on purpose: later changes to roles come in later migrations.

Revision ID: 0002
Revises: 0001
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

PERMISSIONS = [
    ("role:platform_admin", "*", "*", "*"),
    ("role:admin", "*", "tenant", "*"),
    ("role:admin", "*", "user", "*"),
    ("role:admin", "*", "apikey", "*"),
    ("role:admin", "*", "role", "*"),
    ("role:admin", "*", "job", "*"),
    ("role:trader", "*", "tenant", "read"),
    ("role:trader", "*", "job", "*"),
    ("role:compliance_officer", "*", "tenant", "read"),
    ("role:compliance_officer", "*", "user", "read"),
    ("role:compliance_officer", "*", "job", "*"),
    ("role:viewer", "*", "tenant", "read"),
    ("role:viewer", "*", "job", "read"),
    ("role:vendor", "*", "tenant", "read"),
    ("role:vendor", "*", "job", "read"),
]

casbin_rule = sa.table(
    "casbin_rule",
    sa.column("ptype", sa.String),
    *(sa.column(f"v{i}", sa.String) for i in range(6)),
)


def upgrade() -> None:
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
