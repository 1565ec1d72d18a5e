"""FHIR sources, sync state, order worklist extras

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-23 10:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('fhir_sources',
    sa.Column('resource_type', sa.String(length=32), nullable=False),
    sa.Column('row_id', sa.Integer(), autoincrement=False, nullable=False),
    sa.Column('resource', sa.Text(), nullable=False),
    sa.Column('resource_hash', sa.String(length=64), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('status', sa.String(length=32), nullable=True),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('resource_type', 'row_id')
    )
    op.create_table('sync_state',
    sa.Column('name', sa.String(length=64), nullable=False),
    sa.Column('value', sa.Text(), nullable=True),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('name')
    )
    # Worklist values a ServiceRequest brings (ImagingServiceRequestComments, IssueDate/Time).
    op.add_column('orders', sa.Column('comments', sa.Text(), nullable=True))
    op.add_column('orders', sa.Column('issue_date', sa.String(length=8), nullable=True))
    op.add_column('orders', sa.Column('issue_time', sa.String(length=14), nullable=True))
    # FHIR searches by _lastUpdated.
    op.create_index('ix_orders_updated_at', 'orders', ['updated_at'], unique=False)
    op.create_index('ix_patients_updated_at', 'patients', ['updated_at'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_patients_updated_at', table_name='patients')
    op.drop_index('ix_orders_updated_at', table_name='orders')
    with op.batch_alter_table('orders', schema=None) as batch_op:
        batch_op.drop_column('issue_time')
        batch_op.drop_column('issue_date')
        batch_op.drop_column('comments')
    op.drop_table('sync_state')
    op.drop_table('fhir_sources')
