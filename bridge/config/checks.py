"""Checks shared by the settings models (:mod:`bridge.config.settings` and the models it is
built from)."""

from __future__ import annotations


def valid_crontab(value: str) -> str:
    """A five-field crontab expression as APScheduler reads it; ValueError naming the fault."""
    from apscheduler.triggers.cron import CronTrigger

    try:
        CronTrigger.from_crontab(value)
    except ValueError as exc:
        raise ValueError(f"not a crontab expression ({exc})") from exc
    return value
