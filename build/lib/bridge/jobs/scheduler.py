"""APScheduler wiring: periodic jobs run in the scheduler's threads, never in the event loop.

Each job runs at most once at a time (``max_instances=1``) and missed runs coalesce, so a
slow sweep under load is not stacked up behind itself.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from apscheduler.schedulers.background import BackgroundScheduler

logger = logging.getLogger("bridge.jobs")


def make_scheduler() -> BackgroundScheduler:
    return BackgroundScheduler(timezone="UTC", job_defaults={
        "coalesce": True, "max_instances": 1, "misfire_grace_time": 30})


def every(scheduler: BackgroundScheduler, seconds: float, job: Callable[[], object],
          name: str) -> None:
    def run() -> None:
        try:
            job()
        except Exception:  # logged, and tried again at the next interval
            logger.exception("periodic job %s failed", name)

    scheduler.add_job(run, "interval", seconds=seconds, id=name, name=name)
