"""The batch route end to end: translate, stage, submit, record, poll, collect, clean up.

One run of :class:`BatchRoute`:

1. reads the input like the online route (same ids, models, parameters, resume): rows
   OUTPUT already holds, and rows in jobs of an earlier run not yet collected, are skipped;
   a request batch prediction cannot take becomes a ``bad_input`` row at once;
2. estimates the new requests' cost at batch rates and stops before submitting anything when
   it reaches ``--max-cost``;
3. splits each model's lines into files of at most ``max_requests`` lines and ``max_bytes``
   bytes, records each file in ``OUTPUT.batch.json``, uploads it, and creates one job per
   file, recording its name before it waits;
4. polls every open job with a growing interval (a log line every few minutes), and reads a
   finished job's predictions into result rows; lines that failed are submitted once more in
   a follow-up job, and fail for good the second time; an expired or cancelled job leaves its
   rows unanswered for the next run;
5. deletes a file's staged objects once its rows are in OUTPUT, unless ``keep_staging``.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
import shutil
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from typing import Any

import anyio
import httpx
import orjson

from batchrunner.auth.tokens import Authenticator
from batchrunner.batch.jobs import TERMINAL_STATES, JobsApi
from batchrunner.batch.predictions import Prediction, answered_row, parse_prediction
from batchrunner.batch.staging import Staging, join_uri
from batchrunner.batch.state import BatchState, StagedFile
from batchrunner.batch.translate import Untranslatable, batch_line, model_path
from batchrunner.config import RunConfig, model_family
from batchrunner.errors import ConfigError
from batchrunner.input.bodies import OversizedRequest, RowProblem, requests_for, row_models
from batchrunner.input.readers import BadRow, InputRow, bad_input_result, check_input
from batchrunner.input.shards import read_shard_rows
from batchrunner.output.durable import remove_quietly
from batchrunner.output.idset import IdSet
from batchrunner.output.keyindex import remove_index_dir
from batchrunner.output.ondisk import batch_dir, batch_state_path, index_dir, key_of
from batchrunner.output.opening import open_run_output
from batchrunner.results import RequestSpec, Result, Usage
from batchrunner.stats.pricing import PriceTable
from batchrunner.stats.run_stats import RunStats, StatsSnapshot

__all__ = ["MAX_FILE_BYTES", "MAX_FILE_REQUESTS", "BatchOutcome", "BatchRoute", "Polling"]

logger = logging.getLogger(__name__)

MAX_FILE_REQUESTS = 200_000
MAX_FILE_BYTES = 1_000_000_000
ASSUMED_OUTPUT_TOKENS = 256  # for --max-cost, where a request sets no max_tokens
_NON_REGIONAL = frozenset({"global", "us", "eu"})
DEFAULT_MAAS_REGION = "us-central1"
_WRITE_BATCH = 4096


@dataclass(frozen=True, slots=True)
class Polling:
    """How often open jobs are polled: ``first_s``, growing by ``factor`` to ``max_s``."""

    first_s: float = 30.0
    max_s: float = 300.0
    factor: float = 1.5
    log_every_s: float = 300.0


@dataclass(frozen=True, slots=True)
class BatchOutcome:
    """What a batch run did, for the summary and the exit status."""

    stats: StatsSnapshot
    jobs_created: int
    jobs_reattached: int
    written: int
    skipped: int
    bad_rows: int
    duplicates: int
    unanswered: int  # rows of expired, cancelled or failed jobs: the next run resubmits them
    stopped: str | None
    wall_s: float


@dataclass(slots=True)
class _Pending:
    """New requests for one model, before they are cut into files."""

    lines: list[bytes] = field(default_factory=list)
    ids: list[tuple[str, int]] = field(default_factory=list)


def job_location(model: str, location: str) -> str:
    """Where a model's batch jobs go: MaaS models need a region, Gemini takes any."""
    if model_family(model) == "gemini" or location not in _NON_REGIONAL:
        return location
    return DEFAULT_MAAS_REGION


class BatchRoute:
    """Runs one batch-prediction run of ``config``; collaborators are injected for tests."""

    def __init__(
        self,
        config: RunConfig,
        *,
        authenticator: Authenticator,
        project: str | None = None,
        api_root: str | None = None,
        storage_url: str | None = None,
        prices: PriceTable | None = None,
        polling: Polling | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = anyio.sleep,
        max_requests: int = MAX_FILE_REQUESTS,
        max_bytes: int = MAX_FILE_BYTES,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.config = config
        project = project or config.project
        if not project:
            raise ConfigError(
                "--via batch needs a Vertex project: --project or GOOGLE_CLOUD_PROJECT"
            )
        if not config.staging:
            raise ConfigError("--via batch needs --staging gs://BUCKET/PREFIX")
        self.project = project
        self._auth = authenticator
        self._api_root = api_root
        self._storage_url = storage_url or config.storage_url
        self._prices = prices or PriceTable.for_run(config.prices_path)
        self._polling = polling or Polling(first_s=config.batch_poll_s)
        self._clock = clock
        self._sleep = sleep
        self._max_requests = max_requests
        self._max_bytes = max_bytes
        self._transport = transport
        self.stats = RunStats()
        self._written = 0
        self._skipped = 0
        self._bad = 0
        self._duplicates = 0
        self._unanswered = 0
        self._created = 0
        self._reattached = 0
        self._done: set[int] = set()  # keys written by this run

    # -- the run ---------------------------------------------------------------------------

    async def run(self) -> BatchOutcome:
        cfg = self.config
        started = self._clock()
        await anyio.to_thread.run_sync(check_input, cfg.input)
        resume, writer = await anyio.to_thread.run_sync(open_run_output, self.config)
        self._resume = resume
        self._writer = writer
        jobs = JobsApi(
            self.project,
            self._auth,
            api_root=self._api_root,
            api_version=cfg.api_version,
            transport=self._transport,
        )
        clean = False
        stopped: str | None = None
        try:
            try:
                async with anyio.create_task_group() as background:
                    await background.start(self._auth.run)
                    state = await anyio.to_thread.run_sync(self._load_state)
                    self._reattached = sum(1 for f in state.open_files() if f.job)
                    stopped = await self._stage_new(state)
                    if stopped is None:
                        await self._submit(state, jobs)
                        await self._poll(state, jobs)
                    background.cancel_scope.cancel()
            except BaseExceptionGroup as group:
                raise _first(group) from None
            clean = True
        finally:
            resume.close()
            remove_index_dir(index_dir(cfg.output))
            with anyio.CancelScope(shield=True):
                await jobs.aclose()
                await anyio.to_thread.run_sync(self._finish_writer, clean)
        if self._unanswered and stopped is None:
            stopped = (
                f"{self._unanswered:,} rows were left unanswered by expired, cancelled or "
                "failed jobs"
            )
        wall = self._clock() - started
        return BatchOutcome(
            stats=self.stats.snapshot(wall_s=wall),
            jobs_created=self._created,
            jobs_reattached=self._reattached,
            written=self._written,
            skipped=self._skipped,
            bad_rows=self._bad,
            duplicates=self._duplicates,
            unanswered=self._unanswered,
            stopped=stopped,
            wall_s=wall,
        )

    def _load_state(self) -> BatchState:
        out = self.config.output
        if self.config.restart:
            earlier = BatchState.load(out)
            running = [f.job for f in earlier.open_files() if f.job]
            if running:
                logger.warning(
                    "--restart forgets %d batch jobs not yet collected; they keep running "
                    "(cancel them first with batchrunner batch-cancel)",
                    len(running),
                )
            remove_quietly(batch_state_path(out))
            shutil.rmtree(batch_dir(out), ignore_errors=True)
        return BatchState.load(out)

    def _finish_writer(self, clean: bool) -> None:
        if clean:
            self._writer.close(ordered=self.config.ordered, distinct=True)
        else:
            self._writer.abort()

    def _write(self, rows: list[Result]) -> None:
        if not rows:
            return
        for start in range(0, len(rows), _WRITE_BATCH):
            self._writer.write(rows[start : start + _WRITE_BATCH])
        self._writer.checkpoint()
        for row in rows:
            self.stats.add(row)
            self._done.add(key_of(row.id, row.model))
        self._written += len(rows)

    def _is_done(self, id_: str, model: str) -> bool:
        key = key_of(id_, model)
        return key in self._done or self._resume.is_key_done(
            key, retry_failed=self.config.retry_failed
        )

    # -- reading the input and staging files -----------------------------------------------

    async def _stage_new(self, state: BatchState) -> str | None:
        """Translate the requests still to send and record their files; a reason to stop."""
        pending, bad, estimate = await anyio.to_thread.run_sync(self._translate, state)
        await anyio.to_thread.run_sync(self._write, bad)
        limit = self.config.max_cost
        if limit is not None and pending and estimate >= limit:
            return (
                f"the batch estimate {estimate:.4f} USD reaches --max-cost {limit:g} USD; "
                "nothing was submitted"
            )
        for model, lines in pending.items():
            await anyio.to_thread.run_sync(self._record_files, state, model, lines, 0)
        return None

    def _translate(self, state: BatchState) -> tuple[dict[str, _Pending], list[Result], float]:
        cfg = self.config
        in_flight = state.in_flight()
        seen = IdSet()
        pending: dict[str, _Pending] = {}
        bad: list[Result] = []
        estimate = 0.0
        for row in read_shard_rows(cfg.input, cfg.fields, cfg.shard):
            key = key_of(row.id, "")
            if key in seen:
                self._duplicates += 1
                continue
            seen.add(key)
            if isinstance(row, BadRow):
                bad.extend(self._bad_rows(row, row.problem))
                continue
            try:
                specs = requests_for(cfg, row)
            except OversizedRequest as exc:
                bad.extend(
                    self._bad_row(row, m, problem)
                    for m, problem in exc.refused
                    if not self._is_done(row.id, m)
                )
                specs = list(exc.specs)
            except RowProblem as exc:
                bad.extend(self._bad_rows(row, str(exc)))
                continue
            for spec in specs:
                if self._is_done(spec.id, spec.model) or key_of(spec.id, spec.model) in in_flight:
                    self._skipped += 1
                    continue
                try:
                    line = orjson.dumps(batch_line(spec.model, spec.id, orjson.loads(spec.body)))
                    model_path(spec.model)
                except Untranslatable as exc:
                    bad.append(self._bad_row(row, spec.model, str(exc)))
                    continue
                entry = pending.setdefault(spec.model, _Pending())
                entry.lines.append(line)
                entry.ids.append((spec.id, row.index))
                estimate += self._estimate(spec)
        return pending, bad, estimate

    def _estimate(self, spec: RequestSpec) -> float:
        output = spec.max_output_tokens or ASSUMED_OUTPUT_TOKENS
        usage = Usage(prompt_tokens=spec.input_tokens, completion_tokens=output)
        return self._prices.batch_cost(spec.model, usage) or 0.0

    def _bad_rows(self, row: InputRow | BadRow, problem: str) -> list[Result]:
        cfg = self.config
        models = list(cfg.models) or [cfg.default_model]
        if isinstance(row, InputRow):
            with contextlib.suppress(RowProblem):
                models = row_models(row, cfg.fields, cfg.models, cfg.default_model)
        return [self._bad_row(row, m, problem) for m in models if not self._is_done(row.id, m)]

    def _bad_row(self, row: InputRow | BadRow, model: str, problem: str) -> Result:
        self._bad += 1
        return bad_input_result(row, model, problem)

    def _record_files(
        self, state: BatchState, model: str, pending: _Pending, round_: int
    ) -> list[StagedFile]:
        """Cut ``pending`` into files within the limits; write and record each one."""
        staged: list[StagedFile] = []
        for lines, ids in self._cut(pending):
            seq = state.next_seq()
            tag = f"{secrets.token_hex(4)}-{seq:06d}"
            prefix = join_uri(self.config.staging or "", f"batchrunner-{tag}")
            local = state.local_path(seq)
            local.parent.mkdir(parents=True, exist_ok=True)
            local.write_bytes(b"".join(line + b"\n" for line in lines))
            entry = StagedFile(
                seq=seq,
                model=model,
                location=job_location(model, self.config.location),
                round=round_,
                display_name=f"batchrunner-{tag}",
                input_uri=join_uri(prefix, "input.jsonl"),
                output_prefix=join_uri(prefix, "output"),
                api_root=self._api_root,
            )
            state.add(entry, ids)
            staged.append(entry)
        return staged

    def _cut(self, pending: _Pending) -> Iterator[tuple[list[bytes], list[tuple[str, int]]]]:
        lines: list[bytes] = []
        ids: list[tuple[str, int]] = []
        size = 0
        for line, id_row in zip(pending.lines, pending.ids, strict=True):
            grow = len(line) + 1
            if lines and (len(lines) >= self._max_requests or size + grow > self._max_bytes):
                yield lines, ids
                lines, ids, size = [], [], 0
            lines.append(line)
            ids.append(id_row)
            size += grow
        if lines:
            yield lines, ids

    # -- submitting ------------------------------------------------------------------------

    async def _staging(self) -> Staging:
        creds = await self._auth.headers()
        header = creds.headers.get("Authorization", "")
        token = header.removeprefix("Bearer ") if header.startswith("Bearer ") else None
        return await anyio.to_thread.run_sync(
            lambda: Staging(project=self.project, token=token, endpoint=self._storage_url)
        )

    async def _submit(self, state: BatchState, jobs: JobsApi) -> None:
        """Upload and create a job for every recorded file that has none yet."""
        waiting = [f for f in state.open_files() if f.job is None]
        if not waiting:
            return
        staging = await self._staging()
        for staged in waiting:
            found = await jobs.find(staged.location, staged.display_name)
            if found:  # created by a run that died before it could record the name
                job = found[-1]
                logger.info(
                    "found job %s for %s: not submitted again", job["name"], staged.input_uri
                )
            else:
                local = state.local_path(staged.seq)
                await anyio.to_thread.run_sync(staging.upload_file, local, staged.input_uri)
                job = await jobs.create(staged.location, self._job_body(staged))
                self._created += 1
                logger.info("created batch job %s (%s)", job["name"], staged.model)
            await anyio.to_thread.run_sync(
                partial(state.update, staged.seq, job=job["name"], state=job.get("state"))
            )
            remove_quietly(state.local_path(staged.seq))

    def _job_body(self, staged: StagedFile) -> dict[str, Any]:
        return {
            "displayName": staged.display_name,
            "model": model_path(staged.model),
            "inputConfig": {"instancesFormat": "jsonl", "gcsSource": {"uris": [staged.input_uri]}},
            "outputConfig": {
                "predictionsFormat": "jsonl",
                "gcsDestination": {"outputUriPrefix": staged.output_prefix},
            },
            "labels": {"batchrunner": "run"},
        }

    # -- polling ---------------------------------------------------------------------------

    async def _poll(self, state: BatchState, jobs: JobsApi) -> None:
        polling = self._polling
        interval = polling.first_s
        last_log = self._clock()
        while True:
            open_files = [f for f in state.open_files() if f.job]
            if not open_files:
                return
            resources: dict[int, dict[str, Any]] = {}
            for staged in open_files:
                assert staged.job is not None
                job = await jobs.get(staged.job)
                resources[staged.seq] = job
                if job.get("state") != staged.state:
                    directory = (job.get("outputInfo") or {}).get("gcsOutputDirectory")
                    await anyio.to_thread.run_sync(
                        partial(
                            state.update,
                            staged.seq,
                            state=job.get("state"),
                            output_directory=directory,
                        )
                    )
            finished = [s for s in state.open_files() if s.job and s.state in TERMINAL_STATES]
            for staged in finished:
                await self._collect(state, jobs, staged, resources[staged.seq])
            if any(f.job is None for f in state.open_files()):
                await self._submit(state, jobs)  # the follow-up jobs just recorded
                interval = polling.first_s
            if any(f.state not in TERMINAL_STATES for f in state.open_files()):
                now = self._clock()
                if now - last_log >= polling.log_every_s:
                    logger.warning("%s", _progress_line(state, resources))
                    last_log = now
                await self._sleep(interval)
                interval = min(polling.max_s, interval * polling.factor)

    async def _collect(
        self, state: BatchState, jobs: JobsApi, staged: StagedFile, job: dict[str, Any]
    ) -> None:
        """Read a finished job's predictions into OUTPUT; schedule its failed lines once more."""
        ids = await anyio.to_thread.run_sync(state.ids, staged.seq)
        rows = {id_: row for id_, row in ids}
        predictions: list[Prediction] = []
        outputs: list[str] = []
        staging = await self._staging()
        if staged.output_directory and staged.state != "JOB_STATE_EXPIRED":
            outputs = await anyio.to_thread.run_sync(staging.names, staged.output_directory)
            gemini = model_family(staged.model) == "gemini"
            for uri in outputs:
                if not uri.endswith(".jsonl"):
                    continue
                data = await anyio.to_thread.run_sync(staging.download, uri)
                predictions.extend(
                    parse_prediction(line, gemini) for line in data.splitlines() if line.strip()
                )
        started = _timestamp(job.get("startTime"))
        ended = _timestamp(job.get("endTime"))
        answered: list[Result] = []
        retry: list[str] = []
        seen: set[str] = set()
        for prediction in predictions:
            id_ = prediction.key
            if id_ is None or id_ not in rows or id_ in seen:
                continue
            seen.add(id_)
            if self._is_done(id_, staged.model):
                continue
            if not prediction.ok and staged.round == 0:
                retry.append(id_)
                continue
            answered.append(
                answered_row(
                    prediction,
                    id=id_,
                    model=staged.model,
                    row=rows[id_],
                    job=staged.job_id or "",
                    attempts=staged.round + 1,
                    prices=self._prices,
                    started_at=started,
                    finished_at=ended,
                )
            )
        await anyio.to_thread.run_sync(self._write, answered)
        missing = [i for i in rows if i not in seen and not self._is_done(i, staged.model)]
        if missing:
            self._unanswered += len(missing)
            logger.warning(
                "job %s ended %s with %d rows unanswered; the next run submits them again",
                staged.job,
                staged.state,
                len(missing),
            )
        if retry:
            await self._follow_up(state, staged, retry, rows)
        await anyio.to_thread.run_sync(lambda: state.update(staged.seq, collected=True))
        if not self.config.keep_staging:
            gone = [staged.input_uri, *outputs]
            await anyio.to_thread.run_sync(staging.delete, gone)
        await anyio.to_thread.run_sync(lambda: state.update(staged.seq, cleaned=True))

    async def _follow_up(
        self, state: BatchState, staged: StagedFile, retry: list[str], rows: dict[str, int]
    ) -> None:
        """One more job for the lines a job failed; recorded before the first is closed."""
        in_flight = state.in_flight() - {key_of(i, staged.model) for i in rows}
        wanted = {i for i in retry if key_of(i, staged.model) not in in_flight}
        if not wanted:
            return
        pending = _Pending()
        for row in read_shard_rows(self.config.input, self.config.fields, self.config.shard):
            if row.id not in wanted or isinstance(row, BadRow):
                continue
            try:
                specs = requests_for(self.config, row)
            except OversizedRequest as exc:  # refused for another model when first sent
                specs = list(exc.specs)
            for spec in specs:
                if spec.model == staged.model:
                    body = orjson.loads(spec.body)
                    pending.lines.append(orjson.dumps(batch_line(spec.model, spec.id, body)))
                    pending.ids.append((spec.id, row.index))
            wanted.discard(row.id)
        logger.info("%d lines of job %s failed: submitting them once more", len(retry), staged.job)
        await anyio.to_thread.run_sync(self._record_files, state, staged.model, pending, 1)


def _first(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The exception a task group stands for: its first, unwrapped."""
    first = group.exceptions[0]
    return _first(first) if isinstance(first, BaseExceptionGroup) else first


def _timestamp(value: object) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).astimezone(UTC)
    except ValueError:
        return None


def _progress_line(state: BatchState, resources: dict[int, dict[str, Any]]) -> str:
    states = Counter(
        (f.state or "UNKNOWN").removeprefix("JOB_STATE_").lower() for f in state.files if f.job
    )
    done = 0
    for job in resources.values():
        stats = job.get("completionStats") or {}
        done += int(stats.get("successfulCount") or 0) + int(stats.get("failedCount") or 0)
    shown = ", ".join(f"{n} {s}" for s, n in sorted(states.items()))
    return f"batch: {sum(states.values())} jobs ({shown}); {done:,} lines answered so far"
