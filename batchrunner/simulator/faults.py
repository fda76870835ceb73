"""Fault injection: one seeded draw per chat request picks at most one fault kind.

Besides statuses, resets, stalls and cut bodies: ``499`` is the CANCELLED answer Vertex
gives under heavy load (not only when the client goes away); ``html_200`` is a front-end
HTML page sent with status 200; ``stream_error`` ends a stream after some content with a
``data: {"error": ...}`` event (429 or 503, object or array form) and no ``[DONE]``.
"""

from __future__ import annotations

import random
from collections.abc import Mapping

import orjson

from .config import FAULT_KINDS
from .envelopes import DSQ_MESSAGE, ApiError, error_envelope, retry_info

ERROR_FAULTS = frozenset({"500", "502", "503", "504", "429", "499"})
CANCELLED_MESSAGE = "The operation was cancelled."


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
    if kind == "499":
        legacy = {"message": CANCELLED_MESSAGE, "domain": "global", "reason": "backendError"}
        return ApiError(499, "CANCELLED", CANCELLED_MESSAGE, errors=(legacy,))
    raise ValueError(f"{kind!r} is not a status fault")


def stream_error(rng: random.Random, retry_delay_s: float | None) -> tuple[ApiError, bool]:
    """The error a ``stream_error`` fault sends, and whether it is array-wrapped."""
    kind = "429" if rng.random() < 0.5 else "503"
    return fault_error(kind, retry_delay_s), rng.random() < 0.5


def stream_error_event(error: ApiError, *, array: bool) -> bytes:
    """The SSE event that carries ``error`` inside a 200 stream."""
    return b"data: " + orjson.dumps(error_envelope(error, array=array)) + b"\n\n"
