"""Fault injection: one seeded draw per chat request picks at most one fault kind."""

from __future__ import annotations

import random
from collections.abc import Mapping

from .config import FAULT_KINDS
from .envelopes import DSQ_MESSAGE, ApiError, retry_info

ERROR_FAULTS = frozenset({"500", "502", "503", "504", "429"})


class FaultPicker:
    """Draws a fault kind per request from the configured probabilities."""

    def __init__(self, faults: Mapping[str, float], error_rate: float, rng: random.Random) -> None:
        table: list[tuple[str, float]] = []
        if error_rate > 0:
            table += [("500", error_rate / 2), ("503", error_rate / 2)]
        table += [(kind, faults[kind]) for kind in FAULT_KINDS if faults.get(kind, 0.0) > 0]
        self._table = tuple(table)
        self._rng = rng

    def pick(self) -> str | None:
        if not self._table:
            return None
        u = self._rng.random()
        for kind, p in self._table:
            if u < p:
                return kind
            u -= p
        return None


def fault_error(kind: str, retry_delay_s: float | None) -> ApiError:
    """The error answer an injected status fault sends."""
    if kind == "500":
        return ApiError(500, "INTERNAL", "Internal error encountered.")
    if kind == "502":
        return ApiError(502, "UNAVAILABLE", "Bad Gateway", html=True)
    if kind == "503":
        return ApiError(503, "UNAVAILABLE", "The service is currently unavailable.")
    if kind == "504":
        return ApiError(
            504, "DEADLINE_EXCEEDED", "Deadline expired before operation could complete."
        )
    if kind == "429":
        details = () if retry_delay_s is None else (retry_info(retry_delay_s),)
        return ApiError(429, "RESOURCE_EXHAUSTED", DSQ_MESSAGE, details=details)
    raise ValueError(f"{kind!r} is not a status fault")
