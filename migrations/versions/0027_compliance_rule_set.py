"""compliance decision records stored compact (issue 14)

`compliance_rule_set`: the (jurisdiction, rule) list a compliance decision timed, once per
tenant, named by its digest. New decision rows keep the digest and the nanoseconds in `record`
instead of the list, and leave out the keys their own columns hold (gateway/trading/
decisions.py), and say so in `compliance_decision.record_compact`; existing rows are kept whole
(false) and read as they are. The downgrade writes every compact record whole again before it
drops the rule sets.

Revision ID: 0027
Revises: 0026
"""
from collections.abc import Sequence
from datetime import UTC
from typing import Any

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = '0027'
down_revision: str | None = '0026'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# This revision's own copy of the format (gateway/trading/decisions.py may change later).
_ORDER = ("client_order_id", "tenant_id", "account", "symbol", "mic", "isin", "side", "quantity",
          "price", "client_domicile", "passed", "jurisdictions", "plugins", "denials", "timings_ns",
          "decided_at", "elapsed_ns", "order_id")


def upgrade() -> None:
    op.create_table('compliance_rule_set',
    sa.Column('tenant_id', sqlmodel.sql.sqltypes.AutoString(length=36), nullable=False),
    sa.Column('id', sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
    sa.Column('rules', sa.JSON(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['tenant_id'], ['tenant.id'], ),
    sa.PrimaryKeyConstraint('tenant_id', 'id')
    )
    with op.batch_alter_table('compliance_decision', schema=None) as batch_op:
        batch_op.add_column(sa.Column('record_compact', sa.Boolean(),
                                      server_default=sa.text('false'), nullable=False))


def downgrade() -> None:
    bind = op.get_bind()
    decisions = sa.table('compliance_decision', sa.column('id', sa.String),
                         sa.column('tenant_id', sa.String), sa.column('order_id', sa.String),
                         sa.column('client_order_id', sa.String), sa.column('account', sa.String),
                         sa.column('passed', sa.Boolean), sa.column('jurisdictions', sa.JSON),
                         sa.column('record', sa.JSON), sa.column('elapsed_ns', sa.BigInteger),
                         sa.column('decided_at', sa.DateTime(timezone=True)),
                         sa.column('record_compact', sa.Boolean))
    rule_sets = sa.table('compliance_rule_set', sa.column('tenant_id', sa.String),
                         sa.column('id', sa.String), sa.column('rules', sa.JSON))
    rules = {(r.tenant_id, r.id): r.rules for r in bind.execute(sa.select(rule_sets))}
    after = ""
    while True:
        rows = bind.execute(sa.select(decisions).where(decisions.c.id > after,
                                                       decisions.c.record_compact)
                            .order_by(decisions.c.id).limit(1000)).all()
        for row in rows:
            bind.execute(decisions.update().where(decisions.c.id == row.id)
                         .values(record=_whole(row, rules[(row.tenant_id,
                                                           row.record["rule_set"])])))
        if len(rows) < 1000:
            break
        after = rows[-1].id
    with op.batch_alter_table('compliance_decision', schema=None) as batch_op:
        batch_op.drop_column('record_compact')
    op.drop_table('compliance_rule_set')


def _whole(row: Any, rules: list[list[str]]) -> dict[str, Any]:
    stored = row.record
    decided = row.decided_at
    decided = decided.replace(tzinfo=UTC) if decided.tzinfo is None else decided.astimezone(UTC)
    held = {"client_order_id": row.client_order_id, "tenant_id": row.tenant_id,
            "account": row.account, "passed": row.passed,
            "jurisdictions": list(row.jurisdictions), "decided_at": decided.isoformat(),
            "elapsed_ns": row.elapsed_ns, "order_id": row.order_id}
    record: dict[str, Any] = {}
    for key in _ORDER:
        if key == "timings_ns":
            record[key] = [[j, rule, ns] for (j, rule), ns in zip(rules, stored["rule_ns"],
                                                                  strict=True)]
        elif key in stored:
            record[key] = stored[key]
        elif key in held:
            record[key] = held[key]
    record.update((k, v) for k, v in stored.items()
                  if k not in _ORDER and k not in ("rule_set", "rule_ns"))
    return record
