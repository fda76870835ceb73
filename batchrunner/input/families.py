"""Parameter hygiene per model family: send each model only what it understands.

One run can fan a row out to Gemini and to gpt-oss (a vLLM-served MaaS model). Gemini-only
settings are not sent to vLLM models: the run-wide ``google`` extras (the caller leaves them
out), ``thinking_config`` wherever it sits, and the ``reasoning_effort`` values only Gemini
knows (``minimal``, ``none``). A Gemini request asking for both ``reasoning_effort`` and
``thinking_config`` is refused by Vertex with a 400; here it is one bad-input row instead,
named before anything is sent.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["GEMINI_ONLY_REASONING_EFFORTS", "ParamConflict", "fit_to_family"]

GEMINI_ONLY_REASONING_EFFORTS = frozenset({"minimal", "none"})
"""``reasoning_effort`` values Gemini accepts and gpt-oss (low, medium, high) does not."""

_THINKING_KEYS = ("thinking_config", "thinkingConfig")


class ParamConflict(ValueError):
    """The request's parameters contradict each other; the message names them."""


def _google_extras(body: Mapping[str, Any]) -> Mapping[str, Any]:
    extra = body.get("extra_body")
    google = extra.get("google") if isinstance(extra, Mapping) else None
    return google if isinstance(google, Mapping) else {}


def _thinking_key(body: Mapping[str, Any]) -> str | None:
    """Where the body sets a thinking configuration, as the user would write it."""
    for key in _THINKING_KEYS:
        if key in body:
            return key
        if key in _google_extras(body):
            return f"google.{key}"
    return None


def fit_to_family(body: dict[str, Any], family: str) -> None:
    """Adapt ``body`` (a fresh dict; nested values are shared and never mutated) to ``family``.

    ``family`` is :func:`batchrunner.config.model_family`'s: ``"gemini"`` or ``"vllm"``.
    Raises :class:`ParamConflict` for a Gemini body with both ``reasoning_effort`` and a
    thinking configuration.
    """
    if family == "gemini":
        if body.get("reasoning_effort") is None:
            return  # nothing to conflict with
        where = _thinking_key(body)
        if where is not None and body.get("reasoning_effort") is not None:
            raise ParamConflict(
                f"asks for both 'reasoning_effort' and {where!r}; {body.get('model')} accepts"
                " only one of them: drop one"
            )
        return
    for key in _THINKING_KEYS:
        body.pop(key, None)
    effort = body.get("reasoning_effort")
    if isinstance(effort, str) and effort.lower() in GEMINI_ONLY_REASONING_EFFORTS:
        del body["reasoning_effort"]
    google = _google_extras(body)
    if any(key in google for key in _THINKING_KEYS):
        kept = {k: v for k, v in google.items() if k not in _THINKING_KEYS}
        extra = {k: v for k, v in body["extra_body"].items() if k != "google"}
        if kept:
            extra["google"] = kept
        if extra:
            body["extra_body"] = extra
        else:
            del body["extra_body"]
