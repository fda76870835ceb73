"""Runs against the simulator serving real-traffic shapes: the rows a user finds afterwards.

Tool calls (Gemini's index-less whole calls, gpt-oss's fragments, parallel calls), several
candidates, 499s, proxy pages with status 200, errors inside a stream, safety blocks, the
compression a stream must not ask for, per-family parameters and domain-scoped projects.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from batchrunner.auth.tokens import StaticAuthenticator
from batchrunner.config import RequestDefaults, RunConfig, Secret
from batchrunner.endpoint.retry import RetryPolicy
from batchrunner.endpoint.urls import VertexTarget
from batchrunner.limits.local import LimitConfig, LocalLimiter
from batchrunner.pipeline.runner import Runner, RunSummary
from batchrunner.simulator import Simulator, SimulatorConfig, open_simulator

pytestmark = pytest.mark.anyio

TOKEN = "ya29.test-token-value-0123456789"
GEMINI = "google/gemini-2.5-flash"
GPT_OSS = "openai/gpt-oss-120b-maas"
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string"},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
            },
            "required": ["city", "unit"],
        },
    },
}


def sim_config(**changes: Any) -> SimulatorConfig:
    base: dict[str, Any] = {
        "static_tokens": (TOKEN,),
        "keep_records": True,
        "latency": "zero",
        "default_quotas": False,
    }
    return SimulatorConfig(**{**base, **changes})


@pytest.fixture
async def sim(request: pytest.FixtureRequest) -> AsyncIterator[Simulator]:
    async with open_simulator(sim_config(**getattr(request, "param", {}))) as simulator:
        yield simulator


async def run(
    sim: Simulator, tmp_path: Path, rows: list[dict[str, Any]], **kwargs: Any
) -> tuple[RunSummary, list[dict[str, Any]]]:
    source = tmp_path / "in.jsonl"
    source.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in rows))
    out = kwargs.pop("output", tmp_path / "out.jsonl")
    url = kwargs.pop("url", sim.base_url())
    config = RunConfig(input=source, output=out, **kwargs)
    runner = Runner(
        config,
        url=url,
        authenticator=StaticAuthenticator(Secret(TOKEN)),
        retry_policy=RetryPolicy.no_wait(max_attempts=8),
        limiter=LocalLimiter(LimitConfig(max_concurrency=8, pause_base_s=0.01, pause_cap_s=0.05)),
    )
    summary = await runner.run()
    results = [orjson.loads(line) for line in out.read_bytes().splitlines() if line.strip()]
    return summary, sorted(results, key=lambda r: (r["id"], r["model"]))


def served(sim: Simulator) -> dict[str, dict[str, Any]]:
    return {r["response_id"]: r for r in sim.records if r["status"] == 200 and r["response_id"]}


# -- tool calls ----------------------------------------------------------------------------


@pytest.mark.parametrize("stream", [True, False])
@pytest.mark.parametrize("sim", [{"parallel_tool_call_rate": 0.5}], indirect=True)
async def test_every_tool_call_reaches_its_row_with_arguments_that_parse(
    sim: Simulator, tmp_path: Path, stream: bool
) -> None:
    rows = [
        {
            "id": f"t{i}",
            "prompt": f"Weather in city {i}?",
            "tools": [WEATHER],
            "tool_choice": "required",
        }
        for i in range(12)
    ]
    _, results = await run(
        sim, tmp_path, rows, models=(GEMINI, GPT_OSS), request=RequestDefaults(stream=stream)
    )
    truth = served(sim)
    assert len(results) == 24 and {r["status"] for r in results} == {"ok"}
    parallel = 0
    for row in results:
        calls = json.loads(row["tool_calls"])
        assert len(calls) == truth[row["response_id"]]["tool_calls"]  # every call the server sent
        parallel += len(calls) > 1
        for call in calls:
            assert call["name"] == "get_weather" and "valid_json" not in call
            arguments = json.loads(call["arguments"])
            assert set(arguments) == {"city", "unit"}
        assert row["finish_reason"] == "tool_calls"
        if row["finish_reason_raw"] is not None:  # Gemini ending a call with "stop"
            assert (row["model"], row["finish_reason_raw"]) == (GEMINI, "stop")
    assert parallel > 0  # parallel calls were among them, none glued into another


@pytest.mark.parametrize("sim", [{"invalid_tool_arguments_rate": 1.0}], indirect=True)
async def test_tool_arguments_that_do_not_parse_are_kept_raw_and_flagged(
    sim: Simulator, tmp_path: Path
) -> None:
    rows = [{"id": "t", "prompt": "Weather?", "tools": [WEATHER], "tool_choice": "required"}]
    _, (row,) = await run(
        sim, tmp_path, rows, models=(GPT_OSS,), request=RequestDefaults(stream=True)
    )
    (call,) = json.loads(row["tool_calls"])[:1]
    assert call["valid_json"] is False and call["arguments"]
    with pytest.raises(json.JSONDecodeError):
        json.loads(call["arguments"])


# -- several candidates --------------------------------------------------------------------


@pytest.mark.parametrize("stream", [True, False])
async def test_two_candidates_stay_apart_and_only_rows_that_asked_get_the_column(
    sim: Simulator, tmp_path: Path, stream: bool
) -> None:
    rows = [
        {"id": "two", "prompt": "Write a line about the sea.", "n": 2},
        {"id": "one", "prompt": "Write a line about the sea."},
    ]
    _, (one, two) = await run(
        sim, tmp_path, rows, models=(GEMINI,), request=RequestDefaults(stream=stream)
    )
    first, second = json.loads(two["choices"])
    assert first and second and first != second
    assert two["output"] == first
    assert first not in second and second not in first  # never glued
    assert one["choices"] is None
    record = served(sim)[two["response_id"]]
    assert record["n"] == 2
    assert two["completion_tokens"] == record["completion_tokens"]  # usage covers both


# -- statuses ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sim", "stream"),
    [
        ({"faults": {"499": 0.5}, "seed": 3}, False),
        ({"faults": {"html_200": 0.5}, "seed": 4}, True),
        ({"faults": {"html_200": 0.5}, "seed": 5}, False),
    ],
    indirect=["sim"],
)
async def test_499s_and_html_pages_are_retried_until_every_row_is_ok(
    sim: Simulator, tmp_path: Path, stream: bool
) -> None:
    rows = [{"id": f"q{i}", "prompt": f"question {i}?"} for i in range(20)]
    _, results = await run(
        sim, tmp_path, rows, models=(GEMINI,), request=RequestDefaults(stream=stream)
    )
    assert {r["status"] for r in results} == {"ok"}
    assert all(r["output"] for r in results)
    retried = [r for r in results if r["attempts"] > 1]
    faults = sum(1 for r in sim.records if r["fault"] is not None)
    assert retried and faults == sum(r["attempts"] - 1 for r in results)


async def test_a_failed_stream_s_partial_text_never_reaches_the_answer(tmp_path: Path) -> None:
    rows = [
        {"id": f"q{i}", "prompt": f"Tell me a long story {i}. " + "detail " * 200}
        for i in range(12)
    ]
    defaults = RequestDefaults(stream=True)
    async with open_simulator(sim_config(faults={"stream_error": 0.5}, seed=7)) as faulty:
        _, results = await run(faulty, tmp_path, rows, models=(GEMINI,), request=defaults)
        errors = [r for r in faulty.records if r["stream_error"] is not None]
    async with open_simulator(sim_config(seed=7)) as clean:
        _, expected = await run(
            clean,
            tmp_path,
            rows,
            models=(GEMINI,),
            request=defaults,
            output=tmp_path / "clean.jsonl",
        )
    assert errors and {r["status"] for r in results} == {"ok"}
    assert [r["output"] for r in results] == [r["output"] for r in expected]
    assert any(r["attempts"] > 1 for r in results)


# -- blocks --------------------------------------------------------------------------------


@pytest.mark.parametrize("stream", [True, False])
async def test_a_block_is_a_final_answer_kept_as_content_filter_and_sent_once(
    sim: Simulator, tmp_path: Path, stream: bool
) -> None:
    rows = [
        {"id": "filtered", "prompt": "tell me __filter:SAFETY__"},
        {"id": "no-candidates", "prompt": "tell me __block_empty__"},
        {"id": "refused", "prompt": "please __block__ this"},
        {"id": "fine", "prompt": "hello"},
    ]
    _, results = await run(
        sim, tmp_path, rows, models=(GEMINI,), request=RequestDefaults(stream=stream)
    )
    by_id = {r["id"]: r for r in results}
    filtered = by_id["filtered"]
    assert (
        filtered["status"],
        filtered["output"],
        filtered["finish_reason"],
        filtered["finish_reason_raw"],
    ) == (
        "ok",
        None,
        "content_filter",
        "SAFETY",
    )
    assert filtered["attempts"] == 1
    empty = by_id["no-candidates"]
    assert (empty["status"], empty["output"], empty["finish_reason"]) == (
        "ok",
        None,
        "content_filter",
    )
    refused = by_id["refused"]
    assert (refused["status"], refused["error_type"], refused["attempts"]) == (
        "error",
        "blocked",
        1,
    )
    assert by_id["fine"]["finish_reason"] == "stop" and by_id["fine"]["finish_reason_raw"] is None
    assert len(sim.records) == 4  # every row sent exactly once


# -- what is sent --------------------------------------------------------------------------


async def test_streams_are_sent_without_offering_compression_and_plain_requests_with_it(
    sim: Simulator, tmp_path: Path
) -> None:
    rows = [{"id": "q", "prompt": "hi"}]
    await run(sim, tmp_path, rows, models=(GEMINI,), request=RequestDefaults(stream=True))
    await run(sim, tmp_path, rows, models=(GEMINI,), output=tmp_path / "plain.jsonl")
    streamed, plain = sim.records
    assert streamed["stream"] and streamed["accept_encoding"] == "identity"
    assert not plain["stream"] and "gzip" in plain["accept_encoding"]


async def test_a_row_asking_for_two_thinking_controls_is_one_bad_input_row_never_sent(
    sim: Simulator, tmp_path: Path
) -> None:
    rows = [
        {
            "id": "both",
            "prompt": "hi",
            "reasoning_effort": "low",
            "google": {"thinking_config": {"thinking_budget": 0}},
        },
        {"id": "fine", "prompt": "hi", "reasoning_effort": "low"},
    ]
    _, (both, fine) = await run(sim, tmp_path, rows, models=(GEMINI,))
    assert (both["status"], both["error_type"]) == ("error", "bad_input")
    assert (
        "reasoning_effort" in both["error_message"] and "thinking_config" in both["error_message"]
    )
    assert fine["status"] == "ok"
    assert len(sim.records) == 1


async def test_a_domain_scoped_project_is_reached(tmp_path: Path) -> None:
    project = "example.com:my-proj"
    async with open_simulator(sim_config(project=project)) as sim:
        url = VertexTarget(project).base_url(sim.root_url)
        _, (row,) = await run(
            sim, tmp_path, [{"id": "q", "prompt": "hi"}], models=(GEMINI,), url=url
        )
        (record,) = sim.records
    assert row["status"] == "ok"
    assert record["project"] == project
