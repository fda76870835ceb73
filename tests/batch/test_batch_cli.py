"""The batch route through the real entry point, against a ``batchrunner simulate`` server
in another process: a poller SIGKILLed while it waits reattaches when the same command runs
again, and the simulator's own job list shows one job per file, none resubmitted.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import pytest

from tests.batch.conftest import GEMINI, GPT_OSS, read_rows, write_prompts

pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture
def server() -> Iterator[str]:
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "batchrunner",
            "simulate",
            "--port",
            str(port),
            "--no-auth",
            "--latency",
            "zero",
            "--batch-turnaround",
            "4",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    try:
        assert proc.stdout is not None
        assert b"simulator serving" in proc.stdout.readline()
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        if proc.stdout is not None:
            proc.stdout.close()


def run_command(root: str, tmp_path: Path) -> list[str]:
    return [
        sys.executable, "-m", "batchrunner", "run", str(tmp_path / "prompts.jsonl"),
        "-o", str(tmp_path / "out.jsonl"), "--model", GEMINI, "--model", GPT_OSS,
        "--via", "batch", "--staging", "gs://stage/nightly", "--no-auth",
        "--base-url", f"{root}/v1/projects/sim-project/locations/global/endpoints/openapi",
        "--storage-url", root, "--batch-poll", "0.2", "--progress", "off",
    ]  # fmt: skip


def simulator_jobs(root: str) -> list[dict[str, object]]:
    jobs = []
    for location in ("global", "us-central1"):
        url = f"{root}/v1/projects/sim-project/locations/{location}/batchPredictionJobs"
        jobs.extend(httpx.get(url).json().get("batchPredictionJobs", []))
    return jobs


def test_a_poller_sigkilled_while_waiting_reattaches_on_the_same_command(
    server: str, tmp_path: Path
) -> None:
    write_prompts(tmp_path / "prompts.jsonl", 500)
    state = tmp_path / "out.jsonl.batch.json"
    first = subprocess.Popen(
        run_command(server, tmp_path), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if state.exists():
                files = orjson.loads(state.read_bytes())["files"]
                if len(files) == 2 and all(f["job"] for f in files):
                    break
            time.sleep(0.05)
        else:
            pytest.fail("the run never recorded its jobs")
    finally:
        os.kill(first.pid, signal.SIGKILL)
        first.wait()
    assert first.returncode == -signal.SIGKILL
    before = simulator_jobs(server)
    assert len(before) == 2
    assert any(j["state"] != "JOB_STATE_SUCCEEDED" for j in before)  # killed while waiting

    status = subprocess.run(
        [
            sys.executable,
            "-m",
            "batchrunner",
            "batch-status",
            str(tmp_path / "out.jsonl"),
            "--no-auth",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert status.returncode == 0, status.stderr
    assert all(str(j["name"]).rsplit("/", 1)[-1] in status.stdout for j in before)

    again = subprocess.run(run_command(server, tmp_path), capture_output=True, timeout=120)
    assert again.returncode == 0, again.stderr.decode()
    after = simulator_jobs(server)
    assert sorted(j["name"] for j in after) == sorted(j["name"] for j in before)
    rows = read_rows(tmp_path / "out.jsonl")
    assert Counter((r["id"], r["model"]) for r in rows) == {
        (f"r{i}", m): 1 for i in range(500) for m in (GEMINI, GPT_OSS)
    }
    assert {r["batch_job"] for r in rows} == {str(j["name"]).rsplit("/", 1)[-1] for j in after}


def test_batch_cancel_cancels_the_recorded_jobs_and_the_next_run_resubmits_their_rows(
    server: str, tmp_path: Path
) -> None:
    write_prompts(tmp_path / "prompts.jsonl", 50)
    state = tmp_path / "out.jsonl.batch.json"
    first = subprocess.Popen(
        run_command(server, tmp_path), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if state.exists() and all(f["job"] for f in orjson.loads(state.read_bytes())["files"]):
                break
            time.sleep(0.05)
        os.kill(first.pid, signal.SIGKILL)
    finally:
        first.wait()
    cancel = subprocess.run(
        [
            sys.executable,
            "-m",
            "batchrunner",
            "batch-cancel",
            str(tmp_path / "out.jsonl"),
            "--no-auth",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert cancel.returncode == 0, cancel.stderr
    assert cancel.stderr.count("cancelling") == 2
    again = subprocess.run(run_command(server, tmp_path), capture_output=True, timeout=120)
    # the cancelled jobs' rows are left unanswered: the run says so and exits 3
    assert again.returncode == 3, again.stderr.decode()
    assert b"unanswered" in again.stderr
    third = subprocess.run(run_command(server, tmp_path), capture_output=True, timeout=120)
    assert third.returncode == 0, third.stderr.decode()
    rows = read_rows(tmp_path / "out.jsonl")
    assert Counter((r["id"], r["model"]) for r in rows) == {
        (f"r{i}", m): 1 for i in range(50) for m in (GEMINI, GPT_OSS)
    }
    assert len(simulator_jobs(server)) == 4
