"""The MIS's values applied to a DICOM header on its way out of the bridge. Pure: no I/O.

Files stay as the modality sent them; what leaves the bridge carries what the database says
now (so an ADT A08/A40/A47 after storage changes everything served afterwards):
PatientID + IssuerOfPatientID, PatientName, PatientBirthDate, PatientSex, AccessionNumber,
ReferringPhysicianName and the Request Attributes Sequence. A value the MIS lacks (``None``)
leaves the file's value in place: incoming DICOM only fills what the MIS lacks.

Every replaced value is kept in a new Original Attributes Sequence (0400,0561) item
(PS3.3 C.12.1.1.9): the previous values (zero length for attributes that were absent) in its
Modified Attributes Sequence, with who changed them, when and why. Existing items are kept.

Character set: every changed header goes out as ISO_IR 192 (UTF-8), which holds every script
(ISO_IR 144 has no Ukrainian Ґ/ґ), so pydicom never has to replace an unencodable character
with "?". A header without Specific Character Set whose 8-bit text is in a known codec
(:func:`bridge.mapping.dicom.charset.undeclared_codec`) is decoded with it and goes out as
ISO_IR 192 too, even when the MIS changes nothing. A header that needs neither is left
untouched (:func:`patch_header` returns False) so it can go out byte for byte.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from pydicom.datadict import dictionary_VR
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.tag import BaseTag, Tag
from pydicom.valuerep import PersonName

from bridge.mapping.dicom.charset import (
    SPECIFIC_CHARACTER_SET,
    TEXT_VRS,
    UTF8_TERM,
    apply_codec,
    is_declared,
)
from bridge.mapping.worklist.dataset import Code

#: ModifyingSystem (0400,0563) written in Original Attributes Sequence items.
MODIFYING_SYSTEM = "BRIDGE"
#: ReasonForTheAttributeModification (0400,0565): values replaced from a master record.
COERCE = "COERCE"
#: ... or values replaced because they were wrong (an operator's correction).
CORRECT = "CORRECT"

PATIENT_NAME = BaseTag(0x00100010)
PATIENT_ID = BaseTag(0x00100020)
ISSUER_OF_PATIENT_ID = BaseTag(0x00100021)
ISSUER_QUALIFIERS = BaseTag(0x00100024)
PATIENT_BIRTH_DATE = BaseTag(0x00100030)
PATIENT_SEX = BaseTag(0x00100040)
ACCESSION_NUMBER = BaseTag(0x00080050)
REFERRING_PHYSICIAN = BaseTag(0x00080090)
REQUEST_ATTRIBUTES = BaseTag(0x00400275)
INSTANCE_COERCION_DATETIME = BaseTag(0x00080015)
ORIGINAL_ATTRIBUTES = BaseTag(0x04000561)

#: Maximum value lengths (characters) of the VRs written here (PS3.5 6.2); longer database
#: values are cut so the result stays valid DICOM.
_MAX_LENGTH = {"SH": 16, "LO": 64, "CS": 16}
#: CodeValue, LongCodeValue, CodingSchemeDesignator, CodeMeaning.
_CODE_KEYS = tuple(BaseTag(t) for t in (0x00080100, 0x00080119, 0x00080102, 0x00080104))


@dataclass(frozen=True, slots=True)
class RequestAttributes:
    """One Request Attributes Sequence item: a requested procedure and one of its steps."""

    accession: str | None = None
    study_instance_uid: str | None = None
    requested_procedure_id: str | None = None
    requested_procedure_description: str | None = None
    requested_procedure_code: Code | None = None
    scheduled_procedure_step_id: str | None = None
    scheduled_procedure_step_description: str | None = None
    scheduled_protocol_codes: tuple[Code, ...] = ()


@dataclass(frozen=True, slots=True)
class SubjectValues:
    """What the MIS says about a study's subject and order, as the egress applies it.

    ``None`` (or an empty ``request_attributes``) means the MIS has no value: the file's
    value stays. ``issuer`` goes with ``patient_id``: when the PatientID changes, the file's
    IssuerOfPatientID belonged to the old identifier, so an empty ``issuer`` removes it;
    when the PatientID is unchanged, an empty ``issuer`` keeps the file's.
    """

    patient_id: str | None = None
    issuer: str | None = None
    #: DICOM PN, ``Family^Given^Middle`` (one group; see :func:`_same_name`).
    name: str | None = None
    birth_date: str | None = None
    sex: str | None = None
    accession: str | None = None
    referring_physician: str | None = None
    request_attributes: tuple[RequestAttributes, ...] = ()


def patch_header(
    header: Dataset,
    subject: SubjectValues | None,
    *,
    codec: str | None,
    now: datetime,
    modifying_system: str = MODIFYING_SYSTEM,
    reason: str = COERCE,
    source_of_previous_values: str = "",
) -> bool:
    """Apply ``subject`` (None: an unreconciled study, only the charset fix) to ``header``
    in place; True when anything changed, False when the header is untouched.

    ``codec`` is :func:`~bridge.mapping.dicom.charset.undeclared_codec` of the header (the
    Python codec of its undeclared 8-bit text); it is ignored for a declared header. Must
    run before any text element of ``header`` has been read.
    """
    fix_charset = codec is not None and not is_declared(header)
    if fix_charset:
        apply_codec(header, codec)
    changes = _planned_changes(header, subject) if subject is not None else {}
    if not changes and not fix_charset:
        return False

    # Every text value to Unicode before the declared charset changes: pydicom writes
    # elements it has not decoded as their original bytes.
    decode_text(header)
    header.add_new(SPECIFIC_CHARACTER_SET, "CS", UTF8_TERM)
    if not changes:
        return True

    previous = Dataset()
    stamp = format_datetime(now)
    changes[INSTANCE_COERCION_DATETIME] = DataElement(INSTANCE_COERCION_DATETIME, "DT", stamp)
    for tag in sorted(changes):
        previous.add(_previous_value(header, tag))
        new = changes[tag]
        if new is not None:
            header.add(new)
        elif tag in header:
            del header[tag]

    record = Dataset()
    record.add_new(0x04000550, "SQ", Sequence([previous]))  # ModifiedAttributesSequence
    record.add_new(0x04000562, "DT", stamp)  # AttributeModificationDateTime
    record.add_new(0x04000563, "LO", _fit(modifying_system, "LO"))  # ModifyingSystem
    record.add_new(0x04000564, "LO", _fit(source_of_previous_values, "LO") or None)
    record.add_new(0x04000565, "CS", reason)  # ReasonForTheAttributeModification
    existing = header.get(ORIGINAL_ATTRIBUTES)
    items = list(existing.value) if existing is not None and existing.VR == "SQ" else []
    header.add_new(ORIGINAL_ATTRIBUTES, "SQ", Sequence([*items, record]))
    return True


def decode_text(ds: Dataset) -> None:
    """Convert every text element (in sequence items too) of ``ds`` from its raw bytes to
    Unicode with the charset pydicom noted at read time. Other explicit-VR elements stay
    raw, so they are written back byte for byte."""
    for tag in list(ds.keys()):
        raw = ds.get_item(tag)
        if raw is None:
            continue
        # Implicit VR elements read from a file have no VR until converted.
        if raw.is_raw and raw.VR is not None and raw.VR not in TEXT_VRS and raw.VR != "SQ":
            continue
        element = ds[tag]
        if element.VR == "SQ" and element.value:
            for item in element.value:
                decode_text(item)


def format_datetime(moment: datetime) -> str:
    """A DICOM DT (``YYYYMMDDHHMMSS.FFFFFF&ZZXX``), with its UTC offset when known."""
    text = moment.strftime("%Y%m%d%H%M%S.%f")
    return text + moment.strftime("%z") if moment.tzinfo is not None else text


def _planned_changes(header: Dataset, subject: SubjectValues) -> dict[BaseTag, DataElement | None]:
    """The elements to set (or, as None, remove) for the MIS's values to be in the header."""
    changes: dict[BaseTag, DataElement | None] = {}

    if subject.patient_id:
        if _text(header, PATIENT_ID) != subject.patient_id:
            changes[PATIENT_ID] = _element(PATIENT_ID, "LO", subject.patient_id)
            # The file's issuer (and its qualifiers) described the old identifier; it is
            # recorded even when unchanged, as PS3.3 C.12.1.1.9.1 advises.
            changes[ISSUER_OF_PATIENT_ID] = (
                _element(ISSUER_OF_PATIENT_ID, "LO", subject.issuer) if subject.issuer else None
            )
            if ISSUER_QUALIFIERS in header:
                changes[ISSUER_QUALIFIERS] = None
        elif subject.issuer and _text(header, ISSUER_OF_PATIENT_ID) != subject.issuer:
            changes[ISSUER_OF_PATIENT_ID] = _element(ISSUER_OF_PATIENT_ID, "LO", subject.issuer)
            if ISSUER_QUALIFIERS in header:
                changes[ISSUER_QUALIFIERS] = None

    if subject.name and not _same_name(_text(header, PATIENT_NAME), subject.name):
        changes[PATIENT_NAME] = _element(PATIENT_NAME, "PN", subject.name)
    if subject.referring_physician and not _same_name(
        _text(header, REFERRING_PHYSICIAN), subject.referring_physician
    ):
        changes[REFERRING_PHYSICIAN] = _element(
            REFERRING_PHYSICIAN, "PN", subject.referring_physician
        )
    for tag, vr, value in (
        (PATIENT_BIRTH_DATE, "DA", subject.birth_date),
        (PATIENT_SEX, "CS", subject.sex),
        (ACCESSION_NUMBER, "SH", subject.accession),
    ):
        if value and _text(header, tag) != _fit(value, vr):
            changes[tag] = _element(tag, vr, value)

    if subject.request_attributes:
        wanted = [_request_item(r) for r in subject.request_attributes]
        if not _same_items(header.get(REQUEST_ATTRIBUTES), wanted):
            changes[REQUEST_ATTRIBUTES] = DataElement(REQUEST_ATTRIBUTES, "SQ", Sequence(wanted))
    return changes


def _previous_value(header: Dataset, tag: BaseTag) -> DataElement:
    """The header's element as it was, or an empty one when it was absent (PS3.3
    C.12.1.1.9.1: added attributes may be recorded with a zero length value)."""
    element = header.get(tag)
    if element is not None:
        return copy.deepcopy(element)
    vr = dictionary_VR(tag)
    return DataElement(tag, vr, Sequence() if vr == "SQ" else None)


def _element(tag: BaseTag, vr: str, value: str) -> DataElement:
    return DataElement(tag, vr, _fit(value, vr))


def _fit(value: str, vr: str) -> str:
    limit = _MAX_LENGTH.get(vr)
    return value[:limit] if limit is not None else value


def _text(ds: Dataset, tag: BaseTag) -> str:
    """The element's value as text ('' when absent or empty); PN as its full string."""
    element = ds.get(tag)
    if element is None or element.value is None:
        return ""
    value = element.value
    if isinstance(value, PersonName):
        return str(value)
    if isinstance(value, bytes | Sequence | list):
        return ""
    return str(value).strip()


def _same_name(in_file: str, mis: str) -> bool:
    """Whether the file's PN already says the MIS's name. A name the worklist gave as
    ``SHEVCHENKO^TARAS==Шевченко^Тарас`` is the same as the MIS's ``Шевченко^Тарас`` when
    one of its component groups is, so the richer form the modality copied is kept."""
    wanted = _trim_pn(mis)
    return _trim_pn(in_file) == wanted or wanted in {_trim_pn(g) for g in in_file.split("=")}


def _trim_pn(value: str) -> str:
    """A PN without its trailing empty components and groups (``A^B^^`` is ``A^B``)."""
    groups = [g.strip().rstrip("^") for g in value.strip().split("=")]
    while groups and not groups[-1]:
        groups.pop()
    return "=".join(groups)


def _request_item(request: RequestAttributes) -> Dataset:
    item = Dataset()
    _put(item, "AccessionNumber", "SH", request.accession)
    _put(item, "StudyInstanceUID", "UI", request.study_instance_uid)
    _put(item, "RequestedProcedureID", "SH", request.requested_procedure_id)
    _put(item, "RequestedProcedureDescription", "LO", request.requested_procedure_description)
    if request.requested_procedure_code is not None:
        item.add_new(Tag("RequestedProcedureCodeSequence"), "SQ",
                     Sequence([_code_item(request.requested_procedure_code)]))
    _put(item, "ScheduledProcedureStepID", "SH", request.scheduled_procedure_step_id)
    _put(item, "ScheduledProcedureStepDescription", "LO",
         request.scheduled_procedure_step_description)
    if request.scheduled_protocol_codes:
        item.add_new(Tag("ScheduledProtocolCodeSequence"), "SQ",
                     Sequence([_code_item(c) for c in request.scheduled_protocol_codes]))
    return item


def _code_item(code: Code) -> Dataset:
    item = Dataset()
    # CodeValue is SH; longer codes go to LongCodeValue (PS3.3 8.8).
    if len(code.code) <= 16:
        item.add_new(Tag("CodeValue"), "SH", code.code)
    else:
        item.add_new(Tag("LongCodeValue"), "UC", code.code)
    _put(item, "CodingSchemeDesignator", "SH", code.scheme)
    _put(item, "CodeMeaning", "LO", code.meaning)
    return item


def _put(item: Dataset, keyword: str, vr: str, value: str | None) -> None:
    if value:
        item.add_new(Tag(keyword), vr, _fit(value, vr))


def _same_items(existing: DataElement | None, wanted: list[Dataset]) -> bool:
    """Whether the file's Request Attributes items already say what the MIS says, compared
    on the attributes the MIS gives (the modality may have copied more; those are kept)."""
    if existing is None or existing.VR != "SQ" or len(existing.value) != len(wanted):
        return False
    keys = sorted({element.tag for item in wanted for element in item})
    have = sorted(_projection(item, keys) for item in existing.value)
    want = sorted(_projection(item, keys) for item in wanted)
    return have == want


def _projection(item: Dataset, keys: Iterable[BaseTag]) -> tuple[str, ...]:
    values: list[str] = []
    for tag in keys:
        element = item.get(tag)
        if element is not None and element.VR == "SQ":
            # The only sequences in our items are code sequences.
            codes = sorted(_projection(code, _CODE_KEYS) for code in element.value)
            values.append(repr(codes))
        else:
            values.append(_text(item, tag))
    return tuple(values)
