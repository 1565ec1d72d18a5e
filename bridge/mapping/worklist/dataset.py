"""Worklist item → C-FIND response identifier. Pure: no I/O.

Every key the SCU asked for comes back (PS3.4 K.6.1.2.2): with our value, or empty when we
have none or do not know the key (same VR). Nested keys asked inside a sequence's item come
back in every item; a sequence asked for without an item gets every attribute we know.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydicom.datadict import dictionary_VR
from pydicom.dataset import Dataset
from pydicom.tag import Tag

from bridge.mapping.translit import Language, transliterate_person_name, transliterate_text
from bridge.mapping.worklist.query import ReturnKey


@dataclass(frozen=True, slots=True)
class Code:
    code: str
    scheme: str = ""
    meaning: str = ""


@dataclass(frozen=True, slots=True)
class OtherId:
    value: str
    issuer: str = ""
    id_type: str = ""


@dataclass(frozen=True, slots=True)
class WorklistItem:
    """One scheduled procedure step with its order and patient, as the database has them."""

    # patient
    patient_name: str = ""
    patient_id: str = ""
    issuer_of_patient_id: str = ""
    birth_date: str | None = None
    sex: str | None = None
    other_ids: tuple[OtherId, ...] = ()
    # order (requested procedure)
    accession: str | None = None
    study_instance_uid: str | None = None
    requested_procedure_id: str | None = None
    procedure_code: Code | None = None
    procedure_description: str | None = None
    priority: str | None = None
    reason: str | None = None
    requesting_physician: str | None = None
    referring_physician: str | None = None
    admission_id: str | None = None
    comments: str | None = None
    issue_date: str | None = None
    issue_time: str | None = None
    placer_number: str | None = None
    placer_issuer: str = ""
    filler_number: str | None = None
    filler_issuer: str = ""
    # scheduled procedure step
    sps_id: str | None = None
    station_ae: str | None = None
    station_name: str | None = None
    location: str | None = None
    modality: str | None = None
    start_date: str | None = None
    start_time: str | None = None
    description: str | None = None
    performing_physician: str | None = None
    protocol_codes: tuple[Code, ...] = ()
    status: str = "SCHEDULED"


@dataclass(frozen=True, slots=True)
class ResponseOptions:
    """How to write text for the calling AE."""

    character_set: str = "ISO_IR 192"
    #: Transliterate names and text to Latin and send no non-ASCII (peer's ``latin_only``).
    latin_only: bool = False
    language: Language = "uk"


Getter = Callable[[Any], Any]


@dataclass(frozen=True, slots=True)
class _Seq:
    """A known sequence: the contexts its items are built from, and what each item holds."""

    items: Callable[[Any], Sequence[Any]]
    attributes: Mapping[int, Getter | _Seq] = field(default_factory=dict)


def _code_attributes() -> dict[int, Getter | _Seq]:
    # CodeValue is SH (16 chars); longer codes go to LongCodeValue (PS3.3 8.8).
    return {
        Tag("CodeValue"): lambda c: c.code if len(c.code) <= 16 else None,
        Tag("LongCodeValue"): lambda c: c.code if len(c.code) > 16 else None,
        Tag("CodingSchemeDesignator"): lambda c: c.scheme,
        Tag("CodeMeaning"): lambda c: c.meaning,
    }


def _namespace(issuer_of: Getter) -> _Seq:
    """Order Placer/Filler Identifier Sequence: the issuer as a local namespace."""
    return _Seq(
        lambda i: [issuer_of(i)] if issuer_of(i) else [],
        {Tag("LocalNamespaceEntityID"): lambda issuer: issuer},
    )


_SPS_ATTRIBUTES: dict[int, Getter | _Seq] = {
    Tag("ScheduledStationAETitle"): lambda i: i.station_ae,
    Tag("ScheduledStationName"): lambda i: i.station_name,
    Tag("ScheduledProcedureStepLocation"): lambda i: i.location,
    Tag("ScheduledProcedureStepStartDate"): lambda i: i.start_date,
    Tag("ScheduledProcedureStepStartTime"): lambda i: i.start_time,
    Tag("Modality"): lambda i: i.modality,
    Tag("ScheduledPerformingPhysicianName"): lambda i: i.performing_physician,
    Tag("ScheduledProcedureStepDescription"): lambda i: i.description,
    Tag("ScheduledProtocolCodeSequence"): _Seq(lambda i: i.protocol_codes, _code_attributes()),
    Tag("ScheduledProcedureStepID"): lambda i: i.sps_id,
    Tag("ScheduledProcedureStepStatus"): lambda i: i.status,
}

_TOP_ATTRIBUTES: dict[int, Getter | _Seq] = {
    Tag("PatientName"): lambda i: i.patient_name,
    Tag("PatientID"): lambda i: i.patient_id,
    Tag("IssuerOfPatientID"): lambda i: i.issuer_of_patient_id,
    Tag("PatientBirthDate"): lambda i: i.birth_date,
    Tag("PatientSex"): lambda i: i.sex,
    Tag("OtherPatientIDsSequence"): _Seq(
        lambda i: i.other_ids,
        {
            Tag("PatientID"): lambda o: o.value,
            Tag("IssuerOfPatientID"): lambda o: o.issuer,
            # Type 1 in the item; our identifiers are always text (PS3.3 C.7.1.1).
            Tag("TypeOfPatientID"): lambda o: "TEXT",
        },
    ),
    Tag("AccessionNumber"): lambda i: i.accession,
    Tag("StudyInstanceUID"): lambda i: i.study_instance_uid,
    Tag("RequestedProcedureID"): lambda i: i.requested_procedure_id,
    Tag("RequestedProcedureDescription"): lambda i: i.procedure_description,
    Tag("RequestedProcedureCodeSequence"): _Seq(
        lambda i: [i.procedure_code] if i.procedure_code else [], _code_attributes()
    ),
    Tag("RequestedProcedurePriority"): lambda i: i.priority,
    Tag("ReasonForTheRequestedProcedure"): lambda i: i.reason,
    Tag("RequestingPhysician"): lambda i: i.requesting_physician,
    Tag("ReferringPhysicianName"): lambda i: i.referring_physician,
    Tag("AdmissionID"): lambda i: i.admission_id,
    Tag("ImagingServiceRequestComments"): lambda i: i.comments,
    Tag("IssueDateOfImagingServiceRequest"): lambda i: i.issue_date,
    Tag("IssueTimeOfImagingServiceRequest"): lambda i: i.issue_time,
    Tag("PlacerOrderNumberImagingServiceRequest"): lambda i: i.placer_number,
    Tag("FillerOrderNumberImagingServiceRequest"): lambda i: i.filler_number,
    Tag("OrderPlacerIdentifierSequence"): _namespace(lambda i: i.placer_issuer),
    Tag("OrderFillerIdentifierSequence"): _namespace(lambda i: i.filler_issuer),
    Tag("ScheduledProcedureStepSequence"): _Seq(lambda i: [i], _SPS_ATTRIBUTES),
}

_TEXT_VRS = frozenset({"LO", "SH", "LT", "ST", "UT", "UC"})


def build_identifier(
    item: WorklistItem, keys: Sequence[ReturnKey], options: ResponseOptions
) -> Dataset:
    """The response identifier for one item: exactly the requested keys, filled or empty."""
    ds = Dataset()
    if not options.latin_only and options.character_set:
        ds.SpecificCharacterSet = options.character_set
    _fill(ds, item, keys, _TOP_ATTRIBUTES, options)
    return ds


def _fill(
    ds: Dataset,
    context: Any,
    keys: Sequence[ReturnKey],
    known: Mapping[int, Getter | _Seq],
    options: ResponseOptions,
    *,
    skip_empty: bool = False,
) -> None:
    for key in keys:
        spec = known.get(key.tag)
        if isinstance(spec, _Seq):
            items = []
            for sub_context in spec.items(context):
                item = Dataset()
                if key.items:
                    _fill(item, sub_context, key.items, spec.attributes, options)
                else:  # asked without an item: everything we have, nothing empty
                    _fill(item, sub_context, _all_keys(spec.attributes), spec.attributes,
                          options, skip_empty=True)
                items.append(item)
            ds.add_new(key.tag, "SQ", items)
        elif spec is not None and key.vr != "SQ":
            value = response_value(spec(context), key.vr, options)
            if value is not None or not skip_empty:
                ds.add_new(key.tag, key.vr, value)
        elif not skip_empty:
            # Unknown (or a sequence where we have a value): returned empty, same VR.
            ds.add_new(key.tag, key.vr, [] if key.vr == "SQ" else None)


def _all_keys(known: Mapping[int, Getter | _Seq]) -> tuple[ReturnKey, ...]:
    return tuple(
        ReturnKey(tag, "SQ", ()) if isinstance(spec, _Seq) else ReturnKey(tag, dictionary_VR(tag))
        for tag, spec in known.items()
    )


def response_value(value: Any, vr: str, options: ResponseOptions) -> Any:
    """A value as a response carries it: None when empty (the key is returned empty), and
    transliterated to Latin for a peer that reads nothing else."""
    if value is None or value == "":
        return None
    if not isinstance(value, str) or not options.latin_only:
        return value
    if vr == "PN":
        return transliterate_person_name(value, options.language)
    if vr in _TEXT_VRS or not value.isascii():
        return transliterate_text(value, options.language)
    return value

