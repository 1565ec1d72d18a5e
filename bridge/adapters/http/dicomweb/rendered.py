"""Rendered resources and thumbnails (PS3.18 10.4.1.1.3, 10.4.1.1.4, 8.3.5): stored images as
JPEG or PNG for a browser or a worklist's preview, windowed, cropped and scaled as asked.

- ``.../instances/{instance}/frames/{frames}/rendered``: each listed frame (from 1), in the
  order listed. One frame answers the image itself; several answer
  ``multipart/related; type="image/jpeg"`` (or png), one part per frame.
- ``.../instances/{instance}/rendered``: the instance's frames, the same way (a single-frame
  image is one image; a multi-frame one is one part per frame, since the still-image media
  types offered hold one frame and the animated ones PS3.18 lists for multi-frame images —
  GIF, video — are not produced).
- ``/studies/{study}/rendered`` and ``.../series/{series}/rendered``: PS3.18 defines the
  rendered Study and Series resources as the Instances they contain, rendered; the answer is
  therefore a ``multipart/related`` payload with every frame of every image instance in
  series and instance order, streamed (never the whole study in memory). Objects without
  images in a study or series (reports, presentation states) are left out; an instance
  without one answers 406.
- ``.../thumbnail`` (study, series, instance, one frame): one small image representing the
  resource, chosen by the origin server as PS3.18 allows: the middle image instance of the
  study or series (for a CT series, a slice from its middle rather than the first, often a
  scout-like edge slice), the middle frame of a multi-frame instance. At most 128×128 unless
  ``viewport=vw,vh`` says otherwise; never enlarged.

The media type comes from the ``accept`` query parameter when given (PS3.18 8.3.3.1: it
stands in for the ``Accept`` header), else the ``Accept`` header: ``image/jpeg`` (the default,
also for ``*/*`` and ``image/*``) or ``image/png``, alone or as the ``type`` of
``multipart/related``; anything else is a 406. The rendering parameters are
:mod:`bridge.mapping.rendering.params` (bad ones → 400).

Access and audit are WADO-RS's (:func:`.common.find_stored`): a clinician renders only the
studies they may see (others answer 404), every answer leaves an audit record, and the pixels
come from the checked local copy (the long-term tier when the online file is gone; 503 when it
cannot be reached). Everything that can fail is checked before the answer starts: parameters,
media type, the instances, the frames asked for, the source region against each image.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from fastapi import APIRouter, Request, Response
from fastapi.responses import StreamingResponse

from bridge.adapters.http.deps import ContextDep
from bridge.adapters.http.dicomweb.common import (
    MULTIPART_RELATED,
    MediaRange,
    find_stored,
    instance_keys,
    local_copies,
    not_acceptable,
    parse_media_ranges,
    parse_media_type,
    series_keys,
    study_keys,
    warning_values,
)
from bridge.adapters.http.dicomweb.multipart import PART_END, closing, new_boundary, part_head
from bridge.errors import NotFound, Rejected
from bridge.mapping.dicom.qr_query import Level, RetrieveKeys
from bridge.mapping.rendering.geometry import source_region
from bridge.mapping.rendering.params import RenderParams, parse_frame_list, rendering_params
from bridge.services.archive.query import StoredInstance
from bridge.services.rendering.frames import FrameLayout, layout_of
from bridge.services.rendering.render import MEDIA_TYPES, render_frame

log = logging.getLogger("bridge.http")
router = APIRouter()

_INSTANCE_PATH = "/studies/{study}/series/{series}/instances/{instance}"


@dataclass(frozen=True, slots=True)
class _Image:
    """One frame to render: the instance's local copy, its layout, the frame (from 0)."""

    local: Path
    layout: FrameLayout
    index: int


@dataclass(frozen=True, slots=True)
class _Ask:
    """What one request asks for, parsed before anything is looked up."""

    params: RenderParams
    media_type: str
    frames: tuple[int, ...] | None
    thumbnail: bool


# --- rendered ------------------------------------------------------------------------------


@router.get("/studies/{study}/rendered", name="dicomweb_study_rendered")
def study_rendered(study: str, request: Request, context: ContextDep) -> Response:
    return _rendered(study_keys(study), _ask(request), request, context)


@router.get("/studies/{study}/series/{series}/rendered", name="dicomweb_series_rendered")
def series_rendered(study: str, series: str, request: Request,
                    context: ContextDep) -> Response:
    return _rendered(series_keys(study, series), _ask(request), request, context)


@router.get(_INSTANCE_PATH + "/rendered", name="dicomweb_instance_rendered")
def instance_rendered(study: str, series: str, instance: str, request: Request,
                      context: ContextDep) -> Response:
    return _rendered(instance_keys(study, series, instance), _ask(request), request, context)


@router.get(_INSTANCE_PATH + "/frames/{frames}/rendered", name="dicomweb_frames_rendered")
def frames_rendered(study: str, series: str, instance: str, frames: str, request: Request,
                    context: ContextDep) -> Response:
    return _rendered(instance_keys(study, series, instance), _ask(request, frames), request,
                     context)


# --- thumbnails ----------------------------------------------------------------------------


@router.get("/studies/{study}/thumbnail", name="dicomweb_study_thumbnail")
def study_thumbnail(study: str, request: Request, context: ContextDep) -> Response:
    return _thumbnail(study_keys(study), _ask(request, thumbnail=True), request, context)


@router.get("/studies/{study}/series/{series}/thumbnail", name="dicomweb_series_thumbnail")
def series_thumbnail(study: str, series: str, request: Request,
                     context: ContextDep) -> Response:
    return _thumbnail(series_keys(study, series), _ask(request, thumbnail=True), request,
                      context)


@router.get(_INSTANCE_PATH + "/thumbnail", name="dicomweb_instance_thumbnail")
def instance_thumbnail(study: str, series: str, instance: str, request: Request,
                       context: ContextDep) -> Response:
    return _thumbnail(instance_keys(study, series, instance), _ask(request, thumbnail=True),
                      request, context)


@router.get(_INSTANCE_PATH + "/frames/{frame}/thumbnail", name="dicomweb_frame_thumbnail")
def frame_thumbnail(study: str, series: str, instance: str, frame: str, request: Request,
                    context: ContextDep) -> Response:
    ask = _ask(request, frame, thumbnail=True)
    if ask.frames is not None and len(ask.frames) != 1:
        raise Rejected("a thumbnail is of one frame", location="frames")
    return _thumbnail(instance_keys(study, series, instance), ask, request, context)


# --- the answers ---------------------------------------------------------------------------


def _ask(request: Request, frames: str | None = None, *, thumbnail: bool = False) -> _Ask:
    query = {name: request.query_params.getlist(name) for name in request.query_params}
    return _Ask(rendering_params(query, thumbnail=thumbnail), rendered_media_type(request),
                parse_frame_list(frames) if frames is not None else None, thumbnail)


def rendered_media_type(request: Request) -> str:
    """``image/jpeg`` or ``image/png``, as the ``accept`` parameter or header asks; 406."""
    asked = request.query_params.getlist("accept")
    header = ",".join(asked) if asked else request.headers.get("accept")
    for media in parse_media_ranges(header):
        inner: MediaRange | None = media
        if media.type == MULTIPART_RELATED:
            inner = parse_media_type(media.params.get("type", "*/*"))
        for media_type in MEDIA_TYPES:  # JPEG first: the default for a wild card
            if inner is not None and inner.matches(media_type):
                return media_type
    raise not_acceptable(f"rendered images are sent as {' or '.join(MEDIA_TYPES)}")


def _rendered(keys: RetrieveKeys, ask: _Ask, request: Request,
              context: ContextDep) -> Response:
    instances, _ = find_stored(keys, context, request, subjects=False,
                               details={"rendered": "image"}, coalesce_audit=True)
    root = context.settings.archive_root
    images: list[_Image] = []
    for instance, local in zip(instances, local_copies(context, instances), strict=True):
        layout = layout_of(root, instance, local)
        if layout.problem is not None:
            if keys.level == Level.IMAGE:
                raise not_acceptable(layout.problem)
            continue  # a report or presentation state in a study: not an image
        numbers = ask.frames or range(1, layout.frames + 1)
        images.extend(_Image(local, layout, _frame_index(n, layout)) for n in numbers)
    if not images:
        raise not_acceptable("nothing in the resource is an image that can be rendered")
    for layout in {image.layout for image in images}:
        source_region(ask.params.viewport, layout.columns, layout.rows)  # 400 before answering
    headers = {"Warning": ", ".join(warning_values(ask.params.warnings))} \
        if ask.params.warnings else None
    if keys.level == Level.IMAGE and len(images) == 1:
        image = images[0]
        body = render_frame(image.local, image.layout, image.index, ask.params, ask.media_type)
        return Response(body, media_type=ask.media_type, headers=headers)
    boundary = new_boundary()
    log.info("rendered: %d frames of %d instances", len(images), len(instances))
    return StreamingResponse(
        _parts(images, ask, boundary),
        media_type=f'{MULTIPART_RELATED}; type="{ask.media_type}"; boundary={boundary}',
        headers=headers)


def _parts(images: Sequence[_Image], ask: _Ask, boundary: str) -> Iterator[bytes]:
    for image in images:
        body = render_frame(image.local, image.layout, image.index, ask.params, ask.media_type)
        yield part_head(boundary, ask.media_type, len(body))
        yield body
        yield PART_END
    yield closing(boundary)


def _thumbnail(keys: RetrieveKeys, ask: _Ask, request: Request,
               context: ContextDep) -> Response:
    instances, _ = find_stored(keys, context, request, subjects=False,
                               details={"rendered": "thumbnail"}, coalesce_audit=True)
    root = context.settings.archive_root
    for instance in _middle_out(instances):
        # Only the chosen instance's copy is fetched and checked, not the whole series'.
        local = local_copies(context, [instance])[0]
        layout = layout_of(root, instance, local)
        if layout.problem is not None:
            if keys.level == Level.IMAGE:
                raise not_acceptable(layout.problem)
            continue
        index = _frame_index(ask.frames[0], layout) if ask.frames else layout.frames // 2
        source_region(ask.params.viewport, layout.columns, layout.rows)
        body = render_frame(local, layout, index, ask.params, ask.media_type, thumbnail=True)
        return Response(body, media_type=ask.media_type)
    raise not_acceptable("nothing in the resource is an image that can be rendered")


def _middle_out(instances: Sequence[StoredInstance]) -> Iterator[StoredInstance]:
    """The middle instance first, then its neighbours, alternately after and before."""
    middle = len(instances) // 2
    yield instances[middle]
    for step in range(1, len(instances)):
        for position in (middle + step, middle - step):
            if 0 <= position < len(instances):
                yield instances[position]


def _frame_index(number: int, layout: FrameLayout) -> int:
    if number > layout.frames:
        raise NotFound(f"the instance has {layout.frames} frame(s), not {number}",
                       location="frames")
    return number - 1
