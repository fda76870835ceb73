"""Streaming readers for the input: JSONL (optionally gzipped) line by line, Parquet by batch.

A reader yields ``InputRow`` for every usable record and ``BadRow`` for a record that
cannot be used (bad JSON, not UTF-8, not an object); it never holds the file in memory
and never stops at a bad line. Only a missing or unreadable *file* raises.
"""

from __future__ import annotations

import gzip
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, cast

import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from batchrunner.errors import InputFileError

INPUT_SUFFIXES = (".jsonl", ".jsonl.gz", ".parquet")


@dataclass(frozen=True, slots=True)
class InputFields:
    """Which input columns hold what."""

    id: str = "id"
    prompt: str = "prompt"
    messages: str = "messages"
    system: str = "system"
    model: str = "model"
    params: str = "params"


@dataclass(frozen=True, slots=True)
class InputRow:
    """One input record. ``index`` is its 0-based position among the file's records."""

    index: int
    id: str
    record: dict[str, Any]
    where: str  # "prompts.jsonl line 12" / "prompts.parquet row 11", for error messages


@dataclass(frozen=True, slots=True)
class BadRow:
    """A record that could not be read; it becomes an ``error`` result."""

    index: int
    id: str
    where: str
    problem: str


def positional_id(index: int) -> str:
    """The id of a record that has none: stable as long as the file's records keep their order."""
    return f"row-{index}"


def input_format(path: Path) -> str:
    name = path.name.lower()
    if name.endswith(".jsonl.gz"):
        return "jsonl.gz"
    if name.endswith(".jsonl") or name.endswith(".ndjson"):
        return "jsonl"
    if name.endswith(".parquet"):
        return "parquet"
    raise InputFileError(
        f"{path}: unsupported input format; use one of {', '.join(INPUT_SUFFIXES)}"
    )


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


def read_rows(path: str | Path, fields: InputFields = InputFields()) -> Iterator[InputRow | BadRow]:
    """Yield the input's records one by one, in file order."""
    p = check_input(path)
    fmt = input_format(p)
    if fmt == "parquet":
        yield from _read_parquet(p, fields)
    else:
        yield from _read_jsonl(p, fields, gz=fmt == "jsonl.gz")


def _read_jsonl(path: Path, fields: InputFields, *, gz: bool) -> Iterator[InputRow | BadRow]:
    index = 0
    try:
        stream = cast(IO[bytes], gzip.open(path, "rb") if gz else open(path, "rb"))  # noqa: SIM115
    except OSError as exc:
        raise InputFileError(f"{path}: cannot read ({exc.strerror})") from None
    with stream:
        lineno = 0
        try:
            for raw in stream:
                lineno += 1
                line = raw.strip()
                if not line:
                    continue
                where = f"{path.name} line {lineno}"
                try:
                    line.decode("utf-8")
                except UnicodeDecodeError as exc:
                    yield BadRow(
                        index, positional_id(index), where, f"not valid UTF-8 (byte {exc.start})"
                    )
                    index += 1
                    continue
                try:
                    record = orjson.loads(line)
                except orjson.JSONDecodeError as exc:
                    yield BadRow(index, positional_id(index), where, f"invalid JSON ({exc})")
                    index += 1
                    continue
                yield _make_row(record, index, where, fields)
                index += 1
        except (OSError, EOFError, gzip.BadGzipFile) as exc:
            raise InputFileError(f"{path}: read failed after line {lineno} ({exc})") from None


def _read_parquet(path: Path, fields: InputFields) -> Iterator[InputRow | BadRow]:
    try:
        pf = pq.ParquetFile(path)
    except (OSError, pa.ArrowException) as exc:
        raise InputFileError(f"{path}: not a readable Parquet file ({exc})") from None
    index = 0
    try:
        for batch in pf.iter_batches(batch_size=4096):
            for record in batch.to_pylist():
                yield _make_row(record, index, f"{path.name} row {index}", fields)
                index += 1
    except (OSError, pa.ArrowException) as exc:
        raise InputFileError(f"{path}: read failed at row {index} ({exc})") from None
