"""The grid gateway (``BRIDGE_GRID_AE_TITLE``): an ordinary DICOM archive towards the
hospital whose objects live de-identified in an external store (``BRIDGE_GRID_DESTINATION``).

- **store**: an object sent to the grid AE is de-identified, its key record committed, then
  sent out; the C-STORE succeeds only once the external store took it. The objects of one
  association form one export (one data key).
- **find**: C-FIND is answered from the key records with the real identities (the external
  store knows only pseudonyms), at PATIENT, STUDY, SERIES and IMAGE level.
- **retrieve**: C-MOVE / C-GET fetch the objects back from the external store, restore them
  byte for byte and hand them over.
"""

from __future__ import annotations

import fnmatch
import logging
import threading
from collections.abc import Iterator
from dataclasses import dataclass

from pydicom.dataset import Dataset
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from bridge.config.settings import Settings
from bridge.errors import BridgeError, Rejected
from bridge.services.deid import records
from bridge.services.deid.engine import Recipe, prepare
from bridge.services.deid.exports import destination_of, send_batch
from bridge.services.deid.keys import master_key
from bridge.services.deid.outbound import Outbound, fetch_object, open_outbound
from bridge.services.deid.restore import original_bytes
from bridge.store.audit import append_audit
from bridge.store.db import read_session
from bridge.store.deid_models import DeidExport, DeidObject, DeidStudy

log = logging.getLogger("bridge.deid")

#: Study-level attributes a C-FIND may match on and return (the key record's identity).
_STUDY_KEYS = ("PatientName", "PatientID", "IssuerOfPatientID", "PatientBirthDate",
               "PatientSex", "StudyInstanceUID", "StudyDate", "StudyTime", "AccessionNumber",
               "StudyID", "StudyDescription", "ReferringPhysicianName")
_PATIENT_KEYS = ("PatientName", "PatientID", "IssuerOfPatientID", "PatientBirthDate",
                 "PatientSex")


@dataclass(slots=True)
class _Session:
    """One incoming association's export, and its way out (kept open: to a DICOM store,
    one association for all the objects of the incoming one)."""

    export_id: int
    key: bytes
    recipe: Recipe
    outbound: Outbound


@dataclass(frozen=True, slots=True)
class GridObject:
    """An object the external store holds: where, and its real UIDs."""

    row_id: int
    study_uid: str
    series_uid: str
    sop_uid: str
    sop_class_uid: str


def wildcard_match(pattern: str, value: str, *, person_name: bool = False) -> bool:
    """DICOM matching (PS3.4 C.2.2.2): empty matches all, ``*`` and ``?`` are wildcards,
    a backslash lists values; person names ignore case (as the archive's C-FIND does)."""
    if not pattern or pattern == "*":
        return True
    for one in pattern.split("\\"):
        if person_name:
            one, value_cmp = one.casefold(), value.casefold()
        else:
            value_cmp = value
        if ("*" in one or "?" in one) and fnmatch.fnmatchcase(value_cmp, one):
            return True
        if one == value_cmp:
            return True
    return False


def date_match(pattern: str, value: str) -> bool:
    if not pattern:
        return True
    if "-" in pattern:
        low, _, high = pattern.partition("-")
        return bool(value) and (not low or value >= low) and (not high or value <= high)
    return value == pattern


class GridGateway:
    def __init__(self, settings: Settings, sessions: sessionmaker[Session]) -> None:
        self.settings = settings
        self.sessions = sessions
        self.destination = destination_of(settings, settings.grid_destination)
        self._open: dict[int, _Session] = {}
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ store

    def store(self, raw: bytes, *, association: object, calling_ae: str) -> None:
        current = self._session_for(association, calling_ae)
        prepared = prepare(raw, current.recipe)
        problem = send_batch(self.sessions, current.outbound, current.export_id, current.key,
                             [(None, prepared)])
        if prepared.status == records.HELD:
            raise Rejected(f"held back, not sent to the grid: {prepared.reason}",
                           location="(0028,0301)")
        if problem:
            raise Rejected(f"the grid store refused it: {problem}")

    def _session_for(self, association: object, calling_ae: str) -> _Session:
        with self._lock:
            found = self._open.get(id(association))
        if found is not None:
            return found
        master = master_key(self.settings)
        with self.sessions() as session, session.begin():
            secret = records.destination_secret(session, self.destination.name, master)
            export = records.new_export(session, master, destination=self.destination.name,
                                        source="grid", actor=f"ae:{calling_ae}",
                                        options=self.destination.options)
            key = records.data_key(export, master)
            export.status = "running"
            export_id = export.id
        made = _Session(export_id, key, Recipe.build(self.settings.mappings_dir,
                                                     self.destination.options, secret),
                        open_outbound(self.destination, self.settings))
        with self._lock:
            self._open[id(association)] = made
        return made

    def released(self, association: object) -> None:
        """The association ended: its export is finished and audited."""
        with self._lock:
            current = self._open.pop(id(association), None)
        if current is None:
            return
        current.outbound.close()
        with self.sessions() as session, session.begin():
            export = session.get(DeidExport, current.export_id)
            assert export is not None
            records.finish_export(session, export)
            append_audit(session, actor=export.actor, action="deid-grid-store",
                         entity="export", entity_id=str(export.id),
                         outcome="success" if export.status == "done" else "failure",
                         details={"destination": export.destination, "sent": export.sent,
                                  "held": export.held, "failed": export.failed})

    # ------------------------------------------------------------------ find

    def find(self, query: Dataset, *, calling_ae: str) -> list[Dataset]:
        level = str(query.get("QueryRetrieveLevel", "STUDY")).strip().upper()
        master = master_key(self.settings)
        with self.sessions() as session:
            ring = records.KeyRing(session, master)
            studies = self._studies(session, ring, query)
            if level in ("PATIENT", "STUDY"):
                answers = self._study_answers(session, studies, query, level)
            else:
                answers = self._object_answers(session, ring, studies, query, level)
        with self.sessions() as session, session.begin():
            append_audit(session, actor=f"ae:{calling_ae}", action="deid-grid-find",
                         entity="query", entity_id=level,
                         details={"matches": len(answers)})
        return answers

    def _studies(self, session: Session, ring: records.KeyRing, query: Dataset
                 ) -> list[tuple[DeidStudy, dict[str, str]]]:
        matched = []
        for study in session.execute(select(DeidStudy).where(
                DeidStudy.destination == self.destination.name).order_by(DeidStudy.id)
                ).scalars():
            identity = ring.identity(study)
            if self._matches(query, identity):
                matched.append((study, identity))
        return matched

    @staticmethod
    def _matches(query: Dataset, identity: dict[str, str]) -> bool:
        for keyword in _STUDY_KEYS:
            wanted = str(query.get(keyword, "") or "")
            if not wanted:
                continue
            value = identity.get(keyword, "")
            if keyword.endswith("Date"):
                if not date_match(wanted, value):
                    return False
            elif not wildcard_match(wanted, value, person_name=keyword.endswith("Name")):
                return False
        return True

    def _study_answers(self, session: Session, studies: list[tuple[DeidStudy, dict[str, str]]],
                       query: Dataset, level: str) -> list[Dataset]:
        keys = _PATIENT_KEYS if level == "PATIENT" else _STUDY_KEYS
        answers: dict[str, Dataset] = {}
        # The studies' object counts in one grouped query, not one per study.
        counts = dict(session.execute(
            select(DeidObject.deid_study_id, func.count()).where(
                DeidObject.deid_study_id.in_([study.id for study, _ in studies]),
                DeidObject.status == records.SENT).group_by(DeidObject.deid_study_id)).all())
        for study, identity in studies:
            count = int(counts.get(study.id, 0))
            group = identity.get("PatientID", "") if level == "PATIENT" else study.pseudo_study_uid
            answer = answers.get(group)
            if answer is None:
                answer = answers[group] = Dataset()
                answer.SpecificCharacterSet = "ISO_IR 192"  # the key records hold Unicode
                answer.QueryRetrieveLevel = level
                for keyword in keys:
                    if keyword in query or keyword in ("PatientID", "StudyInstanceUID"):
                        setattr(answer, keyword, identity.get(keyword, ""))
                answer.RetrieveAETitle = self.settings.grid_ae_title
                answer.NumberOfStudyRelatedInstances = 0
            answer.NumberOfStudyRelatedInstances = int(answer.NumberOfStudyRelatedInstances) + count
        return list(answers.values())

    def _object_answers(self, session: Session, ring: records.KeyRing,
                        studies: list[tuple[DeidStudy, dict[str, str]]], query: Dataset,
                        level: str) -> list[Dataset]:
        answers: dict[str, Dataset] = {}
        for obj in self.objects(session, ring, studies):
            if not wildcard_match(str(query.get("SeriesInstanceUID", "") or ""), obj.series_uid):
                continue
            if level == "IMAGE" and not wildcard_match(
                    str(query.get("SOPInstanceUID", "") or ""), obj.sop_uid):
                continue
            key = obj.series_uid if level == "SERIES" else obj.sop_uid
            if key in answers:
                continue
            answer = answers[key] = Dataset()
            answer.QueryRetrieveLevel = level
            answer.StudyInstanceUID = obj.study_uid
            answer.SeriesInstanceUID = obj.series_uid
            if level == "IMAGE":
                answer.SOPInstanceUID = obj.sop_uid
                answer.SOPClassUID = obj.sop_class_uid
            answer.RetrieveAETitle = self.settings.grid_ae_title
        return list(answers.values())

    def objects(self, session: Session, ring: records.KeyRing,
                studies: list[tuple[DeidStudy, dict[str, str]]]) -> Iterator[GridObject]:
        for study, identity in studies:
            for row in session.execute(select(DeidObject).where(
                    DeidObject.deid_study_id == study.id, DeidObject.status == records.SENT)
                    .order_by(DeidObject.id)).scalars():
                originals = ring.originals(row)
                yield GridObject(row.id, identity.get("StudyInstanceUID", originals["study"]),
                                 originals["series"], originals["sop"], row.sop_class_uid or "")

    # ------------------------------------------------------------------ retrieve

    def retrieve_list(self, query: Dataset) -> list[GridObject]:
        """The objects a C-MOVE/C-GET identifier names (by its UIDs or patient)."""
        master = master_key(self.settings)
        with self.sessions() as session:
            ring = records.KeyRing(session, master)
            studies = self._studies(session, ring, query)
            found = []
            for obj in self.objects(session, ring, studies):
                if not wildcard_match(str(query.get("SeriesInstanceUID", "") or ""),
                                      obj.series_uid):
                    continue
                if not wildcard_match(str(query.get("SOPInstanceUID", "") or ""), obj.sop_uid):
                    continue
                found.append(obj)
        return found

    def fetch(self, objects: list[GridObject], *, calling_ae: str, what: str
              ) -> Iterator[bytes | None]:
        """Each object restored from the external store (None: it could not be)."""
        master = master_key(self.settings)
        outbound = open_outbound(self.destination, self.settings)
        restored = 0
        try:
            # One key ring for the retrieve: each export's key is unwrapped once.
            with read_session(self.sessions) as session:
                ring = records.KeyRing(session, master)
                for obj in objects:
                    data = self._fetch_one(session, ring, outbound, obj)
                    restored += data is not None
                    yield data
        finally:
            outbound.close()
            with self.sessions() as session, session.begin():
                append_audit(session, actor=f"ae:{calling_ae}", action="deid-grid-retrieve",
                             entity="query", entity_id=what,
                             outcome="success" if restored == len(objects) else "failure",
                             details={"asked": len(objects), "restored": restored})

    @staticmethod
    def _fetch_one(session: Session, ring: records.KeyRing, outbound: Outbound,
                   obj: GridObject) -> bytes | None:
        row = session.get(DeidObject, obj.row_id)
        study = session.get(DeidStudy, row.deid_study_id) if row and row.deid_study_id else None
        if row is None or study is None:
            return None
        record = ring.record(row)
        try:
            raw = fetch_object(outbound, row, study.pseudo_study_uid)
        except BridgeError as exc:
            log.warning("grid object %s not fetched: %s", obj.row_id, exc.message)
            return None
        data = original_bytes(raw, row, record)
        if data is None:
            log.warning("grid object %s changed outside; not restored byte for byte",
                        obj.row_id)
        return data
