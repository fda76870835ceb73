"""Consumption tiers: the headers that choose Flex, Priority or Provisioned Throughput, the
tier each answer reports in usage.extra_properties.google.traffic_type, and the record.
"""

from __future__ import annotations

import random
from typing import Any

import aiohttp
import pytest
from sim_http import post, stream

from batchrunner.simulator import MODELS, SimulatorConfig, open_simulator
from batchrunner.simulator._tiers import FLEX_DEADLINE_S, TierDesk

pytestmark = pytest.mark.anyio

FLASH = "google/gemini-2.5-flash"
GEMINI_3 = "google/gemini-3.1-pro-preview"
GPT_OSS = "openai/gpt-oss-120b-maas"
SHARED = "X-Vertex-AI-LLM-Shared-Request-Type"
REQUEST_TYPE = "X-Vertex-AI-LLM-Request-Type"
FLEX = {SHARED: "flex"}
PRIORITY = {SHARED: "priority"}


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def config(**changes: Any) -> SimulatorConfig:
    base: dict[str, Any] = {
        "static_tokens": ("test-token",),
        "latency": "zero",
        "keep_records": True,
        "default_quotas": False,
    }
    return SimulatorConfig(**{**base, **changes})


def ask(model: str = FLASH, text: str = "Hello", **extra: Any) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": text}], **extra}


def traffic_type(body: Any) -> str:
    return str(body["usage"]["extra_properties"]["google"]["traffic_type"])


@pytest.mark.parametrize(
    ("model", "headers", "expected"),
    [
        (FLASH, {}, "ON_DEMAND"),
        (FLASH, PRIORITY, "ON_DEMAND_PRIORITY"),
        (GEMINI_3, FLEX, "ON_DEMAND_FLEX"),
        (GEMINI_3, {**PRIORITY, REQUEST_TYPE: "shared"}, "ON_DEMAND_PRIORITY"),
    ],
)
async def test_every_gemini_answer_reports_the_tier_that_served_it(
    http: aiohttp.ClientSession, model: str, headers: dict[str, str], expected: str
) -> None:
    async with open_simulator(config()) as sim:
        whole = await post(http, sim.base_url(), ask(model), headers)
        streamed = await stream(http, sim.base_url(), ask(model), headers)
    assert whole.status == 200
    assert traffic_type(whole.body) == expected
    assert traffic_type(streamed.events[-1]) == expected
    assert [r["traffic_type"] for r in sim.records] == [expected, expected]
    assert sim.statistics().by_traffic_type == {expected: 2}


async def test_service_tier_in_the_body_is_ignored(http: aiohttp.ClientSession) -> None:
    async with open_simulator(config()) as sim:
        answer = await post(http, sim.base_url(), ask(GEMINI_3, service_tier="flex"))
    assert traffic_type(answer.body) == "ON_DEMAND"


@pytest.mark.parametrize("model", sorted(m for m in MODELS if "gemini-2.5" in m))
async def test_flex_on_a_gemini_2_5_model_is_a_400_naming_the_model(
    http: aiohttp.ClientSession, model: str
) -> None:
    async with open_simulator(config(array_errors=False)) as sim:
        answer = await post(http, sim.base_url(), ask(model), FLEX)
    assert answer.status == 400
    error = answer.body["error"]
    assert error["status"] == "INVALID_ARGUMENT"
    assert error["message"] == f"Flex API is not supported for model: {model.split('/')[1]}"
    assert sim.records[0]["shared_request_type"] == "flex"


async def test_flex_on_gpt_oss_is_refused_and_priority_is_served_as_standard(
    http: aiohttp.ClientSession,
) -> None:
    async with open_simulator(config()) as sim:
        flex = await post(http, sim.base_url(), ask(GPT_OSS), FLEX)
        priority = await post(http, sim.base_url(), ask(GPT_OSS), PRIORITY)
    assert flex.status == 400
    assert flex.body[0]["error"]["message"] == (
        "Flex API is not supported for model: gpt-oss-120b-maas"
    )
    assert priority.status == 200
    assert "extra_properties" not in priority.body["usage"]
    assert sim.records[1]["traffic_type"] == "ON_DEMAND"


@pytest.mark.parametrize("headers", [FLEX, PRIORITY])
async def test_flex_and_priority_are_served_on_global_only(
    http: aiohttp.ClientSession, headers: dict[str, str]
) -> None:
    async with open_simulator(config()) as sim:
        regional = await post(http, sim.base_url("us-central1"), ask(GEMINI_3), headers)
    assert regional.status == 400
    assert regional.body[0]["error"]["status"] == "INVALID_ARGUMENT"
    assert "global" in regional.body[0]["error"]["message"]


@pytest.mark.parametrize(
    "headers", [{SHARED: "cheap"}, {REQUEST_TYPE: "exclusive"}], ids=["shared", "request"]
)
async def test_unknown_tier_header_values_are_400(
    http: aiohttp.ClientSession, headers: dict[str, str]
) -> None:
    async with open_simulator(config()) as sim:
        answer = await post(http, sim.base_url(), ask(), headers)
    assert answer.status == 400


async def test_flex_answers_wait_for_the_flex_queue_first(http: aiohttp.ClientSession) -> None:
    async with open_simulator(config(flex_queue_s=0.05)) as sim:
        await post(http, sim.base_url(), ask(GEMINI_3), FLEX)
        await post(http, sim.base_url(), ask(GEMINI_3))
    flex, standard = (r["first_byte_monotonic"] - r["arrival_monotonic"] for r in sim.records)
    assert flex >= 0.05
    assert standard < 0.05


def test_flex_queueing_scales_with_the_latency_profile() -> None:
    def queue(latency: str) -> list[float]:
        desk = TierDesk(
            provisioned_share=0.0,
            provisioned_rps=None,
            flex_queue_s=None,
            latency=latency,
            clock=FakeClock(),
            rng=random.Random(7),
        )
        tiers = [desk.assign(MODELS[GEMINI_3], "global", FLEX, k) for k in range(200)]
        assert all(t.traffic_type == "ON_DEMAND_FLEX" for t in tiers)
        assert all(t.deadline_s == FLEX_DEADLINE_S for t in tiers)
        return sorted(t.queue_s for t in tiers)

    assert set(queue("zero")) == {0.0}
    fast = queue("fast")
    assert fast[0] > 0 and fast[-1] < 0.05
    real = queue("realistic")
    assert 5 < real[100] < 60  # a median of seconds
    assert real[-1] > 60 and real[-1] <= 900  # a tail of minutes, capped


async def test_provisioned_share_serves_that_share_as_provisioned_throughput(
    http: aiohttp.ClientSession,
) -> None:
    async with open_simulator(config(provisioned_share=0.5)) as sim:
        for k in range(40):
            await post(http, sim.base_url(), ask(text=f"prompt {k}"))
        bypass = await post(http, sim.base_url(), ask(text="prompt 0"), {REQUEST_TYPE: "shared"})
    served = [r["traffic_type"] for r in sim.records[:40]]
    assert 10 < served.count("PROVISIONED_THROUGHPUT") < 30
    assert set(served) == {"PROVISIONED_THROUGHPUT", "ON_DEMAND"}
    assert traffic_type(bypass.body) == "ON_DEMAND"  # "shared" never uses PT


async def test_dedicated_uses_only_provisioned_throughput_and_overflow_is_a_429(
    http: aiohttp.ClientSession,
) -> None:
    clock = FakeClock()
    dedicated = {REQUEST_TYPE: "dedicated"}
    async with open_simulator(config(provisioned_share=1.0, provisioned_rps=2, clock=clock)) as sim:
        answers = [await post(http, sim.base_url(), ask(), dedicated) for _ in range(3)]
        clock.now += 1.0
        later = await post(http, sim.base_url(), ask(), dedicated)
        for _ in range(2):
            await post(http, sim.base_url(), ask())
        spilled = await post(http, sim.base_url(), ask())
    assert [a.status for a in answers] == [200, 200, 429]
    assert traffic_type(answers[0].body) == "PROVISIONED_THROUGHPUT"
    error = answers[2].body[0]["error"]
    assert error["status"] == "RESOURCE_EXHAUSTED"
    assert error["message"] == "Too many requests. Exceeded the Provisioned Throughput."
    assert traffic_type(later.body) == "PROVISIONED_THROUGHPUT"
    assert traffic_type(spilled.body) == "ON_DEMAND"  # without "dedicated", overflow spills
    assert sim.records[2]["request_type"] == "dedicated"


async def test_dedicated_without_provisioned_throughput_is_a_429(
    http: aiohttp.ClientSession,
) -> None:
    async with open_simulator(config()) as sim:
        answer = await post(http, sim.base_url(), ask(), {REQUEST_TYPE: "dedicated"})
    assert answer.status == 429
    assert "Provisioned Throughput" in answer.body[0]["error"]["message"]
