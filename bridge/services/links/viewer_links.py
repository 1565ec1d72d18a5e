"""``GET /api/links``: the studies an MIS asks about (by patient, accession or study UID), each
with a viewer URL that opens that study alone, signed and short-lived
(:mod:`bridge.mapping.links.signing`).

The URL carries the token in its fragment (``/console/view#brl_...``): browsers never send the
fragment to a server, so it is not in any access log or ``Referer``; the viewer page reads it
and presents it as a bearer token to the DICOMweb routes of that study only.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from sqlalchemy.orm import Session

from bridge.errors import Rejected
from bridge.mapping.dicom.qr_query import ArchiveQuery
from bridge.mapping.dicom.qr_results import StudyRecord
from bridge.mapping.links.signing import sign_link
from bridge.mapping.worklist.query import TextMatch
from bridge.services.archive.query import find_studies

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
    base = base_url.rstrip("/")
    return [StudyLink(study=s, expires=expires,
                      url=f"{base}/console/view#{sign_link(secret, s.study_instance_uid, expires)}")
            for s in studies]


def _exact(value: str) -> TextMatch | None:
    return TextMatch(values=(value,)) if value else None
