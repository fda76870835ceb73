"""Each model family is sent only the parameters it understands; contradictions stop a row."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from batchrunner.config import InputFields, RequestDefaults
from batchrunner.input.bodies import RowProblem, build_requests
from batchrunner.input.readers import InputRow

GEMINI = "google/gemini-2.5-flash"
GPT_OSS = "openai/gpt-oss-120b-maas"


def _bodies(record: dict[str, Any], defaults: RequestDefaults) -> dict[str, dict[str, Any]]:
    row = InputRow(3, "r", record, "in.jsonl line 4")
    specs = build_requests(
        row, fields=InputFields(), models=(GEMINI, GPT_OSS), default_model=GEMINI, defaults=defaults
    )
    return {spec.model: orjson.loads(spec.body) for spec in specs}


def test_run_wide_google_extras_and_thinking_config_go_to_gemini_only() -> None:
    defaults = RequestDefaults(
        google={"thinking_config": {"thinking_budget": 0}, "safety_settings": []}
    )
    bodies = _bodies({"prompt": "hi", "reasoning_effort": "high"}, RequestDefaults())
    assert bodies[GPT_OSS]["reasoning_effort"] == "high"  # a value gpt-oss knows is kept
    bodies = _bodies({"prompt": "hi"}, defaults)
    assert bodies[GEMINI]["extra_body"] == {
        "google": {"thinking_config": {"thinking_budget": 0}, "safety_settings": []}
    }
    assert "extra_body" not in bodies[GPT_OSS]


@pytest.mark.parametrize("effort", ["minimal", "none"])
def test_gemini_only_reasoning_efforts_are_not_sent_to_gpt_oss(effort: str) -> None:
    bodies = _bodies({"prompt": "hi", "reasoning_effort": effort}, RequestDefaults())
    assert bodies[GEMINI]["reasoning_effort"] == effort
    assert "reasoning_effort" not in bodies[GPT_OSS]


def test_a_rows_own_thinking_config_is_not_sent_to_gpt_oss_but_its_other_extras_are() -> None:
    record = {
        "prompt": "hi",
        "google": {"thinking_config": {"thinking_budget": 64}, "labels": {"a": "b"}},
    }
    bodies = _bodies(record, RequestDefaults())
    assert bodies[GEMINI]["extra_body"]["google"]["thinking_config"] == {"thinking_budget": 64}
    assert bodies[GPT_OSS]["extra_body"] == {"google": {"labels": {"a": "b"}}}
    top = _bodies(
        {"prompt": "hi", "params": {"thinking_config": {"thinking_budget": 1}}}, RequestDefaults()
    )
    assert "thinking_config" not in top[GPT_OSS] and "thinking_config" in top[GEMINI]


@pytest.mark.parametrize(
    "record",
    [
        {
            "prompt": "hi",
            "reasoning_effort": "low",
            "google": {"thinking_config": {"thinking_budget": 0}},
        },
        {"prompt": "hi", "params": {"reasoning_effort": "low", "thinking_config": {}}},
        {
            "prompt": "hi",
            "extra_body": {"google": {"thinkingConfig": {}}},
            "reasoning_effort": "high",
        },
    ],
)
def test_reasoning_effort_with_a_thinking_config_is_one_problem_naming_both(
    record: dict[str, Any],
) -> None:
    with pytest.raises(RowProblem) as caught:
        _bodies(record, RequestDefaults())
    message = str(caught.value)
    assert "reasoning_effort" in message and "hinking" in message and GEMINI in message


def test_a_run_wide_thinking_config_conflicts_with_a_rows_effort_only_for_gemini() -> None:
    defaults = RequestDefaults(google={"thinking_config": {"thinking_budget": 0}})
    with pytest.raises(RowProblem, match="reasoning_effort"):
        _bodies({"prompt": "hi", "reasoning_effort": "low"}, defaults)


def test_the_requested_number_of_candidates_is_recorded() -> None:
    row = InputRow(0, "r", {"prompt": "hi", "n": 3}, "in.jsonl line 1")
    (spec,) = build_requests(
        row, fields=InputFields(), models=(), default_model=GEMINI, defaults=RequestDefaults()
    )
    assert spec.candidates == 3
