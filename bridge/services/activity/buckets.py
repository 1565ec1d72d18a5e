"""The dashboard's window of whole minutes and the minute bucket of a timestamp in SQL.

A bucket is the minute's number since the Unix epoch (an integer), computed by the database
so that counting is one ``GROUP BY`` over the rows of an index range instead of sending every
timestamp to Python. The expression differs per dialect:

- SQLite keeps ``DateTime`` columns as UTC text (``2026-03-10 09:15:42.123456``);
  ``strftime('%s', …)`` reads it as seconds since the epoch;
- PostgreSQL ``EXTRACT(EPOCH FROM timestamptz)`` is absolute, whatever the session's
  ``TimeZone`` (``date_trunc`` would truncate in the session's zone).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from sqlalchemy import BigInteger, Integer, cast, func
from sqlalchemy.sql.elements import ColumnElement

MIN_MINUTES: Final = 1
#: A day: the longest window the dashboard plots.
MAX_MINUTES: Final = 1440
DEFAULT_MINUTES: Final = 60
MINUTE: Final = timedelta(minutes=1)


@dataclass(frozen=True, slots=True)
class Window:
    """``minutes`` whole minutes, the last of them the one ``at`` falls in (still going).

    Rows count when ``since <= time < until``: a row of the minute before ``since`` is
    outside, however close.
    """

    at: datetime
    minutes: int
    since: datetime
    until: datetime

    @classmethod
    def ending_at(cls, at: datetime, minutes: int) -> Window:
        if not MIN_MINUTES <= minutes <= MAX_MINUTES:
            raise ValueError(f"minutes must be {MIN_MINUTES}..{MAX_MINUTES}, not {minutes}")
        at = at.astimezone(UTC)
        current = at.replace(second=0, microsecond=0)
        return cls(at=at, minutes=minutes, since=current - (minutes - 1) * MINUTE,
                   until=current + MINUTE)

    @property
    def first_bucket(self) -> int:
        return epoch_minute(self.since)

    def buckets(self) -> range:
        """The window's buckets, oldest first."""
        return range(self.first_bucket, self.first_bucket + self.minutes)


def epoch_minute(moment: datetime) -> int:
    """The bucket of ``moment`` (aware), as the database computes it."""
    return int(moment.timestamp()) // 60


def minute_of(bucket: int) -> datetime:
    """The start of a bucket's minute, in UTC."""
    return datetime.fromtimestamp(bucket * 60, UTC)


def minute_bucket(column: ColumnElement[Any], dialect: str) -> ColumnElement[int]:
    """SQL for the bucket of ``column`` (a ``DateTime(timezone=True)``) on ``dialect``."""
    if dialect == "sqlite":
        # Integer division of non-negative integers: the floor, like epoch_minute.
        return cast(func.strftime("%s", column), Integer) // 60
    if dialect == "postgresql":
        return cast(func.floor(func.extract("epoch", column) / 60), BigInteger)
    raise ValueError(f"no minute bucket for the {dialect} dialect")
