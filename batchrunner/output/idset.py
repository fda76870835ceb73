"""A set of 64-bit keys in about 8 bytes each: recent keys in a small set, older ones in
sorted arrays merged as they grow (a tiny log-structured merge), so remembering every
input id costs 8 MB per million rows instead of the ~70 MB of a Python set.

The keys are hashes, so their top byte spreads them evenly over 256 buckets, each with its
own sorted runs. Merging two runs holds both and their union for a moment; within a bucket
that is a 256th of the keys, where one set of runs would briefly double a million-row
run's 8 MB.
"""

from __future__ import annotations

from array import array
from bisect import bisect_left
from heapq import merge

RECENT_MAX = 1 << 16
BUCKET_BITS = 8
_SHIFT = 64 - BUCKET_BITS
_OFFSET = 1 << (BUCKET_BITS - 1)  # a signed top byte, -128 to 127, as a bucket from 0


class IdSet:
    """``add`` and ``in`` for int keys that fit in a signed 64-bit integer."""

    __slots__ = ("_buckets", "_recent")

    def __init__(self) -> None:
        self._recent: set[int] = set()
        # Per bucket, sorted runs of decreasing size; keys sort by bucket, since the
        # bucket is the top byte.
        self._buckets: list[list[array[int]]] = [[] for _ in range(1 << BUCKET_BITS)]

    def __len__(self) -> int:
        return len(self._recent) + sum(len(run) for runs in self._buckets for run in runs)

    def __contains__(self, key: int) -> bool:
        if key in self._recent:
            return True
        for run in self._buckets[(key >> _SHIFT) + _OFFSET]:
            i = bisect_left(run, key)
            if i < len(run) and run[i] == key:
                return True
        return False

    def add(self, key: int) -> None:
        self._recent.add(key)
        if len(self._recent) >= RECENT_MAX:
            self._flush()

    def _flush(self) -> None:
        keys = array("q", sorted(self._recent))
        self._recent.clear()
        start = 0
        while start < len(keys):
            bucket = (keys[start] >> _SHIFT) + _OFFSET
            first_of_next = (bucket + 1 - _OFFSET) << _SHIFT
            end = bisect_left(keys, first_of_next, start) if bucket < _OFFSET * 2 - 1 else len(keys)
            _merge_into(self._buckets[bucket], keys[start:end])
            start = end


def _merge_into(runs: list[array[int]], run: array[int]) -> None:
    # Merge while the newest run is at least half the size of the one before it, so there
    # are O(log n) runs and each key is merged O(log n) times. Merging streams: sorting the
    # two runs together would hold every key as a Python int for a moment.
    while runs and len(runs[-1]) <= 2 * len(run):
        run = array("q", merge(runs.pop(), run))
    runs.append(run)
