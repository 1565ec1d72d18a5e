"""HL7 v2 referrals and results, read as the tables in ``mappings/hl7v2`` say (pure).

REF^I12..I15 carry RF1 (the referral), PRD (the parties: RP refers, RT is referred to), PID,
and optionally PR1/OBR (the procedure asked for). ORU^R01 carries OBR (which order: ``ref-N``
in OBR-2, or the accession) and OBX (the report text). The answer to a REF is an RRI with
the referral's status in RF1-1 (:func:`build_rri`).
"""

from __future__ import annotations

from typing import Final

from bridge.domain import ReferralCommand, ResultCommand
from bridge.errors import BridgeError, MappingFailed
from bridge.mapping.hl7.ack import AckContext, err_segment, escape
from bridge.mapping.hl7.message import HL7Message
from bridge.mapping.hl7.tables import HL7Tables
from bridge.mapping.hl7.to_domain import patient_data

ACTIONS: Final = {"I12": "new", "I13": "modify", "I14": "cancel", "I15": "query"}
#: OBX value types whose OBX-5 is report text.
TEXT_TYPES: Final = frozenset({"ST", "TX", "FT"})


def _get(msg: HL7Message, tables: HL7Tables, group: str, name: str,
         occurrence: int = 0) -> str:
    return msg.first(tables.compiled_paths(group, name), occurrence)


def referral_command(msg: HL7Message, tables: HL7Tables,
                     primary_authority: str = "") -> ReferralCommand:
    if not msg.has("RF1"):
        raise MappingFailed("RF1 segment missing", location="RF1", hl7_code="100")
    external_id = _get(msg, tables, "referral", "referral_id")
    if not external_id:
        raise MappingFailed("the referral has no identifier", location="RF1-6")
    action = ACTIONS.get(msg.trigger, "")
    if not action:
        raise MappingFailed(f"REF^{msg.trigger} is not a referral event", location="MSH-9")
    requester = performer = None
    for occurrence in range(len(msg.all("PRD"))):
        role = _get(msg, tables, "provider", "role", occurrence).upper()
        identifier = _get(msg, tables, "provider", "identifier", occurrence) or None
        if role == "RP":
            requester = identifier
        elif role == "RT":
            performer = identifier
    kind_code = _get(msg, tables, "referral", "type").upper()
    referrals = tables.referrals
    performer_kind = referrals.get("performer_kind", {}).get(kind_code)
    if action == "new" and performer_kind is None:
        raise MappingFailed(f"no mapping for referral type {kind_code or '(empty)'}",
                            location="RF1-3", hl7_code="103")
    priority = referrals.get("priority", {}).get(
        _get(msg, tables, "referral", "priority").upper(), "routine")
    return ReferralCommand(
        action=action, external_id=external_id,
        patient=patient_data(msg, tables, primary_authority),
        requester=requester, performer=performer,
        performer_kind=performer_kind or "diagnostics",
        code=_get(msg, tables, "referral", "code"),
        code_system=_get(msg, tables, "referral", "code_system"),
        code_display=_get(msg, tables, "referral", "code_display"),
        modality=_get(msg, tables, "referral", "modality") or None,
        reason=_get(msg, tables, "referral", "reason"), priority=priority)


def result_command(msg: HL7Message, tables: HL7Tables) -> ResultCommand:
    if not msg.has("OBR"):
        raise MappingFailed("OBR segment missing", location="OBR", hl7_code="100")
    status_code = _get(msg, tables, "result", "status").upper() or "F"
    status = tables.referrals.get("result_status", {}).get(status_code)
    if status is None:
        raise MappingFailed(f"no mapping for result status {status_code}", location="OBR-25",
                            hl7_code="103")
    lines = []
    for occurrence in range(len(msg.all("OBX"))):
        if msg.get("OBX-2", occurrence).upper() in TEXT_TYPES:
            lines.append(msg.get("OBX-5", occurrence))
    if not lines:
        raise MappingFailed("the result has no report text (OBX of type ST, TX or FT)",
                            location="OBX-5")
    return ResultCommand(
        placer_number=_get(msg, tables, "result", "placer_number") or None,
        accession=_get(msg, tables, "result", "accession") or None,
        status=status, conclusion="\n".join(lines),
        code=_get(msg, tables, "result", "code"),
        code_display=_get(msg, tables, "result", "code_display"))


def build_rri(ctx: AckContext, code: str, *, control_id: str, timestamp: str,
              rri_status: str, external_id: str, referral_id: int | None,
              error: BridgeError | None = None) -> str:
    """The RRI answering a REF: MSA, then RF1 with the status, the MIS's referral id (RF1-6)
    and the bridge's (RF1-11); ERR when the REF was not taken."""
    msh = "|".join([
        "MSH", "^~\\&", ctx.receiving_application, ctx.receiving_facility,
        ctx.sending_application, ctx.sending_facility, timestamp, "",
        f"RRI^{ctx.trigger}^RRI_I12", control_id, ctx.processing_id, ctx.version,
        "", "", "", "", "", ctx.charset_field,
    ]).rstrip("|")
    text = escape(error.message) if error else ""
    segments = [msh, f"MSA|{code}|{ctx.control_id}" + (f"|{text[:80]}" if text else "")]
    if error is not None:
        segments.append(err_segment(error, ctx.version))
    ours = f"ref-{referral_id}^BRIDGE" if referral_id is not None else ""
    segments.append(f"RF1|{rri_status}|||||{escape(external_id)}|||||{ours}")
    return "\r".join(segments) + "\r"
