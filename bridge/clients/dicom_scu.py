"""A DICOM client for de-identified exports: C-STORE of objects given as bytes, and C-GET of
one instance back (the peer sends it over our own association, no C-MOVE destination needed).

A peer that is down, aborts or answers a status a later try may pass raises
:class:`~bridge.errors.Transient`; a refused association or object, :class:`Rejected`.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from io import BytesIO
from pathlib import Path
from typing import Any

from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.filewriter import dcmwrite
from pynetdicom import AE, build_role, evt
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

    def _ae(self) -> AE:
        ae = AE(ae_title=self.ae_title)
        ae.connection_timeout = self.timeout
        ae.acse_timeout = self.timeout
        ae.dimse_timeout = self.timeout * 2
        ae.network_timeout = self.timeout * 2
        return ae

    def store(self, objects: Sequence[bytes]) -> None:
        """C-STORE every object over one association."""
        datasets = [dcmread(BytesIO(data), force=True) for data in objects]
        ae = self._ae()
        for context in {(str(ds.SOPClassUID), str(ds.file_meta.TransferSyntaxUID))
                        for ds in datasets}:
            ae.add_requested_context(context[0], [context[1]])
        assoc = ae.associate(self.host, self.port, ae_title=self.peer_ae)
        if not assoc.is_established:
            raise (Rejected if assoc.is_rejected else Transient)(
                f"{self.peer_ae} at {self.host}:{self.port}: association "
                f"{'rejected' if assoc.is_rejected else 'failed'}")
        try:
            for ds in datasets:
                status = assoc.send_c_store(ds)
                code = int(getattr(status, "Status", -1)) if status else -1
                if code == -1:
                    raise Transient(f"{self.peer_ae}: no answer to C-STORE")
                if code not in _OK and not 0xB000 <= code <= 0xBFFF:
                    kind = Transient if 0xA700 <= code <= 0xA7FF else Rejected
                    raise kind(f"{self.peer_ae} refused an object: status 0x{code:04X}")
        finally:
            if assoc.is_established:
                assoc.release()

    def get(self, study: str, series: str, instance: str, sop_class: str) -> bytes:
        """C-GET one instance at IMAGE level; its bytes as a Part 10 file."""
        received: list[bytes] = []

        def on_store(event: Any) -> int:
            path = getattr(event, "dataset_path", None)
            if path is not None:  # chunked receiving (the bridge's storage SCP turned it on)
                received.append(Path(path).read_bytes())
            else:
                ds = event.dataset
                ds.file_meta = event.file_meta
                buffer = BytesIO()
                dcmwrite(buffer, ds, enforce_file_format=True)
                received.append(buffer.getvalue())
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


def temporary_copy(data: bytes, folder: Path | None = None) -> Path:
    with tempfile.NamedTemporaryFile(dir=folder, suffix=".dcm", delete=False) as handle:
        handle.write(data)
    return Path(handle.name)
