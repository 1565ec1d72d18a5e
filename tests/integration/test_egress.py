"""Objects leaving the bridge carry the database's values (on SQLite and PostgreSQL): the
MIS values of each study, merged patients followed to the survivor, files never rewritten,
and patched Part 10 streams spliced from a new header and the file's own pixel data."""

from __future__ import annotations

import hashlib
import io
import random
import subprocess
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filewriter import dcmwrite
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEGLSLossless,
    RLELossless,
    generate_uid,
)
from sqlalchemy import event
from sqlalchemy.orm import Session, sessionmaker

from bridge.mapping.dicom.patch import RequestAttributes, SubjectValues
from bridge.mapping.worklist.dataset import Code
from bridge.services.egress.objects import (
    StoredFile,
    egress_dataset,
    egress_stream,
    load_subjects,
)
from bridge.store.archive_models import MATCHED, QUEUED, Instance, Series, Study
from bridge.store.models import Patient, PatientIdentifier
from tests.conftest import require_tool
from tests.worklist_factories import add_order, add_patient, add_step

pytestmark = pytest.mark.integration

#: A multi-frame object of a few MB: 8 frames of 512 x 512 16-bit pixels (4 MiB).
FRAMES, ROWS, COLUMNS = 8, 512, 512
MULTIFRAME_SC = "1.2.840.10008.5.1.4.1.1.7.3"
#: What the modality wrote: a typo in the ID, an old name, no issuer, a wrong accession.
AS_SENT = {
    "PatientID": "TYPO100",
    "PatientName": "Галаган^Єва",
    "PatientBirthDate": "19810101",
    "PatientSex": "M",
    "AccessionNumber": "WRONG",
}


@pytest.fixture(scope="module")
def pixels() -> bytes:
    return random.Random(1137).randbytes(FRAMES * ROWS * COLUMNS * 2)


def write_object(path: Path, *, pixel_data: bytes, frames: int, size: int,
                 transfer_syntax: str = ExplicitVRLittleEndian, charset: str | None = "ISO_IR 192",
                 study_uid: str, **values: Any) -> None:
    """A Multi-frame Grayscale Word Secondary Capture object as a modality would send it;
    compressed syntaxes are made by DCMTK from the uncompressed file."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = MULTIFRAME_SC
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    native = transfer_syntax in (ImplicitVRLittleEndian, DeflatedExplicitVRLittleEndian)
    ds.file_meta.TransferSyntaxUID = transfer_syntax if native else ExplicitVRLittleEndian
    if charset:
        ds.SpecificCharacterSet = charset
    ds.SOPClassUID = MULTIFRAME_SC
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = study_uid + ".1"
    ds.Modality = "OT"
    ds.StudyDate = "20260314"
    for keyword, value in values.items():
        setattr(ds, keyword, value)
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.NumberOfFrames = frames
    ds.Rows = ds.Columns = size
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.PixelData = pixel_data
    if transfer_syntax in (ExplicitVRLittleEndian, ImplicitVRLittleEndian,
                           DeflatedExplicitVRLittleEndian):
        dcmwrite(path, ds, enforce_file_format=True)
        return
    tool = {RLELossless: "dcmcrle", JPEGLSLossless: "dcmcjpls"}[transfer_syntax]
    source = path.with_suffix(".native")
    dcmwrite(source, ds, enforce_file_format=True)
    subprocess.run([require_tool(tool), str(source), str(path)], check=True,
                   capture_output=True, timeout=60)
    source.unlink()
    assert dcmread(path, stop_before_pixels=True).file_meta.TransferSyntaxUID == transfer_syntax


def small_object(path: Path, *, study_uid: str, charset: str | None = "ISO_IR 192",
                 **values: Any) -> None:
    write_object(path, pixel_data=bytes(range(32)), frames=1, size=4, charset=charset,
                 study_uid=study_uid, **values)


def index(session: Session, archive_root: Path, path: Path, *, patient_id: int | None,
          order_id: int | None, source_charset: str | None = None) -> Instance:
    """The archive index rows of a stored file (what the storage SCP writes)."""
    header = dcmread(path, stop_before_pixels=True)
    study = Study(study_instance_uid=header.StudyInstanceUID, patient_id=patient_id,
                  order_id=order_id, reconciliation=MATCHED if patient_id else QUEUED)
    session.add(study)
    session.flush()
    series = Series(study_id=study.id, series_instance_uid=header.SeriesInstanceUID,
                    modality="OT")
    session.add(series)
    session.flush()
    data = path.read_bytes()
    instance = Instance(
        series_id=series.id, study_id=study.id, sop_instance_uid=header.SOPInstanceUID,
        sop_class_uid=header.SOPClassUID,
        transfer_syntax_uid=header.file_meta.TransferSyntaxUID,
        path=str(path.relative_to(archive_root)), size=len(data),
        sha256=hashlib.sha256(data).hexdigest(), source_charset=source_charset,
        calling_ae="CT1",
    )
    session.add(instance)
    session.flush()
    return instance


def reconciled_patient(session: Session) -> tuple[Patient, int]:
    """The MIS patient (primary ID inserted after the secondary one) and an order with an
    open step, a canceled one and a completed one."""
    patient = add_patient(session, "Ґалаґан^Єва^Ївна", [("NI555", "NATIONAL")],
                          birth_date="19800101", sex="F")
    session.query(PatientIdentifier).filter_by(patient_id=patient.id).update({"position": 1})
    session.add(PatientIdentifier(patient_id=patient.id, value="UA100", issuer="HOSP",
                                  id_type="MR", position=0))
    order = add_order(session, patient, accession="ACC1", study_instance_uid="1.2.3.99",
                      requested_procedure_id="RP1", procedure_code="CTHEAD",
                      procedure_scheme="LOCAL", procedure_meaning="КТ голови",
                      procedure_description="КТ голови", referring_physician="Франко^Іван")
    add_step(session, order, sps_id="SPS1", description="Без контрасту",
             protocol_codes=[{"code": "P1", "scheme": "LOCAL", "meaning": "Протокол 1"}])
    add_step(session, order, sps_id="SPS2", status="CANCELED")
    add_step(session, order, sps_id="SPS3", status="COMPLETED", description="Друга фаза")
    session.flush()
    return patient, order.id


EXPECTED = SubjectValues(
    patient_id="UA100",
    issuer="HOSP",
    name="Ґалаґан^Єва^Ївна",
    birth_date="19800101",
    sex="F",
    accession="ACC1",
    referring_physician="Франко^Іван",
    request_attributes=tuple(
        RequestAttributes(
            accession="ACC1", study_instance_uid="1.2.3.99", requested_procedure_id="RP1",
            requested_procedure_description="КТ голови",
            requested_procedure_code=Code("CTHEAD", "LOCAL", "КТ голови"),
            scheduled_procedure_step_id=sps, scheduled_procedure_step_description=description,
            scheduled_protocol_codes=codes,
        )
        for sps, description, codes in (
            ("SPS1", "Без контрасту", (Code("P1", "LOCAL", "Протокол 1"),)),
            ("SPS3", "Друга фаза", ()),
        )
    ),
)


def test_load_subjects_reads_the_mis_values_per_study(
    session_factory: sessionmaker[Session], tmp_path: Path
) -> None:
    with session_factory.begin() as s:
        patient, order_id = reconciled_patient(s)
        small_object(tmp_path / "a.dcm", study_uid="1.2.3.1")
        small_object(tmp_path / "b.dcm", study_uid="1.2.3.2")
        small_object(tmp_path / "c.dcm", study_uid="1.2.3.3")
        matched = index(s, tmp_path, tmp_path / "a.dcm", patient_id=patient.id,
                        order_id=order_id).study_id
        patient_only = index(s, tmp_path, tmp_path / "b.dcm", patient_id=patient.id,
                             order_id=None).study_id
        queued = index(s, tmp_path, tmp_path / "c.dcm", patient_id=None,
                       order_id=None).study_id

    statements: list[str] = []
    with session_factory() as s:
        engine = s.get_bind()
        listen = event.listens_for(engine, "before_cursor_execute")
        record = listen(lambda conn, cursor, statement, *args: statements.append(statement))
        try:
            subjects = load_subjects(s, [matched, patient_only, queued, matched, 999_999])
        finally:
            event.remove(engine, "before_cursor_execute", record)

    selects = [st for st in statements if st.lstrip().upper().startswith("SELECT")]
    assert len(selects) == 2  # studies with their patients and orders, then the steps

    assert subjects == {
        matched: EXPECTED,
        # Assigned to a patient without an order: the file keeps its accession and request.
        patient_only: replace(EXPECTED, accession=None, referring_physician=None,
                              request_attributes=()),
        queued: None,
        999_999: None,
    }


def test_merged_patient_survivor_goes_out(
    session_factory: sessionmaker[Session], tmp_path: Path
) -> None:
    with session_factory.begin() as s:
        old = add_patient(s, "Галаган^Єва", [("OLD1", "HOSP")], birth_date="19810101")
        survivor = add_patient(s, "Ґалаґан^Єва^Ївна", [("UA100", "HOSP")],
                               birth_date="19800101")
        small_object(tmp_path / "x.dcm", study_uid="1.2.3.7", PatientID="OLD1",
                     IssuerOfPatientID="HOSP", PatientName="Галаган^Єва",
                     PatientBirthDate="19810101", PatientSex="F")
        instance = index(s, tmp_path, tmp_path / "x.dcm", patient_id=old.id, order_id=None)
        study_id, survivor_id = instance.study_id, survivor.id
        stored = StoredFile(instance.path, instance.source_charset, instance.calling_ae)

    with session_factory() as s:
        before = load_subjects(s, [study_id])[study_id]
    assert before is not None and before.patient_id == "OLD1"
    with egress_stream(tmp_path, stored, before) as stream:
        assert stream.changed is False  # the file says what the MIS says

    with session_factory.begin() as s:  # ADT A40: OLD1 merged into UA100
        merged = s.get(Patient, old.id)
        assert merged is not None
        merged.merged_into_id = survivor_id

    with session_factory() as s:
        after = load_subjects(s, [study_id])[study_id]
    assert after is not None
    assert (after.patient_id, after.name, after.birth_date) == (
        "UA100", "Ґалаґан^Єва^Ївна", "19800101")
    with egress_stream(tmp_path, stored, after) as stream:
        out = dcmread(io.BytesIO(b"".join(stream)))
    assert (out.PatientID, str(out.PatientName), out.PatientBirthDate) == (
        "UA100", "Ґалаґан^Єва^Ївна", "19800101")
    original = out.OriginalAttributesSequence[0].ModifiedAttributesSequence[0]
    assert (original.PatientID, str(original.PatientName)) == ("OLD1", "Галаган^Єва")
    assert out.OriginalAttributesSequence[0].SourceOfPreviousValues == "CT1"


def test_demographics_changed_after_storage_take_effect_on_the_next_egress(
    session_factory: sessionmaker[Session], tmp_path: Path
) -> None:
    with session_factory.begin() as s:
        patient = add_patient(s, "Shevchenko^Taras", [("P7", "")], birth_date="18140309",
                              sex="M")
        small_object(tmp_path / "y.dcm", study_uid="1.2.3.8", PatientID="P7",
                     PatientName="Shevchenko^Taras", PatientBirthDate="18140309",
                     PatientSex="M")
        instance = index(s, tmp_path, tmp_path / "y.dcm", patient_id=patient.id,
                         order_id=None)
    stored_bytes = (tmp_path / "y.dcm").read_bytes()

    with session_factory.begin() as s:  # ADT A08: the name is corrected
        row = s.get(Patient, patient.id)
        assert row is not None
        row.name = "Шевченко^Тарас"
    with session_factory() as s:
        row_instance = s.get(Instance, instance.id)
        assert row_instance is not None
        subject = load_subjects(s, [row_instance.study_id])[row_instance.study_id]
        dataset = egress_dataset(tmp_path, row_instance, subject)  # the ORM row as instance

    assert str(dataset.PatientName) == "Шевченко^Тарас"
    assert dataset.SpecificCharacterSet == "ISO_IR 192"
    assert (tmp_path / "y.dcm").read_bytes() == stored_bytes  # never rewritten


@pytest.mark.parametrize(
    "transfer_syntax",
    [ExplicitVRLittleEndian, ImplicitVRLittleEndian, RLELossless, JPEGLSLossless,
     DeflatedExplicitVRLittleEndian],
    ids=["explicit", "implicit", "rle", "jpegls", "deflated"],
)
def test_patched_stream_is_a_valid_file_with_the_stored_pixel_data(
    session_factory: sessionmaker[Session], tmp_path: Path, pixels: bytes, transfer_syntax: str
) -> None:
    path = tmp_path / "study" / "multiframe.dcm"
    path.parent.mkdir()
    write_object(path, pixel_data=pixels, frames=FRAMES, size=ROWS,
                 transfer_syntax=transfer_syntax, study_uid="1.2.3.9", **AS_SENT)
    stored = path.read_bytes()
    with session_factory.begin() as s:
        patient, order_id = reconciled_patient(s)
        instance = index(s, tmp_path, path, patient_id=patient.id, order_id=order_id)
        study_id, stored_file = instance.study_id, StoredFile(instance.path, None, "CT1")
    with session_factory() as s:
        subject = load_subjects(s, [study_id])[study_id]

    # An odd chunk size: the header and the tail both come in several pieces.
    with egress_stream(tmp_path, stored_file, subject, chunk_size=100_003) as stream:
        chunks = list(stream)
    output = b"".join(chunks)

    assert stream.changed is True
    assert stream.size == len(output)
    assert max(len(c) for c in chunks) <= 100_003
    original, out = dcmread(io.BytesIO(stored)), dcmread(io.BytesIO(output))
    assert out.file_meta.TransferSyntaxUID == transfer_syntax
    assert out.PixelData == original.PixelData  # byte-identical (encapsulated or native)
    assert out.SOPInstanceUID == original.SOPInstanceUID
    assert (out.PatientID, out.IssuerOfPatientID, out.AccessionNumber) == (
        "UA100", "HOSP", "ACC1")
    assert str(out.PatientName) == "Ґалаґан^Єва^Ївна"
    assert [r.ScheduledProcedureStepID for r in out.RequestAttributesSequence] == [
        "SPS1", "SPS3"]
    assert out.OriginalAttributesSequence[0].ModifiedAttributesSequence[0].PatientID == (
        "TYPO100")
    if transfer_syntax != DeflatedExplicitVRLittleEndian:
        # Spliced: the file's bytes from the pixel data on, untouched.
        with path.open("rb") as fp:
            dcmread(fp, stop_before_pixels=True)
            tail = stored[fp.tell():]
        assert len(tail) > FRAMES * ROWS * COLUMNS  # the pixel data is in the tail
        assert output.endswith(tail)
    assert path.read_bytes() == stored  # the file on disk is never rewritten

    # An independent parser reads the whole file (DCMTK stops with an error otherwise).
    (tmp_path / "out.dcm").write_bytes(output)
    dump = subprocess.run([require_tool("dcmdump"), "-q", "+P", "PatientID",
                           str(tmp_path / "out.dcm")],
                          capture_output=True, text=True, timeout=60)
    assert dump.returncode == 0, dump.stderr
    assert "[UA100]" in dump.stdout


@pytest.mark.parametrize("transfer_syntax", [ExplicitVRLittleEndian, RLELossless],
                         ids=["explicit", "rle"])
def test_egress_dataset_keeps_the_stored_transfer_syntax(
    session_factory: sessionmaker[Session], tmp_path: Path, pixels: bytes, transfer_syntax: str
) -> None:
    path = tmp_path / "multiframe.dcm"
    write_object(path, pixel_data=pixels[: 2 * ROWS * COLUMNS * 2], frames=2, size=ROWS,
                 transfer_syntax=transfer_syntax, study_uid="1.2.3.10", **AS_SENT)
    with session_factory.begin() as s:
        patient, order_id = reconciled_patient(s)
        instance = index(s, tmp_path, path, patient_id=patient.id, order_id=order_id)
        study_id, stored_file = instance.study_id, StoredFile(instance.path)
    with session_factory() as s:
        subject = load_subjects(s, [study_id])[study_id]

    dataset = egress_dataset(tmp_path, stored_file, subject)

    assert dataset.file_meta.TransferSyntaxUID == transfer_syntax
    assert dataset.PatientID == "UA100"
    assert dataset.PixelData == dcmread(path).PixelData
    # What pynetdicom does with it: encode in the same syntax and send.
    buffer = io.BytesIO()
    dcmwrite(buffer, dataset, enforce_file_format=True)
    again = dcmread(io.BytesIO(buffer.getvalue()))
    assert str(again.PatientName) == "Ґалаґан^Єва^Ївна"
    assert again.PixelData == dataset.PixelData


def test_unchanged_object_goes_out_byte_for_byte(
    session_factory: sessionmaker[Session], tmp_path: Path, pixels: bytes
) -> None:
    path = tmp_path / "multiframe.dcm"
    write_object(path, pixel_data=pixels, frames=FRAMES, size=ROWS, study_uid="1.2.3.11",
                 PatientID="P1", PatientName="DOE^JANE")
    with session_factory.begin() as s:
        instance = index(s, tmp_path, path, patient_id=None, order_id=None)
        study_id, stored_file = instance.study_id, StoredFile(instance.path)
    with session_factory() as s:
        subject = load_subjects(s, [study_id])[study_id]
    assert subject is None  # unreconciled: served with the file's own values

    with egress_stream(tmp_path, stored_file, subject, chunk_size=1 << 20) as stream:
        output = b"".join(stream)
    assert stream.changed is False
    assert output == path.read_bytes()
    assert stream.size == len(output)


def test_unreconciled_undeclared_cp1251_goes_out_as_utf8(
    session_factory: sessionmaker[Session], tmp_path: Path
) -> None:
    name = "Ґонта^Їжак^Євгенович"
    path = tmp_path / "cp1251.dcm"
    small_object(path, study_uid="1.2.3.12", charset=None, PatientID="P9",
                 PatientName=name.encode("cp1251"),
                 StudyDescription="Огляд ґрунтовний".encode("cp1251"))
    with session_factory.begin() as s:
        # The sending peer is configured as windows-1251 (instances.source_charset).
        instance = index(s, tmp_path, path, patient_id=None, order_id=None,
                         source_charset="cp1251")
        study_id = instance.study_id
        stored_file = StoredFile(instance.path, instance.source_charset)
    with session_factory() as s:
        subject = load_subjects(s, [study_id])[study_id]

    with egress_stream(tmp_path, stored_file, subject) as stream:
        output = b"".join(stream)

    assert stream.changed is True
    out = dcmread(io.BytesIO(output))
    assert out.SpecificCharacterSet == "ISO_IR 192"
    assert str(out.PatientName) == name
    assert out.StudyDescription == "Огляд ґрунтовний"
    assert name.encode("utf-8") in output
    assert "OriginalAttributesSequence" not in out  # no value changed, only its encoding
    assert out.PixelData == bytes(range(32))


def test_missing_file_raises_before_any_byte(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        egress_stream(tmp_path, StoredFile("gone.dcm"), None)
