from __future__ import annotations

import itertools
import random

import pyarrow as pa
import pytest

from batchrunner.output import keyindex as idset
from batchrunner.output.idset import IdSet
from batchrunner.output.keyindex import RECENT_MAX


def test_membership_matches_a_python_set_across_many_merges() -> None:
    rng = random.Random(3)
    ids = IdSet()
    reference: set[int] = set()
    for _ in range(RECENT_MAX * 5 + 123):
        key = rng.randrange(-(2**63), 2**63)
        ids.add(key)
        reference.add(key)
    assert len(ids) == len(reference)
    assert all(key in ids for key in reference)
    probes = [rng.randrange(-(2**63), 2**63) for _ in range(10_000)]
    assert [p in ids for p in probes] == [p in reference for p in probes]


def test_runs_stay_few_as_keys_accumulate() -> None:
    ids = IdSet()
    for key in range(RECENT_MAX * 16):  # small keys: every one in the same bucket
        ids.add(key)
    assert max(len(runs) for runs in ids._buckets) <= 5  # logarithmic in the number of keys
    assert all(key in ids for key in range(0, RECENT_MAX * 16, 997))


def test_hashed_keys_spread_over_every_bucket_and_the_extremes_are_found() -> None:
    rng = random.Random(5)
    ids = IdSet()
    extremes = [-(2**63), -1, 0, 2**63 - 1]
    for key in extremes:
        ids.add(key)
    for _ in range(ids._recent_max * 2 - len(extremes)):  # two flushes, none pending
        ids.add(rng.randrange(-(2**63), 2**63))
    assert not ids._recent
    assert all(ids._buckets)  # every bucket holds keys
    ranges = [(runs[0][0], runs[0][-1]) for runs in ids._buckets]
    assert all(high < low for (_, high), (low, _) in itertools.pairwise(ranges))
    assert all(key in ids for key in extremes)
    assert 1 not in ids and -2 not in ids


def _held_while_merging(ids: IdSet, key: int, pools: list[pa.MemoryPool]) -> int:
    """Bytes an ``add`` that flushes holds at its peak for merging: Arrow's pool, where
    merges run, plus the merged runs it hands back as Python arrays.

    tracemalloc cannot see Arrow's allocations, and counts every thread's (under pytest,
    a resize of the interned-strings table showed up as a 2 MB "merge"). A proxy of
    Arrow's default pool, made the default for the moment, counts exactly what Arrow
    allocates from it; its ``max_memory`` starts at zero.
    """
    base = pa.default_memory_pool()
    pool = pa.proxy_memory_pool(base)
    pools.append(pool)  # outlives any buffer it handed out
    before = {id(run) for runs in ids._buckets for run in runs}
    pa.set_memory_pool(pool)
    try:
        ids.add(key)  # fills the recent set: its keys merge into the runs
    finally:
        pa.set_memory_pool(base)
    merged = [run for runs in ids._buckets for run in runs if id(run) not in before]
    return pool.max_memory() + 8 * max((len(run) for run in merged), default=0)


def _merge_peaks(flushes: int) -> tuple[list[int], int]:
    """The peak held by each of ``flushes`` flushes of random keys, and the bytes remembered."""
    rng = random.Random(7)
    ids = IdSet()
    pools: list[pa.MemoryPool] = []
    peaks = []
    for _ in range(flushes):
        for _ in range(idset.RECENT_MAX - 1):
            ids.add(rng.randrange(-(2**63), 2**63))
        peaks.append(_held_while_merging(ids, rng.randrange(-(2**63), 2**63), pools))
    assert len(ids) == flushes * idset.RECENT_MAX
    return peaks, 8 * len(ids)


def test_merging_holds_a_small_fraction_of_the_keys_remembered(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A merge holds its runs and their union for a moment. With one set of runs, the merge
    # that joined them all briefly held a second copy of every key: 8 MB more at a
    # million keys, 80 MB at ten million. Bucketing keeps each merge to a bucket's keys.
    monkeypatch.setattr(idset, "RECENT_MAX", 1024)
    peaks, remembered_bytes = _merge_peaks(128)
    assert max(peaks) < remembered_bytes / 4


def test_the_merge_measure_sees_a_merge_of_half_the_keys(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Two buckets instead of 256: a merge joins up to half of every key remembered, and
    # the measure above must see it (it is not blind to where merges run).
    monkeypatch.setattr(idset, "RECENT_MAX", 1024)
    monkeypatch.setattr(idset, "_SHIFT", 63)
    peaks, remembered_bytes = _merge_peaks(128)
    assert max(peaks) > remembered_bytes / 2
