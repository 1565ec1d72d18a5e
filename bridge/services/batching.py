"""Group commit: one writer thread takes whatever work has queued up and does it in one go.

Many MLLP connections submit messages; while one batch is being committed the next ones
queue, so the cost of a commit (an fsync on SQLite) is shared by every message in the batch
and latency stays at one commit when the load is light.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Generic, TypeVar

log = logging.getLogger("bridge.batching")

In = TypeVar("In")
Out = TypeVar("Out")

_STOP = object()


class BatchWriter(Generic[In, Out]):
    def __init__(self, handle_batch: Callable[[list[In]], list[Out]], *, batch_max: int = 256,
                 name: str = "bridge-writer") -> None:
        self._handle = handle_batch
        self._batch_max = batch_max
        self._queue: queue.SimpleQueue[tuple[In, Future[Out]] | object] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def submit(self, item: In) -> Future[Out]:
        future: Future[Out] = Future()
        self._queue.put((item, future))
        return future

    async def run(self, item: In) -> Out:
        return await asyncio.wrap_future(self.submit(item))

    def stop(self, timeout: float = 30.0) -> None:
        """Finish what is queued, then stop."""
        if self._thread.is_alive():
            self._queue.put(_STOP)
            self._thread.join(timeout)

    def _run(self) -> None:
        stopping = False
        while not stopping:
            first = self._queue.get()
            if first is _STOP:
                break
            batch = [first]
            while len(batch) < self._batch_max:
                try:
                    nxt = self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is _STOP:
                    stopping = True
                    break
                batch.append(nxt)
            items = [entry[0] for entry in batch]  # type: ignore[index]
            futures: list[Future[Out]] = [entry[1] for entry in batch]  # type: ignore[index]
            try:
                results = self._handle(items)
            except BaseException as exc:  # never let one bad batch kill the writer
                log.exception("batch failed")
                for future in futures:
                    if not future.done():
                        future.set_exception(exc)
                continue
            for future, result in zip(futures, results, strict=True):
                # The waiter may be gone (its connection closed); the work is done anyway.
                if not future.done():
                    future.set_result(result)
