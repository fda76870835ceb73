"""One HTTP exchange with a chat-completions endpoint: send, parse JSON or SSE, time it.

``ChatClient.send`` makes one attempt (plus one immediate retry with a fresh token after
a 401) and either returns an ``Answer`` or raises ``RequestError`` saying what went wrong
and whether it is worth retrying. Retries, pacing and bookkeeping live elsewhere.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from batchrunner.auth.tokens import Authenticator, AuthHeaders
from batchrunner.endpoint.candidates import (
    Candidate,
    CandidateBuilder,
    ToolCall,
    candidate_from_message,
    normalize_finish_reason,
)
from batchrunner.endpoint.http_errors import (
    body_preview,
    error_from_response,
    truncated_stream_error,
)
from batchrunner.endpoint.wire import Wire, WireResponse
from batchrunner.errors import AuthError, RequestError
from batchrunner.results import RequestSpec

#: Attempts with successive tokens after 401s, for an authenticator that never gives up.
FRESH_TOKEN_TRIES = 6

# Non-streamed answers may come compressed; a compressed stream arrives in a proxy's bursts,
# so that time to first token would measure the buffer, not the model.
_HEADERS = {
    "Content-Type": "application/json",
    "User-Agent": "batchrunner",
    "Accept-Encoding": "gzip, deflate",
}
_SSE_HEADERS = {**_HEADERS, "Accept": "text/event-stream", "Accept-Encoding": "identity"}
_BODY_PREVIEW_BYTES = 4096  # read from a body that is not an answer ...
_BODY_PREVIEW_CHARS = 160  # ... and kept, as clean text, in the error message


@dataclass(slots=True)
class Answer:
    """A successful response, parsed, with the timings of the attempt that produced it.

    ``content``, ``reasoning``, ``tool_calls`` and ``finish_reason`` are candidate 0's;
    ``choices`` is every candidate's text in index order.
    ``finish_reason`` is normalised (:data:`FINISH_REASONS`); ``finish_reason_raw`` is the
    server's own value when it differs. An answer with no candidates at all (a blocked
    prompt) is ``content_filter`` with no content.
    """

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
    tool_calls: tuple[ToolCall, ...] = ()
    choices: tuple[str | None, ...] = ()
    finish_reason_raw: str | None = None
    token_chunks: int = 0  # chunks that carried tokens (text, reasoning or tool calls)
    generating_s: float | None = None  # first token-bearing chunk to the last (streaming)


def _answer_parts(
    candidates: Sequence[Candidate],
) -> dict[str, Any]:
    """The candidate-derived fields of an :class:`Answer`."""
    if not candidates:
        return {
            "content": None,
            "reasoning": None,
            "finish_reason": "content_filter",
            "finish_reason_raw": None,
            "choices": (),
        }
    first = candidates[0]
    raw = first.finish_reason
    normalized = normalize_finish_reason(raw, has_tool_calls=bool(first.tool_calls))
    return {
        "content": first.content,
        "reasoning": first.reasoning,
        "finish_reason": normalized,
        "finish_reason_raw": raw if raw != normalized else None,
        "tool_calls": first.tool_calls,
        "choices": tuple(c.content for c in candidates),
    }


def not_an_answer_error(status: int, content_type: str | None, body: bytes) -> RequestError:
    """A 2xx whose body is not the expected JSON (a proxy's HTML page): worth a retry."""
    kind = f" ({content_type.split(';')[0].strip()})" if content_type else ""
    preview = body_preview(body[:_BODY_PREVIEW_BYTES])
    if len(preview) > _BODY_PREVIEW_CHARS:
        preview = preview[: _BODY_PREVIEW_CHARS - 1].rstrip() + "…"
    return RequestError(
        f"HTTP {status} with a body that is not a chat completion{kind}: {preview or '(empty)'}",
        error_type="bad_response",
        status=status,
        retryable=True,
    )


def parse_completion(
    payload: bytes,
    status: int,
    latency_s: float,
    headers: Mapping[str, str] | None = None,
) -> Answer:
    """Parse a non-streamed chat completion; tolerate missing ``message`` and ``usage``."""
    try:
        data = orjson.loads(payload)
    except orjson.JSONDecodeError:
        if payload.lstrip()[:1] in (b"{", b"["):
            raise truncated_stream_error("response body is not complete JSON") from None
        raise not_an_answer_error(status, _content_type(headers), payload) from None
    if isinstance(data, list):
        if any(isinstance(item, dict) and "error" in item for item in data):
            raise error_from_response(_embedded_status(data, status), {}, payload)
        raise not_an_answer_error(status, _content_type(headers), payload)
    if not isinstance(data, dict):
        raise not_an_answer_error(status, _content_type(headers), payload)
    if "error" in data:
        raise error_from_response(_embedded_status(data, status), {}, payload)
    choices = data.get("choices")
    if not isinstance(choices, list):
        raise not_an_answer_error(status, _content_type(headers), payload)
    usage = data.get("usage")
    response_id = data.get("id")
    if len(choices) == 1 and type(choices[0]) is dict:  # the usual answer: one candidate
        # Built directly: an answer a row costs a few microseconds less than through
        # _answer_parts, whose result is the same.
        first = candidate_from_message(choices[0])
        raw = first.finish_reason
        normalized = normalize_finish_reason(raw, has_tool_calls=bool(first.tool_calls))
        return Answer(
            status,
            response_id if isinstance(response_id, str) else None,
            first.content,
            first.reasoning,
            normalized,
            usage if type(usage) is dict else None,
            latency_s,
            tool_calls=first.tool_calls,
            choices=(first.content,),
            finish_reason_raw=raw if raw != normalized else None,
        )
    ordered = sorted((c for c in choices if isinstance(c, dict)), key=_choice_index)
    candidates = [candidate_from_message(c) for c in ordered]
    return Answer(
        status=status,
        response_id=response_id if isinstance(response_id, str) else None,
        usage=usage if isinstance(usage, dict) else None,
        latency_s=latency_s,
        **_answer_parts(candidates),
    )


def _choice_index(choice: Mapping[str, Any]) -> int:
    index = choice.get("index")
    return index if isinstance(index, int) else 0


def _embedded_status(document: object, default: int) -> int:
    """The HTTP status an error envelope inside a 200 stands for (its ``code``)."""
    if isinstance(document, list):
        document = next((d for d in document if isinstance(d, dict) and "error" in d), {})
    error = document.get("error") if isinstance(document, dict) else None
    code = error.get("code") if isinstance(error, dict) else None
    if isinstance(code, int) and not isinstance(code, bool) and 400 <= code < 600:
        return code
    return default if default >= 400 else 500


class _StreamState:
    """Accumulates an SSE stream's chunks, per candidate, and the moments tokens arrived."""

    __slots__ = (
        "candidates",
        "chunks",
        "done",
        "first_any",
        "first_output",
        "last_token",
        "response_id",
        "token_chunks",
        "usage",
    )

    def __init__(self) -> None:
        self.candidates: dict[int, CandidateBuilder] = {}
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
        if isinstance(chunk, list):
            # The error envelope in Vertex's array form; anything else is not an event.
            if any(isinstance(item, dict) and "error" in item for item in chunk):
                raise error_from_response(_embedded_status(chunk, 500), {}, data)
            return
        if not isinstance(chunk, dict):
            return
        if "error" in chunk:
            raise error_from_response(_embedded_status(chunk, 500), {}, data)
        self.chunks += 1
        if self.response_id is None and isinstance(chunk.get("id"), str):
            self.response_id = chunk["id"]
        usage = chunk.get("usage")
        if isinstance(usage, dict):
            self.usage = usage
        choices = chunk.get("choices")
        if not isinstance(choices, list):
            return
        got_any = got_output = False
        for choice in choices:
            if not isinstance(choice, dict):
                continue
            index = choice.get("index")
            if not isinstance(index, int) or isinstance(index, bool):
                index = 0
            builder = self.candidates.get(index)
            if builder is None:
                builder = self.candidates[index] = CandidateBuilder()
            token, output = builder.feed(choice)
            got_any = got_any or token
            got_output = got_output or output
        if got_output and self.first_output is None:
            self.first_output = now
        if got_any:
            if self.first_any is None:
                self.first_any = now
            self.last_token = now
            self.token_chunks += 1

    def built(self) -> list[Candidate]:
        return [builder.build() for _, builder in sorted(self.candidates.items())]


class ChatClient:
    """Sends one request to a chat-completions URL with the current credentials."""

    def __init__(
        self,
        wire: Wire,
        url: str,
        auth: Authenticator,
        *,
        clock: Callable[[], float] = time.perf_counter,
        headers: Mapping[str, str] | None = None,
        model_headers: Mapping[str, Mapping[str, str]] | None = None,
        model_urls: Mapping[str, str] | None = None,
    ) -> None:
        """``headers`` go with every request (the run's tier); ``model_headers`` replace
        them for the models they name (a model's own tier); ``model_urls`` send the models
        they name to a URL of their own (a model's own location) instead of ``url``."""
        self._model_urls = dict(model_urls or {})
        self._wire = wire
        self._url = url
        self._auth = auth
        self._clock = clock
        # The request headers for the latest credentials, built once per token.
        self._creds: AuthHeaders | None = None
        self._plain_headers: dict[str, str] = {}
        self._sse_headers: dict[str, str] = {}
        self._headers = dict(headers or {})
        self._model_headers = {m: dict(h) for m, h in (model_headers or {}).items()}
        # (plain, streamed) headers per model with headers of its own, built once per token.
        self._per_model: dict[str, tuple[dict[str, str], dict[str, str]]] = {}

    def credentials_ready(self) -> Awaitable[object]:
        """Await it to wait until a usable token exists (at once, unless the token source
        is down). The authenticator's own awaitable, without a coroutine around it."""
        return self._auth.headers()

    async def send(self, spec: RequestSpec) -> Answer:
        """One attempt; a 401 refreshes the token and tries again.

        The authenticator decides how many refused fresh tokens end the run (with backoff
        between them); ``FRESH_TOKEN_TRIES`` bounds the loop for one that never does.
        """
        creds = await self._auth.headers()
        for _ in range(FRESH_TOKEN_TRIES):
            try:
                return await self._attempt(spec, creds)
            except RequestError as exc:
                if exc.status != 401:
                    raise
                status = exc.google_status
            creds = await self._auth.unauthorized(creds)
        raise AuthError(
            f"the endpoint rejected a freshly refreshed token from {self._auth.describe()}"
            f" (401 {status or ''}); check the credential's permissions"
        )

    async def _attempt(self, spec: RequestSpec, creds: AuthHeaders) -> Answer:
        if creds is not self._creds:
            self._creds = creds
            self._plain_headers = {**_HEADERS, **creds.headers, **self._headers}
            self._sse_headers = {**_SSE_HEADERS, **creds.headers, **self._headers}
            self._per_model = {
                model: ({**_HEADERS, **creds.headers, **h}, {**_SSE_HEADERS, **creds.headers, **h})
                for model, h in self._model_headers.items()
            }
        plain, sse = self._per_model.get(spec.model) or (self._plain_headers, self._sse_headers)
        url = self._model_urls.get(spec.model, self._url) if self._model_urls else self._url
        # The wire bounds the whole attempt by its total timeout.
        started = self._clock()
        if not spec.stream:
            status, response_headers, body = await self._wire.fetch(url, plain, spec.body)
            if status >= 400:
                raise error_from_response(status, response_headers, body)
            return parse_completion(body, status, self._clock() - started, response_headers)
        async with self._wire.post(url, sse, spec.body) as response:
            status = response.status
            if status >= 400:
                body = await response.read()
                raise error_from_response(status, response.headers, body)
            content_type = _content_type(response.headers)
            if content_type is not None and content_type.lower().startswith("text/html"):
                raise not_an_answer_error(status, content_type, await response.read())
            return await self._read_stream(response, started)

    async def _read_stream(self, response: WireResponse, started: float) -> Answer:
        state = _StreamState()
        clock = self._clock
        status = response.status
        buffer = b""
        stray = b""  # the head of what was not an SSE event, for the error message
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
                elif line and len(stray) < _BODY_PREVIEW_BYTES and not line.startswith(b":"):
                    stray += line + b" "
        ended = clock()
        if buffer.startswith(b"data:"):
            state.feed(buffer[5:].strip(), ended)
        elif len(stray) < _BODY_PREVIEW_BYTES:
            stray += buffer[:_BODY_PREVIEW_BYTES]
        if not state.done:
            if state.chunks == 0 and stray.strip():
                raise not_an_answer_error(status, _content_type(response.headers), stray)
            raise truncated_stream_error(f"stream ended after {state.chunks} chunks without [DONE]")
        itl = None
        if state.token_chunks > 1 and state.first_any is not None and state.last_token is not None:
            itl = (state.last_token - state.first_any) / (state.token_chunks - 1)
        return Answer(
            status=status,
            response_id=state.response_id,
            usage=state.usage,
            latency_s=ended - started,
            ttft_s=None if state.first_any is None else state.first_any - started,
            ttfo_s=None if state.first_output is None else state.first_output - started,
            itl_s=itl,
            chunks=state.chunks,
            **_answer_parts(state.built()),
            token_chunks=state.token_chunks,
            generating_s=(
                state.last_token - state.first_any
                if state.first_any is not None and state.last_token is not None
                else None
            ),
        )


def _content_type(headers: Mapping[str, str] | None) -> str | None:
    # Plain dicts are case-sensitive; httpx and aiohttp headers are not. Scan so both work.
    for name, value in (headers or {}).items():
        if name.lower() == "content-type":
            return value
    return None
