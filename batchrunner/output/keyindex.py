"""A set of 64-bit keys, each with a one-bit mark, in bounded memory: past its bound it spills
to sorted runs on disk that are probed with ``os.pread``, so page cache is not RSS.

Keys are hashes (``key_of``), so their top byte spreads them evenly over 256 buckets. The
lowest bit of a stored value is the mark (resume: "its last result was an error"), the other
63 bits the key; a newer ``put`` of a key replaces its mark. Layout, newest first:

- ``recent``: a dict of the last few thousand puts;
- in memory, per bucket, sorted runs (``array('q')``, 8 bytes a key), merged as they grow
  (a tiny log-structured merge: O(log n) runs, each key merged O(log n) times);
- past ``memory_bytes``, every in-memory run is merged into one sorted file in the index
  directory (``OUTPUT.index/``), bucket after bucket, and memory starts empty again. A file
  is probed through fence pointers (the first value of each 4 KiB block: 1/512 of its keys)
  and one ``pread`` of the block. Files are merged on disk, a bucket at a time, while the
  newest is at least half the size of the one before it, so there are O(log n) of them.

Below the bound nothing touches disk. Merges run in Arrow (a stable sort of the runs'
concatenation, keeping the newest of equal keys). An in-memory merge holds one bucket of the
bounded runs. A merge of files reads each file in chunks of ``MERGE_CHUNK_KEYS`` and merges
the keys every chunk has passed, so it holds a fixed few MB however many keys the files
hold: a whole bucket, a 256th of 100M keys, held 3 MB a file plus Arrow's temporaries, and
the process's peak RSS grew with the key count.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
from array import array
from bisect import bisect_left, bisect_right
from collections.abc import Iterable, Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

__all__ = ["DEFAULT_MEMORY_BYTES", "MERGE_CHUNK_KEYS", "KeyIndex", "merge_sorted_chunks"]

logger = logging.getLogger(__name__)

DEFAULT_MEMORY_BYTES = 8 * 1024 * 1024  # a million keys; half of a run's index_memory_mb
RECENT_MAX = 1 << 16
RECENT_ENTRY_BYTES = 100  # a dict entry and its two ints, roughly
BUCKET_BITS = 8
BUCKETS = 1 << BUCKET_BITS
_SHIFT = 64 - BUCKET_BITS
_OFFSET = 1 << (BUCKET_BITS - 1)  # a signed top byte, -128 to 127, as a bucket from 0
BLOCK_KEYS = 512  # 4 KiB: one page read per probe of a file
_KEY_MASK = -2  # clears the mark bit
# Values read from each file at a time when files are merged or read back: 512 KiB.
MERGE_CHUNK_KEYS = 1 << 16


def _bucket(value: int) -> int:
    return (value >> _SHIFT) + _OFFSET


def _int64s(values: array[int]) -> pa.Array:
    return pa.Array.from_buffers(pa.int64(), len(values), [None, pa.py_buffer(values)])


def _to_array(values: pa.Array) -> array[int]:
    out = array("q")
    buf = values.buffers()[1]
    if buf is not None and len(values):
        start = values.offset * 8
        out.frombytes(memoryview(buf)[start : start + 8 * len(values)])
    return out


def merge_runs(runs: list[array[int]], mask: int = _KEY_MASK) -> tuple[array[int], int]:
    """One sorted run of ``runs`` (oldest first), the newest value of each key kept.

    Returns the run and how many values were dropped as superseded.
    """
    runs = [run for run in runs if run]
    if not runs:
        return array("q"), 0
    if len(runs) == 1:
        return runs[0], 0
    values = pa.concat_arrays([_int64s(run) for run in runs])
    keys = values if mask == -1 else pc.bit_wise_and(values, pa.scalar(mask, pa.int64()))
    order = pc.array_sort_indices(keys)  # stable: equal keys stay oldest first
    sorted_keys = pc.take(keys, order)
    n = len(sorted_keys)
    # Keep a value unless the next one has the same key (it is newer).
    last_of_key = pc.not_equal(sorted_keys.slice(0, n - 1), sorted_keys.slice(1))
    keep = pa.concat_arrays([last_of_key, pa.array([True])])
    kept = pc.take(values, pc.filter(order, keep))
    merged = _to_array(kept)
    return merged, n - len(merged)


def merge_sorted_chunks(
    sources: list[Iterator[array[int]]], mask: int = _KEY_MASK
) -> Iterator[tuple[array[int], int]]:
    """Merge sorted streams (oldest first) chunk by chunk: yields sorted runs and drops.

    Each source yields sorted chunks of one sorted run that holds each key once. Every step
    merges, from each source's current chunk, the values whose key is at most the smallest
    key that ends a current chunk: no later chunk can hold one of those keys, so the newest
    value of each key is kept as ``merge_runs`` keeps it, and a step holds at most one chunk
    per source.
    """
    heads = [next(source, array("q")) for source in sources]
    high = ~mask  # the mark bits: a value's key is at most k when the value is at most k | high
    while True:
        live = [head for head in heads if head]
        if not live:
            return
        frontier = min(head[-1] & mask for head in live) | high
        taken: list[array[int]] = []
        for i, head in enumerate(heads):
            if not head:
                continue
            cut = bisect_right(head, frontier)
            taken.append(head[:cut])
            rest = head[cut:]
            heads[i] = rest if rest else next(sources[i], array("q"))
        yield merge_runs(taken, mask)


def _find(run: array[int], key: int, mask: int) -> int | None:
    i = bisect_left(run, key)
    if i < len(run) and run[i] & mask == key:
        return run[i] & ~mask
    return None


class _RunFile:
    """One sorted run on disk: its bucket sections, fence pointers and an open descriptor."""

    __slots__ = ("count", "fd", "fences", "path", "sections")

    def __init__(self, path: Path) -> None:
        self.path = path
        self.fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
        self.sections = array("q", [0])  # start of each bucket's values; then the end
        self.fences = array("q")  # the first value of each block
        self.count = 0

    def append(self, values: array[int]) -> None:
        """Append the next bucket's sorted values (call once per bucket, in order)."""
        self.write(values)
        self.end_bucket()

    def write(self, values: array[int]) -> None:
        """Append sorted values to the bucket being written (after the ones written before)."""
        if values:
            start = (-self.count) % BLOCK_KEYS
            self.fences.extend(values[start::BLOCK_KEYS])
            data = values.tobytes()
            written = 0
            while written < len(data):
                written += os.pwrite(self.fd, data[written:], self.count * 8 + written)
            self.count += len(values)

    def end_bucket(self) -> None:
        """The values written since the last call are the next bucket's."""
        self.sections.append(self.count)

    def bucket_chunks(self, b: int, chunk: int = MERGE_CHUNK_KEYS) -> Iterator[array[int]]:
        """The bucket's values, at most ``chunk`` at a time."""
        end = self.sections[b + 1]
        for start in range(self.sections[b], end, chunk):
            yield self._read(start, min(chunk, end - start))

    def _read(self, start: int, count: int) -> array[int]:
        out = array("q")
        want = count * 8
        at = start * 8
        while len(out) * 8 < want:
            chunk = os.pread(self.fd, want - len(out) * 8, at + len(out) * 8)
            if not chunk:
                raise OSError(f"{self.path}: index run is shorter than expected")
            out.frombytes(chunk)
        return out

    def find(self, key: int, mask: int) -> int | None:
        block = bisect_right(self.fences, key | ~mask) - 1
        if block < 0:
            return None
        start = block * BLOCK_KEYS
        return _find(self._read(start, min(BLOCK_KEYS, self.count - start)), key, mask)

    def close(self) -> None:
        os.close(self.fd)

    def remove(self) -> None:
        self.close()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()


class KeyIndex:
    """``put``/``get`` of int64 keys with a mark bit, spilling to ``directory`` past a bound.

    ``directory`` is created on the first spill and removed by ``close()``; without one the
    index never spills. Not thread-safe: one owner at a time.
    """

    __slots__ = (
        "_buckets",
        "_directory",
        "_files",
        "_in_runs",
        "_limit",
        "_mask",
        "_next_file",
        "_recent",
        "_recent_max",
        "_superseded",
        "spills",
    )

    def __init__(
        self,
        directory: Path | None = None,
        *,
        memory_bytes: int = DEFAULT_MEMORY_BYTES,
        marks: bool = True,
    ) -> None:
        """Without ``marks``, keys keep all 64 bits and every mark reads 0."""
        self._directory = directory
        self._mask = _KEY_MASK if marks else -1
        self._limit = max(memory_bytes, 1)
        self._recent_max = max(16, min(RECENT_MAX, self._limit // (4 * RECENT_ENTRY_BYTES)))
        self._recent: dict[int, int] = {}
        self._buckets: list[list[array[int]]] = [[] for _ in range(BUCKETS)]
        self._in_runs = 0  # values held in the in-memory runs
        self._files: list[_RunFile] = []
        self._next_file = 0
        self._superseded = 0  # values dropped by merges: keys put again
        self.spills = 0

    # -- reading ------------------------------------------------------------------------------

    def get(self, key: int) -> int | None:
        """The key's mark (0 or 1), or None when it was never put."""
        mask = self._mask
        key &= mask
        mark = self._recent.get(key)
        if mark is not None:
            return mark
        for run in reversed(self._buckets[_bucket(key)]):
            found = _find(run, key, mask)
            if found is not None:
                return found
        for file in reversed(self._files):
            found = file.find(key, mask)
            if found is not None:
                return found
        return None

    def __contains__(self, key: int) -> bool:
        return self.get(key) is not None

    def stored(self) -> int:
        """Values held: the number of distinct keys once ``compact()`` has run."""
        files = sum(file.count for file in self._files)
        return len(self._recent) + self._in_runs + files

    @property
    def on_disk(self) -> bool:
        return bool(self._files)

    def memory_bytes(self) -> int:
        """Roughly what the index holds in memory (runs, recent puts and fence pointers)."""
        fences = sum(8 * len(file.fences) + 8 * BUCKETS for file in self._files)
        return 8 * self._in_runs + RECENT_ENTRY_BYTES * len(self._recent) + fences

    def count_marked(self) -> int:
        """How many stored values carry the mark (exact once ``compact()`` has run)."""
        if self._mask == -1:
            return 0
        total = sum(mark for mark in self._recent.values())
        for b in range(BUCKETS):
            runs: list[Iterable[array[int]]] = [file.bucket_chunks(b) for file in self._files]
            runs.append(self._buckets[b])
            for run in (chunk for chunks in runs for chunk in chunks):
                if run:
                    marks = pc.bit_wise_and(_int64s(run), pa.scalar(1, pa.int64()))
                    total += pc.sum(marks).as_py() or 0
        return total

    def iter_values(self) -> Iterator[int]:
        """Every stored value (key | mark), after ``compact()``: each key once, sorted."""
        for b in range(BUCKETS):
            if self._files:
                for chunk in self._files[0].bucket_chunks(b):
                    yield from chunk
            else:
                for run in self._buckets[b]:
                    yield from run

    # -- writing ------------------------------------------------------------------------------

    def put(self, key: int, mark: int = 0) -> None:
        """Remember ``key`` with ``mark`` (0 or 1), replacing the mark of an earlier put."""
        recent = self._recent
        recent[key & self._mask] = mark & ~self._mask
        if len(recent) >= self._recent_max:
            self._flush()

    def add(self, key: int) -> None:
        self.put(key, 0)

    def _flush(self) -> None:
        values = array("q", sorted(key | mark for key, mark in self._recent.items()))
        self._recent.clear()
        start = 0
        while start < len(values):
            bucket = _bucket(values[start])
            first_of_next = (bucket + 1 - _OFFSET) << _SHIFT
            end = bisect_left(values, first_of_next, start) if bucket < BUCKETS - 1 else len(values)
            self._merge_into(self._buckets[bucket], values[start:end])
            start = end
        if self._directory is not None and self.memory_bytes() > self._limit:
            self._spill()

    def _merge_into(self, runs: list[array[int]], run: array[int]) -> None:
        # Merge while the newest run is at least half the size of the one before it.
        self._in_runs += len(run)
        while runs and len(runs[-1]) <= 2 * len(run):
            before = len(runs[-1]) + len(run)
            run, dropped = merge_runs([runs.pop(), run], self._mask)
            self._in_runs -= before - len(run)
            self._superseded += dropped
        runs.append(run)

    def _new_file(self) -> _RunFile:
        assert self._directory is not None
        self._directory.mkdir(parents=True, exist_ok=True)
        path = self._directory / f"run-{self._next_file:06d}.i64"
        self._next_file += 1
        return _RunFile(path)

    def _spill(self) -> None:
        """Write every in-memory run into one new file; merge files while they are similar."""
        file = self._new_file()
        try:
            for b, runs in enumerate(self._buckets):
                merged, dropped = merge_runs(runs, self._mask)
                self._superseded += dropped
                file.append(merged)
                self._buckets[b] = []
        except BaseException:
            file.remove()
            raise
        self._in_runs = 0
        self._files.append(file)
        self.spills += 1
        logger.debug("key index spilled %d keys to %s", file.count, file.path)
        while len(self._files) >= 2 and self._files[-2].count <= 2 * self._files[-1].count:
            self._merge_files(2)

    def _merge_files(self, how_many: int) -> None:
        sources = self._files[-how_many:]
        target = self._new_file()
        try:
            for b in range(BUCKETS):
                chunks = [source.bucket_chunks(b) for source in sources]
                for merged, dropped in merge_sorted_chunks(chunks, self._mask):
                    self._superseded += dropped
                    target.write(merged)
                target.end_bucket()
        except BaseException:
            target.remove()
            raise
        for source in sources:
            source.remove()
        self._files[-how_many:] = [target]

    def compact(self) -> None:
        """Merge everything into one run per bucket (or one file): each key once, one probe."""
        if self._recent:
            self._flush()
        if self._files:
            if self._in_runs or self._recent:
                self._spill()
            if len(self._files) > 1:
                self._merge_files(len(self._files))
            return
        for b, runs in enumerate(self._buckets):
            if len(runs) > 1:
                merged, dropped = merge_runs(runs, self._mask)
                self._superseded += dropped
                self._in_runs -= sum(len(run) for run in runs) - len(merged)
                self._buckets[b] = [merged]

    def close(self) -> None:
        """Drop the files and the directory; the index is empty afterwards."""
        for file in self._files:
            file.remove()
        self._files.clear()
        self._recent.clear()
        self._buckets = [[] for _ in range(BUCKETS)]
        self._in_runs = 0
        if self._directory is not None:
            remove_index_dir(self._directory)


def remove_index_dir(directory: Path) -> None:
    """Remove an index directory (a killed run's too); a missing one is fine."""
    try:
        shutil.rmtree(directory)
    except FileNotFoundError:
        pass
    except OSError as exc:
        logger.warning("could not remove %s: %s", directory, exc.strerror or exc)
