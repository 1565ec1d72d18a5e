"""Races between the store, the stability sweep and an operator's delete on PostgreSQL.

SQLite runs every write transaction under ``BEGIN IMMEDIATE`` (one writer at a time), so
these interleavings cannot happen there; on PostgreSQL (read committed) two transactions
touch the same study row at once, and the store must decide on the row as it is once it
holds it, not as it read it before.
"""

from __future__ import annotations

import threading
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import Connection, Engine, insert, select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from bridge.config.settings import Settings
from bridge.mapping.dicom.index_values import IndexValues, read_index_values
from bridge.services.archive.admin import delete_study
from bridge.services.archive.received import read_received
from bridge.services.archive.stability import mark_stable_studies
from bridge.services.archive.store import ArchiveStore, Arrival, Stored, _IndexJob, _Placed
from bridge.store.archive_models import Instance, Study, StudyEvent
from bridge.store.models import utcnow
from tests.dicom_factories import write_series
from tests.waiting import eventually

pytestmark = pytest.mark.integration


#: These interleavings exist on PostgreSQL only: SQLite serialises writers (BEGIN IMMEDIATE).
postgres_only = pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)


def _blocked_by(engine: Engine, conn: Connection) -> bool:
    """Whether another backend waits on a lock ``conn`` holds (a condition, not a delay)."""
    pid = conn.execute(text("SELECT pg_backend_pid()")).scalar_one()
    with engine.connect() as probe:
        return bool(probe.execute(text(
            "SELECT count(*) FROM pg_stat_activity WHERE :pid = ANY(pg_blocking_pids(pid))"),
            {"pid": pid}).scalar_one())


def _run(target: object) -> tuple[threading.Thread, list[BaseException]]:
    errors: list[BaseException] = []

    def body() -> None:
        try:
            target()  # type: ignore[operator]
        except BaseException as exc:  # reported by the test
            errors.append(exc)

    thread = threading.Thread(target=body, daemon=True)
    thread.start()
    return thread, errors


@postgres_only
def test_object_arriving_while_the_sweep_marks_its_study_stable_reopens_it(
        settings: Settings, session_factory: sessionmaker[Session],
        engine: Engine, tmp_path: Path) -> None:
    store = ArchiveStore(settings, session_factory)
    first = write_series(tmp_path / "a", 1)[0]
    stored = store.accept(Arrival(first, disposable=False))
    study_uid = read_received(first)[0].StudyInstanceUID
    late = write_series(tmp_path / "b", 1, study_uid=study_uid)[0]

    with session_factory() as sweep, sweep.begin():
        marked = mark_stable_studies(sweep, stable_seconds=60,
                                     now=utcnow() + timedelta(seconds=61))
        assert marked == [stored.study_id]
        thread, errors = _run(lambda: store.accept(Arrival(late, disposable=False)))
        eventually(lambda: _blocked_by(engine, sweep.connection()), timeout=20, interval=0.02)
    thread.join(20)
    assert not thread.is_alive() and not errors

    with session_factory() as session:
        study = session.get(Study, stored.study_id)
        assert study is not None
        kinds = list(session.scalars(select(StudyEvent.kind).where(
            StudyEvent.study_id == stored.study_id).order_by(StudyEvent.id)))
    # The late object came after the study was stable: it must be open again, so the next
    # quiet period makes it stable (and forwards/publishes it) with that object.
    assert (study.state, study.num_instances, kinds) == ("receiving", 2, ["stable", "reopened"])


@postgres_only
def test_delete_waits_for_an_object_being_indexed_and_removes_it_too(
        settings: Settings, session_factory: sessionmaker[Session],
        engine: Engine, tmp_path: Path) -> None:
    store = ArchiveStore(settings, session_factory)
    first, late = write_series(tmp_path / "a", 2)  # one series
    store.accept(Arrival(first, disposable=False))
    study_uid = str(read_received(first)[0].StudyInstanceUID)
    late_header, late_syntax = read_received(late)
    values = read_index_values(late_header, transfer_syntax_uid=late_syntax)
    placed = _Placed("late.dcm", late.stat().st_size, "0" * 64)
    deleted: list[str] = []

    def operator_delete() -> None:
        with session_factory() as session, session.begin():
            deleted.extend(delete_study(session, study_uid=study_uid, actor="test",
                                        reason="wrong patient"))

    # The store's own index transaction for the late object, held open.
    with engine.begin() as indexing:
        store._index(indexing, values, placed, None, "CT1")
        thread, errors = _run(operator_delete)
        eventually(lambda: _blocked_by(engine, indexing), timeout=20, interval=0.02)
    thread.join(20)
    assert not thread.is_alive() and not errors, errors

    with session_factory() as session:
        left = session.scalars(select(Instance.path)).all()
        studies = session.scalars(select(Study.id)).all()
    # Nothing left pointing at a deleted study, and the late file is in the list to remove.
    assert (left, studies) == ([], [])
    assert "late.dcm" in deleted and len(deleted) == 2


class _RaceLoser(ArchiveStore):
    """A store whose index rows for one object the database refuses on every attempt, as
    for the loser of a unique-key race that keeps losing (a NOT NULL violation here: a
    real IntegrityError from the database, not a fake)."""

    loser = ""

    def _index(self, conn: Connection, values: IndexValues, placed: _Placed,
               codec: str | None, calling_ae: str) -> tuple[Stored, str | None]:
        if values.sop_instance_uid == self.loser:
            conn.execute(insert(Study).values(study_instance_uid=None))
        return super()._index(conn, values, placed, codec, calling_ae)


def test_an_object_failing_its_retry_does_not_fail_the_objects_committed_with_it(
        settings: Settings, session_factory: sessionmaker[Session], tmp_path: Path) -> None:
    store = _RaceLoser(settings, session_factory)
    good, bad = (write_series(tmp_path / name, 1)[0] for name in ("good", "bad"))
    jobs = []
    for path in (good, bad):
        header, syntax = read_received(path)
        values = read_index_values(header, transfer_syntax_uid=syntax)
        jobs.append(_IndexJob(values, store._place(Arrival(path, disposable=False), values),
                              None, "CT1"))
    store.loser = jobs[1].values.sop_instance_uid

    outcomes = store._index_batch(jobs)

    # The batch committed the good object: it must be answered as stored (the caller keeps
    # its file), and only the refused one fails (the caller removes its file).
    assert isinstance(outcomes[0], tuple) and outcomes[0][0].outcome == "stored"
    assert isinstance(outcomes[1], IntegrityError)
    with session_factory() as session:
        assert session.scalars(select(Instance.sop_instance_uid)).all() == [
            jobs[0].values.sop_instance_uid]


class _OutOfRange(ArchiveStore):
    """A store whose rows for one object hold a value the database refuses (DataError on
    PostgreSQL, as an over-long value the index did not cut would be)."""

    refused = ""

    def _index(self, conn: Connection, values: IndexValues, placed: _Placed,
               codec: str | None, calling_ae: str) -> tuple[Stored, str | None]:
        if values.sop_instance_uid == self.refused:
            conn.execute(text("SELECT CAST('x' AS integer)"))
        return super()._index(conn, values, placed, codec, calling_ae)


@postgres_only
def test_a_value_the_database_refuses_fails_only_its_own_object(
        settings: Settings, session_factory: sessionmaker[Session],
        tmp_path: Path) -> None:
    store = _OutOfRange(settings, session_factory)
    paths = [write_series(tmp_path / name, 1)[0] for name in ("first", "bad", "last")]
    jobs = []
    for path in paths:
        header, syntax = read_received(path)
        values = read_index_values(header, transfer_syntax_uid=syntax)
        jobs.append(_IndexJob(values, store._place(Arrival(path, disposable=False), values),
                              None, "CT1"))
    store.refused = jobs[1].values.sop_instance_uid

    outcomes = store._index_batch(jobs)

    assert [type(o).__name__ for o in outcomes] == ["tuple", "DataError", "tuple"]
    with session_factory() as session:
        assert sorted(session.scalars(select(Instance.sop_instance_uid)).all()) == sorted(
            (jobs[0].values.sop_instance_uid, jobs[2].values.sop_instance_uid))
