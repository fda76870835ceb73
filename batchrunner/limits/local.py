"""Admission control per model: request and token rate limits plus adaptive concurrency.

Every request asks a :class:`Limiter` for a :class:`Permit` before it is sent and hands it
back with an :class:`Outcome` (``batchrunner.limits.seam``, re-exported here).
:class:`LocalLimiter` enforces RPM/TPM limits as GCRA
buckets holding about a second's worth of burst, learns a request rate from quota 429s
(an AIMD rate, paced so requests are spread evenly, below any configured RPM), bounds
requests in flight with an AIMD window that backs off from shared-capacity 429s, and
pauses a model after such a 429 so that waiting workers do not all retry into the same
wall. It computes when capacity frees up and sleeps exactly that long; it never polls.

What a 429 means depends on the model's family (``batchrunner.config.model_family``): a
Gemini pay-as-you-go model has no per-minute quota, only shared capacity (Dynamic Shared
Quota), whose 429s often also say "check quota": for Gemini every 429 backs off the window
and pauses briefly, and no rate is learned. A Vertex MaaS model (gpt-oss) has per-minute
quotas: its 429s teach a rate. For any other server the 429's wording decides.

While requests wait, the model remembers what holds them back (``rpm``, ``tpm``,
``input_tpm``, ``output_tpm``, ``429 backoff``, ``window n/N``): ``statistics()`` reports it
and a change of it is logged at INFO, once per change.
"""

from __future__ import annotations

import logging
import math
import random
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field

import anyio
import anyio.lowlevel

from batchrunner.config import model_family
from batchrunner.errors import backoff
from batchrunner.limits.pacing import Bucket, Meter, Pace
from batchrunner.limits.seam import (
    LimitConfig,
    Limiter,
    LimiterStatistics,
    ModelStatistics,
    Outcome,
    Permit,
    TokenEstimate,
)

__all__ = [
    "LimitConfig",
    "Limiter",
    "LimiterStatistics",
    "LocalLimiter",
    "ModelStatistics",
    "Outcome",
    "Permit",
    "TokenEstimate",
]

logger = logging.getLogger(__name__)

_EPSILON = 1e-9
# The probing increase stops doubling after this many doublings.
_MAX_PROBE_DOUBLINGS = 8
LOG_HOLD_S = 5.0  # the least time between two log lines about what holds a model back


def _weights(name: str, estimate: TokenEstimate) -> float:
    if name == "rpm":
        return 1.0
    if name == "tpm":
        return float(estimate.input_tokens + estimate.output_tokens)
    if name == "input_tpm":
        return float(estimate.input_tokens)
    return float(estimate.output_tokens)


@dataclass(slots=True, eq=False)
class _Waiter:
    promoted: anyio.Event = field(default_factory=anyio.Event)  # set when it heads the queue
    gone: bool = False  # cancelled while queued behind the head; dropped when reached


@dataclass(slots=True, eq=False)
class _Model:
    config: LimitConfig
    buckets: tuple[Bucket, ...]
    window: float
    in_flight: int = 0
    waiters: deque[_Waiter] = field(default_factory=deque)  # the head is never gone
    gone: int = 0
    wake: anyio.CancelScope | None = None
    paused_until: float = -math.inf
    epoch: int = 0
    slow_start: bool = True
    throttled_rounds: int = 0
    latency_avg: float | None = None
    latency_base: float | None = None
    latency_samples: int = 0
    admitted: int = 0
    busy_serial: int = 0  # the last admission that found the window at least half used
    meter: Meter = field(default_factory=Meter)
    pace: Pace | None = None  # the learned rate, once a quota 429 has been seen
    ok: int = 0
    throttled: int = 0
    errors: int = 0
    cancelled: int = 0
    quota_429s: bool | None = None  # a 429 is a per-minute quota (True), capacity (False)
    holding: str | None = None  # what the head waiter last waited on
    logged: str | None = None  # the kind of limit last logged
    logged_at: float = -math.inf

    @property
    def limit(self) -> int:
        return int(self.window + _EPSILON)


def quota_429s(model: str) -> bool | None:
    """Whether ``model``'s 429s mean a per-minute quota: False for Gemini (shared capacity,
    even when worded "check quota"), True for Vertex MaaS models (``…-maas``), None for
    others (the 429's own wording decides)."""
    if model_family(model) == "gemini":
        return False
    if model.lower().endswith("-maas"):
        return True
    return None


class LocalLimiter:
    """Per-model rate and concurrency limits within one process (implements :class:`Limiter`).

    ``config`` applies to every model not named in ``per_model``. Waiters are served
    first-come first-served per model; models never wait for each other.
    """

    def __init__(
        self,
        config: LimitConfig,
        *,
        per_model: Mapping[str, LimitConfig] | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = anyio.sleep,
        rng: random.Random | None = None,
    ) -> None:
        self._config = config
        self._per_model = dict(per_model or {})
        self._clock = clock
        self._sleep = sleep
        self._rng = rng or random.Random()
        self._models: dict[str, _Model] = {}

    async def acquire(self, model: str, estimate: TokenEstimate) -> Permit:
        """Wait for this model's turn and capacity, then take a permit.

        Cancelling a waiting caller leaves nothing behind.
        """
        state = self._model(model)
        if not state.waiters and self._admissible(state, estimate, self._clock()) is None:
            # No await on this path: the request that follows is the next checkpoint.
            return self._admit(model, state, estimate)
        waiter = _Waiter()
        state.waiters.append(waiter)
        try:
            if state.waiters[0] is not waiter:
                await waiter.promoted.wait()
            while (delay := self._admissible(state, estimate, self._clock())) is not None:
                self._note_holding(model, state, estimate)
                with anyio.CancelScope() as scope:
                    state.wake = scope
                    try:
                        if math.isinf(delay):
                            await anyio.sleep_forever()
                        else:
                            await self._sleep(delay)
                    finally:
                        state.wake = None
                # A wake-up and the caller's own cancellation may coincide; honour the latter.
                await anyio.lowlevel.checkpoint_if_cancelled()
        except BaseException:
            if state.waiters[0] is waiter:
                state.waiters.popleft()
                self._promote(state)
            else:  # O(1) even when thousands of waiters are cancelled at once
                waiter.gone = True
                state.gone += 1
            raise
        state.waiters.popleft()
        permit = self._admit(model, state, estimate)
        self._promote(state)
        return permit

    def release(self, permit: Permit, outcome: Outcome) -> None:
        """Give a permit back; reconcile token usage and adapt the window to the outcome."""
        permit.settle(self)
        state = self._models[permit.model]
        now = self._clock()
        state.in_flight -= 1
        self._reconcile(state, permit, outcome)
        if outcome.kind == "ok":
            state.ok += 1
            self._on_ok(state, permit, outcome, now)
        elif outcome.kind == "throttled":
            state.throttled += 1
            state.meter.add_refused(permit.acquired_at)
            quota = state.quota_429s
            if quota is None:  # neither Gemini nor MaaS: as the server words it
                quota = outcome.reason not in ("dsq", "provisioned_throughput")
            if state.config.adaptive and quota:
                self._on_quota(state, permit, outcome, now)
            else:
                self._on_throttled(state, permit, outcome, now)
        elif outcome.kind == "error":
            state.errors += 1
        else:
            state.cancelled += 1
        if state.wake is not None:
            state.wake.cancel()

    def statistics(self) -> LimiterStatistics:
        """A frozen snapshot of every model's state."""
        now = self._clock()
        return LimiterStatistics(
            models={
                name: ModelStatistics(
                    in_flight=state.in_flight,
                    waiting=len(state.waiters) - state.gone,
                    concurrency_limit=state.limit,
                    admitted=state.admitted,
                    ok=state.ok,
                    throttled=state.throttled,
                    errors=state.errors,
                    cancelled=state.cancelled,
                    paused_until=state.paused_until if state.paused_until > now else None,
                    rate_used={b.name: b.used(now) for b in state.buckets},
                    learned_rpm=None if state.pace is None else state.pace.per_s * 60.0,
                    waiting_on=self._waiting_on(state, now),
                )
                for name, state in self._models.items()
            }
        )

    def _model(self, model: str) -> _Model:
        state = self._models.get(model)
        if state is None:
            config = self._per_model.get(model, self._config)
            buckets = tuple(
                Bucket(name, rate, config.burst_s)
                for name in ("rpm", "tpm", "input_tpm", "output_tpm")
                if (rate := getattr(config, name)) is not None
            )
            state = _Model(config, buckets, float(config.start_concurrency))
            state.quota_429s = quota_429s(model)
            self._models[model] = state
        return state

    def _note_holding(self, model: str, state: _Model, estimate: TokenEstimate) -> None:
        """Remember what holds ``model``'s next request back; log a change of it once."""
        now = self._clock()
        if state.in_flight >= state.limit:
            holding = f"window {state.in_flight}/{state.limit}"
        elif state.paused_until > now:
            holding = "429 backoff"
        else:
            holding = "rpm"  # the learned rate, unless a bucket is further off
            ready = -math.inf if state.pace is None else state.pace.ready_at(now)
            for bucket in state.buckets:
                at = bucket.ready_at(_weights(bucket.name, estimate), now)
                if at > ready:
                    ready, holding = at, bucket.name
        state.holding = holding
        kind = holding.split(" ", 1)[0]
        # Once per change, and not more than every LOG_HOLD_S when two limits alternate.
        if kind != state.logged and now - state.logged_at >= LOG_HOLD_S:
            state.logged, state.logged_at = kind, now
            logger.info("%s: waiting on %s", model, holding)

    @staticmethod
    def _waiting_on(state: _Model, now: float) -> str | None:
        if state.paused_until > now:
            return "429 backoff"
        if len(state.waiters) - state.gone <= 0:
            return None
        if state.holding is not None and state.holding.startswith("window"):
            return f"window {state.in_flight}/{state.limit}"
        return state.holding

    def _admissible(self, state: _Model, estimate: TokenEstimate, now: float) -> float | None:
        """``None`` if a request may go now, else how long to wait (inf: until a release)."""
        if state.in_flight >= state.limit:
            return math.inf
        ready = state.paused_until
        if state.pace is not None:
            ready = max(ready, state.pace.ready_at(now))
        for bucket in state.buckets:
            ready = max(ready, bucket.ready_at(_weights(bucket.name, estimate), now))
        return None if ready <= now + _EPSILON else ready - now

    def _admit(self, model: str, state: _Model, estimate: TokenEstimate) -> Permit:
        now = self._clock()
        for bucket in state.buckets:
            bucket.charge(_weights(bucket.name, estimate), now)
        pace = state.pace
        paced = False
        if pace is not None:
            paced = pace.in_use(now)
            pace.charge(now)
        state.meter.add_sent(now)
        state.in_flight += 1
        state.admitted += 1
        if state.in_flight * 2 >= state.limit:
            state.busy_serial = state.admitted
        return Permit(
            self,
            model,
            estimate,
            now,
            state.epoch,
            state.admitted,
            rate_epoch=0 if pace is None else pace.epoch,
            paced=paced,
        )

    @staticmethod
    def _promote(state: _Model) -> None:
        waiters = state.waiters
        while waiters and waiters[0].gone:
            waiters.popleft()
            state.gone -= 1
        if waiters:
            waiters[0].promoted.set()

    @staticmethod
    def _reconcile(state: _Model, permit: Permit, outcome: Outcome) -> None:
        estimate = permit.estimate
        real_in = outcome.input_tokens
        real_out = outcome.output_tokens
        if outcome.kind == "throttled" and real_in is None and real_out is None:
            real_in = real_out = 0  # a rejected request used no tokens
        delta_in = 0 if real_in is None else real_in - estimate.input_tokens
        delta_out = 0 if real_out is None else real_out - estimate.output_tokens
        if not (delta_in or delta_out):
            return
        for bucket in state.buckets:
            if bucket.name == "tpm":
                bucket.adjust(delta_in + delta_out)
            elif bucket.name == "input_tpm":
                bucket.adjust(delta_in)
            elif bucket.name == "output_tpm":
                bucket.adjust(delta_out)

    def _on_ok(self, state: _Model, permit: Permit, outcome: Outcome, now: float) -> None:
        config = state.config
        state.throttled_rounds = 0
        if not config.adaptive:
            return
        pace = state.pace
        if pace is not None and permit.paced and permit.rate_epoch == pace.epoch:
            # ``rate_increase * base`` per second of successes at the learned pace (one step
            # per success, so that light load cannot inflate the rate) for ``rate_probe_s``
            # after a cut; then, with no 429 since, a probe: the rate itself times
            # ``rate_increase`` per second, doubled for every further ``rate_probe_s``.
            probes = min(_MAX_PROBE_DOUBLINGS, int((now - pace.since) / config.rate_probe_s))
            scale = pace.base if probes == 0 else pace.per_s * 2.0**probes
            step = config.rate_increase * scale / pace.per_s
            pace.per_s = min(self._ceiling(config), pace.per_s + step)
        if outcome.latency_s is not None and self._latency_rose(state, outcome.latency_s):
            if permit.epoch == state.epoch:
                self._decrease(state, 0.9, "latency rose")
            return
        # Grow only if the window was at least half used since this request was sent, so
        # that a spell of light load cannot inflate it.
        if state.busy_serial >= permit.serial:
            step = 1.0 if state.slow_start else 1.0 / state.limit
            state.window = min(float(config.max_concurrency), state.window + step)

    def _on_throttled(self, state: _Model, permit: Permit, outcome: Outcome, now: float) -> None:
        config = state.config
        # Throttles of requests sent before the last decrease belong to the wave that caused
        # it: they neither shrink the window again nor lengthen the pause.
        new_round = permit.epoch == state.epoch
        if new_round:
            state.throttled_rounds += 1
            if config.adaptive:
                self._decrease(state, config.decrease_factor, "throttled")
            else:
                state.epoch += 1
        if outcome.retry_after is not None:
            pause = min(max(0.0, outcome.retry_after), config.retry_after_cap_s)
        elif new_round:
            pause = backoff(
                state.throttled_rounds,
                base_s=config.pause_base_s,
                cap_s=config.pause_cap_s,
                jitter="equal",
                rng=self._rng,
            )
        else:
            return
        if now + pause > state.paused_until:
            state.paused_until = now + pause
            logger.debug("model %s paused for %.2fs after a 429", permit.model, pause)

    def _on_quota(self, state: _Model, permit: Permit, outcome: Outcome, now: float) -> None:
        """A 429 taken for a rate quota: cut the learned rate, pause only if told to."""
        config = state.config
        state.slow_start = False
        pace = state.pace
        if pace is None:
            # Start from what the server let through lately: while it refuses requests,
            # that is about its quota (plus the burst it held, hence the cut).
            admitted = max(state.meter.admitted_rate(now), config.min_rpm / 60.0)
            start = config.rate_decrease_factor * min(self._ceiling(config), admitted)
            state.pace = Pace(max(start, config.min_rpm / 60.0), now)
            logger.debug("model %s: learned rate %.1f/min", permit.model, start * 60.0)
        elif permit.rate_epoch == pace.epoch:
            # Later 429s of requests sent before this cut belong to the same overshoot.
            pace.per_s = max(config.min_rpm / 60.0, pace.per_s * config.rate_decrease_factor)
            pace.base = pace.per_s
            pace.since = now
            pace.epoch += 1
            pace.tat = max(pace.tat, now + 1.0 / pace.per_s)
            logger.debug("model %s: learned rate %.1f/min", permit.model, pace.per_s * 60.0)
        if outcome.retry_after is not None:
            pause = min(max(0.0, outcome.retry_after), config.retry_after_cap_s)
            if now + pause > state.paused_until:
                state.paused_until = now + pause
                logger.debug("model %s paused for %.2fs after a 429", permit.model, pause)

    @staticmethod
    def _ceiling(config: LimitConfig) -> float:
        """The highest rate a learned rate may reach, per second."""
        return math.inf if config.rpm is None else config.rpm / 60.0

    @staticmethod
    def _decrease(state: _Model, factor: float, why: str) -> None:
        config = state.config
        state.window = max(float(config.min_concurrency), state.window * factor)
        state.epoch += 1
        state.slow_start = False
        logger.debug("concurrency window now %d (%s)", state.limit, why)

    @staticmethod
    def _latency_rose(state: _Model, latency: float) -> bool:
        """Track a smoothed latency against a slowly rising floor; True when well above it."""
        tolerance = state.config.latency_tolerance
        if tolerance is None or latency < 0:
            return False
        state.latency_samples += 1
        average = latency if state.latency_avg is None else state.latency_avg
        average += 0.05 * (latency - average)
        state.latency_avg = average
        if state.latency_samples < 20:
            return False  # too few samples for the average to mean anything
        base = average if state.latency_base is None else state.latency_base
        # The floor follows the average down at once and up very slowly, so that a lasting
        # change in the prompt mix is eventually accepted as the new normal.
        base = average if average < base else base + 0.002 * (average - base)
        state.latency_base = base
        return average > tolerance * base
