"""The key records in the database: destinations' secrets, exports' data keys, studies'
identities and objects' records, sealed and opened here and nowhere else."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from bridge.errors import NotFound
from bridge.services.deid.engine import Prepared
from bridge.services.deid.keys import MasterKey, new_key, seal, unseal
from bridge.store.deid_models import DeidDestinationKey, DeidExport, DeidObject, DeidStudy
from bridge.store.models import utcnow

SENDING = "sending"
SENT = "sent"
HELD = "held"
FAILED = "failed"


def destination_secret(session: Session, name: str, master: MasterKey) -> bytes:
    """The destination's pseudonym secret, made (and wrapped) on its first export."""
    row = session.execute(select(DeidDestinationKey).where(DeidDestinationKey.name == name)
                          ).scalar_one_or_none()
    if row is None:
        secret = new_key()
        session.add(DeidDestinationKey(name=name, wrapped_secret=master.wrap(
            secret, _secret_purpose(name)), key_id=master.kid))
        session.flush()
        return secret
    return master.unwrap(row.wrapped_secret, _secret_purpose(name), row.key_id)


def new_export(session: Session, master: MasterKey, *, destination: str, source: str,
               actor: str, options: tuple[str, ...], study_id: int | None = None) -> DeidExport:
    export = DeidExport(destination=destination, study_id=study_id, source=source, actor=actor,
                        options=list(options), wrapped_key=b"", key_id=master.kid)
    session.add(export)
    session.flush()
    export.wrapped_key = master.wrap(new_key(), _export_purpose(export.id))
    return export


def data_key(export: DeidExport, master: MasterKey) -> bytes:
    return master.unwrap(export.wrapped_key, _export_purpose(export.id), export.key_id)


def save_object(session: Session, export: DeidExport, key: bytes, prepared: Prepared, *,
                instance_id: int | None = None,
                studies: dict[str, int] | None = None) -> DeidObject:
    """The object's row with its sealed record, ``sending`` until :func:`mark_sent`; the
    study's row (identity sealed) the first time the destination sees the study.
    ``studies``: pseudonymous study UID → row id already looked up (a batch shares it)."""
    study_id: int | None = None
    if prepared.status != HELD:
        known = studies.get(prepared.pseudo_study_uid) if studies is not None else None
        study_id = known or _study_row(session, export, key, prepared).id
        if studies is not None:
            studies[prepared.pseudo_study_uid] = study_id
    row = DeidObject(
        export_id=export.id, deid_study_id=study_id, instance_id=instance_id,
        status=SENDING if prepared.status != HELD else HELD, reason=prepared.reason,
        pseudo_sop_uid=prepared.pseudo_sop_uid or None,
        pseudo_series_uid=prepared.pseudo_series_uid or None,
        sop_class_uid=prepared.sop_class_uid or None,
        original_sha256=prepared.original_sha256, body_sha256=prepared.body_sha256,
        size=len(prepared.output),
        record=seal(key, prepared.record, f"object:{prepared.pseudo_sop_uid}")
        if prepared.status != HELD else None,
        originals=seal(key, prepared.originals, f"originals:{prepared.pseudo_sop_uid}")
        if prepared.status != HELD else None,
    )
    session.add(row)
    return row


def _study_row(session: Session, export: DeidExport, key: bytes, prepared: Prepared
               ) -> DeidStudy:
    found = session.execute(select(DeidStudy).where(
        DeidStudy.destination == export.destination,
        DeidStudy.pseudo_study_uid == prepared.pseudo_study_uid)).scalar_one_or_none()
    if found is not None:
        return found
    study = DeidStudy(
        destination=export.destination, pseudo_study_uid=prepared.pseudo_study_uid,
        pseudo_patient=prepared.pseudo_patient, export_id=export.id,
        identity=seal(key, prepared.identity,
                      _identity_bound(export.destination, prepared.pseudo_study_uid)),
        shift_days=prepared.shift_days)
    session.add(study)
    session.flush()
    return study


def mark_sent(session: Session, object_ids: list[int], locations: list[str]) -> None:
    """One statement for the batch (an UPDATE by primary key, executed many)."""
    session.execute(update(DeidObject), [
        {"id": object_id, "status": SENT, "location": location}
        for object_id, location in zip(object_ids, locations, strict=True)])


def mark_failed(session: Session, object_ids: list[int], reason: str) -> None:
    session.execute(update(DeidObject).where(DeidObject.id.in_(object_ids)).values(
        status=FAILED, reason=reason[:2000]))


def finish_export(session: Session, export: DeidExport) -> None:
    counts = {status: 0 for status in (SENT, HELD, FAILED, SENDING)}
    for status in session.execute(select(DeidObject.status).where(
            DeidObject.export_id == export.id)).scalars():
        counts[status] = counts.get(status, 0) + 1
    export.sent, export.held, export.failed = counts[SENT], counts[HELD], counts[FAILED]
    export.status = "done" if not (export.held or export.failed or counts[SENDING]) else \
        "partial" if export.sent else "failed"
    export.finished_at = utcnow()


def latest_object(session: Session, pseudo_sop_uid: str) -> DeidObject | None:
    return session.execute(
        select(DeidObject).where(DeidObject.pseudo_sop_uid == pseudo_sop_uid,
                                 DeidObject.status == SENT)
        .order_by(DeidObject.id.desc()).limit(1)).scalar_one_or_none()


def study_by_pseudo_uid(session: Session, pseudo_study_uid: str) -> DeidStudy | None:
    return session.execute(select(DeidStudy).where(
        DeidStudy.pseudo_study_uid == pseudo_study_uid).limit(1)).scalar_one_or_none()


class KeyRing:
    """Opens records with the master key, unwrapping each export's data key once."""

    def __init__(self, session: Session, master: MasterKey) -> None:
        self.session = session
        self.master = master
        self._keys: dict[int, bytes] = {}

    def key_of(self, export_id: int) -> bytes:
        if export_id not in self._keys:
            export = self.session.get(DeidExport, export_id)
            if export is None:
                raise NotFound(f"de-identified export {export_id} is gone", location="export")
            self._keys[export_id] = data_key(export, self.master)
        return self._keys[export_id]

    def record(self, row: DeidObject) -> dict[str, Any]:
        assert row.record is not None
        return unseal(self.key_of(row.export_id), row.record, f"object:{row.pseudo_sop_uid}")

    def originals(self, row: DeidObject) -> dict[str, str]:
        assert row.originals is not None
        return unseal(self.key_of(row.export_id), row.originals,
                      f"originals:{row.pseudo_sop_uid}")

    def identity(self, study: DeidStudy) -> dict[str, str]:
        return unseal(self.key_of(study.export_id), study.identity,
                      _identity_bound(study.destination, study.pseudo_study_uid))


@dataclass(frozen=True, slots=True)
class Rotated:
    destinations: int
    exports: int


def rotate(session: Session, old: MasterKey, new: MasterKey) -> Rotated:
    """Re-wrap every key wrapped by ``old`` with ``new``, in the caller's transaction; a row
    ``old`` does not open stops it all (nothing is half rotated)."""
    counts = []
    for model, column, purpose_of in (
            (DeidDestinationKey, "wrapped_secret", lambda row: _secret_purpose(row.name)),
            (DeidExport, "wrapped_key", lambda row: _export_purpose(row.id))):
        count = 0
        for row in _rows(session, model, old.kid):
            purpose = purpose_of(row)
            plain = old.unwrap(getattr(row, column), purpose, row.key_id)
            setattr(row, column, new.wrap(plain, purpose))
            row.key_id = new.kid
            count += 1
        counts.append(count)
    return Rotated(destinations=counts[0], exports=counts[1])


def _rows(session: Session, model: Any, kid: str) -> Iterator[Any]:
    yield from session.execute(select(model).where(model.key_id == kid)).scalars()


def foreign_keys(session: Session, kid: str) -> int:
    """How many wrapped keys another master key made (a rotation left half-way, a wrong
    key configured)."""
    return sum(len(session.execute(select(model.id).where(model.key_id != kid)).all())
               for model in (DeidDestinationKey, DeidExport))


def _secret_purpose(name: str) -> str:
    return f"destination-secret:{name}"


def _export_purpose(export_id: int) -> str:
    return f"export-key:{export_id}"


def _identity_bound(destination: str, pseudo_study_uid: str) -> str:
    return f"study:{destination}:{pseudo_study_uid}"
