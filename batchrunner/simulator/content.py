"""Request parsing and validation, token counting, and deterministic answers.

Everything here is pure: the same (seed, request body) always yields the same plan
(token counts, text, finish reasons), which the app then serialises per model family.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import orjson

from .envelopes import INVALID_ARGUMENT_MESSAGE, ApiError
from .models import SELF_DEPLOYED, ModelSpec

MAX_CANDIDATES = 8
REASONING_EFFORTS = ("high", "low", "medium", "minimal")
# Gemini 2.5 thinking budgets for reasoning_effort (reference §3.1).
_GEMINI_EFFORT_BUDGET = {"minimal": 0, "low": 1024, "medium": 8192, "high": 24576}
_PRO_MIN_BUDGET = 128
# gpt-oss reasoning length ranges (tokens) per effort.
_VLLM_EFFORT_RANGE = {
    "minimal": (20, 120),
    "low": (40, 250),
    "medium": (150, 900),
    "high": (600, 3000),
}
_IMAGE_TOKENS = 258
_AUDIO_TOKENS = 100

WORDS: tuple[str, ...] = (
    "the", "model", "answer", "data", "result", "shows", "that", "a", "clear", "pattern",
    "emerges", "from", "each", "input", "value", "and", "its", "context", "which", "we",
    "can", "summarise", "as", "follows", "first", "second", "finally", "because", "this",
    "means", "overall", "score", "is", "high", "low", "in", "most", "cases", "with", "some",
    "exceptions", "where", "signal", "noise", "ratio", "drops", "note", "also", "batch",
    "request", "token", "vertex", "simulated", "response", "text", "reasoning", "step",
    "check", "count", "sum", "evidence", "suggests", "likely", "correct",
)  # fmt: skip
THOUGHT_WORDS: tuple[str, ...] = (
    "let", "me", "think", "about", "consider", "the", "question", "carefully", "so", "we",
    "need", "to", "check", "whether", "this", "holds", "maybe", "then", "compute", "step",
    "by", "answer", "should", "be", "verify", "again", "okay", "user", "wants",
)  # fmt: skip


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


@dataclass(frozen=True, slots=True)
class ChoicePlan:
    """One candidate: its reasoning and answer as token lists, and why it stopped."""

    reasoning: tuple[str, ...]
    content: tuple[str, ...]
    finish_reason: str

    def content_text(self) -> str:
        return "".join(self.content)

    def reasoning_text(self) -> str:
        return "".join(self.reasoning)


@dataclass(frozen=True, slots=True)
class Plan:
    """The whole answer, decided before anything is sent."""

    prompt_tokens: int
    choices: tuple[ChoicePlan, ...]
    hidden_reasoning: bool  # Gemini: thoughts are not streamed, they delay the first token

    @property
    def content_tokens(self) -> int:
        return sum(len(c.content) for c in self.choices)

    @property
    def reasoning_tokens(self) -> int:
        return sum(len(c.reasoning) for c in self.choices)


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
    prompt_tokens = count_prompt_tokens(messages, body.get("tools"))
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
    )
    return request


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


def _gemini_thinking_budget(request: ChatRequest) -> int | None:
    """Thinking budget in tokens, -1 for dynamic, or None when the model will not think."""
    spec = request.spec
    if spec.thinking == "none":
        return None
    budget = request.thinking_budget
    if budget is None and request.reasoning_effort is not None:
        budget = _GEMINI_EFFORT_BUDGET[request.reasoning_effort]
    if spec.thinking == "always":
        if budget is None or budget < 0:
            return -1
        return max(budget, _PRO_MIN_BUDGET)
    if budget == 0:
        return None
    if budget is None:
        return -1 if spec.thinking == "default" else None
    return budget


def _word_tables(words: tuple[str, ...]) -> tuple[tuple[str, ...], ...]:
    """256-entry lookup tables (so one random byte picks a word): plain, first, after a stop."""
    cycled = tuple(words[i % len(words)] for i in range(256))
    return (
        tuple(" " + w for w in cycled),
        tuple(w.capitalize() for w in cycled),
        tuple(". " + w.capitalize() for w in cycled),
    )


_ANSWER_TABLES = _word_tables(WORDS)
_THOUGHT_TABLES = _word_tables(THOUGHT_WORDS)


def _tokens(rng: random.Random, count: int, tables: tuple[tuple[str, ...], ...]) -> tuple[str, ...]:
    """``count`` word tokens with a sentence break every 13 words."""
    if count <= 0:
        return ()
    plain, first, stop = tables
    picks = rng.randbytes(count)
    out = [plain[b] for b in picks]
    out[0] = first[picks[0]]
    for i in range(13, count, 13):
        out[i] = stop[picks[i]]
    return tuple(out)


def plan_answer(request: ChatRequest) -> Plan:
    """Decide the answer: lengths from the prompt, caps from max_tokens, texts from the hash."""
    spec = request.spec
    limit = request.max_tokens if request.max_tokens is not None else spec.max_output_tokens
    if spec.family == "vllm":
        limit = min(limit, max(1, spec.context_window - request.prompt_tokens))
    choices = []
    for index in range(request.n):
        rng = random.Random(request.digest + index)
        natural_content = 12 + rng.randrange(240) + min(request.prompt_tokens // 6, 800)
        natural_reasoning = 0
        if spec.family == "gemini":
            budget = _gemini_thinking_budget(request)
            if budget is not None:
                lo, hi = spec.thinking_range
                natural_reasoning = rng.randint(lo, hi)
                if budget >= 0:
                    natural_reasoning = min(natural_reasoning, budget)
        elif spec.reasoning:
            effort = request.reasoning_effort or "medium"
            natural_reasoning = rng.randint(*_VLLM_EFFORT_RANGE[effort])
        reasoning = min(natural_reasoning, limit)
        content = min(natural_content, limit - reasoning)
        finish = "length" if natural_reasoning + natural_content > limit else "stop"
        choices.append(
            ChoicePlan(
                reasoning=_tokens(rng, reasoning, _THOUGHT_TABLES),
                content=_tokens(rng, content, _ANSWER_TABLES),
                finish_reason=finish,
            )
        )
    return Plan(
        prompt_tokens=request.prompt_tokens,
        choices=tuple(choices),
        hidden_reasoning=spec.family == "gemini",
    )


def gemini_visible_text(request: ChatRequest, choice: ChoicePlan) -> str:
    """Gemini's ``content``: the answer, preceded by a thought summary if asked for."""
    text = choice.content_text()
    if request.include_thoughts and choice.reasoning:
        summary = "".join(choice.reasoning[:40]).strip()
        marker = request.thought_tag_marker
        prefix = f"<{marker}>{summary}</{marker}>" if marker else summary + "\n\n"
        return prefix + text
    return text
