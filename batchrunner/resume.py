"""Resuming a run: which (id, model) pairs OUTPUT already holds, and whether it is the same job.

Everything here reads what the writers in ``batchrunner.writers`` leave on disk::

    OUTPUT                     JSONL: the rows, one per line, appended as they finish.
                               Parquet: the compacted result of earlier finished runs.
    OUTPUT.parts/part-NNNNNN.parquet   Parquet only: committed parts not yet compacted
    OUTPUT.parts/journal-NNNNNN.jsonl  Parquet only: the rows of part NNNNNN while it fills,
                               as JSONL lines handed to the OS before ``write()`` returns
    OUTPUT.parts/*.tmp         a part being written; never complete, deleted on resume
    OUTPUT.tmp                 a compaction or rewrite in progress; deleted on resume
    OUTPUT.run.json            the run's identity (input, models, request settings)
    OUTPUT.lock                held (flock) while a writer is open; removed when it finishes

A compacted Parquet OUTPUT records in its metadata the highest part number it includes
(``batchrunner.parts_through``), so parts left behind by a compaction that was killed between
its rename and its clean-up are recognised as already merged and never counted twice.

A journal holds a prefix of the rows of the part with its number (the writer commits the part,
then removes the journal), so a journal whose part exists, or whose number a compaction already
merged, is stale and removed unread; a live journal stands in for its part, in number order.
Rows are never deduplicated across the two: a stale journal is dropped whole.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import logging
import os
import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from batchrunner.errors import ConfigError, OutputError

__all__ = [
    "ResumeState",
    "RunIdentity",
    "check_identity",
    "key_of",
    "load_resume_state",
]

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


# --- layout --------------------------------------------------------------------------------


def output_format(path: Path) -> str:
    """``"jsonl"`` or ``"parquet"`` from OUTPUT's suffix; anything else is a usage error."""
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".parquet"):
        return suffix[1:]
    shown = path.suffix or "(no suffix)"
    raise ConfigError(f"unsupported output format {shown} for {path}; use .jsonl or .parquet")


def parts_dir(path: Path) -> Path:
    return path.with_name(path.name + ".parts")


def temp_path(path: Path) -> Path:
    return path.with_name(path.name + ".tmp")


def manifest_path(path: Path) -> Path:
    return path.with_name(path.name + ".run.json")


def part_path(path: Path, seq: int) -> Path:
    return parts_dir(path) / f"part-{seq:06d}.parquet"


def journal_path(path: Path, seq: int) -> Path:
    return parts_dir(path) / f"journal-{seq:06d}.jsonl"


def output_error(action: str, path: Path, exc: OSError) -> OutputError:
    """One line naming the path and the OS's reason, e.g. ``cannot write x: No space left``."""
    reason = exc.strerror or str(exc) or type(exc).__name__
    return OutputError(f"cannot {action} {path}: {reason}")


# --- small filesystem helpers (shared with the writers) --------------------------------------


def write_all(fd: int, data: bytes | memoryview) -> None:
    """``os.write`` until every byte is out (a write may be short, e.g. near a full disk)."""
    view = memoryview(data).cast("B")
    while view:
        written = os.write(fd, view)
        view = view[written:]


def fsync_dir(directory: Path) -> None:
    """Make a rename or unlink in ``directory`` durable."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def ensure_parent(path: Path) -> None:
    """Create the directory ``path`` goes in; a regular file in the way is ENOTDIR."""
    parent = path.parent
    if parent.is_dir():
        return
    if parent.exists():
        raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), str(parent))
    parent.mkdir(parents=True, exist_ok=True)


def remove_quietly(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


class FdSink:
    """A minimal buffered binary file over a raw fd, writing through ``os.write``."""

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._chunks: list[bytes] = []
        self._buffered = 0
        self._position = 0
        self.closed = False

    def write(self, data: bytes | memoryview) -> int:
        chunk = bytes(data)
        self._chunks.append(chunk)
        self._buffered += len(chunk)
        self._position += len(chunk)
        if self._buffered >= 1 << 20:
            self.flush()
        return len(chunk)

    def flush(self) -> None:
        if self._chunks:
            data = b"".join(self._chunks)
            self._chunks, self._buffered = [], 0
            write_all(self._fd, data)

    def tell(self) -> int:
        return self._position

    def close(self) -> None:
        self.closed = True


@contextmanager
def replacing(path: Path) -> Iterator[FdSink]:
    """Write a new ``path`` through ``path.tmp``; renamed into place only when complete."""
    tmp = temp_path(path)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
    try:
        try:
            sink = FdSink(fd)
            yield sink
            sink.flush()
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        remove_quietly(tmp)
        raise
    fsync_dir(path.parent)


def write_atomically(path: Path, data: bytes | memoryview) -> None:
    """Replace ``path`` with ``data``: complete or absent, whatever happens.

    Raises OSError; the temporary file is removed on failure.
    """
    with replacing(path) as sink:
        sink.write(data)


# --- reading what is on disk ---------------------------------------------------------------


class Entry(NamedTuple):
    """The part of a result row that resume and compaction need."""

    key: int
    status: str
    row: int | None
    model: str


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
    return Entry(key_of(id_, model), status, row, model)


def iter_parquet_entries(path: Path, *, columns: list[str] | None = None) -> Iterator[Entry]:
    """Stream the entries of one Parquet file, a record batch at a time (raises on a bad file)."""
    wanted = columns if columns is not None else [*KEY_COLUMNS, "row"]
    with pq.ParquetFile(path) as pf:
        for batch in pf.iter_batches(batch_size=BATCH_ROWS, columns=wanted):
            ids = batch.column("id").to_pylist()
            models = batch.column("model").to_pylist()
            statuses = batch.column("status").to_pylist()
            rows = batch.column("row").to_pylist() if "row" in wanted else [None] * len(ids)
            for id_, model, status, row in zip(ids, models, statuses, rows, strict=True):
                yield Entry(key_of(id_, model), status, row, model)


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
            f"existing {path} is not a readable Parquet file ({exc}); rerun with --restart "
            "to overwrite it, or choose another -o"
        ) from exc
    missing = [name for name in KEY_COLUMNS if name not in schema.names]
    if missing:
        raise ConfigError(
            f"existing {path} does not look like batchrunner output (no {', '.join(missing)} "
            "column); rerun with --restart to overwrite it, or choose another -o"
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


# --- resume state --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ResumeState:
    """What OUTPUT already holds, as ``key_of(id, model)`` ints.

    ``done`` holds every key that has a result; its last result is final unless it is an
    error and failed rows are being retried. ``failed`` (a subset of ``done``) holds the
    keys whose last result is an error. Memory: a Python set entry per key, roughly 60-70
    bytes per (id, model) already written (10 M rows ≈ 0.7 GB).
    """

    done: frozenset[int] | set[int] = field(default_factory=frozenset)
    failed: frozenset[int] | set[int] = field(default_factory=frozenset)
    rows_found: int = 0  # readable rows, counting a resent row each time it appears
    torn: int = 0  # torn or unreadable lines, half-written or unreadable parts skipped

    def is_done(self, id: str, model: str, *, retry_failed: bool) -> bool:
        """True when (id, model) must not be sent again."""
        if not self.done:  # a fresh run: skip hashing every row
            return False
        return self.is_key_done(key_of(id, model), retry_failed=retry_failed)

    def is_key_done(self, key: int, *, retry_failed: bool) -> bool:
        if key not in self.done:
            return False
        return not (retry_failed and key in self.failed)

    def count_done(self, *, retry_failed: bool) -> int:
        """How many (id, model) pairs will be skipped."""
        return len(self.done) - (len(self.failed) if retry_failed else 0)


class _Collector:
    __slots__ = ("done", "failed", "rows")

    def __init__(self) -> None:
        self.done: set[int] = set()
        self.failed: set[int] = set()
        self.rows = 0

    def add(self, entry: Entry) -> None:
        self.rows += 1
        self.done.add(entry.key)
        if entry.status == "error":
            self.failed.add(entry.key)
        else:
            self.failed.discard(entry.key)


def load_resume_state(path: str | os.PathLike[str]) -> ResumeState:
    """Read OUTPUT (and, for Parquet, its uncompacted parts and journals) into a ResumeState.

    Streams the files (a journal holds at most one part's rows); a missing OUTPUT gives an
    empty state. Torn JSONL or journal lines, Parquet temp files (deleted here) and unreadable
    parts are skipped and counted in ``torn``: their rows are not done and will be sent again.
    """
    out = Path(path)
    fmt = output_format(out)
    collector = _Collector()
    try:
        torn = _load_jsonl(out, collector) if fmt == "jsonl" else _load_parquet(out, collector)
    except OSError as exc:
        raise output_error("read", out, exc) from exc
    if torn:
        logger.warning(
            "%s: skipped %d torn or unreadable entries; their rows will be resent", out, torn
        )
    return ResumeState(collector.done, collector.failed, collector.rows, torn)


def _load_jsonl(path: Path, collector: _Collector) -> int:
    torn = 0
    try:
        f = path.open("rb")
    except FileNotFoundError:
        return 0
    with f:
        for number, line in enumerate(f):
            entry = parse_line(line)
            if entry is None:
                if number == 0 and line.endswith(b"\n"):
                    raise not_our_output(path)
                torn += 1
            else:
                collector.add(entry)
    return torn


def not_our_output(path: Path) -> ConfigError:
    return ConfigError(
        f"existing {path} does not look like batchrunner output; rerun with --restart to "
        "overwrite it, or choose another -o"
    )


def _load_parquet(path: Path, collector: _Collector) -> int:
    # Parts and live journals in number order, so the last result of a key wins.
    parts_through = read_parts_through(path)
    if path.exists():
        try:
            for entry in iter_parquet_entries(path, columns=KEY_COLUMNS):
                collector.add(entry)
        except pa.ArrowException as exc:
            raise ConfigError(
                f"existing {path} cannot be read ({exc}); rerun with --restart to overwrite "
                "it, or choose another -o"
            ) from exc
    on_disk = scan_parts(path, parts_through)
    torn = on_disk.temps_removed
    journals = dict(on_disk.journals)
    for seq, source in sorted([*on_disk.parts, *on_disk.journals]):
        if seq in journals:
            torn += _load_journal(source, collector)
            continue
        entries = read_part_entries(source)
        if entries is None:
            torn += 1
            continue
        for entry in entries:
            collector.add(entry)
    return torn


def _load_journal(path: Path, collector: _Collector) -> int:
    """Add a journal's complete lines; a torn last line (killed mid-write) is counted, not kept."""
    torn = 0
    try:
        f = path.open("rb")
    except FileNotFoundError:  # removed since the directory was listed
        return 0
    with f:
        for line in f:
            entry = parse_line(line)
            if entry is None:
                torn += 1
            else:
                collector.add(entry)
    return torn


# --- run identity --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RunIdentity:
    """What makes two runs the same job: input, models, request settings. JSON-serialisable."""

    fields: Mapping[str, object]


def _normalise(fields: Mapping[str, object]) -> object:
    # A JSON round trip makes tuples lists and keys strings, exactly as the manifest stores them.
    return orjson.loads(orjson.dumps(fields, option=orjson.OPT_NON_STR_KEYS))


def _changed_keys(old: object, new: object, prefix: str = "") -> list[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        changed: list[str] = []
        for key in sorted(old.keys() | new.keys()):
            if key not in old or key not in new:
                changed.append(prefix + key)
            else:
                changed.extend(_changed_keys(old[key], new[key], f"{prefix}{key}."))
        return changed
    return [] if old == new else [prefix.rstrip(".") or "(everything)"]


def check_identity(path: str | os.PathLike[str], identity: RunIdentity, *, restart: bool) -> None:
    """Refuse to resume OUTPUT with a different job; record the job's identity beside OUTPUT.

    The manifest ``OUTPUT.run.json`` is written (atomically) when missing or when
    ``restart`` is set; when present and different, a ConfigError names the changed keys.
    """
    out = Path(path)
    manifest = manifest_path(out)
    wanted = _normalise(identity.fields)
    if not restart:
        try:
            raw: bytes | None = manifest.read_bytes()
        except FileNotFoundError:
            raw = None
        except OSError as exc:
            raise output_error("read", manifest, exc) from exc
        if raw is not None:
            try:
                stored = orjson.loads(raw)["identity"]
            except (orjson.JSONDecodeError, KeyError, TypeError) as exc:
                raise ConfigError(
                    f"{manifest} is unreadable; rerun with --restart to start over, "
                    "or choose another -o"
                ) from exc
            if stored == wanted:
                return
            changed = ", ".join(_changed_keys(stored, wanted))
            raise ConfigError(
                f"{out} was produced with a different request configuration "
                f"(changed: {changed}); rerun with --restart to start over, "
                "or choose another -o"
            )
    data = orjson.dumps({"identity": wanted}, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS)
    try:
        ensure_parent(out)
        write_atomically(manifest, data + b"\n")
    except OSError as exc:
        raise output_error("write", manifest, exc) from exc
