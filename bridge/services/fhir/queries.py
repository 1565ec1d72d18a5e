"""Read and search any resource ``/fhir`` serves: Patient and ServiceRequest (the domain,
:mod:`bridge.services.fhir.resources`), ImagingStudy and Endpoint (the archive,
:mod:`bridge.services.fhir.imaging`), with searchset Bundles, offset paging (``next`` and
``previous`` links) and ``_include`` of the subject Patients.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
from urllib.parse import urlencode

from sqlalchemy.orm import Session

from bridge.errors import NotFound, Rejected
from bridge.mapping.fhir import imaging_study as fis
from bridge.mapping.fhir.bundle import searchset
from bridge.mapping.fhir.datatypes import reference_parts
from bridge.mapping.fhir.search import SearchQuery, parse_search
from bridge.services.fhir import imaging as fhir_imaging
from bridge.services.fhir.context import DOMAIN_TYPES, PATIENT, SR, FhirContext
from bridge.services.fhir.lookup import build_resources, read_resource, search_page

IMAGING_STUDY, ENDPOINT = "ImagingStudy", "Endpoint"
SERVED_TYPES = (*DOMAIN_TYPES, IMAGING_STUDY, ENDPOINT)
#: What ImagingStudy and Endpoint searches take (the CapabilityStatement lists these).
IMAGING_SEARCH_PARAMS: dict[str, dict[str, tuple[str, str]]] = {
    IMAGING_STUDY: {
        "_id": ("token", "Logical id (the studies row id)"),
        "identifier": ("token", "urn:dicom:uid|urn:oid:[StudyInstanceUID], or the "
                                "accession number"),
        "patient": ("reference", "The patient: Patient/[id]"),
        "subject": ("reference", "The patient: Patient/[id]"),
        "status": ("token", "available or registered"),
        "_lastUpdated": ("date", "When the study last changed"),
    },
    ENDPOINT: {"_id": ("token", "Logical id (wado-rs)")},
}
IMAGING_INCLUDES = {
    IMAGING_STUDY: frozenset({"ImagingStudy:subject", "ImagingStudy:patient"}),
    ENDPOINT: frozenset(),
}


def read_any(session: Session, ctx: FhirContext, resource_type: str,
             resource_id: str, *, viewer: int | None = None) -> dict[str, Any]:
    """One resource; for a clinician (``viewer``) only a study they may see (else 404)."""
    if resource_type in DOMAIN_TYPES:
        return read_resource(session, ctx, resource_type, resource_id)
    if resource_type == IMAGING_STUDY:
        study_id = fhir_imaging.study_id_of(resource_id)
        if study_id is None:
            raise NotFound(f"ImagingStudy/{resource_id} is not known", location="id")
        return fhir_imaging.imaging_study_for(session, study_id, ctx.settings,
                                              naming=_naming(ctx), viewer=viewer)
    if resource_type == ENDPOINT:
        if resource_id != fis.ENDPOINT_ID:
            raise NotFound(f"Endpoint/{resource_id} is not known", location="id")
        return fhir_imaging.endpoint_resource(ctx.settings)
    raise NotFound(f"resource type {resource_type} is not supported", location="type")


def search_bundle(session: Session, ctx: FhirContext, resource_type: str,
                  params: list[tuple[str, str]], *, base: str,
                  strict: bool = False, viewer: int | None = None) -> dict[str, Any]:
    """A searchset Bundle (one page; ``fullUrl`` and links under ``base``, e.g.
    ``https://host/fhir``)."""
    if resource_type in DOMAIN_TYPES:
        page = search_page(session, ctx, resource_type, params, strict=strict)
        query, total = page.query, page.total
        built = build_resources(session, ctx, resource_type, page.ids)
        matches = [built[i] for i in page.ids if i in built]
    elif resource_type == IMAGING_STUDY:
        query = parse_search(resource_type, params, ctx.zone, strict=strict,
                             allowed=IMAGING_SEARCH_PARAMS[IMAGING_STUDY],
                             includes=IMAGING_INCLUDES[IMAGING_STUDY])
        total, matches = _imaging_studies(session, ctx, query, viewer)
    elif resource_type == ENDPOINT:
        query = parse_search(resource_type, params, ctx.zone, strict=strict,
                             allowed=IMAGING_SEARCH_PARAMS[ENDPOINT],
                             includes=IMAGING_INCLUDES[ENDPOINT])
        found = all(fis.ENDPOINT_ID in ids for ids in query.ids)
        matches = [fhir_imaging.endpoint_resource(ctx.settings)] if found else []
        total = len(matches)
        matches = matches[query.offset:query.offset + query.count]
    else:
        raise NotFound(f"resource type {resource_type} is not supported", location="type")
    entries = [(f"{base}/{resource_type}/{r['id']}", r, "match") for r in matches]
    if query.includes:
        entries += [(f"{base}/{PATIENT}/{r['id']}", r, "include")
                    for r in _subjects(session, ctx, matches)]
    return searchset(entries, total=total, links=_links(base, query, total))


def _imaging_studies(session: Session, ctx: FhirContext, query: SearchQuery,
                     viewer: int | None) -> tuple[int, list[dict[str, Any]]]:
    """The ImagingStudy search as :func:`fhir_imaging.search_imaging_studies` takes it:
    one value per parameter (several identifiers OR'd with commas); ``_id`` filtered here."""
    if len(query.identifiers) > 1 or len(query.subjects) > 1 or len(query.statuses) > 1:
        raise Rejected("ImagingStudy takes each search parameter once (OR with commas)",
                       location="ImagingStudy")
    patient_id: int | None = None
    if query.subjects:
        if len(query.subjects[0]) != 1:
            raise Rejected("ImagingStudy takes one patient", location="patient")
        value = query.subjects[0][0]
        if not value.isdigit() or len(value) > 18:
            return 0, []
        patient_id = int(value)
    identifier = None
    if query.identifiers:
        identifier = ",".join(f"{t.system}|{t.value}" if t.system is not None else t.value
                              for t in query.identifiers[0])
    low: datetime | None = None
    high: datetime | None = None
    for bound in query.last_updated:
        if bound.op == "ge":
            low = bound.moment if low is None else max(low, bound.moment)
        else:
            high = bound.moment if high is None else min(high, bound.moment)
    status = ",".join(query.statuses[0]) if query.statuses else None
    if query.ids:
        wanted = set.intersection(*(set(group) for group in query.ids))
        _total, matches = fhir_imaging.search_imaging_studies(
            session, settings=ctx.settings, identifier=identifier, patient_id=patient_id,
            status=status, last_updated=(low, high), count=fhir_imaging.MAX_COUNT,
            naming=_naming(ctx), viewer=viewer)
        selected = [m for m in matches if m.get("id") in wanted]
        return len(selected), selected[query.offset:query.offset + query.count]
    return fhir_imaging.search_imaging_studies(
        session, settings=ctx.settings, identifier=identifier, patient_id=patient_id,
        status=status, last_updated=(low, high), count=query.count, offset=query.offset,
        naming=_naming(ctx), viewer=viewer)


def _naming(ctx: FhirContext) -> fis.FhirNaming:
    """How the site writes issuers and coding schemes (``mappings/fhir``), for the
    ImagingStudy builder."""
    tables = ctx.tables
    return fis.FhirNaming(issuer_systems=tables.issuer_to_system,
                          accession_system=tables.accession_system or None,
                          coding_systems=tables.scheme_to_system)


def _subjects(session: Session, ctx: FhirContext,
              matches: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The Patients the matches' subjects reference, once each."""
    ids: list[int] = []
    for resource in matches:
        subject = resource.get("subject")
        parts = reference_parts(subject.get("reference")) if isinstance(subject, dict) else None
        if (parts and parts[0] == PATIENT and parts[1].isdigit()
                and int(parts[1]) not in ids):
            ids.append(int(parts[1]))
    built = build_resources(session, ctx, PATIENT, ids)
    return [built[i] for i in ids if i in built]


def _links(base: str, query: SearchQuery, total: int) -> list[tuple[str, str]]:
    def url(offset: int) -> str:
        params = [*query.used_without_paging(), ("_count", str(query.count)),
                  ("_offset", str(offset))]
        return f"{base}/{query.resource_type}?{urlencode(params)}"

    links = [("self", url(query.offset))]
    if query.count and query.offset + query.count < total:
        links.append(("next", url(query.offset + query.count)))
    if query.count and query.offset > 0:
        links.append(("previous", url(max(0, query.offset - query.count))))
    return links


__all__ = ["ENDPOINT", "IMAGING_STUDY", "SERVED_TYPES", "SR", "read_any", "search_bundle"]
