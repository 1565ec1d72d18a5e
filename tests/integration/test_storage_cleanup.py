"""Online cleanup and retention, on SQLite and PostgreSQL.

The long-term copies here are real files in a ``file://`` tier with their ``instance_copies``
rows, made by :func:`copy_to_longterm` the way a verified migration leaves them; the
migration itself (and SeaweedFS) is covered by the tier tests. What these tests pin down is
cleanup's one invariant (no online file goes without a verified long-term copy), its rules
and routines, the dry run, the deletions record and retention.
"""

from __future__ import annotations

import hashlib
import shutil
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session, sessionmaker

from bridge.config.settings import Settings, load_settings
from bridge.errors import Conflict
from bridge.services.archive.admin import LONGTERM_DELETE_QUEUE, delete_study
from bridge.storage.cleanup import OnlineCleanup, StoreUnavailable, last_cleanup
from bridge.storage.retention import retention_policy
from bridge.store.archive_models import Instance, Job, Study
from bridge.store.models import Patient, table_of, utcnow
from bridge.store.storage_models import LONGTERM, InstanceCopy, StorageDeletion
from tests.archive_factories import ArchivedStudy, SeriesPlan, archive_study

S = table_of(Study)
I = table_of(Instance)  # noqa: E741
C = table_of(InstanceCopy)
D = table_of(StorageDeletion)


def tier_settings(tmp_path: Path, database_url: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "data_dir": tmp_path / "var", "database_url": database_url, "mllp_port": 0,
        "dicom_port": 0, "http_port": 0, "longterm_url": f"file://{tmp_path / 'longterm'}",
        "cleanup_after_days": 30.0}
    values.update(overrides)
    return load_settings(**values)


def stored_study(session: Session, settings: Settings, *, instances: int = 2,
                 modality: str = "CT", received_days_ago: float = 0,
                 patient: Patient | None = None) -> ArchivedStudy:
    study = archive_study(session, settings.archive_root,
                          series=(SeriesPlan(modality=modality, instances=instances),),
                          patient=patient)
    received = utcnow() - timedelta(days=received_days_ago)
    session.execute(update(S).where(S.c.id == study.pk).values(
        state="stable", stable_at=received, created_at=received))
    session.commit()
    return study


def copy_to_longterm(session: Session, settings: Settings, study: ArchivedStudy, *,
                     verified_days_ago: float | None = 40, failed: bool = False) -> None:
    """Copy the study's files to the file:// tier and record the copies (verified when
    ``verified_days_ago`` is given, and the study's ``longterm_at`` with it)."""
    root = Path(settings.longterm_url.removeprefix("file://"))
    verified = (utcnow() - timedelta(days=verified_days_ago)
                if verified_days_ago is not None else None)
    for row in session.execute(select(I.c.id, I.c.path).where(I.c.study_id == study.pk)):
        target = root / row.path
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(settings.archive_root / row.path, target)
        data = target.read_bytes()
        session.execute(C.insert().values(
            instance_id=row.id, study_id=study.pk, tier=LONGTERM, backend="file",
            location=settings.longterm_url, key=row.path, size=len(data),
            sha256=hashlib.sha256(data).hexdigest(), created_at=utcnow(), verified_at=verified,
            failed_at=utcnow() if failed else None, failure="corrupt" if failed else None))
    session.execute(update(S).where(S.c.id == study.pk).values(longterm_at=verified))
    session.commit()


def online_files(study: ArchivedStudy) -> list[bool]:
    return [i.path.exists() for i in study.instances]


def removed_marks(session: Session, study: ArchivedStudy) -> list[datetime | None]:
    return list(session.execute(select(I.c.online_removed_at).where(
        I.c.study_id == study.pk).order_by(I.c.id)).scalars())


@pytest.fixture
def sessions(session_factory: sessionmaker[Session]) -> sessionmaker[Session]:
    return session_factory


def test_without_a_longterm_tier_nothing_is_removed(tmp_path: Path, database_url: str,
                                                    sessions: sessionmaker[Session]) -> None:
    settings = tier_settings(tmp_path, database_url, longterm_url="", online_quota_bytes=1)
    with sessions() as session:
        study = stored_study(session, settings, received_days_ago=400)
    report = OnlineCleanup(settings, sessions).run()
    assert report.removed == [] and "no long-term tier" in report.note
    assert all(online_files(study))


def test_time_rule_removes_only_studies_copied_long_enough_ago(
        tmp_path: Path, database_url: str, sessions: sessionmaker[Session]) -> None:
    settings = tier_settings(tmp_path, database_url)
    with sessions() as session:
        old = stored_study(session, settings)
        copy_to_longterm(session, settings, old, verified_days_ago=40)
        recent = stored_study(session, settings)
        copy_to_longterm(session, settings, recent, verified_days_ago=5)
        uncopied = stored_study(session, settings, received_days_ago=400)
    old_size = _size(old)

    report = OnlineCleanup(settings, sessions).run(actor="test")

    assert [r.study_instance_uid for r in report.removed] == [old.study_instance_uid]
    assert report.removed[0].reason == "time" and report.removed[0].instances == 2
    assert online_files(old) == [False, False]
    assert all(online_files(recent)) and all(online_files(uncopied))
    with sessions() as session:
        assert all(mark is not None for mark in removed_marks(session, old))
        assert removed_marks(session, recent) == [None, None]
        assert session.execute(select(S.c.online_removed_at).where(
            S.c.id == old.pk)).scalar_one() is not None
        deletion = session.execute(select(D)).one()
        assert (deletion.study_instance_uid, deletion.tier, deletion.reason,
                deletion.instances, deletion.actor) == (
            old.study_instance_uid, "online", "time", 2, "test")
        assert deletion.bytes == old_size
        assert last_cleanup(session)["studies"] == 1  # type: ignore[index]


def test_an_instance_without_a_verified_copy_keeps_its_whole_study(
        tmp_path: Path, database_url: str, sessions: sessionmaker[Session]) -> None:
    settings = tier_settings(tmp_path, database_url)
    with sessions() as session:
        study = stored_study(session, settings, instances=3)
        copy_to_longterm(session, settings, study, verified_days_ago=60)
        # One copy later found corrupt by a read: it must not count as a copy any more.
        first = study.instances[0].pk
        session.execute(update(C).where(C.c.instance_id == first).values(
            failed_at=utcnow(), failure="checksum mismatch"))
        session.commit()

    report = OnlineCleanup(settings, sessions).run()

    assert report.removed == []
    assert report.kept == [(study.study_instance_uid,
                            "1 instance(s) without a verified copy")]
    assert all(online_files(study))
    with sessions() as session:
        assert session.execute(select(func.count()).select_from(D)).scalar_one() == 0


def test_a_copy_of_an_older_representation_does_not_count(
        tmp_path: Path, database_url: str, sessions: sessionmaker[Session]) -> None:
    """An instance compressed after its copy was made names new bytes: its copy (of the
    original encoding) is not a copy of what the index serves until the migration re-makes
    it, so the online file stays."""
    settings = tier_settings(tmp_path, database_url)
    with sessions() as session:
        study = stored_study(session, settings)
        copy_to_longterm(session, settings, study, verified_days_ago=60)
        session.execute(update(I).where(I.c.id == study.instances[0].pk).values(
            sha256="0" * 64))
        session.commit()

    report = OnlineCleanup(settings, sessions).run()

    assert report.removed == [] and all(online_files(study))


def test_dry_run_lists_and_removes_nothing(tmp_path: Path, database_url: str,
                                           sessions: sessionmaker[Session]) -> None:
    settings = tier_settings(tmp_path, database_url)
    with sessions() as session:
        study = stored_study(session, settings)
        copy_to_longterm(session, settings, study, verified_days_ago=40)

    report = OnlineCleanup(settings, sessions).run(dry_run=True)

    assert [r.study_instance_uid for r in report.removed] == [study.study_instance_uid]
    assert report.usage_after < report.usage_before or settings.online_quota_bytes == 0
    assert all(online_files(study))
    with sessions() as session:
        assert removed_marks(session, study) == [None, None]
        assert session.execute(select(func.count()).select_from(D)).scalar_one() == 0
        assert last_cleanup(session) is None


def _quota_settings(tmp_path: Path, database_url: str, studies: list[ArchivedStudy],
                    routine: str, **extra: Any) -> Settings:
    # The quota is exactly what is stored (100 % > the 90 % high mark); the low mark at 55 %
    # is reached once about half of (nearly) equal studies are gone.
    quota = sum(_size(s) for s in studies)
    return tier_settings(tmp_path, database_url, cleanup_after_days=None,
                         online_quota_bytes=quota, cleanup_high_water_percent=90,
                         cleanup_low_water_percent=55, cleanup_capacity_routine=routine,
                         **extra)


def _size(study: ArchivedStudy) -> int:
    return sum(i.path.stat().st_size for i in study.instances)


def test_capacity_oldest_first_stops_below_the_low_mark(
        tmp_path: Path, database_url: str, sessions: sessionmaker[Session]) -> None:
    base = tier_settings(tmp_path, database_url)
    with sessions() as session:
        studies = [stored_study(session, base, received_days_ago=days)
                   for days in (10, 40, 20, 30)]
        for study in studies:
            copy_to_longterm(session, base, study, verified_days_ago=1)
    settings = _quota_settings(tmp_path, database_url, studies, "oldest_first")

    report = OnlineCleanup(settings, sessions).run()

    # 100 % used > 90 %: the two oldest go (40 and 30 days), leaving about 50 % < 55 %.
    assert [r.study_instance_uid for r in report.removed] == [
        studies[1].study_instance_uid, studies[3].study_instance_uid]
    assert {r.reason for r in report.removed} == {"capacity:oldest_first"}
    assert report.usage_after <= report.low_mark_bytes and not report.short_of_low_mark
    assert all(online_files(studies[0])) and all(online_files(studies[2]))


def test_capacity_never_removes_uncopied_studies_and_says_so(
        tmp_path: Path, database_url: str, sessions: sessionmaker[Session]) -> None:
    base = tier_settings(tmp_path, database_url)
    with sessions() as session:
        copied = stored_study(session, base, received_days_ago=5)
        copy_to_longterm(session, base, copied, verified_days_ago=1)
        uncopied = [stored_study(session, base, received_days_ago=100) for _ in range(3)]
    settings = _quota_settings(tmp_path, database_url, [copied, *uncopied], "oldest_first")

    report = OnlineCleanup(settings, sessions).run()

    assert [r.study_instance_uid for r in report.removed] == [copied.study_instance_uid]
    assert report.short_of_low_mark
    assert all(all(online_files(s)) for s in uncopied)


@pytest.mark.parametrize("routine", ["copied", "older_than"])
def test_capacity_routines_copied_and_older_than(
        routine: str, tmp_path: Path, database_url: str,
        sessions: sessionmaker[Session]) -> None:
    base = tier_settings(tmp_path, database_url)
    with sessions() as session:
        young = stored_study(session, base, received_days_ago=2)
        old = [stored_study(session, base, received_days_ago=d) for d in (100, 200)]
        for study in (young, *old):
            copy_to_longterm(session, base, study, verified_days_ago=1)
        never = stored_study(session, base, received_days_ago=300)  # never copied
    settings = _quota_settings(tmp_path, database_url, [young, *old, never], routine,
                               cleanup_older_than_days=90)

    report = OnlineCleanup(settings, sessions).run()

    removed = {r.study_instance_uid for r in report.removed}
    expected = {s.study_instance_uid for s in old}
    if routine == "copied":  # every copied study, whatever its age
        expected.add(young.study_instance_uid)
    assert removed == expected
    assert all(online_files(young)) == (routine == "older_than")


def test_below_the_high_mark_capacity_cleanup_does_nothing(
        tmp_path: Path, database_url: str, sessions: sessionmaker[Session]) -> None:
    base = tier_settings(tmp_path, database_url)
    with sessions() as session:
        study = stored_study(session, base, received_days_ago=100)
        copy_to_longterm(session, base, study, verified_days_ago=1)
    settings = tier_settings(tmp_path, database_url, cleanup_after_days=None,
                             online_quota_bytes=_size(study) * 10)
    report = OnlineCleanup(settings, sessions).run()
    assert report.removed == [] and all(online_files(study))


def test_a_copy_missing_on_the_store_keeps_the_study(
        tmp_path: Path, database_url: str, sessions: sessionmaker[Session]) -> None:
    settings = tier_settings(tmp_path, database_url)
    root = Path(settings.longterm_url.removeprefix("file://"))
    with sessions() as session:
        study = stored_study(session, settings)
        copy_to_longterm(session, settings, study, verified_days_ago=40)
    gone = study.instances[1]
    (root / gone.path.relative_to(settings.archive_root)).unlink()

    def probe(key: str, size: int) -> bool:
        path = root / key
        return path.is_file() and path.stat().st_size == size

    report = OnlineCleanup(settings, sessions, probe=probe).run()

    assert report.removed == []
    assert report.kept == [(study.study_instance_uid,
                            "a long-term copy is missing on the store")]
    assert all(online_files(study))


def test_an_unreachable_store_stops_cleanup(tmp_path: Path, database_url: str,
                                           sessions: sessionmaker[Session]) -> None:
    settings = tier_settings(tmp_path, database_url)
    with sessions() as session:
        studies = [stored_study(session, settings) for _ in range(2)]
        for study in studies:
            copy_to_longterm(session, settings, study, verified_days_ago=40)

    def probe(key: str, size: int) -> bool:
        raise ConnectionError("store down")

    report = OnlineCleanup(settings, sessions, probe=probe).run()

    assert report.removed == [] and report.note.startswith("stopped")
    assert all(all(online_files(s)) for s in studies)
    assert issubclass(StoreUnavailable, Exception)


# -- retention and operator deletion ---------------------------------------------------------


def _matched_study(session: Session, settings: Settings, modality: str) -> ArchivedStudy:
    patient = Patient(name="Retained^Patient")
    session.add(patient)
    session.flush()
    return stored_study(session, settings, modality=modality, patient=patient)


def test_retention_refuses_deleting_a_reconciled_study_unless_overridden(
        tmp_path: Path, database_url: str, sessions: sessionmaker[Session]) -> None:
    settings = tier_settings(tmp_path, database_url)
    policy = retention_policy(1095, {"MG": 3650})
    with sessions() as session:
        study = _matched_study(session, settings, "MG")
        copy_to_longterm(session, settings, study, verified_days_ago=1)
    with sessions() as session, pytest.raises(Conflict, match="retention until"):
        delete_study(session, study_uid=study.study_instance_uid, actor="t", reason="x",
                     retention=policy)
    with sessions() as session:
        paths = delete_study(session, study_uid=study.study_instance_uid, actor="admin",
                             reason="wrong patient", retention=policy, override_retention=True)
        session.commit()
        assert sorted(paths) == sorted(
            str(i.path.relative_to(settings.archive_root)) for i in study.instances)
        # The long-term copies go by a durable job; both tiers' removals are recorded.
        job = session.execute(select(Job).where(Job.queue == LONGTERM_DELETE_QUEUE)).scalar_one()
        assert job.payload["location"] == settings.longterm_url
        assert len(job.payload["keys"]) == 2  # type: ignore[arg-type]
        tiers = session.execute(select(D.c.tier, D.c.reason, D.c.study_id)).all()
        assert sorted(tiers) == [("longterm", "operator", None), ("online", "operator", None)]
        assert session.execute(select(func.count()).select_from(C)).scalar_one() == 0


def test_retention_per_modality() -> None:
    policy = retention_policy(1095, {"mg": 3650})
    received = datetime(2026, 11, 22)
    assert policy.days_for("CT") == 1095
    assert policy.days_for("CT\\MG") == 3650
    assert policy.kept_until(modalities="CT", study_date="20200101",
                             received_at=received).isoformat() == "2022-12-31"
    # An unusable StudyDate falls back to when the archive received the study.
    assert policy.kept_until(modalities="CT", study_date="2020",
                             received_at=received).isoformat() == "2029-11-21"
    assert not policy.holds(modalities="CT", study_date="20200101", received_at=received,
                            now=datetime(2026, 1, 1).astimezone())


# -- the operators' API and CLI ---------------------------------------------------------------


def test_storage_api_usage_cleanup_history_and_roles(
        tmp_path: Path, database_url: str, sessions: sessionmaker[Session]) -> None:
    from bridge.adapters.http.app import create_app
    from bridge.storage.usage import record_sample
    from tests.http_harness import running_api

    settings = tier_settings(tmp_path, database_url, longterm_delay_seconds=3600)
    with sessions() as session:
        copied = stored_study(session, settings, modality="MR")
        copy_to_longterm(session, settings, copied, verified_days_ago=40)
        due = stored_study(session, settings, instances=3, received_days_ago=2)
        stored_study(session, settings, instances=1)  # stable just now: waits for the delay
    record_sample(sessions)
    size_mr, size_due = _size(copied), _size(due)

    with running_api(create_app(settings, sessions), sessions) as api:
        with api.client("viewer") as viewer:
            summary = viewer.get("/api/storage").json()
            assert viewer.post("/api/storage/cleanup").status_code == 403
            history = viewer.get("/api/storage/history").json()
        tiers = {(t["tier"], t["modality"]): t for t in summary["tiers"]}
        assert tiers[("online", "")]["instances"] == 6
        assert tiers[("online", "MR")]["bytes"] == size_mr
        assert tiers[("longterm", "")]["instances"] == 2
        assert tiers[("longterm", "MR")]["bytes"] == size_mr
        assert ("longterm", "CT") not in tiers
        assert summary["pending_migrations"]["due_studies"] == 1
        assert summary["pending_migrations"]["due_bytes"] == size_due
        assert summary["pending_migrations"]["waiting_studies"] == 1
        assert summary["capacity"]["measured_by"] == "filesystem"
        assert summary["last_cleanup"] is None
        assert {(p["tier"], p["instances"]) for p in history} == {("online", 6),
                                                                 ("longterm", 2)}
        with api.client("admin") as admin:
            dry = admin.post("/api/storage/cleanup").json()
            assert dry["dry_run"] and [r["study_instance_uid"] for r in dry["removed"]] == [
                copied.study_instance_uid]
            assert all(online_files(copied))
            real = admin.post("/api/storage/cleanup", params={"dry_run": "false"}).json()
            assert not real["dry_run"] and len(real["removed"]) == 1
            assert online_files(copied) == [False, False]
            deletions = admin.get("/api/storage/deletions").json()
            assert [(d["study_instance_uid"], d["reason"]) for d in deletions] == [
                (copied.study_instance_uid, "time")]
            assert deletions[0]["actor"] == "test admin"
            unknown = admin.post("/api/storage/studies/1.2.3.4/recall")
            assert unknown.status_code == 404 and unknown.json()["error"] == "not_found"
            assert admin.post("/api/storage/studies/not-a-uid/recall").status_code == 422
            after = admin.get("/api/storage").json()
            assert after["last_cleanup"]["studies"] == 1
            assert {(t["tier"], t["modality"]): t["instances"]
                    for t in after["tiers"]}[("online", "")] == 4


def test_cli_cleanup_dry_run_lists_the_study(tmp_path: Path, database_url: str,
                                             sessions: sessionmaker[Session]) -> None:
    import os
    import subprocess
    import sys

    settings = tier_settings(tmp_path, database_url)
    with sessions() as session:
        study = stored_study(session, settings)
        copy_to_longterm(session, settings, study, verified_days_ago=40)
    env = {**os.environ, "BRIDGE_DATA_DIR": str(settings.data_dir),
           "BRIDGE_DATABASE_URL": database_url, "BRIDGE_LONGTERM_URL": settings.longterm_url,
           "COLUMNS": "200"}
    bridge = Path(sys.executable).parent / "bridge"
    result = subprocess.run([str(bridge), "storage", "cleanup", "--dry-run"], env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert study.study_instance_uid in result.stdout and "would be removed" in result.stdout
    assert all(online_files(study))
    usage = subprocess.run([str(bridge), "storage", "usage"], env=env, capture_output=True,
                           text=True, timeout=60)
    assert usage.returncode == 0 and "longterm" in usage.stdout
    # Bad input is said plainly, without a traceback.
    unknown = subprocess.run([str(bridge), "storage", "recall", "1.2.3.4"], env=env,
                             capture_output=True, text=True, timeout=60)
    assert unknown.returncode == 1 and "no such study" in unknown.stderr
    assert "Traceback" not in unknown.stderr
