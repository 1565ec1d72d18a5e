"""HL7 v2 message → domain commands, driven by ``mappings/hl7v2``. Pure: no I/O.

Every missing required value raises :class:`MappingFailed` naming the HL7 field, so the ACK
can carry an ERR segment that points at it.
"""

from __future__ import annotations

from bridge.domain import (
    CodedValue,
    Identifier,
    OrderAction,
    OrderCommand,
    OrderData,
    PatientCommand,
    PatientData,
    StepData,
)
from bridge.errors import MappingFailed, Rejected
from bridge.mapping.hl7_message import HL7Message, parse_path
from bridge.mapping.tables import HL7Tables, PathList

HL7_NULL = '""'  # HL7's explicit "delete this value"


def classify(msg: HL7Message, tables: HL7Tables) -> str:
    """The handler for a message, or Rejected (AR) for what the bridge does not take."""
    version = msg.get("MSH-12.1")
    if version and tables.versions and version not in tables.versions:
        raise Rejected(f"unsupported HL7 version {version!r}", location="MSH-12", hl7_code="203")
    processing = msg.get("MSH-11.1")
    if processing and tables.processing_ids and processing not in tables.processing_ids:
        raise Rejected(f"unsupported processing ID {processing!r}", location="MSH-11",
                       hl7_code="202")
    key = f"{msg.message_code}^{msg.trigger}"
    handler = tables.handlers.get(key)
    if handler is None:
        known_codes = {k.split("^")[0] for k in tables.handlers}
        code = "201" if msg.message_code in known_codes else "200"
        raise Rejected(f"unsupported message type {key}", location="MSH-9", hl7_code=code)
    return handler


def first_value(msg: HL7Message, paths: PathList) -> str | None:
    """The first valued path; None when none is (``""`` comes back as an empty string)."""
    for path in paths:
        value = msg.get(path)
        if value:
            return "" if value == HL7_NULL else value
    return None


def _first_raw(msg: HL7Message, paths: PathList, occurrence: int = 0) -> str:
    """The first valued field (raw, first repetition) among ``paths`` that name whole fields."""
    for path in paths:
        segment, numbers = parse_path(path)
        raw = msg.raw_field(segment, numbers[0], occurrence)
        if raw:
            return raw.split(msg.encoding.repetition, 1)[0]
    return ""


# -- patients -------------------------------------------------------------------------------

def patient_data(msg: HL7Message, tables: HL7Tables, primary_authority: str = "") -> PatientData:
    if not msg.has("PID"):
        raise MappingFailed("PID segment missing", location="PID", hl7_code="100")
    identifiers = identifiers_in(msg, tables.paths("patient", "identifiers")[0], primary_authority)
    if not identifiers:
        raise MappingFailed("patient identifier missing", location="PID-3")
    name_raw = _first_raw(msg, tables.paths("patient", "name"))
    sex = first_value(msg, tables.paths("patient", "sex"))
    birth = first_value(msg, tables.paths("patient", "birth_date"))
    return PatientData(
        identifiers=identifiers,
        name=xpn_to_pn(msg, name_raw) if name_raw else None,
        birth_date=birth[:8] if birth else birth,
        sex=sex[:1].upper() if sex else sex,
    )


def identifiers_in(msg: HL7Message, path: str, primary_authority: str) -> list[Identifier]:
    segment, numbers = parse_path(path)
    found = []
    for rep in msg.repetitions(segment, numbers[0]):
        parts = msg.components(rep)
        value = parts[0].strip() if parts else ""
        if not value:
            continue
        found.append(Identifier(value=value, issuer=_part(parts, 4), id_type=_part(parts, 5)))
    if primary_authority:
        found.sort(key=lambda ident: ident.issuer != primary_authority)
    return found


def patient_command(msg: HL7Message, tables: HL7Tables, handler: str,
                    primary_authority: str = "") -> PatientCommand:
    patient = patient_data(msg, tables, primary_authority)
    if handler == "patient":
        return PatientCommand(kind="upsert", patient=patient)
    prior_path = tables.paths("merge", "prior_identifier")[0]
    priors = identifiers_in(msg, prior_path, primary_authority or patient.primary.issuer)
    if not priors:
        raise MappingFailed("prior patient identifier missing", location=prior_path)
    return PatientCommand(kind=handler, patient=patient, prior=priors[0])


# -- orders ---------------------------------------------------------------------------------

def order_command(msg: HL7Message, tables: HL7Tables, primary_authority: str = "") -> OrderCommand:
    patient = patient_data(msg, tables, primary_authority)
    if not msg.has("ORC"):
        raise MappingFailed("ORC segment missing", location="ORC", hl7_code="100")
    if not msg.has("OBR"):
        raise MappingFailed("OBR segment missing", location="OBR", hl7_code="100")
    control = (first_value(msg, tables.paths("order", "order_control")) or "").upper()
    if not control:
        raise MappingFailed("order control missing", location="ORC-1")
    status = (first_value(msg, tables.paths("order", "order_status")) or "").upper()
    key = f"{control}_{status}" if status else control
    step_status = tables.order_status.get(key)
    if step_status is None:
        raise MappingFailed(f"no mapping for order control/status {key}", location="ORC-1",
                            hl7_code="103")
    try:
        action = OrderAction(control)
    except ValueError:
        action = OrderAction.STATUS

    def value(name: str) -> str | None:
        return first_value(msg, tables.paths("order", name))

    code_raw = _first_raw(msg, tables.paths("order", "procedure_code"))
    procedure = cwe(msg, code_raw) if code_raw else None
    priority_code = value("priority")
    order = OrderData(
        placer_number=value("placer_number"),
        placer_issuer=value("placer_issuer") or "",
        filler_number=value("filler_number"),
        filler_issuer=value("filler_issuer") or "",
        accession=value("accession"),
        study_instance_uid=value("study_instance_uid"),
        requested_procedure_id=value("requested_procedure_id"),
        procedure_code=procedure,
        procedure_description=procedure.meaning if procedure else None,
        priority=tables.priority.get(priority_code.upper(), None) if priority_code else None,
        reason=value("reason"),
        requesting_physician=_person(msg, tables.paths("order", "requesting_physician")),
        referring_physician=_person(msg, tables.paths("order", "referring_physician")),
        admission_id=value("admission_id"),
    )
    base = _obr_step(msg, tables)
    ipcs = msg.all("IPC")
    if ipcs:
        order.steps = [_ipc_step(msg, tables, base, n) for n in range(len(ipcs))]
    else:
        order.steps = [base]
    for step in order.steps:
        if not step.station_ae:
            step.station_ae = tables.station_for(step.modality, step.location)
    return OrderCommand(action=action, patient=patient, order=order, step_status=step_status)


def _obr_step(msg: HL7Message, tables: HL7Tables) -> StepData:
    def value(name: str) -> str | None:
        return first_value(msg, tables.paths("step", name))

    start = value("start")
    date, time = split_timestamp(start) if start else (None, None)
    protocol_raw = _first_raw(msg, tables.paths("step", "protocol"))
    location = value("location")
    return StepData(
        sps_id=value("sps_id"),
        modality=(value("modality") or "").upper() or None,
        start_date=date,
        start_time=time,
        station_ae=value("station_ae"),
        location=location,
        protocol_codes=[protocol_code(msg, protocol_raw)] if protocol_raw else None,
        description=protocol_code(msg, protocol_raw).meaning if protocol_raw else None,
        performing_physician=_person(msg, tables.paths("step", "performing_physician")),
    )


def _ipc_step(msg: HL7Message, tables: HL7Tables, base: StepData, occurrence: int) -> StepData:
    def value(name: str) -> str | None:
        for path in tables.paths("ipc", name):
            found = msg.get(path, occurrence)
            if found:
                return found
        return None

    protocol_raw = ""
    for path in tables.paths("ipc", "protocol"):
        segment, numbers = parse_path(path)
        protocol_raw = msg.raw_field(segment, numbers[0], occurrence).split(
            msg.encoding.repetition, 1)[0]
        if protocol_raw:
            break
    protocol = protocol_code(msg, protocol_raw) if protocol_raw else None
    return StepData(
        sps_id=value("sps_id") or None,
        modality=(value("modality") or base.modality or "").upper() or None,
        start_date=base.start_date,
        start_time=base.start_time,
        station_ae=value("station_ae") or base.station_ae,
        location=base.location,
        protocol_codes=[protocol] if protocol else base.protocol_codes,
        description=protocol.meaning if protocol else base.description,
        performing_physician=base.performing_physician,
    )


# -- data types -----------------------------------------------------------------------------

def _part(parts: list[str], n: int) -> str:
    return parts[n - 1].strip() if len(parts) >= n else ""


def xpn_to_pn(msg: HL7Message, raw: str) -> str:
    """XPN (family^given^middle^suffix^prefix) → DICOM PN (family^given^middle^prefix^suffix)."""
    parts = msg.components(raw)
    if parts and parts[0] == HL7_NULL:
        return ""
    return _pn(_part(parts, 1), _part(parts, 2), _part(parts, 3), _part(parts, 5), _part(parts, 4))


def xcn_to_pn(msg: HL7Message, raw: str) -> str:
    """XCN (id^family^given^middle^suffix^prefix) → DICOM PN."""
    parts = msg.components(raw)
    return _pn(_part(parts, 2), _part(parts, 3), _part(parts, 4), _part(parts, 6), _part(parts, 5))


def _pn(*components: str) -> str:
    return "^".join(components).rstrip("^")


def _person(msg: HL7Message, paths: PathList) -> str | None:
    raw = _first_raw(msg, paths)
    return (xcn_to_pn(msg, raw) or None) if raw else None


def cwe(msg: HL7Message, raw: str) -> CodedValue:
    parts = msg.components(raw)
    return CodedValue(code=_part(parts, 1), meaning=_part(parts, 2), scheme=_part(parts, 3))


def protocol_code(msg: HL7Message, raw: str) -> CodedValue:
    """OBR-4 / IPC-6: the alternate code (components 4-6) when given, else 1-3."""
    parts = msg.components(raw)
    if _part(parts, 4):
        return CodedValue(code=_part(parts, 4), meaning=_part(parts, 5), scheme=_part(parts, 6))
    return CodedValue(code=_part(parts, 1), meaning=_part(parts, 2), scheme=_part(parts, 3))


def split_timestamp(ts: str) -> tuple[str | None, str | None]:
    """HL7 TS/DTM ``YYYYMMDD[HHMM[SS[.S+]]][+/-ZZZZ]`` → DICOM (date, time) as sent (local)."""
    core = ts.split("+", 1)[0].split("-", 1)[0].split(".", 1)[0]
    if len(core) < 8 or not core[:8].isdigit():
        return None, None
    time = core[8:14]
    if time and not time.isdigit():
        time = ""
    return core[:8], (time.ljust(6, "0") if time else None)
