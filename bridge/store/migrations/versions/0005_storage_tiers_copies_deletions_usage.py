"""storage tiers: copies, deletions, usage

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-22 01:16:09.682503
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('storage_usage_samples',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('tier', sa.String(length=16), nullable=False),
    sa.Column('modality', sa.String(length=16), nullable=False),
    sa.Column('instances', sa.BigInteger(), nullable=False),
    sa.Column('bytes', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('storage_usage_samples', schema=None) as batch_op:
        batch_op.create_index('ix_storage_usage_samples_at', ['at', 'tier'], unique=False)

    op.create_table('storage_deletions',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('study_id', sa.Integer(), nullable=True),
    sa.Column('study_instance_uid', sa.String(length=64), nullable=False),
    sa.Column('tier', sa.String(length=16), nullable=False),
    sa.Column('reason', sa.String(length=64), nullable=False),
    sa.Column('instances', sa.Integer(), nullable=False),
    sa.Column('bytes', sa.BigInteger(), nullable=False),
    sa.Column('actor', sa.String(length=128), nullable=False),
    sa.ForeignKeyConstraint(['study_id'], ['studies.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('storage_deletions', schema=None) as batch_op:
        batch_op.create_index('ix_storage_deletions_at', ['at'], unique=False)

    op.create_table('instance_copies',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('instance_id', sa.Integer(), nullable=False),
    sa.Column('study_id', sa.Integer(), nullable=False),
    sa.Column('tier', sa.String(length=16), nullable=False),
    sa.Column('backend', sa.String(length=16), nullable=False),
    sa.Column('location', sa.String(length=512), nullable=False),
    sa.Column('key', sa.String(length=1024), nullable=False),
    sa.Column('size', sa.BigInteger(), nullable=False),
    sa.Column('sha256', sa.String(length=64), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('verified_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('failed_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('failure', sa.Text(), nullable=True),
    sa.ForeignKeyConstraint(['instance_id'], ['instances.id'], ),
    sa.ForeignKeyConstraint(['study_id'], ['studies.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('instance_id', 'tier', name='uq_instance_copies_instance_tier')
    )
    with op.batch_alter_table('instance_copies', schema=None) as batch_op:
        batch_op.create_index('ix_instance_copies_study', ['study_id', 'tier'], unique=False)

    with op.batch_alter_table('instances', schema=None) as batch_op:
        batch_op.add_column(sa.Column('online_removed_at', sa.DateTime(timezone=True), nullable=True))

    with op.batch_alter_table('studies', schema=None) as batch_op:
        batch_op.add_column(sa.Column('longterm_at', sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('online_removed_at', sa.DateTime(timezone=True), nullable=True))
        batch_op.create_index('ix_studies_stable_longterm', ['state', 'longterm_at', 'stable_at'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('studies', schema=None) as batch_op:
        batch_op.drop_index('ix_studies_stable_longterm')
        batch_op.drop_column('online_removed_at')
        batch_op.drop_column('longterm_at')

    with op.batch_alter_table('instances', schema=None) as batch_op:
        batch_op.drop_column('online_removed_at')

    with op.batch_alter_table('instance_copies', schema=None) as batch_op:
        batch_op.drop_index('ix_instance_copies_study')

    op.drop_table('instance_copies')
    with op.batch_alter_table('storage_deletions', schema=None) as batch_op:
        batch_op.drop_index('ix_storage_deletions_at')

    op.drop_table('storage_deletions')
    with op.batch_alter_table('storage_usage_samples', schema=None) as batch_op:
        batch_op.drop_index('ix_storage_usage_samples_at')

    op.drop_table('storage_usage_samples')
