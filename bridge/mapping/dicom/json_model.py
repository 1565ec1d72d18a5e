"""The DICOM JSON Model (PS3.18 Annex F.2) of what DICOMweb answers. Pure: no I/O.

Three kinds of documents:

- :func:`search_result`: one QIDO-RS match, from an archive record
  (:mod:`bridge.mapping.dicom.qr_results`), so it shows what the database says now: the current
  MIS patient, the order's accession. The attributes are the level's defaults (PS3.18 Table
  10.6.3-3 ff., as far as the index holds them), the matching keys and ``includefield``.
- :func:`dataset_json`: a (patched) header for WADO-RS metadata. Binary values above
  :data:`INLINE_BINARY_LIMIT` and the pixel data are not inlined but referenced by a
  ``BulkDataURI``.
- :func:`stow_response`: the Store Instances Response (PS3.18 10.5.3): Referenced SOP
  Sequence (0008,1199), Failed SOP Sequence (0008,1198) with Failure Reason (0008,1197).

Attributes are keyed by their upper-case 8-digit tag and ordered by tag; an empty attribute
is ``{"vr": VR}`` without ``Value``; PN values are objects with ``Alphabetic``,
``Ideographic`` and ``Phonetic`` component groups, empty groups left out (F.2.2); IS, DS and
the binary number VRs are JSON numbers (F.2.3). Strings are Unicode, so every document states
Specific Character Set ISO_IR 192.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from pydicom.datadict import dictionary_VR
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue

from bridge.mapping.dicom.qr_results import (
    InstanceRecord,
    SeriesRecord,
    StudyRecord,
    record_values,
)

DICOM_JSON = "application/dicom+json"
UTF8_TERM = "ISO_IR 192"
#: Binary values longer than this (bytes) are sent by reference (BulkDataURI), not inline.
INLINE_BINARY_LIMIT = 1024
#: VRs whose values can be bulk data.
BULK_DATA_VRS = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "UN"})

SPECIFIC_CHARACTER_SET = 0x00080005
INSTANCE_AVAILABILITY = 0x00080056
RETRIEVE_URL = 0x00081190
FAILURE_REASON = 0x00081197
FAILED_SOP_SEQUENCE = 0x00081198
REFERENCED_SOP_SEQUENCE = 0x00081199
REFERENCED_SOP_CLASS_UID = 0x00081150
REFERENCED_SOP_INSTANCE_UID = 0x00081155
PIXEL_DATA = 0x7FE00010

#: The study attributes every match carries (a series or instance match too, for context).
STUDY_CONTEXT = (
    0x00080020,  # StudyDate
    0x00080030,  # StudyTime
    0x00080050,  # AccessionNumber
    0x00080090,  # ReferringPhysicianName
    0x00081030,  # StudyDescription
    0x00100010,  # PatientName
    0x00100020,  # PatientID
    0x00100021,  # IssuerOfPatientID
    0x00100030,  # PatientBirthDate
    0x00100040,  # PatientSex
    0x0020000D,  # StudyInstanceUID
    0x00200010,  # StudyID
)
SERIES_CONTEXT = (
    0x00080060,  # Modality
    0x0008103E,  # SeriesDescription
    0x0020000E,  # SeriesInstanceUID
    0x00200011,  # SeriesNumber
)
STUDY_ATTRIBUTES = (
    *STUDY_CONTEXT,
    SPECIFIC_CHARACTER_SET,
    INSTANCE_AVAILABILITY,
    0x00080061,  # ModalitiesInStudy
    RETRIEVE_URL,
    0x00201206,  # NumberOfStudyRelatedSeries
    0x00201208,  # NumberOfStudyRelatedInstances
)
SERIES_ATTRIBUTES = (
    *STUDY_CONTEXT,
    *SERIES_CONTEXT,
    SPECIFIC_CHARACTER_SET,
    RETRIEVE_URL,
    0x00201209,  # NumberOfSeriesRelatedInstances
)
INSTANCE_ATTRIBUTES = (
    *STUDY_CONTEXT,
    *SERIES_CONTEXT,
    SPECIFIC_CHARACTER_SET,
    INSTANCE_AVAILABILITY,
    0x00080016,  # SOPClassUID
    0x00080018,  # SOPInstanceUID
    RETRIEVE_URL,
    0x00200013,  # InstanceNumber
)

SearchRecord = StudyRecord | SeriesRecord | InstanceRecord
JsonObject = dict[str, Any]

_PN_GROUPS = ("Alphabetic", "Ideographic", "Phonetic")
_INTEGER_VRS = frozenset({"IS", "SL", "SS", "SV", "UL", "US", "UV", "AT"})
_DECIMAL_VRS = frozenset({"DS", "FL", "FD"})
_SINGLE_VALUED_VRS = frozenset({"LT", "ST", "UT", "UR"})
#: Larger than any value: nothing nested is sent by reference (a BulkDataURI names a
#: top-level attribute only).
_NEVER = 1 << 62


@dataclass(frozen=True, slots=True)
class StowResult:
    """One part of a STOW-RS request: stored (``retrieve_url``) or failed
    (``failure_reason``, a DIMSE C-STORE failure status). UIDs are None when unreadable."""

    sop_class_uid: str | None
    sop_instance_uid: str | None
    retrieve_url: str | None = None
    failure_reason: int | None = None

    @property
    def failed(self) -> bool:
        return self.failure_reason is not None


@lru_cache(maxsize=4096)
def tag_key(tag: int) -> str:
    """``0010,0010`` → ``"00100010"`` (F.2.1.1: upper-case hex)."""
    return f"{int(tag):08X}"


def search_result(
    record: SearchRecord,
    *,
    retrieve_url: str,
    include: Collection[int] = (),
    include_all: bool = False,
) -> JsonObject:
    """One QIDO-RS match: the level's default attributes plus ``include`` (tags the index
    does not hold are left out); every attribute the index holds when ``include_all``."""
    known: dict[int, Any] = record_values(record)
    known[SPECIFIC_CHARACTER_SET] = UTF8_TERM
    known[RETRIEVE_URL] = retrieve_url
    known[INSTANCE_AVAILABILITY] = "ONLINE"  # every indexed object is on the archive's disk
    if include_all:
        tags: Iterable[int] = known
    else:
        tags = {*_defaults(record), *include}
    return {tag_key(tag): element(tag, _vr(tag), known[tag])
            for tag in sorted(tags) if tag in known}


def element(tag: int, vr: str, value: Any) -> JsonObject:
    """One attribute from a plain value: str (``\\`` separates values), int, a list of
    them, or None/empty for an attribute without value."""
    values = _as_values(value, vr)
    if not values:
        return {"vr": vr}
    if vr == "PN":
        return {"vr": vr, "Value": [person_name(str(v)) for v in values]}
    if vr in _INTEGER_VRS:
        return {"vr": vr, "Value": [int(v) for v in values]}
    if vr in _DECIMAL_VRS:
        return {"vr": vr, "Value": [_number(v) for v in values]}
    return {"vr": vr, "Value": [str(v) for v in values]}


def person_name(value: str) -> JsonObject:
    """A PN value as its component groups: ``A==C`` → ``{"Alphabetic": "A", "Phonetic": "C"}``."""
    groups = value.split("=")
    return {name: group for name, group in zip(_PN_GROUPS, groups, strict=False) if group}


def dataset_json(
    dataset: Dataset,
    *,
    bulk_data_uri: Callable[[int], str],
    pixel_data: tuple[int, str] | None = None,
    inline_limit: int = INLINE_BINARY_LIMIT,
) -> JsonObject:
    """A header (read without its pixel data) as DICOM JSON.

    Top-level binary values longer than ``inline_limit`` become ``BulkDataURI`` references
    (``bulk_data_uri(tag)``); ``pixel_data`` (tag, VR) adds a reference for the pixel data the
    header was read without. Group lengths are left out (F.2: they carry no information in
    JSON). A value pydicom cannot render (an invalid number) is sent as the stored text.
    """
    out: JsonObject = {}
    for tag in sorted(dataset.keys()):
        if tag.element == 0:
            continue
        try:
            elem = dataset[tag]  # a stored value is decoded here
        except (ValueError, TypeError, OverflowError):
            out[tag_key(tag)] = _undecodable_json(dataset.get_item(tag))
            continue
        if (elem.VR in BULK_DATA_VRS and elem.value is not None
                and len(elem.value) > inline_limit):
            out[tag_key(tag)] = {"vr": elem.VR, "BulkDataURI": bulk_data_uri(tag)}
        else:
            out[tag_key(tag)] = _element_json(elem)
    if pixel_data is not None:
        pixel_tag, pixel_vr = pixel_data
        out[tag_key(pixel_tag)] = {"vr": pixel_vr, "BulkDataURI": bulk_data_uri(pixel_tag)}
    return out


def stow_response(results: Sequence[StowResult], *, retrieve_url: str | None) -> JsonObject:
    """The Store Instances Response; ``retrieve_url`` is the study's, when all parts were
    meant for one study. Sequences without items are left out (PS3.18 Table 10.5.3-3:
    each is required only when it has items)."""
    out: JsonObject = {tag_key(SPECIFIC_CHARACTER_SET): element(
        SPECIFIC_CHARACTER_SET, "CS", UTF8_TERM)}
    if retrieve_url:
        out[tag_key(RETRIEVE_URL)] = element(RETRIEVE_URL, "UR", retrieve_url)
    failed = [_sop_item(r, FAILURE_REASON, "US", r.failure_reason) for r in results if r.failed]
    stored = [_sop_item(r, RETRIEVE_URL, "UR", r.retrieve_url) for r in results if not r.failed]
    if failed:
        out[tag_key(FAILED_SOP_SEQUENCE)] = {"vr": "SQ", "Value": failed}
    if stored:
        out[tag_key(REFERENCED_SOP_SEQUENCE)] = {"vr": "SQ", "Value": stored}
    return out


# --- helpers ---------------------------------------------------------------------------


def _defaults(record: SearchRecord) -> tuple[int, ...]:
    if isinstance(record, InstanceRecord):
        return INSTANCE_ATTRIBUTES
    if isinstance(record, SeriesRecord):
        return SERIES_ATTRIBUTES
    return STUDY_ATTRIBUTES


@lru_cache(maxsize=4096)  # a QIDO answer asks it per attribute per match
def _vr(tag: int) -> str:
    if tag == RETRIEVE_URL:
        return "UR"
    return str(dictionary_VR(tag))


def _as_values(value: Any, vr: str) -> list[Any]:
    if value is None:
        return []
    if isinstance(value, list | tuple):
        return [v for v in value if v is not None and v != ""]
    if isinstance(value, str):
        if value == "":
            return []
        return [value] if vr in _SINGLE_VALUED_VRS else value.split("\\")
    return [value]


def _number(value: Any) -> int | float:
    number = float(value)
    return int(number) if number.is_integer() and "." not in str(value) else number


def _sop_item(result: StowResult, tag: int, vr: str, value: Any) -> JsonObject:
    item: JsonObject = {}
    if result.sop_class_uid:
        item[tag_key(REFERENCED_SOP_CLASS_UID)] = element(
            REFERENCED_SOP_CLASS_UID, "UI", result.sop_class_uid)
    if result.sop_instance_uid:
        item[tag_key(REFERENCED_SOP_INSTANCE_UID)] = element(
            REFERENCED_SOP_INSTANCE_UID, "UI", result.sop_instance_uid)
    if value is not None:
        item[tag_key(tag)] = element(tag, vr, value)
    return dict(sorted(item.items()))


def _element_json(elem: DataElement) -> JsonObject:
    try:
        rendered = elem.to_json_dict(None, _NEVER)
    except (ValueError, TypeError, OverflowError):
        return _undecodable_json(elem)
    return _clean_person_names(rendered)


def _undecodable_json(raw: Any) -> JsonObject:
    """A stored value pydicom refuses to decode (an invalid IS/DS such as ``7.5x``): sent as
    its stored text rather than dropped, so the client sees what the modality wrote."""
    vr = str(getattr(raw, "VR", None) or dictionary_VR(raw.tag))
    values = _text_of(getattr(raw, "value", None))
    return {"vr": vr, "Value": values} if values else {"vr": vr}


def _text_of(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, bytes):
        value = value.decode("latin-1").strip(" \x00")
        return value.split("\\") if value else []
    if isinstance(value, list | tuple | MultiValue):
        return [str(v) for v in value]
    return _as_values(str(value), "LO")


def _clean_person_names(rendered: JsonObject) -> JsonObject:
    """pydicom writes empty component groups (``"Ideographic": ""``); F.2.2 leaves them out.
    Sequence items are walked too."""
    vr = rendered.get("vr")
    values = rendered.get("Value")
    if not values:
        return rendered
    if vr == "PN":
        rendered["Value"] = [
            {group: text for group, text in value.items() if text} if isinstance(value, dict)
            else value
            for value in values
        ]
    elif vr == "SQ":
        rendered["Value"] = [
            {key: _clean_person_names(item) for key, item in entry.items()}
            for entry in values
        ]
    return rendered


def is_pixel_tag(tag: int) -> bool:
    """(7FE0,0008) Float, (7FE0,0009) Double Float and (7FE0,0010) Pixel Data."""
    return int(tag) in (0x7FE00008, 0x7FE00009, PIXEL_DATA)


__all__ = [
    "BULK_DATA_VRS",
    "DICOM_JSON",
    "INLINE_BINARY_LIMIT",
    "INSTANCE_ATTRIBUTES",
    "SERIES_ATTRIBUTES",
    "STUDY_ATTRIBUTES",
    "StowResult",
    "dataset_json",
    "element",
    "is_pixel_tag",
    "person_name",
    "search_result",
    "stow_response",
    "tag_key",
]
