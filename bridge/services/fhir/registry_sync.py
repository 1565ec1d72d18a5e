"""Registry sync: pull this facility's ServiceRequests from the external FHIR registry.

One pull (:meth:`RegistrySync.pull`):

1. **Search** ``ServiceRequest?{BRIDGE_FHIR_REGISTRY_SEARCH}`` narrowed to this facility
   (``performer.identifier=`` from ``BRIDGE_FHIR_FACILITY_IDENTIFIER``), changed since
   the watermark (``_lastUpdated=gt``), newest first, with the subject Patients included, and
   ``Prefer: handling=strict`` so a registry that does not support a parameter refuses the
   search instead of answering with other facilities' referrals. ``next`` links are followed.
2. **Import** each ServiceRequest with the FHIR service's idempotent
   ``apply_service_request`` (order, patient, worklist). The subject Patient comes from the
   bundle or is read from the registry, so a new patient gets its identifiers, name, birth
   date and sex. Network reads happen before a page's transaction, never while it holds the
   database's write lock; each entry has its own savepoint.
3. **Advance the watermark** (the newest ``meta.lastUpdated`` seen, in ``sync_state``) only
   after the whole pull succeeded.

Why it is shaped like this:

- **Lifecycle.** The configured search's ``status`` values (default ``active``) say which
  referrals become orders. Once the bridge holds orders, later pulls ask for every status, so
  a referral it imported is followed when the registry revokes, recalls, completes or marks
  it entered-in-error; a referral in such a status that the bridge never had is not imported
  ("ignored"). The first pull uses the status filter on the registry, so starting the bridge
  does not read the facility's whole history. (Only a plain ``status=`` parameter is treated
  so; a modifier such as ``status:not=`` is passed on unchanged.)
- **Watermark boundary.** Registries stamp ``lastUpdated`` when a transaction starts and may
  commit out of order, and two changes can share an instant. So each pull re-reads
  :data:`BOUNDARY_OVERLAP` before the watermark; the versions already seen there are kept
  with the watermark and skipped ("unchanged"), the rest imported (imports are idempotent
  anyway).
- **Paging.** Many servers page by offset without a snapshot (sekmet does). Newest first, a
  referral created or changed during a pull moves to the front, which at worst shows an entry
  twice (skipped) and never hides one. A referral *leaving* the result during a pull (deleted)
  shifts later pages by one and could hide an older entry, so when the searchset ``total``
  differs between pages the pull keeps what it imported but does not advance the watermark:
  the next pull reads the same range again.
- **Failures.** A registry that is down, slow or failing raises
  :class:`~bridge.errors.Transient` (logged by the caller without patient data): nothing
  more is committed, the watermark stays, the next period tries again. A single
  ServiceRequest that cannot be imported (unmappable code, missing subject, ...) does not
  block the rest: it is logged (its registry id and the error kind, no patient data),
  counted (``bridge_fhir_registry_service_requests{result="failed"}``) and kept as a job in
  the ``fhir_registry_import`` queue — ``failed`` (the dead-letter list of ``/api/jobs``) for
  an error that will not pass, ``pending`` (retried with back-off) for an unexpected one.
  Requeueing it re-reads the referral from the registry (:class:`RegistryImportHandler`); a
  later pull that imports it closes the job.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Final, Protocol
from urllib.parse import parse_qsl, urlsplit

from prometheus_client import CollectorRegistry, Counter, Gauge
from sqlalchemy import select
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from bridge.config.settings import Settings
from bridge.domain import OrderData, PatientData
from bridge.errors import BridgeError, MappingFailed, NotFound, Rejected, Transient
from bridge.jobs import queue
from bridge.jobs.queue import ClaimedJob
from bridge.mapping.fhir.datatypes import identifier_token
from bridge.mapping.fhir.patient import read_patient
from bridge.mapping.fhir.service_request import order_key
from bridge.mapping.fhir.tables import FhirTables
from bridge.mapping.fhir.version import check_resource
from bridge.services.fhir.resources import apply_service_request, fhir_tables
from bridge.services.worklist.orders import find_order
from bridge.store.archive_models import Job
from bridge.store.db import read_session
from bridge.store.fhir_models import SyncState
from bridge.store.models import utcnow

log = logging.getLogger("bridge.registry_sync")

#: The ``sync_state`` row of this pull.
WATERMARK_NAME: Final = "fhir_registry.service_requests"
#: Where ServiceRequests that could not be imported are kept (``/api/jobs?queue=...``).
IMPORT_QUEUE: Final = "fhir_registry_import"
#: Entries per page asked of the registry (``_count``).
PAGE_SIZE: Final = 100
#: Each pull re-reads this much before the watermark (late commits, shared instants).
BOUNDARY_OVERLAP: Final = timedelta(seconds=5)
#: Outcomes of one ServiceRequest, as counted.
RESULTS: Final = ("created", "updated", "unchanged", "ignored", "failed")


class RegistryClient(Protocol):
    """What the sync needs of a FHIR client (:class:`bridge.clients.fhir.FhirClient`).
    Both raise :class:`~bridge.errors.BridgeError` kinds only."""

    def search(self, resource_type: str,
               params: list[tuple[str, str]]) -> Iterator[dict[str, Any]]: ...

    def read(self, reference: str) -> dict[str, Any]: ...


class Apply(Protocol):
    """:func:`bridge.services.fhir.resources.apply_service_request`: the idempotent import
    of one ServiceRequest, ``subject`` being the patient already resolved."""

    def __call__(self, session: Session, resource_json: Any, settings: Settings, *,
                 subject: PatientData | None = None) -> tuple[int, bool]: ...


# ----------------------------------------------------------------------------- pure parts


@dataclass(frozen=True, slots=True)
class Watermark:
    """How far the registry has been read: the newest ``meta.lastUpdated`` seen (as the
    registry wrote it; None before any was seen) and, for the last
    :data:`BOUNDARY_OVERLAP` up to it, which version of each ServiceRequest was handled."""

    last_updated: str | None
    boundary: Mapping[str, str] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps({"last_updated": self.last_updated, "boundary": dict(self.boundary)},
                          separators=(",", ":"), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Watermark:
        data = json.loads(text)
        return cls(last_updated=data.get("last_updated"),
                   boundary={str(k): str(v) for k, v in (data.get("boundary") or {}).items()})


@dataclass(frozen=True, slots=True)
class SearchPlan:
    """The configured search, split: the parameters always sent, and the ``status`` values
    that make a referral an order (None: any status)."""

    params: tuple[tuple[str, str], ...]
    import_statuses: frozenset[str] | None

    @classmethod
    def from_settings(cls, settings: Settings) -> SearchPlan:
        raw = settings.fhir_registry_search.strip().lstrip("?")
        try:
            pairs = parse_qsl(raw, keep_blank_values=False, strict_parsing=bool(raw))
        except ValueError as exc:
            raise Rejected(f"BRIDGE_FHIR_REGISTRY_SEARCH is not a query string: {exc}") from None
        statuses = [v for k, v in pairs if k == "status"]
        params = [(k, v) for k, v in pairs if k != "status"]
        if settings.fhir_facility_identifier:
            system, bar, value = settings.fhir_facility_identifier.partition("|")
            if not bar or not value:
                raise Rejected("BRIDGE_FHIR_FACILITY_IDENTIFIER must be 'system|value'")
            params.append(("performer.identifier", f"{system}|{value}"))
        import_statuses = None
        if statuses:
            import_statuses = frozenset(s.strip() for v in statuses for s in v.split(",")
                                        if s.strip())
        return cls(params=tuple(params), import_statuses=import_statuses)

    def search_params(self, watermark: Watermark | None, *,
                      page_size: int = PAGE_SIZE) -> list[tuple[str, str]]:
        """The first page's query. Before the bridge holds any order (no watermark row) the
        status filter goes to the registry; after, every status is asked for (lifecycle)."""
        params = list(self.params)
        if watermark is None and self.import_statuses:
            params.append(("status", ",".join(sorted(self.import_statuses))))
        if watermark is not None and watermark.last_updated:
            since = parse_instant(watermark.last_updated) - BOUNDARY_OVERLAP
            params.append(("_lastUpdated", f"gt{format_instant(since)}"))
        params += [("_sort", "-_lastUpdated"), ("_include", "ServiceRequest:subject"),
                   ("_count", str(page_size))]
        return params

    def imports(self, status: str | None) -> bool:
        """Does a referral in this status become an order (or only update one we hold)?"""
        return self.import_statuses is None or (status or "") in self.import_statuses


def order_keys(resource: Mapping[str, Any], tables: FhirTables) -> OrderData:
    """The order keys (placer, filler, accession) a ServiceRequest's identifiers carry, as
    ``mappings/fhir/identifiers.yaml`` reads them; the rest of the resource is not looked at."""
    keys = OrderData()
    for identifier in resource.get("identifier") or ():
        kind, token = order_key(identifier, tables), identifier_token(identifier)
        if kind is None or token is None:
            continue
        system, value = token
        if kind == "accession":
            keys.accession = keys.accession or value
        elif kind == "placer" and not keys.placer_number:
            keys.placer_number, keys.placer_issuer = value, tables.issuer_for(system)
        elif kind == "filler" and not keys.filler_number:
            keys.filler_number, keys.filler_issuer = value, tables.issuer_for(system)
    return keys


def parse_instant(value: str) -> datetime:
    """A FHIR instant (``2026-01-02T03:04:05.678Z``, any offset) as an aware datetime."""
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise Rejected(f"registry sent an invalid instant {value!r}") from None
    if parsed.tzinfo is None:
        raise Rejected(f"registry sent an instant without time zone {value!r}")
    return parsed


def format_instant(value: datetime) -> str:
    """A FHIR instant in UTC at millisecond precision, rounded down (a search bound)."""
    return value.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True, slots=True)
class Page:
    """One searchset Bundle: the matched ServiceRequests, the included resources by
    ``Type/id``, the ``total`` (None when not given) and the server's warnings."""

    matches: list[dict[str, Any]]
    included: dict[str, dict[str, Any]]
    total: int | None
    warnings: list[str]


def read_page(bundle: Mapping[str, Any]) -> Page:
    matches: list[dict[str, Any]] = []
    included: dict[str, dict[str, Any]] = {}
    warnings: list[str] = []
    for entry in bundle.get("entry") or ():
        resource = entry.get("resource") if isinstance(entry, dict) else None
        if not isinstance(resource, dict):
            continue
        mode = (entry.get("search") or {}).get("mode", "match")
        kind = resource.get("resourceType")
        if kind == "OperationOutcome":
            warnings += [str(i.get("diagnostics") or i.get("code"))
                         for i in resource.get("issue") or () if isinstance(i, dict)]
        elif mode == "match" and kind == "ServiceRequest" and resource.get("id"):
            matches.append(resource)
        elif kind and resource.get("id"):
            included[f"{kind}/{resource['id']}"] = resource
    total = bundle.get("total")
    return Page(matches, included, total if isinstance(total, int) else None, warnings)


def local_reference(reference: str) -> str:
    """``Patient/1`` for ``Patient/1``, ``Patient/1/_history/3`` or ``http://x/fhir/Patient/1``."""
    parts = [p for p in urlsplit(reference).path.split("/") if p]
    if "_history" in parts:
        parts = parts[:parts.index("_history")]
    return "/".join(parts[-2:])


def subject_reference(resource: Mapping[str, Any]) -> str | None:
    """The literal reference of a ServiceRequest's subject to fetch (None: contained, a
    logical reference by identifier, or none)."""
    subject = resource.get("subject")
    reference = subject.get("reference") if isinstance(subject, dict) else None
    if not isinstance(reference, str) or not reference or reference.startswith("#"):
        return None
    return reference


def version_of(resource: Mapping[str, Any]) -> str:
    """What identifies this version of a resource: its ``meta.versionId``, else its
    ``meta.lastUpdated`` (a registry without versions still changes that)."""
    meta = resource.get("meta") or {}
    return str(meta.get("versionId") or meta.get("lastUpdated") or "")


def last_updated_of(resource: Mapping[str, Any]) -> str | None:
    value = (resource.get("meta") or {}).get("lastUpdated")
    return value if isinstance(value, str) and value else None


def next_watermark(previous: Watermark | None, seen: Mapping[str, tuple[str, str]]
                   ) -> Watermark | None:
    """The watermark after a complete pull: the newest ``lastUpdated`` seen (never older than
    before) and the versions seen within :data:`BOUNDARY_OVERLAP` of it. ``seen`` maps
    ``ServiceRequest/id`` to ``(lastUpdated, version)``."""
    stamps = {ref: parse_instant(stamp) for ref, (stamp, _) in seen.items()}
    newest_ref = max(stamps, key=stamps.__getitem__, default=None)
    newest = previous.last_updated if previous else None
    if newest_ref is not None and (newest is None or
                                   stamps[newest_ref] > parse_instant(newest)):
        newest = seen[newest_ref][0]
    if newest is None:
        return previous
    floor = parse_instant(newest) - BOUNDARY_OVERLAP
    boundary = {ref: seen[ref][1] for ref, when in stamps.items() if when >= floor}
    if previous is not None and previous.last_updated == newest:
        boundary = {**previous.boundary, **boundary}
    return Watermark(newest, boundary)


def is_settled(totals: Iterable[int | None]) -> bool:
    """Did the result set stay the same size on every page (nothing left it mid-pull)?"""
    return len({t for t in totals if t is not None}) <= 1


# ----------------------------------------------------------------------------- the pull


@dataclass
class PullResult:
    """What one pull did (counts of ServiceRequests by outcome)."""

    pages: int = 0
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    ignored: int = 0
    failed: int = 0
    #: False when the result set changed during the pull: the watermark was kept.
    settled: bool = True
    watermark: str | None = None

    def count(self, result: str) -> None:
        setattr(self, result, getattr(self, result) + 1)

    def summary(self) -> str:
        counts = ", ".join(f"{getattr(self, r)} {r}" for r in RESULTS)
        return f"{self.pages} page(s): {counts}; watermark {self.watermark or '-'}" + (
            "" if self.settled else " (kept: the registry's result changed during the pull)")


@dataclass(frozen=True, slots=True)
class _Prepared:
    reference: str
    resource: dict[str, Any]
    #: The subject read from the registry (None: contained or by identifier, the import
    #: resolves it).
    subject: PatientData | None = None
    #: Set when the entry already failed before the import (its subject could not be read).
    error: BridgeError | None = None


class RegistryMetrics:
    def __init__(self, registry: CollectorRegistry | None) -> None:
        registry = registry if registry is not None else CollectorRegistry()
        self.pulls = Counter("bridge_fhir_registry_pulls",
                             "Registry pulls, by outcome (ok, unsettled, failed).",
                             ["outcome"], registry=registry)
        self.service_requests = Counter(
            "bridge_fhir_registry_service_requests",
            "ServiceRequests read from the registry, by result "
            "(created, updated, unchanged, ignored, failed).", ["result"], registry=registry)
        self.last_success = Gauge("bridge_fhir_registry_last_success_timestamp_seconds",
                                  "When the last complete registry pull ended (Unix time).",
                                  registry=registry)


class RegistrySync:
    """Pulls ServiceRequests from the registry; one pull at a time per instance."""

    def __init__(self, settings: Settings, session_factory: sessionmaker[Session],
                 client: RegistryClient, *, apply: Apply = apply_service_request,
                 metrics_registry: CollectorRegistry | None = None,
                 page_size: int = PAGE_SIZE) -> None:
        self.settings = settings
        self.sessions = session_factory
        self.client = client
        self.apply = apply
        self.plan = SearchPlan.from_settings(settings)
        self.tables = fhir_tables(settings.mappings_dir)
        self.metrics = RegistryMetrics(metrics_registry)
        self.page_size = page_size
        self._lock = threading.Lock()

    def pull(self) -> PullResult:
        """One complete pull. Raises :class:`~bridge.errors.Transient` when the registry or
        the database fails on the way (the watermark then stays), another
        :class:`~bridge.errors.BridgeError` when the registry refuses the search."""
        with self._lock:
            try:
                result = self._pull()
            except BridgeError:
                self.metrics.pulls.labels("failed").inc()
                raise
            except OperationalError as exc:
                self.metrics.pulls.labels("failed").inc()
                raise Transient(f"database unavailable during the registry pull: "
                                f"{type(exc.orig or exc).__name__}") from exc
            self.metrics.pulls.labels("ok" if result.settled else "unsettled").inc()
            if result.settled:
                self.metrics.last_success.set_to_current_time()
            return result

    def _pull(self) -> PullResult:
        mark = load_watermark(self.sessions)
        result = PullResult(watermark=mark.last_updated if mark else None)
        pending_failures = failed_references(self.sessions)
        seen: dict[str, tuple[str, str]] = {}  # ref -> (lastUpdated, version), this pull
        totals: list[int | None] = []
        patients: dict[str, dict[str, Any]] = {}  # read once per pull
        params = self.plan.search_params(mark, page_size=self.page_size)
        try:
            for bundle in self.client.search("ServiceRequest", params):
                mark = self._read_page(read_page(bundle), mark, result, seen, totals,
                                       patients, pending_failures)
        finally:  # what committed pages did counts even when a later page failed
            for name in RESULTS:
                self.metrics.service_requests.labels(name).inc(getattr(result, name))
        result.settled = is_settled(totals)
        if result.settled:
            new_mark = next_watermark(mark, seen)
            if new_mark is not None and new_mark != mark:
                save_watermark(self.sessions, new_mark)
                mark = new_mark
        result.watermark = mark.last_updated if mark else None
        log.info("registry pull: %s", result.summary())
        return result

    def _read_page(self, page: Page, mark: Watermark | None, result: PullResult,
                   seen: dict[str, tuple[str, str]], totals: list[int | None],
                   patients: dict[str, dict[str, Any]],
                   pending_failures: set[str]) -> Watermark | None:
        """Import one page's ServiceRequests that are new or changed; ``seen`` gets each one's
        ``(lastUpdated, version)``. Returns the watermark (created by the first import)."""
        result.pages += 1
        totals.append(page.total)
        for warning in page.warnings:
            log.warning("registry search warning: %s", warning[:300])
        todo: list[_Prepared] = []
        for resource in page.matches:
            reference = f"ServiceRequest/{resource['id']}"
            stamp, version = last_updated_of(resource), version_of(resource)
            if stamp is None:
                raise Rejected(f"registry sent {reference} without meta.lastUpdated")
            parse_instant(stamp)  # a registry writing invalid instants fails the pull here
            again = seen.get(reference, ("", ""))[1] == version or (
                mark is not None and mark.boundary.get(reference) == version)
            seen[reference] = (stamp, version)
            if again:
                result.count("unchanged")  # read twice, or handled by the last pull
            else:
                todo.append(self._prepare(reference, resource, page.included, patients))
        if todo:
            mark = self._import_page(todo, mark, result, pending_failures)
        return mark

    def _prepare(self, reference: str, resource: dict[str, Any],
                 included: Mapping[str, dict[str, Any]],
                 patients: dict[str, dict[str, Any]]) -> _Prepared:
        """The ServiceRequest and its subject Patient (from the bundle, else read from the
        registry) in domain terms. A Patient the registry does not have, or cannot be
        mapped, fails this entry only; a registry that fails (Transient) fails the pull."""
        subject = subject_reference(resource)
        if subject is None:
            return _Prepared(reference, resource)
        key = local_reference(subject)
        try:
            patient = included.get(key) or patients.get(key)
            if patient is None:
                patient = self.client.read(subject)
                patients[key] = patient
            checked = check_resource(self.settings.fhir_version, patient,
                                     expected_type="Patient", path="Patient")
            data = read_patient(checked, self.tables, self.settings.hl7_primary_authority)
        except (NotFound, Rejected, MappingFailed) as exc:
            exc.location = f"{key}: {exc.location}" if exc.location else key
            return _Prepared(reference, resource, error=exc)
        return _Prepared(reference, resource, subject=data)

    def _import_page(self, todo: list[_Prepared], mark: Watermark | None, result: PullResult,
                     pending_failures: set[str]) -> Watermark | None:
        """Apply a page in one transaction, one savepoint per entry. The first order the
        bridge takes from the registry also creates the watermark row, so from then on
        pulls follow the lifecycle (see the module docs) even if this pull fails later."""
        with self.sessions() as session, session.begin():
            for item in todo:
                outcome = self._import_one(session, item, result)
                if outcome in ("created", "updated", "ignored") and (
                        item.reference in pending_failures):
                    close_failure(session, item.reference)
                    pending_failures.discard(item.reference)
            if mark is None and (result.created or result.updated):
                mark = Watermark(None)
                _write_state(session, mark)
        return mark

    def _import_one(self, session: Session, item: _Prepared, result: PullResult) -> str:
        status = item.resource.get("status")
        try:
            if item.error is not None:
                raise item.error
            with session.begin_nested():
                if not self.plan.imports(status) and not self._known(session, item.resource):
                    outcome = "ignored"
                else:
                    _order_id, created = self.apply(session, item.resource, self.settings,
                                                    subject=item.subject)
                    outcome = "created" if created else "updated"
        except (Transient, OperationalError):
            raise  # the pull fails; nothing of this page is kept
        except BridgeError as exc:
            outcome = "failed"
            self._record_failure(session, item, exc, permanent=True)
        except Exception as exc:  # a fault of ours: logged, retried by the job worker
            outcome = "failed"
            log.error("importing registry %s raised %s", item.reference, type(exc).__name__)
            log.debug("registry %s import failure", item.reference, exc_info=True)
            self._record_failure(session, item, exc, permanent=False)
        result.count(outcome)
        return outcome

    def _known(self, session: Session, resource: Mapping[str, Any]) -> bool:
        """Does the bridge hold the order this ServiceRequest's identifiers name?"""
        keys = order_keys(resource, self.tables)
        if not (keys.placer_number or keys.accession or keys.filler_number):
            return False
        return find_order(session, keys) is not None

    def import_current(self, reference: str) -> str:
        """Read one ServiceRequest (its current version) and import it in its own
        transaction: ``created``, ``updated`` or ``ignored``. Errors are raised."""
        item = self._prepare(reference, self.client.read(reference), {}, {})
        if item.error is not None:
            raise item.error
        with self.sessions() as session, session.begin():
            if not self.plan.imports(item.resource.get("status")) and not self._known(
                    session, item.resource):
                return "ignored"
            _order_id, created = self.apply(session, item.resource, self.settings,
                                            subject=item.subject)
        return "created" if created else "updated"

    def _record_failure(self, session: Session, item: _Prepared, error: Exception, *,
                        permanent: bool) -> None:
        kind = type(error).__name__
        where = getattr(error, "location", None)
        log.warning("registry %s not imported: %s%s", item.reference, kind,
                    f" at {where}" if where else "")
        # The job keeps the whole text for operators (the API is authenticated); the log
        # above names the kind only, since messages may quote patient data.
        message = error.message if isinstance(error, BridgeError) else (
            f"internal error: {error}")
        log.debug("registry %s: %s", item.reference, message)
        record_failure(session, reference=item.reference, version=version_of(item.resource),
                       error=f"{kind}{f' at {where}' if where else ''}: {message}",
                       permanent=permanent)


# ----------------------------------------------------------------------------- requeued jobs


class RegistryImportHandler:
    """The job worker's handler for the ``fhir_registry_import`` queue: re-reads the
    ServiceRequest (its current version) and imports it. Errors go back to the worker:
    :class:`~bridge.errors.Transient` is retried, other kinds end in the failed list."""

    def __init__(self, sync: RegistrySync) -> None:
        self.sync = sync

    def __call__(self, job: ClaimedJob, stopping: threading.Event) -> None:
        reference = str(job.payload.get("reference") or "")
        if not reference.startswith("ServiceRequest/"):
            raise Rejected(f"job {job.id} names no ServiceRequest")
        outcome = self.sync.import_current(reference)
        log.info("registry %s imported by job %s: %s", reference, job.id, outcome)


# ----------------------------------------------------------------------------- storage


def load_watermark(session_factory: sessionmaker[Session]) -> Watermark | None:
    """The stored watermark; None before the bridge took any order from the registry."""
    with read_session(session_factory) as session:
        value = session.execute(
            select(SyncState.value).where(SyncState.name == WATERMARK_NAME)).scalar_one_or_none()
    return Watermark.from_json(value) if value else None


def save_watermark(session_factory: sessionmaker[Session], mark: Watermark) -> None:
    with session_factory() as session, session.begin():
        _write_state(session, mark)


def _write_state(session: Session, mark: Watermark) -> None:
    row = session.get(SyncState, WATERMARK_NAME, with_for_update=True)
    if row is None:
        session.add(SyncState(name=WATERMARK_NAME, value=mark.to_json(), updated_at=utcnow()))
    else:
        row.value = mark.to_json()
        row.updated_at = utcnow()
    session.flush()


def failed_references(session_factory: sessionmaker[Session]) -> set[str]:
    """ServiceRequests with an open import job (failed or waiting for a retry)."""
    with read_session(session_factory) as session:
        keys = session.execute(
            select(Job.dedup_key).where(Job.queue == IMPORT_QUEUE,
                                        Job.status.in_((queue.FAILED, queue.PENDING)))
        ).scalars().all()
    return {k for k in keys if k}


def record_failure(session: Session, *, reference: str, version: str, error: str,
                   permanent: bool) -> None:
    """Keep a ServiceRequest that could not be imported as a job (one per referral):
    ``failed`` at once when ``permanent``, else ``pending`` for the worker to retry."""
    payload: dict[str, object] = {"reference": reference, "version": version}
    if not permanent:
        job_id = queue.enqueue(session, queue=IMPORT_QUEUE, payload=payload,
                               dedup_key=reference)
        job = session.get(Job, job_id)
        assert job is not None
        job.last_error = error[:queue.MAX_ERROR_CHARS]
        return
    now = utcnow()
    job = session.execute(
        select(Job).where(Job.queue == IMPORT_QUEUE, Job.dedup_key == reference,
                          Job.status.in_((queue.FAILED, queue.PENDING)))
        .order_by(Job.id).limit(1).with_for_update()).scalar_one_or_none()
    if job is None:
        job = Job(queue=IMPORT_QUEUE, dedup_key=reference, attempts=0, created_at=now)
        session.add(job)
    job.payload = payload
    job.status = queue.FAILED
    job.attempts = (job.attempts or 0) + 1
    job.last_error = error[:queue.MAX_ERROR_CHARS]
    job.next_attempt_at = now
    job.updated_at = now
    session.flush()


def close_failure(session: Session, reference: str) -> None:
    """A referral that failed before was imported now: its open job is done."""
    now = utcnow()
    for job in session.execute(
            select(Job).where(Job.queue == IMPORT_QUEUE, Job.dedup_key == reference,
                              Job.status.in_((queue.FAILED, queue.PENDING)))).scalars():
        job.status = queue.DONE
        job.last_error = "imported by a later registry pull"
        job.next_attempt_at = now
        job.updated_at = now
