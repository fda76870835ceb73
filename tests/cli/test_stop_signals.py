"""SIGTERM in every phase of a run, through the real entry point: start-up, requests in
flight, a Parquet part commit and the final compaction each end in exit 3 with the resume
message, and running the same command again gives every id exactly once."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from batchrunner.output.read import load_results

ROWS = 1200
RESUME = "run the same command again to resume where it stopped"

# Phase markers the run logs at -vv, just as each phase begins.
STARTUP = "starting: SIGINT/SIGTERM now stop the run cleanly"
SENDING = "sending requests to"
PART_COMMIT = "committing part"
FINISHING = "finishing "


def _input(tmp_path: Path) -> Path:
    path = tmp_path / "in.jsonl"
    with path.open("w") as f:
        for i in range(ROWS):
            f.write(json.dumps({"id": f"row-{i}", "prompt": f"question {i}"}) + "\n")
    return path


def _command(tmp_path: Path, out: Path) -> list[str]:
    job = tmp_path / "job.toml"
    job.write_text("part_rows = 100\n")  # many part commits in a short run
    return [
        sys.executable,
        "-m",
        "batchrunner",
        "run",
        str(_input(tmp_path)),
        "-o",
        str(out),
        "--config",
        str(job),
        "--simulate",
        "--sim-latency",
        "zero",
        "--concurrency",
        "8",
        "--progress",
        "off",
        "-vv",
    ]


def _run_until(command: list[str], marker: str, signals: int = 1) -> tuple[int, str]:
    """Start the run, send SIGTERM as soon as it logs ``marker``, return its status and log."""
    seen: list[str] = []
    with subprocess.Popen(
        command, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True
    ) as proc:
        assert proc.stderr is not None
        for line in proc.stderr:
            seen.append(line)
            if marker in line:
                for _ in range(signals):
                    os.kill(proc.pid, signal.SIGTERM)
                break
        seen.append(proc.stderr.read())
        status = proc.wait(timeout=120)
    return status, "".join(seen)


def _ids(out: Path) -> Counter[str]:
    return Counter(r.id for r in load_results([out]))


def _rerun_gives_every_id_once(command: list[str], out: Path, log: str = "") -> None:
    """The rerun completes the output, and sends exactly what the stopped run said it would."""
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    promised = re.search(r"the next run sends the ([\d,]+) requests not yet done", log)
    if promised is not None:
        already = re.search(r"([\d,]+) (?:requests were )?already done", done.stderr)
        skipped = int(already.group(1).replace(",", "")) if already else 0
        assert int(promised.group(1).replace(",", "")) == ROWS - skipped
    ids = _ids(out)
    assert set(ids) == {f"row-{i}" for i in range(ROWS)}
    assert max(ids.values()) == 1


@pytest.mark.parametrize("fmt", ["jsonl", "parquet"])
@pytest.mark.parametrize("marker", [STARTUP, SENDING], ids=["start-up", "mid-run"])
def test_sigterm_at_start_up_or_mid_run_stops_cleanly_and_the_rerun_finishes(
    tmp_path: Path, fmt: str, marker: str
) -> None:
    out = tmp_path / f"out.{fmt}"
    command = _command(tmp_path, out)
    status, log = _run_until(command, marker)
    assert status == 3, log[-2000:]
    assert "stopped early (SIGTERM received)" in log
    assert RESUME in log
    assert "Traceback" not in log
    assert "the next run sends the" in log
    _rerun_gives_every_id_once(command, out, log)


def test_sigterm_during_a_parquet_part_commit_stops_cleanly_and_the_rerun_finishes(
    tmp_path: Path,
) -> None:
    out = tmp_path / "out.parquet"
    command = _command(tmp_path, out)
    status, log = _run_until(command, PART_COMMIT)
    assert status == 3, log[-2000:]
    assert "stopped early (SIGTERM received)" in log and RESUME in log
    assert "results so far in" in log  # the parts hold the rows; the next run merges them
    _rerun_gives_every_id_once(command, out, log)


@pytest.mark.parametrize("fmt", ["jsonl", "parquet"])
def test_sigterm_during_the_final_compaction_finishes_it_and_says_so(
    tmp_path: Path, fmt: str
) -> None:
    out = tmp_path / f"out.{fmt}"
    command = _command(tmp_path, out)
    status, log = _run_until(command, FINISHING)
    assert status == 3, log[-2000:]
    assert f"SIGTERM received while finishing {out}; it was finished" in log
    assert RESUME in log
    ids = _ids(out)  # finished: complete already
    assert len(ids) == ROWS and max(ids.values()) == 1
    _rerun_gives_every_id_once(command, out, log)


@pytest.mark.parametrize("marker", [STARTUP, SENDING], ids=["start-up", "mid-run"])
def test_a_second_sigterm_stops_at_once_and_leaves_a_resumable_output(
    tmp_path: Path, marker: str
) -> None:
    out = tmp_path / "out.parquet"
    command = _command(tmp_path, out)
    status, log = _run_until(command, marker, signals=2)
    assert status == 3, log[-2000:]
    assert RESUME in log
    assert "Traceback" not in log
    _rerun_gives_every_id_once(command, out, log)
