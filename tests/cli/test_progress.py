from __future__ import annotations

import io
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from batchrunner.cli.progress import ProgressDisplay, expected_requests
from batchrunner.pipeline.counters import Counters, LaneCounts


def test_expected_requests_counts_rows_times_models(tmp_path: Path) -> None:
    jsonl = tmp_path / "in.jsonl"
    jsonl.write_text('{"prompt": "a"}\n{"prompt": "b"}\n{"prompt": "c"}\n')
    assert expected_requests(jsonl, 2) == 6
    parquet = tmp_path / "in.parquet"
    pq.write_table(pa.table({"prompt": ["x"] * 5}), parquet)
    assert expected_requests(parquet, 0) == 5
    assert expected_requests(tmp_path / "in.jsonl.gz", 1) is None


def test_line_shows_progress_rate_errors_spend_and_eta() -> None:
    counters = Counters(done=50, ok=48, errors=2, spent_usd=0.25, retries=3)
    counters.started -= 10  # ten seconds into the run
    line = ProgressDisplay(io.StringIO(), total=100).line(counters)
    assert line.startswith("50/100")
    assert "5.0 req/s" in line
    assert "errors 2" in line
    assert "retries 3" in line
    assert "$0.2500" in line
    assert "eta 00:10" in line


def test_log_mode_writes_whole_lines_not_carriage_returns() -> None:
    out = io.StringIO()
    display = ProgressDisplay(out, interactive=False, log_every_s=0)
    display(Counters(done=1))
    display(Counters(done=2))
    assert "\r" not in out.getvalue()
    assert out.getvalue().count("\n") == 2


def test_line_shows_each_lane_and_the_limit_it_waits_on() -> None:
    counters = Counters(done=30, started=time.monotonic() - 10)
    counters.lanes["google/gemini-2.5-flash"] = LaneCounts("google/gemini-2.5-flash", done=20)
    counters.lanes["openai/gpt-oss-120b-maas"] = LaneCounts(
        "openai/gpt-oss-120b-maas", done=10, in_flight=3, window=16, waiting_on="rpm"
    )
    line = ProgressDisplay(io.StringIO()).line(counters)
    assert "| gemini-2.5-flash 20 2.0/s in flight 0 |" in line
    assert line.endswith("| gpt-oss-120b-maas 10 1.0/s in flight 3 (rpm)")
