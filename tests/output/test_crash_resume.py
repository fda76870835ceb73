"""Exactly once under crashes: SIGKILL at random moments, SIGTERM, a full disk.

The runner runs as a real subprocess against a simulator in this process, so the
simulator's records are the ground truth of what was sent and paid for.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pyarrow.parquet as pq
import pytest

from batchrunner.simulator import Simulator, SimulatorConfig, start_simulator_thread

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "ya29.crash-test-token"
N_ROWS = 400
CONCURRENCY = 16
# What one SIGKILL may cost: the requests in flight plus answers still in the pool's
# result buffer (2 x concurrency + 64) that had not reached the writer.
MAX_RESENT_PER_KILL = CONCURRENCY + 2 * CONCURRENCY + 64

pytestmark = pytest.mark.slow


@pytest.fixture
def sim() -> Iterator[Simulator]:
    config = SimulatorConfig(
        static_tokens=(TOKEN,), keep_records=True, latency="fast", ttft_s=0.05, tokens_per_s=2000
    )
    with start_simulator_thread(config) as simulator:
        yield simulator


def write_input(path: Path) -> Path:
    row = {"max_tokens": 32, "reasoning_effort": "minimal"}  # answers, not empty thinking
    rows = [{"id": f"r{i}", "prompt": f"question {i}?", **row} for i in range(N_ROWS)]
    path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in rows))
    return path


def start(sim: Simulator, inp: Path, out: Path, *extra: str) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "GOOGLE_"))}
    env["OPENAI_API_KEY"] = TOKEN
    args = [
        sys.executable, "-m", "batchrunner", "run", str(inp), "-o", str(out),
        "--base-url", sim.base_url(), "--concurrency", str(CONCURRENCY), "--progress", "off",
        *extra,
    ]  # fmt: skip
    return subprocess.Popen(
        args, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def read_rows(out: Path) -> list[dict[str, Any]]:
    if out.suffix == ".parquet":
        rows: list[dict[str, Any]] = pq.read_table(out).to_pylist()
        return rows
    return [orjson.loads(line) for line in out.read_bytes().splitlines() if line.strip()]


def answered(sim: Simulator) -> int:
    return sum(1 for r in sim.records if r["status"] == 200)


@pytest.mark.parametrize("suffix", [".jsonl", ".parquet"])
def test_sigkill_at_random_moments_then_resume_gives_each_row_once(
    sim: Simulator, tmp_path: Path, suffix: str
) -> None:
    inp = write_input(tmp_path / "in.jsonl")
    out = tmp_path / f"out{suffix}"
    rng = random.Random(7)
    kills = 0
    for _ in range(6):
        proc = start(sim, inp, out)
        # A real process is killed at a random moment: this wait is the point of the test.
        time.sleep(rng.uniform(0.4, 1.6))
        if proc.poll() is not None:
            proc.communicate()
            break
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=30)
        kills += 1
    final = start(sim, inp, out)
    _, stderr = final.communicate(timeout=120)
    assert final.returncode == 0, stderr
    assert kills >= 2
    rows = read_rows(out)
    per_id = Counter(r["id"] for r in rows)
    assert set(per_id) == {f"r{i}" for i in range(N_ROWS)}
    assert max(per_id.values()) == 1
    assert {r["status"] for r in rows} == {"ok"}
    resent = answered(sim) - N_ROWS
    assert resent <= kills * MAX_RESENT_PER_KILL, (resent, kills)


def test_sigterm_finishes_in_flight_rows_and_says_how_to_resume(
    sim: Simulator, tmp_path: Path
) -> None:
    inp = write_input(tmp_path / "in.jsonl")
    out = tmp_path / "out.jsonl"
    proc = start(sim, inp, out)
    deadline = time.monotonic() + 30
    while not (out.exists() and out.stat().st_size > 0):
        assert time.monotonic() < deadline, "no row was written"
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 3, stderr
    assert "SIGTERM" in stderr and "run the same command again" in stderr
    assert "Traceback" not in stderr
    written = read_rows(out)
    assert 0 < len(written) < N_ROWS
    # Everything the server answered before the stop was written: nothing paid is lost.
    assert len(written) == answered(sim)
    again = start(sim, inp, out)
    _, stderr = again.communicate(timeout=120)
    assert again.returncode == 0, stderr
    rows = read_rows(out)
    assert sorted(r["id"] for r in rows) == sorted(f"r{i}" for i in range(N_ROWS))
    assert answered(sim) == N_ROWS


def test_sigkill_then_resume_with_a_spilled_index_gives_each_row_once(
    sim: Simulator, tmp_path: Path
) -> None:
    inp = write_input(tmp_path / "in.jsonl")
    out = tmp_path / "out.parquet"
    job = tmp_path / "job.toml"
    job.write_text("index_memory_mb = 0.004\n")  # 2 KiB per index: spills every few hundred
    rng = random.Random(11)
    kills = 0
    for _ in range(3):
        proc = start(sim, inp, out, "--config", str(job))
        time.sleep(rng.uniform(0.6, 1.4))  # a real process killed at a random moment
        if proc.poll() is not None:
            proc.communicate()
            break
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=30)
        kills += 1
    final = start(sim, inp, out, "--config", str(job))
    _, stderr = final.communicate(timeout=120)
    assert final.returncode == 0, stderr
    assert kills >= 1
    per_id = Counter(r["id"] for r in read_rows(out))
    assert set(per_id) == {f"r{i}" for i in range(N_ROWS)}
    assert max(per_id.values()) == 1
    assert answered(sim) - N_ROWS <= kills * MAX_RESENT_PER_KILL
    assert not (tmp_path / "out.parquet.index").exists()
