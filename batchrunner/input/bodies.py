"""Turn an input row into the chat-completions request body Vertex expects, one per model.

Per-row parameters win over run defaults; Google extensions go under the documented
nested ``extra_body.google`` key; tools, response formats and unknown parameters under
``params`` pass through untouched. Each model gets only what its family understands
(:mod:`batchrunner.input.families`).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping, Sequence
from typing import Any

import orjson

from batchrunner.config import (
    InputFields,
    RequestDefaults,
    RequestLimits,
    RunConfig,
    max_input_tokens,
    model_family,
)
from batchrunner.input.families import ParamConflict, fit_to_family
from batchrunner.input.readers import InputRow
from batchrunner.results import RequestSpec

# OpenAI request parameters recognised as top-level input columns. Anything else at the top
# level is row metadata (labels, categories) and is not sent; put it under `params` to send it.
OPENAI_PARAMS = frozenset(
    {
        "frequency_penalty",
        "function_call",
        "functions",
        "logit_bias",
        "logprobs",
        "max_completion_tokens",
        "max_tokens",
        "metadata",
        "modalities",
        "n",
        "parallel_tool_calls",
        "presence_penalty",
        "reasoning_effort",
        "response_format",
        "seed",
        "stop",
        "stream_options",
        "temperature",
        "tool_choice",
        "tools",
        "top_logprobs",
        "top_p",
        "user",
        "web_search_options",
    }
)
_ROLES = frozenset({"system", "developer", "user", "assistant", "tool", "function"})
CHARS_PER_TOKEN = 4
TOKENS_PER_MESSAGE = 4


class RowProblem(ValueError):
    """An input row that cannot become a request; the message names what is wrong."""


class OversizedRequest(RowProblem):
    """Some of a row's requests are too large to send; the others are in ``specs``.

    ``refused`` pairs each refused model with what is wrong. A caller that treats this as
    any ``RowProblem`` refuses the whole row, which is safe but refuses more than needed.
    """

    def __init__(
        self, refused: Sequence[tuple[str, str]], specs: Sequence[RequestSpec] = ()
    ) -> None:
        super().__init__("; ".join(problem for _, problem in refused))
        self.refused = tuple(refused)
        self.specs = tuple(specs)


def size_problem(
    model: str, input_tokens: int, body_bytes: int, limits: RequestLimits
) -> str | None:
    """Why a request is too large to send (its encoded size, then its estimate), or None.

    Only compares numbers: it costs nothing measurable per row.
    """
    if body_bytes > limits.max_request_bytes:
        return (
            f"request body is {body_bytes / 1e6:.1f} MB, over the "
            f"{limits.max_request_bytes / 1e6:g} MB Vertex accepts (--max-request-mb)"
        )
    slack = limits.input_limit_slack
    if slack is not None:
        limit = max_input_tokens(model)
        if limit is not None and input_tokens > limit * slack:
            return (
                f"prompt is about {input_tokens:,} tokens (estimated), past {model}'s "
                f"{limit:,}-token input limit (--input-limit-slack {slack:g})"
            )
    return None


def estimate_text_tokens(messages: Sequence[Mapping[str, Any]]) -> int:
    """A cheap prompt-size estimate: characters / 4 plus a few tokens per message."""
    chars = 0
    for message in messages:
        content = message.get("content")
        if isinstance(content, str):
            chars += len(content)
        elif isinstance(content, list):
            for part in content:
                if isinstance(part, Mapping) and isinstance(part.get("text"), str):
                    chars += len(part["text"])
    return chars // CHARS_PER_TOKEN + TOKENS_PER_MESSAGE * len(messages) + 1


def _messages(row: InputRow, fields: InputFields, system: str | None) -> list[dict[str, Any]]:
    record = row.record
    raw = record.get(fields.messages)
    prompt = record.get(fields.prompt)
    if raw is not None:
        if isinstance(raw, str):
            try:
                raw = orjson.loads(raw)
            except orjson.JSONDecodeError:
                raise RowProblem(f"{fields.messages!r} is a string but not a JSON list") from None
        if not isinstance(raw, list) or not raw:
            raise RowProblem(f"{fields.messages!r} must be a non-empty list of messages")
        messages: list[dict[str, Any]] = []
        for i, message in enumerate(raw):
            if not isinstance(message, dict):
                raise RowProblem(f"{fields.messages!r}[{i}] must be an object")
            role = message.get("role")
            if role not in _ROLES:
                raise RowProblem(f"{fields.messages!r}[{i}] has an invalid role {role!r}")
            if "content" not in message and "tool_calls" not in message:
                raise RowProblem(f"{fields.messages!r}[{i}] has no content")
            messages.append(message)
    elif isinstance(prompt, str) and prompt.strip():
        messages = [{"role": "user", "content": prompt}]
    elif prompt is not None and not isinstance(prompt, str):
        raise RowProblem(f"{fields.prompt!r} must be a string, got {type(prompt).__name__}")
    else:
        raise RowProblem(f"row has neither {fields.prompt!r} nor {fields.messages!r}")
    row_system = record.get(fields.system)
    if row_system is not None and not isinstance(row_system, str):
        raise RowProblem(f"{fields.system!r} must be a string")
    sys_text = row_system or system
    if sys_text and messages[0].get("role") not in ("system", "developer"):
        messages.insert(0, {"role": "system", "content": sys_text})
    return messages


def _merge_google(body: dict[str, Any], google: Mapping[str, Any]) -> None:
    """Move every Google extension into the documented ``extra_body.google`` form."""
    if not google and "google" not in body and "extra_body" not in body:
        return
    merged: dict[str, Any] = dict(google)
    top = body.pop("google", None)
    if isinstance(top, Mapping):
        merged.update(top)
    extra = body.get("extra_body")
    if isinstance(extra, Mapping) and isinstance(extra.get("google"), Mapping):
        merged.update(extra["google"])
    if merged:
        extra_body = dict(extra) if isinstance(extra, Mapping) else {}
        extra_body["google"] = merged
        body["extra_body"] = extra_body


_STRUCTURED = frozenset(
    {
        "extra_body",
        "functions",
        "google",
        "logit_bias",
        "metadata",
        "response_format",
        "stream_options",
        "tools",
        "web_search_options",
    }
)


def _decoded(key: str, value: Any) -> Any:
    """Structured parameters stored as JSON text (Parquet columns must have one type)."""
    if key in _STRUCTURED and isinstance(value, str) and value[:1] in ("{", "["):
        try:
            return orjson.loads(value)
        except orjson.JSONDecodeError:
            raise RowProblem(f"{key!r} is not valid JSON") from None
    return value


def row_params(row: InputRow, fields: InputFields) -> dict[str, Any]:
    """The request parameters a row carries, top-level or under its params column."""
    record = row.record
    # Parquet gives absent columns as nulls: an unset parameter is not sent.
    params: dict[str, Any] = {
        k: _decoded(k, v) for k, v in record.items() if k in OPENAI_PARAMS and v is not None
    }
    for key in ("google", "extra_body"):
        if record.get(key) is not None and key not in (fields.id, fields.prompt, fields.messages):
            params[key] = _decoded(key, record[key])
    nested = record.get(fields.params)
    if isinstance(nested, str) and nested:
        try:
            nested = orjson.loads(nested)
        except orjson.JSONDecodeError:
            raise RowProblem(f"{fields.params!r} is a string but not a JSON object") from None
    if nested is not None and not isinstance(nested, dict):
        raise RowProblem(f"{fields.params!r} must be an object")
    if nested:
        params.update({k: v for k, v in nested.items() if v is not None})
    return params


def row_models(
    row: InputRow, fields: InputFields, models: Sequence[str], default: str
) -> list[str]:
    """The models a row goes to: every ``--model`` given, else its own, else the default."""
    if models:
        return list(models)
    own = row.record.get(fields.model)
    if own is not None and (not isinstance(own, str) or not own):
        raise RowProblem(f"{fields.model!r} must be a non-empty string")
    return [own or default]


def build_requests(
    row: InputRow,
    *,
    fields: InputFields,
    models: Sequence[str],
    default_model: str,
    defaults: RequestDefaults,
    limits: RequestLimits | None = None,
) -> list[RequestSpec]:
    """The requests for one row, one per model. Raises ``RowProblem`` for an unusable row.

    A request past ``limits`` (the body's size, the model's input limit) is not built;
    ``OversizedRequest`` then names it and carries the row's other requests.
    """
    limits = _NO_LIMITS if limits is None else limits
    messages = _messages(row, fields, defaults.system)
    params = dict(defaults.params)
    params.update(row_params(row, fields))
    for key in ("model", "messages", "stream"):
        params.pop(key, None)
    stream = bool(defaults.stream)
    input_tokens = estimate_text_tokens(messages)
    cap = params.get("max_completion_tokens", params.get("max_tokens"))
    max_output = cap if isinstance(cap, int) and not isinstance(cap, bool) and cap > 0 else None
    n = params.get("n")
    candidates = n if isinstance(n, int) and not isinstance(n, bool) and n > 1 else 1
    wanted = params.get("response_format")
    json_format = (
        wanted
        if isinstance(wanted, dict) and wanted.get("type") in ("json_object", "json_schema")
        else None
    )
    specs = []
    refused: list[tuple[str, str]] = []
    for model in row_models(row, fields, models, default_model):
        family = model_family(model)
        body: dict[str, Any] = {"model": model, "messages": messages, **params}
        # Run-wide Google extensions are Gemini's; a row's own are sent as the row says.
        _merge_google(body, defaults.google if family == "gemini" else {})
        try:
            fit_to_family(body, family)
        except ParamConflict as exc:
            raise RowProblem(str(exc)) from None
        if stream:
            body["stream"] = True
            options = body.get("stream_options")
            body["stream_options"] = {
                **(options if isinstance(options, dict) else {}),
                "include_usage": True,
            }
        encoded = _encode(body)
        problem = size_problem(model, input_tokens, len(encoded), limits)
        if problem is not None:
            refused.append((model, problem))
            continue
        specs.append(
            RequestSpec(
                row.index,
                row.id,
                model,
                encoded,
                input_tokens,
                max_output,
                stream,
                candidates,
                json_format,
            )
        )
    if refused:
        raise OversizedRequest(refused, specs)
    return specs


_NO_LIMITS = RequestLimits(max_request_bytes=2**62, input_limit_slack=None)


def _encode(body: dict[str, Any]) -> bytes:
    """The request body as JSON; past orjson's nesting limit (254), the standard library's."""
    try:
        return orjson.dumps(body)
    except orjson.JSONEncodeError as exc:
        if "Recursion limit" not in str(exc):
            raise RowProblem(f"request cannot be encoded as JSON ({exc})") from None
    try:
        return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()
    except RecursionError:
        raise RowProblem(
            f"request nested too deeply to encode as JSON (limit about "
            f"{sys.getrecursionlimit()} levels)"
        ) from None
    except (TypeError, ValueError) as exc:
        raise RowProblem(f"request cannot be encoded as JSON ({exc})") from None


def requests_for(config: RunConfig, row: InputRow) -> list[RequestSpec]:
    """The requests ``config``'s run sends for ``row``; raises ``RowProblem`` if unusable."""
    return build_requests(
        row,
        fields=config.fields,
        models=config.models,
        default_model=config.default_model,
        defaults=config.request,
        limits=config.limits,
    )
