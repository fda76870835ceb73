"""The README cannot drift from the code: its schema table and CLI flags are checked here."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from batchrunner.cli.main import build_parser
from batchrunner.results import RESULT_FIELDS

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")
ORDER = (
    "Quickstart",
    "What a run prints",
    "Comparing two models",
    "Input",
    "Output columns and exit codes",
    "Resume",
    "Job file",
    "Library",
    "Vertex auth",
    "Flow control",
    "Cost",
    "Half price: batch prediction",
    "Performance",
)


def _section(title: str) -> str:
    return README.split(f"## {title}\n", 1)[1].split("\n## ", 1)[0]


def test_quickstart_has_exactly_two_shell_blocks() -> None:
    blocks = re.findall(r"```(?:sh|bash|shell)\n(.*?)```", _section("Quickstart"), re.S)
    assert len(blocks) == 2
    assert "--simulate" in blocks[0]
    assert "pytest" in blocks[1]


def test_output_table_lists_every_result_column_in_order() -> None:
    rows = re.findall(
        r"^\| (\w+) \| (?:string|int|float|bool|timestamp) \|",
        _section("Output columns and exit codes"),
        re.M,
    )
    assert tuple(rows) == RESULT_FIELDS


def test_every_run_flag_named_in_the_readme_exists() -> None:
    parser = build_parser()
    run_parser = parser._subparsers._group_actions[0].choices["run"]  # type: ignore[union-attr,index]
    known = {opt for action in run_parser._actions for opt in action.option_strings}
    mentioned = set(re.findall(r"`(--[a-z][a-z-]+)", README))
    other_commands = {"--port", "--credentials-out", "--latency", "--token-ttl", "--static-token",
                     "--rpm-quota", "--tpm-quota", "--dsq-capacity", "--error-rate", "--fault",
                     "--retry-delay", "--request-log", "--format", "--workloads",
                     "--shards", "--memory-n"}  # fmt: skip
    assert mentioned - other_commands <= known, sorted(mentioned - other_commands - known)


def test_the_readme_is_short_and_reads_in_the_order_a_user_needs() -> None:
    assert len(README.splitlines()) <= 250
    titles = re.findall(r"^## (.+)$", README, re.M)
    assert tuple(titles) == ORDER
    assert (ROOT / "docs" / "report.png").is_file() and "docs/report.png" in README
    assert "docs/performance.md" in README and "docs/development.md" in README
    assert "simulate=SimulateOptions()" in _section("Library")


def test_the_readme_job_file_runs_on_the_sample_data(tmp_path: Path) -> None:
    toml = re.findall(r"```toml\n(.*?)```", _section("Job file"), re.S)
    assert len(toml) == 1
    job = tmp_path / "job.toml"
    job.write_text(toml[0], encoding="utf-8")
    out = tmp_path / "results.parquet"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "GOOGLE_"))}
    proc = subprocess.run(
        [sys.executable, "-m", "batchrunner", "run", "--config", str(job), "-o", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr
    import pyarrow.parquet as pq

    table = pq.read_table(out, columns=["status"])
    assert table.num_rows == 320
    assert set(table.column("status").to_pylist()) == {"ok"}
