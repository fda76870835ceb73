"""The official ``openai`` SDK, pointed at the simulator, reads its shapes as the runner does.

Where the SDK's own accumulation handles a shape (OpenAI-style tool-call fragments, several
streamed candidates, non-streamed calls) it yields the same calls and candidates the runner
writes. Where it stumbles on a real shape, Gemini's index-less tool-call chunks, the test
pins that too: the simulator must stay faithful to the service rather than convenient for
one client.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import openai
import orjson
import pytest
from openai.lib.streaming.chat import ChatCompletionStreamState

from batchrunner.auth.tokens import StaticAuthenticator
from batchrunner.config import RequestDefaults, RunConfig, Secret
from batchrunner.endpoint.retry import RetryPolicy
from batchrunner.pipeline.runner import Runner
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
            "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
            "required": ["city"],
        },
    },
}
PROMPT = "What is the weather in Lisbon and Porto?"


async def runner_row(
    sim: Simulator, tmp_path: Path, model: str, stream: bool, **params: Any
) -> dict[str, Any]:
    source = tmp_path / f"in-{stream}.jsonl"
    out = tmp_path / f"out-{stream}.jsonl"
    source.write_bytes(orjson.dumps({"id": "q", "prompt": PROMPT, **params}) + b"\n")
    config = RunConfig(
        input=source, output=out, models=(model,), request=RequestDefaults(stream=stream)
    )
    runner = Runner(
        config,
        url=sim.base_url(),
        authenticator=StaticAuthenticator(Secret(TOKEN)),
        retry_policy=RetryPolicy.no_wait(),
    )
    await runner.run()
    (row,) = [orjson.loads(line) for line in out.read_bytes().splitlines()]
    assert row["status"] == "ok"
    return row


async def sdk_stream(
    sim: Simulator, model: str, **params: Any
) -> tuple[list[Any], ChatCompletionStreamState[None]]:
    """The raw chunks and the SDK's own accumulation of the same request, streamed."""
    chunks: list[Any] = []
    state: ChatCompletionStreamState[None] = ChatCompletionStreamState()
    async with openai.AsyncOpenAI(base_url=sim.base_url(), api_key=TOKEN, max_retries=0) as sdk:
        stream = await sdk.chat.completions.create(
            model=model,
            messages=[{"role": "user", "content": PROMPT}],
            stream=True,
            stream_options={"include_usage": True},
            **params,
        )
        async for chunk in stream:
            chunks.append(chunk)
    return chunks, state


def accumulate(state: ChatCompletionStreamState[None], chunks: list[Any]) -> None:
    for chunk in chunks:
        state.handle_chunk(chunk)


def runner_calls(row: dict[str, Any]) -> list[tuple[str, str, Any]]:
    return [(c["id"], c["name"], json.loads(c["arguments"])) for c in json.loads(row["tool_calls"])]


@pytest.fixture
async def sim() -> Any:
    config = SimulatorConfig(
        static_tokens=(TOKEN,), latency="zero", default_quotas=False, parallel_tool_call_rate=1.0
    )
    async with open_simulator(config) as simulator:
        yield simulator


async def test_sdk_accumulates_gpt_oss_fragments_into_the_calls_the_runner_writes(
    sim: Simulator, tmp_path: Path
) -> None:
    tools = {"tools": [WEATHER], "tool_choice": "required"}
    row = await runner_row(sim, tmp_path, GPT_OSS, True, **tools)
    chunks, state = await sdk_stream(sim, GPT_OSS, **tools)
    accumulate(state, chunks)
    message = state.get_final_completion().choices[0].message
    sdk_calls = [
        (c.id, c.function.name, json.loads(c.function.arguments)) for c in message.tool_calls or []
    ]
    assert len(sdk_calls) > 1  # parallel calls, each in fragments
    assert sdk_calls == runner_calls(row)


@pytest.mark.parametrize("model", [GEMINI, GPT_OSS])
async def test_sdk_reads_non_streamed_calls_and_text_as_the_runner_does(
    sim: Simulator, tmp_path: Path, model: str
) -> None:
    tools = {"tools": [WEATHER], "tool_choice": "required"}
    row = await runner_row(sim, tmp_path, model, False, **tools)
    async with openai.AsyncOpenAI(base_url=sim.base_url(), api_key=TOKEN, max_retries=0) as sdk:
        completion = await sdk.chat.completions.create(
            model=model, messages=[{"role": "user", "content": PROMPT}], **tools
        )
    message = completion.choices[0].message
    sdk_calls = [
        (c.id, c.function.name, json.loads(c.function.arguments))  # type: ignore[union-attr]
        for c in message.tool_calls or []
    ]
    assert sdk_calls == runner_calls(row)
    assert message.content == row["output"]


@pytest.mark.parametrize("model", [GEMINI, GPT_OSS])
async def test_sdk_keeps_streamed_candidates_apart_as_the_runner_does(
    sim: Simulator, tmp_path: Path, model: str
) -> None:
    row = await runner_row(sim, tmp_path, model, True, n=2)
    chunks, state = await sdk_stream(sim, model, n=2)
    assert {c.index for chunk in chunks for c in chunk.choices} == {0, 1}
    accumulate(state, chunks)
    final = state.get_final_completion()
    sdk_texts = [c.message.content for c in sorted(final.choices, key=lambda c: c.index)]
    assert sdk_texts == json.loads(row["choices"])
    assert sdk_texts[0] != sdk_texts[1]


async def test_sdk_stumbles_on_geminis_index_less_tool_call_chunks_the_runner_reads(
    sim: Simulator, tmp_path: Path
) -> None:
    tools = {"tools": [WEATHER], "tool_choice": "required"}
    row = await runner_row(sim, tmp_path, GEMINI, True, **tools)
    chunks, state = await sdk_stream(sim, GEMINI, **tools)
    deltas = [
        call
        for chunk in chunks
        for choice in chunk.choices
        for call in choice.delta.tool_calls or []
    ]
    # Each call arrives whole, with no index: what Gemini's compatible endpoint sends.
    assert deltas and all(call.index is None for call in deltas)
    assert all(call.function and call.function.arguments for call in deltas)
    with pytest.raises(TypeError, match="list indices must be integers"):
        accumulate(state, chunks)
    # The runner keeps every one of those calls, in order, none glued to another.
    assert [(c.id, c.function.name, json.loads(c.function.arguments)) for c in deltas] == (  # type: ignore[union-attr]
        runner_calls(row)
    )
