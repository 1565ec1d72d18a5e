"""The durable job queue and worker (bridge.jobs) on SQLite and PostgreSQL.

Times are passed explicitly (``now=``) wherever the queue takes them, so back-off and lease
expiry are checked without sleeping; worker tests poll for outcomes with a generous deadline.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from bridge.errors import Conflict, NotFound, Rejected, Transient
from bridge.jobs import queue
from bridge.jobs.queue import ClaimedJob, RetryPolicy
from bridge.jobs.worker import Interrupted, JobWorker
from bridge.store.archive_models import AuditRecord, Job

pytestmark = pytest.mark.integration

T0 = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
POLICY = RetryPolicy(max_attempts=3, base_seconds=10.0, max_seconds=100.0, jitter=0.0)
FAST = RetryPolicy(max_attempts=3, base_seconds=0.05, max_seconds=0.2)
DEADLINE = 30.0


def add(session_factory: sessionmaker[Session], *, queue_name: str = "q", key: str | None = None,
        payload: dict[str, object] | None = None, now: datetime = T0) -> int:
    with session_factory() as session, session.begin():
        return queue.enqueue(session, queue=queue_name, payload=payload or {}, dedup_key=key,
                             now=now)


def job_row(session_factory: sessionmaker[Session], job_id: int) -> Job:
    with session_factory() as session:
        job = session.get(Job, job_id)
        assert job is not None
        return job


def claim_one(session_factory: sessionmaker[Session], now: datetime, **kwargs: object
              ) -> ClaimedJob | None:
    claimed = queue.claim(session_factory, ["q"], limit=1, now=now, **kwargs)  # type: ignore[arg-type]
    return claimed[0] if claimed else None


def aware(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


def wait_for(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + DEADLINE
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.02)


# ------------------------------------------------------------------- enqueue and claim


def test_enqueue_claim_complete(session_factory: sessionmaker[Session]) -> None:
    job_id = add(session_factory, payload={"study_id": 7})
    job = claim_one(session_factory, T0)
    assert job is not None
    assert (job.id, job.queue, job.payload, job.attempt) == (job_id, "q", {"study_id": 7}, 1)
    assert claim_one(session_factory, T0) is None  # running, lease not expired
    with session_factory() as session, session.begin():
        assert queue.complete(session, job)
    row = job_row(session_factory, job_id)
    assert (row.status, row.attempts, row.last_error) == ("done", 1, None)
    assert claim_one(session_factory, T0 + timedelta(days=1)) is None


def test_only_named_queues_and_due_jobs_are_claimed(
        session_factory: sessionmaker[Session]) -> None:
    add(session_factory, queue_name="other")
    with session_factory() as session, session.begin():
        later = queue.enqueue(session, queue="q", payload={}, delay=60, now=T0)
    assert claim_one(session_factory, T0) is None
    job = claim_one(session_factory, T0 + timedelta(seconds=60))
    assert job is not None and job.id == later


def test_pending_jobs_with_one_key_coalesce(session_factory: sessionmaker[Session]) -> None:
    first = add(session_factory, key="forward:1:PACS", payload={"v": 1})
    second = add(session_factory, key="forward:1:PACS", payload={"v": 2})
    other = add(session_factory, key="forward:2:PACS", payload={"v": 1})
    assert first == second != other
    assert job_row(session_factory, first).payload == {"v": 2}  # the latest state wins
    running = claim_one(session_factory, T0)
    assert running is not None and running.id == first
    # A running job may have read the old state: a change now needs a new job.
    third = add(session_factory, key="forward:1:PACS", payload={"v": 3})
    assert third not in (first, other)
    assert add(session_factory, key="forward:1:PACS", payload={"v": 4}) == third


def test_coalescing_never_postpones_a_due_job(session_factory: sessionmaker[Session]) -> None:
    with session_factory() as session, session.begin():
        job_id = queue.enqueue(session, queue="q", payload={}, dedup_key="k", delay=300, now=T0)
    with session_factory() as session, session.begin():
        assert queue.enqueue(session, queue="q", payload={}, dedup_key="k", now=T0) == job_id
    with session_factory() as session, session.begin():
        assert queue.enqueue(session, queue="q", payload={}, dedup_key="k", delay=900,
                             now=T0) == job_id
    assert aware(job_row(session_factory, job_id).next_attempt_at) == T0


def test_concurrent_workers_claim_each_job_once(session_factory: sessionmaker[Session]) -> None:
    with session_factory() as session, session.begin():
        ids = {queue.enqueue(session, queue="q", payload={"n": n}, now=T0) for n in range(40)}
    taken: list[int] = []
    lock = threading.Lock()
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            while True:
                jobs = queue.claim(session_factory, ["q"], limit=3, now=T0)
                if not jobs:
                    return
                with lock:
                    taken.extend(job.id for job in jobs)
        except BaseException as exc:  # reported below, not lost in the thread
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(DEADLINE)
    assert not errors
    assert Counter(taken) == Counter(ids)  # every job once, none twice


# ------------------------------------------------------------------- failures


def test_retryable_failure_backs_off_then_dead_letters(
        session_factory: sessionmaker[Session]) -> None:
    job_id = add(session_factory)
    now = T0
    for attempt, delay in ((1, 10.0), (2, 20.0)):
        job = claim_one(session_factory, now)
        assert job is not None and job.attempt == attempt
        with session_factory() as session, session.begin():
            status = queue.fail(session, job, error="peer down", retryable=True,
                                policy=POLICY, now=now)
        assert status == "pending"
        row = job_row(session_factory, job_id)
        assert aware(row.next_attempt_at) == now + timedelta(seconds=delay)
        assert row.last_error == "peer down"
        # Not due before its back-off ends.
        assert claim_one(session_factory, now + timedelta(seconds=delay - 1)) is None
        now += timedelta(seconds=delay)
    job = claim_one(session_factory, now)
    assert job is not None and job.attempt == 3
    with session_factory() as session, session.begin():
        assert queue.fail(session, job, error="still down", retryable=True, policy=POLICY,
                          now=now) == "failed"
    row = job_row(session_factory, job_id)
    assert (row.status, row.attempts, row.last_error) == ("failed", 3, "still down")
    assert claim_one(session_factory, now + timedelta(days=365)) is None


def test_permanent_failure_dead_letters_at_once(session_factory: sessionmaker[Session]) -> None:
    job_id = add(session_factory)
    job = claim_one(session_factory, T0)
    assert job is not None
    with session_factory() as session, session.begin():
        assert queue.fail(session, job, error="unknown destination", retryable=False,
                          policy=POLICY, now=T0) == "failed"
    assert job_row(session_factory, job_id).status == "failed"


def test_a_newer_pending_job_supersedes_a_failing_one(
        session_factory: sessionmaker[Session]) -> None:
    first = add(session_factory, key="k", payload={"v": 1})
    job = claim_one(session_factory, T0)
    assert job is not None
    newer = add(session_factory, key="k", payload={"v": 2})
    with session_factory() as session, session.begin():
        assert queue.fail(session, job, error="peer down", retryable=True, policy=POLICY,
                          now=T0) == "done"
    row = job_row(session_factory, first)
    assert row.status == "done" and row.last_error is not None
    assert f"superseded by job {newer}" in row.last_error
    assert job_row(session_factory, newer).status == "pending"


def test_checkpoint_keeps_progress_for_the_retry(session_factory: sessionmaker[Session]) -> None:
    add(session_factory, payload={"study_id": 1})
    job = claim_one(session_factory, T0)
    assert job is not None
    with session_factory() as session, session.begin():
        assert queue.checkpoint(session, job, {"sent": [1, 2]})
        queue.fail(session, job, error="x", retryable=True, policy=POLICY, now=T0)
    retry = claim_one(session_factory, T0 + timedelta(seconds=10))
    assert retry is not None and retry.payload == {"study_id": 1, "sent": [1, 2]}


# ------------------------------------------------------------------- leases


def test_an_expired_lease_makes_the_job_due_again_and_fences_the_old_worker(
        session_factory: sessionmaker[Session]) -> None:
    job_id = add(session_factory)
    abandoned = claim_one(session_factory, T0, lease_seconds=30)
    assert abandoned is not None
    assert claim_one(session_factory, T0 + timedelta(seconds=29)) is None
    retry = claim_one(session_factory, T0 + timedelta(seconds=31), lease_seconds=30)
    assert retry is not None and (retry.id, retry.attempt) == (job_id, 2)
    with session_factory() as session, session.begin():
        # The first worker comes back late: none of its writes may land.
        assert not queue.complete(session, abandoned)
        assert queue.fail(session, abandoned, error="late", retryable=False,
                          policy=POLICY) is None
        assert not queue.checkpoint(session, abandoned, {"x": 1})
        assert not queue.renew(session, abandoned)
    with session_factory() as session, session.begin():
        assert queue.renew(session, retry, lease_seconds=60, now=T0 + timedelta(seconds=40))
    assert claim_one(session_factory, T0 + timedelta(seconds=95)) is None  # renewed lease
    with session_factory() as session, session.begin():
        assert queue.complete(session, retry)
    row = job_row(session_factory, job_id)
    assert (row.status, row.attempts) == ("done", 2)


def test_a_job_abandoned_on_its_last_attempt_is_dead_lettered(
        session_factory: sessionmaker[Session]) -> None:
    job_id = add(session_factory)
    now = T0
    for _ in range(POLICY.max_attempts):
        job = claim_one(session_factory, now, lease_seconds=30,
                        max_attempts={"q": POLICY.max_attempts})
        assert job is not None
        now += timedelta(seconds=31)  # the worker died each time (kill -9)
    assert claim_one(session_factory, now, max_attempts={"q": POLICY.max_attempts}) is None
    row = job_row(session_factory, job_id)
    assert row.status == "failed" and row.last_error is not None
    assert "lease expired" in row.last_error


# ------------------------------------------------------------------- operators


def test_requeue_resets_the_job_and_is_audited(session_factory: sessionmaker[Session]) -> None:
    job_id = add(session_factory)
    job = claim_one(session_factory, T0)
    assert job is not None
    with session_factory() as session, session.begin(), pytest.raises(Conflict):
        queue.requeue(session, job_id, "token 1")  # still running
    with session_factory() as session, session.begin():
        queue.fail(session, job, error="bad", retryable=False, policy=POLICY, now=T0)
    later = T0 + timedelta(hours=1)
    with session_factory() as session, session.begin():
        queue.requeue(session, job_id, "token 1", now=later)
    row = job_row(session_factory, job_id)
    assert (row.status, row.attempts, aware(row.next_attempt_at)) == ("pending", 0, later)
    with session_factory() as session:
        audit = session.execute(select(AuditRecord)).scalar_one()
        assert (audit.actor, audit.action, audit.entity, audit.entity_id) == (
            "token 1", "requeue", "job", str(job_id))
        assert audit.details["status"] == "failed"
    retry = claim_one(session_factory, later)
    assert retry is not None and retry.attempt == 1
    with session_factory() as session, session.begin(), pytest.raises(NotFound):
        queue.requeue(session, 999999, "token 1")


def test_requeue_all_failed_of_one_queue(session_factory: sessionmaker[Session]) -> None:
    ids = [add(session_factory, queue_name=name) for name in ("q", "q", "other")]
    for name in ("q", "q", "other"):
        (job,) = queue.claim(session_factory, [name], limit=1, now=T0)
        with session_factory() as session, session.begin():
            queue.fail(session, job, error="x", retryable=False, policy=POLICY, now=T0)
    with session_factory() as session, session.begin():
        assert queue.requeue_failed(session, queue="q", actor="token 2") == ids[:2]
        assert queue.count_jobs(session, queue="q")["pending"] == 2
        assert queue.count_jobs(session, queue="other")["failed"] == 1
    with session_factory() as session:
        assert len(session.execute(select(AuditRecord)).scalars().all()) == 2


# ------------------------------------------------------------------- the worker


class Recorder:
    """A handler whose behaviour per call is scripted: an exception to raise or None."""

    def __init__(self, *script: BaseException | None) -> None:
        self.script = list(script)
        self.calls: list[ClaimedJob] = []

    def __call__(self, job: ClaimedJob, stopping: threading.Event) -> None:
        self.calls.append(job)
        outcome = self.script.pop(0) if self.script else None
        if outcome is not None:
            raise outcome


@pytest.fixture
def run_worker(session_factory: sessionmaker[Session]
               ) -> Iterator[Callable[..., JobWorker]]:
    workers: list[JobWorker] = []

    def start(handlers: dict[str, object], **kwargs: object) -> JobWorker:
        worker = JobWorker(session_factory, handlers, poll_seconds=0.05,  # type: ignore[arg-type]
                           **kwargs)  # type: ignore[arg-type]
        worker.start()
        workers.append(worker)
        return worker

    yield start
    for worker in workers:
        worker.stop()


def status_of(session_factory: sessionmaker[Session], job_id: int) -> str:
    return job_row(session_factory, job_id).status


def test_worker_retries_transient_errors_until_done(
        session_factory: sessionmaker[Session], run_worker: Callable[..., JobWorker]) -> None:
    handler = Recorder(Transient("peer down"), RuntimeError("database hiccup"), None)
    job_id = add(session_factory, payload={"n": 1}, now=queue.utcnow())
    run_worker({"q": handler}, default_policy=FAST)
    wait_for(lambda: status_of(session_factory, job_id) == "done", "the job to be done")
    assert [call.attempt for call in handler.calls] == [1, 2, 3]
    assert job_row(session_factory, job_id).attempts == 3


def test_worker_dead_letters_permanent_errors_and_exhausted_retries(
        session_factory: sessionmaker[Session], run_worker: Callable[..., JobWorker]) -> None:
    permanent = Recorder(Rejected("unknown destination"))
    flaky = Recorder(*(Transient("down") for _ in range(10)))
    bad = add(session_factory, queue_name="a", now=queue.utcnow())
    exhausted = add(session_factory, queue_name="b", now=queue.utcnow())
    run_worker({"a": permanent, "b": flaky}, policies={"a": FAST, "b": FAST})
    wait_for(lambda: status_of(session_factory, bad) == "failed", "a permanent failure")
    wait_for(lambda: status_of(session_factory, exhausted) == "failed", "retries to run out")
    assert len(permanent.calls) == 1
    assert len(flaky.calls) == FAST.max_attempts
    assert job_row(session_factory, bad).last_error == "unknown destination"


def test_worker_reruns_a_job_whose_worker_died(
        session_factory: sessionmaker[Session], run_worker: Callable[..., JobWorker]) -> None:
    job_id = add(session_factory, now=queue.utcnow())
    # A worker took the job and died (kill -9): no outcome, a short lease left to run out.
    (abandoned,) = queue.claim(session_factory, ["q"], limit=1, lease_seconds=0.5)
    handler = Recorder(None)
    run_worker({"q": handler})
    wait_for(lambda: status_of(session_factory, job_id) == "done", "the abandoned job to rerun")
    assert [call.attempt for call in handler.calls] == [abandoned.attempt + 1]


def test_worker_renews_the_lease_of_a_long_job(
        session_factory: sessionmaker[Session], run_worker: Callable[..., JobWorker]) -> None:
    job_id = add(session_factory, now=queue.utcnow())
    started, finish = threading.Event(), threading.Event()
    calls: list[int] = []

    def slow(job: ClaimedJob, stopping: threading.Event) -> None:
        calls.append(job.attempt)
        started.set()
        finish.wait(DEADLINE)

    run_worker({"q": slow}, lease_seconds=0.3)
    assert started.wait(DEADLINE)
    # Well past several lease lengths, another claimer still finds nothing due.
    lease_end = aware(job_row(session_factory, job_id).next_attempt_at)
    wait_for(lambda: aware(job_row(session_factory, job_id).next_attempt_at) > lease_end,
             "the lease to be renewed")
    assert queue.claim(session_factory, ["q"], limit=1) == []
    finish.set()
    wait_for(lambda: status_of(session_factory, job_id) == "done", "the slow job to finish")
    assert calls == [1]


def test_stopping_releases_an_interrupted_job(
        session_factory: sessionmaker[Session], run_worker: Callable[..., JobWorker]) -> None:
    job_id = add(session_factory, now=queue.utcnow())
    started = threading.Event()

    def patient(job: ClaimedJob, stopping: threading.Event) -> None:
        started.set()
        stopping.wait(DEADLINE)
        raise Interrupted

    worker = run_worker({"q": patient})
    assert started.wait(DEADLINE)
    worker.stop()
    assert not worker.running
    row = job_row(session_factory, job_id)
    assert (row.status, row.attempts) == ("pending", 0)  # handed back, attempt not counted
