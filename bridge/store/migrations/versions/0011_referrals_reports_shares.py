"""referrals, their events, studies, documents and results; shares; who uploaded a study

A referral row is a ServiceRequest and its fulfilment Task (``bridge.store.referral_models``);
``access_grants`` are studies or patients shared with a clinician (by a user or a consent);
``studies.uploaded_by`` is the clinician who stored a study through STOW-RS under their login.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-07 12:21:56.686740
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0011'
down_revision = '0010'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('referrals',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('patient_id', sa.Integer(), nullable=False),
    sa.Column('requester_id', sa.Integer(), nullable=False),
    sa.Column('performer_kind', sa.String(length=16), nullable=False),
    sa.Column('performer_org_id', sa.Integer(), nullable=True),
    sa.Column('owner_id', sa.Integer(), nullable=True),
    sa.Column('code', sa.String(length=64), nullable=False),
    sa.Column('code_system', sa.String(length=200), nullable=False),
    sa.Column('code_display', sa.String(length=200), nullable=False),
    sa.Column('modality', sa.String(length=16), nullable=True),
    sa.Column('reason', sa.Text(), nullable=False),
    sa.Column('priority', sa.String(length=16), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('business_status', sa.String(length=64), nullable=False),
    sa.Column('status_reason', sa.Text(), nullable=False),
    sa.Column('order_id', sa.Integer(), nullable=True),
    sa.Column('source', sa.String(length=16), nullable=False),
    sa.Column('external_id', sa.String(length=128), nullable=True),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['order_id'], ['orders.id'], ),
    sa.ForeignKeyConstraint(['owner_id'], ['users.id'], ),
    sa.ForeignKeyConstraint(['patient_id'], ['patients.id'], ),
    sa.ForeignKeyConstraint(['performer_org_id'], ['organizations.id'], ),
    sa.ForeignKeyConstraint(['requester_id'], ['users.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('source', 'external_id', name='uq_referrals_source_external')
    )
    with op.batch_alter_table('referrals', schema=None) as batch_op:
        batch_op.create_index('ix_referrals_order', ['order_id'], unique=False)
        batch_op.create_index('ix_referrals_owner', ['owner_id', 'status'], unique=False)
        batch_op.create_index('ix_referrals_patient', ['patient_id'], unique=False)
        batch_op.create_index('ix_referrals_performer', ['performer_kind', 'performer_org_id', 'status'], unique=False)
        batch_op.create_index('ix_referrals_requester', ['requester_id', 'status'], unique=False)

    op.create_table('access_grants',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=False),
    sa.Column('study_id', sa.Integer(), nullable=True),
    sa.Column('patient_id', sa.Integer(), nullable=True),
    sa.Column('source', sa.String(length=16), nullable=False),
    sa.Column('granted_by', sa.String(length=128), nullable=False),
    sa.Column('expires_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('revoked_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['patient_id'], ['patients.id'], ),
    sa.ForeignKeyConstraint(['study_id'], ['studies.id'], ),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('access_grants', schema=None) as batch_op:
        batch_op.create_index('ix_access_grants_user_patient', ['user_id', 'patient_id'], unique=False)
        batch_op.create_index('ix_access_grants_user_study', ['user_id', 'study_id'], unique=False)

    op.create_table('diagnostic_reports',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('referral_id', sa.Integer(), nullable=True),
    sa.Column('patient_id', sa.Integer(), nullable=False),
    sa.Column('study_id', sa.Integer(), nullable=True),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('code', sa.String(length=64), nullable=False),
    sa.Column('code_display', sa.String(length=200), nullable=False),
    sa.Column('conclusion', sa.Text(), nullable=False),
    sa.Column('author_id', sa.Integer(), nullable=True),
    sa.Column('presented_form', sa.JSON(), nullable=False),
    sa.Column('source', sa.String(length=16), nullable=False),
    sa.Column('issued_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['author_id'], ['users.id'], ),
    sa.ForeignKeyConstraint(['patient_id'], ['patients.id'], ),
    sa.ForeignKeyConstraint(['referral_id'], ['referrals.id'], ),
    sa.ForeignKeyConstraint(['study_id'], ['studies.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('diagnostic_reports', schema=None) as batch_op:
        batch_op.create_index('ix_diagnostic_reports_patient', ['patient_id'], unique=False)
        batch_op.create_index('ix_diagnostic_reports_referral', ['referral_id'], unique=False)

    op.create_table('referral_documents',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('referral_id', sa.Integer(), nullable=False),
    sa.Column('resource_type', sa.String(length=32), nullable=False),
    sa.Column('content', sa.JSON(), nullable=False),
    sa.ForeignKeyConstraint(['referral_id'], ['referrals.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('referral_documents', schema=None) as batch_op:
        batch_op.create_index('ix_referral_documents_referral', ['referral_id'], unique=False)

    op.create_table('referral_events',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('referral_id', sa.Integer(), nullable=False),
    sa.Column('from_status', sa.String(length=16), nullable=False),
    sa.Column('to_status', sa.String(length=16), nullable=False),
    sa.Column('actor', sa.String(length=128), nullable=False),
    sa.Column('reason', sa.Text(), nullable=False),
    sa.Column('at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['referral_id'], ['referrals.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('referral_events', schema=None) as batch_op:
        batch_op.create_index('ix_referral_events_referral', ['referral_id', 'id'], unique=False)

    op.create_table('referral_studies',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('referral_id', sa.Integer(), nullable=False),
    sa.Column('study_id', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['referral_id'], ['referrals.id'], ),
    sa.ForeignKeyConstraint(['study_id'], ['studies.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('referral_id', 'study_id')
    )
    with op.batch_alter_table('referral_studies', schema=None) as batch_op:
        batch_op.create_index('ix_referral_studies_study', ['study_id'], unique=False)

    with op.batch_alter_table('studies', schema=None) as batch_op:
        batch_op.add_column(sa.Column('uploaded_by', sa.Integer(), nullable=True))
        batch_op.create_foreign_key('fk_studies_uploaded_by_users', 'users', ['uploaded_by'], ['id'])
        batch_op.create_index('ix_studies_uploaded_by', ['uploaded_by'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('studies', schema=None) as batch_op:
        # WARNING: constraint name is None; this directive will fail as
        # rendered.  Add a name, or use a naming convention; see
        # https://alembic.sqlalchemy.org/en/latest/naming.html
        batch_op.drop_index('ix_studies_uploaded_by')
        batch_op.drop_constraint('fk_studies_uploaded_by_users', type_='foreignkey')
        batch_op.drop_column('uploaded_by')

    with op.batch_alter_table('referral_studies', schema=None) as batch_op:
        batch_op.drop_index('ix_referral_studies_study')

    op.drop_table('referral_studies')
    with op.batch_alter_table('referral_events', schema=None) as batch_op:
        batch_op.drop_index('ix_referral_events_referral')

    op.drop_table('referral_events')
    with op.batch_alter_table('referral_documents', schema=None) as batch_op:
        batch_op.drop_index('ix_referral_documents_referral')

    op.drop_table('referral_documents')
    with op.batch_alter_table('diagnostic_reports', schema=None) as batch_op:
        batch_op.drop_index('ix_diagnostic_reports_referral')
        batch_op.drop_index('ix_diagnostic_reports_patient')

    op.drop_table('diagnostic_reports')
    with op.batch_alter_table('access_grants', schema=None) as batch_op:
        batch_op.drop_index('ix_access_grants_user_study')
        batch_op.drop_index('ix_access_grants_user_patient')

    op.drop_table('access_grants')
    with op.batch_alter_table('referrals', schema=None) as batch_op:
        batch_op.drop_index('ix_referrals_requester')
        batch_op.drop_index('ix_referrals_performer')
        batch_op.drop_index('ix_referrals_patient')
        batch_op.drop_index('ix_referrals_owner')
        batch_op.drop_index('ix_referrals_order')

    op.drop_table('referrals')
