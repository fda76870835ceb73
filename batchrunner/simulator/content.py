"""Request parsing and validation, and token counting.

Everything here is pure. A request's digest, a hash of the seed and its body, drives
every deterministic choice of its answer (``batchrunner.simulator.answers``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import orjson

from ._tools import ToolRequest, parse_tools
from .envelopes import INVALID_ARGUMENT_MESSAGE, ApiError
from .models import SELF_DEPLOYED, ModelSpec

MAX_CANDIDATES = 8
NO_TOOLS = ToolRequest()
REASONING_EFFORTS = ("high", "low", "medium", "minimal")
_IMAGE_TOKENS = 258
_AUDIO_TOKENS = 100


@dataclass(frozen=True, slots=True)
class ChatRequest:
    """The parts of a chat-completions body the simulator acts on."""

    model: str  # as sent ("" when a self-deployed endpoint got none)
    spec: ModelSpec
    messages: Sequence[object]
    stream: bool
    include_usage: bool
    n: int
    max_tokens: int | None
    reasoning_effort: str | None
    thinking_budget: int | None
    include_thoughts: bool
    thought_tag_marker: str | None
    prompt_tokens: int
    digest: int  # hash of (seed, body minus stream switches): drives every deterministic choice
    tools: ToolRequest = NO_TOOLS
    messages_json: bytes = b""  # the messages as sent: trigger words, implicit-cache prefixes
    tools_json: bytes = b""  # the tools as sent (they come first in a cached prefix)
    response_format: Mapping[str, object] | None = None  # json_object / json_schema asked for

    @property
    def prefix(self) -> bytes:
        """The prompt in the order a prefix cache sees it: tools, then messages."""
        return self.tools_json + self.messages_json


def request_digest(seed: int, raw: bytes) -> int:
    """A stable 64-bit hash of the seed and the raw request body."""
    h = hashlib.blake2b(raw, digest_size=8, key=seed.to_bytes(8, "little", signed=True))
    return int.from_bytes(h.digest(), "little")


def count_text_tokens(text: str) -> int:
    """Roughly four characters per token, at least one for non-empty text."""
    return (len(text) + 3) // 4


def count_prompt_tokens(messages: Sequence[object], tools: object = None) -> int:
    """The server-side prompt count: message text, a few tokens per message, the tools."""
    total = 3
    for message in messages:
        total += 4
        if not isinstance(message, Mapping):
            total += count_text_tokens(str(message))
            continue
        content = message.get("content")
        if isinstance(content, str):
            total += count_text_tokens(content)
        elif isinstance(content, list):
            for part in content:
                total += _count_part(part)
        for key in ("tool_calls", "function_call"):
            if message.get(key):
                total += count_text_tokens(orjson.dumps(message[key]).decode())
        if message.get("name"):
            total += 1
    if tools:
        total += count_text_tokens(orjson.dumps(tools).decode())
    return total


def _count_part(part: object) -> int:
    if isinstance(part, str):
        return count_text_tokens(part)
    if not isinstance(part, Mapping):
        return 1
    kind = part.get("type")
    if kind == "text":
        text = part.get("text")
        return count_text_tokens(text) if isinstance(text, str) else 1
    if kind == "image_url":
        return _IMAGE_TOKENS
    if kind == "input_audio":
        return _AUDIO_TOKENS
    return count_text_tokens(orjson.dumps(part).decode())


def invalid(message: str = INVALID_ARGUMENT_MESSAGE) -> ApiError:
    return ApiError(400, "INVALID_ARGUMENT", message)


def _google_extras(body: Mapping[str, object]) -> Mapping[str, object]:
    """``extra_body.google`` merged over a top-level ``google`` (both forms are accepted)."""
    merged: dict[str, object] = {}
    top = body.get("google")
    if isinstance(top, Mapping):
        merged.update(top)
    extra = body.get("extra_body")
    if isinstance(extra, Mapping):
        nested = extra.get("google")
        if isinstance(nested, Mapping):
            merged.update(nested)
    return merged


def _int_field(body: Mapping[str, object], key: str) -> int | None:
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise invalid(f"Invalid value at '{key}' ({type(value).__name__}), expected an integer.")
    return value


def parse_request(
    raw: bytes,
    *,
    seed: int,
    resolve: ModelResolver,
) -> ChatRequest:
    """Parse and validate a body; raise ``ApiError`` exactly where Vertex answers 4xx."""
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise invalid("Invalid JSON payload received. Unexpected token.") from None
    if not isinstance(body, dict):
        raise invalid("Invalid JSON payload received. Expected an object.")
    model = body.get("model")
    if model is not None and not isinstance(model, str):
        raise invalid("Invalid value at 'model', expected a string.")
    spec = resolve(model or "")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise invalid()
    n = _int_field(body, "n")
    if n is None:
        n = 1
    if not 1 <= n <= MAX_CANDIDATES:
        raise invalid(f"Invalid value of n: should be between 1 and {MAX_CANDIDATES}, got {n}")
    max_tokens = _int_field(body, "max_completion_tokens")
    if max_tokens is None:
        max_tokens = _int_field(body, "max_tokens")
    effort = body.get("reasoning_effort")
    if effort is not None and effort not in REASONING_EFFORTS:
        raise invalid(
            "Expected 'reasoning_effort' to be one of: "
            + ",".join(f"'{e}'" for e in REASONING_EFFORTS)
        )
    google = _google_extras(body)
    thinking_config = google.get("thinking_config")
    if effort is not None and thinking_config is not None:
        raise invalid(
            "Only one of 'reasoning_effort' or 'extra_body.google.thinking_config' "
            "may be specified."
        )
    budget: int | None = None
    include_thoughts = False
    if isinstance(thinking_config, Mapping):
        raw_budget = thinking_config.get("thinking_budget")
        if raw_budget is not None:
            if isinstance(raw_budget, bool) or not isinstance(raw_budget, int):
                raise invalid("Invalid value at 'thinking_config.thinking_budget'.")
            budget = raw_budget
        include_thoughts = bool(thinking_config.get("include_thoughts", False))
    elif thinking_config is not None:
        raise invalid("Invalid value at 'thinking_config'.")
    marker = google.get("thought_tag_marker")
    stream = bool(body.get("stream", False))
    stream_options = body.get("stream_options")
    include_usage = isinstance(stream_options, Mapping) and bool(
        stream_options.get("include_usage", False)
    )
    tools = body.get("tools")
    prompt_tokens = count_prompt_tokens(messages, tools)
    request = ChatRequest(
        model=model or "",
        spec=spec,
        messages=messages,
        stream=stream,
        include_usage=include_usage,
        n=n,
        max_tokens=max_tokens,
        reasoning_effort=effort if isinstance(effort, str) else None,
        thinking_budget=budget,
        include_thoughts=include_thoughts,
        thought_tag_marker=marker if isinstance(marker, str) and marker else None,
        prompt_tokens=prompt_tokens,
        digest=request_digest(seed, _canonical(body)),
        tools=parse_tools(body),
        messages_json=orjson.dumps(messages),
        tools_json=orjson.dumps(tools) if tools else b"",
        response_format=_json_format(body.get("response_format")),
    )
    return request


def _json_format(value: object) -> Mapping[str, object] | None:
    if isinstance(value, Mapping) and value.get("type") in ("json_object", "json_schema"):
        return value
    return None


def _canonical(body: dict[str, object]) -> bytes:
    """The body without its streaming switches, keys sorted: a streamed and a plain request
    for the same thing get the same answer.
    """
    trimmed = {k: v for k, v in body.items() if k not in ("stream", "stream_options")}
    return orjson.dumps(trimmed, option=orjson.OPT_SORT_KEYS)


class ModelResolver:
    """Maps a request's model name to a spec for one (endpoint, location), or raises 404."""

    def __init__(
        self,
        models: Mapping[str, ModelSpec],
        *,
        project: str,
        location: str,
        endpoint: str,
    ) -> None:
        self._models = models
        self._project = project
        self._location = location
        self._endpoint = endpoint

    def __call__(self, name: str) -> ModelSpec:
        if self._endpoint != "openapi":
            return SELF_DEPLOYED
        if not name:
            raise invalid("Required field `model` is missing.")
        spec = self._models.get(name)
        if spec is None or self._location not in spec.locations:
            publisher, _, short = name.rpartition("/")
            raise ApiError(
                404,
                "NOT_FOUND",
                f"Publisher Model `projects/{self._project}/locations/{self._location}/"
                f"publishers/{publisher or 'google'}/models/{short}` was not found or your "
                "project does not have access to it. Please ensure you are using a valid "
                "model version. For more information, see: "
                "https://cloud.google.com/vertex-ai/generative-ai/docs/learn/model-versions",
            )
        return spec


def validate_limits(request: ChatRequest, location: str) -> None:
    """The 400s that depend on the model: context window, output range, thinking budget."""
    spec = request.spec
    context = spec.context_for(location)
    if request.prompt_tokens > context:
        raise invalid(
            f"The input token count ({request.prompt_tokens}) exceeds the maximum number of "
            f"tokens allowed ({context})."
        )
    max_tokens = request.max_tokens
    if spec.family == "gemini":
        if max_tokens is not None and not 1 <= max_tokens <= spec.max_output_tokens:
            raise invalid(
                f"Unable to submit request because it has a maxOutputTokens value of "
                f"{max_tokens} but the supported range is from 1 (inclusive) to "
                f"{spec.max_output_tokens + 1} (exclusive). Update the value and try again."
            )
        if spec.thinking == "always" and request.thinking_budget == 0:
            raise invalid("Budget 0 is invalid. This model only works in thinking mode.")
    elif max_tokens is not None:
        if max_tokens < 1:
            raise invalid(f"max_tokens must be at least 1, got {max_tokens}.")
        if request.prompt_tokens + max_tokens > context:
            raise invalid(
                f"This model's maximum context length is {context} tokens. However, you "
                f"requested {request.prompt_tokens + max_tokens} tokens "
                f"({request.prompt_tokens} in the messages, {max_tokens} in the completion). "
                "Please reduce the length of the messages or completion."
            )
