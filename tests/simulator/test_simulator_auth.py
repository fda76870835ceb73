"""The simulator's token sources, driven by the real google-auth and openai libraries."""

from __future__ import annotations

import datetime
import json
from collections.abc import Iterator
from pathlib import Path

import google.auth
import google.auth.transport.requests
import openai
import pytest
import requests
from google.auth import compute_engine
from google.auth import exceptions as google_exceptions
from google.auth.compute_engine import _metadata
from google.oauth2 import credentials as user_credentials
from google.oauth2 import service_account

from batchrunner.simulator import SimulatorConfig, start_simulator_thread
from batchrunner.simulator.server import Simulator

SCOPES = ["https://www.googleapis.com/auth/cloud-platform"]
HELLO = [{"role": "user", "content": "hello"}]


class FakeClock:
    def __init__(self) -> None:
        self.now = 5000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def sim(clock: FakeClock) -> Iterator[Simulator]:
    with start_simulator_thread(SimulatorConfig(token_ttl=1800.0, clock=clock)) as simulator:
        yield simulator


def chat_ok(sim: Simulator, token: str) -> bool:
    client = openai.OpenAI(base_url=sim.base_url(), api_key=token, max_retries=0)
    try:
        client.chat.completions.create(model="google/gemini-2.5-flash", messages=HELLO)
    except openai.AuthenticationError:
        return False
    finally:
        client.close()
    return True


def test_service_account_key_file_refreshes_against_the_token_endpoint(
    sim: Simulator, tmp_path: Path
) -> None:
    path = sim.write_credentials(tmp_path / "key.json")
    info = json.loads(path.read_text())
    assert info["type"] == "service_account"
    assert info["token_uri"] == sim.token_uri
    assert info["project_id"] == "sim-project"
    assert info["client_email"].endswith(".iam.gserviceaccount.com")
    assert path.stat().st_mode & 0o077 == 0
    creds = service_account.Credentials.from_service_account_file(str(path), scopes=SCOPES)
    creds.refresh(google.auth.transport.requests.Request())
    assert creds.token.startswith("ya29.")
    remaining = creds.expiry - datetime.datetime.now(datetime.UTC).replace(tzinfo=None)
    assert 1700 < remaining.total_seconds() <= 1800
    assert chat_ok(sim, creds.token)
    assert sim.statistics().tokens_issued == 1


def test_jwt_signed_by_an_unknown_key_is_invalid_grant(sim: Simulator, tmp_path: Path) -> None:
    sim.write_credentials(tmp_path / "key.json")
    with start_simulator_thread() as other:
        foreign = other.write_credentials(tmp_path / "foreign.json")
    info = json.loads(foreign.read_text())
    info["token_uri"] = sim.token_uri
    creds = service_account.Credentials.from_service_account_info(info, scopes=SCOPES)
    with pytest.raises(google_exceptions.RefreshError, match="invalid_grant"):
        creds.refresh(google.auth.transport.requests.Request())


def test_token_endpoint_rejects_unknown_grant_types_oauth_style(sim: Simulator) -> None:
    answer = requests.post(sim.token_uri, data={"grant_type": "password"}, timeout=5)
    assert answer.status_code == 400
    assert answer.json()["error"] == "unsupported_grant_type"


def test_authorized_user_refresh_token_grant_is_accepted(sim: Simulator) -> None:
    creds = user_credentials.Credentials(
        token=None,
        refresh_token="1//refresh",
        client_id="client.apps.googleusercontent.com",
        client_secret="secret",
        token_uri=sim.token_uri,
    )
    creds.refresh(google.auth.transport.requests.Request())
    assert chat_ok(sim, creds.token)


def test_tokens_from_the_token_endpoint_expire_after_token_ttl(
    sim: Simulator, clock: FakeClock
) -> None:
    token = sim.issue_token()
    assert chat_ok(sim, token)
    clock.now += 1800.0
    assert not chat_ok(sim, token)


@pytest.fixture
def metadata_env(sim: Simulator, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Simulator:
    # google-auth reads GCE_METADATA_HOST once at import; patch the module copy as well.
    monkeypatch.setenv("GCE_METADATA_HOST", sim.metadata_host)
    monkeypatch.setenv("GCE_METADATA_IP", sim.metadata_host)
    monkeypatch.setattr(_metadata, "_GCE_METADATA_HOST", sim.metadata_host)
    monkeypatch.delenv("GOOGLE_APPLICATION_CREDENTIALS", raising=False)
    monkeypatch.setenv("CLOUDSDK_CONFIG", str(tmp_path / "no-gcloud"))
    return sim


def test_compute_engine_credentials_get_tokens_from_the_metadata_route(
    metadata_env: Simulator,
) -> None:
    creds = compute_engine.Credentials()
    creds.refresh(google.auth.transport.requests.Request())
    assert creds.token.startswith("ya29.")
    assert creds.service_account_email.endswith(".iam.gserviceaccount.com")
    assert chat_ok(metadata_env, creds.token)


def test_google_auth_default_finds_the_metadata_server(metadata_env: Simulator) -> None:
    creds, project = google.auth.default(scopes=SCOPES)
    assert project == "sim-project"
    creds.refresh(google.auth.transport.requests.Request())
    assert chat_ok(metadata_env, creds.token)


def test_metadata_token_reports_remaining_lifetime(sim: Simulator, clock: FakeClock) -> None:
    url = f"http://{sim.metadata_host}/computeMetadata/v1/instance/service-accounts/default/token"
    headers = {"Metadata-Flavor": "Google"}
    first = requests.get(url, headers=headers, timeout=5)
    assert first.headers["Metadata-Flavor"] == "Google"
    assert first.json()["expires_in"] == 1800
    clock.now += 1000.0
    again = requests.get(url, headers=headers, timeout=5).json()
    assert again["access_token"] == first.json()["access_token"]
    assert again["expires_in"] == 800
    clock.now += 600.0  # within the renewal window: a fresh token
    fresh = requests.get(url, headers=headers, timeout=5).json()
    assert fresh["access_token"] != first.json()["access_token"]
    assert fresh["expires_in"] == 1800


def test_metadata_routes_need_the_metadata_flavor_header(sim: Simulator) -> None:
    url = f"http://{sim.metadata_host}/computeMetadata/v1/instance/service-accounts/default/token"
    assert requests.get(url, timeout=5).status_code == 403


def test_openai_sdk_errors_carry_the_google_envelope(sim: Simulator) -> None:
    token = sim.issue_token()
    client = openai.OpenAI(base_url=sim.base_url(), api_key=token, max_retries=0)
    with pytest.raises(openai.NotFoundError) as not_found:
        client.chat.completions.create(model="google/gemini-9", messages=HELLO)
    assert isinstance(not_found.value.body, list)
    assert not_found.value.body[0]["error"]["status"] == "NOT_FOUND"
    bad = openai.OpenAI(base_url=sim.base_url(), api_key="ya29.bogus", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as unauthenticated:
        bad.chat.completions.create(model="google/gemini-2.5-flash", messages=HELLO)
    assert unauthenticated.value.body[0]["error"]["status"] == "UNAUTHENTICATED"
    client.close()
    bad.close()


def test_openai_sdk_streams_and_reads_usage(sim: Simulator) -> None:
    client = openai.OpenAI(base_url=sim.base_url(), api_key=sim.issue_token(), max_retries=0)
    completion = client.chat.completions.create(
        model="google/gemini-2.5-flash-lite", messages=HELLO
    )
    assert completion.choices[0].message.content
    assert completion.usage is not None
    chunks = list(
        client.chat.completions.create(
            model="google/gemini-2.5-flash-lite",
            messages=HELLO,
            stream=True,
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == completion.choices[0].message.content
    assert chunks[-1].usage == completion.usage
    client.close()
