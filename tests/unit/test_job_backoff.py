"""Retry back-off of the job queue (bridge.jobs.queue.retry_delay): a pure function."""

from __future__ import annotations

import random

import pytest

from bridge.jobs.queue import RetryPolicy, retry_delay

POLICY = RetryPolicy(max_attempts=10, base_seconds=2.0, max_seconds=60.0, jitter=0.25)


def test_without_jitter_the_delay_doubles_from_the_base() -> None:
    delays = [retry_delay(attempt, POLICY, rand=lambda: 0.0) for attempt in range(1, 6)]
    assert delays == [2.0, 4.0, 8.0, 16.0, 32.0]


def test_the_delay_is_capped() -> None:
    assert retry_delay(6, POLICY, rand=lambda: 0.0) == 60.0
    assert retry_delay(50, POLICY, rand=lambda: 0.0) == 60.0
    # Huge attempt counts (a job requeued for years) neither overflow nor exceed the cap.
    assert retry_delay(10_000, POLICY, rand=lambda: 0.0) == 60.0


def test_jitter_only_shortens_the_delay_by_its_fraction() -> None:
    # rand() returns values in [0, 1): at its top the delay loses a quarter.
    assert retry_delay(3, POLICY, rand=lambda: 0.999999) == pytest.approx(8.0 * 0.75, rel=1e-5)
    assert retry_delay(40, POLICY, rand=lambda: 0.5) == pytest.approx(60.0 * 0.875)


def test_jittered_delays_stay_within_bounds_and_spread_out() -> None:
    rng = random.Random(1234)
    for attempt in range(1, 12):
        step = min(60.0, 2.0 * 2 ** (attempt - 1))
        delays = [retry_delay(attempt, POLICY, rand=rng.random) for _ in range(200)]
        assert all(step * 0.75 <= d <= step for d in delays)
        assert len(set(delays)) > 100  # jobs that failed together do not retry together


@pytest.mark.parametrize("attempt", [0, -3])
def test_attempt_numbers_below_one_count_as_the_first(attempt: int) -> None:
    assert retry_delay(attempt, POLICY, rand=lambda: 0.0) == 2.0


def test_no_jitter_policy_is_exact() -> None:
    policy = RetryPolicy(base_seconds=0.5, max_seconds=3.0, jitter=0.0)
    assert [retry_delay(a, policy) for a in range(1, 6)] == [0.5, 1.0, 2.0, 3.0, 3.0]
