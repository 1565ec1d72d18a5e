#!/usr/bin/env python
"""Lossless compression: ratio and speed of each codec on CT-like and MR-like series, side by
side with storing the same objects uncompressed, in one run.

Series (synthetic but shaped like the real thing, not random noise and not flat):

- CT-like: 512×512, 16 bits allocated, 12 stored, a body ellipse of soft tissue with organs
  of slightly different density, lungs, a spine and a ring of bone, air around, and
  Gaussian noise (σ 12 HU) on everything, varying slice by slice;
- MR-like: 256×256, 16 bits allocated, 12 stored, a head of graded intensity (grey and white
  matter, CSF) with Rician-like noise and a dark, noisy background.

Per codec (JPEG-LS, JPEG 2000, RLE, through the bridge's own :mod:`bridge.storage.codecs`):
ratio (native pixel bytes ÷ encoded), encode MB/s and decode MB/s (of native pixel data),
and the bridge's whole replacement of one stored file (read, encode, write + fsync, read
back, decode, compare, rename: :func:`bridge.services.compression.replace.prepare_replacement`)
in MB/s. Uncompressed storage: write + fsync of the native Part 10 files, MB/s. One core is
used throughout (the bridge compresses one object at a time).

    python bench/compression.py [--ct 16] [--mr 32] [--repeat 2]
"""

from __future__ import annotations

import argparse
import copy
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset
from pydicom.filewriter import dcmwrite
from pydicom.uid import generate_uid

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import log, machine
from bridge.services.compression.replace import Candidate, prepare_replacement
from bridge.storage import codecs
from tests.dicom_factories import ct_slice

CODECS = ("jpeg-ls", "jpeg2000", "rle")
MB = 1e6


def ct_like(number: int, size: int = 512) -> np.ndarray:
    """Stored values = HU + 1024 (Rescale Intercept -1024), 12 bits."""
    y, x = np.mgrid[-1:1:size * 1j, -1:1:size * 1j]
    hu = np.full((size, size), -1000.0)
    body = (x / 0.85) ** 2 + (y / 0.62) ** 2 < 1
    hu[body] = 40.0
    hu[((x - 0.12) / 0.3) ** 2 + ((y + 0.05) / 0.25) ** 2 < 1] = 60.0  # liver
    hu[((x + 0.35) / 0.12) ** 2 + ((y - 0.1) / 0.1) ** 2 < 1] = 30.0  # kidney
    for side in (-0.4, 0.4):  # lungs
        hu[((x - side) / 0.28) ** 2 + ((y + 0.1) / 0.35) ** 2 < 1] = -850.0
    hu[(x ** 2 + (y - 0.38) ** 2) < 0.006] = 700.0  # spine
    ring = (x / 0.8) ** 2 + (y / 0.57) ** 2
    hu[(ring > 0.86) & (ring < 0.93)] = 450.0  # ribs
    hu[body] -= 30 * y[body] * np.cos(number / 7)  # slow change along the series
    hu += np.random.default_rng(number).normal(0, 12, hu.shape)
    return np.clip(np.rint(hu + 1024), 0, 4095).astype("<u2")


def mr_like(number: int, size: int = 256) -> np.ndarray:
    y, x = np.mgrid[-1:1:size * 1j, -1:1:size * 1j]
    signal = np.zeros((size, size))
    head = (x / 0.75) ** 2 + (y / 0.9) ** 2
    signal[head < 1] = 900.0  # grey matter
    signal[head < 0.6] = 1300.0  # white matter
    signal[(x ** 2 + (y / 1.6) ** 2) < 0.02] = 2200.0  # ventricles (T2-bright CSF)
    signal *= 1 + 0.15 * x  # coil sensitivity
    signal *= 1 + 0.05 * np.sin(number / 5)
    rng = np.random.default_rng(1000 + number)
    real = signal + rng.normal(0, 25, signal.shape)
    imag = rng.normal(0, 25, signal.shape)
    return np.clip(np.rint(np.hypot(real, imag)), 0, 4095).astype("<u2")


def dataset(pixels: np.ndarray, number: int, modality: str) -> Dataset:
    rows, columns = pixels.shape
    ds = ct_slice(study_uid=generate_uid(), number=number, rows=rows, columns=columns,
                  Modality=modality)
    ds.PixelData = pixels.tobytes()
    return ds


@dataclass
class Row:
    series: str
    method: str
    ratio: float | None
    encode: float | None
    decode: float | None
    pipeline: float | None
    store: float | None


def run_series(name: str, objects: list[Dataset], folder: Path, repeat: int) -> list[Row]:
    native_bytes = sum(len(ds.PixelData) for ds in objects)
    rows: list[Row] = []

    def write_all(target: Path) -> None:
        target.mkdir()
        for index, ds in enumerate(objects):
            path = target / f"{index}.dcm"
            with path.open("wb") as fp:
                dcmwrite(fp, ds, enforce_file_format=True)
                fp.flush()
                os.fsync(fp.fileno())

    stores = []
    for attempt in range(repeat):
        start = time.perf_counter()
        write_all(folder / f"{name}-native-{attempt}")
        stores.append(time.perf_counter() - start)
    file_bytes = sum((folder / f"{name}-native-0" / f"{i}.dcm").stat().st_size
                     for i in range(len(objects)))
    rows.append(Row(name, "uncompressed (write + fsync)", 1.0, None, None, None,
                    file_bytes / min(stores) / MB))
    for codec in CODECS:
        encoded: list[Dataset] = []
        encode_times, decode_times, pipeline_times = [], [], []
        for attempt in range(repeat):
            copies = [copy.deepcopy(ds) for ds in objects]
            start = time.perf_counter()
            for ds in copies:
                codecs.encode(ds, codec)
            encode_times.append(time.perf_counter() - start)
            encoded = copies
            start = time.perf_counter()
            for ds in encoded:
                ds.pixel_array  # noqa: B018 (decoding is the point)
            decode_times.append(time.perf_counter() - start)
            root = folder / f"{name}-{codec}-{attempt}"
            root.mkdir()
            candidates = []
            for index, ds in enumerate(objects):
                path = root / f"{index}.dcm"
                dcmwrite(path, ds, enforce_file_format=True)
                candidates.append(Candidate(index, 1, str(ds.SOPInstanceUID), path.name,
                                            path.stat().st_size, "",
                                            str(ds.file_meta.TransferSyntaxUID)))
            start = time.perf_counter()
            for candidate in candidates:
                prepare_replacement(root, candidate, codec, max_pixel_bytes=1 << 30)
            pipeline_times.append(time.perf_counter() - start)
        encoded_bytes = sum(len(ds.PixelData) for ds in encoded)
        for ds, original in zip(encoded, objects, strict=True):  # the bench checks too
            layout = codecs.pixel_layout(original)
            assert codecs.identical(codecs.original_pixels(original, layout),
                                    codecs.decoded_pixels(ds, layout))
        rows.append(Row(name, codec, native_bytes / encoded_bytes,
                        native_bytes / min(encode_times) / MB,
                        native_bytes / min(decode_times) / MB,
                        native_bytes / min(pipeline_times) / MB, None))
    return rows


def fmt(value: float | None, pattern: str = "{:.1f}") -> str:
    return "" if value is None else pattern.format(value)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ct", type=int, default=16, help="CT-like slices (512×512)")
    parser.add_argument("--mr", type=int, default=32, help="MR-like slices (256×256)")
    parser.add_argument("--repeat", type=int, default=2, help="best of N per figure")
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    log(f"machine: {machine()}")
    series = {
        "CT 512² ×16 bit": [dataset(ct_like(n), n, "CT") for n in range(args.ct)],
        "MR 256² ×16 bit": [dataset(mr_like(n), n, "MR") for n in range(args.mr)],
    }
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="bench-compression-") as tmp:
        for name, objects in series.items():
            log(f"{name}: {len(objects)} objects, "
                f"{sum(len(ds.PixelData) for ds in objects) / MB:.1f} MB of pixel data")
            rows += run_series(name.split()[0], objects, Path(tmp), args.repeat)
    print("| series | method | ratio | encode MB/s | decode MB/s | "
          "bridge replace MB/s | store MB/s |")
    print("|---|---|---|---|---|---|---|")
    for row in rows:
        print(f"| {row.series} | {row.method} | {fmt(row.ratio, '{:.2f}')} | "
              f"{fmt(row.encode)} | {fmt(row.decode)} | {fmt(row.pipeline)} | "
              f"{fmt(row.store)} |")


if __name__ == "__main__":
    main()
