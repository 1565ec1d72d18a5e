"""The reconciliation policy in ``mappings/dicom/reconciliation.yaml``, read once at start."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Literal, cast

from bridge.mapping.tables import TableError, read_table

MatchKey = Literal["accession", "study_instance_uid", "patient"]
MATCH_KEYS: tuple[MatchKey, ...] = ("accession", "study_instance_uid", "patient")
UnorderedAction = Literal["link", "queue"]
PatientCheck = Literal["birth_date", "name"]
PATIENT_CHECKS: tuple[PatientCheck, ...] = ("birth_date", "name")


@dataclass(frozen=True, slots=True)
class ReconcilePolicy:
    match_order: tuple[MatchKey, ...] = MATCH_KEYS
    skip_order_statuses: frozenset[str] = frozenset({"CANCELED", "DISCONTINUED"})
    #: A study of a known patient with no order: linked to the patient, or queued.
    unordered: UnorderedAction = "link"
    #: What the object's demographics must not contradict before a link is made.
    patient_checks: frozenset[PatientCheck] = frozenset(PATIENT_CHECKS)
    #: Linked studies younger than this still take an order that arrives later.
    late_order_days: int = 30

    def with_unordered(self, action: UnorderedAction | None) -> ReconcilePolicy:
        """The policy with the settings' override of ``unordered`` (None keeps the table's)."""
        if action is None or action == self.unordered:
            return self
        return ReconcilePolicy(self.match_order, self.skip_order_statuses, action,
                               self.patient_checks, self.late_order_days)


def load_reconcile_policy(mappings_dir: Path,
                          unordered: UnorderedAction | None = None) -> ReconcilePolicy:
    """The table's policy; ``unordered`` (``BRIDGE_RECONCILE_UNORDERED``) overrides its
    ``unordered_study.action``."""
    path = mappings_dir / "dicom" / "reconciliation.yaml"
    if not path.is_file():
        return ReconcilePolicy().with_unordered(unordered)
    data = read_table(path)
    order = tuple(str(k) for k in data.get("match_order", MATCH_KEYS))
    unknown = [k for k in order if k not in MATCH_KEYS]
    if unknown or not order:
        raise TableError(f"{path}: match_order: unknown keys {unknown}; use {list(MATCH_KEYS)}")
    skip = frozenset(str(s).upper() for s in data.get("skip_order_statuses", ()))
    rule = data.get("unordered_study") or {}
    if not isinstance(rule, dict):
        raise TableError(f"{path}: unordered_study: expected a mapping")
    action = str(rule.get("action", "link"))
    if action not in ("link", "queue"):
        raise TableError(f"{path}: unordered_study.action: {action!r}; use link or queue")
    checks = tuple(str(c) for c in rule.get("checks", PATIENT_CHECKS) or ())
    bad = [c for c in checks if c not in PATIENT_CHECKS]
    if bad:
        raise TableError(f"{path}: unordered_study.checks: unknown {bad}; "
                         f"use {list(PATIENT_CHECKS)}")
    try:
        late_days = int(rule.get("late_order_days", 30))
    except (TypeError, ValueError):
        raise TableError(f"{path}: unordered_study.late_order_days: a number of days") from None
    if not 0 <= late_days <= 3660:
        raise TableError(f"{path}: unordered_study.late_order_days: 0 to 3660 days")
    policy = ReconcilePolicy(
        match_order=cast(tuple[MatchKey, ...], order), skip_order_statuses=skip,
        unordered=cast(UnorderedAction, action),
        patient_checks=frozenset(cast(tuple[PatientCheck, ...], checks)),
        late_order_days=late_days)
    return policy.with_unordered(unordered)


def date_window(study_date: str, days: int) -> tuple[str, str] | None:
    """``YYYYMMDD`` bounds ``days`` either side of a DICOM date; None for a bad date."""
    try:
        day = date(int(study_date[:4]), int(study_date[4:6]), int(study_date[6:8]))
    except ValueError:
        return None
    if len(study_date) != 8:
        return None
    delta = timedelta(days=days)
    return (day - delta).strftime("%Y%m%d"), (day + delta).strftime("%Y%m%d")
