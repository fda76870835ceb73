"""Wire shapes of answers: Gemini's proto-JSON (sorted keys, Vertex ids, usage without
reasoning) and vLLM's (``chatcmpl-`` ids, ``reasoning_content``, usage with reasoning),
as whole bodies and as SSE events.
"""

from __future__ import annotations

import base64
import random
from collections.abc import Iterator
from dataclasses import dataclass

import orjson

from .answers import Plan, gemini_visible_text
from .content import ChatRequest


@dataclass(frozen=True, slots=True)
class AnswerOptions:
    """Per-answer switches: which faults shape the body, where reasoning goes."""

    omit_usage: bool = False
    omit_message: bool = False
    reasoning_field: str = "reasoning_content"


@dataclass(frozen=True, slots=True)
class Usage:
    """Token counts as the response reports them (None = not reported)."""

    prompt_tokens: int | None
    completion_tokens: int | None
    reasoning_tokens: int | None
    total_tokens: int | None


@dataclass(frozen=True, slots=True)
class StreamEvent:
    """One SSE event, and how many generated tokens it carries (for pacing)."""

    data: bytes
    tokens: int


def new_response_id(rng: random.Random, family: str) -> str:
    """A Vertex response id (22-23 base64url chars) or a vLLM ``chatcmpl-`` id."""
    if family == "gemini":
        text = base64.urlsafe_b64encode(rng.randbytes(18)).decode()
        return text[: 22 + (rng.getrandbits(1))]
    return "chatcmpl-" + rng.randbytes(16).hex()


def reported_usage(request: ChatRequest, plan: Plan, options: AnswerOptions) -> Usage:
    if options.omit_usage:
        return Usage(None, None, None, None)
    p, c, r = plan.prompt_tokens, plan.content_tokens, plan.reasoning_tokens
    if request.spec.family == "gemini":
        return Usage(p, c, r if r > 0 else None, p + c + r)
    return Usage(p, c + r, None, p + c + r)


def _gemini_usage(plan: Plan) -> dict[str, object]:
    p, c, r = plan.prompt_tokens, plan.content_tokens, plan.reasoning_tokens
    usage: dict[str, object] = {
        "completion_tokens": c,
        "extra_properties": {"google": {"traffic_type": "ON_DEMAND"}},
        "prompt_tokens": p,
        "total_tokens": p + c + r,
    }
    if r > 0:
        usage["completion_tokens_details"] = {"reasoning_tokens": r}
    return usage


def _vllm_usage(plan: Plan) -> dict[str, object]:
    p, c, r = plan.prompt_tokens, plan.content_tokens, plan.reasoning_tokens
    return {
        "prompt_tokens": p,
        "total_tokens": p + c + r,
        "completion_tokens": c + r,
        "prompt_tokens_details": None,
    }


def _reasoning_keys(options: AnswerOptions) -> tuple[str, ...]:
    if options.reasoning_field == "both":
        return ("reasoning_content", "reasoning")
    return (options.reasoning_field,)


def completion_body(
    request: ChatRequest,
    plan: Plan,
    *,
    response_id: str,
    created: int,
    options: AnswerOptions,
) -> bytes:
    """The non-streamed answer in the model family's shape."""
    if request.spec.family == "gemini":
        gemini_choices = []
        for index, choice in enumerate(plan.choices):
            entry: dict[str, object] = {
                "finish_reason": choice.finish_reason,
                "index": index,
                "logprobs": None,
            }
            if not options.omit_message:
                message: dict[str, object] = {"role": "assistant"}
                text = gemini_visible_text(request, choice)
                if text:  # thinking that ate the whole budget leaves no content at all
                    message["content"] = text
                entry["message"] = message
            gemini_choices.append(entry)
        body: dict[str, object] = {
            "choices": gemini_choices,
            "created": created,
            "id": response_id,
            "model": request.model,
            "object": "chat.completion",
            "system_fingerprint": "",
        }
        if not options.omit_usage:
            body["usage"] = _gemini_usage(plan)
        return orjson.dumps(body, option=orjson.OPT_SORT_KEYS)
    vllm_choices = []
    for index, choice in enumerate(plan.choices):
        entry = {"index": index}
        if not options.omit_message:
            message = {"role": "assistant"}
            reasoning = choice.reasoning_text() if choice.reasoning else None
            if request.spec.reasoning:
                for key in _reasoning_keys(options):
                    message[key] = reasoning
            message["content"] = choice.content_text() or None
            message["tool_calls"] = []
            entry["message"] = message
        entry["logprobs"] = None
        entry["finish_reason"] = choice.finish_reason
        entry["stop_reason"] = None
        vllm_choices.append(entry)
    body = {
        "id": response_id,
        "object": "chat.completion",
        "created": created,
        "model": request.model,
        "choices": vllm_choices,
    }
    if not options.omit_usage:
        body["usage"] = _vllm_usage(plan)
    body["prompt_logprobs"] = None
    return orjson.dumps(body)


def _sse(payload: dict[str, object], *, sort: bool) -> bytes:
    option = orjson.OPT_SORT_KEYS if sort else 0
    return b"data: " + orjson.dumps(payload, option=option) + b"\n\n"


DONE_EVENT = b"data: [DONE]\n\n"


def _split(
    tokens: tuple[str, ...], rng: random.Random, lo: int, hi: int
) -> Iterator[tuple[str, int]]:
    i = 0
    while i < len(tokens):
        size = rng.randint(lo, hi)
        piece = tokens[i : i + size]
        yield "".join(piece), len(piece)
        i += size


def stream_events(
    request: ChatRequest,
    plan: Plan,
    *,
    response_id: str,
    created: int,
    options: AnswerOptions,
) -> list[StreamEvent]:
    """Every SSE event of a streamed answer, ``[DONE]`` included, in order."""
    rng = random.Random(request.digest ^ 0x5EED)
    if request.spec.family == "gemini":
        return _gemini_events(request, plan, rng, response_id, created, options)
    return _vllm_events(request, plan, rng, response_id, created, options)


def _gemini_events(
    request: ChatRequest,
    plan: Plan,
    rng: random.Random,
    response_id: str,
    created: int,
    options: AnswerOptions,
) -> list[StreamEvent]:
    head = {
        "created": created,
        "id": response_id,
        "model": request.model,
        "object": "chat.completion.chunk",
        "system_fingerprint": "",
    }
    events: list[StreamEvent] = []
    last = len(plan.choices) - 1
    for index, choice in enumerate(plan.choices):
        pieces: list[tuple[str, int]] = []
        if not options.omit_message:
            text = gemini_visible_text(request, choice)
            prefix_len = len(text) - len(choice.content_text())
            if prefix_len > 0:  # a thought summary arrives as its own chunk
                pieces.append((text[:prefix_len], 0))
            pieces.extend(_split(choice.content, rng, 8, 40))
        if not pieces:
            pieces.append(("", 0))
        for k, (text, count) in enumerate(pieces):
            delta: dict[str, object] = {"role": "assistant"}
            if text:
                delta["content"] = text
            entry: dict[str, object] = {"delta": delta, "index": index, "logprobs": None}
            payload: dict[str, object] = {"choices": [entry], **head}
            if k == len(pieces) - 1:
                entry["finish_reason"] = choice.finish_reason
                if index == last and not options.omit_usage:
                    payload["usage"] = _gemini_usage(plan)
            events.append(StreamEvent(_sse(payload, sort=True), count))
    events.append(StreamEvent(DONE_EVENT, 0))
    return events


def _vllm_events(
    request: ChatRequest,
    plan: Plan,
    rng: random.Random,
    response_id: str,
    created: int,
    options: AnswerOptions,
) -> list[StreamEvent]:
    def chunk(index: int, delta: dict[str, object], finish: str | None) -> dict[str, object]:
        return {
            "id": response_id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": request.model,
            "choices": [
                {
                    "index": index,
                    "delta": delta,
                    "logprobs": None,
                    "finish_reason": finish,
                    **({"stop_reason": None} if finish else {}),
                }
            ],
        }

    keys = _reasoning_keys(options)
    events: list[StreamEvent] = []
    last = len(plan.choices) - 1
    for index, choice in enumerate(plan.choices):
        events.append(
            StreamEvent(
                _sse(chunk(index, {"role": "assistant", "content": ""}, None), sort=False), 0
            )
        )
        deltas: list[tuple[dict[str, object], int]] = []
        if not options.omit_message:
            for text, count in _split(choice.reasoning, rng, 1, 4):
                deltas.append(({key: text for key in keys}, count))
            for text, count in _split(choice.content, rng, 1, 4):
                deltas.append(({"content": text}, count))
        if not deltas:
            deltas.append(({}, 0))
        for k, (delta, count) in enumerate(deltas):
            final = k == len(deltas) - 1
            payload = chunk(index, delta, choice.finish_reason if final else None)
            if final and index == last and not request.include_usage and not options.omit_usage:
                # Without stream_options.include_usage the final chunk carries the usage,
                # as Vertex does for Gemini; with it, vLLM's separate usage chunk follows.
                payload["usage"] = _vllm_usage(plan)
            events.append(StreamEvent(_sse(payload, sort=False), count))
    if request.include_usage and not options.omit_usage:
        usage_chunk: dict[str, object] = {
            "id": response_id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": request.model,
            "choices": [],
            "usage": _vllm_usage(plan),
        }
        events.append(StreamEvent(_sse(usage_chunk, sort=False), 0))
    events.append(StreamEvent(DONE_EVENT, 0))
    return events
