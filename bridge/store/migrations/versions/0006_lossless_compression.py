"""lossless compression: original size and syntax of compressed instances

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-22 01:20:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('instances', schema=None) as batch_op:
        batch_op.add_column(sa.Column('original_size', sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column('original_transfer_syntax_uid', sa.String(length=64),
                                      nullable=True))
        batch_op.add_column(sa.Column('compressed_at', sa.DateTime(timezone=True),
                                      nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('instances', schema=None) as batch_op:
        batch_op.drop_column('compressed_at')
        batch_op.drop_column('original_transfer_syntax_uid')
        batch_op.drop_column('original_size')
