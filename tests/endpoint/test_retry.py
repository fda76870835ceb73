"""Retry policy: what is retried, how often, how long it waits, and what is never swallowed."""

from __future__ import annotations

import random

import anyio
import anyio.lowlevel
import pytest

from batchrunner.endpoint.retry import RetryPolicy, call_with_retries
from batchrunner.errors import RequestError
from tests.conftest import FakeClock


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def server_error(retry_after: float | None = None) -> RequestError:
    return RequestError(
        "HTTP 503", error_type="server_error", status=503, retryable=True, retry_after=retry_after
    )


def permanent(status: int, error_type: str) -> RequestError:
    return RequestError(f"HTTP {status}", error_type=error_type, status=status)


class Script:
    """An attempt function that fails with the given errors, then returns "done"."""

    def __init__(self, *errors: BaseException, cost_s: float = 0.0, time: FakeClock | None = None):
        self.errors = list(errors)
        self.attempts: list[int] = []
        self.cost_s = cost_s
        self.time = time

    async def __call__(self, attempt: int) -> str:
        self.attempts.append(attempt)
        if self.time is not None:
            self.time.now += self.cost_s
        if self.errors:
            raise self.errors.pop(0)
        return "done"


async def run(script: Script, policy: RetryPolicy, time: FakeClock, **kwargs: object) -> str:
    return await call_with_retries(
        script,
        policy,
        sleep=time.sleep,
        clock=time,
        rng=random.Random(0),
        **kwargs,  # type: ignore[arg-type]
    )


@pytest.mark.anyio
async def test_retryable_errors_are_retried_until_success() -> None:
    time = FakeClock()
    script = Script(server_error(), server_error())
    assert await run(script, RetryPolicy(), time) == "done"
    assert script.attempts == [1, 2, 3]
    assert len(time.sleeps) == 2


@pytest.mark.anyio
async def test_gives_up_after_max_attempts_and_raises_the_last_error() -> None:
    time = FakeClock()
    errors = [server_error() for _ in range(10)]
    script = Script(*errors)
    with pytest.raises(RequestError) as caught:
        await run(script, RetryPolicy(max_attempts=4), time)
    assert caught.value is errors[3]
    assert script.attempts == [1, 2, 3, 4]
    assert len(time.sleeps) == 3


@pytest.mark.anyio
async def test_gives_up_when_the_next_attempt_would_start_after_max_elapsed() -> None:
    time = FakeClock()
    script = Script(*[server_error() for _ in range(100)], cost_s=40.0, time=time)
    policy = RetryPolicy(max_attempts=100, max_elapsed_s=100.0, base_s=0.0, cap_s=0.0)
    with pytest.raises(RequestError):
        await run(script, policy, time)
    assert script.attempts == [1, 2, 3]  # started at 0, 40 and 80 s; a 4th would start at 120 s


@pytest.mark.anyio
async def test_a_wait_that_would_cross_the_deadline_is_not_taken() -> None:
    time = FakeClock()
    script = Script(server_error(retry_after=600.0), server_error())
    with pytest.raises(RequestError):
        await run(script, RetryPolicy(max_elapsed_s=300.0), time)
    assert script.attempts == [1]
    assert time.sleeps == []


@pytest.mark.parametrize(
    ("status", "error_type"),
    [(400, "bad_request"), (400, "context_length"), (401, "unauthenticated"),
     (403, "permission_denied"), (404, "not_found")],
)  # fmt: skip
@pytest.mark.anyio
async def test_permanent_errors_are_never_retried(status: int, error_type: str) -> None:
    time = FakeClock()
    error = permanent(status, error_type)
    script = Script(error)
    with pytest.raises(RequestError) as caught:
        await run(script, RetryPolicy(), time)
    assert caught.value is error
    assert script.attempts == [1]
    assert time.sleeps == []


@pytest.mark.anyio
async def test_other_exceptions_propagate_without_a_retry() -> None:
    time = FakeClock()
    script = Script(KeyError("usage"))
    with pytest.raises(KeyError):
        await run(script, RetryPolicy(), time)
    assert script.attempts == [1]


@pytest.mark.anyio
async def test_server_retry_after_is_honoured_as_a_minimum_wait() -> None:
    time = FakeClock()
    script = Script(server_error(retry_after=39.0))
    await run(script, RetryPolicy(), time)
    assert time.sleeps == [39.0]


@pytest.mark.anyio
async def test_server_retry_after_is_capped() -> None:
    time = FakeClock()
    script = Script(server_error(retry_after=5000.0))
    await run(script, RetryPolicy(retry_after_cap_s=120.0), time)
    assert time.sleeps == [120.0]


def test_full_jitter_stays_within_the_exponential_ceiling() -> None:
    policy = RetryPolicy(base_s=1.0, cap_s=60.0)
    rng = random.Random(42)
    error = server_error()
    for attempt, ceiling in [(1, 1.0), (2, 2.0), (3, 4.0), (6, 32.0), (7, 60.0), (30, 60.0)]:
        waits = [policy.wait_for(attempt, error, rng) for _ in range(200)]
        assert all(0.0 <= w <= ceiling for w in waits)
        assert max(waits) > 0.8 * ceiling  # the whole range is used, not just its bottom
        assert min(waits) < 0.2 * ceiling


def test_same_seed_gives_the_same_waits() -> None:
    policy = RetryPolicy()
    first = [policy.wait_for(n, server_error(), random.Random(9)) for n in range(1, 6)]
    second = [policy.wait_for(n, server_error(), random.Random(9)) for n in range(1, 6)]
    assert first == second


def test_retry_after_is_a_floor_under_the_jittered_wait() -> None:
    policy = RetryPolicy(base_s=1.0, cap_s=60.0)
    rng = random.Random(1)
    waits = [policy.wait_for(8, server_error(retry_after=10.0), rng) for _ in range(200)]
    assert all(10.0 <= w <= 60.0 for w in waits)
    assert max(waits) > 50.0


@pytest.mark.anyio
async def test_backoff_schedule_is_recorded_without_real_sleeps() -> None:
    time = FakeClock()
    script = Script(*[server_error() for _ in range(5)])
    retries: list[tuple[int, str, float]] = []
    await run(
        script,
        RetryPolicy(base_s=1.0, cap_s=8.0),
        time,
        on_retry=lambda n, e, w: retries.append((n, e.error_type, w)),
    )
    expected_waits = [
        RetryPolicy(base_s=1.0, cap_s=8.0).wait_for(n, server_error(), rng)
        for rng in [random.Random(0)]
        for n in range(1, 6)
    ]
    assert time.sleeps == pytest.approx(expected_waits)
    assert [(n, kind) for n, kind, _ in retries] == [(n, "server_error") for n in range(1, 6)]
    assert [w for _, _, w in retries] == time.sleeps
    for n, wait in enumerate(time.sleeps, start=1):
        assert 0.0 <= wait <= min(8.0, 2.0 ** (n - 1))


@pytest.mark.anyio
async def test_no_wait_policy_retries_instantly() -> None:
    time = FakeClock()
    script = Script(server_error(retry_after=30.0), server_error(), server_error())
    assert await run(script, RetryPolicy.no_wait(), time) == "done"
    assert time.sleeps == [0.0, 0.0, 0.0]
    assert script.attempts == [1, 2, 3, 4]


@pytest.mark.anyio
async def test_cancellation_during_an_attempt_propagates_and_is_not_retried() -> None:
    attempts: list[int] = []

    async def hang(attempt: int) -> str:
        attempts.append(attempt)
        await anyio.sleep_forever()
        raise AssertionError("unreachable")

    with anyio.CancelScope() as scope:
        async with anyio.create_task_group() as tg:
            tg.start_soon(call_with_retries, hang, RetryPolicy.no_wait())
            await anyio.lowlevel.checkpoint()
            await anyio.lowlevel.checkpoint()
            scope.cancel()
    assert scope.cancelled_caught
    assert attempts == [1]


@pytest.mark.anyio
async def test_cancellation_during_a_backoff_wait_propagates() -> None:
    attempts: list[int] = []

    async def failing(attempt: int) -> str:
        attempts.append(attempt)
        raise server_error()

    async def sleep_forever(_: float) -> None:
        await anyio.sleep_forever()

    with anyio.CancelScope() as scope:
        async with anyio.create_task_group() as tg:
            tg.start_soon(lambda: call_with_retries(failing, RetryPolicy(), sleep=sleep_forever))
            for _ in range(5):
                await anyio.lowlevel.checkpoint()
            scope.cancel()
    assert scope.cancelled_caught
    assert attempts == [1]


def test_should_retry_needs_a_retryable_error_attempts_left_and_time_left() -> None:
    policy = RetryPolicy(max_attempts=3, max_elapsed_s=100.0)
    assert policy.should_retry(1, server_error(), 10.0)
    assert not policy.should_retry(3, server_error(), 10.0)
    assert not policy.should_retry(1, server_error(), 100.5)
    assert not policy.should_retry(1, permanent(404, "not_found"), 0.0)


def test_policy_rejects_nonsense() -> None:
    with pytest.raises(ValueError, match="max_attempts"):
        RetryPolicy(max_attempts=0)
    with pytest.raises(ValueError, match="negative"):
        RetryPolicy(base_s=-1.0)
