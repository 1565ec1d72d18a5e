"""Request and response bodies of the HTTP API.

Request models forbid unknown fields and check DICOM value rules up front (dates ``YYYYMMDD``,
times ``HHMMSS``, AE titles, code strings, lengths of the columns they land in), so a bad
value is a clear 422 naming the field instead of a database error or a worklist entry a
modality cannot read. As in :mod:`bridge.domain`, ``None`` (or an absent field) means "keep
what is stored" and an empty string clears a value.
"""

from __future__ import annotations

import base64
import re
from datetime import UTC, datetime
from typing import Annotated, Literal

from fastapi import Path, Query
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    field_serializer,
    model_validator,
)

from bridge.domain import CodedValue, Identifier, StepData

#: The largest row id: the tables' ids are ``INTEGER`` (32 bits on PostgreSQL).
MAX_ROW_ID = 2**31 - 1
#: A row's id in a path (``/api/jobs/{job_id}``): positive and within the column's type (a
#: larger one overflowed the database's integers: a 500 instead of a 422).
RowId = Annotated[int, Path(ge=1, le=MAX_ROW_ID)]
#: How many rows of a listing to skip.
Offset = Annotated[int, Query(ge=0, le=10_000_000)]

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_CODE_STRING = re.compile(r"[A-Z0-9_ ]+")
_UID = re.compile(r"(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*")


def _text(value: str) -> str:
    """DICOM single-valued text: no control characters, no backslash (the VM separator)."""
    if _CONTROL.search(value):
        raise ValueError("must not contain control characters")
    if "\\" in value:
        raise ValueError("must not contain a backslash")
    return value


def _dicom_date(value: str) -> str:
    if value == "":
        return value
    if not (len(value) == 8 and value.isdigit()):
        raise ValueError("must be a DICOM date YYYYMMDD")
    try:
        datetime.strptime(value, "%Y%m%d")
    except ValueError:
        raise ValueError("must be a DICOM date YYYYMMDD (no such day)") from None
    return value


def _dicom_time(value: str) -> str:
    if value == "":
        return value
    if not (len(value) == 6 and value.isdigit()):
        raise ValueError("must be a DICOM time HHMMSS")
    if int(value[:2]) > 23 or int(value[2:4]) > 59 or int(value[4:]) > 59:
        raise ValueError("must be a DICOM time HHMMSS (out of range)")
    return value


def _ae_title(value: str) -> str:
    if value == "":
        return value
    if not value.isascii() or _CONTROL.search(value) or "\\" in value:
        raise ValueError("AE title must be printable ASCII without backslash")
    if value.strip() != value:
        raise ValueError("AE title must not start or end with a space")
    return value


def _code_string(value: str) -> str:
    if value == "":
        return value
    if not _CODE_STRING.fullmatch(value) or value.strip() != value:
        raise ValueError("must be upper-case letters, digits, '_' or inner spaces")
    return value


def _uid(value: str) -> str:
    if value == "":
        return value
    if not _UID.fullmatch(value):
        raise ValueError("must be a DICOM UID: digits and dots, no leading zeros")
    return value


#: Short string (SH): accession, SPS ID, requested procedure ID, station name.
ShortString = Annotated[str, Field(max_length=16), AfterValidator(_text)]
#: Long string (LO): identifiers, issuers, codes, locations.
LongString = Annotated[str, Field(max_length=64), AfterValidator(_text)]
Description = Annotated[str, Field(max_length=256), AfterValidator(_text)]
LongText = Annotated[str, Field(max_length=1024), AfterValidator(_text)]
#: Person name in DICOM PN layout ``Family^Given^Middle^Prefix^Suffix``.
PersonName = Annotated[str, Field(max_length=320), AfterValidator(_text)]
DicomDate = Annotated[str, AfterValidator(_dicom_date)]
DicomTime = Annotated[str, AfterValidator(_dicom_time)]
AETitle = Annotated[str, Field(max_length=16), AfterValidator(_ae_title)]
Modality = Annotated[str, Field(max_length=16), AfterValidator(_code_string)]
Uid = Annotated[str, Field(max_length=64), AfterValidator(_uid)]
Priority = Literal["STAT", "HIGH", "ROUTINE", "MEDIUM", "LOW", ""]
Sex = Literal["M", "F", "O", ""]
#: Statuses a new order's steps may start in; later ones come from the modality (MPPS).
InitialStatus = Literal["SCHEDULED", "ARRIVED", "READY"]


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=False)


class CodedValueIn(_Request):
    code: Annotated[LongString, Field(min_length=1)]
    scheme: LongString = ""
    meaning: Description = ""

    def to_domain(self) -> CodedValue:
        return CodedValue(code=self.code, scheme=self.scheme, meaning=self.meaning)


class IdentifierIn(_Request):
    value: Annotated[LongString, Field(min_length=1)]
    issuer: LongString = ""
    id_type: ShortString = ""

    def to_domain(self) -> Identifier:
        return Identifier(value=self.value, issuer=self.issuer, id_type=self.id_type)


class PatientDemographicsIn(_Request):
    name: PersonName | None = None
    birth_date: DicomDate | None = None
    sex: Sex | None = None


class PatientIn(PatientDemographicsIn):
    #: The first identifier is the primary one (DICOM PatientID).
    identifiers: Annotated[list[IdentifierIn], Field(min_length=1, max_length=16)]


class StepIn(_Request):
    sps_id: ShortString | None = None
    station_ae: AETitle | None = None
    station_name: ShortString | None = None
    location: LongString | None = None
    modality: Modality | None = None
    start_date: DicomDate | None = None
    start_time: DicomTime | None = None
    description: Description | None = None
    performing_physician: PersonName | None = None
    protocol_codes: Annotated[list[CodedValueIn], Field(max_length=32)] | None = None

    def to_domain(self) -> StepData:
        return StepData(
            sps_id=self.sps_id or None,
            station_ae=self.station_ae,
            station_name=self.station_name,
            location=self.location,
            modality=self.modality,
            start_date=self.start_date,
            start_time=self.start_time,
            description=self.description,
            performing_physician=self.performing_physician,
            protocol_codes=None if self.protocol_codes is None
            else [code.to_domain() for code in self.protocol_codes],
        )


class _OrderFieldsIn(_Request):
    accession: ShortString | None = None
    study_instance_uid: Uid | None = None
    requested_procedure_id: ShortString | None = None
    procedure_code: CodedValueIn | None = None
    procedure_description: Description | None = None
    priority: Priority | None = None
    reason: LongText | None = None
    requesting_physician: PersonName | None = None
    referring_physician: PersonName | None = None
    admission_id: LongString | None = None


class OrderCreate(_OrderFieldsIn):
    """A new order with its procedure steps (``POST /api/worklist``)."""

    patient: PatientIn
    placer_number: LongString | None = None
    placer_issuer: LongString = ""
    filler_number: LongString | None = None
    filler_issuer: LongString = ""
    steps: Annotated[list[StepIn], Field(min_length=1, max_length=64)]
    status: InitialStatus = "SCHEDULED"

    @model_validator(mode="after")
    def _has_a_key(self) -> OrderCreate:
        if not (self.placer_number or self.accession or self.filler_number):
            raise ValueError("one of placer_number, accession or filler_number is required")
        return self


class OrderUpdate(_OrderFieldsIn):
    """Changes to an order (``PATCH /api/worklist/{order_id}``); absent fields are kept.

    Steps are matched by ``sps_id``; a step with a new ``sps_id`` is added. The placer and
    filler numbers identify the order and cannot be changed here.
    """

    patient: PatientDemographicsIn | None = None
    steps: Annotated[list[StepIn], Field(max_length=64)] | None = None


# ----------------------------------------------------------------------------- responses


def _aware(value: datetime | None) -> datetime | None:
    """SQLite hands back naive datetimes; every stored time is UTC."""
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


class _Response(BaseModel):
    model_config = ConfigDict(from_attributes=True)


class MessageSummary(_Response):
    """One logged HL7 message without its content (the content holds PHI)."""

    id: int
    received_at: datetime
    sending_application: str | None
    sending_facility: str | None
    control_id: str | None
    message_type: str | None
    status: str
    ack_code: str | None
    error: str | None

    @field_serializer("received_at")
    def _utc(self, value: datetime) -> datetime | None:
        return _aware(value)


class MessageDetail(MessageSummary):
    peer: str | None
    version: str | None
    charset: str | None
    #: The message exactly as received, base64-encoded.
    raw: bytes
    text: str | None
    accept_ack: str | None
    ack: str | None
    error_location: str | None
    processed_at: datetime | None
    attempts: int

    @field_serializer("raw")
    def _base64(self, value: bytes) -> str:
        return base64.b64encode(value).decode("ascii")

    @field_serializer("processed_at")
    def _utc_processed(self, value: datetime | None) -> datetime | None:
        return _aware(value)


class ReprocessResult(BaseModel):
    message_id: int
    status: str
    ack_code: str
    error: str | None


class CodedValueOut(BaseModel):
    code: str
    scheme: str = ""
    meaning: str = ""


class PatientOut(BaseModel):
    id: int
    #: The primary identifier (DICOM PatientID) and its issuer.
    patient_id: str | None
    issuer: str | None
    name: str
    birth_date: str | None
    sex: str | None


class StepOut(_Response):
    id: int
    sps_id: str
    station_ae: str | None
    station_name: str | None
    location: str | None
    modality: str | None
    start_date: str | None
    start_time: str | None
    description: str | None
    performing_physician: str | None
    protocol_codes: list[CodedValueOut]
    status: str


class OrderOut(_Response):
    id: int
    placer_number: str | None
    placer_issuer: str
    filler_number: str | None
    filler_issuer: str
    accession: str | None
    study_instance_uid: str | None
    requested_procedure_id: str | None
    procedure_code: str | None
    procedure_scheme: str | None
    procedure_meaning: str | None
    procedure_description: str | None
    priority: str | None
    reason: str | None
    requesting_physician: str | None
    referring_physician: str | None
    admission_id: str | None
    status: str
    source: str
    #: Opens the order's study in the viewer, short-lived; only with
    #: BRIDGE_RESOURCE_VIEWER_LINKS and once a study is archived for the order.
    viewer_url: str | None = None


class OrderDetail(OrderOut):
    patient: PatientOut
    steps: list[StepOut]


class WorklistItem(BaseModel):
    """One scheduled procedure step with its order and patient."""

    step: StepOut
    order: OrderOut
    patient: PatientOut


class HealthStatus(BaseModel):
    status: Literal["ok", "unavailable"]


class ErrorBody(BaseModel):
    """Every error answer: the error kind, a message, and the failing field when known."""

    error: str
    detail: str
    location: str | None = None


class FieldError(BaseModel):
    location: str
    message: str
    type: str


class ValidationErrorBody(ErrorBody):
    """A request the schema refuses (422): every field that failed (its value not echoed)."""

    errors: list[FieldError]
