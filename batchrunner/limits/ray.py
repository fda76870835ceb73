"""One limiter for every worker of a Ray job: a named actor holds the job's limits.

:class:`LimiterService` runs as a Ray async actor and wraps a :class:`LocalLimiter`, so the
whole job shares one set of GCRA buckets, one rate learned from quota 429s (AIMD) and one
concurrency window. :class:`RayLimiter` is the client each worker hands its ``Runner``: it
implements the :class:`~batchrunner.limits.local.Limiter` protocol with one actor call per
admission and a fire-and-forget call per release.

Permits are held per *owner* (a shard). A worker that dies holding permits cannot give them
back; the next attempt at its shard calls :meth:`RayLimiter.start_attempt`, which returns
them. The service also counts the attempts at each shard and keeps what the first one found
already done, so that the job can tell a retry from a first run and count the rows an
attempt wrote before its worker died.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from typing import Any

import ray

from batchrunner.errors import AbortError
from batchrunner.limits.local import LocalLimiter
from batchrunner.limits.seam import LimitConfig, LimiterStatistics, Outcome, Permit, TokenEstimate

__all__ = ["LimiterService", "RayLimiter", "start_limiter"]

logger = logging.getLogger(__name__)

_Key = tuple[str, int]  # (owner, request number)


class LimiterService:
    """The actor's body (made remote by :func:`start_limiter`): a ``LocalLimiter`` whose permits
    are held here and named to workers by number."""

    def __init__(self, config: LimitConfig) -> None:
        self._limiter = LocalLimiter(config)
        self._held: dict[_Key, Permit] = {}
        self._waiting: dict[_Key, asyncio.Task[Any]] = {}
        self._attempts: dict[str, tuple[int, int]] = {}  # owner -> (attempts, first one's done)

    async def acquire(
        self, owner: str, request: int, model: str, input_tokens: int, output_tokens: int
    ) -> None:
        """Wait for admission; the permit stays here under ``(owner, request)``."""
        key = (owner, request)
        task = asyncio.current_task()
        if task is not None:
            self._waiting[key] = task
        try:
            permit = await self._limiter.acquire(model, TokenEstimate(input_tokens, output_tokens))
        finally:
            self._waiting.pop(key, None)
        self._held[key] = permit

    def release(self, owner: str, request: int, outcome: Outcome) -> None:
        permit = self._held.pop((owner, request), None)
        if permit is not None:
            self._limiter.release(permit, outcome)

    def abandon(self, owner: str, request: int) -> None:
        """The client stopped waiting: cancel the wait, or return the permit it got meanwhile."""
        key = (owner, request)
        task = self._waiting.pop(key, None)
        if task is not None:
            task.cancel()
        self.release(owner, request, Outcome("cancelled"))

    def start_attempt(self, owner: str, done: int) -> tuple[int, int]:
        """An attempt at ``owner`` starts and finds ``done`` requests already final.

        Returns the permits earlier attempts at ``owner`` still hold (their worker died), and
        ``(earlier attempts, done as the first attempt found it)``.
        """
        earlier, first_done = self._attempts.get(owner, (0, done))
        self._attempts[owner] = (earlier + 1, first_done)
        self.reset(owner)
        return earlier, first_done

    def reset(self, owner: str) -> int:
        """Return every permit ``owner`` holds or waits for (a worker died); how many."""
        keys = [k for k in (*self._held, *self._waiting) if k[0] == owner]
        for owner_, request in keys:
            self.abandon(owner_, request)
        if keys:
            logger.info("returned %d permits of %s", len(keys), owner)
        return len(keys)

    def statistics(self) -> LimiterStatistics:
        return self._limiter.statistics()


def start_limiter(
    config: LimitConfig, *, name: str | None = None, max_waiting: int = 10_000
) -> Any:
    """Start the job's limiter actor (named, so tools and other drivers can find it).

    It takes no CPU and is not restarted: a job whose limiter died stops its shards (they
    resume on the next run) rather than run on without limits.
    """
    remote_class: Any = ray.remote(LimiterService)
    actor = remote_class.options(
        name=name or f"batchrunner-limiter-{uuid.uuid4().hex[:12]}",
        num_cpus=0,
        max_concurrency=max(1000, max_waiting),
        max_restarts=0,
    )
    return actor.remote(config)


class RayLimiter:
    """The :class:`~batchrunner.limits.seam.Limiter` a worker uses: the shared actor admits."""

    def __init__(self, service: Any, owner: str) -> None:
        self._service = service
        self._owner = owner
        self._next = 0
        self._requests: dict[int, int] = {}  # id(permit) -> request number, while held

    async def start_attempt(self, done: int) -> tuple[int, int]:
        """Begin an attempt at this owner's shard: :meth:`LimiterService.start_attempt`."""
        earlier, first_done = await self._call(
            self._service.start_attempt.remote(self._owner, done)
        )
        return int(earlier), int(first_done)

    async def acquire(self, model: str, estimate: TokenEstimate) -> Permit:
        self._next += 1
        request = self._next
        ref = self._service.acquire.remote(
            self._owner, request, model, estimate.input_tokens, estimate.output_tokens
        )
        try:
            await self._call(ref)
        except BaseException:
            # Cancelled (or failed) while waiting: the service may still grant it; give it back.
            self._service.abandon.remote(self._owner, request)
            raise
        permit = Permit(self, model, estimate, time.monotonic(), 0, request)
        self._requests[id(permit)] = request
        return permit

    def release(self, permit: Permit, outcome: Outcome) -> None:
        request = self._requests.pop(id(permit), None)
        if request is None:
            raise RuntimeError("permit released twice or issued by another limiter")
        self._service.release.remote(self._owner, request, outcome)

    @staticmethod
    async def _call(ref: Any) -> Any:
        try:
            return await ref
        except ray.exceptions.RayActorError as exc:
            raise AbortError("the job's shared limiter (a Ray actor) is gone") from exc
