"""The long-term tier with real stores (a folder, and SeaweedFS over S3), on SQLite and
PostgreSQL: the migration (verified copies, marks, idempotent reruns), the store down, a
kill -9 mid-migration, reads from the nearest intact copy, recall.

Studies come from :mod:`tests.archive_factories` (real Part 10 files and index rows) made
stable a while ago, so the migration takes them at once.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session, sessionmaker

from bridge.config.settings import Settings
from bridge.services.archive.store import ArchiveStore, Arrival
from bridge.storage.blobs.factory import open_longterm_store
from bridge.storage.blobs.protocol import BlobStore
from bridge.storage.migration import LongtermMigration
from bridge.storage.reader import InstanceReader, NoIntactCopy, recall_study
from bridge.store.archive_models import Instance, Study
from bridge.store.models import utcnow
from bridge.store.storage_models import InstanceCopy
from tests.archive_factories import ArchivedStudy, SeriesPlan, Source, archive_study
from tests.dicom_factories import ct_slice
from tests.seaweed_peer import SeaweedPeer, s3_peer  # noqa: F401 (fixture)

pytestmark = pytest.mark.integration

PATIENT_NAME = "Коваленко^Ірина"


@dataclass
class Tier:
    kind: str
    settings: Settings
    store: BlobStore
    peer: SeaweedPeer | None = None
    bucket: str = ""

    def stored_keys(self) -> set[str]:
        return set(self.store.keys())

    def corrupt(self, key: str) -> None:
        """Replace the stored object's bytes (same size) behind the bridge's back."""
        out = io.BytesIO()
        self.store.fetch(key, out)
        data = bytearray(out.getvalue())
        data[-1] ^= 0xFF
        if self.peer is not None:
            self.peer.client().put_object(Bucket=self.bucket, Key=key, Body=bytes(data))
        else:
            (Path(self.settings.longterm_url.removeprefix("file://")) / key).write_bytes(data)


@pytest.fixture(params=["file", "s3"])
def tier(request: pytest.FixtureRequest, settings: Settings, tmp_path: Path,
         monkeypatch: pytest.MonkeyPatch) -> Tier:
    if request.param == "file":
        root = tmp_path / "longterm"
        root.mkdir()
        configured = settings.model_copy(update={"longterm_url": f"file://{root}"})
        store = open_longterm_store(configured)
        assert store is not None
        return Tier("file", configured, store)
    peer: SeaweedPeer = request.getfixturevalue("s3_peer")
    for name, value in peer.env().items():
        monkeypatch.setenv(name, value)
    bucket, prefix = peer.new_prefix()
    configured = settings.model_copy(update={
        "longterm_url": f"s3://{bucket}/{prefix}", "s3_endpoint_url": peer.endpoint_url})
    store = open_longterm_store(configured)
    assert store is not None
    return Tier("s3", configured, store, peer, bucket)


def stable_study(sessions: sessionmaker[Session], settings: Settings, *, instances: int = 3,
                 stable_ago: timedelta = timedelta(days=2)) -> ArchivedStudy:
    with sessions.begin() as session:
        study = archive_study(session, settings.archive_root,
                              source=Source(name=PATIENT_NAME),
                              series=(SeriesPlan(instances=instances),))
        session.execute(update(Study).where(Study.id == study.pk).values(
            state="stable", stable_at=utcnow() - stable_ago))
    return study


def copies(sessions: sessionmaker[Session], study_pk: int | None = None) -> list[InstanceCopy]:
    with sessions() as session:
        query = select(InstanceCopy).order_by(InstanceCopy.instance_id)
        if study_pk is not None:
            query = query.where(InstanceCopy.study_id == study_pk)
        return list(session.scalars(query))


def study_row(sessions: sessionmaker[Session], pk: int) -> Study:
    with sessions() as session:
        study = session.get(Study, pk)
        assert study is not None
        return study


def metric(registry: CollectorRegistry, name: str, **labels: str) -> float:
    return registry.get_sample_value(name, labels) or 0.0


def remove_online(sessions: sessionmaker[Session], settings: Settings,
                  study: ArchivedStudy) -> None:
    """What online cleanup does: marks, then files."""
    with sessions.begin() as session:
        now = utcnow()
        session.execute(update(Instance).where(Instance.study_id == study.pk)
                        .values(online_removed_at=now))
        session.execute(update(Study).where(Study.id == study.pk)
                        .values(online_removed_at=now))
    for instance in study.instances:
        instance.path.unlink()


# --- the migration ----------------------------------------------------------------------


def test_migration_copies_verifies_and_marks_due_studies_only(
        tier: Tier, session_factory: sessionmaker[Session]) -> None:
    s = tier.settings
    due = stable_study(session_factory, s, instances=4)
    recent = stable_study(session_factory, s, instances=1, stable_ago=timedelta(minutes=5))
    registry = CollectorRegistry()
    migration = LongtermMigration(s, session_factory, tier.store, metrics=registry)

    report = migration.run_once()

    assert (report.studies_done, report.instances_copied, report.failures) == (1, 4, 0)
    rows = copies(session_factory)
    assert [r.instance_id for r in rows] == [i.pk for i in due.instances]
    assert all(r.verified_at is not None and r.failed_at is None for r in rows)
    assert {(r.backend, r.location) for r in rows} == {(tier.kind, s.longterm_url)}
    with session_factory() as session:
        expected = {row.id: row for row in session.execute(
            select(Instance.id, Instance.path, Instance.sha256, Instance.size)
            .where(Instance.study_id == due.pk))}
    for row in rows:
        out = io.BytesIO()
        assert tier.store.fetch(row.key, out) == expected[row.instance_id].sha256
        assert out.getvalue() == (s.archive_root / expected[row.instance_id].path).read_bytes()
        assert (row.sha256, row.size) == (expected[row.instance_id].sha256,
                                          expected[row.instance_id].size)
    assert tier.stored_keys() == {r.key for r in rows}
    assert report.bytes_copied == sum(r.size for r in rows)
    assert study_row(session_factory, due.pk).longterm_at is not None
    assert study_row(session_factory, recent.pk).longterm_at is None
    assert metric(registry, "bridge_longterm_copied_instances_total") == 4

    # A rerun has nothing to do; "migrate now" takes the recent study too.
    again = migration.run_once()
    assert (again.studies_done, again.instances_copied) == (0, 0)
    now = migration.run_once(ignore_delay=True)
    assert (now.studies_done, now.instances_copied) == (1, 1)
    assert len(copies(session_factory)) == 5
    migration.close()


def test_a_late_object_unmarks_the_study_and_only_it_is_copied_next(
        tier: Tier, session_factory: sessionmaker[Session], tmp_path: Path) -> None:
    s = tier.settings
    study = stable_study(session_factory, s, instances=2)
    migration = LongtermMigration(s, session_factory, tier.store)
    assert migration.run_once().studies_done == 1

    late = ct_slice(study_uid=study.study_instance_uid, PatientID="SRC1",
                    PatientName=PATIENT_NAME, SpecificCharacterSet="ISO_IR 192")
    late.save_as(tmp_path / "late.dcm", enforce_file_format=True)
    ArchiveStore(s, session_factory).accept(Arrival(tmp_path / "late.dcm"))
    row = study_row(session_factory, study.pk)
    assert (row.state, row.longterm_at) == ("receiving", None)

    with session_factory.begin() as session:  # stable again, a while ago
        session.execute(update(Study).where(Study.id == study.pk).values(
            state="stable", stable_at=utcnow() - timedelta(days=2)))
    report = migration.run_once()
    assert (report.studies_done, report.instances_copied) == (1, 1)
    assert len(copies(session_factory, study.pk)) == 3
    migration.close()


def test_store_down_leaves_the_study_unmarked_and_a_later_run_completes(
        tier: Tier, session_factory: sessionmaker[Session], tmp_path: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    s = tier.settings
    first = stable_study(session_factory, s, instances=2, stable_ago=timedelta(days=3))
    second = stable_study(session_factory, s, instances=3, stable_ago=timedelta(days=2))
    registry = CollectorRegistry()
    online = {i.path: i.path.read_bytes() for i in first.instances + second.instances}
    moved = tmp_path / "longterm-away"

    def store_goes_down(_session: Session, study_id: int) -> None:
        if study_id == second.pk:  # mid-run: after the first study, before the second
            if tier.peer is not None:
                tier.peer.stop()
            else:
                (tmp_path / "longterm").rename(moved)

    migration = LongtermMigration(s, session_factory, tier.store, metrics=registry,
                                  before_copy=[store_goes_down])
    try:
        with caplog.at_level(logging.WARNING, logger="bridge.storage"):
            report = migration.run_once()
    finally:
        if tier.peer is not None:
            tier.peer.start()
        else:
            moved.rename(tmp_path / "longterm")
    assert report.store_unavailable
    assert (report.studies_done, report.studies_pending) == (1, 1)
    assert study_row(session_factory, first.pk).longterm_at is not None
    assert study_row(session_factory, second.pk).longterm_at is None
    assert copies(session_factory, second.pk) == []  # nothing marked
    assert all(path.read_bytes() == data for path, data in online.items())  # nor deleted
    assert metric(registry, "bridge_longterm_failures_total", reason="unavailable") == 1
    assert "long-term store unavailable" in caplog.text
    assert "Коваленко" not in caplog.text

    # Down from the start: the run stops at once, again nothing is marked.
    if tier.peer is not None:
        tier.peer.stop()
        try:
            assert migration.run_once().store_unavailable
        finally:
            tier.peer.start()
    later = LongtermMigration(s, session_factory, tier.store).run_once()
    assert (later.studies_done, later.instances_copied, later.failures) == (1, 3, 0)
    assert study_row(session_factory, second.pk).longterm_at is not None
    migration.close()


_MIGRATE = """
import sys
from bridge.config.settings import load_settings
from bridge.storage.blobs.factory import open_longterm_store
from bridge.storage.migration import LongtermMigration
from bridge.store.db import make_engine, make_session_factory
settings = load_settings()
sessions = make_session_factory(make_engine(settings.database_url))
print("started", flush=True)
LongtermMigration(settings, sessions, open_longterm_store(settings), workers=2).run_once()
print("finished", flush=True)
"""


def test_kill_9_during_migration_then_a_rerun_completes_without_loss_or_duplicates(
        tier: Tier, session_factory: sessionmaker[Session], tmp_path: Path) -> None:
    s = tier.settings
    studies = [stable_study(session_factory, s, instances=6) for _ in range(25)]
    instances = [i for study in studies for i in study.instances]
    env = {**os.environ, "BRIDGE_DATA_DIR": str(s.data_dir),
           "BRIDGE_DATABASE_URL": s.database_url, "BRIDGE_ARCHIVE_DIR": str(s.archive_root),
           "BRIDGE_LONGTERM_URL": s.longterm_url, "BRIDGE_S3_ENDPOINT_URL": s.s3_endpoint_url}
    process = subprocess.Popen([sys.executable, "-c", _MIGRATE], env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        # Killed once some copies are recorded, while others are being uploaded.
        while len(copies(session_factory)) < 12:
            assert process.poll() is None, process.stderr.read() if process.stderr else ""
            assert time.monotonic() < deadline, "the migration did not get going"
            time.sleep(0.01)
        process.send_signal(signal.SIGKILL)
        process.wait(10)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)
    assert process.returncode == -signal.SIGKILL
    recorded = len(copies(session_factory))
    assert 12 <= recorded < len(instances), "the kill did not land mid-way"

    report = LongtermMigration(s, session_factory, tier.store).run_once()
    assert report.failures == 0

    rows = copies(session_factory)
    assert sorted(r.instance_id for r in rows) == sorted(i.pk for i in instances)  # one each
    assert all(r.verified_at is not None and r.failed_at is None for r in rows)
    expected_keys = {tier.store.key_for(i.path.relative_to(s.archive_root).as_posix())
                     for i in instances}
    assert {r.key for r in rows} == expected_keys
    assert tier.stored_keys() == expected_keys
    if tier.kind == "file":  # nothing else left in the folder (no half-written copies)
        root = Path(s.longterm_url.removeprefix("file://"))
        assert {p.relative_to(root).as_posix() for p in root.rglob("*")
                if p.is_file()} == expected_keys
    for instance in instances:
        key = tier.store.key_for(instance.path.relative_to(s.archive_root).as_posix())
        assert tier.store.sha256(key) == hashlib.sha256(instance.path.read_bytes()).hexdigest()
    with session_factory() as session:
        marked = session.scalar(select(func.count()).select_from(Study).where(
            Study.longterm_at.is_not(None)))
    assert marked == len(studies)


# --- reading from the nearest copy ------------------------------------------------------


def test_corrupt_or_missing_online_files_are_served_from_longterm_and_reported(
        tier: Tier, session_factory: sessionmaker[Session],
        caplog: pytest.LogCaptureFixture) -> None:
    s = tier.settings
    study = stable_study(session_factory, s, instances=3)
    LongtermMigration(s, session_factory, tier.store).run_once()
    _good, corrupt, missing = study.instances
    originals = {i.pk: i.path.read_bytes() for i in study.instances}
    data = bytearray(originals[corrupt.pk])
    data[200] ^= 0x01  # one flipped bit, same size
    corrupt.path.write_bytes(data)
    missing.path.unlink()  # gone without cleanup knowing
    registry = CollectorRegistry()
    reader = InstanceReader(s, session_factory, tier.store, metrics=registry)
    rows = _instance_rows(session_factory, study.pk)

    with caplog.at_level(logging.WARNING, logger="bridge.storage"):
        paths = reader.all_local_paths(rows)

    assert paths == [i.path for i in study.instances]  # recalled in place (the default)
    assert all(i.path.read_bytes() == originals[i.pk] for i in study.instances)
    assert metric(registry, "bridge_storage_bad_copies_total", tier="online",
                  problem="corrupt") == 1
    assert metric(registry, "bridge_storage_bad_copies_total", tier="online",
                  problem="missing") == 1
    assert metric(registry, "bridge_storage_longterm_reads_total", mode="recall") == 2
    assert f"instance {corrupt.pk} (study {study.pk}): online file corrupt" in caplog.text
    assert f"instance {missing.pk} (study {study.pk}): online file missing" in caplog.text
    assert "Коваленко" not in caplog.text and PATIENT_NAME not in caplog.text
    reader.close()


def test_without_recall_longterm_reads_go_to_a_cache_and_leave_the_marks(
        tier: Tier, session_factory: sessionmaker[Session]) -> None:
    s = tier.settings.model_copy(update={"recall_on_retrieve": False})
    study = stable_study(session_factory, s, instances=2)
    originals = {i.pk: i.path.read_bytes() for i in study.instances}
    LongtermMigration(s, session_factory, tier.store).run_once()
    remove_online(session_factory, s, study)
    registry = CollectorRegistry()
    reader = InstanceReader(s, session_factory, tier.store, metrics=registry)

    paths = reader.all_local_paths(_instance_rows(session_factory, study.pk))

    assert all(p.is_relative_to(s.data_dir / "longterm-cache") for p in paths)
    assert [p.read_bytes() for p in paths] == [originals[i.pk] for i in study.instances]
    assert not any(i.path.exists() for i in study.instances)
    assert study_row(session_factory, study.pk).online_removed_at is not None
    # Removed by cleanup on purpose: not reported as a fault.
    assert metric(registry, "bridge_storage_bad_copies_total", tier="online",
                  problem="missing") == 0
    # A second read is served from the cache, without the store.
    if tier.peer is not None:
        tier.peer.stop()
        try:
            assert reader.all_local_paths(_instance_rows(session_factory, study.pk)) == paths
        finally:
            tier.peer.start()
    assert metric(registry, "bridge_storage_longterm_reads_total", mode="cache") == 2
    os.utime(paths[0], (0, 0))
    assert reader.prune_cache() == 1
    reader.close()


def test_a_corrupt_longterm_copy_is_reported_and_never_used(
        tier: Tier, session_factory: sessionmaker[Session],
        caplog: pytest.LogCaptureFixture) -> None:
    s = tier.settings
    study = stable_study(session_factory, s, instances=2)
    LongtermMigration(s, session_factory, tier.store).run_once()
    bad_row = copies(session_factory, study.pk)[0]
    tier.corrupt(bad_row.key)
    remove_online(session_factory, s, study)
    registry = CollectorRegistry()
    reader = InstanceReader(s, session_factory, tier.store, metrics=registry)
    rows = _instance_rows(session_factory, study.pk)

    with caplog.at_level(logging.WARNING, logger="bridge.storage"), \
            pytest.raises(NoIntactCopy):
        reader.local_path(rows[0])

    failed = copies(session_factory, study.pk)[0]
    assert failed.failed_at is not None and failed.verified_at is None
    assert "checksum mismatch" in (failed.failure or "")
    assert not study.instances[0].path.exists()  # the bad bytes were not put online
    assert study_row(session_factory, study.pk).longterm_at is None  # no longer whole
    assert metric(registry, "bridge_storage_bad_copies_total", tier="longterm",
                  problem="corrupt") == 1
    assert "long-term copy corrupt" in caplog.text
    # Not used again, not even fetched: no intact copy is left.
    with pytest.raises(NoIntactCopy):
        reader.local_path(rows[0])
    assert metric(registry, "bridge_storage_bad_copies_total", tier="longterm",
                  problem="corrupt") == 1
    # The other instance is still served.
    assert reader.local_path(rows[1]) == study.instances[1].path
    reader.close()


def test_an_operator_recall_brings_a_study_back_online(
        tier: Tier, session_factory: sessionmaker[Session]) -> None:
    s = tier.settings
    study = stable_study(session_factory, s, instances=3)
    originals = {i.pk: i.path.read_bytes() for i in study.instances}
    LongtermMigration(s, session_factory, tier.store).run_once()
    remove_online(session_factory, s, study)

    assert recall_study(s, session_factory, study.study_instance_uid) == 3

    assert all(i.path.read_bytes() == originals[i.pk] for i in study.instances)
    with session_factory() as session:
        assert session.scalar(select(func.count()).select_from(Instance).where(
            Instance.study_id == study.pk, Instance.online_removed_at.is_not(None))) == 0
    assert study_row(session_factory, study.pk).online_removed_at is None
    assert recall_study(s, session_factory, study.pk) == 0  # nothing left to recall


def _instance_rows(sessions: sessionmaker[Session], study_pk: int) -> list[Instance]:
    with sessions() as session:
        return list(session.scalars(select(Instance).where(Instance.study_id == study_pk)
                                    .order_by(Instance.id)))

