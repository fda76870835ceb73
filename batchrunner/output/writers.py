"""Result writers: append result rows to OUTPUT so that a crash at any moment loses no paid-for row.

JSONL appends one line per row and hands it to the OS at once (here). Parquet does the same
into a journal (JSONL lines) while it fills a buffer, commits the buffer as a part file
(complete or absent) every ``part_rows`` rows, and ``close()`` compacts everything into one
ordinary file (``batchrunner.output.parquet``). The layout on disk, and how a later run reads
it back, is described in ``batchrunner.output.ondisk``.

Writers are synchronous and not thread-safe: one thread (the run's writer task, through
``anyio.to_thread.run_sync``) calls them in turn.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn, Protocol

from batchrunner.errors import OutputError
from batchrunner.output.compaction import finish_jsonl
from batchrunner.output.durable import (
    ensure_parent,
    fsync_dir,
    output_error,
    remove_quietly,
    temp_path,
    write_all,
)
from batchrunner.output.lock import OutputLock
from batchrunner.output.ondisk import output_format, parse_line, parts_dir
from batchrunner.output.parquet import ParquetWriter
from batchrunner.output.resume import not_our_output
from batchrunner.results import Result, result_line

__all__ = ["ResultWriter", "open_writer"]

logger = logging.getLogger(__name__)


class ResultWriter(Protocol):
    """Where result rows go. Every method raises OutputError when the disk says no."""

    path: Path

    def write(self, results: Sequence[Result]) -> None:
        """Append a batch, in the OS on return: a SIGKILL now loses none of it.

        Parquet: into the journal, or straight into a part when the batch fills one.
        """
        ...

    def checkpoint(self) -> None:
        """Make everything written so far durable against a power loss (fsync only)."""
        ...

    def close(self, *, ordered: bool = False, distinct: bool = False) -> None:
        """Clean finish: checkpoint, then leave one ordinary OUTPUT file, one row per key.

        ``distinct`` is the caller's word that it wrote no (id, model) twice. When OUTPUT
        held nothing before this writer opened it, finishing then skips the search for
        repeats, a pass over every row's key.
        """
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
        lock = OutputLock.acquire(out)
    except OSError as exc:
        raise output_error("open", out, exc) from exc
    try:
        if restart:
            _wipe(out)
        remove_quietly(temp_path(out))
        if fmt == "jsonl":
            return _JsonlWriter.open(out, lock)
        return ParquetWriter.open(out, lock, part_rows)
    except OSError as exc:
        lock.release()
        raise output_error("open", out, exc) from exc
    except BaseException:
        lock.release()
        raise


def _wipe(out: Path) -> None:
    remove_quietly(out)
    remove_quietly(temp_path(out))
    if parts_dir(out).exists():
        shutil.rmtree(parts_dir(out))
    fsync_dir(out.parent)
    logger.info("removed earlier output at %s", out)


# --- JSONL ---------------------------------------------------------------------------------


class _JsonlWriter:
    __slots__ = ("_closed", "_failed", "_fd", "_lock", "_size", "_started_empty", "path")

    def __init__(
        self, path: Path, lock: OutputLock, fd: int, size: int, *, started_empty: bool
    ) -> None:
        self.path = path
        self._lock = lock
        self._fd = fd
        self._size = size  # bytes known to hold whole lines
        self._started_empty = started_empty  # so every line in it was written by this writer
        self._failed: OutputError | None = None
        self._closed = False

    @classmethod
    def open(cls, path: Path, lock: OutputLock) -> _JsonlWriter:
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
        return cls(path, lock, fd, size, started_empty=size == 0)

    def write(self, results: Sequence[Result]) -> None:
        self._check_usable()
        if not results:
            return
        data = b"".join(result_line(result) for result in results)
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

    def close(self, *, ordered: bool = False, distinct: bool = False) -> None:
        if self._closed:
            return
        if self._failed is not None:
            self.abort()
            raise OutputError(str(self._failed))
        self.checkpoint()  # on failure the writer stays open for abort()
        self._release()
        try:
            if not (distinct and self._started_empty and not ordered):
                finish_jsonl(self.path, ordered=ordered)
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
