"""Query/Retrieve identifiers → protocol-neutral archive queries. Pure: no I/O.

:class:`ArchiveQuery` is what the archive index is searched with; a C-FIND identifier
(:func:`parse_find_identifier`) and a QIDO-RS URL both become one. :class:`RetrieveKeys` names
the objects a C-MOVE, C-GET or WADO-RS request wants (:func:`parse_retrieve_identifier`).

Matching follows PS3.4 C.2.2.2 with the worklist's parsing (:mod:`bridge.mapping.worklist.query`):
an empty key is universal matching and only asks for the value back, ``*``/``?`` is wild card
matching, ``\\``-separated values are list matching (UIDs: list of UID matching), ``A-B``,
``-B``, ``A-`` on dates and times is range matching, and PatientName is matched
case-insensitively (case-folded here, like ``patients.name_search``).

Over DIMSE the search is hierarchical (PS3.4 C.4.1.2.1): a query below the top level must carry
a single value for the unique key of every level above it, else it is refused (0xA900). An
:class:`ArchiveQuery` itself does not require this, so QIDO-RS can search series or instances
across studies.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum

from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset

from bridge.errors import MappingFailed
from bridge.mapping.worklist.query import (
    SPECIFIC_CHARACTER_SET,
    Range,
    ReturnKey,
    TextMatch,
    element_values,
    first_value,
    is_empty,
    name_match,
    parse_date_range,
    parse_time_range,
    return_keys,
    text_match,
)


class Level(StrEnum):
    """Query/Retrieve Level (0008,0052)."""

    PATIENT = "PATIENT"
    STUDY = "STUDY"
    SERIES = "SERIES"
    IMAGE = "IMAGE"


class Model(StrEnum):
    """The information model a request was made in (its SOP Class)."""

    PATIENT_ROOT = "PATIENT_ROOT"
    STUDY_ROOT = "STUDY_ROOT"


#: Levels from the top down, per information model.
LEVELS: dict[Model, tuple[Level, ...]] = {
    Model.PATIENT_ROOT: (Level.PATIENT, Level.STUDY, Level.SERIES, Level.IMAGE),
    Model.STUDY_ROOT: (Level.STUDY, Level.SERIES, Level.IMAGE),
}

QUERY_RETRIEVE_LEVEL = 0x00080052


@dataclass(frozen=True, slots=True)
class ArchiveQuery:
    """What to match, level by level; ``None`` or ``()`` is universal matching.

    Patient keys match the patient as the database has it now: the MIS patient the study is
    reconciled to (after merges), or, for a study still waiting in the reconciliation queue,
    the values the modality sent.
    """

    level: Level = Level.STUDY
    # patient
    patient_id: TextMatch | None = None
    issuer_of_patient_id: TextMatch | None = None
    #: Case-folded (compares with ``patients.name_search``/``studies.source_name_search``).
    patient_name: TextMatch | None = None
    birth_date: Range | None = None
    sex: TextMatch | None = None
    # study
    study_uids: tuple[str, ...] = ()
    study_date: Range | None = None
    study_time: Range | None = None
    accession: TextMatch | None = None
    study_id: TextMatch | None = None
    referring_physician: TextMatch | None = None
    study_description: TextMatch | None = None
    #: A study matches when one of its series' modalities matches.
    modalities_in_study: TextMatch | None = None
    #: A clinician's user id: only the studies they may see match (None: a system or an
    #: operator, no access filter).
    viewer: int | None = None
    # series
    series_uids: tuple[str, ...] = ()
    modality: TextMatch | None = None
    series_numbers: tuple[int, ...] = ()
    series_description: TextMatch | None = None
    # instance
    sop_instance_uids: tuple[str, ...] = ()
    sop_class_uids: tuple[str, ...] = ()
    instance_numbers: tuple[int, ...] = ()
    #: Keys the response must carry (C-FIND); QIDO-RS decides its own attributes.
    return_keys: tuple[ReturnKey, ...] = ()
    #: Keyword of keys that carried a value we do not match on (for logs; PS3.4 allows it).
    ignored_keys: tuple[str, ...] = field(default=())


@dataclass(frozen=True, slots=True)
class RetrieveKeys:
    """The objects a retrieve asks for: every instance under the given UIDs.

    At PATIENT level ``patient_id`` names the patient (old identifiers of a merged patient
    find the survivor). Below, the UIDs decide; a PatientID sent with them is not used, as
    the SCU may know the patient by an identifier a merge has since replaced.
    """

    level: Level
    patient_id: str | None = None
    issuer_of_patient_id: str | None = None
    study_uids: tuple[str, ...] = ()
    series_uids: tuple[str, ...] = ()
    sop_instance_uids: tuple[str, ...] = ()
    #: As :attr:`ArchiveQuery.viewer`: only the studies this clinician may see.
    viewer: int | None = None


# Keyword → ArchiveQuery field, by the kind of matching the key gets.
_TEXT_KEYS = {
    "PatientID": "patient_id",
    "IssuerOfPatientID": "issuer_of_patient_id",
    "PatientSex": "sex",
    "AccessionNumber": "accession",
    "StudyID": "study_id",
    "ReferringPhysicianName": "referring_physician",
    "StudyDescription": "study_description",
    "ModalitiesInStudy": "modalities_in_study",
    "Modality": "modality",
    "SeriesDescription": "series_description",
}
_UID_KEYS = {
    "StudyInstanceUID": "study_uids",
    "SeriesInstanceUID": "series_uids",
    "SOPInstanceUID": "sop_instance_uids",
    "SOPClassUID": "sop_class_uids",
}
_NUMBER_KEYS = {"SeriesNumber": "series_numbers", "InstanceNumber": "instance_numbers"}
_DATE_KEYS = {"PatientBirthDate": "birth_date", "StudyDate": "study_date"}
_TIME_KEYS = {"StudyTime": "study_time"}
#: The unique key of each level, which a hierarchical query needs above its level.
_UNIQUE_KEYS = {
    Level.PATIENT: "PatientID",
    Level.STUDY: "StudyInstanceUID",
    Level.SERIES: "SeriesInstanceUID",
    Level.IMAGE: "SOPInstanceUID",
}


def parse_find_identifier(
    identifier: Dataset, model: Model, *, undeclared_charset: str | None = None
) -> ArchiveQuery:
    """Read the level, the matching keys and the return keys of a C-FIND identifier.

    ``undeclared_charset`` (a Python codec, from the peer's settings) decodes text sent
    without Specific Character Set. Raises :class:`MappingFailed` (→ 0xA900) for a missing or
    wrong level, a missing unique key above the level, or a malformed value.
    """
    level = query_level(identifier, model)
    require_unique_keys_above(identifier, model, level)
    recode = undeclared_charset if not identifier.get("SpecificCharacterSet") else None
    fields: dict[str, object] = {"level": level}
    ignored: list[str] = []
    for elem in identifier:
        keyword = elem.keyword
        if elem.tag in (SPECIFIC_CHARACTER_SET, QUERY_RETRIEVE_LEVEL) or is_empty(elem):
            continue
        if keyword == "PatientName":
            fields["patient_name"] = name_match(elem, recode)
        elif keyword in _TEXT_KEYS:
            fields[_TEXT_KEYS[keyword]] = text_match(elem, recode)
        elif keyword in _UID_KEYS:
            fields[_UID_KEYS[keyword]] = uid_list(elem)
        elif keyword in _NUMBER_KEYS:
            fields[_NUMBER_KEYS[keyword]] = _numbers(elem)
        elif keyword in _DATE_KEYS:
            fields[_DATE_KEYS[keyword]] = _range(elem, parse_date_range)
        elif keyword in _TIME_KEYS:
            fields[_TIME_KEYS[keyword]] = _range(elem, parse_time_range)
        else:
            ignored.append(keyword or str(elem.tag))
    fields["return_keys"] = tuple(
        key for key in return_keys(identifier) if key.tag != QUERY_RETRIEVE_LEVEL
    )
    fields["ignored_keys"] = tuple(ignored)
    return ArchiveQuery(**fields)  # type: ignore[arg-type]


def parse_retrieve_identifier(identifier: Dataset, model: Model) -> RetrieveKeys:
    """The unique keys of a C-MOVE/C-GET identifier (PS3.4 C.4.2.2.1): a single value for
    each level above the retrieve level, one or more UIDs at it."""
    level = query_level(identifier, model)
    require_unique_keys_above(identifier, model, level)
    own_key = _UNIQUE_KEYS[level]
    missing = MappingFailed(f"a retrieve at {level} level needs {own_key}", location=own_key)
    if own_key not in identifier:
        raise missing
    if level == Level.PATIENT:
        patient_id = _single_value(identifier[own_key])
        if not patient_id or any(c in patient_id for c in "*?\\"):
            raise missing
        issuer = str(identifier.get("IssuerOfPatientID", "") or "").strip()
        return RetrieveKeys(level=level, patient_id=patient_id,
                            issuer_of_patient_id=issuer or None)
    uids = {key: uid_list(identifier[key]) if key in identifier else ()
            for key in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID")}
    if not uids[own_key]:
        raise missing
    return RetrieveKeys(
        level=level,
        study_uids=uids["StudyInstanceUID"],
        series_uids=uids["SeriesInstanceUID"] if level != Level.STUDY else (),
        sop_instance_uids=uids["SOPInstanceUID"] if level == Level.IMAGE else (),
    )


def query_level(identifier: Dataset, model: Model) -> Level:
    """The identifier's Query/Retrieve Level, checked against the information model."""
    raw = str(identifier.get("QueryRetrieveLevel", "") or "").strip().upper()
    try:
        level = Level(raw)
    except ValueError:
        raise MappingFailed(
            f"Query/Retrieve Level {raw!r} is not PATIENT, STUDY, SERIES or IMAGE"
            if raw else "Query/Retrieve Level (0008,0052) is missing",
            location="(0008,0052)",
        ) from None
    if level not in LEVELS[model]:
        raise MappingFailed(f"{level} level is not part of the Study Root model",
                            location="(0008,0052)")
    return level


def require_unique_keys_above(identifier: Dataset, model: Model, level: Level) -> None:
    """Hierarchical search: one value (no wild card, no list) for each level above."""
    levels = LEVELS[model]
    for above in levels[: levels.index(level)]:
        keyword = _UNIQUE_KEYS[above]
        elem = identifier.get(keyword)
        value = _single_value(identifier[keyword]) if elem is not None else ""
        if not value or "*" in value or "?" in value or "\\" in value:
            raise MappingFailed(
                f"a {level} level query needs a single {keyword} (hierarchical search)",
                location=keyword,
            )


def uid_list(elem: DataElement) -> tuple[str, ...]:
    """List of UID matching: the values, without padding; ``*`` alone is universal."""
    values = tuple(v for v in (str(v).strip(" \x00") for v in element_values(elem)) if v)
    return () if values == ("*",) else values


def _single_value(elem: DataElement) -> str:
    values = element_values(elem)
    if len(values) > 1:
        return "\\"  # a list where one value is required: refused by the caller
    return first_value(elem).strip()


def _numbers(elem: DataElement) -> tuple[int, ...]:
    """IS keys: single value or list matching on the numbers."""
    try:
        return tuple(int(str(v).strip()) for v in element_values(elem) if str(v).strip())
    except ValueError:  # from the text, or from pydicom decoding the received value
        raise MappingFailed(f"{elem.keyword} must hold integers",
                            location=elem.keyword) from None


def _range(elem: DataElement, parse: Callable[[str], Range]) -> Range | None:
    text = first_value(elem).strip()
    if not text or text == "*":
        return None
    try:
        return parse(text)
    except MappingFailed as exc:  # the shared parser names the worklist's attribute
        raise MappingFailed(exc.message, location=elem.keyword) from None
