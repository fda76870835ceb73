from __future__ import annotations

import pytest

from batchrunner.endpoint.urls import VertexTarget, chat_completions_url, vertex_host
from batchrunner.errors import ConfigError


@pytest.mark.parametrize(
    ("location", "host"),
    [
        ("global", "aiplatform.googleapis.com"),
        ("us-central1", "us-central1-aiplatform.googleapis.com"),
        ("europe-west4", "europe-west4-aiplatform.googleapis.com"),
        ("us", "aiplatform.us.rep.googleapis.com"),
        ("eu", "aiplatform.eu.rep.googleapis.com"),
    ],
)
def test_host_follows_the_location(location: str, host: str) -> None:
    assert vertex_host(location) == host


def test_global_openapi_url_uses_the_bare_host() -> None:
    url = chat_completions_url(VertexTarget("my-proj").base_url())
    assert url == (
        "https://aiplatform.googleapis.com/v1/projects/my-proj/locations/global"
        "/endpoints/openapi/chat/completions"
    )


def test_regional_v1beta1_numeric_endpoint_url() -> None:
    target = VertexTarget("my-proj", "us-central1", "1234567890", "v1beta1")
    assert target.base_url() == (
        "https://us-central1-aiplatform.googleapis.com/v1beta1/projects/my-proj"
        "/locations/us-central1/endpoints/1234567890"
    )


def test_api_root_points_the_same_grammar_elsewhere() -> None:
    base = VertexTarget("p1", "us-central1").base_url("http://127.0.0.1:9999/")
    assert base == "http://127.0.0.1:9999/v1/projects/p1/locations/us-central1/endpoints/openapi"


@pytest.mark.parametrize(
    "kwargs",
    [
        {"project": "Bad Project"},
        {"project": "p", "location": "us central"},
        {"project": "p", "endpoint_id": "openai"},
        {"project": "p", "api_version": "v2"},
    ],
)
def test_invalid_targets_are_refused(kwargs: dict[str, str]) -> None:
    with pytest.raises(ConfigError):
        VertexTarget(**kwargs)


def test_base_url_gets_chat_completions_once() -> None:
    assert chat_completions_url("http://h/v1/") == "http://h/v1/chat/completions"
    assert chat_completions_url("http://h/v1/chat/completions") == "http://h/v1/chat/completions"
    with pytest.raises(ConfigError):
        chat_completions_url("h/v1")
