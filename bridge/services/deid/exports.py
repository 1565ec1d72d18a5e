"""De-identified exports of stored studies, through the durable job queue.

:func:`start_export` (API, CLI, the auto rule) checks the destination, the caller's right to
send there and the master key, records the export with its wrapped data key and queues a
``deid_export`` job, in the caller's transaction. :class:`ExportHandler` runs it: batch by
batch, each object is de-identified, its key record committed, then the batch is sent and
marked sent; so no object is ever outside without its key at home. A destination that is
down raises :class:`~bridge.errors.Transient` (the job is retried with back-off and goes on
where it stopped); objects a destination refuses and objects held back for burned-in text
are listed on the export, and an export with refusals ends in the failed list.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from typing import Final

from sqlalchemy import delete, select
from sqlalchemy.orm import Session, sessionmaker

from bridge.config.deid_destinations import DeidDestination
from bridge.config.settings import Settings
from bridge.errors import BridgeError, Forbidden, NotFound, Rejected, Transient
from bridge.jobs import queue
from bridge.jobs.queue import ClaimedJob, RetryPolicy
from bridge.jobs.worker import Interrupted
from bridge.services.archive.stability import StudyHook
from bridge.services.deid import records
from bridge.services.deid.engine import Prepared, Recipe, prepare
from bridge.services.deid.keys import master_key
from bridge.services.deid.outbound import Outbound, open_outbound
from bridge.storage.reader import reader_for
from bridge.store.archive_models import RECONCILED, STABLE, Instance, Study
from bridge.store.audit import append_audit
from bridge.store.deid_models import DeidExport, DeidObject

log = logging.getLogger("bridge.deid")

DEID_QUEUE: Final = "deid_export"
#: Objects per batch: one association or request, one commit of their key records.
BATCH: Final = 16
ADMIN: Final = "admin"


def retry_policy(settings: Settings) -> RetryPolicy:
    return RetryPolicy(max_attempts=settings.deid_max_attempts, base_seconds=5.0,
                       max_seconds=600.0)


def destination_of(settings: Settings, name: str) -> DeidDestination:
    destination = settings.deid_destination(name)
    if destination is None:
        known = ", ".join(d.name for d in settings.deid_destinations) or "none configured"
        raise NotFound(f"no de-identification destination {name!r} (known: {known})",
                       location="destination")
    return destination


def may_export(destination: DeidDestination, roles: Sequence[str]) -> bool:
    return ADMIN in roles or any(role in destination.roles for role in roles)


def start_export(session: Session, settings: Settings, *, study_id: int, destination: str,
                 actor: str, roles: Sequence[str], source: str) -> DeidExport:
    """Queue one study's export; checks first, so a refusal writes nothing."""
    target = destination_of(settings, destination)
    if not may_export(target, roles):
        raise Forbidden(f"{actor} may not export to {destination} (roles allowed: "
                        f"{', '.join(target.roles)})", location="destination")
    study = session.get(Study, study_id)
    if study is None:
        raise NotFound(f"no study {study_id}", location="study")
    master = master_key(settings)
    records.destination_secret(session, target.name, master)  # a wrong master key stops here
    export = records.new_export(session, master, destination=target.name, source=source,
                                actor=actor, options=target.options, study_id=study_id)
    export.total = study.num_instances or 0
    export.job_id = queue.enqueue(session, queue=DEID_QUEUE, payload={"export_id": export.id},
                                  dedup_key=f"export:{export.id}")
    append_audit(session, actor=actor, action="deid-export-request", entity="study",
                 entity_id=study.study_instance_uid, patient_ref=_patient_ref(study),
                 details={"export": export.id, "destination": target.name, "source": source,
                          "options": list(target.options)})
    return export


def auto_export_hook(settings: Settings) -> StudyHook:
    """A study hook: stable, reconciled studies of a destination's ``auto_modalities``."""
    automatic = [d for d in settings.deid_destinations if d.auto_modalities]

    def hook(session: Session, study_id: int) -> None:
        study = session.get(Study, study_id)
        if study is None or study.state != STABLE or study.reconciliation not in RECONCILED:
            return
        modalities = {m.strip().upper() for m in (study.modalities or "").split("\\")}
        for destination in automatic:
            if not modalities & {m.upper() for m in destination.auto_modalities}:
                continue
            waiting = session.execute(select(DeidExport.id).where(
                DeidExport.study_id == study_id, DeidExport.destination == destination.name,
                DeidExport.status.in_(("queued", "running")))).first()
            if waiting is not None:
                continue  # the queued export reads the study as it is when it runs
            try:
                with session.begin_nested():
                    start_export(session, settings, study_id=study_id,
                                 destination=destination.name,
                                 actor=f"rule:{destination.name}", roles=(ADMIN,),
                                 source="rule")
            except BridgeError as exc:
                # The study stays stable; the operator sees why in the log and exports it.
                log.error("study %s not queued for %s: %s", study_id, destination.name,
                          exc.message)

    return hook


class ExportHandler:
    """Runs one ``deid_export`` job (``payload: export_id``)."""

    def __init__(self, settings: Settings, sessions: sessionmaker[Session]) -> None:
        self.settings = settings
        self.sessions = sessions

    def __call__(self, job: ClaimedJob, stopping: threading.Event) -> None:
        export_id = int(job.payload["export_id"])
        master = master_key(self.settings)
        with self.sessions() as session, session.begin():
            export = session.get(DeidExport, export_id)
            if export is None:
                raise NotFound(f"export {export_id} is gone", location="export")
            target = destination_of(self.settings, export.destination)
            secret = records.destination_secret(session, export.destination, master)
            key = records.data_key(export, master)
            # A row left "sending" or "failed" by an earlier attempt is made again: the
            # pseudonyms are the same, so is its record.
            session.execute(delete(DeidObject).where(
                DeidObject.export_id == export_id,
                DeidObject.status.in_((records.SENDING, records.FAILED))))
            done = set(session.execute(select(DeidObject.instance_id).where(
                DeidObject.export_id == export_id)).scalars())
            instances = session.execute(select(Instance).where(
                Instance.study_id == export.study_id).order_by(Instance.id)).scalars().all()
            export.status = "running"
            export.total = len(instances)
            options = tuple(export.options)
            session.expunge_all()
        recipe = Recipe.build(self.settings.mappings_dir, options, secret)
        outbound = open_outbound(target, self.settings)
        refused: list[str] = []
        try:
            todo = [i for i in instances if i.id not in done]
            reader = reader_for(self.settings, self.sessions)
            for start in range(0, len(todo), BATCH):
                if stopping.is_set():
                    raise Interrupted
                prepared = [(i.id, prepare(reader.local_path(i).read_bytes(), recipe,
                                           original_sha256=i.sha256 or None))
                            for i in todo[start:start + BATCH]]
                problem = send_batch(self.sessions, outbound, export_id, key, prepared)
                if problem:
                    refused.append(problem)
        finally:
            outbound.close()
        self._finish(export_id, refused)

    def _finish(self, export_id: int, refused: list[str]) -> None:
        with self.sessions() as session, session.begin():
            export = session.get(DeidExport, export_id)
            assert export is not None
            records.finish_export(session, export)
            study = session.get(Study, export.study_id) if export.study_id else None
            append_audit(session, actor=export.actor, action="deid-export", entity="study",
                         entity_id=study.study_instance_uid if study else str(export_id),
                         patient_ref=_patient_ref(study) if study else None,
                         outcome="success" if export.status == "done" else "failure",
                         details={"export": export.id, "destination": export.destination,
                                  "sent": export.sent, "held": export.held,
                                  "failed": export.failed})
            log.info("export %s to %s: %s sent, %s held, %s refused", export.id,
                     export.destination, export.sent, export.held, export.failed)
        if refused:
            raise Rejected(f"{len(refused)} batch(es) refused: {refused[0]}")


def send_batch(sessions: sessionmaker[Session], outbound: Outbound, export_id: int, key: bytes,
               prepared: Sequence[tuple[int | None, Prepared]]) -> str | None:
    """Commit the batch's key records, send it, mark it sent. A refusal is returned (the
    rows say why); a passing fault propagates, after marking the rows failed."""
    with sessions() as session, session.begin():
        export = session.get(DeidExport, export_id)
        assert export is not None
        studies: dict[str, int] = {}
        rows = [records.save_object(session, export, key, item, instance_id=instance_id,
                                    studies=studies)
                for instance_id, item in prepared]
        session.flush()
        ids = [row.id for row, (_, item) in zip(rows, prepared, strict=True)
               if item.status != records.HELD]
    outgoing = [item for _, item in prepared if item.status != records.HELD]
    if not outgoing:
        return None
    try:
        locations = outbound.send(outgoing)
    except Transient as exc:
        with sessions() as session, session.begin():
            records.mark_failed(session, ids, exc.message)
        raise
    except Rejected as exc:
        with sessions() as session, session.begin():
            records.mark_failed(session, ids, exc.message)
        return exc.message
    with sessions() as session, session.begin():
        records.mark_sent(session, ids, locations)
        export = session.get(DeidExport, export_id)
        assert export is not None
        export.sent += len(ids)
        export.held += len(prepared) - len(outgoing)
    return None


def _patient_ref(study: Study) -> str | None:
    patient_id = getattr(study, "patient_id", None)
    return f"Patient/{patient_id}" if patient_id else None
