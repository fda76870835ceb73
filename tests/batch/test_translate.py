"""Every chat parameter the batch route supports, as the GenerateContent REST request Vertex
documents (camelCase proto-JSON; the expected lines are written out by hand), and the
OpenAI batch lines of MaaS models.
"""

from __future__ import annotations

from typing import Any

import pytest

from batchrunner.batch.translate import Untranslatable, batch_line, gemini_request, model_path

USER = {"role": "user", "content": "Why is the sky blue?"}
CONTENTS = [{"role": "user", "parts": [{"text": "Why is the sky blue?"}]}]


def translated(**params: Any) -> dict[str, Any]:
    return gemini_request({"model": "google/gemini-2.5-flash", "messages": [USER], **params})


def test_a_prompt_becomes_a_user_content_and_the_system_prompt_a_system_instruction() -> None:
    body = {
        "model": "google/gemini-2.5-flash",
        "messages": [
            {"role": "system", "content": "You are a physicist."},
            USER,
            {"role": "assistant", "content": "Rayleigh scattering."},
            {"role": "user", "content": "Explain more."},
        ],
    }
    assert gemini_request(body) == {
        "systemInstruction": {"parts": [{"text": "You are a physicist."}]},
        "contents": [
            {"role": "user", "parts": [{"text": "Why is the sky blue?"}]},
            {"role": "model", "parts": [{"text": "Rayleigh scattering."}]},
            {"role": "user", "parts": [{"text": "Explain more."}]},
        ],
    }


def test_the_line_carries_the_row_id_as_its_key() -> None:
    line = batch_line("google/gemini-2.5-flash", "row-7", {"messages": [USER]})
    assert line == {"key": "row-7", "request": {"contents": CONTENTS}}


def test_images_by_url_become_file_data_and_data_uris_inline_data() -> None:
    body = {
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What is in these images?"},
                    {"type": "image_url", "image_url": {"url": "gs://cloud-samples-data/a.jpg"}},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0K"}},
                ],
            }
        ]
    }
    assert gemini_request(body)["contents"] == [
        {
            "role": "user",
            "parts": [
                {"text": "What is in these images?"},
                {
                    "fileData": {
                        "mimeType": "image/jpeg",
                        "fileUri": "gs://cloud-samples-data/a.jpg",
                    }
                },
                {"inlineData": {"mimeType": "image/png", "data": "iVBORw0K"}},
            ],
        }
    ]


def test_sampling_parameters_become_the_generation_config() -> None:
    request = translated(
        max_tokens=1024,
        temperature=0.2,
        top_p=0.95,
        stop=["\n\n", "END"],
        seed=7,
        n=2,
        presence_penalty=0.5,
        frequency_penalty=0.25,
    )
    assert request == {
        "contents": CONTENTS,
        "generationConfig": {
            "maxOutputTokens": 1024,
            "temperature": 0.2,
            "topP": 0.95,
            "stopSequences": ["\n\n", "END"],
            "seed": 7,
            "candidateCount": 2,
            "presencePenalty": 0.5,
            "frequencyPenalty": 0.25,
        },
    }


def test_a_single_stop_string_is_a_one_item_stop_sequence_list() -> None:
    assert translated(stop="END")["generationConfig"] == {"stopSequences": ["END"]}


def test_max_completion_tokens_is_max_output_tokens_too() -> None:
    assert translated(max_completion_tokens=50)["generationConfig"] == {"maxOutputTokens": 50}


def test_json_object_asks_for_a_json_mime_type() -> None:
    request = translated(response_format={"type": "json_object"})
    assert request["generationConfig"] == {"responseMimeType": "application/json"}


def test_a_json_schema_becomes_the_response_schema() -> None:
    schema = {
        "type": "object",
        "properties": {"recipe_name": {"type": "string"}},
        "required": ["recipe_name"],
    }
    request = translated(
        response_format={"type": "json_schema", "json_schema": {"name": "r", "schema": schema}}
    )
    assert request["generationConfig"] == {
        "responseMimeType": "application/json",
        "responseSchema": {
            "type": "object",
            "properties": {"recipe_name": {"type": "string"}},
            "required": ["recipe_name"],
        },
    }


@pytest.mark.parametrize(
    ("effort", "budget"), [("low", 1024), ("medium", 8192), ("high", 24576), ("none", 0)]
)
def test_reasoning_effort_becomes_a_thinking_budget(effort: str, budget: int) -> None:
    request = translated(reasoning_effort=effort)
    assert request["generationConfig"] == {"thinkingConfig": {"thinkingBudget": budget}}


def test_googles_thinking_config_becomes_thinking_config() -> None:
    request = translated(
        extra_body={
            "google": {"thinking_config": {"thinking_budget": 512, "include_thoughts": True}}
        }
    )
    assert request["generationConfig"] == {
        "thinkingConfig": {"thinkingBudget": 512, "includeThoughts": True}
    }


WEATHER = {
    "type": "function",
    "function": {
        "name": "get_current_weather",
        "description": "Get the current weather in a given location",
        "parameters": {
            "type": "object",
            "properties": {"location": {"type": "string"}},
            "required": ["location"],
        },
    },
}
DECLARATIONS = [
    {
        "functionDeclarations": [
            {
                "name": "get_current_weather",
                "description": "Get the current weather in a given location",
                "parameters": {
                    "type": "object",
                    "properties": {"location": {"type": "string"}},
                    "required": ["location"],
                },
            }
        ]
    }
]


@pytest.mark.parametrize(
    ("choice", "config"),
    [
        ("auto", {"mode": "AUTO"}),
        ("none", {"mode": "NONE"}),
        ("required", {"mode": "ANY"}),
        (
            {"type": "function", "function": {"name": "get_current_weather"}},
            {"mode": "ANY", "allowedFunctionNames": ["get_current_weather"]},
        ),
    ],
)
def test_tools_become_function_declarations_and_tool_choice_a_calling_mode(
    choice: object, config: dict[str, Any]
) -> None:
    request = translated(tools=[WEATHER], tool_choice=choice)
    assert request["tools"] == DECLARATIONS
    assert request["toolConfig"] == {"functionCallingConfig": config}


def test_a_tool_call_and_its_result_become_function_call_and_function_response_parts() -> None:
    body = {
        "messages": [
            {"role": "user", "content": "Weather in Boston?"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {
                            "name": "get_current_weather",
                            "arguments": '{"location": "Boston, MA"}',
                        },
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "call_1", "content": '{"temperature": 38}'},
        ],
        "tools": [WEATHER],
    }
    assert gemini_request(body)["contents"] == [
        {"role": "user", "parts": [{"text": "Weather in Boston?"}]},
        {
            "role": "model",
            "parts": [
                {
                    "functionCall": {
                        "name": "get_current_weather",
                        "args": {"location": "Boston, MA"},
                    }
                }
            ],
        },
        {
            "role": "user",
            "parts": [
                {
                    "functionResponse": {
                        "name": "get_current_weather",
                        "response": {"content": '{"temperature": 38}'},
                    }
                }
            ],
        },
    ]


@pytest.mark.parametrize(
    ("params", "named"),
    [
        ({"logit_bias": {"50256": -100}}, "logit_bias"),
        ({"user": "u-1"}, "user"),
        ({"web_search_options": {}}, "web_search_options"),
        ({"extra_body": {"google": {"cached_content": "x"}}}, "cached_content"),
        ({"response_format": {"type": "xml"}}, "xml"),
        ({"tool_choice": "sometimes"}, "sometimes"),
        ({"reasoning_effort": "extreme"}, "extreme"),
    ],
)
def test_a_parameter_with_no_batch_equivalent_is_refused_by_name(
    params: dict[str, Any], named: str
) -> None:
    with pytest.raises(Untranslatable, match=named):
        translated(**params)


def test_an_image_whose_type_cannot_be_told_is_refused() -> None:
    message = {
        "role": "user",
        "content": [{"type": "image_url", "image_url": {"url": "https://x.test/picture"}}],
    }
    with pytest.raises(Untranslatable, match="image type"):
        gemini_request({"messages": [message]})


def test_maas_models_take_openai_batch_lines_without_streaming() -> None:
    body = {
        "model": "openai/gpt-oss-120b-maas",
        "messages": [USER],
        "max_tokens": 100,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    assert batch_line("openai/gpt-oss-120b-maas", "row-1", body) == {
        "custom_id": "row-1",
        "method": "POST",
        "url": "/v1/chat/completions",
        "body": {"model": "openai/gpt-oss-120b-maas", "messages": [USER], "max_tokens": 100},
    }


def test_google_extensions_have_no_home_in_an_openai_batch_line() -> None:
    body = {"messages": [USER], "extra_body": {"google": {"thinking_config": {}}}}
    with pytest.raises(Untranslatable, match=r"extra_body\.google"):
        batch_line("openai/gpt-oss-120b-maas", "r", body)


@pytest.mark.parametrize(
    ("model", "path"),
    [
        ("google/gemini-2.5-flash", "publishers/google/models/gemini-2.5-flash"),
        ("gemini-2.5-pro", "publishers/google/models/gemini-2.5-pro"),
        ("openai/gpt-oss-120b-maas", "publishers/openai/models/gpt-oss-120b-maas"),
        ("gpt-oss-20b-maas", "publishers/openai/models/gpt-oss-20b-maas"),
    ],
)
def test_model_ids_become_publisher_model_paths(model: str, path: str) -> None:
    assert model_path(model) == path
