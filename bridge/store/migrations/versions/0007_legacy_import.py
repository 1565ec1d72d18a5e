"""legacy import: the list of processed files

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-22 01:20:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('import_files',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('source', sa.String(length=64), nullable=False),
    sa.Column('path', sa.Text(), nullable=False),
    sa.Column('path_digest', sa.String(length=64), nullable=False),
    sa.Column('size', sa.BigInteger(), nullable=False),
    sa.Column('mtime_ns', sa.BigInteger(), nullable=False),
    sa.Column('sha256', sa.String(length=64), nullable=True),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('reason', sa.Text(), nullable=True),
    sa.Column('sop_instance_uid', sa.String(length=64), nullable=True),
    sa.Column('objects', sa.Integer(), nullable=False),
    sa.Column('at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('path_digest', 'size', 'mtime_ns', name='uq_import_files_version')
    )
    with op.batch_alter_table('import_files', schema=None) as batch_op:
        batch_op.create_index('ix_import_files_sha256', ['sha256'], unique=False)
        batch_op.create_index('ix_import_files_source_at', ['source', 'at'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('import_files', schema=None) as batch_op:
        batch_op.drop_index('ix_import_files_source_at')
        batch_op.drop_index('ix_import_files_sha256')

    op.drop_table('import_files')
