"""The latency model: time to first token and decode rate for one request.

TTFT = round trip + fixed overhead + queueing (above a free concurrency) + prefill
(prompt tokens / prefill rate) + hidden thinking (Gemini only) / decode rate, with
log-normal noise; then tokens at the decode rate, sometimes with one long pause.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

from .answers import Plan
from .config import SimulatorConfig
from .models import FAST_PROFILE, ModelSpec

# The server's default deadline (reference §5.2): longer generations end in a 504.
SERVER_DEADLINE_S = 600.0


@dataclass(frozen=True, slots=True)
class Timing:
    """When tokens come out, relative to the request's arrival."""

    ttft_s: float  # until the first generated (visible or streamed) token
    tokens_per_s: float  # math.inf = instantly
    stall_after_tokens: int = -1  # pause once after this many tokens; -1 = never
    stall_s: float = 0.0

    def token_time(self, tokens: int) -> float:
        """Seconds from arrival until ``tokens`` streamed tokens have been generated."""
        t = self.ttft_s
        if self.tokens_per_s != math.inf:
            t += tokens / self.tokens_per_s
        if 0 <= self.stall_after_tokens < tokens:
            t += self.stall_s
        return t


ZERO = Timing(0.0, math.inf)


def plan_timing(
    config: SimulatorConfig,
    spec: ModelSpec,
    plan: Plan,
    *,
    in_flight: int,
    rng: random.Random,
) -> Timing:
    """The timing of one answer under the configured profile and overrides."""
    if config.latency == "zero" and config.ttft_s is None and config.tokens_per_s is None:
        return ZERO
    profile = FAST_PROFILE if config.latency != "realistic" else spec.latency
    if config.latency == "zero":
        rate = config.tokens_per_s if config.tokens_per_s is not None else math.inf
        return Timing(config.ttft_s or 0.0, rate)
    noise = profile.jitter_sigma
    if config.tokens_per_s is not None:
        rate = config.tokens_per_s
    else:
        rate = profile.decode_tokens_per_s * (math.exp(rng.gauss(0.0, noise / 2)) if noise else 1.0)
    if config.ttft_s is not None:
        ttft = config.ttft_s
    else:
        queue = max(0, in_flight - profile.queue_free) * profile.queue_s_per_request
        hidden = (
            max((len(c.reasoning) for c in plan.choices), default=0) if plan.hidden_reasoning else 0
        )
        ttft = (
            profile.rtt_s
            + queue
            + (profile.overhead_s + plan.prompt_tokens / profile.prefill_tokens_per_s)
            * (math.exp(rng.gauss(0.0, noise)) if noise else 1.0)
            + hidden / rate
        )
    stall_after, stall_s = -1, 0.0
    if profile.stall_probability and rng.random() < profile.stall_probability:
        visible = plan.content_tokens + (0 if plan.hidden_reasoning else plan.reasoning_tokens)
        stall_after = rng.randrange(max(1, visible))
        stall_s = rng.uniform(*profile.stall_range_s)
    return Timing(ttft, rate, stall_after, stall_s)


def streamed_tokens(plan: Plan) -> int:
    """Tokens whose generation time the client waits for after the first token."""
    longest = max(
        (len(c.content) + (0 if plan.hidden_reasoning else len(c.reasoning)) for c in plan.choices),
        default=0,
    )
    return longest
