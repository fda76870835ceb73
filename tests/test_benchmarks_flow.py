"""The flow-control benchmark runs end to end in its quick mode and prints its table."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_quick_flow_benchmark_exits_cleanly_and_prints_its_table() -> None:
    done = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "bench_flow.py"), "--quick"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=110,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    for heading in ("scenario", "quota", "util", "refused", "retries/row", "wall"):
        assert heading in done.stdout
    for scenario in ("quota, told", "quota, found", "shared pool", "faults"):
        assert scenario in done.stdout
    assert "checks passed" in done.stdout
