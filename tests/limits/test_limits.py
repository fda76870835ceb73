"""Admission control on a virtual clock: rates, token weights, FIFO, cancellation, AIMD."""

from __future__ import annotations

import heapq
import itertools
import logging
import random
from collections.abc import Callable

import anyio
import anyio.lowlevel
import pytest

from batchrunner.limits.local import LimitConfig, LocalLimiter, Outcome, Permit, TokenEstimate
from tests.conftest import FakeClock

SMALL = TokenEstimate(10, 10)
OK = Outcome("ok")
BUSY = Outcome("throttled", retry_after=0.0, reason="dsq")  # the shared pool is full


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class VirtualClock:
    """For many tasks: time jumps to the next wake-up once every task is waiting."""

    def __init__(self) -> None:
        self.now = 0.0
        self._timers: list[tuple[float, int, anyio.Event]] = []
        self._seq = itertools.count()

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        event = anyio.Event()
        heapq.heappush(self._timers, (self.now + max(0.0, seconds), next(self._seq), event))
        await event.wait()

    async def settle(self) -> None:
        for _ in range(30):
            await anyio.lowlevel.checkpoint()

    async def advance(self, until: float) -> None:
        """Run every timer due up to ``until``, in order, then set the clock to ``until``."""
        await self.settle()
        while self._timers and self._timers[0][0] <= until:
            wake, _, event = heapq.heappop(self._timers)
            self.now = max(self.now, wake)
            event.set()  # a timer whose sleeper was cancelled fires into nothing
            await self.settle()
        self.now = max(self.now, until)
        await self.settle()


def limiter(config: LimitConfig, clock: FakeClock | VirtualClock, seed: int = 1) -> LocalLimiter:
    return LocalLimiter(config, clock=clock, sleep=clock.sleep, rng=random.Random(seed))


async def acquire_times(
    lim: LocalLimiter,
    clock: FakeClock,
    n: int,
    estimate: TokenEstimate = SMALL,
    outcome: Callable[[Permit], Outcome] = lambda _: OK,
) -> list[float]:
    times = []
    for _ in range(n):
        permit = await lim.acquire("m", estimate)
        times.append(round(clock(), 9))
        lim.release(permit, outcome(permit))
    return times


# --- rates ---------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_rpm_600_admits_a_one_second_burst_then_one_every_100ms() -> None:
    clock = FakeClock()
    lim = limiter(LimitConfig(rpm=600, adaptive=False), clock)
    times = await acquire_times(lim, clock, 30)
    assert times[:10] == [0.0] * 10
    assert times[10:] == pytest.approx([0.1 * k for k in range(1, 21)])
    assert clock.sleeps == pytest.approx([0.1] * 20)  # slept exactly until capacity freed


@pytest.mark.anyio
async def test_long_idle_does_not_bank_more_than_a_second_of_burst() -> None:
    clock = FakeClock()
    lim = limiter(LimitConfig(rpm=600, adaptive=False), clock)
    await acquire_times(lim, clock, 5)
    clock.now = 3600.0
    times = await acquire_times(lim, clock, 25)
    assert times.count(3600.0) == 10
    assert times[-1] == pytest.approx(3601.5)


@pytest.mark.anyio
async def test_rate_over_a_minute_matches_rpm_plus_one_burst() -> None:
    clock = FakeClock()
    lim = limiter(LimitConfig(rpm=120, adaptive=False), clock)
    times = await acquire_times(lim, clock, 300)
    assert sum(t < 60.0 for t in times) == 2 + 119  # the burst, then one every 0.5 s


@pytest.mark.anyio
async def test_tpm_weighs_input_plus_output_tokens() -> None:
    clock = FakeClock()
    lim = limiter(LimitConfig(tpm=60_000, adaptive=False), clock)  # 1000 tokens/s
    times = await acquire_times(lim, clock, 4, TokenEstimate(300, 200))
    assert times == pytest.approx([0.0, 0.0, 0.5, 1.0])


@pytest.mark.anyio
async def test_input_tpm_weighs_only_input_and_output_tpm_only_output() -> None:
    clock = FakeClock()
    lim = limiter(LimitConfig(input_tpm=60_000, output_tpm=6_000, adaptive=False), clock)
    # 100 output tokens per second is the tighter limit for this mix.
    times = await acquire_times(lim, clock, 4, TokenEstimate(500, 50))
    assert times == pytest.approx([0.0, 0.0, 0.5, 1.0])
    clock2 = FakeClock()
    lim2 = limiter(LimitConfig(input_tpm=60_000, output_tpm=6_000, adaptive=False), clock2)
    times2 = await acquire_times(lim2, clock2, 3, TokenEstimate(1000, 1))
    assert times2 == pytest.approx([0.0, 1.0, 2.0])


@pytest.mark.anyio
async def test_estimate_larger_than_the_bucket_passes_and_the_next_request_pays() -> None:
    clock = FakeClock()
    lim = limiter(LimitConfig(tpm=6_000, adaptive=False), clock)  # 100 tokens/s, bucket 100
    big = await lim.acquire("m", TokenEstimate(900, 100))
    assert clock() == 0.0
    lim.release(big, OK)
    small = await lim.acquire("m", TokenEstimate(50, 50))
    assert clock() == pytest.approx(10.0)
    lim.release(small, OK)


@pytest.mark.anyio
async def test_reconcile_credits_unused_tokens_to_the_bucket() -> None:
    clock = FakeClock()
    lim = limiter(LimitConfig(tpm=60_000, adaptive=False), clock)  # 1000 tokens/s
    estimate = TokenEstimate(200, 800)
    times = await acquire_times(
        lim, clock, 3, estimate, lambda _: Outcome("ok", input_tokens=200, output_tokens=100)
    )
    # Each used 300 of the 1000 tokens charged: the next starts 0.3 s later, not 1 s.
    assert times == pytest.approx([0.0, 0.3, 0.6])


@pytest.mark.anyio
async def test_reconcile_charges_usage_beyond_the_estimate() -> None:
    clock = FakeClock()
    lim = limiter(LimitConfig(output_tpm=6_000, adaptive=False), clock)  # 100 out tokens/s
    permit = await lim.acquire("m", TokenEstimate(10, 10))
    lim.release(permit, Outcome("ok", input_tokens=10, output_tokens=510))
    await lim.acquire("m", TokenEstimate(10, 10))
    assert clock() == pytest.approx(4.2)


@pytest.mark.anyio
async def test_throttled_request_gives_back_its_tokens_but_not_its_request() -> None:
    clock = FakeClock()
    lim = limiter(LimitConfig(rpm=60, tpm=60_000, adaptive=False, pause_base_s=0), clock)
    permit = await lim.acquire("m", TokenEstimate(900, 100))
    lim.release(permit, Outcome("throttled"))
    used = lim.statistics().models["m"].rate_used
    assert used["tpm"] == 0.0
    assert used["rpm"] == 1.0


@pytest.mark.anyio
async def test_rpm_holds_under_many_concurrent_workers() -> None:
    clock = VirtualClock()
    lim = limiter(LimitConfig(rpm=600, max_concurrency=1000, adaptive=False), clock)
    starts: list[float] = []

    async def worker() -> None:
        while True:
            permit = await lim.acquire("m", SMALL)
            starts.append(clock())
            await clock.sleep(0.5)
            lim.release(permit, OK)

    async with anyio.create_task_group() as tg:
        for _ in range(200):
            tg.start_soon(worker)
        await clock.advance(9.95)
        tg.cancel_scope.cancel()
    assert starts.count(0.0) == 10
    gaps = [b - a for a, b in itertools.pairwise(starts[10:])]
    assert min(gaps) == pytest.approx(0.1)
    assert len(starts) == 10 + 99


@pytest.mark.anyio
async def test_tokens_credited_by_a_release_wake_a_waiter_early() -> None:
    clock = VirtualClock()
    lim = limiter(LimitConfig(tpm=60_000, max_concurrency=10, adaptive=False), clock)
    first = await lim.acquire("m", TokenEstimate(0, 1000))  # the whole 1000-token bucket
    admitted_at: list[float] = []

    async def waiter() -> None:
        permit = await lim.acquire("m", TokenEstimate(0, 1000))
        admitted_at.append(clock())
        lim.release(permit, OK)

    async with anyio.create_task_group() as tg:
        tg.start_soon(waiter)
        await clock.advance(0.2)
        lim.release(first, Outcome("ok", input_tokens=0, output_tokens=100))
        await clock.advance(2.0)
    assert admitted_at == [pytest.approx(0.2)]


# --- fairness and cancellation -------------------------------------------------------------


@pytest.mark.anyio
async def test_waiters_are_served_first_come_first_served() -> None:
    clock = VirtualClock()
    lim = limiter(LimitConfig(max_concurrency=1, adaptive=False), clock)
    order: list[int] = []
    holder = await lim.acquire("m", SMALL)

    async def worker(k: int) -> None:
        permit = await lim.acquire("m", SMALL)
        order.append(k)
        await clock.sleep(1.0)
        lim.release(permit, OK)

    async with anyio.create_task_group() as tg:
        for k in range(5):
            tg.start_soon(worker, k)
            await clock.settle()
        assert lim.statistics().models["m"].waiting == 5
        lim.release(holder, OK)
        await clock.advance(10.0)
    assert order == [0, 1, 2, 3, 4]


@pytest.mark.anyio
async def test_a_small_request_does_not_overtake_a_big_one_waiting_for_tokens() -> None:
    clock = VirtualClock()
    lim = limiter(LimitConfig(tpm=60_000, max_concurrency=10, adaptive=False), clock)
    first = await lim.acquire("m", TokenEstimate(1000, 0))  # empties the 1000-token bucket
    lim.release(first, OK)
    admitted: list[tuple[str, float]] = []

    async def take(name: str, estimate: TokenEstimate) -> None:
        permit = await lim.acquire("m", estimate)
        admitted.append((name, clock()))
        lim.release(permit, OK)

    async with anyio.create_task_group() as tg:
        tg.start_soon(take, "big", TokenEstimate(1000, 0))
        await clock.settle()
        tg.start_soon(take, "small", TokenEstimate(1, 0))
        await clock.advance(5.0)
    assert [name for name, _ in admitted] == ["big", "small"]
    assert admitted[0][1] == pytest.approx(1.0)


@pytest.mark.anyio
async def test_cancelled_waiters_leave_no_slot_behind() -> None:
    clock = VirtualClock()
    lim = limiter(LimitConfig(max_concurrency=1, adaptive=False), clock)
    holder = await lim.acquire("m", SMALL)
    got: list[str] = []

    async def waiter(name: str, scope_out: list[anyio.CancelScope]) -> None:
        with anyio.CancelScope() as scope:
            scope_out.append(scope)
            permit = await lim.acquire("m", SMALL)
            got.append(name)
            lim.release(permit, OK)

    scopes: list[anyio.CancelScope] = []
    async with anyio.create_task_group() as tg:
        for name in ("head", "middle", "tail"):
            tg.start_soon(waiter, name, scopes)
            await clock.settle()
        scopes[0].cancel()  # the head of the queue
        scopes[1].cancel()  # one in the middle
        await clock.settle()
        stats = lim.statistics().models["m"]
        assert (stats.waiting, stats.in_flight) == (1, 1)
        lim.release(holder, OK)
        await clock.settle()
    assert got == ["tail"]
    stats = lim.statistics().models["m"]
    assert (stats.waiting, stats.in_flight) == (0, 0)
    permit = lim.acquire("m", SMALL)  # the slot is free again: no wait
    lim.release(await permit, OK)


@pytest.mark.anyio
async def test_waiter_cancelled_while_sleeping_for_rate_leaves_the_bucket_untouched() -> None:
    clock = VirtualClock()
    lim = limiter(LimitConfig(rpm=60, adaptive=False), clock)  # bucket of 1, 1 per second
    lim.release(await lim.acquire("m", SMALL), OK)
    async with anyio.create_task_group() as tg:
        tg.start_soon(lim.acquire, "m", SMALL)
        await clock.settle()
        tg.cancel_scope.cancel()
    assert lim.statistics().models["m"].admitted == 1
    await clock.advance(1.0)
    lim.release(await lim.acquire("m", SMALL), OK)
    assert clock() == 1.0


@pytest.mark.anyio
async def test_release_wakes_a_waiter_blocked_on_concurrency_at_once() -> None:
    clock = VirtualClock()
    lim = limiter(LimitConfig(max_concurrency=1, adaptive=False), clock)
    holder = await lim.acquire("m", SMALL)
    admitted_at: list[float] = []

    async def waiter() -> None:
        permit = await lim.acquire("m", SMALL)
        admitted_at.append(clock())
        lim.release(permit, OK)

    async with anyio.create_task_group() as tg:
        tg.start_soon(waiter)
        await clock.advance(2.5)
        lim.release(holder, OK)
        await clock.settle()
    assert admitted_at == [2.5]


@pytest.mark.anyio
async def test_releasing_a_permit_twice_is_an_error() -> None:
    lim = limiter(LimitConfig(), FakeClock())
    permit = await lim.acquire("m", SMALL)
    lim.release(permit, OK)
    with pytest.raises(RuntimeError, match="twice"):
        lim.release(permit, OK)


def test_unknown_outcome_kind_is_rejected() -> None:
    with pytest.raises(ValueError, match="outcome kind"):
        Outcome("fine")


# --- AIMD ----------------------------------------------------------------------------------


async def wave(lim: LocalLimiter, model: str, n: int, outcome: Outcome) -> None:
    """Send ``n`` requests at once, then let them all end with ``outcome``."""
    permits = [await lim.acquire(model, SMALL) for _ in range(n)]
    for permit in permits:
        lim.release(permit, outcome)


def window(lim: LocalLimiter, model: str = "m") -> int:
    return lim.statistics().models[model].concurrency_limit


@pytest.mark.anyio
async def test_slow_start_doubles_the_window_each_full_round_until_the_first_429() -> None:
    clock = FakeClock()
    lim = limiter(LimitConfig(initial_concurrency=4, max_concurrency=100), clock)
    await wave(lim, "m", 4, OK)
    assert window(lim) == 8
    await wave(lim, "m", 8, OK)
    assert window(lim) == 16


@pytest.mark.anyio
async def test_after_a_429_the_window_grows_by_about_one_per_round() -> None:
    clock = FakeClock()
    config = LimitConfig(initial_concurrency=20, max_concurrency=100, decrease_factor=0.5)
    lim = limiter(config, clock)
    await wave(lim, "m", 1, BUSY)
    assert window(lim) == 10
    for expected in (11, 12, 13):
        await wave(lim, "m", window(lim), OK)
        assert window(lim) == expected


@pytest.mark.anyio
async def test_a_burst_of_429s_from_one_round_shrinks_the_window_once() -> None:
    clock = FakeClock()
    config = LimitConfig(initial_concurrency=32, max_concurrency=64, decrease_factor=0.5)
    lim = limiter(config, clock)
    permits = [await lim.acquire("m", SMALL) for _ in range(32)]
    clock.now += 1.0
    for permit in permits:
        lim.release(permit, BUSY)
    assert window(lim) == 16
    # Requests sent after that decrease are a new round: their 429 counts again.
    await wave(lim, "m", 16, BUSY)
    assert window(lim) == 8


@pytest.mark.anyio
async def test_window_never_leaves_min_and_max_concurrency() -> None:
    clock = FakeClock()
    config = LimitConfig(initial_concurrency=4, min_concurrency=3, max_concurrency=6)
    lim = limiter(config, clock)
    await wave(lim, "m", 4, OK)
    for _ in range(10):
        await wave(lim, "m", window(lim), OK)
    assert window(lim) == 6
    for _ in range(10):
        await wave(lim, "m", 1, BUSY)
        clock.now += 1.0
    assert window(lim) == 3


@pytest.mark.anyio
async def test_window_does_not_grow_while_mostly_unused() -> None:
    clock = FakeClock()
    lim = limiter(LimitConfig(initial_concurrency=8, max_concurrency=64), clock)
    for _ in range(100):
        await wave(lim, "m", 1, OK)
    assert window(lim) == 8


@pytest.mark.anyio
async def test_non_adaptive_limiter_keeps_max_concurrency_through_429s() -> None:
    clock = FakeClock()
    lim = limiter(LimitConfig(max_concurrency=12, adaptive=False), clock)
    await wave(lim, "m", 12, BUSY)
    assert window(lim) == 12


@pytest.mark.anyio
async def test_cancelled_outcome_frees_the_slot_without_moving_the_window() -> None:
    clock = FakeClock()
    lim = limiter(LimitConfig(initial_concurrency=4, max_concurrency=64), clock)
    await wave(lim, "m", 4, Outcome("cancelled"))
    await wave(lim, "m", 4, Outcome("error"))
    stats = lim.statistics().models["m"]
    assert (stats.concurrency_limit, stats.in_flight, stats.cancelled, stats.errors) == (4, 0, 4, 4)


@pytest.mark.anyio
async def test_window_shrinks_gently_when_latency_rises_well_above_its_baseline() -> None:
    clock = FakeClock()
    lim = limiter(LimitConfig(initial_concurrency=40, max_concurrency=40), clock)
    for _ in range(2):
        await wave(lim, "m", 40, Outcome("ok", latency_s=1.0))
        clock.now += 1.0
    assert window(lim) == 40
    for _ in range(3):
        await wave(lim, "m", window(lim), Outcome("ok", latency_s=10.0))
        clock.now += 1.0
    assert 20 <= window(lim) < 40


@pytest.mark.anyio
async def test_noisy_latency_alone_does_not_shrink_the_window() -> None:
    clock = FakeClock()
    rng = random.Random(7)
    lim = limiter(LimitConfig(initial_concurrency=20, max_concurrency=20), clock)
    for _ in range(50):
        permits = [await lim.acquire("m", SMALL) for _ in range(20)]
        for permit in permits:
            latency = rng.lognormvariate(0.0, 0.8)  # heavy tail, steady median
            lim.release(permit, Outcome("ok", latency_s=latency))
        clock.now += 1.0
    assert window(lim) == 20


# --- pause after a 429 ---------------------------------------------------------------------


@pytest.mark.anyio
async def test_429_with_retry_after_pauses_the_whole_model_that_long() -> None:
    clock = FakeClock()
    lim = limiter(LimitConfig(max_concurrency=8), clock)
    permit = await lim.acquire("m", SMALL)
    lim.release(permit, Outcome("throttled", retry_after=39.0))
    assert lim.statistics().models["m"].paused_until == 39.0
    lim.release(await lim.acquire("m", SMALL), OK)
    assert clock() == pytest.approx(39.0)
    assert clock.sleeps == [pytest.approx(39.0)]


@pytest.mark.anyio
async def test_429_without_retry_after_pauses_with_jitter_that_grows_then_resets() -> None:
    clock = FakeClock()
    config = LimitConfig(max_concurrency=8, pause_base_s=1.0, pause_cap_s=30.0)
    lim = limiter(config, clock)
    pauses = []
    for _ in range(4):
        lim.release(await lim.acquire("m", SMALL), Outcome("throttled", reason="dsq"))
        pauses.append(lim.statistics().models["m"].paused_until - clock())  # type: ignore[operator]
        clock.now += 100.0
    for pause, ceiling in zip(pauses, (1, 2, 4, 8), strict=True):
        assert ceiling / 2 <= pause <= ceiling
    lim.release(await lim.acquire("m", SMALL), OK)
    lim.release(await lim.acquire("m", SMALL), Outcome("throttled", reason="dsq"))
    assert lim.statistics().models["m"].paused_until - clock() <= 1.0  # type: ignore[operator]


@pytest.mark.anyio
async def test_pause_jitter_differs_between_limiters_with_different_seeds() -> None:
    pauses = set()
    for seed in range(5):
        clock = FakeClock()
        lim = limiter(LimitConfig(), clock, seed=seed)
        lim.release(await lim.acquire("m", SMALL), Outcome("throttled", reason="dsq"))
        pauses.add(lim.statistics().models["m"].paused_until)
    assert len(pauses) == 5


@pytest.mark.anyio
async def test_models_are_limited_independently() -> None:
    clock = FakeClock()
    lim = limiter(LimitConfig(rpm=60, max_concurrency=1), clock)
    held = await lim.acquire("a", SMALL)
    lim.release(await lim.acquire("b", SMALL), Outcome("throttled", retry_after=60.0))
    lim.release(await lim.acquire("c", SMALL), OK)  # "a" holds its only slot, "b" is paused
    assert clock() == 0.0
    lim.release(held, OK)
    stats = lim.statistics().models
    assert stats["a"].paused_until is None
    assert stats["b"].paused_until == 60.0


@pytest.mark.anyio
async def test_per_model_config_overrides_the_default() -> None:
    clock = FakeClock()
    lim = LocalLimiter(
        LimitConfig(rpm=60, adaptive=False),
        per_model={"fast": LimitConfig(rpm=6000, adaptive=False)},
        clock=clock,
        sleep=clock.sleep,
    )
    for _ in range(150):  # a burst of 100, then one every 10 ms
        lim.release(await lim.acquire("fast", SMALL), OK)
    assert clock() == pytest.approx(0.5)


# --- finding an unknown quota ----------------------------------------------------------------


@pytest.mark.anyio
async def test_a_hard_quota_is_found_with_few_429s_when_answers_are_slow() -> None:
    clock = VirtualClock()
    lim = limiter(LimitConfig(max_concurrency=200), clock, seed=3)
    # A server that takes 4 requests/s (a one-second burst) and answers in 1 to 3 s: the
    # window that keeps it busy is about 4/s * 2 s = 8.
    quota_per_s = 4.0
    latencies = random.Random(5)
    server_tat = 0.0
    served = throttled = 0

    async def worker() -> None:
        nonlocal server_tat, served, throttled
        while True:
            permit = await lim.acquire("m", SMALL)
            now = clock()
            if server_tat - now <= 1.0:
                server_tat = max(server_tat, now) + 1 / quota_per_s
                latency = latencies.uniform(1.0, 3.0)
                await clock.sleep(latency)
                served += 1
                lim.release(permit, Outcome("ok", latency_s=latency))
            else:
                await clock.sleep(0.05)
                throttled += 1
                lim.release(permit, Outcome("throttled"))

    async with anyio.create_task_group() as tg:
        for _ in range(50):
            tg.start_soon(worker)
        await clock.advance(60.0)  # discovery
        served_before, throttled_before = served, throttled
        await clock.advance(300.0)
        tg.cancel_scope.cancel()
    steady_served = served - served_before
    steady_throttled = throttled - throttled_before
    assert steady_served >= 0.8 * quota_per_s * 240
    assert steady_throttled <= 0.1 * steady_served
    learned = lim.statistics().models["m"].learned_rpm
    assert learned is not None
    assert 0.7 * quota_per_s * 60 <= learned <= 1.3 * quota_per_s * 60


# --- learning a rate from quota 429s ----------------------------------------------------------

QUOTA_429 = Outcome("throttled", reason="quota")


class QuotaServer:
    """A hard requests/s quota like Vertex MaaS: a bucket holding one second of it."""

    def __init__(self, clock: VirtualClock, per_s: float) -> None:
        self.clock = clock
        self.per_s = per_s
        self.level = per_s
        self.stamp = 0.0
        self.open = True  # False: refuse everything (the quota is used up elsewhere)
        self.served: list[float] = []
        self.refused: list[float] = []

    def admit(self) -> bool:
        now = self.clock()
        self.level = min(self.per_s, self.level + (now - self.stamp) * self.per_s)
        self.stamp = now
        if self.open and self.level >= 1.0:
            self.level -= 1.0
            self.served.append(now)
            return True
        self.refused.append(now)
        return False

    def count(self, times: list[float], start: float, stop: float) -> int:
        return sum(1 for t in times if start <= t < stop)


async def run_against(
    lim: LocalLimiter,
    clock: VirtualClock,
    server: QuotaServer,
    until: float,
    *,
    workers: int = 8,
    at: Callable[[float], None] | None = None,
) -> None:
    """Keep ``workers`` busy sending to ``server`` (15 ms answers) until ``until``."""

    async def worker() -> None:
        while True:
            permit = await lim.acquire("m", SMALL)
            ok = server.admit()
            await clock.sleep(0.015 if ok else 0.002)
            lim.release(permit, OK if ok else QUOTA_429)

    async with anyio.create_task_group() as tg:
        for _ in range(workers):
            tg.start_soon(worker)
        step = 1.0
        t = clock()
        while t < until:
            t = min(until, t + step)
            await clock.advance(t)
            if at is not None:
                at(t)
        tg.cancel_scope.cancel()


@pytest.mark.anyio
async def test_learned_rate_converges_just_below_a_hard_quota_with_few_429s() -> None:
    clock = VirtualClock()
    lim = limiter(LimitConfig(max_concurrency=64), clock)
    server = QuotaServer(clock, per_s=10.0)  # far below what one request in flight could send
    await run_against(lim, clock, server, 120.0)
    steady_served = server.count(server.served, 20.0, 120.0)
    steady_refused = server.count(server.refused, 20.0, 120.0)
    assert steady_served >= 0.9 * 10.0 * 100
    assert steady_refused <= 0.05 * (steady_served + steady_refused)
    learned = lim.statistics().models["m"].learned_rpm
    assert learned is not None
    assert 0.8 * 600 <= learned <= 1.2 * 600


@pytest.mark.anyio
async def test_learned_rate_spreads_requests_evenly() -> None:
    clock = FakeClock()
    lim = limiter(LimitConfig(initial_concurrency=32, max_concurrency=64), clock)
    # Twenty requests go at once; the server lets ten through and refuses the rest.
    permits = [await lim.acquire("m", SMALL) for _ in range(20)]
    for k, permit in enumerate(permits):
        lim.release(permit, OK if k < 10 else QUOTA_429)
    learned = lim.statistics().models["m"].learned_rpm
    assert learned is not None
    assert learned < 20 * 60  # below what was sent: those still in flight may yet fail
    times = await acquire_times(lim, clock, 50)
    gaps = [b - a for a, b in itertools.pairwise(times)]
    interval = 60.0 / learned
    assert min(gaps) >= 0.95 * interval  # no bursts
    assert max(gaps) <= 1.05 * interval  # and no holes: the rate only creeps up


@pytest.mark.anyio
async def test_one_lone_429_does_not_throttle_the_model_to_a_crawl() -> None:
    clock = FakeClock()
    lim = limiter(LimitConfig(max_concurrency=64), clock)
    lim.release(await lim.acquire("m", SMALL), QUOTA_429)
    learned = lim.statistics().models["m"].learned_rpm
    assert learned is not None and learned >= 50  # about the one request/s it was sent at
    assert lim.statistics().models["m"].paused_until is None


@pytest.mark.anyio
async def test_learned_rate_never_exceeds_the_configured_rpm() -> None:
    clock = VirtualClock()
    lim = limiter(LimitConfig(rpm=600, max_concurrency=64), clock)
    server = QuotaServer(clock, per_s=12.0)  # more than we were told: rarely refuses
    noise = random.Random(4)
    peaks: list[float] = []

    def sample(_: float) -> None:
        peaks.append(lim.statistics().models["m"].learned_rpm or 0.0)

    original = server.admit

    def admit() -> bool:  # plus an odd 429 from elsewhere, so that the rate keeps moving
        return original() and noise.random() > 0.02

    server.admit = admit  # type: ignore[method-assign]
    await run_against(lim, clock, server, 120.0, at=sample)
    assert max(peaks) <= 600.0
    assert any(peaks)  # a rate was learned
    for start in range(0, 120, 10):
        sent = server.count(server.served + server.refused, start, start + 10)
        assert sent <= 600 / 6 + 10  # ten seconds of 600/min plus one second of burst


@pytest.mark.anyio
async def test_learned_rate_recovers_after_the_429s_stop() -> None:
    clock = VirtualClock()
    lim = limiter(LimitConfig(max_concurrency=64), clock)
    server = QuotaServer(clock, per_s=10.0)

    def outage(t: float) -> None:
        server.open = not 30.0 <= t < 45.0  # fifteen seconds in which everything is refused

    await run_against(lim, clock, server, 100.0, at=outage)
    assert server.count(server.served, 30.0, 45.0) == 0
    assert server.count(server.refused, 30.0, 45.0) <= 60  # it backed off hard
    assert server.count(server.served, 70.0, 100.0) >= 0.85 * 10.0 * 30


@pytest.mark.anyio
async def test_a_shared_pool_429_shrinks_the_window_and_learns_no_rate() -> None:
    clock = FakeClock()
    lim = limiter(LimitConfig(initial_concurrency=20, max_concurrency=64), clock)
    await wave(lim, "m", 20, Outcome("throttled", reason="dsq"))
    stats = lim.statistics().models["m"]
    assert stats.learned_rpm is None
    assert stats.concurrency_limit == 12
    assert stats.paused_until is not None


# --- what a 429 means, per family -------------------------------------------------------------

# Real DSQ 429s for paid Gemini users carry "check quota" although no quota is exceeded, so the
# classifier reads reason="quota" off them: the family decides, not the wording.
CHECK_QUOTA_429 = Outcome("throttled", reason="quota")


@pytest.mark.anyio
async def test_a_gemini_429_worded_check_quota_is_capacity_backs_off_and_learns_no_rate() -> None:
    clock = FakeClock()
    lim = limiter(LimitConfig(initial_concurrency=20, max_concurrency=64), clock)
    await wave(lim, "google/gemini-2.5-flash", 20, CHECK_QUOTA_429)
    stats = lim.statistics().models["google/gemini-2.5-flash"]
    assert stats.learned_rpm is None
    assert stats.concurrency_limit == 12
    assert stats.paused_until is not None
    assert stats.waiting_on == "429 backoff"


@pytest.mark.anyio
async def test_a_maas_429_is_its_per_minute_quota_even_when_worded_resource_exhausted() -> None:
    clock = FakeClock()
    lim = limiter(LimitConfig(initial_concurrency=20, max_concurrency=64), clock)
    await wave(lim, "openai/gpt-oss-120b-maas", 20, Outcome("throttled", reason="dsq"))
    stats = lim.statistics().models["openai/gpt-oss-120b-maas"]
    assert stats.learned_rpm is not None
    assert stats.paused_until is None  # the slower rate is the back-off


@pytest.mark.anyio
async def test_statistics_name_the_limit_a_waiting_model_waits_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = FakeClock()

    async def stay(_: float) -> None:  # time stands still: the waiter keeps waiting
        await anyio.sleep_forever()

    config = LimitConfig(rpm=120, max_concurrency=2, initial_concurrency=2)
    lim = LocalLimiter(config, clock=clock, sleep=stay)
    held = [await lim.acquire("m", SMALL), await lim.acquire("m", SMALL)]  # the burst: 2
    caplog.set_level(logging.INFO, logger="batchrunner.limits.local")
    async with anyio.create_task_group() as tg:
        tg.start_soon(lim.acquire, "m", SMALL)
        await anyio.wait_all_tasks_blocked()
        assert lim.statistics().models["m"].waiting_on == "window 2/2"
        lim.release(held.pop(), OK)
        await anyio.wait_all_tasks_blocked()
        # The second's burst (two requests at 120 RPM) is spent: the next waits on the rate.
        assert lim.statistics().models["m"].waiting_on == "rpm"
        tg.cancel_scope.cancel()
    # Logged once; the change to "rpm" came within LOG_HOLD_S of it, so it is not logged.
    assert [r.getMessage() for r in caplog.records] == ["m: waiting on window 2/2"]
