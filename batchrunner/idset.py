"""A set of 64-bit keys in about 8 bytes each: recent keys in a small set, older ones in
sorted arrays merged as they grow (a tiny log-structured merge), so remembering every
input id costs 8 MB per million rows instead of the ~70 MB of a Python set.
"""

from __future__ import annotations

from array import array
from bisect import bisect_left
from heapq import merge

RECENT_MAX = 1 << 16


class IdSet:
    """``add`` and ``in`` for int keys that fit in a signed 64-bit integer."""

    __slots__ = ("_recent", "_runs")

    def __init__(self) -> None:
        self._recent: set[int] = set()
        self._runs: list[array[int]] = []  # sorted, sizes decreasing

    def __len__(self) -> int:
        return len(self._recent) + sum(len(run) for run in self._runs)

    def __contains__(self, key: int) -> bool:
        if key in self._recent:
            return True
        for run in self._runs:
            i = bisect_left(run, key)
            if i < len(run) and run[i] == key:
                return True
        return False

    def add(self, key: int) -> None:
        self._recent.add(key)
        if len(self._recent) >= RECENT_MAX:
            self._flush()

    def _flush(self) -> None:
        run = array("q", sorted(self._recent))
        self._recent.clear()
        # Merge while the newest run is at least half the size of the one before it, so
        # there are O(log n) runs and each key is merged O(log n) times. Merging streams:
        # sorting the two runs together would hold every key as a Python int for a moment,
        # some 40 MB at a million keys.
        while self._runs and len(self._runs[-1]) <= 2 * len(run):
            older = self._runs.pop()
            run = array("q", merge(older, run))
        self._runs.append(run)
