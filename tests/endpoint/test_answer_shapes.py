"""The exact byte shapes real Vertex traffic sends, read by the client as a user expects.

Each answer is served by ``httpx.MockTransport`` byte for byte: streamed tool calls (OpenAI
fragments, Gemini's index-less whole calls, parallel calls that repeat an id), messages with
text and calls, several candidates, error events inside a stream, proxy pages with status
200, blocks, and the compression a stream must not ask for.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx
import orjson
import pytest

from batchrunner.endpoint.candidates import (
    FINISH_REASONS,
    ToolCall,
    normalize_finish_reason,
    tool_calls_json,
)
from batchrunner.endpoint.client import Answer, ChatClient
from batchrunner.endpoint.wire import HttpxWire
from batchrunner.errors import RequestError
from batchrunner.results import RequestSpec
from tests.conftest import RotatingAuth

pytestmark = pytest.mark.anyio

URL = "http://127.0.0.1:1/v1/projects/p/locations/global/endpoints/openapi/chat/completions"


def _spec(stream: bool) -> RequestSpec:
    body = {"model": "m", "messages": [{"role": "user", "content": "q"}]}
    return RequestSpec(0, "a", "m", orjson.dumps(body), 5, None, stream)


def _sse(*events: object, done: bool = True) -> bytes:
    lines = [b"data: " + orjson.dumps(e) + b"\n\n" for e in events]
    if done:
        lines.append(b"data: [DONE]\n\n")
    return b"".join(lines)


def _chunk(*choices: dict[str, Any], usage: dict[str, int] | None = None) -> dict[str, Any]:
    chunk: dict[str, Any] = {
        "id": "r1",
        "object": "chat.completion.chunk",
        "choices": list(choices),
    }
    if usage is not None:
        chunk["usage"] = usage
    return chunk


def _client(handler: Callable[[httpx.Request], httpx.Response]) -> ChatClient:
    return ChatClient(HttpxWire(httpx.MockTransport(handler)), URL, RotatingAuth())  # type: ignore[arg-type]


def _serving(body: bytes, content_type: str = "text/event-stream", status: int = 200) -> ChatClient:
    return _client(
        lambda _: httpx.Response(status, content=body, headers={"content-type": content_type})
    )


async def _streamed(*events: object, done: bool = True) -> Answer:
    return await _serving(_sse(*events, done=done)).send(_spec(True))


def _calls(answer: Answer) -> list[dict[str, Any]]:
    text = tool_calls_json(answer.tool_calls)
    assert text is not None
    calls: list[dict[str, Any]] = json.loads(text)
    return calls


# -- tool calls ----------------------------------------------------------------------------


async def test_openai_fragments_are_joined_per_index_into_complete_calls() -> None:
    # vLLM / gpt-oss: first delta has id and name, later ones only index and more arguments.
    answer = await _streamed(
        _chunk({"index": 0, "delta": {"role": "assistant", "content": None}}),
        _chunk(
            {
                "index": 0,
                "delta": {
                    "tool_calls": [
                        {
                            "index": 0,
                            "id": "call_a",
                            "type": "function",
                            "function": {"name": "get_weather", "arguments": ""},
                        }
                    ]
                },
            }
        ),
        _chunk(
            {
                "index": 0,
                "delta": {"tool_calls": [{"index": 0, "function": {"arguments": '{"city": "Pa'}}]},
            }
        ),
        _chunk(
            {
                "index": 0,
                "delta": {
                    "tool_calls": [
                        {
                            "index": 1,
                            "id": "call_b",
                            "type": "function",
                            "function": {"name": "get_time", "arguments": "{}"},
                        }
                    ]
                },
            }
        ),
        _chunk(
            {
                "index": 0,
                "delta": {
                    "tool_calls": [
                        {"index": 0, "function": {"arguments": 'ris", "unit": "celsius"}'}}
                    ]
                },
            }
        ),
        _chunk({"index": 0, "delta": {}, "finish_reason": "tool_calls"}),
    )
    assert _calls(answer) == [
        {
            "id": "call_a",
            "name": "get_weather",
            "arguments": '{"city": "Paris", "unit": "celsius"}',
        },
        {"id": "call_b", "name": "get_time", "arguments": "{}"},
    ]
    assert json.loads(_calls(answer)[0]["arguments"]) == {"city": "Paris", "unit": "celsius"}
    assert answer.content is None
    assert (answer.finish_reason, answer.finish_reason_raw) == ("tool_calls", None)
    assert answer.ttfo_s is not None  # a tool call is output


async def test_gemini_index_less_whole_calls_are_separate_calls_even_with_one_id() -> None:
    # Gemini: each call whole in one chunk, no index, parallel calls repeating one id, and
    # the answer ending with "stop".
    answer = await _streamed(
        _chunk({"index": 0, "delta": {"role": "assistant", "content": "Checking both."}}),
        _chunk(
            {
                "index": 0,
                "delta": {
                    "tool_calls": [
                        {
                            "id": "function-call-1",
                            "type": "function",
                            "function": {
                                "name": "get_weather",
                                "arguments": '{"city":"Paris","unit":"celsius"}',
                            },
                        }
                    ]
                },
            }
        ),
        _chunk(
            {
                "index": 0,
                "delta": {
                    "tool_calls": [
                        {
                            "id": "function-call-1",
                            "type": "function",
                            "function": {
                                "name": "get_weather",
                                "arguments": '{"city":"Rome","unit":"celsius"}',
                            },
                        }
                    ]
                },
                "finish_reason": "stop",
            }
        ),
    )
    calls = _calls(answer)
    assert [json.loads(c["arguments"])["city"] for c in calls] == ["Paris", "Rome"]
    assert [c["id"] for c in calls] == ["function-call-1", "function-call-1"]
    assert answer.content == "Checking both."  # text and calls together
    assert (answer.finish_reason, answer.finish_reason_raw) == ("tool_calls", "stop")


async def test_two_index_less_calls_in_one_chunk_are_two_calls() -> None:
    answer = await _streamed(
        _chunk(
            {
                "index": 0,
                "delta": {
                    "tool_calls": [
                        {"id": "x", "function": {"name": "a", "arguments": '{"k":1}'}},
                        {"id": "x", "function": {"name": "b", "arguments": '{"k":2}'}},
                    ]
                },
                "finish_reason": "stop",
            }
        ),
    )
    assert [(c["name"], c["arguments"]) for c in _calls(answer)] == [
        ("a", '{"k":1}'),
        ("b", '{"k":2}'),
    ]


async def test_a_call_numbered_like_the_previous_one_but_with_its_own_id_is_not_glued() -> None:
    answer = await _streamed(
        _chunk(
            {
                "index": 0,
                "delta": {
                    "tool_calls": [
                        {"index": 0, "id": "c1", "function": {"name": "a", "arguments": '{"k":1}'}}
                    ]
                },
            }
        ),
        _chunk(
            {
                "index": 0,
                "delta": {
                    "tool_calls": [
                        {"index": 0, "id": "c2", "function": {"name": "b", "arguments": '{"k":2}'}}
                    ]
                },
            }
        ),
        _chunk({"index": 0, "delta": {}, "finish_reason": "tool_calls"}),
    )
    assert [(c["id"], c["arguments"]) for c in _calls(answer)] == [
        ("c1", '{"k":1}'),
        ("c2", '{"k":2}'),
    ]


async def test_arguments_that_are_not_json_are_kept_as_sent_and_flagged() -> None:
    answer = await _streamed(
        _chunk(
            {
                "index": 0,
                "delta": {
                    "tool_calls": [
                        {
                            "index": 0,
                            "id": "c1",
                            "function": {"name": "a", "arguments": '{"city": "Par'},
                        }
                    ]
                },
            }
        ),
        _chunk(
            {
                "index": 0,
                "delta": {
                    "tool_calls": [
                        {
                            "index": 1,
                            "id": "c2",
                            "function": {"name": "b", "arguments": '{"ok": true}'},
                        }
                    ]
                },
            }
        ),
        _chunk({"index": 0, "delta": {}, "finish_reason": "tool_calls"}),
    )
    assert _calls(answer) == [
        {"id": "c1", "name": "a", "arguments": '{"city": "Par', "valid_json": False},
        {"id": "c2", "name": "b", "arguments": '{"ok": true}'},
    ]


async def test_a_non_streamed_message_keeps_its_text_and_its_tool_calls() -> None:
    body = {
        "id": "r1",
        "choices": [
            {
                "index": 0,
                "finish_reason": "tool_calls",
                "message": {
                    "role": "assistant",
                    "content": "Let me look that up.",
                    "tool_calls": [
                        {
                            "id": "c1",
                            "type": "function",
                            "function": {"name": "get_weather", "arguments": '{"city":"Oslo"}'},
                        },
                        {
                            "id": "c2",
                            "type": "function",
                            "function": {"name": "get_time", "arguments": {"tz": "CET"}},
                        },
                    ],
                },
            }
        ],
        "usage": {"prompt_tokens": 5, "completion_tokens": 9, "total_tokens": 14},
    }
    answer = await _serving(orjson.dumps(body), "application/json").send(_spec(False))
    assert answer.content == "Let me look that up."
    assert _calls(answer) == [
        {"id": "c1", "name": "get_weather", "arguments": '{"city":"Oslo"}'},
        {"id": "c2", "name": "get_time", "arguments": '{"tz":"CET"}'},  # an object, as JSON text
    ]
    assert answer.finish_reason == "tool_calls"


# -- several candidates --------------------------------------------------------------------


async def test_interleaved_streamed_candidates_stay_apart_in_index_order() -> None:
    answer = await _streamed(
        _chunk({"index": 1, "delta": {"content": "Second "}}),
        _chunk({"index": 0, "delta": {"content": "First "}}),
        _chunk({"index": 1, "delta": {"content": "two."}, "finish_reason": "length"}),
        _chunk({"index": 0, "delta": {"content": "one."}, "finish_reason": "stop"}),
        _chunk(usage={"prompt_tokens": 3, "completion_tokens": 8, "total_tokens": 11}),
    )
    assert answer.content == "First one."
    assert answer.choices == ("First one.", "Second two.")
    assert answer.finish_reason == "stop"
    assert answer.usage == {"prompt_tokens": 3, "completion_tokens": 8, "total_tokens": 11}


async def test_non_streamed_candidates_are_read_in_index_order() -> None:
    body = {
        "choices": [
            {"index": 1, "finish_reason": "stop", "message": {"content": "B"}},
            {"index": 0, "finish_reason": "stop", "message": {"content": "A"}},
        ]
    }
    answer = await _serving(orjson.dumps(body), "application/json").send(_spec(False))
    assert (answer.content, answer.choices) == ("A", ("A", "B"))


# -- errors inside a 200 and pages that are not answers ------------------------------------


@pytest.mark.parametrize("array", [False, True])
@pytest.mark.parametrize(
    ("code", "status", "error_type", "retryable"),
    [
        (429, "RESOURCE_EXHAUSTED", "rate_limited", True),
        (503, "UNAVAILABLE", "server_error", True),
        (400, "INVALID_ARGUMENT", "bad_request", False),
    ],
)
async def test_an_error_event_inside_a_stream_is_classified_like_the_same_status_outside(
    array: bool, code: int, status: str, error_type: str, retryable: bool
) -> None:
    envelope: object = {"error": {"code": code, "message": "Resource exhausted.", "status": status}}
    event = [envelope] if array else envelope
    body = _sse(_chunk({"index": 0, "delta": {"content": "Partial text"}}), event, done=False)
    with pytest.raises(RequestError) as caught:
        await _serving(body).send(_spec(True))
    assert (caught.value.status, caught.value.error_type) == (code, error_type)
    assert caught.value.retryable is retryable
    assert "Partial text" not in caught.value.message


PAGE = (
    b"<!DOCTYPE html><html lang=en><meta charset=utf-8><title>Error 502 (Server Error)!!1"
    b"</title><p><b>502.</b> <ins>That\xe2\x80\x99s an error.</ins><p>The server encountered a "
    b"temporary error. Bearer ya29.secret-token-value</html>"
)


@pytest.mark.parametrize("stream", [False, True])
async def test_a_200_html_page_is_a_retryable_fault_naming_its_first_bytes(stream: bool) -> None:
    with pytest.raises(RequestError) as caught:
        await _serving(PAGE, "text/html; charset=UTF-8").send(_spec(stream))
    error = caught.value
    assert (error.status, error.error_type, error.retryable) == (200, "bad_response", True)
    assert "not a chat completion (text/html)" in error.message
    assert "Error 502 (Server Error)" in error.message
    assert "ya29" not in error.message and "<title>" not in error.message


async def test_a_stream_of_plain_text_without_events_names_what_came() -> None:
    with pytest.raises(RequestError) as caught:
        await _serving(
            b"upstream connect error or disconnect/reset before headers\n", "text/plain"
        ).send(_spec(True))
    assert caught.value.error_type == "bad_response" and caught.value.retryable
    assert "upstream connect error" in caught.value.message


async def test_a_json_200_that_is_not_a_completion_is_retryable() -> None:
    with pytest.raises(RequestError) as caught:
        await _serving(b'{"kind": "something else"}', "application/json").send(_spec(False))
    assert caught.value.error_type == "bad_response" and caught.value.retryable


# -- blocks and the finish-reason vocabulary -----------------------------------------------


@pytest.mark.parametrize("raw", ["SAFETY", "RECITATION", "PROHIBITED_CONTENT", "SPII", "BLOCKLIST"])
async def test_a_raw_gemini_block_is_content_filter_with_the_raw_value_kept(raw: str) -> None:
    answer = await _streamed(
        _chunk({"index": 0, "delta": {"role": "assistant"}, "finish_reason": raw})
    )
    assert (answer.content, answer.finish_reason, answer.finish_reason_raw) == (
        None,
        "content_filter",
        raw,
    )


@pytest.mark.parametrize("stream", [False, True])
async def test_an_answer_with_no_candidates_is_a_content_filter_block(stream: bool) -> None:
    usage = {"prompt_tokens": 7, "completion_tokens": 0, "total_tokens": 7}
    if stream:
        body = _sse({"id": "r", "choices": [], "usage": usage})
    else:
        body = orjson.dumps({"id": "r", "choices": [], "usage": usage})
    answer = await _serving(body, "text/event-stream" if stream else "application/json").send(
        _spec(stream)
    )
    assert (answer.content, answer.finish_reason, answer.choices) == (None, "content_filter", ())


def test_finish_reasons_normalise_to_one_vocabulary() -> None:
    cases = {
        "stop": "stop",
        "STOP": "stop",
        "length": "length",
        "MAX_TOKENS": "length",
        "tool_calls": "tool_calls",
        "function_call": "tool_calls",
        "content_filter": "content_filter",
        "SAFETY": "content_filter",
        "IMAGE_SAFETY": "content_filter",
    }
    for raw, normalized in cases.items():
        assert normalize_finish_reason(raw) == normalized
        assert normalized in FINISH_REASONS
    assert normalize_finish_reason("MALFORMED_FUNCTION_CALL") is None
    assert normalize_finish_reason(None) is None
    assert normalize_finish_reason("stop", has_tool_calls=True) == "tool_calls"
    assert normalize_finish_reason("length", has_tool_calls=True) == "length"


def test_no_calls_is_no_column_and_a_call_keeps_its_arguments_as_sent() -> None:
    assert tool_calls_json(()) is None
    text = tool_calls_json((ToolCall("c", "f", '{ "a" : 1 }'),))
    assert text is not None and json.loads(text) == [
        {"id": "c", "name": "f", "arguments": '{ "a" : 1 }'}
    ]


# -- compression ---------------------------------------------------------------------------


async def test_a_stream_asks_for_no_compression_and_a_plain_request_still_does() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if b'"stream"' in request.content or request.headers.get("accept") == "text/event-stream":
            return httpx.Response(
                200, content=_sse(_chunk({"index": 0, "delta": {"content": "hi"}}))
            )
        return httpx.Response(200, json={"choices": [{"index": 0, "message": {"content": "hi"}}]})

    client = _client(handler)
    await client.send(_spec(True))
    await client.send(_spec(False))
    streamed, plain = seen
    assert streamed.headers["accept-encoding"] == "identity"
    assert "gzip" not in streamed.headers["accept-encoding"]
    assert "gzip" in plain.headers["accept-encoding"]
