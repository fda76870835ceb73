"""Token usage as the server reported it, normalized to one convention.

Gemini on Vertex counts thinking tokens outside ``completion_tokens`` (``total = prompt +
completion + reasoning``); gpt-oss served by vLLM counts them inside (OpenAI's convention).
:func:`normalize_usage` turns either shape into :class:`Usage`, where ``completion_tokens``
is every generated token billed as output, reasoning included.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from batchrunner.config import model_family
from batchrunner.results import Usage

__all__ = ["Usage", "model_family", "normalize_usage"]

logger = logging.getLogger(__name__)


def _count(value: object) -> int | None:
    """A token count, or None for anything that is not a non-negative whole number."""
    if type(value) is int:  # the usual case, first (a bool's type is bool, not int)
        return value if value >= 0 else None
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if value >= 0 else None
    if isinstance(value, float) and value.is_integer() and value >= 0:
        return int(value)
    return None


def _as_mapping(value: object) -> Mapping[str, object] | None:
    # Parsed JSON objects are dicts: check that first, the Mapping ABC check is slower.
    if type(value) is dict:
        return value
    if value is None:
        return None
    return value if isinstance(value, Mapping) else None


def _child(mapping: Mapping[str, object] | None, key: str) -> Mapping[str, object] | None:
    if mapping is None:
        return None
    return _as_mapping(mapping.get(key))


def _reasoning_excluded(
    family: str,
    prompt: int | None,
    completion: int | None,
    reasoning: int | None,
    total: int | None,
) -> bool:
    """Whether the raw ``completion_tokens`` leaves reasoning out (Gemini's convention).

    The numbers decide when they can: a total equal to prompt + completion + reasoning is
    Gemini's shape, one equal to prompt + completion is OpenAI's, and a completion smaller
    than its own reasoning part cannot include it. The model family decides otherwise.
    """
    if not reasoning:
        return False  # nothing to add either way
    if prompt is not None and completion is not None and total is not None:
        if total == prompt + completion + reasoning:
            return True
        if total == prompt + completion:
            return False
    if completion is not None and completion < reasoning:
        return True
    return family == "gemini"


def normalize_usage(model: str, usage: Mapping[str, object] | None) -> Usage:
    """Normalize a response's ``usage`` object for ``model``; never raises.

    Missing fields and values of the wrong type become ``None``. For Gemini an absent
    ``completion_tokens_details`` means no reasoning (the server omits zero values), so
    ``reasoning_tokens`` is 0 there; for vLLM it stays ``None`` (older vLLM never says).
    """
    usage = _as_mapping(usage)
    if usage is None:
        return Usage()
    family = model_family(model)
    get = usage.get
    prompt = _count(get("prompt_tokens"))
    raw_completion = _count(get("completion_tokens"))
    raw_total = _count(get("total_tokens"))
    details = _as_mapping(get("completion_tokens_details"))
    reasoning = _count(details.get("reasoning_tokens")) if details is not None else None
    cached_details = _as_mapping(get("prompt_tokens_details"))
    cached = _count(cached_details.get("cached_tokens")) if cached_details is not None else None
    traffic = _child(_as_mapping(get("extra_properties")), "google")
    traffic_type = traffic.get("traffic_type") if traffic is not None else None

    excluded = _reasoning_excluded(family, prompt, raw_completion, reasoning, raw_total)
    if (
        reasoning is None
        and family == "gemini"
        and details is None
        and (raw_completion is not None or prompt is not None)
    ):
        reasoning = 0

    completion: int | None
    if raw_completion is not None:
        completion = raw_completion + reasoning if excluded and reasoning else raw_completion
    elif raw_total is not None and prompt is not None and raw_total >= prompt:
        # Both conventions agree that total = prompt + every generated token.
        completion = raw_total - prompt
    elif family == "gemini" and reasoning:
        # Gemini omits zero-valued fields: thinking used up the budget, no visible output.
        completion = reasoning
    else:
        completion = None

    if prompt is None and raw_total is not None and completion is not None:
        prompt = raw_total - completion if raw_total >= completion else None

    if reasoning is not None and completion is not None and reasoning > completion:
        logger.debug("usage for %s reports more reasoning than output tokens", model)
    if cached is not None and prompt is not None and cached > prompt:
        cached = prompt

    total = prompt + completion if prompt is not None and completion is not None else raw_total
    return Usage(
        prompt_tokens=prompt,
        completion_tokens=completion,
        reasoning_tokens=reasoning,
        cached_tokens=cached,
        total_tokens=total,
        traffic_type=traffic_type if isinstance(traffic_type, str) else None,
    )
