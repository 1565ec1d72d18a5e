"""The Orthanc test harness itself: it starts, takes a C-STORE, stops and comes back."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import httpx
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

from tests.conftest import require_tool
from tests.orthanc_peer import running_orthanc

pytestmark = pytest.mark.integration


def write_ct(path: Path) -> str:
    """A minimal valid CT object (8x8 pixels); returns its SOP Instance UID."""
    ds = Dataset()
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = generate_uid()
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.PatientID = "HARNESS1"
    ds.PatientName = "Harness^Test"
    ds.Modality = "CT"
    ds.Rows = ds.Columns = 8
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.PixelData = bytes(8 * 8 * 2)
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.save_as(path, enforce_file_format=True)
    return str(ds.SOPInstanceUID)


def storescu(port: int, path: Path, called_ae: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([require_tool("storescu"), "-aet", "HARNESS", "-aec", called_ae,
                           "127.0.0.1", str(port), str(path)],
                          capture_output=True, text=True, timeout=30)


def test_orthanc_stores_and_survives_a_restart(tmp_path: Path) -> None:
    uid = write_ct(tmp_path / "ct.dcm")
    with running_orthanc(tmp_path / "orthanc", aet="ARCHIVE",
                         known_peers={"BRIDGE": ("127.0.0.1", 11112)}) as orthanc:
        assert orthanc.rest("/system")["DicomAet"] == "ARCHIVE"
        assert orthanc.rest("/modalities") == ["BRIDGE"]
        assert orthanc.instances() == []

        sent = storescu(orthanc.dicom_port, tmp_path / "ct.dcm", orthanc.aet)
        assert sent.returncode == 0, sent.stderr
        assert orthanc.instances() == [uid]
        assert orthanc.simplified_tags(uid)["PatientID"] == "HARNESS1"

        orthanc.stop()
        assert not orthanc.running
        with pytest.raises(httpx.TransportError):
            orthanc.http.get("/system", timeout=2.0)
        refused = storescu(orthanc.dicom_port, tmp_path / "ct.dcm", orthanc.aet)
        assert refused.returncode != 0

        orthanc.start()
        # Same ports, same storage: what it had before the outage is still there.
        assert orthanc.instances() == [uid]
        pid = orthanc.pid
    assert pid is not None
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_orthanc_comes_back_after_a_crash(tmp_path: Path) -> None:
    uid = write_ct(tmp_path / "ct.dcm")
    with running_orthanc(tmp_path / "orthanc") as orthanc:
        assert storescu(orthanc.dicom_port, tmp_path / "ct.dcm", orthanc.aet).returncode == 0
        orthanc.stop(kill=True)
        assert not orthanc.running
        orthanc.start()
        assert orthanc.wait_for_instances([uid], timeout=5) == [uid]
