"""Hash-chaining of audit records.

Each record's hash covers its own fields and the previous record's hash, so changing any
field of any record, or taking a record out, breaks every hash after it; ``seq`` has no gaps,
so a removed record at the end is seen as soon as the head is compared with one recorded
elsewhere (the syslog copy, a printed ``bridge audit verify`` head). With a key the hash is
an HMAC: somebody who can write to the database but does not hold the key cannot forge a
consistent chain after editing it.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final

#: The hash of "nothing before": the first record's prev_hash.
GENESIS: Final = "0" * 64


@dataclass(frozen=True, slots=True)
class AuditFields:
    """What one audit record says, as hashed (identifiers only, never names)."""

    seq: int
    at: datetime
    actor: str
    action: str
    entity: str
    entity_id: str
    outcome: str
    patient_ref: str | None
    details: Mapping[str, object]


def canonical_time(at: datetime) -> str:
    """UTC, microseconds: SQLite hands datetimes back without their zone, PostgreSQL with it."""
    if at.tzinfo is not None:
        at = at.astimezone(UTC).replace(tzinfo=None)
    return at.strftime("%Y-%m-%dT%H:%M:%S.%f")


def canonical_bytes(fields: AuditFields, prev_hash: str) -> bytes:
    document = {
        "seq": fields.seq, "at": canonical_time(fields.at), "actor": fields.actor,
        "action": fields.action, "entity": fields.entity, "entity_id": fields.entity_id,
        "outcome": fields.outcome, "patient": fields.patient_ref,
        "details": dict(fields.details), "prev": prev_hash,
    }
    return json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      default=str).encode("utf-8")


def link_hash(fields: AuditFields, prev_hash: str, key: bytes | None = None) -> str:
    """The record's hash: SHA-256 of its canonical form, or HMAC-SHA-256 with ``key``."""
    data = canonical_bytes(fields, prev_hash)
    if key:
        return hmac.new(key, data, hashlib.sha256).hexdigest()
    return hashlib.sha256(data).hexdigest()


@dataclass(frozen=True, slots=True)
class ChainBreak:
    """Where the chain stops holding, and why."""

    seq: int
    reason: str


def check_link(fields: AuditFields, prev_hash: str, stored_prev: str | None,
               stored_hash: str | None, expected_seq: int, key: bytes | None) -> ChainBreak | None:
    """Whether one stored record continues the chain (``None``) or where it breaks."""
    if fields.seq != expected_seq:
        gap = (f"record {expected_seq}" if fields.seq == expected_seq + 1
               else f"records {expected_seq}..{fields.seq - 1}")
        return ChainBreak(expected_seq, f"{gap} missing (removed)")
    if stored_prev != prev_hash:
        return ChainBreak(fields.seq, "prev_hash does not match the record before it")
    if stored_hash != link_hash(fields, prev_hash, key):
        return ChainBreak(fields.seq, "hash does not match the record's contents (edited)")
    return None
