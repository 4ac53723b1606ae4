"""a user's national identifier, for MiFIR transaction reports

`user.national_id`, `user.national_id_scheme` (NIDN | CCPT | CONCAT) and `user.branch_country`:
how the ISO 20022 auth.016 report identifies the user as investment decision maker or executor
(RTS 22 Art. 6), recorded by the tenant admin; nullable, none until recorded.

Revision ID: 0019
Revises: 0018
"""
from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = '0019'
down_revision: str | None = '0018'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('user', schema=None) as batch_op:
        batch_op.add_column(sa.Column('national_id', sqlmodel.sql.sqltypes.AutoString(length=35),
                                      nullable=True))
        batch_op.add_column(sa.Column('national_id_scheme',
                                      sqlmodel.sql.sqltypes.AutoString(length=6), nullable=True))
        batch_op.add_column(sa.Column('branch_country', sqlmodel.sql.sqltypes.AutoString(length=2),
                                      nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('user', schema=None) as batch_op:
        batch_op.drop_column('branch_country')
        batch_op.drop_column('national_id_scheme')
        batch_op.drop_column('national_id')
