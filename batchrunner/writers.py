"""Result writers: append result rows to OUTPUT so that a crash at any moment loses no paid-for row.

JSONL appends one line per row and hands it to the OS at once; Parquet buffers rows and commits
them as part files (complete or absent) that ``close()`` compacts into one ordinary file. The
layout on disk, and how a later run reads it back, is described in ``batchrunner.resume``.

Writers are synchronous and not thread-safe: one thread (the run's writer task, through
``anyio.to_thread.run_sync``) calls them in turn.
"""

from __future__ import annotations

import fcntl
import logging
import os
import shutil
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import NoReturn, Protocol

import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from batchrunner.errors import OutputError
from batchrunner.resume import (
    BATCH_ROWS,
    KEY_COLUMNS,
    PARTS_THROUGH_KEY,
    Entry,
    ensure_parent,
    fsync_dir,
    iter_parquet_entries,
    key_of,
    not_our_output,
    output_error,
    output_format,
    parse_line,
    part_path,
    parts_dir,
    read_part_entries,
    read_parts_through,
    remove_quietly,
    scan_parts,
    temp_path,
    write_all,
    write_atomically,
)
from batchrunner.schema import RESULT_FIELDS, RESULT_SCHEMA, Result

__all__ = ["ResultWriter", "open_writer"]

logger = logging.getLogger(__name__)

ROW_GROUP_ROWS = 65_536
COMPRESSION = "zstd"
_JSON_OPTIONS = orjson.OPT_UTC_Z | orjson.OPT_NAIVE_UTC | orjson.OPT_APPEND_NEWLINE
_SORT_KEYS = [("row", "ascending"), ("model", "ascending")]  # rows without a position last


class ResultWriter(Protocol):
    """Where result rows go. Every method raises OutputError when the disk says no."""

    path: Path

    def write(self, results: Sequence[Result]) -> None:
        """Append a batch (JSONL: handed to the OS at once; Parquet: a part per ``part_rows``)."""
        ...

    def checkpoint(self) -> None:
        """Make everything written so far durable (fsync; Parquet: commit the buffer as a part)."""
        ...

    def close(self, *, ordered: bool = False) -> None:
        """Clean finish: checkpoint, then leave one ordinary OUTPUT file, one row per key."""
        ...

    def abort(self) -> None:
        """Dirty stop: save what can be saved, leave everything resumable; never raises."""
        ...


def open_writer(
    path: str | os.PathLike[str], *, restart: bool = False, part_rows: int = 10_000
) -> ResultWriter:
    """Open OUTPUT for appending, resuming what is there unless ``restart`` wipes it first.

    ``restart`` removes OUTPUT, its parts and temp files, but not the run manifest, which
    ``check_identity`` owns (so the two may be called in either order).
    """
    out = Path(path)
    fmt = output_format(out)
    if part_rows < 1:
        raise ValueError("part_rows must be at least 1")
    try:
        ensure_parent(out)
        lock = _OutputLock.acquire(out)
    except OSError as exc:
        raise output_error("open", out, exc) from exc
    try:
        if restart:
            _wipe(out)
        remove_quietly(temp_path(out))
        if fmt == "jsonl":
            return _JsonlWriter.open(out, lock)
        return _ParquetWriter.open(out, lock, part_rows)
    except OSError as exc:
        lock.release()
        raise output_error("open", out, exc) from exc
    except BaseException:
        lock.release()
        raise


class _OutputLock:
    """An advisory lock on ``OUTPUT.lock``: one run writes an OUTPUT at a time.

    Two runs appending to one OUTPUT (an overlapping nightly job) would each send the rows
    the other has not finished yet. The lock file is removed when the writer finishes.
    """

    __slots__ = ("_fd", "_path")

    def __init__(self, path: Path, fd: int) -> None:
        self._path = path
        self._fd = fd

    @classmethod
    def acquire(cls, out: Path) -> _OutputLock:
        path = out.with_name(out.name + ".lock")
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise OutputError(
                f"{out} is being written by another batchrunner run; wait for it to finish, "
                "or choose another -o"
            ) from None
        except BaseException:
            os.close(fd)
            raise
        return cls(path, fd)

    def release(self) -> None:
        if self._fd < 0:
            return
        remove_quietly(self._path)
        os.close(self._fd)
        self._fd = -1


def _wipe(out: Path) -> None:
    remove_quietly(out)
    remove_quietly(temp_path(out))
    if parts_dir(out).exists():
        shutil.rmtree(parts_dir(out))
    fsync_dir(out.parent)
    logger.info("removed earlier output at %s", out)


# --- JSONL ---------------------------------------------------------------------------------


class _JsonlWriter:
    __slots__ = ("_closed", "_failed", "_fd", "_lock", "_size", "path")

    def __init__(self, path: Path, lock: _OutputLock, fd: int, size: int) -> None:
        self.path = path
        self._lock = lock
        self._fd = fd
        self._size = size  # bytes known to hold whole lines
        self._failed: OutputError | None = None
        self._closed = False

    @classmethod
    def open(cls, path: Path, lock: _OutputLock) -> _JsonlWriter:
        created = not path.exists()
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o644)
        try:
            size = _drop_torn_tail(fd, path)
            if size:
                with path.open("rb") as f:
                    if parse_line(f.readline()) is None:
                        raise not_our_output(path)
            if created:
                fsync_dir(path.parent)
        except BaseException:
            os.close(fd)
            raise
        return cls(path, lock, fd, size)

    def write(self, results: Sequence[Result]) -> None:
        self._check_usable()
        if not results:
            return
        data = b"".join(_encode_line(result) for result in results)
        try:
            write_all(self._fd, data)
        except OSError as exc:
            self._fail(exc)
        self._size += len(data)

    def checkpoint(self) -> None:
        self._check_usable()
        try:
            os.fsync(self._fd)
        except OSError as exc:
            self._fail(exc)

    def close(self, *, ordered: bool = False) -> None:
        if self._closed:
            return
        if self._failed is not None:
            self.abort()
            raise OutputError(str(self._failed))
        self.checkpoint()  # on failure the writer stays open for abort()
        self._release()
        try:
            _finish_jsonl(self.path, ordered=ordered)
        except OSError as exc:
            raise output_error("finish", self.path, exc) from exc
        finally:
            self._lock.release()

    def abort(self) -> None:
        if self._closed:
            return
        try:
            os.fsync(self._fd)
        except OSError as exc:
            logger.warning("could not sync %s: %s", self.path, exc.strerror or exc)
        finally:
            self._release()
            self._lock.release()

    def _check_usable(self) -> None:
        if self._closed:
            raise ValueError(f"writer for {self.path} is closed")
        if self._failed is not None:
            raise OutputError(str(self._failed))

    def _fail(self, exc: OSError) -> NoReturn:
        # A short write may have left half a line: cut it off so the file stays whole lines.
        try:
            os.ftruncate(self._fd, self._size)
        except OSError:
            logger.warning("could not remove a half-written line from %s", self.path)
        self._failed = output_error("write", self.path, exc)
        raise self._failed from exc

    def _release(self) -> None:
        self._closed = True
        os.close(self._fd)


def _drop_torn_tail(fd: int, path: Path) -> int:
    """Truncate a file to its last newline, so the next line is not glued to a torn one."""
    size = os.fstat(fd).st_size
    if size == 0 or os.pread(fd, 1, size - 1) == b"\n":
        return size
    end, cut = size, 0
    while end > 0:
        start = max(0, end - (1 << 16))
        newline = os.pread(fd, end - start, start).rfind(b"\n")
        if newline >= 0:
            cut = start + newline + 1
            break
        end = start
    os.ftruncate(fd, cut)
    os.fsync(fd)
    logger.warning("dropped a torn last line (%d bytes) from %s", size - cut, path)
    return cut


def _encode_line(result: Result) -> bytes:
    try:
        return orjson.dumps(result, option=_JSON_OPTIONS)
    except orjson.JSONEncodeError:
        return orjson.dumps(_clean_row(result), option=_JSON_OPTIONS)


def _clean_row(result: Result) -> dict[str, object]:
    # Model text can carry lone surrogates, which neither UTF-8 nor Parquet can hold.
    return {
        name: value.encode("utf-8", "replace").decode("utf-8") if isinstance(value, str) else value
        for name, value in result.to_dict().items()
    }


def _sort_key(entry: Entry) -> tuple[bool, int, str]:
    return (entry.row is None, entry.row or 0, entry.model)


def _finish_jsonl(path: Path, *, ordered: bool) -> None:
    """Rewrite OUTPUT only if it holds a key twice, an unreadable line, or is out of order."""
    torn = 0
    in_order = True

    def first_pass() -> Iterator[int]:
        nonlocal torn, in_order
        previous: tuple[bool, int, str] | None = None
        for entry in _jsonl_entries(path):
            if entry is None:
                torn += 1
                continue
            if ordered and in_order:
                current = _sort_key(entry)
                in_order = previous is None or previous <= current
                previous = current
            yield entry.key

    def keys() -> Iterator[int]:
        return (entry.key for entry in _jsonl_entries(path) if entry is not None)

    last = _last_of_repeats(first_pass(), _count_lines(path))
    reordered = ordered and not in_order
    if not torn and not reordered and not _any_repeat(keys(), last):
        return
    logger.info(
        "rewriting %s: dropping superseded rows and %d unreadable lines%s",
        path,
        torn,
        ", sorting by row" if ordered else "",
    )
    if ordered:
        _rewrite_jsonl_sorted(path, last)
        return
    with path.open("rb") as source, _replacing(path) as out:
        index = 0
        for line in source:
            entry = parse_line(line)
            if entry is None:
                continue
            if _kept(last, entry.key, index):
                out.write(line)
            index += 1


def _rewrite_jsonl_sorted(path: Path, last: dict[int, int]) -> None:
    """Sort by (row, model) holding ~50 bytes per row (row, model, offset, length) in Arrow."""
    chunks: list[pa.RecordBatch] = []
    rows: list[int | None] = []
    models: list[str] = []
    offsets: list[int] = []
    lengths: list[int] = []

    def seal() -> None:
        chunks.append(
            pa.record_batch(
                [
                    pa.array(rows, pa.int64()),
                    pa.array(models, pa.string()),
                    pa.array(offsets, pa.int64()),
                    pa.array(lengths, pa.int64()),
                ],
                names=["row", "model", "offset", "length"],
            )
        )
        for column in (rows, models, offsets, lengths):
            column.clear()

    with path.open("rb") as source:
        offset = index = 0
        for line in source:
            entry = parse_line(line)
            if entry is not None:
                if _kept(last, entry.key, index):
                    rows.append(entry.row)
                    models.append(entry.model)
                    offsets.append(offset)
                    lengths.append(len(line))
                    if len(rows) >= BATCH_ROWS:
                        seal()
                index += 1
            offset += len(line)
        seal()
        order = pa.Table.from_batches(chunks).sort_by(_SORT_KEYS).select(["offset", "length"])
        chunks.clear()
        with _replacing(path) as out:
            fd = source.fileno()
            for batch in order.to_batches(BATCH_ROWS):
                for at, length in zip(
                    batch.column(0).to_pylist(), batch.column(1).to_pylist(), strict=True
                ):
                    out.write(os.pread(fd, length, at))


def _jsonl_entries(path: Path) -> Iterator[Entry | None]:
    with path.open("rb") as f:
        for line in f:
            yield parse_line(line)


def _count_lines(path: Path) -> int:
    count = 0
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            count += chunk.count(b"\n")
    return count


# --- Parquet -------------------------------------------------------------------------------


class _ParquetWriter:
    __slots__ = (
        "_buffer",
        "_closed",
        "_failed",
        "_lock",
        "_next_seq",
        "_part_rows",
        "_parts_through",
        "path",
    )

    def __init__(
        self, path: Path, lock: _OutputLock, part_rows: int, next_seq: int, parts_through: int
    ) -> None:
        self.path = path
        self._lock = lock
        self._part_rows = part_rows
        self._next_seq = next_seq
        self._parts_through = parts_through
        self._buffer: list[Result] = []
        self._failed: OutputError | None = None
        self._closed = False

    @classmethod
    def open(cls, path: Path, lock: _OutputLock, part_rows: int) -> _ParquetWriter:
        parts_through = read_parts_through(path)
        on_disk = scan_parts(path, parts_through)
        directory = parts_dir(path)
        if not directory.is_dir():
            directory.mkdir()  # also proves the directory is writable before any row is paid for
            fsync_dir(path.parent)
        return cls(path, lock, part_rows, on_disk.next_seq, parts_through)

    def write(self, results: Sequence[Result]) -> None:
        self._check_usable()
        self._buffer.extend(results)
        while len(self._buffer) >= self._part_rows:
            self._commit(self._part_rows)

    def checkpoint(self) -> None:
        self._check_usable()
        if self._buffer:
            self._commit(len(self._buffer))

    def close(self, *, ordered: bool = False) -> None:
        if self._closed:
            return
        if self._failed is not None:
            self.abort()
            raise OutputError(str(self._failed))
        self.checkpoint()  # on failure the writer stays open for abort()
        self._closed = True
        try:
            on_disk = scan_parts(self.path, self._parts_through)
            _compact(self.path, on_disk.parts, self._parts_through, ordered=ordered)
        except OSError as exc:
            raise output_error("finish", self.path, exc) from exc
        except pa.ArrowException as exc:
            raise OutputError(f"cannot finish {self.path}: {exc}") from exc
        finally:
            self._lock.release()

    def abort(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            if self._buffer:
                self._commit(len(self._buffer))
        except OutputError as exc:
            logger.warning("%s; %d rows will be sent again on resume", exc, len(self._buffer))
        finally:
            self._lock.release()

    def _check_usable(self) -> None:
        if self._closed:
            raise ValueError(f"writer for {self.path} is closed")
        if self._failed is not None:
            raise OutputError(str(self._failed))

    def _commit(self, count: int) -> None:
        sink = pa.BufferOutputStream()
        pq.write_table(
            _to_table(self._buffer[:count]),
            sink,
            row_group_size=ROW_GROUP_ROWS,
            compression=COMPRESSION,
        )
        target = part_path(self.path, self._next_seq)
        try:
            parts_dir(self.path).mkdir(exist_ok=True)
            write_atomically(target, memoryview(sink.getvalue()))
        except OSError as exc:
            self._failed = output_error("write", target, exc)
            raise self._failed from exc
        del self._buffer[:count]
        self._next_seq += 1


def _to_table(rows: Sequence[Result]) -> pa.Table:
    columns = {name: [getattr(row, name) for row in rows] for name in RESULT_FIELDS}
    try:
        return pa.Table.from_pydict(columns, schema=RESULT_SCHEMA)
    except UnicodeEncodeError:
        return pa.Table.from_pylist([_clean_row(row) for row in rows], schema=RESULT_SCHEMA)


def _compact(
    out: Path, parts: Sequence[tuple[int, Path]], parts_through: int, *, ordered: bool
) -> None:
    """Merge OUTPUT (from an earlier finished run) and the parts into a new OUTPUT.

    Streams record batches. Memory: the repeat finder (2 bytes per row plus an entry per
    flagged key), one row group being written (64 Ki rows), one part's keys; with
    ``ordered`` the whole result table is sorted in memory (about OUTPUT's uncompressed size).
    """
    directory = parts_dir(out)
    if parts or ordered or not out.exists():
        had_output = out.exists()
        sources: list[Path] = [out] if had_output else []
        expected = sum(_num_rows(source) for source in [*sources, *(p for _, p in parts)])

        def keys() -> Iterator[int]:
            if had_output:
                yield from (entry.key for entry in iter_parquet_entries(out, columns=KEY_COLUMNS))
            for _, part in parts:
                entries = read_part_entries(part)
                if entries is not None:  # resume skipped an unreadable part: its rows were resent
                    sources.append(part)
                    yield from (entry.key for entry in entries)

        last = _last_of_repeats(keys(), expected)
        through = max([parts_through, *(seq for seq, _ in parts)])
        _write_compacted(out, sources, last, through, ordered=ordered)
    try:
        if directory.exists():
            shutil.rmtree(directory)
        fsync_dir(out.parent)
    except OSError as exc:  # harmless: the parts are recorded as merged in OUTPUT's metadata
        logger.warning("could not remove %s: %s", directory, exc.strerror or exc)


def _num_rows(source: Path) -> int:
    try:
        with pq.ParquetFile(source) as pf:
            return int(pf.metadata.num_rows)
    except (OSError, pa.ArrowException):
        return 0


def _write_compacted(
    out: Path, sources: list[Path], last: dict[int, int], through: int, *, ordered: bool
) -> None:
    schema = RESULT_SCHEMA.with_metadata({PARTS_THROUGH_KEY: str(through).encode()})
    collected: list[pa.Table] = []
    with _replacing(out) as sink:
        writer = pq.ParquetWriter(sink, schema, compression=COMPRESSION)
        try:
            groups = _RowGroups(writer)
            index = 0
            for source in sources:
                with pq.ParquetFile(source) as pf:
                    for batch in pf.iter_batches(batch_size=BATCH_ROWS):
                        table = _conform(pa.Table.from_batches([batch]))
                        if last:
                            ids = table.column("id").to_pylist()
                            models = table.column("model").to_pylist()
                            mask = [
                                _kept(last, key_of(i, m), index + n)
                                for n, (i, m) in enumerate(zip(ids, models, strict=True))
                            ]
                            index += len(mask)
                            table = table.filter(pa.array(mask, pa.bool_()))
                        if ordered:
                            collected.append(table)
                        else:
                            groups.add(table)
            if ordered and collected:
                groups.add(pa.concat_tables(collected).sort_by(_SORT_KEYS))
                collected.clear()
            groups.finish()
        finally:
            writer.close()


def _conform(table: pa.Table) -> pa.Table:
    table = table.replace_schema_metadata(None)
    if table.schema.equals(RESULT_SCHEMA):
        return table
    return table.select(list(RESULT_SCHEMA.names)).cast(RESULT_SCHEMA)


class _RowGroups:
    """Feed a ParquetWriter whole row groups, whatever size the incoming tables are."""

    def __init__(self, writer: pq.ParquetWriter) -> None:
        self._writer = writer
        self._pending: list[pa.Table] = []
        self._rows = 0

    def add(self, table: pa.Table) -> None:
        self._pending.append(table)
        self._rows += table.num_rows
        if self._rows < ROW_GROUP_ROWS:
            return
        whole = pa.concat_tables(self._pending)
        full = whole.num_rows - whole.num_rows % ROW_GROUP_ROWS
        self._writer.write_table(whole.slice(0, full), row_group_size=ROW_GROUP_ROWS)
        rest = whole.slice(full)
        self._pending, self._rows = [rest], rest.num_rows

    def finish(self) -> None:
        if self._rows:
            self._writer.write_table(pa.concat_tables(self._pending), row_group_size=ROW_GROUP_ROWS)
        self._pending, self._rows = [], 0


# --- shared by both formats ----------------------------------------------------------------


def _kept(last: dict[int, int], key: int, index: int) -> bool:
    at = last.get(key)
    return at is None or at == index


class _SeenFilter:
    """A Bloom filter over 64-bit keys: 16 bits and 4 probes per key, ~0.25 % false positives."""

    __slots__ = ("_bits", "_size")

    def __init__(self, expected: int) -> None:
        self._size = max(1024, expected * 16)
        self._bits = bytearray((self._size + 7) // 8)

    def add(self, key: int) -> bool:
        """Add ``key``; True when it may have been added before (never False when it was)."""
        low, high = key & 0xFFFFFFFF, ((key >> 32) & 0xFFFFFFFF) | 1
        seen = True
        bits, size = self._bits, self._size
        for probe in range(4):
            bit = (low + probe * high) % size
            mask = 1 << (bit & 7)
            if not bits[bit >> 3] & mask:
                bits[bit >> 3] |= mask
                seen = False
        return seen


def _last_of_repeats(keys: Iterable[int], expected: int) -> dict[int, int]:
    """Keys that may occur more than once → index of their last occurrence (the one to keep).

    One streaming pass. Every key that does repeat is flagged from its second occurrence on,
    so its entry is its last index. The filter also flags ~0.25 % of keys that occur once;
    their entry is their only index, so "keep the row at the entry's index" is right for
    both. Memory: 2 bytes per row plus a dict entry per flagged key.
    """
    seen = _SeenFilter(expected)
    last: dict[int, int] = {}
    for index, key in enumerate(keys):
        if seen.add(key):
            last[key] = index
    return last


def _any_repeat(keys: Iterable[int], last: dict[int, int]) -> bool:
    """True when some key really occurs twice (stops at the first one found)."""
    if not last:
        return False
    for index, key in enumerate(keys):
        at = last.get(key)
        if at is not None and at != index:
            return True
    return False


class _FdSink:
    """A minimal buffered binary file over a raw fd, writing through ``os.write``."""

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._chunks: list[bytes] = []
        self._buffered = 0
        self._position = 0
        self.closed = False

    def write(self, data: bytes) -> int:
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
def _replacing(path: Path) -> Iterator[_FdSink]:
    """Write a new ``path`` through ``path.tmp``; renamed into place only when complete."""
    tmp = temp_path(path)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
    try:
        try:
            sink = _FdSink(fd)
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
