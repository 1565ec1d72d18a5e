"""Studies a clinician stored under their login (STOW-RS, or an import run ``--as`` them)
become theirs to see. Only studies the upload created: storing into a study that existed
before grants nothing."""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime

from sqlalchemy import update
from sqlalchemy.orm import Session

from bridge.store.archive_models import Study
from bridge.store.audit import append_audit


def claim_uploads(session: Session, user_id: int, *, since: datetime,
                  study_ids: Collection[int] = (), study_uids: Collection[str] = ()) -> int:
    """Mark the studies created since ``since`` among those named as uploaded by
    ``user_id``; returns how many. Audited."""
    if not study_ids and not study_uids:
        return 0
    where = [Study.uploaded_by.is_(None), Study.created_at >= since]
    if study_ids:
        where.append(Study.id.in_(sorted(study_ids)))
    if study_uids:
        where.append(Study.study_instance_uid.in_(sorted(study_uids)))
    claimed = session.execute(update(Study).where(*where).values(uploaded_by=user_id)
                              .returning(Study.id)).scalars().all()
    for study_id in claimed:
        append_audit(session, actor=f"Practitioner/{user_id}", action="upload",
                     entity="study", entity_id=str(study_id))
    return len(claimed)
