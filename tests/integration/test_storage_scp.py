"""Storage SCP over real sockets: DCMTK storescu and a pynetdicom SCU send to the bridge."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from pynetdicom import AE, _config
from pynetdicom.sop_class import CTImageStorage  # type: ignore[attr-defined]
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from bridge.adapters.dicom.server import DEFAULT_SERVICES, DicomServer
from bridge.adapters.dicom.storage_scp import storage_service
from bridge.config.settings import DicomPeer, Settings
from bridge.mapping.dicom.reconciliation import load_reconcile_policy
from bridge.services.archive.late_orders import reconcile_queued
from bridge.store.archive_models import Instance, Series, Study
from tests.conftest import require_tool
from tests.dicom_factories import UID_ROOT, ct_slice, write_series
from tests.dicom_harness import StartServer, dicom_servers
from tests.worklist_factories import schedule

pytestmark = pytest.mark.integration


@pytest.fixture
def start_server(settings: Settings, session_factory: sessionmaker[Session]
                 ) -> Iterator[StartServer]:
    with dicom_servers(settings, session_factory,
                       services=(*DEFAULT_SERVICES, storage_service)) as start:
        yield start


def storescu(server: DicomServer, files: list[Path], calling_ae: str = "MODALITY",
             *options: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [require_tool("storescu"), "-aet", calling_ae, "-aec", "BRIDGE", "-v", *options,
         "127.0.0.1", str(server.port), *map(str, files)],
        capture_output=True, text=True, timeout=60, check=False)


def send(server: DicomServer, dataset: Dataset, calling_ae: str = "PYSCU") -> Dataset:
    ae = AE(ae_title=calling_ae)
    ae.add_requested_context(str(dataset.SOPClassUID))
    assoc = ae.associate("127.0.0.1", server.port, ae_title="BRIDGE")
    assert assoc.is_established
    try:
        return assoc.send_c_store(dataset)
    finally:
        assoc.release()


def send_file_as_is(server: DicomServer, path: Path, monkeypatch: pytest.MonkeyPatch
                    ) -> Dataset:
    """C-STORE a CT file's data set bytes as they are: pynetdicom's chunked send does not
    parse them, so a truncated or inconsistent object reaches the bridge unchanged."""
    monkeypatch.setattr(_config, "STORE_SEND_CHUNKED_DATASET", True)
    ae = AE(ae_title="PYSCU")
    ae.add_requested_context(CTImageStorage, ExplicitVRLittleEndian)
    assoc = ae.associate("127.0.0.1", server.port, ae_title="BRIDGE")
    assert assoc.is_established
    try:
        return assoc.send_c_store(path)
    finally:
        assoc.release()


def studies(session_factory: sessionmaker[Session]) -> list[Study]:
    with session_factory() as session:
        return list(session.scalars(select(Study).order_by(Study.id)))


def count(session_factory: sessionmaker[Session], model: type) -> int:
    with session_factory() as session:
        return int(session.scalar(select(func.count()).select_from(model)) or 0)


def archived_files(settings: Settings) -> list[Path]:
    return [p for p in settings.archive_root.rglob("*.dcm") if ".incoming" not in p.parts]


def test_series_with_wrong_patient_is_reconciled_by_accession(
        start_server: StartServer, settings: Settings,
        session_factory: sessionmaker[Session], tmp_path: Path) -> None:
    with session_factory.begin() as session:
        step = schedule(session, name="Shevchenko^Taras", ids=[("MIS-1", "HOSP")],
                        order={"accession": "A-77"})
        order_id, patient_id = step.order_id, step.order.patient_id
    server = start_server()
    files = write_series(tmp_path / "in", 3, AccessionNumber="A-77", PatientID="WRONG",
                         PatientName="Typo^Name")
    result = storescu(server, files)
    assert result.returncode == 0, result.stderr
    [study] = studies(session_factory)
    assert (study.reconciliation, study.match_key) == ("matched", "accession")
    assert (study.order_id, study.patient_id) == (order_id, patient_id)
    assert (study.source_patient_id, study.source_patient_name) == ("WRONG", "Typo^Name")
    assert (study.num_instances, study.num_series, study.modalities) == (3, 1, "CT")
    assert count(session_factory, Instance) == 3
    stored = archived_files(settings)
    assert len(stored) == 3
    # Kept as received: the modality's values are still in the file.
    sent = {dcmread(p).SOPInstanceUID: dcmread(p) for p in files}
    for path in stored:
        kept = dcmread(path)
        assert kept.PatientID == "WRONG"
        assert kept.PixelData == sent[kept.SOPInstanceUID].PixelData


def test_unmatched_study_is_queued_then_reconciled_by_a_later_order(
        start_server: StartServer, settings: Settings,
        session_factory: sessionmaker[Session], tmp_path: Path) -> None:
    server = start_server()
    files = write_series(tmp_path / "in", 2, AccessionNumber="LATE-1")
    assert storescu(server, files).returncode == 0
    [study] = studies(session_factory)
    assert study.reconciliation == "queued" and study.patient_id is None
    assert study.queue_reason
    policy = load_reconcile_policy(settings.mappings_dir)
    with session_factory.begin() as session:
        assert reconcile_queued(session, policy) == []
        step = schedule(session, order={"accession": "LATE-1"})
        order_id = step.order_id
    with session_factory.begin() as session:
        assert reconcile_queued(session, policy) == [study.id]
    [study] = studies(session_factory)
    assert (study.reconciliation, study.order_id, study.match_key) == (
        "matched", order_id, "accession")


def test_study_uid_and_patient_keys_match_when_accession_is_missing(
        start_server: StartServer, session_factory: sessionmaker[Session],
        tmp_path: Path) -> None:
    with session_factory.begin() as session:
        by_uid = schedule(session, order={"study_instance_uid": f"{UID_ROOT}5.1"})
        by_patient = schedule(session, ids=[("P-9", "HOSP")], modality="MR",
                              start_date="20261121")
        uid_order, patient_order = by_uid.order_id, by_patient.order_id
    server = start_server()
    assert storescu(server, write_series(tmp_path / "a", 1, study_uid=f"{UID_ROOT}5.1")
                    ).returncode == 0
    assert storescu(server, write_series(tmp_path / "b", 1, PatientID="P-9", Modality="MR",
                                         StudyDate="20261122")).returncode == 0
    first, second = studies(session_factory)
    assert (first.order_id, first.match_key) == (uid_order, "study_instance_uid")
    assert (second.order_id, second.match_key) == (patient_order, "patient")


@pytest.mark.parametrize(("raw", "peer_charset"), [
    ("Шевченко^Ґалина".encode("cp1251"), "windows-1251"),
    ("Шевченко^Ґалина".encode(), None),
])
def test_undeclared_cyrillic_names_are_decoded(
        start_server: StartServer, session_factory: sessionmaker[Session], tmp_path: Path,
        raw: bytes, peer_charset: str | None) -> None:
    peers = (DicomPeer(ae_title="OLDCT", charset=peer_charset),) if peer_charset else ()
    server = start_server(dicom_peers=peers)
    files = write_series(tmp_path / "in", 1, PatientName=raw, SpecificCharacterSet=None)
    assert storescu(server, files, calling_ae="OLDCT").returncode == 0
    [study] = studies(session_factory)
    assert study.source_patient_name == "Шевченко^Ґалина"
    with session_factory() as session:
        charset = session.scalar(select(Instance.source_charset))
    assert charset == ("cp1251" if peer_charset else "utf-8")


def test_declared_iso_ir_144_name_is_decoded(
        start_server: StartServer, session_factory: sessionmaker[Session]) -> None:
    server = start_server()
    ds = ct_slice(study_uid=generate_uid(prefix=UID_ROOT), SpecificCharacterSet="ISO_IR 144",
                  PatientName="Іваненко^Олена")
    assert send(server, ds).Status == 0x0000
    [study] = studies(session_factory)
    assert study.source_patient_name == "Іваненко^Олена"


def test_bad_objects_get_failure_statuses_and_nothing_is_kept(
        start_server: StartServer, settings: Settings,
        session_factory: sessionmaker[Session]) -> None:
    server = start_server()
    study_uid = generate_uid(prefix=UID_ROOT)
    no_study_uid = ct_slice(study_uid=study_uid, StudyInstanceUID=None)
    status = send(server, no_study_uid)
    assert status.Status == 0xA900
    assert "StudyInstanceUID" in status.ErrorComment
    assert count(session_factory, Study) == 0
    assert archived_files(settings) == []


def test_truncated_data_set_is_refused(
        start_server: StartServer, settings: Settings,
        session_factory: sessionmaker[Session], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    server = start_server()
    ds = ct_slice(study_uid=generate_uid(prefix=UID_ROOT), rows=64, columns=64)
    path = tmp_path / "cut.dcm"
    ds.save_as(path, enforce_file_format=True)
    path.write_bytes(path.read_bytes()[:-1000])  # cut inside the pixel data
    assert send_file_as_is(server, path, monkeypatch).Status == 0xC000
    assert count(session_factory, Instance) == 0
    assert archived_files(settings) == []


def test_unknown_calling_ae_is_refused_in_strict_mode(
        start_server: StartServer, settings: Settings, tmp_path: Path) -> None:
    server = start_server(dicom_strict_peers=True, dicom_peers=(DicomPeer(ae_title="KNOWN"),))
    result = storescu(server, write_series(tmp_path / "in", 1), calling_ae="STRANGER")
    assert result.returncode != 0
    assert archived_files(settings) == []


def test_unknown_sop_class_is_not_accepted(start_server: StartServer, tmp_path: Path) -> None:
    server = start_server()
    files = write_series(tmp_path / "in", 1, SOPClassUID="1.2.826.0.1.3680043.10.1137.99.1")
    ds = dcmread(files[0])
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.save_as(files[0], enforce_file_format=True)
    result = storescu(server, files)
    assert "no presentation context" in (result.stdout + result.stderr).lower()


@pytest.mark.parametrize("policy", ["ignore", "reject", "replace"])
def test_duplicate_sop_instance_follows_the_policy(
        start_server: StartServer, settings: Settings,
        session_factory: sessionmaker[Session], policy: str) -> None:
    server = start_server(store_duplicate_policy=policy)
    ds = ct_slice(study_uid=generate_uid(prefix=UID_ROOT))
    assert send(server, ds).Status == 0x0000
    [first] = archived_files(settings)
    ds.SeriesDescription = "second copy"
    status = send(server, ds).Status
    assert status == {"ignore": 0x0000, "reject": 0x0111, "replace": 0x0000}[policy]
    [kept] = archived_files(settings)
    assert count(session_factory, Instance) == 1
    with session_factory() as session:
        size = session.scalar(select(Study.num_instances))
    assert size == 1
    described = dcmread(kept).get("SeriesDescription")
    assert (described == "second copy") == (policy == "replace")
    assert (kept == first) == (policy != "replace")


@pytest.mark.parametrize("policy", ["reject", "queue"])
def test_study_claiming_two_patients_follows_the_policy(
        start_server: StartServer, session_factory: sessionmaker[Session], policy: str) -> None:
    server = start_server(reconcile_patient_conflict=policy)
    study_uid = generate_uid(prefix=UID_ROOT)
    series_uid = generate_uid(prefix=UID_ROOT)
    assert send(server, ct_slice(study_uid=study_uid, series_uid=series_uid,
                                 PatientID="P1")).Status == 0
    status = send(server, ct_slice(study_uid=study_uid, series_uid=series_uid, PatientID="P2",
                                   number=2))
    [study] = studies(session_factory)
    if policy == "reject":
        assert status.Status == 0x0110
        assert count(session_factory, Instance) == 1
    else:
        assert status.Status == 0x0000
        assert study.reconciliation == "conflict" and study.queue_reason
        assert count(session_factory, Instance) == 2
    assert count(session_factory, Series) == 1


@pytest.mark.parametrize("problem", ["missing", "different"])
def test_data_set_sop_instance_uid_must_be_there_and_agree(
        start_server: StartServer, settings: Settings,
        session_factory: sessionmaker[Session], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch, problem: str) -> None:
    server = start_server()
    ds = ct_slice(study_uid=generate_uid(prefix=UID_ROOT))
    if problem == "missing":
        del ds.SOPInstanceUID  # the file meta (and so the request) still names one
    else:
        ds.SOPInstanceUID = generate_uid(prefix=UID_ROOT)
    path = tmp_path / "odd.dcm"
    ds.preamble = b"\0" * 128  # a Part 10 file, whose meta is written as given
    ds.save_as(path, enforce_file_format=False)
    status = send_file_as_is(server, path, monkeypatch)
    assert status.Status == 0xA900
    assert "SOPInstanceUID" in status.ErrorComment
    assert count(session_factory, Instance) == 0
    assert archived_files(settings) == []


def test_parallel_associations_store_one_study_once(
        start_server: StartServer, settings: Settings,
        session_factory: sessionmaker[Session], tmp_path: Path) -> None:
    """Four senders at once into one new study: group commits and the study/series
    creation race must still give one study, one series and every object once."""
    server = start_server()
    files = write_series(tmp_path / "in", 24, AccessionNumber="PAR-1")
    senders = [subprocess.Popen(
        [require_tool("storescu"), "-aet", f"MOD{n}", "-aec", "BRIDGE", "127.0.0.1",
         str(server.port), *map(str, files[n::4])],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE) for n in range(4)]
    for sender in senders:
        assert sender.wait(60) == 0
    [study] = studies(session_factory)
    assert (study.num_instances, study.num_series) == (24, 1)
    assert count(session_factory, Instance) == 24
    assert count(session_factory, Series) == 1
    assert len(archived_files(settings)) == 24


@pytest.mark.parametrize(("tool", "propose", "syntax"), [
    ("dcmcjpls", "-xt", "1.2.840.10008.1.2.4.80"),  # JPEG-LS lossless
    ("dcmcrle", "-xr", "1.2.840.10008.1.2.5"),  # RLE lossless
    ("dcmcjpeg", "-xs", "1.2.840.10008.1.2.4.70"),  # JPEG lossless, first-order prediction
])
def test_compressed_objects_are_kept_as_received(
        start_server: StartServer, settings: Settings, session_factory: sessionmaker[Session],
        tmp_path: Path, tool: str, propose: str, syntax: str) -> None:
    server = start_server()
    [plain] = write_series(tmp_path / "in", 1, rows=64, columns=64)
    compressed = tmp_path / "compressed.dcm"
    subprocess.run([require_tool(tool), str(plain), str(compressed)], check=True, timeout=60)
    sent = dcmread(compressed)
    assert sent.file_meta.TransferSyntaxUID == syntax
    # storescu proposes the compressed syntax first (else it would decompress).
    result = storescu(server, [compressed], "MODALITY", propose)
    assert result.returncode == 0, result.stderr
    [kept] = archived_files(settings)
    stored = dcmread(kept)
    assert stored.file_meta.TransferSyntaxUID == syntax
    assert stored.PixelData == sent.PixelData  # the encapsulated fragments, untouched
    with session_factory() as session:
        assert session.scalar(select(Instance.transfer_syntax_uid)) == syntax
