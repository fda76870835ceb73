"""Writing files so that a crash leaves the old version or the new one, never a torn mix.

Whole writes through ``os.write``, fsyncs of files and of the directories that name them,
and replacement through a temporary file renamed into place. The writers and compaction
build on these; error messages name the path and the operating system's reason.
"""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from batchrunner.errors import OutputError


def temp_path(path: Path) -> Path:
    """Where a new version of ``path`` is written before it replaces the old one."""
    return path.with_name(path.name + ".tmp")


def output_error(action: str, path: Path, exc: OSError) -> OutputError:
    """One line naming the path and the OS's reason, e.g. ``cannot write x: No space left``."""
    reason = exc.strerror or str(exc) or type(exc).__name__
    return OutputError(f"cannot {action} {path}: {reason}")


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
