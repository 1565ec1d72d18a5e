"""A rendered image of one frame: the pipeline of PS3.4 N.2 as PS3.18 8.3.5.1 asks for it,
then encoded with Pillow.

Order (PS3.18 8.3.5.1: presentation first, then the source region, then the viewport): the
source region is cut from the stored frame first (only its pixels go through the lookup
table, which gives the same result as cutting after it), then Modality LUT, VOI window and
MONOCHROME1 inversion in one table, the flips, and the scaling to the viewport (Pillow's
bilinear filter, which averages over the source pixels when shrinking). The window is the
request's, else the header's first one, else the frame's whole range.

JPEG is encoded by Pillow's libjpeg(-turbo) at the requested quality, without optimised
Huffman tables (a second pass over the data for ~5 % smaller files). PNG is lossless at zlib
level 1 with the run-length strategy: on a 512×512 CT frame (bench/rendered.py's phantom)
3.2 ms and 55 KB, against 5.8 ms and 56 KB at the default level 6, a poor trade for a server
answering a viewer on the hospital network.
"""

from __future__ import annotations

import io
import zlib
from pathlib import Path

import numpy as np
import numpy.typing as npt
from PIL import Image

from bridge.mapping.rendering.geometry import Region, output_size, source_region
from bridge.mapping.rendering.params import RenderParams, Window
from bridge.mapping.rendering.voi import (
    MAX_LUT_BITS,
    full_range_window,
    grayscale_lut,
    modality_values,
    render_grayscale,
    render_wide,
    stored_range,
)
from bridge.services.rendering.frames import Frame, FrameLayout, read_frame

JPEG = "image/jpeg"
PNG = "image/png"
MEDIA_TYPES = (JPEG, PNG)
PNG_COMPRESS_LEVEL = 1

# Pillow imports its format plugins on the first save; done here, at start, so that the
# first rendered frame a server answers does not pay ~8 ms for it.
Image.preinit()


def render_frame(local: Path, layout: FrameLayout, index: int, params: RenderParams,
                 media_type: str, *, thumbnail: bool = False) -> bytes:
    """Frame ``index`` (from 0) of the object at ``local``, rendered and encoded."""
    region = source_region(params.viewport, layout.columns, layout.rows)
    frame = read_frame(local, layout, index)
    shown = display_pixels(frame, layout, region, params.window)
    size = output_size(region, params.viewport, thumbnail=thumbnail)
    return encode(shown, size, media_type, params.quality)


def display_pixels(frame: Frame, layout: FrameLayout, region: Region,
                   window: Window | None) -> npt.NDArray[np.uint8]:
    """The region of the frame as 8-bit display values (gray or RGB), flipped as asked."""
    pixels = frame.pixels[region.y : region.y + region.height,
                          region.x : region.x + region.width]
    if not frame.colour:
        pixels = _gray_levels(frame.pixels, pixels, layout, window)
    if region.flip_x:
        pixels = pixels[:, ::-1]
    if region.flip_y:
        pixels = pixels[::-1]
    return np.ascontiguousarray(pixels, dtype=np.uint8)


def encode(pixels: npt.NDArray[np.uint8], size: tuple[int, int], media_type: str,
           quality: int) -> bytes:
    image = Image.fromarray(pixels, "RGB" if pixels.ndim == 3 else "L")
    if image.size != size:
        image = image.resize(size, Image.Resampling.BILINEAR)
    buffer = io.BytesIO()
    if media_type == PNG:
        image.save(buffer, "PNG", compress_level=PNG_COMPRESS_LEVEL, compress_type=zlib.Z_RLE)
    else:
        image.save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()


def _gray_levels(whole: npt.NDArray[np.unsignedinteger],
                 region: npt.NDArray[np.unsignedinteger], layout: FrameLayout,
                 window: Window | None) -> npt.NDArray[np.uint8]:
    window = window or layout.window or _whole_range(whole, layout)
    invert = layout.photometric == "MONOCHROME1"
    if layout.bits_stored <= MAX_LUT_BITS:
        lut = grayscale_lut(layout.bits_stored, layout.signed, layout.slope,
                            layout.intercept, window, invert)
        return render_grayscale(region, lut)
    values = region.astype(np.int64)
    if layout.signed:
        top = 1 << (layout.bits_stored - 1)
        values = np.where(values >= top, values - (1 << layout.bits_stored), values)
    return render_wide(modality_values(values, layout.slope, layout.intercept), window,
                       invert)


def _whole_range(whole: npt.NDArray[np.unsignedinteger], layout: FrameLayout) -> Window:
    """The frame's own range in modality units (the whole frame, not the region, so a crop
    shows the same gray levels as the full image)."""
    low, high = stored_range(whole, layout.bits_stored, layout.signed)
    ends = modality_values(np.array([low, high], dtype=np.int64), layout.slope,
                           layout.intercept)
    return full_range_window(float(ends.min()), float(ends.max()))

