"""``bridge deid FILES --out`` and ``bridge deid restore`` on both databases: the output
passes the independent PHI scan, the restore is byte for byte, the key records hold nothing
in the clear, a missing or wrong master key writes nothing, and rotation re-wraps the keys
without touching what was exported. Every export and restore is in the audit trail."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from pydicom import dcmread
from sqlalchemy import func, select, text
from sqlalchemy.orm import Session, sessionmaker
from typer.testing import CliRunner

from bridge.cli.main import app as cli_app
from bridge.config.settings import Settings
from bridge.store.audit import AUDIT, verify_chain
from bridge.store.deid_models import DeidExport, DeidObject
from tests.deid_fixtures import IDENTITY_STRINGS, PATIENT_ID
from tests.deid_harness import key_file, phi_study
from tests.phi_scan import scan

OPTIONS = ("retain_modified_dates", "clean_descriptors", "clean_structured_content")


@pytest.fixture
def cli(settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    monkeypatch.setenv("BRIDGE_DATABASE_URL", settings.database_url)
    monkeypatch.setenv("BRIDGE_DATA_DIR", str(tmp_path / "var"))
    monkeypatch.setenv("BRIDGE_DEID_MASTER_KEY_FILE", str(key_file(tmp_path / "keys")))
    return CliRunner()


def _files_command(out: Path, source: Path) -> list[str]:
    return ["deid", str(source), "--out", str(out), "--to", "research",
            *[arg for option in OPTIONS for arg in ("--option", option)]]


def test_files_out_and_back_byte_for_byte(cli: CliRunner, tmp_path: Path,
                                          session_factory: sessionmaker[Session]) -> None:
    source = tmp_path / "in"
    files = phi_study(source)
    made = cli.invoke(cli_app, _files_command(tmp_path / "out", source))
    assert made.exit_code == 0, made.output
    exported = sorted((tmp_path / "out").rglob("*.dcm"))
    assert len(exported) == len(files)
    originals = {dcmread(p).SOPInstanceUID: p for p in files}
    for path in exported:
        assert not any(s in path.as_posix() for s in originals)  # names are pseudonyms
    by_content = {}
    for path in files:
        original = dcmread(path)
        # Which exported file is this one's: the same Instance Number and SOP class.
        match = [p for p in exported if dcmread(p).InstanceNumber == original.InstanceNumber
                 and dcmread(p).SOPClassUID == original.SOPClassUID]
        assert len(match) == 1
        by_content[path] = match[0]
        assert scan(original, match[0], options=OPTIONS, identity=IDENTITY_STRINGS) == []
    back = cli.invoke(cli_app, ["deid", "restore", str(tmp_path / "out"), "--out",
                                str(tmp_path / "back")])
    assert back.exit_code == 0, back.output
    assert f"{len(files)} original" in back.output
    for path in files:
        uid = dcmread(path).SOPInstanceUID
        restored = next((tmp_path / "back").rglob(f"{uid}.dcm"))
        assert hashlib.sha256(restored.read_bytes()).digest() == \
            hashlib.sha256(path.read_bytes()).digest()
    # The key records hold the originals sealed: nothing of the patient in any column.
    with session_factory() as session:
        for table in ("deid_exports", "deid_studies", "deid_objects", "deid_destinations"):
            for row in session.execute(text(f"SELECT * FROM {table}")).all():
                blob = b"".join(bytes(v) if isinstance(v, bytes | memoryview) else
                                str(v).encode() for v in row)
                for token in (*IDENTITY_STRINGS, *originals):
                    assert token.encode() not in blob, (table, token)
        actions = [r.action for r in session.execute(select(AUDIT)).all()]
        assert actions.count("deid-export") == 1
        assert actions.count("deid-restore") == len(files)
        assert verify_chain(session).broken is None


def test_objects_not_ours_are_named_and_nothing_else_is_lost(
        cli: CliRunner, tmp_path: Path) -> None:
    phi_study(tmp_path / "stranger", images=1, with_sr=False)
    (tmp_path / "stranger" / "notes.txt").write_text("not dicom")
    back = cli.invoke(cli_app, ["deid", "restore", str(tmp_path / "stranger"), "--out",
                                str(tmp_path / "back")])
    assert back.exit_code == 1
    assert "2 not recognised" in back.output
    assert "not an object of a study this bridge de-identified" in back.output
    assert PATIENT_ID not in back.output
    made = cli.invoke(cli_app, ["deid", str(tmp_path / "stranger"), "--out",
                                str(tmp_path / "out")])
    assert made.exit_code == 1  # the text file is refused, the image goes
    assert "1 de-identified" in made.output and "1 refused" in made.output


def test_a_missing_or_wrong_master_key_writes_nothing(
        cli: CliRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        session_factory: sessionmaker[Session]) -> None:
    source = tmp_path / "in"
    phi_study(source, images=1)
    monkeypatch.delenv("BRIDGE_DEID_MASTER_KEY_FILE")
    missing = cli.invoke(cli_app, _files_command(tmp_path / "out1", source))
    assert missing.exit_code == 2 and "BRIDGE_DEID_MASTER_KEY_FILE" in missing.output
    assert not (tmp_path / "out1").exists()
    monkeypatch.setenv("BRIDGE_DEID_MASTER_KEY_FILE", str(tmp_path / "nope.key"))
    unreadable = cli.invoke(cli_app, _files_command(tmp_path / "out1", source))
    assert unreadable.exit_code == 2 and "cannot read" in unreadable.output
    with session_factory() as session:
        assert session.execute(select(func.count()).select_from(DeidExport)).scalar() == 0
    first_key = key_file(tmp_path / "keys", "first.key")
    monkeypatch.setenv("BRIDGE_DEID_MASTER_KEY_FILE", str(first_key))
    assert cli.invoke(cli_app, _files_command(tmp_path / "out2", source)).exit_code == 0
    monkeypatch.setenv("BRIDGE_DEID_MASTER_KEY_FILE", str(key_file(tmp_path / "keys",
                                                                   "other.key")))
    wrong = cli.invoke(cli_app, _files_command(tmp_path / "out3", source))
    assert wrong.exit_code == 2 and "wrapped by master key" in wrong.output
    assert not (tmp_path / "out3").exists()
    with session_factory() as session:
        assert session.execute(select(func.count()).select_from(DeidExport)).scalar() == 1


def test_rotation_rewraps_and_leaves_the_exported_files_alone(
        cli: CliRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        session_factory: sessionmaker[Session]) -> None:
    source = tmp_path / "in"
    files = phi_study(source, images=2)
    old_key = key_file(tmp_path / "keys", "old.key")
    monkeypatch.setenv("BRIDGE_DEID_MASTER_KEY_FILE", str(old_key))
    assert cli.invoke(cli_app, _files_command(tmp_path / "out", source)).exit_code == 0
    exported = {p: p.read_bytes() for p in (tmp_path / "out").rglob("*.dcm")}
    with session_factory() as session:
        records_before = session.execute(select(DeidObject.record)).scalars().all()
    new_key = cli.invoke(cli_app, ["deid", "new-key", "--out", str(tmp_path / "new.key")])
    assert new_key.exit_code == 0, new_key.output
    rotated = cli.invoke(cli_app, ["deid", "rotate-key", "--new-key-file",
                                   str(tmp_path / "new.key")])
    assert rotated.exit_code == 0, rotated.output
    assert "re-wrapped 1 export keys and 1 destination secrets" in rotated.output
    assert {p: p.read_bytes() for p in exported} == exported
    with session_factory() as session:
        assert session.execute(select(DeidObject.record)).scalars().all() == records_before
    old = cli.invoke(cli_app, ["deid", "restore", str(tmp_path / "out"), "--out",
                               str(tmp_path / "back-old")])
    assert old.exit_code == 2 and "wrapped by master key" in old.output
    monkeypatch.setenv("BRIDGE_DEID_MASTER_KEY_FILE", str(tmp_path / "new.key"))
    back = cli.invoke(cli_app, ["deid", "restore", str(tmp_path / "out"), "--out",
                                str(tmp_path / "back")])
    assert back.exit_code == 0, back.output
    for path in files:
        restored = next((tmp_path / "back").rglob(f"{dcmread(path).SOPInstanceUID}.dcm"))
        assert restored.read_bytes() == path.read_bytes()
    # The same patient keeps the same pseudonym after the rotation.
    again = cli.invoke(cli_app, _files_command(tmp_path / "again", source))
    assert again.exit_code == 0
    assert {dcmread(p).PatientID for p in (tmp_path / "again").rglob("*.dcm")} == \
        {dcmread(p).PatientID for p in exported}


def test_export_and_fetch_refuse_what_they_do_not_know(cli: CliRunner, tmp_path: Path) -> None:
    unknown_study = cli.invoke(cli_app, ["deid", "export", "--study", "1.2.3", "--to", "x"])
    assert unknown_study.exit_code == 2 and "no study 1.2.3" in unknown_study.output
    unknown_destination = cli.invoke(cli_app, ["deid", "fetch", "--study", "1.2.3",
                                               "--from", "nowhere"])
    assert unknown_destination.exit_code == 2
    assert "no de-identification destination 'nowhere'" in unknown_destination.output
