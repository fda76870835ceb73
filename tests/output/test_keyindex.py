"""The key index past its memory bound: every key still found, marks newest-wins, files cleaned."""

from __future__ import annotations

import random
from array import array
from collections.abc import Iterator
from pathlib import Path

import pytest

from batchrunner.output import keyindex
from batchrunner.output.idset import IdSet
from batchrunner.output.keyindex import KeyIndex, merge_runs, merge_sorted_chunks

BOUND = 4096  # bytes: a few hundred keys in memory, then a spill


def random_keys(n: int, seed: int) -> list[int]:
    rng = random.Random(seed)
    return [rng.randrange(-(2**63), 2**63) for _ in range(n)]


def test_keys_spilled_past_a_tiny_bound_are_all_found_and_no_others(tmp_path: Path) -> None:
    ids = IdSet(tmp_path / "idx", memory_bytes=BOUND)
    keys = random_keys(20_000, 1)
    for key in keys:
        ids.add(key)
    assert ids.spills > 5 and ids.on_disk
    assert any((tmp_path / "idx").iterdir())
    assert all(key in ids for key in keys)
    assert not any(key in ids for key in random_keys(2_000, 2))
    assert len(ids) == len(keys)
    assert 0 in ids or 0 not in keys  # full 64-bit keys: 0 and 1 are different ids
    ids.add(0)
    assert 0 in ids and 1 not in ids


def test_memory_stays_near_the_bound_whatever_the_number_of_keys(tmp_path: Path) -> None:
    index = KeyIndex(tmp_path / "idx", memory_bytes=BOUND)
    held = []
    for n, key in enumerate(random_keys(50_000, 3)):
        index.put(key)
        if n % 1000 == 0:
            held.append(index.memory_bytes())
    fences = 8 * 50_000 // 512 + 8 * 257 * 8  # a fence per 512 keys, sections of a few files
    assert max(held) <= BOUND + fences
    index.close()


def test_the_newest_mark_wins_across_spilled_runs(tmp_path: Path) -> None:
    index = KeyIndex(tmp_path / "idx", memory_bytes=BOUND)
    first = random_keys(3_000, 4)
    for key in first:
        index.put(key, 1)  # failed...
    for key in random_keys(3_000, 5):
        index.put(key, 0)  # (others, pushing the first ones out to disk)
    for key in first[::2]:
        index.put(key, 0)  # ...then fixed by a later run
    assert index.spills >= 2
    assert [index.get(key) for key in first[:6]] == [0, 1, 0, 1, 0, 1]
    index.compact()
    assert index.stored() == 6_000
    assert index.count_marked() == 1_500
    assert [index.get(key) for key in first[:6]] == [0, 1, 0, 1, 0, 1]
    assert index.get(12345) is None


def test_close_removes_the_index_directory(tmp_path: Path) -> None:
    index = KeyIndex(tmp_path / "out.jsonl.index" / "done", memory_bytes=BOUND)
    for key in random_keys(5_000, 6):
        index.put(key)
    assert (tmp_path / "out.jsonl.index" / "done").exists()
    index.close()
    assert not (tmp_path / "out.jsonl.index" / "done").exists()
    assert 5 not in index


def test_below_the_bound_nothing_touches_disk(tmp_path: Path) -> None:
    index = KeyIndex(tmp_path / "idx")
    for key in random_keys(200_000, 7):
        index.put(key)
    assert index.spills == 0
    assert not (tmp_path / "idx").exists()
    index.compact()
    assert index.stored() == 200_000


def test_merged_chunks_keep_the_newest_mark_of_each_key_like_one_merge() -> None:
    rng = random.Random(8)
    runs = []
    for _ in range(3):  # oldest first; each holds a key once, as a file does
        keys = sorted({rng.randrange(-(2**20), 2**20) * 2 for _ in range(3_000)})
        runs.append(array("q", [key | rng.randrange(2) for key in keys]))
    whole, dropped = merge_runs(runs)

    def chunks(run: array[int], size: int) -> Iterator[array[int]]:
        return (run[at : at + size] for at in range(0, len(run), size))

    steps = list(merge_sorted_chunks([chunks(run, 97) for run in runs]))
    assert array("q", [v for step, _ in steps for v in step]) == whole
    assert sum(d for _, d in steps) == dropped > 0


def test_a_merge_of_files_reads_each_in_bounded_chunks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(keyindex._RunFile.bucket_chunks, "__defaults__", (16,))
    reads: list[int] = []
    real_read = keyindex._RunFile._read

    def read(self: keyindex._RunFile, start: int, count: int) -> array[int]:
        reads.append(count)
        return real_read(self, start, count)

    monkeypatch.setattr(keyindex._RunFile, "_read", read)
    index = KeyIndex(tmp_path / "idx", memory_bytes=BOUND)
    keys = random_keys(20_000, 9)  # buckets of ~80 keys, read 16 at a time
    for key in keys[:10_000]:
        index.put(key, 1)
    for key in keys:
        index.put(key, 0)  # the first half again, newer
    reads.clear()
    index.compact()
    assert len(index._files) == 1 and reads and max(reads) <= 16
    assert index.stored() == 20_000 and index.count_marked() == 0
    assert all(index.get(key) == 0 for key in keys[::97])
    index.close()
