"""Modality Worklist C-FIND identifier → :class:`WorklistQuery`. Pure: no I/O.

Matching follows PS3.4 C.2.2.2: an empty key is universal matching (and only asks for the
value back), a value with ``*``/``?`` is wild card matching, ``\\``-separated values are list
matching, ``A-B``/``-B``/``A-`` on DA/TM keys is range matching, and a key inside the single
item of Scheduled Procedure Step Sequence is sequence matching. Keys we do not match on are
still returned (empty) by :mod:`bridge.mapping.worklist.dataset`; see :attr:`ignored_keys`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.tag import Tag

from bridge.errors import MappingFailed

SPS_SEQUENCE = Tag(0x0040, 0x0100)  # ScheduledProcedureStepSequence
SPECIFIC_CHARACTER_SET = Tag(0x0008, 0x0005)
# Dataset.get with a Tag gives the DataElement (with a keyword, the value).
_START_DATE = Tag(0x0040, 0x0002)
_START_TIME = Tag(0x0040, 0x0003)

_DATE = re.compile(r"^\d{8}$")
_TIME = re.compile(r"^(\d{2})(\d{2})?(\d{2})?(\.\d{1,6})?$")


@dataclass(frozen=True, slots=True)
class TextMatch:
    """Single value / list matching (``values``, any equal) or wild card matching."""

    values: tuple[str, ...] = ()
    #: DICOM wild card pattern (``*`` any run, ``?`` one character); None for exact values.
    pattern: str | None = None

    @property
    def is_wildcard(self) -> bool:
        return self.pattern is not None


@dataclass(frozen=True, slots=True)
class Range:
    """Inclusive bounds as sortable DICOM strings; a missing bound is open."""

    lower: str | None = None
    upper: str | None = None


@dataclass(frozen=True, slots=True)
class ReturnKey:
    """A key the SCU wants back. ``items`` is set for sequences: the keys asked for inside
    the sequence's item, or ``()`` for a sequence sent without items (return all we know)."""

    tag: int
    vr: str
    items: tuple[ReturnKey, ...] | None = None


@dataclass(frozen=True, slots=True)
class WorklistQuery:
    patient_id: TextMatch | None = None
    issuer_of_patient_id: TextMatch | None = None
    #: Case-folded, so it compares with ``patients.name_search``.
    patient_name: TextMatch | None = None
    accession: TextMatch | None = None
    requested_procedure_id: TextMatch | None = None
    study_instance_uid: TextMatch | None = None
    sps_id: TextMatch | None = None
    station_ae: TextMatch | None = None
    modality: TextMatch | None = None
    status: TextMatch | None = None
    start_date: Range | None = None
    start_time: Range | None = None
    #: Date and time ranges form one date-time range (PS3.4 C.2.2.2.5.1) instead of two
    #: independent ones: ``20261122-20261123`` + ``2000-0600`` is one night, not two evenings.
    combined_datetime: bool = False
    return_keys: tuple[ReturnKey, ...] = ()
    #: Keyword of keys that carried a value we do not match on (for logs; PS3.4 allows it).
    ignored_keys: tuple[str, ...] = field(default=())


# Keys we match on, by keyword → WorklistQuery field. PatientName and dates are special.
_TOP_LEVEL = {
    "PatientID": "patient_id",
    "IssuerOfPatientID": "issuer_of_patient_id",
    "AccessionNumber": "accession",
    "RequestedProcedureID": "requested_procedure_id",
    "StudyInstanceUID": "study_instance_uid",
}
_IN_SPS = {
    "ScheduledStationAETitle": "station_ae",
    "Modality": "modality",
    "ScheduledProcedureStepStatus": "status",
    "ScheduledProcedureStepID": "sps_id",
}


def parse_worklist_query(
    identifier: Dataset,
    *,
    undeclared_charset: str | None = None,
    combined_datetime: bool = False,
) -> WorklistQuery:
    """Read the matching keys and the return keys of a Modality Worklist identifier.

    ``undeclared_charset`` (a Python codec, from the peer's settings) decodes text the SCU
    sent without Specific Character Set: pydicom reads it as Latin-1, which round-trips the
    bytes, so we can re-decode them here instead of matching on mojibake.

    Raises :class:`MappingFailed` (→ 0xA900) for a malformed date, time or sequence key.
    """
    fields: dict[str, object] = {"combined_datetime": combined_datetime}
    ignored: list[str] = []
    recode = undeclared_charset if not identifier.get("SpecificCharacterSet") else None

    for elem in identifier:
        keyword = elem.keyword
        if elem.tag == SPS_SEQUENCE:
            _parse_sps(elem, fields, ignored, recode)
        elif keyword == "PatientName":
            fields["patient_name"] = name_match(elem, recode)
        elif keyword in _TOP_LEVEL:
            fields[_TOP_LEVEL[keyword]] = text_match(elem, recode)
        elif elem.tag != SPECIFIC_CHARACTER_SET and not is_empty(elem):
            ignored.append(keyword or str(elem.tag))

    fields["return_keys"] = return_keys(identifier)
    fields["ignored_keys"] = tuple(ignored)
    return WorklistQuery(**fields)  # type: ignore[arg-type]


def return_keys(identifier: Dataset) -> tuple[ReturnKey, ...]:
    """Every key of the identifier (nested ones too), which the response must carry."""
    keys = []
    for elem in identifier:
        if elem.tag == SPECIFIC_CHARACTER_SET:
            continue  # set by the response builder from the settings, never echoed
        if elem.VR == "SQ":
            items = return_keys(elem.value[0]) if elem.value else ()
            keys.append(ReturnKey(int(elem.tag), "SQ", items))
        else:
            keys.append(ReturnKey(int(elem.tag), str(elem.VR)))
    return tuple(keys)


def like_pattern(pattern: str) -> str:
    """A DICOM wild card pattern as an SQL LIKE pattern with ``\\`` as the escape character."""
    escaped = pattern.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return escaped.replace("*", "%").replace("?", "_")


def wildcard_matches(pattern: str, value: str) -> bool:
    """Wild card matching in Python (same semantics as :func:`like_pattern` in SQL)."""
    regex = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.fullmatch(regex, value, flags=re.DOTALL) is not None


def _parse_sps(
    elem: DataElement, fields: dict[str, object], ignored: list[str], recode: str | None
) -> None:
    if not elem.value:
        return  # zero items: universal matching on the whole sequence
    if len(elem.value) > 1:
        raise MappingFailed(
            "Scheduled Procedure Step Sequence must hold one item in a query",
            location="(0040,0100)",
        )
    item: Dataset = elem.value[0]
    date_elem = item.get(_START_DATE)
    time_elem = item.get(_START_TIME)
    if date_elem is not None and not is_empty(date_elem):
        fields["start_date"] = parse_date_range(first_value(date_elem))
    if time_elem is not None and not is_empty(time_elem):
        fields["start_time"] = parse_time_range(first_value(time_elem))
    for sub in item:
        if sub.keyword in _IN_SPS:
            fields[_IN_SPS[sub.keyword]] = text_match(sub, recode)
        elif sub.keyword not in (
            "ScheduledProcedureStepStartDate", "ScheduledProcedureStepStartTime"
        ) and not is_empty(sub):
            ignored.append(sub.keyword or str(sub.tag))


def parse_date_range(value: str) -> Range:
    """``D``, ``D1-D2``, ``-D`` or ``D-`` (DA, ``YYYYMMDD``)."""
    lower, upper = _split_range(value)
    for bound in (lower, upper):
        if bound is not None and not _DATE.match(bound):
            raise MappingFailed(f"invalid date {value!r}", location="(0040,0002)")
    return Range(lower, upper)


def parse_time_range(value: str) -> Range:
    """``T``, ``T1-T2``, ``-T`` or ``T-`` (TM). Bounds become ``HHMMSS`` strings that
    compare with the stored ``HHMMSS[.FFFFFF]``: a lower bound of reduced precision starts
    at its first second, an upper bound ends after its last one (``17`` → up to 17:59:59)."""
    lower, upper = _split_range(value)
    return Range(
        _time_bound(lower, value, upper=False) if lower is not None else None,
        _time_bound(upper, value, upper=True) if upper is not None else None,
    )


def _time_bound(bound: str, whole: str, *, upper: bool) -> str:
    match = _TIME.match(bound.replace(":", ""))
    if not match:
        raise MappingFailed(f"invalid time {whole!r}", location="(0040,0003)")
    hh, mm, ss, _fraction = match.groups()
    pad = "59" if upper else "00"
    text = hh + (mm or pad) + (ss or pad)
    # Stored times may carry a fraction: 170000.5 must still be ≤ an upper bound of 170000.
    # Digits only (no "~" trick) so that linguistic collations order it the same way.
    return text + ".999999" if upper else text


def _split_range(value: str) -> tuple[str | None, str | None]:
    value = value.strip()
    if "-" not in value:
        return value, value
    lower, _, upper = value.partition("-")
    return (lower.strip() or None), (upper.strip() or None)


def text_match(elem: DataElement, recode: str | None) -> TextMatch | None:
    """A text key's matching: None (universal) when empty or ``*``, wild card matching for
    one value with ``*``/``?``, else single value or list matching. ``recode`` is the codec
    for text sent without Specific Character Set (see :func:`parse_worklist_query`)."""
    values = [v for v in (_recode(str(v), recode).strip() for v in element_values(elem)) if v]
    if not values:
        return None
    if len(values) == 1 and ("*" in values[0] or "?" in values[0]):
        if set(values[0]) == {"*"}:
            return None  # "*" alone is universal matching (PS3.4 C.2.2.2.4)
        return TextMatch(pattern=values[0])
    return TextMatch(values=tuple(values))


def name_match(elem: DataElement, recode: str | None) -> TextMatch | None:
    """PN matching is case-insensitive here (in every script): the value is case-folded
    like ``patients.name_search``. Of a multi-group name only the first group is used, and
    trailing empty components are dropped (``SMITH^^`` is ``SMITH``)."""
    if is_empty(elem):
        return None
    raw = _recode(str(first_value(elem)), recode)
    group = next((g for g in raw.split("=") if g.strip("^ ")), "")
    name = group.rstrip("^ ").casefold()
    if not name or set(name) == {"*"}:
        return None
    if "*" in name or "?" in name:
        return TextMatch(pattern=name)
    return TextMatch(values=(name,))


def element_values(elem: DataElement) -> list[object]:
    """An element's values as a list: none when empty, one, or each of a multi-value."""
    if elem.value is None or elem.value == "":
        return []
    if isinstance(elem.value, MultiValue | list | tuple):
        return list(elem.value)
    return [elem.value]


def first_value(elem: DataElement) -> str:
    """An element's first value as text (``""`` when empty)."""
    values = element_values(elem)
    # A DA/TM range never holds a backslash; a multi-valued one is taken as its first value.
    return str(values[0]) if values else ""


def is_empty(elem: DataElement) -> bool:
    """No value: a key sent for universal matching (a sequence: no item, or empty ones)."""
    if elem.VR == "SQ":
        return not elem.value or all(len(item) == 0 for item in elem.value)
    return elem.value is None or elem.value == "" or elem.value == b""


def _recode(text: str, charset: str | None) -> str:
    if charset is None or text.isascii():
        return text
    try:
        return text.encode("latin-1").decode(charset)
    except (UnicodeError, LookupError):
        return text

