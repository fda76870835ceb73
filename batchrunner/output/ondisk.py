"""What a run leaves on disk, and reading it back: paths, row keys, parts and journals.

The writers in ``batchrunner.output.writers`` leave::

    OUTPUT                     JSONL: the rows, one per line, appended as they finish.
                               Parquet: the compacted result of earlier finished runs.
    OUTPUT.parts/part-NNNNNN.parquet   Parquet only: committed parts not yet compacted
    OUTPUT.parts/journal-NNNNNN.jsonl  Parquet only: the rows of part NNNNNN while it fills,
                               as JSONL lines handed to the OS before ``write()`` returns
    OUTPUT.parts/*.tmp         a part being written; never complete, deleted on resume
    OUTPUT.tmp                 a compaction or rewrite in progress; deleted on resume
    OUTPUT.run.json            the run's identity (input, models, request settings)
    OUTPUT.lock                held (flock) while a writer is open; removed when it finishes
    OUTPUT.batch.json          the batch route: files staged and jobs submitted, replaced
                               atomically before the run waits (``batchrunner.batch.state``)
    OUTPUT.batch/              the batch route: each file's [id, row] pairs, and a file being
                               built before its upload
    OUTPUT.index/done/, seen/  only past ``index_memory_mb``: sorted int64 runs of the keys
                               OUTPUT held at the start and of the ids read so far; removed
                               when the run ends, rebuilt from OUTPUT on resume

A compacted Parquet OUTPUT records in its metadata the highest part number it includes
(``batchrunner.parts_through``), so parts left behind by a compaction that was killed between
its rename and its clean-up are recognised as already merged and never counted twice.

A journal holds a prefix of the rows of the part with its number (the writer commits the part,
then removes the journal), so a journal whose part exists, or whose number a compaction already
merged, is stale and removed unread; a live journal stands in for its part, in number order.
Rows are never deduplicated across the two: a stale journal is dropped whole.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from batchrunner.config import WRITE_SUFFIXES, suffixes
from batchrunner.errors import RESTART_ADVICE, ConfigError
from batchrunner.output.durable import output_error, remove_quietly

logger = logging.getLogger(__name__)

PARTS_THROUGH_KEY = b"batchrunner.parts_through"
KEY_COLUMNS = ["id", "model", "status"]
BATCH_ROWS = 65_536
_PART_NAME = re.compile(r"part-(\d+)\.parquet")
_JOURNAL_NAME = re.compile(r"journal-(\d+)\.jsonl")


def key_of(id: str, model: str) -> int:
    """A stable signed 64-bit key for (id, model), so resume sets hold ints, not strings.

    blake2b (8 bytes) of ``id + "\\x00" + model`` in UTF-8, read little-endian: stable across
    processes and versions, unlike ``hash()``, and it fits Arrow's int64.
    """
    text = f"{id}\x00{model}"
    try:
        data = text.encode()
    except UnicodeEncodeError:  # a lone surrogate; rare, so kept off the fast path
        data = text.encode("utf-8", "surrogatepass")
    return _from_bytes(_blake2b(data, digest_size=8).digest(), "little", signed=True)


_blake2b = hashlib.blake2b
_from_bytes = int.from_bytes


# --- paths ---------------------------------------------------------------------------------


def output_format(path: Path) -> str:
    """``"jsonl"`` or ``"parquet"`` from OUTPUT's suffix; anything else is a usage error."""
    suffix = path.suffix.lower()
    if suffix in WRITE_SUFFIXES:
        return suffix[1:]
    shown = path.suffix or "(no suffix)"
    raise ConfigError(
        f"unsupported output format {shown} for {path}; use {suffixes(WRITE_SUFFIXES)}"
    )


def parts_dir(path: Path) -> Path:
    return path.with_name(path.name + ".parts")


def lock_path(path: Path) -> Path:
    return path.with_name(path.name + ".lock")


def index_dir(path: Path) -> Path:
    return path.with_name(path.name + ".index")


def manifest_path(path: Path) -> Path:
    return path.with_name(path.name + ".run.json")


def batch_state_path(path: Path) -> Path:
    return path.with_name(path.name + ".batch.json")


def batch_dir(path: Path) -> Path:
    return path.with_name(path.name + ".batch")


def part_path(path: Path, seq: int) -> Path:
    return parts_dir(path) / f"part-{seq:06d}.parquet"


def journal_path(path: Path, seq: int) -> Path:
    return parts_dir(path) / f"journal-{seq:06d}.jsonl"


# --- reading what is on disk ---------------------------------------------------------------


class Entry(NamedTuple):
    """The part of a result row that resume and compaction need."""

    key: int
    status: str
    row: int | None
    model: str
    cost: float | None = None  # cost_usd: what the row's answer was billed


def parse_line(line: bytes) -> Entry | None:
    """The entry of one JSONL line, or None when the line is torn or not a result row.

    A line without its final newline is torn even if it parses: the writer drops it on reopen.
    """
    if not line.endswith(b"\n"):
        return None
    try:
        obj = orjson.loads(line)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(obj, dict):
        return None
    id_, model, status, row = obj.get("id"), obj.get("model"), obj.get("status"), obj.get("row")
    if not (isinstance(id_, str) and isinstance(model, str) and isinstance(status, str)):
        return None
    if not isinstance(row, int) or isinstance(row, bool):
        row = None
    cost = obj.get("cost_usd")
    if not isinstance(cost, float | int) or isinstance(cost, bool):
        cost = None
    return Entry(key_of(id_, model), status, row, model, cost)


def iter_parquet_entries(path: Path, *, columns: list[str] | None = None) -> Iterator[Entry]:
    """Stream the entries of one Parquet file, a record batch at a time (raises on a bad file)."""
    wanted = columns if columns is not None else [*KEY_COLUMNS, "row", "cost_usd"]
    with pq.ParquetFile(path) as pf:
        if "cost_usd" in wanted and "cost_usd" not in pf.schema_arrow.names:
            wanted = [name for name in wanted if name != "cost_usd"]
        for batch in pf.iter_batches(batch_size=BATCH_ROWS, columns=wanted):
            ids = batch.column("id").to_pylist()
            models = batch.column("model").to_pylist()
            statuses = batch.column("status").to_pylist()
            none = [None] * len(ids)
            rows = batch.column("row").to_pylist() if "row" in wanted else none
            costs = batch.column("cost_usd").to_pylist() if "cost_usd" in wanted else none
            for id_, model, status, row, cost in zip(
                ids, models, statuses, rows, costs, strict=True
            ):
                yield Entry(key_of(id_, model), status, row, model, cost)


def read_part_entries(path: Path) -> list[Entry] | None:
    """Every entry of one part (at most a part's rows), or None when the part is unreadable."""
    try:
        return list(iter_parquet_entries(path))
    except (OSError, pa.ArrowException, KeyError) as exc:
        logger.warning("skipping unreadable part %s: %s", path, exc)
        return None


def read_parts_through(path: Path) -> int:
    """The highest part number already compacted into a Parquet OUTPUT (-1 when none)."""
    try:
        schema = pq.read_schema(path)
    except FileNotFoundError:
        return -1
    except (OSError, pa.ArrowException) as exc:
        if isinstance(exc, OSError) and exc.errno is not None:
            raise output_error("read", path, exc) from exc
        raise ConfigError(
            f"existing {path} is not a readable Parquet file ({exc}); {RESTART_ADVICE}"
        ) from exc
    missing = [name for name in KEY_COLUMNS if name not in schema.names]
    if missing:
        raise ConfigError(
            f"existing {path} does not look like batchrunner output (no {', '.join(missing)} "
            f"column); {RESTART_ADVICE}"
        )
    raw = (schema.metadata or {}).get(PARTS_THROUGH_KEY)
    try:
        return int(raw) if raw is not None else -1
    except ValueError:
        return -1


@dataclass(frozen=True, slots=True)
class PartsOnDisk:
    """The parts and live journals still to be merged, after leftovers were cleared away."""

    parts: tuple[tuple[int, Path], ...]  # (seq, path), in commit order, not yet compacted
    temps_removed: int
    next_seq: int
    journals: tuple[tuple[int, Path], ...] = ()  # (seq, path) of journals without their part


def scan_parts(path: Path, parts_through: int) -> PartsOnDisk:
    """List OUTPUT's parts and journals; delete temp files, merged parts and stale journals."""
    directory = parts_dir(path)
    found: list[tuple[int, Path]] = []
    journals: list[tuple[int, Path]] = []
    temps = 0
    highest = parts_through
    try:
        names = sorted(os.listdir(directory))
    except FileNotFoundError:
        names = []
    for name in names:
        entry = directory / name
        if name.endswith(".tmp"):
            remove_quietly(entry)
            temps += 1
            logger.warning("removed half-written part %s", entry)
            continue
        match = _PART_NAME.fullmatch(name) or _JOURNAL_NAME.fullmatch(name)
        if match is None:
            continue
        seq = int(match.group(1))
        highest = max(highest, seq)
        if seq <= parts_through:
            # Merged by a compaction that died before it could remove the parts directory.
            remove_quietly(entry)
            continue
        (journals if name.startswith("journal-") else found).append((seq, entry))
    committed = {seq for seq, _ in found}
    live: list[tuple[int, Path]] = []
    for seq, entry in journals:
        if seq in committed:
            remove_quietly(entry)  # its rows are all in the part: killed before removing it
        else:
            live.append((seq, entry))
    found.sort()
    live.sort()
    return PartsOnDisk(tuple(found), temps, highest + 1, tuple(live))
