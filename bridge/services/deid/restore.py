"""What comes back from outside, recognised by its pseudonymous UIDs and restored.

- An object the bridge sent, **unchanged** outside (its data set hashes as what was sent,
  whatever the peer did to its file meta): restored byte for byte, the key record's original
  header plus its own pixel data element (or the record's original pixel data when a rule
  blanked it); the result is checked against the original's SHA-256.
- An object the bridge sent but that was **changed** outside, or one **made** outside in a
  study the bridge sent (a consultant's SR, a report): the real patient and study attributes
  and every referenced UID mapped back (:mod:`bridge.mapping.deid.reidentify`); it then goes
  through the normal archive path as a new object.
- Anything else is not the bridge's: a :class:`~bridge.errors.NotFound`.
"""

from __future__ import annotations

import hashlib
import zlib
from dataclasses import dataclass
from io import BytesIO
from typing import Any

from pydicom import dcmread
from pydicom.errors import InvalidDicomError
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from bridge.config.settings import Settings
from bridge.errors import NotFound, Rejected
from bridge.mapping.deid.layout import header_hash
from bridge.mapping.deid.reidentify import reidentify
from bridge.services.deid import records
from bridge.services.deid.keys import MasterKey, master_key, unb64
from bridge.store.audit import append_audit
from bridge.store.deid_models import DeidObject, DeidStudy

ORIGINAL = "original"  # byte for byte what left
CHANGED = "changed"  # ours, changed outside: re-identified
CREATED = "created"  # made outside in one of our studies: re-identified


@dataclass(frozen=True, slots=True)
class Restored:
    kind: str
    data: bytes
    sop_instance_uid: str
    study_instance_uid: str


def original_bytes(raw: bytes, row: DeidObject, record: dict[str, Any]) -> bytes | None:
    """The original, when ``raw`` is what was sent (else None)."""
    tail_length = int(record["tail_length"])
    if row.body_sha256 and header_hash(raw, tail_length) != row.body_sha256:
        return None
    if "tail" in record:
        tail = zlib.decompress(unb64(record["tail"]))
    else:
        tail = raw[len(raw) - tail_length:] if tail_length else b""
    data = zlib.decompress(unb64(record["prefix"])) + tail
    if hashlib.sha256(data).hexdigest() != row.original_sha256:
        return None
    return data


class Restorer:
    def __init__(self, settings: Settings, sessions: sessionmaker[Session]) -> None:
        self.settings = settings
        self.sessions = sessions
        #: Calling AE titles whose C-STOREs are returns (the destinations' peers).
        self.return_aes = frozenset(d.returns_from for d in settings.deid_destinations
                                    if d.returns_from)

    def restore(self, raw: bytes, *, actor: str, source: str,
                master: MasterKey | None = None) -> Restored:
        try:
            header = dcmread(BytesIO(raw), stop_before_pixels=True, force=True)
            sop_uid = str(header.SOPInstanceUID)
            study_uid = str(header.StudyInstanceUID)
        except (InvalidDicomError, AttributeError, ValueError, EOFError):
            raise Rejected("not a DICOM object with study and instance UIDs",
                           location="file") from None
        master = master or master_key(self.settings)
        with self.sessions() as session, session.begin():
            ring = records.KeyRing(session, master)
            restored = self._restore(session, ring, raw, sop_uid, study_uid)
            append_audit(session, actor=actor, action="deid-restore", entity="instance",
                         entity_id=restored.sop_instance_uid,
                         details={"kind": restored.kind, "source": source,
                                  "study": restored.study_instance_uid})
        return restored

    def _restore(self, session: Session, ring: records.KeyRing, raw: bytes, sop_uid: str,
                 study_uid: str) -> Restored:
        row = records.latest_object(session, sop_uid)
        if row is not None:
            data = original_bytes(raw, row, ring.record(row))
            originals = ring.originals(row)
            if data is not None:
                return Restored(ORIGINAL, data, originals["sop"], originals["study"])
            study = session.get(DeidStudy, row.deid_study_id) if row.deid_study_id else None
            if study is None:
                raise NotFound("the study of a returned object is gone", location="study")
            return self._reidentified(session, ring, raw, study, CHANGED)
        study = records.study_by_pseudo_uid(session, study_uid)
        if study is None:
            raise NotFound("not an object of a study this bridge de-identified",
                           location="(0020,000D)")
        return self._reidentified(session, ring, raw, study, CREATED)

    def _reidentified(self, session: Session, ring: records.KeyRing, raw: bytes,
                      study: DeidStudy, kind: str) -> Restored:
        identity = ring.identity(study)
        uids_back: dict[str, str] = {}
        for row in session.execute(select(DeidObject).where(
                DeidObject.deid_study_id == study.id, DeidObject.status == records.SENT)
                ).scalars():
            originals = ring.originals(row)
            uids_back.update({k: v for k, v in originals.items()
                              if k not in ("sop", "series", "study")})
        uids_back[study.pseudo_study_uid] = identity.get("StudyInstanceUID", "")
        ds = dcmread(BytesIO(raw), force=True)
        reidentify(ds, identity, uids_back)
        if "SOPInstanceUID" in ds and hasattr(ds, "file_meta"):
            ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        buffer = BytesIO()
        ds.save_as(buffer, enforce_file_format=False)
        return Restored(kind, buffer.getvalue(), str(ds.SOPInstanceUID),
                        str(ds.StudyInstanceUID))
