"""Lossless codecs: every supported syntax round-trips bit for bit, and what cannot be
compressed losslessly is refused with a reason before anything is written."""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filewriter import dcmwrite
from pydicom.uid import (
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGLSLossless,
    RLELossless,
    generate_uid,
)

from bridge.storage import codecs
from bridge.storage.codecs import Unsupported

SC = "1.2.840.10008.5.1.4.1.1.7"
SYNTAX = {"jpeg-ls": JPEGLSLossless, "jpeg2000": JPEG2000Lossless, "rle": RLELossless}


def image(*, bits: int = 16, signed: bool = False, samples: int = 1, frames: int = 1,
          rows: int = 48, columns: int = 40, bits_stored: int | None = None,
          syntax: str = ExplicitVRLittleEndian, seed: int = 5) -> tuple[Dataset, np.ndarray]:
    """A smooth gradient with noise over the whole range of ``bits_stored`` (realistic for
    the codecs' predictors, and it reaches the extremes a sign error would break)."""
    stored = bits_stored or bits
    rng = np.random.default_rng(seed)
    low = -(1 << (stored - 1)) if signed else 0
    high = ((1 << (stored - 1)) if signed else (1 << stored)) - 1
    ramp = np.linspace(low, high, rows * columns).reshape(rows, columns)
    values = ramp[None, :, :, None] + rng.normal(0, (high - low) / 50,
                                                 (frames, rows, columns, samples))
    values = np.clip(np.rint(values), low, high)
    values[0, 0, 0, 0], values[-1, -1, -1, -1] = low, high
    kind = "i" if signed else "u"
    pixels = values.astype(f"<{kind}{bits // 8}")
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = syntax
    ds.file_meta.MediaStorageSOPClassUID = SC
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.SOPClassUID, ds.SOPInstanceUID = SC, ds.file_meta.MediaStorageSOPInstanceUID
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.PatientName = "Шевченко^Тарас"
    ds.Modality = "OT"
    ds.Rows, ds.Columns, ds.SamplesPerPixel = rows, columns, samples
    ds.PhotometricInterpretation = "RGB" if samples == 3 else "MONOCHROME2"
    if samples == 3:
        ds.PlanarConfiguration = 0
    if frames > 1:
        ds.NumberOfFrames = frames
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = bits, stored, stored - 1
    ds.PixelRepresentation = int(signed)
    raw = pixels.tobytes()
    ds.PixelData = raw + b"\0" * (len(raw) % 2)
    ds["PixelData"].VR = "OW" if bits == 16 else "OB"
    return ds, pixels


def as_file(ds: Dataset) -> Dataset:
    buffer = io.BytesIO()
    dcmwrite(buffer, ds, enforce_file_format=True)
    return dcmread(io.BytesIO(buffer.getvalue()))


SHAPES = [(bits, signed, samples, frames)
          for bits in (8, 16) for signed in (False, True) for samples in (1, 3)
          for frames in (1, 3) if not (signed and samples == 3)]  # RGB is unsigned (PS3.3)


@pytest.mark.parametrize("codec", sorted(SYNTAX))
@pytest.mark.parametrize(("bits", "signed", "samples", "frames"), SHAPES,
                         ids=[f"{b}bit-{'s' if s else 'u'}-{'rgb' if n == 3 else 'mono'}-{f}f"
                              for b, s, n, f in SHAPES])
def test_round_trip_is_bit_exact(codec: str, bits: int, signed: bool, samples: int,
                                 frames: int) -> None:
    ds, pixels = image(bits=bits, signed=signed, samples=samples, frames=frames)
    sop_uid = ds.SOPInstanceUID
    layout = codecs.pixel_layout(ds)
    original = codecs.original_pixels(ds, layout)
    assert np.array_equal(original, pixels)
    header_before = as_file(ds)
    del header_before.PixelData

    codecs.encode(ds, codec)
    written = as_file(ds)

    assert written.file_meta.TransferSyntaxUID == SYNTAX[codec]
    assert written.SOPInstanceUID == sop_uid  # never a new UID
    decoded = codecs.decoded_pixels(written, layout)
    assert codecs.identical(original, decoded)
    assert decoded.tobytes() == pixels.tobytes()
    # Nothing else changed: Photometric Interpretation, Planar Configuration, the name...
    after = as_file(ds)
    del after.PixelData
    assert codecs.header_differences(header_before, after) == []


@pytest.mark.parametrize("codec", sorted(SYNTAX))
def test_twelve_bits_stored_round_trip_signed_and_unsigned(codec: str) -> None:
    for signed in (False, True):
        ds, _ = image(bits=16, bits_stored=12, signed=signed, frames=2)
        layout = codecs.pixel_layout(ds)
        original = codecs.original_pixels(ds, layout)
        codecs.check_values_fit(original, layout)
        codecs.encode(ds, codec)
        assert codecs.identical(original, codecs.decoded_pixels(as_file(ds), layout))


def test_implicit_vr_objects_are_compressed_with_the_same_header_values() -> None:
    ds, _ = image(syntax=ImplicitVRLittleEndian)
    stored = as_file(ds)
    assert stored.file_meta.TransferSyntaxUID == ImplicitVRLittleEndian
    layout = codecs.pixel_layout(stored)
    original = codecs.original_pixels(stored, layout)
    codecs.encode(stored, "jpeg-ls")
    written = as_file(stored)
    assert codecs.identical(original, codecs.decoded_pixels(written, layout))
    before = as_file(ds)
    del before.PixelData
    del written.PixelData
    assert codecs.header_differences(before, written) == []


def test_values_above_bits_stored_are_refused_since_the_codecs_would_drop_them() -> None:
    ds, _ = image(bits=16, bits_stored=12)
    raw = bytearray(ds.PixelData)
    raw[0:2] = (0xF123).to_bytes(2, "little")  # an overlay bit in the high nibble
    ds.PixelData = bytes(raw)
    layout = codecs.pixel_layout(ds)
    original = codecs.original_pixels(ds, layout)
    with pytest.raises(Unsupported, match="bits above the 12 bits stored"):
        codecs.check_values_fit(original, layout)
    # Why the check exists: the encoder does not complain, the value is lost.
    codecs.encode(ds, "jpeg-ls")
    assert not codecs.identical(original, codecs.decoded_pixels(as_file(ds), layout))


def test_signed_values_must_be_sign_extended() -> None:
    ds, pixels = image(bits=16, bits_stored=12, signed=True)
    ds.PixelData = (pixels.view("<u2") & 0x0FFF).astype("<u2").tobytes()  # not extended
    layout = codecs.pixel_layout(ds)
    with pytest.raises(Unsupported, match="bits above"):
        codecs.check_values_fit(codecs.original_pixels(ds, layout), layout)


def _edit(ds: Dataset, **changes: Any) -> Dataset:
    for keyword, value in changes.items():
        if value is None:
            delattr(ds, keyword)
        else:
            setattr(ds, keyword, value)
    return ds


@pytest.mark.parametrize(("changes", "reason"), [
    ({"PixelData": None}, "no pixel data"),
    ({"BitsAllocated": 32, "BitsStored": 32, "HighBit": 31}, "32 bits allocated"),
    ({"BitsStored": 17}, "bits stored 17 does not fit"),
    ({"PhotometricInterpretation": "YBR_FULL"}, "1 samples per pixel as YBR_FULL"),
    ({"Rows": 49}, "where the header says"),
    ({"SamplesPerPixel": None}, "incomplete Image Pixel module"),
])
def test_unsupported_objects_get_a_reason(changes: dict[str, Any], reason: str) -> None:
    ds, _ = image()
    with pytest.raises(Unsupported, match=reason):
        codecs.pixel_layout(_edit(ds, **changes))


def test_compressed_float_and_planar_objects_are_left_alone() -> None:
    ds, _ = image()
    codecs.encode(ds, "rle")
    with pytest.raises(Unsupported, match=r"stored as 1\.2\.840\.10008\.1\.2\.5"):
        codecs.pixel_layout(ds)
    colour, _ = image(samples=3, bits=8)
    colour.PlanarConfiguration = 1
    with pytest.raises(Unsupported, match="colour by plane"):
        codecs.pixel_layout(colour)
    floats, _ = image()
    floats.FloatPixelData = floats.PixelData
    del floats.PixelData
    with pytest.raises(Unsupported, match="float pixel data"):
        codecs.pixel_layout(floats)


def test_jpeg2000_needs_32_rows_and_columns() -> None:
    ds, _ = image(rows=16, columns=64)
    layout = codecs.pixel_layout(ds)
    with pytest.raises(Unsupported, match="at least 32 rows"):
        codecs.check_codec(layout, "jpeg2000")
    codecs.check_codec(layout, "jpeg-ls")
    codecs.check_codec(layout, "rle")


def test_odd_length_eight_bit_data_with_its_pad_byte() -> None:
    ds, pixels = image(bits=8, rows=33, columns=35)
    assert len(ds.PixelData) == pixels.size + 1
    layout = codecs.pixel_layout(ds)
    original = codecs.original_pixels(ds, layout)
    codecs.encode(ds, "jpeg-ls")
    assert codecs.identical(original, codecs.decoded_pixels(as_file(ds), layout))


def test_header_differences_name_the_changed_values() -> None:
    ds, _ = image()
    del ds.PixelData
    other = as_file(ds)
    other.PatientName = "Шевченко^Тарас^Г"
    other.ReferencedSeriesSequence = [Dataset()]
    other.ReferencedSeriesSequence[0].SeriesInstanceUID = "1.2.3"
    assert codecs.header_differences(as_file(ds), as_file(other)) == [
        "(0008,1115)", "(0010,0010)"]
    ds.ReferencedSeriesSequence = [Dataset()]
    ds.ReferencedSeriesSequence[0].SeriesInstanceUID = "1.2.4"
    other.PatientName = ds.PatientName
    assert codecs.header_differences(as_file(ds), as_file(other)) == [
        "(0008,1115)[0].(0020,000E)"]
