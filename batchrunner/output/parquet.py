"""The Parquet writer: a journal while a part fills, parts every ``part_rows`` rows, then one file.

Rows go to a JSONL journal at once (in the OS when ``write()`` returns), and every
``part_rows`` rows the buffer is committed as a Parquet part, complete or absent, and its
journal removed. ``close()`` compacts the earlier OUTPUT, the parts and the last rows into
one ordinary file (``batchrunner.output.compaction``). Opened through ``writers.open_writer``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

import pyarrow as pa
import pyarrow.parquet as pq

from batchrunner.errors import OutputError
from batchrunner.output.compaction import (
    COMPRESSION,
    DICTIONARY_COLUMNS,
    ROW_GROUP_ROWS,
    compact_parquet,
)
from batchrunner.output.durable import (
    fsync_dir,
    output_error,
    remove_quietly,
    write_all,
    write_atomically,
)
from batchrunner.output.journal import read_journal, read_lines
from batchrunner.output.lock import OutputLock
from batchrunner.output.ondisk import (
    journal_path,
    part_path,
    parts_dir,
    read_parts_through,
    scan_parts,
)
from batchrunner.results import Result, result_line

__all__ = ["ParquetWriter"]

logger = logging.getLogger(__name__)


class _Journal:
    """The rows of the part being filled, as JSONL lines handed to the OS as they arrive.

    Created on its first row, fsynced at ``checkpoint()``, removed once its part is committed.
    """

    __slots__ = ("_fd", "_new", "_size", "path", "rows")

    def __init__(self, path: Path) -> None:
        self.path = path
        self.rows = 0
        self._fd = -1
        self._size = 0  # bytes known to hold whole lines
        self._new = False  # created since its directory was last fsynced

    def append(self, data: bytes, rows: int) -> None:
        """Hand ``rows`` whole lines to the OS; raises OSError after cutting off a torn line."""
        if self._fd < 0:
            flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND | os.O_CLOEXEC
            self._fd = os.open(self.path, flags, 0o644)
            self._new = True
        try:
            write_all(self._fd, data)
        except OSError:
            try:
                os.ftruncate(self._fd, self._size)
            except OSError:
                logger.warning("could not remove a half-written line from %s", self.path)
            raise
        self._size += len(data)
        self.rows += rows

    def sync(self) -> None:
        if self._fd < 0:
            return
        os.fsync(self._fd)
        if self._new:  # a power loss must not take the journal's name with it
            fsync_dir(self.path.parent)
            self._new = False

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def remove(self) -> None:
        """Its rows are in a committed part. One left behind by a crash is stale and ignored."""
        self.close()
        remove_quietly(self.path)


class ParquetWriter:
    """Rows go to a journal at once and to a part every ``part_rows`` rows.

    Invariant: the buffer holds the lines of fewer than ``part_rows`` rows, exactly those in
    the journal (after a failed write, possibly more). A part is decoded from those lines by
    Arrow's JSON reader, so it holds what the journal held, byte for byte. ``checkpoint()``
    only fsyncs the journal: parts are committed by size, not by time, since the journal
    already makes every row durable and small parts would slow down resume and compaction.
    """

    __slots__ = (
        "_buffered",
        "_chunks",
        "_closed",
        "_failed",
        "_journal",
        "_lock",
        "_next_seq",
        "_part_rows",
        "_parts_through",
        "_started_empty",
        "path",
    )

    def __init__(
        self,
        path: Path,
        lock: OutputLock,
        part_rows: int,
        next_seq: int,
        parts_through: int,
        *,
        started_empty: bool = False,
    ) -> None:
        self.path = path
        # No OUTPUT, parts or journals before: every row compacted is one this writer wrote.
        self._started_empty = started_empty
        self._lock = lock
        self._part_rows = part_rows
        self._next_seq = next_seq
        self._parts_through = parts_through
        self._journal = _Journal(journal_path(path, next_seq))
        # The part's result lines, as written: one growing buffer would be copied to fresh
        # memory as it grew, and each fresh page is a page fault.
        self._chunks: list[bytes] = []
        self._buffered = 0  # rows in the chunks
        self._failed: OutputError | None = None
        self._closed = False

    @classmethod
    def open(cls, path: Path, lock: OutputLock, part_rows: int) -> ParquetWriter:
        parts_through = read_parts_through(path)
        on_disk = scan_parts(path, parts_through)
        directory = parts_dir(path)
        if not directory.is_dir():
            directory.mkdir()  # also proves the directory is writable before any row is paid for
            fsync_dir(path.parent)
        started_empty = not (path.exists() or on_disk.parts or on_disk.journals)
        for seq, journal in on_disk.journals:
            _seal_journal(path, seq, journal)
        return cls(
            path, lock, part_rows, on_disk.next_seq, parts_through, started_empty=started_empty
        )

    def write(self, results: Sequence[Result]) -> None:
        self._check_usable()
        rest = results
        while rest:
            room = self._part_rows - self._buffered
            if len(rest) < room:
                data = b"".join(map(result_line, rest))
                self._chunks.append(data)  # after a failed write, abort() still commits them
                self._buffered += len(rest)
                try:
                    self._journal.append(data, len(rest))
                except OSError as exc:
                    self._fail(self._journal.path, exc)
                return
            # These rows fill a part: committing it makes them durable without the journal.
            self._chunks.append(b"".join(map(result_line, rest[:room])))
            self._buffered += room
            rest = rest[room:]
            self._commit()

    def checkpoint(self) -> None:
        self._check_usable()
        try:
            self._journal.sync()
        except OSError as exc:
            self._fail(self._journal.path, exc)

    def close(self, *, ordered: bool = False, distinct: bool = False) -> None:
        if self._closed:
            return
        if self._failed is not None:
            self.abort()
            raise OutputError(str(self._failed))
        self.checkpoint()  # on failure the writer stays open for abort()
        self._closed = True
        self._journal.close()
        try:
            # The buffer goes straight into OUTPUT; until the rename its journal keeps it.
            on_disk = scan_parts(self.path, self._parts_through)
            pending = (self._next_seq, self._buffered_table()) if self._chunks else None
            compact_parquet(
                self.path,
                on_disk.parts,
                self._parts_through,
                pending=pending,
                ordered=ordered,
                distinct=distinct and self._started_empty,
            )
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
            if self._chunks:
                self._commit()
        except OutputError as exc:
            unsaved = self._buffered - self._journal.rows
            try:
                self._journal.sync()
            except OSError as sync_exc:
                logger.warning("could not sync %s: %s", self._journal.path, sync_exc)
            if unsaved > 0:
                # How many a rerun sends is read back from disk (the CLI says it): these
                # rows may be in a journal or a part written before the failure.
                logger.warning("%s; up to %d rows of the last part may be sent again", exc, unsaved)
            else:
                logger.warning("%s; its journal keeps the rows for resume", exc)
        finally:
            self._journal.close()
            self._lock.release()

    def _check_usable(self) -> None:
        if self._closed:
            raise ValueError(f"writer for {self.path} is closed")
        if self._failed is not None:
            raise OutputError(str(self._failed))

    def _fail(self, path: Path, exc: OSError) -> NoReturn:
        self._failed = output_error("write", path, exc)
        raise self._failed from exc

    def _buffered_table(self) -> pa.Table:
        table, dropped = read_lines(self._chunks)
        if dropped:  # not expected of result_line's lines: keep the part, resend the rows
            logger.warning(
                "%d rows of part %d could not be decoded; a resumed run sends them again",
                dropped,
                self._next_seq,
            )
        return table

    def _commit(self) -> None:
        """Commit the buffer as the next part, then drop the journal that held it."""
        target = part_path(self.path, self._next_seq)
        logger.debug("committing part %d of %s", self._next_seq, self.path)
        try:
            parts_dir(self.path).mkdir(exist_ok=True)
            write_atomically(target, _parquet_bytes(self._buffered_table()))
        except OSError as exc:
            self._fail(target, exc)
        self._chunks = []
        self._buffered = 0
        # Hand back what decoding and encoding the part freed until the next part: mimalloc
        # kept some 20-40 MB of it; on the system allocator this trims glibc's heaps.
        pa.default_memory_pool().release_unused()
        self._next_seq += 1
        try:
            self._journal.remove()
        except OSError as exc:  # harmless: a journal beside its part is stale and ignored
            logger.warning("could not remove %s: %s", self._journal.path, exc.strerror or exc)
        self._journal = _Journal(journal_path(self.path, self._next_seq))


def _seal_journal(out: Path, seq: int, journal: Path) -> None:
    """Turn a journal left by a killed run into its part, so it is compacted like one."""
    table, torn = read_journal(journal)
    if torn:
        logger.warning("dropped %d torn or unreadable lines from %s", torn, journal)
    if table.num_rows:
        write_atomically(part_path(out, seq), _parquet_bytes(table))
    remove_quietly(journal)


def _parquet_bytes(table: pa.Table) -> memoryview:
    sink = pa.BufferOutputStream()
    pq.write_table(
        table,
        sink,
        row_group_size=ROW_GROUP_ROWS,
        compression=COMPRESSION,
        use_dictionary=DICTIONARY_COLUMNS,
    )
    return memoryview(sink.getvalue())
