"""subscriptions: the parties' systems told of referral (Task) changes by rest-hook

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-07 12:41:00.511702
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0012'
down_revision = '0011'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('subscriptions',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('criteria', sa.String(length=500), nullable=False),
    sa.Column('endpoint', sa.String(length=500), nullable=False),
    sa.Column('payload', sa.String(length=64), nullable=False),
    sa.Column('headers', sa.JSON(), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('reason', sa.Text(), nullable=False),
    sa.Column('created_by', sa.String(length=128), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )


def downgrade() -> None:
    op.drop_table('subscriptions')
