"""``--dry-run`` estimates what a run would send: the whole input, or one shard of it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from batchrunner.config import build_config
from batchrunner.pipeline.dryrun import DryRunEstimate, estimate
from batchrunner.stats.pricing import PriceTable

MODEL = "google/gemini-2.5-flash"


def write_jsonl(path: Path, n: int) -> Path:
    path.write_bytes(
        b"".join(orjson.dumps({"id": f"q{i}", "prompt": "x" * i}) + b"\n" for i in range(n))
    )
    return path


def write_parquet(path: Path, n: int) -> Path:
    table = pa.table({"id": [f"q{i}" for i in range(n)], "prompt": ["x" * i for i in range(n)]})
    pq.write_table(table, path, row_group_size=3)
    return path


def dry_run(path: Path, **options: object) -> DryRunEstimate:
    config = build_config(
        {"input": str(path), "models": [MODEL], "dry_run": True, **options}, env={}
    )
    return estimate(config, PriceTable.default())


@pytest.mark.parametrize("suffix", [".jsonl", ".parquet"])
def test_a_shard_estimates_only_its_own_rows(suffix: str, tmp_path: Path) -> None:
    write = write_jsonl if suffix == ".jsonl" else write_parquet
    path = write(tmp_path / f"in{suffix}", 10)
    whole = dry_run(path)
    parts = [dry_run(path, shard=f"{i}/4") for i in range(4)]
    assert whole.rows == 10 and whole.shard is None
    assert [p.shard for p in parts] == [(i, 4) for i in range(4)]
    assert all(0 < p.rows < 10 for p in parts)
    assert sum(p.rows for p in parts) == whole.rows
    assert sum(p.models[MODEL].requests for p in parts) == whole.models[MODEL].requests
    assert sum(p.models[MODEL].input_tokens for p in parts) == whole.models[MODEL].input_tokens


def test_dry_run_with_shard_says_which_rows_it_counted(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "in.jsonl", 10)
    proc = subprocess.run(
        [sys.executable, "-m", "batchrunner", "run", str(path), "--dry-run", "--shard", "1/4"],
        capture_output=True,
        text=True,
        timeout=60,
        env={k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "GOOGLE_"))},
    )
    assert proc.returncode == 0, proc.stderr
    assert "dry run: 3 rows of shard 1/4 read" in proc.stdout  # records 1, 5 and 9
    assert "nothing was sent" in proc.stdout


def test_the_estimate_includes_the_models_reasoning_prior(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "in.jsonl", 10)
    est = dry_run(path)
    prior = PriceTable.default().lookup(MODEL)
    assert prior is not None and prior.reasoning_prior
    m = est.models[MODEL]
    assert m.reasoning_tokens == m.requests * round(prior.reasoning_prior)
    per_answer = est.assumed_output_tokens + round(prior.reasoning_prior)
    assert m.output_tokens == m.requests * per_answer
    assert "reasoning prior" in m.basis and "guess" in m.basis


def test_the_estimate_learns_from_the_answers_output_already_holds(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "in.jsonl", 10)
    out = tmp_path / "out.jsonl"
    answers = [(1000, 700), (3000, 2500)]  # (completion tokens with reasoning, reasoning)
    out.write_bytes(
        b"".join(
            orjson.dumps(
                {"id": f"old{i}", "model": MODEL, "status": "ok", "row": i,
                 "completion_tokens": c, "reasoning_tokens": r}
            ) + b"\n"
            for i, (c, r) in enumerate(answers)
        )
    )  # fmt: skip
    m = dry_run(path, output=str(out)).models[MODEL]
    assert m.output_tokens == m.requests * 2000
    assert m.reasoning_tokens == m.requests * 1600
    assert m.basis == "2 answers in OUTPUT"


def test_the_run_summary_sets_the_dry_runs_estimate_beside_what_the_answers_cost(
    tmp_path: Path,
) -> None:
    source = tmp_path / "in.jsonl"
    source.write_bytes(
        b"".join(orjson.dumps({"id": f"q{i}", "prompt": "x " * (i + 1)}) + b"\n" for i in range(40))
    )
    out = tmp_path / "out.parquet"
    args = [sys.executable, "-m", "batchrunner", "run", str(source), "-o", str(out)]
    args += ["--simulate", "--sim-latency", "zero", "--progress", "off", "--fail-on", "none"]
    planned = estimate(
        build_config({"input": str(source), "output": str(out)}, env={}), PriceTable.default()
    )
    done = subprocess.run(args, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    line = next(x for x in done.stderr.splitlines() if "the dry run's estimate" in x)
    model, m = next(iter(planned.models.items()))
    assert line.startswith(f"batchrunner: {model}: 40 answers cost $")
    assert m.cost_usd is not None and f"estimate for them was ${m.cost_usd:,.4f}" in line
    actual = sum(pq.read_table(out, columns=["cost_usd"]).column("cost_usd").to_pylist())
    assert f"answers cost ${actual:,.4f}" in line
    ratio = float(line.rsplit(": ", 1)[1].removesuffix("× the estimate"))
    assert ratio == pytest.approx(actual / m.cost_usd, abs=0.01)
