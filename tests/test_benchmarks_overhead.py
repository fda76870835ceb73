"""The benchmark comparison runs end to end in its quick mode and prints its tables.

No timing is asserted: the figures depend on the machine. The simulator-backed part always
runs; the nginx-backed part is skipped when nginx is not installed here.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
COMPARE = REPO / "benchmarks" / "compare.py"
SERVER_UNAVAILABLE = 4

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


def run_compare(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run(
        # --no-install: the suite never reaches for a package registry or apt.
        [
            sys.executable,
            str(COMPARE),
            "--quick",
            "--no-install",
            "--results",
            str(tmp_path),
            *args,
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=280,
        check=False,
    )


def test_quick_comparison_against_the_simulator_prints_every_table(tmp_path: Path) -> None:
    done = run_compare(tmp_path, "--servers", "sim")
    assert done.returncode == 0, done.stderr[-2000:]
    out = done.stdout
    assert "against the simulator, zero latency" in out
    assert "In-flight scale" in out
    assert "Memory: batchrunner peak RSS" in out
    assert "| batchrunner " in out
    assert "| aiohttp " in out
    assert (tmp_path / "compare.md").read_text(encoding="utf-8").strip() == out.strip()
    assert (tmp_path / "compare.json").exists()


def test_quick_comparison_against_nginx_prints_its_table(tmp_path: Path) -> None:
    if not (shutil.which("nginx") or Path("/usr/sbin/nginx").exists()):
        pytest.skip("nginx is not installed (apt-get install nginx-light)")
    done = run_compare(tmp_path, "--servers", "nginx", "--workloads", "overhead")
    if done.returncode == SERVER_UNAVAILABLE:
        pytest.skip(f"nginx could not be started: {done.stderr.strip()[-300:]}")
    assert done.returncode == 0, done.stderr[-2000:]
    assert "against nginx (canned answer)" in done.stdout
    assert "| batchrunner " in done.stdout
