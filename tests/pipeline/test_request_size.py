"""Requests too large to send: refused before sending, as one bad_input row with the numbers.

Vertex refuses inline request data past 20 MB, and a prompt past the model's input limit
with a 400; a run should not pay a round trip per row to learn either.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from batchrunner.auth.tokens import StaticAuthenticator
from batchrunner.config import RequestLimits, RunConfig, Secret, build_config, max_input_tokens
from batchrunner.endpoint.retry import RetryPolicy
from batchrunner.limits.local import LimitConfig, LocalLimiter
from batchrunner.pipeline.dryrun import estimate
from batchrunner.pipeline.runner import Runner, RunSummary
from batchrunner.simulator import Simulator, SimulatorConfig, open_simulator
from batchrunner.stats.pricing import PriceTable

pytestmark = pytest.mark.anyio

TOKEN = "ya29.test-token-value-0123456789"
GEMINI = "google/gemini-2.5-flash"
GPT_OSS = "openai/gpt-oss-120b-maas"
# ~200,000 estimated tokens (4 characters a token): past gpt-oss's 131,072 x 1.25,
# well inside Gemini's 1,048,576.
LONG_PROMPT = "word " * 160_000
BATCHRUNNER = (sys.executable, "-m", "batchrunner")
QUIET = ("--progress", "off")


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    config = SimulatorConfig(
        static_tokens=(TOKEN,), keep_records=True, latency="zero", default_quotas=False
    )
    async with open_simulator(config) as simulator:
        yield simulator


async def run(
    sim: Simulator, tmp_path: Path, rows: list[dict[str, Any]], **kwargs: Any
) -> tuple[RunSummary, dict[tuple[str, str], dict[str, Any]]]:
    source = tmp_path / "in.jsonl"
    source.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in rows))
    out = tmp_path / "out.jsonl"
    runner = Runner(
        RunConfig(input=source, output=out, **kwargs),
        url=sim.base_url(),
        authenticator=StaticAuthenticator(Secret(TOKEN)),
        retry_policy=RetryPolicy.no_wait(max_attempts=2),
        limiter=LocalLimiter(LimitConfig(max_concurrency=4)),
    )
    summary = await runner.run()
    results = [orjson.loads(line) for line in out.read_bytes().splitlines() if line.strip()]
    by_key = {(r["id"], r["model"]): r for r in results}
    assert len(by_key) == len(results), "a row was written twice"
    return summary, by_key


async def test_a_21_mb_prompt_is_one_bad_input_row_and_is_never_sent(
    sim: Simulator, tmp_path: Path
) -> None:
    huge = "x" * 21_000_000
    rows = [
        {"id": "a", "prompt": "hi"},
        {"id": "huge", "prompt": huge},
        {"id": "b", "prompt": "yo"},
    ]
    _, results = await run(sim, tmp_path, rows, models=(GEMINI,))
    assert set(results) == {("a", GEMINI), ("huge", GEMINI), ("b", GEMINI)}
    bad = results[("huge", GEMINI)]
    assert (bad["status"], bad["error_type"]) == ("error", "bad_input")
    assert "request body is 21.0 MB, over the 20 MB Vertex accepts" in bad["error_message"]
    assert "--max-request-mb" in bad["error_message"]
    assert results[("a", GEMINI)]["status"] == "ok"
    assert results[("b", GEMINI)]["status"] == "ok"
    records = sim.records
    assert len(records) == 2  # only the two small rows reached the server
    assert all(int(str(r["prompt_tokens"])) < 100 for r in records)


async def test_a_prompt_past_gpt_oss_input_limit_is_refused_but_goes_to_gemini(
    sim: Simulator, tmp_path: Path
) -> None:
    rows = [{"id": "long", "prompt": LONG_PROMPT}, {"id": "short", "prompt": "hi"}]
    _, results = await run(sim, tmp_path, rows, models=(GPT_OSS, GEMINI))
    refused = results[("long", GPT_OSS)]
    assert refused["error_type"] == "bad_input"
    assert (
        "prompt is about 200,005 tokens (estimated), past openai/gpt-oss-120b-maas's "
        "131,072-token input limit" in refused["error_message"]
    )
    assert results[("long", GEMINI)]["status"] == "ok"
    assert results[("short", GPT_OSS)]["status"] == "ok"
    assert results[("short", GEMINI)]["status"] == "ok"
    sent = sorted((str(r["model"]), int(str(r["prompt_tokens"])) > 100_000) for r in sim.records)
    assert sent == [(GEMINI, False), (GEMINI, True), (GPT_OSS, False)]


async def test_a_borderline_prompt_still_goes_to_the_server(sim: Simulator, tmp_path: Path) -> None:
    # ~140,000 estimated tokens: past 131,072, but within the 1.25 slack of an estimate.
    rows = [{"id": "edge", "prompt": "word " * 112_000}]
    _, results = await run(sim, tmp_path, rows, models=(GPT_OSS,))
    assert results[("edge", GPT_OSS)]["error_type"] != "bad_input"
    assert len(sim.records) == 1


async def test_a_smaller_slack_refuses_the_borderline_prompt(
    sim: Simulator, tmp_path: Path
) -> None:
    rows = [{"id": "edge", "prompt": "word " * 112_000}]
    limits = RequestLimits(input_limit_slack=1.0)
    _, results = await run(sim, tmp_path, rows, models=(GPT_OSS,), limits=limits)
    assert "(--input-limit-slack 1)" in results[("edge", GPT_OSS)]["error_message"]
    assert sim.records == []


async def test_without_the_token_check_the_server_answers_the_long_prompt(
    sim: Simulator, tmp_path: Path
) -> None:
    rows = [{"id": "long", "prompt": LONG_PROMPT}]
    limits = RequestLimits(input_limit_slack=None)
    _, results = await run(sim, tmp_path, rows, models=(GPT_OSS,), limits=limits)
    row = results[("long", GPT_OSS)]
    assert row["status"] == "error" and row["error_type"] != "bad_input"
    assert "exceeds the maximum number of tokens allowed (131072)" in row["error_message"]
    assert len(sim.records) == 1


async def test_a_lower_body_limit_refuses_a_smaller_body(sim: Simulator, tmp_path: Path) -> None:
    rows = [{"id": "two-mb", "prompt": "x" * 2_000_000}, {"id": "small", "prompt": "hi"}]
    limits = RequestLimits(max_request_bytes=1_500_000)
    _, results = await run(sim, tmp_path, rows, models=(GEMINI,), limits=limits)
    message = results[("two-mb", GEMINI)]["error_message"]
    assert "request body is 2.0 MB, over the 1.5 MB Vertex accepts" in message
    assert results[("small", GEMINI)]["status"] == "ok"
    assert len(sim.records) == 1


def test_flags_and_the_job_file_set_both_limits(tmp_path: Path) -> None:
    base = {"input": "in.jsonl", "output": "out.jsonl"}
    assert build_config(base, env={}).limits == RequestLimits(20_000_000, 1.25)
    flags = build_config(
        {**base, "max_request_mb": 5, "input_limit_slack": 1.5}, env={}, job={}
    ).limits
    assert flags == RequestLimits(5_000_000, 1.5)
    job = build_config(base, env={}, job={"max_request_mb": 2.5, "input_limit_slack": "off"})
    assert job.limits == RequestLimits(2_500_000, None)
    over = build_config({**base, "input_limit_slack": 2.0}, env={}, job={"input_limit_slack": 1.1})
    assert over.limits.input_limit_slack == 2.0


def test_the_model_table_knows_each_models_input_limit() -> None:
    assert max_input_tokens(GPT_OSS) == 131_072
    assert max_input_tokens("openai/gpt-oss-20b-maas") == 131_072
    assert max_input_tokens(GEMINI) == 1_048_576
    assert max_input_tokens("gemini-2.0-flash-001") == 1_048_576
    assert max_input_tokens("google/some-future-model") is None


def test_the_cli_flag_refuses_a_row_past_the_body_limit(tmp_path: Path) -> None:
    source = tmp_path / "in.jsonl"
    rows = [{"id": "big", "prompt": "x" * 300_000}, {"id": "small", "prompt": "hi"}]
    source.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in rows))
    out = tmp_path / "out.jsonl"
    proc = subprocess.run(
        [
            *BATCHRUNNER,
            "run",
            str(source),
            "-o",
            str(out),
            "--simulate",
            *QUIET,
            "--max-request-mb",
            "0.2",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 1, proc.stderr  # a bad row: exit 1, the rest done
    results = {r["id"]: r for r in map(orjson.loads, out.read_bytes().splitlines())}
    assert results["big"]["error_type"] == "bad_input"
    assert "over the 0.2 MB Vertex accepts" in results["big"]["error_message"]
    assert results["small"]["status"] == "ok"


@pytest.mark.parametrize("value", ["0", "-1", "lots"])
def test_a_bad_slack_flag_is_a_usage_error(tmp_path: Path, value: str) -> None:
    proc = subprocess.run(
        [*BATCHRUNNER, "run", "in.jsonl", "-o", "o.jsonl", "--input-limit-slack", value],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=tmp_path,
    )
    assert proc.returncode == 2
    assert "--input-limit-slack" in proc.stderr


def test_a_dry_run_counts_a_refused_request_and_still_estimates_the_others(
    tmp_path: Path,
) -> None:
    source = tmp_path / "in.jsonl"
    rows = [{"id": "long", "prompt": LONG_PROMPT}, {"id": "short", "prompt": "hi"}]
    source.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in rows))
    options = {"input": str(source), "models": [GPT_OSS, GEMINI], "dry_run": True}
    est = estimate(build_config(options, env={}), PriceTable.default())
    assert est.bad_rows == 1
    assert "past openai/gpt-oss-120b-maas's 131,072-token input limit" in est.problems[0]
    assert (est.models[GPT_OSS].requests, est.models[GEMINI].requests) == (1, 2)
