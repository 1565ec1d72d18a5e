"""The exam happening moves a diagnostics referral's Task to in-progress: an MPPS N-CREATE
for its order's step, or a study reconciled to its order (whichever comes first)."""

from __future__ import annotations

from sqlalchemy.orm import Session

from bridge.services.referrals.workflow import start_for_order
from bridge.store.archive_models import Study
from bridge.store.models import PerformedProcedureStep, ProcedureStep

ACTOR = "bridge"


def start_for_study(session: Session, study_id: int) -> None:
    """A :data:`~bridge.services.archive.stability.StudyHook`: run in the transaction that
    reconciled or stabilised the study."""
    study = session.get(Study, study_id)
    if study is not None and study.order_id is not None:
        start_for_order(session, study.order_id, ACTOR)


def start_for_mpps(session: Session, mpps: PerformedProcedureStep) -> None:
    if mpps.step_id is None:
        return
    step = session.get(ProcedureStep, mpps.step_id)
    if step is not None:
        start_for_order(session, step.order_id, ACTOR)
