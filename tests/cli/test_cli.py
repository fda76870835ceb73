"""The command line as a user runs it: exit statuses, one-line errors, no tracebacks."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import orjson
import pyarrow.parquet as pq
import pytest

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "sample_data" / "prompts.jsonl"


def cli(
    *args: str, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "GOOGLE_"))}
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "batchrunner", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=full_env,
        cwd=ROOT,
    )


def assert_one_line_error(
    proc: subprocess.CompletedProcess[str], status: int, *needles: str
) -> None:
    assert proc.returncode == status, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    for needle in needles:
        assert needle in lines[0]


def test_quickstart_runs_the_sample_on_the_simulator(tmp_path: Path) -> None:
    out = tmp_path / "results.parquet"
    proc = cli("run", str(SAMPLE), "-o", str(out), "--simulate", "--progress", "off")
    assert proc.returncode == 0, proc.stderr
    table = pq.read_table(out)
    assert table.num_rows == 320
    assert set(table.column("status").to_pylist()) == {"ok"}
    assert "Run summary" in proc.stderr
    again = cli("run", str(SAMPLE), "-o", str(out), "--simulate", "--progress", "off")
    assert again.returncode == 0, again.stderr
    assert "nothing to send" in again.stderr
    assert "320 requests were already done" in again.stderr
    assert pq.read_table(out).num_rows == 320


def test_two_models_on_parquet_input_with_a_summary_file(tmp_path: Path) -> None:
    out = tmp_path / "results.jsonl"
    summary = tmp_path / "summary.json"
    proc = cli(
        "run",
        str(ROOT / "sample_data" / "prompts.parquet"),
        "-o",
        str(out),
        "--simulate",
        "--model",
        "google/gemini-2.5-flash-lite",
        "--model",
        "openai/gpt-oss-120b-maas",
        "--sim-rpm-quota",
        "100000",
        "--sim-tpm-quota",
        "100000000",
        "--summary",
        str(summary),
        "--progress",
        "off",
    )
    assert proc.returncode == 0, proc.stderr
    rows = [orjson.loads(line) for line in out.read_bytes().splitlines()]
    assert len(rows) == 640
    assert len({(r["id"], r["model"]) for r in rows}) == 640
    data = orjson.loads(summary.read_bytes())
    assert data["total"]["rows"] == 640


def test_missing_input_file_is_a_usage_error(tmp_path: Path) -> None:
    proc = cli("run", str(tmp_path / "nope.jsonl"), "-o", str(tmp_path / "o.jsonl"), "--simulate")
    assert_one_line_error(proc, 2, "nope.jsonl", "no such file")


def test_unsupported_input_format_is_a_usage_error(tmp_path: Path) -> None:
    path = tmp_path / "in.csv"
    path.write_text("id,prompt\n1,hi\n")
    proc = cli("run", str(path), "-o", str(tmp_path / "o.jsonl"), "--simulate")
    assert_one_line_error(proc, 2, "in.csv", "unsupported input format")


def test_unwritable_output_is_a_usage_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    proc = cli("run", str(SAMPLE), "-o", str(blocker / "out.jsonl"), "--simulate")
    assert_one_line_error(proc, 2, "out.jsonl")


def test_no_project_and_no_base_url_says_what_to_pass(tmp_path: Path) -> None:
    proc = cli("run", str(SAMPLE), "-o", str(tmp_path / "o.jsonl"))
    assert_one_line_error(proc, 2, "--project")


def test_bad_job_file_is_a_usage_error(tmp_path: Path) -> None:
    job = tmp_path / "job.toml"
    job.write_text("concurency = 3\n")
    proc = cli("run", "--config", str(job))
    assert_one_line_error(proc, 2, "job.toml", "concurency")


def test_dry_run_estimates_and_sends_nothing(tmp_path: Path) -> None:
    proc = cli(
        "run",
        str(SAMPLE),
        "--dry-run",
        "--model",
        "google/gemini-2.5-flash",
        "--model",
        "openai/gpt-oss-120b-maas",
    )
    assert proc.returncode == 0, proc.stderr
    assert "nothing was sent" in proc.stdout
    assert "openai/gpt-oss-120b-maas" in proc.stdout
    assert "320" in proc.stdout


def test_bad_rows_exit_1_and_are_in_the_output(tmp_path: Path) -> None:
    path = tmp_path / "in.jsonl"
    path.write_bytes(b'{"id": "a", "prompt": "hi"}\n{oops\n')
    out = tmp_path / "o.jsonl"
    proc = cli("run", str(path), "-o", str(out), "--simulate", "--progress", "off")
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    rows = [orjson.loads(line) for line in out.read_bytes().splitlines()]
    assert {r["status"] for r in rows} == {"ok", "error"}


def test_report_renders_every_format(tmp_path: Path) -> None:
    out = tmp_path / "r.jsonl"
    assert (
        cli("run", str(SAMPLE), "-o", str(out), "--simulate", "--progress", "off").returncode == 0
    )
    for fmt in ("text", "markdown", "json", "html"):
        proc = cli("report", str(out), "--format", fmt)
        assert proc.returncode == 0, proc.stderr
        assert "google/gemini-2.5-flash" in proc.stdout


@pytest.mark.parametrize("flag", ["--help"])
def test_help_lists_the_contract_flags(flag: str) -> None:
    proc = cli("run", flag)
    for name in (
        "--output",
        "--model",
        "--project",
        "--location",
        "--endpoint-id",
        "--api-version",
        "--base-url",
        "--simulate",
        "--concurrency",
        "--rpm",
        "--tpm",
        "--max-attempts",
        "--timeout",
        "--stream",
        "--restart",
        "--retry-failed",
        "--dry-run",
        "--max-cost",
        "--config",
        "--summary",
    ):
        assert name in proc.stdout


def test_a_run_that_stops_early_says_where_its_rows_are(tmp_path: Path) -> None:
    # A Parquet output is finished into one file only by a run that completes.
    out = tmp_path / "results.parquet"
    args = ("run", str(SAMPLE), "-o", str(out), "--simulate", "--progress", "off")
    proc = cli(*args, "--max-cost", "0.0000001")
    assert proc.returncode == 3, proc.stderr
    assert "Traceback" not in proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert not out.exists()
    assert last.startswith(f"batchrunner: results so far in {out}.parts;"), last
    assert pq.read_table(next((tmp_path / "results.parquet.parts").glob("part-*.parquet")))
    again = cli(*args)
    assert again.returncode == 0, again.stderr
    assert again.stderr.strip().splitlines()[-1] == f"batchrunner: results in {out}"
    ids = pq.read_table(out, columns=["id"]).column("id").to_pylist()
    assert len(ids) == len(set(ids)) == 320
