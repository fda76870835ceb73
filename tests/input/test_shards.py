"""Shards: the planner, ``--shard I/N`` and its platform defaults, shard outputs and the merge."""

from __future__ import annotations

import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from batchrunner.config import InputFields, build_config, shard_path
from batchrunner.errors import ConfigError
from batchrunner.input.readers import RowSelection, read_rows
from batchrunner.input.shards import plan_shard, plan_shards, read_shard_rows
from batchrunner.limits.seam import share
from batchrunner.output.merge import find_shards, merge_shards
from batchrunner.output.read import load_results
from batchrunner.simulator import SimulatorConfig, start_simulator_thread

TOKEN = "shard-test-token"


def write_jsonl(path: Path, n: int, *, blank_every: int = 0) -> Path:
    lines = []
    for i in range(n):
        if blank_every and i % blank_every == 0:
            lines.append("\n")  # blank lines are not records
        lines.append(orjson.dumps({"id": f"q{i}", "prompt": f"say {i}"}).decode() + "\n")
    path.write_text("".join(lines), encoding="utf-8")
    return path


def write_parquet(path: Path, n: int, *, row_group_size: int = 7) -> Path:
    table = pa.table({"id": [f"q{i}" for i in range(n)], "prompt": [f"say {i}" for i in range(n)]})
    pq.write_table(table, path, row_group_size=row_group_size)
    return path


@pytest.fixture(params=["jsonl", "parquet", "jsonl.gz"])
def input_file(request: pytest.FixtureRequest, tmp_path: Path) -> Path:
    if request.param == "parquet":
        return write_parquet(tmp_path / "in.parquet", 53)
    if request.param == "jsonl.gz":
        import gzip

        plain = write_jsonl(tmp_path / "plain.jsonl", 53)
        gz = tmp_path / "in.jsonl.gz"
        gz.write_bytes(gzip.compress(plain.read_bytes()))
        return gz
    return write_jsonl(tmp_path / "in.jsonl", 53, blank_every=5)


@pytest.mark.parametrize("count", [1, 2, 3, 4, 7, 16, 53, 60, 200])
def test_shards_cover_every_row_exactly_once(input_file: Path, count: int) -> None:
    everything = [(r.index, r.id) for r in read_rows(input_file)]
    taken: Counter[tuple[int, str]] = Counter()
    for index in range(count):
        shard = None if count == 1 else (index, count)
        taken.update((r.index, r.id) for r in read_shard_rows(input_file, InputFields(), shard))
    assert sorted(taken) == sorted(everything)
    assert set(taken.values()) == {1}


@pytest.mark.parametrize("count", [3, 16])
def test_plan_is_the_same_every_time_and_for_one_shard_alone(input_file: Path, count: int) -> None:
    plans = plan_shards(input_file, count)
    assert plans == plan_shards(input_file, count)
    assert plans == tuple(plan_shard(input_file, i, count) for i in range(count))
    runs = [[r.id for r in read_shard_rows(input_file, InputFields(), (1, count))] for _ in "ab"]
    assert runs[0] == runs[1]


def test_parquet_shards_are_balanced_contiguous_ranges(tmp_path: Path) -> None:
    path = write_parquet(tmp_path / "in.parquet", 100, row_group_size=9)
    plans = plan_shards(path, 8)
    assert [p.rows for p in plans] == [12, 13, 12, 13, 12, 13, 12, 13]
    assert plans[0].select == RowSelection(0, 12)
    assert plans[-1].select == RowSelection(87, 100)
    assert [r.index for r in read_shard_rows(path, InputFields(), (3, 8))] == list(range(37, 50))


def test_jsonl_shards_take_every_nth_record(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "in.jsonl", 20)
    assert [r.id for r in read_shard_rows(path, InputFields(), (2, 4))] == [
        "q2",
        "q6",
        "q10",
        "q14",
        "q18",
    ]


def test_positional_ids_of_a_shard_match_the_whole_file(tmp_path: Path) -> None:
    path = tmp_path / "in.jsonl"
    path.write_text("".join(f'{{"prompt": "p{i}"}}\n' for i in range(10)), encoding="utf-8")
    assert [r.id for r in read_shard_rows(path, InputFields(), (1, 3))] == [
        "row-1",
        "row-4",
        "row-7",
    ]


def test_shard_output_names_sort_in_shard_order(tmp_path: Path) -> None:
    assert shard_path(tmp_path / "out.parquet", 3, 16).name == "out.shard-00003-of-00016.parquet"
    assert shard_path(Path("res.jsonl"), 0, 2) == Path("res.shard-00000-of-00002.jsonl")


def test_shard_takes_its_share_of_the_jobs_rate_limits() -> None:
    assert share(1200.0, (0, 4)) == 300.0
    assert share(1200.0, None) == 1200.0
    assert share(None, (0, 4)) is None


# --- configuration -------------------------------------------------------------------------


def test_shard_flag_sets_the_shard_and_its_own_output(tmp_path: Path) -> None:
    cfg = build_config(
        {"input": "in.jsonl", "output": str(tmp_path / "out.parquet"), "shard": "3/16"}, env={}
    )
    assert cfg.shard == (3, 16)
    assert cfg.output == tmp_path / "out.shard-00003-of-00016.parquet"


def test_cloud_run_task_index_and_count_give_the_shard() -> None:
    env = {"CLOUD_RUN_TASK_INDEX": "2", "CLOUD_RUN_TASK_COUNT": "5"}
    cfg = build_config({"input": "in.jsonl", "output": "out.jsonl"}, env=env)
    assert cfg.shard == (2, 5)
    assert cfg.output == Path("out.shard-00002-of-00005.jsonl")


def test_indexed_job_needs_a_shard_count() -> None:
    env = {"JOB_COMPLETION_INDEX": "1"}
    with pytest.raises(ConfigError, match="BATCHRUNNER_SHARD_COUNT"):
        build_config({"input": "in.jsonl", "output": "out.jsonl"}, env=env)
    cfg = build_config({"input": "in.jsonl", "output": "out.jsonl", "shard_count": 4}, env=env)
    assert cfg.shard == (1, 4)
    env["BATCHRUNNER_SHARD_COUNT"] = "8"
    assert build_config({"input": "in.jsonl", "output": "out.jsonl"}, env=env).shard == (1, 8)


def test_flag_wins_over_environment_and_one_shard_means_unsharded() -> None:
    env = {"CLOUD_RUN_TASK_INDEX": "2", "CLOUD_RUN_TASK_COUNT": "5"}
    cfg = build_config({"input": "in.jsonl", "output": "out.jsonl", "shard": "0/1"}, env=env)
    assert cfg.shard is None
    assert cfg.output == Path("out.jsonl")
    single = {"CLOUD_RUN_TASK_INDEX": "0", "CLOUD_RUN_TASK_COUNT": "1"}
    assert build_config({"input": "in.jsonl", "output": "o.jsonl"}, env=single).shard is None


@pytest.mark.parametrize("text", ["3", "4/4", "-1/4", "a/b", "1/0"])
def test_bad_shard_is_a_usage_error(text: str) -> None:
    with pytest.raises(ConfigError):
        build_config({"input": "in.jsonl", "output": "out.jsonl", "shard": text}, env={})


# --- running shards as separate processes ---------------------------------------------------


def run_shard(
    input_path: Path, output: Path, index: int, count: int, base_url: str, *extra: str
) -> subprocess.Popen[str]:
    env = {**os.environ, "OPENAI_API_KEY": TOKEN}
    env.pop("OPENAI_BASE_URL", None)
    args = ["run", str(input_path), "-o", str(output), "--shard", f"{index}/{count}"]
    return subprocess.Popen(
        [sys.executable, "-m", "batchrunner", *args, "--base-url", base_url, *extra],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(proc: subprocess.Popen[str]) -> tuple[int, str]:
    _, err = proc.communicate(timeout=120)
    return proc.returncode, err


@pytest.mark.slow
@pytest.mark.parametrize("suffix", ["jsonl", "parquet"])
def test_four_shard_processes_give_every_id_once_after_merge(tmp_path: Path, suffix: str) -> None:
    n = 600
    input_path = write_jsonl(tmp_path / "in.jsonl", n)
    out = tmp_path / f"out.{suffix}"
    sim_config = SimulatorConfig(
        static_tokens=(TOKEN,), keep_records=True, rpm_quota=24_000, latency="zero"
    )
    with start_simulator_thread(sim_config) as sim:
        base = sim.base_url()
        procs = [run_shard(input_path, out, i, 4, base, "--rpm", "24000") for i in range(4)]
        for proc in procs:
            status, err = finish(proc)
            assert status == 0, err
        assert len(find_shards(out)[4]) == 4
        merged = merge_shards(out)
        ids = Counter(r.id for r in load_results([out]))
        assert merged.rows_written == n
        assert ids == Counter(f"q{i}" for i in range(n))
        assert all(r.status == "ok" for r in load_results([out]))
        served = sim.statistics()
        assert served.by_status.get(200) == n
        # A shard run again sends nothing: its own output says it is done.
        before = len(sim.records)
        status, err = finish(run_shard(input_path, out, 2, 4, base))
        assert status == 0, err
        assert len(sim.records) == before
    # Merged output resumes an unsharded run as well: nothing left to send.
    assert (tmp_path / f"out.{suffix}.run.json").exists()


def test_merge_refuses_a_missing_shard(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    shard_path(out, 0, 3).write_text("", encoding="utf-8")
    shard_path(out, 2, 3).write_text("", encoding="utf-8")
    with pytest.raises(ConfigError, match="1 of 3 shards"):
        merge_shards(out)


def test_merge_refuses_a_shard_still_being_written(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    for i in range(2):
        shard_path(out, i, 2).write_text("", encoding="utf-8")
    lock = shard_path(out, 1, 2)
    lock.with_name(lock.name + ".lock").write_text("", encoding="utf-8")
    with pytest.raises(ConfigError, match="still being written"):
        merge_shards(out)


def test_merge_keeps_one_row_per_id_and_model(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    row = {"id": "dup", "model": "m", "status": "ok", "row": 0}
    shard_path(out, 0, 2).write_bytes(orjson.dumps(row) + b"\n")
    other = {**row, "row": 5}
    extra = {"id": "x", "model": "m", "status": "ok", "row": 1}
    shard_path(out, 1, 2).write_bytes(orjson.dumps(other) + b"\n" + orjson.dumps(extra) + b"\n")
    merged = merge_shards(out)
    assert merged.rows_read == 3
    assert sorted(r.id for r in load_results([out])) == ["dup", "x"]
