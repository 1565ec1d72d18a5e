"""Taking in one received object: check it, reconcile its study, keep the file, index it.

Order of work, so that nothing is ever half-kept: the file is parsed (a bad one is refused
before anything is written), placed at its archive path and fsync'ed, then the index rows are
committed in one transaction; only then does the caller answer success. If the transaction
fails, the placed file is removed. A crash between the two leaves at worst a file without a
row, never a row without a file.

The file stays exactly as received. The MIS values (reconciliation) are recorded as links
from the study to the patient and the order, applied when objects leave the bridge.
"""

from __future__ import annotations

import logging
import secrets
import threading
from collections.abc import Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from sqlalchemy import Connection, Engine, Row, bindparam, select, update
from sqlalchemy.exc import DataError, IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from bridge.config import Settings
from bridge.errors import BridgeError, Conflict, Rejected
from bridge.mapping.dicom_index import IndexValues, read_index_values
from bridge.mapping.dicom_text import undeclared_codec
from bridge.mapping.reconcile_policy import ReconcilePolicy, load_reconcile_policy
from bridge.services.group_commit import GroupCommit
from bridge.services.received_file import (
    fsync_dir,
    place_file,
    read_received,
    remove_file,
    sha256_of,
)
from bridge.services.reconciliation import Match, NoMatch, find_order
from bridge.store.archive_models import (
    CONFLICT,
    MATCHED,
    QUEUED,
    RECEIVING,
    STABLE,
    Instance,
    Series,
    Study,
    StudyEvent,
)
from bridge.store.models import table_of, utcnow

logger = logging.getLogger("bridge.archive")

S = table_of(Study)
SE = table_of(Series)
I = table_of(Instance)  # noqa: E741
E = table_of(StudyEvent)

_ATTEMPTS = 3

# The statements of the common case (a new object of a known series), built once: building
# a statement costs more than running it on SQLite.
_INSTANCE_BY_UID = select(I.c.id, I.c.path, I.c.size, I.c.study_id).where(
    I.c.sop_instance_uid == bindparam("uid"))
# Locked (PostgreSQL; SQLite's writers are serialised already): the study is updated below
# anyway, and deciding on the row as read before the lock would miss a sweep that marked it
# stable meanwhile (the late object would not re-open it) or a delete under way.
_STUDY_BY_UID = select(S.c.id, S.c.state, S.c.reconciliation, S.c.source_patient_id,
                       S.c.source_issuer, S.c.modalities).where(
    S.c.study_instance_uid == bindparam("uid")).with_for_update()
_SERIES_BY_UID = select(SE.c.id, SE.c.study_id).where(
    SE.c.series_instance_uid == bindparam("uid"))
_INSERT_INSTANCE = I.insert()
_COUNT_SERIES_INSTANCE = update(SE).where(SE.c.id == bindparam("series")).values(
    num_instances=SE.c.num_instances + 1)
_COUNT_STUDY_INSTANCE = update(S).where(S.c.id == bindparam("study")).values(
    num_instances=S.c.num_instances + bindparam("counted"),
    size_bytes=S.c.size_bytes + bindparam("delta"),
    last_received_at=bindparam("now"), updated_at=bindparam("now"))


class DuplicateInstance(Conflict):
    """The SOP Instance UID is stored already and the policy is ``reject``."""

    dimse_status = 0x0111  # Duplicate SOP Instance


class PatientConflict(Conflict):
    """The object names another patient than the rest of its study."""


class UnmatchedStudy(Rejected):
    """No order matches and the policy is ``reject``."""

    dimse_status = 0x0110  # Processing failure: the data set itself is fine


@dataclass(frozen=True, slots=True)
class Arrival:
    path: Path
    calling_ae: str = ""
    #: dimse, stow, import: where the object came from (for the logs).
    source: str = "dimse"
    #: The file is a temporary one the store may move into the archive (else it is copied).
    disposable: bool = True


@dataclass(frozen=True, slots=True)
class Stored:
    study_id: int
    instance_id: int
    sop_instance_uid: str
    outcome: Literal["stored", "duplicate", "replaced"]
    #: matched, assigned, queued, conflict
    reconciliation: str


@dataclass(frozen=True, slots=True)
class _Placed:
    relative: str
    size: int
    sha256: str


@dataclass(frozen=True, slots=True)
class _IndexJob:
    values: IndexValues
    placed: _Placed
    codec: str | None
    calling_ae: str


_Indexed = tuple[Stored, str | None]


class ArchiveStore:
    def __init__(self, settings: Settings, session_factory: sessionmaker[Session],
                 policy: ReconcilePolicy | None = None) -> None:
        self.settings = settings
        self.sessions = session_factory
        # The index transaction runs on a plain connection: no ORM session to set up.
        self.engine: Engine = session_factory.kw["bind"]
        # SQLite has one writer at a time, and a writer that finds the lock taken sleeps in
        # growing steps (busy timeout) instead of waking when it is free: with several
        # associations storing at once, queueing on a lock here is several times faster.
        self._writer: AbstractContextManager[object] = (
            _sqlite_writer_lock(str(self.engine.url)) if self.engine.dialect.name == "sqlite"
            else nullcontext())
        self._commits: GroupCommit[_IndexJob, _Indexed] = GroupCommit(self._index_batch)
        self.root = settings.archive_root
        self.policy = policy or load_reconcile_policy(settings.mappings_dir)

    def accept(self, arrival: Arrival) -> Stored:
        header, transfer_syntax = read_received(arrival.path)
        peer = self.settings.peer(arrival.calling_ae)
        codec = undeclared_codec(header, peer.charset if peer else None)
        values = read_index_values(header, transfer_syntax_uid=transfer_syntax, codec=codec)
        # Duplicates are rare: the file is placed first and dropped again when the index
        # says the object is known, instead of asking the database twice for every object.
        placed = self._place(arrival, values)
        try:
            stored, replaced_path = self._commits.submit(
                _IndexJob(values, placed, codec, arrival.calling_ae))
        except BridgeError:  # refused: the transaction did not commit this object
            remove_file(self.root / placed.relative)
            raise
        except BaseException:
            # A lost connection can fail a COMMIT that landed: the file goes only when the
            # index surely does not point to it (a leftover file is harmless, a row without
            # its file is lost data).
            if self._indexed_at(values.sop_instance_uid, placed.relative) is False:
                remove_file(self.root / placed.relative)
            raise
        if stored.outcome == "duplicate":
            remove_file(self.root / placed.relative)
        if replaced_path is not None:  # committed: the replaced file may go
            remove_file(self.root / replaced_path)
        logger.debug("stored %s from %s (%s)", values.sop_instance_uid, arrival.calling_ae,
                     stored.reconciliation)
        return stored

    def _indexed_at(self, sop_instance_uid: str, relative: str) -> bool | None:
        """Whether the index points to this file; None when the database cannot say."""
        try:
            with self.engine.connect() as conn:
                path = conn.execute(_INSTANCE_BY_UID, {"uid": sop_instance_uid}).first()
        except Exception:
            return None
        return path is not None and path.path == relative

    def accept_bytes(self, data: bytes, *, calling_ae: str = "", source: str = "stow") -> Stored:
        """For callers holding the object in memory (STOW-RS): written to a temporary file
        inside the archive (same file system, so it is renamed, not copied)."""
        incoming = self.root / ".incoming"
        incoming.mkdir(parents=True, exist_ok=True)
        path = incoming / f"{secrets.token_hex(8)}.dcm"
        path.write_bytes(data)
        try:
            return self.accept(Arrival(path, calling_ae=calling_ae, source=source))
        finally:
            remove_file(path)

    # -- the file ---------------------------------------------------------------------------

    def _place(self, arrival: Arrival, values: IndexValues) -> _Placed:
        relative = "/".join((
            values.study_instance_uid[-2:].rjust(2, "0"), values.study_instance_uid,
            values.series_instance_uid,
            f"{values.sop_instance_uid}.{secrets.token_hex(3)}.dcm"))
        target = self.root / relative
        size = arrival.path.stat().st_size
        digest = sha256_of(arrival.path)
        # The directory is fsync'ed by the index batch, once for all its files.
        place_file(arrival.path, target, move=arrival.disposable, sync_dir=False)
        return _Placed(relative, size, digest)

    # -- the index ---------------------------------------------------------------------------

    def _index_batch(self, jobs: Sequence[_IndexJob]) -> list[_Indexed | BaseException]:
        """One transaction for the objects that arrived together, each in a savepoint so one
        refused object does not fail the others; committed once."""
        outcomes: list[_Indexed | BaseException | None] = []
        with self._writer, self.engine.begin() as conn:
            for job in jobs:
                try:
                    with conn.begin_nested():
                        outcomes.append(self._index(conn, job.values, job.placed, job.codec,
                                                    job.calling_ae))
                except IntegrityError:
                    outcomes.append(None)  # raced another process: run alone below
                except (BridgeError, DataError) as exc:  # this object's own values
                    outcomes.append(exc)
            placed = {(self.root / job.placed.relative).parent
                      for job, outcome in zip(jobs, outcomes, strict=True)
                      if isinstance(outcome, tuple)}
            for directory in placed:  # the files' names are durable before their rows
                fsync_dir(directory)
        done: list[_Indexed | BaseException] = []
        for job, outcome in zip(jobs, outcomes, strict=True):
            if outcome is None:
                try:
                    outcome = self._index_with_retry(job.values, job.placed, job.codec,
                                                     job.calling_ae)
                except Exception as exc:
                    # This object's failure only: the batch has committed the others, and
                    # raising here would fail them all and have their files removed.
                    outcome = exc
            done.append(outcome)
        return done

    def _index_with_retry(self, values: IndexValues, placed: _Placed, codec: str | None,
                          calling_ae: str) -> tuple[Stored, str | None]:
        # Two associations creating the same study or series at once: one insert loses on
        # the unique key and its transaction is simply run again (the row now exists).
        for attempt in range(_ATTEMPTS):
            try:
                with self._writer, self.engine.begin() as conn:
                    indexed = self._index(conn, values, placed, codec, calling_ae)
                    fsync_dir((self.root / placed.relative).parent)
                    return indexed
            except IntegrityError:
                if attempt == _ATTEMPTS - 1:
                    raise
        raise AssertionError("unreachable")

    def _index(self, conn: Connection, values: IndexValues, placed: _Placed,
               codec: str | None, calling_ae: str) -> tuple[Stored, str | None]:
        """The index rows for one object; also the path of a file it replaced."""
        now = utcnow()
        old = conn.execute(_INSTANCE_BY_UID, {"uid": values.sop_instance_uid}).first()
        policy = self.settings.store_duplicate_policy
        if old is not None and policy != "replace":
            if policy == "reject":
                raise DuplicateInstance("SOP Instance UID already stored",
                                        location="SOPInstanceUID")
            reconciliation = conn.execute(select(S.c.reconciliation).where(
                S.c.id == old.study_id)).scalar_one()
            return Stored(int(old.study_id), int(old.id), values.sop_instance_uid,
                          "duplicate", reconciliation), None
        study = conn.execute(_STUDY_BY_UID, {"uid": values.study_instance_uid}).first()
        if study is None:
            study_id, reconciliation, modalities, state = self._new_study(conn, values, now)
        else:
            study_id, reconciliation, modalities, state = (
                study.id, study.reconciliation, study.modalities, study.state)
            if _other_patient(values, study.source_patient_id, study.source_issuer):
                reconciliation = self._patient_conflict(conn, study_id)
        series_id, new_series = self._series(conn, study_id, values)
        file_values = {"path": placed.relative, "size": placed.size, "sha256": placed.sha256,
                       "transfer_syntax_uid": values.transfer_syntax_uid,
                       "source_charset": codec, "calling_ae": calling_ae[:16],
                       "received_at": now}
        replaced_path: str | None = None
        outcome: Literal["stored", "duplicate", "replaced"]
        if old is not None:  # the replace policy
            outcome = self._replace(conn, old, values, file_values)
            instance_id, counted = int(old.id), 0
            replaced_path = str(old.path)
        else:
            instance_id = conn.execute(_INSERT_INSTANCE, {
                "series_id": series_id, "study_id": study_id,
                "sop_instance_uid": values.sop_instance_uid,
                "sop_class_uid": values.sop_class_uid,
                "instance_number": values.instance_number, **file_values,
            }).inserted_primary_key[0]  # type: ignore[index]
            outcome, counted = "stored", 1
            conn.execute(_COUNT_SERIES_INSTANCE, {"series": series_id})
        conn.execute(_COUNT_STUDY_INSTANCE, {
            "study": study_id, "counted": counted, "now": now,
            "delta": placed.size - (old.size if old is not None else 0)})
        study_update: dict[str, object] = {}
        if new_series:
            study_update["num_series"] = S.c.num_series + 1
            if values.modality and values.modality not in modalities.split("\\"):
                study_update["modalities"] = "\\".join(
                    m for m in (*modalities.split("\\"), values.modality) if m)[:64]
        if state == STABLE:  # a late object re-opens the study
            study_update.update(state=RECEIVING, stable_at=None)
            conn.execute(E.insert().values(study_id=study_id, kind="reopened", details={},
                                           created_at=now))
        if study_update:  # rarely: a new series, a re-opened study
            conn.execute(update(S).where(S.c.id == study_id).values(**study_update))
        stored = Stored(study_id, instance_id, values.sop_instance_uid, outcome, reconciliation)
        return stored, replaced_path

    def _new_study(self, conn: Connection, values: IndexValues, now: datetime
                   ) -> tuple[int, str, str, str]:
        found = find_order(conn, values, self.policy,
                           window_days=self.settings.reconcile_date_window_days)
        if isinstance(found, NoMatch) and self.settings.reconcile_unmatched == "reject":
            raise UnmatchedStudy(f"no MIS order matches the study: {found.reason}",
                                 location="AccessionNumber")
        match = found if isinstance(found, Match) else None
        study_id = conn.execute(S.insert().values(
            study_instance_uid=values.study_instance_uid,
            patient_id=match.patient_id if match else None,
            order_id=match.order_id if match else None,
            source_patient_id=values.patient_id, source_issuer=values.issuer,
            source_patient_name=values.patient_name,
            source_name_search=values.patient_name.casefold()[:320],  # ß → ss grows
            source_birth_date=values.birth_date, source_sex=values.sex,
            accession=values.accession, study_date=values.study_date,
            study_time=values.study_time, study_id=values.study_id,
            description=values.study_description,
            referring_physician=values.referring_physician,
            modalities="", num_series=0, num_instances=0, size_bytes=0, state=RECEIVING,
            reconciliation=MATCHED if match else QUEUED,
            match_key=match.key if match else None,
            queue_reason=None if match else (found.reason if isinstance(found, NoMatch)
                                             else None),
            last_received_at=now, created_at=now, updated_at=now,
        )).inserted_primary_key[0]  # type: ignore[index]
        return int(study_id), MATCHED if match else QUEUED, "", RECEIVING

    def _patient_conflict(self, conn: Connection, study_id: int) -> str:
        if self.settings.reconcile_patient_conflict == "reject":
            raise PatientConflict(
                "the study holds objects of another patient; object refused",
                location="PatientID")
        conn.execute(update(S).where(S.c.id == study_id).values(
            reconciliation=CONFLICT, queue_reason="objects of the study name two different "
            "patients", updated_at=utcnow()))
        conn.execute(E.insert().values(study_id=study_id, kind="patient_conflict", details={},
                                       created_at=utcnow()))
        return CONFLICT

    def _series(self, conn: Connection, study_id: int, values: IndexValues) -> tuple[int, bool]:
        row = conn.execute(_SERIES_BY_UID, {"uid": values.series_instance_uid}).first()
        if row is not None:
            if row.study_id != study_id:
                raise Conflict("the series belongs to another study",
                               location="SeriesInstanceUID")
            return int(row.id), False
        series_id = conn.execute(SE.insert().values(
            study_id=study_id, series_instance_uid=values.series_instance_uid,
            modality=values.modality, series_number=values.series_number,
            description=values.series_description, body_part=values.body_part,
            num_instances=0, created_at=utcnow())).inserted_primary_key[0]  # type: ignore[index]
        return int(series_id), True

    def _replace(self, conn: Connection, old: Row[Any, Any, Any, Any], values: IndexValues,
                 file_values: dict[str, object]) -> Literal["replaced"]:
        if old.study_id != conn.execute(select(S.c.id).where(
                S.c.study_instance_uid == values.study_instance_uid)).scalar_one():
            raise Conflict("the SOP instance is stored in another study",
                           location="SOPInstanceUID")
        conn.execute(update(I).where(I.c.id == old.id).values(
            sop_class_uid=values.sop_class_uid, instance_number=values.instance_number,
            **file_values))
        return "replaced"


_WRITER_LOCKS: dict[str, threading.Lock] = {}
_WRITER_LOCKS_GUARD = threading.Lock()


def _sqlite_writer_lock(url: str) -> threading.Lock:
    """One lock per database file in this process, shared by every store on it."""
    with _WRITER_LOCKS_GUARD:
        return _WRITER_LOCKS.setdefault(url, threading.Lock())


def _other_patient(values: IndexValues, source_id: str, source_issuer: str) -> bool:
    if not values.patient_id or not source_id:
        return False
    if values.patient_id != source_id:
        return True
    return bool(values.issuer and source_issuer and values.issuer != source_issuer)
