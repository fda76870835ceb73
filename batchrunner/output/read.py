"""Reading result files back: JSONL or Parquet rows as ``Result`` objects.

:func:`load_results` streams rows from any number of result files (JSONL, gzipped JSONL or
Parquet), naming the file and line of a row it cannot read; ``batchrunner.report.files``
adds them up.
"""

from __future__ import annotations

import gzip
import logging
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import BinaryIO, cast

import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from batchrunner.config import READ_SUFFIXES, file_format, suffixes
from batchrunner.errors import InputFileError
from batchrunner.results import RESULT_FIELDS, RESULT_SCHEMA, Result

__all__ = ["STATS_COLUMNS", "load_results"]

logger = logging.getLogger(__name__)

STATS_COLUMNS = tuple(
    f
    for f in RESULT_FIELDS
    if f not in {"reasoning", "response_id", "parsed", "tool_calls", "choices"}
)
_INT_FIELDS = frozenset(
    {
        "row",
        "prompt_tokens",
        "completion_tokens",
        "reasoning_tokens",
        "cached_tokens",
        "total_tokens",
        "attempts",
        "http_status",
    }
)
_FLOAT_FIELDS = frozenset({"cost_usd", "latency_s", "ttft_s", "ttfo_s", "itl_s", "output_tps"})
_TIME_FIELDS = frozenset({"started_at", "finished_at"})


# ----------------------------------------------------------------------------- reading


def load_results(
    paths: Sequence[str | os.PathLike[str]], *, columns: Sequence[str] | None = None
) -> Iterator[Result]:
    """Stream result rows from ``.jsonl`` (optionally ``.gz``) and ``.parquet`` files.

    A torn last line of a JSONL file (a write cut short by a crash) is skipped with a
    warning; an unreadable line anywhere else raises :class:`InputFileError`. ``columns``
    limits what Parquet files read (the other fields stay at their defaults).
    """
    for path in paths:
        name = os.fspath(path)
        if not Path(name).is_file():
            raise InputFileError(f"result file not found: {name}")
        fmt = file_format(name)
        if fmt == "parquet":
            yield from _read_parquet(name, columns)
        elif fmt is not None:
            yield from _read_jsonl(name, gz=fmt == "jsonl.gz")
        else:
            raise InputFileError(
                f"{name}: unknown result file type (want {suffixes(tuple(READ_SUFFIXES))})"
            )


def _open_binary(name: str, gz: bool) -> BinaryIO:
    if gz:
        return cast(BinaryIO, gzip.open(name, "rb"))
    return open(name, "rb")  # closed by the caller's with block


def _read_jsonl(name: str, gz: bool) -> Iterator[Result]:
    torn: int | None = None  # number of an unparsable line, forgiven only if it is the last
    try:
        with _open_binary(name, gz) as lines:
            for lineno, line in enumerate(lines, 1):
                if not line.strip():
                    continue
                if torn is not None:
                    raise InputFileError(f"{name}:{torn}: not a JSON object")
                try:
                    data = orjson.loads(line)
                except orjson.JSONDecodeError:
                    torn = lineno
                    continue
                if not isinstance(data, dict):
                    raise InputFileError(f"{name}:{lineno}: not a JSON object")
                yield _result(data, f"{name}:{lineno}")
    except (OSError, EOFError) as exc:
        raise InputFileError(f"cannot read {name}: {exc}") from exc
    if torn is not None:
        logger.warning("%s:%d: skipped a torn last line (an interrupted write)", name, torn)


def _read_parquet(name: str, columns: Sequence[str] | None) -> Iterator[Result]:
    try:
        file = pq.ParquetFile(name)
        present = set(file.schema_arrow.names)
        for required in ("id", "model", "status"):
            if required not in present:
                raise InputFileError(f"{name}: no {required!r} column; not a result file")
        wanted = [c for c in (columns or RESULT_FIELDS) if c in present]
        wanted += [c for c in ("id", "model", "status") if c not in wanted]
        for batch in file.iter_batches(batch_size=16_384, columns=wanted):
            yield from _batch_results(batch, name)
    except (OSError, ValueError) as exc:  # pyarrow's errors derive from these
        raise InputFileError(f"cannot read {name}: {exc}") from exc


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _batch_results(batch: pa.RecordBatch, name: str) -> Iterator[Result]:
    names = batch.schema.names
    lists = {n: _column(batch.column(i)) for i, n in enumerate(names)}
    if all(batch.schema.field(n).type == RESULT_SCHEMA.field(n).type for n in names):
        # Written with RESULT_SCHEMA: the values already have the right types.
        nones = [None] * batch.num_rows
        columns = [lists.get(f, nones) for f in RESULT_FIELDS]
        for values in zip(*columns, strict=True):
            result = Result(*values)
            if not (result.id and result.model and result.status):
                raise InputFileError(f"{name}: result row without id, model or status")
            if result.attempts is None:
                result.attempts = 0
            yield result
    else:
        for values in zip(*lists.values(), strict=True):
            yield _result(dict(zip(names, values, strict=True)), name)


def _column(column: pa.Array) -> list[object]:
    """A column as Python values; timestamps become UTC datetimes.

    pyarrow's own conversion of zoned timestamps costs several microseconds a value;
    whole microseconds since the epoch added to an aware epoch give the same datetimes.
    """
    if pa.types.is_timestamp(column.type):
        micros = column.cast(pa.timestamp("us", tz="UTC")).cast(pa.int64()).to_pylist()
        return [None if v is None else _EPOCH + timedelta(microseconds=v) for v in micros]
    values: list[object] = column.to_pylist()
    return values


def _as_int(value: object) -> int | None:
    return value if type(value) is int else None  # bool is not a count


def _as_float(value: object) -> float | None:
    return float(value) if type(value) is float or type(value) is int else None


def _as_bool(value: object) -> bool | None:
    return value if type(value) is bool else None


def _as_str(value: object) -> str | None:
    return value if type(value) is str else None


def _as_time(value: object) -> datetime | None:
    if isinstance(value, datetime):
        return value
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value)
        except ValueError:
            return None
    return None


_CONVERTERS: dict[str, Callable[[object], object]] = {
    f: _as_str for f in RESULT_FIELDS if f not in {"id", "model", "status"}
}
_CONVERTERS.update({f: _as_int for f in _INT_FIELDS})
_CONVERTERS.update({f: _as_float for f in _FLOAT_FIELDS})
_CONVERTERS.update({f: _as_time for f in _TIME_FIELDS})
_CONVERTERS["valid"] = _as_bool


_REQUIRED = ("id", "model", "status")
_ORDER = tuple((f, _CONVERTERS.get(f)) for f in RESULT_FIELDS)
_ATTEMPTS = RESULT_FIELDS.index("attempts")


def _result(data: Mapping[str, object], origin: str) -> Result:
    """A Result from one decoded row; fields of the wrong type become None."""
    values: list[object] = []
    for key, convert in _ORDER:
        value = data.get(key)
        if convert is None:  # a required text field; JSON ids may be numbers
            if type(value) is int:
                value = str(value)
            elif type(value) is not str or not value:
                raise InputFileError(f"{origin}: result row without {key!r}")
        elif value is not None:
            value = convert(value)
        values.append(value)
    if values[_ATTEMPTS] is None:
        values[_ATTEMPTS] = 0
    # Positional: far cheaper than keywords for a 28-field dataclass, on every row read.
    return Result(*values)  # type: ignore[arg-type]
