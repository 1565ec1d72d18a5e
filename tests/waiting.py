"""Waiting for work other threads or processes do: a deadline, never a measurement."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def eventually(probe: Callable[[], T | None], timeout: float = 60.0,
               interval: float = 0.2) -> T:
    """``probe()`` until it gives something truthy; fails the test after ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = probe()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"condition not reached within {timeout:.0f} s")
