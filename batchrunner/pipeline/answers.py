"""Judging an answer that came back 200: is it empty, cut short, filtered, the JSON asked for?

A 200 is not always an answer. A reasoning model can spend ``max_tokens`` thinking and return
no text (``finish_reason`` ``length``, ``output`` null); a filter can withhold it; a request
for JSON can get prose or a truncated object. :func:`check_json` parses (and, for a
``json_schema`` request, validates) the answer; :func:`rejection` says which of the
``--fail-on`` kinds, if any, turns the row into an ``error`` row.
"""

from __future__ import annotations

import functools
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from batchrunner.errors import ANSWER_ERRORS, EMPTY_TRUNCATED_ADVICE

__all__ = [
    "ANSWER_ERRORS",
    "EMPTY_TRUNCATED_ADVICE",
    "JsonVerdict",
    "Rejection",
    "check_json",
    "is_empty",
    "rejection",
]

_MESSAGE_CHARS = 200


def is_empty(output: str | None, finish_reason: str | None) -> bool:
    """No answer text, and no tool calls standing in for it."""
    return finish_reason != "tool_calls" and not (output and output.strip())


@dataclass(frozen=True, slots=True)
class JsonVerdict:
    """A JSON answer parsed: the compact JSON text (None if it does not parse) and why not."""

    parsed: str | None
    valid: bool
    problem: str | None = None


def _strip_fence(text: str) -> str:
    body = text.strip()
    if body.startswith("```") and body.endswith("```") and len(body) >= 6:
        body = body[3:-3]
        first_newline = body.find("\n")
        if first_newline >= 0 and body[:first_newline].strip().isalpha():
            body = body[first_newline + 1 :]  # a ```json language tag
    return body.strip()


@functools.lru_cache(maxsize=64)
def _validator(schema_json: str) -> Any:
    import jsonschema

    schema = orjson.loads(schema_json)
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema)


def _schema_of(response_format: Mapping[str, Any]) -> Mapping[str, Any] | None:
    if response_format.get("type") != "json_schema":
        return None
    spec = response_format.get("json_schema")
    schema = spec.get("schema") if isinstance(spec, Mapping) else None
    return schema if isinstance(schema, Mapping) else None


def check_json(output: str | None, response_format: Mapping[str, Any]) -> JsonVerdict:
    """Parse ``output`` as the JSON ``response_format`` asked for; validate a schema's."""
    if not output or not output.strip():
        return JsonVerdict(None, False, "the answer is empty")
    try:
        value = orjson.loads(_strip_fence(output))
    except orjson.JSONDecodeError as exc:
        return JsonVerdict(None, False, f"the answer is not JSON ({exc})")
    parsed = orjson.dumps(value).decode()
    if response_format.get("type") == "json_object" and not isinstance(value, dict):
        return JsonVerdict(parsed, False, "the answer is JSON but not an object")
    schema = _schema_of(response_format)
    if schema is None:
        return JsonVerdict(parsed, True)
    import jsonschema

    try:
        validator = _validator(orjson.dumps(schema, option=orjson.OPT_SORT_KEYS).decode())
    except jsonschema.SchemaError as exc:
        return JsonVerdict(parsed, False, f"the request's schema is invalid ({exc.message})")
    error = jsonschema.exceptions.best_match(validator.iter_errors(value))
    if error is None:
        return JsonVerdict(parsed, True)
    where = "/".join(str(p) for p in error.absolute_path) or "(root)"
    return JsonVerdict(
        parsed, False, f"the answer does not match the schema at {where}: {error.message}"
    )


@dataclass(frozen=True, slots=True)
class Rejection:
    """Why an answer counts as an error: its error type, a message, and whether to retry."""

    error_type: str
    message: str
    retryable: bool = False


def rejection(
    output: str | None,
    finish_reason: str | None,
    verdict: JsonVerdict | None,
    fail_on: Collection[str],
) -> Rejection | None:
    """The ``--fail-on`` kind this answer falls under (first match), or None to keep it ok."""
    if not fail_on:
        return None
    empty = is_empty(output, finish_reason)
    if "content_filter" in fail_on and finish_reason == "content_filter":
        return Rejection("content_filter", "the answer was withheld by a content filter")
    if "length" in fail_on and finish_reason == "length":
        text = "no text" if empty else "cut short"
        return Rejection(
            "length",
            f"the answer hit the token limit ({text}, finish_reason length); "
            f"{EMPTY_TRUNCATED_ADVICE}",
        )
    # A filtered answer is empty by design: it counts as ``content_filter``, not ``empty``.
    if "empty" in fail_on and empty and finish_reason != "content_filter":
        if finish_reason == "length":
            why = f"the token limit was spent before any text; {EMPTY_TRUNCATED_ADVICE}"
        else:
            why = f"finish_reason {finish_reason or 'none'}"
        return Rejection("empty", f"the answer is empty ({why})")
    if "invalid-json" in fail_on and verdict is not None and not verdict.valid:
        problem = verdict.problem or "the answer is not the JSON asked for"
        if len(problem) > _MESSAGE_CHARS:
            problem = problem[: _MESSAGE_CHARS - 1] + "…"
        return Rejection("invalid_json", problem, retryable=True)
    return None
