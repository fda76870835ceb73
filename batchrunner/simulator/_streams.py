"""Streamed answers as SSE events, per model family.

Each candidate becomes its own run of chunks and, with ``n > 1``, the runs are interleaved
the way a server streams candidates side by side: every chunk names its candidate in
``choices[].index``. Gemini repeats ``delta.role`` in every chunk, sends no
``finish_reason`` key until a candidate's last chunk, puts usage (with the serving tier) on
the very last chunk and sends each tool call whole; vLLM starts a candidate with a role
chunk, streams reasoning then content a few tokens at a time, fragments tool-call
arguments by ``index``, and sends usage where ``AnswerOptions`` and ``stream_options``
say.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from ._tools import ToolCall, argument_pieces, message_tool_calls
from .answers import ChoicePlan, Plan, gemini_visible_text
from .content import ChatRequest
from .shapes import (
    DONE_EVENT,
    AnswerOptions,
    StreamEvent,
    gemini_usage,
    reasoning_keys,
    sse,
    usage_withheld,
    vllm_usage,
)

__all__ = ["stream_events"]


@dataclass(frozen=True, slots=True)
class _Piece:
    """One chunk's choice entry before it is wrapped: its delta and its token count."""

    index: int
    delta: dict[str, object]
    tokens: int
    finish_reason: str | None = None


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


def _split(
    tokens: tuple[str, ...], rng: random.Random, lo: int, hi: int
) -> Iterator[tuple[str, int]]:
    i = 0
    while i < len(tokens):
        size = rng.randint(lo, hi)
        piece = tokens[i : i + size]
        yield "".join(piece), len(piece)
        i += size


def _interleave(runs: Sequence[list[_Piece]]) -> list[_Piece]:
    """Round-robin over the candidates' runs: one chunk of each in turn."""
    out: list[_Piece] = []
    for k in range(max((len(run) for run in runs), default=0)):
        out.extend(run[k] for run in runs if k < len(run))
    return out


def _gemini_run(
    request: ChatRequest,
    index: int,
    choice: ChoicePlan,
    rng: random.Random,
    options: AnswerOptions,
) -> list[_Piece]:
    pieces: list[_Piece] = []
    if not options.omit_message:
        text = gemini_visible_text(request, choice)
        prefix_len = len(text) - len(choice.content_text())
        if prefix_len > 0:  # a thought summary arrives as its own chunk
            pieces.append(_Piece(index, {"role": "assistant", "content": text[:prefix_len]}, 0))
        for piece, count in _split(choice.content, rng, 8, 40):
            pieces.append(_Piece(index, {"role": "assistant", "content": piece}, count))
        for call in choice.tool_calls:  # whole, with no index
            delta: dict[str, object] = {"role": "assistant"}
            delta["tool_calls"] = message_tool_calls((call,))
            pieces.append(_Piece(index, delta, call.tokens))
    if not pieces:
        pieces.append(_Piece(index, {"role": "assistant"}, 0))
    last = pieces[-1]
    pieces[-1] = _Piece(index, last.delta, last.tokens, choice.served_finish_reason(True))
    return pieces


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
    runs = [_gemini_run(request, i, c, rng, options) for i, c in enumerate(plan.choices)]
    pieces = _interleave(runs)
    events: list[StreamEvent] = []
    for k, piece in enumerate(pieces):
        entry: dict[str, object] = {"delta": piece.delta, "index": piece.index, "logprobs": None}
        if piece.finish_reason is not None:
            entry["finish_reason"] = piece.finish_reason
        payload: dict[str, object] = {"choices": [entry], **head}
        if k == len(pieces) - 1 and not options.omit_usage:
            payload["usage"] = gemini_usage(plan, options)
        events.append(StreamEvent(sse(payload, sort=True), piece.tokens))
    if not pieces:  # a blocked prompt with no candidates: usage only
        payload = {"choices": [], **head}
        if not options.omit_usage:
            payload["usage"] = gemini_usage(plan, options)
        events.append(StreamEvent(sse(payload, sort=True), 0))
    events.append(StreamEvent(DONE_EVENT, 0))
    return events


def _tool_call_pieces(
    index: int, position: int, call: ToolCall, rng: random.Random
) -> Iterator[_Piece]:
    parts = argument_pieces(call.arguments, rng)
    share, extra = divmod(call.tokens, len(parts))
    first: dict[str, object] = {
        "index": position,
        "id": call.id,
        "type": "function",
        "function": {"name": call.name, "arguments": parts[0]},
    }
    yield _Piece(index, {"tool_calls": [first]}, share + extra)
    for part in parts[1:]:
        later = {"index": position, "function": {"arguments": part}}
        yield _Piece(index, {"tool_calls": [later]}, share)


def _vllm_run(
    index: int, choice: ChoicePlan, rng: random.Random, options: AnswerOptions
) -> list[_Piece]:
    keys = reasoning_keys(options)
    deltas: list[_Piece] = []
    if not options.omit_message:
        for text, count in _split(choice.reasoning, rng, 1, 4):
            deltas.append(_Piece(index, {key: text for key in keys}, count))
        for text, count in _split(choice.content, rng, 1, 4):
            deltas.append(_Piece(index, {"content": text}, count))
        for position, call in enumerate(choice.tool_calls):
            deltas.extend(_tool_call_pieces(index, position, call, rng))
    if not deltas:
        deltas.append(_Piece(index, {}, 0))
    last = deltas[-1]
    deltas[-1] = _Piece(index, last.delta, last.tokens, choice.served_finish_reason(True))
    return [_Piece(index, {"role": "assistant", "content": ""}, 0), *deltas]


def _vllm_events(
    request: ChatRequest,
    plan: Plan,
    rng: random.Random,
    response_id: str,
    created: int,
    options: AnswerOptions,
) -> list[StreamEvent]:
    def chunk(piece: _Piece) -> dict[str, object]:
        finish = piece.finish_reason
        return {
            "id": response_id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": request.model,
            "choices": [
                {
                    "index": piece.index,
                    "delta": piece.delta,
                    "logprobs": None,
                    "finish_reason": finish,
                    **({"stop_reason": None} if finish else {}),
                }
            ],
        }

    runs = [_vllm_run(i, c, rng, options) for i, c in enumerate(plan.choices)]
    pieces = _interleave(runs)
    withheld = usage_withheld(request, options)
    events: list[StreamEvent] = []
    for k, piece in enumerate(pieces):
        payload = chunk(piece)
        if k == len(pieces) - 1 and not request.include_usage and not withheld:
            # Without stream_options.include_usage the final chunk carries the usage, as
            # Vertex does for Gemini, unless vLLM's rule (usage only when asked) is on.
            payload["usage"] = vllm_usage(plan)
        events.append(StreamEvent(sse(payload, sort=False), piece.tokens))
    if request.include_usage and not withheld:
        usage_chunk: dict[str, object] = {
            "id": response_id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": request.model,
            "choices": [],
            "usage": vllm_usage(plan),
        }
        events.append(StreamEvent(sse(usage_chunk, sort=False), 0))
    events.append(StreamEvent(DONE_EVENT, 0))
    return events
