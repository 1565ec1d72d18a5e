"""A DICOM client for de-identified exports: C-STORE of objects given as bytes, and C-GET of
one instance back (the peer sends it over our own association, no C-MOVE destination needed).

A peer that is down, aborts or answers a status a later try may pass raises
:class:`~bridge.errors.Transient`; a refused association or object, :class:`Rejected`.
"""

from __future__ import annotations

from collections.abc import Sequence
from io import BytesIO
from pathlib import Path
from typing import Any

from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.filewriter import dcmwrite
from pynetdicom import AE, build_role, evt
from pynetdicom.association import Association
from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelGet  # type: ignore[attr-defined]

from bridge.errors import Rejected, Transient

_OK = (0x0000, 0x0001, 0x0107, 0x0116)


class DicomScu:
    def __init__(self, *, ae_title: str, host: str, port: int, peer_ae: str,
                 timeout: float = 30.0) -> None:
        self.ae_title = ae_title
        self.host = host
        self.port = port
        self.peer_ae = peer_ae
        self.timeout = timeout
        self._assoc: Association | None = None
        self._contexts: set[tuple[str, str]] = set()

    def _ae(self) -> AE:
        ae = AE(ae_title=self.ae_title)
        ae.connection_timeout = self.timeout
        ae.acse_timeout = self.timeout
        ae.dimse_timeout = self.timeout * 2
        ae.network_timeout = self.timeout * 2
        return ae

    def store(self, objects: Sequence[bytes]) -> None:
        """C-STORE every object, over the association kept from the last call when it has
        the objects' contexts (the grid gateway sends one object per call), else over a new
        one. :meth:`close` releases it."""
        datasets = [dcmread(BytesIO(data), force=True) for data in objects]
        needed = {(str(ds.SOPClassUID), str(ds.file_meta.TransferSyntaxUID))
                  for ds in datasets}
        if self._assoc is None or not self._assoc.is_established or \
                not needed <= self._contexts:
            self.close()
            self._associate(needed | self._contexts)
        assert self._assoc is not None
        try:
            for ds in datasets:
                status = self._assoc.send_c_store(ds)
                code = int(getattr(status, "Status", -1)) if status else -1
                if code == -1:
                    raise Transient(f"{self.peer_ae}: no answer to C-STORE")
                if code not in _OK and not 0xB000 <= code <= 0xBFFF:
                    kind = Transient if 0xA700 <= code <= 0xA7FF else Rejected
                    raise kind(f"{self.peer_ae} refused an object: status 0x{code:04X}")
        except BaseException:
            self.close(abort=True)  # a fresh association for the next try
            raise

    def _associate(self, contexts: set[tuple[str, str]]) -> None:
        ae = self._ae()
        for sop_class, syntax in sorted(contexts)[:128]:
            ae.add_requested_context(sop_class, [syntax])
        assoc = ae.associate(self.host, self.port, ae_title=self.peer_ae)
        if not assoc.is_established:
            raise (Rejected if assoc.is_rejected else Transient)(
                f"{self.peer_ae} at {self.host}:{self.port}: association "
                f"{'rejected' if assoc.is_rejected else 'failed'}")
        accepted = {(str(cx.abstract_syntax), str(cx.transfer_syntax[0]))
                    for cx in assoc.accepted_contexts}
        self._assoc, self._contexts = assoc, accepted

    def close(self, *, abort: bool = False) -> None:
        """Release (or abort) the kept association, if any."""
        assoc, self._assoc, self._contexts = self._assoc, None, set()
        if assoc is not None and assoc.is_established:
            if abort:
                assoc.abort()
            else:
                assoc.release()

    def get(self, study: str, series: str, instance: str, sop_class: str) -> bytes:
        """C-GET one instance at IMAGE level; its bytes as a Part 10 file."""
        received: list[bytes] = []

        def on_store(event: Any) -> int:
            received.append(received_bytes(event))
            return 0x0000

        ae = self._ae()
        ae.add_requested_context(StudyRootQueryRetrieveInformationModelGet)
        ae.add_requested_context(sop_class)
        assoc = ae.associate(self.host, self.port, ae_title=self.peer_ae,
                             ext_neg=[build_role(sop_class, scp_role=True)],
                             evt_handlers=[(evt.EVT_C_STORE, on_store)])
        if not assoc.is_established:
            raise Transient(f"{self.peer_ae} at {self.host}:{self.port}: no association")
        query = Dataset()
        query.QueryRetrieveLevel = "IMAGE"
        query.StudyInstanceUID = study
        query.SeriesInstanceUID = series
        query.SOPInstanceUID = instance
        try:
            for status, _ in assoc.send_c_get(query, StudyRootQueryRetrieveInformationModelGet):
                if status is None:
                    raise Transient(f"{self.peer_ae}: C-GET got no answer")
        finally:
            if assoc.is_established:
                assoc.release()
        if not received:
            raise Transient(f"{self.peer_ae} did not send instance back")
        return received[0]


def received_bytes(event: Any) -> bytes:
    """A C-STORE request's object as a Part 10 file: pynetdicom's own file when it received
    in chunks (the bridge's storage SCP turns that on, process-wide), else written from the
    decoded data set."""
    path = getattr(event, "dataset_path", None)
    if path is not None:
        return Path(path).read_bytes()
    ds = event.dataset
    ds.file_meta = event.file_meta
    buffer = BytesIO()
    dcmwrite(buffer, ds, enforce_file_format=True)
    return buffer.getvalue()
