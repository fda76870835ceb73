"""What one answer holds: its candidates, each with text, reasoning, tool calls and a finish reason.

A chat completion carries one candidate per ``choices[].index`` (several when the request
asked for ``n > 1``). Non-streamed, each arrives whole; streamed, each is accumulated from the
deltas that name its index, so two candidates are never glued together. Tool calls are
accumulated by their own ``index``: OpenAI-style servers (vLLM, gpt-oss) send a call's
arguments in fragments under one index, Gemini sends each call whole with no index at all (a
missing index is the next call), so two calls' arguments are never glued together either.

``normalize_finish_reason`` maps every raw finish reason onto one vocabulary: ``stop``,
``length``, ``tool_calls``, ``content_filter`` (``None`` when the value is unknown).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import orjson

__all__ = [
    "FINISH_REASONS",
    "Candidate",
    "CandidateBuilder",
    "ToolCall",
    "candidate_from_message",
    "normalize_finish_reason",
    "tool_calls_json",
]

FINISH_REASONS: tuple[str, ...] = ("stop", "length", "tool_calls", "content_filter")
"""The normalised ``finish_reason`` vocabulary of result rows."""

_FINISH_REASON_MAP: Mapping[str, str] = {
    "stop": "stop",
    "end_turn": "stop",
    "length": "length",
    "max_tokens": "length",
    "tool_calls": "tool_calls",
    "function_call": "tool_calls",
    "content_filter": "content_filter",
    # Gemini's FinishReason enum, passed through by the compatible endpoint.
    "safety": "content_filter",
    "recitation": "content_filter",
    "prohibited_content": "content_filter",
    "spii": "content_filter",
    "blocklist": "content_filter",
    "image_safety": "content_filter",
    "image_prohibited_content": "content_filter",
    "image_recitation": "content_filter",
    "language": "content_filter",
}


def normalize_finish_reason(raw: str | None, *, has_tool_calls: bool = False) -> str | None:
    """One of :data:`FINISH_REASONS`, or ``None`` for a missing or unknown raw value.

    Gemini sometimes ends a tool-calling answer with ``stop``: an answer that holds tool
    calls and stopped normally is ``tool_calls``.
    """
    if not raw:
        return None
    normalized = _FINISH_REASON_MAP.get(raw.lower())
    if normalized == "stop" and has_tool_calls:
        return "tool_calls"
    return normalized


class ToolCall(NamedTuple):
    """One complete tool call; ``arguments`` exactly as the server sent them.

    Named tuples rather than frozen dataclasses, here and for ``Candidate``: one is built
    for every answer, and a frozen dataclass's ``__init__`` costs several times as much.
    """

    id: str | None
    name: str | None
    arguments: str

    @property
    def valid_json(self) -> bool:
        """Whether ``arguments`` parses as JSON."""
        try:
            orjson.loads(self.arguments)
        except orjson.JSONDecodeError:
            return False
        return True


class Candidate(NamedTuple):
    """One candidate (``choices[i]``) of an answer."""

    content: str | None
    reasoning: str | None
    finish_reason: str | None  # raw, as the server said
    tool_calls: tuple[ToolCall, ...] = ()


def tool_calls_json(calls: Sequence[ToolCall]) -> str | None:
    """The ``tool_calls`` column: a JSON list of ``{id, name, arguments}``, or ``None``.

    A call whose arguments do not parse as JSON keeps them as sent and gains
    ``"valid_json": false``; calls whose arguments parse have no such member.
    """
    if not calls:
        return None
    items: list[dict[str, Any]] = []
    for call in calls:
        item: dict[str, Any] = {"id": call.id, "name": call.name, "arguments": call.arguments}
        if not call.valid_json:
            item["valid_json"] = False
        items.append(item)
    return orjson.dumps(items).decode()


def _text(value: object) -> str | None:
    if isinstance(value, str):
        return value
    if isinstance(value, list):  # content parts
        return "".join(
            p.get("text", "") for p in value if isinstance(p, Mapping) and p.get("type") == "text"
        )
    return None


def _reasoning(message: Mapping[str, Any]) -> str | None:
    # vLLM's field was reasoning_content and is reasoning now; servers may send both.
    for key in ("reasoning_content", "reasoning"):
        value = message.get(key)
        if isinstance(value, str) and value:
            return value
    return None


def _arguments(value: object) -> str:
    if isinstance(value, str):
        return value
    if value is None:
        return ""
    # A server that sends the arguments as an object: kept as its JSON text.
    return orjson.dumps(value).decode()


def _call_parts(item: Mapping[str, Any]) -> tuple[str | None, str | None, object]:
    function = item.get("function")
    fn: Mapping[str, Any] = function if isinstance(function, Mapping) else {}
    call_id = item.get("id")
    name = fn.get("name")
    return (
        call_id if isinstance(call_id, str) and call_id else None,
        name if isinstance(name, str) and name else None,
        fn.get("arguments"),
    )


def candidate_from_message(choice: Mapping[str, Any]) -> Candidate:
    """A non-streamed ``choices[i]``: its message's text, reasoning and tool calls."""
    message = choice.get("message")
    reason = choice.get("finish_reason")
    raw_reason = reason if isinstance(reason, str) else None
    # Parsed JSON objects are dicts: check that first, the Mapping ABC check is slower.
    if type(message) is not dict and not isinstance(message, Mapping):
        return Candidate(None, None, raw_reason)
    content = message.get("content")
    raw_calls = message.get("tool_calls")
    if not raw_calls and type(content) is str:  # the usual answer: text, no tool calls
        return Candidate(content, _reasoning(message), raw_reason)
    calls: list[ToolCall] = []
    if isinstance(raw_calls, list):
        for item in raw_calls:
            if isinstance(item, Mapping):
                call_id, name, arguments = _call_parts(item)
                calls.append(ToolCall(call_id, name, _arguments(arguments)))
    return Candidate(_text(content), _reasoning(message), raw_reason, tuple(calls))


class _CallBuilder:
    __slots__ = ("arguments", "id", "name")

    def __init__(self, call_id: str | None, name: str | None) -> None:
        self.id = call_id
        self.name = name
        self.arguments: list[str] = []


class CandidateBuilder:
    """Accumulates one candidate from the stream deltas that carry its ``choices[].index``."""

    __slots__ = ("_calls", "content", "finish_reason", "reasoning")

    def __init__(self) -> None:
        self.content: list[str] = []
        self.reasoning: list[str] = []
        self.finish_reason: str | None = None
        self._calls: dict[int, _CallBuilder] = {}

    def feed(self, choice: Mapping[str, Any]) -> tuple[bool, bool]:
        """Take one chunk's ``choices[i]``; returns (any token, an output token) seen."""
        reason = choice.get("finish_reason")
        if isinstance(reason, str) and reason:
            self.finish_reason = reason
        delta = choice.get("delta")
        if not isinstance(delta, Mapping):
            return False, False
        got_any = got_output = False
        reasoning = _reasoning(delta)
        if reasoning:
            self.reasoning.append(reasoning)
            got_any = True
        content = _text(delta.get("content"))
        if content:
            self.content.append(content)
            got_any = got_output = True
        calls = delta.get("tool_calls")
        if isinstance(calls, list) and calls:
            for item in calls:
                if isinstance(item, Mapping):
                    self._feed_call(item)
            got_any = got_output = True
        return got_any, got_output

    def _feed_call(self, item: Mapping[str, Any]) -> None:
        call_id, name, arguments = _call_parts(item)
        index = item.get("index")
        if not isinstance(index, int) or isinstance(index, bool):
            index = None
        calls = self._calls
        if index is not None and index in calls:
            current = calls[index]
            # The same index with another id and a name of its own is a new call (some
            # proxies number every call 0): never glue two calls' arguments together.
            if call_id and current.id and call_id != current.id and name:
                index = None
        if index is None or index not in calls:
            if index is None:
                index = max(calls, default=-1) + 1
            calls[index] = _CallBuilder(call_id, name)
        call = calls[index]
        if call.id is None:
            call.id = call_id
        if call.name is None:
            call.name = name
        if arguments is not None:
            call.arguments.append(_arguments(arguments))

    def build(self) -> Candidate:
        calls = tuple(
            ToolCall(c.id, c.name, "".join(c.arguments)) for _, c in sorted(self._calls.items())
        )
        return Candidate(
            "".join(self.content) if self.content else None,
            "".join(self.reasoning) if self.reasoning else None,
            self.finish_reason,
            calls,
        )
