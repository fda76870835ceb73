from __future__ import annotations

from typing import Any

import orjson
import pytest

from batchrunner.config import InputFields, RequestDefaults
from batchrunner.input.bodies import RowProblem, build_requests
from batchrunner.input.readers import InputRow


def _row(record: dict[str, Any]) -> InputRow:
    return InputRow(3, str(record.get("id", "row-3")), record, "in.jsonl line 4")


def _bodies(record: dict[str, Any], **kwargs: Any) -> list[dict[str, Any]]:
    kwargs.setdefault("fields", InputFields())
    kwargs.setdefault("models", ())
    kwargs.setdefault("default_model", "google/gemini-2.5-flash")
    kwargs.setdefault("defaults", RequestDefaults())
    return [orjson.loads(s.body) for s in build_requests(_row(record), **kwargs)]


def test_prompt_becomes_a_user_message_with_the_default_model() -> None:
    (body,) = _bodies({"id": "a", "prompt": "hello"})
    assert body == {
        "model": "google/gemini-2.5-flash",
        "messages": [{"role": "user", "content": "hello"}],
    }


def test_row_parameters_win_over_run_defaults_and_metadata_is_not_sent() -> None:
    defaults = RequestDefaults(params={"max_tokens": 100, "temperature": 1.0})
    (body,) = _bodies(
        {"prompt": "x", "max_tokens": 7, "task": "label", "params": {"seed": 3}},
        defaults=defaults,
    )
    assert body["max_tokens"] == 7
    assert body["temperature"] == 1.0
    assert body["seed"] == 3
    assert "task" not in body and "params" not in body


def test_system_prompt_is_prepended_unless_the_row_has_one() -> None:
    defaults = RequestDefaults(system="be brief")
    (body,) = _bodies({"prompt": "x"}, defaults=defaults)
    assert body["messages"][0] == {"role": "system", "content": "be brief"}
    (body,) = _bodies({"prompt": "x", "system": "row system"}, defaults=defaults)
    assert body["messages"][0]["content"] == "row system"
    msgs = [{"role": "system", "content": "own"}, {"role": "user", "content": "q"}]
    (body,) = _bodies({"messages": msgs}, defaults=defaults)
    assert body["messages"] == msgs


def test_google_extensions_go_under_nested_extra_body() -> None:
    defaults = RequestDefaults(google={"thinking_config": {"thinking_budget": 0}})
    (body,) = _bodies({"prompt": "x", "google": {"thought_tag_marker": "think"}}, defaults=defaults)
    assert "google" not in body
    assert body["extra_body"] == {
        "google": {"thinking_config": {"thinking_budget": 0}, "thought_tag_marker": "think"}
    }


def test_tools_and_response_format_pass_through_untouched() -> None:
    tools = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]
    (body,) = _bodies({"prompt": "x", "tools": tools, "response_format": '{"type": "json_object"}'})
    assert body["tools"] == tools
    assert body["response_format"] == {"type": "json_object"}


def test_parquet_nulls_are_not_sent() -> None:
    (body,) = _bodies({"prompt": "x", "max_tokens": None, "messages": None, "params": None})
    assert "max_tokens" not in body


def test_every_model_flag_fans_a_row_out() -> None:
    specs = build_requests(
        _row({"id": "a", "prompt": "x", "model": "ignored"}),
        fields=InputFields(),
        models=("google/gemini-2.5-flash", "openai/gpt-oss-120b-maas"),
        default_model="d",
        defaults=RequestDefaults(),
    )
    assert [s.model for s in specs] == ["google/gemini-2.5-flash", "openai/gpt-oss-120b-maas"]
    assert {s.id for s in specs} == {"a"}


def test_row_model_is_used_when_no_model_flag() -> None:
    (body,) = _bodies({"prompt": "x", "model": "openai/gpt-oss-20b-maas"})
    assert body["model"] == "openai/gpt-oss-20b-maas"


def test_streaming_asks_for_usage() -> None:
    (body,) = _bodies({"prompt": "x"}, defaults=RequestDefaults(stream=True))
    assert body["stream"] is True
    assert body["stream_options"] == {"include_usage": True}


def test_estimate_and_output_cap_are_recorded() -> None:
    (spec,) = build_requests(
        _row({"prompt": "a" * 400, "max_completion_tokens": 50}),
        fields=InputFields(),
        models=(),
        default_model="m",
        defaults=RequestDefaults(),
    )
    assert 100 <= spec.input_tokens <= 110
    assert spec.max_output_tokens == 50


@pytest.mark.parametrize(
    ("record", "problem"),
    [
        ({"id": "a"}, "neither 'prompt' nor 'messages'"),
        ({"prompt": ""}, "neither"),
        ({"prompt": 5}, "'prompt' must be a string"),
        ({"messages": "hello"}, "not a JSON list"),
        ({"messages": {"role": "user"}}, "non-empty list"),
        ({"messages": [{"role": "robot", "content": "x"}]}, "invalid role"),
        ({"messages": ["x"]}, "must be an object"),
        ({"prompt": "x", "params": [1]}, "'params' must be an object"),
        ({"prompt": "x", "model": 3}, "'model' must be a non-empty string"),
    ],
)
def test_unusable_rows_raise_a_problem_naming_the_field(
    record: dict[str, Any], problem: str
) -> None:
    with pytest.raises(RowProblem, match=problem):
        _bodies(record)
