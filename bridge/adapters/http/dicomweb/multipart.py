"""``multipart/related`` bodies (RFC 2387, framing per RFC 2046 5.1.1) for DICOMweb.

Writing: :func:`part_head` before each part's bytes, :data:`PART_END` after them, and
:func:`closing` once at the end; a part's bytes are never copied into one buffer with others,
so a retrieve streams object after object.

Reading: :class:`MultipartParser` is a push parser: feed it the body in chunks as they
arrive and it yields events (a part's headers, pieces of its content, its end), holding back
only the few bytes that might start a delimiter, so a STOW-RS body of any size goes to disk
with flat memory.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from dataclasses import dataclass

#: After a part's content (the CRLF that begins the next delimiter).
PART_END = b"\r\n"
#: A part's headers may not exceed this many bytes (a body that is not multipart at all).
MAX_HEADER_BYTES = 16 * 1024


class MultipartError(ValueError):
    """The body is not a well-formed multipart body with the expected boundary."""


def new_boundary() -> str:
    """A boundary that cannot occur in the content by chance (128 random bits)."""
    return f"bridge-{secrets.token_hex(16)}"


def part_head(boundary: str, content_type: str, length: int | None = None) -> bytes:
    """The delimiter and headers that open one part."""
    lines = [f"--{boundary}", f"Content-Type: {content_type}"]
    if length is not None:
        lines.append(f"Content-Length: {length}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("ascii")


def closing(boundary: str) -> bytes:
    """The close delimiter that ends the body."""
    return f"--{boundary}--\r\n".encode("ascii")


@dataclass(frozen=True, slots=True)
class PartStart:
    """A part begins; header names are lower-case."""

    headers: dict[str, str]


@dataclass(frozen=True, slots=True)
class PartData:
    data: bytes


@dataclass(frozen=True, slots=True)
class PartEnd:
    pass


Event = PartStart | PartData | PartEnd

_PREAMBLE, _AFTER_DELIMITER, _HEADERS, _BODY, _DONE = range(5)


class MultipartParser:
    """Splits a multipart body into parts, incrementally.

    ``feed`` yields the events the new bytes complete; ``finish`` raises
    :class:`MultipartError` when the body ended before its close delimiter (a truncated
    upload): the caller then knows the part in progress, if any, is incomplete.
    """

    def __init__(self, boundary: str) -> None:
        if not boundary or len(boundary) > 200:
            raise MultipartError("multipart boundary missing or too long")
        self._delimiter = b"--" + boundary.encode("latin-1")
        self._body_delimiter = b"\r\n" + self._delimiter
        self._buffer = bytearray()
        self._state = _PREAMBLE
        #: True while a part has started and not ended.
        self.in_part = False
        #: Number of parts that have started.
        self.parts = 0

    @property
    def done(self) -> bool:
        return self._state == _DONE

    def feed(self, data: bytes) -> Iterator[Event]:
        if self._state == _DONE:
            return  # the epilogue is ignored (RFC 2046)
        self._buffer += data
        while True:
            event = self._step()
            if event is None:
                return
            if not isinstance(event, bool):
                yield event

    def finish(self) -> None:
        if self._state != _DONE:
            raise MultipartError("the body ended before the multipart close delimiter")

    def _step(self) -> Event | bool | None:
        """One transition: an event, True (progress without an event), or None (needs
        more bytes)."""
        if self._state == _PREAMBLE:
            return self._preamble()
        if self._state == _AFTER_DELIMITER:
            return self._after_delimiter()
        if self._state == _HEADERS:
            return self._headers()
        if self._state == _BODY:
            return self._body()
        self._buffer.clear()
        return None

    def _preamble(self) -> bool | None:
        if self._buffer.startswith(self._delimiter):
            start = 0
        else:
            found = self._buffer.find(self._body_delimiter)
            if found < 0:
                keep = len(self._body_delimiter) - 1
                if len(self._buffer) > keep:  # a preamble is discarded (RFC 2046)
                    del self._buffer[: len(self._buffer) - keep]
                return None
            start = found + 2
        del self._buffer[: start + len(self._delimiter)]
        self._state = _AFTER_DELIMITER
        return True

    def _after_delimiter(self) -> Event | bool | None:
        if len(self._buffer) < 2:
            return None
        if self._buffer.startswith(b"--"):
            self._state = _DONE
            self._buffer.clear()
            return True
        line_end = self._buffer.find(b"\r\n")
        if line_end < 0:
            if len(self._buffer) > 256:
                raise MultipartError("malformed multipart delimiter line")
            return None
        if self._buffer[:line_end].strip(b" \t"):
            raise MultipartError("malformed multipart delimiter line")
        del self._buffer[: line_end + 2]
        self._state = _HEADERS
        return True

    def _headers(self) -> Event | None:
        if self._buffer.startswith(b"\r\n"):  # a part without headers
            del self._buffer[:2]
            return self._start({})
        end = self._buffer.find(b"\r\n\r\n")
        if end < 0:
            if len(self._buffer) > MAX_HEADER_BYTES:
                raise MultipartError("multipart part headers too long")
            return None
        block = bytes(self._buffer[:end]).decode("latin-1")
        del self._buffer[: end + 4]
        headers: dict[str, str] = {}
        for line in block.split("\r\n"):
            name, colon, value = line.partition(":")
            if not colon:
                raise MultipartError("malformed multipart part header")
            headers[name.strip().lower()] = value.strip()
        return self._start(headers)

    def _start(self, headers: dict[str, str]) -> PartStart:
        self._state = _BODY
        self.in_part = True
        self.parts += 1
        return PartStart(headers)

    def _body(self) -> Event | None:
        found = self._buffer.find(self._body_delimiter)
        if found == 0:
            del self._buffer[: len(self._body_delimiter)]
            self._state = _AFTER_DELIMITER
            self.in_part = False
            return PartEnd()
        if found > 0:
            data = bytes(self._buffer[:found])
            del self._buffer[:found]
            return PartData(data)
        keep = len(self._body_delimiter) - 1
        if len(self._buffer) <= keep:
            return None
        data = bytes(self._buffer[: len(self._buffer) - keep])
        del self._buffer[: len(self._buffer) - keep]
        return PartData(data)
