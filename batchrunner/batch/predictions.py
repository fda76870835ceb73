"""Prediction lines read back into result rows, with usage and cost like the online route.

Gemini lines carry a ``GenerateContentResponse`` under ``response`` or an error under
``status``; MaaS lines are OpenAI batch output lines. Usage follows the online convention:
``completion_tokens`` counts every generated token, thoughts included. Batch output reports
``trafficType: ON_DEMAND``; rows say ``BATCH``, and are priced at the batch rate.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson

from batchrunner.endpoint.candidates import ToolCall, normalize_finish_reason, tool_calls_json
from batchrunner.endpoint.usage import normalize_usage
from batchrunner.results import Result, Usage
from batchrunner.stats.pricing import PriceTable

__all__ = ["Prediction", "parse_prediction"]

TRAFFIC_TYPE = "BATCH"


@dataclass(frozen=True, slots=True)
class Prediction:
    """One output line: its key, and either an answer's fields or a failure."""

    key: str | None
    ok: bool
    fields: Mapping[str, Any]  # Result fields when ok; http_status/error_* when not


def parse_prediction(raw: bytes, gemini: bool) -> Prediction:
    """One line of ``predictions.jsonl``; an unreadable line is a failure with no key."""
    try:
        line = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return Prediction(None, False, _failure(None, "unreadable prediction line"))
    if not isinstance(line, dict):
        return Prediction(None, False, _failure(None, "prediction line is not an object"))
    if gemini:
        return _gemini(line)
    return _openai(line)


def _failure(code: int | None, message: str) -> dict[str, Any]:
    kinds = {429: "rate_limited", 400: "bad_request", 500: "server_error", 503: "server_error"}
    return {
        "http_status": code,
        "error_type": kinds.get(code or 0, "batch_error"),
        "error_message": message[:1000],
    }


def _status_failure(status: object) -> dict[str, Any]:
    """Gemini's ``status``: Google's error envelope as text, or a bare message."""
    text = status if isinstance(status, str) else orjson.dumps(status).decode()
    try:
        error = orjson.loads(text).get("error", {})
    except (orjson.JSONDecodeError, AttributeError):
        return _failure(None, text)
    code = error.get("code") if isinstance(error, dict) else None
    message = error.get("message") if isinstance(error, dict) else None
    return _failure(code if isinstance(code, int) else None, str(message or text))


def _gemini(line: Mapping[str, Any]) -> Prediction:
    key = line.get("key")
    key = key if isinstance(key, str) or key is None else str(key)
    status = line.get("status")
    response = line.get("response")
    if status or not isinstance(response, Mapping):
        return Prediction(key, False, _status_failure(status or "no response in the line"))
    candidates = response.get("candidates") or []
    first = candidates[0] if candidates and isinstance(candidates[0], Mapping) else {}
    texts: list[str] = []
    thoughts: list[str] = []
    calls: list[ToolCall] = []
    for part in (first.get("content") or {}).get("parts") or []:
        if not isinstance(part, Mapping):
            continue
        call = part.get("functionCall")
        if isinstance(call, Mapping):
            calls.append(_gemini_call(call))
        text = part.get("text")
        if isinstance(text, str):
            (thoughts if part.get("thought") else texts).append(text)
    raw = first.get("finishReason")
    raw_reason = str(raw) if raw else None
    finish = normalize_finish_reason(raw_reason, has_tool_calls=bool(calls))
    if not candidates:
        raw_reason = (response.get("promptFeedback") or {}).get("blockReason")
        finish = "content_filter" if raw_reason else None
    meta = response.get("usageMetadata") or {}
    prompt = _int(meta.get("promptTokenCount"))
    thought = _int(meta.get("thoughtsTokenCount")) or 0
    candidate = _int(meta.get("candidatesTokenCount")) or 0
    completion = candidate + thought
    usage = Usage(
        prompt_tokens=prompt,
        completion_tokens=completion,
        reasoning_tokens=thought,
        cached_tokens=_int(meta.get("cachedContentTokenCount")),
        total_tokens=(prompt or 0) + completion,
        traffic_type=TRAFFIC_TYPE,
    )
    fields = {
        "output": "".join(texts) if texts or not calls else None,
        "reasoning": "".join(thoughts) or None,
        "finish_reason": finish,
        "finish_reason_raw": raw_reason if raw_reason != finish else None,
        "tool_calls": tool_calls_json(calls),
        "response_id": response.get("responseId"),
        "usage": usage,
        "processed_at": line.get("processed_time"),
    }
    return Prediction(key, True, fields)


def _openai(line: Mapping[str, Any]) -> Prediction:
    key = line.get("custom_id")
    key = key if isinstance(key, str) or key is None else str(key)
    response = line.get("response")
    error = line.get("error")
    if error:
        message = error.get("message") if isinstance(error, Mapping) else error
        return Prediction(key, False, _failure(None, str(message)))
    if not isinstance(response, Mapping):
        return Prediction(key, False, _failure(None, "no response in the line"))
    code = response.get("status_code")
    body = response.get("body")
    if code != 200 or not isinstance(body, Mapping):
        inner = body.get("error") if isinstance(body, Mapping) else None
        message = inner.get("message") if isinstance(inner, Mapping) else body
        return Prediction(key, False, _failure(_int(code), str(message)))
    choices = body.get("choices") or []
    first = choices[0] if choices and isinstance(choices[0], Mapping) else {}
    message = first.get("message") or {}
    reasoning = message.get("reasoning_content") or message.get("reasoning")
    normal = normalize_usage(str(body.get("model") or "gpt-oss"), body.get("usage"))
    usage = normal._replace(traffic_type=TRAFFIC_TYPE)
    calls = [_openai_call(c) for c in message.get("tool_calls") or [] if isinstance(c, Mapping)]
    raw_reason = first.get("finish_reason")
    raw_reason = str(raw_reason) if raw_reason else None
    finish = normalize_finish_reason(raw_reason, has_tool_calls=bool(calls))
    fields = {
        "output": message.get("content"),
        "reasoning": reasoning if isinstance(reasoning, str) else None,
        "finish_reason": finish,
        "finish_reason_raw": raw_reason if raw_reason != finish else None,
        "tool_calls": tool_calls_json(calls),
        "response_id": body.get("id"),
        "usage": usage,
        "processed_at": None,
    }
    return Prediction(key, True, fields)


def _gemini_call(call: Mapping[str, Any]) -> ToolCall:
    """A ``functionCall`` part: its ``args`` object is the call's arguments as JSON text."""
    name = call.get("name")
    ident = call.get("id")
    return ToolCall(
        id=ident if isinstance(ident, str) else None,
        name=name if isinstance(name, str) else None,
        arguments=orjson.dumps(call.get("args") or {}).decode(),
    )


def _openai_call(call: Mapping[str, Any]) -> ToolCall:
    function = call.get("function") or {}
    arguments = function.get("arguments")
    ident, name = call.get("id"), function.get("name")
    return ToolCall(
        id=ident if isinstance(ident, str) else None,
        name=name if isinstance(name, str) else None,
        arguments=arguments if isinstance(arguments, str) else orjson.dumps(arguments).decode(),
    )


def _int(value: object) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.isdigit():
        return int(value)
    return None


def answered_row(
    prediction: Prediction,
    *,
    id: str,
    model: str,
    row: int | None,
    job: str,
    attempts: int,
    prices: PriceTable,
    started_at: datetime | None,
    finished_at: datetime | None,
) -> Result:
    """The result row of a prediction; a failure becomes an ``error`` row."""
    fields = prediction.fields
    if not prediction.ok:
        return Result(
            id=id,
            model=model,
            status="error",
            row=row,
            attempts=attempts,
            http_status=fields.get("http_status"),
            error_type=fields.get("error_type"),
            error_message=fields.get("error_message"),
            traffic_type=TRAFFIC_TYPE,
            started_at=started_at,
            finished_at=finished_at,
            batch_job=job,
        )
    usage: Usage = fields["usage"]
    return Result(
        id=id,
        model=model,
        status="ok",
        row=row,
        output=fields.get("output"),
        reasoning=fields.get("reasoning"),
        finish_reason=fields.get("finish_reason"),
        finish_reason_raw=fields.get("finish_reason_raw"),
        tool_calls=fields.get("tool_calls"),
        prompt_tokens=usage.prompt_tokens,
        completion_tokens=usage.completion_tokens,
        reasoning_tokens=usage.reasoning_tokens,
        cached_tokens=usage.cached_tokens,
        total_tokens=usage.total_tokens,
        cost_usd=prices.batch_cost(model, usage),
        attempts=attempts,
        http_status=200,
        response_id=fields.get("response_id"),
        traffic_type=TRAFFIC_TYPE,
        started_at=started_at,
        finished_at=finished_at,
        batch_job=job,
    )
