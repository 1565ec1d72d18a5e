"""PostgreSQL: an index for name prefix matching (PatientName=abc*) in any collation.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-21
"""

from __future__ import annotations

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # A plain b-tree serves LIKE 'prefix%' only under the C collation; text_pattern_ops
    # serves it under every collation. SQLite turns the prefix into a range itself.
    if op.get_bind().dialect.name == "postgresql":
        op.execute("CREATE INDEX IF NOT EXISTS ix_patients_name_search_pattern "
                   "ON patients (name_search text_pattern_ops)")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP INDEX IF EXISTS ix_patients_name_search_pattern")
