"""Legacy modality import against a real database and archive, with the MIS order arriving
over MLLP, DCMTK checking what was archived, and the CLI run as a separate process.

What must hold: every DICOM flavour and every image format is archived through the same
store as C-STORE (reconciled to the MIS order); images become Secondary Capture objects
whose empty tags the MIS filled; nothing is imported twice; bad files are reported with a
reason and stay exactly where they were; a watched folder waits for a file to settle.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pydicom
import pytest
from apscheduler.schedulers.background import BackgroundScheduler
from sqlalchemy import Engine, inspect, select
from sqlalchemy.orm import Session, sessionmaker

from bridge.clients.mllp import MLLPClient
from bridge.config.import_sources import ImportSource
from bridge.config.settings import PROJECT_ROOT, Settings
from bridge.services.archive.store import ArchiveStore
from bridge.services.legacy_import import (
    FolderWatch,
    ImportReport,
    build_importer,
    schedule_legacy_import,
    walk,
)
from bridge.store.archive_models import Instance, Study
from bridge.store.import_models import ImportedFile
from tests.conftest import require_tool
from tests.hl7_harness import running_bridge, running_mllp
from tests.integration.test_archive_end_to_end import order_for_p10003
from tests.legacy_files import image_bytes, mixed_export, snapshot
from tests.waiting import eventually

pytestmark = pytest.mark.integration

STUDY_UID = "1.2.826.0.1.3680043.10.1137.1.7701"
SC = "1.2.840.10008.5.1.4.1.1.7"
MIS_NAME = "Мʼясоїд^Євгенія^Юріївна"


def send_order(settings: Settings, sessions: sessionmaker[Session], accession: str,
               study_uid: str = STUDY_UID) -> None:
    with running_mllp(settings, sessions) as mllp, MLLPClient("127.0.0.1", mllp.port) as mis:
        assert b"MSA|AA|" in mis.send(order_for_p10003(accession, study_uid))


def run_import(settings: Settings, sessions: sessionmaker[Session], root: Path,
               **options: object) -> ImportReport:
    importer = build_importer(settings, ArchiveStore(settings, sessions), **options)  # type: ignore[arg-type]
    return importer.run(walk([root], skip=[settings.archive_root]))


def statuses(report: ImportReport, root: Path) -> dict[str, str]:
    return {str(o.path.relative_to(root)): o.status for o in report.outcomes}


def archived(settings: Settings, sessions: sessionmaker[Session], sop_class: str
             ) -> list[pydicom.Dataset]:
    with sessions() as session:
        paths = session.scalars(select(Instance.path).where(
            Instance.sop_class_uid == sop_class)).all()
    return [pydicom.dcmread(settings.archive_root / p) for p in paths]


def test_mixed_folder_is_archived_reconciled_and_left_untouched(
        settings: Settings, session_factory: sessionmaker[Session], tmp_path: Path) -> None:
    send_order(settings, session_factory, "LEG1")
    export = mixed_export(tmp_path / "export", study_uid=STUDY_UID, accession="LEG1",
                          patient_id="P10003", sidecar_patient_id="P10003",
                          sidecar_accession="LEG1")
    before = snapshot(export.root)

    report = run_import(settings, session_factory, export.root)

    assert statuses(report, export.root) == export.expected
    reasons = {str(o.path.relative_to(export.root)): o.reason for o in report.outcomes}
    assert "truncated" in (reasons["ct/обрізаний.dcm"] or "")
    assert "not DICOM and not a supported image" in (reasons["Ендоскопія/нотатки.jpg"] or "")
    assert "JPEG image truncated or corrupt" in (reasons["Ендоскопія/обрізаний.jpg"] or "")
    # The source is read only: every file is still there, byte for byte.
    assert snapshot(export.root) == before

    # The CT objects and the images are one study, reconciled to the MIS order.
    with session_factory() as session:
        study = session.scalars(select(Study).where(
            Study.study_instance_uid == STUDY_UID)).one()
        assert (study.reconciliation, study.match_key) == ("matched", "accession")
        assert study.num_instances == 6 + 5  # slices 1-4, the DICOMDIR's 2, 5 images
        rows = session.scalars(select(ImportedFile)).all()
    recorded = {str(Path(r.path).relative_to(export.root)): r.status for r in rows}
    assert recorded == {k: v for k, v in export.expected.items() if v != "metadata"}
    assert all(r.reason for r in rows if r.status == "rejected")

    # Images: Secondary Capture, the study UID and the empty patient tags from the MIS.
    images = archived(settings, session_factory, SC)
    assert len(images) == 5
    for image in images:
        assert image.StudyInstanceUID == STUDY_UID
        assert (image.PatientID, image.AccessionNumber) == ("P10003", "LEG1")
        assert str(image.PatientName) == MIS_NAME
        assert image.StudyDate == "20261122"
        assert image.StudyDescription == "Гастроскопія"
        assert image.SpecificCharacterSet == "ISO_IR 192"
    syntaxes = sorted(str(i.file_meta.TransferSyntaxUID) for i in images)
    # The baseline JPEG keeps its bitstream; the progressive one and the rest are native.
    assert syntaxes == ["1.2.840.10008.1.2.1"] * 4 + ["1.2.840.10008.1.2.4.50"]

    # DCMTK reads every SC object and decodes the JPEG one.
    dcmdump, dcmdjpeg = require_tool("dcmdump"), require_tool("dcmdjpeg")
    with session_factory() as session:
        paths = session.scalars(select(Instance.path).where(Instance.sop_class_uid == SC)).all()
    for relative in paths:
        dumped = subprocess.run([dcmdump, "-q", str(settings.archive_root / relative)],
                                capture_output=True, text=True, timeout=30, check=False)
        assert dumped.returncode == 0, dumped.stderr
        assert "SecondaryCaptureImageStorage" in dumped.stdout
        if "JPEGBaseline" in dumped.stdout:
            decoded = subprocess.run([dcmdjpeg, str(settings.archive_root / relative),
                                      str(tmp_path / "decoded.dcm")],
                                     capture_output=True, text=True, timeout=30, check=False)
            assert decoded.returncode == 0, decoded.stderr
            assert "YBR_FULL_422" in dumped.stdout

    # A second run imports nothing; a copy under another name is a duplicate.
    shutil.copyfile(export.root / "ct/slice1.dcm", export.root / "ct/копія.dcm")
    again = run_import(settings, session_factory, export.root)
    assert statuses(again, export.root) == {"ct/копія.dcm": "duplicate",
                                            "Ендоскопія/study.ini": "metadata"}
    assert again.already_processed == len(export.expected) - 1
    [copy] = again.with_status("duplicate")
    assert "same content as an imported file" in (copy.reason or "")
    with session_factory() as session:
        assert session.scalars(select(Study.num_instances).where(
            Study.study_instance_uid == STUDY_UID)).one() == 11


def test_transliteration_on_and_off(settings: Settings, session_factory: sessionmaker[Session],
                                    tmp_path: Path) -> None:
    for folder, seed in (("latin", 11), ("cyrillic", 12)):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "Знімок.ini").write_text(
            "PatientID=UA77\nLastName=Ґалаґан\nFirstName=Олена\nDescription=Колоноскопія\n"
            "Date=2026-11-22\n", encoding="utf-8")
        (tmp_path / folder / "Знімок.jpg").write_bytes(image_bytes("JPEG", seed))
    run_import(settings, session_factory, tmp_path / "latin", transliterate=True)
    run_import(settings, session_factory, tmp_path / "cyrillic", transliterate=False)
    names = sorted((str(i.PatientName), i.StudyDescription, "SpecificCharacterSet" in i)
                   for i in archived(settings, session_factory, SC))
    assert names == [("Galagan^Olena", "Kolonoskopiia", False),
                     ("Ґалаґан^Олена", "Колоноскопія", True)]


def test_watched_folder_imports_a_file_only_once_it_stops_growing(
        settings: Settings, session_factory: sessionmaker[Session], tmp_path: Path) -> None:
    folder = tmp_path / "watched"
    folder.mkdir()
    source = ImportSource(name="us1", path=folder, mode="watch", poll_seconds=1)
    watch = FolderWatch(settings, source, ArchiveStore(settings, session_factory))
    data = image_bytes("PNG", 21, size=(120, 160))
    target = folder / "P55_22.11.2026_ACC55_1.png"
    target.write_bytes(data[:len(data) // 2])  # the copy has begun
    assert watch.run_once() is None  # first seen: remembered only
    with target.open("ab") as handle:  # the copy goes on
        handle.write(data[len(data) // 2:])
    assert watch.run_once() is None  # changed since the last scan
    report = watch.run_once()
    assert report is not None
    assert [(o.path.name, o.status) for o in report.outcomes] == [(target.name, "imported")]
    [image] = archived(settings, session_factory, SC)
    assert (image.PatientID, image.AccessionNumber, image.InstanceNumber) == ("P55", "ACC55", 1)
    assert watch.run_once() is None  # recorded: nothing more to do


def test_pull_source_waits_for_a_file_that_changes_while_it_settles(
        settings: Settings, session_factory: sessionmaker[Session], tmp_path: Path) -> None:
    folder = tmp_path / "export"
    folder.mkdir()
    target = folder / "P56_22.11.2026_ACC56_1.bmp"
    target.write_bytes(image_bytes("BMP", 22))
    grown: list[int] = []

    def copy_still_running(_seconds: float) -> None:
        if not grown:  # during the first pull's settling pause the file is rewritten
            target.write_bytes(image_bytes("BMP", 23))
            os.utime(target, ns=(1, 1))
            grown.append(1)

    source = ImportSource(name="xray", path=folder, mode="pull", schedule="0 * * * *",
                          settle_seconds=0.5)
    watch = FolderWatch(settings, source, ArchiveStore(settings, session_factory),
                        sleep=copy_still_running)
    assert watch.run_once() is None
    report = watch.run_once()
    assert report is not None and report.count("imported") == 1

    scheduler = BackgroundScheduler()
    assert [w.source.name for w in schedule_legacy_import(
        scheduler, settings.model_copy(update={"import_sources": (source,)}),
        session_factory)] == ["xray"]
    assert scheduler.get_job("legacy-import-xray") is not None


def test_bridge_serve_imports_from_a_configured_watched_folder(
        settings: Settings, session_factory: sessionmaker[Session], tmp_path: Path) -> None:
    folder = tmp_path / "watched"
    folder.mkdir()
    configured = settings.model_copy(update={"import_sources": (ImportSource(
        name="endo", path=folder, poll_seconds=0.2, calling_ae="ENDO_1"),)})
    with running_bridge(configured):
        (folder / "P57_22.11.2026_ACC57_2.jpg").write_bytes(image_bytes("JPEG", 24))

        def imported() -> list[str] | None:
            with session_factory() as session:
                return list(session.scalars(select(Instance.calling_ae)).all()) or None

        assert eventually(imported) == ["ENDO_1"]


def test_cli_prints_the_summary_and_stores_nothing_on_a_dry_run(
        settings: Settings, session_factory: sessionmaker[Session], tmp_path: Path) -> None:
    folder = tmp_path / "Експорт УЗД"
    folder.mkdir()
    (folder / "Петренко Іван_UA90_ACC90_1.png").write_bytes(image_bytes("PNG", 31))
    (folder / "Петренко Іван_UA90_ACC90_2.tif").write_bytes(image_bytes("TIFF", 32))
    (folder / "зламаний.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    env = {**os.environ, "BRIDGE_DATA_DIR": str(settings.data_dir),
           "BRIDGE_DATABASE_URL": settings.database_url, "COLUMNS": "200"}
    command = [str(PROJECT_ROOT / ".venv/bin/bridge"), "import", str(folder),
               "--pattern", "{PatientName}_{PatientID}_{AccessionNumber}_{n}.{ext}",
               "--transliterate", "--calling-ae", "US_ROOM_1"]

    dry = subprocess.run([*command, "--dry-run"], capture_output=True, text=True, timeout=120,
                         env=env, check=False)
    assert dry.returncode == 1, dry.stderr  # one file is rejected
    assert "would import" in dry.stdout and "│ 2 (2 objects" in dry.stdout
    assert archived(settings, session_factory, SC) == []

    done = subprocess.run(command, capture_output=True, text=True, timeout=120, env=env,
                          check=False)
    assert done.returncode == 1, done.stderr
    assert "imported" in done.stdout and "│ 2 (2 objects" in done.stdout
    assert "зламаний.png" in done.stdout and "PNG image truncated or corrupt" in done.stdout
    images = archived(settings, session_factory, SC)
    assert sorted((str(i.PatientName), i.PatientID, i.InstanceNumber) for i in images) == [
        ("Petrenko Ivan", "UA90", 1), ("Petrenko Ivan", "UA90", 2)]
    assert (folder / "зламаний.png").exists()

    again = subprocess.run(command, capture_output=True, text=True, timeout=120, env=env,
                           check=False)
    assert again.returncode == 0, again.stdout
    assert "already processed" in again.stdout and "│ 3 " in again.stdout


def test_the_migration_creates_the_table_the_model_declares(engine: Engine) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from bridge.store.models import Base

    with engine.connect() as conn:
        differences = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert [d for d in differences if "import_files" in repr(d)] == []
    downgrade_and_back(engine)


def downgrade_and_back(engine: Engine) -> None:
    from alembic import command

    from bridge.store.migrate import alembic_config, upgrade

    command.downgrade(alembic_config(engine), "0006")
    assert "import_files" not in inspect(engine).get_table_names()
    upgrade(engine)
    assert "import_files" in inspect(engine).get_table_names()
