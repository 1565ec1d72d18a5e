"""Group commit: whatever work has queued up is done in one transaction.

Many MLLP connections submit messages; while one batch is being committed the next ones
queue, so the cost of a transaction (statements, an fsync) is shared by every message in
the batch, and latency stays at one commit when the load is light.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Generic, Protocol, TypeVar

log = logging.getLogger("bridge.batching")

In = TypeVar("In")
Out = TypeVar("Out")

InC = TypeVar("InC", contravariant=True)
OutC = TypeVar("OutC", covariant=True)


class Batcher(Protocol[InC, OutC]):
    """What a listener needs: hand in one item, get its result when its batch is done."""

    async def run(self, item: InC) -> OutC: ...


class LoopBatcher(Generic[In, Out]):
    """Group commit on the event loop itself: no second thread, so no GIL hand-offs.

    While a batch is being applied (blocking the loop for one transaction), the kernel keeps
    receiving for every connection; the next turn of the loop reads all of it.

    Senders wait for each ACK, so with K busy connections a small batch tends to repeat
    itself: the two senders answered last are the only ones ready next time, and every
    commit (an fsync) carries two messages. So before committing, the batcher lingers up to
    ``linger`` seconds while fewer messages are pending than ``expected()`` senders are
    connected; a single sender (the usual MIS link) never waits.
    """

    def __init__(self, handle_batch: Callable[[list[In]], list[Out]], *,
                 batch_max: int = 256, linger: float = 0.002,
                 expected: Callable[[], int] = lambda: 1) -> None:
        self._handle = handle_batch
        self._batch_max = batch_max
        self._linger = linger
        self._expected = expected
        self._pending: list[tuple[In, asyncio.Future[Out]]] = []
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        #: While lingering: resolved when enough messages are pending (or by the timer).
        self._enough: asyncio.Future[None] | None = None
        self._target = 0

    def start(self) -> None:
        self._wake = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self._drain())

    async def run(self, item: In) -> Out:
        assert self._wake is not None, "start() first"
        future: asyncio.Future[Out] = asyncio.get_running_loop().create_future()
        self._pending.append((item, future))
        self._wake.set()
        enough = self._enough
        if enough is not None and len(self._pending) >= self._target:
            _resolve(enough)
        return await future

    async def stop(self) -> None:
        """Finish what is queued, then stop."""
        while self._pending:
            await asyncio.sleep(0.01)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _gather(self) -> None:
        """Wait briefly for the other connected senders' messages.

        One future and one timer per batch (not a ``wait_for`` per arriving message): the
        sender whose message completes the batch resolves it.
        """
        self._target = min(self._expected(), self._batch_max)
        if len(self._pending) >= self._target or self._linger <= 0:
            return
        loop = asyncio.get_running_loop()
        self._enough = enough = loop.create_future()
        timer = loop.call_later(self._linger, _resolve, enough)
        try:
            await enough
        finally:
            timer.cancel()
            self._enough = None

    async def _drain(self) -> None:
        assert self._wake is not None
        while True:
            await self._wake.wait()
            self._wake.clear()
            await self._gather()
            while self._pending:
                batch = self._pending[: self._batch_max]
                del self._pending[: self._batch_max]
                try:
                    results = self._handle([item for item, _ in batch])
                except Exception as exc:  # never let one bad batch stop the intake
                    log.exception("batch failed")
                    for _, future in batch:
                        if not future.done():
                            future.set_exception(exc)
                    continue
                for (_, future), result in zip(batch, results, strict=True):
                    if not future.done():
                        future.set_result(result)
                await asyncio.sleep(0)


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
