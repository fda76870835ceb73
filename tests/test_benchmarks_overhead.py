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


def test_repeated_rounds_are_compared_pair_by_pair() -> None:
    # Rounds drift on a shared machine: each batchrunner run is set against the floor's
    # run of the same round, not against the floor's median.
    sys.path.insert(0, str(REPO / "benchmarks"))
    try:
        from compare import Measurement, overhead_table
    finally:
        sys.path.remove(str(REPO / "benchmarks"))

    def measured(tool: str, rounds: list[tuple[float, float]]) -> Measurement:
        m = Measurement("overhead", "nginx", tool, 1_000, 10, valid=True, maxrss_mb=1.0)
        m.wall_s, m.cpu_s, m.throttled = rounds[0][0], rounds[0][1], 0
        m.extra["runs"] = [{"wall_s": w, "cpu_s": c} for w, c in rounds]
        return m

    ours = measured("batchrunner", [(2.0, 1.2), (4.0, 3.0), (2.5, 1.5)])
    floor = measured("aiohttp", [(1.0, 1.0), (4.0, 2.0), (2.0, 1.0)])
    text = overhead_table([ours, floor])
    assert "CPU per request 1.20, 1.50, 1.50 (median 1.50)×" in text
    assert "req/s 0.50, 1.00, 0.80 (median 0.80)×" in text
