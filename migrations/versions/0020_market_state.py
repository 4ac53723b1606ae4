"""the market-state feed: halts, short-sale restrictions, the short-sale list

Platform-wide tables (not tenant-owned; gateway/marketdata/state.py):
- `market_halt`: halts and REDUCING states in force, per (MIC, symbol), symbol "*" for a
  whole venue; set and lifted by platform administrators.
- `short_sale_restriction`: SEC Rule 201 and TSE price-restriction triggers as the feed saw
  them, per (MIC, symbol, local trigger date), with the last day in force.
- `short_sale_designation`: the instruments a venue with a short-sale list lets be sold short,
  seeded with a sample of HKEX's designated securities: Hang Seng Index constituents, every
  one of them designated (HKEX's list of designated securities eligible for short selling),
  of which the market twin simulates 0700 (Tencent). Platform administrators edit it.
- `market_state_version`: one row whose version every write moves on (cache invalidation).

Revision ID: 0020
Revises: 0019
"""
from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

import gateway.db

revision: str = '0020'
down_revision: str | None = '0019'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Hang Seng Index constituents (all on HKEX's list of designated securities): HSBC, Tencent,
# HKEX, China Mobile, China Construction Bank, AIA, ICBC, Ping An, Meituan, Alibaba.
DESIGNATED_XHKG = ("0005", "0700", "0388", "0941", "0939", "1299", "1398", "2318", "3690",
                   "9988")


def upgrade() -> None:
    op.create_table('market_halt',
    sa.Column('mic', sqlmodel.sql.sqltypes.AutoString(length=12), nullable=False),
    sa.Column('symbol', sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
    sa.Column('mode', sqlmodel.sql.sqltypes.AutoString(length=10), nullable=False),
    sa.Column('reason', sqlmodel.sql.sqltypes.AutoString(length=500), nullable=False),
    sa.Column('set_by', sqlmodel.sql.sqltypes.AutoString(length=36), nullable=True),
    sa.Column('set_at', gateway.db.UTCDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('mic', 'symbol')
    )
    op.create_table('short_sale_restriction',
    sa.Column('mic', sqlmodel.sql.sqltypes.AutoString(length=12), nullable=False),
    sa.Column('symbol', sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
    sa.Column('triggered_on', sa.Date(), nullable=False),
    sa.Column('in_force_until', sa.Date(), nullable=False),
    sa.Column('rule', sqlmodel.sql.sqltypes.AutoString(length=40), nullable=False),
    sa.Column('previous_close', sa.Numeric(precision=28, scale=10), nullable=False),
    sa.Column('trigger_price', sa.Numeric(precision=28, scale=10), nullable=False),
    sa.Column('recorded_at', gateway.db.UTCDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('mic', 'symbol', 'triggered_on')
    )
    op.create_table('short_sale_designation',
    sa.Column('mic', sqlmodel.sql.sqltypes.AutoString(length=12), nullable=False),
    sa.Column('symbol', sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
    sa.Column('added_by', sqlmodel.sql.sqltypes.AutoString(length=36), nullable=True),
    sa.Column('added_at', gateway.db.UTCDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('mic', 'symbol')
    )
    version = op.create_table('market_state_version',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    op.bulk_insert(version, [{"id": 1, "version": 0}])
    designation = sa.table('short_sale_designation', sa.column('mic', sa.String),
                           sa.column('symbol', sa.String), sa.column('added_by', sa.String),
                           sa.column('added_at', gateway.db.UTCDateTime(timezone=True)))
    seeded = gateway.db.utcnow()
    op.bulk_insert(designation, [{"mic": "XHKG", "symbol": s, "added_by": None, "added_at": seeded}
                                 for s in DESIGNATED_XHKG])


def downgrade() -> None:
    op.drop_table('market_state_version')
    op.drop_table('short_sale_designation')
    op.drop_table('short_sale_restriction')
    op.drop_table('market_halt')
