"""Capacity: MaaS-style hard requests/min and tokens/min buckets per (model, location), and
Gemini's dynamic shared quota, where 429s grow likelier as in-flight load passes capacity.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

from .envelopes import DSQ_MESSAGE, ApiError, retry_info
from .models import ModelSpec

_QUOTA_HELP = "Please submit a quota increase request. https://cloud.google.com/vertex-ai/docs/generative-ai/quotas-genai."
# The buckets hold this many seconds of quota: a small burst above the steady rate.
BURST_S = 1.0


class TokenBucket:
    """A continuously refilling bucket of ``per_minute`` units, holding ``BURST_S`` seconds.

    A request larger than the bucket is admitted when the bucket is full and drives it
    negative, so the long-run rate still equals the quota.
    """

    def __init__(self, per_minute: int, clock: Callable[[], float]) -> None:
        self.rate = per_minute / 60.0
        self.capacity = max(1.0, self.rate * BURST_S)
        self._level = self.capacity
        self._clock = clock
        self._stamp = clock()

    def level(self) -> float:
        now = self._clock()
        self._level = min(self.capacity, self._level + (now - self._stamp) * self.rate)
        self._stamp = now
        return self._level

    def can_take(self, amount: float) -> bool:
        return self.level() >= min(amount, self.capacity)

    def take(self, amount: float) -> None:
        self.level()
        self._level -= amount


@dataclass(frozen=True, slots=True)
class _Limits:
    rpm: int | None
    tpm: int | None  # input + output
    input_tpm: int | None
    output_tpm: int | None


class QuotaBook:
    """Every hard bucket, created on first use per (model, location)."""

    def __init__(
        self,
        *,
        rpm_quota: int | None,
        tpm_quota: int | None,
        clock: Callable[[], float],
        retry_delay_s: float | None,
        defaults: bool = True,
    ) -> None:
        self._defaults = defaults
        self._rpm = rpm_quota
        self._tpm = tpm_quota
        self._clock = clock
        self._retry_delay_s = retry_delay_s
        self._buckets: dict[tuple[str, str, str], TokenBucket] = {}

    def _limits(self, spec: ModelSpec) -> _Limits:
        default_rpm = spec.rpm if self._defaults else None
        rpm = self._rpm if self._rpm is not None else default_rpm
        if self._tpm is not None:
            return _Limits(rpm, self._tpm, None, None)
        if not self._defaults:
            return _Limits(rpm, None, None, None)
        return _Limits(rpm, None, spec.input_tpm, spec.output_tpm)

    def _bucket(self, model: str, location: str, metric: str, per_minute: int) -> TokenBucket:
        key = (model, location, metric)
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = TokenBucket(per_minute, self._clock)
        return bucket

    def admit(self, spec: ModelSpec, model: str, location: str, prompt: int, output: int) -> None:
        """Charge one request and its tokens, or raise the MaaS quota 429 and charge nothing."""
        limits = self._limits(spec)
        charges: list[tuple[TokenBucket, float, str]] = []
        if limits.rpm is not None:
            bucket = self._bucket(model, location, "rpm", limits.rpm)
            charges.append((bucket, 1.0, "online_prediction_requests_per_base_model"))
        if limits.tpm is not None:
            bucket = self._bucket(model, location, "tpm", limits.tpm)
            charges.append(
                (bucket, prompt + output, "online_prediction_tokens_per_minute_per_base_model")
            )
        if limits.input_tpm is not None:
            bucket = self._bucket(model, location, "in", limits.input_tpm)
            charges.append(
                (bucket, prompt, "online_prediction_input_tokens_per_minute_per_base_model")
            )
        if limits.output_tpm is not None:
            bucket = self._bucket(model, location, "out", limits.output_tpm)
            charges.append(
                (bucket, output, "online_prediction_output_tokens_per_minute_per_base_model")
            )
        for bucket, amount, metric in charges:
            if not bucket.can_take(amount):
                raise self._exceeded(metric, spec.short_name)
        for bucket, amount, _ in charges:
            bucket.take(amount)

    def _exceeded(self, metric: str, base_model: str) -> ApiError:
        details = () if self._retry_delay_s is None else (retry_info(self._retry_delay_s),)
        return ApiError(
            429,
            "RESOURCE_EXHAUSTED",
            f"Quota exceeded for aiplatform.googleapis.com/{metric} with base model: "
            f"{base_model}. {_QUOTA_HELP}",
            details=details,
        )


class SharedPool:
    """Gemini's dynamic shared quota: past ``capacity`` in-flight requests per (model,
    location), a request is refused with probability ``1 - capacity / in_flight``.
    """

    def __init__(
        self, capacity: int | None, rng: random.Random, retry_delay_s: float | None
    ) -> None:
        self._capacity = capacity
        self._rng = rng
        self._retry_delay_s = retry_delay_s
        self._in_flight: dict[tuple[str, str], int] = {}

    def enter(self, model: str, location: str) -> None:
        key = (model, location)
        self._in_flight[key] = self._in_flight.get(key, 0) + 1

    def leave(self, model: str, location: str) -> None:
        key = (model, location)
        self._in_flight[key] -= 1

    def check(self, model: str, location: str) -> None:
        """Raise the DSQ 429 with a probability rising with load above capacity."""
        if self._capacity is None:
            return
        load = self._in_flight.get((model, location), 0)
        if load <= self._capacity:
            return
        if self._rng.random() < 1.0 - self._capacity / load:
            details = () if self._retry_delay_s is None else (retry_info(self._retry_delay_s),)
            raise ApiError(429, "RESOURCE_EXHAUSTED", DSQ_MESSAGE, details=details)
