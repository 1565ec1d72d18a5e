"""Where the rendered image comes from and how big it is (PS3.18 8.3.5.1.3). Pure.

The source region (``sx,sy,sw,sh`` of the viewport parameter) is cut first; a region reaching
past the image is clipped to it, one that starts outside it is refused (nothing to render).
The region is then scaled to fit the viewport with its aspect ratio kept: the result is at
most ``vw``×``vh`` and touches one of the two sides. A rendered region is also enlarged to
fit (the viewport is how a client zooms into a region); a thumbnail is only ever shrunk.
The answer is the fitted image itself, not padded out to the viewport.
"""

from __future__ import annotations

from dataclasses import dataclass

from bridge.errors import Rejected
from bridge.mapping.rendering.params import Viewport

#: A thumbnail's box when the request names no viewport.
THUMBNAIL_SIZE = 128


@dataclass(frozen=True, slots=True)
class Region:
    x: int
    y: int
    width: int
    height: int
    flip_x: bool = False
    flip_y: bool = False

    def is_whole(self, columns: int, rows: int) -> bool:
        return (self.x, self.y, self.width, self.height, self.flip_x, self.flip_y) == (
            0, 0, columns, rows, False, False)


def source_region(viewport: Viewport | None, columns: int, rows: int) -> Region:
    """The part of a ``columns``×``rows`` frame to render."""
    if viewport is None:
        return Region(0, 0, columns, rows)
    if viewport.sx >= columns or viewport.sy >= rows:
        raise Rejected(f"the source region starts outside the {columns}x{rows} image",
                       location="viewport")
    width = columns - viewport.sx if viewport.sw is None else abs(viewport.sw)
    height = rows - viewport.sy if viewport.sh is None else abs(viewport.sh)
    return Region(viewport.sx, viewport.sy, min(width, columns - viewport.sx),
                  min(height, rows - viewport.sy), flip_x=(viewport.sw or 0) < 0,
                  flip_y=(viewport.sh or 0) < 0)


def fitted_size(width: int, height: int, box_width: int, box_height: int, *,
                enlarge: bool) -> tuple[int, int]:
    """``width``×``height`` scaled to fit ``box_width``×``box_height``, aspect kept."""
    scale = min(box_width / width, box_height / height)
    if not enlarge:
        scale = min(scale, 1.0)
    return (max(1, min(box_width, round(width * scale))),
            max(1, min(box_height, round(height * scale))))


def output_size(region: Region, viewport: Viewport | None, *, thumbnail: bool
                ) -> tuple[int, int]:
    """The rendered image's width and height."""
    if viewport is None:
        if not thumbnail:
            return region.width, region.height
        return fitted_size(region.width, region.height, THUMBNAIL_SIZE, THUMBNAIL_SIZE,
                           enlarge=False)
    return fitted_size(region.width, region.height, viewport.width, viewport.height,
                       enlarge=not thumbnail)
