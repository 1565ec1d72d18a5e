"""GroupCommit: items that arrive together run in one batch; outcomes go to their callers."""

from __future__ import annotations

import threading
from collections.abc import Sequence

import pytest

from bridge.services.group_commit.threads import GroupCommit


def test_a_lone_caller_runs_its_own_batch() -> None:
    batches: list[list[int]] = []

    def run(items: Sequence[int]) -> list[int | BaseException]:
        batches.append(list(items))
        return [i * 10 for i in items]

    group: GroupCommit[int, int] = GroupCommit(run)
    assert group.submit(1) == 10
    assert group.submit(2) == 20
    assert batches == [[1], [2]]


def test_callers_arriving_during_a_batch_share_the_next_one() -> None:
    batches: list[list[int]] = []
    first_running = threading.Event()
    release_first = threading.Event()

    def run(items: Sequence[int]) -> list[int | BaseException]:
        batches.append(list(items))
        if items[0] == 0:  # hold the first batch until the others have queued
            first_running.set()
            assert release_first.wait(10)
        return [i + 100 if i != 3 else ValueError("refused") for i in items]

    group: GroupCommit[int, int] = GroupCommit(run)
    results: dict[int, object] = {}

    def call(i: int) -> None:
        try:
            results[i] = group.submit(i)
        except ValueError as exc:
            results[i] = exc

    leader = threading.Thread(target=call, args=(0,))
    leader.start()
    assert first_running.wait(10)
    others = [threading.Thread(target=call, args=(i,)) for i in range(1, 6)]
    for thread in others:
        thread.start()
    while sum(1 for t in others if t.is_alive()) < 5 or len(group._queue) < 5:
        threading.Event().wait(0.01)
    release_first.set()
    for thread in [leader, *others]:
        thread.join(10)
    assert batches[0] == [0]
    assert sorted(batches[1]) == [1, 2, 3, 4, 5]  # all five in one batch
    assert len(batches) == 2
    assert {i: r for i, r in results.items() if i != 3} == {0: 100, 1: 101, 2: 102, 4: 104,
                                                          5: 105}
    assert isinstance(results[3], ValueError)  # one item refused, the others not


def test_a_failing_batch_fails_each_of_its_items_and_the_next_caller_leads() -> None:
    calls = 0

    def run(items: Sequence[int]) -> list[int | BaseException]:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("database gone")
        return list(items)

    group: GroupCommit[int, int] = GroupCommit(run)
    with pytest.raises(RuntimeError, match="database gone"):
        group.submit(1)
    assert group.submit(2) == 2
