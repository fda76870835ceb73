"""batchrunner: large batches of chat completions against Vertex AI, within quota, exactly once.

The library is the product; the ``batchrunner`` command only wraps it::

    from batchrunner import RunConfig, run

    summary = run(RunConfig(input=Path("prompts.jsonl"), output=Path("results.parquet"),
                            project="my-project", models=("google/gemini-2.5-flash",)))
"""

from __future__ import annotations

from batchrunner.auth import AuthConfig, Authenticator, Secret, build_authenticator
from batchrunner.config import RunConfig, SimulateOptions, build_config, load_job_file
from batchrunner.endpoint import VertexTarget
from batchrunner.errors import (
    AbortError,
    AuthError,
    BatchRunnerError,
    ConfigError,
    InputFileError,
    OutputError,
    RequestError,
    UsageError,
)
from batchrunner.limits import LimitConfig, Limiter, LocalLimiter, Outcome, TokenEstimate
from batchrunner.pricing import Price, PriceTable
from batchrunner.readers import InputFields
from batchrunner.report import render, render_summary
from batchrunner.requests import RequestDefaults
from batchrunner.result_files import load_results, stats_from_files
from batchrunner.retry import RetryPolicy
from batchrunner.runner import Runner, RunSummary, run
from batchrunner.schema import RESULT_FIELDS, RESULT_SCHEMA, Result
from batchrunner.stats import RunStats, StatsSnapshot
from batchrunner.usage import Usage, normalize_usage

__version__ = "0.1.0"

__all__ = [
    "RESULT_FIELDS",
    "RESULT_SCHEMA",
    "AbortError",
    "AuthConfig",
    "AuthError",
    "Authenticator",
    "BatchRunnerError",
    "ConfigError",
    "InputFields",
    "InputFileError",
    "LimitConfig",
    "Limiter",
    "LocalLimiter",
    "Outcome",
    "OutputError",
    "Price",
    "PriceTable",
    "RequestDefaults",
    "RequestError",
    "Result",
    "RetryPolicy",
    "RunConfig",
    "RunStats",
    "RunSummary",
    "Runner",
    "Secret",
    "SimulateOptions",
    "StatsSnapshot",
    "TokenEstimate",
    "Usage",
    "UsageError",
    "VertexTarget",
    "__version__",
    "build_authenticator",
    "build_config",
    "load_job_file",
    "load_results",
    "normalize_usage",
    "render",
    "render_summary",
    "run",
    "stats_from_files",
]
