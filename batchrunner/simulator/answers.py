"""Deterministic answers: how long each candidate thinks and answers, and its words.

Pure like request parsing: the same request (its digest) always yields the same plan,
which the app then serialises per model family.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass, replace

import orjson

from ._blocks import answer_block_reason, blocked_prompt_error, prompt_verdict
from ._tools import ToolCall, plan_tool_calls
from .config import ShapeSettings
from .content import ChatRequest

__all__ = [
    "THOUGHT_WORDS",
    "WORDS",
    "ChoicePlan",
    "Plan",
    "gemini_visible_text",
    "plan_answer",
    "screen_prompt",
    "shape_plan",
]

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
class ChoicePlan:
    """One candidate: its reasoning and answer as token lists, and why it stopped."""

    reasoning: tuple[str, ...]
    content: tuple[str, ...]
    finish_reason: str
    tool_calls: tuple[ToolCall, ...] = ()
    stream_finish_reason: str | None = None  # when a stream ends differently (Gemini "stop")

    @property
    def output_tokens(self) -> int:
        """Generated tokens besides reasoning: the text and the tool calls."""
        return len(self.content) + sum(call.tokens for call in self.tool_calls)

    def served_finish_reason(self, stream: bool) -> str:
        if stream and self.stream_finish_reason is not None:
            return self.stream_finish_reason
        return self.finish_reason

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
    cached_tokens: int = 0  # prompt tokens served from the implicit cache

    @property
    def content_tokens(self) -> int:
        return sum(c.output_tokens for c in self.choices)

    @property
    def tool_calls(self) -> int:
        return sum(len(c.tool_calls) for c in self.choices)

    @property
    def reasoning_tokens(self) -> int:
        return sum(len(c.reasoning) for c in self.choices)


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


def _instance(schema: object, rng: random.Random, depth: int = 0) -> object:
    """A value that satisfies a simple JSON schema (types, properties, enums, items)."""
    if not isinstance(schema, Mapping) or depth > 6:
        return WORDS[rng.randrange(len(WORDS))]
    if "enum" in schema and isinstance(schema["enum"], list) and schema["enum"]:
        return schema["enum"][rng.randrange(len(schema["enum"]))]
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "string")
    if kind == "object" or "properties" in schema:
        props = schema.get("properties")
        props = props if isinstance(props, Mapping) else {}
        return {str(k): _instance(v, rng, depth + 1) for k, v in props.items()} or {
            "answer": WORDS[rng.randrange(len(WORDS))]
        }
    if kind == "array":
        return [_instance(schema.get("items"), rng, depth + 1) for _ in range(rng.randint(1, 3))]
    if kind == "integer":
        low = schema.get("minimum", 0)
        high = schema.get("maximum", 100)
        low = int(low) if isinstance(low, int | float) else 0
        high = int(high) if isinstance(high, int | float) else low + 100
        return rng.randint(low, max(low, high))
    if kind == "number":
        return round(rng.uniform(0, 100), 2)
    if kind == "boolean":
        return rng.random() < 0.5
    return " ".join(WORDS[rng.randrange(len(WORDS))] for _ in range(3))


def json_answer(request: ChatRequest, rng: random.Random) -> tuple[str, ...]:
    """The answer to a ``response_format`` request as tokens of JSON text (about 4 chars each)."""
    fmt = request.response_format or {}
    spec = fmt.get("json_schema")
    schema = spec.get("schema") if isinstance(spec, Mapping) else None
    value = (
        _instance(schema, rng)
        if schema is not None
        else {"answer": " ".join(WORDS[rng.randrange(len(WORDS))] for _ in range(8))}
    )
    text = orjson.dumps(value).decode()
    return tuple(text[i : i + 4] for i in range(0, len(text), 4))


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
        structured = json_answer(request, rng) if request.response_format else None
        if structured is not None:
            natural_content = len(structured)
        reasoning = min(natural_reasoning, limit)
        content = min(natural_content, limit - reasoning)
        finish = "length" if natural_reasoning + natural_content > limit else "stop"
        choices.append(
            ChoicePlan(
                reasoning=_tokens(rng, reasoning, _THOUGHT_TABLES),
                content=(
                    structured[:content]  # a JSON answer cut at the limit is not JSON
                    if structured is not None
                    else _tokens(rng, content, _ANSWER_TABLES)
                ),
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


def screen_prompt(request: ChatRequest, settings: ShapeSettings) -> None:
    """Raise the blocked-prompt 400 for ``__block__`` prompts and, at
    ``prompt_block_rate``, for others.
    """
    verdict = prompt_verdict(request.messages_json)
    rng = random.Random(request.digest ^ 0xB10C)
    if verdict.block or rng.random() < settings.prompt_block_rate:
        raise blocked_prompt_error()


def shape_plan(request: ChatRequest, plan: Plan, settings: ShapeSettings) -> Plan:
    """Safety blocks and tool calls on top of the plain plan, decided from the digest."""
    verdict = prompt_verdict(request.messages_json)
    if verdict.no_candidates:
        return replace(plan, choices=())
    family = request.spec.family
    choices = []
    for index, choice in enumerate(plan.choices):
        rng = random.Random(request.digest ^ (0x7001 + index))
        reason = answer_block_reason(verdict, rng, family=family, rate=settings.safety_block_rate)
        if reason is not None:
            choices.append(replace(choice, content=(), finish_reason=reason))
            continue
        calls: tuple[ToolCall, ...] = ()
        if choice.finish_reason != "length":
            calls = plan_tool_calls(
                request.tools,
                rng,
                family=family,
                call_rate=settings.tool_call_rate,
                parallel_rate=settings.parallel_tool_call_rate,
                invalid_rate=settings.invalid_tool_arguments_rate,
            )
        if not calls:
            choices.append(choice)
            continue
        text = rng.random() < settings.tool_text_rate
        gemini_stop = family == "gemini" and rng.random() < 0.5
        choices.append(
            replace(
                choice,
                content=choice.content[: rng.randint(4, 16)] if text else (),
                tool_calls=calls,
                finish_reason="tool_calls",
                stream_finish_reason="stop" if gemini_stop else None,
            )
        )
    return replace(plan, choices=tuple(choices))
