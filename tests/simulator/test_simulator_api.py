"""The simulator's chat route: URL grammar, auth answers, validation and answer shapes."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import orjson
import pytest

from batchrunner.simulator import SimulatorConfig, open_simulator
from batchrunner.simulator.server import Simulator

pytestmark = pytest.mark.anyio

GEMINI = "google/gemini-2.5-flash"
GPT_OSS = "openai/gpt-oss-120b-maas"
HELLO = [{"role": "user", "content": "Say something about batches of prompts."}]
RESPONSE_ID = re.compile(r"^[A-Za-z0-9_-]{22,23}$")


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    async with open_simulator(SimulatorConfig(static_tokens=("test-token",))) as simulator:
        yield simulator


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


AUTH = {"Authorization": "Bearer test-token"}


async def post(
    http: aiohttp.ClientSession,
    url: str,
    body: Any,
    headers: dict[str, str] | None = None,
) -> tuple[int, Any, aiohttp.ClientResponse]:
    data = body if isinstance(body, bytes) else orjson.dumps(body)
    async with http.post(
        url + "/chat/completions", data=data, headers=AUTH if headers is None else headers
    ) as response:
        raw = await response.read()
        try:
            parsed = orjson.loads(raw)
        except orjson.JSONDecodeError:
            parsed = raw.decode()
        return response.status, parsed, response


def sse_payloads(text: str) -> list[str]:
    assert text.endswith("\n\n")
    events = text.split("\n\n")[:-1]
    assert all(e.startswith("data: ") for e in events)
    return [e.removeprefix("data: ") for e in events]


async def stream(http: aiohttp.ClientSession, url: str, body: dict[str, Any]) -> list[Any]:
    async with http.post(url + "/chat/completions", json=body, headers=AUTH) as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/event-stream")
        payloads = sse_payloads((await response.read()).decode())
    assert payloads[-1] == "[DONE]"
    return [orjson.loads(p) for p in payloads[:-1]]


# -- URL grammar ---------------------------------------------------------------------------


@pytest.mark.parametrize("version", ["v1", "v1beta1"])
@pytest.mark.parametrize("location", ["global", "us-central1", "europe-west4"])
async def test_chat_route_serves_both_versions_global_and_regional(
    sim: Simulator, http: aiohttp.ClientSession, version: str, location: str
) -> None:
    url = sim.base_url(location=location, version=version)
    status, body, _ = await post(http, url, {"model": GEMINI, "messages": HELLO})
    assert status == 200
    assert body["object"] == "chat.completion"


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/v1/projects/sim-project/locations/global/endpoints/openapi/models"),
        ("POST", "/v1/projects/sim-project/locations/global/endpoints/openapi/completions"),
        ("POST", "/v2/projects/sim-project/locations/global/endpoints/openapi/chat/completions"),
        ("POST", "/v1/projects/sim-project/locations/global/endpoints/abc/chat/completions"),
        ("GET", "/v1/projects/sim-project/locations/global/endpoints/openapi/chat/completions"),
    ],
)
async def test_anything_but_the_chat_route_is_google_html_404(
    sim: Simulator, http: aiohttp.ClientSession, method: str, path: str
) -> None:
    async with http.request(method, sim.root_url + path, headers=AUTH) as response:
        assert response.status == 404
        assert response.headers["Content-Type"].startswith("text/html")
        text = await response.text()
    assert "Error 404 (Not Found)!!1" in text
    assert "was not found on this server" in text


async def test_unknown_model_is_404_publisher_model_not_found(
    sim: Simulator, http: aiohttp.ClientSession
) -> None:
    status, body, response = await post(
        http, sim.base_url(), {"model": "openai/gpt-oss", "messages": HELLO}
    )
    assert status == 404
    assert response.headers["Content-Type"].startswith("application/json")
    error = body[0]["error"]
    assert error["status"] == "NOT_FOUND"
    assert error["message"].startswith(
        "Publisher Model `projects/sim-project/locations/global/publishers/openai/models/gpt-oss`"
        " was not found or your project does not have access to it."
    )


async def test_model_not_offered_in_location_is_404(
    sim: Simulator, http: aiohttp.ClientSession
) -> None:
    body = {"model": "openai/gpt-oss-20b-maas", "messages": HELLO}
    status, _, _ = await post(http, sim.base_url("global"), body)
    assert status == 404
    status, _, _ = await post(http, sim.base_url("us-central1"), body)
    assert status == 200


async def test_numeric_endpoint_serves_any_model_in_vllm_shape(
    sim: Simulator, http: aiohttp.ClientSession
) -> None:
    url = sim.base_url("us-central1", endpoint="1234567890123456789")
    status, body, _ = await post(http, url, {"model": "gemma-2-9b-it", "messages": HELLO})
    assert status == 200
    assert body["id"].startswith("chatcmpl-")
    assert body["model"] == "gemma-2-9b-it"
    status, body, _ = await post(http, url, {"messages": HELLO})
    assert status == 200


async def test_other_project_is_403_permission_denied(
    sim: Simulator, http: aiohttp.ClientSession
) -> None:
    url = sim.base_url().replace("sim-project", "someone-else")
    status, body, _ = await post(http, url, {"model": GEMINI, "messages": HELLO})
    assert status == 403
    assert body[0]["error"]["status"] == "PERMISSION_DENIED"


async def test_google_host_header_must_match_location(
    sim: Simulator, http: aiohttp.ClientSession
) -> None:
    headers = {**AUTH, "Host": "us-central1-aiplatform.googleapis.com"}
    body = {"model": GEMINI, "messages": HELLO}
    status, _, _ = await post(http, sim.base_url("global"), body, headers)
    assert status == 400
    status, _, _ = await post(http, sim.base_url("us-central1"), body, headers)
    assert status == 200


# -- auth ----------------------------------------------------------------------------------


async def test_missing_bearer_is_401_credentials_missing(
    sim: Simulator, http: aiohttp.ClientSession
) -> None:
    status, body, response = await post(
        http, sim.base_url(), {"model": GEMINI, "messages": HELLO}, headers={}
    )
    assert status == 401
    assert response.headers["WWW-Authenticate"].startswith(
        'Bearer realm="https://accounts.google.com/"'
    )
    error = body[0]["error"]
    assert error["status"] == "UNAUTHENTICATED"
    assert error["details"][0]["reason"] == "CREDENTIALS_MISSING"
    assert "Retry-After" not in response.headers


async def test_unknown_token_is_401_invalid_token(
    sim: Simulator, http: aiohttp.ClientSession
) -> None:
    status, body, response = await post(
        http,
        sim.base_url(),
        {"model": GEMINI, "messages": HELLO},
        headers={"Authorization": "Bearer ya29.not-a-token"},
    )
    assert status == 401
    assert response.headers["WWW-Authenticate"] == (
        'Bearer realm="https://accounts.google.com/", error="invalid_token"'
    )
    error = body[0]["error"]
    assert error["message"].startswith("Request had invalid authentication credentials.")
    assert error["details"][0]["@type"] == "type.googleapis.com/google.rpc.ErrorInfo"
    assert error["details"][0]["domain"] == "googleapis.com"


async def test_issued_token_expires_on_the_injected_clock(http: aiohttp.ClientSession) -> None:
    now = [1000.0]
    config = SimulatorConfig(token_ttl=60.0, clock=lambda: now[0])
    async with open_simulator(config) as sim:
        token = sim.issue_token()
        assert token.startswith("ya29.")
        headers = {"Authorization": f"Bearer {token}"}
        body = {"model": GEMINI, "messages": HELLO}
        assert (await post(http, sim.base_url(), body, headers))[0] == 200
        now[0] += 59.0
        assert (await post(http, sim.base_url(), body, headers))[0] == 200
        now[0] += 1.0
        status, error, response = await post(http, sim.base_url(), body, headers)
        assert status == 401
        assert error[0]["error"]["details"][0]["reason"] == "ACCESS_TOKEN_EXPIRED"
        assert 'error="invalid_token"' in response.headers["WWW-Authenticate"]
        short = sim.issue_token(ttl=5.0)
        now[0] += 4.0
        status, _, _ = await post(http, sim.base_url(), body, {"Authorization": f"Bearer {short}"})
        assert status == 200


async def test_require_auth_false_accepts_requests_without_a_token(
    http: aiohttp.ClientSession,
) -> None:
    async with open_simulator(SimulatorConfig(require_auth=False)) as sim:
        status, _, _ = await post(http, sim.base_url(), {"model": GEMINI, "messages": HELLO}, {})
    assert status == 200


async def test_object_envelope_when_array_errors_is_off(http: aiohttp.ClientSession) -> None:
    async with open_simulator(SimulatorConfig(array_errors=False)) as sim:
        status, body, _ = await post(http, sim.base_url(), {"model": GEMINI, "messages": HELLO}, {})
    assert status == 401
    assert body["error"]["code"] == 401


# -- validation ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"{not json", "Invalid JSON payload received."),
        ({"model": GEMINI, "messages": "hi"}, "Request contains an invalid argument."),
        ({"model": GEMINI, "messages": []}, "Request contains an invalid argument."),
        ({"messages": HELLO}, "Required field `model` is missing."),
        (
            {"model": GEMINI, "messages": HELLO, "n": 9},
            "Invalid value of n: should be between 1 and 8, got 9",
        ),
        (
            {"model": GEMINI, "messages": HELLO, "reasoning_effort": "none"},
            "Expected 'reasoning_effort' to be one of: 'high','low','medium','minimal'",
        ),
        (
            {
                "model": GEMINI,
                "messages": HELLO,
                "reasoning_effort": "low",
                "extra_body": {"google": {"thinking_config": {"thinking_budget": 10}}},
            },
            "Only one of 'reasoning_effort'",
        ),
        (
            {"model": GEMINI, "messages": HELLO, "max_tokens": 70000},
            "Unable to submit request because it has a maxOutputTokens value of 70000",
        ),
        (
            {
                "model": "google/gemini-2.5-pro",
                "messages": HELLO,
                "google": {"thinking_config": {"thinking_budget": 0}},
            },
            "Budget 0 is invalid. This model only works in thinking mode.",
        ),
    ],
)
async def test_invalid_requests_are_400_invalid_argument(
    sim: Simulator, http: aiohttp.ClientSession, body: Any, message: str
) -> None:
    status, answer, _ = await post(http, sim.base_url(), body)
    assert status == 400
    error = answer[0]["error"]
    assert error["status"] == "INVALID_ARGUMENT"
    assert error["code"] == 400
    assert error["message"].startswith(message)


async def test_prompt_over_the_context_window_is_400_with_the_token_counts(
    sim: Simulator, http: aiohttp.ClientSession
) -> None:
    long_prompt = [{"role": "user", "content": "x" * (4 * 131_072)}]
    status, answer, _ = await post(
        http, sim.base_url("europe-west9"), {"model": GEMINI, "messages": long_prompt}
    )
    assert status == 400
    assert re.fullmatch(
        r"The input token count \(\d+\) exceeds the maximum number of tokens allowed \(131072\)\.",
        answer[0]["error"]["message"],
    )
    status, _, _ = await post(
        http, sim.base_url("global"), {"model": GEMINI, "messages": long_prompt}
    )
    assert status == 200


async def test_unknown_parameters_are_ignored(sim: Simulator, http: aiohttp.ClientSession) -> None:
    body = {"model": GEMINI, "messages": HELLO, "logit_bias": {"1": 2}, "frobnicate": True}
    status, _, _ = await post(http, sim.base_url(), body)
    assert status == 200


# -- answer shapes -------------------------------------------------------------------------


async def test_gemini_answer_has_vertex_shape_and_sorted_keys(
    sim: Simulator, http: aiohttp.ClientSession
) -> None:
    body = {"model": GEMINI, "messages": HELLO, "max_tokens": 20000}
    async with http.post(sim.base_url() + "/chat/completions", json=body, headers=AUTH) as r:
        raw = await r.read()
        assert r.headers["Content-Type"].startswith("application/json")
        assert "Retry-After" not in r.headers
    answer = orjson.loads(raw)
    assert raw == orjson.dumps(answer, option=orjson.OPT_SORT_KEYS)
    assert list(answer) == [
        "choices",
        "created",
        "id",
        "model",
        "object",
        "system_fingerprint",
        "usage",
    ]
    assert RESPONSE_ID.match(answer["id"])
    assert isinstance(answer["created"], int)
    assert answer["model"] == GEMINI
    assert answer["system_fingerprint"] == ""
    choice = answer["choices"][0]
    assert choice["logprobs"] is None
    assert choice["finish_reason"] == "stop"
    assert choice["message"]["role"] == "assistant"
    assert choice["message"]["content"]
    usage = answer["usage"]
    reasoning = usage["completion_tokens_details"]["reasoning_tokens"]
    assert reasoning > 0  # 2.5 Flash thinks by default
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"] + reasoning
    assert usage["extra_properties"] == {"google": {"traffic_type": "ON_DEMAND"}}


@pytest.mark.parametrize("model", ["google/gemini-2.5-flash-lite", "google/gemini-2.0-flash-001"])
async def test_gemini_without_thinking_has_no_completion_tokens_details(
    sim: Simulator, http: aiohttp.ClientSession, model: str
) -> None:
    _, answer, _ = await post(http, sim.base_url(), {"model": model, "messages": HELLO})
    usage = answer["usage"]
    assert "completion_tokens_details" not in usage
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]


@pytest.mark.parametrize(
    "extras",
    [
        {"extra_body": {"google": {"thinking_config": {"thinking_budget": 0}}}},
        {"google": {"thinking_config": {"thinking_budget": 0}}},
    ],
)
async def test_thinking_budget_zero_turns_off_gemini_flash_thinking(
    sim: Simulator, http: aiohttp.ClientSession, extras: dict[str, Any]
) -> None:
    _, answer, _ = await post(http, sim.base_url(), {"model": GEMINI, "messages": HELLO, **extras})
    assert "completion_tokens_details" not in answer["usage"]


async def test_gemini_pro_always_thinks(sim: Simulator, http: aiohttp.ClientSession) -> None:
    body = {"model": "google/gemini-2.5-pro", "messages": HELLO, "reasoning_effort": "minimal"}
    _, answer, _ = await post(http, sim.base_url(), body)
    assert answer["usage"]["completion_tokens_details"]["reasoning_tokens"] > 0


async def test_include_thoughts_with_marker_puts_tagged_thoughts_in_content(
    sim: Simulator, http: aiohttp.ClientSession
) -> None:
    google = {"thinking_config": {"include_thoughts": True}, "thought_tag_marker": "think"}
    body = {
        "model": GEMINI,
        "messages": HELLO,
        "max_tokens": 20000,
        "extra_body": {"google": google},
    }
    _, answer, _ = await post(http, sim.base_url(), body)
    assert re.match(r"^<think>.+</think>\S", answer["choices"][0]["message"]["content"])


async def test_gpt_oss_answer_has_vllm_shape_and_counts_reasoning_in_completion(
    sim: Simulator, http: aiohttp.ClientSession
) -> None:
    _, answer, _ = await post(http, sim.base_url(), {"model": GPT_OSS, "messages": HELLO})
    assert re.fullmatch(r"chatcmpl-[0-9a-f]{32}", answer["id"])
    assert answer["object"] == "chat.completion"
    message = answer["choices"][0]["message"]
    assert message["reasoning_content"]
    assert message["content"]
    usage = answer["usage"]
    assert "completion_tokens_details" not in usage
    assert "extra_properties" not in usage
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    assert usage["completion_tokens"] > len(message["content"].split())


async def test_gpt_oss_reasoning_grows_with_reasoning_effort(
    sim: Simulator, http: aiohttp.ClientSession
) -> None:
    lengths = {}
    for effort in ("low", "high"):
        body = {"model": GPT_OSS, "messages": HELLO, "reasoning_effort": effort}
        _, answer, _ = await post(http, sim.base_url(), body)
        lengths[effort] = len(answer["choices"][0]["message"]["reasoning_content"].split())
    assert lengths["low"] < lengths["high"]


@pytest.mark.parametrize(
    ("field", "keys"),
    [("reasoning", {"reasoning"}), ("both", {"reasoning", "reasoning_content"})],
)
async def test_gpt_oss_reasoning_field_is_configurable(
    http: aiohttp.ClientSession, field: str, keys: set[str]
) -> None:
    config = SimulatorConfig(static_tokens=("test-token",), reasoning_field=field)
    async with open_simulator(config) as sim:
        _, answer, _ = await post(http, sim.base_url(), {"model": GPT_OSS, "messages": HELLO})
    message = answer["choices"][0]["message"]
    assert {k for k in message if k.startswith("reasoning")} == keys


async def test_gemini_thinking_that_eats_max_tokens_ends_length_without_content(
    sim: Simulator, http: aiohttp.ClientSession
) -> None:
    body = {"model": "google/gemini-2.5-pro", "messages": HELLO, "max_tokens": 50}
    _, answer, _ = await post(http, sim.base_url(), body)
    choice = answer["choices"][0]
    assert choice["finish_reason"] == "length"
    assert "content" not in choice["message"]
    usage = answer["usage"]
    assert usage["completion_tokens"] == 0
    assert usage["completion_tokens_details"]["reasoning_tokens"] == 50


async def test_gpt_oss_reasoning_that_eats_max_tokens_ends_length_with_null_content(
    sim: Simulator, http: aiohttp.ClientSession
) -> None:
    body = {"model": GPT_OSS, "messages": HELLO, "max_tokens": 10}
    _, answer, _ = await post(http, sim.base_url(), body)
    choice = answer["choices"][0]
    assert choice["finish_reason"] == "length"
    assert choice["message"]["content"] is None
    assert answer["usage"]["completion_tokens"] == 10


async def test_max_tokens_cuts_content_with_finish_reason_length(
    sim: Simulator, http: aiohttp.ClientSession
) -> None:
    body = {"model": "google/gemini-2.0-flash-001", "messages": HELLO, "max_tokens": 5}
    _, answer, _ = await post(http, sim.base_url(), body)
    assert answer["choices"][0]["finish_reason"] == "length"
    assert answer["usage"]["completion_tokens"] == 5


async def test_same_body_gives_same_answer_and_longer_prompt_longer_answer(
    sim: Simulator, http: aiohttp.ClientSession
) -> None:
    model = "google/gemini-2.0-flash"
    body = {"model": model, "messages": HELLO}
    _, first, _ = await post(http, sim.base_url(), body)
    _, second, _ = await post(http, sim.base_url(), body)
    assert first["choices"] == second["choices"]
    assert first["usage"] == second["usage"]
    assert first["id"] != second["id"]
    long_body = {"model": model, "messages": [{"role": "user", "content": "word " * 4000}]}
    _, long, _ = await post(http, sim.base_url(), long_body)
    assert long["usage"]["prompt_tokens"] > 900
    assert long["usage"]["completion_tokens"] > 160


async def test_n_returns_that_many_choices(sim: Simulator, http: aiohttp.ClientSession) -> None:
    _, answer, _ = await post(http, sim.base_url(), {"model": GEMINI, "messages": HELLO, "n": 3})
    assert [c["index"] for c in answer["choices"]] == [0, 1, 2]


# -- streaming -----------------------------------------------------------------------------


async def test_gemini_stream_follows_vertex_chunk_rules(
    sim: Simulator, http: aiohttp.ClientSession
) -> None:
    body = {
        "model": "google/gemini-2.0-flash",
        "messages": [{"role": "user", "content": "y " * 2000}],
    }
    chunks = await stream(http, sim.base_url(), {**body, "stream": True})
    assert len(chunks) > 2
    ids = {c["id"] for c in chunks}
    assert len(ids) == 1 and RESPONSE_ID.match(ids.pop())
    for chunk in chunks:
        assert list(chunk) == sorted(chunk)
        assert chunk["object"] == "chat.completion.chunk"
        assert chunk["system_fingerprint"] == ""
        assert chunk["choices"][0]["delta"]["role"] == "assistant"
    for chunk in chunks[:-1]:
        assert "finish_reason" not in chunk["choices"][0]
        assert "usage" not in chunk
    final = chunks[-1]
    assert final["choices"][0]["finish_reason"] == "stop"
    assert final["usage"]["extra_properties"]["google"]["traffic_type"] == "ON_DEMAND"
    _, whole, _ = await post(http, sim.base_url(), body)
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks)
    assert text == whole["choices"][0]["message"]["content"]
    assert final["usage"] == whole["usage"]


async def test_gpt_oss_stream_sends_reasoning_first_then_content(
    sim: Simulator, http: aiohttp.ClientSession
) -> None:
    chunks = await stream(
        http, sim.base_url(), {"model": GPT_OSS, "messages": HELLO, "stream": True}
    )
    kinds = []
    for chunk in chunks:
        delta = chunk["choices"][0]["delta"]
        if "reasoning_content" in delta:
            kinds.append("r")
        elif delta.get("content"):
            kinds.append("c")
    assert kinds == sorted(kinds, key=lambda k: k == "c")
    assert "r" in kinds and "c" in kinds
    assert all(c["choices"][0]["finish_reason"] is None for c in chunks[:-1])
    final = chunks[-1]
    assert final["choices"][0]["finish_reason"] == "stop"
    usage = final["usage"]  # no include_usage: usage rides on the final chunk
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]


async def test_gpt_oss_stream_with_include_usage_ends_with_a_usage_only_chunk(
    sim: Simulator, http: aiohttp.ClientSession
) -> None:
    body = {
        "model": GPT_OSS,
        "messages": HELLO,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    chunks = await stream(http, sim.base_url(), body)
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"]["completion_tokens"] > 0
    assert all("usage" not in c for c in chunks[:-1])
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"


async def test_stream_respects_ttft_override(http: aiohttp.ClientSession) -> None:
    config = SimulatorConfig(
        static_tokens=("test-token",), ttft_s=0.15, tokens_per_s=10_000.0, keep_records=True
    )
    async with open_simulator(config) as sim:
        body = {"model": GEMINI, "messages": HELLO, "stream": True}
        await stream(http, sim.base_url(), body)
    (record,) = sim.records
    assert isinstance(record["first_byte_monotonic"], float)
    assert isinstance(record["arrival_monotonic"], float)
    assert record["first_byte_monotonic"] - record["arrival_monotonic"] >= 0.15
