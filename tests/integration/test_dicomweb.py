"""DICOMweb over real sockets (uvicorn on a free port, httpx as the client), on SQLite and
PostgreSQL: STOW-RS stores through the archive's reconciliation path, QIDO-RS and WADO-RS
answer with the current MIS values, and the shapes match what Orthanc's DICOMweb plugin
answers for the same object.

Objects are made with pydicom (:mod:`tests.dicom_factories`) and enter through STOW-RS, so
every test exercises the whole path: multipart parsing, ArchiveStore, the index, egress.
"""

from __future__ import annotations

import hashlib
import io
import subprocess
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.filewriter import dcmwrite
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, RLELossless, generate_uid
from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from bridge.adapters.http.app import create_app
from bridge.adapters.http.dicomweb import qido as dicomweb_qido
from bridge.config.settings import Settings
from bridge.store.archive_models import Instance, Study
from bridge.store.models import Patient
from tests.conftest import require_tool
from tests.dicom_factories import UID_ROOT, ct_slice
from tests.http_harness import Api, running_api
from tests.orthanc_peer import DICOMWEB_PLUGIN, running_orthanc
from tests.worklist_factories import add_order, add_patient

pytestmark = pytest.mark.integration

MIS_NAME = "Шевченко^Тарас"
MIS_ID = "MIS-7001"
STUDIES = "/dicomweb/studies"
ANY_SYNTAX = 'multipart/related; type="application/dicom"; transfer-syntax=*'


# ------------------------------------------------------------------------------ fixtures


@pytest.fixture
def app(settings: Settings, session_factory: sessionmaker[Session]) -> FastAPI:
    return create_app(settings, session_factory)


@pytest.fixture
def api(app: FastAPI, session_factory: sessionmaker[Session]) -> Iterator[Api]:
    with running_api(app, session_factory) as served:
        yield served


def part10(ds: Dataset) -> bytes:
    buffer = io.BytesIO()
    dcmwrite(buffer, ds, enforce_file_format=True)
    return buffer.getvalue()


def multipart(parts: Sequence[bytes], boundary: str = "test-boundary-1137",
              content_type: str = "application/dicom") -> tuple[bytes, str]:
    body = b"".join(
        f"--{boundary}\r\nContent-Type: {content_type}\r\n\r\n".encode() + part + b"\r\n"
        for part in parts) + f"--{boundary}--\r\n".encode()
    return body, f'multipart/related; type="application/dicom"; boundary={boundary}'


def stow(client: httpx.Client, parts: Sequence[bytes], *, study: str | None = None,
         base: str = STUDIES) -> httpx.Response:
    body, content_type = multipart(parts)
    return client.post(f"{base}/{study}" if study else base, content=body,
                       headers={"Content-Type": content_type,
                                "Accept": "application/dicom+json"})


def split_multipart(response: httpx.Response) -> list[tuple[dict[str, str], bytes]]:
    """An independent reader for multipart/related answers (not the bridge's parser), used
    on the bridge's and on Orthanc's answers alike."""
    content_type = response.headers["content-type"]
    boundary = next(p.split("=", 1)[1].strip('"') for p in content_type.split(";")
                    if p.strip().startswith("boundary="))
    body = response.content
    delimiter = b"--" + boundary.encode()
    assert body.startswith(delimiter), "body must open with the first delimiter"
    assert body.rstrip(b"\r\n").endswith(delimiter + b"--"), "body must end with the close"
    parts = []
    for segment in body.split(b"\r\n" + delimiter)[:-1]:
        segment = segment.removeprefix(delimiter).removeprefix(b"\r\n")
        head, _, content = segment.partition(b"\r\n\r\n")
        headers = {}
        for line in head.decode("latin-1").split("\r\n"):
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        parts.append((headers, content))
    return parts


def reconciled_slice(session_factory: sessionmaker[Session], **attributes: Any) -> Dataset:
    """A CT slice whose accession matches an MIS order of a patient with other values than
    the modality wrote (so MIS values are visibly applied)."""
    with session_factory() as session, session.begin():
        patient = add_patient(session, MIS_NAME, [(MIS_ID, "HOSP")], birth_date="19811224",
                              sex="M")
        order = add_order(session, patient)
        accession = order.accession
    return ct_slice(study_uid=generate_uid(prefix=UID_ROOT), AccessionNumber=accession,
                    **attributes)


def values(document: dict[str, Any], tag: str) -> list[Any]:
    return list(document.get(tag, {}).get("Value", []))


# ---------------------------------------------------------------------------- STOW-RS


def test_stow_stores_through_reconciliation(api: Api) -> None:
    first = reconciled_slice(api.session_factory)
    second = ct_slice(study_uid=first.StudyInstanceUID, series_uid=first.SeriesInstanceUID,
                      number=2, AccessionNumber=first.AccessionNumber)
    with api.client("integration") as client:
        response = stow(client, [part10(first), part10(second)])
        again = stow(client, [part10(first)])  # a duplicate: stored already, so a success
    assert response.status_code == 200, response.text
    assert again.status_code == 200
    assert [values(i, "00081155") for i in values(again.json(), "00081199")] == [
        [first.SOPInstanceUID]]
    assert response.headers["content-type"] == "application/dicom+json"
    body = response.json()
    assert "00081198" not in body
    referenced = values(body, "00081199")
    assert {values(item, "00081155")[0] for item in referenced} == {
        first.SOPInstanceUID, second.SOPInstanceUID}
    assert values(referenced[0], "00081150") == [first.SOPClassUID]
    assert values(referenced[0], "00081190")[0].startswith(
        f"{api.url}{STUDIES}/{first.StudyInstanceUID}/series/{first.SeriesInstanceUID}/")
    assert values(body, "00081190") == [f"{api.url}{STUDIES}/{first.StudyInstanceUID}"]
    with api.session_factory() as session:
        study = session.execute(select(Study)).scalar_one()
        assert (study.study_instance_uid, study.reconciliation) == (
            first.StudyInstanceUID, "matched")
        assert len(session.execute(select(Instance)).all()) == 2


def test_stow_reports_each_failed_part(api: Api) -> None:
    good = ct_slice(study_uid=generate_uid(prefix=UID_ROOT))
    with api.client("integration") as client:
        partial = stow(client, [b"not a DICOM object", part10(good)])
        none = stow(client, [b"garbage", b"\x00" * 200])
    assert partial.status_code == 202
    failed = values(partial.json(), "00081198")
    assert [values(item, "00081197") for item in failed] == [[0xC000]]
    assert "00081155" not in failed[0]  # an unreadable part has no UIDs to report
    assert [values(i, "00081155") for i in values(partial.json(), "00081199")] == [
        [good.SOPInstanceUID]]
    assert none.status_code == 409
    assert len(values(none.json(), "00081198")) == 2
    assert "00081199" not in none.json()


def test_stow_to_a_study_refuses_objects_of_another(api: Api) -> None:
    target = ct_slice(study_uid=generate_uid(prefix=UID_ROOT))
    stray = ct_slice(study_uid=generate_uid(prefix=UID_ROOT))
    with api.client("integration") as client:
        response = stow(client, [part10(target), part10(stray)],
                        study=target.StudyInstanceUID)
    assert response.status_code == 202
    (failed,) = values(response.json(), "00081198")
    assert values(failed, "00081155") == [stray.SOPInstanceUID]
    assert values(failed, "00081197") == [0x0110]
    assert values(response.json(), "00081190") == [
        f"{api.url}{STUDIES}/{target.StudyInstanceUID}"]
    with api.session_factory() as session:
        stored = session.execute(select(Study.study_instance_uid)).scalars().all()
    assert stored == [target.StudyInstanceUID]


def test_stow_reads_a_body_sent_in_small_chunks(api: Api, settings: Settings) -> None:
    objects = [ct_slice(study_uid=generate_uid(prefix=UID_ROOT), number=n) for n in (1, 2)]
    body, content_type = multipart([part10(ds) for ds in objects])

    def chunks() -> Iterator[bytes]:  # 7 bytes: delimiters arrive split across chunks
        for start in range(0, len(body), 7):
            yield body[start : start + 7]

    with api.client("integration") as client:
        response = client.post(STUDIES, content=chunks(),
                               headers={"Content-Type": content_type})
    assert response.status_code == 200, response.text
    assert len(values(response.json(), "00081199")) == 2
    with api.session_factory() as session:
        paths = dict(session.execute(select(Instance.sop_instance_uid, Instance.path)).all())
    for ds in objects:  # kept byte for byte
        assert (settings.archive_root / paths[ds.SOPInstanceUID]).read_bytes() == part10(ds)
    assert list((settings.archive_root / ".incoming").iterdir()) == []  # no leftovers


def test_stow_refuses_bodies_it_cannot_read(api: Api, settings: Settings) -> None:
    data = part10(ct_slice(study_uid=generate_uid(prefix=UID_ROOT)))
    body, content_type = multipart([data])
    with api.client("integration") as client:
        not_multipart = client.post(STUDIES, content=data,
                                    headers={"Content-Type": "application/dicom"})
        json_parts = client.post(STUDIES, content=body, headers={
            "Content-Type": content_type.replace("application/dicom", "application/dicom+json")})
        no_boundary = client.post(STUDIES, content=body, headers={
            "Content-Type": 'multipart/related; type="application/dicom"'})
        wrong_boundary = client.post(STUDIES, content=body, headers={
            "Content-Type": content_type.replace("test-boundary-1137", "other")})
        xml = client.post(STUDIES, content=body, headers={
            "Content-Type": content_type, "Accept": "application/dicom+xml"})
        truncated = client.post(STUDIES, content=body[: len(body) // 2],
                                headers={"Content-Type": content_type})
    assert not_multipart.status_code == 415
    assert json_parts.status_code == 415
    assert set(not_multipart.json()) == {"error", "detail", "location"}
    assert not_multipart.json()["error"] == "unsupported_media_type"
    assert no_boundary.status_code == 400
    assert no_boundary.json()["location"] == "Content-Type"
    assert wrong_boundary.status_code == 400
    assert xml.status_code == 406
    assert xml.json()["error"] == "not_acceptable"
    assert truncated.status_code == 409  # the one part was cut off: reported, not stored
    assert values(values(truncated.json(), "00081198")[0], "00081197") == [0xC000]
    with api.session_factory() as session:
        assert session.execute(select(Instance)).first() is None
    assert list((settings.archive_root / ".incoming").iterdir()) == []


def test_dicomweb_needs_the_integration_role(api: Api) -> None:
    body, content_type = multipart([part10(ct_slice(study_uid=generate_uid(prefix=UID_ROOT)))])
    requests = [("GET", STUDIES), ("GET", f"{STUDIES}/1.2.3/metadata"),
                ("GET", f"{STUDIES}/1.2.3"), ("POST", STUDIES)]
    for role in (None, "viewer"):
        with api.client(role) as client:
            for method, path in requests:
                response = client.request(method, path, content=body if method == "POST"
                                          else None, headers={"Content-Type": content_type})
                assert response.status_code == (401 if role is None else 403), (role, path)
    with api.session_factory() as session:
        assert session.execute(select(Instance)).first() is None


# ---------------------------------------------------------------------------- QIDO-RS


def test_qido_answers_with_the_current_mis_values(api: Api) -> None:
    ds = reconciled_slice(api.session_factory, PatientName="Wrong^Name", PatientID="TYPO-1",
                          StudyDescription="Chest")
    with api.client("integration") as client:
        assert stow(client, [part10(ds)]).status_code == 200
        by_mis_id = client.get(STUDIES, params={"PatientID": MIS_ID})
        by_file_id = client.get(STUDIES, params={"PatientID": "TYPO-1"})
        by_name = client.get(STUDIES, params={"PatientName": "шевч*"})
        by_tag = client.get(STUDIES, params={"00100010": "ШЕВЧЕНКО", "StudyDate": "20261101-"})
        outside = client.get(STUDIES, params={"StudyDate": "20250101-20251231"})
        # An ADT A08 after storage: the next answer has the new name.
        with api.session_factory() as session, session.begin():
            session.execute(update(Patient).values(name="Шевченко^Тарас^Григорович",
                                                   name_search="шевченко^тарас^григорович"))
        after_update = client.get(STUDIES, params={"AccessionNumber": ds.AccessionNumber})
    assert by_mis_id.status_code == 200
    assert by_mis_id.headers["content-type"] == "application/dicom+json"
    (study,) = by_mis_id.json()
    assert study["00100010"] == {"vr": "PN", "Value": [{"Alphabetic": MIS_NAME}]}
    assert values(study, "00100020") == [MIS_ID]
    assert values(study, "00100021") == ["HOSP"]
    assert values(study, "00100030") == ["19811224"]
    assert values(study, "0020000D") == [ds.StudyInstanceUID]
    assert values(study, "00080050") == [ds.AccessionNumber]
    assert values(study, "00081030") == ["Chest"]
    assert values(study, "00080061") == ["CT"]
    assert values(study, "00201206") == [1] and values(study, "00201208") == [1]
    assert values(study, "00080056") == ["ONLINE"]
    assert values(study, "00081190") == [f"{api.url}{STUDIES}/{ds.StudyInstanceUID}"]
    assert study["00080090"] == {"vr": "PN"}  # empty: present without a value
    assert list(study) == sorted(study)
    assert by_file_id.json() == []  # the file's PatientID is not the patient's any more
    assert [values(s, "0020000D") for s in by_name.json()] == [[ds.StudyInstanceUID]]
    assert [values(s, "0020000D") for s in by_tag.json()] == [[ds.StudyInstanceUID]]
    assert outside.status_code == 200 and outside.json() == []
    assert after_update.json()[0]["00100010"]["Value"] == [
        {"Alphabetic": "Шевченко^Тарас^Григорович"}]


def test_qido_series_and_instances_with_paging(api: Api) -> None:
    study_uid = generate_uid(prefix=UID_ROOT)
    ct_series, mr_series = generate_uid(prefix=UID_ROOT), generate_uid(prefix=UID_ROOT)
    objects = [ct_slice(study_uid=study_uid, series_uid=ct_series, number=n) for n in (1, 2, 3)]
    objects.append(ct_slice(study_uid=study_uid, series_uid=mr_series, number=1, Modality="MR",
                            SeriesNumber=2, SeriesDescription="T2"))
    with api.client("integration") as client:
        assert stow(client, [part10(ds) for ds in objects]).status_code == 200
        series = client.get(f"{STUDIES}/{study_uid}/series").json()
        mr_only = client.get("/dicomweb/series", params={"Modality": "MR"}).json()
        listed = client.get("/dicomweb/series", params={"Modality": "CT,MR"}).json()
        pages = [client.get(f"{STUDIES}/{study_uid}/instances",
                            params={"limit": 2, "offset": offset}).json() for offset in (0, 2, 4)]
        in_series = client.get(f"{STUDIES}/{study_uid}/series/{ct_series}/instances",
                               params={"InstanceNumber": "2,3"}).json()
        by_sop = client.get("/dicomweb/instances",
                            params={"SOPInstanceUID": objects[3].SOPInstanceUID}).json()
        everything = client.get(f"{STUDIES}/{study_uid}/series",
                                params={"includefield": "all"}).json()
    assert sorted(values(s, "0020000E")[0] for s in series) == sorted([ct_series, mr_series])
    assert {values(s, "00080060")[0]: values(s, "00201209") for s in series} == {
        "CT": [3], "MR": [1]}
    assert [values(s, "0008103E") for s in mr_only] == [["T2"]]
    assert values(mr_only[0], "00081190") == [
        f"{api.url}{STUDIES}/{study_uid}/series/{mr_series}"]
    assert len(listed) == 2
    assert [len(page) for page in pages] == [2, 2, 0]
    uids = [values(i, "00080018")[0] for page in pages for i in page]
    assert sorted(uids) == sorted(ds.SOPInstanceUID for ds in objects)
    assert sorted(values(i, "00200013")[0] for i in in_series) == [2, 3]
    (instance,) = by_sop
    assert values(instance, "00080016") == [objects[3].SOPClassUID]
    assert values(instance, "0020000D") == [study_uid]  # study context in instance matches
    assert values(instance, "00081190") == [
        f"{api.url}{STUDIES}/{study_uid}/series/{mr_series}/instances/"
        f"{objects[3].SOPInstanceUID}"]
    assert all("00201206" in s for s in everything)  # all: the study's counts too


def test_qido_refuses_bad_parameters_and_warns_of_ignored_ones(api: Api) -> None:
    bad = [{"NoSuchKeyword": "x"}, {"StudyDate": "2026-11-22"}, {"limit": "ten"},
           {"limit": "0"}, {"offset": "-1"}, {"SOPInstanceUID": "1.2.3"},
           {"StudyInstanceUID": "1.2.abc"}, {"includefield": "NoSuchAttribute"},
           {"fuzzymatching": "maybe"}]
    with api.client("integration") as client:
        answers = [client.get(STUDIES, params=params) for params in bad]
        ignored = client.get(STUDIES, params={"InstitutionName": "Kyiv*",
                                              "fuzzymatching": "true"})
        bad_path = client.get(f"{STUDIES}/not-a-uid/series")
        xml = client.get(STUDIES, headers={"Accept": "application/dicom+xml"})
    for params, response in zip(bad, answers, strict=True):
        assert response.status_code == 400, params
        body = response.json()
        assert set(body) == {"error", "detail", "location"}
        assert body["location"] == next(iter(params)), params
    assert ignored.status_code == 200
    warnings = ignored.headers.get_list("warning")
    assert len(warnings) == 2 and all(w.startswith("299 ") for w in warnings)
    assert any("InstitutionName" in w for w in warnings)
    assert any("fuzzymatching" in w for w in warnings)
    assert bad_path.status_code == 400
    assert xml.status_code == 406


def test_qido_warns_when_the_server_cuts_the_answer(
        api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dicomweb_qido, "MAX_LIMIT", 2)
    objects = [ct_slice(study_uid=generate_uid(prefix=UID_ROOT)) for _ in range(3)]
    with api.client("integration") as client:
        assert stow(client, [part10(ds) for ds in objects]).status_code == 200
        cut = client.get(STUDIES)
        asked_for_two = client.get(STUDIES, params={"limit": 2})
        rest = client.get(STUDIES, params={"offset": 2})
    assert len(cut.json()) == 2
    assert any("offset" in w for w in cut.headers.get_list("warning"))
    assert len(asked_for_two.json()) == 2
    assert asked_for_two.headers.get_list("warning") == []  # the client chose the page
    assert len(rest.json()) == 1 and rest.headers.get_list("warning") == []


# ---------------------------------------------------------------------------- WADO-RS


def test_wado_streams_objects_with_the_current_mis_values(api: Api, settings: Settings) -> None:
    first = reconciled_slice(api.session_factory, PatientName="Wrong^Name",
                             rows=256, columns=256)
    second = ct_slice(study_uid=first.StudyInstanceUID, series_uid=first.SeriesInstanceUID,
                      number=2, AccessionNumber=first.AccessionNumber, rows=256, columns=256)
    sent = {ds.SOPInstanceUID: ds for ds in (first, second)}
    with api.client("integration") as client:
        assert stow(client, [part10(first), part10(second)]).status_code == 200
        with api.session_factory() as session:
            files = {p: (settings.archive_root / p).read_bytes()
                     for p in session.execute(select(Instance.path)).scalars()}
        with client.stream("GET", f"{STUDIES}/{first.StudyInstanceUID}",
                           headers={"Accept": ANY_SYNTAX}) as response:
            response.read()
    assert response.status_code == 200
    assert response.headers["content-type"].startswith(
        'multipart/related; type="application/dicom"; boundary=')
    # Streamed: sent in chunks, its length unknown when the answer started.
    assert response.headers.get("transfer-encoding") == "chunked"
    assert "content-length" not in response.headers
    parts = split_multipart(response)
    assert len(parts) == 2
    for headers, content in parts:
        assert headers["content-type"] == (
            f"application/dicom; transfer-syntax={ExplicitVRLittleEndian}")
        assert int(headers["content-length"]) == len(content)
        ds = dcmread(io.BytesIO(content))
        original = sent[ds.SOPInstanceUID]
        assert (str(ds.PatientName), ds.PatientID, ds.PatientBirthDate) == (
            MIS_NAME, MIS_ID, "19811224")
        assert ds.PixelData == original.PixelData
        modified = ds.OriginalAttributesSequence[-1].ModifiedAttributesSequence[0]
        assert str(modified.PatientName) == str(original.PatientName)
    with api.session_factory() as session:  # the files stay as received
        for path, data in files.items():
            assert (settings.archive_root / path).read_bytes() == data


def test_wado_series_instance_and_unknown_resources(api: Api) -> None:
    study_uid = generate_uid(prefix=UID_ROOT)
    one = ct_slice(study_uid=study_uid)
    other = ct_slice(study_uid=study_uid, number=2)  # its own series
    with api.client("integration") as client:
        assert stow(client, [part10(one), part10(other)]).status_code == 200
        series = client.get(f"{STUDIES}/{study_uid}/series/{one.SeriesInstanceUID}")
        instance = client.get(f"{STUDIES}/{study_uid}/series/{other.SeriesInstanceUID}"
                              f"/instances/{other.SOPInstanceUID}", headers={"Accept": "*/*"})
        crossed = client.get(f"{STUDIES}/{study_uid}/series/{one.SeriesInstanceUID}"
                             f"/instances/{other.SOPInstanceUID}")
        unknown = client.get(f"{STUDIES}/1.2.3.4")
        bad_uid = client.get(f"{STUDIES}/{study_uid}x")
        json_only = client.get(f"{STUDIES}/{study_uid}", headers={"Accept": "application/json"})
    assert [dcmread(io.BytesIO(c)).SOPInstanceUID for _, c in split_multipart(series)] == [
        one.SOPInstanceUID]
    assert [dcmread(io.BytesIO(c)).SOPInstanceUID for _, c in split_multipart(instance)] == [
        other.SOPInstanceUID]
    assert crossed.status_code == 404
    assert unknown.status_code == 404
    assert unknown.json() == {"error": "not_found", "detail": "no such study in the archive",
                              "location": "study"}
    assert bad_uid.status_code == 400
    assert json_only.status_code == 406


def test_a_missing_file_is_an_error_before_anything_streams(api: Api,
                                                            settings: Settings) -> None:
    ds = ct_slice(study_uid=generate_uid(prefix=UID_ROOT))
    with api.client("integration") as client:
        assert stow(client, [part10(ds)]).status_code == 200
        with api.session_factory() as session:
            (settings.archive_root / session.execute(select(Instance.path)).scalar_one()).unlink()
        response = client.get(f"{STUDIES}/{ds.StudyInstanceUID}")
    assert response.status_code == 500
    assert response.json()["detail"] == (
        "a stored file of the requested objects is missing from the archive")


def test_wado_transfer_syntax_negotiation(api: Api, tmp_path: Path) -> None:
    study_uid = generate_uid(prefix=UID_ROOT)
    implicit = ct_slice(study_uid=study_uid)
    implicit.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
    native = tmp_path / "native.dcm"
    dcmwrite(native, ct_slice(study_uid=study_uid, number=2), enforce_file_format=True)
    subprocess.run([require_tool("dcmcrle"), str(native), str(tmp_path / "rle.dcm")],
                   check=True, capture_output=True, timeout=60)
    rle = (tmp_path / "rle.dcm").read_bytes()
    rle_ds = dcmread(io.BytesIO(rle))
    implicit_url = (f"{STUDIES}/{study_uid}/series/{implicit.SeriesInstanceUID}"
                    f"/instances/{implicit.SOPInstanceUID}")
    with api.client("integration") as client:
        assert stow(client, [part10(implicit), rle]).status_code == 200
        default = client.get(implicit_url)
        as_stored = client.get(implicit_url, headers={"Accept": ANY_SYNTAX})
        study_default = client.get(f"{STUDIES}/{study_uid}")
        study_any = client.get(f"{STUDIES}/{study_uid}", headers={"Accept": ANY_SYNTAX})
        jpeg_ls = client.get(implicit_url, headers={"Accept": (
            'multipart/related; type="application/dicom"; transfer-syntax=1.2.840.10008.1.2.4.80')})
        # Bulk data: found in an implicit VR file; compressed pixel data is not served so.
        metadata = {values(d, "00080018")[0]: d for d in
                    client.get(f"{STUDIES}/{study_uid}/metadata").json()}
        implicit_bulk = client.get(metadata[implicit.SOPInstanceUID]["7FE00010"]["BulkDataURI"])
        rle_pixels = metadata[rle_ds.SOPInstanceUID]["7FE00010"]
        rle_bulk = client.get(rle_pixels["BulkDataURI"])
    (headers, content), = split_multipart(default)
    assert headers["content-type"].endswith(f"transfer-syntax={ExplicitVRLittleEndian}")
    converted = dcmread(io.BytesIO(content))
    assert converted.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert converted.PixelData == implicit.PixelData
    (headers, content), = split_multipart(as_stored)
    assert headers["content-type"].endswith(f"transfer-syntax={ImplicitVRLittleEndian}")
    assert dcmread(io.BytesIO(content)).file_meta.TransferSyntaxUID == ImplicitVRLittleEndian
    # A compressed object is decompressed for the default syntax (PS3.18: Explicit VR LE).
    decompressed = {dcmread(io.BytesIO(c)).SOPInstanceUID: (h["content-type"], dcmread(
        io.BytesIO(c))) for h, c in split_multipart(study_default)}
    rle_type, rle_out = decompressed[rle_ds.SOPInstanceUID]
    assert rle_type.endswith(f"transfer-syntax={ExplicitVRLittleEndian}")
    assert rle_out.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert rle_out.PixelData == dcmread(native).PixelData
    syntaxes = {dcmread(io.BytesIO(c)).SOPInstanceUID: h["content-type"].rsplit("=", 1)[1]
                for h, c in split_multipart(study_any)}
    assert syntaxes == {implicit.SOPInstanceUID: ImplicitVRLittleEndian,
                        rle_ds.SOPInstanceUID: RLELossless}
    assert jpeg_ls.status_code == 406
    assert metadata[implicit.SOPInstanceUID]["7FE00010"]["vr"] == "OW"
    ((_, pixels),) = split_multipart(implicit_bulk)
    assert pixels == implicit.PixelData
    assert rle_pixels["vr"] == "OB"
    assert rle_bulk.status_code == 406


def test_wado_metadata_is_the_patched_header_with_bulk_data_references(api: Api) -> None:
    ds = reconciled_slice(api.session_factory, PatientName="Wrong^Name", PatientID="TYPO-1")
    ds.add_new(0x00091010, "LO", "PRIVATE CREATOR")  # survives as in the file
    series_url = f"{STUDIES}/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}"
    with api.client("integration") as client:
        assert stow(client, [part10(ds)]).status_code == 200
        study = client.get(f"{STUDIES}/{ds.StudyInstanceUID}/metadata")
        series = client.get(f"{series_url}/metadata")
        instance = client.get(f"{series_url}/instances/{ds.SOPInstanceUID}/metadata",
                              headers={"Accept": "application/dicom+json"})
        xml = client.get(f"{STUDIES}/{ds.StudyInstanceUID}/metadata",
                         headers={"Accept": 'multipart/related; type="application/dicom+xml"'})
        (document,) = study.json()
        bulk_uri = document["7FE00010"]["BulkDataURI"]
        bulk = client.get(bulk_uri)
        no_bulk = client.get(bulk_uri.replace("7fe00010", "7fe00011"))
    assert study.status_code == 200
    assert study.headers["content-type"] == "application/dicom+json"
    # The same header each time, but for the moment it was patched.
    timeless = [{k: v for k, v in d.items() if k not in ("00080015", "04000561")}
                for answer in (study, series, instance) for d in answer.json()]
    assert timeless[0] == timeless[1] == timeless[2]
    assert document["00100010"] == {"vr": "PN", "Value": [{"Alphabetic": MIS_NAME}]}
    assert values(document, "00100020") == [MIS_ID]
    assert values(document, "00080018") == [ds.SOPInstanceUID]
    assert values(document, "00280010") == [16]
    assert document["7FE00010"]["vr"] == "OW" and "Value" not in document["7FE00010"]
    assert bulk_uri == (f"{api.url}{series_url}/instances/{ds.SOPInstanceUID}/bulk/7fe00010")
    # What the file said before the MIS values were applied.
    (original,) = values(document, "04000561")
    (previous,) = values(original, "04000550")
    assert previous["00100010"]["Value"] == [{"Alphabetic": "Wrong^Name"}]
    assert xml.status_code == 406
    ((headers, content),) = split_multipart(bulk)
    assert bulk.headers["content-type"].startswith(
        'multipart/related; type="application/octet-stream"; boundary=')
    assert headers["content-type"] == "application/octet-stream"
    assert content == ds.PixelData
    assert no_bulk.status_code == 404


# ---------------------------------------------------------------- Orthanc comparison


#: Attributes whose values differ on purpose: the bridge applies the MIS patient.
MIS_TAGS = {"00100010", "00100020", "00100021", "00100030", "00100040"}
#: Attributes only the bridge adds, on purpose: the coercion record (PS3.3 C.12.1.1.9) and
#: the Request Attributes Sequence of the MIS order; ISO_IR 192 because the MIS name is
#: Cyrillic.
BRIDGE_ONLY_METADATA = {"00080005", "00080015", "00400275", "04000561", "00100021"}
#: Attributes Orthanc's plugin answers in QIDO that the bridge's index does not hold
#: (image geometry comes from the file, which a search does not open).
ORTHANC_ONLY_QIDO = {"00280010", "00280011", "00280100"}


def test_shapes_match_orthanc_dicomweb(api: Api, tmp_path: Path) -> None:
    ds = reconciled_slice(api.session_factory, PatientName="Wrong^Name", PatientID="TYPO-1",
                          SeriesDescription="axial")
    data = part10(ds)
    study_url = f"/{ds.StudyInstanceUID}"
    series_url = f"{study_url}/series/{ds.SeriesInstanceUID}"
    with running_orthanc(tmp_path / "orthanc", plugins=[DICOMWEB_PLUGIN]) as orthanc, \
            api.client("integration") as bridge:
        ours = stow(bridge, [data])
        theirs = stow(orthanc.http, [data], base="/dicom-web/studies")
        assert (ours.status_code, theirs.status_code) == (200, 200), theirs.text
        answers: dict[str, tuple[Any, Any]] = {}
        for name, path in [("studies", ""), ("series", f"{study_url}/series"),
                           ("instances", f"{series_url}/instances"),
                           ("metadata", f"{study_url}/metadata")]:
            answers[name] = (bridge.get(f"{STUDIES}{path}").json(),
                             orthanc.http.get(f"/dicom-web/studies{path}").json())
        retrieved = (bridge.get(f"{STUDIES}{study_url}", headers={"Accept": ANY_SYNTAX}),
                     orthanc.http.get(f"/dicom-web/studies{study_url}",
                                      headers={"Accept": ANY_SYNTAX}))

    # STOW-RS: the same response attributes, each stored object referenced the same way.
    ours_stow, theirs_stow = ours.json(), theirs.json()
    for tag in ("00081190", "00081199"):
        assert ours_stow[tag]["vr"] == theirs_stow[tag]["vr"], tag
    assert set(values(ours_stow, "00081199")[0]) == set(values(theirs_stow, "00081199")[0])

    # QIDO-RS: every attribute Orthanc answers (but image geometry) the bridge answers with
    # the same VR and value shape; values equal except the MIS patient's.
    for level, (bridge_json, orthanc_json) in answers.items():
        if level == "metadata":
            continue
        (mine,), (peer,) = bridge_json, orthanc_json
        assert set(peer) - set(mine) <= ORTHANC_ONLY_QIDO, level
        for tag in set(peer) & set(mine):
            assert mine[tag]["vr"] == peer[tag]["vr"], (level, tag)
            if tag in MIS_TAGS:
                continue  # different on purpose: the database is the truth
            if tag in ("00081190", "00080005"):
                continue  # URLs name each server; charset: ISO_IR 192 vs Orthanc's default
            assert mine[tag].get("Value") == peer[tag].get("Value"), (level, tag)
        assert mine["00100010"]["Value"] == [{"Alphabetic": MIS_NAME}]
        assert peer["00100010"]["Value"] == [{"Alphabetic": "Wrong^Name"}]
        assert values(mine, "00100020") == [MIS_ID] and values(peer, "00100020") == ["TYPO-1"]
        for url_of in (mine, peer):
            assert values(url_of, "00081190")[0].endswith(
                {"studies": study_url, "series": series_url}.get(
                    level, f"{series_url}/instances/{ds.SOPInstanceUID}"))

    # WADO-RS metadata: the same attributes with the same VRs; the pixel data by reference.
    (mine,), (peer,) = answers["metadata"]
    assert set(peer) <= set(mine)
    assert set(mine) - set(peer) <= BRIDGE_ONLY_METADATA
    for tag in peer:
        assert mine[tag]["vr"] == peer[tag]["vr"], tag
        assert ("Value" in mine[tag]) == ("Value" in peer[tag]), tag
        assert ("BulkDataURI" in mine[tag]) == ("BulkDataURI" in peer[tag]), tag
        if tag not in MIS_TAGS and "Value" in peer[tag]:
            assert mine[tag]["Value"] == peer[tag]["Value"], tag

    # WADO-RS retrieve: both bodies split the same way into one application/dicom part.
    (mine_part,), (peer_part,) = (split_multipart(r) for r in retrieved)
    assert mine_part[0]["content-type"].split(";")[0] == peer_part[0]["content-type"]
    assert int(mine_part[0]["content-length"]) == len(mine_part[1])
    assert int(peer_part[0]["content-length"]) == len(peer_part[1])
    assert hashlib.sha256(peer_part[1]).digest() == hashlib.sha256(data).digest()
    ours_ds, theirs_ds = dcmread(io.BytesIO(mine_part[1])), dcmread(io.BytesIO(peer_part[1]))
    assert ours_ds.PixelData == theirs_ds.PixelData == ds.PixelData
    assert ours_ds.SOPInstanceUID == theirs_ds.SOPInstanceUID
    assert (str(ours_ds.PatientName), str(theirs_ds.PatientName)) == (MIS_NAME, "Wrong^Name")
