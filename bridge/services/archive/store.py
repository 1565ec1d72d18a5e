"""Taking in one received object: check it, reconcile its study, keep the file, index it.

Order of work, so that nothing is ever half-kept: the file is parsed (a bad one is refused
before anything is written) and placed at its archive path, then its index rows are written
in a transaction that commits only once the file is durable at its name; only then does the
caller answer success. The waits overlap: the file's data fsync and its hash start in threads
as soon as it arrives, its directory's fsync as soon as it is placed (``FileSyncer``). If the
transaction fails, the placed file is removed. A crash before the commit leaves at worst a
file without a row, never a row without a file.

The file stays exactly as received. The MIS values (reconciliation) are recorded as links
from the study to the patient and the order, applied when objects leave the bridge.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
import threading
import time
from collections.abc import Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from sqlalchemy import Connection, Engine, bindparam, select, update
from sqlalchemy.exc import DataError, IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from bridge.config.settings import Settings
from bridge.errors import BridgeError, Conflict, Rejected
from bridge.mapping.dicom.charset import undeclared_codec
from bridge.mapping.dicom.index_values import IndexValues, read_index_values
from bridge.mapping.dicom.reconciliation import ReconcilePolicy, load_reconcile_policy
from bridge.services.archive.received import read_received
from bridge.services.archive.reconciliation import (
    Match,
    PatientLink,
    PatientMismatch,
    find_order,
    find_patient,
)
from bridge.services.group_commit.threads import GroupCommit
from bridge.storage.durable import (
    FileSyncer,
    Intake,
    PendingSync,
    move_into_place,
    remove_file,
    sha256_of,
)
from bridge.store.archive_models import (
    CONFLICT,
    LINKED,
    MATCHED,
    PATIENT_MISMATCH,
    QUEUED,
    RECEIVING,
    STABLE,
    UNMATCHED,
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
                       S.c.source_issuer, S.c.modalities, S.c.longterm_at,
                       S.c.online_removed_at).where(
    S.c.study_instance_uid == bindparam("uid")).with_for_update()
_SERIES_BY_UID = select(SE.c.id, SE.c.study_id).where(
    SE.c.series_instance_uid == bindparam("uid"))
# The common case in one statement instead of three: the study (locked as above), with the
# series and a stored instance of the object's UIDs when there are. Only the study row is
# locked; the others are only ever inserted by the store itself, and a race with another
# process inserting them ends on a unique key and a retry, as it did with three statements.
_KNOWN_STUDY = select(
    *_STUDY_BY_UID.selected_columns,
    SE.c.id.label("series_id"), SE.c.study_id.label("series_study_id"),
    I.c.id.label("old_id"), I.c.path.label("old_path"), I.c.size.label("old_size"),
    I.c.study_id.label("old_study_id"),
).select_from(
    S.outerjoin(SE, SE.c.series_instance_uid == bindparam("series_uid"))
    .outerjoin(I, I.c.sop_instance_uid == bindparam("sop_uid"))
).where(S.c.study_instance_uid == bindparam("uid")).with_for_update(of=S)
_INSERT_INSTANCE = I.insert()
_COUNT_SERIES_INSTANCE = update(SE).where(SE.c.id == bindparam("series")).values(
    num_instances=SE.c.num_instances + 1)
_COUNT_STUDY_INSTANCE = update(S).where(S.c.id == bindparam("study")).values(
    num_instances=S.c.num_instances + bindparam("counted"),
    size_bytes=S.c.size_bytes + bindparam("delta"),
    last_received_at=bindparam("now"), updated_at=bindparam("now"))
_NEW_INSTANCE_VALUES = ("series_id", "study_id", "sop_instance_uid", "sop_class_uid",
                        "instance_number", "path", "size", "sha256", "transfer_syntax_uid",
                        "source_charset", "calling_ae", "received_at", "online_removed_at")
# PostgreSQL: the new instance and both counts in one statement (data-modifying CTEs), one
# round trip instead of three; SQLite runs in-process, where the three cost less than this.
# The instance's values are bound as "new_<column>": an UPDATE given a parameter named like
# one of its table's columns would also SET that column.
_NEW_INSTANCE_COUNTED = select(
    I.insert().values({name: bindparam(f"new_{name}", type_=I.c[name].type)
                       for name in _NEW_INSTANCE_VALUES}).returning(I.c.id).cte("new_instance")
    .c.id,
).add_cte(_COUNT_SERIES_INSTANCE.cte("counted_series"),
          _COUNT_STUDY_INSTANCE.cte("counted_study"))


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
class _Placement:
    """A new study's reconciliation columns."""

    reconciliation: str
    patient_id: int | None
    order_id: int | None
    match_key: str | None
    queue_reason: str | None = None
    queue_kind: str | None = None
    candidate_patient_id: int | None = None


@dataclass(frozen=True, slots=True)
class _Placed:
    relative: str
    size: int
    sha256: str
    #: The file's fsyncs, under way: waited for just before the commit of its rows (none:
    #: the file was made durable otherwise).
    synced: PendingSync = field(default_factory=PendingSync)


@dataclass(frozen=True, slots=True)
class _IndexJob:
    values: IndexValues
    placed: _Placed
    codec: str | None
    calling_ae: str


_Indexed = tuple[Stored, str | None]


@dataclass(frozen=True, slots=True)
class _Old:
    """The instance row stored already under the object's SOP Instance UID."""

    id: int
    path: str
    size: int
    study_id: int


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
        self._one_statement_insert = self.engine.dialect.name == "postgresql"
        self.root = settings.archive_root
        self._syncer = FileSyncer(self.root)
        self.policy = policy or load_reconcile_policy(settings.mappings_dir,
                                                      settings.reconcile_unordered)

    def accept(self, arrival: Arrival) -> Stored:
        # The data fsync and the hash run while the file is parsed (see FileSyncer); a file
        # to be copied (not ours to move) is fsync'ed as the copy instead.
        intake: Intake | None
        try:
            intake = self._syncer.start(arrival.path, sync=arrival.disposable)
        except OSError:
            intake = None  # unreadable: read_received refuses it with the reason
        header, transfer_syntax = read_received(arrival.path)
        peer = self.settings.peer(arrival.calling_ae)
        codec = undeclared_codec(header, peer.charset if peer else None)
        values = read_index_values(header, transfer_syntax_uid=transfer_syntax, codec=codec)
        # Duplicates are rare: the file is placed first and dropped again when the index
        # says the object is known, instead of asking the database twice for every object.
        placed = self._place(arrival, values, intake)
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

    def sweep_incoming(self, *, older_than_seconds: float = 3600.0) -> int:
        """Remove temporary files left in ``.incoming`` by receptions that never ended (a
        crash mid-transfer): nothing was acknowledged for them, and none is named by the
        index. Only files untouched for ``older_than_seconds`` go (a transfer under way
        writes to its file continually). How many were removed."""
        incoming = self.root / ".incoming"
        if not incoming.is_dir():
            return 0
        cutoff = time.time() - older_than_seconds
        removed = 0
        for path in incoming.iterdir():
            with contextlib.suppress(OSError):
                if path.is_file() and path.stat().st_mtime < cutoff:
                    path.unlink()
                    removed += 1
        if removed:
            logger.info("removed %s abandoned temporary files from the archive", removed)
        return removed

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

    def _place(self, arrival: Arrival, values: IndexValues,
               intake: Intake | None = None) -> _Placed:
        relative = "/".join((
            # Two shard digits ("." as "0": a UID ending in ".5" would name a hidden folder).
            values.study_instance_uid[-2:].replace(".", "0").rjust(2, "0"),
            values.study_instance_uid,
            values.series_instance_uid,
            f"{values.sop_instance_uid}.{secrets.token_hex(3)}.dcm"))
        target = self.root / relative
        renamed = move_into_place(arrival.path, target, move=arrival.disposable)
        synced = self._syncer.placed(target, intake, renamed=renamed)
        try:
            digest = intake.digest.result() if intake is not None else sha256_of(target)
            return _Placed(relative, target.stat().st_size, digest, synced)
        except BaseException:
            remove_file(target)
            raise

    # -- the index ---------------------------------------------------------------------------

    def _index_batch(self, jobs: Sequence[_IndexJob]) -> list[_Indexed | BaseException]:
        """One transaction for the objects that arrived together, each in a savepoint so one
        refused object does not fail the others; committed once. A batch of one (every
        object while a single association stores) needs no savepoint: its failure rolls the
        whole transaction back."""
        if len(jobs) == 1:
            job = jobs[0]
            return [self._index_with_retry(job.values, job.placed, job.codec, job.calling_ae)]
        outcomes: list[_Indexed | BaseException | None] = []
        with self._writer, self.engine.begin() as conn:
            for job in jobs:
                try:
                    with conn.begin_nested():
                        outcomes.append(self._index(conn, job.values, job.placed, job.codec,
                                                    job.calling_ae))
                        # The file is durable at its name before its rows can be.
                        job.placed.synced.wait()
                except IntegrityError:
                    outcomes.append(None)  # raced another process: run alone below
                except (BridgeError, DataError, OSError) as exc:  # this object's own
                    outcomes.append(exc)
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
                    placed.synced.wait()  # the file is durable at its name before its rows
                    return indexed
            except IntegrityError:
                if attempt == _ATTEMPTS - 1:
                    raise
        raise AssertionError("unreachable")

    def _index(self, conn: Connection, values: IndexValues, placed: _Placed,
               codec: str | None, calling_ae: str) -> tuple[Stored, str | None]:
        """The index rows for one object; also the path of a file it replaced."""
        now = utcnow()
        study = conn.execute(_KNOWN_STUDY, {
            "uid": values.study_instance_uid, "series_uid": values.series_instance_uid,
            "sop_uid": values.sop_instance_uid}).first()
        old: _Old | None
        known_series: tuple[int, int] | None = None
        if study is None:  # a new study: the object may still be stored in another one
            found = conn.execute(_INSTANCE_BY_UID, {"uid": values.sop_instance_uid}).first()
            old = None if found is None else _Old(found.id, found.path, found.size,
                                                  found.study_id)
        else:
            old = None if study.old_id is None else _Old(
                study.old_id, study.old_path, study.old_size, study.old_study_id)
            if study.series_id is not None:
                known_series = (study.series_id, study.series_study_id)
        policy = self.settings.store_duplicate_policy
        if old is not None and policy != "replace":
            if policy == "reject":
                raise DuplicateInstance("SOP Instance UID already stored",
                                        location="SOPInstanceUID")
            reconciliation = study.reconciliation if (
                study is not None and study.id == old.study_id) else conn.execute(
                select(S.c.reconciliation).where(S.c.id == old.study_id)).scalar_one()
            return Stored(int(old.study_id), int(old.id), values.sop_instance_uid,
                          "duplicate", reconciliation), None
        if study is None:
            study_id, reconciliation, modalities, state = self._new_study(conn, values, now,
                                                                          calling_ae)
        else:
            study_id, reconciliation, modalities, state = (
                study.id, study.reconciliation, study.modalities, study.state)
            if _other_patient(values, study.source_patient_id, study.source_issuer):
                reconciliation = self._patient_conflict(conn, study_id)
        series_id, new_series = (
            self._series(conn, study_id, values) if study is None or known_series is None
            else (self._known_series(study_id, *known_series), False))
        file_values = {"path": placed.relative, "size": placed.size, "sha256": placed.sha256,
                       "transfer_syntax_uid": values.transfer_syntax_uid,
                       "source_charset": codec, "calling_ae": calling_ae[:16],
                       # A replaced instance's new file is online again.
                       "received_at": now, "online_removed_at": None}
        replaced_path: str | None = None
        outcome: Literal["stored", "duplicate", "replaced"]
        if old is not None:  # the replace policy
            outcome = self._replace(conn, old, values, file_values)
            instance_id, counted = int(old.id), 0
            replaced_path = str(old.path)
        else:
            outcome, counted = "stored", 1
        counts = {"study": study_id, "counted": counted, "now": now,
                  "delta": placed.size - (old.size if old is not None else 0)}
        if old is None:
            new_row = {"series_id": series_id, "study_id": study_id,
                       "sop_instance_uid": values.sop_instance_uid,
                       "sop_class_uid": values.sop_class_uid,
                       "instance_number": values.instance_number, **file_values}
            if self._one_statement_insert:
                instance_id = conn.execute(_NEW_INSTANCE_COUNTED, {
                    **{f"new_{name}": value for name, value in new_row.items()}, **counts,
                    "series": series_id}).scalar_one()
            else:
                instance_id = conn.execute(_INSERT_INSTANCE, new_row).inserted_primary_key[0]  # type: ignore[index]
                conn.execute(_COUNT_SERIES_INSTANCE, {"series": series_id})
                conn.execute(_COUNT_STUDY_INSTANCE, counts)
        else:
            conn.execute(_COUNT_STUDY_INSTANCE, counts)
        self._touch_study(conn, study, study_id, values, new_series=new_series,
                          modalities=modalities, state=state, now=now)
        stored = Stored(study_id, instance_id, values.sop_instance_uid, outcome, reconciliation)
        return stored, replaced_path

    @staticmethod
    def _touch_study(conn: Connection, study: Any, study_id: int, values: IndexValues, *,
                     new_series: bool, modalities: str, state: str, now: datetime) -> None:
        """What a new object changes on its study row besides the counts (rarely anything:
        a new series, a late object after migration or cleanup, a re-opened study)."""
        study_update: dict[str, object] = {}
        if new_series:
            study_update["num_series"] = S.c.num_series + 1
            if values.modality and values.modality not in modalities.split("\\"):
                study_update["modalities"] = "\\".join(
                    m for m in (*modalities.split("\\"), values.modality) if m)[:64]
        if study is not None and (study.longterm_at is not None
                                  or study.online_removed_at is not None):
            # A late (or replacing) object: the study is no longer whole in the long-term
            # tier (the migration copies it again) nor wholly removed from the online one.
            study_update.update(longterm_at=None, online_removed_at=None)
        if state == STABLE:  # a late object re-opens the study
            study_update.update(state=RECEIVING, stable_at=None)
            conn.execute(E.insert().values(study_id=study_id, kind="reopened", details={},
                                           created_at=now))
        if study_update:
            conn.execute(update(S).where(S.c.id == study_id).values(**study_update))

    def _new_study(self, conn: Connection, values: IndexValues, now: datetime,
                   calling_ae: str) -> tuple[int, str, str, str]:
        placed = self._placement(conn, values, calling_ae)
        study_id = conn.execute(S.insert().values(
            study_instance_uid=values.study_instance_uid,
            patient_id=placed.patient_id, order_id=placed.order_id,
            source_patient_id=values.patient_id, source_issuer=values.issuer,
            source_patient_name=values.patient_name,
            source_name_search=values.patient_name.casefold()[:320],  # ß → ss grows
            source_birth_date=values.birth_date, source_sex=values.sex,
            accession=values.accession, study_date=values.study_date,
            study_time=values.study_time, study_id=values.study_id,
            description=values.study_description,
            referring_physician=values.referring_physician,
            modalities="", num_series=0, num_instances=0, size_bytes=0, state=RECEIVING,
            reconciliation=placed.reconciliation, match_key=placed.match_key,
            queue_reason=placed.queue_reason, queue_kind=placed.queue_kind,
            candidate_patient_id=placed.candidate_patient_id,
            last_received_at=now, created_at=now, updated_at=now,
        )).inserted_primary_key[0]  # type: ignore[index]
        return int(study_id), placed.reconciliation, "", RECEIVING

    def _placement(self, conn: Connection, values: IndexValues, calling_ae: str) -> _Placement:
        """Where a new study belongs: an order, else (an unscheduled exam) a known patient
        whose demographics the objects do not contradict, else the queue, with the kind."""
        peer = self.settings.peer(calling_ae) if calling_ae else None
        issuer = (peer.issuer_of_patient_id if peer is not None else None) or ""
        found = find_order(conn, values, self.policy,
                           window_days=self.settings.reconcile_date_window_days,
                           default_issuer=issuer)
        if isinstance(found, Match):
            return _Placement(MATCHED, found.patient_id, found.order_id, found.key)
        patient = find_patient(conn, values, self.policy, default_issuer=issuer)
        if isinstance(patient, PatientLink) and self.policy.unordered == "link":
            return _Placement(LINKED, patient.patient_id, None, "patient_id")
        if self.settings.reconcile_unmatched == "reject":
            raise UnmatchedStudy(
                "no MIS order matches the study: "
                + (patient.reason if isinstance(patient, PatientMismatch) else found.reason),
                location="PatientID" if isinstance(patient, PatientMismatch)
                else "AccessionNumber")
        if isinstance(patient, PatientMismatch):
            return _Placement(QUEUED, None, None, None, patient.reason, PATIENT_MISMATCH,
                              patient.patient_id)
        if isinstance(patient, PatientLink):  # the table or a setting says: review them all
            return _Placement(QUEUED, None, None, None,
                              "patient known, no order (unordered studies are queued)",
                              UNMATCHED, patient.patient_id)
        return _Placement(QUEUED, None, None, None, found.reason, UNMATCHED)

    def _patient_conflict(self, conn: Connection, study_id: int) -> str:
        if self.settings.reconcile_patient_conflict == "reject":
            raise PatientConflict(
                "the study holds objects of another patient; object refused",
                location="PatientID")
        conn.execute(update(S).where(S.c.id == study_id).values(
            reconciliation=CONFLICT, queue_reason="objects of the study name two different "
            "patients", queue_kind=CONFLICT, updated_at=utcnow()))
        conn.execute(E.insert().values(study_id=study_id, kind="patient_conflict", details={},
                                       created_at=utcnow()))
        return CONFLICT

    def _series(self, conn: Connection, study_id: int, values: IndexValues) -> tuple[int, bool]:
        row = conn.execute(_SERIES_BY_UID, {"uid": values.series_instance_uid}).first()
        if row is not None:
            return self._known_series(study_id, row.id, row.study_id), False
        series_id = conn.execute(SE.insert().values(
            study_id=study_id, series_instance_uid=values.series_instance_uid,
            modality=values.modality, series_number=values.series_number,
            description=values.series_description, body_part=values.body_part,
            num_instances=0, created_at=utcnow())).inserted_primary_key[0]  # type: ignore[index]
        return int(series_id), True

    @staticmethod
    def _known_series(study_id: int, series_id: int, series_study_id: int) -> int:
        if series_study_id != study_id:
            raise Conflict("the series belongs to another study", location="SeriesInstanceUID")
        return int(series_id)

    def _replace(self, conn: Connection, old: _Old, values: IndexValues,
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
