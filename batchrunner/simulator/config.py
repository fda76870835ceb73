"""The simulator's immutable configuration and its statistics snapshot.

``SimulatorConfig`` is built once by the caller (CLI, test, benchmark) and never changes
while the simulator runs; ``SimulatorStatistics`` is a frozen copy of its counters.
Options left at ``None`` take the latency profile's default (``shape_settings``): the
shapes of real traffic that would surprise a test are off under ``zero`` and ``fast`` and
on, at plausible rates, under ``realistic``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

FAULT_KINDS: tuple[str, ...] = (
    "500",
    "502",
    "503",
    "504",
    "429",
    "reset",
    "stall",
    "truncate",
    "no_usage",
    "no_message",
    "499",
    "html_200",
    "stream_error",
)
LATENCY_PROFILES: tuple[str, ...] = ("zero", "fast", "realistic")
REASONING_FIELDS: tuple[str, ...] = ("reasoning_content", "reasoning", "both")
VLLM_STREAM_USAGE: tuple[str, ...] = ("final_chunk", "requested")
# Under latency="realistic", faults the ``faults`` mapping leaves unset happen this often.
REALISTIC_FAULTS: Mapping[str, float] = MappingProxyType(
    {"499": 0.0005, "html_200": 0.0002, "stream_error": 0.001}
)
REALISTIC_DSQ_CAPACITY = 256  # in-flight requests per (model, location) before DSQ 429s
REALISTIC_TOOL_CALL_RATE = 0.6
REALISTIC_SAFETY_BLOCK_RATE = 0.001


@dataclass(frozen=True, slots=True)
class SimulatorConfig:
    """Everything that shapes how the simulator behaves; see the field comments."""

    host: str = "127.0.0.1"
    port: int = 0  # 0 = pick a free port
    project: str = "sim-project"
    token_ttl: float = 3600.0  # lifetime (s) of the tokens it issues (expires_in)
    static_tokens: tuple[str, ...] = ()  # bearer tokens always accepted
    require_auth: bool = True
    latency: str = "fast"  # "zero" | "fast" | "realistic"
    ttft_s: float | None = None  # fixed time to first token for every model
    tokens_per_s: float | None = None  # fixed decode rate for every model
    seed: int = 0
    rpm_quota: int | None = None  # hard per-(model, location) requests/min
    tpm_quota: int | None = None  # hard per-(model, location) tokens/min, input + output
    default_quotas: bool = True  # apply the model table's MaaS quotas when rpm/tpm_quota unset
    # Gemini shared pool: in-flight requests per (model, location) before 429s start
    # (None = REALISTIC_DSQ_CAPACITY under realistic latency, no 429s otherwise)
    dsq_capacity: int | None = None
    error_rate: float = 0.0  # fraction of chat requests answered with a random 500/503
    faults: Mapping[str, float] = field(default_factory=dict)  # kind -> probability
    stall_s: float = 30.0  # how long a "stall" fault hangs before answering
    retry_delay_s: float | None = None  # adds google.rpc.RetryInfo to 429 bodies
    array_errors: bool = True  # wrap the Google error envelope in a one-element array
    request_log: str | None = None  # path: one JSON line per chat request served
    keep_records: bool = False  # also keep those records in memory
    clock: Callable[[], float] = time.monotonic  # token expiry and quota buckets
    # gpt-oss: "reasoning_content" | "reasoning" | "both"; None = "reasoning" (current vLLM)
    # under realistic latency, "both" otherwise
    reasoning_field: str | None = None
    strict_project: bool = True  # 403 for a project other than ``project``
    # Tool calls: the share of requests offering tools (tool_choice "auto") answered with
    # calls (None = 0.6 realistic, else 0); "required" or a named function always calls.
    tool_call_rate: float | None = None
    parallel_tool_call_rate: float = 0.25  # tool-call answers with 2-3 calls
    tool_text_rate: float = 0.3  # tool-call answers that also carry some text
    invalid_tool_arguments_rate: float = 0.0  # tool calls whose arguments are not JSON
    # Gemini answers blocked with empty content and a raw finish reason (None = 0.001
    # realistic, else 0); ``__filter__`` in the prompt always blocks (see ``blocks``).
    safety_block_rate: float | None = None
    prompt_block_rate: float = 0.0  # requests refused with 400 "Request blocked..."
    # Gemini implicit caching: prompts sharing a >= 2,048-token prefix with a recent one
    # report prompt_tokens_details.cached_tokens (None = on under realistic latency).
    implicit_cache: bool | None = None
    # vLLM-served models, streamed: "final_chunk" puts usage on the last chunk always;
    # "requested" only sends it, in a choices-less chunk, when stream_options.include_usage
    # (vLLM's rule). None = "requested" under realistic latency, "final_chunk" otherwise.
    vllm_stream_usage: str | None = None
    # Under realistic latency, rare 499s, 200-with-HTML pages and mid-stream errors
    # (REALISTIC_FAULTS) for kinds ``faults`` leaves unset; False turns them off.
    background_faults: bool = True
    shared_pool: bool = True  # False: never answer Gemini's shared-pool (DSQ) 429s
    # Provisioned Throughput (Gemini): the share of requests without a "shared" header that
    # PT serves (0 and provisioned_rps None = the project has none), and PT's capacity in
    # requests per second per (model, location) on ``clock`` (None = unbounded). Requests
    # over capacity spill to on-demand, or get a 429 with "dedicated".
    provisioned_share: float = 0.0
    provisioned_rps: float | None = None
    # Flex PayGo's queueing before prefill; None = 0 (zero), 5-20 ms (fast), a log-normal
    # around 20 s capped at 15 min (realistic).
    flex_queue_s: float | None = None
    # Batch prediction and Cloud Storage (batchrunner.simulator.batch, .storage).
    batch_turnaround_s: float = 5.0  # created -> ended, on ``clock``: 10% queued, 10% pending
    batch_outcome: str = "succeed"  # "succeed" | "fail" | "expire"; label sim-outcome overrides
    batch_line_failure_rate: float = 0.0  # share of lines answered with a 429/500 status
    batch_max_requests: int = 200_000  # lines per input file; more fails the job
    batch_max_input_bytes: int = 1_000_000_000  # bytes per input file; more fails the job
    batch_shuffle_output: bool = True  # predictions in a seeded order, not the input's
    storage_max_bytes: int = 2 * 1024**3  # all objects together, in memory
    storage_anonymous: bool = True  # serve Cloud Storage requests that carry no token

    def __post_init__(self) -> None:
        if self.latency not in LATENCY_PROFILES:
            raise ValueError(f"latency must be one of {LATENCY_PROFILES}, not {self.latency!r}")
        if self.reasoning_field is not None and self.reasoning_field not in REASONING_FIELDS:
            raise ValueError(f"reasoning_field must be one of {REASONING_FIELDS}")
        if self.vllm_stream_usage is not None and self.vllm_stream_usage not in VLLM_STREAM_USAGE:
            raise ValueError(f"vllm_stream_usage must be one of {VLLM_STREAM_USAGE}")
        unknown = sorted(set(self.faults) - set(FAULT_KINDS))
        if unknown:
            raise ValueError(f"unknown fault kinds {unknown}; known: {FAULT_KINDS}")
        faults = effective_faults(self)
        total = self.error_rate + sum(faults.values())
        if self.error_rate < 0 or any(p < 0 for p in faults.values()) or total > 1.0:
            raise ValueError("fault probabilities must be >= 0 and sum to at most 1")
        rates = {
            "tool_call_rate": self.tool_call_rate,
            "parallel_tool_call_rate": self.parallel_tool_call_rate,
            "tool_text_rate": self.tool_text_rate,
            "invalid_tool_arguments_rate": self.invalid_tool_arguments_rate,
            "safety_block_rate": self.safety_block_rate,
            "prompt_block_rate": self.prompt_block_rate,
        }
        rates["provisioned_share"] = self.provisioned_share
        for name, rate in rates.items():
            if rate is not None and not 0.0 <= rate <= 1.0:
                raise ValueError(f"{name} must be between 0 and 1")
        if self.token_ttl <= 0:
            raise ValueError("token_ttl must be positive")
        if self.ttft_s is not None and self.ttft_s < 0:
            raise ValueError("ttft_s must be >= 0")
        if self.tokens_per_s is not None and self.tokens_per_s <= 0:
            raise ValueError("tokens_per_s must be positive")
        if self.provisioned_rps is not None and self.provisioned_rps <= 0:
            raise ValueError("provisioned_rps must be positive")
        if self.flex_queue_s is not None and self.flex_queue_s < 0:
            raise ValueError("flex_queue_s must be >= 0")


@dataclass(frozen=True, slots=True)
class SimulatorStatistics:
    """A snapshot of what the simulator has served so far."""

    requests: int  # chat-route requests received
    by_status: Mapping[int, int]  # HTTP status -> count (499 = client went away)
    tokens_issued: int  # access tokens handed out (token endpoint, metadata, issue_token)
    rate_limited: int  # 429 answers of any origin (quota, DSQ, injected)
    quota_rejections: int  # 429s from the hard RPM/TPM buckets
    dsq_rejections: int  # 429s from the Gemini shared pool
    faults_injected: Mapping[str, int]  # fault kind -> count
    in_flight: int  # chat requests being served right now
    max_in_flight: int
    prompt_tokens: int  # totals over successful answers, as reported
    completion_tokens: int
    reasoning_tokens: int
    cached_tokens: int = 0  # implicit-cache hits over successful answers
    tool_calls: int = 0  # tool calls in successful answers
    by_finish_reason: Mapping[str, int] = field(default_factory=dict)  # as served, per choice
    by_traffic_type: Mapping[str, int] = field(default_factory=dict)  # successful answers


@dataclass(frozen=True, slots=True)
class ShapeSettings:
    """The answer-shape options with the latency profile's defaults filled in."""

    reasoning_field: str
    tool_call_rate: float
    parallel_tool_call_rate: float
    tool_text_rate: float
    invalid_tool_arguments_rate: float
    safety_block_rate: float
    prompt_block_rate: float
    implicit_cache: bool
    vllm_usage_when_requested: bool
    dsq_capacity: int | None


def shape_settings(config: SimulatorConfig) -> ShapeSettings:
    """Resolve the options left at ``None`` for ``config``'s latency profile."""
    real = config.latency == "realistic"
    reasoning_field = config.reasoning_field or ("reasoning" if real else "both")
    usage_rule = config.vllm_stream_usage or ("requested" if real else "final_chunk")
    dsq = config.dsq_capacity
    if dsq is None and real:
        dsq = REALISTIC_DSQ_CAPACITY
    return ShapeSettings(
        reasoning_field=reasoning_field,
        tool_call_rate=_pick(config.tool_call_rate, REALISTIC_TOOL_CALL_RATE, real),
        parallel_tool_call_rate=config.parallel_tool_call_rate,
        tool_text_rate=config.tool_text_rate,
        invalid_tool_arguments_rate=config.invalid_tool_arguments_rate,
        safety_block_rate=_pick(config.safety_block_rate, REALISTIC_SAFETY_BLOCK_RATE, real),
        prompt_block_rate=config.prompt_block_rate,
        implicit_cache=config.implicit_cache if config.implicit_cache is not None else real,
        vllm_usage_when_requested=usage_rule == "requested",
        dsq_capacity=dsq if config.shared_pool else None,
    )


def _pick(value: float | None, realistic: float, real: bool) -> float:
    if value is not None:
        return value
    return realistic if real else 0.0


def effective_faults(config: SimulatorConfig) -> Mapping[str, float]:
    """``config.faults`` plus, under realistic latency, the background fault rates."""
    if config.latency != "realistic" or not config.background_faults:
        return config.faults
    merged = dict(REALISTIC_FAULTS)
    merged.update(config.faults)
    return merged
