"""Lossless compression of stored studies, by the rules of ``mappings/storage/compression.yaml``
(:mod:`bridge.mapping.compression.rules`).

When it runs:

- ``when: ingest`` rules: :meth:`Compressor.study_hook` runs in the transaction that marks a
  study stable and queues one durable job (:data:`COMPRESS_QUEUE`, keyed by study), due when
  its earliest matching object is ``min_age_days`` old; the "jobs" worker runs
  :meth:`Compressor.handle_job`, which queues itself again for objects not old enough yet.
- ``when: migration`` rules: the long-term migration calls
  :meth:`Compressor.compress_study_for_migration` before it copies a study (``before_copy``).

Each object is compressed on its own (:mod:`bridge.services.compression.replace`: verified bit
for bit, replaced safely, its original removed after a grace period). Objects that are not
uncompressed 8/16-bit images are left as they are, with the reason in the log and in the
study's ``compressed`` event; no outcome of one object fails the study. Objects that already
have a long-term copy are not touched (the tiers keep the same bytes), nor are those
compressed already or whose online file was cleaned up.

The ratio (original size / stored size) is recorded per instance (``instances.original_size``)
and reported in the log and in Prometheus (``bridge_compression_*``); no patient data in
either.
"""

from __future__ import annotations

import logging
import threading
import weakref
from collections import Counter as Tally
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import ClassVar, Final

from prometheus_client import CollectorRegistry, Counter, Histogram
from sqlalchemy import exists, func, select
from sqlalchemy.orm import Session, sessionmaker

from bridge.config.settings import Settings
from bridge.errors import Rejected, Transient
from bridge.jobs import queue
from bridge.jobs.queue import ClaimedJob, as_utc
from bridge.jobs.worker import Handler, Interrupted
from bridge.mapping.compression.rules import CompressionRules, When, load_compression_rules
from bridge.services.archive.stability import StudyHook
from bridge.services.compression.replace import (
    ORIGINALS_QUEUE,
    Candidate,
    commit_replacement,
    prepare_replacement,
    remove_unreferenced,
)
from bridge.storage.codecs import NATIVE_SOURCES, Unsupported
from bridge.store.archive_models import Instance, Series, StudyEvent
from bridge.store.models import table_of, utcnow
from bridge.store.storage_models import InstanceCopy

log = logging.getLogger("bridge.compression")

COMPRESS_QUEUE: Final = "compress"
COMPRESSED_EVENT: Final = "compressed"
I = table_of(Instance)  # noqa: E741
SE = table_of(Series)
C = table_of(InstanceCopy)


def rules_path(settings: Settings) -> Path:
    """``BRIDGE_COMPRESSION_RULES``, else the shipped table under the mappings folder."""
    return settings.compression_rules or settings.mappings_dir / "storage" / "compression.yaml"


# ----------------------------------------------------------------------------- metrics


class CompressionMetrics:
    """Prometheus series, one set per registry (several compressors may share one)."""

    _by_registry: ClassVar[weakref.WeakKeyDictionary[CollectorRegistry, CompressionMetrics]] \
        = weakref.WeakKeyDictionary()
    _guard: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self, registry: CollectorRegistry) -> None:
        self.instances = Counter(
            "bridge_compression_instances", "Objects considered for lossless compression, "
            "by codec and outcome (compressed, skipped, failed).", ["codec", "outcome"],
            registry=registry)
        self.original_bytes = Counter(
            "bridge_compression_original_bytes", "Bytes of the originals of compressed "
            "objects, by codec.", ["codec"], registry=registry)
        self.stored_bytes = Counter(
            "bridge_compression_stored_bytes", "Bytes of the compressed files, by codec.",
            ["codec"], registry=registry)
        self.ratio = Histogram(
            "bridge_compression_ratio", "Original size / compressed size per object.",
            ["codec"], buckets=(1.0, 1.25, 1.5, 2.0, 2.5, 3.0, 4.0, 6.0, 10.0),
            registry=registry)

    @classmethod
    def of(cls, registry: CollectorRegistry | None) -> CompressionMetrics:
        if registry is None:
            return cls(CollectorRegistry())
        with cls._guard:
            metrics = cls._by_registry.get(registry)
            if metrics is None:
                metrics = cls._by_registry[registry] = cls(registry)
            return metrics


# ----------------------------------------------------------------------------- outcome


@dataclass(slots=True)
class StudyOutcome:
    """What one run did to one study (the ``compressed`` event's details)."""

    compressed: int = 0
    original_bytes: int = 0
    stored_bytes: int = 0
    codecs: Tally[str] = field(default_factory=Tally)
    #: reason → objects left as they are for it.
    skipped: Tally[str] = field(default_factory=Tally)
    #: Objects the disk failed on (worth another attempt).
    failed: int = 0
    #: The earliest moment an object of the study becomes old enough (None: none waits).
    next_due: datetime | None = None

    @property
    def ratio(self) -> float | None:
        return self.original_bytes / self.stored_bytes if self.stored_bytes else None

    def details(self, when: str) -> dict[str, object]:
        return {"when": when, "instances": self.compressed, "codecs": dict(self.codecs),
                "original_bytes": self.original_bytes, "bytes": self.stored_bytes,
                "ratio": round(self.ratio, 3) if self.ratio else None,
                "skipped": dict(self.skipped), "failed": self.failed}


@dataclass(frozen=True, slots=True)
class _Row:
    candidate: Candidate
    modality: str
    sop_class_uid: str
    received_at: datetime
    compressed: bool
    has_copy: bool


# ----------------------------------------------------------------------------- the compressor


class Compressor:
    """Applies the rules to studies; built once by the composition root."""

    def __init__(self, settings: Settings, session_factory: sessionmaker[Session], *,
                 rules: CompressionRules | None = None,
                 metrics_registry: CollectorRegistry | None = None) -> None:
        self.settings = settings
        self.sessions = session_factory
        self.rules = rules if rules is not None else load_compression_rules(
            rules_path(settings))
        self.metrics = CompressionMetrics.of(metrics_registry)
        self.enabled = settings.compression_enabled

    # -- ingest: the hook and the job ----------------------------------------------------

    def study_hook(self, session: Session, study_id: int) -> None:
        """A :data:`~bridge.services.archive.stability.StudyHook`: queue the study's ingest
        compression when a rule applies to one of its objects, due when the first is old
        enough. Runs in the caller's transaction."""
        if not self.enabled or not self.rules.has_ingest_rules:
            return
        kinds = session.execute(
            select(SE.c.modality, I.c.sop_class_uid, func.min(I.c.received_at))
            .join(SE, SE.c.id == I.c.series_id)
            .where(I.c.study_id == study_id, I.c.compressed_at.is_(None),
                   I.c.online_removed_at.is_(None),
                   I.c.transfer_syntax_uid.in_(sorted(NATIVE_SOURCES)))
            .group_by(SE.c.modality, I.c.sop_class_uid)).all()
        due = [rule.due_at(as_utc(first)) for modality, sop_class, first in kinds
               if (rule := self.rules.applicable(modality or "", sop_class, "ingest"))]
        if due:
            self._enqueue(session, study_id, min(due))

    def _enqueue(self, session: Session, study_id: int, due: datetime) -> None:
        now = utcnow()
        queue.enqueue(session, queue=COMPRESS_QUEUE, dedup_key=str(study_id),
                      payload={"study_id": study_id},
                      delay=max(0.0, (due - now).total_seconds()), now=now)

    def handle_job(self, job: ClaimedJob, stopping: threading.Event) -> None:
        """The ``compress`` queue's handler (payload ``study_id``)."""
        study_id = job.payload.get("study_id")
        if not isinstance(study_id, int):
            raise Rejected("compress job payload needs study_id (int)")
        with self.sessions() as session:
            outcome = self.compress_study(session, study_id, "ingest", stopping=stopping)
            if outcome.next_due is not None:  # objects not old enough yet: come back then
                self._enqueue(session, study_id, outcome.next_due)
                session.commit()
        if outcome.failed:
            raise Transient(f"study {study_id}: {outcome.failed} object(s) could not be "
                            "compressed for a disk error; tried again later")

    def handle_originals(self, job: ClaimedJob, stopping: threading.Event) -> None:
        """The ``compression-originals`` queue's handler: remove replaced originals."""
        paths = [str(p) for p in job.payload.get("paths", []) if isinstance(p, str)]
        with self.sessions() as session:
            removed = remove_unreferenced(session, self.settings.archive_root, paths)
        log.debug("removed %d replaced original(s)", len(removed))

    # -- migration ----------------------------------------------------------------------

    def compress_study_for_migration(self, session: Session, study_id: int) -> None:
        """Compress what the rules say before the long-term copy (a ``before_copy`` hook of
        the migration, ``Callable[[Session, int], None]``).

        ``session`` (the caller's) is not used: each replacement must be committed before
        its original may go, so the work runs in short transactions of its own, and the
        caller's transaction, never started, holds no lock meanwhile. Never raises for an
        object: a disk error leaves that object uncompressed (it is copied as it is)."""
        if not self.enabled:
            return
        with self.sessions() as own:
            outcome = self.compress_study(own, study_id, "migration")
        if outcome.failed:
            log.warning("study %s: %d object(s) not compressed before migration for a disk "
                        "error; they are copied as they are", study_id, outcome.failed)

    # -- the work -----------------------------------------------------------------------

    def compress_study(self, session: Session, study_id: int, when: When, *,
                       stopping: threading.Event | None = None,
                       now: datetime | None = None) -> StudyOutcome:
        """Compress the study's objects that the rules give to ``when`` and that are old
        enough. ``session`` is committed per object; nothing is held while encoding."""
        now = now or utcnow()
        rows = self._rows(session, study_id)
        session.commit()  # end the read: encoding takes long, and holds no lock
        outcome = StudyOutcome()
        for row in rows:
            if stopping is not None and stopping.is_set():
                raise Interrupted
            rule = self.rules.applicable(row.modality, row.sop_class_uid, when)
            if rule is None or rule.transfer_syntax is None or row.compressed:
                continue
            if row.has_copy:
                outcome.skipped["has a long-term copy already"] += 1
                continue
            if row.candidate.transfer_syntax_uid not in NATIVE_SOURCES:
                outcome.skipped[f"stored as {row.candidate.transfer_syntax_uid}"] += 1
                continue
            due = rule.due_at(row.received_at)
            if due > now:
                if when == "ingest":
                    outcome.next_due = min(due, outcome.next_due or due)
                else:
                    outcome.skipped[f"younger than rule {rule.name}'s min_age_days"] += 1
                continue
            self._compress_one(session, row, rule.codec, now, outcome)
        self._record(session, study_id, when, outcome)
        return outcome

    def _compress_one(self, session: Session, row: _Row, codec: str, now: datetime,
                      outcome: StudyOutcome) -> None:
        candidate, root = row.candidate, self.settings.archive_root
        try:
            replacement = prepare_replacement(
                root, candidate, codec, max_pixel_bytes=self.settings.compression_max_pixel_bytes)
        except Unsupported as exc:
            outcome.skipped[str(exc)] += 1
            self.metrics.instances.labels(codec, "skipped").inc()
            log.debug("instance %s left as it is: %s", candidate.instance_id, exc)
            return
        except FileNotFoundError:
            outcome.skipped["its online file is missing"] += 1
            self.metrics.instances.labels(codec, "skipped").inc()
            log.warning("instance %s: stored file missing, not compressed",
                        candidate.instance_id)
            return
        except OSError as exc:
            outcome.failed += 1
            self.metrics.instances.labels(codec, "failed").inc()
            log.warning("instance %s not compressed: %s", candidate.instance_id,
                        type(exc).__name__)
            return
        if not commit_replacement(session, root, candidate, replacement, now=now,
                                  keep_original_seconds=(
                                      self.settings.compression_keep_original_seconds)):
            outcome.skipped["changed while it was compressed"] += 1
            return
        outcome.compressed += 1
        outcome.codecs[codec] += 1
        outcome.original_bytes += candidate.size
        outcome.stored_bytes += replacement.size
        self.metrics.instances.labels(codec, "compressed").inc()
        self.metrics.original_bytes.labels(codec).inc(candidate.size)
        self.metrics.stored_bytes.labels(codec).inc(replacement.size)
        self.metrics.ratio.labels(codec).observe(candidate.size / max(replacement.size, 1))

    def _rows(self, session: Session, study_id: int) -> list[_Row]:
        copied = exists().where(C.c.instance_id == I.c.id)
        result = session.execute(
            select(I.c.id, I.c.sop_instance_uid, I.c.path, I.c.size, I.c.sha256,
                   I.c.transfer_syntax_uid, I.c.sop_class_uid, I.c.received_at,
                   I.c.compressed_at, SE.c.modality, copied.label("has_copy"))
            .join(SE, SE.c.id == I.c.series_id)
            .where(I.c.study_id == study_id, I.c.online_removed_at.is_(None))
            .order_by(I.c.id)).all()
        return [_Row(Candidate(r.id, study_id, r.sop_instance_uid, r.path, r.size, r.sha256,
                               r.transfer_syntax_uid),
                     r.modality or "", r.sop_class_uid, as_utc(r.received_at),
                     r.compressed_at is not None, bool(r.has_copy)) for r in result]

    def _record(self, session: Session, study_id: int, when: str,
                outcome: StudyOutcome) -> None:
        if not (outcome.compressed or outcome.skipped or outcome.failed):
            return
        session.add(StudyEvent(study_id=study_id, kind=COMPRESSED_EVENT,
                               details=outcome.details(when)))
        session.commit()
        ratio = f"{outcome.ratio:.2f}" if outcome.ratio else "-"
        log.info("study %s (%s): %d object(s) compressed, %d -> %d bytes, ratio %s; "
                 "%d left as they are%s", study_id, when, outcome.compressed,
                 outcome.original_bytes, outcome.stored_bytes, ratio,
                 sum(outcome.skipped.values()),
                 "".join(f"; {n}x {reason}" for reason, n in outcome.skipped.items()))


# ----------------------------------------------------------------------------- wiring


def wire_ingest(settings: Settings, sessions: sessionmaker[Session],
                metrics: CollectorRegistry, hooks: list[StudyHook],
                handlers: dict[str, Handler]) -> Compressor | None:
    """For :class:`bridge.app.background.Background`: add the stable-study hook and the two job
    handlers (run by the "jobs" worker); returns the compressor (its
    :meth:`~Compressor.compress_study_for_migration` is the migration's ``before_copy``
    hook), or None when compression is off."""
    if not settings.compression_enabled:
        return None
    compressor = Compressor(settings, sessions, metrics_registry=metrics)
    hooks.append(compressor.study_hook)
    handlers[COMPRESS_QUEUE] = compressor.handle_job
    handlers[ORIGINALS_QUEUE] = compressor.handle_originals
    return compressor
