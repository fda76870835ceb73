"""Finishing OUTPUT: one row per (id, model), the last result winning, in a single ordinary file.

JSONL is rewritten only when it holds a key twice, a torn line, or must be sorted; Parquet's
earlier OUTPUT, parts and last buffered rows are streamed into a new OUTPUT. Both find repeats
with a Bloom filter in one pass, so memory stays at a few bytes per row.
"""

from __future__ import annotations

import logging
import os
import shutil
from array import array
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import TypeAlias

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from batchrunner.output.durable import fsync_dir, replacing
from batchrunner.output.ondisk import (
    BATCH_ROWS,
    KEY_COLUMNS,
    PARTS_THROUGH_KEY,
    Entry,
    iter_parquet_entries,
    key_of,
    parse_line,
    parts_dir,
    read_part_entries,
)
from batchrunner.results import RESULT_SCHEMA

__all__ = [
    "COMPRESSION",
    "DICTIONARY_COLUMNS",
    "ROW_GROUP_ROWS",
    "compact_parquet",
    "finish_jsonl",
]

logger = logging.getLogger(__name__)

# A part's worth of rows: finishing holds one group at a time, so its memory is the same
# for a 10k-row output as for a 10M-row one.
ROW_GROUP_ROWS = 10_000
ROW_GROUP_BYTES = 32 * 1024 * 1024
COMPRESSION = "zstd"
# Dictionary pages only where values repeat. Over ids, answers and messages a dictionary
# cost the encoder some 6 MB and a third of its time per part, and zstd compressed the
# plain values smaller anyway (153 KB against 251 KB for 10,000 short answers).
DICTIONARY_COLUMNS = ["model", "status", "finish_reason", "error_type", "traffic_type"]
_SORT_KEYS = [("row", "ascending"), ("model", "ascending")]  # rows without a position last
_SORT_COLUMNS = ["row", "model", "offset", "length"]
_NO_ROW = 2**63 - 1  # a JSONL row without a position sorts last, as a null does

# A source of rows for the compacted file: a Parquet file, or rows still in memory.
Source: TypeAlias = Path | pa.Table


# --- JSONL ---------------------------------------------------------------------------------


def _sort_key(entry: Entry) -> tuple[bool, int, str]:
    return (entry.row is None, entry.row or 0, entry.model)


def finish_jsonl(path: Path, *, ordered: bool) -> None:
    """Rewrite OUTPUT only if it holds a key twice, an unreadable line, or is out of order."""
    torn = 0
    in_order = True

    def first_pass() -> Iterator[int]:
        nonlocal torn, in_order
        previous: tuple[bool, int, str] | None = None
        for entry in _jsonl_entries(path):
            if entry is None:
                torn += 1
                continue
            if ordered and in_order:
                current = _sort_key(entry)
                in_order = previous is None or previous <= current
                previous = current
            yield entry.key

    def keys() -> Iterator[int]:
        return (entry.key for entry in _jsonl_entries(path) if entry is not None)

    last = _last_of_repeats(first_pass(), _count_lines(path))
    reordered = ordered and not in_order
    if not torn and not reordered and not _any_repeat(keys(), last):
        return
    logger.info(
        "rewriting %s: dropping superseded rows and %d unreadable lines%s",
        path,
        torn,
        ", sorting by row" if ordered else "",
    )
    if ordered:
        _rewrite_jsonl_sorted(path, last)
        return
    with path.open("rb") as source, replacing(path) as out:
        index = 0
        for line in source:
            entry = parse_line(line)
            if entry is None:
                continue
            if _kept(last, entry.key, index):
                out.write(line)
            index += 1


def _rewrite_jsonl_sorted(path: Path, last: dict[int, int]) -> None:
    """Sort by (row, model) holding 32 bytes per row (row, model, offset, length) in Arrow.

    The columns are built from ``array`` buffers, with models as numbers: ``pa.array``
    imports pandas where it is installed (0.25 s and 50 MB).
    """
    chunks: list[pa.RecordBatch] = []
    codes: dict[str, int] = {}  # each model's number, in the order they first appear
    columns = rows, models, offsets, lengths = tuple(array("q") for _ in range(4))

    def seal() -> None:
        # Copies: an array that Arrow holds a view of cannot be cleared.
        batch = [_int64s(array("q", c)) for c in columns]
        chunks.append(pa.record_batch(batch, names=_SORT_COLUMNS))
        for column in columns:
            del column[:]

    with path.open("rb") as source:
        offset = index = 0
        for line in source:
            entry = parse_line(line)
            if entry is not None:
                if _kept(last, entry.key, index):
                    rows.append(_NO_ROW if entry.row is None else entry.row)
                    models.append(codes.setdefault(entry.model, len(codes)))
                    offsets.append(offset)
                    lengths.append(len(line))
                    if len(rows) >= BATCH_ROWS:
                        seal()
                index += 1
            offset += len(line)
        seal()
        table = pa.Table.from_batches(chunks)
        chunks.clear()
        # Number the models in name order, as the Parquet output sorts them.
        rank = {code: i for i, (_, code) in enumerate(sorted(codes.items()))}
        by_name = pc.take(_int64s(array("q", [rank[c] for c in range(len(codes))])), table["model"])
        table = table.set_column(1, "model", by_name)
        order = table.sort_by(_SORT_KEYS).select(["offset", "length"])
        with replacing(path) as out:
            fd = source.fileno()
            for batch in order.to_batches(BATCH_ROWS):
                for at, length in zip(
                    batch.column(0).to_pylist(), batch.column(1).to_pylist(), strict=True
                ):
                    out.write(os.pread(fd, length, at))


def _jsonl_entries(path: Path) -> Iterator[Entry | None]:
    with path.open("rb") as f:
        for line in f:
            yield parse_line(line)


def _count_lines(path: Path) -> int:
    count = 0
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            count += chunk.count(b"\n")
    return count


# --- Parquet ---------------------------------------------------------------------------------


def compact_parquet(
    out: Path,
    parts: Sequence[tuple[int, Path]],
    parts_through: int,
    *,
    pending: tuple[int, pa.Table] | None = None,
    ordered: bool,
    distinct: bool = False,
) -> None:
    """Merge OUTPUT (from an earlier finished run), the parts and ``pending`` into a new OUTPUT.

    ``pending`` is the writer's last rows, not yet a part, with the number of the journal
    that holds them: OUTPUT records that number as merged, so the journal is stale from the
    rename on. Streams record batches. Memory: the repeat finder (2 bytes per row plus an
    entry per flagged key), one row group being written (10k rows or 32 MiB), one part's
    keys; with ``ordered`` the whole result table is sorted in memory (about OUTPUT's
    uncompressed size). ``distinct`` says no key occurs twice among OUTPUT, the parts and
    ``pending``: the repeat finder's pass over every key is skipped.
    """
    directory = parts_dir(out)
    if parts or pending is not None or ordered or not out.exists():
        had_output = out.exists()
        sources: list[Source] = [out] if had_output else []

        def keys() -> Iterator[int]:
            if had_output:
                yield from (entry.key for entry in iter_parquet_entries(out, columns=KEY_COLUMNS))
            for _, part in parts:
                entries = read_part_entries(part)
                if entries is not None:  # resume skipped an unreadable part: its rows were resent
                    sources.append(part)
                    yield from (entry.key for entry in entries)
            if pending is not None:
                sources.append(pending[1])
                yield from _table_keys(pending[1])

        if distinct:
            sources.extend(part for _, part in parts)
            if pending is not None:
                sources.append(pending[1])
            last: dict[int, int] = {}
        else:
            expected = sum(_num_rows(source) for source in [*sources, *(p for _, p in parts)])
            if pending is not None:
                expected += pending[1].num_rows
            last = _last_of_repeats(keys(), expected)
        seqs = [seq for seq, _ in parts] + ([pending[0]] if pending is not None else [])
        _write_compacted(out, sources, last, max([parts_through, *seqs]), ordered=ordered)
    try:
        if directory.exists():
            shutil.rmtree(directory)
        fsync_dir(out.parent)
    except OSError as exc:  # harmless: the parts are recorded as merged in OUTPUT's metadata
        logger.warning("could not remove %s: %s", directory, exc.strerror or exc)


def _num_rows(source: Path) -> int:
    try:
        with pq.ParquetFile(source) as pf:
            return int(pf.metadata.num_rows)
    except (OSError, pa.ArrowException):
        return 0


def _table_keys(table: pa.Table) -> Iterator[int]:
    ids = table.column("id").to_pylist()
    models = table.column("model").to_pylist()
    return (key_of(i, m) for i, m in zip(ids, models, strict=True))


def _batches(source: Source) -> Iterator[pa.RecordBatch]:
    if isinstance(source, pa.Table):
        yield from source.to_batches(ROW_GROUP_ROWS)
        return
    with pq.ParquetFile(source) as pf:
        yield from pf.iter_batches(batch_size=ROW_GROUP_ROWS)


def _write_compacted(
    out: Path, sources: list[Source], last: dict[int, int], through: int, *, ordered: bool
) -> None:
    schema = RESULT_SCHEMA.with_metadata({PARTS_THROUGH_KEY: str(through).encode()})
    collected: list[pa.Table] = []
    with replacing(out) as sink:
        writer = pq.ParquetWriter(
            sink, schema, compression=COMPRESSION, use_dictionary=DICTIONARY_COLUMNS
        )
        try:
            groups = _RowGroups(writer)
            index = 0
            for source in sources:
                for batch in _batches(source):
                    table = _conform(pa.Table.from_batches([batch]))
                    if last:
                        keys = enumerate(_table_keys(table))
                        kept = array("q", (n for n, key in keys if _kept(last, key, index + n)))
                        index += table.num_rows
                        table = table.take(_int64s(kept))
                    if ordered:
                        collected.append(table)
                    else:
                        groups.add(table)
            if ordered and collected:
                groups.add(pa.concat_tables(collected).sort_by(_SORT_KEYS))
                collected.clear()
            groups.finish()
        finally:
            writer.close()


def _int64s(values: array[int]) -> pa.Array:
    # From a buffer: pa.array imports pandas where it is installed (0.25 s and 50 MB).
    return pa.Array.from_buffers(pa.int64(), len(values), [None, pa.py_buffer(values)])


def _conform(table: pa.Table) -> pa.Table:
    table = table.replace_schema_metadata(None)
    if table.schema.equals(RESULT_SCHEMA):
        return table
    return table.select(list(RESULT_SCHEMA.names)).cast(RESULT_SCHEMA)


class _RowGroups:
    """Feed a ParquetWriter whole row groups, whatever size the incoming tables are.

    A group closes at ``ROW_GROUP_ROWS`` rows or ``ROW_GROUP_BYTES`` of Arrow data,
    whichever comes first, so long answers do not make one group hold gigabytes.
    """

    def __init__(self, writer: pq.ParquetWriter) -> None:
        self._writer = writer
        self._pending: list[pa.Table] = []
        self._rows = 0
        self._bytes = 0

    def add(self, table: pa.Table) -> None:
        self._pending.append(table)
        self._rows += table.num_rows
        self._bytes += table.nbytes
        if self._bytes >= ROW_GROUP_BYTES:
            self.finish()
            return
        if self._rows < ROW_GROUP_ROWS:
            return
        whole = pa.concat_tables(self._pending)
        full = whole.num_rows - whole.num_rows % ROW_GROUP_ROWS
        self._writer.write_table(whole.slice(0, full), row_group_size=ROW_GROUP_ROWS)
        pa.default_memory_pool().release_unused()
        rest = whole.slice(full)
        self._pending, self._rows, self._bytes = [rest], rest.num_rows, rest.nbytes

    def finish(self) -> None:
        if self._rows:
            self._writer.write_table(pa.concat_tables(self._pending), row_group_size=ROW_GROUP_ROWS)
        self._pending, self._rows, self._bytes = [], 0, 0


# --- shared by both formats ----------------------------------------------------------------


def _kept(last: dict[int, int], key: int, index: int) -> bool:
    at = last.get(key)
    return at is None or at == index


class _SeenFilter:
    """A Bloom filter over 64-bit keys: 16 bits and 4 probes per key, ~0.25 % false positives."""

    __slots__ = ("_bits", "_size")

    def __init__(self, expected: int) -> None:
        self._size = max(1024, expected * 16)
        self._bits = bytearray((self._size + 7) // 8)

    def add(self, key: int) -> bool:
        """Add ``key``; True when it may have been added before (never False when it was)."""
        low, high = key & 0xFFFFFFFF, ((key >> 32) & 0xFFFFFFFF) | 1
        seen = True
        bits, size = self._bits, self._size
        for probe in range(4):
            bit = (low + probe * high) % size
            mask = 1 << (bit & 7)
            if not bits[bit >> 3] & mask:
                bits[bit >> 3] |= mask
                seen = False
        return seen


def _last_of_repeats(keys: Iterable[int], expected: int) -> dict[int, int]:
    """Keys that may occur more than once → index of their last occurrence (the one to keep).

    One streaming pass. Every key that does repeat is flagged from its second occurrence on,
    so its entry is its last index. The filter also flags ~0.25 % of keys that occur once;
    their entry is their only index, so "keep the row at the entry's index" is right for
    both. Memory: 2 bytes per row plus a dict entry per flagged key.
    """
    seen = _SeenFilter(expected)
    last: dict[int, int] = {}
    for index, key in enumerate(keys):
        if seen.add(key):
            last[key] = index
    return last


def _any_repeat(keys: Iterable[int], last: dict[int, int]) -> bool:
    """True when some key really occurs twice (stops at the first one found)."""
    if not last:
        return False
    for index, key in enumerate(keys):
        at = last.get(key)
        if at is not None and at != index:
            return True
    return False
