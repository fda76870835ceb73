from __future__ import annotations

from pathlib import Path

import pytest

from batchrunner.config import build_config, load_job_file
from batchrunner.errors import ConfigError


def test_flags_override_the_job_file_which_overrides_the_environment(tmp_path: Path) -> None:
    job_path = tmp_path / "job.toml"
    job_path.write_text(
        'input = "in.jsonl"\noutput = "out.parquet"\nproject = "from-file"\n'
        'concurrency = 8\nmodels = ["google/gemini-2.5-flash"]\n'
        "[params]\nmax_tokens = 100\ntemperature = 0.5\n"
        "[google]\nthinking_config = { thinking_budget = 0 }\n"
        '[fields]\nid = "qid"\n'
    )
    job = load_job_file(job_path)
    env = {"GOOGLE_CLOUD_PROJECT": "from-env", "GOOGLE_CLOUD_LOCATION": "us-central1"}
    cfg = build_config({"concurrency": 32, "params": {"max_tokens": 5}}, env=env, job=job)
    assert cfg.project == "from-file"
    assert cfg.location == "us-central1"
    assert cfg.concurrency == 32
    assert cfg.models == ("google/gemini-2.5-flash",)
    assert dict(cfg.request.params) == {"max_tokens": 5, "temperature": 0.5}
    assert dict(cfg.request.google) == {"thinking_config": {"thinking_budget": 0}}
    assert cfg.fields.id == "qid"
    assert cfg.output == Path("out.parquet")


def test_environment_fills_what_nothing_else_gives() -> None:
    cfg = build_config(
        {"input": "a.jsonl", "output": "b.jsonl"},
        env={"GOOGLE_CLOUD_PROJECT": "p", "OPENAI_BASE_URL": "http://127.0.0.1:9/v1"},
    )
    assert cfg.project == "p" and cfg.location == "global"
    assert cfg.base_url == "http://127.0.0.1:9/v1"


def test_static_token_from_env_is_kept_secret() -> None:
    cfg = build_config(
        {"input": "a.jsonl", "output": "b.jsonl"}, env={"OPENAI_API_KEY": "ya29.secret-value"}
    )
    assert cfg.auth.static_token is not None
    assert "ya29.secret-value" not in repr(cfg)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("inptu = 'x'\n", "unknown job-file key"),
        ("input = [\n", "invalid TOML"),
        ("params = 3\n", "must be a table"),
    ],
)
def test_bad_job_files_name_the_file_and_problem(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "job.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message) as info:
        load_job_file(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"output": "o.jsonl"}, "no INPUT"),
        ({"input": "i.jsonl"}, "no output"),
        ({"input": "i.jsonl", "output": "o.jsonl", "concurrency": 0}, "concurrency"),
        ({"input": "i.jsonl", "output": "o.jsonl", "rpm": "fast"}, "rpm must be a number"),
        (
            {"input": "i.jsonl", "output": "o.jsonl", "restart": True, "retry_failed": True},
            "cannot be combined",
        ),
    ],
)
def test_invalid_settings_are_refused(options: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        build_config(options, env={})
