"""Lossless pixel data codecs: encode a stored object's native pixel data as JPEG-LS, JPEG 2000
or RLE lossless, decode it again, and prove the two are the same bits. Pure (no file I/O):
the caller reads and writes files (:mod:`bridge.services.compression.compressor`).

Encoders are pydicom 3's (``Dataset.compress``) with the plugins installed here: pyjpegls
(CharLS) for JPEG-LS, pylibjpeg-openjpeg for JPEG 2000, pylibjpeg-rle for RLE.

What the checks guard against, found by trying (pydicom 3.0.2):

- ``Dataset.compress`` and ``decompress`` give the object a new SOP Instance UID unless told
  not to (``generate_instance_uid=False``): an archive must never do that.
- A 16-bit object with 12 bits stored whose values use the bits above those 12 (overlays in
  the high bits, garbage from a modality) encodes without error but loses them, and pydicom
  masks the same bits when it reads the native original, so comparing pydicom's two arrays
  would not notice. :func:`original_pixels` therefore reads the original bytes themselves,
  and :func:`check_values_fit` refuses such objects before encoding.
- RGB with Planar Configuration 1 does not come back as it went in through the RLE encoder,
  and JPEG-LS and JPEG 2000 require 0: such objects are left as they are.
- OpenJPEG needs at least 32 rows and columns for its six resolution levels.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

import numpy as np
from pydicom.datadict import dictionary_VR
from pydicom.dataset import Dataset
from pydicom.uid import (
    UID,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGLSLossless,
    RLELossless,
)

#: Codec name → (transfer syntax, keyword arguments for ``Dataset.compress``).
#: JPEG 2000 without the multiple component transform keeps Photometric Interpretation RGB,
#: so compression changes nothing in the header but the pixel data and the transfer syntax.
ENCODERS: Final[dict[str, tuple[UID, dict[str, Any]]]] = {
    "jpeg-ls": (JPEGLSLossless, {}),
    "jpeg2000": (JPEG2000Lossless, {"use_mct": False}),
    # pylibjpeg-rle: about 8x faster than pydicom's own RLE encoder (docs/benchmarks.md).
    "rle": (RLELossless, {"encoding_plugin": "pylibjpeg"}),
}
#: Stored syntaxes whose pixel data is compressed here (native little endian).
NATIVE_SOURCES: Final = frozenset({ExplicitVRLittleEndian, ImplicitVRLittleEndian})
_PHOTOMETRIC: Final = {1: frozenset({"MONOCHROME1", "MONOCHROME2", "PALETTE COLOR"}),
                       3: frozenset({"RGB"})}
_J2K_MIN_SIZE: Final = 32


class Unsupported(Exception):
    """The object is left as it is; the message says why (no patient data in it)."""


@dataclass(frozen=True, slots=True)
class PixelLayout:
    """The shape of an object's native pixel data, from its Image Pixel module."""

    frames: int
    rows: int
    columns: int
    samples: int
    bits_allocated: int
    bits_stored: int
    signed: bool

    @property
    def dtype(self) -> np.dtype[Any]:
        kind = "i" if self.signed else "u"
        return np.dtype(f"<{kind}{self.bits_allocated // 8}")

    @property
    def nbytes(self) -> int:
        return (self.frames * self.rows * self.columns * self.samples
                * self.bits_allocated // 8)


def pixel_layout(ds: Dataset) -> PixelLayout:
    """The layout of ``ds``'s native pixel data; :class:`Unsupported` says why not."""
    syntax = _syntax_of(ds)
    if syntax not in NATIVE_SOURCES:
        raise Unsupported(f"stored as {syntax or 'an unknown transfer syntax'}: only "
                          "explicit or implicit VR little endian objects are compressed")
    if "PixelData" not in ds:
        if "FloatPixelData" in ds or "DoubleFloatPixelData" in ds:
            raise Unsupported("float pixel data")
        raise Unsupported("no pixel data")
    try:
        samples = int(ds.SamplesPerPixel)
        photometric = str(ds.PhotometricInterpretation).strip()
        layout = PixelLayout(
            frames=int(ds.get("NumberOfFrames") or 1), rows=int(ds.Rows),
            columns=int(ds.Columns), samples=samples, bits_allocated=int(ds.BitsAllocated),
            bits_stored=int(ds.BitsStored), signed=int(ds.PixelRepresentation) == 1)
        planar = int(ds.get("PlanarConfiguration") or 0)
    except (AttributeError, TypeError, ValueError) as exc:
        raise Unsupported(f"incomplete Image Pixel module ({type(exc).__name__})") from None
    if layout.bits_allocated not in (8, 16):
        raise Unsupported(f"{layout.bits_allocated} bits allocated (8 or 16 are compressed)")
    if not 1 <= layout.bits_stored <= layout.bits_allocated:
        raise Unsupported(f"bits stored {layout.bits_stored} does not fit bits allocated "
                          f"{layout.bits_allocated}")
    if photometric not in _PHOTOMETRIC.get(samples, frozenset()):
        raise Unsupported(f"{samples} samples per pixel as {photometric or 'unknown'}")
    if samples == 3 and (planar != 0 or layout.signed):
        raise Unsupported("colour by plane or signed colour pixels")
    if min(layout.frames, layout.rows, layout.columns) < 1:
        raise Unsupported("empty image")
    size = len(ds.PixelData)
    # One pad byte makes an odd length even; anything else is not what the header says.
    if size not in (layout.nbytes, layout.nbytes + layout.nbytes % 2):
        raise Unsupported(f"pixel data of {size} bytes where the header says "
                          f"{layout.nbytes}")
    return layout


def check_codec(layout: PixelLayout, codec: str) -> None:
    """Limits of one codec beyond :func:`pixel_layout`'s."""
    if codec not in ENCODERS:
        raise Unsupported(f"unknown codec {codec!r}")
    if codec == "jpeg2000" and min(layout.rows, layout.columns) < _J2K_MIN_SIZE:
        raise Unsupported(f"JPEG 2000 needs at least {_J2K_MIN_SIZE} rows and columns")
    if codec == "jpeg-ls" and layout.bits_stored < 2:
        raise Unsupported("JPEG-LS needs at least 2 bits stored")


def original_pixels(ds: Dataset, layout: PixelLayout) -> np.ndarray[Any, Any]:
    """The stored pixel values as (frames, rows, columns, samples), read from the bytes
    themselves (pydicom's own reading masks unused high bits)."""
    raw = np.frombuffer(ds.PixelData, dtype=layout.dtype,
                        count=layout.nbytes // layout.dtype.itemsize)
    return raw.reshape(layout.frames, layout.rows, layout.columns, layout.samples)


def check_values_fit(pixels: np.ndarray[Any, Any], layout: PixelLayout) -> None:
    """Every value must be representable in ``bits_stored`` bits (sign-extended when
    signed): the codecs keep only those bits."""
    if layout.bits_stored == layout.bits_allocated:
        return
    if layout.signed:
        low, high = -(1 << (layout.bits_stored - 1)), (1 << (layout.bits_stored - 1)) - 1
    else:
        low, high = 0, (1 << layout.bits_stored) - 1
    if int(pixels.min()) < low or int(pixels.max()) > high:
        raise Unsupported(f"pixel values use bits above the {layout.bits_stored} bits stored")


def encode(ds: Dataset, codec: str) -> None:
    """Compress ``ds``'s pixel data in place (same SOP Instance UID, header unchanged but for
    the pixel data, its VR and the transfer syntax). :class:`Unsupported` when the encoder
    refuses the object."""
    syntax, options = ENCODERS[codec]
    try:
        ds.compress(syntax, generate_instance_uid=False, **options)
    except (ValueError, RuntimeError, NotImplementedError) as exc:
        raise Unsupported(f"{codec} encoder refused it: {_first_line(exc)}") from None


def decoded_pixels(ds: Dataset, layout: PixelLayout) -> np.ndarray[Any, Any]:
    """``ds``'s compressed pixel data decoded, as (frames, rows, columns, samples)."""
    arr = ds.pixel_array
    return np.asarray(arr).reshape(layout.frames, layout.rows, layout.columns, layout.samples)


def identical(original: np.ndarray[Any, Any], decoded: np.ndarray[Any, Any]) -> bool:
    """Bit for bit: same shape, and the same bytes in the original's dtype."""
    if original.shape != decoded.shape:
        return False
    if decoded.dtype.itemsize != original.dtype.itemsize:
        return False
    return bool(np.array_equal(np.ascontiguousarray(original).view(np.uint8),
                               np.ascontiguousarray(decoded).view(np.uint8)))


def header_differences(original: Dataset, compressed: Dataset) -> list[str]:
    """Tags whose values differ between two headers read with ``stop_before_pixels``
    (group lengths aside): the value bytes are compared, so a text the writer re-encoded
    (implicit to explicit VR) must come out as the same bytes, padding aside."""
    differences: list[str] = []
    _compare(original, compressed, "", differences)
    return differences


def _compare(a: Dataset, b: Dataset, where: str, differences: list[str]) -> None:
    tags = {t for t in (*a.keys(), *b.keys()) if t.element != 0}
    for tag in sorted(tags):
        label = f"{where}{tag}"
        if tag not in a or tag not in b:
            differences.append(label)
            continue
        # Raw elements as read (not converted, which would decode their text).
        first, second = a.get_item(tag), b.get_item(tag)
        if "SQ" in (_vr(first, tag), _vr(second, tag)):
            items_a, items_b = list(a[tag].value or []), list(b[tag].value or [])
            if len(items_a) != len(items_b):
                differences.append(label)
            for index, (item_a, item_b) in enumerate(zip(items_a, items_b, strict=False)):
                _compare(item_a, item_b, f"{label}[{index}].", differences)
        elif not _same_value(a, b, tag, first, second):
            differences.append(label)


def _vr(element: Any, tag: Any) -> str | None:
    vr = getattr(element, "VR", None)
    if vr:
        return str(vr)
    try:  # implicit VR: the dictionary's
        return str(dictionary_VR(tag))
    except KeyError:
        return None


def _same_value(a: Dataset, b: Dataset, tag: Any, first: Any, second: Any) -> bool:
    """Raw elements (as read) compare by value bytes, trailing space or NUL padding aside;
    an element pydicom converted already compares by its value."""
    if isinstance(first.value, bytes) and isinstance(second.value, bytes) and \
            getattr(first, "is_raw", False) and getattr(second, "is_raw", False):
        return bool(first.value.rstrip(b" \x00") == second.value.rstrip(b" \x00"))
    return bool(a[tag].value == b[tag].value)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:200]


def _syntax_of(ds: Dataset) -> str | None:
    """The transfer syntax of a dataset read from a file (None without file meta)."""
    meta = getattr(ds, "file_meta", None)
    syntax = meta.get("TransferSyntaxUID") if meta is not None else None
    return str(syntax) if syntax else None
