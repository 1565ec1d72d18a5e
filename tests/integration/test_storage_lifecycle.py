"""The storage lifecycle through the whole running bridge, with a real object store
(SeaweedFS) as the long-term tier: a modality stores studies (DCMTK storescu), the scheduled
migration copies and verifies them, online cleanup removes them by time and by capacity
(a small quota), and a study held only in long-term storage is still retrieved (WADO-RS
and C-GET) and recalled online.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import httpx
import pydicom
import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from bridge.config.settings import Settings
from bridge.services.auth.tokens import create_token
from bridge.store.archive_models import Instance, Study
from bridge.store.storage_models import InstanceCopy, StorageDeletion
from tests.conftest import require_tool
from tests.dicom_factories import write_series
from tests.hl7_harness import running_bridge
from tests.seaweed_peer import SeaweedPeer, s3_peer  # noqa: F401 (fixture)
from tests.waiting import eventually

pytestmark = pytest.mark.integration

UID = "1.2.826.0.1.3680043.10.1137.1.77"


def send_study(port: int, folder: Path, study_uid: str, count: int) -> list[Path]:
    files = write_series(folder, count, study_uid=study_uid, PatientID="LC-1",
                         PatientName="Lifecycle^Patient")
    sent = subprocess.run([require_tool("storescu"), "-aet", "CT_SCANNER_1", "-aec", "BRIDGE",
                           "127.0.0.1", str(port), *map(str, files)],
                          capture_output=True, text=True, timeout=60, check=False)
    assert sent.returncode == 0, sent.stderr
    return files


def longterm_marked(sessions: sessionmaker[Session], uids: list[str]) -> bool:
    with sessions() as session:
        marks = session.execute(select(Study.longterm_at).where(
            Study.study_instance_uid.in_(uids))).scalars().all()
    return len(marks) == len(uids) and all(m is not None for m in marks)


def online_paths(sessions: sessionmaker[Session], settings: Settings,
                 study_uid: str) -> list[Path]:
    with sessions() as session:
        paths = session.execute(select(Instance.path).join(
            Study, Study.id == Instance.study_id).where(
            Study.study_instance_uid == study_uid)).scalars().all()
    return [settings.archive_root / p for p in paths]


def lifecycle_settings(settings: Settings, peer: SeaweedPeer, bucket: str,
                       **overrides: object) -> Settings:
    return settings.model_copy(update={
        "longterm_url": f"s3://{bucket}/archive", "s3_endpoint_url": peer.endpoint_url,
        "study_stable_seconds": 0.5, "worker_poll_seconds": 0.2, "longterm_delay_seconds": 0,
        "longterm_poll_seconds": 0.3, "reconcile_unmatched": "queue", **overrides})


def admin_client(sessions: sessionmaker[Session], port: int) -> httpx.Client:
    with sessions.begin() as session:
        token = create_token(session, role="admin", name="lifecycle")
    return httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60,
                        headers={"Authorization": f"Bearer {token}"})


def test_migrated_then_cleaned_by_time_then_retrieved_from_longterm(
        settings: Settings, session_factory: sessionmaker[Session], tmp_path: Path,
        s3_peer: SeaweedPeer, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    for name, value in s3_peer.env().items():
        monkeypatch.setenv(name, value)
    bucket = s3_peer.new_bucket()
    configured = lifecycle_settings(settings, s3_peer, bucket, cleanup_after_days=0.0)
    uids = [f"{UID}.1", f"{UID}.2"]
    with running_bridge(configured) as bridge:
        for n, uid in enumerate(uids):
            send_study(bridge.dicom_port, tmp_path / f"s{n}", uid, 3)
        eventually(lambda: longterm_marked(session_factory, uids), timeout=60)

        # Every instance has exactly one verified copy, and the bucket holds those objects.
        with session_factory() as session:
            copies = session.execute(select(InstanceCopy)).scalars().all()
        assert len(copies) == 6 and all(c.verified_at is not None for c in copies)
        assert sorted(s3_peer.keys(bucket)) == sorted(c.key for c in copies)

        with admin_client(session_factory, bridge.http_port) as admin:
            dry = admin.post("/api/storage/cleanup").json()
            assert sorted(r["study_instance_uid"] for r in dry["removed"]) == uids
            assert all(p.exists() for p in online_paths(session_factory, configured, uids[0]))
            done = admin.post("/api/storage/cleanup", params={"dry_run": "false"}).json()
            assert sorted(r["study_instance_uid"] for r in done["removed"]) == uids
            assert {r["reason"] for r in done["removed"]} == {"time"}
            assert not any(p.exists() for p in online_paths(session_factory, configured,
                                                            uids[0]))
            summary = admin.get("/api/storage").json()
            totals = {t["tier"]: t for t in summary["tiers"] if t["modality"] == ""}
            assert (totals["online"]["instances"], totals["longterm"]["instances"]) == (0, 6)

            # WADO-RS of a study held only in long-term storage: served, and recalled online.
            response = admin.get(f"/dicomweb/studies/{uids[0]}",
                                 headers={"Accept": 'multipart/related; type="application/dicom"'
                                                    "; transfer-syntax=*"})
            assert response.status_code == 200, response.text
            assert response.content.count(b"DICM") == 3
            assert all(p.exists() for p in online_paths(session_factory, configured, uids[0]))

        # C-GET of the other one, with DCMTK getscu.
        out = tmp_path / "got"
        out.mkdir()
        got = subprocess.run(
            [require_tool("getscu"), "-S", "-aet", "VIEWER", "-aec", "BRIDGE", "-od", str(out),
             "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={uids[1]}",
             "127.0.0.1", str(bridge.dicom_port)],
            capture_output=True, text=True, timeout=120, check=False)
        assert got.returncode == 0, got.stderr
        received = [pydicom.dcmread(p) for p in out.iterdir()]
        assert len(received) == 3 and {d.StudyInstanceUID for d in received} == {uids[1]}
        assert all("PixelData" in d for d in received)

    with session_factory() as session:
        deletions = session.execute(select(StorageDeletion)).scalars().all()
    assert sorted((d.study_instance_uid, d.tier, d.reason) for d in deletions) == [
        (uids[0], "online", "time"), (uids[1], "online", "time")]


def test_capacity_cleanup_with_a_small_quota_keeps_what_is_not_copied(
        settings: Settings, session_factory: sessionmaker[Session], tmp_path: Path,
        s3_peer: SeaweedPeer, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    for name, value in s3_peer.env().items():
        monkeypatch.setenv(name, value)
    bucket = s3_peer.new_bucket()
    # The first two studies are copied; then the store "stops copying" (a long delay), so
    # the third has no long-term copy when the quota is exceeded.
    # Compression at migration is off: the quota arithmetic below needs equal studies.
    first = lifecycle_settings(settings, s3_peer, bucket, cleanup_after_days=None,
                               compression_enabled=False)
    uids = [f"{UID}.11", f"{UID}.12", f"{UID}.13"]
    with running_bridge(first) as bridge:
        for n, uid in enumerate(uids[:2]):
            send_study(bridge.dicom_port, tmp_path / f"c{n}", uid, 2)
            eventually(lambda uid=uid: longterm_marked(session_factory, [uid]), timeout=60)
    with session_factory() as session:
        two_studies = sum(session.execute(select(Instance.size)).scalars())
    # Three (nearly equal) studies in a quota of 3.3 studies: 91 % > the 80 % high mark;
    # without the oldest, 61 % < the 70 % low mark.
    quota = int(two_studies * 1.65)
    second = lifecycle_settings(settings, s3_peer, bucket, cleanup_after_days=None,
                                longterm_delay_seconds=86400.0, online_quota_bytes=quota,
                                cleanup_high_water_percent=80, cleanup_low_water_percent=70,
                                cleanup_capacity_routine="oldest_first",
                                compression_enabled=False)
    with running_bridge(second) as bridge:
        send_study(bridge.dicom_port, tmp_path / "c2", uids[2], 2)
        eventually(lambda: _stable(session_factory, uids[2]))
        with admin_client(session_factory, bridge.http_port) as admin:
            report = admin.post("/api/storage/cleanup", params={"dry_run": "false"}).json()
    removed = [r["study_instance_uid"] for r in report["removed"]]
    # Oldest first, until below the low mark: after the first it stops.
    assert removed == [uids[0]]
    assert report["usage_after"] <= report["low_mark_bytes"]
    assert all(p.exists() for p in online_paths(session_factory, second, uids[1]))
    assert all(p.exists() for p in online_paths(session_factory, second, uids[2]))
    assert not any(p.exists() for p in online_paths(session_factory, second, uids[0]))


def _stable(sessions: sessionmaker[Session], uid: str) -> bool:
    with sessions() as session:
        return session.execute(select(Study.state).where(
            Study.study_instance_uid == uid)).scalar_one_or_none() == "stable"


def test_deleting_a_study_removes_its_longterm_copies_by_a_durable_job(
        settings: Settings, session_factory: sessionmaker[Session], tmp_path: Path,
        s3_peer: SeaweedPeer, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    for name, value in s3_peer.env().items():
        monkeypatch.setenv(name, value)
    bucket = s3_peer.new_bucket()
    configured = lifecycle_settings(settings, s3_peer, bucket, cleanup_after_days=None,
                                    forward_retry_base_seconds=0.2)
    uids = [f"{UID}.21", f"{UID}.22"]
    with running_bridge(configured) as bridge:
        for n, uid in enumerate(uids):
            send_study(bridge.dicom_port, tmp_path / f"d{n}", uid, 2)
        eventually(lambda: longterm_marked(session_factory, uids), timeout=60)
        assert len(s3_peer.keys(bucket)) == 4
        with admin_client(session_factory, bridge.http_port) as admin:
            rejected = admin.post(f"/api/reconciliation/{uids[0]}/reject",
                                  json={"reason": "sent to the wrong archive"})
            assert rejected.status_code == 204, rejected.text
        kept = {c for c in s3_peer.keys(bucket) if uids[1] in c}
        eventually(lambda: set(s3_peer.keys(bucket)) == kept or None, timeout=30)
        assert len(kept) == 2
        with admin_client(session_factory, bridge.http_port) as admin:
            deletions = admin.get("/api/storage/deletions").json()
    assert sorted((d["tier"], d["reason"]) for d in deletions
                  if d["study_instance_uid"] == uids[0]) == [("longterm", "operator"),
                                                              ("online", "operator")]
