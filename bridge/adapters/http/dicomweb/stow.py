"""STOW-RS (PS3.18 10.5): store DICOM objects sent as ``multipart/related;
type="application/dicom"``, through the same path as a C-STORE.

The body is read as it arrives: each part goes to a temporary file inside the archive
(``.incoming``, same file system, so the store renames it into place) and is handed to
:class:`~bridge.services.archive.store.ArchiveStore` as soon as it is complete, which checks,
reconciles and indexes it exactly as for the Storage SCP. Memory stays flat whatever the
size of the request.

Each part gets its own outcome in the Store Instances Response: stored (Referenced SOP
Sequence) or failed with a Failure Reason (Failed SOP Sequence), the DIMSE status the
Storage SCP would have answered. The HTTP status sums them up (PS3.18 10.5.3): 200 all
stored, 202 some failed, 409 none stored. ``POST /studies/{study}`` refuses objects of
another study with 0110 (Processing failure), as Orthanc does.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import BinaryIO

from fastapi import APIRouter, Request, Response, status
from pydicom import dcmread
from pydicom.errors import InvalidDicomError
from sqlalchemy.exc import OperationalError
from starlette.concurrency import run_in_threadpool

from bridge.adapters.http.access import viewer_of
from bridge.adapters.http.deps import ContextDep
from bridge.adapters.http.dicomweb.common import (
    DICOM,
    DICOM_JSON,
    MULTIPART_RELATED,
    check_uid,
    instance_url,
    parse_media_type,
    require_json_accepted,
    studies_url,
    unsupported_media_type,
)
from bridge.adapters.http.dicomweb.multipart import (
    MultipartError,
    MultipartParser,
    PartData,
    PartEnd,
    PartStart,
)
from bridge.errors import BridgeError, Rejected, answer_for
from bridge.mapping.dicom.json_model import StowResult, stow_response
from bridge.services.access.uploads import claim_uploads
from bridge.services.archive.store import ArchiveStore, Arrival
from bridge.storage.durable import remove_file
from bridge.store.models import utcnow

log = logging.getLogger("bridge.http")
router = APIRouter()

#: C-STORE failure statuses used as Failure Reason (0008,1197).
PROCESSING_FAILURE = 0x0110
OUT_OF_RESOURCES = 0xA700
CANNOT_UNDERSTAND = 0xC000

_HEADER_TAGS = ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID")


@router.post("/studies", name="dicomweb_store")
async def store_instances(request: Request, context: ContextDep) -> Response:
    return await _store(request, context, study=None)


@router.post("/studies/{study}", name="dicomweb_store_study")
async def store_study_instances(study: str, request: Request, context: ContextDep) -> Response:
    return await _store(request, context, study=check_uid(study, "study"))


@dataclass(slots=True)
class _Part:
    path: Path
    file: BinaryIO
    #: Why the part cannot be stored whatever its content (its media type), or None.
    refused: int | None = None


@dataclass(slots=True)
class _Outcome:
    results: list[StowResult] = field(default_factory=list)
    studies: set[str] = field(default_factory=set)


async def _store(request: Request, context: ContextDep, *, study: str | None) -> Response:
    require_json_accepted(request.headers.get("accept"))
    started = utcnow()
    parser = _parser(request.headers.get("content-type"))
    store = context.archive_store
    incoming = context.settings.archive_root / ".incoming"
    incoming.mkdir(parents=True, exist_ok=True)
    base = studies_url(request)
    outcome = _Outcome()
    part: _Part | None = None
    malformed = False
    try:
        async for chunk in request.stream():
            try:
                for event in parser.feed(chunk):
                    if isinstance(event, PartStart):
                        part = _open_part(incoming, event.headers)
                    elif isinstance(event, PartData) and part is not None:
                        part.file.write(event.data)
                    elif isinstance(event, PartEnd) and part is not None:
                        done, part = part, None
                        done.file.close()
                        outcome.results.append(await run_in_threadpool(
                            _store_part, store, done, study, base, outcome.studies))
            except MultipartError:
                malformed = True
                break
        if parser.parts == 0 and not parser.done:
            raise Rejected("the body is not a multipart body with the boundary its "
                           "Content-Type names", location="body")
        if malformed or part is not None:
            # Cut off inside a part, or unreadable after the parts stored so far: what
            # follows is reported as one failed object; nothing stored is taken back.
            outcome.results.append(StowResult(None, None, failure_reason=CANNOT_UNDERSTAND))
    finally:
        if part is not None:
            part.file.close()
            remove_file(part.path)
    if not outcome.results:
        raise Rejected("the request holds no DICOM object", location="body")
    uploader = viewer_of(request)
    if uploader is not None and outcome.studies:
        await run_in_threadpool(_record_uploader, context, outcome.studies, uploader, started)
    return _response(outcome, study, base)


def _record_uploader(context: ContextDep, study_uids: set[str], user_id: int,
                     started: datetime) -> None:
    """A clinician's STOW makes the studies it created theirs (they may see them)."""
    with context.session_factory.begin() as session:
        claim_uploads(session, user_id, since=started, study_uids=study_uids)


def _parser(content_type: str | None) -> MultipartParser:
    media = parse_media_type(content_type)
    if media is None or media.type != MULTIPART_RELATED:
        raise unsupported_media_type(f'send DICOM objects as {MULTIPART_RELATED}; type="{DICOM}"')
    inner = parse_media_type(media.params.get("type", DICOM))
    if inner is None or inner.type != DICOM:
        raise unsupported_media_type(
            f'only type="{DICOM}" parts are stored (not DICOM JSON with bulk data)')
    try:
        return MultipartParser(media.params.get("boundary", ""))
    except MultipartError:
        raise Rejected("the Content-Type has no usable multipart boundary",
                       location="Content-Type") from None


def _open_part(incoming: Path, headers: dict[str, str]) -> _Part:
    descriptor, name = tempfile.mkstemp(dir=incoming, prefix="stow-", suffix=".dcm")
    part = _Part(Path(name), os.fdopen(descriptor, "wb"))
    declared = parse_media_type(headers.get("content-type", DICOM))
    if declared is None or declared.type != DICOM:
        part.refused = CANNOT_UNDERSTAND  # read through, then reported as failed
    return part


def _store_part(store: ArchiveStore, part: _Part, study: str | None, base: str,
                studies: set[str]) -> StowResult:
    """Store one complete part (in a worker thread: file and database work block)."""
    try:
        uids = _uids(part.path)
        sop_class, sop_instance = uids.get("SOPClassUID"), uids.get("SOPInstanceUID")
        if part.refused is not None:
            return StowResult(sop_class, sop_instance, failure_reason=part.refused)
        if study is not None and uids.get("StudyInstanceUID") != study:
            log.warning("STOW-RS: an object of another study refused")
            return StowResult(sop_class, sop_instance, failure_reason=PROCESSING_FAILURE)
        try:
            stored = store.accept(Arrival(part.path, calling_ae="", source="stow"))
        except BridgeError as exc:
            log.warning("STOW-RS: object refused: %s", exc.message)
            code = getattr(exc, "dimse_status", None)
            reason = code if isinstance(code, int) else answer_for(exc).dimse_status
            return StowResult(sop_class, sop_instance, failure_reason=reason)
        except (OperationalError, OSError):
            log.exception("STOW-RS: object not stored (database or storage unavailable)")
            return StowResult(sop_class, sop_instance, failure_reason=OUT_OF_RESOURCES)
        except Exception:  # one bad part never takes the others down
            log.exception("STOW-RS: object not stored")
            return StowResult(sop_class, sop_instance, failure_reason=PROCESSING_FAILURE)
        log.info("STOW-RS %s: %s", stored.outcome, stored.reconciliation)
        study_uid = uids.get("StudyInstanceUID", "")
        studies.add(study_uid)
        return StowResult(sop_class, stored.sop_instance_uid, retrieve_url=instance_url(
            base, study_uid, uids.get("SeriesInstanceUID", ""), stored.sop_instance_uid))
    finally:
        remove_file(part.path)  # moved into the archive when stored; else a leftover


def _uids(path: Path) -> dict[str, str]:
    """The UIDs the response names the part by (empty when the part is not DICOM: the store
    then refuses it with the reason)."""
    try:
        header = dcmread(path, stop_before_pixels=True, specific_tags=list(_HEADER_TAGS))
    except (InvalidDicomError, EOFError, ValueError, OSError, KeyError, AttributeError):
        return {}
    return {key: str(header.get(key, "") or "").strip() for key in _HEADER_TAGS
            if header.get(key)}


def _response(outcome: _Outcome, study: str | None, base: str) -> Response:
    failed = sum(1 for r in outcome.results if r.failed)
    if failed == 0:
        code = status.HTTP_200_OK
    elif failed == len(outcome.results):
        code = status.HTTP_409_CONFLICT
    else:
        code = status.HTTP_202_ACCEPTED
    single = study or (next(iter(outcome.studies)) if len(outcome.studies) == 1 else None)
    body = stow_response(outcome.results, retrieve_url=f"{base}/{single}" if single else None)
    return Response(json.dumps(body, ensure_ascii=False).encode(), status_code=code,
                    media_type=DICOM_JSON)
