"""Prediction lines read back: tool calls and finish reasons as the online route writes them."""

from __future__ import annotations

import orjson

from batchrunner.batch.predictions import answered_row, parse_prediction
from batchrunner.stats.pricing import PriceTable


def _row(line: dict[str, object], gemini: bool) -> dict[str, object]:
    prediction = parse_prediction(orjson.dumps(line), gemini)
    result = answered_row(
        prediction,
        id="a",
        model="google/gemini-2.5-flash" if gemini else "openai/gpt-oss-120b-maas",
        row=0,
        job="projects/p/locations/us-central1/batchPredictionJobs/1",
        attempts=1,
        prices=PriceTable.default(),
        started_at=None,
        finished_at=None,
    )
    return result.to_dict()


def test_a_gemini_function_call_becomes_the_tool_calls_column() -> None:
    line = {
        "key": "a",
        "response": {
            "candidates": [
                {
                    "content": {
                        "role": "model",
                        "parts": [
                            {"functionCall": {"name": "get_weather", "args": {"city": "Oslo"}}},
                            {"functionCall": {"name": "get_time", "args": {}}},
                        ],
                    },
                    "finishReason": "STOP",
                }
            ],
            "usageMetadata": {"promptTokenCount": 9, "candidatesTokenCount": 7},
        },
    }
    row = _row(line, gemini=True)
    assert row["status"] == "ok" and row["output"] is None
    assert orjson.loads(str(row["tool_calls"])) == [
        {"id": None, "name": "get_weather", "arguments": '{"city":"Oslo"}'},
        {"id": None, "name": "get_time", "arguments": "{}"},
    ]
    assert row["finish_reason"] == "tool_calls" and row["finish_reason_raw"] == "STOP"


def test_a_gemini_safety_block_keeps_its_raw_reason() -> None:
    line = {
        "key": "a",
        "response": {
            "candidates": [{"content": {"role": "model"}, "finishReason": "SAFETY"}],
            "usageMetadata": {"promptTokenCount": 9},
        },
    }
    row = _row(line, gemini=True)
    assert (row["finish_reason"], row["finish_reason_raw"]) == ("content_filter", "SAFETY")
    assert row["tool_calls"] is None


def test_gpt_oss_tool_calls_keep_their_arguments_as_sent() -> None:
    call = {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{bad"}}
    body = {
        "id": "chatcmpl-1",
        "model": "openai/gpt-oss-120b-maas",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": None, "tool_calls": [call]},
                "finish_reason": "tool_calls",
            }
        ],
        "usage": {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8},
    }
    line = {"custom_id": "a", "response": {"status_code": 200, "body": body}}
    row = _row(line, gemini=False)
    assert orjson.loads(str(row["tool_calls"])) == [
        {"id": "c1", "name": "f", "arguments": "{bad", "valid_json": False}
    ]
    assert row["finish_reason"] == "tool_calls" and row["finish_reason_raw"] is None
