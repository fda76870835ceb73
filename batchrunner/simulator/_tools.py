"""Tool calls: reading ``tools``/``tool_choice`` from a request, deciding the calls an answer
makes (names, ids, arguments built from each tool's parameter schema) and their wire forms.

Streamed calls come two ways, as real traffic shows them: vLLM (gpt-oss) fragments each
call OpenAI-style (the first delta carries ``index``, ``id``, ``type``, the name and a first
piece of the arguments; later deltas only ``index`` and more argument text), while Gemini
sends each call whole in one chunk with no ``index``, and parallel calls may share one id.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import orjson

__all__ = [
    "ToolCall",
    "ToolRequest",
    "ToolSpec",
    "argument_pieces",
    "message_tool_calls",
    "parse_tools",
    "plan_tool_calls",
]

_MAX_DEPTH = 4
_ARG_WORDS = (
    "alpha", "batch", "vertex", "paris", "london", "report", "summary", "north", "blue",
    "today", "weekly", "sample", "primary", "customer", "order", "invoice",
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class ToolSpec:
    """One function the request offers: its name and JSON-schema parameters."""

    name: str
    parameters: Mapping[str, object]


@dataclass(frozen=True, slots=True)
class ToolRequest:
    """What the request says about tools."""

    tools: tuple[ToolSpec, ...] = ()
    choice: str = "auto"  # "auto" | "none" | "required" | "function"
    forced_name: str | None = None  # the function ``tool_choice`` names
    parallel: bool = True  # ``parallel_tool_calls`` (default true)


@dataclass(frozen=True, slots=True)
class ToolCall:
    """One call an answer makes; ``arguments`` is the JSON text (or deliberately not)."""

    id: str
    name: str
    arguments: str

    @property
    def tokens(self) -> int:
        """Completion tokens the call costs (about four characters a token)."""
        return (len(self.name) + len(self.arguments) + 3) // 4 + 3


def parse_tools(body: Mapping[str, object]) -> ToolRequest:
    """Read ``tools`` (or the deprecated ``functions``), ``tool_choice`` and
    ``parallel_tool_calls``; entries that are not function tools are ignored.
    """
    specs: list[ToolSpec] = []
    tools = body.get("tools")
    if isinstance(tools, list):
        for tool in tools:
            if isinstance(tool, Mapping) and isinstance(tool.get("function"), Mapping):
                spec = _spec(tool["function"])
                if spec is not None:
                    specs.append(spec)
    functions = body.get("functions")
    if not specs and isinstance(functions, list):
        for function in functions:
            if isinstance(function, Mapping):
                spec = _spec(function)
                if spec is not None:
                    specs.append(spec)
    raw_choice = body.get("tool_choice", body.get("function_call"))
    choice, forced = "auto", None
    if isinstance(raw_choice, str):
        if raw_choice in ("none", "required"):
            choice = raw_choice
        elif raw_choice == "any":
            choice = "required"
    elif isinstance(raw_choice, Mapping):
        function = raw_choice.get("function", raw_choice)
        if isinstance(function, Mapping) and isinstance(function.get("name"), str):
            choice, forced = "function", str(function["name"])
    return ToolRequest(
        tools=tuple(specs),
        choice=choice,
        forced_name=forced,
        parallel=body.get("parallel_tool_calls", True) is not False,
    )


def _spec(function: Mapping[str, object]) -> ToolSpec | None:
    name = function.get("name")
    if not isinstance(name, str) or not name:
        return None
    parameters = function.get("parameters")
    return ToolSpec(name, parameters if isinstance(parameters, Mapping) else {})


def plan_tool_calls(
    tools: ToolRequest,
    rng: random.Random,
    *,
    family: str,
    call_rate: float,
    parallel_rate: float,
    invalid_rate: float,
) -> tuple[ToolCall, ...]:
    """The calls one candidate makes: none, one, or (parallel) two or three."""
    if not tools.tools or tools.choice == "none":
        return ()
    forced = tools.choice in ("required", "function")
    if not forced and rng.random() >= call_rate:
        return ()
    count = rng.randint(2, 3) if tools.parallel and rng.random() < parallel_rate else 1
    by_name = {spec.name: spec for spec in tools.tools}
    named = by_name.get(tools.forced_name or "")
    if tools.forced_name is not None and named is None:
        named = ToolSpec(tools.forced_name, {})
    shared_id = family == "gemini" and count > 1 and rng.random() < 0.5
    calls: list[ToolCall] = []
    for _ in range(count):
        spec = named if named is not None else rng.choice(tools.tools)
        text = orjson.dumps(schema_value(spec.parameters, rng, 0)).decode()
        if rng.random() < invalid_rate:
            text = _corrupt(text, rng)
        call_id = calls[0].id if shared_id and calls else _call_id(rng, family)
        calls.append(ToolCall(call_id, spec.name, text))
    return tuple(calls)


def _call_id(rng: random.Random, family: str) -> str:
    if family == "gemini":
        h = rng.randbytes(16).hex()
        return f"function-call-{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"
    return "chatcmpl-tool-" + rng.randbytes(16).hex()


def _corrupt(text: str, rng: random.Random) -> str:
    """Arguments a model got wrong: cut short, or in Python's quoting."""
    if rng.random() < 0.5 or len(text) < 3:
        return text[: max(1, len(text) - 2)]
    return text.replace('"', "'")


def schema_value(schema: object, rng: random.Random, depth: int) -> object:
    """A value that validates against (the common subset of) a JSON schema."""
    if not isinstance(schema, Mapping):
        return _word(rng)
    for key in ("anyOf", "oneOf", "allOf"):
        options = schema.get(key)
        if isinstance(options, list) and options:
            return schema_value(options[0], rng, depth)
    if "const" in schema:
        return schema["const"]
    enum = schema.get("enum")
    if isinstance(enum, list) and enum:
        return rng.choice(enum)
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind is None:
        kind = "object" if "properties" in schema else "string"
    if kind == "object":
        return _object_value(schema, rng, depth)
    if kind == "array":
        if depth >= _MAX_DEPTH:
            return []
        low = _int(schema.get("minItems"), 1)
        size = rng.randint(low, max(low, _int(schema.get("maxItems"), low + 2)))
        return [schema_value(schema.get("items"), rng, depth + 1) for _ in range(size)]
    if kind == "integer":
        low = _int(schema.get("minimum"), 0)
        return rng.randint(low, max(low, _int(schema.get("maximum"), low + 100)))
    if kind == "number":
        floor = _float(schema.get("minimum"), 0.0)
        top = max(floor, _float(schema.get("maximum"), floor + 100.0))
        return round(rng.uniform(floor, top), 2)
    if kind == "boolean":
        return rng.random() < 0.5
    if kind == "null":
        return None
    return _word(rng)


def _object_value(schema: Mapping[str, object], rng: random.Random, depth: int) -> object:
    properties = schema.get("properties")
    if not isinstance(properties, Mapping) or depth >= _MAX_DEPTH:
        return {}
    required = schema.get("required")
    needed = set(required) if isinstance(required, list) else set()
    value: dict[str, object] = {}
    for name, sub in properties.items():
        if name in needed or rng.random() < 0.6:
            value[str(name)] = schema_value(sub, rng, depth + 1)
    return value


def _int(value: object, default: int) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else default


def _float(value: object, default: float) -> float:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    return default


def _word(rng: random.Random) -> str:
    return " ".join(rng.choice(_ARG_WORDS) for _ in range(rng.randint(1, 3)))


def message_tool_calls(calls: Sequence[ToolCall]) -> list[dict[str, object]]:
    """``message.tool_calls`` of a non-streamed answer."""
    return [
        {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
        for c in calls
    ]


def argument_pieces(arguments: str, rng: random.Random) -> list[str]:
    """The argument text split as vLLM streams it: a few characters per delta."""
    pieces: list[str] = []
    i = 0
    while i < len(arguments):
        size = rng.randint(3, 12)
        pieces.append(arguments[i : i + size])
        i += size
    return pieces or [""]
