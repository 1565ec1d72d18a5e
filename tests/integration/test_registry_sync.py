"""Registry sync against a real FHIR server (sekmet-fhir): referrals created there reach the
bridge's worklist (DCMTK ``findscu -W``), follow the registry's lifecycle, page, survive the
registry being down, and ``$notify`` (or a rest-hook Subscription) pulls at once."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from bridge.adapters.http.app import create_app
from bridge.clients.fhir import FhirClient
from bridge.config.settings import Settings
from bridge.errors import Rejected, Transient
from bridge.jobs import queue
from bridge.jobs.scheduler import make_scheduler
from bridge.services.fhir.registry_poll import RegistryPoller
from bridge.services.fhir.registry_sync import (
    IMPORT_QUEUE,
    RegistryImportHandler,
    RegistrySync,
    load_watermark,
)
from bridge.store.archive_models import Job
from bridge.store.models import Order, Patient, PatientIdentifier, ProcedureStep
from tests.dicom_harness import dicom_servers, findscu
from tests.fhir_peer import SekmetPeer, running_sekmet
from tests.fhir_registry import FACILITY_SYSTEM, Registry
from tests.http_harness import running_api

pytestmark = pytest.mark.integration

#: Waiting for work another thread does (a notification, a scheduled pull): a deadline, not
#: a measurement.
DEADLINE_SECONDS = 30.0


@pytest.fixture
def sekmet(tmp_path: Path) -> Iterator[SekmetPeer]:
    with running_sekmet(tmp_path / "sekmet") as peer:
        yield peer


@pytest.fixture
def registry(sekmet: SekmetPeer) -> Registry:
    return Registry(sekmet)


@pytest.fixture
def sync_settings(settings: Settings, registry: Registry) -> Settings:
    return settings.model_copy(update={
        "fhir_registry_url": registry.peer.base_url,
        "fhir_facility_identifier": f"{FACILITY_SYSTEM}|{registry.facility}"})


@pytest.fixture
def client(sync_settings: Settings) -> Iterator[FhirClient]:
    with FhirClient(sync_settings.fhir_registry_url, timeout=10) as fhir:
        yield fhir


MakeSync = Callable[..., RegistrySync]


@pytest.fixture
def make_sync(sync_settings: Settings, session_factory: sessionmaker[Session],
              client: FhirClient) -> MakeSync:
    def make(**kwargs: Any) -> RegistrySync:
        return RegistrySync(sync_settings, session_factory, kwargs.pop("client", client),
                            **kwargs)
    return make


# ----------------------------------------------------------------------------- what the bridge has


def worklist_accessions(settings: Settings, session_factory: sessionmaker[Session],
                        out: Path) -> dict[str, Any]:
    """The open worklist as a modality sees it (findscu -W): accession → response."""
    with dicom_servers(settings, session_factory) as start:
        server = start()
        results = findscu(server.port, "-W", [
            "(0008,0005)=ISO_IR 192", "AccessionNumber", "PatientName", "PatientID",
            "IssuerOfPatientID", "PatientBirthDate", "PatientSex",
            "(0040,0100)[0].ScheduledStationAETitle", "(0040,0100)[0].Modality",
            "(0040,0100)[0].ScheduledProcedureStepStartDate",
            "(0040,0100)[0].ScheduledProcedureStepStartTime",
        ], out)
    return {str(ds.AccessionNumber): ds for ds in results}


def order_count(session_factory: sessionmaker[Session]) -> int:
    with session_factory() as session:
        return int(session.execute(select(func.count()).select_from(Order)).scalar_one())


def step_statuses(session_factory: sessionmaker[Session]) -> dict[str, str]:
    with session_factory() as session:
        rows = session.execute(select(Order.accession, ProcedureStep.status)
                               .join(ProcedureStep, ProcedureStep.order_id == Order.id)).all()
    return {str(accession): status for accession, status in rows}


def import_jobs(session_factory: sessionmaker[Session]) -> dict[str, Job]:
    with session_factory() as session:
        jobs = session.execute(select(Job).where(Job.queue == IMPORT_QUEUE)).scalars().all()
        return {str(job.dedup_key): job for job in jobs}


def wait_for(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + DEADLINE_SECONDS
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"gave up waiting for {what}")
        time.sleep(0.05)


# ----------------------------------------------------------------------------- tests


def test_referrals_reach_the_worklist_and_a_second_pull_imports_nothing(
    registry: Registry, make_sync: MakeSync, sync_settings: Settings,
    session_factory: sessionmaker[Session], tmp_path: Path,
) -> None:
    taras = registry.patient("MRN-1001")
    lesya = registry.patient("MRN-1002", family="Українка", given="Леся",
                             birth_date="1971-02-25", gender="female")
    registry.referral(taras, "RS1001")
    registry.referral(lesya, "RS1002")
    registry.referral(lesya, "RS1003", here=False)  # another facility's referral
    registry.referral(taras, "RS1004", status="draft")  # not active: not imported

    first = make_sync().pull()
    assert (first.created, first.failed, first.settled) == (2, 0, True)

    worklist = worklist_accessions(sync_settings, session_factory, tmp_path / "rsp1")
    assert set(worklist) == {"RS1001", "RS1002"}
    item = worklist["RS1002"]
    assert (str(item.PatientName), item.PatientID) == ("Українка^Леся", "MRN-1002")
    assert (item.PatientBirthDate, item.PatientSex) == ("19710225", "F")
    step = item.ScheduledProcedureStepSequence[0]
    assert step.Modality == "CT"
    assert (step.ScheduledProcedureStepStartDate, step.ScheduledProcedureStepStartTime[:4]) == (
        "20261201", "0930")
    with session_factory() as session:
        identifier = session.execute(select(PatientIdentifier).where(
            PatientIdentifier.value == "MRN-1001")).scalar_one()
        assert session.get(Patient, identifier.patient_id).birth_date == "19840309"

    mark = load_watermark(session_factory)
    assert mark is not None and mark.last_updated is not None
    orders_before = order_count(session_factory)
    second = make_sync().pull()
    assert (second.created, second.updated, second.failed) == (0, 0, 0)
    assert second.unchanged >= 2  # the boundary is read again and recognised
    assert order_count(session_factory) == orders_before
    # The draft, newer than the referrals, is now seen (every status is read once the
    # bridge holds orders) but not imported; the pull after that finds nothing at all.
    assert second.ignored == 1
    settled = load_watermark(session_factory)
    assert settled is not None and settled.last_updated is not None
    assert settled.last_updated >= mark.last_updated
    third = make_sync().pull()
    assert (third.created, third.updated, third.ignored, third.failed) == (0, 0, 0, 0)
    assert load_watermark(session_factory) == settled


def test_revoked_and_entered_in_error_referrals_leave_the_worklist(
    registry: Registry, make_sync: MakeSync, sync_settings: Settings,
    session_factory: sessionmaker[Session], tmp_path: Path,
) -> None:
    patient = registry.patient("MRN-2001")
    revoked = registry.referral(patient, "RS2001")
    erroneous = registry.referral(patient, "RS2002")
    registry.referral(patient, "RS2003")
    sync = make_sync()
    assert sync.pull().created == 3

    registry.update(revoked, status="revoked")
    registry.update(erroneous, status="entered-in-error")
    # Never seen by the bridge, and already withdrawn: nothing to follow, nothing imported.
    registry.referral(patient, "RS2004", status="revoked")
    result = sync.pull()
    assert (result.updated, result.ignored, result.created, result.failed) == (2, 1, 0, 0)

    assert set(worklist_accessions(sync_settings, session_factory, tmp_path / "rsp")) == {
        "RS2003"}
    statuses = step_statuses(session_factory)
    assert statuses["RS2001"] == statuses["RS2002"] == "CANCELED"
    assert "RS2004" not in statuses


def test_many_referrals_are_pulled_page_by_page(
    registry: Registry, make_sync: MakeSync, session_factory: sessionmaker[Session],
) -> None:
    patient = registry.patient("MRN-3001")
    accessions = {f"RS30{n:02d}" for n in range(7)}
    for accession in sorted(accessions):
        registry.referral(patient, accession)

    result = make_sync(page_size=3).pull()
    assert (result.pages, result.created, result.settled) == (3, 7, True)
    assert set(step_statuses(session_factory)) == accessions


def test_registry_down_fails_cleanly_and_the_next_pull_catches_up(
    registry: Registry, make_sync: MakeSync, session_factory: sessionmaker[Session],
) -> None:
    patient = registry.patient("MRN-4001")
    registry.referral(patient, "RS4001")
    sync = make_sync()
    assert sync.pull().created == 1
    before = load_watermark(session_factory)

    registry.referral(patient, "RS4002")
    registry.peer.stop()
    with pytest.raises(Transient):
        sync.pull()
    assert load_watermark(session_factory) == before
    # The scheduler's view: the failure is logged and remembered, nothing is raised.
    poller = RegistryPoller(sync, make_scheduler())
    poller.run()
    assert poller.last_error is not None and "unreachable" in poller.last_error
    assert set(step_statuses(session_factory)) == {"RS4001"}

    registry.peer.start()
    poller.run()
    assert poller.last_error is None and poller.last_result is not None
    assert poller.last_result.created == 1
    assert set(step_statuses(session_factory)) == {"RS4001", "RS4002"}
    after = load_watermark(session_factory)
    assert before is not None and after is not None and before.last_updated is not None
    assert after.last_updated is not None and after.last_updated > before.last_updated


def test_a_search_the_registry_cannot_do_is_refused_not_widened(
    registry: Registry, sync_settings: Settings, session_factory: sessionmaker[Session],
    client: FhirClient,
) -> None:
    # Without ``Prefer: handling=strict`` a lenient server would drop the parameter it does
    # not know and answer with referrals the search was meant to exclude.
    narrowed = sync_settings.model_copy(update={
        "fhir_registry_search": "status=active&no-such-parameter=1"})
    registry.referral(registry.patient("MRN-4501"), "RS4501")
    with pytest.raises(Rejected, match="400"):
        RegistrySync(narrowed, session_factory, client).pull()
    assert order_count(session_factory) == 0
    assert load_watermark(session_factory) is None


def test_a_bad_referral_is_listed_and_does_not_block_the_rest(
    registry: Registry, make_sync: MakeSync, session_factory: sessionmaker[Session],
) -> None:
    patient = registry.patient("MRN-5001")
    # A valid FHIR ServiceRequest the bridge cannot schedule (a proposal is not an order).
    bad = registry.referral(patient, "RS5001", intent="proposal")
    registry.referral(patient, "RS5002")
    sync = make_sync()
    result = sync.pull()
    assert (result.created, result.failed, result.settled) == (1, 1, True)
    reference = f"ServiceRequest/{bad['id']}"
    job = import_jobs(session_factory)[reference]
    assert job.status == queue.FAILED and "intent" in (job.last_error or "")
    assert "Шевченко" not in (job.last_error or "")
    assert set(step_statuses(session_factory)) == {"RS5002"}

    again = sync.pull()  # the same version is not tried again on every pull
    assert (again.failed, again.created) == (0, 0)

    registry.update(bad, intent="order")  # corrected in the registry
    fixed = sync.pull()
    assert (fixed.created, fixed.failed) == (1, 0)
    assert import_jobs(session_factory)[reference].status == queue.DONE
    assert set(step_statuses(session_factory)) == {"RS5001", "RS5002"}


def test_a_requeued_referral_is_read_again_from_the_registry(
    registry: Registry, make_sync: MakeSync, session_factory: sessionmaker[Session],
) -> None:
    patient = registry.patient("MRN-6001")
    bad = registry.referral(patient, "RS6001", intent="proposal")
    sync = make_sync()
    assert sync.pull().failed == 1
    job = import_jobs(session_factory)[f"ServiceRequest/{bad['id']}"]
    registry.update(bad, intent="order")

    handler = RegistryImportHandler(sync)
    claimed = queue.ClaimedJob(id=job.id, queue=IMPORT_QUEUE, dedup_key=job.dedup_key,
                               payload=dict(job.payload), attempt=2,
                               lease_until=queue.utcnow())
    handler(claimed, threading.Event())
    assert set(step_statuses(session_factory)) == {"RS6001"}
    with session_factory() as session:
        identifier = session.execute(select(PatientIdentifier).where(
            PatientIdentifier.value == "MRN-6001")).scalar_one()
        assert session.get(Patient, identifier.patient_id).name == "Шевченко^Тарас"


def test_a_referral_deleted_during_the_pull_keeps_the_watermark(
    registry: Registry, make_sync: MakeSync, client: FhirClient,
    session_factory: sessionmaker[Session],
) -> None:
    patient = registry.patient("MRN-7001")
    for n in range(1, 5):
        registry.referral(patient, f"RS700{n}")
    newest = registry.referral(patient, "RS7005")

    class DeletingAfterFirstPage:
        """The real client; the registry loses a referral between two pages."""

        def search(self, resource_type: str, params: list[tuple[str, str]]
                   ) -> Iterator[dict[str, Any]]:
            for number, page in enumerate(client.search(resource_type, params)):
                yield page
                if number == 0:  # newest first: this one was on the page just read
                    registry.delete(newest)

        def read(self, reference: str) -> dict[str, Any]:
            return client.read(reference)

    result = make_sync(client=DeletingAfterFirstPage(), page_size=2).pull()
    assert not result.settled
    mark = load_watermark(session_factory)
    assert mark is not None and mark.last_updated is None  # following, but from the start
    # Offset paging may have hidden an older referral behind the deleted one; the next pull
    # reads the same range again and finds it.
    make_sync().pull()
    assert set(step_statuses(session_factory)) >= {f"RS700{n}" for n in range(1, 5)}


def test_notify_pulls_through_the_http_api(
    registry: Registry, make_sync: MakeSync, sync_settings: Settings,
    session_factory: sessionmaker[Session],
) -> None:
    scheduler = make_scheduler()
    poller = RegistryPoller(make_sync(), scheduler)
    poller.register(3600, first_run_now=False)  # only notifications pull in this test
    app = create_app(sync_settings, session_factory, notify_trigger=poller.trigger_now)
    scheduler.start()
    try:
        with running_api(app, session_factory) as api:
            patient = registry.patient("MRN-8001")
            registry.referral(patient, "RS8001")
            with api.client() as anonymous:
                refused = anonymous.post("/fhir/$notify")
            assert refused.status_code == 401
            assert refused.json()["resourceType"] == "OperationOutcome"
            with api.client("viewer") as viewer:
                forbidden = viewer.post("/fhir/$notify")
            assert forbidden.status_code == 403
            assert forbidden.json()["issue"][0]["code"] == "forbidden"
            assert "RS8001" not in step_statuses(session_factory)

            with api.client("integration") as integration:
                accepted = integration.post("/fhir/$notify")
            assert accepted.status_code == 202
            assert accepted.headers["content-type"].startswith("application/fhir+json")
            assert accepted.json()["issue"][0]["severity"] == "information"
            wait_for(lambda: "RS8001" in step_statuses(session_factory), "the pull")
    finally:
        scheduler.shutdown()


def test_a_rest_hook_subscription_on_the_registry_pulls_at_once(
    registry: Registry, make_sync: MakeSync, sync_settings: Settings,
    session_factory: sessionmaker[Session],
) -> None:
    scheduler = make_scheduler()
    poller = RegistryPoller(make_sync(), scheduler)
    poller.register(3600, first_run_now=False)
    app = create_app(sync_settings, session_factory, notify_trigger=poller.trigger_now)
    scheduler.start()
    try:
        with running_api(app, session_factory) as api:
            subscription = registry.peer.create({
                "resourceType": "Subscription", "status": "requested",
                "reason": "referrals for the bridge",
                "criteria": f"ServiceRequest?performer.identifier={FACILITY_SYSTEM}|"
                            f"{registry.facility}",
                "channel": {"type": "rest-hook", "endpoint": f"{api.url}/fhir/$notify",
                            "payload": "application/fhir+json",
                            "header": [f"Authorization: Bearer {api.tokens['integration']}"]}})
            patient = registry.patient("MRN-9001")
            registry.referral(patient, "RS9001")
            wait_for(lambda: "RS9001" in step_statuses(session_factory),
                     "the registry's notification and the pull")
            registry.delete(subscription)
    finally:
        scheduler.shutdown()


def test_notify_without_a_registry_answers_an_outcome(
    settings: Settings, session_factory: sessionmaker[Session],
) -> None:
    app = create_app(settings, session_factory)
    with running_api(app, session_factory) as api, api.client("integration") as http:
        answer = http.post("/fhir/$notify")
    assert answer.status_code == 404
    assert answer.json()["issue"][0]["code"] == "not-supported"
