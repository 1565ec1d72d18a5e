"""Edge cases of the archive's writes that differ between SQLite and PostgreSQL."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from bridge.config.settings import Settings
from bridge.errors import Rejected
from bridge.services.archive.store import ArchiveStore, Arrival
from bridge.store.archive_models import Instance, Study
from bridge.store.models import Patient
from tests.dicom_factories import write_series

pytestmark = pytest.mark.integration


@pytest.mark.filterwarnings("ignore:The PN component length")  # writing the test file
def test_a_name_that_grows_when_case_folded_is_stored(
        settings: Settings, session_factory: sessionmaker[Session], tmp_path: Path) -> None:
    # "ß" case-folds to "ss": a long name in German spelling outgrows its search column.
    name = "Strauß^" + "ß" * 300
    path = write_series(tmp_path, 1, PatientName=name, SpecificCharacterSet="ISO_IR 192")[0]
    stored = ArchiveStore(settings, session_factory).accept(Arrival(path, disposable=False))
    with session_factory() as session:
        study = session.get(Study, stored.study_id)
        assert study is not None
        assert study.source_patient_name == name[:320]
        assert study.source_name_search == name.casefold()[:320]


def test_database_errors_do_not_quote_the_values_of_the_statement(
        session_factory: sessionmaker[Session]) -> None:
    """Exceptions of the database layer end up in logs (tracebacks): the bound values of
    the failing statement (patient names, IDs, birth dates) must not be part of them."""
    secret = "Geheim^Patientin"
    with session_factory.begin() as session:
        session.add(Patient(name="First^Patient", name_search="first^patient"))
    with session_factory.begin() as session:
        first = session.scalars(select(Patient.id)).one()
    # A key the database refuses: the error names the key, and must not name the values.
    with pytest.raises(IntegrityError) as raised, session_factory.begin() as session:
        session.add(Patient(id=first, name=secret, name_search=secret.casefold()))
        session.flush()
    assert secret not in str(raised.value)
    assert secret.casefold() not in str(raised.value)


def _with_transfer_syntax(path: Path, uid: bytes) -> None:
    """Rewrite the file meta's Transfer Syntax UID in place (pydicom refuses to write an
    unknown one; a STOW-RS client can send anything)."""
    data = path.read_bytes()
    start = data.index(b"\x02\x00\x10\x00UI")
    length = struct.unpack("<H", data[start + 6:start + 8])[0]
    value = uid + (b"\x00" if len(uid) % 2 else b"")
    data = (data[:start + 6] + struct.pack("<H", len(value)) + value
            + data[start + 8 + length:])
    group = data.index(b"\x02\x00\x00\x00UL")
    meta_length = struct.unpack("<I", data[group + 8:group + 12])[0] + len(value) - length
    path.write_bytes(data[:group + 8] + struct.pack("<I", meta_length) + data[group + 12:])


@pytest.mark.filterwarnings("ignore:The value length")
def test_an_over_long_transfer_syntax_uid_is_refused_with_its_name(
        settings: Settings, session_factory: sessionmaker[Session], tmp_path: Path) -> None:
    path = write_series(tmp_path, 1)[0]
    _with_transfer_syntax(path, b"1.2.840.10008.1.2.1." + b"9" * 60)
    with pytest.raises(Rejected) as refused:
        ArchiveStore(settings, session_factory).accept(Arrival(path, disposable=False))
    assert refused.value.location == "TransferSyntaxUID"
    with session_factory() as session:
        assert session.scalars(select(Instance.id)).all() == []


@pytest.mark.parametrize("committed", [True, False])
def test_a_failure_after_commit_keeps_the_file_its_row_points_to(
        settings: Settings, session_factory: sessionmaker[Session], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch, committed: bool) -> None:
    """A connection lost during COMMIT: the commit may have landed. The file is removed
    only when the index surely does not point to it."""
    from sqlalchemy.exc import OperationalError

    store = ArchiveStore(settings, session_factory)
    run_batch = store._index_batch

    def commit_then_lose_the_answer(jobs):  # type: ignore[no-untyped-def]
        if committed:
            run_batch(jobs)
        raise OperationalError("COMMIT", {}, Exception("server closed the connection"))

    monkeypatch.setattr(store._commits, "_run_batch", commit_then_lose_the_answer)
    [path] = write_series(tmp_path / "in", 1)
    with pytest.raises(OperationalError):
        store.accept(Arrival(path, calling_ae="CT1", disposable=False))
    with session_factory() as session:
        rows = list(session.scalars(select(Instance.path)))
    on_disk = [str(p.relative_to(settings.archive_root))
               for p in settings.archive_root.rglob("*.dcm")]
    assert on_disk == rows  # committed: one row and its file; not: neither
    assert len(rows) == (1 if committed else 0)
