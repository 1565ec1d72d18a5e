"""Syslog to an audit repository: UDP (RFC 5426, one message per datagram) or TLS (RFC 5425,
octet-counted frames), the transports of IHE ATNA."""

from __future__ import annotations

import socket
import ssl
from urllib.parse import urlsplit


class SyslogSender:
    """Sends RFC 5424 messages to ``udp://host:port`` or ``tls://host:port``."""

    def __init__(self, url: str, *, ca_file: str | None = None, timeout: float = 10) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("udp", "tls") or not parts.hostname:
            raise ValueError("the audit repository is udp://host:port or tls://host:port")
        self.scheme = parts.scheme
        self.address = (parts.hostname, parts.port or (514 if parts.scheme == "udp" else 6514))
        self.ca_file = ca_file
        self.timeout = timeout
        self._tls: ssl.SSLSocket | None = None

    def send(self, messages: list[bytes]) -> None:
        if self.scheme == "udp":
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
                for message in messages:
                    udp.sendto(message[:65000], self.address)
            return
        stream = self._connection()
        try:
            stream.sendall(b"".join(b"%d %s" % (len(m), m) for m in messages))
        except OSError:
            self.close()
            raise

    def _connection(self) -> ssl.SSLSocket:
        if self._tls is None:
            context = ssl.create_default_context(cafile=self.ca_file)
            raw = socket.create_connection(self.address, timeout=self.timeout)
            self._tls = context.wrap_socket(raw, server_hostname=self.address[0])
        return self._tls

    def close(self) -> None:
        if self._tls is not None:
            try:
                self._tls.close()
            finally:
                self._tls = None
