"""The rendering query parameters (PS3.18 8.3.5.1) and frame lists: the standard's forms,
and each bad form refused with a 400 that names the parameter."""

from __future__ import annotations

import pytest

from bridge.errors import Rejected
from bridge.mapping.rendering.params import (
    DEFAULT_QUALITY,
    RenderParams,
    Viewport,
    VoiFunction,
    Window,
    parse_frame_list,
    parse_viewport,
    parse_window,
    rendering_params,
)


def test_the_standard_forms() -> None:
    params = rendering_params({
        "window": ["-600,1600,linear"], "viewport": ["512,512,0,0,256,256"],
        "quality": ["75"], "annotation": ["patient,technique"], "charset": ["utf-8"],
        "iccprofile": ["srgb"]})
    assert params == RenderParams(
        window=Window(-600.0, 1600.0, VoiFunction.LINEAR),
        viewport=Viewport(512, 512, 0, 0, 256, 256), quality=75,
        annotations=("patient", "technique"))
    assert params.warnings and "not burned in" in params.warnings[0]
    assert rendering_params({}) == RenderParams(quality=DEFAULT_QUALITY)
    assert rendering_params({}).warnings == []


@pytest.mark.parametrize(("text", "window"), [
    ("40,400", Window(40, 400, VoiFunction.LINEAR)),
    ("40,400,linear", Window(40, 400, VoiFunction.LINEAR)),
    ("40.5,1,linear", Window(40.5, 1, VoiFunction.LINEAR)),
    ("-1e2,2.5E3,linear-exact", Window(-100, 2500, VoiFunction.LINEAR_EXACT)),
    (" 0 , 0.25 , sigmoid", Window(0, 0.25, VoiFunction.SIGMOID)),
    ("0,0.001,linear-exact", Window(0, 0.001, VoiFunction.LINEAR_EXACT)),
])
def test_window_forms(text: str, window: Window) -> None:
    assert parse_window(text) == window


@pytest.mark.parametrize("text", [
    "40", "40,400,linear,x", "", "a,400", "40,b", "40,400,LINEAR", "40,400,cubic",
    "40,0.99", "40,0,linear-exact", "40,-5,sigmoid", "nan,400", "40,inf", "0x10,400",
])
def test_bad_windows(text: str) -> None:
    with pytest.raises(Rejected) as refused:
        parse_window(text)
    assert refused.value.location == "window"


@pytest.mark.parametrize(("text", "viewport"), [
    ("512,512", Viewport(512, 512)),
    ("256,128,10,20,100,50", Viewport(256, 128, 10, 20, 100, 50)),
    ("256,128,,,,", Viewport(256, 128)),
    ("256,128,5,,-100,", Viewport(256, 128, 5, 0, -100, None)),
    ("64,64,0,0,-32,-32", Viewport(64, 64, 0, 0, -32, -32)),
])
def test_viewport_forms(text: str, viewport: Viewport) -> None:
    assert parse_viewport(text) == viewport


@pytest.mark.parametrize("text", [
    "512", "512,512,1", "512,512,1,1,1", "512,512,1,1,1,1,1", "0,512", "512,-1",
    "8193,10", "a,b", "1.5,2", "10,10,-1,0,5,5", "10,10,0,-2,5,5", "10,10,0,0,0,5",
    "10,10,0,0,5,0", "10,10,x,0,5,5",
])
def test_bad_viewports(text: str) -> None:
    with pytest.raises(Rejected) as refused:
        parse_viewport(text)
    assert refused.value.location == "viewport"


def test_thumbnails_take_vw_vh_and_nothing_else_renders() -> None:
    assert rendering_params({"viewport": ["64,64"], "window": ["garbage"]},
                            thumbnail=True) == RenderParams(viewport=Viewport(64, 64))
    with pytest.raises(Rejected):
        rendering_params({"viewport": ["64,64,0,0,10,10"]}, thumbnail=True)


@pytest.mark.parametrize(("name", "value"), [
    ("quality", "0"), ("quality", "101"), ("quality", "9.5"), ("quality", "best"),
    ("annotation", "patient,colour"), ("annotation", ""),
])
def test_bad_quality_and_annotation(name: str, value: str) -> None:
    with pytest.raises(Rejected) as refused:
        rendering_params({name: [value]})
    assert refused.value.location == name


def test_quality_bounds() -> None:
    assert rendering_params({"quality": ["1"]}).quality == 1
    assert rendering_params({"quality": ["100"]}).quality == 100


def test_a_parameter_given_twice_is_refused() -> None:
    with pytest.raises(Rejected) as refused:
        rendering_params({"window": ["40,400", "50,500"]})
    assert refused.value.location == "window"


def test_frame_lists() -> None:
    assert parse_frame_list("1") == (1,)
    assert parse_frame_list("3,1,2") == (3, 1, 2)
    for bad in ("0", "-1", "1,,2", "a", "1.0", "2,2", ""):
        with pytest.raises(Rejected) as refused:
            parse_frame_list(bad)
        assert refused.value.location == "frames"
