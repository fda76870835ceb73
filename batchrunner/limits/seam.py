"""What a request asks the limiter for, what it gets, and what it reports back.

A request asks a :class:`Limiter` for a :class:`Permit` with its :class:`TokenEstimate`,
and hands the permit back with an :class:`Outcome`. :class:`LimitConfig` holds one
model's limits; the statistics classes are snapshots of a limiter's state. The local
limiter (``batchrunner.limits.local``) and the one shared between processes
(``batchrunner.limits.ray``) both speak this vocabulary.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import NamedTuple, Protocol

from batchrunner.errors import RETRY_AFTER_CAP_S

__all__ = [
    "LimitConfig",
    "Limiter",
    "LimiterStatistics",
    "ModelStatistics",
    "Outcome",
    "Permit",
    "TokenEstimate",
]

_OUTCOME_KINDS = frozenset({"ok", "throttled", "error", "cancelled"})


class TokenEstimate(NamedTuple):
    """Tokens a request is expected to use, charged to the token buckets on admission."""

    input_tokens: int
    output_tokens: int


@dataclass(frozen=True, slots=True)
class Outcome:
    """How a permitted request ended.

    ``kind`` is ``ok``, ``throttled`` (a 429), ``error`` (any other failure) or
    ``cancelled`` (a request abandoned by the caller, counted neither as success nor as
    failure). Real token usage, when known, replaces the estimate in the token buckets.
    ``reason`` says why a 429 came, as the error classifier reads it: ``"quota"`` (a hard
    per-model quota), ``"dsq"`` (the shared pool is busy), ``"provisioned_throughput"``, or
    ``None`` when the server did not say.
    """

    kind: str
    input_tokens: int | None = None
    output_tokens: int | None = None
    latency_s: float | None = None
    retry_after: float | None = None
    reason: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in _OUTCOME_KINDS:
            raise ValueError(f"unknown outcome kind {self.kind!r}")


@dataclass(frozen=True, slots=True)
class LimitConfig:
    """Limits for one model. Rates are per minute; ``None`` means unlimited.

    ``initial_concurrency`` defaults to ``min(max_concurrency, 16)``; the window then
    doubles every round trip (slow start) until the first 429 or latency rise, and grows by
    one per window of successes after that. ``decrease_factor`` scales the window on a 429,
    at most once per round trip. ``latency_tolerance`` is how many times its baseline the
    smoothed latency may reach before the window is gently shrunk (``None`` turns that off).
    After a shared-capacity 429 without ``retry_after`` the model pauses for
    a jittered ``pause_base_s * 2**(n-1)`` (n = consecutive throttled rounds), at most
    ``pause_cap_s``.

    That is how a Gemini model's 429s are all taken: its pay-as-you-go capacity is shared.
    Every 429 of another model (MaaS, whose quotas are per minute) is taken for a rate
    quota (when ``adaptive``): the model gets a learned
    rate, which starts one cut below the rate the server admitted over the last second, is
    cut by ``rate_decrease_factor`` on a 429 (at most once per round: requests sent after
    the previous cut), and grows by ``rate_increase`` times the rate after the last cut per
    second of successes sent at that pace. Once ``rate_probe_s`` pass without a 429 it
    probes: it grows by ``rate_increase`` times itself per second, twice that after another
    ``rate_probe_s``, and so on, so that a quota that has risen, or a burst of 429s that
    has passed, is soon made up for. Requests are paced evenly at the learned rate, which
    never exceeds ``rpm`` nor falls below ``min_rpm``. Such a 429 pauses the model only
    when it came with ``retry_after``: the slower rate is the back-off.
    """

    rpm: float | None = None
    tpm: float | None = None
    input_tpm: float | None = None
    output_tpm: float | None = None
    max_concurrency: int = 64
    adaptive: bool = True
    initial_concurrency: int | None = None
    min_concurrency: int = 1
    burst_s: float = 1.0
    decrease_factor: float = 0.6
    latency_tolerance: float | None = 3.0
    pause_base_s: float = 1.0
    pause_cap_s: float = 30.0
    retry_after_cap_s: float = RETRY_AFTER_CAP_S
    rate_decrease_factor: float = 0.9
    rate_increase: float = 0.02
    rate_probe_s: float = 5.0
    min_rpm: float = 1.0

    def __post_init__(self) -> None:
        for name in ("rpm", "tpm", "input_tpm", "output_tpm"):
            value = getattr(self, name)
            if value is not None and not (value > 0 and math.isfinite(value)):
                raise ValueError(f"{name} must be a positive number, not {value!r}")
        if not 1 <= self.min_concurrency <= self.max_concurrency:
            raise ValueError("need 1 <= min_concurrency <= max_concurrency")
        if self.initial_concurrency is not None and not (
            self.min_concurrency <= self.initial_concurrency <= self.max_concurrency
        ):
            raise ValueError("initial_concurrency must lie within [min, max]_concurrency")
        if not 0 < self.decrease_factor < 1:
            raise ValueError("decrease_factor must lie in (0, 1)")
        if self.burst_s <= 0 or self.pause_base_s < 0 or self.pause_cap_s < 0:
            raise ValueError("burst_s must be positive and pause times non-negative")
        if self.latency_tolerance is not None and self.latency_tolerance <= 1:
            raise ValueError("latency_tolerance must be above 1")
        if not 0 < self.rate_decrease_factor < 1:
            raise ValueError("rate_decrease_factor must lie in (0, 1)")
        if not (self.rate_increase > 0 and self.rate_probe_s > 0 and self.min_rpm > 0):
            raise ValueError("rate_increase, rate_probe_s and min_rpm must be positive")
        if self.rpm is not None and self.min_rpm > self.rpm:
            raise ValueError("min_rpm must not exceed rpm")

    @property
    def start_concurrency(self) -> int:
        """The window a model starts with."""
        if not self.adaptive:
            return self.max_concurrency
        if self.initial_concurrency is not None:
            return self.initial_concurrency
        return max(self.min_concurrency, min(self.max_concurrency, 16))


class Permit:
    """Leave to send one request; give it back with :meth:`Limiter.release` exactly once.

    ``epoch``, ``serial``, ``rate_epoch`` and ``paced`` are the issuing limiter's record of
    when the request was admitted, so that it can tell which outcomes belong together.
    """

    __slots__ = (
        "_owner",
        "_released",
        "acquired_at",
        "epoch",
        "estimate",
        "model",
        "paced",
        "rate_epoch",
        "serial",
    )

    def __init__(
        self,
        owner: object,
        model: str,
        estimate: TokenEstimate,
        acquired_at: float,
        epoch: int,
        serial: int,
        rate_epoch: int = 0,
        paced: bool = False,
    ) -> None:
        self._owner = owner
        self.model = model
        self.estimate = estimate
        self.acquired_at = acquired_at
        self.epoch = epoch  # which decrease of the window this request was sent after
        self.serial = serial  # its place in the model's sequence of admissions
        self.rate_epoch = rate_epoch  # which cut of the learned rate it was sent after
        self.paced = paced  # sent at about the learned rate, so that rate was in use
        self._released = False

    def settle(self, owner: object) -> None:
        """Mark the permit given back to ``owner``; refuse another's permit or a second return."""
        if self._owner is not owner:
            raise RuntimeError("permit was issued by another limiter")
        if self._released:
            raise RuntimeError("permit released twice")
        self._released = True

    def __repr__(self) -> str:
        return f"Permit(model={self.model!r}, acquired_at={self.acquired_at!r})"


class Limiter(Protocol):
    """The admission seam: a local limiter or one shared between processes plugs in here."""

    async def acquire(self, model: str, estimate: TokenEstimate) -> Permit:
        """Wait until ``model`` may take one more request of this size."""
        ...

    def release(self, permit: Permit, outcome: Outcome) -> None:
        """Return a permit and report how its request ended."""
        ...


@dataclass(frozen=True, slots=True)
class ModelStatistics:
    """A snapshot of one model's admission state.

    ``rate_used`` maps each configured limit (``rpm``, ``tpm``, ``input_tpm``,
    ``output_tpm``) to the share of its burst currently spent (above 1 when in debt).
    ``learned_rpm`` is the request rate learned from quota 429s, per minute.
    ``waiting_on`` names the limit the model's waiting requests wait on, if any wait.
    """

    in_flight: int
    waiting: int
    concurrency_limit: int
    admitted: int
    ok: int
    throttled: int
    errors: int
    cancelled: int
    paused_until: float | None
    rate_used: Mapping[str, float]
    learned_rpm: float | None = None  # the rate learned from quota 429s, if any
    # What the model's waiting requests wait on: "rpm", "tpm", "input_tpm", "output_tpm",
    # "429 backoff" or "window n/N"; None when none waits.
    waiting_on: str | None = None


@dataclass(frozen=True, slots=True)
class LimiterStatistics:
    """A snapshot of every model the limiter has seen."""

    models: Mapping[str, ModelStatistics]


def share(value: float | None, shard: tuple[int, int] | None) -> float | None:
    """One shard's share of a whole job's rate limit."""
    if value is None or shard is None:
        return value
    return value / shard[1]
