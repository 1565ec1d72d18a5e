"""Scheduling of the storage tiers' periodic work: online cleanup on its crontab (in the
hospital's time zone: "3 a.m." means the quiet night hours there), and usage sampling for
the history. The long-term migration schedules itself (``bridge.storage.migration``)."""

from __future__ import annotations

import logging

from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.cron import CronTrigger

from bridge.jobs.scheduler import every
from bridge.storage.ops import StorageOps
from bridge.storage.usage import record_sample

log = logging.getLogger("bridge.storage")


def schedule_storage_maintenance(scheduler: BackgroundScheduler, ops: StorageOps) -> None:
    s = ops.settings
    every(scheduler, s.storage_sample_seconds, lambda: record_sample(ops.sessions),
          "storage-usage-sample")
    if not s.longterm_url:  # nothing is ever removed without a long-term tier
        return

    def cleanup() -> None:
        try:
            ops.cleanup(dry_run=False, actor="scheduler")
        except Exception:  # logged; the next scheduled run tries again
            log.exception("online cleanup failed")

    scheduler.add_job(cleanup, CronTrigger.from_crontab(s.cleanup_schedule,
                                                        timezone=s.local_timezone),
                      id="storage-cleanup", name="storage-cleanup")
