"""The input ids a run has seen, for skipping repeated ones: a ``KeyIndex`` without marks.

About 8 bytes per id up to the index's bound (instead of the ~70 of a Python set entry);
past it the ids spill to sorted runs in ``OUTPUT.index/seen/`` and memory stays flat.
"""

from __future__ import annotations

from pathlib import Path

from batchrunner.output.keyindex import DEFAULT_MEMORY_BYTES, KeyIndex

__all__ = ["IdSet"]


class IdSet(KeyIndex):
    """``add`` and ``in`` for int keys that fit in a signed 64-bit integer."""

    __slots__ = ()

    def __init__(
        self, directory: Path | None = None, *, memory_bytes: int = DEFAULT_MEMORY_BYTES
    ) -> None:
        super().__init__(directory, memory_bytes=memory_bytes, marks=False)

    def __len__(self) -> int:
        return self.stored()  # exact: the producer adds only ids it has not seen
