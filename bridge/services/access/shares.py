"""Sharing a study, or every study of a patient, with a clinician; revoking a share.

A clinician may share only what they may see themselves; operators, admins and systems may
share anything. A patient's consent (FHIR Consent, recorded by the MIS or an operator)
shares all of that patient's studies with the practitioner it names. Every share and
revocation is an audit record.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from bridge.domain import Identifier
from bridge.errors import Conflict, MappingFailed, NotFound
from bridge.services.access.visibility import study_visible
from bridge.services.auth.principal import CLINICIAN_ROLES, Principal
from bridge.services.auth.users import active_user
from bridge.services.patients.mpi import resolve_patient
from bridge.store.archive_models import Study
from bridge.store.audit import append_audit
from bridge.store.models import Patient, utcnow
from bridge.store.people_models import User
from bridge.store.referral_models import AccessGrant


def _grantee(session: Session, ref: str) -> User:
    user = active_user(session, ref, location="user")
    if user.role not in CLINICIAN_ROLES:
        raise MappingFailed("studies are shared with clinicians (operators see all)",
                            location="user")
    return user


def share(session: Session, principal: Principal, *, user: str,
          study_uid: str | None = None, patient: Identifier | None = None,
          expires_at: datetime | None = None, source: str = "share") -> AccessGrant:
    """Record a share (``source='consent'`` for a patient's consent); returns the grant."""
    if (study_uid is None) == (patient is None):
        raise MappingFailed("share a study or a patient's studies", location="study_uid")
    if expires_at is not None and expires_at <= utcnow():
        raise MappingFailed("the share would already have expired", location="expires_at")
    if source not in ("share", "consent"):
        raise MappingFailed("source is share or consent", location="source")
    if source == "consent" and principal.is_clinician:
        raise MappingFailed("a consent is recorded by the MIS or an operator", location="source")
    grantee = _grantee(session, user)
    study_id = patient_id = None
    patient_ref = None
    if study_uid is not None:
        query = select(Study.id, Study.patient_id).where(Study.study_instance_uid == study_uid)
        if principal.is_clinician:
            query = query.where(study_visible(principal.id))
        row = session.execute(query).first()
        if row is None:
            raise NotFound(f"study {study_uid} is not in the archive", location="study_uid")
        study_id, patient_ref = int(row.id), (f"Patient/{row.patient_id}"
                                              if row.patient_id else None)
    else:
        assert patient is not None
        patient_id = resolve_patient(session, patient)
        if patient_id is None:
            raise NotFound("the patient is not known to the bridge", location="patient")
        if principal.is_clinician:
            raise MappingFailed("a clinician shares studies one by one", location="patient")
        patient_ref = f"Patient/{patient_id}"
    grant = AccessGrant(user_id=grantee.id, study_id=study_id, patient_id=patient_id,
                        source=source, granted_by=principal.actor[:128], expires_at=expires_at)
    session.add(grant)
    session.flush()
    append_audit(session, actor=principal.actor, action="share", entity="access_grant",
                 entity_id=str(grant.id), patient_ref=patient_ref,
                 details={"to": f"Practitioner/{grantee.id}", "source": source,
                          "study_uid": study_uid,
                          "expires_at": expires_at.isoformat() if expires_at else None})
    return grant


def revoke(session: Session, principal: Principal, grant_id: int) -> AccessGrant:
    """End a share now; the one who shared it, operators and admins may."""
    grant = session.get(AccessGrant, grant_id)
    if grant is None or (principal.is_clinician and grant.granted_by != principal.actor):
        raise NotFound(f"no share {grant_id}", location="id")
    if grant.revoked_at is not None:
        raise Conflict(f"share {grant_id} is already revoked", location="id")
    grant.revoked_at = utcnow()
    append_audit(session, actor=principal.actor, action="share_revoke",
                 entity="access_grant", entity_id=str(grant.id))
    session.flush()
    return grant


def record_consent(session: Session, principal: Principal, patient_pk: int,
                   practitioners: tuple[int, ...], expires_at: datetime | None
                   ) -> list[AccessGrant]:
    """A patient's consent (FHIR Consent): all their studies shared with each practitioner."""
    patient = session.get(Patient, patient_pk)
    if patient is None or not patient.identifiers:
        raise NotFound(f"Patient/{patient_pk} is not known", location="Consent.patient")
    primary = patient.identifiers[0]
    return [share(session, principal, user=f"Practitioner/{practitioner}",
                  patient=Identifier(primary.value, primary.issuer), expires_at=expires_at,
                  source="consent")
            for practitioner in practitioners]
