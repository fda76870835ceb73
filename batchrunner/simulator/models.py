"""The simulator's model table: where each model is served, its limits, quotas and latency.

Figures follow the endpoint reference (model ids and regions §1, MaaS quotas §6, prices §7,
latency priors §8); they are configuration for the simulator, not truths about Vertex.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Literal

Family = Literal["gemini", "vllm"]
# Gemini thinking: "always" (2.5 Pro), "default" (2.5 Flash: on unless budget 0),
# "optional" (2.5 Flash-Lite: off unless a budget is set), "none" (2.0).
Thinking = Literal["always", "default", "optional", "none"]


@dataclass(frozen=True, slots=True)
class LatencyProfile:
    """How long a model takes: TTFT = rtt + overhead + queue + prefill (+ hidden thinking)."""

    rtt_s: float  # network round trip to the region
    overhead_s: float  # fixed server-side time before prefill starts
    prefill_tokens_per_s: float
    decode_tokens_per_s: float
    jitter_sigma: float = 0.0  # log-normal sigma applied to TTFT and to the decode rate
    stall_probability: float = 0.0  # chance of one multi-second pause mid-generation
    stall_range_s: tuple[float, float] = (0.0, 0.0)
    queue_free: int = 1_000_000  # in-flight requests served without queueing
    queue_s_per_request: float = 0.0  # added TTFT per in-flight request above queue_free


FAST_PROFILE = LatencyProfile(
    rtt_s=0.0005,
    overhead_s=0.001,
    prefill_tokens_per_s=5_000_000.0,
    decode_tokens_per_s=50_000.0,
)


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """One model as the simulator serves it."""

    name: str  # "publisher/model", as sent in the request's "model"
    family: Family
    locations: frozenset[str]
    context_window: int
    max_output_tokens: int
    latency: LatencyProfile  # the "realistic" profile
    thinking: Thinking = "none"  # Gemini thinking behaviour
    reasoning: bool = False  # vLLM reasoning model (reasoning_effort low/medium/high)
    rpm: int | None = None  # default hard quota (MaaS); None = no hard bucket
    input_tpm: int | None = None
    output_tpm: int | None = None
    price_in: float = 0.0  # USD per 1M tokens (informational)
    price_out: float = 0.0
    thinking_range: tuple[int, int] = (0, 0)  # natural (dynamic) thinking tokens, lo..hi
    context_overrides: Mapping[str, int] = field(
        default_factory=lambda: MappingProxyType({})
    )  # location -> smaller context window
    implicit_cache: bool = False  # Gemini implicit caching (on by default from 2.5)
    flex: bool = False  # accepts Flex PayGo (2.5 models refuse it with a 400)

    @property
    def publisher(self) -> str:
        return self.name.split("/", 1)[0] if "/" in self.name else "google"

    @property
    def short_name(self) -> str:
        return self.name.split("/", 1)[-1]

    def context_for(self, location: str) -> int:
        return self.context_overrides.get(location, self.context_window)


GEMINI_LOCATIONS = frozenset(
    {
        "global",
        "us",
        "eu",
        "us-central1",
        "us-east1",
        "us-east4",
        "us-east5",
        "us-south1",
        "us-west1",
        "us-west4",
        "northamerica-northeast1",
        "southamerica-east1",
        "europe-central2",
        "europe-north1",
        "europe-southwest1",
        "europe-west1",
        "europe-west2",
        "europe-west3",
        "europe-west4",
        "europe-west8",
        "europe-west9",
        "asia-east1",
        "asia-northeast1",
        "asia-northeast3",
        "asia-south1",
        "asia-southeast1",
        "australia-southeast1",
    }
)
# A third-party measurement saw these regions cap gemini-2.5-flash prompts at 131,072 tokens.
_SMALL_CONTEXT_REGIONS = MappingProxyType({"asia-northeast3": 131_072, "europe-west9": 131_072})


def _gemini(
    name: str,
    *,
    thinking: Thinking,
    max_output: int,
    latency: LatencyProfile,
    price: tuple[float, float],
    thinking_range: tuple[int, int] = (0, 0),
    flex: bool = False,
) -> ModelSpec:
    return ModelSpec(
        implicit_cache=not name.startswith("google/gemini-2.0"),
        flex=flex,
        name=name,
        family="gemini",
        locations=GEMINI_LOCATIONS,
        context_window=1_048_576,
        max_output_tokens=max_output,
        latency=latency,
        thinking=thinking,
        price_in=price[0],
        price_out=price[1],
        thinking_range=thinking_range,
        context_overrides=_SMALL_CONTEXT_REGIONS,
    )


_FLASH_LITE_LATENCY = LatencyProfile(
    rtt_s=0.04,
    overhead_s=0.2,
    prefill_tokens_per_s=40_000.0,
    decode_tokens_per_s=250.0,
    jitter_sigma=0.3,
    stall_probability=0.002,
    stall_range_s=(1.0, 5.0),
    queue_free=500,
    queue_s_per_request=0.0005,
)

_PRO_LATENCY = LatencyProfile(
    rtt_s=0.04,
    overhead_s=1.2,
    prefill_tokens_per_s=15_000.0,
    decode_tokens_per_s=110.0,
    jitter_sigma=0.35,
    stall_probability=0.005,
    stall_range_s=(1.0, 8.0),
    queue_free=200,
    queue_s_per_request=0.002,
)

_MODEL_LIST: tuple[ModelSpec, ...] = (
    # The model id Vertex echoes in a published capture; Flex PayGo serves Gemini 3 models.
    _gemini(
        "google/gemini-3.1-pro-preview",
        thinking="always",
        max_output=65_536,
        price=(2.00, 12.00),
        thinking_range=(500, 3000),
        latency=_PRO_LATENCY,
        flex=True,
    ),
    _gemini(
        "google/gemini-2.5-pro",
        thinking="always",
        max_output=65_536,
        price=(1.25, 10.0),
        thinking_range=(500, 3000),
        latency=_PRO_LATENCY,
    ),
    _gemini(
        "google/gemini-2.5-flash",
        thinking="default",
        max_output=65_536,
        price=(0.30, 2.50),
        thinking_range=(200, 1200),
        latency=LatencyProfile(
            rtt_s=0.04,
            overhead_s=0.45,
            prefill_tokens_per_s=30_000.0,
            decode_tokens_per_s=200.0,
            jitter_sigma=0.3,
            stall_probability=0.003,
            stall_range_s=(1.0, 6.0),
            queue_free=400,
            queue_s_per_request=0.001,
        ),
    ),
    _gemini(
        "google/gemini-2.5-flash-lite",
        thinking="optional",
        max_output=65_536,
        price=(0.10, 0.40),
        thinking_range=(100, 600),
        latency=_FLASH_LITE_LATENCY,
    ),
    _gemini(
        "google/gemini-2.0-flash-001",
        thinking="none",
        max_output=8_192,
        price=(0.15, 0.60),
        latency=_FLASH_LITE_LATENCY,
    ),
    _gemini(
        "google/gemini-2.0-flash",
        thinking="none",
        max_output=8_192,
        price=(0.15, 0.60),
        latency=_FLASH_LITE_LATENCY,
    ),
    ModelSpec(
        name="openai/gpt-oss-120b-maas",
        family="vllm",
        locations=frozenset({"global", "us-central1"}),
        context_window=131_072,
        max_output_tokens=32_768,
        reasoning=True,
        rpm=650,
        input_tpm=790_000,
        output_tpm=120_000,
        price_in=0.09,
        price_out=0.36,
        latency=LatencyProfile(
            rtt_s=0.04,
            overhead_s=0.6,
            prefill_tokens_per_s=20_000.0,
            decode_tokens_per_s=250.0,
            jitter_sigma=0.35,
            stall_probability=0.004,
            stall_range_s=(1.0, 6.0),
            queue_free=300,
            queue_s_per_request=0.002,
        ),
    ),
    ModelSpec(
        name="openai/gpt-oss-20b-maas",
        family="vllm",
        locations=frozenset({"us-central1"}),
        context_window=131_072,
        max_output_tokens=32_768,
        reasoning=True,
        rpm=1_200,
        input_tpm=1_300_000,
        output_tpm=250_000,
        price_in=0.07,
        price_out=0.25,
        latency=LatencyProfile(
            rtt_s=0.04,
            overhead_s=0.35,
            prefill_tokens_per_s=40_000.0,
            decode_tokens_per_s=350.0,
            jitter_sigma=0.3,
            stall_probability=0.003,
            stall_range_s=(1.0, 5.0),
            queue_free=400,
            queue_s_per_request=0.001,
        ),
    ),
)

MODELS: Mapping[str, ModelSpec] = MappingProxyType({m.name: m for m in _MODEL_LIST})

# A self-deployed (numeric endpoint id) model: any name, vLLM conventions, no reasoning.
SELF_DEPLOYED = ModelSpec(
    name="self-deployed",
    family="vllm",
    locations=frozenset(),
    context_window=32_768,
    max_output_tokens=8_192,
    latency=LatencyProfile(
        rtt_s=0.04,
        overhead_s=0.15,
        prefill_tokens_per_s=20_000.0,
        decode_tokens_per_s=120.0,
        jitter_sigma=0.25,
        queue_free=64,
        queue_s_per_request=0.01,
    ),
)
