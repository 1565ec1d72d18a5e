"""What the de-identification tests share: a master key file, settings with destinations,
studies put into the archive through its real intake, and exports run by the job worker."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydicom.dataset import Dataset
from pydicom.uid import generate_uid
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from bridge.config.deid_destinations import DeidDestination
from bridge.config.settings import Settings
from bridge.jobs.worker import JobWorker
from bridge.services.archive.store import ArchiveStore, Arrival
from bridge.services.deid import exports
from bridge.store.archive_models import Instance, Job, Study
from bridge.store.deid_models import DeidExport
from tests.deid_fixtures import phi_ct, phi_sr, write


def key_file(folder: Path, name: str = "master.key") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(os.urandom(32).hex() + "\n")
    path.chmod(0o600)
    return path


def with_destinations(settings: Settings, key: Path | None, *destinations: dict[str, Any],
                      **more: Any) -> Settings:
    return settings.model_copy(update={
        "deid_master_key_file": key,
        "deid_destinations": tuple(DeidDestination(**d) for d in destinations),
        **more})


def phi_study(folder: Path, *, images: int = 3, with_sr: bool = True) -> list[Path]:
    """A study full of personal data as files: CT images and an SR naming the patient."""
    study, series = generate_uid(), generate_uid()
    datasets: list[Dataset] = [phi_ct(study, series, n) for n in range(1, images + 1)]
    if with_sr:
        datasets.append(phi_sr(study, referenced=datasets[0]))
    return [write(ds, folder) for ds in datasets]


def archive(settings: Settings, sessions: sessionmaker[Session], files: Sequence[Path],
            *, calling_ae: str = "MODALITY") -> str:
    """Put the files in the archive through its intake; their Study Instance UID."""
    store = ArchiveStore(settings, sessions)
    stored = [store.accept(Arrival(path, calling_ae=calling_ae, disposable=False))
              for path in files]
    with sessions() as session:
        return session.execute(select(Study.study_instance_uid).where(
            Study.id == stored[0].study_id)).scalar_one()


def originals(sessions: sessionmaker[Session], study_uid: str) -> dict[str, str]:
    """SOP Instance UID → SHA-256 of the archived file."""
    with sessions() as session:
        rows = session.execute(select(Instance.sop_instance_uid, Instance.sha256).join(
            Study, Study.id == Instance.study_id).where(
            Study.study_instance_uid == study_uid)).all()
    return {uid: sha for uid, sha in rows}


def run_export(settings: Settings, sessions: sessionmaker[Session], study_uid: str,
               destination: str, *, actor: str = "test", roles: tuple[str, ...] = ("admin",),
               max_runs: int = 5) -> DeidExport:
    with sessions() as session, session.begin():
        study_id = session.execute(select(Study.id).where(
            Study.study_instance_uid == study_uid)).scalar_one()
        export = exports.start_export(session, settings, study_id=study_id,
                                      destination=destination, actor=actor, roles=roles,
                                      source="api")
        export_id = export.id
    return run_jobs(settings, sessions, export_id, max_runs=max_runs)


def run_jobs(settings: Settings, sessions: sessionmaker[Session], export_id: int, *,
             max_runs: int = 5) -> DeidExport:
    """Run due ``deid_export`` jobs (at most ``max_runs``); the export as it stands then."""
    worker = JobWorker(sessions, {exports.DEID_QUEUE: exports.ExportHandler(settings, sessions)},
                       policies={exports.DEID_QUEUE: exports.retry_policy(settings)})
    for _ in range(max_runs):
        if not worker.run_once():
            break
    return export_row(sessions, export_id)


def export_row(sessions: sessionmaker[Session], export_id: int) -> DeidExport:
    """The export as it stands; its job's last error in ``error`` when it has not finished
    (so a failing test says why)."""
    with sessions() as session:
        done = session.get(DeidExport, export_id)
        assert done is not None
        job = session.get(Job, done.job_id) if done.job_id else None
        session.expunge(done)
    if job is not None and job.last_error and done.status in ("queued", "running"):
        done.error = job.last_error
    return done


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
