"""Objects leaving the bridge carry what the database says now, not what the file says.

Every way out (C-MOVE, C-GET, WADO-RS, forwarding) goes through here:

1. :func:`load_subjects` reads the MIS values of the studies involved, two queries per
   batch of studies (never one per instance), following a merged patient (ADT A40) to the
   survivor: ``coalesce(patients.merged_into_id, patients.id)``.
2. :func:`egress_dataset` (a whole :class:`~pydicom.dataset.Dataset`, what pynetdicom sends)
   or :func:`egress_stream` (Part 10 bytes for WADO-RS) applies them with
   :func:`bridge.mapping.dicom.patch.patch_header`.

Files are never rewritten. An object nothing changes goes out byte for byte; a changed one
gets a newly encoded header (in the stored transfer syntax) followed by the file's own bytes
from the pixel data onward, so a 1 GB multi-frame object never sits in memory.

``instance`` is anything with ``path`` (relative to the archive root), ``source_charset``
and ``calling_ae`` (:class:`StoredObject`): the ORM :class:`~bridge.store.archive_models.
Instance` row, or a :class:`StoredFile` built from a Core query's row.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO, Literal, Protocol

from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.filereader import read_file_meta_info
from pydicom.filewriter import dcmwrite
from pydicom.uid import UID, DeflatedExplicitVRLittleEndian, ExplicitVRBigEndian
from sqlalchemy import Connection, func, select
from sqlalchemy.orm import Session

from bridge.domain import StepStatus
from bridge.mapping.dicom.charset import undeclared_codec
from bridge.mapping.dicom.patch import RequestAttributes, SubjectValues, patch_header
from bridge.mapping.worklist.dataset import Code
from bridge.store.archive_models import Study
from bridge.store.models import Order, Patient, PatientIdentifier, ProcedureStep, table_of

#: Bytes read from the file per chunk of a stream.
DEFAULT_CHUNK_SIZE = 1 << 20
#: Studies per query (keeps the IN list well under every database's parameter limit).
_BATCH = 500
#: (7FE0,0008) Float Pixel Data, (7FE0,0009) Double Float Pixel Data, (7FE0,0010) Pixel Data:
#: where ``stop_before_pixels`` stops, so where the untouched tail of the file begins.
_PIXEL_TAGS = frozenset({0x7FE00008, 0x7FE00009, 0x7FE00010})


class StoredObject(Protocol):
    """What egress needs of a stored instance (the ORM ``Instance`` row has it)."""

    @property
    def path(self) -> str: ...

    @property
    def source_charset(self) -> str | None: ...

    @property
    def calling_ae(self) -> str: ...


@dataclass(frozen=True, slots=True)
class StoredFile:
    """A stored instance as plain data, for callers that read index rows with Core."""

    path: str
    source_charset: str | None = None
    calling_ae: str = ""


# --- the MIS values of studies ---------------------------------------------------------

_S = table_of(Study)
_P = table_of(Patient)
_PI = table_of(PatientIdentifier)
_O = table_of(Order)
_STEP = table_of(ProcedureStep)


def load_subjects(
    session: Session | Connection, study_ids: Iterable[int]
) -> dict[int, SubjectValues | None]:
    """The MIS values of each study (by ``studies.id``): None for a study that is not
    reconciled (or not in the index), whose objects go out with the file's own values."""
    ids = sorted(set(study_ids))
    found: dict[int, SubjectValues | None] = dict.fromkeys(ids)
    for start in range(0, len(ids), _BATCH):
        found.update(_load_batch(session, ids[start : start + _BATCH]))
    return found


def _load_batch(session: Session | Connection, ids: Sequence[int]) -> dict[int, SubjectValues]:
    current = _P.alias("current")
    # The primary identifier: the lowest position (then the oldest row, should two share it).
    primary = (
        select(_PI.c.id)
        .where(_PI.c.patient_id == current.c.id)
        .order_by(_PI.c.position, _PI.c.id)
        .limit(1)
        .correlate(current)
        .scalar_subquery()
    )
    rows = session.execute(
        select(
            _S.c.id.label("study_pk"),
            _S.c.order_id,
            current.c.name,
            current.c.birth_date,
            current.c.sex,
            _PI.c.value.label("patient_id_value"),
            _PI.c.issuer,
            _O.c.accession,
            _O.c.study_instance_uid,
            _O.c.requested_procedure_id,
            _O.c.procedure_code,
            _O.c.procedure_scheme,
            _O.c.procedure_meaning,
            _O.c.procedure_description,
            _O.c.referring_physician,
        )
        .select_from(_S)
        .join(_P, _P.c.id == _S.c.patient_id)
        # Merges are flattened to one level: the survivor is the current patient.
        .join(current, current.c.id == func.coalesce(_P.c.merged_into_id, _P.c.id))
        .outerjoin(_PI, _PI.c.id == primary)
        .outerjoin(_O, _O.c.id == _S.c.order_id)
        .where(_S.c.id.in_(ids))
    ).all()
    steps = _steps_of(session, {r.order_id for r in rows if r.order_id is not None})
    return {row.study_pk: _subject(row, steps.get(row.order_id, [])) for row in rows}


def _steps_of(session: Session | Connection, order_ids: set[int]) -> dict[int, list[Any]]:
    if not order_ids:
        return {}
    rows = session.execute(
        select(_STEP.c.order_id, _STEP.c.sps_id, _STEP.c.description, _STEP.c.protocol_codes)
        # A canceled step was never performed, so no image came from it.
        .where(_STEP.c.order_id.in_(sorted(order_ids)),
               _STEP.c.status != StepStatus.CANCELED.value)
        .order_by(_STEP.c.order_id, _STEP.c.id)
    ).all()
    by_order: dict[int, list[Any]] = {}
    for row in rows:
        by_order.setdefault(row.order_id, []).append(row)
    return by_order


def _subject(row: Any, steps: list[Any]) -> SubjectValues:
    return SubjectValues(
        patient_id=row.patient_id_value or None,
        issuer=row.issuer or None,
        name=row.name or None,
        birth_date=row.birth_date or None,
        sex=row.sex or None,
        accession=row.accession or None,
        referring_physician=row.referring_physician or None,
        request_attributes=_request_attributes(row, steps) if row.order_id is not None else (),
    )


def _request_attributes(order: Any, steps: list[Any]) -> tuple[RequestAttributes, ...]:
    """One item per step of the order (PS3.3 10.13: one per requested procedure and
    scheduled step), or one for the order alone when it has no open step."""
    code = (
        Code(order.procedure_code, order.procedure_scheme or "", order.procedure_meaning or "")
        if order.procedure_code
        else None
    )
    base = RequestAttributes(
        accession=order.accession,
        study_instance_uid=order.study_instance_uid,
        requested_procedure_id=order.requested_procedure_id,
        requested_procedure_description=order.procedure_description,
        requested_procedure_code=code,
    )
    if not steps:
        return (base,)
    return tuple(
        RequestAttributes(
            accession=base.accession,
            study_instance_uid=base.study_instance_uid,
            requested_procedure_id=base.requested_procedure_id,
            requested_procedure_description=base.requested_procedure_description,
            requested_procedure_code=code,
            scheduled_procedure_step_id=step.sps_id,
            scheduled_procedure_step_description=step.description,
            scheduled_protocol_codes=tuple(
                Code(c.get("code", ""), c.get("scheme", ""), c.get("meaning", ""))
                for c in step.protocol_codes or []
                if c.get("code")
            ),
        )
        for step in steps
    )


# --- objects on their way out ----------------------------------------------------------


def egress_dataset(
    archive_root: Path,
    instance: StoredObject,
    subject: SubjectValues | None,
    *,
    now: datetime | None = None,
    local: Path | None = None,
) -> Dataset:
    """The whole stored object with the MIS values applied, ``file_meta`` as stored (its
    transfer syntax is the file's), for pynetdicom's C-STORE sub-operations and forwarding.
    An object nothing changes is returned as read (its elements still raw). ``local`` is
    the checked copy to read (:mod:`bridge.storage.reader`); default: the online file."""
    dataset = dcmread(local or archive_root / instance.path)
    apply_mis_values(dataset, instance, subject, now)
    return dataset


def egress_stream(
    archive_root: Path,
    instance: StoredObject,
    subject: SubjectValues | None,
    *,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    now: datetime | None = None,
    local: Path | None = None,
) -> EgressStream:
    """The stored object as a Part 10 file's bytes, with the MIS values applied.

    The file is opened and its header read and patched now (so a missing or unreadable file
    raises here, before a response has started); the bytes are read as the stream is
    consumed. Only the header is decoded: the rest is copied from the file from the pixel
    data's offset on. A deflated file is the exception: its header cannot be spliced, so a
    changed one is read, patched and encoded whole. ``local``: as for :func:`egress_dataset`.
    """
    path = local or archive_root / instance.path
    fp = path.open("rb")
    try:
        size = os.fstat(fp.fileno()).st_size
        meta = read_file_meta_info(path)
        if meta.get("TransferSyntaxUID") == DeflatedExplicitVRLittleEndian:
            return _whole(fp, size, instance, subject, chunk_size, now)
        header = dcmread(fp, stop_before_pixels=True)
        offset = fp.tell()
        if not _at_tail(fp, offset, size, header):
            fp.seek(0)
            return _whole(fp, size, instance, subject, chunk_size, now)
        if not apply_mis_values(header, instance, subject, now):
            return EgressStream(fp, head=b"", tail_offset=0, size=size,
                                chunk_size=chunk_size, changed=False)
        head = encode_part10(header)
        return EgressStream(fp, head=head, tail_offset=offset,
                            size=len(head) + size - offset, chunk_size=chunk_size, changed=True)
    except BaseException:
        fp.close()
        raise


class EgressStream(Iterator[bytes]):
    """The bytes of one outgoing Part 10 file: an encoded header (when changed), then the
    file from ``tail_offset`` to its end in chunks. Closes its file when exhausted, on
    :meth:`close`, or when used as a context manager."""

    def __init__(self, fp: BinaryIO | None, *, head: bytes, tail_offset: int, size: int,
                 chunk_size: int, changed: bool) -> None:
        self._fp = fp
        self._head = memoryview(head)
        self._tail_offset = tail_offset
        self._seeked = False
        self._chunk_size = chunk_size
        #: Total length in bytes (for Content-Length or a multipart part).
        self.size = size
        #: Whether the header was patched (False: the file goes out byte for byte).
        self.changed = changed

    def __next__(self) -> bytes:
        if self._head:
            chunk, self._head = self._head[: self._chunk_size], self._head[self._chunk_size :]
            return bytes(chunk)
        if self._fp is None:
            raise StopIteration
        if not self._seeked:
            self._fp.seek(self._tail_offset)
            self._seeked = True
        data = self._fp.read(self._chunk_size)
        if not data:
            self.close()
            raise StopIteration
        return data

    def close(self) -> None:
        if self._fp is not None:
            self._fp.close()
            self._fp = None

    def __enter__(self) -> EgressStream:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def apply_mis_values(dataset: Dataset, instance: StoredObject, subject: SubjectValues | None,
                     now: datetime | None = None) -> bool:
    """Patch a stored object's header read with ``dcmread`` in place; whether it changed."""
    return patch_header(
        dataset,
        subject,
        codec=undeclared_codec(dataset, instance.source_charset),
        now=now or datetime.now(UTC),
        source_of_previous_values=instance.calling_ae or "",
    )


def _whole(fp: BinaryIO, size: int, instance: StoredObject, subject: SubjectValues | None,
           chunk_size: int, now: datetime | None) -> EgressStream:
    """The fallback: read the whole object; stream the file as is when nothing changes."""
    dataset = dcmread(fp)
    if not apply_mis_values(dataset, instance, subject, now):
        return EgressStream(fp, head=b"", tail_offset=0, size=size,
                            chunk_size=chunk_size, changed=False)
    fp.close()
    data = encode_part10(dataset)
    return EgressStream(None, head=data, tail_offset=0, size=len(data),
                        chunk_size=chunk_size, changed=True)


def _at_tail(fp: BinaryIO, offset: int, size: int, header: Dataset) -> bool:
    """Whether the header read stopped at the pixel data (or the end of the file), so the
    file's bytes from ``offset`` on can follow a newly encoded header unchanged."""
    if offset == size:
        return True
    fp.seek(offset)
    raw = fp.read(4)
    little = header.file_meta.get("TransferSyntaxUID", UID("")) != ExplicitVRBigEndian
    order: Literal["little", "big"] = "little" if little else "big"
    tag = (int.from_bytes(raw[:2], order) << 16) | int.from_bytes(raw[2:4], order)
    return len(raw) == 4 and tag in _PIXEL_TAGS


def encode_part10(dataset: Dataset) -> bytes:
    """Preamble, file meta and data set, encoded in the transfer syntax of its file meta."""
    buffer = io.BytesIO()
    dcmwrite(buffer, dataset, enforce_file_format=True)
    return buffer.getvalue()
