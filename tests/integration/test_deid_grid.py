"""The grid gateway (BRIDGE_GRID_AE_TITLE) with DCMTK against two external stores, SeaweedFS
(S3) and Orthanc (C-STORE, fetched back by C-GET), on both databases: storescu to the grid AE
de-identifies and sends out; findscu on it answers with the real identities from the key
records; movescu and getscu bring the objects back restored, byte for byte."""

from __future__ import annotations

import io
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from pydicom import dcmread
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from bridge.adapters.dicom.grid_scp import grid_service
from bridge.adapters.dicom.qr_scp import query_retrieve_service
from bridge.adapters.dicom.server import DEFAULT_SERVICES
from bridge.adapters.dicom.storage_scp import storage_service
from bridge.config.settings import DicomPeer, Settings
from bridge.mapping.deid.layout import body_offset
from bridge.services.deid.grid import GridGateway
from bridge.store.archive_models import Instance
from bridge.store.audit import AUDIT
from bridge.store.deid_models import DeidExport, DeidObject
from tests.conftest import require_tool
from tests.deid_fixtures import IDENTITY_STRINGS, PATIENT_ID, PATIENT_NAME
from tests.deid_harness import key_file, phi_study, sha256, with_destinations
from tests.dicom_harness import dicom_servers, findscu
from tests.integration.test_compression import _storescp
from tests.orthanc_peer import OrthancPeer, running_orthanc
from tests.phi_scan import scan
from tests.seaweed_peer import SeaweedPeer, s3_peer  # noqa: F401 (fixture)
from tests.waiting import eventually

storescp = contextmanager(_storescp)


@pytest.fixture(scope="module")
def orthanc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OrthancPeer]:
    with running_orthanc(tmp_path_factory.mktemp("grid-orthanc"), aet="GRIDSTORE",
                         extra_config={"DicomAlwaysAllowGet": True}) as peer:
        yield peer


def _body(data: bytes) -> bytes:
    return data[body_offset(data):]


@pytest.mark.parametrize("store", ["s3", "orthanc"])
def test_the_grid_ae_is_an_ordinary_archive_to_the_hospital(
        store: str, settings: Settings, session_factory: sessionmaker[Session],
        tmp_path: Path, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    with storescp(tmp_path / "viewer") as (viewer_port, received):
        peers = [DicomPeer(ae_title="STORESCP", host="127.0.0.1", port=viewer_port)]
        if store == "s3":
            s3: SeaweedPeer = request.getfixturevalue("s3_peer")
            bucket, prefix = s3.new_prefix()
            for name, value in s3.env().items():
                monkeypatch.setenv(name, value)
            url, extra = f"s3://{bucket}/{prefix}", {"s3_endpoint_url": s3.endpoint_url}
        else:
            orthanc: OrthancPeer = request.getfixturevalue("orthanc")
            peers.append(DicomPeer(ae_title="GRIDSTORE", host="127.0.0.1",
                                   port=orthanc.dicom_port))
            url, extra = "dicom://GRIDSTORE", {}
        s = with_destinations(settings, key_file(tmp_path),
                              {"name": "grid", "url": url, "options": ["retain_modified_dates"]},
                              grid_ae_title="GRID", grid_destination="grid",
                              dicom_peers=tuple(peers), **extra)
        files = phi_study(tmp_path / "modality", images=3)
        originals = {dcmread(p).SOPInstanceUID: p.read_bytes() for p in files}
        study_uid = dcmread(files[0]).StudyInstanceUID
        with dicom_servers(s, session_factory,
                           services=(*DEFAULT_SERVICES, query_retrieve_service),
                           extra_services=(storage_service(s, session_factory),
                                           grid_service(s, session_factory))) as start:
            port = start().port
            stored = subprocess.run(
                [require_tool("storescu"), "-aet", "MODALITY", "-aec", "GRID", "127.0.0.1",
                 str(port), *map(str, files)], capture_output=True, text=True, timeout=60,
                check=False)
            assert stored.returncode == 0, stored.stderr
            # Sent out de-identified; nothing kept in the hospital's own archive.
            with session_factory() as session:
                assert session.execute(select(func.count()).select_from(Instance)).scalar() == 0

            def finished() -> DeidExport | None:  # at the end of the association
                with session_factory() as session:
                    export = session.execute(select(DeidExport)).scalar_one()
                    return export if export.status != "running" else None

            export = eventually(finished, timeout=30)
            assert (export.source, export.status, export.sent) == ("grid", "done", 4)
            outside = _outside(s, session_factory, store, request, tmp_path)
            assert len(outside) == 4
            for path in outside:
                original = dcmread(next(p for p in files
                                        if dcmread(p).InstanceNumber == dcmread(path).InstanceNumber
                                        and dcmread(p).SOPClassUID == dcmread(path).SOPClassUID))
                assert scan(original, path, options=["retain_modified_dates"],
                            identity=IDENTITY_STRINGS) == []
            # C-FIND on the grid AE answers with the real patient.
            answers = findscu(port, "-S", ["QueryRetrieveLevel=STUDY", f"PatientID={PATIENT_ID}",
                                           "PatientName", "StudyInstanceUID",
                                           "NumberOfStudyRelatedInstances"],
                              tmp_path / "found", aet="VIEWER", called="GRID")
            assert [(a.StudyInstanceUID, str(a.PatientName), int(a.NumberOfStudyRelatedInstances))
                    for a in answers] == [(study_uid, PATIENT_NAME, 4)]
            images = findscu(port, "-S", ["QueryRetrieveLevel=IMAGE",
                                          f"StudyInstanceUID={study_uid}", "SeriesInstanceUID",
                                          "SOPInstanceUID"], tmp_path / "images", aet="VIEWER",
                             called="GRID")
            assert {str(a.SOPInstanceUID) for a in images} == set(originals)
            # The main AE knows nothing of them (the grid's objects are not the archive's).
            assert findscu(port, "-S", ["QueryRetrieveLevel=STUDY", f"PatientID={PATIENT_ID}"],
                           tmp_path / "main", aet="VIEWER") == []
            # C-MOVE to a viewer, C-GET by a workstation: restored objects.
            moved = subprocess.run(
                [require_tool("movescu"), "-S", "-aet", "VIEWER", "-aec", "GRID", "-aem",
                 "STORESCP", "-k", "QueryRetrieveLevel=STUDY", "-k",
                 f"StudyInstanceUID={study_uid}", "127.0.0.1", str(port)],
                capture_output=True, text=True, timeout=120, check=False)
            assert moved.returncode == 0, moved.stderr
            got_dir = tmp_path / "got"
            got_dir.mkdir()
            got = subprocess.run(
                [require_tool("getscu"), "-S", "-aet", "GETSCU", "-aec", "GRID", "-od",
                 str(got_dir), "-k", "QueryRetrieveLevel=STUDY", "-k",
                 f"StudyInstanceUID={study_uid}", "127.0.0.1", str(port)],
                capture_output=True, text=True, timeout=120, check=False)
            assert got.returncode == 0, got.stderr
        moved_back = {dcmread(p).SOPInstanceUID: p.read_bytes() for p in received.iterdir()}
        # storescp writes its own file meta; the data sets are the originals' bytes.
        assert {u: _body(b) for u, b in moved_back.items()} == \
            {u: _body(b) for u, b in originals.items()}
        # getscu takes implicit VR (its proposal): the same attributes, re-encoded (private
        # ones then read back without their VR, so compared as public ones only).
        got_back = {dcmread(p).SOPInstanceUID: dcmread(p) for p in got_dir.iterdir()}
        assert set(got_back) == set(originals)
        for uid, ds in got_back.items():
            original = dcmread(io.BytesIO(originals[uid]))
            assert [(e.tag, e.value) for e in ds if not e.tag.is_private] == \
                [(e.tag, e.value) for e in original if not e.tag.is_private]
        # What the gateway hands over is the object it received, byte for byte (the file
        # meta is the receiving side's: DIMSE carries none).
        gateway = GridGateway(s, session_factory)
        from pydicom.dataset import Dataset

        query = Dataset()
        query.StudyInstanceUID = study_uid
        objects = gateway.retrieve_list(query)
        fetched = [b or b"" for b in gateway.fetch(objects, calling_ae="TEST", what="test")]
        with session_factory() as session:
            received_hashes = session.execute(select(DeidObject.original_sha256)).scalars().all()
        assert sorted(sha256(b) for b in fetched) == sorted(received_hashes)
        assert sorted(_body(b) for b in fetched) == sorted(_body(b) for b in originals.values())
        with session_factory() as session:
            actions = [r.action for r in session.execute(select(AUDIT)).all()]
        assert actions.count("deid-grid-store") == 1
        assert actions.count("deid-grid-find") == 2
        assert actions.count("deid-grid-retrieve") == 3


def _outside(s: Settings, sessions: sessionmaker[Session], store: str,
             request: pytest.FixtureRequest, tmp_path: Path) -> list[Path]:
    """What the external store holds, as files."""
    folder = tmp_path / "outside"
    folder.mkdir()
    if store == "s3":
        s3: SeaweedPeer = request.getfixturevalue("s3_peer")
        bucket, _, prefix = s.deid_destinations[0].url.removeprefix("s3://").partition("/")
        blobs = [s3.get(bucket, key) for key in s3.keys(bucket, prefix)]
    else:
        orthanc: OrthancPeer = request.getfixturevalue("orthanc")
        with sessions() as session:
            wanted = set(session.execute(select(DeidObject.pseudo_sop_uid)).scalars())
        blobs = []
        for uid in wanted:
            ids = orthanc.rest("/tools/find", "POST", json={
                "Level": "Instance", "Query": {"SOPInstanceUID": uid}})
            blobs.extend(orthanc.rest(f"/instances/{ids[0]}/file") for _ in ids[:1])
    paths = []
    for index, blob in enumerate(blobs):
        path = folder / f"{index}.dcm"
        path.write_bytes(blob)
        paths.append(path)
    return paths


def test_what_the_grid_cannot_take_gets_a_failure_status_and_nothing_leaves(
        settings: Settings, session_factory: sessionmaker[Session], tmp_path: Path) -> None:
    from pynetdicom import AE
    from pynetdicom.sop_class import UltrasoundImageStorage  # type: ignore[attr-defined]

    from tests.deid_fixtures import burned_in_us

    outside = tmp_path / "outside"
    outside.mkdir()
    s = with_destinations(settings, key_file(tmp_path),
                          {"name": "grid", "url": f"file://{outside}"},
                          grid_ae_title="GRID", grid_destination="grid")
    with dicom_servers(s, session_factory, extra_services=(
            storage_service(s, session_factory), grid_service(s, session_factory))) as start:
        port = start().port
        ae = AE(ae_title="MODALITY")
        ae.add_requested_context(UltrasoundImageStorage)
        assoc = ae.associate("127.0.0.1", port, ae_title="GRID")
        assert assoc.is_established
        status = assoc.send_c_store(burned_in_us("1.2.3.4"))
        assoc.release()
    assert status.Status == 0xA900
    assert "held back" in status.ErrorComment and "Burned In Annotation" in status.ErrorComment
    assert PATIENT_ID not in status.ErrorComment
    assert list(outside.rglob("*")) == []
    with session_factory() as session:
        held = session.execute(select(DeidObject)).scalar_one()
        assert (held.status, held.record) == ("held", None)
