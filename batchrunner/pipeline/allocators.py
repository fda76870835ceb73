"""Memory allocators for a process that exists to run batches: freed memory goes back.

A run does the same work for each part of 10,000 rows, so its peak memory should not grow
with the input. With the allocators' defaults it did: 145 MB of peak RSS for 10,000 rows
against nginx, 188 MB for 100,000. Two allocators kept memory that a part or the final
merge had freed:

- Arrow's default pool (mimalloc) held 25-40 MB after the merge read and wrote its row
  groups, even after being asked to release what it did not use. Arrow's work in a run is
  a part every 10,000 rows and the merge at the end, which the system allocator serves as
  fast. Arrow reads its choice once, from ``ARROW_DEFAULT_MEMORY_POOL``, when pyarrow loads:
  ``pyarrow.set_memory_pool`` reaches only the allocations pyarrow's own API makes, not
  those inside the Parquet reader and writer.
- glibc raises its mmap threshold to the size of each large block that is freed, up to
  32 MB. After the first part freed its buffers, the next parts' buffers (a few MB each)
  came from the heaps instead, and some 15 MB of them stayed there as free memory.

With both set, the same runs peaked at 123 MB and 140 MB.

Fixing the mmap threshold also stops glibc from moving its trim threshold, which then
stays at 128 KiB: each time the free memory at the top of a heap passed that, it went back
to the system, and the next rows faulted it in again, page by page. A 20,000-row run took
57,000 page faults instead of 31,000, at some 6 µs each on a virtual machine. So the trim
threshold is fixed too, at the 64 MiB that glibc's own adjustment stops at; the writer
still hands freed memory back after each part (``malloc_trim``, through Arrow).

Processes that only run batches (the command line) call :func:`return_freed_memory`
before anything loads pyarrow; a library user decides for their process. Like the
command, this is an edge of the process, so it touches ``os.environ``: Arrow reads its
choice from there only.
"""

from __future__ import annotations

import ctypes
import logging
import os
import platform
import sys

__all__ = ["ARROW_POOL_VARIABLE", "MMAP_THRESHOLD", "TRIM_THRESHOLD", "return_freed_memory"]

logger = logging.getLogger(__name__)

ARROW_POOL_VARIABLE = "ARROW_DEFAULT_MEMORY_POOL"
# glibc's own starting value: blocks this large and larger are mapped on their own and
# unmapped when freed.
MMAP_THRESHOLD = 128 * 1024
# Free memory a heap keeps at its top: glibc's largest dynamic value (twice its 32 MiB
# ceiling for the mmap threshold, on 64-bit).
TRIM_THRESHOLD = 64 * 1024 * 1024
# mallopt's parameter numbers, from glibc's malloc.h
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3


def return_freed_memory() -> None:
    """Arrow on the system allocator; glibc's mmap and trim thresholds fixed.

    A choice in ``ARROW_DEFAULT_MEMORY_POOL`` is kept. Once pyarrow has loaded, only the
    allocations pyarrow's own API makes can still move to the system allocator.
    """
    if ARROW_POOL_VARIABLE not in os.environ:
        _arrow_on_system_allocator()
    if platform.libc_ver()[0] == "glibc":
        _fix_thresholds()


def _arrow_on_system_allocator() -> None:
    if "pyarrow" in sys.modules:
        import pyarrow as pa

        pa.set_memory_pool(pa.system_memory_pool())
        return
    os.environ[ARROW_POOL_VARIABLE] = "system"
    try:
        import pyarrow as pa

        pa.default_memory_pool()  # Arrow reads the variable on this first use
    finally:
        del os.environ[ARROW_POOL_VARIABLE]  # processes started later choose for themselves


def _fix_thresholds() -> None:
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError) as exc:  # not the glibc the platform module reported
        logger.debug("could not set glibc's thresholds: %s", exc)
        return
    for name, param, value in (
        ("mmap", _M_MMAP_THRESHOLD, MMAP_THRESHOLD),
        ("trim", _M_TRIM_THRESHOLD, TRIM_THRESHOLD),
    ):
        if not mallopt(param, value):
            logger.debug("glibc refused a %s threshold of %d bytes", name, value)
