"""Retention: how long a study must be kept somewhere before it may leave every tier.

Pure: the anchor is the study's date when the modality sent a valid one (the clinical
record's age), else when the archive received it. A study of several modalities is kept as
long as its longest-kept modality requires (a PET/CT is kept as long as its CT).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta


@dataclass(frozen=True, slots=True)
class RetentionPolicy:
    default_days: int
    by_modality: Mapping[str, int]

    def days_for(self, modalities: str) -> int:
        """``modalities`` as stored in ``studies.modalities`` (backslash-joined)."""
        names = [m.strip().upper() for m in modalities.split("\\") if m.strip()]
        return max((self.by_modality.get(m, self.default_days) for m in names),
                   default=self.default_days)

    def kept_until(self, *, modalities: str, study_date: str, received_at: datetime) -> date:
        return _anchor(study_date, received_at) + timedelta(days=self.days_for(modalities))

    def holds(self, *, modalities: str, study_date: str, received_at: datetime,
              now: datetime) -> bool:
        """True while the study may not leave every tier."""
        return now.astimezone(UTC).date() < self.kept_until(
            modalities=modalities, study_date=study_date, received_at=received_at)


def retention_policy(default_days: int, by_modality: Mapping[str, int]) -> RetentionPolicy:
    return RetentionPolicy(default_days,
                           {k.strip().upper(): int(v) for k, v in by_modality.items()})


def _anchor(study_date: str, received_at: datetime) -> date:
    if len(study_date) == 8 and study_date.isdigit():
        try:
            return date(int(study_date[:4]), int(study_date[4:6]), int(study_date[6:]))
        except ValueError:
            pass
    if received_at.tzinfo is None:  # SQLite hands back naive UTC
        received_at = received_at.replace(tzinfo=UTC)
    return received_at.astimezone(UTC).date()
