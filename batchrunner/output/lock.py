"""The output's lock: one run writes an OUTPUT at a time.

Two runs appending to one OUTPUT (an overlapping nightly job) would each send the rows the
other has not finished yet; the lock is an advisory ``flock`` on ``OUTPUT.lock``.

The lock is the ``flock`` on an open descriptor, never the file's existence. The holder
removes the file while it still holds the lock and only then closes the descriptor, and an
acquirer that got the lock checks that the file it locked is still the one at the path
(same device and inode): a run that opened the file just before the holder removed it
would otherwise lock a file nobody else can see, while a third run creates and locks a new
one. It is the usual scheme for ``flock`` lock files that are removed after use.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from typing import Final

from batchrunner.errors import OutputError
from batchrunner.output.ondisk import lock_path

__all__ = ["OutputLock"]

#: How often an acquirer retries after finding it locked a file the holder had removed.
_STALE_RETRIES: Final = 100


class OutputLock:
    """An advisory lock on ``OUTPUT.lock``: one run writes an OUTPUT at a time.

    Two runs appending to one OUTPUT (an overlapping nightly job) would each send the rows
    the other has not finished yet. The lock file is removed when the writer finishes,
    while the lock is still held; the lock ends when its descriptor is closed.
    """

    __slots__ = ("_fd", "_path")

    def __init__(self, path: Path, fd: int) -> None:
        self._path = path
        self._fd = fd

    @classmethod
    def acquire(cls, out: Path) -> OutputLock:
        path = lock_path(out)
        for _ in range(_STALE_RETRIES):
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                if _same_file(fd, path):
                    return cls(path, fd)
            except BlockingIOError:
                os.close(fd)
                raise OutputError(
                    f"{out} is being written by another batchrunner run; wait for it to "
                    "finish, or choose another -o"
                ) from None
            except BaseException:
                os.close(fd)
                raise
            # The holder removed the file between our open and our lock: try the new one.
            os.close(fd)
        raise OutputError(f"{path}: cannot take the output's lock (the file keeps changing)")

    def release(self) -> None:
        """Remove the lock file while still holding the lock, then close (which unlocks)."""
        if self._fd < 0:
            return
        try:
            if _same_file(self._fd, self._path):
                self._path.unlink()
        except OSError:
            pass  # a file we cannot remove is harmless: the next run locks and checks it
        finally:
            os.close(self._fd)
            self._fd = -1


def _same_file(fd: int, path: Path) -> bool:
    """Whether ``fd`` is still the file at ``path``."""
    try:
        at_path = os.stat(path)
    except FileNotFoundError:
        return False
    mine = os.fstat(fd)
    return (mine.st_dev, mine.st_ino) == (at_path.st_dev, at_path.st_ino)
