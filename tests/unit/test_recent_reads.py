"""The memory that makes a stream of frame reads one audit record per window."""

from __future__ import annotations

from bridge.adapters.http.recent_reads import MAX_ENTRIES, RecentReads


def test_first_read_in_the_window_only() -> None:
    reads = RecentReads(300)
    assert reads.first_in_window("a", now=0.0)
    assert not reads.first_in_window("a", now=299.0)
    assert reads.first_in_window("b", now=299.0)
    assert reads.first_in_window("a", now=300.0)  # the window has passed: a new access


def test_a_forgotten_read_is_recorded_again() -> None:
    reads = RecentReads(300)
    assert reads.first_in_window("a", now=0.0)
    reads.forget("a")  # its record could not be written
    assert reads.first_in_window("a", now=1.0)


def test_zero_seconds_records_every_read() -> None:
    reads = RecentReads(0)
    assert all(reads.first_in_window("a", now=float(n)) for n in range(3))


def test_memory_is_bounded_and_forgets_the_oldest() -> None:
    reads = RecentReads(300)
    for n in range(MAX_ENTRIES + 1):
        reads.first_in_window(n, now=0.0)
    assert reads.first_in_window(0, now=1.0)  # evicted: recorded again, never skipped
    assert not reads.first_in_window(MAX_ENTRIES, now=1.0)
