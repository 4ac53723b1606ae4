"""strategies

Tables of the AI strategy lab (gateway/strategies/models.py), all tenant-owned: `strategy`,
`strategy_version` (documents, origin, approval), `backtest` (one finished run: parameters,
metrics, equity curve, trades, explainer summary, drift) and `decision_explanation`.

Also the role permissions on two new casbin objects (a data step, as in 0004):
"strategy": admin everything; trader read and write; compliance_officer and viewer read.
"strategy_approval" (who may approve a version, human oversight): admin everything;
compliance_officer write.

Revision ID: 0010
Revises: 0009
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

import gateway.db

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

PERMISSIONS = [
    ("role:admin", "*", "strategy", "*"),
    ("role:trader", "*", "strategy", "read"),
    ("role:trader", "*", "strategy", "write"),
    ("role:compliance_officer", "*", "strategy", "read"),
    ("role:viewer", "*", "strategy", "read"),
    ("role:admin", "*", "strategy_approval", "*"),
    ("role:compliance_officer", "*", "strategy_approval", "write"),
]

casbin_rule = sa.table(
    "casbin_rule",
    sa.column("ptype", sa.String),
    *(sa.column(f"v{i}", sa.String) for i in range(6)),
)

S = sqlmodel.sql.sqltypes.AutoString
T = gateway.db.UTCDateTime


def upgrade() -> None:
    op.create_table(
        "strategy",
        sa.Column("tenant_id", S(length=36), nullable=False),
        sa.Column("id", S(length=36), nullable=False),
        sa.Column("name", S(length=120), nullable=False),
        sa.Column("latest_version", sa.Integer(), nullable=False),
        sa.Column("created_by", S(length=36), nullable=True),
        sa.Column("idempotency_key", S(length=128), nullable=True),
        sa.Column("created_at", T(timezone=True), nullable=False),
        sa.Column("updated_at", T(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenant.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("tenant_id", "idempotency_key"),
    )
    with op.batch_alter_table("strategy", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_strategy_tenant_id"), ["tenant_id"], unique=False)

    op.create_table(
        "strategy_version",
        sa.Column("tenant_id", S(length=36), nullable=False),
        sa.Column("id", S(length=36), nullable=False),
        sa.Column("strategy_id", S(length=36), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("document", sa.JSON(), nullable=False),
        sa.Column("document_hash", S(length=64), nullable=False),
        sa.Column("origin", S(length=16), nullable=False),
        sa.Column("origin_model", S(length=200), nullable=True),
        sa.Column("origin_prompt_hash", S(length=64), nullable=True),
        sa.Column("origin_note", S(length=2000), nullable=True),
        sa.Column("created_by", S(length=36), nullable=True),
        sa.Column("created_at", T(timezone=True), nullable=False),
        sa.Column("approved_by", S(length=36), nullable=True),
        sa.Column("approved_at", T(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["strategy_id"],
            ["strategy.id"],
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenant.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("strategy_id", "version"),
    )
    with op.batch_alter_table("strategy_version", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_strategy_version_strategy_id"), ["strategy_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_strategy_version_tenant_id"), ["tenant_id"], unique=False)

    op.create_table(
        "backtest",
        sa.Column("tenant_id", S(length=36), nullable=False),
        sa.Column("id", S(length=36), nullable=False),
        sa.Column("strategy_version_id", S(length=36), nullable=False),
        sa.Column("job_id", S(length=36), nullable=True),
        sa.Column("status", S(length=16), nullable=False),
        sa.Column("params", sa.JSON(), nullable=False),
        sa.Column("metrics", sa.JSON(), nullable=False),
        sa.Column("equity_curve", sa.JSON(), nullable=False),
        sa.Column("trades", sa.JSON(), nullable=False),
        sa.Column("explainer", sa.JSON(), nullable=False),
        sa.Column("drift", sa.JSON(), nullable=False),
        sa.Column("explainer_model", sa.Text(), nullable=True),
        sa.Column("decision_count", sa.Integer(), nullable=False),
        sa.Column("created_by", S(length=36), nullable=True),
        sa.Column("created_at", T(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["strategy_version_id"],
            ["strategy_version.id"],
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenant.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("backtest", schema=None) as batch_op:
        batch_op.create_index(
            "ix_backtest_version_created", ["strategy_version_id", "created_at"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_backtest_job_id"), ["job_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_backtest_tenant_id"), ["tenant_id"], unique=False)

    op.create_table(
        "decision_explanation",
        sa.Column("tenant_id", S(length=36), nullable=False),
        sa.Column("id", S(length=36), nullable=False),
        sa.Column("strategy_version_id", S(length=36), nullable=False),
        sa.Column("backtest_id", S(length=36), nullable=False),
        sa.Column("instrument", S(length=40), nullable=False),
        sa.Column("at", T(timezone=True), nullable=False),
        sa.Column("action", S(length=16), nullable=False),
        sa.Column("model_hash", S(length=64), nullable=False),
        sa.Column("model_version", S(length=80), nullable=False),
        sa.Column("features", sa.JSON(), nullable=False),
        sa.Column("base_value", sa.Float(), nullable=False),
        sa.Column("contributions", sa.JSON(), nullable=False),
        sa.Column("prediction", sa.Float(), nullable=False),
        sa.Column("probability", sa.Float(), nullable=False),
        sa.Column("residual", sa.Float(), nullable=False),
        sa.Column("additive", sa.Boolean(), nullable=False),
        sa.Column("sentence", sa.Text(), nullable=False),
        sa.Column("created_at", T(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["backtest_id"],
            ["backtest.id"],
        ),
        sa.ForeignKeyConstraint(
            ["strategy_version_id"],
            ["strategy_version.id"],
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenant.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("decision_explanation", schema=None) as batch_op:
        batch_op.create_index(
            "ix_decision_explanation_version_created", ["strategy_version_id", "created_at"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_decision_explanation_backtest_id"), ["backtest_id"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_decision_explanation_tenant_id"), ["tenant_id"], unique=False)

    op.bulk_insert(
        casbin_rule,
        [
            {"ptype": "p", "v0": s, "v1": d, "v2": o, "v3": a, "v4": "", "v5": ""}
            for s, d, o, a in PERMISSIONS
        ],
    )


def downgrade() -> None:
    for s, d, o, a in PERMISSIONS:
        op.execute(
            casbin_rule.delete().where(
                (casbin_rule.c.ptype == "p")
                & (casbin_rule.c.v0 == s)
                & (casbin_rule.c.v1 == d)
                & (casbin_rule.c.v2 == o)
                & (casbin_rule.c.v3 == a)
            )
        )
    op.drop_table("decision_explanation")
    op.drop_table("backtest")
    op.drop_table("strategy_version")
    op.drop_table("strategy")
