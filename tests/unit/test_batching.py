"""Group commit on the event loop: batching, linger, and failures that must not stop it."""

from __future__ import annotations

import asyncio
import time

import pytest

from bridge.services.group_commit.loop import LoopBatcher


def run(coro: object) -> object:
    return asyncio.run(coro)  # type: ignore[arg-type]


def test_concurrent_items_share_a_batch_and_get_their_own_results() -> None:
    batches: list[list[int]] = []

    def handle(items: list[int]) -> list[int]:
        batches.append(items)
        return [i * 10 for i in items]

    async def main() -> list[int]:
        batcher: LoopBatcher[int, int] = LoopBatcher(handle, expected=lambda: 5)
        batcher.start()
        results = await asyncio.gather(*(batcher.run(i) for i in range(5)))
        await batcher.stop()
        return list(results)

    assert run(main()) == [0, 10, 20, 30, 40]
    assert batches == [[0, 1, 2, 3, 4]]


def test_linger_gathers_late_senders_but_a_single_sender_never_waits() -> None:
    batches: list[list[str]] = []

    def handle(items: list[str]) -> list[str]:
        batches.append(items)
        return items

    async def main(expected: int) -> float:
        batcher: LoopBatcher[str, str] = LoopBatcher(handle, linger=0.05,
                                                     expected=lambda: expected)
        batcher.start()
        start = time.perf_counter()
        first = asyncio.ensure_future(batcher.run("a"))
        if expected > 1:
            await asyncio.sleep(0.01)  # the second sender is a little late
            await batcher.run("b")
        await first
        elapsed = time.perf_counter() - start
        await batcher.stop()
        return elapsed

    assert run(main(2)) < 1
    assert batches == [["a", "b"]]
    batches.clear()
    assert run(main(1)) < 0.04  # no linger for the usual single MIS connection
    assert batches == [["a"]]


def test_batch_max_splits_and_a_failing_batch_does_not_stop_the_next() -> None:
    calls: list[list[int]] = []

    def handle(items: list[int]) -> list[int]:
        calls.append(items)
        if 0 in items:
            raise RuntimeError("boom")
        return items

    async def main() -> tuple[object, list[int]]:
        batcher: LoopBatcher[int, int] = LoopBatcher(handle, batch_max=2, expected=lambda: 4)
        batcher.start()
        results = await asyncio.gather(*(batcher.run(i) for i in range(4)),
                                       return_exceptions=True)
        later = await batcher.run(7)
        await batcher.stop()
        return results, [later]

    results, later = run(main())  # type: ignore[misc]
    assert [len(c) for c in calls[:2]] == [2, 2]
    assert isinstance(results[0], RuntimeError) and isinstance(results[1], RuntimeError)
    assert results[2:] == [2, 3]
    assert later == [7]


@pytest.mark.parametrize("expected", [0, 1])
def test_nothing_is_lost_at_stop(expected: int) -> None:
    def handle(items: list[int]) -> list[int]:
        return items

    async def main() -> list[int]:
        batcher: LoopBatcher[int, int] = LoopBatcher(handle, expected=lambda: expected)
        batcher.start()
        pending = [asyncio.ensure_future(batcher.run(i)) for i in range(3)]
        await asyncio.sleep(0)
        await batcher.stop()
        return [await p for p in pending]

    assert run(main()) == [0, 1, 2]
