"""directory of people and places, clinicians' logins, a hash-chained audit trail

Organizations and users (a Practitioner with one PractitionerRole each), login sessions,
and four columns that make ``audit_log`` a chain: ``seq``, ``prev_hash``, ``hash`` (see
``bridge.store.audit``), plus ``outcome`` and ``patient_ref``. Existing audit rows are
chained in ``id`` order, with the HMAC key of ``BRIDGE_AUDIT_HMAC_KEY`` when one is set.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-07 12:30:00.000000
"""

from __future__ import annotations

import json
import os
from datetime import datetime

import sqlalchemy as sa
from alembic import op

from bridge.mapping.audit.chain import GENESIS, AuditFields, link_hash

revision = '0010'
down_revision = '0009'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'organizations',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('identifier', sa.String(length=64), nullable=False),
        sa.Column('name', sa.String(length=200), nullable=False),
        sa.Column('kind', sa.String(length=16), nullable=False),
        sa.Column('active', sa.Boolean(), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('identifier'),
    )
    op.create_table(
        'users',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('username', sa.String(length=64), nullable=False),
        sa.Column('display_name', sa.String(length=200), nullable=False),
        sa.Column('role', sa.String(length=16), nullable=False),
        sa.Column('organization_id', sa.Integer(), nullable=True),
        sa.Column('specialty', sa.String(length=64), nullable=True),
        sa.Column('identifier', sa.String(length=64), nullable=True),
        sa.Column('password_hash', sa.String(length=200), nullable=True),
        sa.Column('oidc_subject', sa.String(length=200), nullable=True),
        sa.Column('disabled', sa.Boolean(), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(['organization_id'], ['organizations.id']),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('username'),
        sa.UniqueConstraint('identifier'),
        sa.UniqueConstraint('oidc_subject'),
    )
    op.create_table(
        'login_sessions',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('user_id', sa.Integer(), nullable=False),
        sa.Column('token_hash', sa.String(length=64), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('expires_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('revoked', sa.Boolean(), nullable=False),
        sa.ForeignKeyConstraint(['user_id'], ['users.id']),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('token_hash'),
    )
    op.create_index('ix_login_sessions_user', 'login_sessions', ['user_id'])

    with op.batch_alter_table('audit_log', schema=None) as batch_op:
        batch_op.add_column(sa.Column('seq', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('outcome', sa.String(length=16), nullable=False,
                                      server_default='success'))
        batch_op.add_column(sa.Column('patient_ref', sa.String(length=96), nullable=True))
        batch_op.add_column(sa.Column('prev_hash', sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column('hash', sa.String(length=64), nullable=True))
    _chain_existing_rows()
    with op.batch_alter_table('audit_log', schema=None) as batch_op:
        batch_op.alter_column('seq', existing_type=sa.Integer(), nullable=False)
        batch_op.alter_column('prev_hash', existing_type=sa.String(length=64), nullable=False)
        batch_op.alter_column('hash', existing_type=sa.String(length=64), nullable=False)
        batch_op.alter_column('outcome', existing_type=sa.String(length=16),
                              server_default=None)
        batch_op.create_index('ix_audit_seq', ['seq'], unique=True)
        batch_op.create_index('ix_audit_actor_at', ['actor', 'at'])
        batch_op.create_index('ix_audit_patient', ['patient_ref'])


def _chain_existing_rows() -> None:
    conn = op.get_bind()
    key = os.environ.get('BRIDGE_AUDIT_HMAC_KEY', '').encode('utf-8') or None
    rows = conn.execute(sa.text(
        'SELECT id, at, actor, action, entity, entity_id, details FROM audit_log ORDER BY id'
    )).all()
    prev = GENESIS
    table = sa.table('audit_log', sa.column('id'), sa.column('seq'), sa.column('prev_hash'),
                     sa.column('hash'))
    for seq, row in enumerate(rows, start=1):
        details = row.details
        if isinstance(details, str):  # SQLite hands JSON back as text here
            details = json.loads(details)
        at = row.at
        if isinstance(at, str):
            at = datetime.fromisoformat(at)
        fields = AuditFields(seq=seq, at=at, actor=row.actor, action=row.action,
                             entity=row.entity, entity_id=row.entity_id, outcome='success',
                             patient_ref=None, details=details or {})
        digest = link_hash(fields, prev, key)
        conn.execute(table.update().where(table.c.id == row.id)
                     .values(seq=seq, prev_hash=prev, hash=digest))
        prev = digest


def downgrade() -> None:
    with op.batch_alter_table('audit_log', schema=None) as batch_op:
        batch_op.drop_index('ix_audit_patient')
        batch_op.drop_index('ix_audit_actor_at')
        batch_op.drop_index('ix_audit_seq')
        batch_op.drop_column('hash')
        batch_op.drop_column('prev_hash')
        batch_op.drop_column('patient_ref')
        batch_op.drop_column('outcome')
        batch_op.drop_column('seq')
    op.drop_index('ix_login_sessions_user', table_name='login_sessions')
    op.drop_table('login_sessions')
    op.drop_table('users')
    op.drop_table('organizations')
