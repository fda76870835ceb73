"""Vertex batch prediction: ``batchPredictionJobs`` create, get, list and cancel, jobs that
move through Vertex's states on the simulator's clock, and the processing that reads JSONL
requests from the simulated Cloud Storage and writes predictions back.

Timeline of a job, for a turnaround ``T`` (``batch_turnaround_s``) on ``SimulatorConfig.clock``:

| from create + | state                 | what happens                                           |
|---------------|-----------------------|--------------------------------------------------------|
| 0             | ``JOB_STATE_QUEUED``  | the create call answers with this                      |
| 0.1 T         | ``JOB_STATE_PENDING`` |                                                        |
| 0.2 T         | ``JOB_STATE_RUNNING`` | input files checked (exist, ≤ 200,000 lines, ≤ 1 GB),  |
|               |                       | else ``FAILED``; ``startTime`` and ``outputInfo`` set  |
| T             | an ending             | every line answered, predictions written               |

Endings: ``SUCCEEDED`` when every line was answered, ``PARTIALLY_SUCCEEDED`` when some lines
failed, ``FAILED`` when all did (or when the outcome is "fail"), ``EXPIRED`` (outcome
"expire": the job never leaves the queue). A cancel moves the job to ``CANCELLING`` at once
and to ``CANCELLED`` 0.05 T later; a job cancelled while running writes the lines it had
finished, in proportion to the time it ran, and counts the rest as incomplete.

The outcome comes from ``batch_outcome``, or per job from the label ``sim-outcome``
(``succeed`` | ``fail`` | ``expire``). Jobs advance when they are read (get or list).

Predictions land in ``{outputUriPrefix}/prediction-model-{startTime}/predictions.jsonl``,
``startTime`` as ``2025-10-25T08:37:21.590419Z``, the naming Vertex uses. Lines come out
in a seeded order unless ``batch_shuffle_output`` is off: match them by key, not by position.
"""

from __future__ import annotations

import asyncio
import random
import re
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Final
from urllib.parse import unquote

import orjson
from aiohttp import web

from .answers import Plan, plan_answer
from .auth import TokenStore
from .config import SimulatorConfig, shape_settings
from .content import ChatRequest, ModelResolver, parse_request, request_digest, validate_limits
from .envelopes import ApiError, error_response
from .models import ModelSpec
from .shapes import AnswerOptions, completion_body, new_response_id
from .storage import ObjectStore, StorageError, split_gs_uri

__all__ = [
    "BATCH_PATH",
    "BATCH_PRICE_FACTOR",
    "JOB_STATES",
    "BatchJobRecord",
    "BatchLineRecord",
    "BatchService",
]

BATCH_PATH = re.compile(
    r"^/(v1|v1beta1)/projects/([^/]+)/locations/([^/]+)/batchPredictionJobs"
    r"(?:/(\d+)(:cancel)?)?$"
)
BATCH_PRICE_FACTOR: Final = 0.5  # batch is billed at half the on-demand price
JOB_STATES: tuple[str, ...] = (
    "JOB_STATE_QUEUED",
    "JOB_STATE_PENDING",
    "JOB_STATE_RUNNING",
    "JOB_STATE_SUCCEEDED",
    "JOB_STATE_PARTIALLY_SUCCEEDED",
    "JOB_STATE_FAILED",
    "JOB_STATE_CANCELLING",
    "JOB_STATE_CANCELLED",
    "JOB_STATE_EXPIRED",
)
TERMINAL_STATES = frozenset(
    {
        "JOB_STATE_SUCCEEDED",
        "JOB_STATE_PARTIALLY_SUCCEEDED",
        "JOB_STATE_FAILED",
        "JOB_STATE_CANCELLED",
        "JOB_STATE_EXPIRED",
    }
)
OUTCOMES: tuple[str, ...] = ("succeed", "fail", "expire")
OUTCOME_LABEL = "sim-outcome"
# Multi-region and global locations: MaaS batch jobs need a single region.
_NON_REGIONAL = frozenset({"global", "us", "eu"})
_QUEUED_SHARE = 0.1
_PENDING_SHARE = 0.1
_CANCEL_SHARE = 0.05
_PAGE_SIZE = 100
_MODEL_PATH = re.compile(
    r"^(?:projects/[^/]+/locations/[^/]+/)?publishers/([a-z0-9-]+)/models/([A-Za-z0-9._-]+)$"
)
_FILTER_TERM = re.compile(r'^\s*(display_name|displayName|state)\s*=\s*"?([^"]*)"?\s*$')
# GenerateContentRequest fields (proto-JSON accepts camelCase and snake_case).
_REQUEST_FIELDS = frozenset(
    {
        "contents",
        "systemInstruction",
        "system_instruction",
        "tools",
        "toolConfig",
        "tool_config",
        "safetySettings",
        "safety_settings",
        "generationConfig",
        "generation_config",
        "labels",
        "cachedContent",
        "cached_content",
        "model",
        "modelArmorConfig",
        "model_armor_config",
    }
)
_GENERATION_FIELDS = frozenset(
    {
        "temperature",
        "topP",
        "top_p",
        "topK",
        "top_k",
        "candidateCount",
        "candidate_count",
        "maxOutputTokens",
        "max_output_tokens",
        "stopSequences",
        "stop_sequences",
        "presencePenalty",
        "presence_penalty",
        "frequencyPenalty",
        "frequency_penalty",
        "seed",
        "responseMimeType",
        "response_mime_type",
        "responseSchema",
        "response_schema",
        "responseJsonSchema",
        "response_json_schema",
        "responseLogprobs",
        "response_logprobs",
        "logprobs",
        "thinkingConfig",
        "thinking_config",
        "responseModalities",
        "response_modalities",
        "mediaResolution",
        "media_resolution",
        "speechConfig",
        "speech_config",
        "audioTimestamp",
        "audio_timestamp",
        "routingConfig",
        "routing_config",
        "enableAffectiveDialog",
        "enable_affective_dialog",
        "imageConfig",
        "image_config",
        "modelConfig",
        "model_config",
    }
)
_FINISH_REASONS = MappingProxyType(
    {"stop": "STOP", "length": "MAX_TOKENS", "content_filter": "SAFETY", "tool_calls": "STOP"}
)
_ROLES = MappingProxyType({"user": "user", "model": "assistant"})


@dataclass(frozen=True, slots=True)
class BatchJobRecord:
    """What the simulator knows of one job: ground truth for "one job per file" checks."""

    job_id: str
    name: str
    display_name: str
    model: str  # simulator model name, e.g. "google/gemini-2.5-flash"
    location: str
    input_uris: tuple[str, ...]
    output_uri_prefix: str
    labels: Mapping[str, str]
    outcome: str
    state: str
    states: tuple[tuple[str, float], ...]  # (state, clock time it was entered)
    line_count: int | None  # None until the job has read its input
    successful: int
    failed: int
    incomplete: int
    cancel_calls: int
    output_directory: str | None


@dataclass(frozen=True, slots=True)
class BatchLineRecord:
    """One input line as served: its outcome, its usage, and the batch price basis."""

    job_id: str
    model: str
    input_uri: str
    line: int  # 1-based line number in its input file
    key: str | None  # Gemini's ride-along "key" / gpt-oss "custom_id", when present
    ok: bool
    code: int  # HTTP-style status of the line: 200, 400, 429, 500
    error_status: str | None
    error_message: str | None
    prompt_tokens: int
    completion_tokens: int  # OpenAI convention: includes reasoning tokens
    reasoning_tokens: int
    total_tokens: int
    price_in_per_m: float  # USD per 1M input tokens at the batch rate
    price_out_per_m: float
    cost_usd: float


@dataclass(frozen=True, slots=True)
class _LineResult:
    output: dict[str, object]
    record: BatchLineRecord


class _Job:
    """A job's mutable state; only ``BatchService`` touches it, under its lock."""

    __slots__ = (
        "cancel_at",
        "cancel_calls",
        "created_at",
        "display_name",
        "end_at",
        "error",
        "failed",
        "incomplete",
        "input_config",
        "input_uris",
        "job_id",
        "labels",
        "line_count",
        "location",
        "model_path",
        "name",
        "outcome",
        "output_config",
        "output_directory",
        "output_prefix",
        "project",
        "spec",
        "start_at",
        "state",
        "states",
        "successful",
    )

    def __init__(self, **values: object) -> None:
        for key, value in values.items():
            setattr(self, key, value)
        self.cancel_at: float | None = None
        self.cancel_calls = 0
        self.error: dict[str, object] | None = None
        self.successful = 0
        self.failed = 0
        self.incomplete = 0
        self.line_count: int | None = None
        self.output_directory: str | None = None
        self.start_at: float | None = None
        self.state = "JOB_STATE_QUEUED"
        self.states: list[tuple[str, float]] = [("JOB_STATE_QUEUED", self.created_at)]

    created_at: float
    end_at: float
    display_name: str
    input_config: Mapping[str, object]
    input_uris: tuple[str, ...]
    job_id: str
    labels: Mapping[str, str]
    location: str
    model_path: str
    name: str
    outcome: str
    output_config: Mapping[str, object]
    output_prefix: str
    project: str
    spec: ModelSpec


def _invalid(message: str) -> ApiError:
    return ApiError(400, "INVALID_ARGUMENT", message)


def _status_text(error: ApiError) -> str:
    """A failed line's ``status``: the Google error envelope, as text."""
    return orjson.dumps(
        {"error": {"code": error.code, "message": error.message, "status": error.status}}
    ).decode()


class BatchService:
    """The jobs, their clock-driven progress, line processing and the records of both."""

    def __init__(
        self,
        config: SimulatorConfig,
        models: Mapping[str, ModelSpec],
        tokens: TokenStore,
        storage: ObjectStore,
        wall: Callable[[], float] | None = None,
    ) -> None:
        if config.batch_outcome not in OUTCOMES:
            raise ValueError(f"batch_outcome must be one of {OUTCOMES}")
        if config.batch_turnaround_s < 0:
            raise ValueError("batch_turnaround_s must be >= 0")
        if not 0.0 <= config.batch_line_failure_rate <= 1.0:
            raise ValueError("batch_line_failure_rate must be within [0, 1]")
        if config.batch_max_requests < 1 or config.batch_max_input_bytes < 1:
            raise ValueError("batch_max_requests and batch_max_input_bytes must be positive")
        self._config = config
        self._models = models
        self._tokens = tokens
        self._storage = storage
        self._clock = config.clock
        if wall is None:
            offset = time.time() - config.clock()

            def wall() -> float:
                return offset + config.clock()

        self._wall: Callable[[], float] = wall
        self._lock = threading.Lock()
        self._advance_lock: asyncio.Lock | None = None
        self._jobs: dict[str, _Job] = {}
        self._lines: list[BatchLineRecord] = []
        self._ids = random.Random(f"{config.seed}:batch-ids")
        self._response_ids = random.Random()

    # -- records ---------------------------------------------------------------------------

    def jobs(self) -> list[BatchJobRecord]:
        """Every job created, in creation order."""
        with self._lock:
            return [_record(job) for job in self._jobs.values()]

    def lines(self) -> list[BatchLineRecord]:
        """Every line served, in the order the simulator answered them."""
        with self._lock:
            return list(self._lines)

    # -- HTTP ------------------------------------------------------------------------------

    async def handle(self, request: web.Request) -> web.StreamResponse:
        match = BATCH_PATH.match(unquote(request.rel_url.raw_path))
        if match is None:
            return error_response(
                ApiError(404, "NOT_FOUND", "Not Found", html=True), array=False, path=request.path
            )
        version, project, location, job_id, cancel = match.groups()
        try:
            return await self._route(request, version, project, location, job_id, cancel)
        except ApiError as error:
            return error_response(error, array=False, path=request.path)

    async def _route(
        self,
        request: web.Request,
        version: str,
        project: str,
        location: str,
        job_id: str | None,
        cancel: str | None,
    ) -> web.Response:
        method = request.method
        if job_id is None and method == "POST":
            verb, permission = "CreateBatchPredictionJob", "create"
        elif job_id is None and method == "GET":
            verb, permission = "ListBatchPredictionJobs", "list"
        elif job_id is not None and cancel and method == "POST":
            verb, permission = "CancelBatchPredictionJob", "cancel"
        elif job_id is not None and not cancel and method == "GET":
            verb, permission = "GetBatchPredictionJob", "get"
        else:
            raise ApiError(404, "NOT_FOUND", "Not Found", html=True)
        config = self._config
        if config.require_auth:
            self._tokens.check(
                request.headers.get("Authorization"),
                f"google.cloud.aiplatform.{version}.JobService.{verb}",
            )
        if config.strict_project and project != config.project:
            raise ApiError(
                403,
                "PERMISSION_DENIED",
                f"Permission 'aiplatform.batchPredictionJobs.{permission}' denied on resource "
                f"'//aiplatform.googleapis.com/projects/{project}/locations/{location}' "
                "(or it may not exist).",
            )
        parent = f"projects/{project}/locations/{location}"
        if verb == "CreateBatchPredictionJob":
            job = self._create(parent, project, location, await request.read())
            return _json(self._resource(job))
        await self._advance()
        if verb == "ListBatchPredictionJobs":
            return _json(self._list(request, parent))
        assert job_id is not None
        job = self._find(parent, job_id)
        if verb == "CancelBatchPredictionJob":
            self._cancel(job)
            await self._advance()
            return _json({})
        return _json(self._resource(job))

    # -- create ----------------------------------------------------------------------------

    def _create(self, parent: str, project: str, location: str, raw: bytes) -> _Job:
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise _invalid("Invalid JSON payload received. Unexpected token.") from None
        if not isinstance(body, dict):
            raise _invalid("Invalid JSON payload received. Expected an object.")
        display_name = body.get("displayName")
        if not isinstance(display_name, str) or not display_name:
            raise _invalid("The BatchPredictionJob.display_name is required.")
        model_path = body.get("model")
        if not isinstance(model_path, str) or not model_path:
            raise _invalid("The BatchPredictionJob.model is required.")
        spec = self._resolve_model(model_path, project, location)
        input_config = body.get("inputConfig")
        output_config = body.get("outputConfig")
        uris = _input_uris(input_config)
        prefix = _output_prefix(output_config)
        labels = _labels(body.get("labels"))
        outcome = labels.get(OUTCOME_LABEL, self._config.batch_outcome)
        if outcome not in OUTCOMES:
            raise _invalid(f"Label {OUTCOME_LABEL} must be one of {', '.join(OUTCOMES)}.")
        now = self._clock()
        with self._lock:
            job_id = str(self._ids.randrange(10**18, 10**19))
            while job_id in self._jobs:
                job_id = str(self._ids.randrange(10**18, 10**19))
            assert isinstance(input_config, Mapping) and isinstance(output_config, Mapping)
            job = _Job(
                created_at=now,
                end_at=now + self._config.batch_turnaround_s,
                display_name=display_name,
                input_config=input_config,
                input_uris=uris,
                job_id=job_id,
                labels=MappingProxyType(labels),
                location=location,
                model_path=model_path,
                name=f"{parent}/batchPredictionJobs/{job_id}",
                outcome=outcome,
                output_config=output_config,
                output_prefix=prefix,
                project=project,
                spec=spec,
            )
            self._jobs[job_id] = job
        return job

    def _resolve_model(self, model_path: str, project: str, location: str) -> ModelSpec:
        match = _MODEL_PATH.match(model_path)
        publisher, short = match.groups() if match else ("google", model_path)
        spec = self._models.get(f"{publisher}/{short}")
        if spec is None or (location not in spec.locations and location not in _NON_REGIONAL):
            raise ApiError(
                404,
                "NOT_FOUND",
                f"Publisher Model `projects/{project}/locations/{location}/publishers/"
                f"{publisher}/models/{short}` was not found or your project does not have "
                "access to it.",
            )
        if spec.family == "gemini":
            if location not in spec.locations:
                raise _invalid(
                    f"Batch prediction for {model_path} is not supported in location {location}."
                )
            return spec
        if location in _NON_REGIONAL:
            raise _invalid(
                f"Batch prediction for {model_path} is not supported in location {location}. "
                "Open models take batch jobs in a region, such as us-central1."
            )
        if location not in spec.locations:
            raise _invalid(
                f"Batch prediction for {model_path} is not supported in location {location}."
            )
        return spec

    # -- reading ---------------------------------------------------------------------------

    def _find(self, parent: str, job_id: str) -> _Job:
        with self._lock:
            job = self._jobs.get(job_id)
        if job is None or not job.name.startswith(parent + "/"):
            raise ApiError(
                404,
                "NOT_FOUND",
                f"The BatchPredictionJob does not exist: {parent}/batchPredictionJobs/{job_id}",
            )
        return job

    def _list(self, request: web.Request, parent: str) -> dict[str, object]:
        terms = _parse_filter(request.query.get("filter", ""))
        try:
            size = int(request.query.get("pageSize") or _PAGE_SIZE)
            offset = int(request.query.get("pageToken") or 0)
        except ValueError:
            raise _invalid("Invalid pageSize or pageToken.") from None
        with self._lock:
            jobs = [j for j in self._jobs.values() if j.name.startswith(parent + "/")]
        jobs.reverse()  # newest first
        chosen = [j for j in jobs if all(_matches(j, key, value) for key, value in terms)]
        page = chosen[offset : offset + max(1, size)]
        body: dict[str, object] = {}
        if page:
            body["batchPredictionJobs"] = [self._resource(j) for j in page]
        if offset + len(page) < len(chosen):
            body["nextPageToken"] = str(offset + len(page))
        return body

    def _resource(self, job: _Job) -> dict[str, object]:
        """The BatchPredictionJob resource (proto-JSON: int64 counts are strings)."""
        with self._lock:
            body: dict[str, object] = {
                "name": job.name,
                "displayName": job.display_name,
                "model": job.model_path,
                "inputConfig": job.input_config,
                "outputConfig": job.output_config,
                "state": job.state,
                "createTime": self._stamp(job.created_at),
                "updateTime": self._stamp(job.states[-1][1]),
            }
            if job.start_at is not None:
                body["startTime"] = self._stamp(job.start_at)
            if job.state in TERMINAL_STATES:
                body["endTime"] = self._stamp(job.states[-1][1])
            if job.output_directory is not None:
                body["outputInfo"] = {"gcsOutputDirectory": job.output_directory}
            if job.line_count is not None or job.state in TERMINAL_STATES:
                body["completionStats"] = {
                    "successfulCount": str(job.successful),
                    "failedCount": str(job.failed),
                    "incompleteCount": str(job.incomplete),
                }
            if job.error is not None:
                body["error"] = dict(job.error)
            if job.labels:
                body["labels"] = dict(job.labels)
        return body

    def _stamp(self, clock_time: float) -> str:
        return _rfc3339(self._wall() - (self._clock() - clock_time))

    # -- cancel ----------------------------------------------------------------------------

    def _cancel(self, job: _Job) -> None:
        with self._lock:
            job.cancel_calls += 1
            if job.state in TERMINAL_STATES:
                raise ApiError(
                    400,
                    "FAILED_PRECONDITION",
                    f"The BatchPredictionJob {job.name} is in state {job.state} and cannot "
                    "be cancelled.",
                )
            if job.cancel_at is None:
                job.cancel_at = self._clock()
                _enter(job, "JOB_STATE_CANCELLING", job.cancel_at)

    # -- progress --------------------------------------------------------------------------

    async def _advance(self) -> None:
        """Bring every job up to the clock; line processing runs off the event loop."""
        if self._advance_lock is None:
            self._advance_lock = asyncio.Lock()
        async with self._advance_lock:
            await asyncio.to_thread(self.advance_nowait)

    def advance_nowait(self) -> None:
        """Bring every job up to the clock now, in this thread."""
        now = self._clock()
        with self._lock:
            jobs = [j for j in self._jobs.values() if j.state not in TERMINAL_STATES]
        for job in jobs:
            self._advance_job(job, now)

    def _advance_job(self, job: _Job, now: float) -> None:
        turnaround = self._config.batch_turnaround_s
        pending_at = job.created_at + _QUEUED_SHARE * turnaround
        running_at = pending_at + _PENDING_SHARE * turnaround
        if job.cancel_at is not None:
            done_at = job.cancel_at + _CANCEL_SHARE * turnaround
            if job.start_at is None and job.cancel_at >= running_at and job.outcome != "expire":
                self._start(job, running_at)  # it was running when the cancel came
            if now < done_at or job.state in TERMINAL_STATES:
                return
            if job.start_at is not None and job.state not in TERMINAL_STATES:
                span = max(job.end_at - job.start_at, 1e-9)
                share = min(1.0, max(0.0, (job.cancel_at - job.start_at) / span))
                self._finish(job, done_at, share=share)
            with self._lock:
                if job.state not in TERMINAL_STATES:
                    _enter(job, "JOB_STATE_CANCELLED", done_at)
            return
        if job.outcome == "expire":
            if now >= job.end_at:
                with self._lock:
                    job.error = {
                        "code": 4,
                        "message": "The batch prediction job expired before it could run: "
                        "it waited in the queue longer than the queueing limit.",
                    }
                    job.incomplete = job.line_count or 0
                    _enter(job, "JOB_STATE_EXPIRED", job.end_at)
            return
        if now >= pending_at and job.state == "JOB_STATE_QUEUED":
            with self._lock:
                _enter(job, "JOB_STATE_PENDING", pending_at)
        if now >= running_at and job.start_at is None:
            self._start(job, running_at)
        if now >= job.end_at and job.state == "JOB_STATE_RUNNING":
            if job.outcome == "fail":
                with self._lock:
                    job.error = {"code": 13, "message": "Internal error occurred."}
                    job.incomplete = job.line_count or 0
                    _enter(job, "JOB_STATE_FAILED", job.end_at)
                return
            self._finish(job, job.end_at, share=1.0)

    def _start(self, job: _Job, at: float) -> None:
        """Enter RUNNING: check the input files against Vertex's limits, name the output."""
        with self._lock:
            if job.state == "JOB_STATE_QUEUED":
                _enter(job, "JOB_STATE_PENDING", at)
        problem, count = self._check_inputs(job)
        with self._lock:
            job.start_at = at
            if job.state != "JOB_STATE_CANCELLING":
                _enter(job, "JOB_STATE_RUNNING", at)
            if problem is not None:
                job.error = problem
                _enter(job, "JOB_STATE_FAILED", at)
                return
            job.line_count = count
            job.output_directory = self._output_directory(job.output_prefix, at)

    def _output_directory(self, prefix: str, at: float) -> str:
        """``prediction-model-{start}``, a microsecond later when another job started at the
        same instant under the same prefix (an injected clock can make that happen).
        """
        micros = round((self._wall() - (self._clock() - at)) * 1_000_000)
        used = {j.output_directory for j in self._jobs.values()}
        while True:
            stamp = datetime.fromtimestamp(micros / 1_000_000, UTC)
            directory = f"{prefix}/prediction-model-{stamp.strftime('%Y-%m-%dT%H:%M:%S.%f')}Z"
            if directory not in used:
                return directory
            micros += 1

    def _check_inputs(self, job: _Job) -> tuple[dict[str, object] | None, int]:
        config = self._config
        count = 0
        for uri in self._expand(job.input_uris):
            stored = self._storage.read(uri)
            if stored is None:
                return {"code": 5, "message": f"Failed to read the input file {uri}: not found."}, 0
            if stored.size > config.batch_max_input_bytes:
                return {
                    "code": 3,
                    "message": f"The input file {uri} is {stored.size} bytes; the limit is "
                    f"{config.batch_max_input_bytes} bytes per file.",
                }, 0
            lines = _count_lines(stored.data)
            if lines > config.batch_max_requests:
                return {
                    "code": 3,
                    "message": f"The input file {uri} has {lines} requests; the limit is "
                    f"{config.batch_max_requests} requests per file.",
                }, 0
            count += lines
        if count == 0:
            return {"code": 3, "message": "The input files hold no requests."}, 0
        return None, count

    def _expand(self, uris: Sequence[str]) -> list[str]:
        """Input URIs with ``*`` wildcards resolved against the bucket's listing."""
        out: list[str] = []
        for uri in uris:
            if "*" not in uri:
                out.append(uri)
                continue
            bucket, pattern = split_gs_uri(uri)
            head = pattern.split("*", 1)[0]
            regex = re.compile(
                "^" + ".*".join(re.escape(p) for p in pattern.split("*")) + "$", re.DOTALL
            )
            out.extend(o.uri for o in self._storage.list(bucket, head) if regex.match(o.name))
        return out

    def _finish(self, job: _Job, at: float, *, share: float) -> None:
        """Answer every line (or the first ``share`` of them), write the predictions."""
        results: list[_LineResult] = []
        lines: list[tuple[str, int, bytes]] = []
        for uri in self._expand(job.input_uris):
            stored = self._storage.read(uri)
            if stored is None:
                with self._lock:
                    job.error = {
                        "code": 5,
                        "message": f"Failed to read the input file {uri}: not found.",
                    }
                    _enter(job, "JOB_STATE_FAILED", at)
                return
            for number, raw in enumerate(stored.data.split(b"\n"), start=1):
                if raw.strip():
                    lines.append((uri, number, raw))
        done = len(lines) if share >= 1.0 else int(len(lines) * share)
        for uri, number, raw in lines[:done]:
            results.append(self._answer(job, uri, number, raw, at))
        order = list(range(len(results)))
        if self._config.batch_shuffle_output:
            random.Random(f"{self._config.seed}:{job.job_id}:order").shuffle(order)
        payload = b"".join(orjson.dumps(results[i].output) + b"\n" for i in order)
        assert job.output_directory is not None
        try:
            if results:
                self._storage.write(f"{job.output_directory}/predictions.jsonl", payload)
        except StorageError as error:
            with self._lock:
                job.error = {"code": 13, "message": f"Failed to write predictions: {error.message}"}
                _enter(job, "JOB_STATE_FAILED", at)
            return
        ok = sum(1 for r in results if r.record.ok)
        with self._lock:
            self._lines.extend(r.record for r in results)
            job.successful = ok
            job.failed = len(results) - ok
            job.incomplete = len(lines) - len(results)
            if job.state == "JOB_STATE_CANCELLING":
                return
            if ok == len(results):
                _enter(job, "JOB_STATE_SUCCEEDED", at)
            elif ok:
                _enter(job, "JOB_STATE_PARTIALLY_SUCCEEDED", at)
            else:
                job.error = {"code": 3, "message": "Every request in the batch failed."}
                _enter(job, "JOB_STATE_FAILED", at)

    # -- lines -----------------------------------------------------------------------------

    def _answer(self, job: _Job, uri: str, number: int, raw: bytes, at: float) -> _LineResult:
        spec = job.spec
        try:
            line = orjson.loads(raw)
        except orjson.JSONDecodeError:
            line = None
        key = _line_key(line, spec)
        injected = self._injected_failure(uri, number, raw)
        try:
            if not isinstance(line, dict):
                raise _invalid("Invalid JSON payload received. Each line must be a JSON object.")
            if spec.family == "gemini":
                chat = self._gemini_request(job, line)
            else:
                chat = self._openai_request(job, line)
            if injected is not None:
                raise injected
            plan = plan_answer(chat)
        except ApiError as error:
            record = self._line_record(job, uri, number, key, error=error)
            return _LineResult(self._failed_line(job, line, error, at), record)
        record = self._line_record(job, uri, number, key, plan=plan)
        if spec.family == "gemini":
            output = self._gemini_line(line, chat, plan, at)
        else:
            output = self._openai_line(line, chat, plan, at)
        return _LineResult(output, record)

    def _injected_failure(self, uri: str, number: int, raw: bytes) -> ApiError | None:
        rate = self._config.batch_line_failure_rate
        if rate <= 0:
            return None
        digest = request_digest(self._config.seed, f"{uri}\n{number}\n".encode() + raw)
        if (digest & 0xFFFFFFFF) / 2**32 >= rate:
            return None
        if digest >> 63:
            return ApiError(
                429,
                "RESOURCE_EXHAUSTED",
                "Resource exhausted. Please try again later.",
            )
        return ApiError(500, "INTERNAL", "Internal error encountered.")

    def _resolver(self, job: _Job) -> ModelResolver:
        return ModelResolver(
            self._models, project=job.project, location=_serving_location(job), endpoint="openapi"
        )

    def _gemini_request(self, job: _Job, line: Mapping[str, object]) -> ChatRequest:
        request = line.get("request")
        if not isinstance(request, Mapping):
            raise _invalid(
                'Invalid JSON payload received. Each line needs a "request" object holding '
                "a GenerateContentRequest."
            )
        body = _gemini_to_chat(request, job.spec.name)
        chat = parse_request(
            orjson.dumps(body), seed=self._config.seed, resolve=self._resolver(job)
        )
        validate_limits(chat, _serving_location(job))
        return chat

    def _openai_request(self, job: _Job, line: Mapping[str, object]) -> ChatRequest:
        if not isinstance(line.get("custom_id"), str) or not line.get("custom_id"):
            raise _invalid('Each line needs a string "custom_id".')
        if line.get("method", "POST") != "POST":
            raise _invalid("Only the POST method is supported.")
        if line.get("url", "/v1/chat/completions") != "/v1/chat/completions":
            raise _invalid(f"Unsupported url {line.get('url')!r}; use /v1/chat/completions.")
        body = line.get("body")
        if not isinstance(body, Mapping):
            raise _invalid('Each line needs a "body" object holding a chat-completions request.')
        chat_body = {k: v for k, v in body.items() if k not in ("stream", "stream_options")}
        chat_body["model"] = job.spec.name  # the job's model serves every line
        chat = parse_request(
            orjson.dumps(chat_body), seed=self._config.seed, resolve=self._resolver(job)
        )
        validate_limits(chat, _serving_location(job))
        return chat

    def _gemini_line(
        self, line: Mapping[str, object], chat: ChatRequest, plan: Plan, at: float
    ) -> dict[str, object]:
        created = self._stamp(at)
        candidates: list[dict[str, object]] = []
        for index, choice in enumerate(plan.choices):
            parts: list[dict[str, object]] = []
            if chat.include_thoughts and choice.reasoning:
                parts.append({"text": "".join(choice.reasoning[:40]).strip(), "thought": True})
            if choice.content:
                parts.append({"text": choice.content_text()})
            content: dict[str, object] = {"role": "model"}
            if parts:
                content["parts"] = parts
            candidate: dict[str, object] = {
                "content": content,
                "finishReason": _FINISH_REASONS.get(choice.finish_reason, "OTHER"),
            }
            if index:
                candidate["index"] = index
            candidates.append(candidate)
        p, c, r = plan.prompt_tokens, plan.content_tokens, plan.reasoning_tokens
        usage: dict[str, object] = {
            "promptTokenCount": p,
            "promptTokensDetails": [{"modality": "TEXT", "tokenCount": p}],
            "totalTokenCount": p + c + r,
            "trafficType": "ON_DEMAND",
        }
        if c:
            usage["candidatesTokenCount"] = c
            usage["candidatesTokensDetails"] = [{"modality": "TEXT", "tokenCount": c}]
        if r:
            usage["thoughtsTokenCount"] = r
        response = {
            "candidates": candidates,
            "createTime": created,
            "modelVersion": chat.spec.short_name,
            "responseId": new_response_id(self._response_ids, "gemini"),
            "usageMetadata": usage,
        }
        out: dict[str, object] = {"status": "", "processed_time": _processed(created)}
        out.update({k: v for k, v in line.items() if k not in ("status", "response")})
        out["response"] = orjson.loads(orjson.dumps(response, option=orjson.OPT_SORT_KEYS))
        return out

    def _openai_line(
        self, line: Mapping[str, object], chat: ChatRequest, plan: Plan, at: float
    ) -> dict[str, object]:
        response_id = new_response_id(self._response_ids, "vllm")
        body = orjson.loads(
            completion_body(
                chat,
                plan,
                response_id=response_id,
                created=int(self._wall() - (self._clock() - at)),
                options=AnswerOptions(reasoning_field=shape_settings(self._config).reasoning_field),
            )
        )
        return {
            "id": "batch_req_" + response_id.removeprefix("chatcmpl-"),
            "custom_id": line.get("custom_id"),
            "response": {"status_code": 200, "request_id": response_id, "body": body},
            "error": None,
        }

    def _failed_line(
        self, job: _Job, line: object, error: ApiError, at: float
    ) -> dict[str, object]:
        if job.spec.family == "gemini":
            out: dict[str, object] = {
                "status": _status_text(error),
                "processed_time": _processed(self._stamp(at)),
            }
            if isinstance(line, Mapping):
                out.update({k: v for k, v in line.items() if k not in ("status", "response")})
            return out
        custom_id = line.get("custom_id") if isinstance(line, Mapping) else None
        envelope = {"error": {"code": error.code, "message": error.message, "status": error.status}}
        return {
            "id": "batch_req_" + self._response_ids.randbytes(16).hex(),
            "custom_id": custom_id,
            "response": {"status_code": error.code, "body": envelope},
            "error": None,
        }

    def _line_record(
        self,
        job: _Job,
        uri: str,
        number: int,
        key: str | None,
        *,
        plan: Plan | None = None,
        error: ApiError | None = None,
    ) -> BatchLineRecord:
        spec = job.spec
        price_in = spec.price_in * BATCH_PRICE_FACTOR
        price_out = spec.price_out * BATCH_PRICE_FACTOR
        if plan is None:
            assert error is not None
            return BatchLineRecord(
                job_id=job.job_id,
                model=spec.name,
                input_uri=uri,
                line=number,
                key=key,
                ok=False,
                code=error.code,
                error_status=error.status,
                error_message=error.message,
                prompt_tokens=0,
                completion_tokens=0,
                reasoning_tokens=0,
                total_tokens=0,
                price_in_per_m=price_in,
                price_out_per_m=price_out,
                cost_usd=0.0,
            )
        p, c, r = plan.prompt_tokens, plan.content_tokens, plan.reasoning_tokens
        return BatchLineRecord(
            job_id=job.job_id,
            model=spec.name,
            input_uri=uri,
            line=number,
            key=key,
            ok=True,
            code=200,
            error_status=None,
            error_message=None,
            prompt_tokens=p,
            completion_tokens=c + r,
            reasoning_tokens=r,
            total_tokens=p + c + r,
            price_in_per_m=price_in,
            price_out_per_m=price_out,
            cost_usd=(p * price_in + (c + r) * price_out) / 1_000_000,
        )


# -- helpers ------------------------------------------------------------------------------


def _enter(job: _Job, state: str, at: float) -> None:
    if job.state != state:
        job.state = state
        job.states.append((state, at))


def _record(job: _Job) -> BatchJobRecord:
    return BatchJobRecord(
        job_id=job.job_id,
        name=job.name,
        display_name=job.display_name,
        model=job.spec.name,
        location=job.location,
        input_uris=job.input_uris,
        output_uri_prefix=job.output_prefix,
        labels=job.labels,
        outcome=job.outcome,
        state=job.state,
        states=tuple(job.states),
        line_count=job.line_count,
        successful=job.successful,
        failed=job.failed,
        incomplete=job.incomplete,
        cancel_calls=job.cancel_calls,
        output_directory=job.output_directory,
    )


def _serving_location(job: _Job) -> str:
    """Where the job's lines are served: its location, or ``global`` for a multi-region."""
    return job.location if job.location in job.spec.locations else "global"


def _rfc3339(unix: float) -> str:
    return datetime.fromtimestamp(unix, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _processed(stamp: str) -> str:
    """``processed_time`` as Vertex writes it: milliseconds and ``+00:00``."""
    return stamp[:23] + "+00:00"


def _json(body: Mapping[str, object]) -> web.Response:
    return web.Response(body=orjson.dumps(body), content_type="application/json")


def _count_lines(data: bytes) -> int:
    return sum(1 for line in data.split(b"\n") if line.strip())


def _input_uris(config: object) -> tuple[str, ...]:
    if not isinstance(config, Mapping):
        raise _invalid("The BatchPredictionJob.input_config is required.")
    if config.get("instancesFormat") != "jsonl":
        raise _invalid(
            'The simulator serves Cloud Storage JSONL input only: instancesFormat "jsonl".'
        )
    source = config.get("gcsSource")
    uris = source.get("uris") if isinstance(source, Mapping) else None
    if isinstance(uris, str):
        uris = [uris]
    if not isinstance(uris, list) or not uris:
        raise _invalid("The BatchPredictionJob.input_config.gcs_source.uris is required.")
    for uri in uris:
        if not isinstance(uri, str):
            raise _invalid("Input URIs must be strings.")
        try:
            split_gs_uri(uri)
        except ValueError:
            raise _invalid(f"Invalid Cloud Storage URI {uri!r}: expected gs://B/PATH.") from None
    return tuple(uris)


def _output_prefix(config: object) -> str:
    if not isinstance(config, Mapping):
        raise _invalid("The BatchPredictionJob.output_config is required.")
    if config.get("predictionsFormat") != "jsonl":
        raise _invalid(
            'The simulator writes Cloud Storage JSONL output only: predictionsFormat "jsonl".'
        )
    destination = config.get("gcsDestination")
    prefix = destination.get("outputUriPrefix") if isinstance(destination, Mapping) else None
    if not isinstance(prefix, str):
        raise _invalid(
            "The BatchPredictionJob.output_config.gcs_destination.output_uri_prefix is required."
        )
    try:
        split_gs_uri(prefix)
    except ValueError:
        raise _invalid(f"Invalid Cloud Storage URI {prefix!r}: expected gs://B/PATH.") from None
    return prefix.rstrip("/")


def _labels(value: object) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, Mapping) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise _invalid("Labels must map strings to strings.")
    return dict(value)


def _parse_filter(text: str) -> list[tuple[str, str]]:
    """The list filter's simple terms: ``display_name="x" AND state=JOB_STATE_RUNNING``."""
    if not text.strip():
        return []
    terms = []
    for part in re.split(r"\s+AND\s+", text.strip()):
        match = _FILTER_TERM.match(part)
        if match is None:
            raise _invalid(f"Unsupported filter term {part!r}.")
        key, value = match.groups()
        terms.append(("state" if key == "state" else "display_name", value))
    return terms


def _matches(job: _Job, key: str, value: str) -> bool:
    return job.state == value if key == "state" else job.display_name == value


def _line_key(line: object, spec: ModelSpec) -> str | None:
    if not isinstance(line, Mapping):
        return None
    value = line.get("key" if spec.family == "gemini" else "custom_id")
    if value is None:
        return None
    return value if isinstance(value, str) else orjson.dumps(value).decode()


def _unknown_field(name: str, where: str) -> ApiError:
    return _invalid(
        f"Invalid JSON payload received. Unknown name \"{name}\" at '{where}': Cannot find field."
    )


def _parts_text(parts: object, where: str) -> tuple[str, list[dict[str, object]]]:
    """The text of a Content's parts, and its function calls as OpenAI tool calls."""
    if not isinstance(parts, list) or not parts:
        raise _invalid(
            "Unable to submit request because it must include at least one parts field, "
            "which describes the prompt input."
        )
    texts: list[str] = []
    calls: list[dict[str, object]] = []
    for part in parts:
        if not isinstance(part, Mapping):
            raise _invalid(f"Invalid JSON payload received. Invalid value at '{where}.parts'.")
        text = part.get("text")
        if isinstance(text, str):
            texts.append(text)
        call = part.get("functionCall") or part.get("function_call")
        if isinstance(call, Mapping):
            calls.append(
                {
                    "id": f"call_{len(calls)}",
                    "type": "function",
                    "function": {
                        "name": str(call.get("name", "")),
                        "arguments": orjson.dumps(call.get("args", {})).decode(),
                    },
                }
            )
        reply = part.get("functionResponse") or part.get("function_response")
        if isinstance(reply, Mapping):
            texts.append(orjson.dumps(reply).decode())
        for media in ("inlineData", "inline_data", "fileData", "file_data"):
            if media in part:
                texts.append("\u25a0" * 1032)  # an image part counts as 258 tokens
    return "\n".join(texts), calls


def _gemini_to_chat(request: Mapping[str, object], model: str) -> dict[str, object]:
    """A GenerateContentRequest as the chat body the answer planner understands; raises the
    400s Vertex gives for a malformed request.
    """
    for name in request:
        if name not in _REQUEST_FIELDS:
            raise _unknown_field(name, "request")
    contents = request.get("contents")
    if not isinstance(contents, list):
        raise _invalid(
            "Invalid JSON payload received. Invalid value at 'contents': expected a list of "
            "Content."
        )
    if not contents:
        raise _invalid("Unable to submit request because at least one contents field is required.")
    messages: list[dict[str, object]] = []
    system = request.get("systemInstruction", request.get("system_instruction"))
    if system is not None:
        if not isinstance(system, Mapping):
            raise _invalid("Invalid JSON payload received. Invalid value at 'system_instruction'.")
        text, _ = _parts_text(system.get("parts"), "system_instruction")
        messages.append({"role": "system", "content": text})
    for index, content in enumerate(contents):
        if not isinstance(content, Mapping):
            raise _invalid(f"Invalid JSON payload received. Invalid value at 'contents[{index}]'.")
        role = content.get("role", "user")
        if role not in _ROLES:
            raise _invalid("Please use a valid role: user, model.")
        text, calls = _parts_text(content.get("parts"), f"contents[{index}]")
        message: dict[str, object] = {"role": _ROLES[str(role)], "content": text}
        if calls:
            message["tool_calls"] = calls
        messages.append(message)
    body: dict[str, object] = {"model": model, "messages": messages}
    config = request.get("generationConfig", request.get("generation_config"))
    if config is not None:
        if not isinstance(config, Mapping):
            raise _invalid("Invalid JSON payload received. Invalid value at 'generation_config'.")
        for name in config:
            if name not in _GENERATION_FIELDS:
                raise _unknown_field(name, "generation_config")
        max_tokens = config.get("maxOutputTokens", config.get("max_output_tokens"))
        if max_tokens is not None:
            body["max_tokens"] = max_tokens
        count = config.get("candidateCount", config.get("candidate_count"))
        if count is not None:
            body["n"] = count
        thinking = config.get("thinkingConfig", config.get("thinking_config"))
        if isinstance(thinking, Mapping):
            google: dict[str, object] = {}
            budget = thinking.get("thinkingBudget", thinking.get("thinking_budget"))
            if budget is not None:
                google["thinking_budget"] = budget
            include = thinking.get("includeThoughts", thinking.get("include_thoughts"))
            if include is not None:
                google["include_thoughts"] = include
            body["extra_body"] = {"google": {"thinking_config": google}}
        elif thinking is not None:
            raise _invalid("Invalid JSON payload received. Invalid value at 'thinking_config'.")
    tools = request.get("tools")
    if tools is not None:
        body["tools"] = tools
    return body
