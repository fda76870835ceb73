"""Checking the configured field names against the input before anything is sent.

A ``[fields]`` block that names a column the input does not have turns every row into a
``bad_input`` error, one request at a time. The columns are known before the run: a Parquet
file's schema, a JSONL file's first rows. :func:`check_fields` names the missing one.
"""

from __future__ import annotations

import gzip
import itertools
from collections.abc import Iterable
from pathlib import Path

import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from batchrunner.config import InputFields, file_format
from batchrunner.errors import InputFileError

__all__ = ["JSONL_SAMPLE_ROWS", "check_fields"]

JSONL_SAMPLE_ROWS = 100  # the JSONL rows whose keys stand for the file's columns


def _jsonl_columns(path: Path, gz: bool) -> set[str] | None:
    """The keys seen in the first rows; None when no row could be read (left to the run)."""
    opener = gzip.open if gz else open
    seen: set[str] = set()
    read = 0
    try:
        with opener(path, "rb") as lines:
            for line in itertools.islice((x for x in lines if x.strip()), JSONL_SAMPLE_ROWS):
                try:
                    record = orjson.loads(line)
                except orjson.JSONDecodeError:
                    continue  # a bad line is that row's problem, reported by the run
                if isinstance(record, dict):
                    seen.update(record)
                    read += 1
    except (OSError, EOFError):
        return None
    return seen if read else None


def _parquet_columns(path: Path) -> set[str] | None:
    try:
        return set(pq.ParquetFile(path).schema_arrow.names)
    except (OSError, pa.ArrowException):
        return None


def _missing(
    columns: set[str], fields: InputFields, defaults: InputFields, where: str
) -> str | None:
    prompt, messages = fields.prompt, fields.messages
    if prompt not in columns and messages not in columns:
        have = ", ".join(sorted(columns)[:12]) or "none"
        named = [
            f"{kind} field {name!r}" for kind, name in (("prompt", prompt), ("messages", messages))
        ]
        return f"{where} has no {' or '.join(named)} column (its columns: {have})"
    configured: Iterable[tuple[str, str, str]] = (
        ("id", fields.id, defaults.id),
        ("system", fields.system, defaults.system),
        ("model", fields.model, defaults.model),
        ("params", fields.params, defaults.params),
    )
    for kind, name, default in configured:
        # The default names are optional columns; a name set on purpose must be there.
        if name != default and name not in columns:
            return (
                f"{where} has no {kind} field {name!r} column (set in [fields] or --{kind}-field)"
            )
    return None


def check_fields(path: str | Path, fields: InputFields) -> None:
    """Raise ``InputFileError`` naming the configured column the input does not have."""
    p = Path(path)
    fmt = file_format(p)
    if fmt == "parquet":
        columns, where = _parquet_columns(p), f"{p}"
    elif fmt in ("jsonl", "jsonl.gz"):
        columns = _jsonl_columns(p, gz=fmt == "jsonl.gz")
        where = f"{p} (its first {JSONL_SAMPLE_ROWS} rows)"
    else:
        return
    if columns is None:
        return
    problem = _missing(columns, fields, InputFields(), where)
    if problem is not None:
        raise InputFileError(problem)
