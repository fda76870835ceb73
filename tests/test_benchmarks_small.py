"""The single-purpose benchmarks run end to end on tiny sizes and print their tables.

No timing is asserted: the figures depend on the machine. What is checked is what a reader
of the output relies on: the command, every row of the table, and the correctness checks
the benchmarks make on the way (every key found, no absent one).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]


def run_benchmark(name: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / name), *args],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=110,
        check=False,
    )


def test_own_cost_prints_both_tools_and_their_ratio() -> None:
    done = run_benchmark("bench_own.py", "--n", "600", "--repeat", "2")
    assert done.returncode == 0, done.stderr[-2000:]
    out = done.stdout
    assert "python benchmarks/bench_own.py --n 600 --repeat 2" in out
    table = [line for line in out.splitlines() if line.startswith("| ")]
    assert [line.split(" | ")[0] for line in table[1:]] == ["| batchrunner", "| bare loop"]
    assert "batchrunner over the bare loop, round by round: CPU" in out


def test_index_benchmark_finds_every_key_past_a_spill(tmp_path: Path) -> None:
    done = run_benchmark(
        "bench_index.py", "--keys", "40000", "--memory-mb", "0.05", "--probes", "2000",
        "--dir", str(tmp_path),
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    out = done.stdout
    assert "spilled to" in out and "spilled to 0 file" not in out
    assert "absent (0 found: must be 0)" in out
