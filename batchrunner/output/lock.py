"""The output's lock: one run writes an OUTPUT at a time.

Two runs appending to one OUTPUT (an overlapping nightly job) would each send the rows the
other has not finished yet; the lock is an advisory ``flock`` on ``OUTPUT.lock``.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from batchrunner.errors import OutputError
from batchrunner.output.durable import remove_quietly
from batchrunner.output.ondisk import lock_path

__all__ = ["OutputLock"]


class OutputLock:
    """An advisory lock on ``OUTPUT.lock``: one run writes an OUTPUT at a time.

    Two runs appending to one OUTPUT (an overlapping nightly job) would each send the rows
    the other has not finished yet. The lock file is removed when the writer finishes.
    """

    __slots__ = ("_fd", "_path")

    def __init__(self, path: Path, fd: int) -> None:
        self._path = path
        self._fd = fd

    @classmethod
    def acquire(cls, out: Path) -> OutputLock:
        path = lock_path(out)
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
