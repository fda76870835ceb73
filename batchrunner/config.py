"""The run configuration: one immutable object, built once at the edge and passed down.

``RunConfig`` is what the library takes; ``build_config`` makes one from command-line
values, an optional TOML job file and the environment (flags win over the file, the file
over the environment). Nothing below this module reads ``os.environ``, except at other
edges of a process: a Ray worker's own credentials, and Arrow's choice of allocator,
which the command makes before pyarrow loads (``batchrunner.pipeline.allocators``).
"""

from __future__ import annotations

import functools
import hmac
import os
import re
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any, Final, NoReturn

from batchrunner.errors import ConfigError

DEFAULT_MODEL = "google/gemini-2.5-flash"

#: The files batchrunner reads (inputs and result files), by suffix, with their format.
READ_SUFFIXES: Final = MappingProxyType(
    {".jsonl": "jsonl", ".ndjson": "jsonl", ".jsonl.gz": "jsonl.gz", ".parquet": "parquet"}
)
#: The files a run writes: OUTPUT's format comes from its suffix.
WRITE_SUFFIXES: Final = (".jsonl", ".parquet")


def file_format(path: str | os.PathLike[str]) -> str | None:
    """``"jsonl"``, ``"jsonl.gz"`` or ``"parquet"`` from a file's name; None for another kind."""
    name = os.fspath(path).lower()
    for suffix, fmt in READ_SUFFIXES.items():
        if name.endswith(suffix):
            return fmt
    return None


def suffixes(names: Sequence[str]) -> str:
    """``.jsonl, .ndjson or .parquet``: suffixes for a message or a help text."""
    return ", ".join(names[:-1]) + " or " + names[-1] if len(names) > 1 else names[0]


@functools.lru_cache(maxsize=256)
def model_family(model: str) -> str:
    """Return ``"gemini"`` for Google's models and ``"vllm"`` for everything else."""
    name = model.strip().lower()
    publisher, _, bare = name.rpartition("/")
    if publisher.endswith("google") or bare.startswith("gemini"):
        return "gemini"
    return "vllm"


# --- what one request may carry: Vertex's body size and each model's input limit ----------

#: Vertex refuses a request whose inline data is past 20 MB (Gemini on Vertex docs, the
#: inline-data limits of the image/document understanding pages: larger inputs go by Cloud
#: Storage URI); ``--max-request-mb``. MB here is 1,000,000 bytes.
MAX_REQUEST_MB: Final = 20.0
#: A prompt is refused before sending only when its estimate (about 4 characters a token)
#: is past the model's input limit times this; a borderline one still goes to the server,
#: which counts exactly. ``--input-limit-slack``.
INPUT_LIMIT_SLACK: Final = 1.25
#: Input (context) limits in tokens, by bare model id (publisher prefix dropped).
#: - Gemini 2.5 Pro / Flash / Flash-Lite and 2.0 Flash: 1,048,576 input tokens (Google's
#:   model pages, cloud.google.com/vertex-ai/generative-ai/docs/models/gemini/2-5-flash etc.,
#:   "Maximum input tokens").
#: - gpt-oss 120b / 20b MaaS: 131,072 tokens, the figure in Vertex's own 400 ("The input
#:   token count (N) exceeds the maximum number of tokens allowed (131072).") and the
#:   Vertex MaaS model page's context window.
#: A model not listed gets no token check (the 20 MB body check still applies).
MAX_INPUT_TOKENS: Final = MappingProxyType(
    {
        "gemini-2.5-pro": 1_048_576,
        "gemini-2.5-flash": 1_048_576,
        "gemini-2.5-flash-lite": 1_048_576,
        "gemini-2.0-flash": 1_048_576,
        "gpt-oss-120b-maas": 131_072,
        "gpt-oss-20b-maas": 131_072,
    }
)
_VERSION_SUFFIX = re.compile(r"-\d{3}$")  # gemini-2.0-flash-001


@functools.lru_cache(maxsize=256)
def max_input_tokens(model: str) -> int | None:
    """The model's input limit in tokens from ``MAX_INPUT_TOKENS``; None when not known."""
    bare = model.strip().lower().rpartition("/")[2]
    limit = MAX_INPUT_TOKENS.get(bare)
    if limit is None:
        limit = MAX_INPUT_TOKENS.get(_VERSION_SUFFIX.sub("", bare))
    return limit


@dataclass(frozen=True, slots=True)
class RequestLimits:
    """What a request may carry before it is sent; past either, the row is ``bad_input``."""

    max_request_bytes: int = int(MAX_REQUEST_MB * 1_000_000)
    # refuse a prompt whose estimate is past (model's input limit x slack); None: no check
    input_limit_slack: float | None = INPUT_LIMIT_SLACK

    def __post_init__(self) -> None:
        if self.max_request_bytes < 1:
            raise ConfigError("--max-request-mb must be positive")
        if self.input_limit_slack is not None and not self.input_limit_slack > 0:
            raise ConfigError("--input-limit-slack must be positive (or 'off')")


# --- secrets: API keys and tokens travel wrapped, and never show themselves --------------

_PLACEHOLDER: Final = "Secret('***')"


class Secret:
    """A secret string: hashable and comparable, but never printed."""

    __slots__ = ("_value",)

    _value: str

    def __init__(self, value: str) -> None:
        if not isinstance(value, str):
            raise TypeError("Secret wraps a str")
        object.__setattr__(self, "_value", value)

    def reveal(self) -> str:
        """Return the wrapped value; call only where it goes on the wire."""
        return self._value

    def __repr__(self) -> str:
        return _PLACEHOLDER

    __str__ = __repr__

    def __format__(self, format_spec: str) -> str:
        return format(_PLACEHOLDER, format_spec)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Secret):
            return NotImplemented
        # Constant-time, so comparing secrets leaks nothing through timing.
        return hmac.compare_digest(self._value.encode(), other._value.encode())

    def __hash__(self) -> int:
        return hash((Secret, self._value))

    def __bool__(self) -> bool:
        return bool(self._value)

    def __setattr__(self, name: str, value: object) -> NoReturn:
        raise AttributeError("Secret is immutable")

    def __delattr__(self, name: str) -> NoReturn:
        raise AttributeError("Secret is immutable")

    def __copy__(self) -> Secret:
        return self

    def __deepcopy__(self, memo: dict[int, object]) -> Secret:
        return self

    def __reduce__(self) -> NoReturn:
        # Pickling would write the value out in clear; a secret stays in this process.
        raise TypeError("a Secret cannot be pickled")


# --- what a run reads, sends and authenticates with ---------------------------------------

CLOUD_PLATFORM_SCOPE: Final = "https://www.googleapis.com/auth/cloud-platform"
#: How long a token source that has issued tokens is retried once no usable token is left.
AUTH_PATIENCE_S: Final = 300.0
AUTH_MODES: Final = ("auto", "adc", "static", "none")


@dataclass(frozen=True, slots=True)
class AuthConfig:
    """Where access tokens come from; built once by the config layer."""

    mode: str = "auto"
    static_token: Secret | None = None
    credentials_file: str | None = None
    impersonate_service_account: str | None = None
    quota_project: str | None = None
    scopes: tuple[str, ...] = (CLOUD_PLATFORM_SCOPE,)
    # how long a token source that has issued tokens is retried once no usable token is
    # left (requests wait meanwhile); ``--auth-patience``, ``[auth] patience``
    patience_s: float = AUTH_PATIENCE_S

    def __post_init__(self) -> None:
        if not self.patience_s >= 0:
            raise ConfigError("--auth-patience must be zero or more seconds")
        if self.mode not in AUTH_MODES:
            raise ConfigError(
                f"unknown auth mode {self.mode!r}: expected one of {', '.join(AUTH_MODES)}"
            )


@dataclass(frozen=True, slots=True)
class InputFields:
    """Which input columns hold what."""

    id: str = "id"
    prompt: str = "prompt"
    messages: str = "messages"
    system: str = "system"
    model: str = "model"
    params: str = "params"


@dataclass(frozen=True, slots=True)
class RequestDefaults:
    """Run-wide request settings; a row's own values win over these."""

    system: str | None = None
    params: Mapping[str, Any] = field(default_factory=dict)
    google: Mapping[str, Any] = field(default_factory=dict)
    stream: bool = False


# --- shards: what the output of one shard of a job is called ------------------------------

SHARD_SUFFIX: Final = re.compile(r"\.shard-(\d{5,})-of-(\d{5,})$")


def shard_name(index: int, count: int) -> str:
    """``shard-00003-of-00016``: sorts in shard order, like the files of a sharded dataset."""
    if not 0 <= index < count:
        raise ValueError(f"need 0 <= index < count, got {index}/{count}")
    return f"shard-{index:05d}-of-{count:05d}"


def shard_path(path: str | os.PathLike[str], index: int, count: int) -> Path:
    """Where shard ``index`` of ``count`` writes: ``out.parquet`` → ``out.shard-…-of-….parquet``."""
    p = Path(path)
    suffix = p.suffix
    return p.with_name(f"{p.name.removesuffix(suffix)}.{shard_name(index, count)}{suffix}")


# --- consumption tiers: chosen by request headers, not by the body ---------------------------

TIERS: Final = ("standard", "flex", "priority")
PROVISIONED_MODES: Final = ("auto", "only", "never")
SHARED_REQUEST_TYPE_HEADER: Final = "X-Vertex-AI-LLM-Shared-Request-Type"
REQUEST_TYPE_HEADER: Final = "X-Vertex-AI-LLM-Request-Type"
FLEX_TIMEOUT_S: Final = 1800.0  # Flex requests may queue up to 30 minutes


def tier_headers(tier: str, provisioned: str) -> dict[str, str]:
    """The request headers that ask Vertex for ``tier`` and a Provisioned Throughput mode."""
    headers: dict[str, str] = {}
    if tier in ("flex", "priority"):
        headers[SHARED_REQUEST_TYPE_HEADER] = tier
    if provisioned == "only":
        headers[REQUEST_TYPE_HEADER] = "dedicated"
    elif provisioned == "never":
        headers[REQUEST_TYPE_HEADER] = "shared"
    return headers


#: Answers ``--fail-on`` can turn into ``error`` rows; ``empty`` is the default.
FAIL_ON_KINDS: Final = ("length", "content_filter", "empty", "invalid-json")
DEFAULT_FAIL_ON: Final = frozenset({"empty"})


def parse_fail_on(value: object) -> frozenset[str]:
    """``"length,empty"`` (or a list of names) as a set; ``none`` or ``""`` for no checks."""
    if isinstance(value, str):
        names = [n.strip() for n in value.split(",") if n.strip()]
    elif isinstance(value, list | tuple | frozenset | set) and all(
        isinstance(n, str) for n in value
    ):
        names = [n.strip() for n in value]
    else:
        raise ConfigError(f"fail_on must be a comma-separated string or a list, got {value!r}")
    names = [n.replace("_", "-") if n == "invalid_json" else n for n in names]
    if names == ["none"]:
        return frozenset()
    unknown = [n for n in names if n not in FAIL_ON_KINDS]
    if unknown:
        raise ConfigError(
            f"fail_on: unknown kind {unknown[0]!r}; choose from {', '.join(FAIL_ON_KINDS)} or none"
        )
    return frozenset(names)


@dataclass(frozen=True, slots=True)
class SimulateOptions:
    """Knobs of the built-in simulator used by ``--simulate``."""

    latency: str = "fast"
    seed: int = 0
    error_rate: float = 0.0
    rpm_quota: int | None = None
    tpm_quota: int | None = None
    token_ttl: float = 3600.0
    # Shapes of real traffic (None = the latency profile's default; see SimulatorConfig).
    faults: Mapping[str, float] = field(default_factory=dict)  # kind -> probability
    tool_call_rate: float | None = None  # requests offering tools answered with calls
    invalid_tool_arguments_rate: float = 0.0  # tool calls whose arguments are not JSON
    reasoning_field: str | None = None  # gpt-oss: reasoning_content | reasoning | both
    vllm_stream_usage: str | None = None  # final_chunk | requested (vLLM's rule)
    safety_block_rate: float | None = None  # Gemini answers blocked with a raw reason
    prompt_block_rate: float = 0.0  # prompts refused with 400 "Request blocked"
    batch_turnaround_s: float = 5.0  # batch jobs: created -> ended
    batch_line_failure_rate: float = 0.0  # batch lines answered with a 429/500 status


@dataclass(frozen=True, slots=True)
class ModelTarget:
    """Where one model's requests go when not to the run's ``--location``/``--endpoint-id``."""

    location: str | None = None
    endpoint_id: str | None = None


def parse_model(entry: object) -> tuple[str, ModelTarget | None]:
    """A ``models`` entry: ``"id"``, ``"id@location"`` or ``{id, location, endpoint_id}``."""
    if isinstance(entry, Mapping):
        unknown = sorted(set(entry) - {"id", "location", "endpoint_id"})
        if unknown:
            raise ConfigError(f"models: unknown key(s) {', '.join(unknown)} in {dict(entry)!r}")
        model, location, endpoint = (entry.get(k) for k in ("id", "location", "endpoint_id"))
        if not isinstance(model, str) or not model:
            raise ConfigError(f"models: a table needs a non-empty id, got {dict(entry)!r}")
        if not all(v is None or (isinstance(v, str) and v) for v in (location, endpoint)):
            raise ConfigError(f"models: location and endpoint_id must be strings in {model!r}")
        target = ModelTarget(location, endpoint)
        return model, None if target == ModelTarget() else target
    if not isinstance(entry, str) or not entry:
        raise ConfigError("every model must be a non-empty string")
    model, sep, location = entry.partition("@")
    if not sep:
        return entry, None
    if not model or not location or "/" in location:
        raise ConfigError(f"--model {entry!r}: expected MODEL@LOCATION, e.g. {_EXAMPLE_AT}")
    return model, ModelTarget(location=location)


_EXAMPLE_AT = "openai/gpt-oss-20b-maas@us-central1"


@dataclass(frozen=True, slots=True)
class RunConfig:
    """Everything one run needs to know. Build it directly, or from flags with ``build_config``."""

    input: Path
    output: Path
    models: tuple[str, ...] = ()
    default_model: str = DEFAULT_MODEL
    # where requests go
    project: str | None = None
    location: str = "global"
    endpoint_id: str = "openapi"
    api_version: str = "v1"
    base_url: str | None = None
    simulate: SimulateOptions | None = None
    # a model's own location or endpoint (``--model id@location``), where it differs
    model_targets: Mapping[str, ModelTarget] = field(default_factory=dict)
    # the batch route (batchrunner.batch): "online" sends each request, "batch" submits
    # batchPredictionJobs through Cloud Storage files under ``staging``
    via: str = "online"
    staging: str | None = None  # gs://BUCKET/PREFIX
    keep_staging: bool = False
    storage_url: str | None = None  # a Cloud Storage JSON API endpoint other than Google's
    batch_poll_s: float = 30.0  # the first wait between polls; it grows to 5 minutes
    auth: AuthConfig = field(default_factory=AuthConfig)
    # what is sent
    fields: InputFields = field(default_factory=InputFields)
    request: RequestDefaults = field(default_factory=RequestDefaults)
    limits: RequestLimits = field(default_factory=RequestLimits)
    # flow control
    concurrency: int = 64
    rpm: float | None = None
    tpm: float | None = None
    input_tpm: float | None = None
    output_tpm: float | None = None
    adaptive: bool = True
    max_attempts: int = 6
    timeout_s: float = 600.0
    connect_timeout_s: float = 20.0
    max_row_s: float = 1800.0
    max_cost: float | None = None  # the whole job's budget: earlier runs into OUTPUT count
    # consumption tiers: the run's, and per model (model id -> tier) where it differs
    tier: str = "standard"
    model_tiers: Mapping[str, str] = field(default_factory=dict)
    provisioned: str = "auto"
    # which 200 answers count as errors (--fail-on)
    fail_on: frozenset[str] = DEFAULT_FAIL_ON
    # output
    restart: bool = False
    retry_failed: bool = False
    ordered: bool = False
    dry_run: bool = False
    summary_path: Path | None = None
    prices_path: Path | None = None
    checkpoint_s: float = 2.0
    grace_s: float = 30.0
    part_rows: int = 10_000  # rows per Parquet part while a run writes (job file only)
    # Memory for the per-row state (ids seen, keys OUTPUT already holds), half each; past
    # it the keys spill to sorted runs in OUTPUT.index/ and peak RSS stays flat. 8 MB an
    # index is a million keys: it fills by 1M rows, so RSS does not grow from there to 10M
    # (at 32 MB an index it grew by 24 MB); a lookup past it reads a block of each file.
    index_memory_mb: float = 16.0
    # (index, count): this process runs one shard of the input; ``output`` is the shard's own
    # file and the rate limits above are the whole job's (each shard takes 1/count of them)
    shard: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        if self.shard is not None and not 0 <= self.shard[0] < self.shard[1]:
            raise ConfigError(f"invalid shard {self.shard[0]}/{self.shard[1]}: need 0 <= i < n")
        if self.concurrency < 1:
            raise ConfigError("--concurrency must be at least 1")
        if self.max_attempts < 1:
            raise ConfigError("--max-attempts must be at least 1")
        if self.timeout_s <= 0:
            raise ConfigError("--timeout must be positive")
        for name in ("rpm", "tpm", "input_tpm", "output_tpm", "max_cost"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ConfigError(f"--{name.replace('_', '-')} must be positive")
        if self.restart and self.retry_failed:
            raise ConfigError("--restart and --retry-failed cannot be combined")
        for model, tier in {"--tier": self.tier, **self.model_tiers}.items():
            if tier not in TIERS:
                where = model if model == "--tier" else f"tier of {model}"
                raise ConfigError(f"{where}: unknown tier {tier!r}; expected {', '.join(TIERS)}")
        if self.provisioned not in PROVISIONED_MODES:
            raise ConfigError(
                f"--provisioned: unknown mode {self.provisioned!r}; "
                f"expected {', '.join(PROVISIONED_MODES)}"
            )
        if self.model_targets and self.base_url:
            where = ", ".join(sorted(self.model_targets))
            raise ConfigError(
                f"a model's own location or endpoint ({where}) is a Vertex address; "
                "--base-url names one server for every model"
            )
        if self.via not in VIAS:
            raise ConfigError(f"--via must be one of {', '.join(VIAS)}, got {self.via!r}")
        if self.via == "batch" and not (self.staging or "").startswith("gs://"):
            raise ConfigError(
                "--via batch needs --staging gs://BUCKET/PREFIX for its input and output files"
            )
        if self.batch_poll_s <= 0:
            raise ConfigError("batch_poll_seconds must be positive")
        if not self.index_memory_mb > 0:
            raise ConfigError("index_memory_mb must be positive")

    def target_of(self, model: str) -> tuple[str, str]:
        """The (location, endpoint id) ``model``'s requests go to."""
        target = self.model_targets.get(model)
        if target is None:
            return self.location, self.endpoint_id
        return target.location or self.location, target.endpoint_id or self.endpoint_id

    def tier_of(self, model: str) -> str:
        """The tier requests for ``model`` ask for."""
        return self.model_tiers.get(model, self.tier)


VIAS: Final = ("online", "batch")

# Names a job file may use at its top level, with their RunConfig field.
_SCALARS: dict[str, str] = {
    "input": "input",
    "output": "output",
    "default_model": "default_model",
    "project": "project",
    "location": "location",
    "endpoint_id": "endpoint_id",
    "api_version": "api_version",
    "base_url": "base_url",
    "concurrency": "concurrency",
    "rpm": "rpm",
    "tpm": "tpm",
    "input_tpm": "input_tpm",
    "output_tpm": "output_tpm",
    "adaptive": "adaptive",
    "max_attempts": "max_attempts",
    "timeout": "timeout_s",
    "connect_timeout": "connect_timeout_s",
    "max_row_seconds": "max_row_s",
    "max_cost": "max_cost",
    "tier": "tier",
    "provisioned": "provisioned",
    "restart": "restart",
    "retry_failed": "retry_failed",
    "ordered": "ordered",
    "dry_run": "dry_run",
    "summary": "summary_path",
    "prices": "prices_path",
    "checkpoint_seconds": "checkpoint_s",
    "grace_seconds": "grace_s",
    "via": "via",
    "staging": "staging",
    "keep_staging": "keep_staging",
    "storage_url": "storage_url",
    "batch_poll_seconds": "batch_poll_s",
    "part_rows": "part_rows",
    "index_memory_mb": "index_memory_mb",
}
# Job-file keys read into RequestLimits (not RunConfig fields of their own).
_LIMITS = frozenset({"max_request_mb", "input_limit_slack"})
_TABLES = frozenset({"params", "google", "fields", "simulate", "auth", "tiers"})
_LISTS = frozenset({"models", "model"})
_REQUEST = frozenset({"system", "stream"})
_OTHER = frozenset({"fail_on"})


# What each job-file value must be: checked on reading, so `stream = "false"` is an error
# naming the key rather than a truthy string that turns streaming on.
_STR, _INT, _NUM, _BOOL, _TABLE = "a string", "an integer", "a number", "true or false", "a table"
_STRS = "a string or a list of strings"
_MODELS = "a model id, or a list of model ids and { id, location, endpoint_id } tables"
_JOB_TYPES: dict[str, str] = {
    **{k: _STR for k in ("input", "output", "default_model", "project", "location")},
    **{k: _STR for k in ("endpoint_id", "api_version", "base_url", "summary", "prices", "system")},
    **{k: _INT for k in ("concurrency", "max_attempts")},
    **{k: _NUM for k in ("rpm", "tpm", "input_tpm", "output_tpm", "timeout", "connect_timeout")},
    **{k: _NUM for k in ("max_row_seconds", "max_cost", "checkpoint_seconds", "grace_seconds")},
    **{k: _BOOL for k in ("adaptive", "restart", "retry_failed", "ordered", "dry_run", "stream")},
    **{k: _MODELS for k in ("models", "model")},
    "fail_on": _STRS,
    **{k: _STR for k in ("tier", "provisioned", "via", "staging", "storage_url")},
    **{k: _NUM for k in ("batch_poll_seconds", "index_memory_mb")},
    "keep_staging": _BOOL,
    "part_rows": _INT,
    "max_request_mb": _NUM,
    **{k: _TABLE for k in _TABLES},
    "params.max_tokens": _INT,
    "params.max_completion_tokens": _INT,
    "params.n": _INT,
    "params.seed": _INT,
    "params.temperature": _NUM,
    "params.top_p": _NUM,
    "params.presence_penalty": _NUM,
    "params.frequency_penalty": _NUM,
    "params.reasoning_effort": _STR,
    "params.response_format": _TABLE,
    "params.stream": _BOOL,
    "simulate.latency": _STR,
    "simulate.seed": _INT,
    "simulate.error_rate": _NUM,
    "simulate.rpm_quota": _INT,
    "simulate.tpm_quota": _INT,
    "simulate.token_ttl": _NUM,
    **{f"auth.{k}": _STR for k in ("mode", "credentials_file", "impersonate_service_account")},
    "auth.quota_project": _STR,
    "auth.scopes": _STRS,
}
_TOML_KIND = {str: "a string", int: "an integer", float: "a number", bool: "a boolean"}


def _is(value: object, expected: str) -> bool:
    if expected == _STR:
        return isinstance(value, str)
    if expected == _INT:
        return type(value) is int
    if expected == _NUM:
        return type(value) in (int, float)
    if expected == _BOOL:
        return type(value) is bool
    if expected == _TABLE:
        return isinstance(value, dict)
    if expected == _MODELS:
        return isinstance(value, str) or (
            isinstance(value, list) and all(isinstance(v, str | dict) for v in value)
        )
    return isinstance(value, str) or (
        isinstance(value, list) and all(isinstance(v, str) for v in value)
    )


def _check_job_types(p: Path, data: Mapping[str, Any]) -> None:
    """One line naming the key, what it must be and what it is, for the first wrong value."""
    items: list[tuple[str, object]] = list(data.items())
    for table in ("params", "simulate", "auth", "fields"):
        if isinstance(data.get(table), dict):
            items += [(f"{table}.{k}", v) for k, v in data[table].items()]
    for key, value in items:
        expected = _STR if key.startswith("fields.") else _JOB_TYPES.get(key)
        if expected is None or _is(value, expected):
            continue
        kind = _TOML_KIND.get(type(value), "a table" if isinstance(value, dict) else "a list")
        shown = f"{value!r} ({kind})" if not isinstance(value, dict | list) else kind
        raise ConfigError(f"{p}: {key} must be {expected}, got {shown}")


def load_job_file(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a TOML job file into a flat mapping of option names; unknown keys are an error."""
    p = Path(path)
    try:
        data = tomllib.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{p}: no such job file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{p}: cannot read job file ({exc})") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{p}: invalid TOML ({exc})") from None
    allowed = set(_SCALARS) | _TABLES | _LISTS | _REQUEST | _OTHER | _LIMITS
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise ConfigError(f"{p}: unknown job-file key(s): {', '.join(unknown)}")
    for key in _TABLES:
        if key in data and not isinstance(data[key], dict):
            raise ConfigError(f"{p}: [{key}] must be a table")
    _check_job_types(p, data)
    if "model" in data:
        data.setdefault("models", data.pop("model"))
    if isinstance(data.get("models"), str):
        data["models"] = [data["models"]]
    return data


def _number(name: str, value: Any, kind: type) -> Any:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        try:
            return kind(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{name} must be a number, got {value!r}") from None
    return kind(value)


_INTS = {"concurrency", "max_attempts", "part_rows"}
_FLOATS = {
    "rpm",
    "tpm",
    "input_tpm",
    "output_tpm",
    "index_memory_mb",
    "timeout_s",
    "connect_timeout_s",
    "max_row_s",
    "max_cost",
    "checkpoint_s",
    "grace_s",
    "batch_poll_s",
}
_PATHS = {"input", "output", "summary_path", "prices_path"}


def build_config(
    options: Mapping[str, Any],
    *,
    env: Mapping[str, str] | None = None,
    job: Mapping[str, Any] | None = None,
) -> RunConfig:
    """Merge flags (``options``; ``None`` means not given), a job file and the environment."""
    env = os.environ if env is None else env
    merged: dict[str, Any] = dict(job or {})
    for key, value in options.items():
        if value is None:
            continue
        if key in _TABLES and isinstance(value, Mapping):
            merged[key] = {**merged.get(key, {}), **value}
        elif key in _LISTS and not value:
            continue
        else:
            merged[key] = value
    values: dict[str, Any] = {}
    for key, attr in _SCALARS.items():
        if merged.get(key) is not None:
            values[attr] = merged[key]
    for attr in _INTS:
        if attr in values:
            values[attr] = _number(attr, values[attr], int)
    for attr in _FLOATS:
        if attr in values:
            values[attr] = _number(attr, values[attr], float)
    for attr in _PATHS:
        if attr in values:
            values[attr] = Path(values[attr])
    if "input" not in values:
        raise ConfigError("no INPUT file given")
    if "output" not in values and not merged.get("dry_run"):
        raise ConfigError("no output file given: use -o OUTPUT")
    values.setdefault("output", Path(str(values["input"]) + ".results.jsonl"))
    models: list[str] = []
    targets: dict[str, ModelTarget] = {}
    for entry in merged.get("models") or ():
        model, target = parse_model(entry)
        models.append(model)
        if target is not None:
            targets[model] = target
    values["models"] = tuple(dict.fromkeys(models))
    values["model_targets"] = targets
    values.setdefault("project", env.get("GOOGLE_CLOUD_PROJECT") or None)
    if "location" not in values and env.get("GOOGLE_CLOUD_LOCATION"):
        values["location"] = env["GOOGLE_CLOUD_LOCATION"]
    if "base_url" not in values and env.get("OPENAI_BASE_URL") and not merged.get("simulate"):
        values["base_url"] = env["OPENAI_BASE_URL"]
    shard = _shard(merged.get("shard"), merged.get("shard_count"), env)
    if shard is not None:
        values["shard"] = shard
        values["output"] = shard_path(values["output"], *shard)
        if "summary_path" in values:
            values["summary_path"] = shard_path(values["summary_path"], *shard)
    if merged.get("fail_on") is not None:
        values["fail_on"] = parse_fail_on(merged["fail_on"])
    values["fields"] = _fields(merged.get("fields") or {})
    tiers = merged.get("tiers") or {}
    if not all(isinstance(m, str) and isinstance(t, str) for m, t in tiers.items()):
        raise ConfigError('[tiers] maps model ids to tier names, e.g. "google/x" = "flex"')
    values["model_tiers"] = dict(tiers)
    tier = values.get("tier", "standard")
    if "timeout_s" not in values and "flex" in (tier, *tiers.values()):
        # Flex queues up to 30 minutes before it answers; a default deadline would give up.
        values["timeout_s"] = FLEX_TIMEOUT_S
        values.setdefault("max_row_s", 3 * FLEX_TIMEOUT_S)
    values["request"] = _request(merged)
    values["limits"] = _limits(merged)
    values["auth"] = _auth(merged.get("auth") or {}, env)
    sim = merged.get("simulate")
    if sim:
        values["simulate"] = _simulate(sim if isinstance(sim, Mapping) else {})
    try:
        return RunConfig(**values)
    except TypeError as exc:
        raise ConfigError(f"invalid configuration ({exc})") from None


def _shard(given: Any, count: Any, env: Mapping[str, str]) -> tuple[int, int] | None:
    """The shard this process runs: ``--shard I/N``, else the batch platform's task index.

    Cloud Run Jobs set ``CLOUD_RUN_TASK_INDEX`` and ``CLOUD_RUN_TASK_COUNT``; Kubernetes
    Indexed Jobs set ``JOB_COMPLETION_INDEX`` only, so the count comes from ``--shard-count``
    or ``BATCHRUNNER_SHARD_COUNT``. A count of 1 means no sharding.
    """
    if given is not None:
        if isinstance(given, str):
            index_text, sep, count_text = given.partition("/")
            try:
                index, total = int(index_text), int(count_text)
            except ValueError:
                raise ConfigError(f"--shard expects I/N, e.g. 3/16, got {given!r}") from None
            if not sep:
                raise ConfigError(f"--shard expects I/N, e.g. 3/16, got {given!r}")
        else:
            index, total = (int(v) for v in given)
    elif env.get("CLOUD_RUN_TASK_INDEX") and env.get("CLOUD_RUN_TASK_COUNT"):
        index = _env_int(env, "CLOUD_RUN_TASK_INDEX")
        total = _env_int(env, "CLOUD_RUN_TASK_COUNT")
    elif env.get("JOB_COMPLETION_INDEX"):
        index = _env_int(env, "JOB_COMPLETION_INDEX")
        if count is None and not env.get("BATCHRUNNER_SHARD_COUNT"):
            raise ConfigError(
                "JOB_COMPLETION_INDEX is set but the number of shards is not: pass "
                "--shard-count N or set BATCHRUNNER_SHARD_COUNT (the Job's completions)"
            )
        total = (
            _number("--shard-count", count, int)
            if count is not None
            else _env_int(env, "BATCHRUNNER_SHARD_COUNT")
        )
    else:
        return None
    if total < 1 or not 0 <= index < total:
        raise ConfigError(f"invalid shard {index}/{total}: need 0 <= index < count")
    return None if total == 1 else (index, total)


def _env_int(env: Mapping[str, str], name: str) -> int:
    try:
        return int(env[name])
    except ValueError:
        raise ConfigError(f"{name} must be an integer, got {env[name]!r}") from None


def _fields(table: Mapping[str, Any]) -> InputFields:
    known = {f.name for f in fields(InputFields)}
    unknown = sorted(set(table) - known)
    if unknown:
        raise ConfigError(f"unknown input field setting(s): {', '.join(unknown)}")
    if not all(isinstance(v, str) and v for v in table.values()):
        raise ConfigError("input field names must be non-empty strings")
    return replace(InputFields(), **table)


def _request(merged: Mapping[str, Any]) -> RequestDefaults:
    params = dict(merged.get("params") or {})
    google = dict(merged.get("google") or {})
    system = merged.get("system")
    if system is not None and not isinstance(system, str):
        raise ConfigError("system must be a string")
    return RequestDefaults(
        system=system or None,
        params=params,
        google=google,
        stream=bool(merged.get("stream", False)),
    )


def _limits(merged: Mapping[str, Any]) -> RequestLimits:
    mb = _number("max_request_mb", merged.get("max_request_mb"), float)
    if mb is not None and not mb > 0:
        raise ConfigError("--max-request-mb must be positive")
    slack = merged.get("input_limit_slack", INPUT_LIMIT_SLACK)
    if isinstance(slack, str) and slack.strip().lower() in ("off", "none"):
        slack = None
    return RequestLimits(
        max_request_bytes=int((MAX_REQUEST_MB if mb is None else mb) * 1_000_000),
        input_limit_slack=_number("input_limit_slack", slack, float),
    )


def _auth(table: Mapping[str, Any], env: Mapping[str, str]) -> AuthConfig:
    mode = table.get("mode", "auto")  # AuthConfig rejects an unknown mode
    token = env.get("OPENAI_API_KEY") or None
    if mode == "static" and not token:
        raise ConfigError("auth mode 'static' needs OPENAI_API_KEY to be set")
    scopes: Sequence[str] = table.get("scopes") or AuthConfig().scopes
    return AuthConfig(
        mode=mode,
        static_token=Secret(token) if token and mode in ("auto", "static") else None,
        credentials_file=table.get("credentials_file"),
        impersonate_service_account=table.get("impersonate_service_account"),
        quota_project=table.get("quota_project"),
        scopes=tuple(scopes),
        patience_s=(
            AUTH_PATIENCE_S
            if table.get("patience") is None
            else _number("auth patience", table["patience"], float)
        ),
    )


def _simulate(table: Mapping[str, Any]) -> SimulateOptions:
    known = {f.name for f in fields(SimulateOptions)}
    unknown = sorted(set(table) - known)
    if unknown:
        raise ConfigError(f"unknown simulate setting(s): {', '.join(unknown)}")
    options = {k: v for k, v in table.items() if v is not None}
    if options.get("latency", "fast") not in ("zero", "fast", "realistic"):
        raise ConfigError("simulate latency must be zero, fast or realistic")
    return SimulateOptions(**options)
