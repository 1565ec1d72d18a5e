"""fewer index pages per HL7 batch: partial indexes, one redundant index dropped

SQLite writes every page a transaction touched to its log at each commit, so every index a
new row enters costs each HL7 batch a page or two. A new patient has no ``merged_into_id``
and an order from the MIS usually no filler number yet: those indexes keep only rows with a
value (look-ups compare the columns with a value, which implies ``IS NOT NULL``, so both
databases still use them). The message log's status index keeps only messages not
processed, the ones browsed by status. ``ix_procedure_steps_order_id`` repeated the leading
column of ``uq_step_order_sps``.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-22 05:05:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None

_PARTIAL = (
    ("patients", "ix_patients_merged_into_id", "merged_into_id"),
    ("orders", "ix_orders_filler", "filler_number"),
)


_NOT_PROCESSED = "status <> 'processed'"


def upgrade() -> None:
    for table, name, column in _PARTIAL:
        op.drop_index(name, table_name=table)
        where = sa.text(f"{column} IS NOT NULL")
        op.create_index(name, table, [column], unique=False,
                        sqlite_where=where, postgresql_where=where)
    op.drop_index("ix_hl7_messages_status_received", table_name="hl7_messages")
    op.create_index("ix_hl7_messages_status_received", "hl7_messages", ["status", "received_at"],
                    unique=False, sqlite_where=sa.text(_NOT_PROCESSED),
                    postgresql_where=sa.text(_NOT_PROCESSED))
    op.drop_index("ix_procedure_steps_order_id", table_name="procedure_steps")


def downgrade() -> None:
    for table, name, column in _PARTIAL:
        op.drop_index(name, table_name=table)
        op.create_index(name, table, [column], unique=False)
    op.drop_index("ix_hl7_messages_status_received", table_name="hl7_messages")
    op.create_index("ix_hl7_messages_status_received", "hl7_messages", ["status", "received_at"],
                    unique=False)
    op.create_index("ix_procedure_steps_order_id", "procedure_steps", ["order_id"],
                    unique=False)
