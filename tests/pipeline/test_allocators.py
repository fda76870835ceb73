"""The command puts Arrow on the system allocator and fixes glibc's mmap and trim thresholds.

Each check runs in a fresh interpreter: both settings are process-wide, and Arrow reads
its choice of allocator only once, when pyarrow loads.
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from batchrunner.pipeline.allocators import ARROW_POOL_VARIABLE


def python(code: str, **env: str) -> str:
    environ = {k: v for k, v in os.environ.items() if k != ARROW_POOL_VARIABLE} | env
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, env=environ
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout.strip()


def test_arrow_uses_the_system_allocator_and_the_variable_is_not_passed_on() -> None:
    out = python(
        """
        import os
        from batchrunner.pipeline.allocators import return_freed_memory

        return_freed_memory()
        import pyarrow as pa
        import pyarrow.parquet as pq

        buffer = pa.BufferOutputStream()
        pq.write_table(pa.table({"x": list(range(1000))}), buffer)
        print(pa.default_memory_pool().backend_name, pa.mimalloc_memory_pool().max_memory())
        print(os.environ.get("ARROW_DEFAULT_MEMORY_POOL"))
        """
    )
    assert out.splitlines() == ["system 0", "None"]  # the Parquet writer's buffers too


def test_a_choice_in_the_environment_is_kept() -> None:
    out = python(
        """
        from batchrunner.pipeline.allocators import return_freed_memory

        return_freed_memory()
        import pyarrow as pa

        print(pa.default_memory_pool().backend_name)
        """,
        ARROW_DEFAULT_MEMORY_POOL="mimalloc",
    )
    assert out == "mimalloc"


def test_after_pyarrow_has_loaded_its_own_calls_still_move() -> None:
    out = python(
        """
        import pyarrow as pa
        from batchrunner.pipeline.allocators import return_freed_memory

        return_freed_memory()
        print(pa.default_memory_pool().backend_name)
        """
    )
    assert out == "system"


def test_the_command_chooses_before_arrow_loads(tmp_path: Path) -> None:
    out = python(
        f"""
        from batchrunner.cli import main as cli
        import pyarrow as pa

        status = cli.main(["report", {str(tmp_path / "missing.parquet")!r}])
        print(status, pa.default_memory_pool().backend_name)
        """
    )
    assert out.split()[-1] == "system"


# glibc's malloc, free and heap statistics (mallinfo2), then the case's {setup} line.
_MALLOC = """
    import ctypes

    class MallInfo2(ctypes.Structure):
        _fields_ = [(name, ctypes.c_size_t) for name in (
            "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks",
            "uordblks", "fordblks", "keepcost")]

    libc = ctypes.CDLL(None)
    libc.mallinfo2.restype = MallInfo2
    libc.malloc.restype = ctypes.c_void_p
    libc.free.argtypes = [ctypes.c_void_p]
    {setup}
"""

# After a 6 MB block is freed, glibc serves a 1 MB block from its heap (the threshold has
# risen to 6 MB) unless the threshold is fixed; mallinfo2's hblks counts mapped blocks.
_MAPPED_AFTER_LARGE_FREE = (
    _MALLOC
    + """
    libc.free(libc.malloc(6 << 20))
    before = libc.mallinfo2().hblks
    block = libc.malloc(1 << 20)
    print(libc.mallinfo2().hblks - before)
    libc.free(block)
"""
)


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's allocator only")
def test_a_large_block_freed_does_not_keep_later_ones_in_the_heap() -> None:
    fixed = "from batchrunner.pipeline.allocators import return_freed_memory; return_freed_memory()"
    assert python(_MAPPED_AFTER_LARGE_FREE.format(setup=fixed)) == "1"
    assert python(_MAPPED_AFTER_LARGE_FREE.format(setup="")) == "0"  # glibc's default


# Small blocks freed from the top of the heap: glibc gives them back to the system once the
# free top passes the trim threshold (128 KiB when only the mmap threshold is fixed), and the
# next ones are faulted in again; mallinfo2's arena is the heap's size.
_HEAP_AFTER_FREE = (
    _MALLOC
    + """
    blocks = [libc.malloc(64 << 10) for _ in range(64)]  # 4 MiB, each below the mmap threshold
    grown = libc.mallinfo2().arena
    for block in reversed(blocks):
        libc.free(block)
    print(grown - libc.mallinfo2().arena >= 2 << 20)
"""
)


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's allocator only")
def test_memory_freed_between_rows_stays_for_the_next_rows() -> None:
    fixed = "from batchrunner.pipeline.allocators import return_freed_memory; return_freed_memory()"
    assert python(_HEAP_AFTER_FREE.format(setup=fixed)) == "False"
    mmap_only = "libc.mallopt(-3, 128 << 10)"
    assert python(_HEAP_AFTER_FREE.format(setup=mmap_only)) == "True"  # given back at once
