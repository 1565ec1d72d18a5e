"""The job worker: claims due jobs and runs the handler registered for their queue.

A worker is one or more plain threads (handlers do blocking work: DICOM associations,
HTTP calls, file reads), started and stopped by the composition root. Between jobs it waits
``poll_seconds`` or until :meth:`JobWorker.wake` is called.

How a handler reports its outcome:

- it returns → the job is ``done``;
- it raises :class:`bridge.errors.Transient` (peer down, timeout, a failure status that can
  pass) → retried with back-off until the queue's ``max_attempts``, then ``failed``;
- it raises another :class:`bridge.errors.BridgeError` → ``failed`` at once (permanent);
- it raises :class:`Interrupted` after seeing ``stopping`` set → the job is released
  untouched (due again, the attempt not counted);
- anything else is a fault of ours or of the database: logged and retried like a transient
  error, so a passing database outage loses nothing and a real bug ends in the failed list.

While a handler runs, the worker renews the job's lease, so a long job is not taken by
another worker; if the process dies, the lease runs out and the job runs again elsewhere.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from typing import Protocol

from sqlalchemy.orm import Session, sessionmaker

from bridge.errors import BridgeError, Transient
from bridge.jobs import queue
from bridge.jobs.queue import ClaimedJob, RetryPolicy

log = logging.getLogger("bridge.jobs")


class Handler(Protocol):
    """Does one job. ``stopping`` is set when the worker is asked to stop: a long handler
    checks it between steps and raises :class:`Interrupted`."""

    def __call__(self, job: ClaimedJob, stopping: threading.Event) -> None: ...


class Interrupted(Exception):
    """Raised by a handler that gave up early because the worker is stopping."""


class JobWorker:
    """Runs jobs of the queues in ``handlers`` on ``threads`` threads until :meth:`stop`."""

    def __init__(self, session_factory: sessionmaker[Session], handlers: Mapping[str, Handler],
                 *, poll_seconds: float = 1.0,
                 policies: Mapping[str, RetryPolicy] | None = None,
                 default_policy: RetryPolicy = RetryPolicy(),
                 lease_seconds: float = queue.DEFAULT_LEASE_SECONDS,
                 threads: int = 1, name: str = "jobs") -> None:
        if not handlers:
            raise ValueError("a job worker needs at least one handler")
        self.session_factory = session_factory
        self.handlers = dict(handlers)
        self.poll_seconds = poll_seconds
        self.policies = {name: (policies or {}).get(name, default_policy) for name in handlers}
        self.lease_seconds = lease_seconds
        self.name = name
        self._thread_count = max(1, threads)
        self._threads: list[threading.Thread] = []
        self._stopping = threading.Event()
        self._wakeup = threading.Event()

    # -------------------------------------------------------------------- lifecycle

    def start(self) -> None:
        if self._threads:
            return
        self._stopping.clear()
        for index in range(self._thread_count):
            thread = threading.Thread(target=self._run, name=f"{self.name}-worker-{index}",
                                      daemon=True)
            thread.start()
            self._threads.append(thread)
        log.info("job worker started", extra={"queues": sorted(self.handlers),
                                              "threads": self._thread_count})

    def stop(self, timeout: float = 30.0) -> None:
        """Ask the threads to stop and wait for them: a running handler finishes its job or
        gives it back (:class:`Interrupted`). A handler still busy after ``timeout`` keeps
        its thread (a daemon); its job runs again when the lease expires."""
        self._stopping.set()
        self._wakeup.set()
        for thread in self._threads:
            thread.join(timeout)
            if thread.is_alive():
                log.warning("job worker thread %s did not stop in %.0f s; its job will run "
                            "again when its lease expires", thread.name, timeout)
        self._threads = []
        log.info("job worker stopped")

    def wake(self) -> None:
        """Look for due jobs now instead of at the next poll (e.g. right after an enqueue)."""
        self._wakeup.set()

    @property
    def running(self) -> bool:
        return any(thread.is_alive() for thread in self._threads)

    # -------------------------------------------------------------------- the loop

    def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                worked = self.run_once()
            except Exception:  # the database is down: wait and try again, never die
                log.warning("job worker could not claim jobs; retrying", exc_info=True)
                worked = False
            if not worked:
                self._wakeup.wait(self.poll_seconds)
                self._wakeup.clear()

    def run_once(self) -> bool:
        """Claim one due job and run it; False when nothing was due (or stopping)."""
        if self._stopping.is_set():
            return False
        claimed = queue.claim(
            self.session_factory, self.handlers, limit=1, lease_seconds=self.lease_seconds,
            max_attempts={name: policy.max_attempts for name, policy in self.policies.items()},
        )
        for job in claimed:
            self._execute(job)
        return bool(claimed)

    def _execute(self, job: ClaimedJob) -> None:
        handler = self.handlers[job.queue]
        log.debug("job %s (%s) attempt %s started", job.id, job.queue, job.attempt)
        with _LeaseKeeper(self.session_factory, job, self.lease_seconds):
            try:
                handler(job, self._stopping)
            except Interrupted:
                self._record(job, "released", lambda s: queue.release(s, job))
                return
            except Transient as exc:
                self._record_failure(job, exc.message, retryable=True)
                return
            except BridgeError as exc:
                self._record_failure(job, exc.message, retryable=False)
                return
            except Exception as exc:
                log.error("job %s (%s) attempt %s raised %s", job.id, job.queue, job.attempt,
                          type(exc).__name__)
                log.debug("job %s failure", job.id, exc_info=True)
                self._record_failure(job, f"internal error: {type(exc).__name__}: {exc}",
                                     retryable=True)
                return
        self._record(job, "done", lambda s: queue.complete(s, job))

    def _record_failure(self, job: ClaimedJob, error: str, *, retryable: bool) -> None:
        policy = self.policies[job.queue]

        def record(session: Session) -> object:
            status = queue.fail(session, job, error=error, retryable=retryable, policy=policy)
            if status == queue.FAILED:
                log.warning("job %s (%s) failed after attempt %s: moved to the failed list",
                            job.id, job.queue, job.attempt)
            elif status == queue.PENDING:
                log.info("job %s (%s) attempt %s failed; will retry", job.id, job.queue,
                         job.attempt)
            return status

        self._record(job, "failure", record)

    def _record(self, job: ClaimedJob, what: str,
                action: _Action) -> None:
        try:
            with self.session_factory() as session, session.begin():
                outcome = action(session)
        except Exception:
            # The outcome is lost with the database; the lease expiry runs the job again.
            log.warning("job %s: could not record %s; it will run again after its lease",
                        job.id, what, exc_info=True)
            return
        if outcome is False or outcome is None:
            log.warning("job %s: lease lost before recording %s (another attempt owns it)",
                        job.id, what)
        else:
            log.debug("job %s: %s recorded", job.id, what)


class _Action(Protocol):
    def __call__(self, session: Session) -> object: ...


class _LeaseKeeper:
    """Renews a job's lease every third of its length while the handler runs."""

    def __init__(self, session_factory: sessionmaker[Session], job: ClaimedJob,
                 lease_seconds: float) -> None:
        self._session_factory = session_factory
        self._job = job
        self._lease_seconds = lease_seconds
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._renew, name=f"lease-{job.id}",
                                        daemon=True)

    def __enter__(self) -> _LeaseKeeper:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._done.set()
        self._thread.join()

    def _renew(self) -> None:
        while not self._done.wait(self._lease_seconds / 3):
            try:
                with self._session_factory() as session, session.begin():
                    if not queue.renew(session, self._job, lease_seconds=self._lease_seconds):
                        log.warning("job %s: lease lost while running", self._job.id)
                        return
            except Exception:
                log.warning("job %s: could not renew its lease", self._job.id, exc_info=True)
