"""HL7 v2 message → domain commands, driven by ``mappings/hl7v2``. Pure: no I/O.

Every missing required value raises :class:`MappingFailed` naming the HL7 field, so the ACK
can carry an ERR segment that points at it.

This runs for every message the bridge receives, so a table group's entries are read in
one call of a reader compiled from the table (``HL7Tables.reader``), not path by path.
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
from bridge.mapping.hl7.message import (
    HL7_NULL,
    FieldPath,
    HL7Message,
    compile_path,
    compile_reader,
)
from bridge.mapping.hl7.tables import HL7Tables

#: What :func:`classify` reads besides the message type.
_HEADER = compile_reader({"version": (compile_path("MSH-12.1"),),
                          "processing": (compile_path("MSH-11.1"),)})
#: ORC-1 values that name an action; any other order control is a status change.
_ACTIONS = {action.value: action for action in OrderAction}
#: Table entries read as whole fields (their first repetition, as sent) and taken apart
#: here: XPN, XCN, CWE.
_WHOLE_FIELDS = frozenset({"name", "procedure_code", "requesting_physician",
                           "referring_physician", "protocol", "performing_physician"})
#: Table entries read with every repetition (CX), by :func:`identifiers_in`.
_REPEATING = frozenset({"identifiers", "prior_identifier"})
_NOT_VALUES = _WHOLE_FIELDS | _REPEATING


def classify(msg: HL7Message, tables: HL7Tables) -> str:
    """The handler for a message, or Rejected (AR) for what the bridge does not take."""
    said = msg.read(_HEADER)
    version = said["version"]
    if version and tables.versions and version not in tables.versions:
        raise Rejected(f"unsupported HL7 version {version!r}", location="MSH-12", hl7_code="203")
    processing = said["processing"]
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


def _said(msg: HL7Message, tables: HL7Tables, group: str) -> dict[str, str | None]:
    """Every entry of a table group at once. A value: its first valued path, None when none
    is (``""`` comes back as an empty string). A whole field: the first repetition of the
    first one sent."""
    return msg.read(tables.reader(group, _REPEATING, _WHOLE_FIELDS, True))


# -- patients -------------------------------------------------------------------------------

def patient_data(msg: HL7Message, tables: HL7Tables, primary_authority: str = "") -> PatientData:
    if not msg.has("PID"):
        raise MappingFailed("PID segment missing", location="PID", hl7_code="100")
    paths = tables.compiled["patient"]
    identifiers = identifiers_in(msg, paths.get("identifiers", ())[0], primary_authority)
    if not identifiers:
        raise MappingFailed("patient identifier missing", location="PID-3")
    said = _said(msg, tables, "patient")
    name_raw = said.get("name")
    sex, birth = said.get("sex"), said.get("birth_date")
    return PatientData(
        identifiers=identifiers,
        name=xpn_to_pn(msg, name_raw) if name_raw else None,
        birth_date=birth[:8] if birth else birth,
        sex=sex[:1].upper() if sex else sex,
    )


def identifiers_in(msg: HL7Message, path: FieldPath, primary_authority: str) -> list[Identifier]:
    found = []
    field = msg.raw_field(path.segment, path.field)
    for rep in field.split(msg.encoding.repetition) if field else ():
        if not rep:
            continue
        parts = msg.components(rep)
        value = parts[0].strip()
        if not value:
            continue
        count = len(parts)
        found.append(Identifier(value, parts[3].strip() if count >= 4 else "",  # issuer
                                parts[4].strip() if count >= 5 else ""))  # id_type
    if primary_authority:
        found.sort(key=lambda ident: ident.issuer != primary_authority)
    return found


def patient_command(msg: HL7Message, tables: HL7Tables, handler: str,
                    primary_authority: str = "") -> PatientCommand:
    patient = patient_data(msg, tables, primary_authority)
    if handler == "patient":
        return PatientCommand(kind="upsert", patient=patient)
    prior_path = tables.compiled_paths("merge", "prior_identifier")[0]
    priors = identifiers_in(msg, prior_path, primary_authority or patient.primary.issuer)
    if not priors:
        raise MappingFailed("prior patient identifier missing", location=prior_path.text)
    return PatientCommand(kind=handler, patient=patient, prior=priors[0])


# -- orders ---------------------------------------------------------------------------------

def order_command(msg: HL7Message, tables: HL7Tables, primary_authority: str = "") -> OrderCommand:
    patient = patient_data(msg, tables, primary_authority)
    if not msg.has("ORC"):
        raise MappingFailed("ORC segment missing", location="ORC", hl7_code="100")
    if not msg.has("OBR"):
        raise MappingFailed("OBR segment missing", location="OBR", hl7_code="100")
    said = _said(msg, tables, "order")
    control = (said.get("order_control") or "").upper()
    if not control:
        raise MappingFailed("order control missing", location="ORC-1")
    status = (said.get("order_status") or "").upper()
    key = f"{control}_{status}" if status else control
    step_status = tables.order_status.get(key)
    if step_status is None:
        raise MappingFailed(f"no mapping for order control/status {key}", location="ORC-1",
                            hl7_code="103")
    action = _ACTIONS.get(control, OrderAction.STATUS)
    code_raw = said.get("procedure_code")
    procedure = cwe(msg, code_raw) if code_raw else None
    priority_code = said.get("priority")
    order = OrderData(
        placer_number=said.get("placer_number"),
        placer_issuer=said.get("placer_issuer") or "",
        filler_number=said.get("filler_number"),
        filler_issuer=said.get("filler_issuer") or "",
        accession=said.get("accession"),
        study_instance_uid=said.get("study_instance_uid"),
        requested_procedure_id=said.get("requested_procedure_id"),
        procedure_code=procedure,
        procedure_description=procedure.meaning if procedure else None,
        priority=tables.priority.get(priority_code.upper(), None) if priority_code else None,
        reason=said.get("reason"),
        requesting_physician=_person(msg, said.get("requesting_physician")),
        referring_physician=_person(msg, said.get("referring_physician")),
        admission_id=said.get("admission_id"),
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
    said = _said(msg, tables, "step")
    start = said.get("start")
    date, time = split_timestamp(start) if start else (None, None)
    protocol_raw = said.get("protocol")
    protocol = protocol_code(msg, protocol_raw) if protocol_raw else None
    return StepData(
        sps_id=said.get("sps_id"),
        modality=(said.get("modality") or "").upper() or None,
        start_date=date,
        start_time=time,
        station_ae=said.get("station_ae"),
        location=said.get("location"),
        protocol_codes=[protocol] if protocol is not None else None,
        description=protocol.meaning if protocol is not None else None,
        performing_physician=_person(msg, said.get("performing_physician")),
    )


def _ipc_step(msg: HL7Message, tables: HL7Tables, base: StepData, occurrence: int) -> StepData:
    paths = tables.compiled["ipc"]
    # Unlike _said, HL7's null is read as sent here.
    said = msg.read(tables.reader("ipc", _NOT_VALUES), occurrence)
    protocol_raw = ""
    for path in paths.get("protocol", ()):
        # Unlike first_raw: a field whose first repetition is empty gives way to the next.
        protocol_raw = msg.raw_field(path.segment, path.field, occurrence).split(
            msg.encoding.repetition, 1)[0]
        if protocol_raw:
            break
    protocol = protocol_code(msg, protocol_raw) if protocol_raw else None
    return StepData(
        sps_id=said.get("sps_id") or None,
        modality=(said.get("modality") or base.modality or "").upper() or None,
        start_date=base.start_date,
        start_time=base.start_time,
        station_ae=said.get("station_ae") or base.station_ae,
        location=base.location,
        protocol_codes=[protocol] if protocol else base.protocol_codes,
        description=protocol.meaning if protocol else base.description,
        performing_physician=base.performing_physician,
    )


# -- data types -----------------------------------------------------------------------------

def _padded(parts: list[str], count: int) -> list[str]:
    """``parts`` (a list of its own) with empty components up to ``count``."""
    if len(parts) < count:
        parts += [""] * (count - len(parts))
    return parts


def xpn_to_pn(msg: HL7Message, raw: str) -> str:
    """XPN (family^given^middle^suffix^prefix) → DICOM PN (family^given^middle^prefix^suffix)."""
    parts = msg.components(raw)
    if parts and parts[0] == HL7_NULL:
        return ""
    return _pn(*_padded(parts, 5)[:5])


def xcn_to_pn(msg: HL7Message, raw: str) -> str:
    """XCN (id^family^given^middle^suffix^prefix) → DICOM PN."""
    return _pn(*_padded(msg.components(raw), 6)[1:6])


def _pn(family: str, given: str, middle: str, suffix: str, prefix: str) -> str:
    """HL7's name order (… suffix, prefix) → DICOM PN's (… prefix, suffix), trimmed."""
    return "^".join((family.strip(), given.strip(), middle.strip(), prefix.strip(),
                     suffix.strip())).rstrip("^")


def _person(msg: HL7Message, raw: str | None) -> str | None:
    return (xcn_to_pn(msg, raw) or None) if raw else None


def cwe(msg: HL7Message, raw: str) -> CodedValue:
    code, meaning, scheme = _padded(msg.components(raw), 3)[:3]
    return CodedValue(code=code.strip(), meaning=meaning.strip(), scheme=scheme.strip())


def protocol_code(msg: HL7Message, raw: str) -> CodedValue:
    """OBR-4 / IPC-6: the alternate code (components 4-6) when given, else 1-3."""
    parts = _padded(msg.components(raw), 6)
    alternate = parts[3].strip()
    if alternate:
        return CodedValue(code=alternate, meaning=parts[4].strip(), scheme=parts[5].strip())
    return CodedValue(code=parts[0].strip(), meaning=parts[1].strip(), scheme=parts[2].strip())


def split_timestamp(ts: str) -> tuple[str | None, str | None]:
    """HL7 TS/DTM ``YYYYMMDD[HHMM[SS[.S+]]][+/-ZZZZ]`` → DICOM (date, time) as sent (local)."""
    # Mostly sent as digits alone (no offset, no fraction): nothing to cut then.
    core = ts if ts.isdigit() else ts.split("+", 1)[0].split("-", 1)[0].split(".", 1)[0]
    if len(core) < 8 or not core[:8].isdigit():
        return None, None
    time = core[8:14]
    if time and not time.isdigit():
        time = ""
    return core[:8], (time.ljust(6, "0") if time else None)
