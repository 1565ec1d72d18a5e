"""Objects coming back into the archive: from an incoming folder (``BRIDGE_DEID_INCOMING_DIR``,
swept periodically) and fetched on request from a destination (``bridge deid fetch``). Each
is restored (:mod:`bridge.services.deid.restore`) and handed to the archive's normal intake.

A file of the incoming folder is removed only once its restored object is in the archive;
one that cannot be restored goes to ``failed/`` beside a ``.why`` file saying why (no
patient data in it), so nothing is lost and nothing is tried for ever.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from bridge.config.settings import Settings
from bridge.errors import BridgeError, NotFound
from bridge.services.archive.store import ArchiveStore
from bridge.services.deid import records
from bridge.services.deid.exports import destination_of
from bridge.services.deid.keys import KeyProblem, master_key
from bridge.services.deid.outbound import fetch_object, open_outbound
from bridge.services.deid.restore import Restorer
from bridge.store.deid_models import DeidObject, DeidStudy

log = logging.getLogger("bridge.deid")
FAILED_DIR = "failed"


@dataclass(slots=True)
class Returned:
    archived: dict[str, int] = field(default_factory=dict)  # kind → count
    refused: list[str] = field(default_factory=list)


class IncomingFolder:
    """One sweep of the incoming folder per call (the scheduler calls it)."""

    def __init__(self, settings: Settings, sessions: sessionmaker[Session],
                 archive: ArchiveStore) -> None:
        assert settings.deid_incoming_dir is not None
        self.folder = Path(settings.deid_incoming_dir)
        self.restorer = Restorer(settings, sessions)
        self.archive = archive

    def run_once(self) -> Returned:
        result = Returned()
        if not self.folder.is_dir():
            return result
        for path in sorted(p for p in self.folder.rglob("*") if p.is_file()
                           and FAILED_DIR not in p.relative_to(self.folder).parts
                           and not p.name.startswith(".")):
            try:
                restored = self.restorer.restore(path.read_bytes(), actor="incoming-folder",
                                                 source="folder")
                self.archive.accept_bytes(restored.data, source="deid-return")
            except KeyProblem:
                raise  # every file would fail: stop, the operator fixes the key
            except (BridgeError, OSError) as exc:
                reason = getattr(exc, "message", type(exc).__name__)
                self._set_aside(path, reason)
                result.refused.append(reason)
                continue
            path.unlink()
            result.archived[restored.kind] = result.archived.get(restored.kind, 0) + 1
        if result.archived or result.refused:
            log.info("incoming folder: %s archived, %d set aside",
                     sum(result.archived.values()), len(result.refused))
        return result

    def _set_aside(self, path: Path, reason: str) -> None:
        target = self.folder / FAILED_DIR / path.relative_to(self.folder)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(path, target)
        target.with_name(target.name + ".why").write_text(reason + "\n", encoding="utf-8")


def fetch_back(settings: Settings, sessions: sessionmaker[Session], archive: ArchiveStore, *,
               destination: str, study_uid: str, actor: str) -> Returned:
    """Bring a study back from a destination (by its real Study Instance UID), restored."""
    target = destination_of(settings, destination)
    master = master_key(settings)
    with sessions() as session:
        secret = records.destination_secret(session, target.name, master)
        from bridge.mapping.deid.pseudonyms import Pseudonyms

        pseudo = study_uid if "retain_uids" in target.options else \
            Pseudonyms(secret).uid(study_uid)
        study = session.execute(select(DeidStudy).where(
            DeidStudy.destination == target.name,
            DeidStudy.pseudo_study_uid == pseudo)).scalar_one_or_none()
        if study is None:
            raise NotFound(f"study not exported to {target.name}", location="study")
        rows = session.execute(select(DeidObject).where(
            DeidObject.deid_study_id == study.id, DeidObject.status == records.SENT)
            .order_by(DeidObject.id)).scalars().all()
        session.expunge_all()
    result = Returned()
    restorer = Restorer(settings, sessions)
    outbound = open_outbound(target, settings)
    seen: set[str] = set()
    try:
        for row in rows:
            if row.pseudo_sop_uid in seen:
                continue  # exported twice: one copy is enough
            seen.add(row.pseudo_sop_uid or "")
            try:
                data = fetch_object(outbound, row, study.pseudo_study_uid)
                restored = restorer.restore(data, actor=actor, source=f"fetch:{target.name}",
                                            master=master)
                archive.accept_bytes(restored.data, source="deid-return")
            except KeyProblem:
                raise
            except BridgeError as exc:
                result.refused.append(exc.message)
                continue
            result.archived[restored.kind] = result.archived.get(restored.kind, 0) + 1
    finally:
        outbound.close()
    return result
