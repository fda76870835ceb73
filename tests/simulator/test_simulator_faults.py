"""The simulator's quotas, shared-pool 429s, injected faults, request log and statistics."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import anyio
import openai
import orjson
import pytest

from batchrunner.simulator import SimulatorConfig, open_simulator

pytestmark = pytest.mark.anyio

AUTH = {"Authorization": "Bearer test-token"}
HELLO = [{"role": "user", "content": "Tell me about quotas."}]
GEMINI = "google/gemini-2.5-flash-lite"
GPT_OSS = "openai/gpt-oss-120b-maas"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def config(**changes: Any) -> SimulatorConfig:
    return SimulatorConfig(static_tokens=("test-token",), **changes)


async def chat(
    http: aiohttp.ClientSession, url: str, model: str = GEMINI, **extra: Any
) -> tuple[int, Any, aiohttp.ClientResponse]:
    body = {"model": model, "messages": HELLO, **extra}
    async with http.post(url + "/chat/completions", json=body, headers=AUTH) as response:
        raw = await response.read()
        try:
            return response.status, orjson.loads(raw), response
        except orjson.JSONDecodeError:
            return response.status, raw.decode(), response


# -- quotas --------------------------------------------------------------------------------


async def test_rpm_quota_is_a_refilling_bucket_on_the_injected_clock(
    http: aiohttp.ClientSession,
) -> None:
    clock = FakeClock()
    async with open_simulator(config(rpm_quota=120, clock=clock)) as sim:
        url = sim.base_url()
        assert [(await chat(http, url))[0] for _ in range(3)] == [200, 200, 429]
        status, body, response = await chat(http, url)
        assert status == 429
        assert "Retry-After" not in response.headers
        error = body[0]["error"]
        assert error["status"] == "RESOURCE_EXHAUSTED"
        assert error["message"].startswith(
            "Quota exceeded for aiplatform.googleapis.com/"
            "online_prediction_requests_per_base_model with base model: gemini-2.5-flash-lite."
            " Please submit a quota increase request."
        )
        assert "details" not in error
        clock.now += 0.5  # 2 requests per second: one more fits
        assert [(await chat(http, url))[0] for _ in range(2)] == [200, 429]
        other = sim.base_url("us-central1")  # each location has its own bucket
        assert (await chat(http, other))[0] == 200
        stats = sim.statistics()
    assert stats.quota_rejections == 3
    assert stats.rate_limited == 3


async def test_tpm_quota_counts_prompt_and_output_tokens(http: aiohttp.ClientSession) -> None:
    clock = FakeClock()
    async with open_simulator(config(tpm_quota=600, clock=clock)) as sim:  # 10 tokens/s
        url = sim.base_url()
        assert (await chat(http, url))[0] == 200  # a full bucket admits one big request
        status, body, _ = await chat(http, url)
        assert status == 429
        assert "tokens_per_minute_per_base_model" in body[0]["error"]["message"]
        clock.now += 60.0
        assert (await chat(http, url))[0] == 200


async def test_gpt_oss_has_its_maas_quota_by_default(http: aiohttp.ClientSession) -> None:
    clock = FakeClock()
    async with open_simulator(config(clock=clock)) as sim:
        statuses = [
            (await chat(http, sim.base_url(), GPT_OSS, max_tokens=50))[0] for _ in range(14)
        ]
    assert statuses.count(200) == 10  # 650 QPM: about 10.8 per second of burst
    assert statuses[-1] == 429


async def test_retry_delay_adds_retry_info_to_429s(http: aiohttp.ClientSession) -> None:
    async with open_simulator(config(rpm_quota=60, retry_delay_s=1.5, clock=FakeClock())) as sim:
        await chat(http, sim.base_url())
        status, body, response = await chat(http, sim.base_url())
    assert status == 429
    assert body[0]["error"]["details"] == [
        {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "1.5s"}
    ]
    assert "Retry-After" not in response.headers


async def test_shared_pool_refuses_more_as_concurrency_passes_capacity(
    http: aiohttp.ClientSession,
) -> None:
    async with open_simulator(config(dsq_capacity=2, ttft_s=0.2)) as sim:
        statuses: list[int] = []
        bodies: list[Any] = []

        async def one() -> None:
            status, body, _ = await chat(http, sim.base_url())
            statuses.append(status)
            bodies.append(body)

        async with anyio.create_task_group() as group:
            for _ in range(12):
                group.start_soon(one)
        stats = sim.statistics()
    assert statuses.count(429) >= 3
    assert 2 <= statuses.count(200) <= 9
    refused = next(b for s, b in zip(statuses, bodies, strict=True) if s == 429)
    assert refused[0]["error"]["message"].startswith("Resource exhausted. Please try again later.")
    assert stats.dsq_rejections == statuses.count(429)
    assert stats.max_in_flight >= 3


async def test_openai_sdk_raises_rate_limit_error_with_google_body(
    http: aiohttp.ClientSession,
) -> None:
    async with open_simulator(config(faults={"429": 1.0})) as sim:
        client = openai.AsyncOpenAI(base_url=sim.base_url(), api_key="test-token", max_retries=0)
        with pytest.raises(openai.RateLimitError) as caught:
            await client.chat.completions.create(model=GEMINI, messages=HELLO)
        await client.close()
    assert caught.value.body[0]["error"]["code"] == 429


# -- faults --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "status", "google_status"),
    [
        ("500", 500, "INTERNAL"),
        ("503", 503, "UNAVAILABLE"),
        ("504", 504, "DEADLINE_EXCEEDED"),
        ("429", 429, "RESOURCE_EXHAUSTED"),
    ],
)
async def test_status_faults_answer_with_google_envelopes(
    http: aiohttp.ClientSession, kind: str, status: int, google_status: str
) -> None:
    async with open_simulator(config(faults={kind: 1.0})) as sim:
        got, body, _ = await chat(http, sim.base_url())
        stats = sim.statistics()
    assert got == status
    assert body[0]["error"] == {
        "code": status,
        "message": body[0]["error"]["message"],
        "status": google_status,
    }
    assert stats.faults_injected == {kind: 1}


async def test_502_fault_is_an_html_gateway_page(http: aiohttp.ClientSession) -> None:
    async with open_simulator(config(faults={"502": 1.0})) as sim:
        status, body, response = await chat(http, sim.base_url())
    assert status == 502
    assert response.headers["Content-Type"].startswith("text/html")
    assert "502" in body


async def test_error_rate_answers_500_or_503(http: aiohttp.ClientSession) -> None:
    async with open_simulator(config(error_rate=1.0)) as sim:
        statuses = {(await chat(http, sim.base_url()))[0] for _ in range(20)}
    assert statuses == {500, 503}


async def test_faults_are_drawn_from_the_seeded_rng(http: aiohttp.ClientSession) -> None:
    runs = []
    for _ in range(2):
        async with open_simulator(config(faults={"500": 0.5}, seed=7)) as sim:
            runs.append([(await chat(http, sim.base_url()))[0] for _ in range(16)])
    assert runs[0] == runs[1]
    assert set(runs[0]) == {200, 500}


async def test_reset_fault_drops_the_connection_without_an_answer(
    http: aiohttp.ClientSession,
) -> None:
    async with open_simulator(config(faults={"reset": 1.0}, keep_records=True)) as sim:
        with pytest.raises(aiohttp.ClientError):
            await chat(http, sim.base_url())
    assert sim.records[0]["fault"] == "reset"
    assert sim.records[0]["status"] == 0


async def test_stall_fault_hangs_then_answers(http: aiohttp.ClientSession) -> None:
    async with open_simulator(config(faults={"stall": 1.0}, stall_s=0.2)) as sim:
        started = time.monotonic()
        status, _, _ = await chat(http, sim.base_url())
    assert status == 200
    assert time.monotonic() - started >= 0.2


async def test_truncate_fault_cuts_a_stream_before_done(http: aiohttp.ClientSession) -> None:
    received: list[bytes] = []

    async def read_stream(url: str) -> None:
        body = {"model": GPT_OSS, "messages": HELLO, "stream": True}
        async with http.post(url + "/chat/completions", json=body, headers=AUTH) as response:
            assert response.status == 200
            async for piece in response.content.iter_any():
                received.append(piece)

    async with open_simulator(config(faults={"truncate": 1.0})) as sim:
        with pytest.raises(aiohttp.ClientPayloadError):
            await read_stream(sim.base_url())
    text = b"".join(received)
    assert text.startswith(b"data: ")
    assert b"[DONE]" not in text


async def test_truncate_fault_cuts_a_plain_body_short(http: aiohttp.ClientSession) -> None:
    async with open_simulator(config(faults={"truncate": 1.0})) as sim:
        with pytest.raises(aiohttp.ClientPayloadError):
            await chat(http, sim.base_url())


async def test_no_usage_fault_omits_usage(http: aiohttp.ClientSession) -> None:
    async with open_simulator(config(faults={"no_usage": 1.0})) as sim:
        status, body, _ = await chat(http, sim.base_url())
    assert status == 200
    assert "usage" not in body


async def test_no_message_fault_omits_the_message(http: aiohttp.ClientSession) -> None:
    async with open_simulator(config(faults={"no_message": 1.0})) as sim:
        status, body, _ = await chat(http, sim.base_url())
    assert status == 200
    assert "message" not in body["choices"][0]
    assert body["choices"][0]["finish_reason"]


def test_unknown_fault_kinds_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown fault kinds"):
        SimulatorConfig(faults={"teapot": 0.1})


# -- records -------------------------------------------------------------------------------


async def test_request_log_holds_one_line_per_chat_request(
    http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    log = tmp_path / "requests.jsonl"
    async with open_simulator(config(request_log=str(log), keep_records=True)) as sim:
        before = time.monotonic()
        await chat(http, sim.base_url(), "google/gemini-2.5-flash", max_tokens=30000)
        await chat(http, sim.base_url(), GPT_OSS, stream=True)
        await chat(http, sim.base_url(), "google/nope")
        after = time.monotonic()
        stats = sim.statistics()
    lines = [orjson.loads(line) for line in log.read_bytes().splitlines()]
    assert lines == sim.records
    gemini, oss, missing = lines
    assert before <= gemini["arrival_monotonic"] <= gemini["first_byte_monotonic"] <= after
    assert gemini["last_byte_monotonic"] >= gemini["first_byte_monotonic"]
    assert gemini["status"] == 200 and gemini["stream"] is False
    assert gemini["location"] == "global"
    assert gemini["response_id"]
    # Gemini reports completion without reasoning; the OpenAI-convention fields include it.
    reasoning = gemini["reported_reasoning_tokens"]
    assert reasoning > 0
    assert gemini["completion_tokens"] == gemini["reported_completion_tokens"] + reasoning
    assert gemini["total_tokens"] == gemini["reported_total_tokens"]
    assert oss["stream"] is True
    assert oss["reported_reasoning_tokens"] is None
    assert oss["completion_tokens"] == oss["reported_completion_tokens"]
    assert oss["reasoning_tokens"] > 0
    assert missing["status"] == 404 and missing["error_status"] == "NOT_FOUND"
    assert missing["prompt_tokens"] is None
    assert stats.requests == 3
    assert stats.by_status == {200: 2, 404: 1}


async def test_client_that_gives_up_is_recorded_as_499(http: aiohttp.ClientSession) -> None:
    async def give_up(url: str, stream: bool) -> None:
        body = {"model": GEMINI, "messages": HELLO, "stream": stream}
        timeout = aiohttp.ClientTimeout(total=0.05)
        async with http.post(
            url + "/chat/completions", json=body, headers=AUTH, timeout=timeout
        ) as response:
            await response.read()

    async with open_simulator(config(ttft_s=0.3, keep_records=True)) as sim:
        for stream in (False, True):
            with pytest.raises(TimeoutError):
                await give_up(sim.base_url(), stream)
        await anyio.sleep(0.4)
    assert [r["status"] for r in sim.records] == [499, 499]
