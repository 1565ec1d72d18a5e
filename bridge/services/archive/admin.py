"""Operator actions on the archive: deleting a study (with its files) under an audit record.
The reconciliation queue's listing is :mod:`bridge.services.archive.reconciliation_view`."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from bridge.errors import Conflict, NotFound
from bridge.jobs import queue
from bridge.services.archive.stability import StudyHook
from bridge.storage.retention import RetentionPolicy
from bridge.store.archive_models import (
    RECONCILED,
    Instance,
    Series,
    Study,
    StudyEvent,
)
from bridge.store.audit import append_audit
from bridge.store.models import table_of, utcnow
from bridge.store.storage_models import LONGTERM, ONLINE, InstanceCopy, StorageDeletion

S = table_of(Study)
SE = table_of(Series)
I = table_of(Instance)  # noqa: E741
E = table_of(StudyEvent)
C = table_of(InstanceCopy)
D = table_of(StorageDeletion)

#: Jobs removing a deleted study's long-term copies: ``{"location": url, "keys": [...]}``.
LONGTERM_DELETE_QUEUE = "longterm-delete"


def delete_study(session: Session, *, study_uid: str, actor: str, reason: str,
                 before_delete: Sequence[StudyHook] = (),
                 retention: RetentionPolicy | None = None,
                 override_retention: bool = False) -> list[str]:
    """Remove the study's rows and write the audit record; returns the online files to
    remove once the transaction has committed (removing them earlier would lose data on a
    rollback). Long-term copies are removed by a durable job queued here (the store may be
    down now). ``before_delete`` hooks run first, in the same transaction (e.g. queue the
    withdrawal of a published ImagingStudy). With a ``retention`` policy, a reconciled study
    still under retention is refused unless ``override_retention`` (audited)."""
    conn = session.connection()
    # Locked first (PostgreSQL): an object being indexed into the study holds the row, and
    # its instance must be seen (and its file listed) rather than fail the delete on a key.
    study = conn.execute(select(S.c.id, S.c.num_instances, S.c.reconciliation, S.c.modalities,
                                S.c.study_date, S.c.created_at).where(
        S.c.study_instance_uid == study_uid).with_for_update()).first()
    if study is None:
        raise NotFound("no such study", location="study_instance_uid")
    if retention is not None and study.reconciliation in RECONCILED:
        until = retention.kept_until(modalities=study.modalities, study_date=study.study_date,
                                     received_at=study.created_at)
        if utcnow().date() < until and not override_retention:
            raise Conflict(f"the study is under retention until {until.isoformat()}; "
                           "set override_retention to delete it anyway",
                           location="override_retention")
    for hook in before_delete:
        hook(session, int(study.id))
    paths = list(conn.execute(select(I.c.path).where(
        I.c.study_id == study.id, I.c.online_removed_at.is_(None))).scalars())
    _forget_copies(session, int(study.id), study_uid, actor=actor)
    conn.execute(delete(I).where(I.c.study_id == study.id))
    conn.execute(delete(SE).where(SE.c.study_id == study.id))
    conn.execute(delete(E).where(E.c.study_id == study.id))
    conn.execute(delete(S).where(S.c.id == study.id))
    append_audit(conn, actor=actor, action="delete", entity="study", entity_id=study_uid,
                 details={"reason": reason, "instances": study.num_instances,
                          "reconciliation": study.reconciliation,
                          "override_retention": override_retention})
    return paths


def _forget_copies(session: Session, study_id: int, study_uid: str, *, actor: str) -> None:
    """Drop the study's copy rows, queue the removal of their bytes, and record both tiers'
    deletions (the deletion records outlive the study: their link to it is cleared)."""
    conn = session.connection()
    copies = conn.execute(select(C.c.location, C.c.key, C.c.size).where(
        C.c.study_id == study_id)).all()
    online = conn.execute(select(func.count(), func.coalesce(func.sum(I.c.size), 0)).where(
        I.c.study_id == study_id, I.c.online_removed_at.is_(None))).one()
    conn.execute(D.update().where(D.c.study_id == study_id).values(study_id=None))
    now = utcnow()
    if online[0]:
        conn.execute(D.insert().values(at=now, study_id=None, study_instance_uid=study_uid,
                                       tier=ONLINE, reason="operator", instances=online[0],
                                       bytes=int(online[1]), actor=actor))
    if not copies:
        return
    conn.execute(delete(C).where(C.c.study_id == study_id))
    conn.execute(D.insert().values(at=now, study_id=None, study_instance_uid=study_uid,
                                   tier=LONGTERM, reason="operator", instances=len(copies),
                                   bytes=sum(int(c.size) for c in copies), actor=actor))
    by_location: dict[str, list[str]] = {}
    for copy in copies:
        by_location.setdefault(copy.location, []).append(copy.key)
    for location, keys in by_location.items():
        queue.enqueue(session, queue=LONGTERM_DELETE_QUEUE,
                      payload={"location": location, "keys": keys})
