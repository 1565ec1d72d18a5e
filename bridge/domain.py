"""Plain data the mapping layer produces and the services apply. No I/O here.

``None`` always means "the sender did not say" (keep what is stored); an empty string
means "the sender cleared it" (HL7 ``""``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum


class StepStatus(StrEnum):
    """DICOM Scheduled Procedure Step Status (0040,0020) plus the MPPS outcomes."""

    SCHEDULED = "SCHEDULED"
    ARRIVED = "ARRIVED"
    READY = "READY"
    STARTED = "STARTED"
    SUSPENDED = "SUSPENDED"
    COMPLETED = "COMPLETED"
    DISCONTINUED = "DISCONTINUED"
    CANCELED = "CANCELED"


#: Steps in these states are no longer offered on the worklist.
CLOSED_STATUSES = frozenset(
    {StepStatus.COMPLETED, StepStatus.DISCONTINUED, StepStatus.CANCELED}
)


class OrderAction(StrEnum):
    """What an order message asks for (ORC-1 order control, or the API's verb)."""

    NEW = "NW"
    CHANGE = "XO"
    CANCEL = "CA"
    DISCONTINUE = "DC"
    STATUS = "SC"


@dataclass(frozen=True, slots=True)
class Identifier:
    value: str
    issuer: str = ""
    id_type: str = ""


@dataclass(slots=True)
class PatientData:
    identifiers: list[Identifier]
    #: DICOM PN: Family^Given^Middle^Prefix^Suffix
    name: str | None = None
    birth_date: str | None = None
    sex: str | None = None

    @property
    def primary(self) -> Identifier:
        return self.identifiers[0]


@dataclass(frozen=True, slots=True)
class CodedValue:
    code: str
    scheme: str = ""
    meaning: str = ""


@dataclass(slots=True)
class StepData:
    sps_id: str | None = None
    station_ae: str | None = None
    station_name: str | None = None
    location: str | None = None
    modality: str | None = None
    start_date: str | None = None
    start_time: str | None = None
    description: str | None = None
    performing_physician: str | None = None
    protocol_codes: list[CodedValue] | None = None


@dataclass(slots=True)
class OrderData:
    placer_number: str | None = None
    placer_issuer: str = ""
    filler_number: str | None = None
    filler_issuer: str = ""
    accession: str | None = None
    study_instance_uid: str | None = None
    requested_procedure_id: str | None = None
    procedure_code: CodedValue | None = None
    procedure_description: str | None = None
    priority: str | None = None
    reason: str | None = None
    requesting_physician: str | None = None
    referring_physician: str | None = None
    admission_id: str | None = None
    steps: list[StepData] = field(default_factory=list)


@dataclass(slots=True)
class OrderCommand:
    """Create, change or end an order and its procedure steps."""

    action: OrderAction
    patient: PatientData
    order: OrderData
    #: The status the order's steps take (from the ORC-1 + ORC-5 table, or the API).
    step_status: StepStatus
    source: str = "hl7"


@dataclass(slots=True)
class PatientCommand:
    """Create/update a patient; or merge ``prior`` into it; or change ``prior`` to its ID."""

    kind: str  # "upsert" | "merge" | "change_identifier"
    patient: PatientData
    prior: Identifier | None = None


@dataclass(slots=True)
class ReferralCommand:
    """An HL7 v2 referral message (REF^I12 new, I13 modify, I14 cancel, I15 query)."""

    action: str  # "new" | "modify" | "cancel" | "query"
    external_id: str
    patient: PatientData
    requester: str | None = None  # the referring practitioner's directory identifier
    performer: str | None = None  # the referred-to practitioner's or department's
    performer_kind: str = "diagnostics"
    code: str = ""
    code_system: str = ""
    code_display: str = ""
    modality: str | None = None
    reason: str = ""
    priority: str = "routine"
    source: str = "hl7"
    #: Set when applied, for the RRI: the referral's Task status and its id.
    answer: tuple[str, int] | None = None


@dataclass(slots=True)
class ResultCommand:
    """An HL7 v2 result (ORU^R01) for a referral's order."""

    placer_number: str | None
    accession: str | None
    status: str
    conclusion: str
    code: str = ""
    code_display: str = ""
