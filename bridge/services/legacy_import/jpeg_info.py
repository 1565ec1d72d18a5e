"""The header of a JPEG file, read from its markers: can its bitstream go into DICOM as it is?

DICOM's JPEG Baseline (Process 1) transfer syntax takes exactly the SOF0 process: 8-bit
samples, Huffman coding, sequential. Progressive, 12-bit, lossless or arithmetic-coded
JPEG would need another transfer syntax that few viewers read; those images are decoded
instead. Pure: works on bytes.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

_SOF0 = 0xC0
#: Start-of-frame markers (all processes); C4 (DHT), C8 (JPG) and CC (DAC) are not frames.
_SOF_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
_SOS, _EOI, _APP14 = 0xDA, 0xD9, 0xEE


@dataclass(frozen=True, slots=True)
class JpegHeader:
    sof: int
    precision: int
    rows: int
    columns: int
    components: int
    #: Horizontal and vertical sampling factors of each component.
    sampling: tuple[tuple[int, int], ...]
    #: Adobe APP14 colour transform (0: RGB as is, 1: YCbCr), None without an APP14.
    adobe_transform: int | None

    @property
    def is_baseline(self) -> bool:
        return self.sof == _SOF0 and self.precision == 8 and self.components in (1, 3)

    @property
    def photometric(self) -> str:
        """PS3.5 8.2.1: YBR_FULL_422 when the chroma is subsampled, YBR_FULL when not, RGB
        for an Adobe file that stores RGB without transform."""
        if self.components == 1:
            return "MONOCHROME2"
        if self.adobe_transform == 0:
            return "RGB"
        luma, *chroma = self.sampling
        if any(factors != luma for factors in chroma):
            return "YBR_FULL_422"
        return "YBR_FULL"


def read_jpeg_header(data: bytes) -> JpegHeader | None:
    """The frame header, or None when the markers before the scan are malformed."""
    position = 2
    adobe: int | None = None
    while position + 4 <= len(data):
        if data[position] != 0xFF:
            return None
        marker = data[position + 1]
        if marker == 0xFF:  # fill byte
            position += 1
            continue
        (length,) = struct.unpack_from(">H", data, position + 2)
        segment = data[position + 4:position + 2 + length]
        if marker == _APP14 and segment.startswith(b"Adobe") and len(segment) >= 12:
            adobe = segment[11]
        if marker in _SOF_MARKERS:
            if len(segment) < 6:
                return None
            precision, rows, columns, count = struct.unpack_from(">BHHB", segment)
            sampling = tuple((segment[7 + 3 * i] >> 4, segment[7 + 3 * i] & 0x0F)
                             for i in range(count) if 8 + 3 * i <= len(segment))
            return JpegHeader(marker, precision, rows, columns, count, sampling, adobe)
        if marker in (_SOS, _EOI):
            return None
        position += 2 + length
    return None


def ends_complete(data: bytes) -> bool:
    """A complete JPEG ends with EOI (trailing padding some writers add is allowed)."""
    return data.rstrip(b"\x00").endswith(b"\xff\xd9")
