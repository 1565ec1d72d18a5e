"""partial indexes for columns new HL7 rows leave empty

A new patient has no ``merged_into_id`` and an order from the MIS usually no filler number
yet; indexing only the rows that have one spares every HL7 batch an index page per table
(SQLite writes every touched page to its log at each commit). Queries compare the columns
with a value, which implies ``IS NOT NULL``, so both databases still use the indexes.

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


def upgrade() -> None:
    for table, name, column in _PARTIAL:
        op.drop_index(name, table_name=table)
        where = sa.text(f"{column} IS NOT NULL")
        op.create_index(name, table, [column], unique=False,
                        sqlite_where=where, postgresql_where=where)


def downgrade() -> None:
    for table, name, column in _PARTIAL:
        op.drop_index(name, table_name=table)
        op.create_index(name, table, [column], unique=False)
