"""Putting the outputs of a job's shards back together: one result set, each (id, model) once.

Each shard writes its own ``OUTPUT``-named file (``batchrunner.config.shard_path``);
:func:`find_shards` finds them on disk and :func:`merge_shards` merges them into OUTPUT.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pyarrow.parquet as pq

from batchrunner.config import SHARD_SUFFIX, shard_path
from batchrunner.errors import ConfigError
from batchrunner.output.ondisk import lock_path, manifest_path, parts_dir
from batchrunner.output.read import load_results
from batchrunner.output.writers import open_writer
from batchrunner.results import Result

__all__ = ["MergeSummary", "find_shards", "merge_shards"]

logger = logging.getLogger(__name__)

_MERGE_BATCH = 4096


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
        match = SHARD_SUFFIX.fullmatch(name[len(stem) : len(name) - len(suffix)])
        if match is None:
            continue
        index, total = int(match.group(1)), int(match.group(2))
        if (count is None or total == count) and index < total:
            found.setdefault(total, {})[index] = out.with_name(name)
    return {total: [files[i] for i in sorted(files)] for total, files in sorted(found.items())}


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
        lock = lock_path(f)
        parts = parts_dir(f)
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
