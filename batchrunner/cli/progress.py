"""Progress for people: a one-line bar on a terminal, periodic plain lines elsewhere (CI, cron).

It only reads the runner's counters; it never touches the pool.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

import pyarrow as pa
import pyarrow.parquet as pq

from batchrunner.config import file_format
from batchrunner.pipeline.counters import Counters, LaneCounts


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m:02d}:{s:02d}"


BAR_WIDTH = 24


def _lane(lane: LaneCounts, elapsed: float) -> str:
    """One model's lane: rows done, its rate, requests in flight, and what holds it back."""
    name = lane.model.rpartition("/")[2]
    text = f"{name} {lane.done:,} {lane.done / elapsed:,.1f}/s in flight {lane.in_flight}"
    return text + (f" ({lane.waiting_on})" if lane.waiting_on else "")


@dataclass(slots=True)
class ProgressDisplay:
    """Renders counters to ``stream``; ``total`` is the expected number of requests, if known."""

    stream: TextIO
    total: int | None = None
    interactive: bool = False
    bar: bool = False  # draw a bar with the percentage done (needs a total)
    log_every_s: float = 30.0
    _last_log: float = field(default=0.0)
    _width: int = field(default=0)

    def line(self, c: Counters) -> str:
        elapsed = max(time.monotonic() - c.started, 1e-9)
        finished = c.done + c.bad_rows
        rate = c.done / elapsed
        parts = [f"{finished:,}"]
        eta = ""
        if self.total:
            remaining = max(self.total - finished - c.skipped, 0)
            parts[0] = f"{finished + c.skipped:,}/{self.total:,}"
            if rate > 0 and remaining:
                eta = f" eta {_duration(remaining / rate)}"
        parts.append(f"{rate:,.1f} req/s")
        parts.append(f"in flight {c.in_flight}")
        parts.append(f"errors {c.errors + c.bad_rows}")
        if c.retries:
            parts.append(f"retries {c.retries}")
        parts.append(f"${c.spent_usd:,.4f}")
        if c.skipped:
            parts.append(f"resumed past {c.skipped:,}")
        line = " · ".join(parts) + f" · {_duration(elapsed)}{eta}"
        if c.lanes:
            line += "".join(" | " + _lane(lane, elapsed) for lane in c.lanes.values())
        if self.bar and self.total:
            share = min((finished + c.skipped) / self.total, 1.0)
            filled = int(share * BAR_WIDTH)
            line = f"[{'█' * filled}{'░' * (BAR_WIDTH - filled)}] {share * 100:3.0f} % " + line
        return line

    def __call__(self, counters: Counters) -> None:
        text = self.line(counters)
        if self.interactive:
            pad = max(self._width - len(text), 0)
            self._width = len(text)
            self.stream.write("\r" + text + " " * pad)
            self.stream.flush()
            return
        if not (counters.done or counters.bad_rows or counters.in_flight):
            return  # a line of zeros says nothing (and a finished job's rerun sends nothing)
        now = time.monotonic()
        if now - self._last_log >= self.log_every_s:
            self._last_log = now
            self.stream.write(text + "\n")
            self.stream.flush()

    def close(self) -> None:
        if self.interactive and self._width:
            self.stream.write("\r" + " " * self._width + "\r")
            self.stream.flush()


JSONL_COUNT_LIMIT = 2 << 30  # count lines of JSONL inputs up to 2 GiB for an ETA


def expected_requests(input_path: Path, models: int) -> int | None:
    """How many requests the input will make, when it is cheap to know; else ``None``."""
    fmt = file_format(input_path)
    try:
        if fmt == "parquet":
            rows = int(pq.ParquetFile(input_path).metadata.num_rows)
        elif fmt == "jsonl" and input_path.stat().st_size <= JSONL_COUNT_LIMIT:
            rows = 0
            with input_path.open("rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    rows += block.count(b"\n")
        else:
            return None
    except (OSError, pa.ArrowException):
        return None
    return rows * max(models, 1)
