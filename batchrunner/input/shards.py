"""Splitting one job into shards that run apart, and putting their outputs back together.

A shard is ``(index, count)``. The plan is a pure function of the input and ``count``:

- **Parquet**: contiguous ranges of record indexes, ``[i*N//n, (i+1)*N//n)`` with ``N`` from
  the file's metadata (no data is read to plan); a shard reads only the row groups its range
  touches.
- **JSONL** (plain or gzipped): every ``n``-th record, ``index % n == i``. Planning needs no
  pass over the file, which a contiguous plan would (to count records, and a gzip stream
  cannot be entered in the middle); each shard streams the whole file but decodes only its
  own records, so reading costs a line split per record, small next to a request.

Each shard writes its own ``OUTPUT``-named file (:func:`shard_path`) with the usual durable
writer, so a shard run again resumes from what it committed. :func:`merge_shards` turns the
shard files into one result set with each (id, model) once.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from batchrunner.errors import ConfigError, InputFileError
from batchrunner.input.readers import (
    BadRow,
    InputFields,
    InputRow,
    RowSelection,
    check_input,
    input_format,
    read_rows,
)
from batchrunner.output.ondisk import manifest_path
from batchrunner.output.read import load_results
from batchrunner.output.writers import open_writer
from batchrunner.results import Result
from batchrunner.stats.run_stats import RunStats

__all__ = [
    "MergeSummary",
    "ShardPlan",
    "find_shards",
    "merge_run_stats",
    "merge_shards",
    "plan_shard",
    "plan_shards",
    "read_shard_rows",
    "shard_name",
    "shard_path",
]

logger = logging.getLogger(__name__)

_MERGE_BATCH = 4096
_SHARD_SUFFIX = re.compile(r"\.shard-(\d{5,})-of-(\d{5,})$")


# --- naming --------------------------------------------------------------------------------


def shard_name(index: int, count: int) -> str:
    """``shard-00003-of-00016``: sorts in shard order, like the files of a sharded dataset."""
    if not 0 <= index < count:
        raise ValueError(f"need 0 <= index < count, got {index}/{count}")
    return f"shard-{index:05d}-of-{count:05d}"


def shard_path(path: str | os.PathLike[str], index: int, count: int) -> Path:
    """Where shard ``index`` of ``count`` writes: ``out.parquet`` → ``out.shard-…-of-….parquet``."""
    p = Path(path)
    suffix = p.suffix
    return p.with_name(f"{p.name.removesuffix(suffix)}.{shard_name(index, count)}{suffix}")


def find_shards(output: str | os.PathLike[str], count: int | None = None) -> dict[int, list[Path]]:
    """The shard files of ``output`` on disk, by shard count, each list in shard order.

    ``count`` keeps only the files of that many shards.
    """
    out = Path(output)
    stem, suffix = out.name.removesuffix(out.suffix), out.suffix
    found: dict[int, dict[int, Path]] = {}
    try:
        names = os.listdir(out.parent if str(out.parent) else ".")
    except FileNotFoundError:
        return {}
    for name in names:
        if not (name.startswith(stem + ".shard-") and name.endswith(suffix)):
            continue
        match = _SHARD_SUFFIX.fullmatch(name[len(stem) : len(name) - len(suffix)])
        if match is None:
            continue
        index, total = int(match.group(1)), int(match.group(2))
        if (count is None or total == count) and index < total:
            found.setdefault(total, {})[index] = out.with_name(name)
    return {total: [files[i] for i in sorted(files)] for total, files in sorted(found.items())}


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


def share(value: float | None, shard: tuple[int, int] | None) -> float | None:
    """One shard's share of a whole job's rate limit."""
    if value is None or shard is None:
        return value
    return value / shard[1]


# --- merging -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MergeSummary:
    """What a merge read and wrote."""

    output: Path
    shards: tuple[Path, ...]
    rows_read: int
    rows_written: int


def merge_shards(
    output: str | os.PathLike[str],
    *,
    count: int | None = None,
    ordered: bool = False,
) -> MergeSummary:
    """Merge the shard files of ``output`` into ``output``: one row per (id, model).

    Every shard file of the plan must exist and none may be being written (its lock held).
    Where two shards hold the same (id, model) (an input that repeats an id across shards),
    the row of the later shard is kept. The first shard's run identity is copied beside
    ``output``, so a later unsharded run into ``output`` resumes from it. ``output`` is
    rewritten each time; the shard files stay, as they are what a re-run resumes from.
    """
    out = Path(output)
    sets = find_shards(out, count)
    if not sets:
        example = shard_path(out, 0, 2).name
        raise ConfigError(f"no shard files of {out} found (named like {example})")
    if len(sets) > 1:
        counts = ", ".join(str(n) for n in sets)
        raise ConfigError(
            f"{out} has shard files of several plans ({counts} shards): pass --shards N"
        )
    total, files = next(iter(sets.items()))
    if len(files) != total:
        present = {f.name for f in files}
        missing = [i for i in range(total) if shard_path(out, i, total).name not in present]
        shown = ", ".join(str(i) for i in missing[:10])
        raise ConfigError(f"{out}: {len(missing)} of {total} shards have no output yet ({shown})")
    _check_finished(files)
    writer = open_writer(out, restart=True)
    read = 0
    try:
        batch: list[Result] = []
        for result in load_results(files):
            batch.append(result)
            read += 1
            if len(batch) >= _MERGE_BATCH:
                writer.write(batch)
                batch = []
        if batch:
            writer.write(batch)
        writer.close(ordered=ordered)
    except BaseException:
        writer.abort()
        raise
    manifest = manifest_path(files[0])
    if manifest.exists():
        shutil.copyfile(manifest, manifest_path(out))
    written = _count_rows(out)
    logger.info("merged %d shard files into %s: %d rows", len(files), out, written)
    return MergeSummary(out, tuple(files), read, written)


def _check_finished(files: Sequence[Path]) -> None:
    """Refuse shard files that a run is still writing or left unfinished."""
    for f in files:
        lock = f.with_name(f.name + ".lock")
        parts = f.with_name(f.name + ".parts")
        if lock.exists() or (parts.exists() and any(parts.iterdir())):
            raise ConfigError(
                f"{f} is still being written or its run did not finish; run that shard "
                "again (it resumes) before merging"
            )
        if not f.exists():
            raise ConfigError(f"{f}: shard has no output yet")


def _count_rows(path: Path) -> int:
    if path.suffix.lower() == ".parquet":
        return int(pq.read_metadata(path).num_rows)
    with path.open("rb") as f:
        return sum(1 for line in f if line.strip())


# --- statistics ----------------------------------------------------------------------------


def merge_run_stats(parts: Iterable[RunStats]) -> RunStats:
    """One ``RunStats`` holding the rows of several (the shards of one job)."""
    merged = RunStats()
    for part in parts:
        # RunStats keeps one accumulator per model; accumulators know how to merge.
        for model, acc in part._models.items():
            merged._of(model).merge(acc)
    return merged
