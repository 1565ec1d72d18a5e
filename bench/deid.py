#!/usr/bin/env python
"""De-identification speed: the bridge's PS3.15 Annex E de-identification of a 300-object CT
series, side by side in one run with dicognito (PyPI) on the same files, Orthanc's
``/studies/{id}/anonymize`` on the same study, and a plain pydicom read + write of the same
files (the practical limit of anything built on pydicom); then the bridge's restore of what
it wrote.

The series: 512×512 CT slices, 16 bits, with a modality-like header (~150 attributes: the
patient, study and series attributes with personal data in names, descriptions and comments,
acquisition and reconstruction attributes, two vendors' private blocks, a 6 KB Siemens-like
private header). Every tool reads from and writes to the same local disk (page cache warm).

- **bridge**: ``bridge deid FILES --out`` as the command runs it
  (:func:`bridge.services.deid.files.deidentify_files`): profile, pseudonyms, key records
  sealed and committed to SQLite, files written durably; one process.
- **bridge, N processes**: N such runs at once (N = cores), each on its share of the files
  and the same database: what N exports running at the same time get. (One run handing the
  header work to a pool of N worker processes was tried: no gain on 2 cores, the parent's
  commits, writes and unpickling were the limit.)
- **restore**: ``bridge deid restore`` of the bridge's output (key records opened, originals
  rebuilt and checked against their SHA-256, written).

    python bench/deid.py [--objects 300] [--no-orthanc]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import log, machine
from tests.deid_fixtures import phi_ct


def realistic_ct(study: str, series: str, number: int) -> Dataset:
    ds = phi_ct(study, series, number, rows=512, columns=512)
    more = {
        "ImageType": ["ORIGINAL", "PRIMARY", "AXIAL"], "InstanceCreationDate": "20261207",
        "InstanceCreationTime": "101501", "SeriesTime": "101500", "AcquisitionTime": "101510",
        "ContentTime": "101511", "ScanOptions": "HELICAL_CT", "SliceThickness": "1.0",
        "KVP": "120", "DataCollectionDiameter": "500", "SoftwareVersions": "syngo CT VA48A",
        "ProtocolName": "Thorax routine", "ReconstructionDiameter": "350",
        "DistanceSourceToDetector": "1085.6", "DistanceSourceToPatient": "595",
        "GantryDetectorTilt": "0", "TableHeight": "160", "RotationDirection": "CW",
        "ExposureTime": "500", "XRayTubeCurrent": "200", "Exposure": "100",
        "FilterType": "FLAT", "GeneratorPower": "24", "FocalSpots": "1.2",
        "ConvolutionKernel": "B31f", "PatientPosition": "HFS", "RevolutionTime": 0.5,
        "SingleCollimationWidth": 0.6, "TotalCollimationWidth": 38.4,
        "TableSpeed": 46, "TableFeedPerRotation": 23, "SpiralPitchFactor": 0.6,
        "AcquisitionNumber": "2", "ImagePositionPatient": ["-175", "-175", str(-number)],
        "ImageOrientationPatient": ["1", "0", "0", "0", "1", "0"],
        "PositionReferenceIndicator": "", "SliceLocation": str(-number),
        "PixelSpacing": ["0.683", "0.683"], "WindowCenter": "40", "WindowWidth": "400",
        "RescaleIntercept": "-1024", "RescaleSlope": "1", "RescaleType": "HU",
        "LossyImageCompression": "00", "BodyPartExamined": "CHEST",
        "StudyID": "4711", "RequestedProcedureDescription": "CT chest",
        "PerformedProcedureStepStartDate": "20261207", "PerformedProcedureStepID": "PPS1",
        "PerformedProcedureStepDescription": "CT thorax", "CTDIvol": 6.1,
    }
    for keyword, value in more.items():
        setattr(ds, keyword, value)
    csa = ds.private_block(0x0029, "SIEMENS CSA HEADER", create=True)
    csa.add_new(0x20, "OB", os.urandom(6000))
    return ds


def write_series(folder: Path, count: int) -> list[Path]:
    folder.mkdir(parents=True)
    study, series = generate_uid(), generate_uid()
    paths = []
    for number in range(1, count + 1):
        path = folder / f"ct{number:04d}.dcm"
        realistic_ct(study, series, number).save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def plain(files: list[Path], out: Path) -> float:
    out.mkdir()
    start = time.perf_counter()
    for path in files:
        ds = dcmread(path)
        ds.save_as(out / path.name)
    return time.perf_counter() - start


def dicognito_run(files: list[Path], out: Path) -> float:
    from dicognito.anonymizer import Anonymizer

    out.mkdir()
    anonymizer = Anonymizer()
    start = time.perf_counter()
    for path in files:
        ds = dcmread(path)
        anonymizer.anonymize(ds)
        ds.save_as(out / path.name)
    return time.perf_counter() - start


def _bridge_env(root: Path) -> None:
    key = root / "master.key"
    if not key.exists():
        key.write_text(os.urandom(32).hex())
    os.environ["BRIDGE_DATA_DIR"] = str(root / "var")
    os.environ["BRIDGE_DEID_MASTER_KEY_FILE"] = str(key)


def _sessions(root: Path):  # type: ignore[no-untyped-def]
    from bridge.config.settings import load_settings
    from bridge.store.db import make_engine, make_session_factory
    from bridge.store.migrate import upgrade

    _bridge_env(root)
    settings = load_settings()
    engine = make_engine(settings.database_url)
    upgrade(engine)
    return settings, make_session_factory(engine)


def bridge_files(root: Path, files: list[Path], out: Path, destination: str = "bench") -> float:
    from bridge.services.deid.files import deidentify_files

    settings, sessions = _sessions(root)
    start = time.perf_counter()
    report = deidentify_files(settings, sessions, files, out, destination=destination,
                              options=("retain_modified_dates", "clean_descriptors"),
                              actor="bench")
    elapsed = time.perf_counter() - start
    assert report.sent == len(files), report
    return elapsed


def _worker(args: tuple[str, list[str], str, int]) -> float:
    root, names, out, index = args
    return bridge_files(Path(root), [Path(n) for n in names], Path(out) / f"w{index}")


def bridge_parallel(root: Path, files: list[Path], out: Path, workers: int) -> float:
    _sessions(root)  # migrated once, before the workers start
    shares = [files[i::workers] for i in range(workers)]
    start = time.perf_counter()
    with ProcessPoolExecutor(workers) as pool:
        list(pool.map(_worker, [(str(root), [str(p) for p in share], str(out), i)
                                for i, share in enumerate(shares)]))
    return time.perf_counter() - start


def bridge_restore(root: Path, folder: Path, out: Path, originals: list[Path]) -> float:
    from bridge.services.deid.files import collect, restore_files

    settings, sessions = _sessions(root)
    files = collect([folder])
    start = time.perf_counter()
    report = restore_files(settings, sessions, files, out, actor="bench")
    elapsed = time.perf_counter() - start
    assert report.restored == {"original": len(originals)}, report
    restored = {p.name: p.read_bytes() for p in out.rglob("*.dcm")}
    for path in originals:
        assert restored[f"{dcmread(path, stop_before_pixels=True).SOPInstanceUID}.dcm"] == \
            path.read_bytes(), "restore is not byte for byte"
    return elapsed


def orthanc_run(root: Path, files: list[Path]) -> float:
    from tests.orthanc_peer import running_orthanc

    with running_orthanc(root / "orthanc") as orthanc:
        for path in files:
            orthanc.rest("/instances", "POST", content=path.read_bytes(),
                         headers={"Content-Type": "application/dicom"})
        study = orthanc.rest("/studies")[0]
        start = time.perf_counter()
        orthanc.rest(f"/studies/{study}/anonymize", "POST", json={"Synchronous": True},
                     timeout=600)
        return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--objects", type=int, default=300)
    parser.add_argument("--no-orthanc", action="store_true")
    args = parser.parse_args()
    workers = max(1, os.cpu_count() or 1)
    root = Path(tempfile.mkdtemp(prefix="bench-deid-"))
    try:
        files = write_series(root / "in", args.objects)
        megabytes = sum(p.stat().st_size for p in files) / 1e6
        timings: dict[str, float] = {}
        timings["plain pydicom read + write"] = plain(files, root / "plain")
        timings["dicognito 0.19"] = dicognito_run(files, root / "dicognito")
        if not args.no_orthanc:
            timings["Orthanc /anonymize"] = orthanc_run(root, files)
        timings["bridge (1 process)"] = bridge_files(root, files, root / "bridge")
        timings[f"bridge ({workers} processes)"] = bridge_parallel(root, files,
                                                                    root / "parallel", workers)
        timings["bridge restore (1 process)"] = bridge_restore(root, root / "bridge",
                                                               root / "restored", files)
        log(f"{args.objects} CT objects, {megabytes:.0f} MB, {machine()}")
        for name, seconds in timings.items():
            log(f"  {name:32s} {args.objects / seconds:8.1f} objects/s "
                f"{megabytes / seconds:8.1f} MB/s")
        one = args.objects / timings["bridge (1 process)"]
        for name in ("plain pydicom read + write", "dicognito 0.19", "Orthanc /anonymize"):
            if name in timings:
                reference = args.objects / timings[name]
                log(f"  bridge (1 process) / {name}: {one / reference:.2f}x; "
                    f"bridge ({workers} processes): "
                    f"{args.objects / timings[f'bridge ({workers} processes)'] / reference:.2f}x")
        restore = args.objects / timings["bridge restore (1 process)"]
        log(f"  restore / de-identification (1 process): {restore / one:.2f}x")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
