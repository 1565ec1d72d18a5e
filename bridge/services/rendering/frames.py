"""One frame of a stored instance, as the rendering pipeline needs it.

:func:`layout_of` reads what rendering needs of the header once per file and keeps it in a
bounded cache keyed by the file's identity (path, inode, size, modification time), so a
viewer scrolling a series does not parse a header per frame, and a replaced file (the
archive's compression rewrites files) is read again.

:func:`read_frame` gives a grayscale frame as its stored bit patterns (masked to
``BitsStored``; :mod:`bridge.mapping.rendering.voi` turns them into gray levels) and a colour
frame as RGB. For an uncompressed object only that frame's bytes are read from the file, at
the pixel data's offset (no data set is decoded); compressed objects (JPEG-LS, JPEG 2000, RLE,
JPEG lossless) are decoded with pydicom and its plugins, one frame, and the decoded frames
kept in a small cache bounded by bytes: decoding costs 10 to 30 ms a frame, which a viewer
changing the window of the same frame would otherwise pay every time.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Generic, TypeVar

import numpy as np
import numpy.typing as npt
from pydicom.dataset import Dataset
from pydicom.pixels import pixel_array
from pydicom.uid import ExplicitVRBigEndian

from bridge.mapping.rendering.params import Window
from bridge.mapping.rendering.photometric import (
    COLOUR_PHOTOMETRICS,
    rgb_frame,
    stored_frame_samples,
    to_eight_bits,
)
from bridge.mapping.rendering.voi import header_window
from bridge.services.egress.objects import StoredObject
from bridge.services.egress.parts import egress_header

GRAYSCALE = frozenset({"MONOCHROME1", "MONOCHROME2"})
#: How many headers :func:`layout_of` keeps (a few hundred bytes each).
LAYOUT_CACHE_ENTRIES = 4096
#: The bytes of decoded frames of compressed objects kept (a 512×512 16-bit frame is 0.5 MB).
DECODED_CACHE_BYTES = 64 * 1024 * 1024

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")
FileIdentity = tuple[str, int, int, int]


@dataclass(frozen=True, slots=True)
class FrameLayout:
    """What rendering needs of one stored object's header."""

    identity: FileIdentity
    rows: int
    columns: int
    samples: int
    bits_allocated: int
    bits_stored: int
    signed: bool
    photometric: str
    planar: int
    frames: int
    slope: float
    intercept: float
    #: The header's first window (and VOI LUT Function), if usable.
    window: Window | None
    #: Where the native pixel data starts in the file; None when frames must be decoded
    #: (compressed, deflated).
    pixel_offset: int | None
    pixel_length: int
    big_endian: bool
    #: Why the object cannot be rendered (no pixel data, palette colour, ...), else None.
    problem: str | None

    @property
    def grayscale(self) -> bool:
        return self.photometric in GRAYSCALE

    @property
    def frame_bytes(self) -> int:
        samples = stored_frame_samples(self.photometric, self.rows, self.columns,
                                       self.samples)
        return samples * (self.bits_allocated // 8)


@dataclass(frozen=True, slots=True)
class Frame:
    """A grayscale frame's masked bit patterns (rows × columns), or a colour frame as RGB
    (rows × columns × 3)."""

    pixels: npt.NDArray[np.unsignedinteger]
    colour: bool


class BoundedCache(Generic[K, V]):
    """A thread-safe LRU bounded by a total weight (entries count 1 unless weighed)."""

    def __init__(self, limit: int, weigh: Callable[[V], int] = lambda _v: 1) -> None:
        self._limit = limit
        self._weigh = weigh
        self._entries: OrderedDict[K, V] = OrderedDict()
        self._weight = 0
        self._lock = threading.Lock()

    def get(self, key: K) -> V | None:
        with self._lock:
            value = self._entries.get(key)
            if value is not None:
                self._entries.move_to_end(key)
            return value

    def put(self, key: K, value: V) -> None:
        weight = self._weigh(value)
        if weight > self._limit:
            return
        with self._lock:
            old = self._entries.pop(key, None)
            if old is not None:
                self._weight -= self._weigh(old)
            self._entries[key] = value
            self._weight += weight
            while self._weight > self._limit:
                _key, evicted = self._entries.popitem(last=False)
                self._weight -= self._weigh(evicted)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._weight = 0


_LAYOUTS: BoundedCache[FileIdentity, FrameLayout] = BoundedCache(LAYOUT_CACHE_ENTRIES)
_DECODED: BoundedCache[tuple[FileIdentity, int], Frame] = BoundedCache(
    DECODED_CACHE_BYTES, lambda frame: int(frame.pixels.nbytes))


def file_identity(path: Path) -> FileIdentity:
    stat = path.stat()
    return str(path), stat.st_ino, stat.st_size, stat.st_mtime_ns


def layout_of(archive_root: Path, instance: StoredObject, local: Path) -> FrameLayout:
    """The rendering layout of ``local`` (the instance's checked copy), cached."""
    identity = file_identity(local)
    cached = _LAYOUTS.get(identity)
    if cached is not None:
        return cached
    header = egress_header(archive_root, instance, None, local=local)
    pixel = header.pixel
    native = pixel is not None and not pixel.encapsulated
    layout = _layout(identity, header.dataset, offset=pixel.offset if native and pixel else None,
                     length=pixel.length if native and pixel else 0,
                     big_endian=header.transfer_syntax == ExplicitVRBigEndian,
                     has_pixels=header.pixel_vr is not None)
    _LAYOUTS.put(identity, layout)
    return layout


def read_frame(local: Path, layout: FrameLayout, index: int) -> Frame:
    """Frame ``index`` (from 0) of the object at ``local``."""
    if layout.pixel_offset is not None:
        return _native_frame(local, layout, index)
    key = (layout.identity, index)
    cached = _DECODED.get(key)
    if cached is not None:
        return cached
    frame = _decoded_frame(local, layout, index)
    _DECODED.put(key, frame)
    return frame


def clear_caches() -> None:
    _LAYOUTS.clear()
    _DECODED.clear()


def _layout(identity: FileIdentity, ds: Dataset, *, offset: int | None, length: int,
            big_endian: bool, has_pixels: bool) -> FrameLayout:
    photometric = str(ds.get("PhotometricInterpretation", "")).strip().upper()
    bits_allocated = int(ds.get("BitsAllocated", 0) or 0)
    samples = int(ds.get("SamplesPerPixel", 1) or 1)
    layout = FrameLayout(
        identity=identity, rows=int(ds.get("Rows", 0) or 0),
        columns=int(ds.get("Columns", 0) or 0), samples=samples,
        bits_allocated=bits_allocated,
        bits_stored=int(ds.get("BitsStored", bits_allocated) or bits_allocated),
        signed=int(ds.get("PixelRepresentation", 0) or 0) == 1, photometric=photometric,
        planar=int(ds.get("PlanarConfiguration", 0) or 0),
        frames=max(int(ds.get("NumberOfFrames", 1) or 1), 1),
        slope=_number(ds, "RescaleSlope", 1.0), intercept=_number(ds, "RescaleIntercept", 0.0),
        window=header_window(_numbers(ds, "WindowCenter"), _numbers(ds, "WindowWidth"),
                             str(ds.get("VOILUTFunction", "") or "")),
        pixel_offset=offset, pixel_length=length, big_endian=big_endian, problem=None)
    problem = _problem(layout, has_pixels)
    return layout if problem is None else replace(layout, problem=problem)


def _problem(layout: FrameLayout, has_pixels: bool) -> str | None:
    if not has_pixels or layout.rows < 1 or layout.columns < 1:
        return "the instance has no image pixel data to render"
    if layout.grayscale:
        if layout.samples != 1 or layout.bits_allocated not in (8, 16, 32):
            return "the instance's grayscale pixel layout cannot be rendered"
    elif layout.photometric in COLOUR_PHOTOMETRICS:
        if layout.samples != 3 or layout.bits_allocated not in (8, 16):
            return "the instance's colour pixel layout cannot be rendered"
    else:
        return f"{layout.photometric or 'unknown'} images are not rendered"
    if not 1 <= layout.bits_stored <= layout.bits_allocated:
        return "the instance's Bits Stored is not within Bits Allocated"
    return None


def _number(ds: Dataset, keyword: str, default: float) -> float:
    values = _numbers(ds, keyword)
    return values[0] if values else default


def _numbers(ds: Dataset, keyword: str) -> list[float]:
    """A DS value's numbers (multi-valued or not); none when absent or malformed."""
    value = ds.get(keyword)
    if value is None or value == "":
        return []
    try:
        items = list(value) if not isinstance(value, str | bytes) and hasattr(
            value, "__iter__") else [value]
        return [float(v) for v in items]
    except (TypeError, ValueError):
        return []


def _native_frame(local: Path, layout: FrameLayout, index: int) -> Frame:
    size = layout.frame_bytes
    start = index * size
    if start + size > layout.pixel_length:
        raise OSError(f"the pixel data of {local.name} is shorter than its frames")
    fd = os.open(local, os.O_RDONLY)
    try:
        data = os.pread(fd, size, layout.pixel_offset + start)  # type: ignore[operator]
    finally:
        os.close(fd)
    if len(data) < size:
        raise OSError(f"the stored file {local.name} ends inside its pixel data")
    width = layout.bits_allocated // 8
    order = ">" if layout.big_endian else "<"
    flat = np.frombuffer(data, dtype=np.dtype(f"{order}u{width}"))
    if layout.grayscale:
        patterns = _masked(flat, layout.bits_stored, layout.bits_allocated)
        return Frame(patterns.reshape(layout.rows, layout.columns), colour=False)
    return Frame(rgb_frame(flat, rows=layout.rows, columns=layout.columns,
                           photometric=layout.photometric, planar=layout.planar,
                           bits_stored=layout.bits_stored), colour=True)


def _decoded_frame(local: Path, layout: FrameLayout, index: int) -> Frame:
    """pydicom decodes one frame (its plugins: pyjpegls, pylibjpeg) into values, YBR already
    converted to RGB."""
    decoded = pixel_array(local, index=index)
    if layout.grayscale:
        unsigned = decoded.view(np.dtype(f"u{decoded.dtype.itemsize}"))
        patterns = _masked(unsigned, layout.bits_stored, decoded.dtype.itemsize * 8)
        return Frame(patterns.reshape(layout.rows, layout.columns), colour=False)
    rgb = decoded.reshape(layout.rows, layout.columns, 3)
    return Frame(to_eight_bits(rgb, layout.bits_stored), colour=True)


def _masked(flat: npt.NDArray[np.unsignedinteger], bits_stored: int,
            bits_allocated: int) -> npt.NDArray[np.unsignedinteger]:
    """Stored bit patterns: byte order made native, bits above ``BitsStored`` cleared."""
    native = flat.astype(flat.dtype.newbyteorder("="), copy=False)
    if bits_stored >= bits_allocated:
        return native
    return native & np.array((1 << bits_stored) - 1, dtype=native.dtype)
