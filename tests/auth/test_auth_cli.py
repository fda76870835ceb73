"""Auth as a user of the command line meets it: short-lived tokens, broken keys, no leaks."""

from __future__ import annotations

import os
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from batchrunner.simulator import Simulator, SimulatorConfig, start_simulator_thread

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def sim() -> Iterator[Simulator]:
    # Tokens live 2 s; each request takes ~50 ms: a run of a few seconds needs renewals.
    config = SimulatorConfig(token_ttl=2.0, keep_records=True, ttft_s=0.05, tokens_per_s=5000)
    with start_simulator_thread(config) as simulator:
        yield simulator


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "GOOGLE_"))}
    return subprocess.run(
        [sys.executable, "-m", "batchrunner", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        cwd=ROOT,
    )


NO_THINKING = {"reasoning_effort": "minimal"}  # so 16 tokens are an answer, not empty thinking


def test_short_lived_tokens_are_renewed_and_never_leak(sim: Simulator, tmp_path: Path) -> None:
    key = sim.write_credentials(tmp_path / "key.json")
    inp = tmp_path / "in.jsonl"
    inp.write_bytes(
        b"".join(
            orjson.dumps({"id": f"r{i}", "prompt": f"q{i}", "max_tokens": 16, **NO_THINKING})
            + b"\n"
            for i in range(160)
        )
    )
    out = tmp_path / "out.jsonl"
    proc = cli(
        "run", str(inp), "-o", str(out), "--base-url", sim.base_url(),
        "--credentials", str(key), "--concurrency", "2", "--no-adapt", "-vv",
        "--progress", "log", "--summary", str(tmp_path / "summary.json"),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    statuses = Counter(r["status"] for r in sim.records)
    assert statuses[401] == 0, "a request was sent with an expired token"
    assert statuses[200] == 160
    tokens = sim.issued_tokens()
    assert len(tokens) >= 3, "the run should have needed several renewals"
    everything = proc.stdout + proc.stderr
    for path in tmp_path.iterdir():
        everything += path.read_text(errors="replace")
    for token in tokens:
        assert token not in everything
        assert token[-12:] not in everything


def test_broken_key_file_stops_with_status_3_and_one_line(tmp_path: Path) -> None:
    key = tmp_path / "key.json"
    key.write_text('{"type": "service_account", "client_email": "x@y"')
    inp = tmp_path / "in.jsonl"
    inp.write_text('{"id": "a", "prompt": "hi"}\n')
    proc = cli(
        "run", str(inp), "-o", str(tmp_path / "o.jsonl"), "--credentials", str(key),
        "--base-url", "http://127.0.0.1:9/v1",
    )  # fmt: skip
    assert proc.returncode == 3, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1
    assert "key.json" in lines[0]
