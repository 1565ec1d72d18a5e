"""Registry referrals against sekmet-fhir playing the national registry, on both databases:
a pulled referral is taken by this facility (Task accepted, "used", told to the registry),
completed with a link to its result, and a recall at the registry cancels its Task, order and
worklist step; the registry being down loses nothing and nothing is sent twice."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from bridge.clients.fhir import FhirClient
from bridge.config.settings import Settings
from bridge.jobs import queue
from bridge.jobs.queue import RetryPolicy
from bridge.jobs.worker import JobWorker
from bridge.services.auth.principal import token_principal
from bridge.services.auth.users import create_organization
from bridge.services.fhir.registry_sync import RegistrySync
from bridge.services.fhir.resources import apply_service_request
from bridge.services.referrals.registry import REGISTRY_QUEUE, RegistryTell, referral_aware
from bridge.services.referrals.workflow import add_report
from bridge.store.archive_models import Job
from bridge.store.models import ProcedureStep
from bridge.store.referral_models import Referral
from tests.fhir_peer import SekmetPeer, running_sekmet
from tests.fhir_registry import FACILITY_SYSTEM, Registry

pytestmark = pytest.mark.integration
SYSTEM = token_principal(0, "ris", "integration")


@pytest.fixture
def sekmet(tmp_path: Path) -> Iterator[SekmetPeer]:
    with running_sekmet(tmp_path / "sekmet") as peer:
        yield peer


@pytest.fixture
def registry(sekmet: SekmetPeer) -> Registry:
    return Registry(sekmet)


@pytest.fixture
def sync_settings(settings: Settings, registry: Registry,
                  session_factory: sessionmaker[Session]) -> Settings:
    with session_factory.begin() as session:
        create_organization(session, identifier=registry.facility, name="Radiology",
                            kind="diagnostics")
    return settings.model_copy(update={
        "fhir_registry_url": registry.peer.base_url,
        "fhir_facility_identifier": f"{FACILITY_SYSTEM}|{registry.facility}"})


@pytest.fixture
def pull(sync_settings: Settings, session_factory: sessionmaker[Session]
         ) -> Iterator[Callable[[], object]]:
    client = FhirClient(sync_settings.fhir_registry_url, timeout=10)
    sync = RegistrySync(sync_settings, session_factory, client,
                        apply=referral_aware(apply_service_request, sync_settings))
    yield sync.pull
    client.close()


@pytest.fixture
def teller(sync_settings: Settings, session_factory: sessionmaker[Session]
           ) -> Iterator[JobWorker]:
    """The outbox worker that tells the registry; started by the test."""
    worker = JobWorker(session_factory, {REGISTRY_QUEUE: RegistryTell(
        sync_settings, session_factory)}, poll_seconds=0.05,
        policies={REGISTRY_QUEUE: RetryPolicy(max_attempts=50, base_seconds=0.2,
                                              max_seconds=0.5)})
    yield worker
    worker.stop()


def _until(condition: Callable[[], object], what: str, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"gave up waiting for {what}")
        time.sleep(0.05)


def _registry_task(registry: Registry, referral_id: int) -> dict[str, object] | None:
    found = registry.peer.search("Task", _id=f"bridge-ref-{referral_id}")
    return found[0] if found else None


def _referral(session_factory: sessionmaker[Session], external: str) -> Referral:
    with session_factory() as session:
        referral = session.execute(select(Referral).where(
            Referral.external_id == external)).scalar_one()
        session.expunge(referral)
        return referral


def test_a_pulled_referral_is_used_completed_and_told_through_an_outage(
        registry: Registry, pull: Callable[[], object], teller: JobWorker,
        session_factory: sessionmaker[Session]) -> None:
    patient = registry.patient("MRN-5001")
    sr = registry.referral(patient, "RR5001")
    pull()
    referral = _referral(session_factory, sr["id"])
    assert (referral.status, referral.business_status, referral.source) == (
        "accepted", "used", "registry")
    assert referral.order_id is not None

    registry.peer.stop()  # the registry goes down right after the pull
    teller.start()
    def attempts() -> int:
        with session_factory() as session:
            return int(session.execute(select(Job.attempts).where(
                Job.queue == REGISTRY_QUEUE)).scalar_one())
    _until(lambda: attempts() >= 2, "retries while down")  # the news waits in the outbox
    registry.peer.start()
    _until(lambda: (_registry_task(registry, referral.id) or {}).get("status") == "accepted",
           "the registry to hear the referral was taken")
    task = _registry_task(registry, referral.id)
    assert task is not None and task["basedOn"] == [{"reference": f"ServiceRequest/{sr['id']}"}]
    assert task["businessStatus"] == {"text": "used"}

    with session_factory.begin() as session:
        add_report(session, SYSTEM, referral.id, conclusion="No consolidation.")
    _until(lambda: (_registry_task(registry, referral.id) or {}).get("status") == "completed",
           "the registry to hear the result")
    [report] = registry.peer.search("DiagnosticReport")
    assert report["conclusion"] == "No consolidation."
    task = _registry_task(registry, referral.id)
    assert task is not None
    assert task["output"][0]["valueReference"] == {
        "reference": f"DiagnosticReport/{report['id']}"}

    # Sent again (the answer was lost after the registry took it): still one result there.
    with session_factory.begin() as session:
        queue.enqueue(session, queue=REGISTRY_QUEUE,
                      payload={"referral_id": referral.id, "status": "completed"},
                      dedup_key=f"{referral.id}:completed:resent")
    _until(lambda: len(registry.peer.history("Task", f"bridge-ref-{referral.id}")) >= 3,
           "the resend")
    assert len(registry.peer.search("DiagnosticReport")) == 1


def test_a_recalled_referral_cancels_its_task_order_and_step(
        registry: Registry, pull: Callable[[], object], teller: JobWorker,
        session_factory: sessionmaker[Session]) -> None:
    patient = registry.patient("MRN-5002")
    sr = registry.referral(patient, "RR5002")
    teller.start()
    pull()
    referral = _referral(session_factory, sr["id"])
    assert referral.status == "accepted"
    registry.update(sr, status="entered-in-error")
    pull()
    cancelled = _referral(session_factory, sr["id"])
    assert cancelled.status == "cancelled" and "entered-in-error" in cancelled.status_reason
    with session_factory() as session:
        steps = session.execute(select(ProcedureStep.status).where(
            ProcedureStep.order_id == cancelled.order_id)).scalars().all()
    assert steps and set(steps) <= {"CANCELED", "DISCONTINUED"}
    _until(lambda: (_registry_task(registry, referral.id) or {}).get("status") == "cancelled",
           "the registry to hear of the cancellation")
    # A referral for another facility, or one that arrives already revoked, is not taken.
    other = registry.referral(patient, "RR5003", status="revoked")
    pull()
    with session_factory() as session:
        assert session.execute(select(Referral).where(
            Referral.external_id == other["id"])).first() is None


def test_the_directory_is_pulled_from_the_registry(
        registry: Registry, sync_settings: Settings, session_factory: sessionmaker[Session],
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from bridge.cli.main import app as cli_app
    from bridge.store.people_models import Organization, User
    practice = registry.peer.create({
        "resourceType": "Organization", "name": "Family practice 7", "active": True,
        "identifier": [{"system": FACILITY_SYSTEM, "value": "PRACTICE-7"}],
        "type": [{"coding": [{"code": "practice"}]}]})
    doctor = registry.peer.create({"resourceType": "Practitioner", "active": True,
                                   "name": [{"family": "Петренко", "given": ["Олег"]}]})
    role = registry.peer.create({
        "resourceType": "PractitionerRole", "active": True,
        "practitioner": {"reference": f"Practitioner/{doctor['id']}"},
        "organization": {"reference": f"Organization/{practice['id']}"},
        "code": [{"coding": [{"code": "family-doctor"}]}]})
    monkeypatch.setenv("BRIDGE_DATABASE_URL", sync_settings.database_url)
    monkeypatch.setenv("BRIDGE_DATA_DIR", str(tmp_path / "var"))
    monkeypatch.setenv("BRIDGE_FHIR_REGISTRY_URL", sync_settings.fhir_registry_url)
    runner = CliRunner()
    pulled = runner.invoke(cli_app, ["user", "sync-registry"])
    assert pulled.exit_code == 0, pulled.output
    with session_factory() as session:
        user = session.execute(select(User).where(
            User.identifier == f"registry:Practitioner/{doctor['id']}")).scalar_one()
        org = session.execute(select(Organization).where(
            Organization.identifier == "PRACTICE-7")).scalar_one()
        assert (user.role, user.display_name, user.organization_id, user.disabled,
                user.password_hash) == ("family_doctor", "Олег Петренко", org.id, False, None)
        assert org.kind == "practice"
    registry.update(role, active=False)  # the registry ends the role: the user is disabled
    assert runner.invoke(cli_app, ["user", "sync-registry"]).exit_code == 0
    with session_factory() as session:
        assert session.execute(select(User.disabled).where(
            User.identifier == f"registry:Practitioner/{doctor['id']}")).scalar_one() is True
