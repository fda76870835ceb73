"""Chat-completions request bodies as batch input lines, and model ids as batch model paths.

Gemini models take native ``GenerateContentRequest`` lines (``{"key", "request"}``); MaaS
models (gpt-oss) take OpenAI batch lines (``{"custom_id", "method", "url", "body"}``). A
parameter that has no batch equivalent raises :class:`Untranslatable`, which the route turns
into a ``bad_input`` row before anything is uploaded.
"""

from __future__ import annotations

import mimetypes
import re
from collections.abc import Mapping, Sequence
from typing import Any

import orjson

from batchrunner.config import model_family

__all__ = [
    "REASONING_BUDGETS",
    "Untranslatable",
    "batch_line",
    "gemini_request",
    "model_path",
    "openai_line",
]


class Untranslatable(ValueError):
    """A request that batch prediction cannot take; the message names the parameter."""


#: ``reasoning_effort`` as a Gemini thinking budget, as Google's OpenAI compatibility maps it.
REASONING_BUDGETS: Mapping[str, int] = {
    "none": 0,
    "minimal": 1024,  # Gemini 2.5 has no "minimal" level: the smallest documented budget
    "low": 1024,
    "medium": 8192,
    "high": 24576,
}
_DATA_URI = re.compile(r"^data:([\w.+-]+/[\w.+-]+);base64,(.*)$", re.DOTALL)
# Chat parameters with a generationConfig field of their own.
_GENERATION = {
    "temperature": "temperature",
    "top_p": "topP",
    "seed": "seed",
    "n": "candidateCount",
    "presence_penalty": "presencePenalty",
    "frequency_penalty": "frequencyPenalty",
    "logprobs": "responseLogprobs",
    "top_logprobs": "logprobs",
}
_HANDLED = frozenset(
    {
        *_GENERATION,
        "model",
        "messages",
        "max_tokens",
        "max_completion_tokens",
        "stop",
        "response_format",
        "reasoning_effort",
        "tools",
        "tool_choice",
        "extra_body",
        "stream",
        "stream_options",
    }
)
_GOOGLE_HANDLED = frozenset({"thinking_config", "safety_settings"})
_OPENAI_DROPPED = frozenset({"stream", "stream_options"})


def model_path(model: str) -> str:
    """``google/gemini-2.5-flash`` → ``publishers/google/models/gemini-2.5-flash``."""
    name = model.strip()
    if name.startswith("publishers/"):
        return name
    publisher, _, bare = name.rpartition("/")
    if not publisher:
        if model_family(name) == "gemini":
            publisher = "google"
        elif bare.startswith("gpt-oss"):
            publisher = "openai"
        else:
            raise Untranslatable(
                f"model {model!r} names no publisher: use PUBLISHER/MODEL, e.g. openai/{bare}"
            )
    return f"publishers/{publisher}/models/{bare}"


def batch_line(model: str, key: str, body: Mapping[str, Any]) -> dict[str, Any]:
    """The batch input line for one request to ``model``, keyed by ``key``."""
    if model_family(model) == "gemini":
        return {"key": key, "request": gemini_request(body)}
    return openai_line(key, body)


def openai_line(key: str, body: Mapping[str, Any]) -> dict[str, Any]:
    """An OpenAI batch line; batch jobs do not stream, and Google extensions have no home."""
    extra = body.get("extra_body")
    if isinstance(extra, Mapping) and extra:
        names = ", ".join(sorted(f"extra_body.{k}" for k in extra))
        raise Untranslatable(f"{names} has no batch equivalent for this model")
    clean = {k: v for k, v in body.items() if k not in _OPENAI_DROPPED and k != "extra_body"}
    return {"custom_id": key, "method": "POST", "url": "/v1/chat/completions", "body": clean}


# -- Gemini --------------------------------------------------------------------------------


def gemini_request(body: Mapping[str, Any]) -> dict[str, Any]:
    """A chat-completions body as a ``GenerateContentRequest`` (REST, camelCase)."""
    unknown = sorted(set(body) - _HANDLED)
    if unknown:
        raise Untranslatable(
            f"parameter {', '.join(repr(k) for k in unknown)} has no batch equivalent "
            "for Gemini models"
        )
    request: dict[str, Any] = {}
    system, contents = _contents(body.get("messages"))
    request["contents"] = contents
    if system:
        request["systemInstruction"] = {"parts": system}
    config = _generation_config(body)
    google = _google(body)
    thinking = google.get("thinking_config")
    if thinking is not None:
        config["thinkingConfig"] = _thinking(thinking)
    if config:
        request["generationConfig"] = config
    tools = body.get("tools")
    if tools is not None:
        request["tools"] = [{"functionDeclarations": _declarations(tools)}]
    choice = body.get("tool_choice")
    if choice is not None:
        request["toolConfig"] = {"functionCallingConfig": _calling_config(choice)}
    safety = google.get("safety_settings")
    if safety is not None:
        request["safetySettings"] = safety
    return request


def _google(body: Mapping[str, Any]) -> Mapping[str, Any]:
    extra = body.get("extra_body")
    if extra is None:
        return {}
    if not isinstance(extra, Mapping):
        raise Untranslatable("extra_body must be an object")
    unknown = sorted(set(extra) - {"google"})
    google = extra.get("google") or {}
    if not isinstance(google, Mapping):
        raise Untranslatable("extra_body.google must be an object")
    unknown += sorted(f"google.{k}" for k in set(google) - _GOOGLE_HANDLED)
    if unknown:
        names = ", ".join(f"extra_body.{k}" for k in unknown)
        raise Untranslatable(f"{names} has no batch equivalent for Gemini models")
    return google


def _generation_config(body: Mapping[str, Any]) -> dict[str, Any]:
    config: dict[str, Any] = {}
    cap = body.get("max_completion_tokens", body.get("max_tokens"))
    if cap is not None:
        config["maxOutputTokens"] = cap
    for name, field in _GENERATION.items():
        if body.get(name) is not None:
            config[field] = body[name]
    stop = body.get("stop")
    if stop is not None:
        config["stopSequences"] = [stop] if isinstance(stop, str) else list(stop)
    fmt = body.get("response_format")
    if fmt is not None:
        config.update(_response_format(fmt))
    effort = body.get("reasoning_effort")
    if effort is not None:
        if effort not in REASONING_BUDGETS:
            raise Untranslatable(
                f"reasoning_effort {effort!r} is not one of {', '.join(REASONING_BUDGETS)}"
            )
        config["thinkingConfig"] = {"thinkingBudget": REASONING_BUDGETS[effort]}
    return config


def _response_format(fmt: object) -> dict[str, Any]:
    if not isinstance(fmt, Mapping):
        raise Untranslatable("response_format must be an object")
    kind = fmt.get("type")
    if kind == "text":
        return {}
    if kind == "json_object":
        return {"responseMimeType": "application/json"}
    if kind == "json_schema":
        spec = fmt.get("json_schema")
        schema = spec.get("schema") if isinstance(spec, Mapping) else None
        if not isinstance(schema, Mapping):
            raise Untranslatable("response_format json_schema needs json_schema.schema")
        return {"responseMimeType": "application/json", "responseSchema": dict(schema)}
    raise Untranslatable(f"response_format type {kind!r} has no batch equivalent")


def _thinking(value: object) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        raise Untranslatable("extra_body.google.thinking_config must be an object")
    names = {
        "thinking_budget": "thinkingBudget",
        "include_thoughts": "includeThoughts",
        "thinking_level": "thinkingLevel",
    }
    unknown = sorted(set(value) - set(names))
    if unknown:
        raise Untranslatable(f"thinking_config.{unknown[0]} has no batch equivalent")
    return {names[k]: v for k, v in value.items()}


def _declarations(tools: object) -> list[dict[str, Any]]:
    if not isinstance(tools, list) or not tools:
        raise Untranslatable("tools must be a non-empty list")
    out = []
    for i, tool in enumerate(tools):
        function = tool.get("function") if isinstance(tool, Mapping) else None
        if not isinstance(tool, Mapping) or tool.get("type") != "function" or not function:
            raise Untranslatable(f"tools[{i}]: only function tools have a batch equivalent")
        declaration = {"name": function.get("name")}
        for key in ("description", "parameters"):
            if function.get(key) is not None:
                declaration[key] = function[key]
        out.append(declaration)
    return out


def _calling_config(choice: object) -> dict[str, Any]:
    modes = {"auto": "AUTO", "none": "NONE", "required": "ANY"}
    if isinstance(choice, str) and choice in modes:
        return {"mode": modes[choice]}
    if isinstance(choice, Mapping) and isinstance(choice.get("function"), Mapping):
        return {"mode": "ANY", "allowedFunctionNames": [choice["function"].get("name")]}
    raise Untranslatable(f"tool_choice {choice!r} has no batch equivalent")


def _contents(messages: object) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(systemInstruction parts, contents) from chat messages."""
    if not isinstance(messages, list) or not messages:
        raise Untranslatable("messages must be a non-empty list")
    system: list[dict[str, Any]] = []
    contents: list[dict[str, Any]] = []
    call_names: dict[str, str] = {}
    for i, message in enumerate(messages):
        role = message.get("role")
        if role in ("system", "developer"):
            system.extend(_parts(message.get("content"), i))
        elif role == "user":
            contents.append({"role": "user", "parts": _parts(message.get("content"), i)})
        elif role == "assistant":
            parts = _parts(message.get("content"), i) if message.get("content") else []
            for call in message.get("tool_calls") or []:
                function = call.get("function") or {}
                name = str(function.get("name") or "")
                call_names[str(call.get("id"))] = name
                parts.append({"functionCall": {"name": name, "args": _args(function, i)}})
            if not parts:
                raise Untranslatable(f"messages[{i}]: an assistant message with nothing in it")
            contents.append({"role": "model", "parts": parts})
        elif role == "tool":
            name = call_names.get(str(message.get("tool_call_id")), message.get("name"))
            if not name:
                raise Untranslatable(f"messages[{i}]: a tool result for no known tool call")
            reply = {"functionResponse": {"name": name, "response": _tool_response(message)}}
            if (
                contents
                and contents[-1]["role"] == "user"
                and "functionResponse" in (contents[-1]["parts"][0])
            ):
                contents[-1]["parts"].append(reply)  # parallel calls answer in one turn
            else:
                contents.append({"role": "user", "parts": [reply]})
        else:
            raise Untranslatable(f"messages[{i}]: role {role!r} has no batch equivalent")
    if not contents:
        raise Untranslatable("messages hold no user turn")
    return system, contents


def _args(function: Mapping[str, Any], i: int) -> object:
    raw = function.get("arguments", "{}")
    if not isinstance(raw, str):
        return raw
    try:
        return orjson.loads(raw or "{}")
    except orjson.JSONDecodeError:
        raise Untranslatable(f"messages[{i}]: tool call arguments are not JSON") from None


def _tool_response(message: Mapping[str, Any]) -> dict[str, Any]:
    content = message.get("content")
    if isinstance(content, list):
        content = "".join(p.get("text", "") for p in content if isinstance(p, Mapping))
    return {"content": content}


def _parts(content: object, i: int) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"text": content}]
    if not isinstance(content, Sequence) or not content:
        raise Untranslatable(f"messages[{i}]: content must be text or a list of parts")
    parts: list[dict[str, Any]] = []
    for part in content:
        kind = part.get("type") if isinstance(part, Mapping) else None
        if kind == "text":
            parts.append({"text": part.get("text", "")})
        elif kind == "image_url":
            image = part.get("image_url")
            url = image.get("url") if isinstance(image, Mapping) else image
            if not isinstance(url, str):
                raise Untranslatable(f"messages[{i}]: image_url needs a url")
            parts.append(_image(url, i))
        else:
            raise Untranslatable(f"messages[{i}]: content part {kind!r} has no batch equivalent")
    return parts


def _image(url: str, i: int) -> dict[str, Any]:
    match = _DATA_URI.match(url)
    if match:
        return {"inlineData": {"mimeType": match.group(1), "data": match.group(2)}}
    mime, _ = mimetypes.guess_type(url.split("?", 1)[0])
    if mime is None or not url.startswith(("gs://", "https://", "http://")):
        raise Untranslatable(
            f"messages[{i}]: cannot tell the image type of {url[:80]!r}: use a data URI or a "
            "URL ending in .png, .jpg, .webp…"
        )
    return {"fileData": {"mimeType": mime, "fileUri": url}}
