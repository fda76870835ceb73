"""Decoding the Parquet writer's journal lines into a part's table.

The writer keeps each row of the part being filled as a JSONL line (``schema.result_line``),
in its journal on disk and in memory, as the chunks it wrote. A part is decoded from those
lines, so it holds exactly what the journal held; a journal left by a killed run is sealed
the same way.
"""

from __future__ import annotations

import io
from collections.abc import Iterator, Sequence
from datetime import datetime
from pathlib import Path

import orjson
import pyarrow as pa
import pyarrow.json as pa_json

from batchrunner.output.ondisk import parse_line
from batchrunner.results import RESULT_SCHEMA

__all__ = ["read_journal", "read_lines"]

_TIMESTAMP_FIELDS = tuple(f.name for f in RESULT_SCHEMA if pa.types.is_timestamp(f.type))
_JSON_PARSE = pa_json.ParseOptions(explicit_schema=RESULT_SCHEMA, unexpected_field_behavior="error")
# Decoding holds a few times its input at once: lines go to Arrow 256 KiB at a time, which
# keeps a 10,000-row part's decoding to a few MB, where its 6 MB at once took some 20 MB.
_CHUNK = 256 * 1024
_MAX_BLOCK = 2**31 - 1  # Arrow's block size is an int32


def _blocks(chunks: Sequence[bytes | bytearray]) -> Iterator[bytes | bytearray | memoryview]:
    """The lines of ``chunks`` (each of whole lines) in blocks of about ``_CHUNK`` bytes."""
    group: list[bytes | bytearray] = []
    size = 0
    for chunk in chunks:
        group.append(chunk)
        size += len(chunk)
        if size >= _CHUNK:
            yield from _split(group[0] if len(group) == 1 else b"".join(group))
            group, size = [], 0
    if group:
        yield from _split(group[0] if len(group) == 1 else b"".join(group))


def _split(data: bytes | bytearray) -> Iterator[bytes | bytearray | memoryview]:
    """``data`` cut at line ends into blocks of at least ``_CHUNK`` bytes (but one)."""
    if len(data) < 2 * _CHUNK:
        yield data
        return
    view = memoryview(data)
    start = 0
    while start < len(data):
        cut = data.find(b"\n", start + _CHUNK - 1)
        end = len(data) if cut < 0 or len(data) - cut <= _CHUNK else cut + 1
        yield view[start:end]
        start = end


def _lines_table(chunks: Sequence[bytes | bytearray]) -> pa.Table:
    """Whole result lines (``schema.result_line``) as a table in ``RESULT_SCHEMA``.

    Arrow's JSON reader decodes them without a Python object per value, and without
    ``pa.array``, which imports pandas where it is installed (about 0.25 s and 50 MB).
    Each block ends at a line's end, so a long answer is never split. Raises
    ``pa.ArrowInvalid`` for a line that is not a result row of this version: torn, with a
    column of another type or name, or without its id, model or status (not nullable).
    """
    tables = []
    for data in _blocks(chunks):
        block = min(len(data) + 1, _MAX_BLOCK)  # read in one go
        options = pa_json.ReadOptions(use_threads=False, block_size=block)
        table = pa_json.read_json(
            pa.BufferReader(pa.py_buffer(data)),
            read_options=options,
            parse_options=_JSON_PARSE,
            # malloc reuses the parser's freed buffers from chunk to chunk; with Arrow's
            # default pool a part's commit rose 20-30 MB instead of 15-17.
            memory_pool=pa.system_memory_pool(),
        )
        tables.append(table)
    if not tables:
        return RESULT_SCHEMA.empty_table()
    # The reader has already refused a null id, model or status; only the schema's
    # nullability flags differ, and a cast would run every column through Arrow's compute.
    return pa.Table.from_arrays(pa.concat_tables(tables).columns, schema=RESULT_SCHEMA)


def read_journal(path: Path) -> tuple[pa.Table, int]:
    """A journal's complete rows as a table in ``RESULT_SCHEMA``, and how many lines were torn.

    Holds the journal in memory: at most one part's rows.
    """
    return read_lines([path.read_bytes()])


def read_lines(chunks: Sequence[bytes | bytearray]) -> tuple[pa.Table, int]:
    """The whole result rows among the lines of ``chunks``, and how many lines were not one.

    The lines run on from one chunk to the next. JSON has no NaN or infinity, so a float
    column that held one comes back null, as it does in JSONL output.
    """
    if all(chunk.endswith(b"\n") for chunk in chunks):  # the common case: every line whole
        try:
            return _lines_table(chunks), 0
        except pa.ArrowInvalid:
            pass
    data = b"".join(chunks)
    rows: list[dict[str, object]] = []
    torn = 0
    for line in io.BytesIO(data):  # lines end at b"\n" only, as the writer ends them
        row = _journal_row(line)
        if row is None:
            torn += 1
        else:
            rows.append(row)
    try:
        return pa.Table.from_pylist(rows, schema=RESULT_SCHEMA), torn
    except (pa.ArrowException, ValueError, TypeError, OverflowError):
        pass
    # Some line does not fit the schema (never written by this version): keep the others.
    tables: list[pa.Table] = []
    for row in rows:
        try:
            tables.append(pa.Table.from_pylist([row], schema=RESULT_SCHEMA))
        except (pa.ArrowException, ValueError, TypeError, OverflowError):
            torn += 1
    return (pa.concat_tables(tables) if tables else RESULT_SCHEMA.empty_table()), torn


def _journal_row(line: bytes) -> dict[str, object] | None:
    if parse_line(line) is None:  # torn, or not a result row
        return None
    row: dict[str, object] = orjson.loads(line)
    for name in _TIMESTAMP_FIELDS:
        value = row.get(name)
        if isinstance(value, str):
            try:
                row[name] = datetime.fromisoformat(value)
            except ValueError:
                row[name] = None
    return row
