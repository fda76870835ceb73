"""Normalizing Gemini and vLLM usage objects to one convention."""

from __future__ import annotations

import random
from typing import Any

import pytest

from batchrunner.config import model_family
from batchrunner.endpoint.usage import normalize_usage
from batchrunner.results import Usage

GEMINI_RAW: dict[str, Any] = {
    "completion_tokens": 566,
    "completion_tokens_details": {"reasoning_tokens": 946},
    "extra_properties": {"google": {"traffic_type": "ON_DEMAND"}},
    "prompt_tokens": 9,
    "total_tokens": 1521,
}


@pytest.mark.parametrize(
    ("model", "family"),
    [
        ("google/gemini-2.5-flash", "gemini"),
        ("gemini-2.0-flash-001", "gemini"),
        ("GOOGLE/Gemini-3-Pro-Preview", "gemini"),
        ("openai/gpt-oss-120b-maas", "vllm"),
        ("gpt-oss-20b-maas", "vllm"),
        ("meta/llama-3.1-8b-instruct-maas", "vllm"),
    ],
)
def test_model_family_from_publisher_or_name(model: str, family: str) -> None:
    assert model_family(model) == family


def test_gemini_completion_gains_the_reasoning_it_excludes() -> None:
    raw = GEMINI_RAW
    reasoning = raw["completion_tokens_details"]["reasoning_tokens"]
    usage = normalize_usage("google/gemini-3.1-pro-preview", raw)
    assert usage.completion_tokens == raw["completion_tokens"] + reasoning
    assert usage.reasoning_tokens == reasoning
    assert usage.prompt_tokens == raw["prompt_tokens"]
    assert usage.total_tokens == raw["total_tokens"]
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    assert usage.traffic_type == "ON_DEMAND"


def test_vllm_completion_already_includes_reasoning() -> None:
    prompt, completion, reasoning = 120, 800, 650
    raw = {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "completion_tokens_details": {"reasoning_tokens": reasoning},
        "total_tokens": prompt + completion,
    }
    usage = normalize_usage("openai/gpt-oss-120b-maas", raw)
    assert usage == Usage(prompt, completion, reasoning, None, prompt + completion, None)


def test_old_vllm_without_details_leaves_reasoning_unknown() -> None:
    raw = {"prompt_tokens": 30, "completion_tokens": 200, "total_tokens": 230}
    usage = normalize_usage("openai/gpt-oss-20b-maas", raw)
    assert usage.reasoning_tokens is None
    assert usage.completion_tokens == raw["completion_tokens"]
    assert usage.total_tokens == raw["total_tokens"]


def test_gemini_without_details_means_no_reasoning() -> None:
    raw = {"prompt_tokens": 12, "completion_tokens": 40, "total_tokens": 52}
    usage = normalize_usage("google/gemini-2.0-flash", raw)
    assert usage.reasoning_tokens == 0
    assert usage.completion_tokens == raw["completion_tokens"]


def test_gemini_shape_recognised_from_numbers_under_any_model_name() -> None:
    usage = normalize_usage("my-self-deployed-endpoint", GEMINI_RAW)
    raw = GEMINI_RAW
    assert usage.completion_tokens == raw["total_tokens"] - raw["prompt_tokens"]


def test_openai_shape_recognised_from_numbers_even_for_gemini_name() -> None:
    prompt, completion, reasoning = 10, 300, 200
    raw = {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "completion_tokens_details": {"reasoning_tokens": reasoning},
        "total_tokens": prompt + completion,
    }
    assert normalize_usage("google/gemini-2.5-flash", raw).completion_tokens == completion


def test_reasoning_larger_than_completion_means_it_was_excluded() -> None:
    raw = {
        "prompt_tokens": 5,
        "completion_tokens": 20,
        "completion_tokens_details": {"reasoning_tokens": 400},
    }
    usage = normalize_usage("openai/gpt-oss-120b-maas", raw)
    assert usage.completion_tokens == 20 + 400
    assert usage.total_tokens == 5 + 20 + 400


def test_missing_completion_recovered_from_total() -> None:
    prompt, reasoning = 50, 1000
    raw = {
        "prompt_tokens": prompt,
        "completion_tokens_details": {"reasoning_tokens": reasoning},
        "total_tokens": prompt + reasoning,
    }
    usage = normalize_usage("google/gemini-2.5-pro", raw)
    assert usage.completion_tokens == reasoning
    assert usage.reasoning_tokens == reasoning


def test_missing_prompt_recovered_from_total() -> None:
    usage = normalize_usage("google/gemini-2.5-flash", {"completion_tokens": 7, "total_tokens": 19})
    assert usage.prompt_tokens == 19 - 7


def test_cached_tokens_read_from_prompt_details() -> None:
    raw = {
        "prompt_tokens": 1000,
        "completion_tokens": 3,
        "prompt_tokens_details": {"cached_tokens": 768},
    }
    assert normalize_usage("google/gemini-2.5-flash", raw).cached_tokens == 768


@pytest.mark.parametrize("usage", [None, {}, "usage", 42, [], {"unrelated": 1}])
def test_missing_usage_gives_nothing_known(usage: Any) -> None:
    result = normalize_usage("google/gemini-2.5-flash", usage)
    assert result.prompt_tokens is None
    assert result.completion_tokens is None
    assert result.total_tokens is None
    assert result.cached_tokens is None


@pytest.mark.parametrize(
    "junk", ["12", True, -3, 1.5, None, [1], {"a": 1}, float("nan"), float("inf")]
)
def test_junk_counts_become_none(junk: object) -> None:
    raw = {
        "prompt_tokens": junk,
        "completion_tokens": junk,
        "total_tokens": junk,
        "completion_tokens_details": {"reasoning_tokens": junk},
        "prompt_tokens_details": {"cached_tokens": junk},
        "extra_properties": {"google": {"traffic_type": junk}},
    }
    usage = normalize_usage("openai/gpt-oss-120b-maas", raw)
    counts = (usage.prompt_tokens, usage.completion_tokens, usage.reasoning_tokens)
    assert counts == (None, None, None)
    assert (usage.cached_tokens, usage.total_tokens) == (None, None)
    assert usage.traffic_type == (junk if isinstance(junk, str) else None)


def test_integral_floats_are_accepted_as_counts() -> None:
    usage = normalize_usage(
        "openai/gpt-oss-120b-maas", {"prompt_tokens": 4.0, "completion_tokens": 6.0}
    )
    assert (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens) == (4, 6, 10)


def test_random_junk_never_raises() -> None:
    rng = random.Random(7)
    atoms: list[object] = [None, 1, -1, 2.5, "x", True, [], {}, {"reasoning_tokens": "y"}]
    keys = [
        "prompt_tokens",
        "completion_tokens",
        "total_tokens",
        "completion_tokens_details",
        "prompt_tokens_details",
        "extra_properties",
    ]
    for _ in range(500):
        raw = {k: rng.choice(atoms) for k in keys if rng.random() < 0.7}
        for model in ("google/gemini-2.5-flash", "openai/gpt-oss-120b-maas"):
            usage = normalize_usage(model, raw)
            for value in (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens):
                assert value is None or (isinstance(value, int) and value >= 0)
