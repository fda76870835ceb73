"""Running one job's shards on a Ray cluster (``pip install 'batchrunner[ray]'``).

:func:`run_on_ray` plans the input's shards (``batchrunner.shards``), hands them to a Ray
Data actor pool (``from_items(plans).map_batches(AsyncShardRunner, batch_size=1)``) in which
every actor builds its own HTTP client and token refresher and runs the normal ``Runner`` on
one shard at a time, with admission by one job-wide limiter actor
(``batchrunner.ray_limiter``). Each shard writes its own durable file, exactly as
``--shard I/N`` does; when every shard has finished, they are merged into OUTPUT and the
shards' statistics into one summary. A shard whose actor dies is retried by Ray Data on a
fresh actor and resumes from what it committed.

Credentials never travel through Ray (a ``Secret`` refuses to be pickled): workers find
their own, from ``OPENAI_API_KEY`` in their environment or Application Default Credentials.
"""

from __future__ import annotations

import logging
import os
import pickle
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import ray
import ray.data

from batchrunner.auth import Secret
from batchrunner.config import RunConfig
from batchrunner.errors import AbortError, BatchRunnerError, ConfigError
from batchrunner.limits import LimitConfig
from batchrunner.ray_limiter import RayLimiter, start_limiter
from batchrunner.readers import check_input
from batchrunner.runner import Runner, RunSummary
from batchrunner.shards import find_shards, merge_run_stats, merge_shards, plan_shards, shard_path
from batchrunner.stats import RunStats

__all__ = ["AsyncShardRunner", "run_on_ray"]

logger = logging.getLogger(__name__)

SHARDS_PER_WORKER = 4


@dataclass(frozen=True, slots=True)
class _ShardOutcome:
    """What one shard's run sends back to the driver (pickled into the dataset)."""

    name: str
    summary: RunSummary | None
    stats: RunStats | None
    error: BatchRunnerError | None


class AsyncShardRunner:
    """A Ray Data callable class: runs the shards it is given, one after another.

    ``__call__`` is an async generator, which Ray Data runs on the actor's event loop
    (supported since Ray 2.4x for callable classes).
    """

    def __init__(self, config: RunConfig, limiter: Any, static_token: bool) -> None:
        auth = config.auth
        if static_token:
            # This is the worker process's edge: its environment is its configuration.
            token = os.environ.get("OPENAI_API_KEY")
            if not token:
                raise ConfigError(
                    "OPENAI_API_KEY is set for the driver but not on the Ray workers: set it "
                    "in the cluster's environment, or use Application Default Credentials"
                )
            auth = replace(auth, static_token=Secret(token))
        self._config = replace(config, auth=auth)
        self._limiter = limiter

    async def __call__(self, batch: Mapping[str, Any]) -> AsyncIterator[dict[str, Any]]:
        for index, count in zip(batch["index"], batch["count"], strict=True):
            outcome = await self._run_shard(int(index), int(count))
            yield {
                "shard": np.array([outcome.name]),
                "outcome": np.array([pickle.dumps(outcome)], dtype=object),
            }

    async def _run_shard(self, index: int, count: int) -> _ShardOutcome:
        cfg = self._config
        config = replace(
            cfg,
            shard=(index, count),
            output=shard_path(cfg.output, index, count),
            summary_path=None,
        )
        name = shard_path(cfg.output, index, count).name
        limiter = RayLimiter(self._limiter, owner=name)
        try:
            await limiter.reset()  # permits an earlier, crashed attempt left behind
            runner = Runner(config, limiter=limiter)
            summary = await runner.run()
        except BatchRunnerError as exc:
            logger.error("%s: %s", name, exc)
            return _ShardOutcome(name, None, None, exc)
        logger.info("%s: %d sent, %d skipped", name, summary.sent, summary.skipped)
        return _ShardOutcome(name, summary, runner.stats, None)


def _shard_count(config: RunConfig, shards: int | None, workers: int) -> int:
    """Shards to plan: as asked, else as OUTPUT already has (a re-run resumes), else 4/worker."""
    if shards is not None:
        return shards
    existing = find_shards(config.output)
    if len(existing) == 1:
        return next(iter(existing))
    if len(existing) > 1:
        counts = ", ".join(str(n) for n in existing)
        raise ConfigError(
            f"{config.output} has shard files of several plans ({counts} shards): pass --shards N"
        )
    return max(1, workers * SHARDS_PER_WORKER)


def run_on_ray(
    config: RunConfig,
    *,
    address: str | None = None,
    workers: int = 4,
    shards: int | None = None,
    num_cpus: float = 0.5,
    merge: bool = True,
) -> RunSummary:
    """Run ``config``'s job as shards on a Ray Data actor pool of ``workers`` actors.

    Connects to ``address`` (default: ``RAY_ADDRESS``, else a local Ray) unless Ray is
    already initialised. ``config.rpm``/``tpm`` are the whole job's and enforced by one
    shared limiter actor; ``config.concurrency`` is per worker. ``num_cpus`` is what each
    worker reserves (the work is network-bound). With ``merge`` the shard files are merged
    into ``config.output`` once every shard has finished cleanly.
    """
    if config.simulate is not None:
        raise ConfigError("--simulate runs in one process; use --base-url with --ray")
    if config.shard is not None:
        raise ConfigError("run_on_ray plans its own shards: pass a config without a shard")
    if workers < 1:
        raise ConfigError("--workers must be at least 1")
    check_input(config.input)
    count = _shard_count(config, shards, workers)
    plans = plan_shards(config.input, count)
    started_ray = not ray.is_initialized()
    if started_ray:
        ray.init(address=address, logging_level=logging.WARNING)
    started = time.monotonic()
    try:
        outcomes = _run_plans(config, [(p.index, p.count) for p in plans], workers, num_cpus)
    finally:
        if started_ray:
            ray.shutdown()
    wall = time.monotonic() - started
    for outcome in outcomes:
        if outcome.error is not None and not isinstance(outcome.error, AbortError):
            raise outcome.error  # a usage error: the same for every shard
    summaries = [o.summary for o in outcomes if o.summary is not None]
    stats = merge_run_stats(o.stats for o in outcomes if o.stats is not None)
    fatal = next((f"{o.name}: {o.error}" for o in outcomes if o.error is not None), None)
    fatal = fatal or next((f"{s.output.name}: {s.fatal}" for s in summaries if s.fatal), None)
    stopped = next((f"{s.output.name}: {s.stopped}" for s in summaries if s.stopped), None)
    if merge and fatal is None and stopped is None:
        merge_shards(config.output, count=count, ordered=config.ordered)
    return RunSummary(
        output=config.output,
        stats=stats.snapshot(wall_s=wall),
        sent=sum(s.sent for s in summaries),
        written=sum(s.written for s in summaries),
        skipped=sum(s.skipped for s in summaries),
        earlier_errors=sum(s.earlier_errors for s in summaries),
        bad_rows=sum(s.bad_rows for s in summaries),
        duplicates=sum(s.duplicates for s in summaries),
        wall_s=wall,
        stopped=stopped,
        fatal=fatal,
    )


def _run_plans(
    config: RunConfig, plans: list[tuple[int, int]], workers: int, num_cpus: float
) -> list[_ShardOutcome]:
    limiter = start_limiter(
        LimitConfig(
            rpm=config.rpm,
            tpm=config.tpm,
            input_tpm=config.input_tpm,
            output_tpm=config.output_tpm,
            max_concurrency=config.concurrency * workers,
            adaptive=config.adaptive,
        ),
        max_waiting=2 * config.concurrency * workers + 64,
    )
    try:
        shipped = replace(config, auth=replace(config.auth, static_token=None))
        items = [{"index": i, "count": n} for i, n in plans]
        dataset = ray.data.from_items(items, override_num_blocks=len(items)).map_batches(
            AsyncShardRunner,
            batch_size=1,
            compute=ray.data.ActorPoolStrategy(size=min(workers, len(items))),
            num_cpus=num_cpus,
            fn_constructor_kwargs={
                "config": shipped,
                "limiter": limiter,
                "static_token": config.auth.static_token is not None,
            },
        )
        rows = dataset.take_all()
    finally:
        ray.kill(limiter)
    outcomes = [pickle.loads(row["outcome"]) for row in rows]  # noqa: S301 (our own workers)
    return sorted(outcomes, key=lambda o: o.name)
