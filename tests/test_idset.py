from __future__ import annotations

import random

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
