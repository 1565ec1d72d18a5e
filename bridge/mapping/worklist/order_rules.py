"""The rules for applying an order change, shared by the per-message and the batch paths.

Pure: these functions compare what a sender said with what is stored and say what to write.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from bridge.domain import CLOSED_STATUSES, OrderData, StepData, StepStatus

ORDER_FIELDS = ("placer_number", "filler_number", "accession", "study_instance_uid",
                "requested_procedure_id", "procedure_description", "priority", "reason",
                "requesting_physician", "referring_physician", "admission_id")
STEP_FIELDS = ("station_ae", "station_name", "location", "modality", "start_date",
               "start_time", "description", "performing_physician")
CLOSED = tuple(s.value for s in CLOSED_STATUSES)

#: A step that has begun or ended is not put back to SCHEDULED by an order change
#: (a canceled one may be: the MIS reinstates the order).
_PROTECTED_FROM_RESCHEDULE = (CLOSED_STATUSES | {StepStatus.STARTED}) - {StepStatus.CANCELED}


def order_said(data: OrderData) -> dict[str, Any]:
    """Every order column the sender gave a value for (None means "not said")."""
    said: dict[str, Any] = {}
    for name in ORDER_FIELDS:
        value = getattr(data, name)
        if value is not None:
            said[name] = value or None
    if data.placer_number:
        said["placer_issuer"] = data.placer_issuer
    if data.filler_number:
        said["filler_issuer"] = data.filler_issuer
    if data.procedure_code is not None:
        said["procedure_code"] = data.procedure_code.code or None
        said["procedure_scheme"] = data.procedure_code.scheme or None
        said["procedure_meaning"] = data.procedure_code.meaning or None
        if data.procedure_description is None and data.procedure_code.meaning:
            said["procedure_description"] = data.procedure_code.meaning
    return said


def order_changes(stored: Mapping[str, Any], data: OrderData) -> dict[str, Any]:
    """What the sender said that differs from the stored order."""
    return {k: v for k, v in order_said(data).items() if stored.get(k) != v}


def step_said(data: StepData) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for name in STEP_FIELDS:
        value = getattr(data, name)
        if value is not None:
            values[name] = value or None
    if data.protocol_codes is not None:
        values["protocol_codes"] = [
            {"code": c.code, "scheme": c.scheme, "meaning": c.meaning} for c in data.protocol_codes
        ]
    return values


def new_step(data: StepData, sps_id: str, status: StepStatus) -> dict[str, Any]:
    """All columns of a new step (unsaid ones empty)."""
    values: dict[str, Any] = dict.fromkeys(STEP_FIELDS)
    values["protocol_codes"] = []
    values.update(step_said(data))
    values.update(sps_id=sps_id, status=status.value)
    return values


def generated_sps_id(base: str, index: int, count: int) -> str:
    """An SPS ID for a sender that gave none (SH: 16 characters)."""
    return base[:16] if count == 1 else f"{base[:12]}-{index}"


def generated_accession(prefix: str, order_id: int) -> str:
    """Unique because the order id is; SH allows 16 characters."""
    return f"{prefix}{order_id:08d}"[:16]


def keeps_status(current: str, new: StepStatus) -> bool:
    """True when a change to ``new`` must not touch a step that is ``current``."""
    return new is StepStatus.SCHEDULED and current in _PROTECTED_FROM_RESCHEDULE


def match_step(existing: Mapping[str, Any], data: StepData, sps_id: str, count: int) -> Any:
    """The stored step a sender's step is about, or None for a new one."""
    found = existing.get(sps_id)
    if found is None and not data.sps_id and len(existing) == 1 and count == 1:
        return next(iter(existing.values()))  # the sender never names its only step
    return found


def order_status(statuses: Iterable[str], current: str) -> str:
    """The order's status follows its most advanced open step, else its steps' end state."""
    statuses = list(statuses)
    open_statuses = [s for s in statuses if s not in CLOSED]
    if StepStatus.STARTED in open_statuses:
        return StepStatus.STARTED.value
    if open_statuses:
        return open_statuses[0]
    for final in (StepStatus.COMPLETED, StepStatus.DISCONTINUED, StepStatus.CANCELED):
        if final in statuses:
            return final.value
    return current
