"""QIDO-RS URL query parameters → an :class:`~bridge.mapping.dicom.qr_query.ArchiveQuery`.
Pure: no I/O.

A QIDO-RS search (PS3.18 8.3.4, 10.6) names attributes by keyword (``PatientName``) or tag
(``00100010``); each value matches the way the same key matches in a C-FIND identifier
(:mod:`bridge.mapping.dicom.qr_query`): ``*``/``?`` wild cards, ``\\``-separated lists, date and
time ranges, case-insensitive PatientName. UIDs and codes also take the comma-separated lists
PS3.18 uses (a comma is never part of a UID or a CS value). Unlike a DIMSE query, the search is
not hierarchical: ``/series`` and ``/instances`` search across studies.

Bad input is refused, never guessed at: an unknown parameter, a malformed value or a key of a
level below the one searched raises :class:`~bridge.errors.Rejected` (HTTP 400) naming the
parameter. A real attribute we cannot match on (a sequence path, a private tag, an attribute
the index does not hold) is ignored, as PS3.4 allows, and reported in :attr:`QidoSearch.warnings`
for the ``Warning`` response header, so a client knows the answer is broader than it asked.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import Enum

from pydicom.datadict import dictionary_VR, keyword_for_tag, tag_for_keyword
from pydicom.dataelem import DataElement

from bridge.errors import MappingFailed, Rejected
from bridge.mapping.dicom.qr_query import ArchiveQuery, Level
from bridge.mapping.worklist.query import (
    Range,
    TextMatch,
    name_match,
    parse_date_range,
    parse_time_range,
    text_match,
)

#: The most results one answer holds; a bigger (or no) ``limit`` is cut to it, with a warning
#: when more results exist (PS3.18 8.3.4.4).
MAX_LIMIT = 1000

_UID = re.compile(r"^[0-9]+(\.[0-9]+)*$")
_TAG = re.compile(r"^[0-9A-Fa-f]{8}$")
_LEVEL_ORDER = (Level.STUDY, Level.SERIES, Level.IMAGE)


class _Kind(Enum):
    TEXT = "text"
    CODE = "code"  # CS: a comma also separates list values
    NAME = "name"
    UID = "uid"
    NUMBER = "number"
    DATE = "date"
    TIME = "time"


@dataclass(frozen=True, slots=True)
class _Key:
    level: Level
    field: str
    kind: _Kind


#: Matching keys by keyword: the level they belong to (patient keys are study keys in the
#: Study Root model QIDO-RS uses), the ArchiveQuery field, and how the value is read.
_KEYS: dict[str, _Key] = {
    "PatientID": _Key(Level.STUDY, "patient_id", _Kind.TEXT),
    "IssuerOfPatientID": _Key(Level.STUDY, "issuer_of_patient_id", _Kind.TEXT),
    "PatientName": _Key(Level.STUDY, "patient_name", _Kind.NAME),
    "PatientBirthDate": _Key(Level.STUDY, "birth_date", _Kind.DATE),
    "PatientSex": _Key(Level.STUDY, "sex", _Kind.CODE),
    "StudyInstanceUID": _Key(Level.STUDY, "study_uids", _Kind.UID),
    "StudyDate": _Key(Level.STUDY, "study_date", _Kind.DATE),
    "StudyTime": _Key(Level.STUDY, "study_time", _Kind.TIME),
    "AccessionNumber": _Key(Level.STUDY, "accession", _Kind.TEXT),
    "StudyID": _Key(Level.STUDY, "study_id", _Kind.TEXT),
    "ReferringPhysicianName": _Key(Level.STUDY, "referring_physician", _Kind.TEXT),
    "StudyDescription": _Key(Level.STUDY, "study_description", _Kind.TEXT),
    "ModalitiesInStudy": _Key(Level.STUDY, "modalities_in_study", _Kind.CODE),
    "SeriesInstanceUID": _Key(Level.SERIES, "series_uids", _Kind.UID),
    "Modality": _Key(Level.SERIES, "modality", _Kind.CODE),
    "SeriesNumber": _Key(Level.SERIES, "series_numbers", _Kind.NUMBER),
    "SeriesDescription": _Key(Level.SERIES, "series_description", _Kind.TEXT),
    "SOPInstanceUID": _Key(Level.IMAGE, "sop_instance_uids", _Kind.UID),
    "SOPClassUID": _Key(Level.IMAGE, "sop_class_uids", _Kind.UID),
    "InstanceNumber": _Key(Level.IMAGE, "instance_numbers", _Kind.NUMBER),
}

_LIMIT = "limit"
_OFFSET = "offset"
_FUZZY = "fuzzymatching"
_INCLUDE = "includefield"


@dataclass(frozen=True, slots=True)
class QidoSearch:
    """One QIDO-RS search: what to match, which page, which attributes to return."""

    query: ArchiveQuery
    #: Results per answer (the client's ``limit``, at most :data:`MAX_LIMIT`).
    limit: int
    offset: int = 0
    #: True when the server chose (or cut) the limit: more results then deserve a warning.
    limit_is_ours: bool = True
    #: ``includefield=all``: every attribute we know.
    include_all: bool = False
    #: Tags asked for with ``includefield`` (returned when the index knows them).
    include_tags: tuple[int, ...] = ()
    #: Tags of the matching keys, which the answer carries too.
    matching_tags: tuple[int, ...] = ()
    #: Texts for ``Warning: 299`` headers (keys ignored, fuzzy matching not done).
    warnings: tuple[str, ...] = field(default=())


def parse_qido(
    params: Iterable[tuple[str, str]],
    level: Level,
    *,
    study_uid: str | None = None,
    series_uid: str | None = None,
    max_limit: int = MAX_LIMIT,
) -> QidoSearch:
    """Read the query parameters of a search at ``level`` (STUDY, SERIES or IMAGE).

    ``study_uid``/``series_uid`` come from the resource path (``/studies/{uid}/series``) and
    override the same key in the query. Repeated keys add to the list of values.
    """
    if level not in _LEVEL_ORDER:
        raise ValueError(f"QIDO-RS has no {level} level search")
    values: dict[str, list[str]] = {}
    names: dict[str, str] = {}  # keyword → the parameter name the client used
    controls: dict[str, list[str]] = {}
    warnings: list[str] = []
    for name, value in params:
        lowered = name.lower()
        if lowered in (_LIMIT, _OFFSET, _FUZZY, _INCLUDE):
            controls.setdefault(lowered, []).append(value)
            continue
        keyword = _attribute_keyword(name)
        if keyword is None:
            warnings.append(f"{name} is not a supported matching key and was ignored")
            continue
        key = _KEYS.get(keyword)
        if key is None:
            warnings.append(f"{keyword} is not a supported matching key and was ignored")
            continue
        if _LEVEL_ORDER.index(key.level) > _LEVEL_ORDER.index(level):
            raise Rejected(f"{keyword} is not a matching key of a {_LEVEL_NAME[level]} search",
                           location=name)
        values.setdefault(keyword, []).append(value)
        names.setdefault(keyword, name)
    if study_uid is not None:
        values["StudyInstanceUID"] = [study_uid]
        names["StudyInstanceUID"] = "study"
    if series_uid is not None:
        values["SeriesInstanceUID"] = [series_uid]
        names["SeriesInstanceUID"] = "series"

    fields: dict[str, object] = {"level": level}
    matching: list[int] = []
    for keyword, given in values.items():
        parsed = _parse_value(_KEYS[keyword], keyword, given, names[keyword])
        if parsed is not None:
            fields[_KEYS[keyword].field] = parsed
        matching.append(int(tag_for_keyword(keyword) or 0))

    limit, limit_is_ours = _limit(controls.get(_LIMIT, []), max_limit)
    if _fuzzy(controls.get(_FUZZY, [])):
        warnings.append("fuzzymatching is not supported: only literal matching was performed")
    include_all, include_tags = _include(controls.get(_INCLUDE, []))
    return QidoSearch(
        query=ArchiveQuery(**fields),  # type: ignore[arg-type]
        limit=limit,
        offset=_non_negative(controls.get(_OFFSET, []), _OFFSET, default=0),
        limit_is_ours=limit_is_ours,
        include_all=include_all,
        include_tags=include_tags,
        matching_tags=tuple(matching),
        warnings=tuple(warnings),
    )


def attribute_tag(name: str) -> int | None:
    """The tag of an attribute named by keyword or by 8 hex digits; None for neither."""
    if _TAG.match(name):
        return int(name, 16)
    tag = tag_for_keyword(name)
    return int(tag) if tag is not None else None


_LEVEL_NAME = {Level.STUDY: "study", Level.SERIES: "series", Level.IMAGE: "instance"}


def _attribute_keyword(name: str) -> str | None:
    """The keyword a parameter names; None for a real attribute we cannot match on
    (a sequence path, a private or unknown tag). Anything else is refused."""
    tags = [attribute_tag(part) for part in name.split(".")]
    if any(tag is None for tag in tags):
        raise Rejected(f"unknown query parameter {name!r}", location=name)
    if len(tags) > 1:
        return None  # sequence matching: not supported
    return keyword_for_tag(int(tags[0] or 0)) or None


def _parse_value(key: _Key, keyword: str, given: list[str], name: str) -> object | None:
    """The ArchiveQuery value of one key (None: universal matching)."""
    tag = int(tag_for_keyword(keyword) or 0)
    vr = dictionary_VR(tag)
    try:
        if key.kind is _Kind.UID:
            return _uids(given, name)
        if key.kind is _Kind.NUMBER:
            return _numbers(given, name)
        if key.kind in (_Kind.DATE, _Kind.TIME):
            return _range(key.kind, given, name)
        if key.kind is _Kind.NAME:
            if len(given) > 1:
                raise Rejected(f"{name} takes one value", location=name)
            return name_match(DataElement(tag, vr, given[0]), None)
        if key.kind is _Kind.CODE:
            given = [v for value in given for v in value.split(",")]
        return _text(tag, vr, given)
    except MappingFailed as exc:  # a malformed date or time: the parameter is at fault
        raise Rejected(exc.message, location=name) from None


def _text(tag: int, vr: str, given: list[str]) -> TextMatch | None:
    if len(given) == 1:
        return text_match(DataElement(tag, vr, given[0]), None)
    # Several values: list matching (a wild card in a list is taken literally, as in C-FIND).
    values = [v for value in given for v in value.split("\\")]
    return text_match(DataElement(tag, vr, "\\".join(values)), None)


def _uids(given: list[str], name: str) -> tuple[str, ...]:
    uids = []
    for value in given:
        for part in re.split(r"[,\\]", value):
            uid = part.strip()
            if not uid:
                continue
            uids.append(uid)
    if uids == ["*"]:
        return ()  # universal matching, as in C-FIND
    for uid in uids:
        if len(uid) > 64 or not _UID.match(uid):
            raise Rejected(f"{name} must hold UIDs (digits and dots)", location=name)
    return tuple(uids)


def _numbers(given: list[str], name: str) -> tuple[int, ...]:
    numbers = []
    for value in given:
        for part in re.split(r"[,\\]", value):
            text = part.strip()
            if not text:
                continue
            try:
                numbers.append(int(text))
            except ValueError:
                raise Rejected(f"{name} must hold integers", location=name) from None
    return tuple(numbers)


def _range(kind: _Kind, given: list[str], name: str) -> Range | None:
    if len(given) > 1:
        raise Rejected(f"{name} takes one value or range", location=name)
    text = given[0].strip()
    if not text or text == "*":
        return None
    return parse_date_range(text) if kind is _Kind.DATE else parse_time_range(text)


def _limit(given: list[str], max_limit: int) -> tuple[int, bool]:
    if not given:
        return max_limit, True
    limit = _non_negative(given, _LIMIT, default=max_limit)
    if limit == 0:
        raise Rejected("limit must be a positive integer", location=_LIMIT)
    if limit > max_limit:
        return max_limit, True
    return limit, False


def _non_negative(given: list[str], name: str, *, default: int) -> int:
    if not given:
        return default
    if len(given) > 1:
        raise Rejected(f"{name} is given more than once", location=name)
    text = given[0].strip()
    if not text.isdigit():
        raise Rejected(f"{name} must be a non-negative integer", location=name)
    return int(text)


def _fuzzy(given: list[str]) -> bool:
    for value in given:
        lowered = value.strip().lower()
        if lowered not in ("true", "false"):
            raise Rejected("fuzzymatching must be true or false", location=_FUZZY)
        if lowered == "true":
            return True
    return False


def _include(given: list[str]) -> tuple[bool, tuple[int, ...]]:
    tags: list[int] = []
    for value in given:
        for part in value.split(","):
            name = part.strip()
            if not name:
                continue
            if name.lower() == "all":
                return True, ()
            path = [attribute_tag(step) for step in name.split(".")]
            if any(tag is None for tag in path):
                raise Rejected(f"includefield names an unknown attribute {name!r}",
                               location=_INCLUDE)
            if len(path) == 1:  # a path into a sequence: the index holds no sequences
                tags.append(int(path[0] or 0))
    return False, tuple(dict.fromkeys(tags))
