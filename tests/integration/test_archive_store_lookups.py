"""The store's look-ups and counts on both databases: the study, its series and a stored
instance are read in one statement when the study is known (and the instance and its counts
written in one on PostgreSQL), so every branch of that statement is exercised here: a series
or an instance that belongs to another study, a duplicate, the counts it leaves."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydicom.uid import generate_uid
from pynetdicom import dimse_messages
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from bridge.adapters.dicom.storage_scp import storage_service
from bridge.config.settings import Settings
from bridge.errors import Conflict
from bridge.services.archive.store import ArchiveStore, Arrival, DuplicateInstance
from bridge.store.archive_models import Instance, Series, Study
from tests.dicom_factories import UID_ROOT, ct_slice

pytestmark = pytest.mark.integration


def _file(folder: Path, name: str, *, study_uid: str, series_uid: str | None = None,
          number: int = 1, **attributes: Any) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    ds = ct_slice(study_uid=study_uid, series_uid=series_uid, number=number, **attributes)
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID  # as a modality writes it
    path = folder / f"{name}.dcm"
    ds.save_as(path, enforce_file_format=True)
    return path


def _archived(settings: Settings) -> list[Path]:
    return sorted(p for p in settings.archive_root.rglob("*.dcm")
                  if ".incoming" not in p.parts)


def test_counts_of_two_series_in_one_study(
        settings: Settings, session_factory: sessionmaker[Session], tmp_path: Path) -> None:
    store = ArchiveStore(settings, session_factory)
    study_uid = generate_uid(prefix=UID_ROOT)
    series = [generate_uid(prefix=UID_ROOT) for _ in range(2)]
    paths = [_file(tmp_path, f"o{n}", study_uid=study_uid, series_uid=series[n % 2],
                   number=n + 1, Modality=("CT", "PT")[n % 2]) for n in range(5)]
    for path in paths:
        assert store.accept(Arrival(path, disposable=False)).outcome == "stored"
    with session_factory() as session:
        study = session.scalars(select(Study)).one()
        counts = dict(session.execute(select(Series.series_instance_uid,
                                             Series.num_instances)).all())
        sizes = session.scalars(select(Instance.size)).all()
    assert (study.num_instances, study.num_series) == (5, 2)
    assert study.size_bytes == sum(p.stat().st_size for p in paths) == sum(sizes)
    assert set(study.modalities.split("\\")) == {"CT", "PT"}
    assert counts == {series[0]: 3, series[1]: 2}
    assert len(_archived(settings)) == 5


def test_a_series_of_another_study_is_refused_and_nothing_kept(
        settings: Settings, session_factory: sessionmaker[Session], tmp_path: Path) -> None:
    store = ArchiveStore(settings, session_factory)
    first, second = (generate_uid(prefix=UID_ROOT) for _ in range(2))
    series_uid = generate_uid(prefix=UID_ROOT)
    store.accept(Arrival(_file(tmp_path, "a", study_uid=first, series_uid=series_uid),
                         disposable=False))
    store.accept(Arrival(_file(tmp_path, "b", study_uid=second), disposable=False))
    # Both studies are known now: the series is found by the one-statement look-up.
    stray = _file(tmp_path, "c", study_uid=second, series_uid=series_uid, number=2)
    with pytest.raises(Conflict, match="series belongs to another study"):
        store.accept(Arrival(stray, disposable=False))
    with session_factory() as session:
        assert sorted(session.scalars(select(Study.num_instances))) == [1, 1]
        assert session.scalars(select(Series.num_instances).where(
            Series.series_instance_uid == series_uid)).one() == 1
    assert len(_archived(settings)) == 2


@pytest.mark.parametrize("policy", ["ignore", "reject", "replace"])
def test_an_instance_stored_in_another_known_study(
        settings: Settings, session_factory: sessionmaker[Session], tmp_path: Path,
        policy: str) -> None:
    settings = settings.model_copy(update={"store_duplicate_policy": policy})
    store = ArchiveStore(settings, session_factory)
    first, second = (generate_uid(prefix=UID_ROOT) for _ in range(2))
    sop_uid = generate_uid(prefix=UID_ROOT)
    kept = store.accept(Arrival(_file(tmp_path, "a", study_uid=first, SOPInstanceUID=sop_uid),
                                disposable=False))
    store.accept(Arrival(_file(tmp_path, "b", study_uid=second), disposable=False))
    again = _file(tmp_path, "c", study_uid=second, SOPInstanceUID=sop_uid)
    if policy == "ignore":
        stored = store.accept(Arrival(again, disposable=False))
        assert (stored.outcome, stored.study_id, stored.instance_id) == (
            "duplicate", kept.study_id, kept.instance_id)
        assert stored.reconciliation == kept.reconciliation
    else:
        with pytest.raises(DuplicateInstance if policy == "reject" else Conflict):
            store.accept(Arrival(again, disposable=False))
    with session_factory() as session:
        assert sorted(session.scalars(select(Study.num_instances))) == [1, 1]
        assert session.scalars(select(Instance.study_id).where(
            Instance.sop_instance_uid == sop_uid)).one() == kept.study_id
    assert len(_archived(settings)) == 2


def test_received_data_sets_are_written_inside_the_archive(
        settings: Settings, session_factory: sessionmaker[Session]) -> None:
    """pynetdicom's temporary file for a data set being received is created in the
    archive's ``.incoming`` folder: the store then renames it into place (a system
    temporary folder is often another file system, a tmpfs: a copy, held in RAM)."""
    storage_service(settings, session_factory)
    handle = dimse_messages.NamedTemporaryFile(delete=False, mode="wb", suffix=".dcm")
    try:
        path = Path(handle.name)
        assert path.parent == settings.archive_root / ".incoming"
        assert path.stat().st_dev == settings.archive_root.stat().st_dev
    finally:
        handle.close()
        Path(handle.name).unlink()


def test_abandoned_temporary_files_are_swept_and_fresh_ones_kept(
        settings: Settings, session_factory: sessionmaker[Session]) -> None:
    import os
    import time

    store = ArchiveStore(settings, session_factory)
    incoming = store.root / ".incoming"
    incoming.mkdir(parents=True)
    abandoned, in_flight = incoming / "tmpold.dcm", incoming / "tmpnew.dcm"
    abandoned.write_bytes(b"half an object")
    in_flight.write_bytes(b"a transfer under way")
    two_hours_ago = time.time() - 7200
    os.utime(abandoned, (two_hours_ago, two_hours_ago))

    assert store.sweep_incoming() == 1
    assert not abandoned.exists() and in_flight.exists()
