"""Removing a deleted study's long-term copies: a durable job per tier location, queued by
:func:`bridge.services.archive.admin.delete_study` in the deleting transaction, so a store
that is down now only delays the removal (retried with back-off) and nothing is forgotten.
Progress is checkpointed: a rerun does not ask again for keys already removed."""

from __future__ import annotations

import logging
import threading

from sqlalchemy.orm import Session, sessionmaker

from bridge.config.settings import Settings
from bridge.errors import Transient
from bridge.jobs import queue
from bridge.jobs.queue import ClaimedJob, RetryPolicy
from bridge.jobs.worker import Interrupted
from bridge.storage.blobs.factory import open_store
from bridge.storage.blobs.protocol import BlobStoreError

log = logging.getLogger("bridge.storage")


class LongtermDeleteHandler:
    """``payload: {"location": tier URL, "keys": [...], "done": n}``."""

    def __init__(self, settings: Settings, sessions: sessionmaker[Session]) -> None:
        self.settings = settings
        self.sessions = sessions

    def __call__(self, job: ClaimedJob, stopping: threading.Event) -> None:
        location = str(job.payload["location"])
        keys = [str(k) for k in job.payload.get("keys", [])]
        done = int(job.payload.get("done", 0))
        store = open_store(location, self.settings)
        for index in range(done, len(keys)):
            if stopping.is_set():
                raise Interrupted()
            try:
                store.delete(keys[index])
            except BlobStoreError as exc:
                self._checkpoint(job, index)
                raise Transient(f"long-term store: {exc}") from exc
            if index % 100 == 99:
                self._checkpoint(job, index + 1)
        log.info("removed %s long-term copies of a deleted study", len(keys) - done)

    def _checkpoint(self, job: ClaimedJob, done: int) -> None:
        with self.sessions() as session:
            queue.checkpoint(session, job, {"done": done})
            session.commit()


#: A store down for days must not end in the failed list: about four days of retries.
RETRY_POLICY = RetryPolicy(max_attempts=100, base_seconds=30.0, max_seconds=3600.0)
