"""The whole bridge between a FHIR registry and a modality: a referral written on the
registry (a real sekmet-fhir) reaches the modality's worklist (DCMTK findscu -W) after a
``$notify``; the images stored for it (storescu) come back to the registry as one
ImagingStudy that references the registry's own Patient and ServiceRequest."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import httpx
import pydicom
import pytest
from sqlalchemy.orm import Session, sessionmaker

from bridge.config.settings import Settings
from bridge.services.auth.tokens import create_token
from tests.conftest import require_tool
from tests.dicom_factories import write_series
from tests.fhir_peer import running_sekmet
from tests.fhir_registry import FACILITY_SYSTEM, Registry
from tests.hl7_harness import running_bridge
from tests.waiting import eventually

pytestmark = pytest.mark.integration



def worklist(port: int, out: Path) -> list[pydicom.Dataset]:
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("*.dcm"):
        old.unlink()
    result = subprocess.run(
        [require_tool("findscu"), "-W", "-X", "-od", str(out), "-aec", "BRIDGE",
         "-k", "AccessionNumber", "-k", "PatientID", "-k", "PatientName",
         "-k", "StudyInstanceUID", "-k", "(0040,0100)[0].Modality",
         "127.0.0.1", str(port)], capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    return [pydicom.dcmread(p) for p in sorted(out.glob("*.dcm"))]


def test_referral_to_worklist_to_images_to_imaging_study(
        settings: Settings, session_factory: sessionmaker[Session], tmp_path: Path) -> None:
    with running_sekmet(tmp_path / "sekmet") as sekmet:
        registry = Registry(sekmet)
        patient = registry.patient("MRN-E2E-1")
        referral = registry.referral(patient, "ACC-E2E-1")
        configured = settings.model_copy(update={
            "fhir_registry_url": sekmet.base_url, "fhir_target_url": sekmet.base_url,
            "fhir_facility_identifier": f"{FACILITY_SYSTEM}|{registry.facility}",
            "fhir_registry_poll_seconds": 3600.0,  # only $notify pulls in this test
            "study_stable_seconds": 0.5, "worker_poll_seconds": 0.2})
        with running_bridge(configured) as bridge:
            with session_factory.begin() as session:
                token = create_token(session, role="integration", name="e2e")
            with httpx.Client(base_url=f"http://127.0.0.1:{bridge.http_port}", timeout=30,
                              headers={"Authorization": f"Bearer {token}"}) as api:
                assert api.post("/fhir/$notify").status_code == 202

            [item] = eventually(lambda: worklist(bridge.dicom_port, tmp_path / "wl") or None)
            assert (item.AccessionNumber, item.PatientID) == ("ACC-E2E-1", "MRN-E2E-1")
            assert str(item.PatientName).startswith("Шевченко^Тарас")

            files = write_series(tmp_path / "ct", 2, study_uid=item.StudyInstanceUID,
                                 AccessionNumber="ACC-E2E-1", PatientID="LOCAL-9")
            sent = subprocess.run([require_tool("storescu"), "-aec", "BRIDGE", "127.0.0.1",
                                   str(bridge.dicom_port), *map(str, files)],
                                  capture_output=True, text=True, timeout=60, check=False)
            assert sent.returncode == 0, sent.stderr

            def published() -> list[dict[str, Any]] | None:
                found = sekmet.search(
                    "ImagingStudy", identifier=f"urn:dicom:uid|urn:oid:{item.StudyInstanceUID}")
                return found or None

            [study] = eventually(published)
            assert study["subject"]["reference"] == f"Patient/{patient['id']}"
            assert {"reference": f"ServiceRequest/{referral['id']}"} in [
                {"reference": ref["reference"]} for ref in study["basedOn"]
                if "reference" in ref]
            assert (study["numberOfSeries"], study["numberOfInstances"]) == (1, 2)
            assert study["started"].endswith(("+02:00", "+03:00"))  # Kyiv, never bare UTC

            # A late object re-opens the study; once stable again the same ImagingStudy is
            # updated (conditional update by identifier), never duplicated.
            [late] = write_series(tmp_path / "late", 1, study_uid=item.StudyInstanceUID,
                                  AccessionNumber="ACC-E2E-1", PatientID="LOCAL-9")
            sent = subprocess.run([require_tool("storescu"), "-aec", "BRIDGE", "127.0.0.1",
                                   str(bridge.dicom_port), str(late)],
                                  capture_output=True, text=True, timeout=60, check=False)
            assert sent.returncode == 0, sent.stderr

            def updated() -> list[dict[str, Any]] | None:
                found = published() or []
                return found if found and found[0]["numberOfInstances"] == 3 else None

            [study] = eventually(updated)
            assert study["numberOfSeries"] == 2
