"""Patient use cases: find by identifier (following merges), create/update, merge, re-identify.

Concurrency: the identifier (value, issuer) is unique in the database, so two writers that
race to create the same new patient cannot both succeed; the loser's savepoint rolls back
and it finds the winner's row (see :func:`upsert_patient`).
"""

from __future__ import annotations

from sqlalchemy import and_, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from bridge.domain import Identifier, PatientData
from bridge.errors import Conflict, MappingFailed, NotFound
from bridge.store.models import Order, Patient, PatientIdentifier

MAX_MERGE_DEPTH = 32


def resolve_patient(session: Session, identifier: Identifier) -> int | None:
    """The surviving patient's id for an identifier, or None when nobody has it."""
    row = session.execute(
        select(Patient.id, Patient.merged_into_id)
        .join(PatientIdentifier, PatientIdentifier.patient_id == Patient.id)
        .where(PatientIdentifier.value == identifier.value,
               PatientIdentifier.issuer == identifier.issuer)
    ).first()
    if row is None:
        return None
    return row.id if row.merged_into_id is None else follow_merges(session, row.merged_into_id)


def follow_merges(session: Session, patient_id: int) -> int:
    for _ in range(MAX_MERGE_DEPTH):
        merged_into = session.execute(
            select(Patient.merged_into_id).where(Patient.id == patient_id)
        ).scalar_one()
        if merged_into is None:
            return patient_id
        patient_id = merged_into
    raise Conflict(f"patient {patient_id}: merge chain longer than {MAX_MERGE_DEPTH}")


def upsert_patient(session: Session, data: PatientData) -> int:
    """Create the patient or update what the sender said; returns the surviving patient id."""
    if not data.identifiers or not data.primary.value:
        raise MappingFailed("patient identifier missing", location="PID-3")
    patient_id = resolve_patient(session, data.primary)
    if patient_id is None:
        try:
            with session.begin_nested():
                patient_id = _create(session, data)
        except IntegrityError:
            # Another writer created this patient between our look-up and insert.
            patient_id = resolve_patient(session, data.primary)
            if patient_id is None:
                raise
            _update(session, patient_id, data)
    else:
        _update(session, patient_id, data)
    return patient_id


def _create(session: Session, data: PatientData) -> int:
    patient = Patient(
        name=data.name or "",
        name_search=(data.name or "").casefold(),
        birth_date=data.birth_date or None,
        sex=data.sex or None,
    )
    session.add(patient)
    session.flush()
    owned = _owners(session, data.identifiers[1:])
    position = 0
    for identifier in data.identifiers:
        if identifier is not data.primary and (identifier.value, identifier.issuer) in owned:
            continue  # belongs to someone else: the primary ID decides who this is
        session.add(PatientIdentifier(
            patient_id=patient.id, value=identifier.value, issuer=identifier.issuer,
            id_type=identifier.id_type, position=position,
        ))
        position += 1
    session.flush()
    return patient.id


def _update(session: Session, patient_id: int, data: PatientData) -> None:
    patient = session.get(Patient, patient_id)
    assert patient is not None
    if data.name is not None and data.name != patient.name:
        patient.name = data.name
        patient.name_search = data.name.casefold()
    if data.birth_date is not None and (data.birth_date or None) != patient.birth_date:
        patient.birth_date = data.birth_date or None
    if data.sex is not None and (data.sex or None) != patient.sex:
        patient.sex = data.sex or None
    extra = data.identifiers[1:]
    if extra:
        owned = _owners(session, extra)
        new = [i for i in extra if (i.value, i.issuer) not in owned]
        if new:
            last = session.execute(
                select(PatientIdentifier.position)
                .where(PatientIdentifier.patient_id == patient_id)
                .order_by(PatientIdentifier.position.desc()).limit(1)
            ).scalar() or 0
            for offset, identifier in enumerate(new, start=1):
                session.add(PatientIdentifier(
                    patient_id=patient_id, value=identifier.value, issuer=identifier.issuer,
                    id_type=identifier.id_type, position=last + offset,
                ))
    session.flush()


def _owners(session: Session, identifiers: list[Identifier]) -> dict[tuple[str, str], int]:
    if not identifiers:
        return {}
    rows = session.execute(
        select(PatientIdentifier.value, PatientIdentifier.issuer, PatientIdentifier.patient_id)
        .where(or_(*(and_(PatientIdentifier.value == i.value, PatientIdentifier.issuer == i.issuer)
                     for i in identifiers)))
    )
    return {(r.value, r.issuer): r.patient_id for r in rows}


def merge_patients(session: Session, survivor: PatientData, prior: Identifier) -> int:
    """A40: everything of the prior patient moves to the survivor; the prior ID keeps resolving.

    An unknown prior ID is recorded as a merged-away patient, so images or orders that still
    arrive with the old ID land on the survivor.
    """
    survivor_id = upsert_patient(session, survivor)
    prior_id = resolve_patient(session, prior)
    if prior_id is None:
        stub = Patient(name="", name_search="", merged_into_id=survivor_id)
        session.add(stub)
        session.flush()
        session.add(PatientIdentifier(patient_id=stub.id, value=prior.value,
                                      issuer=prior.issuer, id_type=prior.id_type))
        session.flush()
        return survivor_id
    if prior_id == survivor_id:
        raise Conflict("prior and surviving patient are the same patient", location="MRG-1")
    session.execute(update(Order).where(Order.patient_id == prior_id)
                    .values(patient_id=survivor_id))
    session.execute(update(Patient).where(Patient.merged_into_id == prior_id)
                    .values(merged_into_id=survivor_id))
    session.execute(update(Patient).where(Patient.id == prior_id)
                    .values(merged_into_id=survivor_id))
    return survivor_id


def change_identifier(session: Session, new: Identifier, old: Identifier) -> int:
    """A47: the identifier ``old`` becomes ``new`` on the same patient."""
    row = session.execute(
        select(PatientIdentifier).where(PatientIdentifier.value == old.value,
                                        PatientIdentifier.issuer == old.issuer)
    ).scalar_one_or_none()
    if row is None:
        raise NotFound(f"no patient with identifier {old.value} ({old.issuer or 'no issuer'})",
                       location="MRG-1")
    issuer = new.issuer or old.issuer
    clash = session.execute(
        select(PatientIdentifier.patient_id).where(PatientIdentifier.value == new.value,
                                                   PatientIdentifier.issuer == issuer)
    ).scalar_one_or_none()
    if clash is not None and clash != row.patient_id:
        raise Conflict(f"identifier {new.value} already belongs to another patient",
                       location="PID-3")
    if clash is None:
        row.value, row.issuer = new.value, issuer
        row.id_type = new.id_type or row.id_type
    session.flush()
    return row.patient_id
