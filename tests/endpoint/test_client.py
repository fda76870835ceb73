from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Callable

import httpx
import orjson
import pytest

from batchrunner.endpoint.client import ChatClient
from batchrunner.endpoint.wire import HttpxWire
from batchrunner.errors import AuthError, RequestError
from batchrunner.results import RequestSpec
from tests.conftest import RotatingAuth

pytestmark = pytest.mark.anyio

URL = "http://127.0.0.1:1/v1/projects/p/locations/global/endpoints/openapi/chat/completions"
GEMINI = {
    "choices": [
        {
            "finish_reason": "stop",
            "index": 0,
            "logprobs": None,
            "message": {"content": "Canberra.", "role": "assistant"},
        }
    ],
    "created": 1772141949,
    "id": "fb2gafiLBIK9odAP1tGMmQc",
    "model": "google/gemini-2.5-flash",
    "object": "chat.completion",
    "system_fingerprint": "",
    "usage": {"completion_tokens": 3, "prompt_tokens": 9, "total_tokens": 12},
}


def _spec(stream: bool = False) -> RequestSpec:
    body = {"model": "google/gemini-2.5-flash", "messages": [{"role": "user", "content": "q"}]}
    return RequestSpec(0, "a", "google/gemini-2.5-flash", orjson.dumps(body), 5, None, stream)


def _client(
    handler: Callable[[httpx.Request], httpx.Response],
    auth: RotatingAuth | None = None,
    **kwargs: object,
) -> ChatClient:
    wire = HttpxWire(httpx.MockTransport(handler))
    return ChatClient(wire, URL, auth or RotatingAuth(), **kwargs)  # type: ignore[arg-type]


async def test_json_answer_is_parsed_and_sent_with_the_bearer_token() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json=GEMINI)

    answer = await _client(handler).send(_spec())
    assert answer.content == "Canberra."
    assert answer.finish_reason == "stop"
    assert answer.response_id == GEMINI["id"]
    assert answer.usage == GEMINI["usage"]
    assert seen[0].headers["authorization"] == "Bearer tok-0"
    assert orjson.loads(seen[0].content)["model"] == "google/gemini-2.5-flash"


async def test_missing_message_and_usage_do_not_crash() -> None:
    body = {"choices": [{"finish_reason": "length", "index": 0}], "id": "x"}
    answer = await _client(lambda r: httpx.Response(200, json=body)).send(_spec())
    assert answer.content is None and answer.usage is None
    assert answer.finish_reason == "length"


async def test_gpt_oss_reasoning_field_is_read_under_either_name() -> None:
    for field in ("reasoning_content", "reasoning"):
        body = {"choices": [{"message": {"content": "4", field: "2+2 is 4"}}], "id": "c"}
        answer = await _client(lambda r, b=body: httpx.Response(200, json=b)).send(_spec())
        assert answer.reasoning == "2+2 is 4" and answer.content == "4"


@pytest.mark.parametrize("wrap", [lambda e: [e], lambda e: e])
async def test_google_429_in_either_envelope_is_a_retryable_rate_limit(
    wrap: Callable[[object], object],
) -> None:
    envelope = {
        "error": {
            "code": 429,
            "message": "Resource exhausted. Please try again later.",
            "status": "RESOURCE_EXHAUSTED",
        }
    }
    client = _client(lambda r: httpx.Response(429, json=wrap(envelope)))
    with pytest.raises(RequestError) as info:
        await client.send(_spec())
    assert info.value.status == 429 and info.value.retryable
    assert "Resource exhausted" in info.value.message


async def test_401_refreshes_once_and_retries_with_the_new_token() -> None:
    auth = RotatingAuth()
    tokens: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        tokens.append(request.headers["authorization"])
        if request.headers["authorization"] == "Bearer tok-0":
            return httpx.Response(
                401,
                json=[{"error": {"code": 401, "status": "UNAUTHENTICATED", "message": "expired"}}],
            )
        return httpx.Response(200, json=GEMINI)

    answer = await _client(handler, auth).send(_spec())
    assert answer.content == "Canberra."
    assert tokens == ["Bearer tok-0", "Bearer tok-1"]
    assert auth.refreshes == 1


async def test_two_revocations_in_a_row_are_survived_with_a_third_token() -> None:
    auth = RotatingAuth()
    tokens: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        tokens.append(request.headers["authorization"])
        if request.headers["authorization"] in ("Bearer tok-0", "Bearer tok-1"):
            return httpx.Response(401, json={"error": {"code": 401}})
        return httpx.Response(200, json=GEMINI)

    answer = await _client(handler, auth).send(_spec())
    assert answer.content == "Canberra."
    assert tokens == ["Bearer tok-0", "Bearer tok-1", "Bearer tok-2"]


async def test_401s_on_every_fresh_token_end_in_an_auth_failure_without_the_token() -> None:
    client = _client(lambda r: httpx.Response(401, json={"error": {"code": 401}}))
    with pytest.raises(AuthError) as info:
        await client.send(_spec())
    assert "tok-" not in str(info.value)


def _sse(events: list[object], done: bool = True) -> bytes:
    out = b"".join(b"data: " + orjson.dumps(e) + b"\n\n" for e in events)
    return out + (b"data: [DONE]\n\n" if done else b"")


def _chunk(delta: dict[str, object], **extra: object) -> dict[str, object]:
    return {
        "id": "sid",
        "choices": [{"delta": delta, "index": 0, **extra}],
        "object": "chat.completion.chunk",
    }


async def test_stream_times_first_token_first_output_and_inter_token_gaps() -> None:
    events = [
        _chunk({"role": "assistant", "reasoning_content": "think"}),
        _chunk({"role": "assistant", "content": "Hel"}),
        _chunk({"role": "assistant", "content": "lo"}, finish_reason="stop"),
        {
            "id": "sid",
            "choices": [],
            "usage": {"prompt_tokens": 4, "completion_tokens": 9, "total_tokens": 13},
        },
    ]
    pieces = [b"data: " + orjson.dumps(e) + b"\n\n" for e in events] + [b"data: [DONE]\n\n"]

    class Body(httpx.AsyncByteStream):
        async def __aiter__(self) -> AsyncIterator[bytes]:
            for piece in pieces:
                yield piece

    ticks = itertools.count()
    clock = lambda: float(next(ticks))  # noqa: E731  each read is one second later
    client = _client(lambda r: httpx.Response(200, stream=Body()), clock=clock)
    answer = await client.send(_spec(stream=True))
    assert answer.content == "Hello" and answer.reasoning == "think"
    assert answer.finish_reason == "stop"
    assert answer.usage == {"prompt_tokens": 4, "completion_tokens": 9, "total_tokens": 13}
    assert answer.response_id == "sid"
    # clock: 0 = sent, 1..5 = the five pieces, 6 = end of stream
    assert answer.ttft_s == 1.0
    assert answer.ttfo_s == 2.0
    assert answer.itl_s == 1.0
    assert answer.latency_s == 6.0


async def test_stream_without_done_is_a_retryable_truncation() -> None:
    body = _sse([_chunk({"content": "Hel"})], done=False)
    client = _client(lambda r: httpx.Response(200, content=body))
    with pytest.raises(RequestError) as info:
        await client.send(_spec(stream=True))
    assert info.value.error_type == "truncated_stream" and info.value.retryable


async def test_non_json_200_body_is_retryable() -> None:
    client = _client(lambda r: httpx.Response(200, content=b'{"choices": [{"mess'))
    with pytest.raises(RequestError) as info:
        await client.send(_spec())
    assert info.value.retryable


async def test_connection_error_is_retryable() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    with pytest.raises(RequestError) as info:
        await _client(handler).send(_spec())
    assert info.value.retryable and info.value.error_type == "connection"
