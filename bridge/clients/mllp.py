"""A small blocking MLLP client: ``bridge hl7 send``, tests and benchmarks use it."""

from __future__ import annotations

import socket
import ssl
from types import TracebackType

START, END = b"\x0b", b"\x1c\r"


class MLLPClient:
    """``tls``: a client context (``ssl.create_default_context(cafile=...)``, with
    ``load_cert_chain`` for a client certificate) to speak MLLP over TLS; the server's name
    is checked against ``host``."""

    def __init__(self, host: str, port: int, *, timeout: float = 30.0,
                 tls: ssl.SSLContext | None = None) -> None:
        sock = socket.create_connection((host, port), timeout=timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._sock = tls.wrap_socket(sock, server_hostname=host) if tls is not None else sock
        self._buffer = b""

    def __enter__(self) -> MLLPClient:
        return self

    def __exit__(self, *exc: object | TracebackType) -> None:
        self.close()

    def close(self) -> None:
        self._sock.close()

    def send_raw(self, data: bytes) -> None:
        self._sock.sendall(data)

    def send(self, message: bytes) -> bytes:
        """Send one framed message and return the first reply (the ACK)."""
        self._sock.sendall(START + message + END)
        return self.read()

    def exchange(self, message: bytes) -> list[bytes]:
        """Send and collect every reply: the ACK, or in enhanced mode the accept ACK and then
        the application ACK when MSH-16 asks for it."""
        first = self.send(message)
        replies = [first]
        if _ack_code(first) in (b"CA",):
            app_type = _msh_field(message, 16).upper()
            if app_type in (b"AL", b""):
                replies.append(self.read())
            elif app_type in (b"ER", b"SU"):
                replies.extend(self.read_optional(2.0))
        return replies

    def read(self) -> bytes:
        while True:
            end = self._buffer.find(END)
            if end != -1:
                start = self._buffer.find(START)
                frame = self._buffer[start + 1 if start != -1 and start < end else 0:end]
                self._buffer = self._buffer[end + len(END):]
                return frame
            chunk = self._sock.recv(65536)
            if not chunk:
                raise ConnectionError("connection closed before a reply")
            self._buffer += chunk

    def read_optional(self, timeout: float) -> list[bytes]:
        previous = self._sock.gettimeout()
        self._sock.settimeout(timeout)
        try:
            return [self.read()]
        except TimeoutError:
            return []
        finally:
            self._sock.settimeout(previous)


def _msh_field(message: bytes, number: int) -> bytes:
    line = message.split(b"\r", 1)[0]
    fields = line.split(line[3:4] or b"|")
    fields.insert(1, b"|")
    return fields[number] if number < len(fields) else b""


def _ack_code(ack: bytes) -> bytes:
    for segment in ack.split(b"\r"):
        if segment.startswith(b"MSA"):
            parts = segment.split(b"|")
            return parts[1] if len(parts) > 1 else b""
    return b""


def ack_code(ack: bytes) -> str:
    return _ack_code(ack).decode("ascii", errors="replace")
