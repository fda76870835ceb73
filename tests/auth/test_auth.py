"""Tests for batchrunner.auth.tokens: token renewal timing, single-flight refresh, failures, and
keeping tokens out of logs, reprs and errors; then real google-auth against the simulator."""

from __future__ import annotations

import json
import logging
import threading
import traceback
from datetime import UTC, datetime, timedelta
from pathlib import Path

import anyio
import anyio.lowlevel
import google.auth.exceptions
import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from batchrunner.auth import credentials
from batchrunner.auth import refresh as refresh_failures
from batchrunner.auth import tokens as auth
from batchrunner.auth.tokens import (
    AuthHeaders,
    RefreshingAuthenticator,
    StaticAuthenticator,
    build_authenticator,
)
from batchrunner.config import AuthConfig, Secret
from batchrunner.errors import AuthError, ConfigError
from batchrunner.simulator import SimulatorConfig, open_simulator

SECRET_MARK = "SuperSecretTokenValue"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class FakeClock:
    """UTC time that moves only when told to."""

    def __init__(self) -> None:
        self.now = datetime(2030, 1, 1, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


class FakeSleep:
    """Moves the clock instead of waiting; after ``limit`` sleeps it parks for good."""

    def __init__(self, clock: FakeClock, limit: int | None = None) -> None:
        self.clock = clock
        self.limit = limit
        self.delays: list[float] = []
        self.parked: anyio.Event | None = None

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)
        if self.limit is not None and len(self.delays) >= self.limit:
            if self.parked is None:
                self.parked = anyio.Event()
            self.parked.set()
            await anyio.sleep_forever()
        self.clock.advance(delay)
        await anyio.lowlevel.checkpoint()


class FakeCredentials:
    """google-auth-shaped credentials: token, naive-UTC expiry, blocking refresh()."""

    def __init__(
        self,
        clock: FakeClock,
        lifetime: float | None = 3600.0,
        errors: list[Exception] | None = None,
    ) -> None:
        self.clock = clock
        self.lifetime = lifetime
        self.errors = list(errors or [])
        self.fail_forever: Exception | None = None
        self.fail_from_call: int | None = None
        self.token: str | None = None
        self.expiry: datetime | None = None
        self.calls = 0
        self.threads: set[int] = set()
        self.gate: threading.Event | None = None

    def refresh(self, request: object) -> None:
        self.calls += 1
        self.threads.add(threading.get_ident())
        if self.gate is not None:
            self.gate.wait(10)
        if self.fail_forever is not None:
            raise self.fail_forever
        if self.fail_from_call is not None and self.calls >= self.fail_from_call:
            raise transport_error("down")
        if self.errors:
            raise self.errors.pop(0)
        self.token = f"ya29.{SECRET_MARK}-{self.calls}"
        # google-auth keeps expiry as naive UTC
        self.expiry = (
            None
            if self.lifetime is None
            else (self.clock() + timedelta(seconds=self.lifetime)).replace(tzinfo=None)
        )


def make_auth(
    clock: FakeClock,
    credentials: FakeCredentials,
    sleep: FakeSleep | None = None,
    quota_project: str | None = None,
) -> RefreshingAuthenticator:
    return RefreshingAuthenticator(
        credentials,
        source="fake credentials",
        quota_project=quota_project,
        clock=clock,
        sleep=sleep or FakeSleep(clock),
        request_factory=object,
    )


async def run_until_parked(authenticator: RefreshingAuthenticator, sleep: FakeSleep) -> None:
    """Run the refresher until the fake sleep parks, then stop it."""
    sleep.parked = anyio.Event()
    async with anyio.create_task_group() as tg:
        await tg.start(authenticator.run)
        with anyio.fail_after(10):
            await sleep.parked.wait()
        tg.cancel_scope.cancel()


def transport_error(message: str) -> google.auth.exceptions.TransportError:
    return google.auth.exceptions.TransportError(message)  # type: ignore[no-untyped-call]


def refresh_error(*args: object) -> google.auth.exceptions.RefreshError:
    return google.auth.exceptions.RefreshError(*args)  # type: ignore[no-untyped-call]


def oauth_refresh_error(code: str) -> google.auth.exceptions.RefreshError:
    body = {"error": code, "error_description": f"bad grant for ya29.{SECRET_MARK}"}
    return refresh_error(f"{code}: {body['error_description']}", body)


# --- renewal timing ---------------------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("lifetime", "expected_delay"),
    [(3600.0, 3300.0), (600.0, 450.0), (20.0, 15.0), (120.0, 90.0)],
    ids=["1h-renews-5min-early", "10min-renews-quarter-early", "20s-renews-5s-early", "2min"],
)
async def test_renews_when_min_of_5_minutes_and_a_quarter_lifetime_remains(
    lifetime: float, expected_delay: float
) -> None:
    clock = FakeClock()
    creds = FakeCredentials(clock, lifetime)
    sleep = FakeSleep(clock, limit=6)
    authenticator = make_auth(clock, creds, sleep)
    await run_until_parked(authenticator, sleep)
    assert sleep.delays == pytest.approx([expected_delay] * 6)
    assert creds.calls == 6  # the first token, then one renewal per wake-up


@pytest.mark.anyio
async def test_ten_hours_of_one_hour_tokens_take_eleven_refreshes_not_a_storm() -> None:
    clock = FakeClock()
    creds = FakeCredentials(clock, 3600.0)
    sleep = FakeSleep(clock, limit=11)
    authenticator = make_auth(clock, creds, sleep)
    start = clock()
    await run_until_parked(authenticator, sleep)
    hours = (clock() - start).total_seconds() / 3600
    assert 9 < hours < 10
    assert creds.calls == 11
    assert authenticator.refresh_count == 11


@pytest.mark.anyio
async def test_tokens_shorter_than_google_auth_threshold_renew_on_schedule_not_in_a_loop() -> None:
    # google-auth calls any token with < 3 min 45 s left "expired"; a 60-s token would
    # look expired at once. The refresher must still wait 45 s between refreshes.
    clock = FakeClock()
    creds = FakeCredentials(clock, 60.0)
    sleep = FakeSleep(clock, limit=80)
    authenticator = make_auth(clock, creds, sleep)
    await run_until_parked(authenticator, sleep)
    assert min(sleep.delays) == pytest.approx(45.0)
    assert creds.calls == 80  # one per 45 s over the hour simulated, no extra


class CachingCredentials(FakeCredentials):
    """Like a metadata server: hands out its cached token until 60 s before it expires."""

    def refresh(self, request: object) -> None:
        if self.expiry is not None and self.expiry - self.clock().replace(tzinfo=None) > timedelta(
            seconds=60
        ):
            self.calls += 1
            return
        super().refresh(request)


@pytest.mark.anyio
async def test_a_source_that_returns_its_cached_token_causes_no_refresh_storm() -> None:
    clock = FakeClock()
    creds = CachingCredentials(clock, 3600.0)
    sleep = FakeSleep(clock, limit=31)
    authenticator = make_auth(clock, creds, sleep)
    start = clock()
    await run_until_parked(authenticator, sleep)
    hours = (clock() - start).total_seconds() / 3600
    # Each cached answer shortens the observed lifetime, so the asks are spaced 3300 s,
    # 225 s, 56 s apart: three per one-hour token, never a tight loop.
    assert hours > 9.9
    assert creds.calls == 31
    assert min(sleep.delays) == pytest.approx(56.25)


@pytest.mark.anyio
async def test_token_without_expiry_is_fetched_once_and_never_renewed() -> None:
    clock = FakeClock()
    creds = FakeCredentials(clock, None)
    authenticator = make_auth(clock, creds)
    async with anyio.create_task_group() as tg:
        await tg.start(authenticator.run)
        for _ in range(10):
            await anyio.lowlevel.checkpoint()
        clock.advance(10 * 86400)
        assert (await authenticator.headers()).generation == 1
        tg.cancel_scope.cancel()
    assert creds.calls == 1
    assert authenticator.renew_at is None


@pytest.mark.anyio
async def test_refresh_runs_in_a_worker_thread_not_on_the_event_loop() -> None:
    clock = FakeClock()
    creds = FakeCredentials(clock)
    await make_auth(clock, creds).headers()
    assert creds.threads
    assert threading.get_ident() not in creds.threads


# --- reading tokens -----------------------------------------------------------------------


@pytest.mark.anyio
async def test_headers_return_the_current_token_without_refreshing() -> None:
    clock = FakeClock()
    creds = FakeCredentials(clock)
    authenticator = make_auth(clock, creds)
    first = await authenticator.headers()
    for _ in range(100):
        clock.advance(30)  # 50 minutes in all: still inside the token's life
        assert await authenticator.headers() is first
    assert creds.calls == 1
    assert first.headers == {"Authorization": f"Bearer ya29.{SECRET_MARK}-1"}
    assert first.generation == 1


@pytest.mark.anyio
async def test_headers_wait_for_a_new_token_once_the_current_one_has_expired() -> None:
    clock = FakeClock()
    creds = FakeCredentials(clock, 600.0)
    authenticator = make_auth(clock, creds)
    first = await authenticator.headers()
    clock.advance(600)
    second = await authenticator.headers()
    assert second.generation == first.generation + 1
    assert creds.calls == 2


@pytest.mark.anyio
async def test_quota_project_is_sent_as_x_goog_user_project() -> None:
    clock = FakeClock()
    authenticator = make_auth(clock, FakeCredentials(clock), quota_project="billing-proj")
    headers = await authenticator.headers()
    assert headers.headers["x-goog-user-project"] == "billing-proj"
    assert headers.headers["Authorization"].startswith("Bearer ya29.")


# --- 401 handling ----------------------------------------------------------------------------


@pytest.mark.anyio
async def test_thousand_concurrent_unauthorized_calls_with_one_generation_refresh_once() -> None:
    clock = FakeClock()
    creds = FakeCredentials(clock)
    authenticator = make_auth(clock, creds)
    used = await authenticator.headers()
    creds.gate = threading.Event()
    results: list[AuthHeaders] = []

    async def after_401() -> None:
        results.append(await authenticator.unauthorized(used))

    async with anyio.create_task_group() as tg:
        for _ in range(1000):
            tg.start_soon(after_401)
        await anyio.wait_all_tasks_blocked()
        creds.gate.set()
    assert creds.calls == 2
    assert len(results) == 1000
    assert {r.generation for r in results} == {used.generation + 1}


@pytest.mark.anyio
async def test_unauthorized_with_an_old_generation_returns_the_newer_token_at_once() -> None:
    clock = FakeClock()
    creds = FakeCredentials(clock)
    authenticator = make_auth(clock, creds)
    old = await authenticator.headers()
    newer = await authenticator.unauthorized(old)
    assert await authenticator.unauthorized(old) is newer
    assert creds.calls == 2


@pytest.mark.anyio
async def test_rejected_token_is_no_longer_handed_out() -> None:
    clock = FakeClock()
    creds = FakeCredentials(clock)
    authenticator = make_auth(clock, creds)
    used = await authenticator.headers()
    await authenticator.unauthorized(used)
    assert (await authenticator.headers()).generation == used.generation + 1


@pytest.mark.anyio
async def test_a_401_refresh_reschedules_background_renewal_from_the_new_token() -> None:
    clock = FakeClock()
    creds = FakeCredentials(clock, 3600.0)
    sleep = FakeSleep(clock, limit=1)  # the first scheduled wait parks
    authenticator = make_auth(clock, creds, sleep)
    async with anyio.create_task_group() as tg:
        await tg.start(authenticator.run)
        await anyio.wait_all_tasks_blocked()
        used = await authenticator.headers()
        creds.lifetime = 40.0  # the replacement token is short-lived
        sleep.limit = 2
        sleep.parked = anyio.Event()
        await authenticator.unauthorized(used)
        with anyio.fail_after(10):
            await sleep.parked.wait()
        tg.cancel_scope.cancel()
    assert sleep.delays[1] == pytest.approx(30.0)  # from the 40-s token, not the old 1-h one


# --- refresh failures --------------------------------------------------------------------


@pytest.mark.anyio
async def test_failed_renewal_is_retried_with_growing_capped_backoff_while_token_is_valid() -> None:
    clock = FakeClock()
    errors: list[Exception] = [
        transport_error("connection reset"),
        refresh_error("temporarily_unavailable"),
        oauth_refresh_error("server_error"),
        OSError("network unreachable"),
    ]
    creds = FakeCredentials(clock)
    sleep = FakeSleep(clock, limit=6)
    authenticator = make_auth(clock, creds, sleep)
    async with anyio.create_task_group() as tg:
        await tg.start(authenticator.run)
        creds.errors = errors
        with anyio.fail_after(10):
            sleep.parked = anyio.Event()
            await sleep.parked.wait()
        tg.cancel_scope.cancel()
    scheduled, *backoffs, next_renewal = sleep.delays
    assert scheduled == pytest.approx(3300)
    assert len(backoffs) == 4
    assert all(0.5 * 2**i <= d <= 2**i for i, d in enumerate(backoffs))
    assert next_renewal == pytest.approx(3300)
    assert authenticator.failure_count == 4
    assert authenticator.refresh_count == 2


@pytest.mark.anyio
async def test_backoff_never_exceeds_the_cap_and_keeps_trying_while_the_token_is_valid() -> None:
    clock = FakeClock()
    creds = FakeCredentials(clock)
    sleep = FakeSleep(clock, limit=16)
    authenticator = make_auth(clock, creds, sleep)
    async with anyio.create_task_group() as tg:
        await tg.start(authenticator.run)
        creds.fail_forever = transport_error("down")
        with anyio.fail_after(10):
            sleep.parked = anyio.Event()
            await sleep.parked.wait()
        tg.cancel_scope.cancel()
    assert max(sleep.delays[1:]) <= refresh_failures.BACKOFF_CAP


@pytest.mark.anyio
async def test_refresh_failing_after_the_token_expired_raises_auth_error() -> None:
    clock = FakeClock()
    creds = FakeCredentials(clock, 600.0)
    creds.fail_from_call = 2
    sleep = FakeSleep(clock)
    authenticator = make_auth(clock, creds, sleep)
    with pytest.raises(AuthError) as caught:
        await authenticator.run()
    assert sleep.delays[0] == pytest.approx(450)
    assert clock() >= datetime(2030, 1, 1, tzinfo=UTC) + timedelta(
        seconds=590
    )  # kept trying until expiry
    message = str(caught.value)
    assert "\n" not in message
    assert "fake credentials" in message
    assert "TransportError" in message
    assert "renew the expired access token" in message
    # once given up, requests fail fast with the same one-line reason
    with pytest.raises(AuthError, match="renew the expired access token"):
        await authenticator.headers()


@pytest.mark.anyio
async def test_first_token_failing_a_few_times_fails_startup_with_auth_error() -> None:
    clock = FakeClock()
    creds = FakeCredentials(clock)
    creds.fail_forever = transport_error("no route")
    sleep = FakeSleep(clock)
    authenticator = make_auth(clock, creds, sleep)
    with pytest.raises(AuthError, match="cannot get an access token from fake credentials"):
        await authenticator.run()
    assert creds.calls == auth.ATTEMPTS_WITHOUT_TOKEN
    assert len(sleep.delays) == auth.ATTEMPTS_WITHOUT_TOKEN - 1


@pytest.mark.anyio
async def test_permanent_oauth_error_without_a_token_fails_at_once_naming_the_code() -> None:
    clock = FakeClock()
    creds = FakeCredentials(clock, errors=[oauth_refresh_error("invalid_grant")])
    authenticator = make_auth(clock, creds)
    with pytest.raises(AuthError) as caught:
        await authenticator.headers()
    assert creds.calls == 1
    assert "invalid_grant" in str(caught.value)
    assert "bad grant" not in str(caught.value)  # the response body stays out


# --- static token and no auth -------------------------------------------------------------


@pytest.mark.anyio
async def test_static_token_401_is_final_and_says_how_to_get_a_refreshable_credential(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    authenticator = build_authenticator(AuthConfig(static_token=Secret(f"ya29.{SECRET_MARK}")))
    headers = await authenticator.headers()
    assert headers.headers == {"Authorization": f"Bearer ya29.{SECRET_MARK}"}
    async with anyio.create_task_group() as tg:
        await tg.start(authenticator.run)  # ready at once, nothing to renew
    with pytest.raises(AuthError, match="cannot be refreshed") as caught:
        await authenticator.unauthorized(headers)
    assert "gcloud auth application-default login" in str(caught.value)
    assert authenticator.describe() == "static token from OPENAI_API_KEY"
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "cannot be refreshed" in warnings[0].getMessage()


@pytest.mark.anyio
async def test_mode_none_sends_no_auth_headers() -> None:
    authenticator = build_authenticator(
        AuthConfig(mode="none", static_token=Secret(f"ya29.{SECRET_MARK}"))
    )
    assert (await authenticator.headers()).headers == {}
    assert authenticator.describe() == "no auth"
    with pytest.raises(AuthError, match="mode none"):
        await authenticator.unauthorized(await authenticator.headers())


def test_static_mode_without_a_token_is_an_auth_error() -> None:
    with pytest.raises(AuthError, match="OPENAI_API_KEY"):
        build_authenticator(AuthConfig(mode="static"))


def test_unknown_auth_mode_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="unknown auth mode 'oauth'"):
        AuthConfig(mode="oauth")


# --- secrets stay secret ---------------------------------------------------------------------


def test_secret_hides_its_value_in_repr_str_and_format() -> None:
    secret = Secret(f"ya29.{SECRET_MARK}")
    for shown in (repr(secret), str(secret), f"{secret}", f"{secret!r}", f"{secret:>5}".strip()):
        assert shown == "Secret('***')"
    assert secret.reveal() == f"ya29.{SECRET_MARK}"
    assert SECRET_MARK not in repr(AuthConfig(static_token=secret))


def test_secrets_compare_and_hash_by_value() -> None:
    assert Secret("a") == Secret("a")
    assert Secret("a") != Secret("b")
    assert len({Secret("a"), Secret("a"), Secret("b")}) == 2
    assert Secret("a") != "a"


def test_auth_headers_repr_names_headers_but_hides_values() -> None:
    headers = auth._make_headers(f"ya29.{SECRET_MARK}", "proj", 7)
    assert SECRET_MARK not in repr(headers)
    assert SECRET_MARK not in str(headers)
    assert "Authorization" in repr(headers)
    assert "generation=7" in repr(headers)


@pytest.mark.anyio
async def test_no_token_reaches_logs_reprs_errors_or_tracebacks(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    clock = FakeClock()
    creds = FakeCredentials(clock, 600.0)
    sleep = FakeSleep(clock)
    authenticator = make_auth(clock, creds, sleep, quota_project="proj")
    leaky = refresh_error(
        f"Unable to refresh ya29.{SECRET_MARK}: response body follows",
        {"error": {"status": "UNAVAILABLE", "message": f"token ya29.{SECRET_MARK}"}},
    )
    formatted = ""

    async def refresher() -> None:
        nonlocal formatted
        try:
            await authenticator.run()
        except AuthError:
            formatted = traceback.format_exc()

    async with anyio.create_task_group() as tg:
        tg.start_soon(refresher)
        used = await authenticator.headers()
        await authenticator.unauthorized(used)
        creds.fail_forever = leaky
    assert formatted, "the refresher should have given up"
    texts = [formatted, repr(authenticator), repr(used), str(used), authenticator.describe()]
    for record in caplog.records:
        texts.append(record.getMessage())
        texts.append(repr(record.args))
        assert record.exc_info is None
    assert any("UNAVAILABLE" in t for t in texts)  # the error code is kept...
    for text in texts:
        assert SECRET_MARK not in text  # ...the token and the body are not


# --- building from configuration ---------------------------------------------------------


def write_service_account_key(path: Path, token_uri: str = "http://127.0.0.1:9/token") -> Path:  # noqa: S107
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    info = {
        "type": "service_account",
        "project_id": "proj",
        "private_key_id": "abc123",
        "private_key": pem,
        "client_email": "runner@proj.iam.gserviceaccount.com",
        "client_id": "1234",
        "token_uri": token_uri,
    }
    path.write_text(json.dumps(info))
    return path


@pytest.fixture(scope="module")
def key_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_service_account_key(tmp_path_factory.mktemp("keys") / "key.json")


def test_key_file_builds_a_refreshing_authenticator_described_by_file_and_account(
    key_file: Path,
) -> None:
    authenticator = build_authenticator(AuthConfig(mode="adc", credentials_file=str(key_file)))
    assert isinstance(authenticator, RefreshingAuthenticator)
    assert authenticator.describe() == (
        f"service-account key file {key_file} (runner@proj.iam.gserviceaccount.com)"
    )


def test_auto_mode_prefers_the_static_token_over_adc(key_file: Path) -> None:
    config = AuthConfig(static_token=Secret("tok"), credentials_file=str(key_file))
    assert isinstance(build_authenticator(config), StaticAuthenticator)


def test_impersonation_wraps_the_source_credentials(key_file: Path) -> None:
    from google.auth import impersonated_credentials

    authenticator = build_authenticator(
        AuthConfig(
            mode="adc",
            credentials_file=str(key_file),
            impersonate_service_account="target@proj.iam.gserviceaccount.com",
        )
    )
    assert isinstance(authenticator, RefreshingAuthenticator)
    assert isinstance(authenticator._credentials, impersonated_credentials.Credentials)
    assert authenticator.describe().startswith(
        "service account target@proj.iam.gserviceaccount.com impersonated by "
        "service-account key file"
    )


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("{not json", "not valid JSON"),
        ('["a list"]', "not a JSON object"),
        ('{"type": "service_account", "client_email": "a@b", "token_uri": "x"}', "private_key"),
        (
            '{"type": "service_account", "client_email": "a@b", "token_uri": "x", '
            '"private_key": "-----BEGIN PRIVATE KEY-----\\nAAAA\\n-----END PRIVATE KEY-----\\n"}',
            "not a usable PEM private key",
        ),
        ('{"type": "magic"}', "unsupported credential type"),
        ('{"type": "authorized_user", "client_id": "x"}', "client_secret, refresh_token"),
    ],
    ids=[
        "invalid-json",
        "not-object",
        "missing-private-key",
        "bad-pem",
        "bad-type",
        "user-incomplete",
    ],
)
def test_broken_key_file_gives_one_line_auth_error_naming_the_file(
    tmp_path: Path, content: str, expected: str
) -> None:
    path = tmp_path / "broken.json"
    path.write_text(content)
    with pytest.raises(AuthError) as caught:
        build_authenticator(AuthConfig(mode="adc", credentials_file=str(path)))
    message = str(caught.value)
    assert str(path) in message
    assert expected in message
    assert "\n" not in message
    error = caught.value
    assert error.__cause__ is None
    assert error.__context__ is None or error.__suppress_context__  # no chained key material


def test_missing_key_file_says_so(tmp_path: Path) -> None:
    path = tmp_path / "absent.json"
    with pytest.raises(AuthError, match=f"cannot read credentials file {path}: No such file"):
        build_authenticator(AuthConfig(mode="adc", credentials_file=str(path)))


@pytest.fixture
def no_ambient_credentials(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No GOOGLE_APPLICATION_CREDENTIALS, an empty gcloud config, no metadata server."""
    from google.auth.compute_engine import _metadata

    monkeypatch.delenv("GOOGLE_APPLICATION_CREDENTIALS", raising=False)
    monkeypatch.setenv("CLOUDSDK_CONFIG", str(tmp_path / "gcloud"))
    monkeypatch.setattr(_metadata, "_NO_GCE_CHECK", True)


@pytest.mark.usefixtures("no_ambient_credentials")
def test_no_adc_found_gives_the_gcloud_and_env_var_fix() -> None:
    with pytest.raises(AuthError) as caught:
        build_authenticator(AuthConfig())
    assert str(caught.value) == credentials.NO_ADC_MESSAGE


@pytest.mark.usefixtures("no_ambient_credentials")
def test_broken_google_application_credentials_file_is_named(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    path = tmp_path / "env-key.json"
    path.write_text("{oops")
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(path))
    with pytest.raises(AuthError) as caught:
        build_authenticator(AuthConfig(mode="adc"))
    assert str(path) in str(caught.value)
    assert "GOOGLE_APPLICATION_CREDENTIALS" in str(caught.value)
    assert "\n" not in str(caught.value)


@pytest.mark.usefixtures("no_ambient_credentials")
def test_adc_from_google_application_credentials_is_described_with_its_file(
    monkeypatch: pytest.MonkeyPatch, key_file: Path
) -> None:
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(key_file))
    authenticator = build_authenticator(AuthConfig())
    assert str(key_file) in authenticator.describe()
    assert "runner@proj.iam.gserviceaccount.com" in authenticator.describe()


# --- real google-auth against the simulator ------------------------------------------------

CHAT_BODY = {"model": "google/gemini-2.5-flash", "messages": [{"role": "user", "content": "hi"}]}


async def post_chat(client: httpx.AsyncClient, url: str, headers: AuthHeaders) -> int:
    response = await client.post(f"{url}/chat/completions", json=CHAT_BODY, headers=headers.headers)
    return response.status_code


@pytest.mark.anyio
async def test_key_file_from_the_simulator_gets_a_token_the_endpoint_accepts(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    async with open_simulator(SimulatorConfig(latency="zero")) as sim:
        key = sim.write_credentials(tmp_path / "sa.json")
        authenticator = build_authenticator(AuthConfig(mode="adc", credentials_file=str(key)))
        assert authenticator.describe().startswith(f"service-account key file {key} (")
        async with anyio.create_task_group() as tg, httpx.AsyncClient() as client:
            await tg.start(authenticator.run)
            headers = await authenticator.headers()
            assert headers.headers["Authorization"].startswith("Bearer ya29.")
            assert await post_chat(client, sim.base_url(), headers) == 200
            tg.cancel_scope.cancel()
        token = headers.headers["Authorization"].removeprefix("Bearer ")
        key_text = json.loads(key.read_text())["private_key"].splitlines()[1]
        for record in caplog.records:  # google-auth, urllib3, httpx and ours at DEBUG
            assert token not in record.getMessage()
            assert key_text not in record.getMessage()
        # and a made-up token is refused, so the 200 above proves the token was checked
        async with httpx.AsyncClient() as client:
            fake = AuthHeaders({"Authorization": "Bearer ya29.made-up"}, 0)
            assert await post_chat(client, sim.base_url(), fake) == 401


@pytest.mark.anyio
async def test_metadata_server_route_via_gce_metadata_host_and_google_auth_default(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from google.auth.compute_engine import _metadata

    async with open_simulator(SimulatorConfig(latency="zero")) as sim:
        monkeypatch.delenv("GOOGLE_APPLICATION_CREDENTIALS", raising=False)
        monkeypatch.setenv("CLOUDSDK_CONFIG", str(tmp_path / "gcloud"))
        monkeypatch.setenv("GCE_METADATA_HOST", sim.metadata_host)
        monkeypatch.setenv("GCE_METADATA_IP", sim.metadata_host)
        # google-auth reads GCE_METADATA_HOST once, at import
        monkeypatch.setattr(_metadata, "_GCE_METADATA_HOST", sim.metadata_host)
        monkeypatch.setattr(_metadata, "_NO_GCE_CHECK", False)
        # google.auth.default() probes the metadata server: off the event loop
        authenticator = await anyio.to_thread.run_sync(build_authenticator, AuthConfig())
        assert authenticator.describe() == "metadata server"
        async with anyio.create_task_group() as tg, httpx.AsyncClient() as client:
            await tg.start(authenticator.run)
            assert await post_chat(client, sim.base_url(), await authenticator.headers()) == 200
            tg.cancel_scope.cancel()


@pytest.mark.anyio
async def test_short_lived_tokens_are_renewed_in_the_background_and_no_request_is_refused(
    tmp_path: Path,
) -> None:
    async with open_simulator(SimulatorConfig(latency="zero", token_ttl=2.0)) as sim:
        key = sim.write_credentials(tmp_path / "sa.json")
        authenticator = build_authenticator(AuthConfig(mode="adc", credentials_file=str(key)))
        assert isinstance(authenticator, RefreshingAuthenticator)
        statuses: list[int] = []
        generations: set[int] = set()

        async def worker(client: httpx.AsyncClient) -> None:
            with anyio.move_on_after(5.0):
                while True:
                    headers = await authenticator.headers()
                    generations.add(headers.generation)
                    statuses.append(await post_chat(client, sim.base_url(), headers))
                    await anyio.sleep(0.02)

        async with anyio.create_task_group() as tg, httpx.AsyncClient() as client:
            await tg.start(authenticator.run)
            async with anyio.create_task_group() as workers:
                for _ in range(4):
                    workers.start_soon(worker, client)
            tg.cancel_scope.cancel()
        assert authenticator.refresh_count >= 3  # 5 s of 2-s tokens: renewed every 1.5 s
        assert len(generations) >= 3
        assert len(statuses) > 100
        assert set(statuses) == {200}
        assert sim.statistics().by_status.get(401, 0) == 0


# --- outages and refused fresh tokens -------------------------------------------------------


class OutageCredentials(FakeCredentials):
    """A source whose token endpoint refuses connections between two clock times."""

    def __init__(self, clock: FakeClock, lifetime: float, down: tuple[float, float]) -> None:
        super().__init__(clock, lifetime)
        self.start = clock()
        self.down = down
        self.refused = 0

    def refresh(self, request: object) -> None:
        elapsed = (self.clock() - self.start).total_seconds()
        if self.down[0] <= elapsed < self.down[1]:
            self.calls += 1
            self.refused += 1
            raise transport_error("Connection refused")
        super().refresh(request)


@pytest.mark.anyio
async def test_a_minute_long_token_endpoint_outage_mid_run_is_ridden_out() -> None:
    clock = FakeClock()
    # 20-s tokens; the token endpoint refuses connections from t=30 s to t=90 s.
    creds = OutageCredentials(clock, 20.0, down=(30.0, 90.0))
    sleep = FakeSleep(clock)
    authenticator = make_auth(clock, creds, sleep)
    handed_out: list[tuple[datetime, int]] = []
    async with anyio.create_task_group() as tg:
        await tg.start(authenticator.run)
        # A request every (fake) second for five minutes; each gets a token valid right then.
        for _ in range(300):
            headers = await authenticator.headers()
            assert creds.expiry is not None
            assert clock() < creds.expiry.replace(tzinfo=UTC)
            handed_out.append((clock(), headers.generation))
            clock.advance(1.0)
        tg.cancel_scope.cancel()
    assert creds.refused >= 5  # it really was down, and retried through the outage
    assert len(handed_out) == 300
    outage_end = datetime(2030, 1, 1, tzinfo=UTC) + timedelta(seconds=90)
    assert any(at >= outage_end for at, _ in handed_out)
    assert max(sleep.delays) <= refresh_failures.BACKOFF_CAP


@pytest.mark.anyio
async def test_an_outage_longer_than_the_patience_stops_the_run_naming_the_source() -> None:
    clock = FakeClock()
    creds = OutageCredentials(clock, 20.0, down=(10.0, 10_000.0))
    sleep = FakeSleep(clock)
    authenticator = RefreshingAuthenticator(
        creds,
        source="fake credentials",
        clock=clock,
        sleep=sleep,
        request_factory=object,
        patience_s=120.0,
    )
    await authenticator.headers()
    started = clock()
    with pytest.raises(AuthError) as caught:
        await authenticator.run()
    message = str(caught.value)
    assert "fake credentials" in message and "--auth-patience" in message
    assert "120 s" in message
    # the token stopped being usable at ~19 s; it was retried for the patience after that
    waited = (clock() - started).total_seconds()
    assert 120.0 <= waited <= 120.0 + 20.0 + 1.0
    with pytest.raises(AuthError, match="renew the expired access token"):
        await authenticator.headers()


def test_auth_patience_comes_from_the_flag_or_the_job_file() -> None:
    from batchrunner.config import build_config

    options = {"input": "in.jsonl", "output": "out.jsonl", "auth": {"patience": 900}}
    assert build_config(options, env={}).auth.patience_s == 900.0
    job = {"auth": {"patience": 45}}
    assert build_config({"input": "i", "output": "o"}, env={}, job=job).auth.patience_s == 45
    assert build_config({"input": "i", "output": "o"}, env={}).auth.patience_s == 300.0
    with pytest.raises(ConfigError, match="auth-patience"):
        build_config({"input": "i", "output": "o", "auth": {"patience": -1}}, env={})


@pytest.mark.anyio
async def test_two_revocations_in_a_row_are_survived_with_a_backoff_before_the_second() -> None:
    clock = FakeClock()
    creds = FakeCredentials(clock)
    sleep = FakeSleep(clock)
    authenticator = make_auth(clock, creds, sleep)
    first = await authenticator.headers()
    clock.advance(600)
    second = await authenticator.unauthorized(first)  # a revocation: refresh at once
    assert sleep.delays == []
    clock.advance(0.07)
    third = await authenticator.unauthorized(second)  # the fresh token refused too
    assert third.generation == second.generation + 1 == first.generation + 2
    assert len(sleep.delays) == 1 and sleep.delays[0] > 0
    assert await authenticator.headers() is third


@pytest.mark.anyio
async def test_fresh_tokens_refused_again_and_again_stop_the_run_naming_the_source() -> None:
    clock = FakeClock()
    creds = FakeCredentials(clock)
    sleep = FakeSleep(clock)
    authenticator = make_auth(clock, creds, sleep)
    used = await authenticator.headers()
    for _ in range(auth.FRESH_REFUSALS_MAX):
        used = await authenticator.unauthorized(used)
    with pytest.raises(AuthError) as caught:
        await authenticator.unauthorized(used)
    message = str(caught.value)
    assert "fake credentials" in message and "freshly refreshed" in message
    assert SECRET_MARK not in message
    assert len(sleep.delays) == auth.FRESH_REFUSALS_MAX - 1  # backoff before each retry
    assert all(0 < d <= refresh_failures.BACKOFF_CAP for d in sleep.delays)
