"""C-FIND pending responses written straight to the association's socket, several at a time.

Why: pynetdicom sends every DIMSE message through its DUL thread, which handles one queued
primitive (one PDU) per loop iteration, competes with the handler's thread for the GIL and
lets the peer's reader catch up and fall asleep between responses. At 46 matches that was
most of a worklist query's time (docs/benchmarks.md, "Modality Worklist C-FIND"). Here the
handler's own thread encodes each pending response as one P-DATA-TF PDU (command and
identifier as two PDVs of the same message, PS3.8 9.3.5 and Annex E) and writes a batch
of them with one ``send``; pynetdicom still sends the final (Success, Cancel or failure)
response through its normal path, after the pending ones.

This module is the only place that relies on pynetdicom internals for it; every one of
them is listed in :data:`PYNETDICOM_INTERNALS` and checked by
``tests/unit/test_find_transport.py``. With a pynetdicom version that was not verified
(:data:`VERIFIED_PYNETDICOM`), over TLS, or when the association does not look as
expected, :func:`open_stream` returns None and the caller uses pynetdicom's path.

Rules kept:

* **Order.** Only the association's own thread (the one running the handler) queues
  P-DATA for the DUL; before the first write the DUL's queue must be empty (what was
  queued before, e.g. the previous request's final response, is on the wire), and the
  final response is queued only after the handler has returned.
* **Maximum PDU length.** A response larger than the peer's maximum length is fragmented
  exactly as pynetdicom does (command fragments, then data set fragments, one PDV each).
* **C-CANCEL.** The DUL thread keeps reading while responses are written (its send queue
  is empty), so a cancel is seen between batches.
* **A peer that stops reading** blocks a write at most ``network_timeout`` seconds; then
  the connection is shut down (the DUL sees it closed and ends the association) instead of
  holding the thread for ever as a blocking send would.

Not emitted for the pending responses written here: pynetdicom's ``EVT_PDU_SENT``,
``EVT_DATA_SENT`` and ``EVT_DIMSE_SENT`` notifications (the bridge binds none of them;
pynetdicom's own debug logging is the only user).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import select
import socket
import struct
import time
from dataclasses import dataclass, field
from io import BytesIO
from typing import Any

import pynetdicom
from pydicom.dataset import Dataset
from pynetdicom.dimse_messages import C_FIND_RSP
from pynetdicom.dimse_primitives import C_FIND
from pynetdicom.dsutils import encode
from pynetdicom.events import Event

logger = logging.getLogger("bridge.dicom")

#: pynetdicom versions whose internals (below) were checked against this module.
VERIFIED_PYNETDICOM = frozenset({"3.0.4"})

#: What is used beyond pynetdicom's documented API (checked by the unit tests):
#: ``Association.dul`` (DULServiceProvider) with ``to_provider_queue`` (queue.Queue of
#: primitives the DUL thread still has to send) and ``socket`` (AssociationSocket) whose
#: ``socket`` is the connected ``socket.socket``; ``Association.requestor.maximum_length``
#: (the peer's maximum PDV list length, 0 = unlimited); ``dimse_messages.C_FIND_RSP`` with
#: ``primitive_to_message`` and ``command_set``.
PYNETDICOM_INTERNALS = (
    "Association.dul.to_provider_queue",
    "Association.dul.socket.socket",
    "Association.requestor.maximum_length",
    "dimse_messages.C_FIND_RSP.primitive_to_message",
)

PENDING = 0xFF00
_P_DATA_TF = 0x04
#: PDV item header: item length (4 bytes), presentation context ID, message control header.
_PDV_HEADER = 6
_COMMAND_LAST = 0x03
_DATA_LAST = 0x02
_COMMAND_MORE = 0x01
_DATA_MORE = 0x00
#: How long the first write waits for the DUL to send what was queued before.
_IDLE_WAIT_SECONDS = 2.0


class StreamClosed(Exception):
    """The connection failed or the peer stopped reading; it has been shut down."""


@functools.lru_cache(maxsize=256)
def pending_command(message_id: int, affected_sop_class: str) -> bytes:
    """The command set of a Pending C-FIND-RSP (with an identifier), encoded as pynetdicom
    encodes it (Implicit VR Little Endian, PS3.7 6.3.1): identical for every pending
    response of one request, and modalities mostly number their requests from 1, so it is
    encoded once per message ID and SOP class (pynetdicom takes 0.3 ms)."""
    primitive = C_FIND()
    primitive.MessageIDBeingRespondedTo = message_id
    primitive.AffectedSOPClassUID = affected_sop_class
    primitive.Status = PENDING
    primitive.Identifier = BytesIO(b"\0")  # only says "a data set follows"
    message = C_FIND_RSP()
    message.primitive_to_message(primitive)
    return bytes(encode(message.command_set, True, True) or b"")


def message_pdus(context_id: int, command: bytes, data_set: bytes, max_length: int) -> bytes:
    """One DIMSE message (command + data set) as encoded P-DATA-TF PDUs.

    Both in one PDU when they fit the peer's maximum PDV list length (``max_length``, 0 =
    unlimited); otherwise one PDU per fragment, split as pynetdicom splits them. A PDU
    never holds PDVs of two messages: pynetdicom's reader drops what follows a message's
    last fragment in the same PDU.
    """
    if max_length == 0 or 2 * _PDV_HEADER + len(command) + len(data_set) <= max_length:
        return _pdu(context_id, ((_COMMAND_LAST, command), (_DATA_LAST, data_set)))
    if max_length <= _PDV_HEADER:
        raise ValueError(f"maximum PDU length {max_length} cannot carry data")
    out = bytearray()
    for body, more, last in ((command, _COMMAND_MORE, _COMMAND_LAST),
                             (data_set, _DATA_MORE, _DATA_LAST)):
        size = max_length - _PDV_HEADER
        chunks = [body[i:i + size] for i in range(0, len(body), size)] or [b""]
        for index, chunk in enumerate(chunks):
            header = last if index == len(chunks) - 1 else more
            out += _pdu(context_id, ((header, chunk),))
    return bytes(out)


def _pdu(context_id: int, pdvs: tuple[tuple[int, bytes], ...]) -> bytes:
    items = b"".join(
        struct.pack(">LBB", len(value) + 2, context_id, header) + value
        for header, value in pdvs
    )
    return struct.pack(">BBL", _P_DATA_TF, 0, len(items)) + items


@dataclass(slots=True)
class FindResponseStream:
    """Pending responses of one C-FIND request, buffered and written in batches."""

    sock: socket.socket
    context_id: int
    command: bytes
    max_length: int
    implicit_vr: bool
    little_endian: bool
    deflated: bool
    #: Seconds one write may wait for the peer to read (None: no limit).
    timeout: float | None
    dul_queue: Any
    sent: int = 0
    _buffer: bytearray = field(default_factory=bytearray)
    _buffered: int = 0
    _written_once: bool = False

    @property
    def buffered(self) -> int:
        """Responses encoded but not written yet."""
        return self._buffered

    def add(self, identifier: Dataset | bytes) -> None:
        """One pending response (written by the next :meth:`flush`): a data set, or its
        bytes already encoded in the context's transfer syntax.

        Raises ValueError when the identifier cannot be encoded (nothing is buffered)."""
        if isinstance(identifier, Dataset):
            data = encode(identifier, self.implicit_vr, self.little_endian, self.deflated)
            if not data:
                raise ValueError("the response identifier could not be encoded")
        else:
            data = identifier
        self._buffer += message_pdus(self.context_id, self.command, data, self.max_length)
        self._buffered += 1

    def flush(self) -> None:
        """Write the buffered responses. Raises :class:`StreamClosed` when the connection
        failed (it is then shut down, so the association ends)."""
        if not self._buffer:
            return
        if not self._written_once:
            self._wait_for_idle_dul()
            self._written_once = True
        try:
            _send_all(self.sock, memoryview(self._buffer), self.timeout)
        except (OSError, ValueError) as exc:  # TimeoutError; ValueError: socket closed
            _shutdown(self.sock)
            raise StreamClosed(str(exc) or type(exc).__name__) from exc
        self.sent += self._buffered
        self._buffer = bytearray()
        self._buffered = 0

    def discard(self) -> None:
        """Drop what is buffered (a cancelled query sends nothing more)."""
        self._buffer = bytearray()
        self._buffered = 0

    def _wait_for_idle_dul(self) -> None:
        deadline = time.monotonic() + _IDLE_WAIT_SECONDS
        while not self.dul_queue.empty():
            if time.monotonic() > deadline:
                _shutdown(self.sock)
                raise StreamClosed("pynetdicom's send queue did not drain")
            time.sleep(0.0002)


def open_stream(event: Event) -> FindResponseStream | None:
    """A stream for the C-FIND request of ``event``, or None when pynetdicom's own path must
    be used (unverified pynetdicom version, TLS, unexpected association internals)."""
    if pynetdicom.__version__ not in VERIFIED_PYNETDICOM:
        return None
    try:
        assoc = event.assoc
        dul = assoc.dul
        sock = dul.socket.socket  # type: ignore[union-attr]
        queue = dul.to_provider_queue
        max_length = int(assoc.requestor.maximum_length or 0)
        context = event.context
        syntax = context.transfer_syntax
        request = event.request
        message_id = int(request.MessageID)  # type: ignore[arg-type]
        sop_class = str(request.AffectedSOPClassUID)
    except (AttributeError, TypeError, ValueError):
        logger.warning("C-FIND: association internals not as expected; using pynetdicom's "
                       "response path", exc_info=True)
        return None
    if type(sock) is not socket.socket or syntax is None:
        return None  # TLS (ssl.SSLSocket) or no accepted syntax: pynetdicom's path
    return FindResponseStream(
        sock=sock,
        context_id=int(context.context_id),
        command=pending_command(message_id, sop_class),
        max_length=max_length,
        implicit_vr=bool(syntax.is_implicit_VR),
        little_endian=bool(syntax.is_little_endian),
        deflated=bool(syntax.is_deflated),
        timeout=assoc.network_timeout,
        dul_queue=queue,
    )


def _send_all(sock: socket.socket, data: memoryview, timeout: float | None) -> None:
    """``sendall`` without blocking longer than ``timeout`` on a peer that stops reading,
    and without changing the socket's mode (pynetdicom's DUL thread reads it meanwhile)."""
    deadline = None if timeout is None else time.monotonic() + timeout
    while data:
        try:
            data = data[sock.send(data, _DONT_WAIT):]
            continue
        except (BlockingIOError, InterruptedError):
            pass
        remaining = None if deadline is None else deadline - time.monotonic()
        if remaining is not None and remaining <= 0:
            raise TimeoutError("the peer did not read the C-FIND responses in time")
        select.select([], [sock], [], remaining)


def _shutdown(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)


# Linux and the BSDs; elsewhere a plain (blocking) send, as pynetdicom's own.
_DONT_WAIT: int = getattr(socket, "MSG_DONTWAIT", 0)
