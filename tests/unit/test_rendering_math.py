"""The pixel math of rendering against values worked out by hand from PS3.3 C.11.2.1.2
(LINEAR, LINEAR_EXACT, SIGMOID), C.11.1.1.2 (rescale), C.7.6.3.1.2 (YBR_FULL), and the viewport
geometry of PS3.18 8.3.5.1.3."""

from __future__ import annotations

import math

import numpy as np
import pytest

from bridge.errors import Rejected
from bridge.mapping.rendering.geometry import (
    THUMBNAIL_SIZE,
    Region,
    fitted_size,
    output_size,
    source_region,
)
from bridge.mapping.rendering.params import Viewport, VoiFunction, Window
from bridge.mapping.rendering.photometric import expand_422, rgb_frame, ybr_full_to_rgb
from bridge.mapping.rendering.voi import (
    full_range_window,
    grayscale_lut,
    header_window,
    modality_values,
    stored_range,
    stored_values,
    to_gray_levels,
    window_output,
)


def out(x: list[float], window: Window) -> list[int]:
    return to_gray_levels(window_output(np.array(x, dtype=np.float64), window)).tolist()


def test_linear_by_hand() -> None:
    # c = 40, w = 400: x <= 40 - 0.5 - 199.5 = -160 → 0; x > 239 → 255;
    # else y = ((x - 39.5) / 399 + 0.5) * 255.
    window = Window(40, 400, VoiFunction.LINEAR)
    assert out([-1000, -160, -159, 39.5, 40, 238, 239, 239.5, 3000], window) == [
        0, 0, 1, 128, 128, 254, 255, 255, 255]
    # -159: (-198.5 / 399 + 0.5) * 255 = 0.639 → 1; 40: 127.82 → 128; 238: 254.36 → 254.
    assert math.isclose(window_output(np.array([40.0]), window)[0],
                        (0.5 / 399 + 0.5) * 255)


def test_linear_width_one_is_a_threshold() -> None:
    # w = 1: x <= c - 0.5 → 0, x > c - 0.5 → 255 (the standard's lower bound on width).
    assert out([99.4, 99.5, 99.6, 100], Window(100, 1)) == [0, 0, 255, 255]


def test_linear_exact_by_hand() -> None:
    # c = 0, w = 100: x <= -50 → 0; x > 50 → 255; else ((x - 0) / 100 + 0.5) * 255.
    window = Window(0, 100, VoiFunction.LINEAR_EXACT)
    assert out([-50, -49, 0, 25, 50, 51], window) == [0, 3, 128, 191, 255, 255]
    # -49: 0.01 * 255 = 2.55 → 3; 0: 127.5 → 128 (half up); 25: 191.25 → 191.


def test_sigmoid_by_hand() -> None:
    # y = 255 / (1 + exp(-4 (x - c) / w)): c = 0, w = 100.
    window = Window(0, 100, VoiFunction.SIGMOID)
    assert out([0, 25, -25, 1000], window) == [128, 186, 69, 255]
    # 25: 255 / (1 + e^-1) = 186.4; -25: 255 / (1 + e) = 68.6.


def test_rescale_signed_and_the_table() -> None:
    assert stored_values(4, signed=True).tolist() == [0, 1, 2, 3, 4, 5, 6, 7,
                                                      -8, -7, -6, -5, -4, -3, -2, -1]
    assert modality_values(np.array([0, 1024, -3]), 2.0, -1024.0).tolist() == [
        -1024.0, 1024.0, -1030.0]
    # 12 bits stored, signed; HU = 1 * value - 1024, window 0,2 (LINEAR_EXACT):
    lut = grayscale_lut(12, True, 1.0, -1024.0, Window(0, 2, VoiFunction.LINEAR_EXACT),
                        False)
    assert lut.shape == (4096,)
    assert not lut.flags.writeable
    assert lut[1024] == 128  # value 1024 → 0 HU → centre
    assert lut[1023] == 0 and lut[1025] == 255
    assert lut[0xFFF] == 0  # pattern 0xFFF is -1 → -1025 HU
    inverted = grayscale_lut(12, True, 1.0, -1024.0, Window(0, 2, VoiFunction.LINEAR_EXACT),
                             True)
    assert (inverted == 255 - lut).all()  # MONOCHROME1


def test_stored_range_of_signed_patterns() -> None:
    patterns = np.array([0x0005, 0xFFFE, 0x8000, 0x7FFF], dtype=np.uint16)  # 5, -2, min, max
    assert stored_range(patterns, 16, signed=True) == (-32768, 32767)
    assert stored_range(np.array([0xFFFE, 0xFFFF], dtype=np.uint16), 16, True) == (-2, -1)
    assert stored_range(np.array([3, 9], dtype=np.uint16), 16, False) == (3, 9)
    assert stored_range(np.array([0x800, 0x001], dtype=np.uint16), 12, True) == (-2048, 1)


def test_the_whole_range_and_the_header_window() -> None:
    window = full_range_window(-1000, 3000)
    assert out([-1000, 1000, 3000], window) == [0, 128, 255]
    assert full_range_window(7, 7).width == 1  # a flat frame still renders
    assert header_window([40.0, 300.0], [400.0, 1500.0], None) == Window(40, 400)
    assert header_window([1.0], [2.0], "SIGMOID") == Window(1, 2, VoiFunction.SIGMOID)
    assert header_window([1.0], [0.5], "") is None  # LINEAR needs width >= 1
    assert header_window([], [], None) is None
    assert header_window([1.0], [2.0], "FANCY") == Window(1, 2)


def test_ybr_full_by_hand() -> None:
    ybr = np.array([[[128, 128, 128], [76, 85, 255], [255, 128, 128]]], dtype=np.uint8)
    # grey stays grey; Y=76 Cb=85 Cr=255 is (nearly) pure red: R = 76 + 1.402 * 127 = 254.
    assert ybr_full_to_rgb(ybr).tolist() == [[[128, 128, 128], [254, 0, 0],
                                              [255, 255, 255]]]


def test_rgb_layouts() -> None:
    rgb = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)
    planar = rgb.transpose(2, 0, 1).ravel()
    assert (rgb_frame(rgb.ravel(), rows=2, columns=3, photometric="RGB", planar=0,
                      bits_stored=8) == rgb).all()
    assert (rgb_frame(planar, rows=2, columns=3, photometric="RGB", planar=1,
                      bits_stored=8) == rgb).all()
    wide = (rgb.astype(np.uint16) << 4).ravel()  # 12 bits stored: the top 8 are kept
    assert (rgb_frame(wide, rows=2, columns=3, photometric="RGB", planar=0,
                      bits_stored=12) == rgb).all()
    # YBR_FULL_422: Y1 Y2 Cb Cr per pixel pair.
    pairs = np.array([10, 20, 128, 128, 30, 40, 128, 128], dtype=np.uint8)
    assert expand_422(pairs, 1, 4).tolist() == [[[10, 128, 128], [20, 128, 128],
                                                 [30, 128, 128], [40, 128, 128]]]
    assert rgb_frame(pairs, rows=1, columns=4, photometric="YBR_FULL_422", planar=0,
                     bits_stored=8)[0, :, 0].tolist() == [10, 20, 30, 40]


def test_viewport_sizes() -> None:
    assert fitted_size(512, 512, 128, 128, enlarge=False) == (128, 128)
    assert fitted_size(512, 256, 128, 128, enlarge=False) == (128, 64)
    assert fitted_size(256, 512, 128, 100, enlarge=False) == (50, 100)
    assert fitted_size(64, 64, 128, 128, enlarge=False) == (64, 64)  # never enlarged
    assert fitted_size(64, 64, 128, 256, enlarge=True) == (128, 128)
    assert fitted_size(3, 1000, 100, 100, enlarge=False) == (1, 100)  # at least one pixel
    region = Region(0, 0, 512, 400)
    assert output_size(region, None, thumbnail=False) == (512, 400)
    assert output_size(region, None, thumbnail=True) == (THUMBNAIL_SIZE, 100)
    assert output_size(region, Viewport(1024, 1024), thumbnail=False) == (1024, 800)
    assert output_size(region, Viewport(1024, 1024), thumbnail=True) == (512, 400)


def test_source_regions() -> None:
    assert source_region(None, 512, 400) == Region(0, 0, 512, 400)
    assert source_region(Viewport(10, 10, 100, 50, 200, 100), 512, 400) == Region(
        100, 50, 200, 100)
    assert source_region(Viewport(10, 10, 500, 390), 512, 400) == Region(500, 390, 12, 10)
    assert source_region(Viewport(10, 10, 500, 0, 100, None), 512, 400) == Region(
        500, 0, 12, 400)  # clipped at the edge
    assert source_region(Viewport(10, 10, 0, 0, -64, -32), 512, 400) == Region(
        0, 0, 64, 32, flip_x=True, flip_y=True)
    with pytest.raises(Rejected):
        source_region(Viewport(10, 10, 512, 0), 512, 400)
    with pytest.raises(Rejected):
        source_region(Viewport(10, 10, 0, 400), 512, 400)
