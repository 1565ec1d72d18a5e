"""Forwarding reconciled studies to external archives (Orthanc, dcm4chee, Conquest) by C-STORE.

- **Rules** (``settings.forward_rules``) pick destinations by modality, calling AE, or all.
- :func:`enqueue_forwards` is called in the transaction that makes a study stable, and again
  when a waiting study is reconciled: one job per destination in the ``forward`` queue,
  keyed by study and destination, so a study that changes again before its job ran is sent
  once, with its latest state.
- :class:`ForwardHandler` runs a job: it sends every instance of the study with the current
  MIS values applied (:mod:`bridge.services.egress.objects`), remembers which instances the
  peer took
  (a retry sends only the rest), and records a ``forwarded`` study event.

A peer that is down, times out, aborts or answers a failure status that can pass raises
:class:`~bridge.errors.Transient` (retried with back-off); an unknown destination, a refused
association, or statuses that will never pass end in the failed list at once.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE
from pynetdicom.association import Association
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from bridge.config.settings import DicomPeer, ForwardRule, Settings
from bridge.errors import Conflict, NotFound, Rejected, Transient
from bridge.jobs import queue
from bridge.jobs.queue import ClaimedJob, RetryPolicy
from bridge.jobs.worker import Interrupted
from bridge.mapping.dicom.patch import SubjectValues
from bridge.services.egress.objects import egress_dataset, load_subjects
from bridge.services.egress.transcode import fit_to_contexts
from bridge.storage.reader import reader_for
from bridge.store.archive_models import (
    RECONCILED,
    STABLE,
    Instance,
    Study,
    StudyEvent,
)
from bridge.store.audit import append_audit
from bridge.store.db import read_session

log = logging.getLogger("bridge.forwarding")

FORWARD_QUEUE: Final = "forward"
FORWARDED_EVENT: Final = "forwarded"
#: A-ASSOCIATE-RQ holds at most 128 presentation contexts (one per SOP class here).
MAX_CONTEXTS: Final = 128
#: Progress is saved after this many stored instances, so a crash does not resend them all.
CHECKPOINT_EVERY: Final = 50


# ----------------------------------------------------------------------------- rules


def matching_destinations(rules: Iterable[ForwardRule], *, modalities: Iterable[str],
                          calling_aes: Iterable[str]) -> list[str]:
    """Destinations of the rules a study matches, each once, in rule order.

    A rule matches when each criterion it sets is met: its ``modality`` is one of the
    study's modalities, its ``calling_ae`` sent at least one of the study's objects. A rule
    with neither matches every study. Codes and AE titles compare without padding; modality
    codes ignore case (CS values are upper case, but configuration is typed by people).
    """
    study_modalities = {m.strip().upper() for m in modalities if m.strip()}
    study_aes = {ae.strip() for ae in calling_aes if ae.strip()}
    destinations: list[str] = []
    for rule in rules:
        if rule.modality and rule.modality.strip().upper() not in study_modalities:
            continue
        if rule.calling_ae and rule.calling_ae.strip() not in study_aes:
            continue
        if rule.destination not in destinations:
            destinations.append(rule.destination)
    return destinations


def forward_key(study_id: int, destination: str) -> str:
    return f"{study_id}:{destination}"


def retry_policy(settings: Settings) -> RetryPolicy:
    """The ``forward`` queue's retry policy from the settings (for the job worker)."""
    return RetryPolicy(max_attempts=settings.forward_max_attempts,
                       base_seconds=settings.forward_retry_base_seconds,
                       max_seconds=max(settings.forward_retry_max_seconds,
                                       settings.forward_retry_base_seconds))


def enqueue_forwards(session: Session, *, study_id: int, settings: Settings) -> int:
    """Queue the forwards a stable, reconciled study needs, in the caller's transaction;
    returns how many destinations were queued (0: no rule, not reconciled, or not stable).

    Unreconciled studies are not forwarded (the MIS values are not known yet): call this
    again when the study is matched or assigned.
    """
    if not settings.forward_rules:
        return 0
    study = session.execute(
        select(Study.reconciliation, Study.state, Study.modalities).where(Study.id == study_id)
    ).one_or_none()
    if study is None or study.reconciliation not in RECONCILED or study.state != STABLE:
        return 0
    calling_aes = session.execute(
        select(Instance.calling_ae).where(Instance.study_id == study_id).distinct()
    ).scalars().all()
    destinations = matching_destinations(
        settings.forward_rules, modalities=(study.modalities or "").split("\\"),
        calling_aes=calling_aes)
    for destination in destinations:
        queue.enqueue(session, queue=FORWARD_QUEUE, dedup_key=forward_key(study_id, destination),
                      payload={"study_id": study_id, "destination": destination})
    if destinations:
        log.info("study %s queued for forwarding to %s", study_id, ", ".join(destinations))
    return len(destinations)


def forward_study(session: Session, *, study_uid: str, destination: str, settings: Settings,
                  actor: str) -> int:
    """An operator's forward of one study to one peer, in the caller's transaction (with its
    audit record); returns the job's id. The study must be reconciled (a forward carries the
    MIS values); one already waiting for that peer is the same job (sent once, latest state).
    An unknown destination or a study that cannot go yet is refused before anything is queued.
    """
    peer = settings.peer(destination)
    if peer is None or not peer.host or not peer.port or peer.role == "scu":
        raise Rejected(f"{destination!r} is not a DICOM peer the bridge can send to (it needs a "
                       "host, a port and role scp or both)", location="destination")
    study = session.execute(select(Study.id, Study.reconciliation).where(
        Study.study_instance_uid == study_uid)).one_or_none()
    if study is None:
        raise NotFound("no such study", location="study_instance_uid")
    if study.reconciliation not in RECONCILED:
        raise Conflict(f"the study is {study.reconciliation}: assign it to an order or a "
                       "patient first (a forward carries the MIS values)",
                       location="study_instance_uid")
    job_id = queue.enqueue(session, queue=FORWARD_QUEUE,
                           dedup_key=forward_key(int(study.id), peer.ae_title),
                           payload={"study_id": int(study.id), "destination": peer.ae_title})
    append_audit(session.connection(), actor=actor, action="forward", entity="study",
                 entity_id=study_uid, details={"destination": peer.ae_title, "job": job_id})
    return job_id


# ----------------------------------------------------------------------------- the handler

#: Statuses a later attempt may get past: out of resources (A7xx), resource limitation
#: (0213), "cannot understand" (Cxxx: several archives use it for their own passing faults).
#: The rest are about the object or the configuration and will not change by waiting.
_PERMANENT_STATUSES: Final = frozenset({
    0x0122,  # SOP class not supported
    0x0124,  # refused: not authorised
    0x0111,  # duplicate SOP instance (an archive set to refuse duplicates)
})


def _is_success(status: int) -> bool:
    return status == 0x0000 or status in (0x0001, 0x0107, 0x0116) or 0xB000 <= status <= 0xBFFF


def _is_permanent(status: int) -> bool:
    return status in _PERMANENT_STATUSES or 0xA900 <= status <= 0xA9FF


@dataclass(slots=True)
class _Progress:
    """Instances the peer has taken (across attempts) and what went wrong in this one."""

    sent: list[int]
    transient: list[str] = field(default_factory=list)
    permanent: list[str] = field(default_factory=list)
    unsaved: int = 0


class ForwardHandler:
    """Sends one study to one destination per job (``payload: study_id, destination``)."""

    def __init__(self, settings: Settings, session_factory: sessionmaker[Session], *,
                 connection_timeout: float = 10.0, dimse_timeout: float = 60.0) -> None:
        self.settings = settings
        self.session_factory = session_factory
        self.connection_timeout = connection_timeout
        self.dimse_timeout = dimse_timeout

    def __call__(self, job: ClaimedJob, stopping: threading.Event) -> None:
        study_id, destination = _parse_payload(job.payload)
        peer = self._peer(destination)
        progress = _Progress(sent=[int(i) for i in job.payload.get("sent", [])])
        already = set(progress.sent)
        with read_session(self.session_factory) as session:
            study = session.get(Study, study_id)
            if study is None:
                raise NotFound(f"study {study_id} no longer exists", location="study_id")
            if study.reconciliation not in RECONCILED:
                raise Conflict(f"study {study_id} is {study.reconciliation}, not reconciled; "
                               "it is queued again when it is", location="reconciliation")
            instances = session.execute(
                select(Instance).where(Instance.study_id == study_id).order_by(Instance.id)
            ).scalars().all()
            subject = load_subjects(session, [study_id]).get(study_id)
            session.expunge_all()
        if subject is None:
            raise Conflict(f"study {study_id} has no MIS patient; only reconciled studies are "
                           "forwarded", location="patient_id")
        todo = [instance for instance in instances if instance.id not in already]
        if todo:
            self._send(job, peer, todo, subject, progress, stopping)
        total = len(set(progress.sent) & {instance.id for instance in instances})
        with self.session_factory() as session, session.begin():
            session.add(StudyEvent(study_id=study_id, kind=FORWARDED_EVENT, details={
                "destination": destination, "count": total, "sent_now": len(todo),
                "job_id": job.id, "attempt": job.attempt}))
        log.info("study %s forwarded to %s: %s instances", study_id, destination, total)

    # ------------------------------------------------------------------ helpers

    def _peer(self, destination: str) -> DicomPeer:
        peer = self.settings.peer(destination)
        if peer is None or not peer.host or not peer.port or peer.role == "scu":
            raise NotFound(f"forward destination {destination!r} is not a DICOM peer with a "
                           "host, a port and role scp or both", location="destination")
        return peer

    def _send(self, job: ClaimedJob, peer: DicomPeer, todo: Sequence[Instance],
              subject: SubjectValues, progress: _Progress, stopping: threading.Event) -> None:
        try:
            for group in _context_groups(todo):
                self._send_group(job, peer, group, subject, progress, stopping)
        finally:
            if progress.unsaved:
                self._checkpoint(job, progress)
        if progress.transient:
            raise Transient(f"{destination_of(job)}: {len(progress.transient)} instance(s) "
                            f"not stored: {progress.transient[0]}")
        if progress.permanent:
            raise Rejected(f"{destination_of(job)}: {len(progress.permanent)} instance(s) "
                           f"refused: {progress.permanent[0]}")

    def _send_group(self, job: ClaimedJob, peer: DicomPeer, group: Sequence[Instance],
                    subject: SubjectValues, progress: _Progress, stopping: threading.Event) -> None:
        assoc = self._associate(peer, group)
        try:
            for instance in group:
                if stopping.is_set():
                    raise Interrupted
                self._store_one(assoc, peer, instance, subject, progress)
                if progress.unsaved >= CHECKPOINT_EVERY:
                    self._checkpoint(job, progress)
        finally:
            if assoc.is_established:
                assoc.release()

    def _associate(self, peer: DicomPeer, group: Sequence[Instance]) -> Association:
        ae = AE(ae_title=self.settings.ae_title)
        ae.connection_timeout = self.connection_timeout
        ae.acse_timeout = self.connection_timeout * 3
        ae.dimse_timeout = self.dimse_timeout
        ae.network_timeout = self.dimse_timeout
        for sop_class, syntaxes in _contexts(group):
            ae.add_requested_context(sop_class, syntaxes)
        assert peer.host is not None and peer.port is not None
        assoc = ae.associate(peer.host, peer.port, ae_title=peer.ae_title)
        if assoc.is_established:
            return assoc
        where = f"{peer.ae_title} at {peer.host}:{peer.port}"
        answer = assoc.acceptor.primitive
        if assoc.is_rejected and answer is not None and answer.result == 0x01:
            # Rejected-permanent (e.g. our AE title is not known there): waiting will not
            # help; an operator fixes the peer and requeues.
            raise Rejected(f"{where} rejected the association permanently "
                           f"({answer.reason_str})")
        if assoc.rejected_contexts and not assoc.accepted_contexts:
            raise Rejected(f"{where} accepts none of the SOP classes of this study")
        state = "rejected the association for now" if assoc.is_rejected else \
            "unreachable, or the association was aborted"
        raise Transient(f"{where}: {state}")

    def _store_one(self, assoc: Association, peer: DicomPeer, instance: Instance,
                   subject: SubjectValues, progress: _Progress) -> None:
        try:
            # The nearest intact copy: a study held only in long-term storage is fetched
            # (NoIntactCopy is a FileNotFoundError, an unreachable store an OSError).
            local = reader_for(self.settings, self.session_factory).local_path(instance)
            dataset = egress_dataset(self.settings.archive_root, instance, subject,
                                     local=local)
        except FileNotFoundError:
            progress.permanent.append(f"instance {instance.id}: its file is missing")
            return
        except OSError as exc:  # a storage mount away for a while: worth another attempt
            progress.transient.append(f"instance {instance.id}: file unreadable "
                                      f"({type(exc).__name__})")
            return
        except Exception as exc:  # a file pydicom cannot read will not get better
            progress.permanent.append(f"instance {instance.id}: cannot be read "
                                      f"({type(exc).__name__})")
            return
        try:
            # Decompressed when the peer refused the stored (compressed) syntax.
            status = assoc.send_c_store(fit_to_contexts(dataset, assoc.accepted_contexts))
        except ValueError as exc:  # no accepted context for this SOP class / syntax
            progress.permanent.append(f"instance {instance.id}: {exc}")
            return
        if not assoc.is_established:
            progress.transient.append(f"association with {peer.ae_title} ended")
            raise _AssociationLost
        code = int(getattr(status, "Status", -1)) if status else -1
        if code >= 0 and _is_success(code):
            progress.sent.append(instance.id)
            progress.unsaved += 1
        elif code < 0:
            progress.transient.append(f"instance {instance.id}: no answer")
        elif _is_permanent(code):
            progress.permanent.append(f"instance {instance.id}: status 0x{code:04X}")
        else:
            progress.transient.append(f"instance {instance.id}: status 0x{code:04X}")

    def _checkpoint(self, job: ClaimedJob, progress: _Progress) -> None:
        with self.session_factory() as session, session.begin():
            queue.checkpoint(session, job, {"sent": sorted(set(progress.sent))})
        progress.unsaved = 0


class _AssociationLost(Transient):
    def __init__(self) -> None:
        super().__init__("the association ended during the transfer")


def destination_of(job: ClaimedJob) -> str:
    return str(job.payload.get("destination", "?"))


def _parse_payload(payload: dict[str, Any]) -> tuple[int, str]:
    study_id, destination = payload.get("study_id"), payload.get("destination")
    if not isinstance(study_id, int) or not isinstance(destination, str):
        raise Rejected("forward job payload needs study_id (int) and destination (str)")
    return study_id, destination


def _contexts(group: Sequence[Instance]) -> list[tuple[str, list[str]]]:
    """One presentation context per SOP class and stored transfer syntax: the stored syntax
    first, then explicit and implicit little endian (what every SCP accepts; pynetdicom
    converts uncompressed objects between them, and a peer that takes the stored syntax gets
    the file's own encoding; a compressed object is decompressed for a peer that chose an
    uncompressed one)."""
    contexts: list[tuple[str, list[str]]] = []
    for sop_class, stored in _context_keys(group):
        syntaxes = [stored]
        syntaxes += [ts for ts in (ExplicitVRLittleEndian, ImplicitVRLittleEndian)
                     if ts != stored]
        contexts.append((sop_class, syntaxes))
    return contexts


def _context_keys(group: Sequence[Instance]) -> list[tuple[str, str]]:
    keys: dict[tuple[str, str], None] = {}
    for instance in group:
        keys[(instance.sop_class_uid, instance.transfer_syntax_uid)] = None
    return list(keys)


def _context_groups(instances: Sequence[Instance]) -> list[list[Instance]]:
    """Instances split so that each association proposes at most 128 contexts."""
    groups: list[list[Instance]] = []
    keys: list[set[tuple[str, str]]] = []
    for instance in instances:
        key = (instance.sop_class_uid, instance.transfer_syntax_uid)
        for group, seen in zip(groups, keys, strict=True):
            if key in seen or len(seen) < MAX_CONTEXTS:
                group.append(instance)
                seen.add(key)
                break
        else:
            groups.append([instance])
            keys.append({key})
    return groups
