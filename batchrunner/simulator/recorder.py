"""Ground truth: one record per chat request served, kept in memory and/or appended to a
JSON-lines file (buffered; flushed at most once a second and on close).
"""

from __future__ import annotations

import time
from typing import IO

import orjson

_FLUSH_EVERY_S = 1.0


class Recorder:
    """Collects request records; ``close()`` flushes and closes the log file."""

    def __init__(self, path: str | None, keep: bool) -> None:
        self.records: list[dict[str, object]] = []
        self._keep = keep
        self._file: IO[bytes] | None = open(path, "ab", buffering=1 << 20) if path else None  # noqa: SIM115
        self._last_flush = time.monotonic()

    @property
    def active(self) -> bool:
        return self._keep or self._file is not None

    def add(self, record: dict[str, object]) -> None:
        if self._keep:
            self.records.append(record)
        if self._file is not None:
            self._file.write(orjson.dumps(record) + b"\n")
            now = time.monotonic()
            if now - self._last_flush >= _FLUSH_EVERY_S:
                self._file.flush()
                self._last_flush = now

    def flush(self) -> None:
        if self._file is not None:
            self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
