"""unscheduled exams: studies linked to a patient without an order, queue kinds

A study no order matches, whose PatientID names a patient the MIS registered, is linked to
that patient (``reconciliation = 'linked'``, no ``order_id``). Queued studies say why they
wait as a code (``queue_kind``: unmatched, patient_mismatch, conflict), and a mismatch keeps
the MIS patient its PatientID names (``candidate_patient_id``) to show beside the
modality's values. Existing queued and conflict rows get their kind.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-07 07:30:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('studies', schema=None) as batch_op:
        batch_op.add_column(sa.Column('queue_kind', sa.String(length=32), nullable=True))
        batch_op.add_column(sa.Column('candidate_patient_id', sa.Integer(), nullable=True))
        batch_op.create_foreign_key('fk_studies_candidate_patient_id_patients', 'patients',
                                    ['candidate_patient_id'], ['id'])
    op.execute("UPDATE studies SET queue_kind = 'unmatched' WHERE reconciliation = 'queued'")
    op.execute("UPDATE studies SET queue_kind = 'conflict' WHERE reconciliation = 'conflict'")


def downgrade() -> None:
    # A linked study goes back to the queue it would have waited in before.
    op.execute("UPDATE studies SET reconciliation = 'queued', patient_id = NULL, "
               "queue_reason = 'linked to a patient by a later version; queued again' "
               "WHERE reconciliation = 'linked'")
    with op.batch_alter_table('studies', schema=None) as batch_op:
        batch_op.drop_constraint('fk_studies_candidate_patient_id_patients',
                                 type_='foreignkey')
        batch_op.drop_column('candidate_patient_id')
        batch_op.drop_column('queue_kind')
