"""The bridge's DICOM server in tests, and the C-FIND clients several tests use on it."""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from pydicom import dcmread
from pydicom.dataset import Dataset
from pynetdicom import AE
from sqlalchemy.orm import Session, sessionmaker

from bridge.adapters.dicom.server import DEFAULT_SERVICES, DicomServer, start_dicom_server
from bridge.adapters.dicom.service import DicomService, ServiceFactory
from bridge.config.settings import Settings
from tests.conftest import require_tool

#: Starts a server; keyword arguments override settings (``dicom_peers=...``).
StartServer = Callable[..., DicomServer]


@contextmanager
def dicom_servers(
    settings: Settings,
    session_factory: sessionmaker[Session],
    *,
    services: Sequence[ServiceFactory] = DEFAULT_SERVICES,
    extra_services: Sequence[DicomService] = (),
) -> Iterator[StartServer]:
    """A starter of bridge DICOM servers (AE ``BRIDGE``, on a port the OS picks) with these
    services; every server it started is shut down on exit."""
    servers: list[DicomServer] = []

    def start(**overrides: Any) -> DicomServer:
        server = start_dicom_server(settings.model_copy(update=overrides), session_factory,
                                    services=services, extra_services=extra_services)
        servers.append(server)
        return server

    try:
        yield start
    finally:
        for server in servers:
            server.shutdown()


def c_find(port: int, identifier: Dataset, model: str, calling_ae: str
           ) -> tuple[int, list[Dataset]]:
    """pynetdicom client: the final status and the pending identifiers (every response
    before the last must be pending)."""
    ae = AE(ae_title=calling_ae)
    ae.add_requested_context(model)
    assoc = ae.associate("127.0.0.1", port, ae_title="BRIDGE")
    assert assoc.is_established
    try:
        responses = list(assoc.send_c_find(identifier, model))
    finally:
        assoc.release()
    *pending, (final, _) = responses
    assert all(status.Status == 0xFF00 for status, _ in pending)
    return int(final.Status), [ds for _, ds in pending if ds is not None]


def c_find_cancelled(port: int, identifier: Dataset, model: str, calling_ae: str,
                     *, receive_buffer: int = 8192) -> tuple[int, list[int]]:
    """A C-FIND cancelled (C-CANCEL) as soon as its first response came: the first status
    and the statuses of every response after it.

    The client's socket gets a small fixed receive buffer (``SO_RCVBUF``, which also stops
    Linux from growing it): the server writes pending responses far faster than a client
    reads them, and with the loopback's default buffers (up to 32 MB) it could put every
    match on the wire before the cancel arrives. With a small window it must wait for the
    client, as it would for a modality on a real network, and sees the cancel between its
    writes. Only outgoing sockets are made by ``_create_socket``: a server in the same
    process is unaffected."""
    import socket

    from pynetdicom.transport import AssociationSocket

    original = AssociationSocket._create_socket

    def small_window(self: AssociationSocket, address: Any) -> socket.socket:
        sock = original(self, address)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
        return sock

    ae = AE(ae_title=calling_ae)
    ae.add_requested_context(model)
    AssociationSocket._create_socket = small_window  # type: ignore[method-assign]
    try:
        assoc = ae.associate("127.0.0.1", port, ae_title="BRIDGE")
    finally:
        AssociationSocket._create_socket = original  # type: ignore[method-assign]
    assert assoc.is_established
    try:
        responses = assoc.send_c_find(identifier, model, msg_id=7)
        first, _ = next(responses)
        assoc.send_c_cancel(7, query_model=model)
        rest = [int(status.Status) for status, _ in responses]
    finally:
        assoc.release()
    return int(first.Status), rest


def findscu(port: int, model: str, keys: list[str], out: Path, aet: str = "FINDSCU",
            called: str = "BRIDGE") -> list[Dataset]:
    """DCMTK findscu (``model``: ``-W`` worklist, ``-S`` study root, ``-P`` patient root);
    asserts it succeeded and returns the responses it wrote to ``out``."""
    tool = require_tool("findscu")
    out.mkdir()
    args = [tool, model, "-aet", aet, "-aec", called, "-X", "-od", str(out),
            "127.0.0.1", str(port)]
    for key in keys:
        args += ["-k", key]
    done = subprocess.run(args, capture_output=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    return [dcmread(path) for path in sorted(out.glob("rsp*.dcm"))]
