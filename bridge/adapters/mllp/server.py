"""The MLLP listener: asyncio streams with python-hl7's MLLP framing.

One connection carries many messages, answered in order. Nothing a sender does (garbage
bytes, a missing start block, an oversized message, a dropped connection) stops the
listener or the connection's later messages: each gets an answer where one is possible.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from dataclasses import dataclass
from datetime import UTC, datetime

from hl7.mllp.streams import END_BLOCK, START_BLOCK, MLLPStreamReader, MLLPStreamWriter

from bridge.errors import Rejected, Transient
from bridge.mapping.hl7.ack import AckContext, build_ack
from bridge.services.group_commit.loop import Batcher
from bridge.services.hl7.ingest import Inbound, Outcome

log = logging.getLogger("bridge.mllp")

CARRIAGE_RETURN = b"\r"
FRAME_END = END_BLOCK + CARRIAGE_RETURN


@dataclass(frozen=True, slots=True)
class Frame:
    """A framed block; ``garbage`` is what came before the start block, if anything."""

    block: bytes
    garbage: bytes = b""


class FrameTooLarge(Exception):
    pass


class _Reader(MLLPStreamReader):
    """python-hl7's reader, keeping the bytes of a block that lacks its start character."""

    async def readframe(self) -> Frame:
        try:
            data = await self.readuntil(FRAME_END)
        except asyncio.LimitOverrunError as exc:
            if self._buffer.startswith(FRAME_END, exc.consumed):
                del self._buffer[: exc.consumed + len(FRAME_END)]
            else:
                self._buffer.clear()
            self._maybe_resume_transport()
            raise FrameTooLarge(str(exc)) from None
        body = data[: -len(FRAME_END)]
        start = body.find(START_BLOCK)
        if start == -1:
            return Frame(block=b"", garbage=body)
        return Frame(block=body[start + 1:], garbage=body[:start])


class MLLPServer:
    """``idle_seconds``: a connection that sends nothing for this long (between messages or
    stalled inside one) is closed; ``max_connections``: more at once are closed on arrival,
    so that idle or stalled senders cannot use up what the others need."""

    def __init__(self, writer: Batcher[Inbound, Outcome], *, max_message_bytes: int,
                 idle_seconds: float = 600.0, max_connections: int = 256) -> None:
        self._writer = writer
        self._limit = max_message_bytes
        self._idle = idle_seconds
        self._max_connections = max_connections
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[None]] = set()

    @property
    def connections(self) -> int:
        """Open connections: how many senders may have a message on the way."""
        return len(self._connections)

    async def start(self, host: str, port: int, *, tls: ssl.SSLContext | None = None,
                    handshake_seconds: float = 10.0) -> int:
        """Listen; with ``tls``, MLLP over TLS only (the handshake bounded in time, each
        connection's own: a stalled one holds up no other)."""
        loop = asyncio.get_running_loop()

        def factory() -> asyncio.StreamReaderProtocol:
            reader = _Reader(limit=self._limit, loop=loop)
            return asyncio.StreamReaderProtocol(reader, self._on_connection, loop=loop)

        self._server = await loop.create_server(
            factory, host, port, ssl=tls,
            ssl_handshake_timeout=handshake_seconds if tls is not None else None)
        bound = self._server.sockets[0].getsockname()[1]
        log.info("MLLP listening", extra={"host": host, "port": bound, "tls": tls is not None})
        return int(bound)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        for task in list(self._connections):
            task.cancel()
        await asyncio.gather(*self._connections, return_exceptions=True)

    def _on_connection(self, reader: asyncio.StreamReader,
                       writer: asyncio.StreamWriter) -> None:
        if len(self._connections) >= self._max_connections:
            log.warning("MLLP connection refused: %d connections open already",
                        len(self._connections))
            writer.close()
            return
        task = asyncio.get_running_loop().create_task(self._serve(reader, writer))
        self._connections.add(task)
        task.add_done_callback(self._connections.discard)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        assert isinstance(reader, _Reader)
        out = MLLPStreamWriter(writer.transport, writer._protocol, reader,  # type: ignore[attr-defined]
                               asyncio.get_running_loop())
        address = writer.get_extra_info("peername")
        peer = f"{address[0]}:{address[1]}" if address else ""
        discarding = False
        try:
            while True:
                try:
                    async with asyncio.timeout(self._idle):  # no task per message, unlike wait_for
                        frame = await reader.readframe()
                except TimeoutError:
                    log.info("MLLP connection closed after %.0f s without a message",
                             self._idle, extra={"peer": peer})
                    break
                except FrameTooLarge:
                    # Answer once; the rest of the message arrives later without a start.
                    if not discarding:
                        await self._send(out, _nak(f"message larger than {self._limit} bytes"))
                    discarding = True
                    continue
                if not frame.block:
                    if discarding:
                        discarding = False
                    else:
                        log.warning("MLLP block without start character", extra={"peer": peer})
                        await self._send(out, _nak("MLLP block without start character"))
                    continue
                discarding = False
                if frame.garbage.strip():
                    log.warning("bytes before MLLP start block ignored", extra={"peer": peer})
                try:
                    outcome = await self._writer.run(Inbound(raw=frame.block, peer=peer))
                except Exception:
                    log.exception("hl7 message could not be handled")
                    await self._send(out, _nak("message could not be stored; resend later",
                                               transient=True))
                    continue
                for reply in outcome.replies:
                    out.writeblock(reply.encode(outcome.charset, errors="replace"))
                await out.drain()
        except asyncio.IncompleteReadError as exc:
            if exc.partial.strip():
                log.warning("connection closed inside an MLLP frame", extra={"peer": peer})
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    @staticmethod
    async def _send(out: MLLPStreamWriter, text: str) -> None:
        out.writeblock(text.encode("ascii", errors="replace"))
        await out.drain()


def _nak(reason: str, *, transient: bool = False) -> str:
    error = Transient(reason) if transient else Rejected(reason, hl7_code="100")
    now = f"{datetime.now(UTC):%Y%m%d%H%M%S}"
    return build_ack(AckContext(), "AR", control_id=f"NAK{now}", timestamp=now, error=error)
