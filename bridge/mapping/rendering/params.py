"""The query parameters of a Retrieve Rendered or Thumbnail request (PS3.18 8.3.5.1) and the
frame list of a frames resource. Pure: no I/O.

- ``window=center,width[,function]``: the VOI window in the units of the Modality LUT's output
  (Hounsfield units for CT); ``function`` is ``linear`` (the default when left out, as in the
  image header where an absent VOI LUT Function means LINEAR), ``linear-exact`` or ``sigmoid``
  (PS3.3 C.11.2.1.2 and C.11.2.1.3). LINEAR needs a width of at least 1, the other two a width
  above 0 (the notes of those sections).
- ``viewport=vw,vh`` or ``viewport=vw,vh,sx,sy,sw,sh``: the rendered image fits inside
  ``vw``×``vh`` (aspect ratio kept); ``sx,sy,sw,sh`` crop a source region first (top left
  corner and size in pixels; an empty ``sx``/``sy`` is 0, an empty ``sw``/``sh`` reaches the
  image's edge; a negative ``sw`` or ``sh`` flips the region horizontally or vertically).
  Thumbnails take ``vw,vh`` only (Table 8.3.5-1).
- ``quality=1..100``: the JPEG quality (ignored for PNG, which is lossless).
- ``annotation=patient,technique``: accepted and not burned in (PS3.18 lets an origin server
  leave a parameter unsupported); reported back as a warning.

A malformed value, or the same parameter given twice, is a :class:`~bridge.errors.Rejected`
(HTTP 400) naming the parameter. Parameters this module does not know (``charset``,
``iccprofile``, vendors' own) are ignored, as PS3.18 8.3 requires of origin servers.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import Enum

from bridge.errors import Rejected

#: The JPEG quality when none is asked for (Orthanc and libjpeg's usual 90: visually lossless
#: for 8-bit grayscale).
DEFAULT_QUALITY = 90
#: The largest viewport side accepted: a bigger one is a typo or an attempt to make the
#: server allocate gigabytes.
MAX_VIEWPORT = 8192
_INTEGER = re.compile(r"^[+-]?[0-9]+$")
_DECIMAL = re.compile(r"^[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?$")
ANNOTATIONS = frozenset({"patient", "technique"})


class VoiFunction(Enum):
    """The VOI LUT functions of PS3.3 C.11.2.1.3 (the header's VOILUTFunction terms)."""

    LINEAR = "LINEAR"
    LINEAR_EXACT = "LINEAR_EXACT"
    SIGMOID = "SIGMOID"


_FUNCTIONS = {"linear": VoiFunction.LINEAR, "linear-exact": VoiFunction.LINEAR_EXACT,
              "sigmoid": VoiFunction.SIGMOID}


@dataclass(frozen=True, slots=True)
class Window:
    center: float
    width: float
    function: VoiFunction = VoiFunction.LINEAR

    def is_valid(self) -> bool:
        """PS3.3 C.11.2.1.2.1: width ≥ 1 for LINEAR; C.11.2.1.3: > 0 for the others."""
        if not (math.isfinite(self.center) and math.isfinite(self.width)):
            return False
        return self.width >= 1 if self.function is VoiFunction.LINEAR else self.width > 0


@dataclass(frozen=True, slots=True)
class Viewport:
    """The viewport and the optional source region (``None``: from the edge / to the edge)."""

    width: int
    height: int
    sx: int = 0
    sy: int = 0
    sw: int | None = None
    sh: int | None = None


@dataclass(frozen=True, slots=True)
class RenderParams:
    window: Window | None = None
    viewport: Viewport | None = None
    quality: int = DEFAULT_QUALITY
    annotations: tuple[str, ...] = ()

    @property
    def warnings(self) -> list[str]:
        if not self.annotations:
            return []
        return [f"annotation={','.join(self.annotations)} is not burned in: this server "
                "renders images without annotations"]


def rendering_params(query: Mapping[str, Sequence[str]], *, thumbnail: bool = False
                     ) -> RenderParams:
    """The parameters of one request; ``query`` maps each name to every value given."""
    values = {name: _single(query, name) for name in
              ("window", "viewport", "quality", "annotation") if name in query}
    if thumbnail:
        # Table 8.3.5-1: a thumbnail takes the viewport (vw, vh) and nothing else renders.
        viewport = values.get("viewport")
        return RenderParams(viewport=parse_viewport(viewport, region=False)
                            if viewport is not None else None)
    window, viewport = values.get("window"), values.get("viewport")
    quality, annotation = values.get("quality"), values.get("annotation")
    return RenderParams(
        window=parse_window(window) if window is not None else None,
        viewport=parse_viewport(viewport) if viewport is not None else None,
        quality=parse_quality(quality) if quality is not None else DEFAULT_QUALITY,
        annotations=parse_annotation(annotation) if annotation is not None else (),
    )


def parse_window(text: str) -> Window:
    parts = [p.strip() for p in text.split(",")]
    if len(parts) not in (2, 3):
        raise Rejected("window is center,width[,function]", location="window")
    center, width = (_decimal(p, "window") for p in parts[:2])
    function = VoiFunction.LINEAR
    if len(parts) == 3:
        if parts[2] not in _FUNCTIONS:
            raise Rejected("the window function is linear, linear-exact or sigmoid",
                           location="window")
        function = _FUNCTIONS[parts[2]]
    window = Window(center, width, function)
    if not window.is_valid():
        least = "at least 1" if function is VoiFunction.LINEAR else "above 0"
        raise Rejected(f"the window width must be {least} for {function.value}",
                       location="window")
    return window


def parse_viewport(text: str, *, region: bool = True) -> Viewport:
    parts = [p.strip() for p in text.split(",")]
    if len(parts) != 2 and not (region and len(parts) == 6):
        shape = "vw,vh or vw,vh,sx,sy,sw,sh" if region else "vw,vh"
        raise Rejected(f"viewport is {shape}", location="viewport")
    vw, vh = (_integer(p, "viewport") for p in parts[:2])
    if not (0 < vw <= MAX_VIEWPORT and 0 < vh <= MAX_VIEWPORT):
        raise Rejected(f"the viewport's width and height are 1 to {MAX_VIEWPORT} pixels",
                       location="viewport")
    if len(parts) == 2:
        return Viewport(vw, vh)
    sx, sy = (_integer(p, "viewport") if p else 0 for p in parts[2:4])
    sw, sh = (_integer(p, "viewport") if p else None for p in parts[4:6])
    if sx < 0 or sy < 0:
        raise Rejected("the source region's sx and sy are not negative", location="viewport")
    if sw == 0 or sh == 0:
        raise Rejected("the source region's sw and sh are not zero", location="viewport")
    return Viewport(vw, vh, sx, sy, sw, sh)


def parse_quality(text: str) -> int:
    quality = _integer(text.strip(), "quality")
    if not 1 <= quality <= 100:
        raise Rejected("quality is an integer from 1 to 100", location="quality")
    return quality


def parse_annotation(text: str) -> tuple[str, ...]:
    words = [w.strip() for w in text.split(",")]
    if not words or any(w not in ANNOTATIONS for w in words):
        raise Rejected("annotation is a list of patient and technique", location="annotation")
    return tuple(dict.fromkeys(words))


def parse_frame_list(text: str) -> tuple[int, ...]:
    """``1,3,5``: frame numbers from 1, each at most once, in the order asked."""
    numbers: list[int] = []
    for part in text.split(","):
        part = part.strip()
        if not part.isdigit() or int(part) < 1:
            raise Rejected("frames is a comma-separated list of frame numbers from 1",
                           location="frames")
        numbers.append(int(part))
    if len(set(numbers)) != len(numbers):
        raise Rejected("a frame is listed twice", location="frames")
    return tuple(numbers)


def _single(query: Mapping[str, Sequence[str]], name: str) -> str:
    given = query[name]
    if len(given) != 1:
        raise Rejected(f"{name} is given more than once", location=name)
    return given[0]


def _integer(text: str, location: str) -> int:
    if not _INTEGER.match(text):
        raise Rejected(f"{location}: {text!r} is not an integer", location=location)
    return int(text)


def _decimal(text: str, location: str) -> float:
    if not _DECIMAL.match(text):
        raise Rejected(f"{location}: {text!r} is not a decimal number", location=location)
    return float(text)
