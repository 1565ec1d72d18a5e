"""WADO-RS (PS3.18 10.4): studies, series and instances as DICOM objects, their metadata as
DICOM JSON, and bulk data.

Every object leaves with the current MIS values (:mod:`bridge.services.egress.objects`). Everything
that can fail for a reason the client should hear about (unknown UIDs → 404, a transfer
syntax we cannot produce → 406, a stored file gone → 500) is checked before the response
starts; then objects stream one after the other from disk, never a whole study in memory.

A retrieve answers in the transfer syntax asked for: the stored one for
``transfer-syntax=*`` or when it is the one named; Explicit VR Little Endian by default,
re-encoded from Implicit VR or Deflated Little Endian when stored so, and decompressed
(one object at a time, :mod:`bridge.services.egress.transcode`) when stored compressed, e.g. by the
archive's lossless compression. Other conversions (to a compressed syntax, from big endian)
are not made: asking for them is a 406 that names the stored syntaxes.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from fastapi import APIRouter, Request, Response
from fastapi.responses import StreamingResponse
from pydicom.uid import ExplicitVRBigEndian

from bridge.adapters.http.deps import ContextDep
from bridge.adapters.http.dicomweb.common import (
    ANY_SYNTAX,
    DEFAULT_SYNTAX,
    DICOM,
    DICOM_JSON,
    MULTIPART_RELATED,
    OCTET_STREAM,
    find_stored,
    instance_keys,
    instance_url,
    local_copies,
    not_acceptable,
    require_json_accepted,
    require_octet_stream_accepted,
    series_keys,
    studies_url,
    study_keys,
    wanted_dicom_syntaxes,
)
from bridge.adapters.http.dicomweb.multipart import PART_END, closing, new_boundary, part_head
from bridge.errors import NotFound
from bridge.mapping.dicom.json_model import BULK_DATA_VRS, dataset_json, is_pixel_tag, tag_key
from bridge.mapping.dicom.patch import SubjectValues
from bridge.mapping.dicom.qr_query import RetrieveKeys
from bridge.services.archive.query import StoredInstance
from bridge.services.egress.objects import egress_stream
from bridge.services.egress.parts import (
    CONVERTIBLE_TO_DEFAULT,
    bulk_value_stream,
    egress_header,
    transcoded_object,
)
from bridge.services.egress.transcode import can_decompress

log = logging.getLogger("bridge.http")
router = APIRouter()

_INSTANCE_PATH = "/studies/{study}/series/{series}/instances/{instance}"


@dataclass(frozen=True, slots=True)
class _Planned:
    instance: StoredInstance
    subject: SubjectValues | None
    #: The syntax the object is sent in (its stored one, or Explicit VR Little Endian).
    syntax: str
    #: Its checked local copy (:mod:`bridge.storage.reader`).
    local: Path


# --- retrieve ------------------------------------------------------------------------------


@router.get("/studies/{study}", name="dicomweb_retrieve_study")
def retrieve_study(study: str, request: Request, context: ContextDep) -> StreamingResponse:
    return _retrieve(study_keys(study), request, context)


@router.get("/studies/{study}/series/{series}", name="dicomweb_retrieve_series")
def retrieve_series(study: str, series: str, request: Request,
                    context: ContextDep) -> StreamingResponse:
    return _retrieve(series_keys(study, series), request, context)


@router.get(_INSTANCE_PATH, name="dicomweb_retrieve_instance")
def retrieve_instance(study: str, series: str, instance: str, request: Request,
                      context: ContextDep) -> StreamingResponse:
    return _retrieve(instance_keys(study, series, instance), request, context)


def _retrieve(keys: RetrieveKeys, request: Request, context: ContextDep) -> StreamingResponse:
    wanted = wanted_dicom_syntaxes(request.headers.get("accept"))
    instances, subjects, paths = _found(keys, context, request)
    planned = [_Planned(i, subjects.get(i.study_pk), _syntax_for(i, wanted, instances), local)
               for i, local in zip(instances, paths, strict=True)]
    boundary = new_boundary()
    log.info("WADO-RS retrieve: %d objects", len(planned))
    return StreamingResponse(
        _objects(context.settings.archive_root, planned, boundary),
        media_type=f'{MULTIPART_RELATED}; type="{DICOM}"; boundary={boundary}',
    )


def _syntax_for(instance: StoredInstance, wanted: Sequence[str],
                every: Sequence[StoredInstance]) -> str:
    stored = instance.transfer_syntax_uid
    for syntax in wanted:
        if syntax in (ANY_SYNTAX, stored):
            return stored
        if syntax == DEFAULT_SYNTAX and (stored in CONVERTIBLE_TO_DEFAULT
                                         or can_decompress(stored)):
            return DEFAULT_SYNTAX
    held = ", ".join(sorted({i.transfer_syntax_uid for i in every}))
    raise not_acceptable(
        f"the objects are stored as {held} and are not converted to {', '.join(wanted)}; "
        "ask for transfer-syntax=* to get them as stored")


def _objects(root: Path, planned: Sequence[_Planned], boundary: str) -> Iterator[bytes]:
    for item in planned:
        content_type = f"{DICOM}; transfer-syntax={item.syntax}"
        if item.syntax != item.instance.transfer_syntax_uid:
            data = transcoded_object(root, item.instance, item.subject, local=item.local)
            yield part_head(boundary, content_type, len(data))
            yield data
        else:
            with egress_stream(root, item.instance, item.subject, local=item.local) as stream:
                yield part_head(boundary, content_type, stream.size)
                yield from stream
        yield PART_END
    yield closing(boundary)


# --- metadata ------------------------------------------------------------------------------


@router.get("/studies/{study}/metadata", name="dicomweb_study_metadata")
def study_metadata(study: str, request: Request, context: ContextDep) -> StreamingResponse:
    return _metadata(study_keys(study), request, context)


@router.get("/studies/{study}/series/{series}/metadata", name="dicomweb_series_metadata")
def series_metadata(study: str, series: str, request: Request,
                    context: ContextDep) -> StreamingResponse:
    return _metadata(series_keys(study, series), request, context)


@router.get(_INSTANCE_PATH + "/metadata", name="dicomweb_instance_metadata")
def instance_metadata(study: str, series: str, instance: str, request: Request,
                      context: ContextDep) -> StreamingResponse:
    return _metadata(instance_keys(study, series, instance), request, context)


def _metadata(keys: RetrieveKeys, request: Request, context: ContextDep) -> StreamingResponse:
    require_json_accepted(request.headers.get("accept"))
    # Headers only: a present online file is not hashed whole for them.
    instances, subjects, paths = _found(keys, context, request, verify_online=False)
    base = studies_url(request)
    log.info("WADO-RS metadata: %d objects", len(instances))
    return StreamingResponse(
        _metadata_documents(context.settings.archive_root, instances, paths, subjects, base),
        media_type=DICOM_JSON,
    )


def _metadata_documents(root: Path, instances: Sequence[StoredInstance], paths: Sequence[Path],
                        subjects: dict[int, SubjectValues | None], base: str
                        ) -> Iterator[bytes]:
    """A JSON array, one header at a time."""
    yield b"["
    for index, (instance, local) in enumerate(zip(instances, paths, strict=True)):
        header = egress_header(root, instance, subjects.get(instance.study_pk), local=local)
        ds = header.dataset
        url = instance_url(base, str(ds.get("StudyInstanceUID", "")),
                           str(ds.get("SeriesInstanceUID", "")), instance.sop_instance_uid)
        document = dataset_json(ds, bulk_data_uri=_bulk_uri(url), pixel_data=header.pixel_vr)
        yield (b"," if index else b"") + json.dumps(document, ensure_ascii=False).encode()
    yield b"]"


# --- bulk data -----------------------------------------------------------------------------


@router.get(_INSTANCE_PATH + "/bulk/{tag}", name="dicomweb_bulk_data")
def bulk_data(study: str, series: str, instance: str, tag: str, request: Request,
              context: ContextDep) -> Response:
    """One top-level binary value that metadata referenced by BulkDataURI (PS3.18 10.4.1.1.3):
    pixel data streamed from the file when uncompressed, other values from the header."""
    require_octet_stream_accepted(request.headers.get("accept"))
    try:
        wanted_tag = int(tag, 16) if len(tag) == 8 else -1
    except ValueError:
        wanted_tag = -1
    if wanted_tag < 0:
        raise NotFound("no such bulk data", location="tag")
    found, subjects, paths = _found(instance_keys(study, series, instance), context,
                                   request)
    stored, local = found[0], paths[0]
    subject = subjects.get(stored.study_pk)
    root = context.settings.archive_root
    header = egress_header(root, stored, subject, local=local)
    boundary = new_boundary()
    media_type = f'{MULTIPART_RELATED}; type="{OCTET_STREAM}"; boundary={boundary}'
    if is_pixel_tag(wanted_tag):
        pixel = header.pixel
        if header.pixel_vr is None or header.pixel_vr[0] != wanted_tag:
            raise NotFound("the instance has no such bulk data", location="tag")
        # Bulk data is little endian and uncompressed (PS3.18 8.7.3.3.2); a deflated file
        # has no pixel offset to stream from.
        if pixel is None or pixel.encapsulated or header.transfer_syntax == ExplicitVRBigEndian:
            raise not_acceptable("the pixel data is compressed: retrieve the instance with "
                                 "transfer-syntax=* instead")

        def pixel_parts() -> Iterator[bytes]:
            yield part_head(boundary, OCTET_STREAM, pixel.length)
            yield from bulk_value_stream(root, stored, pixel, local=local)
            yield PART_END + closing(boundary)

        return StreamingResponse(pixel_parts(), media_type=media_type)
    element = header.dataset.get(wanted_tag)
    if element is None or element.VR not in BULK_DATA_VRS or element.value is None:
        raise NotFound(f"the instance has no bulk data {tag_key(wanted_tag)}", location="tag")
    value = bytes(element.value)
    body = part_head(boundary, OCTET_STREAM, len(value)) + value + PART_END + closing(boundary)
    return Response(body, media_type=media_type)


# --- shared --------------------------------------------------------------------------------


def _bulk_uri(instance: str) -> Callable[[int], str]:
    return lambda tag: f"{instance}/bulk/{tag:08x}"


def _found(keys: RetrieveKeys, context: ContextDep, request: Request, *,
           verify_online: bool = True,
           ) -> tuple[list[StoredInstance], dict[int, SubjectValues | None], list[Path]]:
    """The stored instances ``keys`` name, the MIS values of their studies, and each one's
    checked local copy, all read before anything streams (:func:`.common.find_stored`,
    :func:`.common.local_copies`)."""
    instances, subjects = find_stored(keys, context, request)
    return instances, subjects, local_copies(context, instances, verify_online=verify_online)
