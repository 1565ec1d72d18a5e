"""Lossless compression with real parts: the whole bridge taking in a study by DCMTK
storescu, compressing it once stable (a durable job), then serving it to peers that do and do
not accept the stored syntax (DCMTK storescp by C-MOVE, getscu by C-GET, WADO-RS). DCMTK's
own decoders (dcmdjpls, dcmdrle) check what was written, independently of pydicom.
"""

from __future__ import annotations

import hashlib
import io
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.filewriter import dcmwrite
from pydicom.uid import (
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGLSLossless,
    RLELossless,
    generate_uid,
)
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from bridge.config.settings import DicomPeer, Settings
from bridge.jobs.queue import ClaimedJob
from bridge.mapping.compression.rules import parse_compression_rules
from bridge.services.archive.store import ArchiveStore, Arrival
from bridge.services.auth.tokens import create_token
from bridge.services.compression.compressor import COMPRESSED_EVENT, Compressor
from bridge.services.compression.replace import (
    Candidate,
    commit_replacement,
    orphans,
    prepare_replacement,
    remove_unreferenced,
)
from bridge.store.archive_models import Instance, Study, StudyEvent
from bridge.store.models import utcnow
from tests.conftest import free_port, require_tool
from tests.dicom_factories import UID_ROOT, ct_slice
from tests.hl7_harness import running_bridge
from tests.integration.test_qr_scp import _wait_for_port
from tests.waiting import eventually

pytestmark = pytest.mark.integration

ANY_SYNTAX = 'multipart/related; type="application/dicom"; transfer-syntax=*'


def phantom(number: int, *, size: int = 64) -> bytes:
    """A CT-like 12-bit slice: air, a body ellipse with soft tissue, bone, and noise."""
    y, x = np.mgrid[-1:1:size * 1j, -1:1:size * 1j]
    values = np.full((size, size), 24.0)  # air (-1000 HU + 1024)
    values[(x / 0.8) ** 2 + (y / 0.6) ** 2 < 1] = 1064.0  # soft tissue
    values[(x - 0.3) ** 2 + y ** 2 < 0.02] = 2200.0  # bone
    values += np.random.default_rng(number).normal(0, 12, values.shape)
    return np.clip(np.rint(values), 0, 4095).astype("<u2").tobytes()


def ct_object(study_uid: str, series_uid: str, number: int, **attributes: Any) -> Dataset:
    ds = ct_slice(study_uid=study_uid, series_uid=series_uid, number=number, rows=64,
                  columns=64, **attributes)
    ds.PixelData = phantom(number)
    return ds


def write(ds: Dataset, path: Path) -> Path:
    dcmwrite(path, ds, enforce_file_format=True)
    return path


def rules_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "compression.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def dcmtk_decoded(tool: str, path: Path, tmp_path: Path) -> Dataset:
    """The file decoded by DCMTK (dcmdjpls, dcmdrle): an independent decoder."""
    out = tmp_path / f"{path.name}.{tool}.dcm"
    subprocess.run([require_tool(tool), str(path), str(out)], check=True,
                   capture_output=True, timeout=60)
    return dcmread(out)


@pytest.fixture
def storescp_uncompressed(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    """DCMTK storescp with its defaults: it accepts uncompressed transfer syntaxes only."""
    yield from _storescp(tmp_path / "plain")


@pytest.fixture
def storescp_jpeg_ls(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    """DCMTK storescp preferring (so accepting) JPEG-LS lossless."""
    yield from _storescp(tmp_path / "jls", "+xt")


def _storescp(received: Path, *options: str) -> Iterator[tuple[int, Path]]:
    tool = require_tool("storescp")
    received.mkdir()
    port = free_port()
    process = subprocess.Popen([tool, *options, "-aet", "STORESCP", "-od", str(received),
                                str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        _wait_for_port(port, process)
        yield port, received
    finally:
        process.terminate()
        process.wait(timeout=10)


# --- the whole bridge: ingest rule, job, retrieval by peers ---------------------------------


def test_a_stable_study_is_compressed_and_served_to_every_kind_of_peer(
        settings: Settings, session_factory: sessionmaker[Session], tmp_path: Path,
        storescp_uncompressed: tuple[int, Path], storescp_jpeg_ls: tuple[int, Path]) -> None:
    study_uid = generate_uid(prefix=UID_ROOT)
    series_uid = generate_uid(prefix=UID_ROOT)
    sent = tmp_path / "sent"
    sent.mkdir()
    originals = {}
    for number in (1, 2, 3):
        ds = ct_object(study_uid, series_uid, number)
        originals[ds.SOPInstanceUID] = ds.PixelData
        write(ds, sent / f"ct{number}.dcm")
    # Left as is: values above Bits Stored (12), and an object the modality compressed.
    overlay = ct_object(study_uid, series_uid, 4)
    raw = bytearray(overlay.PixelData)
    raw[0:2] = (0xF00D).to_bytes(2, "little")
    overlay.PixelData = bytes(raw)
    write(overlay, sent / "overlay.dcm")
    rle_source = write(ct_object(study_uid, series_uid, 5), tmp_path / "native5.dcm")
    subprocess.run([require_tool("dcmcrle"), str(rle_source), str(sent / "rle.dcm")],
                   check=True, capture_output=True, timeout=60)
    rules = rules_file(tmp_path, "rules:\n  - {name: ct-now, modality: CT, when: ingest}\n")
    plain_port, plain_dir = storescp_uncompressed
    jls_port, jls_dir = storescp_jpeg_ls
    configured = settings.model_copy(update={
        "study_stable_seconds": 1.0, "worker_poll_seconds": 0.2,
        "compression_rules": rules, "compression_keep_original_seconds": 0.0,
        "dicom_peers": (
            DicomPeer(ae_title="PLAIN", host="127.0.0.1", port=plain_port, role="scp"),
            DicomPeer(ae_title="JLS", host="127.0.0.1", port=jls_port, role="scp")),
    })
    with running_bridge(configured) as bridge:
        # One association per transfer syntax (-xr: propose RLE lossless).
        for options, files in (((), [p for p in sorted(sent.iterdir()) if p.name != "rle.dcm"]),
                               (("-xr",), [sent / "rle.dcm"])):
            done = subprocess.run([require_tool("storescu"), *options, "-aet", "CT_SCANNER_1",
                                   "-aec", "BRIDGE", "127.0.0.1", str(bridge.dicom_port),
                                   *map(str, files)],
                                  capture_output=True, text=True, timeout=60, check=False)
            assert done.returncode == 0, done.stderr
        with session_factory() as session:
            received_paths = dict(session.execute(
                select(Instance.sop_instance_uid, Instance.path)).all())

        def compressed_event() -> StudyEvent | None:
            # One event per run; a late object (re-opening the study) makes a second run.
            with session_factory() as session:
                events = session.execute(select(StudyEvent).where(
                    StudyEvent.kind == COMPRESSED_EVENT)).scalars().all()
            return next((e for e in events if e.details["instances"] == 3), None)

        event = eventually(compressed_event)
        with session_factory() as session:
            rows = {i.sop_instance_uid: i for i in session.execute(select(Instance)).scalars()}
            study = session.execute(select(Study)).scalar_one()
        root = configured.archive_root
        # Old files go once the removal job ran (the grace period is 0 here).
        eventually(lambda: not any((root / received_paths[uid]).exists() for uid in originals))

        # C-MOVE to a peer taking only uncompressed syntaxes, and to one taking JPEG-LS.
        for destination in ("PLAIN", "JLS"):
            moved = subprocess.run(
                [require_tool("movescu"), "-S", "-aet", "VIEWER", "-aec", "BRIDGE",
                 "-aem", destination, "-k", "QueryRetrieveLevel=STUDY",
                 "-k", f"StudyInstanceUID={study_uid}", "127.0.0.1", str(bridge.dicom_port)],
                capture_output=True, text=True, timeout=60, check=False)
            assert moved.returncode == 0, moved.stderr
        # C-GET by a requestor proposing uncompressed syntaxes only (getscu's default).
        got_dir = tmp_path / "got"
        got_dir.mkdir()
        got = subprocess.run(
            [require_tool("getscu"), "-S", "-aet", "GETSCU", "-aec", "BRIDGE", "-od",
             str(got_dir), "-k", "QueryRetrieveLevel=STUDY",
             "-k", f"StudyInstanceUID={study_uid}", "127.0.0.1", str(bridge.dicom_port)],
            capture_output=True, text=True, timeout=60, check=False)
        assert got.returncode == 0, got.stderr
        with session_factory() as session:
            token = create_token(session, role="integration", name="compression")
            session.commit()
        with httpx.Client(base_url=f"http://127.0.0.1:{bridge.http_port}", timeout=30,
                          headers={"Authorization": f"Bearer {token}"}) as client:
            url = f"/dicomweb/studies/{study_uid}"
            default = client.get(url)
            as_stored = client.get(url, headers={"Accept": ANY_SYNTAX})

    # The index: new syntax, sizes, checksums, the original's size and syntax.
    compressed = [rows[uid] for uid in originals]
    for row in compressed:
        stored = root / row.path
        data = stored.read_bytes()
        assert row.transfer_syntax_uid == JPEGLSLossless
        assert row.original_transfer_syntax_uid == ExplicitVRLittleEndian
        assert row.compressed_at is not None and row.original_size is not None
        assert row.size == len(data) < row.original_size
        assert row.sha256 == hashlib.sha256(data).hexdigest()
        assert row.path != received_paths[row.sop_instance_uid]
        # DCMTK decodes what we wrote to exactly the pixels the modality sent.
        decoded = dcmtk_decoded("dcmdjpls", stored, tmp_path)
        assert decoded.PixelData == originals[row.sop_instance_uid]
        assert decoded.SOPInstanceUID == row.sop_instance_uid
    total_original = sum(r.original_size or 0 for r in compressed)
    total = sum(r.size for r in compressed)
    assert event.details["instances"] == 3
    assert event.details["ratio"] == pytest.approx(total_original / total, rel=1e-3)
    assert event.details["ratio"] > 1.5  # the phantom compresses well
    assert event.details["skipped"]["pixel values use bits above the 12 bits stored"] == 1
    assert study.size_bytes == sum(r.size for r in rows.values())
    untouched = [r for uid, r in rows.items() if uid not in originals]
    assert {r.transfer_syntax_uid for r in untouched} == {ExplicitVRLittleEndian, RLELossless}
    assert all(r.compressed_at is None and r.original_size is None for r in untouched)
    assert all((root / r.path).exists() for r in untouched)

    # The uncompressed-only peers got decoded objects equal to the originals.
    for folder in (plain_dir, got_dir):
        files = {ds.SOPInstanceUID: ds for ds in map(dcmread, folder.iterdir())}
        assert set(files) == set(rows)
        for uid, pixels in originals.items():
            assert files[uid].file_meta.TransferSyntaxUID != JPEGLSLossless
            assert files[uid].PixelData == pixels
        # The modality's RLE object as well (decompressed: the peer refused RLE).
        assert not files[untouched_uid(untouched, RLELossless)].file_meta \
            .TransferSyntaxUID.is_compressed
    # The JPEG-LS peer got the stored encoding itself.
    files = {ds.SOPInstanceUID: ds for ds in map(dcmread, jls_dir.iterdir())}
    for uid in originals:
        assert files[uid].file_meta.TransferSyntaxUID == JPEGLSLossless
        assert files[uid].PixelData == dcmread(root / rows[uid].path).PixelData

    # WADO-RS: Explicit VR Little Endian by default (decompressed), as stored with "*".
    assert default.status_code == 200 and as_stored.status_code == 200
    by_default = {ds.SOPInstanceUID: ds for ds in parts(default)}
    stored_form = {ds.SOPInstanceUID: ds for ds in parts(as_stored)}
    for uid, pixels in originals.items():
        assert by_default[uid].file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
        assert by_default[uid].PixelData == pixels
        assert stored_form[uid].file_meta.TransferSyntaxUID == JPEGLSLossless
    rle_uid = untouched_uid(untouched, RLELossless)
    assert stored_form[rle_uid].file_meta.TransferSyntaxUID == RLELossless
    assert by_default[rle_uid].file_meta.TransferSyntaxUID == ExplicitVRLittleEndian


def untouched_uid(rows: list[Instance], syntax: str) -> str:
    (uid,) = [r.sop_instance_uid for r in rows if r.transfer_syntax_uid == syntax]
    return uid


def parts(response: httpx.Response) -> list[Dataset]:
    boundary = response.headers["content-type"].split("boundary=")[1].strip('"')
    found = []
    for chunk in response.content.split(b"--" + boundary.encode())[1:-1]:
        _head, _, body = chunk.partition(b"\r\n\r\n")
        found.append(dcmread(io.BytesIO(body.removesuffix(b"\r\n"))))
    return found


# --- the migration hook, other codecs -------------------------------------------------------


def store(settings: Settings, session_factory: sessionmaker[Session], paths: list[Path]
          ) -> int:
    archive = ArchiveStore(settings, session_factory)
    study_ids = {archive.accept(Arrival(path, calling_ae="CT1", disposable=False)).study_id
                 for path in paths}
    (study_id,) = study_ids
    return study_id


def test_migration_rules_compress_with_rle_and_jpeg2000_and_respect_the_age(
        settings: Settings, session_factory: sessionmaker[Session], tmp_path: Path) -> None:
    study_uid = generate_uid(prefix=UID_ROOT)
    ct_series, mr_series, pt_series = (generate_uid(prefix=UID_ROOT) for _ in range(3))
    objects = [ct_object(study_uid, ct_series, 1),
               ct_object(study_uid, mr_series, 2, Modality="MR"),
               ct_object(study_uid, pt_series, 3, Modality="PT")]
    paths = [write(ds, tmp_path / f"in{n}.dcm") for n, ds in enumerate(objects)]
    study_id = store(settings, session_factory, paths)
    rules = parse_compression_rules({"rules": [
        {"name": "ct-rle", "modality": "CT", "codec": "rle", "when": "migration"},
        {"name": "mr-j2k", "modality": "MR", "codec": "jpeg2000", "when": "ingest"},
        {"name": "pt-later", "modality": "PT", "when": "migration", "min_age_days": 30},
    ]})
    compressor = Compressor(settings, session_factory, rules=rules)

    with session_factory() as session:
        compressor.compress_study_for_migration(session, study_id)

    with session_factory() as session:
        rows = {i.sop_instance_uid: i for i in session.execute(select(Instance)).scalars()}
        (event,) = session.execute(select(StudyEvent).where(
            StudyEvent.kind == COMPRESSED_EVENT)).scalars()
    root = settings.archive_root
    ct, mr, pt = (rows[ds.SOPInstanceUID] for ds in objects)
    assert ct.transfer_syntax_uid == RLELossless
    assert dcmtk_decoded("dcmdrle", root / ct.path, tmp_path).PixelData == objects[0].PixelData
    # DCMTK has no JPEG 2000 decoder: OpenJPEG (through pydicom) checks it.
    assert mr.transfer_syntax_uid == JPEG2000Lossless
    mr_file = dcmread(root / mr.path)
    assert mr_file.pixel_array.tobytes() == objects[1].PixelData
    assert pt.transfer_syntax_uid == ExplicitVRLittleEndian and pt.compressed_at is None
    assert event.details["when"] == "migration"
    assert event.details["codecs"] == {"rle": 1, "jpeg2000": 1}
    assert event.details["skipped"] == {"younger than rule pt-later's min_age_days": 1}
    # The originals stay for the grace period (BRIDGE_COMPRESSION_KEEP_ORIGINAL_SECONDS).
    assert settings.compression_keep_original_seconds > 0
    with session_factory() as session:
        leftovers = orphans(session, root, str(Path(ct.path).parent.parent))
    assert len(leftovers) == 2  # the replaced originals of CT and MR, nothing else


def test_the_ingest_hook_queues_a_job_only_for_studies_a_rule_gives_to_ingest(
        settings: Settings, session_factory: sessionmaker[Session], tmp_path: Path) -> None:
    ct_study = store(settings, session_factory, [write(ct_object(
        generate_uid(prefix=UID_ROOT), generate_uid(prefix=UID_ROOT), 1), tmp_path / "a.dcm")])
    mr_study = store(settings, session_factory, [write(ct_object(
        generate_uid(prefix=UID_ROOT), generate_uid(prefix=UID_ROOT), 1, Modality="MR"),
        tmp_path / "b.dcm")])
    rules = parse_compression_rules({"rules": [
        {"name": "ct-week", "modality": "CT", "when": "ingest", "min_age_days": 7},
        {"name": "rest", "when": "migration"}]})
    compressor = Compressor(settings, session_factory, rules=rules)
    with session_factory.begin() as session:
        compressor.study_hook(session, ct_study)
        compressor.study_hook(session, mr_study)
    from bridge.store.archive_models import Job

    with session_factory() as session:
        jobs = session.execute(select(Job)).scalars().all()
    assert [(j.queue, j.payload) for j in jobs] == [("compress", {"study_id": ct_study})]
    # Due a week after the object arrived, not now.
    due = jobs[0].next_attempt_at
    days = (due.replace(tzinfo=None) - utcnow().replace(tzinfo=None)).total_seconds() / 86400
    assert 6.9 < days <= 7.0


# --- the replacement, step by step -----------------------------------------------------------


def candidate_of(session_factory: sessionmaker[Session], sop_uid: str) -> Candidate:
    with session_factory() as session:
        row = session.execute(select(Instance).where(
            Instance.sop_instance_uid == sop_uid)).scalar_one()
    return Candidate(row.id, row.study_id, row.sop_instance_uid, row.path, row.size,
                     row.sha256, row.transfer_syntax_uid)


def test_the_original_goes_only_after_the_commit_and_an_open_reader_keeps_it(
        settings: Settings, session_factory: sessionmaker[Session], tmp_path: Path) -> None:
    ds = ct_object(generate_uid(prefix=UID_ROOT), generate_uid(prefix=UID_ROOT), 1)
    store(settings, session_factory, [write(ds, tmp_path / "in.dcm")])
    root = settings.archive_root
    candidate = candidate_of(session_factory, ds.SOPInstanceUID)
    original_bytes = (root / candidate.path).read_bytes()
    folder = str(Path(candidate.path).parent)
    reader = (root / candidate.path).open("rb")  # a retrieve under way

    replacement = prepare_replacement(root, candidate, "jpeg-ls", max_pixel_bytes=1 << 30)
    # Step 1 done: both files there, the index unchanged; the new file is an orphan until
    # the commit (what a crash now would leave behind).
    assert (root / candidate.path).exists() and (root / replacement.path).exists()
    assert candidate_of(session_factory, ds.SOPInstanceUID) == candidate
    with session_factory() as session:
        assert orphans(session, root, folder) == [replacement.path]

    with session_factory() as session:
        assert commit_replacement(session, root, candidate, replacement, now=utcnow(),
                                  keep_original_seconds=0)
    # Step 2 done: the row names the new file; the old one is still there, its removal queued.
    row = candidate_of(session_factory, ds.SOPInstanceUID)
    assert (row.path, row.transfer_syntax_uid) == (replacement.path, JPEGLSLossless)
    assert (root / candidate.path).exists()
    from bridge.store.archive_models import Job

    with session_factory() as session:
        (job,) = session.execute(select(Job).where(Job.queue == "compression-originals")
                                 ).scalars()
        assert orphans(session, root, folder) == [candidate.path]
    compressor = Compressor(settings, session_factory,
                            rules=parse_compression_rules({"rules": []}))
    compressor.handle_originals(ClaimedJob(job.id, job.queue, None, job.payload, 1, utcnow()),
                                threading.Event())
    # Step 3: gone from the folder, yet the reader that had it open reads it whole.
    assert not (root / candidate.path).exists()
    assert reader.read() == original_bytes
    reader.close()
    with session_factory() as session:
        assert orphans(session, root, folder) == []
        # A path an instance names is never removed.
        assert remove_unreferenced(session, root, [replacement.path]) == []
    assert (root / replacement.path).exists()


def test_a_row_changed_meanwhile_keeps_the_old_state(
        settings: Settings, session_factory: sessionmaker[Session], tmp_path: Path) -> None:
    ds = ct_object(generate_uid(prefix=UID_ROOT), generate_uid(prefix=UID_ROOT), 1)
    store(settings, session_factory, [write(ds, tmp_path / "in.dcm")])
    root = settings.archive_root
    candidate = candidate_of(session_factory, ds.SOPInstanceUID)
    replacement = prepare_replacement(root, candidate, "rle", max_pixel_bytes=1 << 30)
    with session_factory.begin() as session:  # e.g. a duplicate replaced it meanwhile
        session.execute(select(Instance)).scalars().one().sha256 = "0" * 64

    with session_factory() as session:
        assert not commit_replacement(session, root, candidate, replacement, now=utcnow(),
                                      keep_original_seconds=0)
    row = candidate_of(session_factory, ds.SOPInstanceUID)
    assert (row.path, row.transfer_syntax_uid) == (candidate.path, ExplicitVRLittleEndian)
    assert (root / candidate.path).exists()
    assert not (root / replacement.path).exists()
