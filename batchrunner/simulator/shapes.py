"""Wire shapes of whole answers: Gemini's proto-JSON (sorted keys, Vertex ids, usage without
reasoning, the serving tier, implicit-cache hits) and vLLM's (``chatcmpl-`` ids, a reasoning
field, usage with reasoning); streamed answers are built from these in ``_streams``.
"""

from __future__ import annotations

import base64
import random
from dataclasses import dataclass

import orjson

from ._tools import message_tool_calls
from .answers import Plan, gemini_visible_text
from .content import ChatRequest


@dataclass(frozen=True, slots=True)
class AnswerOptions:
    """Per-answer switches: which faults shape the body, where reasoning goes."""

    omit_usage: bool = False
    omit_message: bool = False
    reasoning_field: str = "reasoning_content"
    vllm_usage_when_requested: bool = False  # vLLM streams: usage only with include_usage
    traffic_type: str = "ON_DEMAND"  # usage.extra_properties.google.traffic_type (Gemini)


@dataclass(frozen=True, slots=True)
class Usage:
    """Token counts as the response reports them (None = not reported)."""

    prompt_tokens: int | None
    completion_tokens: int | None
    reasoning_tokens: int | None
    total_tokens: int | None
    cached_tokens: int | None = None


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


def usage_withheld(request: ChatRequest, options: AnswerOptions) -> bool:
    """Whether the answer carries no usage at all."""
    if options.omit_usage:
        return True
    return (
        request.spec.family != "gemini"
        and request.stream
        and options.vllm_usage_when_requested
        and not request.include_usage
    )


def reported_usage(request: ChatRequest, plan: Plan, options: AnswerOptions) -> Usage:
    if usage_withheld(request, options):
        return Usage(None, None, None, None)
    p, c, r = plan.prompt_tokens, plan.content_tokens, plan.reasoning_tokens
    if request.spec.family == "gemini":
        cached = plan.cached_tokens if plan.cached_tokens > 0 else None
        return Usage(p, c, r if r > 0 else None, p + c + r, cached)
    return Usage(p, c + r, None, p + c + r)


def gemini_usage(plan: Plan, options: AnswerOptions) -> dict[str, object]:
    p, c, r = plan.prompt_tokens, plan.content_tokens, plan.reasoning_tokens
    usage: dict[str, object] = {
        "completion_tokens": c,
        "extra_properties": {"google": {"traffic_type": options.traffic_type}},
        "prompt_tokens": p,
        "total_tokens": p + c + r,
    }
    if r > 0:
        usage["completion_tokens_details"] = {"reasoning_tokens": r}
    if plan.cached_tokens > 0:
        usage["prompt_tokens_details"] = {"cached_tokens": plan.cached_tokens}
    return usage


def vllm_usage(plan: Plan) -> dict[str, object]:
    p, c, r = plan.prompt_tokens, plan.content_tokens, plan.reasoning_tokens
    return {
        "prompt_tokens": p,
        "total_tokens": p + c + r,
        "completion_tokens": c + r,
        "prompt_tokens_details": None,
    }


def reasoning_keys(options: AnswerOptions) -> tuple[str, ...]:
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
                if choice.tool_calls:
                    message["tool_calls"] = message_tool_calls(choice.tool_calls)
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
            body["usage"] = gemini_usage(plan, options)
        return orjson.dumps(body, option=orjson.OPT_SORT_KEYS)
    vllm_choices = []
    for index, choice in enumerate(plan.choices):
        entry = {"index": index}
        if not options.omit_message:
            message = {"role": "assistant"}
            reasoning = choice.reasoning_text() if choice.reasoning else None
            if request.spec.reasoning:
                for key in reasoning_keys(options):
                    message[key] = reasoning
            message["content"] = choice.content_text() or None
            message["tool_calls"] = message_tool_calls(choice.tool_calls)
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
        body["usage"] = vllm_usage(plan)
    body["prompt_logprobs"] = None
    return orjson.dumps(body)


def sse(payload: object, *, sort: bool) -> bytes:
    """One ``data:`` event; Gemini's proto-JSON sorts keys, vLLM's keeps its own order."""
    option = orjson.OPT_SORT_KEYS if sort else 0
    return b"data: " + orjson.dumps(payload, option=option) + b"\n\n"


DONE_EVENT = b"data: [DONE]\n\n"
