"""The reconciliation policy in ``mappings/dicom/reconciliation.yaml``, read once at start."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Literal

from bridge.mapping.tables import TableError, read_table

MatchKey = Literal["accession", "study_instance_uid", "patient"]
MATCH_KEYS: tuple[MatchKey, ...] = ("accession", "study_instance_uid", "patient")


@dataclass(frozen=True, slots=True)
class ReconcilePolicy:
    match_order: tuple[MatchKey, ...] = MATCH_KEYS
    skip_order_statuses: frozenset[str] = frozenset({"CANCELED", "DISCONTINUED"})


def load_reconcile_policy(mappings_dir: Path) -> ReconcilePolicy:
    path = mappings_dir / "dicom" / "reconciliation.yaml"
    if not path.is_file():
        return ReconcilePolicy()
    data = read_table(path)
    order = tuple(str(k) for k in data.get("match_order", MATCH_KEYS))
    unknown = [k for k in order if k not in MATCH_KEYS]
    if unknown or not order:
        raise TableError(f"{path}: match_order: unknown keys {unknown}; use {list(MATCH_KEYS)}")
    skip = frozenset(str(s).upper() for s in data.get("skip_order_statuses", ()))
    return ReconcilePolicy(match_order=order, skip_order_statuses=skip)  # type: ignore[arg-type]


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
