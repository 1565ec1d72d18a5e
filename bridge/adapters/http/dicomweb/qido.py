"""QIDO-RS (PS3.18 10.6): search studies, series and instances; DICOM JSON answers.

The query parameters become an :class:`~bridge.mapping.dicom.qr_query.ArchiveQuery`
(:mod:`bridge.mapping.dicom.qido_params`), searched with the same service as C-FIND
(:mod:`bridge.services.archive.query`), so both show the current MIS values. Paging is
``limit``/``offset``; an answer holds at most :data:`~bridge.mapping.dicom.qido_params.MAX_LIMIT`
matches, with a ``Warning`` header when the server cut it short (PS3.18 8.3.4.4). Keys we
ignored, and ``fuzzymatching=true``, are reported the same way.

No match is ``200 []``, as Orthanc answers and DICOM CP-2473 settles it (the text before
that CP asked for 204, which RFC 9110 forbids to carry the empty array clients parse).
"""

from __future__ import annotations

import json
import logging
from dataclasses import replace

from fastapi import APIRouter, Request, Response
from sqlalchemy.orm import Session

from bridge.adapters.http.access import audit_read, viewer_of
from bridge.adapters.http.deps import ContextDep
from bridge.adapters.http.dicomweb.common import (
    DICOM_JSON,
    check_uid,
    instance_url,
    require_json_accepted,
    studies_url,
    warning_values,
)
from bridge.mapping.dicom.json_model import SearchRecord, search_result
from bridge.mapping.dicom.qido_params import MAX_LIMIT, QidoSearch, parse_qido
from bridge.mapping.dicom.qr_query import Level
from bridge.services.archive.query import (
    InstanceRecord,
    SeriesRecord,
    find_instances,
    find_series,
    find_studies,
)
from bridge.store.db import read_session

log = logging.getLogger("bridge.http")
router = APIRouter()

_MORE = ("the number of matches exceeds the maximum this server returns at once: "
         "request the next page with offset")


@router.get("/studies", name="dicomweb_search_studies")
def search_studies(request: Request, context: ContextDep) -> Response:
    return _search(request, context, Level.STUDY)


@router.get("/series", name="dicomweb_search_series")
def search_series(request: Request, context: ContextDep) -> Response:
    return _search(request, context, Level.SERIES)


@router.get("/studies/{study}/series", name="dicomweb_search_study_series")
def search_study_series(study: str, request: Request, context: ContextDep) -> Response:
    return _search(request, context, Level.SERIES, study=check_uid(study, "study"))


@router.get("/instances", name="dicomweb_search_instances")
def search_instances(request: Request, context: ContextDep) -> Response:
    return _search(request, context, Level.IMAGE)


@router.get("/studies/{study}/instances", name="dicomweb_search_study_instances")
def search_study_instances(study: str, request: Request, context: ContextDep) -> Response:
    return _search(request, context, Level.IMAGE, study=check_uid(study, "study"))


@router.get("/studies/{study}/series/{series}/instances",
            name="dicomweb_search_series_instances")
def search_series_instances(study: str, series: str, request: Request,
                            context: ContextDep) -> Response:
    return _search(request, context, Level.IMAGE, study=check_uid(study, "study"),
                   series=check_uid(series, "series"))


def _search(request: Request, context: ContextDep, level: Level, *,
            study: str | None = None, series: str | None = None) -> Response:
    require_json_accepted(request.headers.get("accept"))
    search = parse_qido(request.query_params.multi_items(), level,
                        study_uid=study, series_uid=series, max_limit=MAX_LIMIT)
    # One more than the page when we chose the limit: tells whether to warn of more.
    fetch = search.limit + 1 if search.limit_is_ours else search.limit
    search = replace(search, query=replace(search.query, viewer=viewer_of(request)))
    with read_session(context.session_factory) as session:
        records = _find(session, search, fetch)
    audit_read(context, request, action="search", entity="study",
               entity_id=study or "*", details={"level": level.value, "matches": len(records)})
    warnings = list(search.warnings)
    if len(records) > search.limit:
        records = records[: search.limit]
        warnings.append(_MORE)
    base = studies_url(request)
    include = {*search.include_tags, *search.matching_tags}
    body = [search_result(record, retrieve_url=_retrieve_url(base, record), include=include,
                          include_all=search.include_all)
            for record in records]
    log.info("QIDO-RS %s search: %d matches", level.value.lower(), len(body))
    response = Response(json.dumps(body, ensure_ascii=False).encode(), media_type=DICOM_JSON)
    for value in warning_values(warnings):
        response.headers.append("Warning", value)
    return response


def _find(session: Session, search: QidoSearch, limit: int) -> list[SearchRecord]:
    query, offset = search.query, search.offset
    if query.level == Level.STUDY:
        return list(find_studies(session, query, limit=limit, offset=offset))
    if query.level == Level.SERIES:
        return list(find_series(session, query, limit=limit, offset=offset))
    return list(find_instances(session, query, limit=limit, offset=offset))


def _retrieve_url(base: str, record: SearchRecord) -> str:
    if isinstance(record, InstanceRecord):
        return instance_url(base, record.series.study.study_instance_uid,
                            record.series.series_instance_uid, record.sop_instance_uid)
    if isinstance(record, SeriesRecord):
        return f"{base}/{record.study.study_instance_uid}/series/{record.series_instance_uid}"
    return f"{base}/{record.study_instance_uid}"
