"""A study held only in long-term storage, retrieved through real peers from the whole bridge
(``running_bridge``): C-GET (DCMTK getscu), C-MOVE (DCMTK movescu as its own destination)
and WADO-RS over HTTP, with recall to the online tier and without (a read cache).

The bridge migrates the study itself (delay 0, a short poll) to SeaweedFS; the test then
does what online cleanup does (marks the instances and the study, removes the files).
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import httpx
import pydicom
import pytest
from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from bridge.config.settings import DicomPeer, Settings
from bridge.services.auth.tokens import create_token
from bridge.store.archive_models import Instance, Study
from bridge.store.models import utcnow
from tests.conftest import require_tool
from tests.dicom_factories import write_series
from tests.hl7_harness import running_bridge
from tests.peer_process import free_port
from tests.seaweed_peer import SeaweedPeer, s3_peer  # noqa: F401 (fixture)
from tests.waiting import eventually

pytestmark = pytest.mark.integration

STUDY_UID = "1.2.826.0.1.3680043.10.1137.1.5501"


def _longterm_marked(sessions: sessionmaker[Session]) -> Study | None:
    with sessions() as session:
        study = session.scalars(select(Study)).first()
    return study if study is not None and study.longterm_at is not None else None


def _remove_online(sessions: sessionmaker[Session], settings: Settings) -> list[Path]:
    """What online cleanup does: marks, commits, then removes the files."""
    with sessions.begin() as session:
        now = utcnow()
        session.execute(update(Instance).values(online_removed_at=now))
        session.execute(update(Study).values(online_removed_at=now))
        paths = [settings.archive_root / p for p in session.scalars(select(Instance.path))]
    for path in paths:
        path.unlink()
    return paths


def _marks(sessions: sessionmaker[Session]) -> tuple[int, bool]:
    """(instances marked removed from the online tier, the study marked)."""
    with sessions() as session:
        removed = len(session.scalars(select(Instance.id).where(
            Instance.online_removed_at.is_not(None))).all())
        study = session.scalars(select(Study)).one()
    return removed, study.online_removed_at is not None


def _wado_parts(body: bytes, content_type: str) -> list[bytes]:
    boundary = content_type.split("boundary=")[1].split(";")[0].strip('"').encode()
    parts = []
    for chunk in body.split(b"--" + boundary)[1:]:
        if chunk.startswith(b"--"):
            break
        parts.append(chunk.split(b"\r\n\r\n", 1)[1].removesuffix(b"\r\n"))
    return parts


@pytest.mark.parametrize("recall", [True, False], ids=["recall", "cache"])
def test_a_study_only_in_longterm_storage_is_retrieved_by_cget_cmove_and_wado(
        recall: bool, settings: Settings, session_factory: sessionmaker[Session],
        s3_peer: SeaweedPeer, tmp_path: Path,  # noqa: F811
        monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in s3_peer.env().items():
        monkeypatch.setenv(name, value)
    bucket, prefix = s3_peer.new_prefix()
    move_port = free_port()
    configured = settings.model_copy(update={
        "study_stable_seconds": 0.5, "worker_poll_seconds": 0.2,
        "longterm_url": f"s3://{bucket}/{prefix}", "s3_endpoint_url": s3_peer.endpoint_url,
        "longterm_delay_seconds": 0.0, "longterm_poll_seconds": 0.3,
        "recall_on_retrieve": recall,
        "dicom_peers": (DicomPeer(ae_title="MOVESCU", host="127.0.0.1", port=move_port,
                                  role="both"),),
    })
    files = write_series(tmp_path / "ct", 4, study_uid=STUDY_UID, rows=64, columns=64,
                         PatientID="LT-1")
    # Pixel values, not bytes: the bridge may have compressed the files losslessly.
    originals = {ds.SOPInstanceUID: ds.pixel_array.tobytes()
                 for ds in map(pydicom.dcmread, files)}
    cache = configured.data_dir / "longterm-cache"

    with running_bridge(configured) as bridge:
        sent = subprocess.run([require_tool("storescu"), "-aec", "BRIDGE", "127.0.0.1",
                               str(bridge.dicom_port), *map(str, files)],
                              capture_output=True, text=True, timeout=60, check=False)
        assert sent.returncode == 0, sent.stderr
        eventually(lambda: _longterm_marked(session_factory), timeout=60)
        assert len(s3_peer.keys(bucket, prefix + "/")) == 4

        def only_in_longterm() -> list[Path]:
            shutil.rmtree(cache, ignore_errors=True)
            online = [configured.archive_root / p for p in _paths(session_factory)]
            if all(p.exists() for p in online):
                online = _remove_online(session_factory, configured)
            assert not any(p.exists() for p in online)
            return online

        def served_and_recalled(received: list[pydicom.Dataset], online: list[Path]) -> None:
            assert {ds.SOPInstanceUID: ds.pixel_array.tobytes() for ds in received} == originals
            if recall:
                assert all(p.exists() for p in online)
                assert _marks(session_factory) == (0, False)
            else:
                assert not any(p.exists() for p in online)
                assert _marks(session_factory) == (4, True)
                assert len([p for p in cache.rglob("*.dcm")]) == 4

        # C-GET
        online = only_in_longterm()
        got = tmp_path / "got"
        got.mkdir()
        done = subprocess.run(
            [require_tool("getscu"), "-S", "-aet", "GETSCU", "-aec", "BRIDGE", "-od", str(got),
             "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={STUDY_UID}",
             "127.0.0.1", str(bridge.dicom_port)],
            capture_output=True, timeout=60, check=False)
        assert done.returncode == 0, done.stderr.decode(errors="replace")
        served_and_recalled([pydicom.dcmread(p) for p in got.iterdir()], online)

        # C-MOVE to movescu's own storage SCP
        online = only_in_longterm()
        moved = tmp_path / "moved"
        moved.mkdir()
        done = subprocess.run(
            [require_tool("movescu"), "-S", "-aet", "MOVESCU", "-aec", "BRIDGE",
             "-aem", "MOVESCU", "--port", str(move_port), "-od", str(moved),
             "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={STUDY_UID}",
             "127.0.0.1", str(bridge.dicom_port)],
            capture_output=True, timeout=60, check=False)
        assert done.returncode == 0, done.stderr.decode(errors="replace")
        served_and_recalled([pydicom.dcmread(p) for p in moved.iterdir()], online)

        # WADO-RS
        online = only_in_longterm()
        with session_factory.begin() as session:
            token = create_token(session, role="integration", name="lt")
        with httpx.Client(base_url=f"http://127.0.0.1:{bridge.http_port}", timeout=60,
                          headers={"Authorization": f"Bearer {token}"}) as client:
            answer = client.get(f"/dicomweb/studies/{STUDY_UID}", headers={
                "Accept": 'multipart/related; type="application/dicom"; transfer-syntax=*'})
        assert answer.status_code == 200, answer.text
        parts = _wado_parts(answer.content, answer.headers["content-type"])
        served_and_recalled([pydicom.dcmread(pydicom.filebase.DicomBytesIO(p))
                             for p in parts], online)


def _paths(sessions: sessionmaker[Session]) -> list[str]:
    with sessions() as session:
        return list(session.scalars(select(Instance.path).order_by(Instance.id)))
