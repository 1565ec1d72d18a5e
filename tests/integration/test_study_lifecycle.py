"""Study stability, the reconciliation sweep and the reconciliation API, on both databases."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from bridge.adapters.http.app import create_app
from bridge.config.settings import Settings
from bridge.mapping.dicom.reconciliation import load_reconcile_policy
from bridge.services.archive.stability import mark_stable_studies
from bridge.services.archive.store import ArchiveStore, Arrival
from bridge.services.archive.watch import StudyWatch
from bridge.store.archive_models import AuditRecord, Instance, Study, StudyEvent
from bridge.store.models import utcnow
from tests.dicom_factories import write_series
from tests.http_harness import Api, running_api
from tests.worklist_factories import schedule

pytestmark = pytest.mark.integration


def store_series(store: ArchiveStore, folder: Path, count: int, **attributes: object
                 ) -> list[Path]:
    paths = write_series(folder, count, **attributes)  # type: ignore[arg-type]
    for path in paths:
        store.accept(Arrival(path, calling_ae="CT1", disposable=False))
    return paths


def events(session_factory: sessionmaker[Session], study_id: int) -> list[str]:
    with session_factory() as session:
        return list(session.scalars(select(StudyEvent.kind).where(
            StudyEvent.study_id == study_id).order_by(StudyEvent.id)))


def the_study(session_factory: sessionmaker[Session]) -> Study:
    with session_factory() as session:
        return session.scalars(select(Study)).one()


def test_quiet_study_becomes_stable_and_a_late_object_reopens_it(
        settings: Settings, session_factory: sessionmaker[Session], tmp_path: Path) -> None:
    store = ArchiveStore(settings, session_factory)
    paths = store_series(store, tmp_path / "a", 2)
    study = the_study(session_factory)
    hooked: list[int] = []

    def sweep(after_seconds: float) -> list[int]:
        with session_factory.begin() as session:
            return mark_stable_studies(
                session, stable_seconds=60, hooks=[lambda _s, sid: hooked.append(sid)],
                now=utcnow() + timedelta(seconds=after_seconds))

    assert sweep(30) == []  # not quiet long enough
    assert the_study(session_factory).state == "receiving"
    assert sweep(61) == [study.id]
    assert hooked == [study.id]
    assert (the_study(session_factory).state, events(session_factory, study.id)) == (
        "stable", ["stable"])
    assert sweep(61) == []  # once
    # A late object of the same study re-opens it; the next quiet period closes it again.
    store_series(store, tmp_path / "b", 1,
                 study_uid=the_study(session_factory).study_instance_uid)
    assert the_study(session_factory).state == "receiving"
    assert sweep(61) == [study.id]
    assert events(session_factory, study.id) == ["stable", "reopened", "stable"]
    assert the_study(session_factory).num_instances == len(paths) + 1
    assert hooked == [study.id, study.id]


def test_sweep_reconciles_a_stable_queued_study_and_runs_the_hooks(
        settings: Settings, session_factory: sessionmaker[Session], tmp_path: Path) -> None:
    store = ArchiveStore(settings, session_factory)
    store_series(store, tmp_path / "a", 1, AccessionNumber="Q-1")
    hooked: list[int] = []
    watch = StudyWatch(session_factory, load_reconcile_policy(settings.mappings_dir),
                       stable_seconds=0.001, hooks=[lambda _s, sid: hooked.append(sid)])
    reconciled, stable = watch.run_once()
    study = the_study(session_factory)
    assert (reconciled, stable, study.reconciliation) == ([], [study.id], "queued")
    with session_factory.begin() as session:
        schedule(session, order={"accession": "Q-1"})
    assert watch.run_once() == ([study.id], [])
    assert the_study(session_factory).reconciliation == "matched"
    assert hooked == [study.id, study.id]  # once stable, once reconciled while stable
    assert events(session_factory, study.id) == ["stable", "reconciled"]


@pytest.fixture
def api(settings: Settings, session_factory: sessionmaker[Session]) -> Iterator[Api]:
    hooked: list[int] = []
    app = create_app(settings, session_factory,
                     study_hooks=[lambda _s, sid: hooked.append(sid)])
    app.state.hooked = hooked
    with running_api(app, session_factory) as served:
        yield served


def test_queue_lists_assigns_and_rejects_with_audit(
        api: Api, settings: Settings, session_factory: sessionmaker[Session],
        tmp_path: Path) -> None:
    store = ArchiveStore(settings, session_factory)
    store_series(store, tmp_path / "a", 2, AccessionNumber="NOPE", PatientName="Ґалаґан^Олена",
                 SpecificCharacterSet="ISO_IR 192")
    store_series(store, tmp_path / "b", 1, AccessionNumber="")
    with session_factory.begin() as session:
        order_id = schedule(session, order={"accession": "RIGHT"}).order_id
    with api.client("viewer") as client:
        assert client.get("/api/reconciliation").status_code == 403
    with api.client("integration") as client:
        queue = client.get("/api/reconciliation").json()
        assert [q["accession"] for q in queue] == ["NOPE", ""]
        assert queue[0]["patient_name"] == "Ґалаґан^Олена"
        assert queue[0]["reason"] and queue[0]["num_instances"] == 2
        first, second = (q["study_instance_uid"] for q in queue)
        assigned = client.post(f"/api/reconciliation/{first}/assign",
                               json={"accession": "RIGHT"})
        assert assigned.status_code == 200, assigned.text
        assert client.post(f"/api/reconciliation/{first}/assign",
                           json={"accession": "NONE-SUCH"}).status_code == 404
        assert client.post(f"/api/reconciliation/{first}/assign",
                           json={}).status_code == 422
        assert client.post(f"/api/reconciliation/{second}/reject",
                           json={"reason": "test image"}).status_code == 403
        assert [q["study_instance_uid"] for q in
                client.get("/api/reconciliation").json()] == [second]
    with api.client("admin") as client:
        assert client.post(f"/api/reconciliation/{second}/reject",
                           json={"reason": "test image"}).status_code == 204
        assert client.post(f"/api/reconciliation/{second}/reject",
                           json={"reason": "again"}).status_code == 404
        assert client.get("/api/reconciliation").json() == []
    with session_factory() as session:
        study = session.scalars(select(Study)).one()
        assert (study.study_instance_uid, study.order_id, study.reconciliation) == (
            first, order_id, "assigned")
        audit = [(a.action, a.entity_id, a.actor) for a in
                 session.scalars(select(AuditRecord).order_by(AuditRecord.id))]
        assert audit == [("assign", first, "test integration"),
                         ("delete", second, "test admin")]
        kept = list(session.scalars(select(Instance.path)))
    on_disk = sorted(str(p.relative_to(settings.archive_root))
                     for p in settings.archive_root.rglob("*.dcm"))
    assert on_disk == sorted(kept) and len(kept) == 2


def test_peers_are_listed(settings: Settings, session_factory: sessionmaker[Session]) -> None:
    from bridge.config.settings import DicomPeer

    configured = settings.model_copy(update={"dicom_strict_peers": True, "dicom_peers": (
        DicomPeer(ae_title="CT1", host="127.0.0.1", port=104, role="scu",
                  charset="windows-1251"),)})
    with running_api(create_app(configured, session_factory), session_factory) as api, \
            api.client("viewer") as client:
        body = client.get("/api/peers").json()
    assert body == {"strict": True, "peers": [{
        "ae_title": "CT1", "host": "127.0.0.1", "port": 104, "role": "scu",
        "charset": "windows-1251", "latin_only": False}]}
