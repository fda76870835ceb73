"""An address per model: ``MODEL@LOCATION`` and job-file tables send a model to its own place."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import orjson
import pytest

from batchrunner.config import ModelTarget, SimulateOptions, build_config, load_job_file
from batchrunner.errors import ConfigError
from batchrunner.launch.run import run_async

GEMINI = "google/gemini-2.5-flash"
GPT_OSS_120B = "openai/gpt-oss-120b-maas"
GPT_OSS_20B = "openai/gpt-oss-20b-maas"  # the simulator, like Vertex, serves it in us-central1


def write_rows(path: Path, n: int) -> Path:
    rows = [
        {"id": f"q{i}", "prompt": f"question {i}?", "max_tokens": 16, "reasoning_effort": "minimal"}
        for i in range(n)
    ]
    path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in rows))
    return path


def test_a_model_at_a_location_keeps_its_bare_id_and_its_own_target(tmp_path: Path) -> None:
    job = tmp_path / "job.toml"
    job.write_text(
        'models = ["google/gemini-2.5-flash", '
        '{ id = "my/tuned", location = "europe-west4", endpoint_id = "1234" }]\n'
    )
    cfg = build_config(
        {"input": "in.jsonl", "output": "out.jsonl", "models": [f"{GPT_OSS_20B}@us-central1"]},
        env={},
        job=load_job_file(job),
    )
    assert cfg.models == (GPT_OSS_20B,)  # flags replace the job file's list
    cfg = build_config({"input": "in.jsonl", "output": "o.jsonl"}, env={}, job=load_job_file(job))
    assert cfg.models == (GEMINI, "my/tuned")
    assert cfg.model_targets == {"my/tuned": ModelTarget("europe-west4", "1234")}
    assert cfg.target_of("my/tuned") == ("europe-west4", "1234")
    assert cfg.target_of(GEMINI) == ("global", "openapi")


@pytest.mark.parametrize(
    "entry", ["@us-central1", f"{GPT_OSS_20B}@", f"{GPT_OSS_20B}@a/b", {"location": "x"}]
)
def test_a_malformed_model_address_is_one_clear_error(entry: object) -> None:
    with pytest.raises(ConfigError, match="model"):
        build_config({"input": "in.jsonl", "output": "o.jsonl", "models": [entry]}, env={})


def test_a_model_address_with_base_url_is_refused() -> None:
    with pytest.raises(ConfigError, match="--base-url"):
        build_config(
            {
                "input": "in.jsonl",
                "output": "o.jsonl",
                "models": [f"{GPT_OSS_20B}@us-central1"],
                "base_url": "http://127.0.0.1:9/v1",
            },
            env={},
        )


@pytest.mark.anyio
async def test_three_models_at_two_locations_in_one_run_all_answer(tmp_path: Path) -> None:
    cfg = build_config(
        {
            "input": str(write_rows(tmp_path / "in.jsonl", 20)),
            "output": str(tmp_path / "out.jsonl"),
            "models": [GEMINI, GPT_OSS_120B, f"{GPT_OSS_20B}@us-central1"],
            "simulate": {"latency": "zero"},
            "fail_on": "none",  # gpt-oss may think through a short cap: routing, not answers
        },
        env={},
    )
    assert cfg.simulate == SimulateOptions(latency="zero")
    summary = await run_async(cfg)
    assert summary.exit_status == 0
    rows = [orjson.loads(line) for line in (tmp_path / "out.jsonl").read_bytes().splitlines()]
    assert Counter((r["model"], r["status"]) for r in rows) == {
        (GEMINI, "ok"): 20,
        (GPT_OSS_120B, "ok"): 20,
        (GPT_OSS_20B, "ok"): 20,  # the bare id, although it went to us-central1
    }


@pytest.mark.anyio
async def test_a_404_stop_names_the_known_placement_of_a_model_sent_elsewhere(
    tmp_path: Path,
) -> None:
    cfg = build_config(
        {
            "input": str(write_rows(tmp_path / "in.jsonl", 60)),
            "output": str(tmp_path / "out.jsonl"),
            "models": [GPT_OSS_20B],
            "simulate": {"latency": "zero"},
        },
        env={},
    )
    summary = await run_async(cfg)
    assert summary.stopped is not None
    assert f"use --model {GPT_OSS_20B}@us-central1" in summary.stopped
