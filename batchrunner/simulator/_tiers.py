"""Consumption tiers: which of Vertex's ways of serving a request serves it, from headers.

``X-Vertex-AI-LLM-Shared-Request-Type: flex | priority`` asks for Flex PayGo (half price,
long queueing) or Priority PayGo, both on the ``global`` location only;
``X-Vertex-AI-LLM-Request-Type: shared`` bypasses Provisioned Throughput and ``dedicated``
uses only it, overflow getting a 429. A ``service_tier`` in the body is ignored. The tier
that served a Gemini request is reported in ``usage.extra_properties.google.traffic_type``.

========================  =================================================================
traffic type              served when
========================  =================================================================
PROVISIONED_THROUGHPUT    ``dedicated`` (capacity permitting, else 429); or no
                          ``shared`` header, a ``provisioned_share`` draw, and PT capacity
ON_DEMAND_FLEX            ``flex`` on a model that supports it, after a queueing delay
ON_DEMAND_PRIORITY        ``priority``
ON_DEMAND                 everything else, and every vLLM-served (MaaS) model
========================  =================================================================
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from .envelopes import ApiError
from .latency import SERVER_DEADLINE_S
from .models import ModelSpec
from .quotas import TokenBucket

__all__ = [
    "FLEX_DEADLINE_S",
    "REQUEST_TYPE_HEADER",
    "SHARED_REQUEST_TYPE_HEADER",
    "TRAFFIC_TYPES",
    "Tier",
    "TierDesk",
]

SHARED_REQUEST_TYPE_HEADER = "X-Vertex-AI-LLM-Shared-Request-Type"
REQUEST_TYPE_HEADER = "X-Vertex-AI-LLM-Request-Type"
TRAFFIC_TYPES = ("ON_DEMAND", "ON_DEMAND_FLEX", "ON_DEMAND_PRIORITY", "PROVISIONED_THROUGHPUT")
FLEX_DEADLINE_S = 1800.0  # Flex requests may wait up to 30 minutes
PT_EXCEEDED_MESSAGE = "Too many requests. Exceeded the Provisioned Throughput."
# Flex queueing under realistic latency: log-normal around this median, capped.
_FLEX_MEDIAN_S = 20.0
_FLEX_CAP_S = 900.0
_FLEX_FAST_S = (0.005, 0.02)


@dataclass(frozen=True, slots=True)
class Tier:
    """How one request is served."""

    traffic_type: str
    queue_s: float = 0.0  # waited before prefill starts (Flex)
    deadline_s: float = SERVER_DEADLINE_S

    @property
    def pooled(self) -> bool:
        """Whether Gemini's shared pool (and its 429s) applies."""
        return self.traffic_type != "PROVISIONED_THROUGHPUT"


class TierDesk:
    """Assigns each request its tier; holds the project's Provisioned Throughput capacity."""

    def __init__(
        self,
        *,
        provisioned_share: float,
        provisioned_rps: float | None,
        flex_queue_s: float | None,
        latency: str,
        clock: Callable[[], float],
        rng: random.Random,
    ) -> None:
        self._share = provisioned_share
        self._has_pt = provisioned_share > 0 or provisioned_rps is not None
        self._rps = provisioned_rps
        self._flex_queue_s = flex_queue_s
        self._latency = latency
        self._clock = clock
        self._rng = rng
        self._buckets: dict[tuple[str, str], TokenBucket] = {}

    def assign(
        self, spec: ModelSpec, location: str, headers: Mapping[str, str], digest: int
    ) -> Tier:
        """The tier for one request, or the 400/429 Vertex answers instead."""
        shared = _header(headers, SHARED_REQUEST_TYPE_HEADER, ("flex", "priority"))
        kind = _header(headers, REQUEST_TYPE_HEADER, ("shared", "dedicated"))
        if spec.family != "gemini":
            if shared == "flex":
                raise _flex_unsupported(spec)
            return Tier("ON_DEMAND")
        if shared is not None and location != "global":
            raise ApiError(
                400,
                "INVALID_ARGUMENT",
                f"{shared.capitalize()} PayGo is only supported on the global endpoint; "
                f"location '{location}' is not supported.",
            )
        if shared == "flex" and not spec.flex:
            raise _flex_unsupported(spec)
        if kind == "dedicated":
            if not self._take_pt(spec, location):
                raise ApiError(429, "RESOURCE_EXHAUSTED", PT_EXCEEDED_MESSAGE)
            return Tier("PROVISIONED_THROUGHPUT")
        draw = random.Random(digest ^ 0x7135).random()
        if kind != "shared" and draw < self._share and self._take_pt(spec, location):
            return Tier("PROVISIONED_THROUGHPUT")
        if shared == "flex":
            return Tier(
                "ON_DEMAND_FLEX",
                queue_s=self._flex_queue(),
                deadline_s=FLEX_DEADLINE_S,
            )
        if shared == "priority":
            return Tier("ON_DEMAND_PRIORITY")
        return Tier("ON_DEMAND")

    def _take_pt(self, spec: ModelSpec, location: str) -> bool:
        if not self._has_pt:
            return False
        if self._rps is None:
            return True
        key = (spec.name, location)
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = TokenBucket(max(1, round(self._rps * 60)), self._clock)
        if not bucket.can_take(1.0):
            return False
        bucket.take(1.0)
        return True

    def _flex_queue(self) -> float:
        if self._flex_queue_s is not None:
            return self._flex_queue_s
        if self._latency == "zero":
            return 0.0
        if self._latency == "fast":
            return self._rng.uniform(*_FLEX_FAST_S)
        return min(_FLEX_CAP_S, _FLEX_MEDIAN_S * math.exp(self._rng.gauss(0.0, 1.0)))


def _header(headers: Mapping[str, str], name: str, allowed: tuple[str, ...]) -> str | None:
    raw = headers.get(name)
    if raw is None:
        return None
    value = raw.strip().lower()
    if value not in allowed:
        raise ApiError(
            400,
            "INVALID_ARGUMENT",
            f"Invalid value '{raw}' for header {name}; expected one of: {', '.join(allowed)}.",
        )
    return value


def _flex_unsupported(spec: ModelSpec) -> ApiError:
    return ApiError(
        400, "INVALID_ARGUMENT", f"Flex API is not supported for model: {spec.short_name}"
    )
