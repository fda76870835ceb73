"""The pool: stream rows in, send them concurrently within limits, write every result once.

One task group per run. A producer (``batchrunner.pipeline.producer``) reads the input in a worker
thread and feeds a bounded queue; workers take requests, pass the limiter, call the
endpoint with retries and hand results to a single writer, which batches them to disk and
checkpoints. Memory is bounded by the queues and the requests in flight, never by the
input's size.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import httpx

from batchrunner.auth.tokens import Authenticator, build_authenticator
from batchrunner.config import RunConfig
from batchrunner.endpoint.client import ChatClient
from batchrunner.endpoint.placements import placement_hint
from batchrunner.endpoint.retry import RetryPolicy
from batchrunner.endpoint.urls import VertexTarget, chat_completions_url
from batchrunner.endpoint.wire import AiohttpWire, HttpxWire, Wire
from batchrunner.errors import (
    AbortError,
    BatchRunnerError,
    ConfigError,
    OutputError,
)
from batchrunner.input.columns import check_fields
from batchrunner.input.readers import check_input
from batchrunner.limits.local import LimitConfig, Limiter, LocalLimiter
from batchrunner.limits.seam import share
from batchrunner.output.keyindex import remove_index_dir
from batchrunner.output.ondisk import index_dir
from batchrunner.output.opening import index_memory_bytes, open_run_output
from batchrunner.output.resume import (
    ResumeState,
    record_budget_spent,
)
from batchrunner.output.writers import ResultWriter
from batchrunner.pipeline.counters import Counters, LaneCounts
from batchrunner.pipeline.dryrun import EstimateCheck, EstimateComparison
from batchrunner.pipeline.first_answers import FirstContact
from batchrunner.pipeline.lanes import lane_models
from batchrunner.pipeline.producer import READ_CHUNK, Producer
from batchrunner.pipeline.queues import ResultBuffer, WorkQueue
from batchrunner.pipeline.run_control import RunControl
from batchrunner.pipeline.sender import Sender
from batchrunner.pipeline.stop_signals import StopSignals
from batchrunner.pipeline.tiers import flex_unsupported, tier_plan
from batchrunner.results import RequestSpec, Result
from batchrunner.stats.pricing import PriceTable
from batchrunner.stats.run_stats import RunStats, StatsSnapshot

logger = logging.getLogger(__name__)

# The writer waits up to WRITE_WITHIN_S for WRITE_BATCH results, so a busy run crosses
# into the writer's thread a few times a second rather than once per handful of rows.
WRITE_BATCH = 512
WRITE_WITHIN_S = 0.05
RESULTS_PENDING = 4096  # results the writer may fall behind by before workers wait


@dataclass(frozen=True, slots=True)
class RunSummary:
    """What a run did, for the CLI's exit status and summary."""

    output: Path
    stats: StatsSnapshot
    sent: int
    written: int
    skipped: int  # already final in the output (resume)
    earlier_errors: int  # error rows kept from an earlier run
    bad_rows: int
    duplicates: int
    wall_s: float
    stopped: str | None  # why admission stopped early, if it did
    fatal: str | None  # the one-line reason of an abort
    budget_spent: bool = False  # stopped because the job's --max-cost is spent
    earlier_spent_usd: float = 0.0  # what earlier runs into OUTPUT spent (their rows)
    # per model, the dry run's estimate for this run's answered requests beside their cost
    estimates: tuple[EstimateComparison, ...] = ()

    @property
    def exit_status(self) -> int:
        if self.fatal is not None:
            return 3
        if self.stopped is not None:
            return 3
        return 1 if self.stats.total.errors or self.earlier_errors else 0


class Runner:
    """Runs one batch. Every collaborator can be injected; by default the config builds them."""

    def __init__(
        self,
        config: RunConfig,
        *,
        url: str | None = None,
        model_urls: Mapping[str, str] | None = None,
        authenticator: Authenticator | None = None,
        limiter: Limiter | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        wire: Wire | None = None,
        prices: PriceTable | None = None,
        retry_policy: RetryPolicy | None = None,
        on_progress: Callable[[Counters], None] | None = None,
        handle_signals: bool | StopSignals = False,
    ) -> None:
        self.config = config
        self._url = url
        self._model_urls = model_urls
        self._auth = authenticator
        self._limiter = limiter
        if wire is not None and transport is not None:
            raise ValueError("pass a wire or a transport, not both")
        self._transport = transport
        self._given_wire = wire
        self._prices = prices
        self._policy = retry_policy or RetryPolicy(
            max_attempts=config.max_attempts, max_elapsed_s=config.max_row_s
        )
        self._on_progress = on_progress
        self._handle_signals = handle_signals
        self.counters = Counters()
        self.stats = RunStats()
        self._control = RunControl(
            ""
            if config.base_url
            else placement_hint(config.models, lambda m: config.target_of(m)[0])
        )
        self._estimates: EstimateCheck | None = None  # set once the run knows its prices
        self._producers: list[Producer] = []
        self._limiter_in_use: Limiter | None = None
        # "starting" until requests may flow, "sending", then "finishing" (the final commit
        # and compaction): what a stop signal can still do depends on it.
        self._phase = "starting"

    # -- setup -----------------------------------------------------------------------------

    def _resolve_url(self) -> str:
        if self._url:
            return chat_completions_url(self._url)
        cfg = self.config
        if cfg.base_url:
            return chat_completions_url(cfg.base_url)
        if not cfg.project:
            raise ConfigError(
                "no Vertex project: pass --project or set GOOGLE_CLOUD_PROJECT "
                "(or --base-url for another OpenAI-compatible server, or --simulate)"
            )
        target = VertexTarget(cfg.project, cfg.location, cfg.endpoint_id, cfg.api_version)
        return chat_completions_url(target.base_url())

    def _resolve_model_urls(self) -> dict[str, str]:
        """Each model with an address of its own, to its chat-completions URL (built once)."""
        if self._model_urls is not None:
            return {m: chat_completions_url(u) for m, u in self._model_urls.items()}
        cfg = self.config
        if not cfg.model_targets:
            return {}
        if self._url or not cfg.project:
            raise ConfigError(
                "a model's own location (MODEL@LOCATION) needs a Vertex target (--project); "
                "a Runner given url= takes model_urls= for it"
            )
        urls = {}
        for model in cfg.model_targets:
            location, endpoint = cfg.target_of(model)
            target = VertexTarget(cfg.project, location, endpoint, cfg.api_version)
            urls[model] = chat_completions_url(target.base_url())
        return urls

    def _wire(self) -> Wire:
        """The wire given, an httpx transport's, or aiohttp's; the run closes it when done."""
        cfg = self.config
        if self._given_wire is not None:
            return self._given_wire
        if self._transport is not None:
            return HttpxWire(
                self._transport,
                connect_timeout_s=cfg.connect_timeout_s,
                read_timeout_s=cfg.timeout_s,
            )
        # One keep-alive connection per request in flight (each lane has --concurrency), so
        # no request waits for a connection and every timing starts when it really leaves.
        return AiohttpWire(
            connections=cfg.concurrency * len(lane_models(cfg)),
            connect_timeout_s=cfg.connect_timeout_s,
            read_timeout_s=cfg.timeout_s,
        )

    async def run(self) -> RunSummary:
        """Run the batch against ``url``, or the target the config names.

        Raises ``UsageError`` (bad input file, config) before anything is sent, and
        ``BatchRunnerError`` subclasses rather than exception groups.
        """
        try:
            if self._handle_signals is False:
                return await self._run_target()
            return await self._run_with_signals()
        except BaseExceptionGroup as group:
            first = _first_batchrunner_error(group)
            if first is None:
                raise
            raise first from None

    async def _run_with_signals(self) -> RunSummary:
        """Run with SIGINT/SIGTERM handled from the first line to the last rename."""
        given = self._handle_signals
        signals = given if isinstance(given, StopSignals) else StopSignals().install()
        try:
            async with anyio.create_task_group() as tg:
                await tg.start(self._watch_signals, signals)
                summary = await self._run_target()
                tg.cancel_scope.cancel()
            return summary
        finally:
            signals.listen(None)
            if signals is not given:
                signals.restore()

    async def _run_target(self) -> RunSummary:
        if self.config.simulate is not None and self._url is None:
            # The simulator is started above the pipeline (batchrunner.run), which passes
            # its URL and credentials in; a Runner built by hand must do the same.
            raise ConfigError(
                "RunConfig.simulate is started by batchrunner.run(); a Runner needs url= "
                "and authenticator= for a simulator it did not start"
            )
        return await self._run(self._resolve_url())

    async def _run(self, url: str) -> RunSummary:
        cfg = self.config
        await anyio.to_thread.run_sync(check_input, cfg.input)
        await anyio.to_thread.run_sync(check_fields, cfg.input, cfg.fields)
        prices = self._prices or PriceTable.for_run(cfg.prices_path)
        self._prices = prices
        # google.auth.default() may probe the metadata server: keep it off the event loop.
        auth = self._auth
        if auth is None:
            auth = await anyio.to_thread.run_sync(build_authenticator, cfg.auth)
        # A shard takes its share of the job's rate limits; an injected limiter is used as is.
        limiter = self._limiter or LocalLimiter(
            LimitConfig(
                rpm=share(cfg.rpm, cfg.shard),
                tpm=share(cfg.tpm, cfg.shard),
                input_tpm=share(cfg.input_tpm, cfg.shard),
                output_tpm=share(cfg.output_tpm, cfg.shard),
                min_rpm=min(1.0, share(cfg.rpm, cfg.shard) or 1.0),
                max_concurrency=cfg.concurrency,
                adaptive=cfg.adaptive,
            )
        )
        self._limiter_in_use = limiter
        state, writer = await anyio.to_thread.run_sync(open_run_output, cfg)
        self._estimates = await anyio.to_thread.run_sync(EstimateCheck.for_run, cfg, prices)
        started = time.monotonic()
        clean = False
        try:
            wire = self._wire()
            try:
                tiers = tier_plan(cfg, url)
                client = ChatClient(
                    wire,
                    url,
                    auth,
                    headers=tiers.headers,
                    model_headers=tiers.model_headers,
                    model_urls=self._resolve_model_urls(),
                )
                sender = Sender(
                    client,
                    limiter,
                    self._policy,
                    prices,
                    self.stats,
                    self.counters,
                    fail_on=cfg.fail_on,
                    contact=FirstContact(),
                    on_unreachable=self._unreachable,
                )
                async with anyio.create_task_group() as background:
                    await background.start(self._run_auth, auth)
                    if self._on_progress is not None:
                        background.start_soon(self._report_progress)
                    self._phase = "sending"
                    logger.debug("sending requests to %s", url)
                    await self._pipeline(sender, state, writer)
                    background.cancel_scope.cancel()
            finally:
                with anyio.CancelScope(shield=True):
                    await wire.aclose()
            clean = self._control.fatal is None and self._control.stopped is None
        finally:
            self._phase = "finishing"
            logger.info("finishing %s", cfg.output)
            state.close()
            remove_index_dir(index_dir(cfg.output))
            with anyio.CancelScope(shield=True):
                await self._finish_writer(writer, clean)
        budget_spent = any(p.budget_spent for p in self._producers)
        if budget_spent and cfg.max_cost is not None:
            try:
                await anyio.to_thread.run_sync(record_budget_spent, cfg.output, cfg.max_cost)
            except OutputError as exc:
                logger.warning("%s", exc)  # the rows still hold the spend
        stopped = self._control.stopped
        if stopped is None and self._control.lanes:
            stopped = "; ".join(f"{m}: {why}" for m, why in self._control.lanes.items())
        wall = time.monotonic() - started
        return RunSummary(
            output=cfg.output,
            stats=self.stats.snapshot(),  # wall time from the rows, as a report has it
            sent=self.counters.done,
            written=self.counters.done + self.counters.bad_rows,
            skipped=self.counters.skipped,
            earlier_errors=0 if cfg.retry_failed else self._earlier_errors(state),
            bad_rows=self.counters.bad_rows,
            duplicates=self.counters.duplicates,
            wall_s=wall,
            stopped=stopped,
            fatal=self._control.fatal,
            budget_spent=budget_spent,
            earlier_spent_usd=state.spent_usd,
            estimates=() if self._estimates is None else self._estimates.comparisons(),
        )

    def _unreachable(self, reason: str) -> None:
        """No attempt could connect: stop, and abandon the retries of the rows in flight
        (they are not written, so the next run sends them)."""
        self._control.stop(reason)
        self._cancel_workers()

    def _earlier_errors(self, state: ResumeState) -> int:
        return state.failed_count

    async def _finish_writer(self, writer: ResultWriter, clean: bool) -> None:
        try:
            if clean:
                # Each (id, model) is sent once per run (repeated ids are skipped on input).
                await anyio.to_thread.run_sync(
                    lambda: writer.close(ordered=self.config.ordered, distinct=True)
                )
            else:
                await anyio.to_thread.run_sync(writer.abort)
        except OutputError as exc:
            self._control.abort(exc)

    async def _run_auth(
        self, auth: Authenticator, *, task_status: anyio.abc.TaskStatus[None]
    ) -> None:
        try:
            await auth.run(task_status=task_status)
        except AbortError as exc:
            self._control.abort(exc)
            if self._control.workers is not None:
                self._control.workers.cancel()

    async def _pipeline(self, sender: Sender, state: ResumeState, writer: ResultWriter) -> None:
        n_workers = self.config.concurrency
        # Room for a read chunk ahead of the workers, and for the results that arrive while
        # the writer commits a part (a few hundred ms), so that no worker waits on either.
        # Under --max-cost the queue stays at one request per worker: the spend estimate
        # counts requests in flight, so a longer queue would admit requests past it.
        ahead = n_workers if self.config.max_cost is not None else max(n_workers, 2 * READ_CHUNK)
        lanes = lane_models(self.config)
        results = ResultBuffer[Result](max(2 * n_workers * len(lanes), RESULTS_PENDING))
        seen_dir = index_dir(self.config.output) / "seen"
        index_bytes = max(1, index_memory_bytes(self.config) // len(lanes))
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._write_loop, writer, results)
            try:
                async with anyio.create_task_group() as workers:
                    self._control.workers = workers.cancel_scope
                    for i, model in enumerate(lanes):
                        # Each lane reads the input on its own (batchrunner.pipeline.lanes).
                        specs = WorkQueue[RequestSpec](ahead)
                        producer = Producer(
                            self.config,
                            state,
                            lambda: sender.in_flight_cost,
                            self.counters,
                            self._control,
                            index_dir=seen_dir if len(lanes) == 1 else seen_dir / str(i),
                            index_bytes=index_bytes,
                            model=model,
                            primary=i == 0,
                        )
                        self._producers.append(producer)
                        workers.start_soon(producer.run, specs, results)
                        if model is None:
                            for _ in range(n_workers):
                                workers.start_soon(self._work, sender, specs, results)
                        else:
                            lane = self.counters.lanes[model] = LaneCounts(model)
                            for _ in range(n_workers):
                                workers.start_soon(self._work, sender, specs, results, lane)
            finally:
                results.close()

    # -- workers -------------------------------------------------------------------------------

    async def _work(
        self,
        sender: Sender,
        specs: WorkQueue[RequestSpec],
        results: ResultBuffer[Result],
        lane: LaneCounts | None = None,
    ) -> None:
        control = self._control
        estimates = self._estimates
        while True:
            try:
                spec = await specs.get()
            except anyio.EndOfStream:
                return
            if control.stopped is not None or control.lane_stopped(spec.model):
                continue  # not started: the next run sends it
            try:
                result = await sender.send(spec)
            except AbortError as exc:
                control.abort(exc)
                continue
            if result.status == "error" and flex_unsupported(
                result.error_message, result.http_status
            ):
                # Every row of this model would get the same 400: stop its lane, write no
                # row, so that a run at another tier sends them all.
                control.stop_lane(
                    spec.model,
                    "Vertex does not offer Flex for this model (400 'Flex API is not "
                    "supported'); its rows were not sent: use --tier standard (or a [tiers] "
                    "entry for it) and run again",
                )
                self.counters.done -= 1
                self.counters.errors -= 1
                continue
            if lane is not None:
                lane.done += 1
            control.answered(result)
            if estimates is not None:
                estimates.add(spec, result)
            if not results.add(result):
                await results.add_wait(result)

    # -- writer --------------------------------------------------------------------------------

    async def _write_loop(self, writer: ResultWriter, results: ResultBuffer[Result]) -> None:
        last_checkpoint = time.monotonic()
        while (batch := await results.take(WRITE_BATCH, WRITE_WITHIN_S)) is not None:
            try:
                await anyio.to_thread.run_sync(writer.write, batch)
                if time.monotonic() - last_checkpoint >= self.config.checkpoint_s:
                    await anyio.to_thread.run_sync(writer.checkpoint)
                    last_checkpoint = time.monotonic()
            except OutputError as exc:
                self._control.abort(exc)
                if self._control.workers is not None:
                    self._control.workers.cancel()
                return
            add = self.stats.add
            for result in batch:
                add(result)

    # -- background ----------------------------------------------------------------------------

    async def _report_progress(self) -> None:
        assert self._on_progress is not None
        while True:
            self._refresh_lanes()
            self._on_progress(self.counters)
            await anyio.sleep(0.5)

    def _refresh_lanes(self) -> None:
        """Copy each lane's limiter state (in flight, window, what it waits on) to its counts."""
        lanes = self.counters.lanes
        statistics = getattr(self._limiter_in_use, "statistics", None)
        if not lanes or statistics is None:
            return
        models = statistics().models
        for model, lane in lanes.items():
            state = models.get(model)
            if state is not None:
                lane.in_flight = state.in_flight
                lane.window = state.concurrency_limit
                lane.waiting_on = state.waiting_on

    async def _watch_signals(
        self, signals: StopSignals, *, task_status: anyio.abc.TaskStatus[None]
    ) -> None:
        """Act on each SIGINT/SIGTERM, including those that arrived before the run started."""
        loop = asyncio.get_running_loop()
        send, receive = anyio.create_memory_object_stream[str](16)
        for name in signals.received:
            send.send_nowait(name)

        # The handler runs on this thread between bytecodes: hand the signal to the loop.
        def listener(name: str) -> None:
            loop.call_soon_threadsafe(send.send_nowait, name)

        signals.listen(listener)
        task_status.started()
        count = 0
        async with anyio.create_task_group() as grace_tasks, receive:
            async for name in receive:
                count += 1
                if count == 1:
                    self._first_signal(name, grace_tasks)
                else:
                    self._second_signal(name, signals)

    def _first_signal(self, name: str, grace_tasks: anyio.abc.TaskGroup) -> None:
        if self._phase == "finishing":
            # The final commit or compaction runs in a thread and is nearly done: finish it.
            self._control.stop(
                f"{name} received while finishing {self.config.output}; it was finished"
            )
            return
        self._control.stop(f"{name} received")
        grace = self.config.grace_s
        if math.isfinite(grace):
            grace_tasks.start_soon(self._cancel_after, grace)

    def _second_signal(self, name: str, signals: StopSignals) -> None:
        if self._phase == "sending":
            logger.warning("%s received again: abandoning the requests in flight", name)
            self._cancel_workers()
        else:
            # Start-up and the final compaction run in threads that cannot be cancelled.
            signals.stop_at_once(name)

    async def _cancel_after(self, grace_s: float) -> None:
        await anyio.sleep(grace_s)
        logger.warning("grace time of %g s is over: abandoning the requests in flight", grace_s)
        self._cancel_workers()

    def _cancel_workers(self) -> None:
        if self._control.workers is not None:
            self._control.workers.cancel()


def _first_batchrunner_error(group: BaseExceptionGroup[Any]) -> BatchRunnerError | None:
    for exc in group.exceptions:
        if isinstance(exc, BatchRunnerError):
            return exc
        if isinstance(exc, BaseExceptionGroup):
            found = _first_batchrunner_error(exc)
            if found is not None:
                return found
    return None
