"""A minimal C-FIND SCU over a raw socket, for latency benchmarks.

Why: a pynetdicom client spends about 0.5 ms of CPU per response (decoding every data set,
its DUL thread's 1 ms polling), so at 46 matches the client alone takes longer than the
20 ms a worklist query may take (the "floor" rows of ``bench/mwl_query.py``). A modality's
own DICOM stack is C or C++; this client does what such a stack must do and no more: it
negotiates one presentation context, sends the request, reads every response PDU and
decodes only each response's command set (the Status), then releases. Data sets are
received whole but not decoded, so what is timed is the server.

PS3.8 (PDU layouts, section 9.3) and PS3.7 (C-FIND command fields, section 9.3.2).
"""

from __future__ import annotations

import socket
import struct
from dataclasses import dataclass

from pydicom.dataset import Dataset
from pynetdicom.dsutils import encode

APPLICATION_CONTEXT = "1.2.840.10008.3.1.1.1"
EXPLICIT_LE = "1.2.840.10008.1.2.1"
IMPLICIT_LE = "1.2.840.10008.1.2"
IMPLEMENTATION_UID = "1.2.826.0.1.3680043.10.1137.99"
PENDING = (0xFF00, 0xFF01)


def _item(kind: int, payload: bytes) -> bytes:
    return struct.pack(">BBH", kind, 0, len(payload)) + payload


def _uid(value: str) -> bytes:
    return value.encode("ascii")


@dataclass
class FindResult:
    pending: int
    status: int


class RawFindClient:
    """One association to ``host:port`` for ``abstract_syntax``; :meth:`find` per query."""

    def __init__(self, host: str, port: int, *, calling: str, called: str,
                 abstract_syntax: str, timeout: float = 30.0) -> None:
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._buffer = b""
        self._message_id = 0
        self._associate(calling, called, abstract_syntax)
        self.abstract_syntax = abstract_syntax

    # -- PDUs ----------------------------------------------------------------------------

    def _send_pdu(self, kind: int, payload: bytes) -> None:
        self.sock.sendall(struct.pack(">BBL", kind, 0, len(payload)) + payload)

    def _read(self, size: int) -> bytes:
        while len(self._buffer) < size:
            chunk = self.sock.recv(max(65536, size - len(self._buffer)))
            if not chunk:
                raise ConnectionError("the peer closed the connection")
            self._buffer += chunk
        data, self._buffer = self._buffer[:size], self._buffer[size:]
        return data

    def _read_pdu(self) -> tuple[int, bytes]:
        kind, _, length = struct.unpack(">BBL", self._read(6))
        return kind, self._read(length)

    def _associate(self, calling: str, called: str, abstract_syntax: str) -> None:
        context = _item(0x20, bytes([1, 0, 0, 0]) + _item(0x30, _uid(abstract_syntax))
                        + _item(0x40, _uid(EXPLICIT_LE)) + _item(0x40, _uid(IMPLICIT_LE)))
        user = _item(0x50, _item(0x51, struct.pack(">L", 0))
                     + _item(0x52, _uid(IMPLEMENTATION_UID)))
        header = struct.pack(">HH", 1, 0) + called.ljust(16).encode() \
            + calling.ljust(16).encode() + bytes(32)
        self._send_pdu(0x01, header + _item(0x10, _uid(APPLICATION_CONTEXT)) + context + user)
        kind, body = self._read_pdu()
        if kind != 0x02:
            raise ConnectionError(f"association not accepted (PDU type {kind:#x})")
        items = body[68:]
        self.transfer_syntax = ""
        while items:
            item_type, _, length = struct.unpack(">BBH", items[:4])
            value, items = items[4:4 + length], items[4 + length:]
            if item_type == 0x21:
                context_id, result = value[0], value[2]
                if context_id == 1 and result == 0:
                    _kind, _, sub_length = struct.unpack(">BBH", value[4:8])
                    self.transfer_syntax = value[8:8 + sub_length].decode().rstrip("\0 ")
        if not self.transfer_syntax:
            raise ConnectionError("the presentation context was not accepted")

    # -- C-FIND --------------------------------------------------------------------------

    def find(self, identifier: Dataset) -> FindResult:
        """Send one C-FIND and read every response; the pending count and final Status."""
        self._message_id += 1
        command = Dataset()
        command.AffectedSOPClassUID = self.abstract_syntax
        command.CommandField = 0x0020
        command.MessageID = self._message_id
        command.Priority = 0
        command.CommandDataSetType = 0x0001
        encoded = encode(command, True, True)
        assert encoded is not None
        command_bytes = (struct.pack("<HHLL", 0x0000, 0x0000, 4, len(encoded)) + encoded)
        implicit = self.transfer_syntax == IMPLICIT_LE
        data = encode(identifier, implicit, True)
        assert data is not None
        pdvs = (struct.pack(">LBB", len(command_bytes) + 2, 1, 0x03) + command_bytes
                + struct.pack(">LBB", len(data) + 2, 1, 0x02) + data)
        self._send_pdu(0x04, pdvs)
        pending = 0
        command_parts: list[bytes] = []
        while True:
            kind, body = self._read_pdu()
            if kind != 0x04:
                raise ConnectionError(f"unexpected PDU type {kind:#x} during C-FIND")
            offset = 0
            while offset < len(body):
                length, _context, control = struct.unpack(">LBB", body[offset:offset + 6])
                value = body[offset + 6:offset + 4 + length]
                offset += 4 + length
                if not control & 0x01:  # a data set fragment: received, not decoded
                    continue
                command_parts.append(value)
                if not control & 0x02:
                    continue
                status = _status(b"".join(command_parts))
                command_parts.clear()
                if status in PENDING:
                    pending += 1
                else:
                    return FindResult(pending, status)

    def release(self) -> None:
        try:
            self._send_pdu(0x05, bytes(4))
            self._read_pdu()
        finally:
            self.sock.close()


def _status(command: bytes) -> int:
    """The Status (0000,0900) of an Implicit VR Little Endian command set."""
    offset = 0
    while offset + 8 <= len(command):
        group, element, length = struct.unpack("<HHL", command[offset:offset + 8])
        if (group, element) == (0x0000, 0x0900):
            return int(struct.unpack("<H", command[offset + 8:offset + 10])[0])
        offset += 8 + length
    raise ValueError("a response without a Status")
