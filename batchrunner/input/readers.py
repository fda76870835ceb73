"""Streaming readers for the input: JSONL (optionally gzipped) line by line, Parquet by batch.

A reader yields ``InputRow`` for every usable record and ``BadRow`` for a record that
cannot be used (bad JSON, not UTF-8, not an object); it never holds the file in memory
and never stops at a bad line. Only a missing or unreadable *file* raises.
"""

from __future__ import annotations

import gzip
import json
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, cast

import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from batchrunner.config import READ_SUFFIXES, InputFields, file_format, suffixes
from batchrunner.errors import InputFileError
from batchrunner.results import Result, utc_now

_DEFAULT_FIELDS = InputFields()


@dataclass(frozen=True, slots=True)
class InputRow:
    """One input record. ``index`` is its 0-based position among the file's records."""

    index: int
    id: str
    record: dict[str, Any]
    where: str  # "prompts.jsonl line 12" / "prompts.parquet row 11", for error messages


@dataclass(frozen=True, slots=True)
class RowSelection:
    """Which records to read, by 0-based record index: a contiguous range, every ``step``-th.

    A record is selected when ``start <= index < stop`` (``stop=None``: to the end) and
    ``index % step == offset``. Shards are built from these (``batchrunner.input.shards``).
    """

    start: int = 0
    stop: int | None = None
    step: int = 1
    offset: int = 0

    def __post_init__(self) -> None:
        if self.start < 0 or (self.stop is not None and self.stop < self.start):
            raise ValueError("need 0 <= start <= stop")
        if not 0 <= self.offset < self.step:
            raise ValueError("need 0 <= offset < step")

    def __contains__(self, index: object) -> bool:
        if not isinstance(index, int):
            return False
        if index < self.start or (self.stop is not None and index >= self.stop):
            return False
        return index % self.step == self.offset


@dataclass(frozen=True, slots=True)
class BadRow:
    """A record that could not be read; it becomes an ``error`` result."""

    index: int
    id: str
    where: str
    problem: str


def _loads(line: bytes) -> Any:
    """One JSON line; past orjson's nesting limit (1024), the standard library parses it."""
    try:
        return orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        if "depth limit" not in str(exc) and "Recursion limit" not in str(exc):
            raise ValueError(f"invalid JSON ({exc})") from None
    try:
        return json.loads(line)
    except RecursionError:
        raise ValueError(
            f"JSON nested deeper than the parser's limit (about {sys.getrecursionlimit()} levels)"
        ) from None
    except ValueError as exc:
        raise ValueError(f"invalid JSON ({exc})") from None


def _leading_id(line: bytes, field: str) -> str | None:
    """The id of an unparseable line whose object starts with it: ``{"id": "x", ...``."""
    pattern = rb'^\s*\{\s*"' + re.escape(field.encode()) + rb'"\s*:\s*("(?:[^"\\]|\\.)*"|-?\d+)'
    match = re.match(pattern, line)
    if match is None:
        return None
    try:
        value = json.loads(match.group(1))
    except ValueError:
        return None
    return str(value) if value != "" else None


def positional_id(index: int) -> str:
    """The id of a record that has none: stable as long as the file's records keep their order."""
    return f"row-{index}"


def input_format(path: Path) -> str:
    fmt = file_format(path)
    if fmt is None:
        raise InputFileError(
            f"{path}: unsupported input format; use {suffixes(tuple(READ_SUFFIXES))}"
        )
    return fmt


def _row_id(value: Any, index: int) -> str | None:
    if value is None:
        return positional_id(index)
    if isinstance(value, bool):
        return None
    if isinstance(value, (str, int)):
        text = str(value)
        return text if text else None
    return None


def _make_row(record: Any, index: int, where: str, fields: InputFields) -> InputRow | BadRow:
    if not isinstance(record, dict):
        kind = type(record).__name__
        return BadRow(index, positional_id(index), where, f"expected a JSON object, got {kind}")
    row_id = _row_id(record.get(fields.id), index)
    if row_id is None:
        raw = record.get(fields.id)
        return BadRow(
            index,
            positional_id(index),
            where,
            f"field {fields.id!r} must be a non-empty string or an integer, got {raw!r:.40}",
        )
    return InputRow(index, row_id, record, where)


def check_input(path: str | Path) -> Path:
    """Raise ``InputFileError`` unless ``path`` is a readable input file of a known kind."""
    p = Path(path)
    input_format(p)
    if not p.exists():
        raise InputFileError(f"{p}: no such file")
    if not p.is_file():
        raise InputFileError(f"{p}: not a regular file")
    try:
        with p.open("rb"):
            pass
    except OSError as exc:
        raise InputFileError(f"{p}: cannot read ({exc.strerror})") from None
    return p


def read_rows(
    path: str | Path, fields: InputFields = _DEFAULT_FIELDS, select: RowSelection | None = None
) -> Iterator[InputRow | BadRow]:
    """Yield the input's records one by one, in file order; only those in ``select`` if given.

    Records outside ``select`` keep their place in the numbering but are not decoded (JSONL)
    or not read at all (Parquet row groups wholly outside the range).
    """
    p = check_input(path)
    fmt = input_format(p)
    if fmt == "parquet":
        yield from _read_parquet(p, fields, select)
    else:
        yield from _read_jsonl(p, fields, gz=fmt == "jsonl.gz", select=select)


def _read_jsonl(
    path: Path, fields: InputFields, *, gz: bool, select: RowSelection | None = None
) -> Iterator[InputRow | BadRow]:
    index = 0
    try:
        stream = cast(IO[bytes], gzip.open(path, "rb") if gz else open(path, "rb"))  # noqa: SIM115
    except OSError as exc:
        raise InputFileError(f"{path}: cannot read ({exc.strerror})") from None
    name = path.name
    with stream:
        lineno = 0
        try:
            for raw in stream:
                lineno += 1
                line = raw.strip()
                if not line:
                    continue
                if select is not None and index not in select:
                    index += 1
                    if select.stop is not None and index >= select.stop:
                        return
                    continue
                where = f"{name} line {lineno}"
                try:
                    line.decode("utf-8")
                except UnicodeDecodeError as exc:
                    yield BadRow(
                        index, positional_id(index), where, f"not valid UTF-8 (byte {exc.start})"
                    )
                    index += 1
                    continue
                try:
                    record = _loads(line)
                except ValueError as exc:
                    row_id = _leading_id(line, fields.id) or positional_id(index)
                    yield BadRow(index, row_id, where, str(exc))
                    index += 1
                    continue
                yield _make_row(record, index, where, fields)
                index += 1
        except (OSError, EOFError, gzip.BadGzipFile) as exc:
            raise InputFileError(f"{path}: read failed after line {lineno} ({exc})") from None


def _read_parquet(
    path: Path, fields: InputFields, select: RowSelection | None = None
) -> Iterator[InputRow | BadRow]:
    try:
        pf = pq.ParquetFile(path)
    except (OSError, pa.ArrowException) as exc:
        raise InputFileError(f"{path}: not a readable Parquet file ({exc})") from None
    index = 0
    name = path.name
    try:
        for group, first in _row_groups(pf, select):
            index = first
            for batch in pf.iter_batches(batch_size=4096, row_groups=[group]):
                for record in batch.to_pylist():
                    if select is None or index in select:
                        yield _make_row(record, index, f"{name} row {index}", fields)
                    index += 1
    except (OSError, pa.ArrowException) as exc:
        raise InputFileError(f"{path}: read failed at row {index} ({exc})") from None


def _row_groups(pf: pq.ParquetFile, select: RowSelection | None) -> Iterator[tuple[int, int]]:
    """(row group, index of its first row) for the groups that hold selected rows."""
    first = 0
    metadata = pf.metadata
    for group in range(metadata.num_row_groups):
        rows = metadata.row_group(group).num_rows
        end = first + rows
        if select is not None:
            if select.stop is not None and first >= select.stop:
                return
            if end <= select.start:
                first = end
                continue
        yield group, first
        first = end


def bad_input_result(row: InputRow | BadRow, model: str, problem: str) -> Result:
    """The ``error`` row of an input row that cannot be sent to ``model``, naming where it is."""
    now = utc_now()
    return Result(
        id=row.id,
        model=model,
        status="error",
        row=row.index,
        error_type="bad_input",
        error_message=f"{row.where}: {problem}",
        started_at=now,
        finished_at=now,
    )
