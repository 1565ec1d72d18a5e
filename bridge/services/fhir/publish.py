"""Publishing ImagingStudies to a target FHIR server through the durable outbox.

**When.** :func:`enqueue_publication` is a study hook: it runs in the transaction that makes a
study stable (so new series after stability publish again when the study is stable again) or
reconciles a stable one, and should run in the one that deletes a study (before its rows go).
It adds a job to the ``fhir_publish`` queue keyed by StudyInstanceUID, so any number of
instances and changes before the job runs make one publication. :class:`MergeWatch` adds the
studies of patients merged by ADT A40 (their subject changes). Unreconciled studies are not
published.

**What.** The handler never trusts the payload beyond the study UID: it rebuilds the
ImagingStudy from the index and the MIS values *as they are when it runs*, so a merge, a new
series or a reconciliation that happened meanwhile is included, and a study deleted meanwhile
is withdrawn instead of published.

**How** (:class:`PublishHandler`, one job at a time per worker thread):

1. the subject: ``GET Patient?identifier=<system>|<value>`` for the current patient's
   identifiers, primary first (a local issuer without a known system searches by value). The
   Patient is **not** created when missing: the MIS owns patients, and a Patient made by the
   bridge from DICOM-level demographics would be a duplicate the MIS has to merge later. A
   missing or ambiguous patient fails the job permanently with a clear error; once the MIS
   has it, an operator requeues the job (``POST /api/jobs/{id}/requeue``);
2. ``basedOn``: the ServiceRequest of that patient with the order's accession (then its placer
   number) as identifier. None found: a logical reference by accession (no failure: many MIS
   keep orders outside FHIR). More than one: a permanent failure;
3. the Endpoint of the bridge's WADO-RS base, made or updated once per process by a
   conditional update on its identifier (``urn:ietf:rfc:3986|<address>``);
4. ``PUT ImagingStudy?identifier=urn:dicom:uid|urn:oid:<uid>`` (conditional update: created
   the first time, updated after, never a duplicate, whatever is retried). The resource is
   validated with fhir.resources first and carries ``meta.source`` = the bridge's base URL;
5. optionally (``fhir_target_complete_service_request``) the ServiceRequest is set
   ``completed`` with the ImagingStudy in ``supportingInfo``, with ``If-Match`` on the version
   read (a concurrent change answers 412 and the job is retried from step 1). Only an
   ``active`` request is completed; other statuses are left as they are;
6. a ``published`` study event with the target's ids and versions.

**Deletion.** A study deleted from the archive (reconciliation reject) is *withdrawn*: its
ImagingStudy on the target is set ``entered-in-error``, kept rather than deleted, because
other resources (the ServiceRequest, a DiagnosticReport) may reference it and servers with
referential integrity refuse such a delete; FHIR defines entered-in-error as "should not have
existed". It is changed only when the bridge wrote its current version (``meta.source``),
the way DICOMcast deletes only what it created; otherwise it is left alone. Either outcome is
in the audit log (the study's own events are deleted with it).

**Errors.** Connection errors, timeouts, 408, 409, 412 (version conflict), 429 and 5xx are
:class:`~bridge.errors.Transient`: retried with capped exponential back-off
(:func:`retry_policy`). Other 4xx, a 412 on the conditional update (more than one
ImagingStudy with that identifier: the target needs cleaning), an invalid resource, an
unknown patient: permanent, the job goes to the failed list (``GET /api/jobs?queue=
fhir_publish&status=failed``). Errors name no patient identifier values (job errors are shown
to operators as non-PHI).
"""

from __future__ import annotations

import copy
import logging
import threading
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Final

import httpx
from sqlalchemy import exists, select
from sqlalchemy.orm import Session, sessionmaker

from bridge.clients.fhir import translate_error
from bridge.config.settings import Settings
from bridge.errors import Conflict, NotFound, Rejected, Transient
from bridge.jobs import queue
from bridge.jobs.queue import ClaimedJob, RetryPolicy
from bridge.jobs.worker import Interrupted
from bridge.mapping.fhir import imaging_study as fis
from bridge.services.fhir import imaging as fhir_imaging
from bridge.services.fhir.imaging import LoadedStudy
from bridge.store.archive_models import (
    RECONCILED,
    STABLE,
    Job,
    Study,
    StudyEvent,
)
from bridge.store.audit import append_audit
from bridge.store.db import read_session
from bridge.store.models import Patient, table_of, utcnow

log = logging.getLogger("bridge.fhir_publish")

FHIR_PUBLISH_QUEUE: Final = "fhir_publish"
PUBLISHED_EVENT: Final = "published"
AUDIT_ACTOR: Final = "fhir_publish"
FHIR_JSON: Final = "application/fhir+json"
#: Statuses that may pass by waiting (besides 5xx); every other 4xx is permanent.
RETRYABLE_STATUSES: Final = frozenset({408, 409, 412, 429})
_STUDY_LOCKS: Final = 64

S = table_of(Study)
E = table_of(StudyEvent)
P = table_of(Patient)


# ----------------------------------------------------------------------------- enqueueing


def publication_key(study_instance_uid: str) -> str:
    """One publication per study: pending jobs with this key coalesce."""
    return f"study:{study_instance_uid}"


def retry_policy(settings: Settings) -> RetryPolicy:
    """The ``fhir_publish`` queue's retry policy from the settings (for the job worker)."""
    return RetryPolicy(max_attempts=settings.fhir_publish_max_attempts,
                       base_seconds=settings.fhir_publish_retry_base_seconds,
                       max_seconds=max(settings.fhir_publish_retry_max_seconds,
                                       settings.fhir_publish_retry_base_seconds))


def enqueue_publication(session: Session, study_id: int) -> bool:
    """Queue the publication of a study (a :data:`~bridge.services.archive.stability.StudyHook`).

    Queued when the study is reconciled and stable, or when it was published (or is about to
    be) before: called just before a study is deleted, that job withdraws it. Returns whether
    a job was queued (or an already pending one updated)."""
    conn = session.connection()
    row = conn.execute(select(S.c.study_instance_uid, S.c.reconciliation, S.c.state,
                              S.c.patient_id).where(S.c.id == study_id)).first()
    if row is None:
        return False
    key = publication_key(row.study_instance_uid)
    publishable = (row.reconciliation in RECONCILED and row.patient_id is not None
                   and row.state == STABLE)
    if not publishable and not _published_before(session, study_id, key):
        return False
    queue.enqueue(session, queue=FHIR_PUBLISH_QUEUE, dedup_key=key,
                  payload={"study_uid": row.study_instance_uid, "study_id": study_id})
    log.debug("study %s queued for FHIR publication", study_id)
    return True


def _published_before(session: Session, study_id: int, key: str) -> bool:
    conn = session.connection()
    if conn.execute(select(exists().where(E.c.study_id == study_id,
                                          E.c.kind == PUBLISHED_EVENT))).scalar():
        return True
    return bool(conn.execute(select(exists().where(
        Job.queue == FHIR_PUBLISH_QUEUE, Job.dedup_key == key,
        Job.status.in_((queue.PENDING, queue.RUNNING))))).scalar())


def enqueue_merged_subjects(session: Session, *, since: datetime,
                            skip: Mapping[int, datetime] | None = None) -> dict[int, datetime]:
    """Queue the stable, reconciled studies of patients merged into another (ADT A40) after
    ``since``; returns the merged patients handled (id → their ``updated_at``). Patients in
    ``skip`` with the same ``updated_at`` were handled by an earlier sweep."""
    conn = session.connection()
    merged = conn.execute(select(P.c.id, P.c.updated_at).where(
        P.c.merged_into_id.is_not(None), P.c.updated_at > since)).all()
    fresh = {int(r.id): r.updated_at for r in merged if (skip or {}).get(r.id) != r.updated_at}
    if not fresh:
        return {}
    study_ids = conn.execute(select(S.c.id).where(
        S.c.patient_id.in_(sorted(fresh)), S.c.reconciliation.in_(sorted(RECONCILED)),
        S.c.state == STABLE).order_by(S.c.id)).scalars().all()
    for study_id in study_ids:
        enqueue_publication(session, int(study_id))
    if study_ids:
        log.info("%d studies of %d merged patients queued for FHIR publication",
                 len(study_ids), len(fresh))
    return fresh


@dataclass
class MergeWatch:
    """Sweeps for patients merged since the last sweep and republishes their studies.

    The watermark lives in memory: it starts ``lookback_seconds`` before the process started
    (covering a crash between a merge and the next sweep) and trails each sweep by
    ``overlap_seconds`` (a merge whose transaction was still open is seen next time); patients
    already handled within that overlap are remembered and skipped."""

    session_factory: sessionmaker[Session]
    lookback_seconds: float = 3600.0
    overlap_seconds: float = 60.0
    since: datetime = field(init=False)
    _handled: dict[int, datetime] = field(default_factory=dict, init=False)

    def __post_init__(self) -> None:
        self.since = utcnow() - timedelta(seconds=self.lookback_seconds)

    def run_once(self) -> int:
        """One sweep; returns how many merged patients were handled."""
        started = utcnow()
        with read_session(self.session_factory) as session:
            any_merged = session.connection().execute(select(exists().where(
                P.c.merged_into_id.is_not(None), P.c.updated_at > self.since))).scalar()
        handled: dict[int, datetime] = {}
        if any_merged:
            with self.session_factory.begin() as session:
                handled = enqueue_merged_subjects(session, since=self.since,
                                                  skip=self._handled)
        self._handled.update(handled)
        self.since = max(self.since, started - timedelta(seconds=self.overlap_seconds))
        self._handled = {pid: at for pid, at in self._handled.items()
                         if queue.as_utc(at) > self.since}
        return len(handled)


# ----------------------------------------------------------------------------- the handler


@dataclass(frozen=True, slots=True)
class _Keys:
    """What the target is searched by: the MIS keys of the study's patient and order."""

    patient_identifiers: tuple[tuple[str, str], ...]
    placer: tuple[str, str] | None


class PublishHandler:
    """Runs ``fhir_publish`` jobs (``payload: study_uid``) against ``settings.fhir_target_url``.

    ``naming`` (the site's tables) maps assigning authorities (``patient_identifiers.issuer``,
    ``orders.placer_issuer``) to FHIR identifier systems (without an entry a URI issuer is
    used as is, and a local one is searched by value alone), and gives the accession's and
    the procedure codes' systems. ``transport`` replaces httpx's (tests)."""

    def __init__(self, settings: Settings, session_factory: sessionmaker[Session], *,
                 naming: fis.FhirNaming | None = None,
                 transport: httpx.BaseTransport | None = None) -> None:
        if not settings.fhir_target_url:
            raise ValueError("fhir_target_url is not set: there is nothing to publish to")
        self.settings = settings
        self.session_factory = session_factory
        self.naming = naming or fis.FhirNaming()
        self.target = settings.fhir_target_url
        self.version = settings.fhir_version
        #: Written into meta.source of what the bridge writes: how it recognises its own.
        self.source = settings.base_url
        self.client = httpx.Client(
            base_url=self.target, timeout=settings.fhir_timeout_seconds, transport=transport,
            headers={"Accept": FHIR_JSON, "Content-Type": FHIR_JSON})
        self._endpoint_reference: str | None = None
        self._endpoint_lock = threading.Lock()
        # A pending job may be claimed while an older one of the same study still runs (the
        # queue coalesces only pending jobs): with several worker threads, two first
        # publications of one study could both create it. One study at a time per process.
        self._study_locks = tuple(threading.Lock() for _ in range(_STUDY_LOCKS))

    def close(self) -> None:
        self.client.close()

    def __call__(self, job: ClaimedJob, stopping: threading.Event) -> None:
        study_uid = job.payload.get("study_uid")
        if not isinstance(study_uid, str) or not study_uid:
            raise Rejected("fhir_publish job payload needs study_uid (str)")
        with self._study_locks[zlib.crc32(study_uid.encode()) % _STUDY_LOCKS]:
            self._run(study_uid, job, stopping)

    def _run(self, study_uid: str, job: ClaimedJob, stopping: threading.Event) -> None:
        with read_session(self.session_factory) as session:
            study_id = session.connection().execute(
                select(S.c.id).where(S.c.study_instance_uid == study_uid)).scalar()
            study = (fhir_imaging.load_studies(session, [study_id]).get(study_id)
                     if study_id is not None else None)
            keys = self._keys(session, study) if study is not None else None
        if study is None:
            self._withdraw(study_uid, job)
            return
        if not study.reconciled:
            log.info("study %s is not reconciled: nothing to publish", study.id)
            return
        if study.state != STABLE:
            # Re-opened by a new object since it was queued: becoming stable again queues it.
            log.info("study %s is receiving again: published when it is stable", study.id)
            return
        assert keys is not None
        details = self._publish(study, keys, job, stopping)
        self._record(study.id, details)

    # ------------------------------------------------------------------ publishing

    def _keys(self, session: Session, study: LoadedStudy) -> _Keys:
        identifiers = (tuple(fhir_imaging.patient_identifiers(session, study.patient_pk))
                       if study.patient_pk is not None else ())
        placer = (fhir_imaging.placer_number(session, study.order_pk)
                  if study.order_pk is not None else None)
        return _Keys(identifiers, placer)

    def _publish(self, study: LoadedStudy, keys: _Keys, job: ClaimedJob,
                 stopping: threading.Event) -> dict[str, Any]:
        patient = self._resolve_patient(study, keys, job)
        _check(stopping)
        order = fhir_imaging.order_link(study, None)
        # An unscheduled exam (no MIS order yet) has no ServiceRequest to look for.
        request = (self._find_service_request(order.accession or study.record.accession,
                                              keys.placer, patient)
                   if order.ordered else None)
        _check(stopping)
        endpoint = self._endpoint()
        _check(stopping)
        request_reference = f"ServiceRequest/{request['id']}" if request else None
        resource = fis.imaging_study(
            study.record,
            subject=fis.SubjectLink(patient, fhir_imaging.primary_identifier(
                study.subject, self.naming)),
            order=fhir_imaging.order_link(study, request_reference),
            version=self.version, timezone=self.settings.local_timezone,
            endpoint_reference=endpoint, meta_source=self.source, naming=self.naming)
        fis.validate(resource, self.version)
        response = self._request(
            "PUT", "ImagingStudy",
            params={"identifier": fis.study_identifier_token(study.record.study_instance_uid)},
            json=resource, headers={"Prefer": "return=representation"}, conditional=True)
        target_id, version = _written(response, "ImagingStudy")
        study_reference = f"ImagingStudy/{target_id}"
        log.info("study %s published as %s (version %s)", study.id, study_reference, version)
        completion = None
        if request is not None and self.settings.fhir_target_complete_service_request:
            completion = self._complete(request, study_reference)
        return {
            "target": self.target, "imaging_study": study_reference, "version": version,
            "created": response.status_code == 201, "patient": patient,
            "service_request": request_reference, "service_request_update": completion,
            "series": study.record.num_series, "instances": study.record.num_instances,
            "job_id": job.id, "attempt": job.attempt,
        }

    def _resolve_patient(self, study: LoadedStudy, keys: _Keys, job: ClaimedJob) -> str:
        """``Patient/<id>`` on the target, found by the patient's identifiers in order."""
        systems: list[str] = []
        for value, issuer in keys.patient_identifiers:
            system = self.naming.system_for(issuer)
            systems.append(system or "(value only)")
            token = f"{system}|{value}" if system else value
            matches = self._search("Patient", {"identifier": token, "_count": "2"})
            matches = [m for m in matches if _has_identifier(m, value, system)]
            if len(matches) > 1:
                raise Conflict(f"study {study.id}: more than one Patient on the target has the "
                               f"patient's identifier (system {system or 'any'}); the target "
                               f"must merge them, then requeue job {job.id}",
                               location="Patient.identifier")
            if matches:
                return _current_patient(matches[0])
        raise NotFound(f"study {study.id}: no Patient on the target FHIR server has any of the "
                       f"patient's {len(systems)} identifier(s) (systems: "
                       f"{', '.join(systems) or 'none'}); the MIS must register the patient "
                       f"there, then requeue job {job.id}", location="Patient.identifier")

    def _find_service_request(self, accession: str | None, placer: tuple[str, str] | None,
                              patient: str) -> dict[str, Any] | None:
        searches: list[tuple[str, str, str | None]] = []
        if accession:
            searches.append(("accession", accession, None))
        if placer is not None:
            searches.append(("placer number", placer[0],
                             self.naming.system_for(placer[1])))
        for what, value, system in searches:
            token = f"{system}|{value}" if system else value
            matches = self._search("ServiceRequest", {"identifier": token, "subject": patient,
                                                      "_count": "3"})
            matches = [m for m in matches if _has_identifier(m, value, system)]
            if what == "accession" and len(matches) > 1:
                typed = [m for m in matches if _has_identifier(m, value, None, type_code="ACSN")]
                matches = typed or matches
            if len(matches) > 1:
                raise Conflict(f"more than one ServiceRequest of {patient} on the target has "
                               f"this {what}", location="ServiceRequest.identifier")
            if matches:
                return matches[0]
        return None

    def _endpoint(self) -> str:
        """``Endpoint/<id>`` on the target, written once per process. The lock is held over
        the request: two concurrent conditional updates of a new resource may both create."""
        with self._endpoint_lock:
            if self._endpoint_reference is None:
                address = fhir_imaging.wado_rs_base(self.settings)
                resource = fis.endpoint(address, version=self.version, resource_id=None,
                                        name=f"{self.settings.ae_title} DICOMweb WADO-RS")
                resource["meta"] = {"source": self.source}
                fis.validate(resource, self.version)
                response = self._request(
                    "PUT", "Endpoint",
                    params={"identifier": fis.endpoint_identifier_token(address)},
                    json=resource, headers={"Prefer": "return=representation"},
                    conditional=True)
                self._endpoint_reference = f"Endpoint/{_written(response, 'Endpoint')[0]}"
            return self._endpoint_reference

    def _complete(self, request: dict[str, Any], study_reference: str) -> str:
        """Set an active ServiceRequest completed and link the ImagingStudy (If-Match)."""
        status = request.get("status")
        linked = any(_reference_of(info) == study_reference
                     for info in request.get("supportingInfo", []))
        if status == "completed" and linked:
            return "already completed"
        if status not in ("active", "completed"):
            return f"left {status}"
        updated = copy.deepcopy(request)
        updated["status"] = "completed"
        if not linked:
            link: dict[str, Any] = {"reference": study_reference, "type": "ImagingStudy"}
            updated.setdefault("supportingInfo", []).append(
                link if self.version == "R4" else {"reference": link})
        headers = {"Prefer": "return=minimal"}
        version = request.get("meta", {}).get("versionId")
        if version:
            headers["If-Match"] = f'W/"{version}"'
        self._request("PUT", f"ServiceRequest/{request['id']}", json=updated, headers=headers)
        return "completed"

    def _record(self, study_id: int, details: dict[str, Any]) -> None:
        with self.session_factory.begin() as session:
            # Deleted meanwhile: no event (its withdrawal job follows, see the module docs).
            if session.connection().execute(select(S.c.id).where(S.c.id == study_id)).first():
                session.add(StudyEvent(study_id=study_id, kind=PUBLISHED_EVENT,
                                       details=details))

    # ------------------------------------------------------------------ withdrawal

    def _withdraw(self, study_uid: str, job: ClaimedJob) -> None:
        token = fis.study_identifier_token(study_uid)
        matches = self._search("ImagingStudy", {"identifier": token, "_count": "2"})
        if not matches:
            log.info("withdrawn study was never published (job %s)", job.id)
            return
        if len(matches) > 1:
            raise Conflict("more than one ImagingStudy on the target has this study's "
                           "identifier; clean the target, then requeue", location="identifier")
        current = matches[0]
        reference = f"ImagingStudy/{current['id']}"
        if not self._ours(current):
            self._audit(study_uid, "fhir_withdraw_skipped", {
                "target": self.target, "imaging_study": reference,
                "reason": "its current version was not written by the bridge"})
            log.warning("%s was not written by the bridge: left as it is", reference)
            return
        if current.get("status") != fis.ENTERED_IN_ERROR:
            updated = copy.deepcopy(current)
            updated["status"] = fis.ENTERED_IN_ERROR
            headers = {"Prefer": "return=minimal"}
            version = current.get("meta", {}).get("versionId")
            if version:
                headers["If-Match"] = f'W/"{version}"'
            self._request("PUT", reference, json=updated, headers=headers)
        self._audit(study_uid, "fhir_withdraw", {"target": self.target,
                                                 "imaging_study": reference,
                                                 "status": fis.ENTERED_IN_ERROR})
        log.info("%s marked entered-in-error (study deleted from the archive)", reference)

    def _ours(self, resource: Mapping[str, Any]) -> bool:
        # HAPI FHIR appends "#<request id>" to meta.source.
        source = str(resource.get("meta", {}).get("source", ""))
        return source.split("#", 1)[0] == self.source

    def _audit(self, study_uid: str, action: str, details: dict[str, Any]) -> None:
        with self.session_factory.begin() as session:
            append_audit(session, actor=AUDIT_ACTOR, action=action, entity="study",
                         entity_id=study_uid, details=details)

    # ------------------------------------------------------------------ HTTP

    def _search(self, resource_type: str, params: dict[str, str]) -> list[dict[str, Any]]:
        """The matches of one search page (enough: every search here expects 0 or 1)."""
        bundle = _json(self._request("GET", resource_type, params=params), resource_type)
        return [entry["resource"] for entry in bundle.get("entry", [])
                if isinstance(entry.get("resource"), dict)
                and entry.get("search", {}).get("mode", "match") == "match"]

    def _request(self, method: str, path: str, *, params: Mapping[str, str] | None = None,
                 json: Any = None, headers: Mapping[str, str] | None = None,
                 conditional: bool = False) -> httpx.Response:
        """One call to the target; every failure becomes Transient or permanent here."""
        what = f"{method} {path.split('?', 1)[0]}"
        try:
            response = self.client.request(method, path, params=params, json=json,
                                           headers=headers)
        except httpx.HTTPError as exc:
            # One table for every httpx exception (shared with the registry pull); its
            # message names the exception and the path, never the query (patient identifiers).
            raise translate_error(exc, f"{what} at {self.target}") from None
        if response.is_success:
            return response
        status = response.status_code
        detail = f"FHIR target {self.target}: {what} answered {status}{_diagnostics(response)}"
        if status == 412 and conditional:
            # No If-Match on a conditional update: 412 means the criteria matched several.
            raise Conflict(f"{detail} (more than one resource matches the identifier; the "
                           "target must be cleaned, then the job requeued)")
        if status in RETRYABLE_STATUSES or status >= 500:
            raise Transient(detail)
        raise Rejected(detail)


# ----------------------------------------------------------------------------- helpers


def _check(stopping: threading.Event) -> None:
    if stopping.is_set():
        raise Interrupted


def _json(response: httpx.Response, what: str) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        raise Transient(f"FHIR target answered {what} with a body that is not JSON") from None
    if not isinstance(body, dict):
        raise Transient(f"FHIR target answered {what} with JSON that is not a resource")
    return body


def _written(response: httpx.Response, resource_type: str) -> tuple[str, str | None]:
    """(id, version) of a created/updated resource, from the body or the Location header."""
    body: dict[str, Any] = {}
    if response.content:
        body = _json(response, resource_type)
    if body.get("resourceType") == resource_type and body.get("id"):
        return str(body["id"]), body.get("meta", {}).get("versionId")
    location = response.headers.get("location", "") or response.headers.get(
        "content-location", "")
    parts = location.rstrip("/").split("/")
    if resource_type in parts:
        index = parts.index(resource_type)
        if index + 1 < len(parts):
            version = parts[index + 3] if len(parts) > index + 3 and parts[index + 2] == \
                "_history" else None
            return parts[index + 1], version
    raise Transient(f"FHIR target wrote the {resource_type} but named neither its id nor a "
                    "Location")


def _diagnostics(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return ""
    if not isinstance(body, dict) or body.get("resourceType") != "OperationOutcome":
        return ""
    texts = [str(issue.get("diagnostics") or issue.get("details", {}).get("text") or "")
             for issue in body.get("issue", []) if isinstance(issue, dict)]
    text = "; ".join(t for t in texts if t)
    return f": {text[:300]}" if text else ""


def _has_identifier(resource: Mapping[str, Any], value: str, system: str | None, *,
                    type_code: str | None = None) -> bool:
    for identifier in resource.get("identifier", []):
        if identifier.get("value") != value:
            continue
        if system is not None and identifier.get("system") != system:
            continue
        if type_code is not None and not any(
                coding.get("code") == type_code
                for coding in identifier.get("type", {}).get("coding", [])):
            continue
        return True
    return False


def _current_patient(patient: Mapping[str, Any]) -> str:
    """``Patient/<id>``, following a ``replaced-by`` link (a patient merged on the target)."""
    for link in patient.get("link", []):
        if link.get("type") == "replaced-by":
            other = str(link.get("other", {}).get("reference", ""))
            if other.startswith("Patient/") or "/Patient/" in other:
                return "Patient/" + other.rsplit("/", 1)[-1]
    return f"Patient/{patient['id']}"


def _reference_of(item: Mapping[str, Any]) -> str | None:
    """The literal reference of a Reference (R4) or CodeableReference (R5)."""
    reference = item.get("reference")
    if isinstance(reference, dict):
        reference = reference.get("reference")
    return str(reference) if reference else None
