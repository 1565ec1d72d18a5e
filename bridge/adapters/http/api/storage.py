"""Storage tiers for operators: usage per tier and modality, pending migrations, the last
cleanup, the usage history, the deletions record; cleanup (or its dry run), migration and
recall on demand.

Reading needs a viewer token (no patient data: study UIDs, sizes, modalities); anything
that removes or moves files needs admin, and is attributed to the token.
"""

from __future__ import annotations

import dataclasses
import logging
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query
from pydantic import BaseModel

from bridge.adapters.http.api.schemas import ErrorBody, Offset
from bridge.adapters.http.deps import AdminToken, ContextDep, SessionDep, ViewerToken, actor_of
from bridge.errors import Conflict
from bridge.storage.cleanup import CleanupReport, last_cleanup, measure_capacity
from bridge.storage.ops import StorageOps
from bridge.storage.usage import (
    DeletionOut,
    PendingMigrations,
    TierUsage,
    UsagePoint,
    current_usage,
    history,
    pending_migrations,
    recent_deletions,
)

log = logging.getLogger("bridge.http")
router = APIRouter(prefix="/api/storage", tags=["storage"])
_ERRORS: dict[int | str, dict[str, Any]] = {409: {"model": ErrorBody}}
StudyUid = Annotated[str, Path(max_length=64, pattern=r"^[0-9.]+$")]


class CapacityOut(BaseModel):
    capacity_bytes: int
    used_bytes: int
    high_mark_bytes: int
    low_mark_bytes: int
    #: ``quota``: the configured online quota vs the index; ``filesystem``: the disk itself.
    measured_by: str


class StorageSummary(BaseModel):
    longterm_configured: bool
    tiers: list[TierUsage]
    capacity: CapacityOut
    pending_migrations: PendingMigrations
    last_cleanup: dict[str, Any] | None


class RecallOut(BaseModel):
    study_instance_uid: str
    instances: int


def _ops(context: ContextDep) -> StorageOps:
    assert context.storage is not None  # create_app always sets it
    return context.storage


@router.get("", response_model=StorageSummary)
def storage_summary(session: SessionDep, context: ContextDep,
                    _token: ViewerToken) -> StorageSummary:
    """Usage per tier (totals, then per modality), the online tier's capacity and marks,
    migrations waiting, and what the last cleanup did."""
    s = context.settings
    cap = measure_capacity(session, s)
    return StorageSummary(
        longterm_configured=bool(s.longterm_url),
        tiers=current_usage(session),
        capacity=CapacityOut(
            capacity_bytes=cap.capacity, used_bytes=cap.used,
            high_mark_bytes=int(cap.capacity * s.cleanup_high_water_percent / 100),
            low_mark_bytes=int(cap.capacity * s.cleanup_low_water_percent / 100),
            measured_by="quota" if s.online_quota_bytes else "filesystem"),
        pending_migrations=pending_migrations(session, s),
        last_cleanup=last_cleanup(session))


@router.get("/history", response_model=list[UsagePoint])
def storage_history(
    session: SessionDep,
    _token: ViewerToken,
    since: Annotated[datetime | None, Query(description="default: 30 days ago")] = None,
    tier: Annotated[str | None, Query(pattern="^(online|longterm)$")] = None,
    modality: Annotated[str, Query(max_length=16, description="empty: tier totals")] = "",
    limit: Annotated[int, Query(ge=1, le=100000)] = 10000,
) -> list[UsagePoint]:
    """Usage samples over time, oldest first (one point per tier per sample)."""
    start = since or datetime.now(UTC) - timedelta(days=30)
    return history(session, since=start, tier=tier, modality=modality.upper(), limit=limit)


@router.get("/deletions", response_model=list[DeletionOut])
def storage_deletions(
    session: SessionDep,
    _token: ViewerToken,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Offset = 0,
) -> list[DeletionOut]:
    """Every removal of a study's copies from a tier, newest first."""
    return recent_deletions(session, limit=limit, offset=offset)


# The service's dataclass is the response shape: one field list, not two to keep in step.
@router.post("/cleanup", response_model=CleanupReport, responses=_ERRORS)
def run_cleanup(context: ContextDep, token: AdminToken,
                dry_run: Annotated[bool, Query(description="only list what would go")] = True
                ) -> CleanupReport:
    """Run online cleanup now (time rule, then capacity). ``dry_run`` (the default) lists
    what would be removed and removes nothing."""
    report = _ops(context).cleanup(dry_run=dry_run, actor=actor_of(token))
    if not dry_run:
        log.info("cleanup run by operator", extra={"actor": actor_of(token)})
    return report


@router.post("/migrate", responses=_ERRORS)
def run_migration(context: ContextDep, _token: AdminToken,
                  every_stable: Annotated[bool, Query(
                      description="every stable study, not only those past the delay")] = False
                  ) -> dict[str, Any]:
    """Copy due studies to the long-term tier now (as the scheduled job does)."""
    ops = _ops(context)
    if ops.migrate_now is None:
        raise Conflict("no long-term tier is configured (BRIDGE_LONGTERM_URL)",
                       location="longterm_url")
    report = ops.migrate_now(every_stable)
    return dataclasses.asdict(report) if dataclasses.is_dataclass(report) \
        and not isinstance(report, type) else {"result": str(report)}


@router.post("/studies/{study_uid}/recall", response_model=RecallOut, responses=_ERRORS)
def recall_study(study_uid: StudyUid, context: ContextDep,
                 token: AdminToken) -> RecallOut:
    """Copy a study held only in long-term storage back to the online tier."""
    ops = _ops(context)
    if ops.recall is None:
        raise Conflict("no long-term tier is configured (BRIDGE_LONGTERM_URL)",
                       location="longterm_url")
    count = ops.recall(study_uid)
    log.info("study recalled by operator", extra={"actor": actor_of(token)})
    return RecallOut(study_instance_uid=study_uid, instances=count)
