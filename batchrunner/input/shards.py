"""Splitting one job's input into shards that run apart.

A shard is ``(index, count)``. The plan is a pure function of the input and ``count``:

- **Parquet**: contiguous ranges of record indexes, ``[i*N//n, (i+1)*N//n)`` with ``N`` from
  the file's metadata (no data is read to plan); a shard reads only the row groups its range
  touches.
- **JSONL** (plain or gzipped): every ``n``-th record, ``index % n == i``. Planning needs no
  pass over the file, which a contiguous plan would (to count records, and a gzip stream
  cannot be entered in the middle); each shard streams the whole file but decodes only its
  own records, so reading costs a line split per record, small next to a request.

Each shard writes its own ``OUTPUT``-named file (``batchrunner.config.shard_path``) with the
usual durable writer, so a shard run again resumes from what it committed;
``batchrunner.output.merge`` turns the shard files into one result set.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from batchrunner.config import InputFields, shard_name
from batchrunner.errors import InputFileError
from batchrunner.input.readers import (
    BadRow,
    InputRow,
    RowSelection,
    check_input,
    input_format,
    read_rows,
)

__all__ = ["ShardPlan", "plan_shard", "plan_shards", "read_shard_rows"]

logger = logging.getLogger(__name__)


# --- planning ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ShardPlan:
    """One shard of an input: which records it takes. ``rows`` is None when not known."""

    index: int
    count: int
    select: RowSelection
    rows: int | None

    @property
    def name(self) -> str:
        return shard_name(self.index, self.count)


def plan_shards(path: str | os.PathLike[str], count: int) -> tuple[ShardPlan, ...]:
    """Plan ``count`` shards that together take every record of ``path`` exactly once."""
    if count < 1:
        raise ValueError("count must be at least 1")
    p = check_input(Path(path))
    if input_format(p) == "parquet":
        total = _parquet_rows(p)
        return tuple(_range_plan(i, count, total) for i in range(count))
    return tuple(
        ShardPlan(i, count, RowSelection(step=count, offset=i), None) for i in range(count)
    )


def _range_plan(index: int, count: int, total: int) -> ShardPlan:
    start, stop = index * total // count, (index + 1) * total // count
    return ShardPlan(index, count, RowSelection(start, stop), stop - start)


def plan_shard(path: str | os.PathLike[str], index: int, count: int) -> ShardPlan:
    """The plan of one shard, without planning the others."""
    p = check_input(Path(path))
    if not 0 <= index < count:
        raise ValueError(f"need 0 <= index < count, got {index}/{count}")
    if input_format(p) == "parquet":
        return _range_plan(index, count, _parquet_rows(p))
    return ShardPlan(index, count, RowSelection(step=count, offset=index), None)


def _parquet_rows(path: Path) -> int:
    try:
        return int(pq.read_metadata(path).num_rows)
    except (OSError, pa.ArrowException) as exc:
        raise InputFileError(f"{path}: not a readable Parquet file ({exc})") from None


def read_shard_rows(
    path: str | os.PathLike[str], fields: InputFields, shard: tuple[int, int] | None
) -> Iterator[InputRow | BadRow]:
    """The records of one shard of ``path`` (all of them when ``shard`` is None), in order.

    A generator: the plan (a metadata read for Parquet) is made on first ``next()``, so the
    caller's reading thread does it.
    """
    if shard is None:
        yield from read_rows(Path(path), fields)
        return
    plan = plan_shard(path, *shard)
    yield from read_rows(Path(path), fields, plan.select)
