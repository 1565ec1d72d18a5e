"""Search the archive index: patients, studies, series, instances; and what to retrieve.

One SQL query per page matches (C-FIND and QIDO-RS build the same :class:`ArchiveQuery`); the
values shown are then read with :func:`bridge.services.egress.objects.load_subjects`, the same
function that patches objects on their way out, so what a C-FIND shows is what a C-MOVE
sends: the current MIS patient (after an A40 merge, the survivor), the order's accession and
referring physician, and the modality's values where the MIS has none or the study is still
in the reconciliation queue.

Patient keys are matched on the current MIS patient (``patients`` rows that are not merged
away, through their identifiers: an old identifier of a merged patient finds the survivor)
or, for queued studies, on the ``studies.source_*`` columns. Counts come from the
``studies``/``series`` counters; no query here scans ``instances`` above the IMAGE level.
Study-level matches are unions of indexed lookups (study UID, date, accession, patient) so
that neither SQLite nor PostgreSQL falls back to a scan of ``studies`` for an ``OR``.

Results are ordered by primary key, the paging key: ``after`` continues past a page's last
``pk`` (stable while rows are added), ``offset`` serves QIDO-RS's ``offset``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Row,
    Select,
    and_,
    case,
    exists,
    func,
    or_,
    select,
    union,
)
from sqlalchemy.orm import Session

from bridge.mapping.dicom.patch import SubjectValues
from bridge.mapping.dicom.qr_query import ArchiveQuery, Level, RetrieveKeys
from bridge.mapping.dicom.qr_results import (
    ArchiveRecord,
    InstanceRecord,
    PatientRecord,
    PatientValues,
    SeriesRecord,
    StudyRecord,
)
from bridge.mapping.worklist.query import Range, TextMatch, like_pattern
from bridge.services.access.visibility import study_visible
from bridge.services.egress.objects import load_subjects
from bridge.store.archive_models import Instance, Series, Study
from bridge.store.models import Order, Patient, PatientIdentifier, table_of

__all__ = [
    "ArchiveQuery",
    "ArchiveRecord",
    "InstanceRecord",
    "Level",
    "PatientRecord",
    "PatientValues",
    "RetrieveKeys",
    "SeriesRecord",
    "StoredInstance",
    "StudyRecord",
    "find",
    "find_instances",
    "find_patients",
    "find_series",
    "find_studies",
    "instances_for_retrieve",
]

_S = table_of(Study)
_SE = table_of(Series)
_I = table_of(Instance)
_P = table_of(Patient)
_PI = table_of(PatientIdentifier)
_O = table_of(Order)

AnySelect = Select[*tuple[Any, ...]]
AnyRow = Row[*tuple[Any, ...]]

#: UIDs per IN list (well under every database's bound-parameter limit).
_IN_BATCH = 500

_STUDY_COLUMNS = (
    _S.c.id.label("study_pk"),
    _S.c.study_instance_uid,
    _S.c.patient_id.label("study_patient_pk"),
    _S.c.source_patient_id,
    _S.c.source_issuer,
    _S.c.source_patient_name,
    _S.c.source_birth_date,
    _S.c.source_sex,
    _S.c.accession,
    _S.c.study_date,
    _S.c.study_time,
    _S.c.study_id.label("study_id_text"),
    _S.c.description.label("study_description"),
    _S.c.referring_physician,
    _S.c.modalities,
    _S.c.num_series.label("study_num_series"),
    _S.c.num_instances.label("study_num_instances"),
)
_SERIES_COLUMNS = (
    _SE.c.id.label("series_pk"),
    _SE.c.series_instance_uid,
    _SE.c.modality,
    _SE.c.series_number,
    _SE.c.description.label("series_description"),
    _SE.c.body_part,
    _SE.c.num_instances.label("series_num_instances"),
)
_INSTANCE_COLUMNS = (
    _I.c.id.label("instance_pk"),
    _I.c.sop_instance_uid,
    _I.c.sop_class_uid,
    _I.c.instance_number,
    _I.c.transfer_syntax_uid,
)


@dataclass(frozen=True, slots=True)
class StoredInstance:
    """One object to send: where its file is and what egress needs to patch it
    (:class:`bridge.services.egress.objects.StoredObject`)."""

    pk: int
    study_pk: int
    sop_class_uid: str
    sop_instance_uid: str
    transfer_syntax_uid: str
    path: str
    size: int
    source_charset: str | None
    calling_ae: str
    #: The file's checksum (reads check the copy they use against it).
    sha256: str = ""


# --- the public searches -------------------------------------------------------------------


def find(
    session: Session,
    query: ArchiveQuery,
    *,
    limit: int | None = None,
    offset: int = 0,
    after: int | None = None,
) -> list[ArchiveRecord]:
    """The records at ``query.level`` (C-FIND's dispatch)."""
    if query.level == Level.PATIENT:
        return list(find_patients(session, query, limit=limit, offset=offset, after=after))
    if query.level == Level.STUDY:
        return list(find_studies(session, query, limit=limit, offset=offset, after=after))
    if query.level == Level.SERIES:
        return list(find_series(session, query, limit=limit, offset=offset, after=after))
    return list(find_instances(session, query, limit=limit, offset=offset, after=after))


def find_patients(
    session: Session,
    query: ArchiveQuery,
    *,
    limit: int | None = None,
    offset: int = 0,
    after: int | None = None,
) -> list[PatientRecord]:
    """Patients with at least one matching study, with their study/series/instance counts.

    A patient is the current MIS patient of reconciled studies, or, for queued studies, the
    PatientID + issuer the modality sent."""
    matcher = _Matcher(session)
    linked = _P.alias("linked")  # the patient the study points at, maybe merged away since
    current = func.coalesce(linked.c.merged_into_id, linked.c.id)
    queued_id = case((_S.c.patient_id.is_(None), _S.c.source_patient_id))
    queued_issuer = case((_S.c.patient_id.is_(None), _S.c.source_issuer))
    first_study = func.min(_S.c.id)
    stmt = (
        select(
            first_study.label("first_study"),
            func.count().label("num_studies"),
            func.sum(_S.c.num_series).label("num_series"),
            func.sum(_S.c.num_instances).label("num_instances"),
        )
        .select_from(_studies_from(query).outerjoin(linked, linked.c.id == _S.c.patient_id))
        .where(*matcher.study_conditions(query))
        .group_by(current, queued_id, queued_issuer)
        .order_by(first_study)
    )
    if after is not None:
        stmt = stmt.having(first_study > after)
    rows = session.execute(_limit(stmt, limit, offset)).all()
    studies = {s.pk: s for s in _study_records(session, _studies_by_pk(
        session, [r.first_study for r in rows]))}
    return [
        PatientRecord(
            pk=row.first_study,
            patient=studies[row.first_study].patient,
            num_studies=int(row.num_studies),
            num_series=int(row.num_series or 0),
            num_instances=int(row.num_instances or 0),
        )
        for row in rows
        if row.first_study in studies
    ]


def find_studies(
    session: Session,
    query: ArchiveQuery,
    *,
    limit: int | None = None,
    offset: int = 0,
    after: int | None = None,
) -> list[StudyRecord]:
    """Studies matching the patient and study keys of ``query``."""
    conditions = _Matcher(session).study_conditions(query)
    stmt = select(*_STUDY_COLUMNS).select_from(_studies_from(query)).where(*conditions)
    page = _page(stmt, _S.c.id, limit, offset, after, filtered=bool(conditions))
    return _study_records(session, session.execute(page))


def find_series(
    session: Session,
    query: ArchiveQuery,
    *,
    limit: int | None = None,
    offset: int = 0,
    after: int | None = None,
) -> list[SeriesRecord]:
    """Series matching the series keys, in studies matching the patient and study keys."""
    matcher = _Matcher(session)
    conditions = [*matcher.study_conditions(query), *matcher.series_conditions(query)]
    stmt = (
        select(*_SERIES_COLUMNS, *_STUDY_COLUMNS)
        .select_from(_studies_from(query).join(_SE, _SE.c.study_id == _S.c.id))
        .where(*conditions)
    )
    page = _page(stmt, _SE.c.id, limit, offset, after, filtered=bool(conditions))
    rows = session.execute(page).all()
    studies = {s.pk: s for s in _study_records(session, _distinct_studies(rows))}
    return [_series_record(row, studies[row.study_pk]) for row in rows]


def find_instances(
    session: Session,
    query: ArchiveQuery,
    *,
    limit: int | None = None,
    offset: int = 0,
    after: int | None = None,
) -> list[InstanceRecord]:
    """Instances matching the instance keys, in matching series and studies."""
    matcher = _Matcher(session)
    conditions = [
        *matcher.study_conditions(query),
        *matcher.series_conditions(query),
        *matcher.instance_conditions(query),
    ]
    stmt = (
        select(*_INSTANCE_COLUMNS, *_SERIES_COLUMNS, *_STUDY_COLUMNS)
        .select_from(
            _studies_from(query)
            .join(_SE, _SE.c.study_id == _S.c.id)
            .join(_I, _I.c.series_id == _SE.c.id)
        )
        .where(*conditions)
    )
    page = _page(stmt, _I.c.id, limit, offset, after, filtered=bool(conditions))
    rows = session.execute(page).all()
    studies = {s.pk: s for s in _study_records(session, _distinct_studies(rows))}
    series: dict[int, SeriesRecord] = {}
    records = []
    for row in rows:
        if row.series_pk not in series:
            series[row.series_pk] = _series_record(row, studies[row.study_pk])
        records.append(
            InstanceRecord(
                pk=row.instance_pk,
                series=series[row.series_pk],
                sop_instance_uid=row.sop_instance_uid,
                sop_class_uid=row.sop_class_uid,
                instance_number=row.instance_number,
                transfer_syntax_uid=row.transfer_syntax_uid,
            )
        )
    return records


def instances_for_retrieve(session: Session, keys: RetrieveKeys) -> list[StoredInstance]:
    """Every stored instance a retrieve names, ordered by series and instance number.

    Every UID given narrows the result (a series UID under another study's UID finds
    nothing), so WADO-RS paths and DIMSE identifiers are checked alike."""
    stmt = select(
        _I.c.id, _I.c.study_id, _I.c.sop_class_uid, _I.c.sop_instance_uid,
        _I.c.transfer_syntax_uid, _I.c.path, _I.c.size, _I.c.source_charset, _I.c.calling_ae,
        _I.c.sha256,
    ).order_by(_I.c.study_id, _I.c.series_id, _I.c.instance_number, _I.c.id)
    if keys.level == Level.PATIENT:
        if not keys.patient_id:
            return []
        patient = ArchiveQuery(
            level=Level.PATIENT,
            patient_id=TextMatch(values=(keys.patient_id,)),
            issuer_of_patient_id=(
                TextMatch(values=(keys.issuer_of_patient_id,))
                if keys.issuer_of_patient_id else None
            ),
        )
        studies = select(_S.c.id).where(*_Matcher(session).study_conditions(patient))
        stmt = stmt.where(_I.c.study_id.in_(studies))
    elif not (keys.study_uids or keys.series_uids or keys.sop_instance_uids):
        return []  # never "everything"
    if keys.viewer is not None:
        stmt = stmt.where(_I.c.study_id.in_(select(_S.c.id).where(study_visible(keys.viewer))))
    if keys.study_uids:
        stmt = stmt.where(_I.c.study_id.in_(
            select(_S.c.id).where(_S.c.study_instance_uid.in_(keys.study_uids))))
    if keys.series_uids:
        stmt = stmt.where(_I.c.series_id.in_(
            select(_SE.c.id).where(_SE.c.series_instance_uid.in_(keys.series_uids))))
    if not keys.sop_instance_uids:
        return [_stored(row) for row in session.execute(stmt)]
    found: list[StoredInstance] = []
    uids = sorted(set(keys.sop_instance_uids))
    for start in range(0, len(uids), _IN_BATCH):
        batch = stmt.where(_I.c.sop_instance_uid.in_(uids[start : start + _IN_BATCH]))
        found.extend(_stored(row) for row in session.execute(batch))
    return found


# --- matching --------------------------------------------------------------------------------


class _Matcher:
    """Builds the WHERE conditions; text matching depends on the database: SQLite's GLOB
    is case-sensitive like DICOM (its LIKE is not) and seeks an index on a literal prefix."""

    def __init__(self, session: Session) -> None:
        self.sqlite = session.get_bind().dialect.name == "sqlite"

    # patient and study level: conditions on ``studies`` (with ``orders`` joined)

    def study_conditions(self, query: ArchiveQuery) -> list[ColumnElement[bool]]:
        conditions = [
            self._patient(query),
            _S.c.study_instance_uid.in_(query.study_uids) if query.study_uids else None,
            *_range(_S.c.study_date, query.study_date),
            *_range(_S.c.study_time, query.study_time),
            self._accession(query.accession),
            self.text(_S.c.study_id, query.study_id),
            self.text(_S.c.description, query.study_description),
            self.text(_effective(_O.c.referring_physician, _S.c.referring_physician),
                      query.referring_physician),
            self._modalities_in_study(query.modalities_in_study),
            study_visible(query.viewer) if query.viewer is not None else None,
        ]
        return [c for c in conditions if c is not None]

    def series_conditions(self, query: ArchiveQuery) -> list[ColumnElement[bool]]:
        conditions = [
            _SE.c.series_instance_uid.in_(query.series_uids) if query.series_uids else None,
            self.text(_SE.c.modality, query.modality),
            _SE.c.series_number.in_(query.series_numbers) if query.series_numbers else None,
            self.text(_SE.c.description, query.series_description),
        ]
        return [c for c in conditions if c is not None]

    def instance_conditions(self, query: ArchiveQuery) -> list[ColumnElement[bool]]:
        conditions = [
            _I.c.sop_instance_uid.in_(query.sop_instance_uids)
            if query.sop_instance_uids else None,
            _I.c.sop_class_uid.in_(query.sop_class_uids) if query.sop_class_uids else None,
            _I.c.instance_number.in_(query.instance_numbers) if query.instance_numbers else None,
        ]
        return [c for c in conditions if c is not None]

    def _patient(self, query: ArchiveQuery) -> ColumnElement[bool] | None:
        """Studies of the matching current MIS patients, or queued studies whose own
        values match: a union of two indexed lookups (an ``OR`` would scan ``studies``)."""
        current = self._current_patients(query)
        if current is None:
            return None
        # Studies may still point at a patient merged away since: its survivor is current.
        linked = union(
            select(_P.c.id).where(_P.c.id.in_(current)),
            select(_P.c.id).where(_P.c.merged_into_id.in_(current)),
        )
        queued = [
            self.text(_S.c.source_patient_id, query.patient_id),
            self.text(_S.c.source_issuer, query.issuer_of_patient_id),
            self.name(_S.c.source_name_search, query.patient_name),
            *_range(_S.c.source_birth_date, query.birth_date),
            self.text(_S.c.source_sex, query.sex),
        ]
        return _S.c.id.in_(union(
            select(_S.c.id).where(_S.c.patient_id.in_(linked)),
            select(_S.c.id).where(_S.c.patient_id.is_(None), *(c for c in queued if c is not None)),
        ))

    def _current_patients(self, query: ArchiveQuery) -> AnySelect | None:
        """Ids of the patients not merged away that match the patient keys (None: no key)."""
        conditions = [
            self.name(_P.c.name_search, query.patient_name),
            *_range(_P.c.birth_date, query.birth_date),
            self.text(_P.c.sex, query.sex),
        ]
        if query.patient_id is not None:
            # Any identifier of the patient, or of a patient merged into it.
            named = _P.alias("named")
            by_identifier = (
                select(func.coalesce(named.c.merged_into_id, named.c.id))
                .select_from(_PI.join(named, named.c.id == _PI.c.patient_id))
                .where(self.match(_PI.c.value, query.patient_id))
            )
            issuer = self.text(_PI.c.issuer, query.issuer_of_patient_id)
            if issuer is not None:
                by_identifier = by_identifier.where(issuer)
            conditions.append(_P.c.id.in_(by_identifier))
        elif query.issuer_of_patient_id is not None:
            conditions.append(_P.c.id.in_(
                select(_PI.c.patient_id).where(
                    _PI.c.position == 0, self.match(_PI.c.issuer, query.issuer_of_patient_id))))
        present = [c for c in conditions if c is not None]
        if not present:
            return None
        return select(_P.c.id).where(_P.c.merged_into_id.is_(None), *present)

    def _accession(self, match: TextMatch | None) -> ColumnElement[bool] | None:
        """The order's accession wins over the modality's: the effective value decides,
        after an indexed pre-selection on either column."""
        if match is None:
            return None
        either = union(
            select(_S.c.id).where(self.match(_S.c.accession, match)),
            select(_S.c.id).select_from(_S.join(_O, _O.c.id == _S.c.order_id))
            .where(self.match(_O.c.accession, match)),
        )
        effective = self.match(_effective(_O.c.accession, _S.c.accession), match)
        return and_(_S.c.id.in_(either), effective)

    def _modalities_in_study(self, match: TextMatch | None) -> ColumnElement[bool] | None:
        if match is None:
            return None
        return exists(select(_SE.c.id).where(
            _SE.c.study_id == _S.c.id, self.match(_SE.c.modality, match)))

    # text

    def text(self, column: Any, match: TextMatch | None) -> ColumnElement[bool] | None:
        """Single value, list or wild card matching; None for universal matching."""
        return None if match is None else self.match(column, match)

    def match(self, column: Any, match: TextMatch) -> ColumnElement[bool]:
        if match.pattern is not None:
            if self.sqlite:
                glob: ColumnElement[bool] = column.op("GLOB", is_comparison=True)(
                    glob_pattern(match.pattern))
                return glob
            like: ColumnElement[bool] = column.like(like_pattern(match.pattern), escape="\\")
            return like
        if len(match.values) == 1:
            equal: ColumnElement[bool] = column == match.values[0]
            return equal
        listed: ColumnElement[bool] = column.in_(match.values)
        return listed

    def name(self, column: Any, match: TextMatch | None) -> ColumnElement[bool] | None:
        """PN on a case-folded column. An exact name also finds stored names with more
        components or groups (``ivanenko^olena`` finds ``ivanenko^olena^petrivna``), as users
        type the family (and given) name only."""
        if match is None or match.pattern is not None:
            return self.text(column, match)
        options = [column.in_(match.values)]
        for value in match.values:
            for separator in ("^", "="):
                options.append(self.match(column, TextMatch(pattern=value + separator + "*")))
        return or_(*options)


def glob_pattern(pattern: str) -> str:
    """A DICOM wild card pattern as a SQLite GLOB pattern (``[`` is GLOB's only other
    special character)."""
    return pattern.replace("[", "[[]")


def _range(column: Any, bounds: Range | None) -> list[ColumnElement[bool]]:
    """Range matching; an empty stored value never falls inside a range."""
    if bounds is None:
        return []
    conditions = [column != ""]
    if bounds.lower is not None:
        conditions.append(column >= bounds.lower)
    if bounds.upper is not None:
        conditions.append(column <= bounds.upper)
    return conditions


def _effective(mis: Any, modality: Any) -> ColumnElement[Any]:
    """The order's value when it has one, else the modality's (as egress applies it)."""
    return case((and_(mis.is_not(None), mis != ""), mis), else_=modality)


def _studies_from(query: ArchiveQuery) -> Any:
    """``studies``, with ``orders`` joined when a key needs the order's values."""
    if query.accession is None and query.referring_physician is None:
        return _S
    return _S.outerjoin(_O, _O.c.id == _S.c.order_id)


def _page(stmt: AnySelect, pk: Any, limit: int | None, offset: int, after: int | None, *,
          filtered: bool) -> AnySelect:
    """Ordered by ``pk``. A filtered query is ordered by ``pk + 0``, which no index
    provides: otherwise PostgreSQL may walk the primary key in order, testing every row
    against the filter until the page is full (the whole table when the matches are few
    or all recent); this way the filter's index finds the matches and only they are sorted."""
    if after is not None:
        stmt = stmt.where(pk > after)
    return _limit(stmt.order_by(pk + 0 if filtered else pk), limit, offset)


def _limit(stmt: AnySelect, limit: int | None, offset: int) -> AnySelect:
    if limit is not None:
        stmt = stmt.limit(limit)
    if offset:
        stmt = stmt.offset(offset)
    return stmt


# --- rows → records --------------------------------------------------------------------------


def _studies_by_pk(session: Session, pks: Sequence[int]) -> list[AnyRow]:
    if not pks:
        return []
    return list(session.execute(select(*_STUDY_COLUMNS).where(_S.c.id.in_(pks))))


def _distinct_studies(rows: Iterable[AnyRow]) -> list[AnyRow]:
    seen: dict[int, AnyRow] = {}
    for row in rows:
        seen.setdefault(row.study_pk, row)
    return list(seen.values())


def _study_records(session: Session, rows: Iterable[AnyRow]) -> list[StudyRecord]:
    rows = list(rows)
    subjects = load_subjects(session, [r.study_pk for r in rows if r.study_patient_pk])
    return [_study_record(row, subjects.get(row.study_pk)) for row in rows]


def _study_record(row: AnyRow, subject: SubjectValues | None) -> StudyRecord:
    mis = subject or SubjectValues()
    return StudyRecord(
        pk=row.study_pk,
        study_instance_uid=row.study_instance_uid,
        patient=_patient_values(row, mis),
        accession=mis.accession or row.accession,
        study_date=row.study_date,
        study_time=row.study_time,
        study_id=row.study_id_text,
        description=row.study_description,
        referring_physician=mis.referring_physician or row.referring_physician,
        modalities=tuple(m for m in row.modalities.split("\\") if m),
        num_series=row.study_num_series,
        num_instances=row.study_num_instances,
        reconciled=subject is not None,
    )


def _patient_values(row: AnyRow, mis: SubjectValues) -> PatientValues:
    """As egress applies them: the MIS value where it has one, else the modality's; the
    issuer goes with the PatientID (a replaced PatientID does not keep the file's issuer)."""
    if mis.patient_id and mis.patient_id != row.source_patient_id:
        issuer = mis.issuer or ""
    else:
        issuer = mis.issuer or row.source_issuer
    return PatientValues(
        patient_id=mis.patient_id or row.source_patient_id,
        issuer_of_patient_id=issuer,
        name=mis.name or row.source_patient_name,
        birth_date=mis.birth_date or row.source_birth_date,
        sex=mis.sex or row.source_sex,
    )


def _series_record(row: AnyRow, study: StudyRecord) -> SeriesRecord:
    return SeriesRecord(
        pk=row.series_pk,
        study=study,
        series_instance_uid=row.series_instance_uid,
        modality=row.modality,
        series_number=row.series_number,
        description=row.series_description,
        body_part=row.body_part,
        num_instances=row.series_num_instances,
    )


def _stored(row: AnyRow) -> StoredInstance:
    return StoredInstance(
        pk=row.id,
        study_pk=row.study_id,
        sop_class_uid=row.sop_class_uid,
        sop_instance_uid=row.sop_instance_uid,
        transfer_syntax_uid=row.transfer_syntax_uid,
        path=row.path,
        size=row.size,
        source_charset=row.source_charset,
        calling_ae=row.calling_ae,
        sha256=row.sha256,
    )

