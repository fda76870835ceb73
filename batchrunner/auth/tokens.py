"""Bearer tokens for every request: where they come from and how they stay fresh.

``build_authenticator`` turns an ``AuthConfig`` into an ``Authenticator``: a static token
(``OPENAI_API_KEY``), no auth, or google-auth credentials (a key file or Application Default
Credentials) that a background task renews well before they expire, and once more after a
401. Requests read the current token without waiting; the blocking google-auth refresh runs
in a worker thread, one at a time. No token ever reaches a log line, a repr or an error.

Outages are ridden out: a failing token source is retried with backoff while the current
token is still good, and for ``AuthConfig.patience_s`` more once it is not (requests wait
for a token meanwhile); a freshly refreshed token that the endpoint refuses (a revocation
landing just after another) is refreshed again, with backoff, a few times before the run
stops. Only start-up, with no token ever obtained, gives up after a few attempts.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from types import MappingProxyType
from typing import Final, Protocol

import anyio
import anyio.abc
import google.auth
import google.auth.exceptions
import google.auth.transport.requests

from batchrunner.auth.credentials import (
    RefreshableCredentials,
    load_adc,
    load_credentials_file,
)
from batchrunner.auth.refresh import (
    REFRESH_ERRORS,
    UnusableTokenError,
    backoff,
    summarize,
)
from batchrunner.config import AUTH_PATIENCE_S, AuthConfig, Secret
from batchrunner.errors import AuthError
from batchrunner.results import utc_now

__all__ = [
    "AuthConfig",
    "AuthHeaders",
    "Authenticator",
    "RefreshableCredentials",
    "RefreshingAuthenticator",
    "Secret",
    "StaticAuthenticator",
    "build_authenticator",
]

logger = logging.getLogger(__name__)


#: Renew when less than min(RENEW_AHEAD_MAX, RENEW_AHEAD_FRACTION x lifetime) remains.
RENEW_AHEAD_MAX: Final = timedelta(minutes=5)
RENEW_AHEAD_FRACTION: Final = 0.25
#: Stop handing a token out when less than min(10 s, 1/20 of its lifetime) remains, so a
#: request never reaches the server with a token that expires on the way.
USABLE_MARGIN_MAX: Final = timedelta(seconds=10)
USABLE_MARGIN_FRACTION: Final = 0.05
#: How many failed refreshes are tolerated at start-up, before any token was obtained: a
#: source that has never worked is more likely misconfigured than briefly down.
ATTEMPTS_WITHOUT_TOKEN: Final = 4
#: A token the endpoint refuses within this long of its refresh counts as a refused fresh
#: token; this many refused in a row stop the run.
FRESH_TOKEN_S: Final = 60.0
FRESH_REFUSALS_MAX: Final = 4
#: Cap on each HTTP call google-auth makes while refreshing (its own default is 120 s), so
#: cancelling the run never waits long for a refresh thread.
REFRESH_HTTP_TIMEOUT: Final = 30.0


STATIC_REJECTED_MESSAGE: Final = (
    "the static token from OPENAI_API_KEY was rejected (HTTP 401: invalid or expired) and "
    "cannot be refreshed: unset OPENAI_API_KEY to use Application Default Credentials "
    "(`gcloud auth application-default login` or a service-account key in "
    "GOOGLE_APPLICATION_CREDENTIALS), which are renewed automatically"
)


@dataclass(frozen=True, slots=True, repr=False)
class AuthHeaders:
    """The headers one request carries, and which token (generation) they hold."""

    headers: Mapping[str, str]
    generation: int

    def __repr__(self) -> str:
        return f"AuthHeaders(generation={self.generation}, headers={sorted(self.headers)!r})"


class Authenticator(Protocol):
    """What the runner needs from an auth source."""

    async def headers(self) -> AuthHeaders:
        """The current token's headers; waits only when no usable token exists."""
        ...

    async def unauthorized(self, used: AuthHeaders) -> AuthHeaders:
        """After a 401 with ``used``: new headers, refreshing at most once per generation."""
        ...

    async def run(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """Background renewal: report ready once a token exists, then renew until cancelled."""
        ...

    def describe(self) -> str:
        """Where tokens come from, for logs and the run summary."""
        ...


Clock = Callable[[], datetime]
Sleep = Callable[[float], Awaitable[None]]


def _make_headers(token: str, quota_project: str | None, generation: int) -> AuthHeaders:
    headers = {"Authorization": f"Bearer {token}"}
    if quota_project:
        headers["x-goog-user-project"] = quota_project
    return AuthHeaders(MappingProxyType(headers), generation)


class StaticAuthenticator:
    """A fixed bearer token (or none at all): nothing to renew, and a 401 is final."""

    def __init__(self, token: Secret | None, *, quota_project: str | None = None) -> None:
        self._token = token
        if token is None:
            self._headers = AuthHeaders(MappingProxyType({}), 0)
        else:
            self._headers = _make_headers(token.reveal(), quota_project, 0)
            logger.warning(
                "using a static bearer token from OPENAI_API_KEY: it cannot be refreshed, so "
                "requests fail with 401 once it expires (Vertex tokens live about an hour); "
                "unset OPENAI_API_KEY to use Application Default Credentials instead"
            )

    async def headers(self) -> AuthHeaders:
        return self._headers

    async def unauthorized(self, used: AuthHeaders) -> AuthHeaders:
        if self._token is None:
            raise AuthError(
                "the endpoint answered 401 but auth is disabled (mode none): "
                "use auth mode auto or adc"
            )
        raise AuthError(STATIC_REJECTED_MESSAGE)

    async def run(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        task_status.started()

    def describe(self) -> str:
        return "no auth" if self._token is None else "static token from OPENAI_API_KEY"

    def __repr__(self) -> str:
        return f"StaticAuthenticator({self.describe()!r})"


class _BoundedRequest(google.auth.transport.requests.Request):
    """google-auth's requests transport with every call's timeout capped."""

    def __call__(  # type: ignore[no-untyped-def]
        self, url, method="GET", body=None, headers=None, timeout=None, **kwargs
    ):
        if not isinstance(timeout, int | float) or timeout > REFRESH_HTTP_TIMEOUT:
            timeout = REFRESH_HTTP_TIMEOUT
        return super().__call__(  # type: ignore[no-untyped-call]
            url, method=method, body=body, headers=headers, timeout=timeout, **kwargs
        )


class RefreshingAuthenticator:
    """Tokens from google-auth credentials, renewed ahead of expiry and after a 401.

    Renewal happens when less than min(5 min, a quarter of the token's observed lifetime)
    remains. Every refresh, whoever asks for it, runs under one lock: callers that queued
    behind a refresh find a newer generation when they get the lock and take it as is.
    """

    def __init__(
        self,
        credentials: RefreshableCredentials,
        *,
        source: str,
        quota_project: str | None = None,
        clock: Clock = utc_now,
        sleep: Sleep = anyio.sleep,
        request_factory: Callable[[], object] = _BoundedRequest,
        rng: random.Random | None = None,
        patience_s: float = AUTH_PATIENCE_S,
    ) -> None:
        self._credentials = credentials
        self._patience_s = patience_s
        self._source = source
        self._quota_project = quota_project
        self._clock = clock
        self._sleep = sleep
        self._request_factory = request_factory
        self._request: object | None = None
        self._rng = rng if rng is not None else random.Random()
        self._lock = anyio.Lock()
        self._current: AuthHeaders | None = None
        self._generation = 0
        self._usable_until: datetime | None = None
        self._renew_at: datetime | None = None
        self._failure: str | None = None
        self._wakeup: anyio.CancelScope | None = None
        self._installed_at: datetime | None = None
        self._refused = 0  # refused fresh tokens in a row
        self._refused_generation = -1  # the last generation a 401 was counted for
        self.refresh_count = 0
        self.failure_count = 0

    def describe(self) -> str:
        return self._source

    def __repr__(self) -> str:
        return f"RefreshingAuthenticator({self._source!r}, generation={self._generation})"

    @property
    def renew_at(self) -> datetime | None:
        """When the current token is due for renewal (UTC); None: never."""
        return self._renew_at

    def _usable(self, now: datetime) -> bool:
        return self._current is not None and (
            self._usable_until is None or now < self._usable_until
        )

    async def headers(self) -> AuthHeaders:
        current = self._current
        if current is not None and self._usable(self._clock()):
            return current
        return await self._renew(self._generation)

    async def unauthorized(self, used: AuthHeaders) -> AuthHeaders:
        delay = 0.0
        if (
            used.generation == self._generation
            and self._current is not None
            and used.generation != self._refused_generation
        ):
            # The server rejected the current token: stop handing it out.
            self._refused_generation = used.generation
            now = self._clock()
            fresh = self._installed_at is not None and (
                (now - self._installed_at).total_seconds() < FRESH_TOKEN_S
            )
            self._refused = self._refused + 1 if fresh else 1
            logger.info("access token #%d was rejected (401); renewing it", used.generation)
            self._usable_until = now
            if self._refused > FRESH_REFUSALS_MAX:
                self._failure = (
                    f"the endpoint refused {self._refused - 1} freshly refreshed access tokens "
                    f"in a row from {self._source} (HTTP 401): check the credential's "
                    "permissions on the project and that it has not been revoked"
                )
                raise AuthError(self._failure)
            if self._refused > 1:
                # A fresh token refused: a revocation may still be propagating; wait a little.
                delay = backoff(self._refused - 1, self._rng)
        return await self._renew(used.generation, delay_s=delay)

    async def run(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        if not self._usable(self._clock()):
            await self._renew(self._generation)
        logger.info("authenticating with %s", self._source)
        task_status.started()
        while True:
            generation, renew_at = self._generation, self._renew_at
            # A token installed by a 401 refresh cancels this wait: its schedule may be earlier.
            with anyio.CancelScope() as self._wakeup:
                if renew_at is None:
                    await anyio.sleep_forever()
                else:
                    await self._sleep(max((renew_at - self._clock()).total_seconds(), 0.0))
            self._wakeup = None
            if self._generation == generation:
                await self._renew(generation)

    async def _renew(self, expected_generation: int, *, delay_s: float = 0.0) -> AuthHeaders:
        async with self._lock:
            if self._failure is not None:
                raise AuthError(self._failure)
            if self._generation != expected_generation and self._usable(self._clock()):
                assert self._current is not None
                return self._current
            if delay_s > 0:
                logger.warning(
                    "a freshly refreshed access token from %s was refused (401); "
                    "refreshing again in %.1f s",
                    self._source,
                    delay_s,
                )
                await self._sleep(delay_s)
            return await self._refresh_with_retries()

    def _outage_deadline(self, now: datetime) -> datetime | None:
        """Until when a source that has issued tokens is retried; None: at start-up."""
        if self._current is None:
            return None
        since = self._usable_until if self._usable_until is not None else now
        return min(since, now) + timedelta(seconds=self._patience_s)

    async def _refresh_with_retries(self) -> AuthHeaders:
        attempts = 0  # failed attempts since the current token became (un)usable
        had_usable: bool | None = None
        deadline: datetime | None = None  # while no usable token exists
        while True:
            try:
                token, expiry = await anyio.to_thread.run_sync(self._refresh_blocking)
                return self._install(token, expiry)
            except REFRESH_ERRORS as exc:
                summary, permanent = summarize(exc)
            self.failure_count += 1
            now = self._clock()
            usable = self._usable(now)
            if usable is not had_usable:
                attempts, had_usable = 0, usable
                deadline = None if usable else self._outage_deadline(now)
            attempts += 1
            if not usable and (
                permanent
                or (deadline is None and attempts >= ATTEMPTS_WITHOUT_TOKEN)
                or (deadline is not None and now >= deadline)
            ):
                self._failure = self._failure_message(summary, attempts)
                raise AuthError(self._failure) from None
            delay = backoff(attempts, self._rng)
            if usable and self._usable_until is not None:
                # Try once more just before the current token goes out of use.
                delay = min(delay, max((self._usable_until - now).total_seconds(), 0.0))
            elif deadline is not None:
                # The last attempt lands on the deadline, not a backoff step past it.
                delay = min(delay, max((deadline - now).total_seconds(), 0.0))
            logger.warning(
                "refreshing the access token from %s failed (%s); retrying in %.1f s",
                self._source,
                summary,
                delay,
            )
            await self._sleep(delay)

    def _failure_message(self, summary: str, attempts: int) -> str:
        got = "get an access token" if self._current is None else "renew the expired access token"
        waited = (
            ""
            if self._current is None
            else f" over {self._patience_s:g} s without a usable token (--auth-patience)"
        )
        return (
            f"cannot {got} from {self._source} ({summary}, {attempts} "
            f"attempt{'s' if attempts != 1 else ''}{waited}): check that the credential is "
            "still valid and its token endpoint reachable, or run "
            "`gcloud auth application-default login`"
        )

    def _refresh_blocking(self) -> tuple[str, datetime | None]:
        # Runs in a worker thread, under the lock: one refresh at a time.
        if self._request is None:
            self._request = self._request_factory()
        self._credentials.refresh(self._request)
        token, expiry = self._credentials.token, self._credentials.expiry
        if expiry is not None and expiry.tzinfo is None:
            expiry = expiry.replace(tzinfo=UTC)  # google-auth's expiry is naive UTC
        if not token:
            raise UnusableTokenError("the credential returned no access token")
        return token, expiry

    def _install(self, token: str, expiry: datetime | None) -> AuthHeaders:
        now = self._clock()
        if expiry is None:
            renew_at = usable_until = None
            lifetime_s = float("inf")
        else:
            lifetime = expiry - now
            if lifetime <= timedelta(0):
                raise UnusableTokenError("the new access token had already expired")
            renew_at = expiry - min(RENEW_AHEAD_MAX, lifetime * RENEW_AHEAD_FRACTION)
            usable_until = expiry - min(USABLE_MARGIN_MAX, lifetime * USABLE_MARGIN_FRACTION)
            lifetime_s = lifetime.total_seconds()
        self._generation += 1
        self._current = _make_headers(token, self._quota_project, self._generation)
        self._renew_at, self._usable_until = renew_at, usable_until
        self._installed_at = now
        self.refresh_count += 1
        if self._wakeup is not None:
            self._wakeup.cancel()
        logger.debug(
            "access token #%d from %s: lifetime %.0f s, renewal due in %.0f s",
            self._generation,
            self._source,
            lifetime_s,
            (renew_at - now).total_seconds() if renew_at is not None else float("inf"),
        )
        return self._current


def build_authenticator(
    config: AuthConfig,
    *,
    clock: Clock = utc_now,
    sleep: Sleep = anyio.sleep,
) -> Authenticator:
    """The authenticator ``config`` asks for.

    Finding credentials may block (google-auth probes the metadata server), so call this
    before the event loop starts or through ``anyio.to_thread.run_sync``.
    """
    if config.mode == "none":
        return StaticAuthenticator(None)
    if config.mode == "static" or (config.mode == "auto" and config.static_token):
        if not config.static_token:
            raise AuthError("auth mode static needs a token: set OPENAI_API_KEY")
        return StaticAuthenticator(config.static_token, quota_project=config.quota_project)
    if config.credentials_file is not None:
        credentials, source = load_credentials_file(config.credentials_file, config.scopes)
    else:
        credentials, source = load_adc(config.scopes)
    if config.impersonate_service_account:
        from google.auth import impersonated_credentials

        credentials = impersonated_credentials.Credentials(  # type: ignore[no-untyped-call]
            source_credentials=credentials,
            target_principal=config.impersonate_service_account,
            target_scopes=list(config.scopes),
            lifetime=3600,
        )
        source = f"service account {config.impersonate_service_account} impersonated by {source}"
    quota_project = config.quota_project or getattr(credentials, "quota_project_id", None)
    return RefreshingAuthenticator(
        credentials,
        source=source,
        quota_project=quota_project,
        clock=clock,
        sleep=sleep,
        patience_s=config.patience_s,
    )
