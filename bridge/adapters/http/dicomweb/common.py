"""What the DICOMweb routes share: media types and content negotiation, UID checks, URLs, and
the lookup of the stored instances a resource names (the clinician's filter, the audit
record, the checked local copies) that WADO-RS and the rendered resources both use.

Content negotiation follows PS3.18 8.7: a retrieve answers ``multipart/related;
type="application/dicom"`` in the transfer syntax the ``Accept`` header names, Explicit VR
Little Endian when it names none (PS3.18 8.7.3.5.2, since DICOM 2016c; Orthanc's plugin does
the same), or the stored syntax for ``transfer-syntax=*``. Searches and metadata answer
``application/dicom+json``. What cannot be answered in an acceptable form is a 406.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from fastapi import HTTPException, Request, status
from pydicom.uid import ExplicitVRLittleEndian

from bridge.adapters.http.access import audit_read, viewer_of
from bridge.adapters.http.deps import AppContext
from bridge.errors import BridgeError, NotFound, Rejected, Transient
from bridge.mapping.dicom.patch import SubjectValues
from bridge.mapping.dicom.qr_query import Level, RetrieveKeys
from bridge.services.archive.query import StoredInstance, instances_for_retrieve
from bridge.services.egress.objects import load_subjects
from bridge.storage.reader import LongtermUnreachable, reader_for
from bridge.store.db import read_session

DICOM = "application/dicom"
DICOM_JSON = "application/dicom+json"
OCTET_STREAM = "application/octet-stream"
MULTIPART_RELATED = "multipart/related"
#: ``transfer-syntax=*``: whatever is stored.
ANY_SYNTAX = "*"
DEFAULT_SYNTAX = str(ExplicitVRLittleEndian)

_UID = re.compile(r"^[0-9]+(\.[0-9]+)*$")
log = logging.getLogger("bridge.http")


@dataclass(frozen=True, slots=True)
class MediaRange:
    """One media range of an ``Accept`` header, or a ``Content-Type``: lower-case type and
    parameter names, parameter values unquoted."""

    type: str
    params: dict[str, str] = field(default_factory=dict)
    q: float = 1.0

    def matches(self, media_type: str) -> bool:
        """Whether ``media_type`` (``type/subtype``) falls within this range."""
        major, _, minor = media_type.partition("/")
        mine_major, _, mine_minor = self.type.partition("/")
        return mine_major in ("*", major) and mine_minor in ("*", minor)


def parse_media_ranges(header: str | None) -> list[MediaRange]:
    """An ``Accept`` header's ranges, most preferred first (``q=0`` ranges dropped);
    a missing or empty header accepts anything (RFC 9110 12.5.1)."""
    if not header or not header.strip():
        return [MediaRange("*/*")]
    ranges: list[MediaRange] = []
    for item in _split(header, ","):
        parsed = parse_media_type(item)
        if parsed is not None and parsed.q > 0:
            ranges.append(parsed)
    return sorted(ranges, key=lambda r: -r.q)  # stable: equal q keeps the client's order


def parse_media_type(text: str | None) -> MediaRange | None:
    """``type/subtype; name=value; ...`` (values may be quoted); None when malformed."""
    if not text:
        return None
    pieces = _split(text, ";")
    media_type = pieces[0].strip().lower() if pieces else ""
    if media_type.count("/") != 1:
        return None
    params: dict[str, str] = {}
    for piece in pieces[1:]:
        name, equals, value = piece.partition("=")
        if not equals:
            continue
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] == '"':
            value = re.sub(r"\\(.)", r"\1", value[1:-1])
        params[name.strip().lower()] = value
    q = 1.0
    if "q" in params:
        try:
            q = float(params.pop("q"))
        except ValueError:
            q = 0.0
    return MediaRange(media_type, params, q)


def wanted_dicom_syntaxes(accept: str | None) -> list[str]:
    """The transfer syntaxes a retrieve may answer in, most preferred first
    (:data:`ANY_SYNTAX` for ``*``). Raises 406 when no range asks for DICOM objects."""
    wanted: list[str] = []
    for media in parse_media_ranges(accept):
        if media.type in ("*/*", "multipart/*"):
            wanted.append(DEFAULT_SYNTAX)
        elif media.type == MULTIPART_RELATED:
            inner = parse_media_type(media.params.get("type", DICOM))
            if inner is not None and inner.type == DICOM:
                syntax = media.params.get("transfer-syntax") or inner.params.get(
                    "transfer-syntax") or DEFAULT_SYNTAX
                wanted.append(syntax.strip())
    if not wanted:
        raise not_acceptable(f'this resource is sent as {MULTIPART_RELATED}; type="{DICOM}"')
    return list(dict.fromkeys(wanted))


def require_json_accepted(accept: str | None) -> None:
    """Searches, metadata and STOW-RS answers are DICOM JSON (XML is not offered)."""
    for media in parse_media_ranges(accept):
        if media.matches(DICOM_JSON) or media.type == "application/json":
            return
    raise not_acceptable(f"this resource is sent as {DICOM_JSON}")


def require_octet_stream_accepted(accept: str | None) -> None:
    """Bulk data is sent as ``multipart/related; type="application/octet-stream"``."""
    for media in parse_media_ranges(accept):
        if media.type in ("*/*", "multipart/*"):
            return
        if media.type == MULTIPART_RELATED:
            inner = parse_media_type(media.params.get("type", OCTET_STREAM))
            if inner is not None and inner.matches(OCTET_STREAM):
                return
    raise not_acceptable(f'bulk data is sent as {MULTIPART_RELATED}; type="{OCTET_STREAM}"')


def not_acceptable(detail: str) -> HTTPException:
    return HTTPException(status.HTTP_406_NOT_ACCEPTABLE, detail)


def unsupported_media_type(detail: str) -> HTTPException:
    return HTTPException(status.HTTP_415_UNSUPPORTED_MEDIA_TYPE, detail)


def check_uid(value: str, location: str) -> str:
    """A UID from a resource path: digits and dots, at most 64 characters (400 otherwise)."""
    if len(value) > 64 or not _UID.match(value):
        raise Rejected(f"{location} is not a valid UID", location=location)
    return value


def studies_url(request: Request) -> str:
    """The absolute URL of ``/dicomweb/studies`` as the client reached the API (behind a
    proxy too, given its forwarded headers); resource URLs are built on it."""
    return str(request.url_for("dicomweb_search_studies"))


def instance_url(base: str, study: str, series: str, instance: str) -> str:
    return f"{base}/{study}/series/{series}/instances/{instance}"


def warning_values(warnings: Sequence[str]) -> list[str]:
    """``Warning`` header values (RFC 9111 5.5; PS3.18 8.3.4.4 uses code 299)."""
    return [f'299 bridge "{text.replace(chr(34), chr(39))}"' for text in warnings]


def _split(text: str, separator: str) -> list[str]:
    """Split on ``separator`` outside double quotes."""
    parts: list[str] = []
    current: list[str] = []
    quoted = escaped = False
    for char in text:
        if escaped:
            escaped = False
        elif quoted and char == "\\":
            escaped = True
        elif char == '"':
            quoted = not quoted
        elif char == separator and not quoted:
            parts.append("".join(current))
            current = []
            continue
        current.append(char)
    parts.append("".join(current))
    return [p for p in parts if p.strip()]


# --- the stored instances a resource names --------------------------------------------------


def study_keys(study: str) -> RetrieveKeys:
    return RetrieveKeys(Level.STUDY, study_uids=(check_uid(study, "study"),))


def series_keys(study: str, series: str) -> RetrieveKeys:
    return RetrieveKeys(Level.SERIES, study_uids=(check_uid(study, "study"),),
                        series_uids=(check_uid(series, "series"),))


def instance_keys(study: str, series: str, instance: str) -> RetrieveKeys:
    return RetrieveKeys(Level.IMAGE, study_uids=(check_uid(study, "study"),),
                        series_uids=(check_uid(series, "series"),),
                        sop_instance_uids=(check_uid(instance, "instance"),))


def find_stored(keys: RetrieveKeys, context: AppContext, request: Request, *,
                subjects: bool = True, details: Mapping[str, object] | None = None,
                coalesce_audit: bool = False,
                ) -> tuple[list[StoredInstance], dict[int, SubjectValues | None]]:
    """The stored instances ``keys`` name that the caller may see (a clinician only their
    studies: others are absent), with the MIS values of their studies unless ``subjects`` is
    False (answers without a header need none); 404 when none. The read is audited before
    anything is answered (``coalesce_audit``: once per window for a stream of frame reads,
    see :func:`~bridge.adapters.http.access.audit_read`)."""
    keys = replace(keys, viewer=viewer_of(request))
    with read_session(context.session_factory) as session:
        instances = instances_for_retrieve(session, keys)
        loaded = load_subjects(session, {i.study_pk for i in instances}) if subjects else {}
    if not instances:
        level = {Level.STUDY: "study", Level.SERIES: "series"}.get(keys.level, "instance")
        raise NotFound(f"no such {level} in the archive", location=level)
    audit_read(context, request, action="retrieve", entity="study",
               entity_id=",".join(keys.study_uids),
               details={"level": keys.level.value, "instances": len(instances),
                        **(details or {})}, coalesce=coalesce_audit)
    return instances, loaded


def local_copies(context: AppContext, instances: Sequence[StoredInstance], *,
                 verify_online: bool = True) -> list[Path]:
    """Each instance's checked local copy (the online file, or fetched from the long-term
    tier); 500 when no intact copy is left, 503 when only the unreachable long-term store has
    it (faults that must not surface as a truncated multipart body)."""
    reader = reader_for(context.settings, context.session_factory)
    try:
        if len(instances) == 1:  # one frame's request: no hop through the fetch pool
            return [reader.local_path(instances[0], verify_online=verify_online)]
        return reader.all_local_paths(instances, verify_online=verify_online)
    except LongtermUnreachable:
        raise Transient("the requested objects are in long-term storage, which cannot be "
                        "reached now; try again later") from None
    except OSError as exc:  # NoIntactCopy, an unreadable file
        log.error("DICOMweb: no intact copy of a requested object (%s)", type(exc).__name__)
        raise BridgeError("a stored file of the requested objects is missing from the "
                          "archive") from None
