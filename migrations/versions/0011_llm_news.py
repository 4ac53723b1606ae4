"""llm news

Tables of the LLM side of the strategy lab, both tenant-owned: `news_analysis` (the cache of
per-model analyses of news items, gateway/strategies/news_models.py) and `synthesis_run`
(synthesis and improvement runs with every trial, gateway/strategies/synthesis_models.py).

Also the role permissions on the new casbin object "news": admin everything; trader read and
analyze (analyzeNews calls the configured models); compliance_officer and viewer read.
Synthesis and improvement reuse the object "strategy" (0010).

Revision ID: 0011
Revises: 0010
"""
from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

import gateway.db

revision: str = '0011'
down_revision: str | None = '0010'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

PERMISSIONS = [
    ("role:admin", "*", "news", "*"),
    ("role:trader", "*", "news", "read"),
    ("role:trader", "*", "news", "analyze"),
    ("role:compliance_officer", "*", "news", "read"),
    ("role:viewer", "*", "news", "read"),
]

casbin_rule = sa.table(
    "casbin_rule",
    sa.column("ptype", sa.String),
    *(sa.column(f"v{i}", sa.String) for i in range(6)),
)

S = sqlmodel.sql.sqltypes.AutoString
T = gateway.db.UTCDateTime


def upgrade() -> None:
    op.create_table('news_analysis',
    sa.Column('tenant_id', S(length=36), nullable=False),
    sa.Column('id', S(length=36), nullable=False),
    sa.Column('item_digest', S(length=64), nullable=False),
    sa.Column('item_ref', S(length=200), nullable=False),
    sa.Column('published_at', T(timezone=True), nullable=False),
    sa.Column('provider', S(length=80), nullable=False),
    sa.Column('model', S(length=200), nullable=False),
    sa.Column('is_llm', sa.Boolean(), nullable=False),
    sa.Column('sentiment', sa.Float(), nullable=False),
    sa.Column('relevance', sa.Float(), nullable=False),
    sa.Column('instruments', sa.JSON(), nullable=False),
    sa.Column('rationale', sa.Text(), nullable=False),
    sa.Column('created_at', T(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['tenant_id'], ['tenant.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('tenant_id', 'item_digest', 'provider', 'model')
    )
    with op.batch_alter_table('news_analysis', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_news_analysis_item_digest'), ['item_digest'], unique=False)
        batch_op.create_index(batch_op.f('ix_news_analysis_tenant_id'), ['tenant_id'], unique=False)

    op.create_table('synthesis_run',
    sa.Column('tenant_id', S(length=36), nullable=False),
    sa.Column('id', S(length=36), nullable=False),
    sa.Column('job_id', S(length=36), nullable=False),
    sa.Column('kind', S(length=16), nullable=False),
    sa.Column('strategy_id', S(length=36), nullable=False),
    sa.Column('strategy_version_id', S(length=36), nullable=True),
    sa.Column('objective', sa.Text(), nullable=True),
    sa.Column('constraints', sa.JSON(), nullable=False),
    sa.Column('universe', sa.JSON(), nullable=False),
    sa.Column('provider', S(length=80), nullable=False),
    sa.Column('model', S(length=200), nullable=False),
    sa.Column('is_llm', sa.Boolean(), nullable=False),
    sa.Column('prompt_hash', S(length=64), nullable=False),
    sa.Column('repairs', sa.Integer(), nullable=False),
    sa.Column('trial_count', sa.Integer(), nullable=False),
    sa.Column('deflated_sharpe', sa.Float(), nullable=True),
    sa.Column('regime', sa.JSON(), nullable=False),
    sa.Column('trials', sa.JSON(), nullable=False),
    sa.Column('metrics', sa.JSON(), nullable=False),
    sa.Column('created_by', S(length=36), nullable=True),
    sa.Column('created_at', T(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['strategy_id'], ['strategy.id'], ),
    sa.ForeignKeyConstraint(['strategy_version_id'], ['strategy_version.id'], ),
    sa.ForeignKeyConstraint(['tenant_id'], ['tenant.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('job_id')
    )
    with op.batch_alter_table('synthesis_run', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_synthesis_run_strategy_id'), ['strategy_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_synthesis_run_tenant_id'), ['tenant_id'], unique=False)

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
    with op.batch_alter_table('synthesis_run', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_synthesis_run_tenant_id'))
        batch_op.drop_index(batch_op.f('ix_synthesis_run_strategy_id'))

    op.drop_table('synthesis_run')
    with op.batch_alter_table('news_analysis', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_news_analysis_tenant_id'))
        batch_op.drop_index(batch_op.f('ix_news_analysis_item_digest'))

    op.drop_table('news_analysis')
