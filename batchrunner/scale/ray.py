"""Running one job's shards on a Ray cluster (``pip install 'batchrunner[ray]'``).

:func:`run_on_ray` plans the input's shards (``batchrunner.input.shards``), hands them to a Ray
Data actor pool (``from_items(plans).map_batches(ShardRunner, batch_size=1)``) in which
every actor builds its own HTTP client and token refresher and runs the normal ``Runner`` on
one shard at a time, with admission by one job-wide limiter actor
(``batchrunner.limits.ray``). Each shard writes its own durable file, exactly as
``--shard I/N`` does; when every shard has finished, they are merged into OUTPUT and the
job's summary is read back from it. A shard whose actor dies is retried by Ray on the
restarted actor, before any other shard, and resumes from what it committed.

Credentials never travel through Ray (a ``Secret`` refuses to be pickled): workers find
their own, from ``OPENAI_API_KEY`` in their environment or Application Default Credentials.
"""

from __future__ import annotations

import logging
import os
import pickle
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import numpy as np
import ray
import ray.data

from batchrunner.config import RunConfig, Secret, shard_path
from batchrunner.errors import AbortError, BatchRunnerError, ConfigError
from batchrunner.input.readers import check_input
from batchrunner.input.shards import plan_shards
from batchrunner.limits.local import LimitConfig
from batchrunner.limits.ray import RayLimiter, start_limiter
from batchrunner.output.merge import find_shards, merge_shards
from batchrunner.output.resume import load_resume_state
from batchrunner.pipeline.gctune import collect_less_often
from batchrunner.pipeline.runner import Runner, RunSummary
from batchrunner.pipeline.stop_signals import StopSignals
from batchrunner.report.files import read_run_stats
from batchrunner.stats.run_stats import RunStats

__all__ = ["ShardRunner", "run_on_ray"]

logger = logging.getLogger(__name__)

SHARDS_PER_WORKER = 4


@dataclass(frozen=True, slots=True)
class _ShardOutcome:
    """What one shard's run sends back to the driver (pickled into the dataset)."""

    name: str
    summary: RunSummary | None
    stats: RunStats | None
    error: BatchRunnerError | None
    earlier_attempts: int = 0  # attempts at this shard in this job whose worker died
    done_before: int = 0  # requests already final when the job's first attempt started

    @property
    def rows_of_dead_attempts(self) -> int:
        """Rows that attempts which died committed, and this one therefore skipped."""
        if self.summary is None or not self.earlier_attempts:
            return 0
        return max(0, self.summary.skipped - self.done_before)


class ShardRunner:
    """A Ray Data callable class: runs each shard it is given to the end, on its own event loop.

    It is a plain callable rather than an async one: Ray Data's support for async callables
    differs between Ray versions (2.47 cannot start one in a worker where uvloop is
    installed), while a plain callable running ``anyio.run`` works the same on all of them.
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
        collect_less_often()  # the actor's process exists to run shards

    def __call__(self, batch: Mapping[str, Any]) -> dict[str, Any]:
        outcomes = [
            anyio.run(
                self._run_shard,
                int(index),
                int(count),
                backend="asyncio",
                backend_options={"use_uvloop": True},
            )
            for index, count in zip(batch["index"], batch["count"], strict=True)
        ]
        return {
            "shard": np.array([o.name for o in outcomes]),
            "outcome": np.array([pickle.dumps(o) for o in outcomes], dtype=object),
        }

    async def _run_shard(self, index: int, count: int) -> _ShardOutcome:
        cfg = self._config
        output = shard_path(cfg.output, index, count)
        name = output.name
        limiter = RayLimiter(self._limiter, owner=name)
        try:
            # What the shard held before this attempt (the runner reads it again): kept for the
            # job by the first attempt, so that rows a dying attempt wrote are told apart from
            # rows of earlier runs. Starting the attempt also frees the permits it left.
            done = 0
            if not cfg.restart:
                done = await anyio.to_thread.run_sync(_requests_done, output, cfg.retry_failed)
            earlier, done_before = await limiter.start_attempt(done)
            # A retry resumes what the attempts before it committed, even under --restart.
            config = replace(
                cfg,
                shard=(index, count),
                output=output,
                summary_path=None,
                restart=cfg.restart and not earlier,
            )
            runner = Runner(config, limiter=limiter)
            summary = await runner.run()
        except BatchRunnerError as exc:
            logger.error("%s: %s", name, exc)
            return _ShardOutcome(name, None, None, exc)
        if earlier:
            logger.warning("%s: attempt %d finished the shard", name, earlier + 1)
        logger.info("%s: %d sent, %d skipped", name, summary.sent, summary.skipped)
        return _ShardOutcome(name, summary, runner.stats, None, earlier, done_before)


def _requests_done(output: Path, retry_failed: bool) -> int:
    """Requests a shard's output already holds as final (none for a shard not yet started)."""
    state = load_resume_state(output)
    try:
        return state.count_done(retry_failed=retry_failed)
    finally:
        state.close()


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
    signals: StopSignals | None = None,
) -> RunSummary:
    """Run ``config``'s job as shards on a Ray Data actor pool of ``workers`` actors.

    Connects to ``address`` (default: ``RAY_ADDRESS``, else a local Ray) unless Ray is
    already initialised. ``config.rpm``/``tpm`` are the whole job's and enforced by one
    shared limiter actor; ``config.concurrency`` is per worker. ``num_cpus`` is what each
    worker reserves (the work is network-bound). With ``merge`` the shard files are merged
    into ``config.output`` once every shard has finished cleanly.

    With ``signals`` (installed by the caller), a SIGINT/SIGTERM to the driver stops the job:
    Ray is shut down, which ends every worker (the kernel releases their output locks, and a
    lock file left behind is locked again by the next run), each shard keeps what it
    committed, and the summary says the job stopped, so a rerun resumes every shard.
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
    stopped_by: str | None = None
    try:
        if signals is not None:
            signals.listen(_interrupt_driver)
            if signals.first is not None:
                raise KeyboardInterrupt
        outcomes = _run_plans(config, [(p.index, p.count) for p in plans], workers, num_cpus)
    except KeyboardInterrupt:
        if signals is None or signals.first is None:
            raise
        stopped_by = signals.first
    finally:
        if signals is not None:
            signals.listen(None)
        if started_ray or stopped_by is not None:
            ray.shutdown()  # ends the workers: what each shard committed stays
    wall = time.monotonic() - started
    if stopped_by is not None:
        return _stopped_summary(config, f"{stopped_by} received", wall)
    for outcome in outcomes:
        if outcome.error is not None and not isinstance(outcome.error, AbortError):
            raise outcome.error  # a usage error: the same for every shard
    return _job_summary(config, outcomes, count, merge=merge, wall_s=wall)


def _interrupt_driver(name: str) -> None:
    """The driver waits in Ray's calls: leave them the way Ray expects a stop to come."""
    raise KeyboardInterrupt(name)


def _stopped_summary(config: RunConfig, reason: str, wall_s: float) -> RunSummary:
    return RunSummary(
        output=config.output,
        stats=RunStats().snapshot(wall_s=wall_s),
        sent=0,
        written=0,
        skipped=0,
        earlier_errors=0,
        bad_rows=0,
        duplicates=0,
        wall_s=wall_s,
        stopped=f"{reason}; every shard resumes from what it committed",
        fatal=None,
    )


def _job_summary(
    config: RunConfig, outcomes: Sequence[_ShardOutcome], count: int, *, merge: bool, wall_s: float
) -> RunSummary:
    """Merge the shards once all finished cleanly, and sum up the job from its output."""
    finished = [(o, o.summary) for o in outcomes if o.summary is not None]
    summaries = [s for _, s in finished]
    fatal = next((f"{o.name}: {o.error}" for o in outcomes if o.error is not None), None)
    fatal = fatal or next((f"{s.output.name}: {s.fatal}" for s in summaries if s.fatal), None)
    stopped = next((f"{s.output.name}: {s.stopped}" for s in summaries if s.stopped), None)
    if fatal is None and stopped is None:
        if merge:
            merge_shards(config.output, count=count, ordered=config.ordered)
        files = (
            [config.output]
            if merge
            else [shard_path(config.output, i, count) for i in range(count)]
        )
        stats = read_run_stats(files).snapshot(wall_s=wall_s)
    else:
        # Unfinished shards cannot be read back: count what the last attempts wrote.
        merged = RunStats()
        for o in outcomes:
            if o.stats is not None:
                merged.merge(o.stats)
        stats = merged.snapshot(wall_s=wall_s)
    # Rows committed by an attempt whose worker died were skipped by the attempt that
    # finished its shard: this job wrote them, no earlier run did.
    lost = sum(o.rows_of_dead_attempts for o, _ in finished)
    return RunSummary(
        output=config.output,
        stats=stats,
        sent=sum(s.sent for s in summaries) + lost,
        written=sum(s.written for s in summaries) + lost,
        skipped=sum(s.skipped for s in summaries) - lost,
        earlier_errors=sum(s.earlier_errors for s in summaries),
        bad_rows=sum(s.bad_rows for s in summaries),
        duplicates=sum(s.duplicates for s in summaries),
        wall_s=wall_s,
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
        # One shard per actor at a time: a shard whose actor dies is then the first thing the
        # restarted actor runs, rather than waiting behind another shard queued on it.
        pool = ray.data.ActorPoolStrategy(
            size=min(workers, len(items)), max_tasks_in_flight_per_actor=1
        )
        dataset = ray.data.from_items(items, override_num_blocks=len(items)).map_batches(
            ShardRunner,
            batch_size=1,
            compute=pool,
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
