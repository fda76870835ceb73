"""``via`` and ``staging`` from flags and from a job file, and the refusal without staging."""

from __future__ import annotations

from pathlib import Path

import pytest

from batchrunner.config import build_config, load_job_file
from batchrunner.errors import ConfigError


def test_a_job_file_can_choose_the_batch_route_and_its_staging(tmp_path: Path) -> None:
    job = tmp_path / "job.toml"
    job.write_text(
        'input = "p.jsonl"\noutput = "o.jsonl"\nvia = "batch"\n'
        'staging = "gs://b/runs"\nkeep_staging = true\nbatch_poll_seconds = 60\n'
    )
    config = build_config({}, env={}, job=load_job_file(job))
    assert (config.via, config.staging, config.keep_staging) == ("batch", "gs://b/runs", True)
    assert config.batch_poll_s == 60.0


def test_the_batch_route_without_a_gs_staging_prefix_is_a_usage_error() -> None:
    with pytest.raises(ConfigError, match="--staging gs://BUCKET/PREFIX"):
        build_config({"input": "p.jsonl", "output": "o.jsonl", "via": "batch"}, env={})
    with pytest.raises(ConfigError, match="--staging"):
        build_config(
            {"input": "p.jsonl", "output": "o.jsonl", "via": "batch", "staging": "/tmp/x"},
            env={},
        )
