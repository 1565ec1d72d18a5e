"""Appending to, reading and verifying the hash-chained audit trail (``audit_log``).

Every writer goes through :func:`append_audit`, in the caller's transaction, so the record is
committed with the change it describes or not at all. Appends are serialised so the chain is
a line, never a fork: SQLite's writers already queue on ``BEGIN IMMEDIATE``; PostgreSQL takes
a transaction-scoped advisory lock (held only until the caller commits); ``seq`` is unique
either way.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Final

from sqlalchemy import Connection, select, text
from sqlalchemy.orm import Session

from bridge.mapping.audit.chain import GENESIS, AuditFields, ChainBreak, check_link, link_hash
from bridge.store.archive_models import AuditRecord
from bridge.store.models import table_of, utcnow

AUDIT = table_of(AuditRecord)
#: pg_advisory_xact_lock key for audit appends ("audit" in ASCII).
_PG_LOCK_KEY: Final = 0x6175646974
_chain_key: bytes | None = None


def set_chain_key(key: bytes | None) -> None:
    """The HMAC key for new and verified records (from ``BRIDGE_AUDIT_HMAC_KEY``), set once
    by the composition root; without one the chain is plain SHA-256."""
    global _chain_key
    _chain_key = key or None


def append_audit(db: Session | Connection, *, actor: str, action: str, entity: str,
                 entity_id: str, details: Mapping[str, object] | None = None,
                 outcome: str = "success", patient_ref: str | None = None,
                 at: datetime | None = None) -> int:
    """Append one record in ``db``'s transaction and return its ``seq``."""
    conn = db.connection() if isinstance(db, Session) else db
    if conn.dialect.name == "postgresql":
        conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_LOCK_KEY})
    last = conn.execute(
        select(AUDIT.c.seq, AUDIT.c.hash).order_by(AUDIT.c.seq.desc()).limit(1)
    ).first()
    seq, prev_hash = (1, GENESIS) if last is None else (last.seq + 1, last.hash)
    fields = AuditFields(
        seq=seq, at=at or utcnow(), actor=actor[:128], action=action[:32], entity=entity[:32],
        entity_id=entity_id[:64], outcome=outcome,
        patient_ref=patient_ref[:96] if patient_ref else None,
        details=dict(details or {}),
    )
    conn.execute(AUDIT.insert().values(
        seq=seq, at=fields.at, actor=fields.actor, action=fields.action, entity=fields.entity,
        entity_id=fields.entity_id, outcome=outcome, patient_ref=fields.patient_ref,
        details=fields.details, prev_hash=prev_hash,
        hash=link_hash(fields, prev_hash, _chain_key),
    ))
    return seq


def fields_of(row: AuditRecord) -> AuditFields:
    return AuditFields(seq=row.seq, at=row.at, actor=row.actor, action=row.action,
                       entity=row.entity, entity_id=row.entity_id, outcome=row.outcome,
                       patient_ref=row.patient_ref, details=row.details or {})


@dataclass(frozen=True, slots=True)
class ChainReport:
    """What ``bridge audit verify`` found: how many records held, where it broke, the head."""

    checked: int
    head_seq: int
    head_hash: str
    broken: ChainBreak | None


def verify_chain(session: Session, *, batch: int = 5000) -> ChainReport:
    """Walk the whole chain in ``seq`` order; stop at the first break."""
    prev_hash, expected, checked = GENESIS, 1, 0
    for row in _in_order(session, batch):
        broken = check_link(fields_of(row), prev_hash, row.prev_hash, row.hash, expected,
                            _chain_key)
        if broken is not None:
            return ChainReport(checked, expected - 1, prev_hash, broken)
        prev_hash, expected, checked = row.hash, row.seq + 1, checked + 1
    return ChainReport(checked, expected - 1, prev_hash, None)


def _in_order(session: Session, batch: int) -> Iterator[AuditRecord]:
    after = 0
    while True:
        rows = session.execute(
            select(AuditRecord).where(AuditRecord.seq > after)
            .order_by(AuditRecord.seq).limit(batch)
        ).scalars().all()
        if not rows:
            return
        yield from rows
        after = rows[-1].seq
        session.expunge_all()


def search_audit(session: Session, *, actor: str | None = None, action: str | None = None,
                 patient_ref: str | None = None, entity: str | None = None,
                 entity_id: str | None = None, outcome: str | None = None,
                 since: datetime | None = None, until: datetime | None = None,
                 limit: int = 100) -> list[AuditRecord]:
    """Records matching every given filter, newest first."""
    query = select(AuditRecord)
    for column, value in ((AuditRecord.actor, actor), (AuditRecord.action, action),
                          (AuditRecord.patient_ref, patient_ref),
                          (AuditRecord.entity, entity), (AuditRecord.entity_id, entity_id),
                          (AuditRecord.outcome, outcome)):
        if value is not None:
            query = query.where(column == value)
    if since is not None:
        query = query.where(AuditRecord.at >= since)
    if until is not None:
        query = query.where(AuditRecord.at < until)
    return list(session.execute(query.order_by(AuditRecord.seq.desc()).limit(limit)).scalars())
