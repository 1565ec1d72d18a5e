#!/usr/bin/env python
"""Rendered DICOMweb throughput: the bridge's ``.../frames/1/rendered`` against Orthanc's
``/instances/{id}/frames/0/rendered`` on the same 300-slice CT series, in one run, with the
same HTTP client.

The series: 512×512 CT slices, 16 bits (12 stored), Rescale Intercept −1024, a header window
(40/400): a water-like body with bone and air in it and noise (σ ≈ 20 HU), so the encoders
work on something that looks like CT. Both servers render the header's window (no rendering
parameters: Orthanc's core ``/rendered`` takes no ``window``), JPEG at quality 90 (both
servers' default) and PNG.

- **bridge**: ``bridge serve`` in its own process (SQLite, defaults), the series stored by
  STOW-RS; requests with an integration token, so each one also checks the token, runs the
  index query and writes its audit record, as in production.
- **Orthanc** 1.10 with its default settings, the same files POSTed to ``/instances``.

Measured per server and media type: one pass over all 300 slices first (warm-up, not
counted; the first request of all is the cold first frame of the series, reported), then
sequential requests over every slice, then 4 client threads sharing the slices. The client
is httpx in this process (one connection per thread, kept alive).

    python bench/rendered.py [--slices 300] [--passes 2] [--json]
"""

from __future__ import annotations

import argparse
import io
import json
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from pydicom.dataset import Dataset
from pydicom.filewriter import dcmwrite
from pydicom.uid import generate_uid

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import StealMeter, bench_token, bridge_process, log, machine
from tests.dicom_factories import UID_ROOT, ct_slice
from tests.orthanc_peer import running_orthanc

TARGET_RATIO = 2.0
CLIENTS = 4
MEDIA = {"jpeg": "image/jpeg", "png": "image/png"}


def phantom_slice(number: int, rng: np.random.Generator) -> np.ndarray:
    """Stored values (HU + 1024) of one 512×512 slice."""
    y, x = np.mgrid[-256:256, -256:256].astype(np.float32)
    hu = np.full((512, 512), -1000.0, dtype=np.float32)  # air
    body = (x / 200) ** 2 + (y / 150) ** 2 < 1
    hu[body] = 40.0  # soft tissue
    spine = (x / 25) ** 2 + ((y - 90 + number % 7) / 25) ** 2 < 1
    hu[spine] = 700.0
    lungs = (((x + 80) / 55) ** 2 + (y / 80) ** 2 < 1) | (((x - 80) / 55) ** 2 + (y / 80) ** 2 < 1)
    hu[lungs] = -850.0
    hu += rng.normal(0, 20, hu.shape).astype(np.float32)
    return np.clip(hu + 1024, 0, 4095).astype(np.uint16)


def series(count: int) -> list[bytes]:
    rng = np.random.default_rng(42)
    study, series_uid = generate_uid(prefix=UID_ROOT), generate_uid(prefix=UID_ROOT)
    objects = []
    for number in range(1, count + 1):
        ds = ct_slice(study_uid=study, series_uid=series_uid, number=number, rows=512,
                      columns=512, RescaleIntercept="-1024", RescaleSlope="1",
                      WindowCenter="40", WindowWidth="400")
        ds.PixelData = phantom_slice(number, rng).tobytes()
        objects.append(_part10(ds))
    return objects


def _part10(ds: Dataset) -> bytes:
    buffer = io.BytesIO()
    dcmwrite(buffer, ds, enforce_file_format=True)
    return buffer.getvalue()


def stow(base: str, token: str, objects: Sequence[bytes]) -> None:
    boundary = "bench-boundary-7"
    with httpx.Client(base_url=base, timeout=300,
                      headers={"Authorization": f"Bearer {token}"}) as client:
        for start in range(0, len(objects), 25):
            body = b"".join(f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n"
                            .encode() + part + b"\r\n" for part in objects[start:start + 25])
            answer = client.post("/dicomweb/studies", content=body + f"--{boundary}--\r\n"
                                 .encode(), headers={
                "Content-Type": f'multipart/related; type="application/dicom"; '
                                f"boundary={boundary}", "Accept": "application/dicom+json"})
            answer.raise_for_status()


def urls_of(objects: Sequence[bytes]) -> tuple[list[str], list[str]]:
    """The bridge's frame URLs (paths) in slice order; the SOP Instance UIDs."""
    from pydicom import dcmread

    paths, uids = [], []
    for data in objects:
        ds = dcmread(io.BytesIO(data), stop_before_pixels=True)
        uids.append(str(ds.SOPInstanceUID))
        paths.append(f"/dicomweb/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}"
                     f"/instances/{ds.SOPInstanceUID}/frames/1/rendered")
    return paths, uids


def timed_pass(make_client: Callable[[], httpx.Client], urls: Sequence[str], accept: str,
               clients: int) -> float:
    """Seconds to fetch every URL with ``clients`` threads (each its own connection)."""
    shares = [urls[i::clients] for i in range(clients)]
    errors: list[BaseException] = []

    def work(share: Sequence[str]) -> None:
        try:
            with make_client() as client:
                for url in share:
                    answer = client.get(url, headers={"Accept": accept})
                    answer.raise_for_status()
                    assert answer.headers["content-type"].startswith(accept)
        except BaseException as exc:  # reported after the pass
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(share,)) for share in shares]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - start
    if errors:
        raise errors[0]
    return elapsed


def measure(name: str, make_client: Callable[[], httpx.Client], urls: Sequence[str],
            warm_url: str, passes: int) -> dict[str, Any]:
    result: dict[str, Any] = {}
    with make_client() as client:
        # A frame of another study first: the server's process is warm (its code paths run
        # once), the series' headers and files are not.
        client.get(warm_url, headers={"Accept": "image/jpeg"}).raise_for_status()
        start = time.perf_counter()
        client.get(urls[len(urls) // 2], headers={"Accept": "image/jpeg"}).raise_for_status()
        result["cold_first_frame_ms"] = round((time.perf_counter() - start) * 1000, 1)
    for label, accept in MEDIA.items():
        timed_pass(make_client, urls, accept, 1)  # warm-up: every header, page cache
        for clients in (1, CLIENTS):
            best = min(timed_pass(make_client, urls, accept, clients) for _ in range(passes))
            result[f"{label}_{clients}"] = round(len(urls) / best, 1)
            log(f"  {name:8s} {label:4s} {clients} client(s): {result[f'{label}_{clients}']:7.1f}"
                " frames/s")
    return result


def orthanc_urls(orthanc_http: httpx.Client, uids: Sequence[str]) -> list[str]:
    listing = orthanc_http.get("/instances", params={"expand": ""}).json()
    by_uid = {item["MainDicomTags"]["SOPInstanceUID"]: item["ID"] for item in listing}
    return [f"/instances/{by_uid[uid]}/frames/0/rendered" for uid in uids]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--slices", type=int, default=300)
    parser.add_argument("--passes", type=int, default=2, help="best of N timed passes")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="bench-rendered-"))
    try:
        log(f"building {args.slices} CT slices (512x512, 16 bits)")
        objects = series(args.slices)
        paths, uids = urls_of(objects)
        warm = series(1)  # another study, for the warm-up request
        (warm_path,), (warm_uid,) = urls_of(warm)
        url = f"sqlite:///{root / 'bridge.db'}"
        token = bench_token(url)
        steal = StealMeter()
        results: dict[str, dict[str, Any]] = {}
        with bridge_process(root / "var", url) as ports:
            base = f"http://127.0.0.1:{ports['http']}"
            stow(base, token, [*warm, *objects])
            log("bridge: stored; measuring")
            results["bridge"] = measure("bridge", lambda: httpx.Client(
                base_url=base, timeout=60, headers={"Authorization": f"Bearer {token}"}),
                paths, warm_path, args.passes)
        with running_orthanc(root / "orthanc") as orthanc:
            for data in [*warm, *objects]:
                orthanc.rest("/instances", "POST", content=data,
                              headers={"Content-Type": "application/dicom"})
            orthanc_base = f"http://127.0.0.1:{orthanc.http_port}"
            o_warm, *o_urls = orthanc_urls(orthanc.http, [warm_uid, *uids])
            log("Orthanc: stored; measuring")
            results["orthanc"] = measure("orthanc", lambda: httpx.Client(
                base_url=orthanc_base, timeout=60), o_urls, o_warm, args.passes)
        report(args, results, steal.percent())
    finally:
        shutil.rmtree(root, ignore_errors=True)


def report(args: argparse.Namespace, results: dict[str, dict[str, Any]], steal: float) -> None:
    bridge, orthanc = results["bridge"], results["orthanc"]
    ratios = {key: round(bridge[key] / orthanc[key], 2) for key in bridge
              if key != "cold_first_frame_ms"}
    summary = {"date": datetime.now(UTC).date().isoformat(), "machine": machine(),
               "slices": args.slices, "bridge": bridge, "orthanc": orthanc,
               "ratios": ratios, "steal_percent": steal, "target_ratio": TARGET_RATIO}
    if args.json:
        print(json.dumps(summary, indent=2))
        return
    print(f"{summary['date']} {summary['machine']}; {args.slices} CT slices 512x512; "
          f"steal {steal}%")
    print(f"{'':22} {'bridge':>10} {'Orthanc':>10} {'ratio':>7}")
    for key, ratio in ratios.items():
        media, clients = key.split("_")
        label = f"{media.upper()}, {clients} client{'s' if clients != '1' else ''}"
        print(f"{label:22} {bridge[key]:>8.1f}/s {orthanc[key]:>8.1f}/s {ratio:>6.2f}x")
    print(f"{'cold first frame':22} {bridge['cold_first_frame_ms']:>7.1f}ms "
          f"{orthanc['cold_first_frame_ms']:>7.1f}ms")
    worst = min(ratios.values())
    print(f"target: bridge >= {TARGET_RATIO}x Orthanc -> worst {worst:.2f}x "
          f"{'met' if worst >= TARGET_RATIO else 'NOT met'}")


if __name__ == "__main__":
    main()
