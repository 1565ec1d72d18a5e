"""ImagingStudy and Endpoint resources from the archive index (the FHIR API's read side, and
what :mod:`bridge.services.fhir.publish` sends to a target server).

Ids: an ImagingStudy's FHIR id is its ``studies.id`` (decimal, no leading zeros), so a
reference stays valid while the study exists and needs no extra column. The subject is
``Patient/<patients.id>`` of the *current* patient (a patient merged by ADT A40 resolves to
the survivor: ``coalesce(merged_into_id, id)``), ``basedOn`` is ``ServiceRequest/<orders.id>``
with the accession (ACSN), and the endpoint is the bridge's own WADO-RS
``Endpoint/wado-rs``.

Only reconciled studies (matched or assigned) are ImagingStudies here: a study waiting in the
reconciliation queue has no MIS patient, and ``subject`` is required. Everything is read in
a fixed number of queries per page of studies (studies, series, instances, MIS values), never
one per instance.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

from sqlalchemy import Select, and_, func, or_, select
from sqlalchemy.orm import Session

from bridge.config.settings import Settings
from bridge.errors import NotFound
from bridge.mapping.dicom.patch import SubjectValues
from bridge.mapping.fhir import imaging_study as fis
from bridge.services.access.visibility import study_visible
from bridge.services.egress.objects import load_subjects
from bridge.services.links.viewer_links import resource_link
from bridge.store.archive_models import RECONCILED, Instance, Series, Study
from bridge.store.models import Order, Patient, PatientIdentifier, table_of

S = table_of(Study)
SE = table_of(Series)
I = table_of(Instance)  # noqa: E741
P = table_of(Patient)
PI = table_of(PatientIdentifier)
O = table_of(Order)  # noqa: E741

MAX_COUNT: Final = 1000
#: Studies per query when loading (keeps IN lists small on every database).
_BATCH: Final = 500


# ----------------------------------------------------------------------------- ids


def fhir_id(study_id: int) -> str:
    return str(study_id)


def study_id_of(resource_id: str) -> int | None:
    """``studies.id`` of a FHIR id, or None when it cannot be one (so the caller answers 404)."""
    if not resource_id.isdigit() or (len(resource_id) > 1 and resource_id[0] == "0"):
        return None
    value = int(resource_id)
    return value if 0 < value < 2**31 else None  # ids are INTEGER (32 bits on PostgreSQL)


def endpoint_reference() -> str:
    return f"Endpoint/{fis.ENDPOINT_ID}"


def wado_rs_base(settings: Settings) -> str:
    """The bridge's DICOMweb base: the Endpoint's address."""
    return f"{settings.base_url}/dicomweb"


def endpoint_resource(settings: Settings) -> dict[str, Any]:
    """The bridge's WADO-RS Endpoint (``Endpoint/wado-rs``) in the configured version."""
    return fis.endpoint(wado_rs_base(settings), version=settings.fhir_version,
                        name=f"{settings.ae_title} DICOMweb WADO-RS")


# ----------------------------------------------------------------------------- loading


@dataclass(frozen=True, slots=True)
class LoadedStudy:
    """A study from the index with its links to the MIS (as they are now)."""

    id: int
    record: fis.StudyRecord
    reconciliation: str
    state: str
    #: The current patient (after merges); None for an unreconciled study.
    patient_pk: int | None
    order_pk: int | None
    #: The MIS values (``egress.load_subjects``); None when unreconciled.
    subject: SubjectValues | None

    @property
    def reconciled(self) -> bool:
        return self.reconciliation in RECONCILED and self.patient_pk is not None


def load_studies(session: Session, study_ids: Iterable[int]) -> dict[int, LoadedStudy]:
    """The studies of ``study_ids`` found in the index, with series and instances."""
    ids = sorted(set(study_ids))
    found: dict[int, LoadedStudy] = {}
    for start in range(0, len(ids), _BATCH):
        found.update(_load_batch(session, ids[start:start + _BATCH]))
    return found


def _load_batch(session: Session, ids: Sequence[int]) -> dict[int, LoadedStudy]:
    conn = session.connection()
    rows = conn.execute(
        select(S, func.coalesce(P.c.merged_into_id, P.c.id).label("current_patient"))
        .select_from(S.outerjoin(P, P.c.id == S.c.patient_id))
        .where(S.c.id.in_(ids))
    ).all()
    if not rows:
        return {}
    series_rows = conn.execute(
        select(SE.c.id, SE.c.study_id, SE.c.series_instance_uid, SE.c.modality,
               SE.c.series_number, SE.c.description, SE.c.body_part, SE.c.num_instances)
        .where(SE.c.study_id.in_(ids))
    ).all()
    instance_rows = conn.execute(
        select(I.c.id, I.c.series_id, I.c.sop_instance_uid, I.c.sop_class_uid,
               I.c.instance_number)
        .where(I.c.study_id.in_(ids))
    ).all()
    instances_of: dict[int, list[Any]] = {}
    for instance in instance_rows:
        instances_of.setdefault(instance.series_id, []).append(instance)
    series_of: dict[int, list[fis.SeriesRecord]] = {}
    for one in sorted(series_rows, key=_numbered):
        instances = sorted(instances_of.get(one.id, []), key=_instance_order)
        series_of.setdefault(one.study_id, []).append(fis.SeriesRecord(
            series_instance_uid=one.series_instance_uid, modality=one.modality or "",
            number=one.series_number, description=one.description or "",
            body_part=one.body_part or "", num_instances=one.num_instances or 0,
            instances=tuple(fis.InstanceRecord(i.sop_instance_uid, i.sop_class_uid,
                                               i.instance_number) for i in instances)))
    subjects = load_subjects(session, [r.id for r in rows if r.patient_id is not None])
    loaded: dict[int, LoadedStudy] = {}
    for row in rows:
        record = fis.StudyRecord(
            study_instance_uid=row.study_instance_uid, study_date=row.study_date or "",
            study_time=row.study_time or "", description=row.description or "",
            referring_physician=row.referring_physician or "",
            modalities=tuple(m for m in (row.modalities or "").split("\\") if m),
            num_series=row.num_series or 0, num_instances=row.num_instances or 0,
            accession=row.accession or "", updated_at=row.updated_at,
            series=tuple(series_of.get(row.id, [])))
        loaded[row.id] = LoadedStudy(
            id=row.id, record=record, reconciliation=row.reconciliation, state=row.state,
            patient_pk=row.current_patient if row.patient_id is not None else None,
            order_pk=row.order_id, subject=subjects.get(row.id))
    return loaded


def _numbered(row: Any) -> tuple[int, int, int]:
    """Series and instances by number (unnumbered last), then arrival."""
    number = row.series_number
    return (number is None, number or 0, row.id)


def _instance_order(row: Any) -> tuple[int, int, int]:
    number = row.instance_number
    return (number is None, number or 0, row.id)


def order_link(study: LoadedStudy, reference: str | None) -> fis.OrderLink:
    """The order part of the ImagingStudy from the MIS values (``reference`` is the
    ServiceRequest where it is known)."""
    subject = study.subject
    if study.order_pk is None:  # linked to its patient only: no basedOn until an order
        return fis.OrderLink(ordered=False,
                             referring_physician=subject.referring_physician if subject else None)
    if subject is None:
        return fis.OrderLink(reference=reference)
    request = subject.request_attributes[0] if subject.request_attributes else None
    code = request.requested_procedure_code if request is not None else None
    return fis.OrderLink(
        reference=reference,
        accession=subject.accession,
        procedure=fis.CodeValue(code.code, code.scheme, code.meaning) if code else None,
        procedure_description=request.requested_procedure_description if request else None,
        referring_physician=subject.referring_physician,
    )


def primary_identifier(subject: SubjectValues | None, naming: fis.FhirNaming | None = None
                       ) -> fis.IdentifierValue | None:
    if subject is None or not subject.patient_id:
        return None
    return fis.IdentifierValue(subject.patient_id,
                               (naming or fis.FhirNaming()).system_for(subject.issuer or ""))


def own_imaging_study(study: LoadedStudy, settings: Settings,
                      naming: fis.FhirNaming | None = None) -> dict[str, Any]:
    """The ImagingStudy as the bridge's FHIR API serves it (references to its own ids; with
    a fresh viewer link when ``resource_viewer_links`` is set)."""
    if not study.reconciled:
        raise NotFound(f"ImagingStudy/{study.id} is not known (the study is not reconciled)",
                       location="id")
    return fis.imaging_study(
        study.record,
        subject=fis.SubjectLink(f"Patient/{study.patient_pk}",
                                primary_identifier(study.subject, naming)),
        order=order_link(study, f"ServiceRequest/{study.order_pk}"
                         if study.order_pk is not None else None),
        version=settings.fhir_version, timezone=settings.local_timezone,
        endpoint_reference=endpoint_reference(), resource_id=fhir_id(study.id), naming=naming,
        viewer_url=resource_link(settings, study.record.study_instance_uid))


# ----------------------------------------------------------------------------- read, search


def imaging_study_for(session: Session, study_id: int, settings: Settings, *,
                      naming: fis.FhirNaming | None = None,
                      viewer: int | None = None) -> dict[str, Any]:
    """One ImagingStudy by ``studies.id``; :class:`NotFound` when absent, unreconciled or
    not visible to the clinician ``viewer``."""
    if viewer is not None and session.execute(
            select(S.c.id).where(S.c.id == study_id, study_visible(viewer))).first() is None:
        raise NotFound(f"ImagingStudy/{study_id} is not known", location="id")
    study = load_studies(session, [study_id]).get(study_id)
    if study is None:
        raise NotFound(f"ImagingStudy/{study_id} is not known", location="id")
    return own_imaging_study(study, settings, naming)


def search_imaging_studies(
    session: Session,
    *,
    settings: Settings,
    identifier: str | None = None,
    patient_id: int | None = None,
    status: str | None = None,
    last_updated: tuple[datetime | None, datetime | None] | None = None,
    count: int = 20,
    offset: int = 0,
    naming: fis.FhirNaming | None = None,
    viewer: int | None = None,
) -> tuple[int, list[dict[str, Any]]]:
    """Reconciled studies matching every given criterion, by id: (total, one page); for a
    clinician (``viewer``) only the studies they may see.

    - ``identifier``: a FHIR token, comma-separated values meaning OR:
      ``urn:dicom:uid|urn:oid:<uid>`` (the study), ``|<accession>`` or ``<value>`` (the
      study UID as ``urn:oid:<uid>``, or the accession: the ACSN identifier has no system);
    - ``patient_id``: ``patients.id`` of the current patient (a merged-away patient's id
      finds nothing: its studies belong to the survivor);
    - ``status``: comma-separated ``available`` / ``registered`` (nothing else can match);
    - ``last_updated``: (from, before): from inclusive, before exclusive, either open;
    - ``count`` (0: the total only, at most :data:`MAX_COUNT`) and ``offset``.
    """
    query: Select[Any] = select(S.c.id).where(S.c.reconciliation.in_(sorted(RECONCILED)),
                                              S.c.patient_id.is_not(None))
    if viewer is not None:
        query = query.where(study_visible(viewer))
    if identifier is not None:
        query = query.where(_identifier_clause(identifier))
    if patient_id is not None:
        # The current patient is ``patient_id``: that patient unless merged away, and the
        # patients merged into it (both conditions use an index).
        merged = select(P.c.id).where(or_(and_(P.c.id == patient_id,
                                               P.c.merged_into_id.is_(None)),
                                          P.c.merged_into_id == patient_id))
        query = query.where(S.c.patient_id.in_(merged))
    if status is not None:
        query = query.where(_status_clause(status))
    if last_updated is not None:
        low, high = last_updated
        if low is not None:
            query = query.where(S.c.updated_at >= _utc(low))
        if high is not None:
            query = query.where(S.c.updated_at < _utc(high))
    conn = session.connection()
    total = int(conn.execute(select(func.count()).select_from(query.subquery())).scalar_one())
    count = max(0, min(count, MAX_COUNT))
    if count == 0 or offset >= total:
        return total, []
    ids = list(conn.execute(query.order_by(S.c.id).limit(count).offset(max(0, offset)))
               .scalars())
    studies = load_studies(session, ids)
    return total, [own_imaging_study(studies[i], settings, naming)
                   for i in ids if i in studies]


def _identifier_clause(token: str) -> Any:
    alternatives = []
    for item in (part.strip() for part in token.split(",")):
        if not item:
            continue
        system, bar, value = item.partition("|")
        if not bar:
            system, value = "", item
            alternatives.append(_uid_or_accession(value, either=True))
        elif system == fis.DICOM_UID_SYSTEM:
            alternatives.append(_uid_or_accession(value, either=False))
        elif system == "":
            alternatives.append(_accession(value))
    return or_(*alternatives) if alternatives else S.c.id.is_(None)


def _uid_or_accession(value: str, *, either: bool) -> Any:
    uid = value[len("urn:oid:"):] if value.startswith("urn:oid:") else None
    clauses = [S.c.study_instance_uid == uid] if uid else []
    if either:
        clauses.append(_accession(value))
    return or_(*clauses) if clauses else S.c.id.is_(None)


def _accession(value: str) -> Any:
    """The accession the ImagingStudy shows: the order's, else the one the modality sent."""
    order_accession = select(O.c.accession).where(O.c.id == S.c.order_id).scalar_subquery()
    return func.coalesce(func.nullif(order_accession, ""), S.c.accession) == value


def _status_clause(status: str) -> Any:
    wanted = {part.strip() for part in status.split(",")}
    clauses = []
    if fis.AVAILABLE in wanted:
        clauses.append(S.c.num_instances > 0)
    if fis.REGISTERED in wanted:
        clauses.append(S.c.num_instances == 0)
    return or_(*clauses) if clauses else S.c.id.is_(None)


def _utc(moment: datetime) -> datetime:
    """Stored times are UTC (SQLite keeps them without an offset): compare in UTC."""
    aware = moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
    return aware.astimezone(UTC)


# ----------------------------------------------------------------------------- MIS keys


def patient_identifiers(session: Session, patient_pk: int) -> list[tuple[str, str]]:
    """(value, issuer) of a patient's identifiers, the primary (PatientID) first."""
    return [(row.value, row.issuer or "") for row in session.connection().execute(
        select(PI.c.value, PI.c.issuer).where(PI.c.patient_id == patient_pk)
        .order_by(PI.c.position, PI.c.id))]


def placer_number(session: Session, order_pk: int) -> tuple[str, str] | None:
    """(placer number, issuer) of an order, when it has one."""
    row = session.connection().execute(
        select(O.c.placer_number, O.c.placer_issuer).where(O.c.id == order_pk)).first()
    if row is None or not row.placer_number:
        return None
    return row.placer_number, row.placer_issuer or ""
