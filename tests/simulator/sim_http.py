"""HTTP helpers for the simulator's shape tests: posting a body, reading an SSE stream."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson

AUTH = {"Authorization": "Bearer test-token"}


@dataclass
class Answer:
    status: int
    body: Any  # parsed JSON, or the text when the body is not JSON
    content_type: str


@dataclass
class Stream:
    status: int
    events: list[Any]  # parsed data: payloads, without the final [DONE]
    done: bool  # whether the stream ended with data: [DONE]


async def post(
    http: aiohttp.ClientSession,
    url: str,
    body: dict[str, Any],
    headers: dict[str, str] | None = None,
) -> Answer:
    async with http.post(
        url + "/chat/completions", json=body, headers={**AUTH, **(headers or {})}
    ) as response:
        raw = await response.read()
        try:
            parsed: Any = orjson.loads(raw)
        except orjson.JSONDecodeError:
            parsed = raw.decode()
        return Answer(response.status, parsed, response.headers.get("Content-Type", ""))


async def stream(
    http: aiohttp.ClientSession,
    url: str,
    body: dict[str, Any],
    headers: dict[str, str] | None = None,
) -> Stream:
    async with http.post(
        url + "/chat/completions",
        json={**body, "stream": True},
        headers={**AUTH, **(headers or {})},
    ) as response:
        text = (await response.read()).decode()
    payloads = [e.removeprefix("data: ") for e in text.split("\n\n") if e]
    done = bool(payloads) and payloads[-1] == "[DONE]"
    if done:
        payloads = payloads[:-1]
    return Stream(response.status, [orjson.loads(p) for p in payloads], done)
