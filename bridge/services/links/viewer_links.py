"""``GET /api/links``: the studies an MIS asks about (by patient, accession or study UID), each
with a viewer URL that opens that study alone, signed and short-lived
(:mod:`bridge.mapping.links.signing`).

The URL carries the token in its fragment (``/console/view#brl_...``): browsers never send the
fragment to a server, so it is not in any access log or ``Referer``; the viewer page reads it
and presents it as a bearer token to the DICOMweb routes of that study only.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from bridge.config.settings import Settings
from bridge.errors import Rejected
from bridge.mapping.dicom.qr_query import ArchiveQuery
from bridge.mapping.dicom.qr_results import StudyRecord
from bridge.mapping.links.signing import sign_link
from bridge.mapping.worklist.query import TextMatch
from bridge.services.archive.query import find_studies
from bridge.services.links.secret import console_secret
from bridge.store.archive_models import RECONCILED, Study

#: At most this many studies are answered at once (a patient with more: the newest first).
MAX_LINKS = 200


@dataclass(frozen=True, slots=True)
class LinkQuery:
    patient_id: str = ""
    issuer: str = ""
    accession: str = ""
    study_uid: str = ""

    def check(self) -> None:
        if not (self.patient_id or self.accession or self.study_uid):
            raise Rejected("name the patient (PatientID), an AccessionNumber or a "
                          "StudyInstanceUID", location="PatientID")
        for name, value in (("PatientID", self.patient_id), ("AccessionNumber", self.accession),
                            ("StudyInstanceUID", self.study_uid)):
            if len(value) > 64 or any(c in value for c in "*?\\"):
                raise Rejected(f"{name}: one exact value of at most 64 characters "
                              "(no wild cards, no lists)", location=name)


@dataclass(frozen=True, slots=True)
class StudyLink:
    study: StudyRecord
    url: str
    expires: int


def viewer_url(secret: bytes, base_url: str, study_uid: str, expires: int) -> str:
    """The viewer URL opening ``study_uid`` alone until ``expires`` (Unix seconds)."""
    return f"{base_url.rstrip('/')}/console/view#{sign_link(secret, study_uid, expires)}"


def resource_link(settings: Settings, study_uid: str, *, now: float | None = None
                  ) -> str | None:
    """The viewer URL that resources carry (the FHIR ImagingStudy's IID endpoint, a worklist
    order) when ``resource_viewer_links`` is set, valid ``link_seconds`` from now; else None."""
    if not settings.resource_viewer_links:
        return None
    expires = int((time.time() if now is None else now) + settings.link_seconds)
    return viewer_url(console_secret(settings), settings.base_url, study_uid, expires)


def order_links(session: Session, settings: Settings, order_ids: Iterable[int]
                ) -> dict[int, str]:
    """A viewer URL per order that has a reconciled study (its newest), in one query, when
    ``resource_viewer_links`` is set (else empty): what the worklist API's orders carry."""
    ids = sorted(set(order_ids))
    if not settings.resource_viewer_links or not ids:
        return {}
    rows = session.execute(
        select(Study.order_id, Study.study_instance_uid)
        .where(Study.order_id.in_(ids), Study.reconciliation.in_(sorted(RECONCILED)))
        .order_by(Study.order_id, Study.id)).all()
    newest = {int(row.order_id): row.study_instance_uid for row in rows}
    links: dict[int, str] = {}
    for order_id, study_uid in newest.items():
        url = resource_link(settings, study_uid)
        if url is not None:
            links[order_id] = url
    return links


def study_links(session: Session, query: LinkQuery, *, secret: bytes, base_url: str,
                seconds: float, now: float | None = None) -> list[StudyLink]:
    query.check()
    archive_query = ArchiveQuery(
        patient_id=_exact(query.patient_id), issuer_of_patient_id=_exact(query.issuer),
        accession=_exact(query.accession),
        study_uids=(query.study_uid,) if query.study_uid else ())
    studies = find_studies(session, archive_query, limit=MAX_LINKS)
    studies.sort(key=lambda s: (s.study_date, s.study_time), reverse=True)
    expires = int((time.time() if now is None else now) + seconds)
    return [StudyLink(study=s, expires=expires,
                      url=viewer_url(secret, base_url, s.study_instance_uid, expires))
            for s in studies]


def _exact(value: str) -> TextMatch | None:
    return TextMatch(values=(value,)) if value else None
