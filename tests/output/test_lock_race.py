"""Tests for batchrunner.output.lock: the lock is the flock on an open descriptor, so runs
racing for one OUTPUT never hold it together, even while the holder removes the file."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from batchrunner.errors import OutputError
from batchrunner.output.lock import OutputLock

# Each racer takes and releases the lock ROUNDS times; inside it, it claims a marker file
# with O_EXCL, so a second holder at the same moment finds the marker and reports it.
RACER = r"""
import os, sys, time
from pathlib import Path
from batchrunner.errors import OutputError
from batchrunner.output.lock import OutputLock

out, rounds = Path(sys.argv[1]), int(sys.argv[2])
marker = out.with_name("inside")
held = 0
while held < rounds:
    try:
        lock = OutputLock.acquire(out)
    except OutputError:
        continue
    try:
        fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        print("OVERLAP", flush=True)
        sys.exit(1)
    os.write(fd, str(os.getpid()).encode())
    os.close(fd)
    for _ in range(200):  # a little work while holding the lock
        os.stat(out.parent)
    os.unlink(marker)
    lock.release()
    held += 1
print("OK", held, flush=True)
"""


def test_three_racing_runs_never_hold_the_output_lock_together(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    racers = [
        subprocess.Popen(
            [sys.executable, "-c", RACER, str(out), "300"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(3)
    ]
    reports = [racer.communicate(timeout=120) for racer in racers]
    for (stdout, stderr), racer in zip(reports, racers, strict=True):
        assert racer.returncode == 0, (stdout, stderr)
        assert stdout.split() == ["OK", "300"]
    assert not (tmp_path / "out.jsonl.lock").exists()  # the last holder removed it


def test_a_second_acquirer_is_refused_while_the_lock_is_held(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    first = OutputLock.acquire(out)
    with pytest.raises(OutputError, match="being written by another batchrunner run"):
        OutputLock.acquire(out)
    first.release()
    OutputLock.acquire(out).release()
