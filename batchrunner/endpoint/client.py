"""One HTTP exchange with a chat-completions endpoint: send, parse JSON or SSE, time it.

``ChatClient.send`` makes one attempt (plus one immediate retry with a fresh token after
a 401) and either returns an ``Answer`` or raises ``RequestError`` saying what went wrong
and whether it is worth retrying. Retries, pacing and bookkeeping live elsewhere.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from batchrunner.auth.tokens import Authenticator, AuthHeaders
from batchrunner.endpoint.http_errors import error_from_response, truncated_stream_error
from batchrunner.endpoint.wire import Wire, WireResponse
from batchrunner.errors import AuthError, RequestError
from batchrunner.results import RequestSpec

_HEADERS = {"Content-Type": "application/json", "User-Agent": "batchrunner"}
_SSE_HEADERS = {**_HEADERS, "Accept": "text/event-stream"}


@dataclass(slots=True)
class Answer:
    """A successful response, parsed, with the timings of the attempt that produced it."""

    status: int
    response_id: str | None
    content: str | None
    reasoning: str | None
    finish_reason: str | None
    usage: Mapping[str, Any] | None
    latency_s: float
    ttft_s: float | None = None  # first token of any kind (reasoning included)
    ttfo_s: float | None = None  # first output (non-reasoning) token
    itl_s: float | None = None  # mean gap between token-bearing chunks after the first
    chunks: int = 0
    token_chunks: int = 0  # chunks that carried tokens (text, reasoning or tool calls)
    generating_s: float | None = None  # first token-bearing chunk to the last (streaming)


def _message_parts(message: Mapping[str, Any]) -> tuple[str | None, str | None]:
    content = message.get("content")
    if isinstance(content, list):
        content = "".join(
            p.get("text", "") for p in content if isinstance(p, Mapping) and p.get("type") == "text"
        )
    tool_calls = message.get("tool_calls")
    if not content and tool_calls:
        content = orjson.dumps(tool_calls).decode()
    reasoning = message.get("reasoning_content") or message.get("reasoning")
    return (content if isinstance(content, str) else None), (
        reasoning if isinstance(reasoning, str) else None
    )


def parse_completion(payload: bytes, status: int, latency_s: float) -> Answer:
    """Parse a non-streamed chat completion; tolerate missing ``message`` and ``usage``."""
    try:
        data = orjson.loads(payload)
    except orjson.JSONDecodeError:
        raise truncated_stream_error("response body is not complete JSON") from None
    if not isinstance(data, dict):
        raise RequestError(
            "response is not a JSON object", error_type="bad_response", status=status
        )
    if "error" in data:
        raise error_from_response(status if status >= 400 else 500, {}, payload)
    choices = data.get("choices")
    choice = choices[0] if isinstance(choices, list) and choices else {}
    if not isinstance(choice, dict):
        choice = {}
    message = choice.get("message")
    content, reasoning = _message_parts(message) if isinstance(message, dict) else (None, None)
    usage = data.get("usage")
    response_id = data.get("id")
    return Answer(
        status=status,
        response_id=response_id if isinstance(response_id, str) else None,
        content=content,
        reasoning=reasoning,
        finish_reason=choice.get("finish_reason"),
        usage=usage if isinstance(usage, dict) else None,
        latency_s=latency_s,
    )


class _StreamState:
    """Accumulates an SSE stream's chunks and the moments tokens arrived."""

    __slots__ = (
        "chunks",
        "content",
        "done",
        "finish_reason",
        "first_any",
        "first_output",
        "last_token",
        "reasoning",
        "response_id",
        "token_chunks",
        "usage",
    )

    def __init__(self) -> None:
        self.content: list[str] = []
        self.reasoning: list[str] = []
        self.finish_reason: str | None = None
        self.usage: dict[str, Any] | None = None
        self.response_id: str | None = None
        self.first_any: float | None = None
        self.first_output: float | None = None
        self.last_token: float | None = None
        self.token_chunks = 0
        self.chunks = 0
        self.done = False

    def feed(self, data: bytes, now: float) -> None:
        if data == b"[DONE]":
            self.done = True
            return
        try:
            chunk = orjson.loads(data)
        except orjson.JSONDecodeError:
            raise truncated_stream_error("stream event is not valid JSON") from None
        if not isinstance(chunk, dict):
            return
        if "error" in chunk:
            raise error_from_response(500, {}, data)
        self.chunks += 1
        if self.response_id is None and isinstance(chunk.get("id"), str):
            self.response_id = chunk["id"]
        usage = chunk.get("usage")
        if isinstance(usage, dict):
            self.usage = usage
        choices = chunk.get("choices")
        if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
            return
        choice = choices[0]
        if choice.get("finish_reason"):
            self.finish_reason = choice["finish_reason"]
        delta = choice.get("delta")
        if not isinstance(delta, dict):
            return
        got = False
        reasoning = delta.get("reasoning_content") or delta.get("reasoning")
        if isinstance(reasoning, str) and reasoning:
            self.reasoning.append(reasoning)
            got = True
        content = delta.get("content")
        if isinstance(content, str) and content:
            self.content.append(content)
            got = True
            if self.first_output is None:
                self.first_output = now
        if delta.get("tool_calls"):
            got = True
            if self.first_output is None:
                self.first_output = now
        if got:
            if self.first_any is None:
                self.first_any = now
            self.last_token = now
            self.token_chunks += 1


class ChatClient:
    """Sends one request to a chat-completions URL with the current credentials."""

    def __init__(
        self,
        wire: Wire,
        url: str,
        auth: Authenticator,
        *,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self._wire = wire
        self._url = url
        self._auth = auth
        self._clock = clock
        # The request headers for the latest credentials, built once per token.
        self._creds: AuthHeaders | None = None
        self._plain_headers: dict[str, str] = {}
        self._sse_headers: dict[str, str] = {}

    async def send(self, spec: RequestSpec) -> Answer:
        """One attempt; a 401 refreshes the token and tries once more."""
        creds = await self._auth.headers()
        try:
            return await self._attempt(spec, creds)
        except RequestError as exc:
            if exc.status != 401:
                raise
        creds = await self._auth.unauthorized(creds)
        try:
            return await self._attempt(spec, creds)
        except RequestError as exc:
            if exc.status == 401:
                raise AuthError(
                    f"the endpoint rejected a freshly refreshed token from {self._auth.describe()}"
                    f" (401 {exc.google_status or ''}); check the credential's permissions"
                ) from None
            raise

    async def _attempt(self, spec: RequestSpec, creds: AuthHeaders) -> Answer:
        if creds is not self._creds:
            self._creds = creds
            self._plain_headers = {**_HEADERS, **creds.headers}
            self._sse_headers = {**_SSE_HEADERS, **creds.headers}
        # The wire bounds the whole attempt by its total timeout.
        started = self._clock()
        if not spec.stream:
            status, response_headers, body = await self._wire.fetch(
                self._url, self._plain_headers, spec.body
            )
            if status >= 400:
                raise error_from_response(status, response_headers, body)
            return parse_completion(body, status, self._clock() - started)
        async with self._wire.post(self._url, self._sse_headers, spec.body) as response:
            status = response.status
            if status >= 400:
                body = await response.read()
                raise error_from_response(status, response.headers, body)
            return await self._read_stream(response, started)

    async def _read_stream(self, response: WireResponse, started: float) -> Answer:
        state = _StreamState()
        clock = self._clock
        status = response.status
        buffer = b""
        async for piece in response.iter_chunks():
            now = clock()
            buffer += piece
            while True:
                newline = buffer.find(b"\n")
                if newline < 0:
                    break
                line = buffer[:newline].rstrip(b"\r")
                buffer = buffer[newline + 1 :]
                if line.startswith(b"data:"):
                    state.feed(line[5:].strip(), now)
        ended = clock()
        if buffer.startswith(b"data:"):
            state.feed(buffer[5:].strip(), ended)
        if not state.done:
            raise truncated_stream_error(f"stream ended after {state.chunks} chunks without [DONE]")
        itl = None
        if state.token_chunks > 1 and state.first_any is not None and state.last_token is not None:
            itl = (state.last_token - state.first_any) / (state.token_chunks - 1)
        return Answer(
            status=status,
            response_id=state.response_id,
            content="".join(state.content) if state.content else None,
            reasoning="".join(state.reasoning) if state.reasoning else None,
            finish_reason=state.finish_reason,
            usage=state.usage,
            latency_s=ended - started,
            ttft_s=None if state.first_any is None else state.first_any - started,
            ttfo_s=None if state.first_output is None else state.first_output - started,
            itl_s=itl,
            chunks=state.chunks,
            token_chunks=state.token_chunks,
            generating_s=(
                state.last_token - state.first_any
                if state.first_any is not None and state.last_token is not None
                else None
            ),
        )
