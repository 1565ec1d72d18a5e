"""The grayscale half of the pixel pipeline (PS3.4 N.2): stored values → Modality LUT
(Rescale Slope and Intercept) → VOI window → 8-bit display values, inverted for MONOCHROME1.
Pure numpy.

For up to 16 bits stored the whole chain is one lookup table over every bit pattern the frame
can hold (65,536 entries at most, built once per window and cached): rendering a frame is then
a single ``take``, whatever the function. The table is indexed by the raw bit pattern of the
stored bits, so two's complement signed pixels and garbage above ``BitsStored`` need no
per-pixel work beyond a mask. Wider pixels (32 bits) are computed directly.

The window functions are those of PS3.3 C.11.2.1.2.1 (LINEAR), C.11.2.1.3.2 (LINEAR_EXACT) and
C.11.2.1.3.1 (SIGMOID) with y_min = 0 and y_max = 255; outputs are rounded to the nearest gray
level (half up).
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

import numpy as np
import numpy.typing as npt

from bridge.mapping.rendering.params import VoiFunction, Window

FloatArray = npt.NDArray[np.float64]
ByteArray = npt.NDArray[np.uint8]
#: Lookup tables are built for frames of at most this many stored bits.
MAX_LUT_BITS = 16
_Y_MAX = 255.0


def window_output(x: FloatArray, window: Window) -> FloatArray:
    """The VOI function's output in [0, 255] for modality values ``x`` (not yet rounded)."""
    c, w = window.center, window.width
    if window.function is VoiFunction.SIGMOID:
        return _Y_MAX / (1.0 + np.exp(-4.0 * (x - c) / w))
    if window.function is VoiFunction.LINEAR_EXACT:
        low, high = c - w / 2, c + w / 2
        inside = ((x - c) / w + 0.5) * _Y_MAX
    else:
        low, high = c - 0.5 - (w - 1) / 2, c - 0.5 + (w - 1) / 2
        # At w = 1 no x lies inside (low == high): the slope is never used, only guarded.
        inside = ((x - (c - 0.5)) / max(w - 1, 1e-12) + 0.5) * _Y_MAX
    # Written as the standard's if/else: x <= low → y_min, x > high → y_max.
    return np.where(x <= low, 0.0, np.where(x > high, _Y_MAX, inside))


def to_gray_levels(y: FloatArray, *, invert: bool = False) -> ByteArray:
    """Round to 8 bits (half up); MONOCHROME1 shows its lowest value white."""
    levels = np.floor(np.clip(y, 0.0, _Y_MAX) + 0.5).astype(np.uint8)
    return np.subtract(255, levels, dtype=np.uint8) if invert else levels


def stored_values(bits_stored: int, signed: bool) -> npt.NDArray[np.int64]:
    """The value of every bit pattern of ``bits_stored`` bits, pattern order."""
    patterns = np.arange(1 << bits_stored, dtype=np.int64)
    if signed:
        half = 1 << (bits_stored - 1)
        patterns = np.where(patterns >= half, patterns - (1 << bits_stored), patterns)
    return patterns


def modality_values(stored: npt.NDArray[np.int64] | FloatArray, slope: float,
                    intercept: float) -> FloatArray:
    """The Modality LUT as Rescale Slope and Intercept (PS3.3 C.11.1.1.2)."""
    return stored.astype(np.float64) * slope + intercept


@lru_cache(maxsize=64)
def grayscale_lut(bits_stored: int, signed: bool, slope: float, intercept: float,
                  window: Window, invert: bool) -> ByteArray:
    """Bit pattern → display gray level, the whole chain in one table (read-only)."""
    values = modality_values(stored_values(bits_stored, signed), slope, intercept)
    table = to_gray_levels(window_output(values, window), invert=invert)
    table.flags.writeable = False
    return table


def stored_range(patterns: npt.NDArray[np.unsignedinteger], bits_stored: int,
                 signed: bool) -> tuple[int, int]:
    """The lowest and highest stored value in a frame given as masked bit patterns."""
    if not signed:
        return int(patterns.min()), int(patterns.max())
    half = 1 << (bits_stored - 1)
    # Two's complement: patterns below ``half`` are the non-negative values, ordered as they
    # are; the others are negative. Two min/max passes instead of converting every pixel.
    negative = patterns[patterns >= half]
    positive = patterns[patterns < half]
    low = int(negative.min()) - (1 << bits_stored) if negative.size else int(positive.min())
    high = int(positive.max()) if positive.size else int(negative.max()) - (1 << bits_stored)
    return low, high


def full_range_window(low: float, high: float) -> Window:
    """The window that maps ``low`` to black and ``high`` to white (LINEAR_EXACT), for a frame
    whose header names no window: its whole dynamic range."""
    width = max(high - low, 1.0)
    return Window((low + high) / 2, width, VoiFunction.LINEAR_EXACT)


def header_window(centers: Sequence[float], widths: Sequence[float],
                  function: str | None) -> Window | None:
    """The header's first Window Center/Width pair with its VOI LUT Function; None when absent
    or unusable (a width the function does not allow)."""
    if not centers or not widths:
        return None
    try:
        kind = VoiFunction((function or "LINEAR").strip().upper())
    except ValueError:
        kind = VoiFunction.LINEAR
    window = Window(float(centers[0]), float(widths[0]), kind)
    return window if window.is_valid() else None


def render_grayscale(patterns: npt.NDArray[np.unsignedinteger], lut: ByteArray) -> ByteArray:
    """A frame of masked bit patterns through its table."""
    out: ByteArray = np.take(lut, patterns)
    return out


def render_wide(values: FloatArray, window: Window, invert: bool) -> ByteArray:
    """Frames too wide for a table (32-bit): modality values straight through the window."""
    return to_gray_levels(window_output(values, window), invert=invert)
