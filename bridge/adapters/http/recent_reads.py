"""Which reads were audited a moment ago, so a viewer's stream of frame requests is one
access in the audit trail, not hundreds.

A viewer scrolling a 300-slice series asks for 300 rendered frames in a few seconds; an
audit record for each would be 300 records (and 300 synchronous commits) saying one thing:
this user looked at this study. Routes that serve such streams (rendered frames and
thumbnails) audit the first request of an actor, from one address, for one study, and then
not again for ``audit_coalesce_seconds`` (IHE ATNA's "DICOM Instances Accessed" is likewise
one event per study access). Each bridge process keeps its own memory: several processes
may each write one record, never fewer than one.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Hashable

#: Entries kept; the oldest go first (a forgotten entry only means one more record).
MAX_ENTRIES = 10_000


class RecentReads:
    def __init__(self, seconds: float) -> None:
        self._seconds = seconds
        self._seen: OrderedDict[Hashable, float] = OrderedDict()
        self._lock = threading.Lock()

    def first_in_window(self, key: Hashable, *, now: float | None = None) -> bool:
        """True when ``key`` was not seen in the window (it is remembered from now on)."""
        if self._seconds <= 0:
            return True
        moment = time.monotonic() if now is None else now
        with self._lock:
            last = self._seen.get(key)
            if last is not None and moment - last < self._seconds:
                return False
            self._seen[key] = moment
            self._seen.move_to_end(key)
            while len(self._seen) > MAX_ENTRIES:
                self._seen.popitem(last=False)
            return True

    def forget(self, key: Hashable) -> None:
        """Drop ``key`` (its audit record could not be written: the next read tries again)."""
        with self._lock:
            self._seen.pop(key, None)
