from __future__ import annotations

import random
import tracemalloc

from batchrunner.idset import RECENT_MAX, IdSet


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
    for key in range(RECENT_MAX * 16):
        ids.add(key)
    assert len(ids._runs) <= 5  # logarithmic in the number of keys


def test_merging_runs_holds_about_eight_bytes_per_key() -> None:
    # A million-row run must not hold every key as a Python int while runs merge.
    ids = IdSet()
    for key in range(RECENT_MAX * 8 - 1):
        ids.add(key * 7919 % (2**61))
    tracemalloc.start()
    try:
        ids.add(-1)  # fills the recent set: its run merges with all the older ones
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(ids._runs) == 1
    assert peak < 16 * RECENT_MAX * 8
