"""FHIR Patient and ServiceRequest writes on top of the domain: create, update, conditional
create (``If-None-Exist``) and conditional update with ``If-Match`` versions, and the
registry's idempotent import (:func:`apply_service_request`). Reading and searching are in
:mod:`bridge.services.fhir.lookup`, Bundles in :mod:`bridge.services.fhir.transactions`.

A Patient is a ``patients`` row (+ identifiers), a ServiceRequest an ``orders`` row (+ its
steps): the logical ids are the row ids. Writes go through the same use cases as HL7
(:func:`bridge.services.worklist.orders.apply_order_command`, :func:`bridge.services.patients.mpi.
upsert_patient`), so an order created by HL7 and updated over FHIR (or the reverse) stays one
order when the identifiers agree. What FHIR sends beyond the domain's columns is kept in
``fhir_sources`` and returned as sent (see :mod:`bridge.mapping.fhir.service_request`).

Semantics worth knowing:

- **create** with business identifiers that already name an order or patient is a 409
  naming the existing resource (use a conditional create or an update); the registry sync's
  :func:`apply_service_request` is the upsert.
- **update** replaces what FHIR maps: an element left out clears the domain value it maps to
  (priority, reason, note...), except the keys (identifiers are never removed, a patient's
  primary PatientID stays primary) — an order must stay findable by its keys.
- The same resource sent again (same JSON but for id and meta) changes nothing.
- Status changes drive the worklist through ``mappings/fhir/service_request_status.yaml``;
  an ended order takes no new status (409).
- Nothing is committed here: the caller commits (a transaction Bundle is all-or-nothing).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from sqlalchemy import Connection, bindparam, func, select, text
from sqlalchemy.orm import Session

from bridge.config.settings import Settings
from bridge.domain import (
    CodedValue,
    Identifier,
    OrderAction,
    OrderCommand,
    PatientData,
    StepData,
    StepStatus,
)
from bridge.errors import BridgeError, Conflict, MappingFailed, NotFound, Rejected
from bridge.mapping.fhir.bundle import parse_condition, parse_qsl, rewrite_references
from bridge.mapping.fhir.datatypes import contained, reference_parts
from bridge.mapping.fhir.outcome import InvalidReference, NotAllowed, PreconditionFailed
from bridge.mapping.fhir.patient import identifier_of, read_patient
from bridge.mapping.fhir.service_request import (
    ServiceRequestInput,
    check_transition,
    read_service_request,
)
from bridge.mapping.fhir.version import check_resource
from bridge.services.fhir.context import DOMAIN_TYPES, PATIENT, SR, FhirContext, fhir_tables
from bridge.services.fhir.lookup import current_version, match_ids, row_id_of
from bridge.services.fhir.views import (
    PI,
    O,
    P,
    S,
    kept_part,
    resource_hash,
    save_source,
    stored_hash,
    touch_order,
    touch_patient,
)
from bridge.services.patients.mpi import lookup_identifier, upsert_patient
from bridge.services.worklist.orders import apply_order_command, find_order

__all__ = ["DOMAIN_TYPES", "PATIENT", "SR", "FhirContext", "Written", "apply_service_request",
           "check_if_match", "conditional_update", "create", "fhir_tables", "update"]

Mode = Literal["create", "upsert"]


@dataclass(frozen=True, slots=True)
class Written:
    """What a write did: to which resource, whether it made it, whether anything changed."""

    resource_type: str
    id: int
    created: bool
    changed: bool


# -- writing ------------------------------------------------------------------------------

def create(session: Session, ctx: FhirContext, resource_type: str, body: Any, *,
           if_none_exist: str | None = None, refs: Mapping[str, str] | None = None,
           path: str = "") -> Written:
    """Create (201), or with ``If-None-Exist`` return the one match unchanged (200)."""
    _writable(resource_type)
    if if_none_exist:
        found = match_ids(session, ctx, resource_type, parse_condition(if_none_exist))
        if len(found) > 1:
            raise PreconditionFailed("If-None-Exist matches more than one resource",
                                     location="If-None-Exist")
        if found:
            check_resource(ctx.version, body, expected_type=resource_type, path=path)
            return Written(resource_type, found[0], created=False, changed=False)
    return _write(session, ctx, resource_type, body, target=None, mode="create", refs=refs,
                  path=path)


def update(session: Session, ctx: FhirContext, resource_type: str, resource_id: str,
           body: Any, *, if_match: str | None = None, refs: Mapping[str, str] | None = None,
           path: str = "") -> Written:
    """Update by id; the body's id must be the URL's (400); an unknown id is 405 (the
    bridge assigns ids)."""
    _writable(resource_type)
    if isinstance(body, Mapping) and body.get("id") != resource_id:
        raise Rejected("the resource's id must equal the id in the URL",
                       location=f"{path or resource_type}.id")
    row_id = row_id_of(resource_type, resource_id)
    _lock_row(session.connection(), resource_type, row_id)
    version = current_version(session, resource_type, row_id)
    if version is None:
        raise NotAllowed(f"{resource_type}/{resource_id} does not exist and the bridge "
                         "assigns ids: create it with POST", location="id")
    check_if_match(if_match, version)
    return _write(session, ctx, resource_type, body, target=row_id, mode="create", refs=refs,
                  path=path)


def conditional_update(session: Session, ctx: FhirContext, resource_type: str,
                       params: list[tuple[str, str]] | tuple[tuple[str, str], ...],
                       body: Any, *, if_match: str | None = None,
                       refs: Mapping[str, str] | None = None, path: str = "") -> Written:
    """``PUT [type]?[search]``: no match creates, one match is updated, more is 412."""
    _writable(resource_type)
    found = match_ids(session, ctx, resource_type, params)
    if len(found) > 1:
        raise PreconditionFailed("the condition matches more than one resource",
                                 location="url")
    if not found:
        return _write(session, ctx, resource_type, body, target=None, mode="create",
                      refs=refs, path=path)
    if isinstance(body, Mapping) and body.get("id") not in (None, str(found[0])):
        raise Rejected(f"the resource's id differs from the match ({resource_type}/"
                       f"{found[0]})", location=f"{path or resource_type}.id")
    _lock_row(session.connection(), resource_type, found[0])
    check_if_match(if_match, current_version(session, resource_type, found[0]))
    return _write(session, ctx, resource_type, body, target=found[0], mode="create",
                  refs=refs, path=path)


def apply_service_request(session: Session, resource_json: Any, settings: Settings, *,
                          subject: PatientData | None = None) -> tuple[int, bool]:
    """Import one ServiceRequest (a dict, or its JSON text): found by its business
    identifiers and updated, else created. Returns ``(order id, created)``.

    Idempotent: the same resource again changes nothing. Its ``id`` and ``meta`` (another
    server's) are ignored. ``subject`` overrides the resource's subject (a patient the caller
    already resolved). Nothing is committed; raises :class:`BridgeError` kinds.
    """
    body = json.loads(resource_json) if isinstance(resource_json, str | bytes) else resource_json
    written = _write(session, FhirContext.from_settings(settings), SR, body, target=None,
                     mode="upsert", refs=None, path="", subject=subject)
    return written.id, written.created


def check_if_match(if_match: str | None, version: str | None) -> None:
    """``If-Match: W/"<version>"`` (or the bare version) must name the current version."""
    if not if_match:
        return
    wanted = if_match.strip()
    if wanted.startswith("W/"):
        wanted = wanted[2:]
    wanted = wanted.strip('"')
    if wanted != version:
        raise PreconditionFailed(f"If-Match names version {wanted}, the current one is "
                                 f"{version}", location="If-Match")


_ADVISORY_LOCK = text("SELECT pg_advisory_xact_lock(:key)")
_LOCK_ROW = {SR: select(O.c.id).where(O.c.id == bindparam("row_id")).with_for_update(),
             PATIENT: select(P.c.id).where(P.c.id == bindparam("row_id")).with_for_update()}


def _lock_row(conn: Connection, resource_type: str, row_id: int) -> None:
    """Hold the row until commit, so ``If-Match`` and the write see the same version even
    when HL7 changes the order at the same moment (PostgreSQL; SQLite writers are
    serialized by ``BEGIN IMMEDIATE`` already)."""
    if conn.dialect.name == "postgresql":
        conn.execute(_LOCK_ROW[resource_type], {"row_id": row_id})


def _lock_keys(conn: Connection, keys: list[str]) -> None:
    """Writers of the same business keys queue here until commit, so two concurrent
    creates of one order cannot both make it (PostgreSQL: accession and filler number have
    no unique constraint; a placer number and a patient identifier do, and the loser of such
    a race gets a 409). Sorted, so two writers never wait for each other."""
    if conn.dialect.name != "postgresql":
        return
    for key in sorted(set(keys)):
        digest = hashlib.sha256(key.encode()).digest()[:8]
        conn.execute(_ADVISORY_LOCK, {"key": int.from_bytes(digest, "big", signed=True)})


def _writable(resource_type: str) -> None:
    if resource_type not in DOMAIN_TYPES:
        raise NotAllowed(f"{resource_type} cannot be written here (only Patient and "
                         "ServiceRequest)", location="type")


def _write(session: Session, ctx: FhirContext, resource_type: str, body: Any, *,
           target: int | None, mode: Mode, refs: Mapping[str, str] | None, path: str,
           subject: PatientData | None = None) -> Written:
    resource = check_resource(ctx.version, body, expected_type=resource_type, path=path)
    if refs:
        resource = rewrite_references(resource, refs)
    try:
        if resource_type == SR:
            return _write_service_request(session, ctx, resource, target, mode, subject)
        return _write_patient(session, ctx, resource, target, mode)
    except BridgeError as exc:
        exc.location = _fhir_location(exc.location, resource_type)
        if path and exc.location and exc.location.startswith(resource_type):
            exc.location = path + exc.location[len(resource_type):]
        raise


#: HL7 fields the shared domain rules name in their errors, as the FHIR element they come
#: from (e.g. "order has no placer number..." at ORC-2).
_HL7_TO_FHIR = {"ORC-2": "identifier", "OBR-18": "identifier", "OBR": "",
                "PID-3": "identifier"}
_HL7_FIELD = re.compile(r"^[A-Z][A-Z0-9]{2}(-[\d.]+)?$")


def _fhir_location(location: str | None, resource_type: str) -> str | None:
    if location is None or not _HL7_FIELD.match(location):
        return location
    element = _HL7_TO_FHIR.get(location, "")
    if location == "PID-3" and resource_type == SR:
        element = "subject"
    return f"{resource_type}.{element}" if element else resource_type


# -- ServiceRequest -----------------------------------------------------------------------

def _write_service_request(session: Session, ctx: FhirContext, resource: dict[str, Any],
                           target: int | None, mode: Mode,
                           subject: PatientData | None) -> Written:
    request = read_service_request(resource, ctx.tables, ctx.version, ctx.zone)
    kept = kept_part(resource)
    digest = resource_hash(kept)
    conn = session.connection()
    if target is not None:
        found = _order_for_update(session, conn, request, target)
    else:
        if not request.has_key:
            raise MappingFailed("the ServiceRequest needs a placer (PLAC), filler (FILL) or "
                                "accession (ACSN) identifier", location=f"{SR}.identifier")
        data = request.order
        if not data.placer_number:  # a placer number is unique in the database already
            keys = [f"order accession {data.accession}"] if data.accession else []
            if data.filler_number:
                keys.append(f"order filler {data.filler_issuer}|{data.filler_number}")
            _lock_keys(conn, keys)
        found = find_order(session, request.order)
        if found is not None and mode == "create":
            raise Conflict(f"ServiceRequest/{found.id} has these identifiers; change it with "
                           f"PUT ServiceRequest/{found.id} or a conditional update",
                           location=f"{SR}.identifier")
    if found is not None and stored_hash(conn, SR, found.id) == digest:
        return Written(SR, int(found.id), created=False, changed=False)
    check_transition(found.status if found is not None else None, request.status, ctx.tables)
    patient = subject or _subject(session, ctx, resource, request.subject)
    command = _order_command(conn, request, found, patient)
    order_id = apply_order_command(session, command, policy=ctx.policy)
    touch_order(conn, order_id, comments=request.comments, issue_date=request.issue_date,
                issue_time=request.issue_time)
    save_source(conn, SR, order_id, kept, digest, status=request.status,
                known=found is not None)
    return Written(SR, order_id, created=found is None, changed=True)


def _order_for_update(session: Session, conn: Connection, request: ServiceRequestInput,
                      target: int) -> Any:
    """The order ``target`` as the request's keys find it; a body whose keys name another
    order (or would make a new one) is a 409."""
    stored = conn.execute(select(O.c.placer_number, O.c.placer_issuer, O.c.filler_number,
                                 O.c.filler_issuer, O.c.accession)
                          .where(O.c.id == target)).first()
    if stored is None:
        raise NotFound(f"ServiceRequest/{target} is not known", location="id")
    data = request.order
    if not request.has_key:
        data.placer_number, data.placer_issuer = stored.placer_number, stored.placer_issuer
        data.filler_number, data.filler_issuer = stored.filler_number, stored.filler_issuer
        data.accession = stored.accession
    found = find_order(session, data)
    if found is None and not data.accession and stored.accession:
        data.accession = stored.accession  # a new placer number on an order found by its
        found = find_order(session, data)  # accession: the order keeps both
    if found is None or found.id != target:
        where = f"ServiceRequest/{found.id}" if found is not None else "no order"
        raise Conflict(f"the identifiers name {where}, not ServiceRequest/{target}",
                       location=f"{SR}.identifier")
    return found


def _order_command(conn: Connection, request: ServiceRequestInput, found: Any,
                   patient: PatientData) -> OrderCommand:
    data, step = request.order, request.step
    if found is None:
        return OrderCommand(OrderAction.NEW, patient, data, request.step_status, source="fhir")
    _said_in_full(request)
    sps_ids = list(conn.execute(select(S.c.sps_id).where(S.c.order_id == found.id)
                                .order_by(S.c.id)).scalars())
    if len(sps_ids) == 1:
        step.sps_id = sps_ids[0]
    elif len(sps_ids) > 1:
        # One ServiceRequest describes one step; an order HL7 gave several steps keeps
        # them as they are, and only their status follows the ServiceRequest.
        data.steps = [StepData(sps_id=sps_id) for sps_id in sps_ids]
    action = (OrderAction.CANCEL if request.step_status is StepStatus.CANCELED
              else OrderAction.CHANGE)
    return OrderCommand(action, patient, data, request.step_status, source="fhir")


def _said_in_full(request: ServiceRequestInput) -> None:
    """An update replaces the resource: what it leaves out is cleared (``""``), not kept."""
    data, step = request.order, request.step
    for name in ("procedure_description", "priority", "reason", "requesting_physician",
                 "admission_id"):
        if getattr(data, name) is None:
            setattr(data, name, "")
    if data.procedure_code is None:
        data.procedure_code = CodedValue(code="")
    for name in ("modality", "start_date", "start_time", "station_ae", "description"):
        if getattr(step, name) is None:
            setattr(step, name, "")
    if step.protocol_codes is None:
        step.protocol_codes = []


def _subject(session: Session, ctx: FhirContext, resource: Mapping[str, Any],
             subject: Mapping[str, Any]) -> PatientData:
    """The patient a subject names: a contained Patient (found or created by its
    identifiers, demographics applied), ``Patient/[id]``, ``Patient?identifier=...``, or a
    logical reference by identifier (found, or created with that identifier)."""
    where = f"{SR}.subject"
    reference = subject.get("reference")
    inner = contained(resource, reference)
    if inner is not None:
        if inner.get("resourceType") != PATIENT:
            raise InvalidReference("the subject must be a Patient", location=where)
        try:
            return read_patient(inner, ctx.tables, ctx.settings.hl7_primary_authority)
        except MappingFailed as exc:
            exc.location = f"{SR}.contained" + (exc.location or "")[len(PATIENT):]
            raise
    if isinstance(reference, str) and reference.startswith("Patient?"):
        found = match_ids(session, ctx, PATIENT, parse_qsl(reference[len("Patient?"):]))
        if len(found) != 1:
            raise InvalidReference(f"the subject's condition matches {len(found)} patients",
                                   location=f"{where}.reference")
        return _stored_patient(session.connection(), found[0], where)
    own_base = f"{ctx.settings.base_url}/fhir/"
    if isinstance(reference, str) and reference.startswith(own_base):
        reference = reference[len(own_base):]  # this server's own absolute URL
    parts = reference_parts(reference)
    if parts is not None and "://" not in str(reference):
        if parts[0] != PATIENT:
            raise InvalidReference("the subject must be a Patient", location=where)
        if not parts[1].isdigit() or len(parts[1]) > 18:
            raise InvalidReference(f"{reference} is not known", location=f"{where}.reference")
        return _stored_patient(session.connection(), int(parts[1]), where)
    identifier = identifier_of(subject.get("identifier"), ctx.tables)
    if identifier is None:
        raise InvalidReference("the subject cannot be resolved: give Patient/[id], a "
                               "contained Patient or subject.identifier",
                               location=f"{where}.reference" if reference else where)
    return PatientData(identifiers=[identifier])


_PRIMARY_OF_CURRENT = (
    select(P.c.id, PI.c.value, PI.c.issuer, PI.c.id_type)
    .join(PI, PI.c.patient_id == func.coalesce(P.c.merged_into_id, P.c.id))
    .where(P.c.id == bindparam("pid")).order_by(PI.c.position, PI.c.id).limit(1)
)


def _stored_patient(conn: Connection, patient_id: int, where: str) -> PatientData:
    """A known patient by id (a merged-away one stands for its survivor), by its primary
    identifier only: nothing about the patient changes."""
    primary = conn.execute(_PRIMARY_OF_CURRENT, {"pid": patient_id}).first()
    if primary is None:
        raise InvalidReference(f"Patient/{patient_id} is not known",
                               location=f"{where}.reference")
    return PatientData(identifiers=[Identifier(primary.value, primary.issuer or "",
                                               primary.id_type or "")])


# -- Patient --------------------------------------------------------------------------------

def _write_patient(session: Session, ctx: FhirContext, resource: dict[str, Any],
                   target: int | None, mode: Mode) -> Written:
    data = read_patient(resource, ctx.tables, ctx.settings.hl7_primary_authority)
    kept = kept_part(resource)
    digest = resource_hash(kept)
    conn = session.connection()
    holders: dict[int, Identifier] = {}
    for identifier in data.identifiers:
        found = lookup_identifier(conn, identifier)
        if found is not None:
            holders.setdefault(found.id, identifier)
    if target is None and holders:
        holder = next(iter(holders))
        if mode == "create" or len(holders) > 1:
            raise Conflict(f"Patient/{holder} holds an identifier of this patient; change it "
                           f"with PUT Patient/{holder} or a conditional update",
                           location=f"{PATIENT}.identifier")
        target = holder
    if target is None:
        patient_id = upsert_patient(session, data)
        save_source(conn, PATIENT, patient_id, kept, digest, known=False)
        return Written(PATIENT, patient_id, created=True, changed=True)
    row = conn.execute(select(P.c.merged_into_id).where(P.c.id == target)).first()
    if row is None:
        raise NotFound(f"Patient/{target} is not known", location="id")
    if row.merged_into_id is not None:
        raise Conflict(f"Patient/{target} was merged into Patient/{row.merged_into_id}; "
                       "change that one", location="id")
    others = sorted(h for h in holders if h != target)
    if others:
        raise Conflict(f"an identifier of this patient belongs to Patient/{others[0]}",
                       location=f"{PATIENT}.identifier")
    if stored_hash(conn, PATIENT, target) == digest:
        return Written(PATIENT, target, created=False, changed=False)
    primary = _stored_patient(conn, target, PATIENT).primary
    rest = [i for i in data.identifiers if (i.value, i.issuer) != (primary.value, primary.issuer)]
    patient_id = upsert_patient(session, PatientData(
        identifiers=[primary, *rest], name=data.name if data.name is not None else "",
        birth_date=data.birth_date or "", sex=data.sex if data.sex is not None else ""))
    if patient_id != target:
        raise Conflict(f"the identifiers name Patient/{patient_id}", location="id")
    touch_patient(conn, target)
    save_source(conn, PATIENT, target, kept, digest)
    return Written(PATIENT, target, created=False, changed=True)
