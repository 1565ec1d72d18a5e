"""Patient use cases: find by identifier (following merges), create/update, merge, re-identify.

This is the HL7 hot path, so it speaks SQLAlchemy Core with statements built once: one
look-up per message for a known patient, an UPDATE only when something changed.

Concurrency: the identifier (value, issuer) is unique in the database, so two writers that
race to create the same new patient cannot both succeed: the loser's claim of the identifier
(INSERT ... ON CONFLICT DO NOTHING) comes back empty, it removes its own fresh row and
uses the winner's (see :func:`upsert_patient`).
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Connection, bindparam, delete, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from bridge.domain import Identifier, PatientData
from bridge.errors import Conflict, MappingFailed, NotFound
from bridge.mapping.patients.rules import demographic_changes
from bridge.store.models import Order, Patient, PatientIdentifier, table_of, utcnow

MAX_MERGE_DEPTH = 32
P = table_of(Patient)
PI = table_of(PatientIdentifier)

_OWNED = PI.alias("owned")
#: The patient holding an identifier, with every identifier it has (one row each): one
#: round trip tells whether anything about a known patient needs writing.
_RESOLVE = (
    select(P.c.id, P.c.merged_into_id, P.c.name, P.c.birth_date, P.c.sex,
           _OWNED.c.value.label("owned_value"), _OWNED.c.issuer.label("owned_issuer"))
    .join(PI, PI.c.patient_id == P.c.id)
    .join(_OWNED, _OWNED.c.patient_id == P.c.id)
    .where(PI.c.value == bindparam("value"), PI.c.issuer == bindparam("issuer"))
)
_PATIENT = (
    select(P.c.id, P.c.merged_into_id, P.c.name, P.c.birth_date, P.c.sex,
           _OWNED.c.value.label("owned_value"), _OWNED.c.issuer.label("owned_issuer"))
    .join(_OWNED, _OWNED.c.patient_id == P.c.id, isouter=True)
    .where(P.c.id == bindparam("pid"))
)
_INSERT_PATIENT = insert(P).returning(P.c.id)
_DELETE_PATIENT = delete(P).where(P.c.id == bindparam("pid"))
#: ON CONFLICT DO NOTHING: a taken identifier is skipped, never an error (no savepoint needed).
_INSERT_IDENTIFIER_IF_FREE = {
    "sqlite": sqlite.insert(PI).on_conflict_do_nothing(),
    "postgresql": postgresql.insert(PI).on_conflict_do_nothing(),
}
_CLAIM_IDENTIFIER = {name: stmt.returning(PI.c.id)
                     for name, stmt in _INSERT_IDENTIFIER_IF_FREE.items()}


@dataclass(frozen=True, slots=True)
class _Found:
    id: int
    name: str
    birth_date: str | None
    sex: str | None
    identifiers: frozenset[tuple[str, str]]


def resolve_patient(session: Session, identifier: Identifier) -> int | None:
    """The surviving patient's id for an identifier, or None when nobody has it."""
    found = _lookup(session.connection(), identifier)
    return None if found is None else found.id


def lookup_identifier(conn: Connection, identifier: Identifier) -> _Found | None:
    """The surviving patient holding ``identifier``, with its demographics and identifiers."""
    return _lookup(conn, identifier)


def _lookup(conn: Connection, identifier: Identifier) -> _Found | None:
    rows = conn.execute(_RESOLVE, {"value": identifier.value,
                                   "issuer": identifier.issuer}).all()
    for _ in range(MAX_MERGE_DEPTH):
        if not rows:
            return None
        first = rows[0]
        if first.merged_into_id is None:
            return _Found(int(first.id), first.name, first.birth_date, first.sex,
                          frozenset((r.owned_value, r.owned_issuer) for r in rows))
        rows = conn.execute(_PATIENT, {"pid": first.merged_into_id}).all()
    raise Conflict(f"merge chain longer than {MAX_MERGE_DEPTH}")


def upsert_patient(session: Session, data: PatientData) -> int:
    """Create the patient or update what the sender said; returns the surviving patient id."""
    if not data.identifiers or not data.primary.value:
        raise MappingFailed("patient identifier missing", location="PID-3")
    conn = session.connection()
    found = _lookup(conn, data.primary)
    if found is None:
        patient_id = _create(conn, data)
        if patient_id is not None:
            return patient_id
        # Another writer created this patient between our look-up and insert.
        found = _lookup(conn, data.primary)
        if found is None:
            raise Conflict(f"identifier {data.primary.value} could not be claimed",
                           location="PID-3")
    _update(conn, found, data)
    return found.id


def _create(conn: Connection, data: PatientData, merged_into: int | None = None) -> int | None:
    """Insert the patient and claim its primary identifier; None when another writer won."""
    name = data.name or ""
    now = utcnow()
    patient_id = int(conn.execute(_INSERT_PATIENT, {
        "name": name, "name_search": name.casefold(), "birth_date": data.birth_date or None,
        "sex": data.sex or None, "merged_into_id": merged_into, "created_at": now,
        "updated_at": now,
    }).scalar_one())
    primary = data.primary
    claimed = conn.execute(_CLAIM_IDENTIFIER[conn.dialect.name], {
        "patient_id": patient_id, "value": primary.value, "issuer": primary.issuer,
        "id_type": primary.id_type, "position": 0}).first()
    if claimed is None:
        conn.execute(_DELETE_PATIENT, {"pid": patient_id})
        return None
    _add_identifiers(conn, patient_id, data.identifiers[1:])
    return patient_id


def _add_identifiers(conn: Connection, patient_id: int, identifiers: list[Identifier],
                     first_position: int = 1) -> None:
    if identifiers:
        conn.execute(_INSERT_IDENTIFIER_IF_FREE[conn.dialect.name], [
            {"patient_id": patient_id, "value": i.value, "issuer": i.issuer,
             "id_type": i.id_type, "position": n}
            for n, i in enumerate(identifiers, start=first_position)
        ])


def _update(conn: Connection, found: _Found, data: PatientData) -> None:
    changes: dict[str, object] = dict(
        demographic_changes(found.name, found.birth_date, found.sex, data))
    if "name" in changes:
        changes["name_search"] = data.name.casefold() if data.name else ""
    if changes:
        conn.execute(update(P).where(P.c.id == found.id).values(updated_at=utcnow(), **changes))
    new = [i for i in data.identifiers[1:] if (i.value, i.issuer) not in found.identifiers]
    _add_identifiers(conn, found.id, new, first_position=len(found.identifiers))


def merge_patients(session: Session, survivor: PatientData, prior: Identifier) -> int:
    """A40: everything of the prior patient moves to the survivor; the prior ID keeps resolving.

    An unknown prior ID is recorded as a merged-away patient, so images or orders that still
    arrive with the old ID land on the survivor.
    """
    survivor_id = upsert_patient(session, survivor)
    conn = session.connection()
    prior_found = _lookup(conn, prior)
    if prior_found is None:
        if _create(conn, PatientData(identifiers=[prior]), merged_into=survivor_id) is None:
            raise Conflict("prior patient identifier was claimed concurrently", location="MRG-1")
        return survivor_id
    prior_id = prior_found.id
    if prior_id == survivor_id:
        raise Conflict("prior and surviving patient are the same patient", location="MRG-1")
    conn.execute(update(table_of(Order)).where(table_of(Order).c.patient_id == prior_id)
                 .values(patient_id=survivor_id))
    conn.execute(update(P).where(P.c.merged_into_id == prior_id)
                 .values(merged_into_id=survivor_id))
    conn.execute(update(P).where(P.c.id == prior_id)
                 .values(merged_into_id=survivor_id, updated_at=utcnow()))
    return survivor_id


def change_identifier(session: Session, new: Identifier, old: Identifier) -> int:
    """A47: the identifier ``old`` becomes ``new`` on the same patient."""
    conn = session.connection()
    row = conn.execute(select(PI.c.id, PI.c.patient_id, PI.c.id_type).where(
        PI.c.value == old.value, PI.c.issuer == old.issuer)).first()
    if row is None:
        raise NotFound(f"no patient with identifier {old.value} ({old.issuer or 'no issuer'})",
                       location="MRG-1")
    issuer = new.issuer or old.issuer
    clash = conn.execute(select(PI.c.patient_id).where(
        PI.c.value == new.value, PI.c.issuer == issuer)).scalar_one_or_none()
    if clash is not None and clash != row.patient_id:
        raise Conflict(f"identifier {new.value} already belongs to another patient",
                       location="PID-3")
    if clash is None:
        conn.execute(update(PI).where(PI.c.id == row.id).values(
            value=new.value, issuer=issuer, id_type=new.id_type or row.id_type))
    return int(row.patient_id)
