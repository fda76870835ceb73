"""The shapes of real Vertex traffic the simulator produces: tool calls (fragmented by vLLM,
whole and index-less from Gemini), several candidates, in-stream errors, 499s and HTML
pages, safety blocks, implicit-cache hits, vLLM's usage rule, and the request record.
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from typing import Any

import aiohttp
import pytest
from sim_http import post, stream

from batchrunner.simulator import SimulatorConfig, open_simulator
from batchrunner.simulator.config import shape_settings

pytestmark = pytest.mark.anyio

GEMINI = "google/gemini-2.5-flash"
GEMINI_20 = "google/gemini-2.0-flash"
GPT_OSS = "openai/gpt-oss-120b-maas"
RAW_BLOCKS = {"SAFETY", "RECITATION", "PROHIBITED_CONTENT", "SPII", "BLOCKLIST", "content_filter"}
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather for a city",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string"},
                "days": {"type": "integer", "minimum": 1, "maximum": 7},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
                "hourly": {"type": "boolean"},
            },
            "required": ["city", "unit"],
        },
    },
}
CLOCK = {
    "type": "function",
    "function": {"name": "get_time", "parameters": {"type": "object", "properties": {}}},
}


def config(**changes: Any) -> SimulatorConfig:
    base: dict[str, Any] = {
        "static_tokens": ("test-token",),
        "latency": "zero",
        "default_quotas": False,  # MaaS token quotas would refuse back-to-back long answers
    }
    return SimulatorConfig(**{**base, **changes})


def ask(text: str, model: str = GEMINI, **extra: Any) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": text}], **extra}


def assert_weather_arguments(arguments: str) -> None:
    value = json.loads(arguments)
    assert {"city", "unit"} <= set(value) <= {"city", "days", "unit", "hourly"}
    assert isinstance(value["city"], str)
    assert value["unit"] in ("celsius", "fahrenheit")
    if "days" in value:
        assert 1 <= value["days"] <= 7


# -- tool calls ----------------------------------------------------------------------------


@pytest.mark.parametrize("model", [GEMINI, GPT_OSS])
async def test_required_tool_choice_answers_with_schema_valid_tool_calls(
    http: aiohttp.ClientSession, model: str
) -> None:
    async with open_simulator(config()) as sim:
        body = ask("Weather in Paris?", model, tools=[WEATHER], tool_choice="required")
        answer = await post(http, sim.base_url(), body)
    assert answer.status == 200
    choice = answer.body["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    calls = choice["message"]["tool_calls"]
    assert calls
    prefix = "function-call-" if model == GEMINI else "chatcmpl-tool-"
    for call in calls:
        assert call["type"] == "function"
        assert call["id"].startswith(prefix)
        assert call["function"]["name"] == "get_weather"
        assert_weather_arguments(call["function"]["arguments"])


async def test_auto_tool_choice_calls_tools_only_at_tool_call_rate(
    http: aiohttp.ClientSession,
) -> None:
    seen = {}
    for rate in (0.0, 1.0):
        async with open_simulator(config(tool_call_rate=rate)) as sim:
            answer = await post(http, sim.base_url(), ask("Weather?", tools=[WEATHER]))
        seen[rate] = answer.body["choices"][0]
    assert "tool_calls" not in seen[0.0]["message"]
    assert seen[0.0]["finish_reason"] == "stop"
    assert seen[1.0]["finish_reason"] == "tool_calls"


async def test_tool_choice_none_never_calls_and_a_named_function_is_always_the_one_called(
    http: aiohttp.ClientSession,
) -> None:
    async with open_simulator(config(tool_call_rate=1.0, parallel_tool_call_rate=1.0)) as sim:
        none = await post(http, sim.base_url(), ask("x", tools=[WEATHER], tool_choice="none"))
        named_choice = {"type": "function", "function": {"name": "get_time"}}
        named = await post(
            http, sim.base_url(), ask("x", tools=[WEATHER, CLOCK], tool_choice=named_choice)
        )
    assert "tool_calls" not in none.body["choices"][0]["message"]
    names = {c["function"]["name"] for c in named.body["choices"][0]["message"]["tool_calls"]}
    assert names == {"get_time"}


async def test_parallel_tool_calls_false_makes_exactly_one_call(
    http: aiohttp.ClientSession,
) -> None:
    async with open_simulator(config(parallel_tool_call_rate=1.0)) as sim:
        parallel = await post(
            http, sim.base_url(), ask("x", tools=[WEATHER], tool_choice="required")
        )
        single = await post(
            http,
            sim.base_url(),
            ask("x", tools=[WEATHER], tool_choice="required", parallel_tool_calls=False),
        )
    assert len(parallel.body["choices"][0]["message"]["tool_calls"]) in (2, 3)
    assert len(single.body["choices"][0]["message"]["tool_calls"]) == 1


async def test_tool_calls_can_come_with_text_in_the_same_message(
    http: aiohttp.ClientSession,
) -> None:
    async with open_simulator(config(tool_text_rate=1.0)) as sim:
        for model in (GEMINI, GPT_OSS):
            body = ask("x", model, tools=[WEATHER], tool_choice="required")
            message = (await post(http, sim.base_url(), body)).body["choices"][0]["message"]
            assert message["content"]
            assert message["tool_calls"]


async def test_invalid_tool_arguments_rate_sends_arguments_that_do_not_parse(
    http: aiohttp.ClientSession,
) -> None:
    async with open_simulator(config(invalid_tool_arguments_rate=1.0)) as sim:
        body = ask("x", tools=[WEATHER], tool_choice="required")
        calls = (await post(http, sim.base_url(), body)).body["choices"][0]["message"]["tool_calls"]
    for call in calls:
        with pytest.raises(json.JSONDecodeError):
            json.loads(call["function"]["arguments"])


async def test_gpt_oss_streams_tool_calls_as_openai_fragments_keyed_by_index(
    http: aiohttp.ClientSession,
) -> None:
    async with open_simulator(config(parallel_tool_call_rate=1.0)) as sim:
        body = ask("Weather in two cities", GPT_OSS, tools=[WEATHER], tool_choice="required")
        whole = await post(http, sim.base_url(), body)
        streamed = await stream(http, sim.base_url(), body)
    assert streamed.done
    fragments: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for event in streamed.events:
        for choice in event["choices"]:
            for call in choice["delta"].get("tool_calls", []):
                fragments[call["index"]].append(call)
    expected = whole.body["choices"][0]["message"]["tool_calls"]
    assert sorted(fragments) == list(range(len(expected)))
    for index, call in enumerate(expected):
        first, *later = fragments[index]
        assert first["id"] == call["id"] and first["type"] == "function"
        assert first["function"]["name"] == call["function"]["name"]
        assert first["function"]["arguments"]  # a first piece of the arguments
        assert all(set(f) == {"index", "function"} for f in later)
        assert all(set(f["function"]) == {"arguments"} for f in later)
        text = "".join(f["function"]["arguments"] for f in fragments[index])
        assert text == call["function"]["arguments"]
        assert_weather_arguments(text)
    assert streamed.events[-1]["choices"][0]["finish_reason"] == "tool_calls"


async def test_gemini_streams_whole_tool_calls_without_index_sometimes_ending_stop(
    http: aiohttp.ClientSession,
) -> None:
    finishes = set()
    shared_ids = 0
    async with open_simulator(config(parallel_tool_call_rate=1.0)) as sim:
        for k in range(16):
            body = ask(f"Weather, take {k}", tools=[WEATHER], tool_choice="required")
            streamed = await stream(http, sim.base_url(), body)
            calls = [
                call
                for event in streamed.events
                for call in event["choices"][0]["delta"].get("tool_calls", [])
            ]
            assert len(calls) >= 2
            for call in calls:
                assert "index" not in call
                assert_weather_arguments(call["function"]["arguments"])
            shared_ids += len({c["id"] for c in calls}) < len(calls)
            finishes.add(streamed.events[-1]["choices"][0]["finish_reason"])
    assert finishes == {"stop", "tool_calls"}
    assert 0 < shared_ids < 16  # parallel calls repeat one id on some answers only


async def test_same_body_gets_the_same_tool_calls(http: aiohttp.ClientSession) -> None:
    async with open_simulator(config(tool_call_rate=0.5)) as sim:
        body = ask("Which city?", tools=[WEATHER, CLOCK])
        first = await post(http, sim.base_url(), body)
        second = await post(http, sim.base_url(), body)
    assert first.body["choices"] == second.body["choices"]


# -- several candidates --------------------------------------------------------------------


@pytest.mark.parametrize("model", [GEMINI_20, GPT_OSS])
async def test_n_candidates_have_distinct_text_and_usage_sums_them(
    http: aiohttp.ClientSession, model: str
) -> None:
    async with open_simulator(config(keep_records=True)) as sim:
        one = await post(http, sim.base_url(), ask("Write a line.", model))
        three = await post(http, sim.base_url(), ask("Write a line.", model, n=3))
    texts = [c["message"]["content"] for c in three.body["choices"]]
    assert [c["index"] for c in three.body["choices"]] == [0, 1, 2]
    assert len(set(texts)) == 3
    usage = three.body["usage"]
    if model == GEMINI_20:  # Gemini counts each candidate's words as completion tokens
        words = sum(len(re.findall(r"\w+", t)) for t in texts)
        assert usage["completion_tokens"] == words
    assert usage["completion_tokens"] > one.body["usage"]["completion_tokens"] * 2
    assert usage["prompt_tokens"] == one.body["usage"]["prompt_tokens"]
    assert sim.records[1]["n"] == 3


@pytest.mark.parametrize("model", [GEMINI_20, GPT_OSS])
async def test_streamed_candidates_are_interleaved_by_choice_index(
    http: aiohttp.ClientSession, model: str
) -> None:
    async with open_simulator(config()) as sim:
        body = ask("Write a long paragraph " + "please " * 400, model, n=2)
        whole = await post(http, sim.base_url(), body)
        streamed = await stream(http, sim.base_url(), body)
    order = [e["choices"][0]["index"] for e in streamed.events if e["choices"]]
    assert order[:4] == [0, 1, 0, 1]
    texts: dict[int, str] = defaultdict(str)
    for event in streamed.events:
        for choice in event["choices"]:
            texts[choice["index"]] += choice["delta"].get("content") or ""
    assert [texts[0], texts[1]] == [c["message"]["content"] for c in whole.body["choices"]]
    finals = [e for e in streamed.events if e["choices"] and e["choices"][0].get("finish_reason")]
    assert sorted(e["choices"][0]["index"] for e in finals) == [0, 1]


# -- statuses and in-stream errors ---------------------------------------------------------


async def test_499_fault_is_cancelled_with_googles_backend_error_envelope(
    http: aiohttp.ClientSession,
) -> None:
    async with open_simulator(config(faults={"499": 1.0})) as sim:
        answer = await post(http, sim.base_url(), ask("x"))
    assert answer.status == 499
    (envelope,) = answer.body
    error = envelope["error"]
    assert error["status"] == "CANCELLED"
    assert error["message"] == "The operation was cancelled."
    assert error["errors"] == [
        {"message": "The operation was cancelled.", "domain": "global", "reason": "backendError"}
    ]


async def test_html_200_fault_answers_a_front_end_page_with_status_200(
    http: aiohttp.ClientSession,
) -> None:
    async with open_simulator(config(faults={"html_200": 1.0}, keep_records=True)) as sim:
        answer = await post(http, sim.base_url(), ask("x"))
    assert answer.status == 200
    assert answer.content_type.startswith("text/html")
    assert "That\u2019s an error." in answer.body
    (record,) = sim.records
    assert record["fault"] == "html_200" and record["prompt_tokens"] is None


async def test_stream_error_fault_ends_a_200_stream_with_an_error_event_after_content(
    http: aiohttp.ClientSession,
) -> None:
    forms = set()
    codes = set()
    async with open_simulator(config(faults={"stream_error": 1.0}, keep_records=True)) as sim:
        for k in range(12):
            body = ask(f"Long answer {k} " + "word " * 600, GEMINI_20)
            streamed = await stream(http, sim.base_url(), body)
            assert streamed.status == 200
            assert not streamed.done
            *content, last = streamed.events
            assert content and all("choices" in e for e in content)
            assert any(e["choices"][0]["delta"].get("content") for e in content)
            forms.add(type(last).__name__)
            error = (last[0] if isinstance(last, list) else last)["error"]
            codes.add(error["code"])
            assert error["status"] == {429: "RESOURCE_EXHAUSTED", 503: "UNAVAILABLE"}[error["code"]]
    assert forms == {"list", "dict"}
    assert codes == {429, 503}
    assert all(r["stream_error"] in (429, 503) for r in sim.records)
    assert all(r["completion_tokens"] is None for r in sim.records)
    assert sim.statistics().completion_tokens == 0


async def test_stream_error_fault_on_a_plain_request_is_the_same_status_outside_a_stream(
    http: aiohttp.ClientSession,
) -> None:
    async with open_simulator(config(faults={"stream_error": 1.0})) as sim:
        answer = await post(http, sim.base_url(), ask("x"))
    assert answer.status in (429, 503)


# -- safety blocks -------------------------------------------------------------------------


async def test_filter_trigger_blocks_the_answer_with_a_raw_gemini_finish_reason(
    http: aiohttp.ClientSession,
) -> None:
    reasons = set()
    async with open_simulator(config()) as sim:
        for k in range(30):
            answer = await post(http, sim.base_url(), ask(f"__filter__ try {k}"))
            choice = answer.body["choices"][0]
            assert "content" not in choice["message"]
            reasons.add(choice["finish_reason"])
            assert answer.body["usage"]["completion_tokens"] == 0
    assert reasons <= RAW_BLOCKS
    assert {"SAFETY", "RECITATION"} <= reasons


@pytest.mark.parametrize("reason", sorted(RAW_BLOCKS))
async def test_named_filter_trigger_blocks_with_that_reason_streamed_and_not(
    http: aiohttp.ClientSession, reason: str
) -> None:
    async with open_simulator(config()) as sim:
        body = ask(f"tell me __filter:{reason}__")
        whole = await post(http, sim.base_url(), body)
        streamed = await stream(http, sim.base_url(), body)
    assert whole.body["choices"][0]["finish_reason"] == reason
    (event,) = streamed.events
    assert event["choices"][0]["finish_reason"] == reason
    assert "content" not in event["choices"][0]["delta"]


async def test_gpt_oss_filtered_answer_says_content_filter_with_null_content(
    http: aiohttp.ClientSession,
) -> None:
    async with open_simulator(config()) as sim:
        answer = await post(http, sim.base_url(), ask("__filter:SAFETY__", GPT_OSS))
    choice = answer.body["choices"][0]
    assert choice["finish_reason"] == "content_filter"
    assert choice["message"]["content"] is None


async def test_safety_block_rate_blocks_gemini_answers_without_a_trigger(
    http: aiohttp.ClientSession,
) -> None:
    async with open_simulator(config(safety_block_rate=1.0)) as sim:
        answer = await post(http, sim.base_url(), ask("harmless"))
        oss = await post(http, sim.base_url(), ask("harmless", GPT_OSS))
    assert answer.body["choices"][0]["finish_reason"] in RAW_BLOCKS
    assert oss.body["choices"][0]["finish_reason"] == "stop"  # rates are for Gemini only


async def test_block_trigger_is_a_400_request_blocked_never_worth_retrying(
    http: aiohttp.ClientSession,
) -> None:
    async with open_simulator(config(array_errors=False)) as sim:
        answer = await post(http, sim.base_url(), ask("please __block__ this"))
    assert answer.status == 400
    error = answer.body["error"]
    assert error["status"] == "INVALID_ARGUMENT"
    assert error["message"].startswith("Request blocked")


async def test_prompt_block_rate_refuses_prompts_with_the_same_400(
    http: aiohttp.ClientSession,
) -> None:
    async with open_simulator(config(prompt_block_rate=1.0)) as sim:
        answer = await post(http, sim.base_url(), ask("harmless"))
    assert answer.status == 400
    assert answer.body[0]["error"]["message"].startswith("Request blocked")


async def test_block_empty_trigger_answers_200_with_no_candidates(
    http: aiohttp.ClientSession,
) -> None:
    async with open_simulator(config()) as sim:
        body = ask("__block_empty__")
        whole = await post(http, sim.base_url(), body)
        streamed = await stream(http, sim.base_url(), body)
    assert whole.status == 200
    assert whole.body["choices"] == []
    assert whole.body["usage"]["completion_tokens"] == 0
    (event,) = streamed.events
    assert event["choices"] == [] and event["usage"]["prompt_tokens"] > 0


# -- implicit caching ----------------------------------------------------------------------


def shared_prefix(question: str, model: str = GEMINI) -> dict[str, Any]:
    system = "You are a careful assistant. " + "Reference text. " * 900  # ~3,600 tokens
    return {
        "model": model,
        "messages": [
            {"role": "system", "content": system},
            {"role": "user", "content": question},
        ],
    }


async def test_prompts_sharing_a_long_prefix_report_cached_tokens(
    http: aiohttp.ClientSession,
) -> None:
    async with open_simulator(config(implicit_cache=True, keep_records=True)) as sim:
        first = await post(http, sim.base_url(), shared_prefix("First question?"))
        second = await post(http, sim.base_url(), shared_prefix("A different question?"))
        streamed = await stream(http, sim.base_url(), shared_prefix("A third one?"))
        short = await post(http, sim.base_url(), ask("short"))
        await post(http, sim.base_url(), ask("short"))
    assert "prompt_tokens_details" not in first.body["usage"]
    cached = second.body["usage"]["prompt_tokens_details"]["cached_tokens"]
    assert 2048 <= cached <= second.body["usage"]["prompt_tokens"]
    assert streamed.events[-1]["usage"]["prompt_tokens_details"]["cached_tokens"] >= 2048
    assert "prompt_tokens_details" not in short.body["usage"]
    assert [r["cached_tokens"] for r in sim.records] == [None, cached, cached, None, None]
    assert sim.statistics().cached_tokens == 2 * cached


async def test_implicit_cache_is_off_by_default_and_for_gemini_2_0(
    http: aiohttp.ClientSession,
) -> None:
    async with open_simulator(config()) as sim:
        for _ in range(2):
            default = await post(http, sim.base_url(), shared_prefix("Same?"))
    async with open_simulator(config(implicit_cache=True)) as sim:
        for _ in range(2):
            old = await post(http, sim.base_url(), shared_prefix("Same?", GEMINI_20))
    assert "prompt_tokens_details" not in default.body["usage"]
    assert "prompt_tokens_details" not in old.body["usage"]


# -- gpt-oss conventions -------------------------------------------------------------------


async def test_gpt_oss_sends_both_reasoning_fields_by_default_and_only_reasoning_when_realistic(
    http: aiohttp.ClientSession,
) -> None:
    async with open_simulator(config()) as sim:
        fast = await post(http, sim.base_url(), ask("x", GPT_OSS))
    realistic = config(latency="realistic", ttft_s=0.0, tokens_per_s=1e9, background_faults=False)
    async with open_simulator(realistic) as sim:
        real = await post(http, sim.base_url(), ask("x", GPT_OSS))
    fast_keys = {k for k in fast.body["choices"][0]["message"] if k.startswith("reasoning")}
    real_keys = {k for k in real.body["choices"][0]["message"] if k.startswith("reasoning")}
    assert fast_keys == {"reasoning", "reasoning_content"}
    assert real_keys == {"reasoning"}


async def test_vllm_usage_rule_streams_usage_only_when_include_usage_asks(
    http: aiohttp.ClientSession,
) -> None:
    async with open_simulator(config(vllm_stream_usage="requested", keep_records=True)) as sim:
        silent = await stream(http, sim.base_url(), ask("x", GPT_OSS))
        asked = await stream(
            http, sim.base_url(), ask("x", GPT_OSS, stream_options={"include_usage": True})
        )
        gemini = await stream(http, sim.base_url(), ask("x"))
    assert all("usage" not in e for e in silent.events)
    assert asked.events[-1]["choices"] == [] and asked.events[-1]["usage"]["total_tokens"] > 0
    assert all("usage" not in e for e in asked.events[:-1])
    assert "usage" in gemini.events[-1]  # Gemini sends usage whatever stream_options say
    assert sim.records[0]["reported_total_tokens"] is None
    assert sim.records[0]["total_tokens"] > 0  # the server still knows what it generated


def test_realistic_latency_turns_on_the_real_traffic_defaults() -> None:
    real = shape_settings(SimulatorConfig(latency="realistic"))
    fast = shape_settings(SimulatorConfig())
    assert real.dsq_capacity is not None and fast.dsq_capacity is None
    assert real.vllm_usage_when_requested and not fast.vllm_usage_when_requested
    assert real.implicit_cache and not fast.implicit_cache
    assert real.tool_call_rate > 0 and fast.tool_call_rate == 0
    assert 0 < real.safety_block_rate < 0.01 and fast.safety_block_rate == 0
    off = shape_settings(SimulatorConfig(latency="realistic", shared_pool=False))
    assert off.dsq_capacity is None
    assert shape_settings(SimulatorConfig(dsq_capacity=3)).dsq_capacity == 3


async def test_realistic_latency_injects_rare_background_faults_unless_turned_off(
    http: aiohttp.ClientSession,
) -> None:
    from batchrunner.simulator.config import effective_faults

    real = SimulatorConfig(latency="realistic")
    assert set(effective_faults(real)) == {"499", "html_200", "stream_error"}
    assert all(0 < p < 0.01 for p in effective_faults(real).values())
    assert effective_faults(SimulatorConfig(latency="realistic", background_faults=False)) == {}
    assert effective_faults(SimulatorConfig(latency="realistic", faults={"499": 0.5}))["499"] == 0.5
    assert effective_faults(SimulatorConfig()) == {}


# -- the record of what was served ---------------------------------------------------------


async def test_request_record_and_statistics_hold_what_each_answer_served(
    http: aiohttp.ClientSession,
) -> None:
    async with open_simulator(config(keep_records=True, parallel_tool_call_rate=1.0)) as sim:
        tools = await post(
            http, sim.base_url(), ask("x", GPT_OSS, tools=[WEATHER], tool_choice="required")
        )
        blocked = await stream(http, sim.base_url(), ask("__filter:SPII__", n=2))
        plain = await post(http, sim.base_url(), ask("hello"))
        stats = sim.statistics()
    calls = len(tools.body["choices"][0]["message"]["tool_calls"])
    first, second, third = sim.records
    assert (first["tool_calls"], first["n"], first["finish_reasons"]) == (
        calls,
        1,
        ["tool_calls"],
    )
    assert first["tool_calls_per_choice"] == [calls]
    assert first["traffic_type"] == "ON_DEMAND"
    assert second["n"] == 2 and second["finish_reasons"] == ["SPII", "SPII"]
    assert second["tool_calls"] == 0
    assert blocked.done
    assert third["finish_reasons"] == [plain.body["choices"][0]["finish_reason"]]
    assert third["cached_tokens"] is None
    assert stats.tool_calls == calls
    assert stats.by_finish_reason["SPII"] == 2
    assert stats.by_traffic_type == {"ON_DEMAND": 3}
