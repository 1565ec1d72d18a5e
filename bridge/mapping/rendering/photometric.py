"""Colour frames from their stored layout to interleaved 8-bit RGB (rows × columns × 3).
Pure numpy.

- Planar Configuration 0 stores R1 G1 B1 R2 …, 1 stores all R, then all G, then all B.
- YBR_FULL converts with the equations of PS3.3 C.7.6.3.1.2; YBR_FULL_422 stores two pixels
  as Y1 Y2 Cb Cr (horizontal chroma halved, always Planar Configuration 0) and is expanded
  before it converts.
- More than 8 bits per sample keep their top 8 bits stored: a VOI window does not apply to
  colour (PS3.4 N.2 has no VOI stage for colour images).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

ByteArray = npt.NDArray[np.uint8]
COLOUR_PHOTOMETRICS = frozenset({"RGB", "YBR_FULL", "YBR_FULL_422"})


def to_eight_bits(samples: npt.NDArray[np.unsignedinteger], bits_stored: int) -> ByteArray:
    """Samples of ``bits_stored`` bits as 8-bit ones (their highest 8 bits)."""
    if samples.dtype == np.uint8 and bits_stored >= 8:
        return samples.astype(np.uint8, copy=False)
    shift = max(bits_stored - 8, 0)
    mask = (1 << bits_stored) - 1
    return ((samples & mask) >> shift).astype(np.uint8)


def interleaved(samples: ByteArray, rows: int, columns: int, planar: int) -> ByteArray:
    """A stored frame's samples (flat) as rows × columns × 3."""
    if planar == 1:
        return np.ascontiguousarray(samples.reshape(3, rows, columns).transpose(1, 2, 0))
    return samples.reshape(rows, columns, 3)


def expand_422(samples: ByteArray, rows: int, columns: int) -> ByteArray:
    """YBR_FULL_422 (Y1 Y2 Cb Cr per pixel pair) as full YBR, rows × columns × 3."""
    pairs = samples.reshape(rows, columns // 2, 4)
    out = np.empty((rows, columns // 2, 2, 3), dtype=np.uint8)
    out[:, :, 0, 0] = pairs[:, :, 0]
    out[:, :, 1, 0] = pairs[:, :, 1]
    out[:, :, :, 1] = pairs[:, :, 2, None]
    out[:, :, :, 2] = pairs[:, :, 3, None]
    return out.reshape(rows, columns, 3)


def ybr_full_to_rgb(ybr: ByteArray) -> ByteArray:
    """PS3.3 C.7.6.3.1.2, inverted: full-range YCbCr (8 bits) to RGB."""
    y = ybr[..., 0].astype(np.float32)
    cb = ybr[..., 1].astype(np.float32) - 128.0
    cr = ybr[..., 2].astype(np.float32) - 128.0
    rgb = np.stack((y + 1.402 * cr, y - 0.344136 * cb - 0.714136 * cr, y + 1.772 * cb),
                   axis=-1)
    return np.clip(np.floor(rgb + 0.5), 0, 255).astype(np.uint8)


def rgb_frame(samples: npt.NDArray[np.unsignedinteger], *, rows: int, columns: int,
              photometric: str, planar: int, bits_stored: int) -> ByteArray:
    """One stored colour frame (flat samples, as in the file) as RGB."""
    eight = to_eight_bits(samples, bits_stored)
    if photometric == "YBR_FULL_422":
        return ybr_full_to_rgb(expand_422(eight, rows, columns))
    frame = interleaved(eight, rows, columns, planar)
    return ybr_full_to_rgb(frame) if photometric == "YBR_FULL" else frame


def stored_frame_samples(photometric: str, rows: int, columns: int, samples: int) -> int:
    """How many samples one stored frame holds (YBR_FULL_422 holds two per pixel)."""
    if photometric == "YBR_FULL_422":
        return rows * columns * 2
    return rows * columns * samples
