"""Results a person can trust: empty and malformed answers, errors to act on, a CLI that teaches.

Every check runs the command line as a user does, through ``python -m batchrunner``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from batchrunner.cli.main import build_parser
from batchrunner.cli.progress import ProgressDisplay
from batchrunner.pipeline.counters import Counters

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "sample_data" / "prompts.jsonl"


def cli(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "GOOGLE_"))}
    return subprocess.run(
        [sys.executable, "-m", "batchrunner", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        cwd=cwd,
    )


def write_jsonl(path: Path, rows: list[dict[str, object]]) -> Path:
    path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in rows))
    return path


def read_jsonl(path: Path) -> list[dict[str, object]]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines() if line.strip()]


def sim_run(inp: Path, out: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return cli("run", str(inp), "-o", str(out), "--simulate", "--progress", "off", *extra)


# ----------------------------------------------------------------- 1. empty answers


def test_answers_the_thinking_budget_ate_are_error_rows_with_a_warning(tmp_path: Path) -> None:
    rows = [{"id": f"r{i}", "prompt": f"question {i}?"} for i in range(20)]
    inp = write_jsonl(tmp_path / "in.jsonl", rows)
    out = tmp_path / "out.jsonl"
    proc = sim_run(inp, out, "--max-tokens", "256", "--reasoning-effort", "low")
    assert proc.returncode == 1, proc.stderr
    results = read_jsonl(out)
    empty = [r for r in results if r["output"] is None]
    assert empty and all(r["status"] == "error" for r in empty)
    assert {r["error_type"] for r in empty} == {"empty"}
    assert all(r["completion_tokens"] and r["cost_usd"] for r in empty)  # they were paid for
    assert "finish reasons" in proc.stderr and "length" in proc.stderr
    assert f"{len(empty)} of 20 rows are empty" in proc.stderr
    assert "raise max_tokens or lower reasoning_effort" in proc.stderr
    again = sim_run(inp, out, "--max-tokens", "256", "--reasoning-effort", "low", "--retry-failed")
    assert f"this run: {len(empty)} requests sent" in again.stderr


def test_fail_on_none_keeps_empty_answers_ok_and_still_warns(tmp_path: Path) -> None:
    inp = write_jsonl(tmp_path / "in.jsonl", [{"id": "a", "prompt": "hi"}])
    out = tmp_path / "out.jsonl"
    proc = sim_run(inp, out, "--max-tokens", "64", "--fail-on", "none")
    assert proc.returncode == 0, proc.stderr
    assert read_jsonl(out)[0]["status"] == "ok"
    assert "1 of 1 rows are empty" in proc.stderr


def test_report_and_html_count_finish_reasons_and_empty_rows(tmp_path: Path) -> None:
    rows = [{"id": f"r{i}", "prompt": f"q{i}"} for i in range(10)]
    inp = write_jsonl(tmp_path / "in.jsonl", rows)
    out = tmp_path / "out.parquet"
    sim_run(inp, out, "--max-tokens", "64")
    for fmt in ("text", "markdown", "html"):
        proc = cli("report", str(out), "--format", fmt)
        assert proc.returncode == 0, proc.stderr
        assert "finish reasons" in proc.stdout and "empty output" in proc.stdout
        assert "raise max_tokens or lower reasoning_effort" in proc.stdout
    data = orjson.loads(cli("report", str(out), "--format", "json").stdout)
    model = data["models"][0]
    assert model["empty_rows"] == 10 and model["finish_reasons"] == {"length": 10}


def test_json_answers_are_parsed_validated_and_invalid_ones_retried(tmp_path: Path) -> None:
    schema = {
        "type": "object",
        "properties": {"score": {"type": "integer", "minimum": 1, "maximum": 5}},
        "required": ["score"],
    }
    fmt = {"type": "json_schema", "json_schema": {"name": "s", "schema": schema}}
    rows = [
        {"id": "ok", "prompt": "rate", "response_format": fmt, "max_tokens": 4096},
        {"id": "cut", "prompt": "rate", "response_format": fmt, "max_tokens": 2},
    ]
    inp = write_jsonl(tmp_path / "in.jsonl", rows)
    out = tmp_path / "out.jsonl"
    proc = sim_run(
        inp,
        out,
        "--reasoning-effort",
        "minimal",
        "--fail-on",
        "invalid-json",
        "--max-attempts",
        "2",
    )
    assert proc.returncode == 1, proc.stderr
    by_id = {r["id"]: r for r in read_jsonl(out)}
    assert by_id["ok"]["status"] == "ok" and by_id["ok"]["valid"] is True
    assert 1 <= orjson.loads(by_id["ok"]["parsed"])["score"] <= 5
    cut = by_id["cut"]
    assert cut["status"] == "error" and cut["error_type"] == "invalid_json"
    assert cut["valid"] is False and cut["attempts"] == 2
    assert "valid JSON" in proc.stderr and "1 of 2" in proc.stderr


# ------------------------------------------------------- 2. errors you can act on, fields


def test_the_summary_lists_error_types_with_an_example_message(tmp_path: Path) -> None:
    rows = [{"id": f"r{i}", "prompt": "hi", "max_tokens": 4096} for i in range(5)]
    rows.append({"id": "bad", "prompt": "hi", "max_tokens": 4096, "reasoning_effort": "loud"})
    inp = write_jsonl(tmp_path / "in.jsonl", rows)
    proc = sim_run(inp, tmp_path / "out.jsonl")
    assert proc.returncode == 1, proc.stderr
    section = proc.stderr.split("Errors\n", 1)[1]
    line = next(ln for ln in section.splitlines() if "google/gemini-2.5-flash" in ln)
    assert "bad_request" in line and " 1 " in line and "reasoning_effort" in line.lower()


def test_a_fields_block_naming_a_missing_parquet_column_stops_before_sending(
    tmp_path: Path,
) -> None:
    inp = tmp_path / "in.parquet"
    pq.write_table(pa.table({"id": ["a"], "prompt": ["hi"]}), inp)
    job = tmp_path / "job.toml"
    job.write_text('[fields]\nprompt = "text"\n', encoding="utf-8")
    out = tmp_path / "out.jsonl"
    proc = cli("run", str(inp), "-o", str(out), "--config", str(job), "--simulate")
    assert proc.returncode == 2, proc.stderr
    assert "'text'" in proc.stderr and "Traceback" not in proc.stderr
    assert not out.exists()


def test_a_jsonl_without_the_configured_id_column_is_refused(tmp_path: Path) -> None:
    inp = write_jsonl(tmp_path / "in.jsonl", [{"id": "a", "prompt": "hi"}])
    proc = cli("run", str(inp), "-o", str(tmp_path / "o.jsonl"), "--simulate", "--id-field", "key")
    assert proc.returncode == 2 and "'key'" in proc.stderr, proc.stderr


# ------------------------------------------------------------------ 3. TOML value types


@pytest.mark.parametrize(
    ("toml", "needle"),
    [
        ('stream = "false"\n', "stream must be true or false"),
        ('[params]\nmax_tokens = "lots"\n', "params.max_tokens must be an integer"),
        ('concurrency = "8"\n', "concurrency must be an integer"),
    ],
)
def test_job_file_values_of_the_wrong_type_are_named(
    tmp_path: Path, toml: str, needle: str
) -> None:
    job = tmp_path / "job.toml"
    job.write_text(toml, encoding="utf-8")
    proc = cli("run", str(SAMPLE), "-o", str(tmp_path / "o.jsonl"), "--config", str(job))
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0] and str(job) in lines[0], proc.stderr


# ---------------------------------------------------------------- 4. report -o unwritable


def test_report_to_an_unwritable_path_is_one_line_and_exit_2(tmp_path: Path) -> None:
    out = tmp_path / "o.jsonl"
    sim_run(write_jsonl(tmp_path / "in.jsonl", [{"id": "a", "prompt": "hi"}]), out)
    proc = cli("report", str(out), "-o", str(tmp_path / "missing" / "dir" / "r.html"))
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


# ------------------------------------------------ 5. a bare model id, and the 404 advice


def test_a_bare_model_id_gets_its_publisher_suggested_and_the_advice_works(
    tmp_path: Path,
) -> None:
    rows = [{"id": f"r{i}", "prompt": "hi", "max_tokens": 4096} for i in range(60)]
    inp = write_jsonl(tmp_path / "in.jsonl", rows)
    out = tmp_path / "out.jsonl"
    proc = sim_run(inp, out, "--model", "gemini-2.5-flash")
    assert proc.returncode == 3, proc.stderr
    assert "did you mean --model google/gemini-2.5-flash" in proc.stderr
    assert "404" in proc.stderr and "--restart" in proc.stderr
    fixed = sim_run(inp, out, "--model", "google/gemini-2.5-flash", "--restart")
    assert fixed.returncode == 0, fixed.stderr
    assert len(read_jsonl(out)) == 60


# ------------------------------------------------------------------- 6. help that teaches


def _subparsers() -> dict[str, object]:
    parser = build_parser()
    return dict(parser._subparsers._group_actions[0].choices)  # type: ignore[union-attr]


@pytest.mark.parametrize("command", ["run", "simulate", "report", "merge"])
def test_every_option_is_described_and_help_ends_with_examples_and_exit_codes(
    command: str,
) -> None:
    sub = _subparsers()[command]
    undescribed = [
        a.option_strings or a.dest
        for a in sub._actions  # type: ignore[attr-defined]
        if not a.help
    ]
    assert undescribed == []
    proc = cli(command, "--help")
    assert proc.returncode == 0
    tail = proc.stdout.split("examples:", 1)[1]
    assert tail.count(f"batchrunner {command}") >= 2
    assert "exit status: 0" in tail


def test_abbreviations_are_refused_with_a_suggestion() -> None:
    proc = cli("run", str(SAMPLE), "--concurr", "8", "-o", "x.jsonl")
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "did you mean --concurrency?" in lines[0], proc.stderr
    assert "see batchrunner run --help" in lines[0]


def test_a_bad_value_is_one_line_not_the_usage() -> None:
    proc = cli("run", str(SAMPLE), "-o", "x.jsonl", "--concurrency", "0")
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "batchrunner run: error: argument --concurrency: must be at least 1 "
        "(see batchrunner run --help)"
    ]


def test_progress_bar_draws_a_bar_the_default_does_not() -> None:
    counters = Counters()
    counters.done = 5
    bar = ProgressDisplay(sys.stderr, total=10, interactive=True, bar=True).line(counters)
    plain = ProgressDisplay(sys.stderr, total=10, interactive=True).line(counters)
    assert bar.startswith("[") and "50 %" in bar
    assert not plain.startswith("[")


# ------------------------------------------------------------------ 7. one job, one story


def test_after_a_resume_the_summary_covers_the_whole_job(tmp_path: Path) -> None:
    rows = [{"id": f"r{i}", "prompt": f"q{i}", "max_tokens": 4096} for i in range(30)]
    inp = write_jsonl(tmp_path / "in.jsonl", rows[:20])
    out = tmp_path / "out.jsonl"
    assert sim_run(inp, out).returncode == 0
    write_jsonl(inp, rows)
    proc = sim_run(inp, out, "--summary", str(tmp_path / "s.json"))
    assert proc.returncode == 0, proc.stderr
    assert "Job summary" in proc.stderr
    assert "this run: 10 requests sent" in proc.stderr and "20 already done" in proc.stderr
    summary = orjson.loads((tmp_path / "s.json").read_bytes())
    assert summary["total"]["rows"] == 30
    report = orjson.loads(cli("report", str(out), "--format", "json").stdout)
    assert report["models"][0]["wall_s"] == summary["models"][0]["wall_s"]
    done = sim_run(inp, out)
    assert done.returncode == 0
    assert done.stderr.strip().splitlines() == [
        f"batchrunner: nothing to send: all 30 requests were already done in {out}"
    ]


def test_the_all_models_column_pools_no_percentiles(tmp_path: Path) -> None:
    inp = write_jsonl(tmp_path / "in.jsonl", [{"id": "a", "prompt": "hi", "max_tokens": 4096}])
    out = tmp_path / "out.jsonl"
    sim_run(inp, out, "--model", "google/gemini-2.5-flash", "--model", "openai/gpt-oss-20b-maas")
    text = cli("report", str(out)).stdout
    line = next(ln for ln in text.splitlines() if ln.startswith("latency p50"))
    assert line.split()[-1] == "–"  # the all-models cell
    rows_line = next(ln for ln in text.splitlines() if ln.startswith("rows "))
    assert rows_line.split()[-1] == "2"


def test_sample_generator_help_prints_help_and_writes_nothing() -> None:
    before = SAMPLE.stat().st_mtime_ns
    proc = subprocess.run(
        [sys.executable, str(ROOT / "sample_data" / "generate.py"), "--help"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0 and "usage:" in proc.stdout
    assert SAMPLE.stat().st_mtime_ns == before
