"""The simulator's immutable configuration and its statistics snapshot.

``SimulatorConfig`` is built once by the caller (CLI, test, benchmark) and never changes
while the simulator runs; ``SimulatorStatistics`` is a frozen copy of its counters.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

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
)
LATENCY_PROFILES: tuple[str, ...] = ("zero", "fast", "realistic")
REASONING_FIELDS: tuple[str, ...] = ("reasoning_content", "reasoning", "both")


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
    dsq_capacity: int | None = None  # Gemini shared pool: in-flight requests before 429s
    error_rate: float = 0.0  # fraction of chat requests answered with a random 500/503
    faults: Mapping[str, float] = field(default_factory=dict)  # kind -> probability
    stall_s: float = 30.0  # how long a "stall" fault hangs before answering
    retry_delay_s: float | None = None  # adds google.rpc.RetryInfo to 429 bodies
    array_errors: bool = True  # wrap the Google error envelope in a one-element array
    request_log: str | None = None  # path: one JSON line per chat request served
    keep_records: bool = False  # also keep those records in memory
    clock: Callable[[], float] = time.monotonic  # token expiry and quota buckets
    reasoning_field: str = "reasoning_content"  # gpt-oss: "reasoning_content"|"reasoning"|"both"
    strict_project: bool = True  # 403 for a project other than ``project``
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
        if self.reasoning_field not in REASONING_FIELDS:
            raise ValueError(f"reasoning_field must be one of {REASONING_FIELDS}")
        unknown = sorted(set(self.faults) - set(FAULT_KINDS))
        if unknown:
            raise ValueError(f"unknown fault kinds {unknown}; known: {FAULT_KINDS}")
        total = self.error_rate + sum(self.faults.values())
        if self.error_rate < 0 or any(p < 0 for p in self.faults.values()) or total > 1.0:
            raise ValueError("fault probabilities must be >= 0 and sum to at most 1")
        if self.token_ttl <= 0:
            raise ValueError("token_ttl must be positive")
        if self.ttft_s is not None and self.ttft_s < 0:
            raise ValueError("ttft_s must be >= 0")
        if self.tokens_per_s is not None and self.tokens_per_s <= 0:
            raise ValueError("tokens_per_s must be positive")


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
