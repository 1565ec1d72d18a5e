"""De-identified exports of archived studies to each kind of destination, over real sockets,
on both databases: an outgoing folder, an S3 bucket (SeaweedFS), a DICOM peer by C-STORE and
a DICOMweb STOW-RS endpoint (both Orthanc, with its DICOMweb plugin). What the destination
holds passes the independent PHI scan; what comes back is restored byte for byte; objects
made outside join the real study; a destination that is down is retried without loss or
double sending; burned-in objects are held back with the reason; who may export is checked;
every export and restore is audited."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid
from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from bridge.adapters.dicom.storage_scp import storage_service
from bridge.adapters.http.app import create_app
from bridge.config.settings import DicomPeer, Settings
from bridge.services.archive.admin import delete_study
from bridge.services.deid import exports, records
from bridge.services.deid.keys import master_key
from bridge.services.deid.outbound import open_outbound
from bridge.services.deid.restore import ORIGINAL, Restorer
from bridge.storage.durable import remove_file
from bridge.store.archive_models import Instance, Job, Study
from bridge.store.audit import AUDIT
from bridge.store.deid_models import DeidExport, DeidObject, DeidStudy
from tests.conftest import free_port
from tests.deid_fixtures import IDENTITY_STRINGS, PATIENT_ID, burned_in_us, phi_sr, write
from tests.deid_harness import (
    archive,
    key_file,
    originals,
    phi_study,
    run_export,
    run_jobs,
    sha256,
    with_destinations,
)
from tests.dicom_harness import dicom_servers
from tests.http_harness import running_api
from tests.orthanc_peer import DICOMWEB_PLUGIN, OrthancPeer, running_orthanc
from tests.phi_scan import scan
from tests.seaweed_peer import SeaweedPeer, s3_peer  # noqa: F401 (fixture)

OPTIONS = ["retain_modified_dates", "clean_descriptors"]
ORTHANC_CONFIG = {"DicomAlwaysAllowGet": True, "DicomAlwaysAllowFind": True,
                  "DicomAlwaysAllowMove": True}


@pytest.fixture(scope="module")
def orthanc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OrthancPeer]:
    with running_orthanc(tmp_path_factory.mktemp("orthanc"), aet="ORTHANC",
                         plugins=[DICOMWEB_PLUGIN], extra_config=ORTHANC_CONFIG) as peer:
        yield peer


def _destination(kind: str, tmp_path: Path, request: pytest.FixtureRequest,
                 settings: Settings) -> tuple[dict[str, Any], dict[str, Any]]:
    """The destination's settings and the extra settings it needs."""
    if kind == "folder":
        (tmp_path / "outgoing").mkdir()  # an outgoing folder must exist (a mount, not a typo)
        return {"name": "regional", "url": f"file://{tmp_path / 'outgoing'}"}, {}
    if kind == "s3":
        peer: SeaweedPeer = request.getfixturevalue("s3_peer")
        bucket, prefix = peer.new_prefix()
        for name, value in peer.env().items():
            request.getfixturevalue("monkeypatch").setenv(name, value)
        return {"name": "regional", "url": f"s3://{bucket}/{prefix}"}, {
            "s3_endpoint_url": peer.endpoint_url}
    orthanc: OrthancPeer = request.getfixturevalue("orthanc")
    if kind == "dicom":
        return {"name": "regional", "url": "dicom://ORTHANC", "return_ae": "ORTHANC"}, {
            "dicom_peers": (DicomPeer(ae_title="ORTHANC", host="127.0.0.1",
                                      port=orthanc.dicom_port),)}
    return {"name": "regional",
            "url": f"http://127.0.0.1:{orthanc.http_port}/dicom-web"}, {}


@pytest.mark.parametrize("kind", ["folder", "s3", "dicom", "dicomweb"])
def test_export_to_each_destination_and_restore_byte_for_byte(
        kind: str, settings: Settings, session_factory: sessionmaker[Session],
        tmp_path: Path, request: pytest.FixtureRequest) -> None:
    destination, extra = _destination(kind, tmp_path, request, settings)
    s = with_destinations(settings, key_file(tmp_path), {**destination, "options": OPTIONS},
                          **extra)
    files = phi_study(tmp_path / "modality")
    study_uid = archive(s, session_factory, files)
    kept = originals(session_factory, study_uid)
    export = run_export(s, session_factory, study_uid, "regional")
    assert (export.status, export.sent, export.held, export.failed) == ("done", 4, 0, 0), \
        export.error
    by_uid = {dcmread(p).SOPInstanceUID: dcmread(p) for p in files}
    outbound = open_outbound(s.deid_destinations[0], s)
    restorer = Restorer(s, session_factory)
    with session_factory() as session:
        rows = session.execute(select(DeidObject).where(
            DeidObject.export_id == export.id)).scalars().all()
        study_row = session.execute(select(DeidStudy)).scalar_one()
        ring = records.KeyRing(session, master_key(s))
        real = {row.id: ring.originals(row)["sop"] for row in rows}
    try:
        for row in rows:
            held = outbound.fetch(row.location, study=study_row.pseudo_study_uid,
                                  series=row.pseudo_series_uid or "",
                                  instance=row.pseudo_sop_uid or "",
                                  sop_class=row.sop_class_uid or "")
            copy = tmp_path / "fetched" / f"{row.id}.dcm"
            copy.parent.mkdir(parents=True, exist_ok=True)
            copy.write_bytes(held)
            assert scan(by_uid[real[row.id]], copy, options=OPTIONS,
                        identity=IDENTITY_STRINGS) == []
            restored = restorer.restore(held, actor="test", source="fetch")
            assert restored.kind == ORIGINAL
            assert sha256(restored.data) == kept[real[row.id]]
    finally:
        outbound.close()
    with session_factory() as session:
        actions = [r.action for r in session.execute(select(AUDIT)).all()]
    assert actions.count("deid-export-request") == 1 and actions.count("deid-export") == 1
    assert actions.count("deid-restore") == 4


def test_a_destination_that_is_down_is_retried_without_loss_or_doubles(
        settings: Settings, session_factory: sessionmaker[Session], tmp_path: Path) -> None:
    port = free_port()
    s = with_destinations(settings, key_file(tmp_path), {"name": "grid", "url": "dicom://LATE"},
                          dicom_peers=(DicomPeer(ae_title="LATE", host="127.0.0.1", port=port),))
    study_uid = archive(s, session_factory, phi_study(tmp_path / "modality"))
    export = run_export(s, session_factory, study_uid, "grid", max_runs=1)
    with session_factory() as session:
        job = session.get(Job, export.job_id)
        assert job is not None and job.status == "pending" and job.attempts == 1
        assert "LATE" in (job.last_error or "")
    with running_orthanc(tmp_path / "late", aet="LATE", dicom_port=port) as late, \
            session_factory() as session, session.begin():
        session.execute(update(Job).where(Job.id == export.job_id).values(
            next_attempt_at=Job.created_at))
        session.commit()
        worker_export = run_jobs(s, session_factory, export.id)
        assert (worker_export.status, worker_export.sent) == ("done", 4)
        assert late.instance_count() == 4
    with session_factory() as session:
        statuses = session.execute(select(DeidObject.status).where(
            DeidObject.export_id == export.id)).scalars().all()
    assert sorted(statuses) == ["sent"] * 4


def test_returns_by_c_store_are_restored_and_outside_reports_join_the_real_study(
        settings: Settings, session_factory: sessionmaker[Session], tmp_path: Path,
        orthanc: OrthancPeer) -> None:
    s = with_destinations(
        settings, key_file(tmp_path),
        {"name": "grid", "url": "dicom://ORTHANC", "options": OPTIONS},
        dicom_peers=(DicomPeer(ae_title="ORTHANC", host="127.0.0.1", port=orthanc.dicom_port),))
    files = phi_study(tmp_path / "modality", images=2, with_sr=False)
    study_uid = archive(s, session_factory, files)
    kept = originals(session_factory, study_uid)
    assert run_export(s, session_factory, study_uid, "grid").status == "done"
    # The hospital drops its own copy (the grid keeps the study now).
    with session_factory() as session, session.begin():
        paths = delete_study(session, study_uid=study_uid, actor="test", reason="moved")
    for path in paths:
        remove_file(s.archive_root / path)
    with session_factory() as session:
        pseudo = session.execute(select(DeidStudy.pseudo_study_uid)).scalar_one()
        ring = records.KeyRing(session, master_key(s))
        first = session.execute(select(DeidObject)).scalars().first()
        assert first is not None
        pseudo_image, real_image = first.pseudo_sop_uid, ring.originals(first)["sop"]
    with dicom_servers(s, session_factory, extra_services=(
            storage_service(s, session_factory),)) as start:
        bridge = start()
        orthanc.rest("/modalities/BRIDGE", "PUT", json={
            "AET": "BRIDGE", "Host": "127.0.0.1", "Port": bridge.port})
        found = orthanc.rest("/tools/find", "POST", json={
            "Level": "Study", "Query": {"StudyInstanceUID": pseudo}})
        assert len(found) == 1
        # A consultant's report made outside, in the pseudonymous study.
        pseudo_tags = orthanc.rest(f"/studies/{found[0]}")["PatientMainDicomTags"]
        report = phi_sr(pseudo)
        for keyword in ("PatientName", "PatientID", "OtherPatientIDs", "PatientAddress",
                        "PatientTelephoneNumbers", "OtherPatientIDsSequence",
                        "StudyDescription", "SeriesDescription", "InstitutionName",
                        "AccessionNumber", "RequestAttributesSequence"):
            if keyword in report:
                delattr(report, keyword)
        report.PatientID = pseudo_tags["PatientID"]
        report.PatientName = pseudo_tags.get("PatientName", "")
        report.ContentSequence[1].TextValue = "No pathology found (consultant)"
        report.ContentSequence[0].PersonName = "Outside^Consultant"
        evidence = Dataset()
        evidence.StudyInstanceUID = pseudo
        reference = Dataset()
        reference.ReferencedSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
        reference.ReferencedSOPInstanceUID = pseudo_image
        series = Dataset()
        series.SeriesInstanceUID = generate_uid()
        series.ReferencedSOPSequence = [reference]
        evidence.ReferencedSeriesSequence = [series]
        report.CurrentRequestedProcedureEvidenceSequence = [evidence]
        buffer = io.BytesIO()
        report.save_as(buffer, enforce_file_format=True)
        orthanc.rest("/instances", "POST", content=buffer.getvalue(),
                     headers={"Content-Type": "application/dicom"})
        sent = orthanc.rest("/modalities/BRIDGE/store", "POST",
                            json={"Resources": [found[0]], "Synchronous": True})
        assert sent["FailedInstancesCount"] == 0, sent
    with session_factory() as session:
        study = session.execute(select(Study).where(
            Study.study_instance_uid == study_uid)).scalar_one()
        assert study.source_patient_id == PATIENT_ID
        stored = session.execute(select(Instance).where(Instance.study_id == study.id)
                                 ).scalars().all()
        by_uid = {i.sop_instance_uid: i for i in stored}
        assert {u: by_uid[u].sha256 for u in kept} == kept  # byte for byte
        outside = [i for i in stored if i.sop_instance_uid not in kept]
        assert len(outside) == 1
        restored_report = dcmread(s.archive_root / outside[0].path)
        assert restored_report.PatientID == PATIENT_ID
        assert restored_report.StudyInstanceUID == study_uid
        assert "PatientIdentityRemoved" not in restored_report
        ref = restored_report.CurrentRequestedProcedureEvidenceSequence[0]
        assert ref.StudyInstanceUID == study_uid
        assert ref.ReferencedSeriesSequence[0].ReferencedSOPSequence[0]\
            .ReferencedSOPInstanceUID == real_image
        kinds = [r.details["kind"] for r in session.execute(select(AUDIT)).all()
                 if r.action == "deid-restore"]
    assert sorted(kinds) == ["created", "original", "original"]


def test_burned_in_objects_are_held_back_and_the_api_says_why(
        settings: Settings, session_factory: sessionmaker[Session], tmp_path: Path) -> None:
    (tmp_path / "out").mkdir()
    s = with_destinations(settings, key_file(tmp_path),
                          {"name": "regional", "url": f"file://{tmp_path / 'out'}"})
    files = phi_study(tmp_path / "modality", images=1, with_sr=False)
    study = dcmread(files[0]).StudyInstanceUID
    files.append(write(burned_in_us(study), tmp_path / "modality"))
    study_uid = archive(s, session_factory, files)
    app = create_app(s, session_factory)
    with running_api(app, session_factory) as api:
        with api.client("admin") as admin:
            queued = admin.post("/api/deid/exports", json={
                "study_instance_uid": study_uid, "destination": "regional"})
            assert queued.status_code == 202, queued.text
            export_id = queued.json()["id"]
            run_jobs(s, session_factory, export_id)
            shown = admin.get(f"/api/deid/exports/{export_id}").json()
            assert (shown["status"], shown["sent"], shown["held"]) == ("partial", 1, 1)
            assert shown["not_sent"][0]["status"] == "held"
            assert "Burned In Annotation is YES" in shown["not_sent"][0]["reason"]
            unknown = admin.post("/api/deid/exports", json={
                "study_instance_uid": study_uid, "destination": "elsewhere"})
            assert unknown.status_code == 404
            assert "known: regional" in unknown.text
        for role in ("viewer", "integration"):
            with api.client(role) as caller:
                refused = caller.post("/api/deid/exports", json={
                    "study_instance_uid": study_uid, "destination": "regional"})
                assert refused.status_code == 403, (role, refused.text)
        with api.client() as nobody:
            assert nobody.get("/api/deid/exports").status_code == 401
    assert len(list((tmp_path / "out").rglob("*.dcm"))) == 1


def test_a_stable_study_goes_out_by_the_destinations_rule(
        settings: Settings, session_factory: sessionmaker[Session], tmp_path: Path) -> None:
    (tmp_path / "out").mkdir()
    s = with_destinations(settings, key_file(tmp_path),
                          {"name": "regional", "url": f"file://{tmp_path / 'out'}",
                           "auto_modalities": ["CT"]},
                          {"name": "mr-only", "url": f"file://{tmp_path / 'mr'}",
                           "auto_modalities": ["MR"]})
    study_uid = archive(s, session_factory, phi_study(tmp_path / "modality", images=2,
                                                      with_sr=False))
    hook = exports.auto_export_hook(s)
    with session_factory() as session, session.begin():
        study = session.execute(select(Study).where(
            Study.study_instance_uid == study_uid)).scalar_one()
        hook(session, study.id)  # receiving: nothing yet
        study.state, study.reconciliation = "stable", "linked"
        session.flush()
        hook(session, study.id)
        hook(session, study.id)  # once queued, not twice
    with session_factory() as session:
        queued = session.execute(select(DeidExport)).scalars().all()
        assert [(e.destination, e.source, e.actor) for e in queued] == [
            ("regional", "rule", "rule:regional")]
    run_jobs(s, session_factory, queued[0].id)
    assert len(list((tmp_path / "out").rglob("*.dcm"))) == 2
    assert not (tmp_path / "mr").exists()


def test_exports_need_a_master_key_and_say_so(
        settings: Settings, session_factory: sessionmaker[Session], tmp_path: Path) -> None:
    s = with_destinations(settings, None, {"name": "regional",
                                           "url": f"file://{tmp_path / 'out'}"})
    study_uid = archive(s, session_factory, phi_study(tmp_path / "modality", images=1))
    app = create_app(s, session_factory)
    with running_api(app, session_factory) as api, api.client("admin") as admin:
        refused = admin.post("/api/deid/exports", json={
            "study_instance_uid": study_uid, "destination": "regional"})
    assert refused.status_code == 500
    assert "BRIDGE_DEID_MASTER_KEY_FILE" in refused.text
    with session_factory() as session:
        assert session.execute(select(DeidExport)).first() is None
        assert session.execute(select(Job).where(Job.queue == exports.DEID_QUEUE)).first() \
            is None


def test_fetched_on_request_and_dropped_in_the_incoming_folder(
        settings: Settings, session_factory: sessionmaker[Session], tmp_path: Path,
        request: pytest.FixtureRequest) -> None:
    from bridge.services.archive.store import ArchiveStore
    from bridge.services.deid.returns import FAILED_DIR, IncomingFolder, fetch_back

    destination, extra = _destination("s3", tmp_path, request, settings)
    (tmp_path / "outgoing").mkdir()
    s = with_destinations(settings, key_file(tmp_path), {**destination, "options": OPTIONS},
                          {"name": "courier", "url": f"file://{tmp_path / 'outgoing'}"},
                          deid_incoming_dir=tmp_path / "incoming", **extra)
    files = phi_study(tmp_path / "modality", images=2)
    study_uid = archive(s, session_factory, files)
    kept = originals(session_factory, study_uid)
    assert run_export(s, session_factory, study_uid, "regional").status == "done"
    assert run_export(s, session_factory, study_uid, "courier").status == "done"

    def drop_local_copy() -> None:
        with session_factory() as session, session.begin():
            paths = delete_study(session, study_uid=study_uid, actor="test", reason="moved")
        for path in paths:
            remove_file(s.archive_root / path)

    def archived() -> dict[str, str]:
        return originals(session_factory, study_uid)

    drop_local_copy()
    store = ArchiveStore(s, session_factory)
    fetched = fetch_back(s, session_factory, store, destination="regional",
                         study_uid=study_uid, actor="test")
    assert fetched.archived == {"original": 3} and fetched.refused == []
    assert archived() == kept
    with pytest.raises(Exception, match="not exported to"):
        fetch_back(s, session_factory, store, destination="regional",
                   study_uid=generate_uid(), actor="test")
    # The courier's copies come back through the incoming folder.
    drop_local_copy()
    incoming = tmp_path / "incoming" / "batch1"
    incoming.mkdir(parents=True)
    for path in (tmp_path / "outgoing").rglob("*.dcm"):
        (incoming / path.name).write_bytes(path.read_bytes())
    (incoming / "stranger.dcm").write_bytes(files[0].read_bytes())  # never de-identified
    swept = IncomingFolder(s, session_factory, store).run_once()
    assert swept.archived == {"original": 3} and len(swept.refused) == 1
    assert archived() == kept
    assert list(incoming.iterdir()) == []
    aside = tmp_path / "incoming" / FAILED_DIR / "batch1"
    assert sorted(p.name for p in aside.iterdir()) == ["stranger.dcm", "stranger.dcm.why"]
    why = (aside / "stranger.dcm.why").read_text()
    assert "not an object of a study this bridge de-identified" in why
    assert PATIENT_ID not in why
