"""``kill -9`` of ``bridge serve`` while 4 associations send C-STORE objects, several times,
then a restart, on both databases: every object answered with success is indexed, its file
is there and hashes to the index's SHA-256 and holds the pixels sent; after the restart
sweep no file lies in the archive that no row names, and no row names a missing file.

CI sends 1,000 objects with 3 kills; ``make crash`` sends 4,000 with 5
(``BRIDGE_CRASH_OBJECTS``, ``BRIDGE_CRASH_KILLS``; ``BRIDGE_CRASH_SEED`` replays a run).
"""

from __future__ import annotations

import hashlib
import os
import random
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from pynetdicom import AE
from pynetdicom.association import Association
from pynetdicom.sop_class import CTImageStorage  # type: ignore[attr-defined]
from sqlalchemy import select

from bridge.store.archive_models import Instance
from bridge.store.db import make_engine, make_session_factory
from tests.dicom_factories import UID_ROOT, ct_slice
from tests.process_harness import bridge_process, kill_at_random_moments

pytestmark = pytest.mark.integration
ASSOCIATIONS = 4
OBJECTS = int(os.environ.get("BRIDGE_CRASH_OBJECTS", "1000"))
KILLS = int(os.environ.get("BRIDGE_CRASH_KILLS", "3"))
DEADLINE = 300.0


@dataclass
class Modality:
    objects: list[Dataset]
    port: int
    stored: set[str] = field(default_factory=set)
    retries: int = 0
    failure: BaseException | None = None

    def run(self) -> None:
        deadline = time.monotonic() + DEADLINE
        ae = AE(ae_title="CT_CRASH")
        ae.add_requested_context(CTImageStorage, ExplicitVRLittleEndian)
        assoc: Association | None = None
        try:
            for ds in self.objects:
                while ds.SOPInstanceUID not in self.stored:
                    if time.monotonic() > deadline:
                        raise TimeoutError(f"{ds.SOPInstanceUID} never stored")
                    if assoc is None or not assoc.is_established:
                        assoc = ae.associate("127.0.0.1", self.port, ae_title="BRIDGE")
                        if not assoc.is_established:
                            assoc = None
                            self.retries += 1
                            time.sleep(0.1)
                            continue
                    answer = assoc.send_c_store(ds)
                    if answer and getattr(answer, "Status", None) == 0x0000:
                        self.stored.add(ds.SOPInstanceUID)
                    else:  # no answer (the bridge died) or a failure: send it again
                        self.retries += 1
                        assoc.abort()
                        assoc = None
        except BaseException as exc:  # reported by the test
            self.failure = exc
        finally:
            if assoc is not None and assoc.is_established:
                assoc.release()


def test_kill_9_during_c_store_keeps_every_acknowledged_object(
        tmp_path: Path, database_url: str) -> None:
    seed = int(os.environ.get("BRIDGE_CRASH_SEED", str(random.randrange(1 << 30))))
    rng = random.Random(seed)
    study = generate_uid(prefix=UID_ROOT)
    series = generate_uid(prefix=UID_ROOT)
    objects = [ct_slice(study_uid=study, series_uid=series, number=n, rows=64, columns=64)
               for n in range(1, OBJECTS + 1)]
    sent = {ds.SOPInstanceUID: bytes(ds.PixelData) for ds in objects}
    with bridge_process(tmp_path / "var", database_url,
                        BRIDGE_STUDY_STABLE_SECONDS="3600") as bridge:
        modalities = [Modality(objects[i::ASSOCIATIONS], bridge.ports["dicom"])
                      for i in range(ASSOCIATIONS)]
        threads = [threading.Thread(target=m.run) for m in modalities]
        for thread in threads:
            thread.start()
        kill_at_random_moments(bridge, lambda: sum(len(x.stored) for x in modalities),
                               sum(len(x.objects) for x in modalities), rng, KILLS)
        for thread in threads:
            thread.join(DEADLINE)
        assert [m.failure for m in modalities if m.failure] == [], f"seed {seed}"
        # The start after the last kill sweeps, in the background, what that kill left.
        deadline = time.monotonic() + 120
        while "after an unclean stop" not in bridge.log_path.read_text("utf-8"):
            assert time.monotonic() < deadline, "the orphan sweep never ran"
            time.sleep(0.1)
        assert bridge.stop() == 0
    assert sum(m.retries for m in modalities) >= KILLS, "the kills hit nothing on the way"
    archive = tmp_path / "var" / "archive"
    engine = make_engine(database_url)
    try:
        with make_session_factory(engine)() as session:
            rows = session.execute(select(Instance.sop_instance_uid, Instance.path,
                                          Instance.sha256)).all()
    finally:
        engine.dispose()
    indexed = {row.sop_instance_uid: row for row in rows}
    assert set(indexed) == set(sent), f"seed {seed}"
    for uid, row in indexed.items():
        data = (archive / row.path).read_bytes()
        assert hashlib.sha256(data).hexdigest() == row.sha256, f"seed {seed}: {uid}"
        assert bytes(pydicom.dcmread(archive / row.path).PixelData) == sent[uid]
    on_disk = {str(p.relative_to(archive)) for p in archive.rglob("*")
               if p.is_file() and ".incoming" not in p.parts}
    assert on_disk == {row.path for row in rows}, f"seed {seed}: orphans or missing files"
