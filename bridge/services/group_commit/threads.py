"""Group commit for threads: work that arrives together shares one transaction.

Each DICOM association is a thread, and each object must be durable before its answer.
Committing every object alone costs one database fsync (and one directory fsync) each; when
several associations store at once, the threads that arrive while a commit is running are
gathered and committed together by one of them (the leader), so the fsyncs are shared.

No thread of its own: the first caller becomes the leader and runs a batch that starts with
its own item; when it is done it hands the lead to the oldest waiting caller, whose item
then heads the next batch. A lone caller simply runs its own batch of one, at no extra cost.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")


@dataclass(eq=False, slots=True)
class _Waiter(Generic[Item, Result]):
    item: Item
    wake: threading.Event = field(default_factory=threading.Event)
    finished: bool = False
    result: Result | None = None
    error: BaseException | None = None


#: Runs a batch; returns one result, or the exception to raise, per item, in order.
BatchRunner = Callable[[Sequence[Item]], Sequence["Result | BaseException"]]


class GroupCommit(Generic[Item, Result]):
    def __init__(self, run_batch: BatchRunner[Item, Result], *, max_batch: int = 64) -> None:
        self._run_batch = run_batch
        self._max_batch = max_batch
        self._mutex = threading.Lock()
        self._queue: list[_Waiter[Item, Result]] = []
        self._leading = False

    def submit(self, item: Item) -> Result:
        """Run ``item`` in some batch and return its result (or raise its error)."""
        me: _Waiter[Item, Result] = _Waiter(item)
        with self._mutex:
            self._queue.append(me)
            lead = not self._leading
            self._leading = True
        if not lead:
            me.wake.wait()  # finished by a leader, or promoted to lead
        if not me.finished:
            self._lead()
        if me.error is not None:
            raise me.error
        return me.result  # type: ignore[return-value]

    def _lead(self) -> None:
        with self._mutex:
            batch = self._queue[:self._max_batch]
            del self._queue[:self._max_batch]
        try:
            outcomes = self._run_batch([w.item for w in batch])
            if len(outcomes) != len(batch):
                raise RuntimeError("a batch must give one outcome per item")
        except BaseException as exc:  # the batch as a whole failed: so did every item
            outcomes = [exc] * len(batch)
        for waiter, outcome in zip(batch, outcomes, strict=True):
            if isinstance(outcome, BaseException):
                waiter.error = outcome
            else:
                waiter.result = outcome
            waiter.finished = True
        with self._mutex:
            successor = self._queue[0] if self._queue else None
            if successor is None:
                self._leading = False
        for waiter in batch:
            waiter.wake.set()
        if successor is not None:
            successor.wake.set()  # not finished: it leads the next batch
