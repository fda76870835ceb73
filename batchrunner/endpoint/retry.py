"""When to try a failed request again, and how long to wait first.

A small policy (attempts, total time, full-jitter exponential backoff, the server's own
wait when it gave one) run by tenacity. Only a retryable :class:`RequestError` is ever
retried; cancellation and every other exception propagate at once.
"""

from __future__ import annotations

import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

import anyio
import tenacity

from batchrunner.errors import RETRY_AFTER_CAP_S, RequestError, backoff

__all__ = ["RetryPolicy", "call_with_retries", "retry_after"]


T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Up to ``max_attempts`` attempts per row within ``max_elapsed_s`` seconds.

    Waits are full-jitter exponential: uniform(0, min(cap_s, base_s * 2**(attempt-1))).
    When the server named a wait (``Retry-After`` or ``RetryInfo``) the wait is at least
    that, up to ``retry_after_cap_s``.
    """

    max_attempts: int = 6
    max_elapsed_s: float = 1800.0
    base_s: float = 1.0
    cap_s: float = 60.0
    retry_after_cap_s: float = RETRY_AFTER_CAP_S

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if min(self.max_elapsed_s, self.base_s, self.cap_s, self.retry_after_cap_s) < 0:
            raise ValueError("retry times must not be negative")

    @classmethod
    def no_wait(cls, max_attempts: int = 6) -> RetryPolicy:
        """The same decisions with every wait zero, for tests."""
        return cls(max_attempts=max_attempts, base_s=0.0, cap_s=0.0, retry_after_cap_s=0.0)

    def wait_for(
        self, attempt: int, error: RequestError, rng: random.Random | None = None
    ) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based)."""
        jittered = backoff(attempt, base_s=self.base_s, cap_s=self.cap_s, jitter="full", rng=rng)
        if error.retry_after is None:
            return jittered
        return min(max(error.retry_after, jittered), self.retry_after_cap_s)

    def should_retry(self, attempt: int, error: RequestError, elapsed_s: float) -> bool:
        """Whether attempt ``attempt + 1`` may start ``elapsed_s`` seconds after the first.

        Pass the time the next attempt would start (now plus the wait) so that no wait
        runs past the deadline.
        """
        return error.retryable and attempt < self.max_attempts and elapsed_s <= self.max_elapsed_s


async def call_with_retries(
    attempt_fn: Callable[[int], Awaitable[T]],
    policy: RetryPolicy,
    *,
    sleep: Callable[[float], Awaitable[None]] = anyio.sleep,
    clock: Callable[[], float] = time.monotonic,
    on_retry: Callable[[int, RequestError, float], None] | None = None,
    rng: random.Random | None = None,
) -> T:
    """Call ``attempt_fn(1)``, ``attempt_fn(2)``, … until one returns or retrying stops.

    ``attempt_fn`` raises :class:`RequestError` on failure. A retryable one is retried
    while ``policy`` allows it; the last error is raised unchanged. ``on_retry(attempt,
    error, wait)`` is called before each wait.
    """
    started = clock()
    # The first attempt runs outside tenacity: most rows succeed at once, and building a
    # retry controller for each of them was a measurable share of the pool's CPU.
    try:
        return await attempt_fn(1)
    except RequestError as exc:
        if not exc.retryable:
            raise
        first = exc
    return await retry_after(
        first, attempt_fn, policy, started, sleep=sleep, clock=clock, on_retry=on_retry, rng=rng
    )


async def retry_after(
    first: RequestError,
    attempt_fn: Callable[[int], Awaitable[T]],
    policy: RetryPolicy,
    started: float,
    *,
    sleep: Callable[[float], Awaitable[None]] = anyio.sleep,
    clock: Callable[[], float] = time.monotonic,
    on_retry: Callable[[int, RequestError, float], None] | None = None,
    rng: random.Random | None = None,
) -> T:
    """Go on from a first attempt, begun at ``clock()`` time ``started``, that raised the
    retryable ``first``: ``attempt_fn(2)``, ``attempt_fn(3)``, … as ``call_with_retries``.

    A caller that makes the first attempt itself (the common case: it succeeds) saves the
    coroutine around it.
    """
    first_error: RequestError | None = first
    attempt = 0

    def retry_if(state: tenacity.RetryCallState) -> bool:
        outcome = state.outcome
        if outcome is None or not outcome.failed:
            return False
        error = outcome.exception()
        return isinstance(error, RequestError) and error.retryable

    def wait(state: tenacity.RetryCallState) -> float:
        return policy.wait_for(state.attempt_number, _error_of(state), rng)

    def stop(state: tenacity.RetryCallState) -> bool:
        next_start = clock() - started + state.upcoming_sleep
        return not policy.should_retry(state.attempt_number, _error_of(state), next_start)

    def before_sleep(state: tenacity.RetryCallState) -> None:
        # The caller logs the retry, with the row it belongs to: one line per retry.
        if on_retry is not None:
            on_retry(state.attempt_number, _error_of(state), state.upcoming_sleep)

    async def one_attempt() -> T:
        nonlocal attempt, first_error
        attempt += 1
        if first_error is not None:
            # Replay the first attempt's failure so tenacity counts, waits and stops as if
            # it had made that attempt itself.
            error, first_error = first_error, None
            raise error
        return await attempt_fn(attempt)

    retrying = tenacity.AsyncRetrying(
        sleep=sleep,
        stop=stop,
        wait=wait,
        retry=retry_if,
        before_sleep=before_sleep,
        reraise=True,
    )
    return await retrying(one_attempt)


def _error_of(state: tenacity.RetryCallState) -> RequestError:
    # Only called once retry_if has accepted the outcome, so it is a RequestError.
    assert state.outcome is not None
    error = state.outcome.exception()
    assert isinstance(error, RequestError)
    return error
